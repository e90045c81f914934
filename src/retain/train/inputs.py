"""What a run read, fingerprinted: a resume must train on the same inputs as the run it continues.

``fingerprint(config, processes)`` hashes the content of every file a run reads (the data file,
reference and probe files) and of the model's weights (its safetensors index, else its
safetensors files), and records the process count. A checkpoint keeps it; ``--resume`` compares
it with the inputs as they are now and refuses, naming what changed (a data file rewritten at the
same path once resumed silently onto another held-out split).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from retain.errors import UserError

_CHUNK = 1 << 20


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _model_hash(name: str) -> str | None:
    """The weights' identity: the safetensors index when sharded, else every safetensors file;
    None for a hub id (no local folder to read)."""
    from retain.models import BUILTIN_MODELS

    path = BUILTIN_MODELS.get(name) or Path(name).expanduser()
    if not Path(path).is_dir():
        return None
    index = sorted(Path(path).glob("*.safetensors.index.json"))
    files = index or sorted(Path(path).glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_hash(f).encode())
    return h.hexdigest()


def _files(config) -> list[str]:
    """Every local file the run reads, besides the model."""
    specs = [config.data, *([config.reference] if isinstance(config.reference, str)
                            else config.reference), *config.probes,
             *(config.probes_during or []), *config.heldout_probes, *config.domain_probes]
    return sorted({s for s in specs if isinstance(s, str) and Path(s).is_file()})


def fingerprint(config, processes: int) -> dict[str, Any]:
    """``{"files": {path: sha256}, "model": sha256 | None, "processes": n}`` of a run."""
    return {"files": {p: file_hash(p) for p in _files(config)}, "model": _model_hash(config.model),
            "processes": processes}


def check_same(recorded: dict[str, Any] | None, now: dict[str, Any], where: str) -> None:
    """A ``UserError`` naming the first input that differs between the checkpoint's fingerprint
    (``recorded``; None: a checkpoint older than fingerprints, not checked) and ``now``."""
    if not recorded:
        return
    if recorded.get("processes") != now["processes"]:
        raise UserError(f"cannot resume {where}: it ran on {recorded.get('processes')} "
                        f"process(es), this is {now['processes']}; resume with the same count")
    if recorded.get("model") != now["model"]:
        raise UserError(f"cannot resume {where}: the model's weights changed since its "
                        "checkpoint; resume with the same model, or start over (--overwrite)")
    old, new = recorded.get("files", {}), now["files"]
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            what = "is gone" if path not in new else "is new" if path not in old else "changed"
            raise UserError(f"cannot resume {where}: {path} {what} since its checkpoint; "
                            "resume with the same files, or start over (--overwrite)")
