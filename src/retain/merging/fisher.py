"""Fisher-weighted averaging: each parameter is averaged with weights proportional to its diagonal
Fisher information in each model, so a model "votes" most on the parameters it relies on.

Merging Models with Fisher-Weighted Averaging (Matena & Raffel, 2022),
https://arxiv.org/abs/2111.09832
merged = sum_i w_i (F_i + eps) theta_i / sum_i w_i (F_i + eps); the Fisher files are safetensors
(tensor name -> diagonal Fisher, the same shape), e.g. the ones EWC writes.
"""

from __future__ import annotations

import torch
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet
from retain.merging.linear import weighted_average


class FisherOptions(MergeOptions):
    fisher_files: tuple[str, ...] = ()  # one safetensors file per model (streaming merges)
    epsilon: float = Field(1e-6, gt=0)  # added to every Fisher: zero Fisher -> plain average


def fisher_average(tensors: list[torch.Tensor], fishers: list[torch.Tensor],
                   weights: list[float], epsilon: float = 1e-6) -> torch.Tensor:
    """sum_i w_i (F_i + eps) theta_i / sum_i w_i (F_i + eps), elementwise."""
    num = torch.zeros_like(tensors[0])
    den = torch.zeros_like(tensors[0])
    for t, f, w in zip(tensors, fishers, weights):
        fw = (f.to(t.dtype) + epsilon) * w
        num.add_(fw * t)
        den.add_(fw)
    return num / den


def apply(ts: TensorSet, opts: FisherOptions) -> torch.Tensor:
    if ts.stats is None:  # no Fisher for this tensor in any file: plain weighted average
        return weighted_average(ts.models, ts.weights)
    return fisher_average(ts.models, ts.stats, ts.weights, opts.epsilon)
