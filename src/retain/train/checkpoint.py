"""Training checkpoints: everything a killed run needs to continue as if it had never stopped.

    runs/x/checkpoints/step-00000040/
        trainable.safetensors   the trainable weights (an adapter's, for a PEFT model)
        optimizer.safetensors   AdamW's tensors (exp_avg, exp_avg_sq, step per parameter)
        extra.safetensors       tensors of the run's other state (Fisher, the guard's last good
                                weights, ...), names prefixed by their owner
        rng-rank{R}.safetensors the torch RNG states of process R (CPU and CUDA)
        state.json              step, scheduler, scaler, optimizer groups, python/numpy RNG,
                                the loop's counters and the run's JSON state

Tensors are stored with safetensors only (nothing is unpickled on load). A checkpoint is written
into a temporary folder and renamed into place, so a kill mid-write leaves the previous one
whole; the last ``keep`` are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{8})$")


@dataclass
class Checkpoint:
    """One checkpoint in memory. ``extra_tensors``/``extra`` hold the run's own state (strategies,
    guard, metrics so far) under keys the run chooses."""

    step: int
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # torch optimizer state_dict
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    loop: dict[str, Any]  # the loop's counters: tokens, loss tokens, train time, log history
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)  # this process's RNG states
    path: Path | None = None


# ---------------------------------------------------------------- RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of every RNG of this process: torch CPU and CUDA, python, numpy."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return tensors, {"python": _listify(random.getstate()),
                     "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}


def set_rng_state(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda])
    random.setstate(_tuplify(js["python"]))
    kind, keys, pos, has_gauss, gauss = js["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


# ---------------------------------------------------------------- optimizer
def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as (tensors ``state.{param}.{key}``, JSON of everything else)."""
    tensors, plain = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                plain[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def _join_optimizer(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, v in tensors.items():
        _, pid, k = name.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for name, v in js["plain"].items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": js["param_groups"]}


# ---------------------------------------------------------------- folders
def checkpoints_in(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)
             and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(run_dir: str | Path) -> Path | None:
    found = checkpoints_in(run_dir)
    return found[-1] if found else None


def tmp_dir(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` is assembled before it is renamed into place."""
    return Path(run_dir) / DIR / f".step-{step:08d}.tmp"


def write_rng(tmp: Path, rank: int) -> None:
    """This process's RNG states into the checkpoint being assembled (every rank calls it)."""
    tensors, js = rng_state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / f"rng-rank{rank}.safetensors"),
              metadata={"json": json.dumps(js)})


_GROUPS = ("trainable", "optimizer", "extra")  # the tensor files, one each (or one a process)


def write_tensors(tmp: Path, ck: Checkpoint, suffix: str = "") -> tuple[dict, dict]:
    """``ck``'s tensors into ``trainable``/``optimizer``/``extra{suffix}.safetensors``: a sharded
    run's processes each write their own shards (``suffix`` ``-rank{R}``). Returns (the optimizer's
    JSON part, ``{group: {name: global shape}}`` of the tensors that were shards)."""
    from retain.train.sharding import to_local_tree

    opt_tensors, opt_js = _split_optimizer(ck.optimizer)
    shapes = {}
    for group, tensors in zip(_GROUPS, (ck.trainable, opt_tensors, ck.extra_tensors)):
        mine, shapes[group] = to_local_tree(tensors)
        save_file({k: v.detach().to("cpu").contiguous() for k, v in mine.items()},
                  str(tmp / f"{group}{suffix}.safetensors"))
    return opt_js, shapes


def save(run_dir: str | Path, ck: Checkpoint, keep: int, shards: dict | None = None) -> Path:
    """Write ``ck`` (the main process's part) into its temporary folder, rename it into place and
    remove all but the last ``keep`` checkpoints. Other ranks' RNG files must already be in
    ``tmp_dir`` (``write_rng``); for a sharded model, every rank's tensor files too, ``shards``
    then being ``{"world": W, "shapes": ..., "optimizer": its JSON}`` (``write_tensors``)."""
    tmp = tmp_dir(run_dir, ck.step)
    tmp.mkdir(parents=True, exist_ok=True)
    if shards is None:
        opt_js, _ = write_tensors(tmp, ck)
    else:
        opt_js = shards["optimizer"]
        shards = {"world": shards["world"], "shapes": shards["shapes"]}
    state = {"step": ck.step, "scheduler": ck.scheduler, "scaler": ck.scaler,
             "optimizer": opt_js, "loop": ck.loop, "extra": ck.extra,
             **({"shards": shards} if shards else {})}
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    _fsync_folder(tmp)  # on disk before the rename makes it the checkpoint a resume reads
    final = Path(run_dir) / DIR / f"step-{ck.step:08d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _fsync(final.parent)  # the rename itself
    for old in checkpoints_in(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder: its list of names)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush every file of ``folder`` (all ranks' RNG files included), then the folder."""
    for f in folder.iterdir():
        if f.is_file():
            _fsync(f)
    _fsync(folder)


def load(path: str | Path, rank: int = 0, sharded: bool = False, world: int = 1) -> Checkpoint:
    """Read a checkpoint folder (tensors on the CPU) with process ``rank``'s RNG states;
    ``sharded``: for a run whose model is sharded (fsdp over ``world`` processes), whose
    checkpoints must be so too (and the other way round)."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if sharded != bool(state.get("shards")):
        from retain.errors import UserError

        raise UserError(f"{path} was written by a run {'with' if state.get('shards') else 'without'}"
                        f" sharded weights (fsdp over several processes); resume it the same way")
    tensors = _read_tensors(path, state.get("shards"), rank, world)
    opt = _join_optimizer(tensors["optimizer"], state["optimizer"])
    rng_file = path / f"rng-rank{rank}.safetensors"
    if not rng_file.is_file():
        raise FileNotFoundError(f"{path} has no RNG state for process {rank}: was it written "
                                "by a run with fewer processes?")
    from safetensors import safe_open

    with safe_open(str(rng_file), framework="pt") as f:
        rng_js = json.loads(f.metadata()["json"])
    rng = {"tensors": load_file(str(rng_file)), "json": rng_js}
    return Checkpoint(step=state["step"], trainable=tensors["trainable"],
                      optimizer=opt, scheduler=state["scheduler"], scaler=state["scaler"],
                      loop=state["loop"], extra_tensors=tensors["extra"],
                      extra=state["extra"], rng=rng, path=path)


def _read_tensors(path: Path, shards: dict | None, rank: int,
                  world: int) -> dict[str, dict[str, torch.Tensor]]:
    """The tensor files by group; a sharded checkpoint's are this process's shards, made
    DTensors again (the same number of processes must read it, each with the same shards)."""
    if shards is None:
        return {g: load_file(str(path / f"{g}.safetensors")) for g in _GROUPS}
    from retain.errors import UserError
    from retain.train.sharding import from_local_tree

    if world != shards["world"]:
        raise UserError(f"{path} holds weights sharded over {shards['world']} processes; resume "
                        f"it with {shards['world']} (this run has {world}) and fsdp")
    return {g: from_local_tree(load_file(str(path / f"{g}-rank{rank}.safetensors")),
                               shards["shapes"][g]) for g in _GROUPS}


# ---------------------------------------------------------------- nested state
def split_tree(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """A nested dict/list of tensors and JSON-able values as (tensors by path, JSON in which each
    tensor is replaced by ``{"__tensor__": path}``): the run's state in safetensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if torch.is_tensor(x):
            tensors[path] = x.detach().to("cpu").contiguous()
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {str(k): walk(v, f"{path}/{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        return x

    return tensors, walk(tree, prefix)


def join_tree(tensors: dict[str, torch.Tensor], js: Any) -> Any:
    """The inverse of ``split_tree``."""
    if isinstance(js, dict):
        if set(js) == {"__tensor__"}:
            return tensors[js["__tensor__"]]
        return {k: join_tree(tensors, v) for k, v in js.items()}
    if isinstance(js, list):
        return [join_tree(tensors, v) for v in js]
    return js
