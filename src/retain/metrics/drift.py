"""How far fine-tuning moved the weights from the base: L2 and relative L2 (||W-W0|| / ||W0||),
overall, per tensor and per layer, from two state dicts (name -> tensor). For LoRA the delta is
the effective one: measure after ``merge_and_unload``, or build it with ``lora_delta``
(``scale * B @ A``, Hu et al. 2021, https://arxiv.org/abs/2106.09685).
"""

from __future__ import annotations

import math
import re

import torch

_LAYER = re.compile(r"^(.*?\.(?:layers|h|blocks|layer)\.\d+)\.")  # model.layers.3. / transformer.h.3.


def layer_of(name: str) -> str:
    """Group of a parameter: its block (``model.layers.3``), else the tensor's own name."""
    m = _LAYER.match(name)
    return m.group(1) if m else name


def _norms(base: torch.Tensor, tuned: torch.Tensor) -> tuple[float, float]:
    """(||W - W0||^2, ||W0||^2) in float64. Sharded (FSDP) weights are gathered whole first,
    one tensor at a time: every process must call this."""
    base, tuned = (t.full_tensor() if hasattr(t, "full_tensor") else t for t in (base, tuned))
    b = base.detach().to("cpu", torch.float64)
    t = tuned.detach().to("cpu", torch.float64)
    return float((t - b).pow(2).sum()), float(b.pow(2).sum())


def _entry(sq_diff: float, sq_base: float) -> dict[str, float]:
    l2, base_l2 = math.sqrt(sq_diff), math.sqrt(sq_base)
    return {"l2": l2, "relative_l2": l2 / base_l2 if base_l2 > 0 else float("nan"),
            "base_l2": base_l2}


def weight_drift(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor]) -> dict:
    """``{"overall": {l2, relative_l2, base_l2, tensors}, "per_layer": {group: {...}},
    "per_tensor": {name: {...}}, "missing": [...]}`` over the tensors both dicts share (same
    shape); ``missing`` lists base tensors the tuned model lacks or reshaped."""
    per_tensor, groups, missing = {}, {}, []
    tot_d = tot_b = 0.0
    for name, w0 in base.items():
        w = tuned.get(name)
        if w is None or w.shape != w0.shape:
            missing.append(name)
            continue
        d, b = _norms(w0, w)
        per_tensor[name] = _entry(d, b)
        g = groups.setdefault(layer_of(name), [0.0, 0.0])
        g[0] += d
        g[1] += b
        tot_d, tot_b = tot_d + d, tot_b + b
    overall = {**_entry(tot_d, tot_b), "tensors": len(per_tensor)}
    return {"overall": overall, "per_layer": {k: _entry(*v) for k, v in groups.items()},
            "per_tensor": per_tensor, "missing": missing}


def lora_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, scale: float,
               fan_in_fan_out: bool = False) -> torch.Tensor:
    """The weight update a LoRA pair stands for: ``scale * B @ A`` with A (r, in), B (out, r),
    shape (out, in); transposed for layers that store (in, out) like GPT-2's Conv1D."""
    d = scale * (lora_B.double() @ lora_A.double())  # (out, in)
    return d.T if fan_in_fan_out else d
