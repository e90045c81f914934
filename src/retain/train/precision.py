"""Mixed precision for the training loop: fp32 master weights, half-precision compute.

``mixed_precision: auto | no | bf16 | fp16``. In bf16/fp16 the trainable weights (and so AdamW's
state) are kept in fp32 and forward/backward run under ``torch.autocast``; frozen weights stay in
the dtype they were loaded in (a LoRA run keeps its bf16 base). ``auto`` is bf16 on a CUDA device
that supports it and ``no`` elsewhere. fp16 adds a gradient scaler (its range is too small for
raw gradients). Without this, a bf16 model updated by AdamW in place rounds most small updates
away: after 3 steps at lr 1e-5 only 4.4% of the weights had changed at all (shared/FACTS.md).
"""

from __future__ import annotations

import contextlib
import torch

from retain.errors import UserError

MODES = ("auto", "no", "bf16", "fp16")
_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_mixed_precision(setting: str, device: torch.device) -> str:
    """``"no"``, ``"bf16"`` or ``"fp16"`` for ``setting`` on ``device``; a mode the device cannot
    run is a UserError (fp16 autocast on CPU has no gradient scaler worth using)."""
    if setting not in MODES:
        raise UserError(f"mixed_precision {setting!r}: use one of {', '.join(MODES)}")
    if setting == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda_bf16 else "no"
    if setting == "fp16" and device.type != "cuda":
        raise UserError("mixed_precision fp16 needs a CUDA device; use bf16 (works on CPU) or no")
    if setting == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this CUDA device does not support bf16; use mixed_precision fp16")
    return setting


def autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    """The forward/backward context of ``mode`` on ``device`` (a no-op for ``"no"``)."""
    if mode == "no":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_HALF[mode])


def upcast_trainable(model: torch.nn.Module) -> int:
    """Cast every trainable half-precision parameter to fp32 in place (the master weights);
    returns how many tensors were cast. Frozen parameters keep their dtype."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16):
            p.data = p.data.float()
            n += 1
    return n


def grad_scaler(device: torch.device, mode: str) -> "torch.amp.GradScaler | None":
    """A dynamic loss scaler for fp16; None otherwise (bf16 has fp32's range)."""
    return torch.amp.GradScaler(device.type) if mode == "fp16" else None

