"""DARE: drop each task-vector entry with probability 1 - density and rescale the survivors by
1 / density, then combine linearly (dare_linear) or with TIES sign election (dare_ties).

Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free Lunch
(Yu et al., 2024), https://arxiv.org/abs/2311.03099
Same math as peft's ``dare_linear``/``dare_ties``, but the drop mask is drawn from a seeded
``torch.Generator`` per (seed, tensor name, model, chunk start row), so a merge is reproducible
and independent of tensor order or sharding (peft draws from the global RNG).
"""

from __future__ import annotations

import zlib
from typing import Literal

import torch
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet
from retain.merging.ties import mix


class DareLinearOptions(MergeOptions):
    density: float = Field(0.5, gt=0, le=1)  # keep probability of each entry
    seed: int = Field(0, ge=0)
    scale: float = 1.0  # lambda: multiplies the merged task vector


class DareTiesOptions(MergeOptions):
    density: float = Field(0.5, gt=0, le=1)
    seed: int = Field(0, ge=0)
    scale: float = 1.0
    majority_sign: Literal["total", "frequency"] = "total"  # sum of values, or count of signs


def generator_for(seed: int, name: str, index: int, row_start: int = 0) -> torch.Generator:
    """A generator seeded from (seed, tensor name, model index, chunk row): stable everywhere."""
    key = zlib.crc32(f"{seed}:{index}:{row_start}:{name}".encode())
    return torch.Generator().manual_seed(((seed << 32) | key) % (1 << 63))


def drop_and_rescale(delta: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability ``density``; divide survivors by ``density``."""
    if density >= 1:
        return delta
    keep = torch.rand(delta.shape, generator=generator) < density  # bool, same shape
    return delta * keep / density


def dare(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float],
         densities: list[float], *, seed: int = 0, name: str = "", row_start: int = 0,
         ties: bool = False, majority_sign: str = "total", scale: float = 1.0) -> torch.Tensor:
    """base + scale * combine(DARE(tau_i)); combine is sum_i w_i tau_i, or TIES when ``ties``."""
    deltas = [drop_and_rescale(t - base, d, generator_for(seed, name, i, row_start))
              for i, (t, d) in enumerate(zip(tensors, densities))]
    return base + scale * mix(deltas, weights, majority_sign if ties else None)


def apply_linear(ts: TensorSet, opts: DareLinearOptions) -> torch.Tensor:
    return dare(ts.base, ts.models, ts.weights, ts.densities, seed=opts.seed, name=ts.name,
                row_start=ts.row_start, scale=opts.scale)


def apply_ties(ts: TensorSet, opts: DareTiesOptions) -> torch.Tensor:
    return dare(ts.base, ts.models, ts.weights, ts.densities, seed=opts.seed, name=ts.name,
                row_start=ts.row_start, ties=True, majority_sign=opts.majority_sign, scale=opts.scale)
