"""TIES-Merging: trim each task vector to its largest-magnitude entries, elect a sign per entry
by summed mass, and average only the entries that agree with the elected sign (disjoint mean).

TIES-Merging: Resolving Interference When Merging Models (Yadav et al., 2023),
https://arxiv.org/abs/2306.01708
The three steps are peft's (``peft.utils.merge_utils``); per-model densities are allowed.
"""

from __future__ import annotations

from typing import Literal

import torch
from peft.utils.merge_utils import calculate_majority_sign_mask, disjoint_merge, prune
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet


class TiesOptions(MergeOptions):
    density: float = Field(0.5, gt=0, le=1)  # share of each task vector's entries kept
    majority_sign: Literal["total", "frequency"] = "total"  # sum of values, or count of signs
    scale: float = 1.0  # lambda: multiplies the merged task vector


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top ``density`` share of entries by magnitude (k = int(density * numel))."""
    if density >= 1:
        return delta
    return prune(delta, density, method="magnitude")


def elect_and_merge(deltas: list[torch.Tensor], weights: list[float],
                    majority_sign: str = "total") -> torch.Tensor:
    """Sign election on the (unweighted) trimmed task vectors, then the disjoint mean of the
    weighted entries that agree with it: sum_i w_i tau_i [agree] / #agree (peft's definition)."""
    stacked = torch.stack(deltas)  # (n_models, *shape)
    mask = calculate_majority_sign_mask(stacked, method=majority_sign)
    w = torch.tensor(weights, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    return disjoint_merge(stacked * w, mask)


def ties(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float],
         densities: list[float], majority_sign: str = "total", scale: float = 1.0) -> torch.Tensor:
    """base + scale * TIES(trimmed task vectors)."""
    deltas = [trim(t - base, d) for t, d in zip(tensors, densities)]
    return base + scale * elect_and_merge(deltas, weights, majority_sign)


def apply(ts: TensorSet, opts: TiesOptions) -> torch.Tensor:
    return ties(ts.base, ts.models, ts.weights, ts.densities, opts.majority_sign, opts.scale)
