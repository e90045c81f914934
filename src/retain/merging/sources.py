"""Read merge inputs tensor by tensor, never whole models: Hugging Face folders (one
``model.safetensors`` or shards with ``model.safetensors.index.json``), PEFT LoRA adapter folders
(seen as base + B @ A * scaling on the base's tensor names), state dicts, and statistics files
(diagonal Fisher, Gram matrices). Each read reopens its file, so the pages of the memory map are
released after every tensor and resident memory stays near one tensor, not one model.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from retain.errors import UserError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
             "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
             "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


class TensorSource(Protocol):
    """What the engine needs of an input: names, shapes, dtypes, and one tensor at a time."""

    label: str
    config: dict

    def names(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def dtype(self, name: str) -> torch.dtype: ...
    def get(self, name: str, rows: Rows = None) -> torch.Tensor: ...


def _read_header(file: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) from a safetensors header, without reading the data."""
    try:
        with safe_open(str(file), framework="pt") as f:
            out = {}
            for name in f.keys():
                sl = f.get_slice(name)
                dt = sl.get_dtype()
                if dt not in ST_DTYPES:
                    raise UserError(f"{file}: tensor {name!r} has unsupported dtype {dt}")
                out[name] = (tuple(sl.get_shape()), ST_DTYPES[dt])
            return out
    except UserError:
        raise
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise UserError(f"{file}: not a readable safetensors file ({e})") from None


Rows = tuple[int, int] | None  # a range of rows (dim 0) of a tensor; None: all of it


def _read_tensor(file: Path, name: str, rows: Rows = None) -> torch.Tensor:
    with safe_open(str(file), framework="pt") as f:  # reopened per read: see module docstring
        return f.get_tensor(name) if rows is None else f.get_slice(name)[rows[0]:rows[1]]


def _rows(t: torch.Tensor, rows: Rows) -> torch.Tensor:
    return t if rows is None else t[rows[0]:rows[1]]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read JSON ({e})") from None


class FolderSource:
    """A Hugging Face model folder with safetensors weights, single file or sharded."""

    def __init__(self, path: str | Path):
        from retain.models import BUILTIN_MODELS  # "tiny" / "tiny-base" name the shipped folders

        self.path = BUILTIN_MODELS.get(str(path), Path(path))
        self.label = str(path)
        if not self.path.is_dir():
            raise UserError(f"model folder not found: {path}")
        self.config = _read_json(self.path / "config.json") if (self.path / "config.json").exists() else {}
        index = self.path / INDEX_FILE
        if index.exists():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise UserError(f"{index}: no weight_map")
            files = sorted(set(weight_map.values()))
        elif (self.path / SINGLE_FILE).exists():
            weight_map, files = None, [SINGLE_FILE]
        else:
            hint = " (only .bin weights: re-save with safe_serialization=True)" if any(
                self.path.glob("*.bin")) else ""
            raise UserError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self._meta: dict[str, tuple[Path, tuple[int, ...], torch.dtype]] = {}
        for fname in files:
            file = self.path / fname
            if not file.exists():
                raise UserError(f"{path}: shard {fname} listed in the index is missing")
            for name, (shape, dtype) in _read_header(file).items():
                self._meta[name] = (file, shape, dtype)
        if weight_map is not None:
            for name, fname in weight_map.items():
                if name not in self._meta or self._meta[name][0].name != fname:
                    raise UserError(f"{path}: tensor {name!r} is not in shard {fname}")

    def names(self) -> list[str]:
        return list(self._meta)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._meta[name][1]

    def dtype(self, name: str) -> torch.dtype:
        return self._meta[name][2]

    def get(self, name: str, rows: Rows = None) -> torch.Tensor:
        return _read_tensor(self._meta[name][0], name, rows)


class DictSource:
    """An in-memory state dict (name -> tensor) seen as a source."""

    def __init__(self, state: dict[str, torch.Tensor], label: str = "state dict", config=None):
        self._state, self.label, self.config = state, label, config or {}

    def names(self) -> list[str]:
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._state[name].shape)

    def dtype(self, name: str) -> torch.dtype:
        return self._state[name].dtype

    def get(self, name: str, rows: Rows = None) -> torch.Tensor:
        return _rows(self._state[name], rows)


_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(\.[^.]+)?\.(?P<param>weight|bias)$")
_LORA_EMB_KEY = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<which>A|B)(\.[^.]+)?$")


def _pattern_value(patterns: dict, module: str, default):
    """peft's rank/alpha pattern lookup: a key matches a module name suffix (as a regex)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).exists()


class AdapterSource:
    """A PEFT LoRA adapter folder seen as full weights: base tensor + delta, on the base's names.

    delta = B @ A * scaling (scaling = lora_alpha / r, or / sqrt(r) with rsLoRA), transposed for
    ``fan_in_fan_out`` layers (GPT-2 Conv1D) and for embeddings; ``lora_B.bias`` adds to the
    bias; ``modules_to_save`` tensors (and saved embedding layers) replace the base's."""

    def __init__(self, path: str | Path, base: FolderSource):
        self.path, self.label, self.base = Path(path), str(path), base
        self.config = base.config
        cfg = _read_json(self.path / ADAPTER_CONFIG)
        if cfg.get("peft_type", "LORA") != "LORA":
            raise UserError(f"{path}: only LoRA adapters can be merged (got {cfg.get('peft_type')})")
        if cfg.get("use_dora"):
            raise UserError(f"{path}: DoRA adapters are not supported; merge_and_unload() first")
        self.file = self.path / ADAPTER_FILE
        if not self.file.exists():
            raise UserError(f"{path}: no {ADAPTER_FILE}")
        self._cfg = cfg
        # base tensor name -> {"A": key, "B": key, "kind": "linear"|"embedding"} / "bias" / "full"
        self._lora: dict[str, dict[str, str]] = {}
        self._bias: dict[str, tuple[str, str]] = {}  # bias name -> (lora_B.bias key, module)
        self._full: dict[str, str] = {}
        header = _read_header(self.file)
        base_names = set(base.names())
        for key, (shape, _) in header.items():
            rel = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
            m, kind = _LORA_KEY.match(rel), "linear"
            if m is None:
                m, kind = _LORA_EMB_KEY.match(rel), "embedding"
            if m is not None and kind == "linear" and m["param"] == "bias":
                target = f"{m['module']}.bias"
                self._bias[target] = (key, m["module"])
            elif m is not None:
                target = f"{m['module']}.weight"
                self._lora.setdefault(target, {"kind": kind, "module": m["module"]})[m["which"]] = key
                if len(shape) != 2:
                    raise UserError(f"{path}: LoRA tensor {key!r} is not 2-D (conv LoRA unsupported)")
            elif "lora_" in rel:
                raise UserError(f"{path}: unsupported adapter tensor {key!r}")
            else:  # modules_to_save, or saved embedding layers (".base_layer.weight")
                target = rel.replace(".base_layer.", ".")
                self._full[target] = key
            if target not in base_names:
                raise UserError(f"{path}: adapter tensor {key!r} targets {target!r}, "
                                f"which the base model {base.label} does not have")
        for target, parts in self._lora.items():
            if "A" not in parts or "B" not in parts:
                raise UserError(f"{path}: tensor {target!r} has only one of lora_A/lora_B")
            want = (header[parts["B"]][0][0], header[parts["A"]][0][1])  # (out, in) of B @ A
            if parts["kind"] == "embedding" or cfg.get("fan_in_fan_out"):
                want = want[::-1]
            if want != base.shape(target):
                raise UserError(f"{path}: LoRA delta of {target!r} has shape {list(want)}, the "
                                f"base tensor {list(base.shape(target))}")
        for target, key in self._full.items():
            if header[key][0] != base.shape(target):
                raise UserError(f"{path}: tensor {target!r} has shape {list(header[key][0])}, the "
                                f"base's {list(base.shape(target))} (resized embeddings?)")

    def names(self) -> list[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self.base.dtype(name)

    def _scaling(self, module: str, r: int) -> float:
        alpha = _pattern_value(self._cfg.get("alpha_pattern"), module, self._cfg.get("lora_alpha", 8))
        return alpha / math.sqrt(r) if self._cfg.get("use_rslora") else alpha / r

    def delta(self, name: str, rows: Rows = None) -> torch.Tensor | None:
        """The effective weight delta of (rows of) a base tensor, float32; None if it has none."""
        if name in self._lora:
            p = self._lora[name]
            a = _read_tensor(self.file, p["A"]).float()  # (r, in) / embedding: (r, num)
            b = _read_tensor(self.file, p["B"]).float()  # (out, r) / embedding: (dim, r)
            transposed = p["kind"] == "embedding" or self._cfg.get("fan_in_fan_out")
            scaling = self._scaling(p["module"], a.shape[0])
            if transposed:  # rows of (B @ A)^T are columns of B @ A
                return (b @ _rows(a.T, rows).T).T * scaling
            return (_rows(b, rows) @ a) * scaling
        if name in self._bias:
            key, module = self._bias[name]
            r = _read_tensor(self.file, self._lora[f"{module}.weight"]["A"]).shape[0]
            return _read_tensor(self.file, key, rows).float() * self._scaling(module, r)
        return None

    def get(self, name: str, rows: Rows = None) -> torch.Tensor:
        full = name in self._full
        base = _read_tensor(self.file, self._full[name], rows) if full else self.base.get(name, rows)
        d = self.delta(name, rows)
        return base if d is None else base.float() + d


class StatsFile:
    """A safetensors file of per-tensor statistics (diagonal Fisher or Gram matrix); names may
    carry PEFT's ``base_model.model.`` prefix, which is ignored."""

    def __init__(self, path: str | Path):
        self.path, self.label = Path(path), str(path)
        if not self.path.is_file():
            raise UserError(f"statistics file not found: {path}")
        header = _read_header(self.path)
        self._keys = {(k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k): k for k in header}
        self._shapes = {k: header[v][0] for k, v in self._keys.items()}

    def names(self) -> list[str]:
        return list(self._shapes)

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self._shapes.get(name)

    def get(self, name: str, rows: Rows = None) -> torch.Tensor:
        return _read_tensor(self.path, self._keys[name], rows)


class StatsDict:
    """In-memory statistics (name -> tensor)."""

    def __init__(self, state: dict[str, torch.Tensor], label: str = "statistics"):
        self._state = {(k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k): v
                       for k, v in state.items()}
        self.label = label

    def names(self) -> list[str]:
        return list(self._state)

    def shape(self, name: str) -> tuple[int, ...] | None:
        t = self._state.get(name)
        return None if t is None else tuple(t.shape)

    def get(self, name: str, rows: Rows = None) -> torch.Tensor:
        return _rows(self._state[name], rows)


def open_source(path: str | Path, base: FolderSource | None) -> FolderSource | AdapterSource:
    """A model folder, or an adapter folder over ``base`` (which adapters require)."""
    if is_adapter(path):
        if base is None:
            raise UserError(f"{path} is a PEFT adapter: give --base (the model it was trained on)")
        return AdapterSource(path, base)
    return FolderSource(path)


def read_vocab(folder: str | Path) -> dict[str, int] | None:
    """token -> id from tokenizer.json (model vocab + added tokens) or vocab.json; None if absent."""
    folder = Path(folder)
    tj = folder / "tokenizer.json"
    if tj.exists():
        data = _read_json(tj)
        vocab = data.get("model", {}).get("vocab", {})
        if isinstance(vocab, list):  # Unigram: [[token, score], ...]
            vocab = {tok[0]: i for i, tok in enumerate(vocab)}
        vocab = dict(vocab)
        for t in data.get("added_tokens", []):
            vocab[t["content"]] = t["id"]
        return vocab
    if (folder / "vocab.json").exists():
        return dict(_read_json(folder / "vocab.json"))
    return None
