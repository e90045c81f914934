"""Task arithmetic: add weighted task vectors (fine-tune minus base) to the base.

Editing Models with Task Arithmetic (Ilharco et al., 2023), https://arxiv.org/abs/2212.04089
merged = base + scale * sum_i w_i * (theta_i - base)
"""

from __future__ import annotations

import torch

from retain.merging._peft import merge_utils
from retain.merging.base import MergeOptions, TensorSet


class TaskArithmeticOptions(MergeOptions):
    scale: float = 1.0  # lambda: multiplies the summed task vector


def task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float],
                    scale: float = 1.0) -> torch.Tensor:
    """base + scale * sum_i w_i (theta_i - base); peft's weighted sum of task tensors."""
    deltas = [t - base for t in tensors]
    mixed = merge_utils.task_arithmetic(deltas, torch.tensor(weights, dtype=base.dtype))
    return base + scale * mixed


def apply(ts: TensorSet, opts: TaskArithmeticOptions) -> torch.Tensor:
    return task_arithmetic(ts.base, ts.models, ts.weights, opts.scale)
