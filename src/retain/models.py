"""Load a causal language model and its tokenizer: the built-in "tiny" model, a local folder, or a
Hugging Face hub id. Weights are read with safetensors only; ``trust_remote_code`` stays off unless
the caller asks. Every failure a user can cause (wrong path, no weights, unknown id while offline)
becomes a one-line ``UserError``. Also: device/dtype resolution and a CPU copy of the weights.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from retain.errors import UserError

ASSETS_DIR = Path(__file__).parent / "assets"
BUILTIN_MODELS = {"tiny": ASSETS_DIR / "tiny", "tiny-base": ASSETS_DIR / "tiny-base"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")  # "name" or "org/name"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> this process's CUDA device if one is available (``LOCAL_RANK`` under
    ``accelerate launch``/``torchrun``), else the CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA device is available")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None) -> torch.dtype:
    """"auto" -> bfloat16 on a CUDA device that supports it, else float32 (CPU training in half
    precision is slow and lossy). Names: float32/fp32, bfloat16/bf16, float16/fp16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    device = device or resolve_device("auto")
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
    return names[dtype]


def _resolve_source(name_or_path: str) -> str:
    """The folder or hub id to load from, or a UserError saying why there is none."""
    if name_or_path in BUILTIN_MODELS:
        path = BUILTIN_MODELS[name_or_path]
        if not (path / "config.json").exists():
            raise UserError(f"the built-in model {name_or_path!r} is not built yet "
                            f"(expected {path}); run: python -m retain.builtin.build")
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path} has no config.json: not a Hugging Face model folder")
        if not any(path.glob("*.safetensors")):
            raise UserError(f"{path} holds no .safetensors weights (retain reads safetensors only; "
                            "convert .bin weights with save_pretrained(safe_serialization=True))")
        return str(path)
    if path.exists() or not _HUB_ID.match(name_or_path):
        raise UserError(f"model {name_or_path!r}: no such folder, and not a hub id (org/name)")
    return name_or_path  # a hub id


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers at all: saves the hub client's ~45 s of retries when offline.
    Behind a proxy we cannot tell cheaply, so we assume it does."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _local_first(source: str, load):
    """``load(local_only)`` from a folder, or for a hub id from the local cache first, then the
    hub (a UserError when it cannot be reached)."""
    if Path(source).is_dir():
        return load(True)
    try:
        return load(True)
    except OSError:
        if not _hub_reachable():
            raise UserError(f"model {source!r} is not in the local cache and the hub cannot be "
                            "reached (offline?); pass a local folder") from None
        return load(False)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def load_tokenizer(name_or_path: str = "tiny", *, trust_remote_code: bool = False):
    """The tokenizer of a model (no weights are read); one without a pad token gets pad = eos."""
    from transformers import AutoTokenizer

    source = _resolve_source(name_or_path)
    try:
        tokenizer = _local_first(source, lambda local: AutoTokenizer.from_pretrained(
            source, local_files_only=local, trust_remote_code=trust_remote_code))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the tokenizer of {name_or_path!r}: {_first_line(e)}") from e
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str = "tiny", *, dtype: str | torch.dtype = "auto",
               device: str | torch.device = "auto", trust_remote_code: bool = False,
               tokenizer=None):
    """Load ``(model, tokenizer)``: "tiny" / "tiny-base" (the shipped built-in models), a local
    folder, or a hub id. The model is in eval mode on ``device``; a tokenizer without a pad token
    gets ``pad = eos``. ``tokenizer``: one already loaded by ``load_tokenizer``."""
    from transformers import AutoModelForCausalLM

    source = _resolve_source(name_or_path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if tokenizer is None:
        tokenizer = load_tokenizer(name_or_path, trust_remote_code=trust_remote_code)
    try:
        model = _local_first(source, lambda local: AutoModelForCausalLM.from_pretrained(
            source, local_files_only=local, use_safetensors=True, dtype=torch_dtype,
            trust_remote_code=trust_remote_code))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load model {name_or_path!r}: {_first_line(e)}") from e
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(dev)
    model.eval()
    return model, tokenizer


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's parameters (name -> tensor); tied weights appear once
    (``named_parameters`` drops duplicates), so drift is not counted twice."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def load_state(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy ``saved`` tensors (name -> tensor, e.g. a kept or checkpointed trainable state) into
    the model's parameters in place, on each parameter's device and dtype."""
    params = dict(model.named_parameters())
    missing = sorted(set(saved) - set(params))
    if missing:
        raise RuntimeError(f"saved tensor {missing[0]} is not a parameter of the model")
    with torch.no_grad():
        for name, t in saved.items():
            params[name].copy_(t.to(params[name].device, params[name].dtype))


def count_params(model: torch.nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights once); ``trainable_only`` counts ``requires_grad`` ones."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
