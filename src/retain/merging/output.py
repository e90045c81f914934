"""Write a merged model as it is computed: safetensors shards whose layout is planned up front
(so each tensor is written the moment it is merged and then freed), the index json, the base's
config and tokenizer files, and a model card; all in a temporary sibling folder that is renamed
into place only when complete, so an interrupted merge leaves nothing that looks like a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from retain.errors import UserError
from retain.merging.sources import INDEX_FILE, SINGLE_FILE, ST_DTYPES

_ST_NAMES = {v: k for k, v in ST_DTYPES.items()}
SUPPORT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                 "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json")


def parse_size(size: int | str) -> int:
    """Bytes from 123, "500MB", "2GB" (powers of 10, as Hugging Face uses) or "1GiB"."""
    if isinstance(size, int):
        if size <= 0:
            raise UserError(f"shard size must be positive, got {size}")
        return size
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B?)\s*", str(size), flags=re.IGNORECASE)
    if m is None:
        raise UserError(f"cannot read size {size!r} (examples: 2GB, 500MB, 1GiB)")
    unit = m[2].upper().rstrip("B")
    base = 1024 if unit.endswith("I") else 1000
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("I")]
    value = int(float(m[1]) * base ** power)
    return parse_size(value)


@dataclass(frozen=True)
class Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(entries: list[Entry], shard_bytes: int) -> list[list[Entry]]:
    """Fill shards in order up to ``shard_bytes``; a larger tensor gets a shard of its own."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def _header(entries: list[Entry], metadata: dict[str, str]) -> bytes:
    """A safetensors header: u64 length, JSON (space-padded to 8 bytes), offsets back to back."""
    head: dict = {"__metadata__": metadata}
    offset = 0
    for e in entries:
        head[e.name] = {"dtype": _ST_NAMES[e.dtype], "shape": list(e.shape),
                        "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


class ShardWriter:
    """Writes tensors in the planned order, opening each shard when its first tensor arrives."""

    def __init__(self, folder: Path, entries: list[Entry], shard_bytes: int,
                 metadata: dict[str, str] | None = None):
        self.folder = folder
        self.shards = plan_shards(entries, shard_bytes)
        n = len(self.shards)
        self.files = [SINGLE_FILE] if n == 1 else [
            f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.metadata = {"format": "pt", **(metadata or {})}
        self._order = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        self._pos = 0
        self._written = 0  # bytes of the current entry written so far
        self._fh = None

    def write(self, name: str, rows: torch.Tensor) -> bool:
        """Append the next rows (dim 0) of the current tensor, or all of it; True when that
        tensor is complete."""
        shard, entry = self._order[self._pos]
        if name != entry.name or rows.dtype != entry.dtype or (
                tuple(rows.shape) != entry.shape and tuple(rows.shape[1:]) != entry.shape[1:]):
            raise RuntimeError(f"writer expected {entry}, got {name} {tuple(rows.shape)} "
                               f"{rows.dtype}")
        if self._fh is None:
            self._fh = open(self.folder / self.files[shard], "wb")
            self._fh.write(_header(self.shards[shard], self.metadata))
        data = rows.detach().contiguous().reshape(-1)
        if data.numel():
            self._fh.write(data.view(torch.uint8).numpy().data)
        self._written += data.numel() * data.element_size()
        if self._written > entry.nbytes:
            raise RuntimeError(f"writer got more bytes than {entry}")
        if self._written < entry.nbytes:
            return False
        self._pos, self._written = self._pos + 1, 0
        if self._pos == len(self._order) or self._order[self._pos][0] != shard:
            self._fh.close()
            self._fh = None
        return True

    def finish(self) -> None:
        """Check every tensor was written; write the index when there are several shards."""
        if self._pos != len(self._order):
            raise RuntimeError(f"writer got {self._pos} of {len(self._order)} tensors")
        if len(self.files) > 1:
            index = {"metadata": {"total_size": sum(e.nbytes for s in self.shards for e in s)},
                     "weight_map": {e.name: self.files[i] for i, e in self._order}}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def copy_support_files(src: Path, dst: Path, dtype: torch.dtype | None) -> list[str]:
    """Copy config, generation config and tokenizer files; record a new dtype in the config."""
    copied = []
    for name in SUPPORT_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            copied.append(name)
    if dtype is not None and (dst / "config.json").exists():
        cfg = json.loads((dst / "config.json").read_text())
        key = "dtype" if "dtype" in cfg or "torch_dtype" not in cfg else "torch_dtype"
        cfg[key] = str(dtype).removeprefix("torch.")
        (dst / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return copied


@contextmanager
def atomic_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to ``out`` only if the block succeeds."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output folder {out} exists and is not empty (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_card(folder: Path, *, out: str, method: str, citation: str, base: str | None,
               models: list[dict], options: dict, version: str, dtype: str | None) -> None:
    """A short README.md: how the model was made, in words and as a retain YAML config."""
    import yaml

    config = {"method": method, "base": base, "models": models, "options": options, "out": out}
    if dtype:
        config["dtype"] = dtype
    lines = [
        "---", "tags: [merge, retain]", "---", "",
        "# Merged model", "",
        f"Made with retain {version} by `{method}` merging.", "",
        f"- method: `{method}` ({citation})",
        f"- base: {base if base else '(none)'}",
        "- models:",
        *[f"  - {m['path']}" + "".join(f", {k} {v}" for k, v in m.items() if k != "path")
          for m in models],
        f"- options: {json.dumps(options) if options else '(defaults)'}", "",
        "Reproduce with `retain merge --config merge.yaml`:", "",
        "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", "",
    ]
    (folder / "README.md").write_text("\n".join(lines))
