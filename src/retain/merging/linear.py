"""Linear merging: the weighted average of models (a "uniform soup") and WiSE-FT interpolation.

Model soups: averaging weights of multiple fine-tuned models improves accuracy without increasing
inference time (Wortsman et al., 2022), https://arxiv.org/abs/2203.05482
Robust fine-tuning of zero-shot models, "WiSE-FT" (Wortsman et al., 2022),
https://arxiv.org/abs/2109.01903

``interpolate`` is the one place interpolation lives: alpha=0 is the base, alpha=1 the fine-tune.
"""

from __future__ import annotations

import torch
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet, pair


def interpolate(base: torch.Tensor, finetune: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 - alpha) * base + alpha * finetune; alpha=0 gives the base, alpha=1 the fine-tune."""
    if alpha == 0:
        return base.clone()
    if alpha == 1:
        return finetune.clone()
    return torch.lerp(base, finetune, alpha)


def weighted_average(tensors: list[torch.Tensor], weights: list[float],
                     normalize: bool = True) -> torch.Tensor:
    """sum_i w_i * theta_i, divided by sum_i w_i when ``normalize`` (a soup)."""
    out = torch.zeros_like(tensors[0])
    for t, w in zip(tensors, weights):
        out.add_(t, alpha=w)
    if normalize:
        total = sum(weights)
        if total == 0:
            raise ValueError("weights sum to zero: cannot normalize")
        out.div_(total)
    return out


class LinearOptions(MergeOptions):
    normalize: bool = True  # divide by the sum of the weights


class WiseFtOptions(MergeOptions):
    alpha: float = Field(0.5, description="0 keeps the base (first endpoint), 1 the fine-tune")


def apply_linear(ts: TensorSet, opts: LinearOptions) -> torch.Tensor:
    return weighted_average(ts.models, ts.weights, opts.normalize)


def apply_wise_ft(ts: TensorSet, opts: WiseFtOptions) -> torch.Tensor:
    base, finetune = pair(ts)
    return interpolate(base, finetune, opts.alpha)
