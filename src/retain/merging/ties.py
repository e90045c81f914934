"""TIES-Merging: trim each task vector to its largest-magnitude entries, elect a sign per entry
by summed mass, and average only the entries that agree with the elected sign (disjoint mean).

TIES-Merging: Resolving Interference When Merging Models (Yadav et al., 2023),
https://arxiv.org/abs/2306.01708
Sign election and disjoint mean are peft's (``calculate_majority_sign_mask``, ``disjoint_merge``).
Trimming keeps exactly k = int(density * numel) entries like peft's ``magnitude_prune``, but its
threshold is found by an exact two-pass radix select over row chunks, so a tensor never has to be
in memory whole; equal magnitudes at the threshold are kept in position order (peft's top-k
breaks such ties arbitrarily; otherwise the two agree).
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable, Iterable, Literal

import torch
from pydantic import Field

from retain.merging._peft import merge_utils
from retain.merging.base import Chunks, MergeOptions, TensorSet
from retain.merging.linear import weighted_average


class TiesOptions(MergeOptions):
    density: float = Field(0.5, gt=0, le=1)  # share of each task vector's entries kept
    majority_sign: Literal["total", "frequency"] = "total"  # sum of values, or count of signs
    scale: float = 1.0  # lambda: multiplies the merged task vector


@dataclass(frozen=True)
class Threshold:
    """Keep |x| > value, plus the first ``ties_kept`` entries with |x| == value (in flattened
    order; ``ties_before[row_start]`` counts those in earlier chunks)."""

    value: float
    ties_kept: int
    ties_before: dict[int, int] | None = None  # None: every tie is kept


KEEP_ALL = Threshold(0.0, -1)  # density >= 1


def _bits(x: torch.Tensor) -> torch.Tensor:
    """|x| as float32 bit patterns: for non-negative floats, integer order is float order."""
    return x.detach().abs().float().reshape(-1).view(torch.int32).long()  # (N,)


def _select(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Largest bin b whose suffix count reaches k, and how many entries lie in bins above b."""
    at_or_above = hist.flip(0).cumsum(0).flip(0)  # entries in bins >= b
    b = int((at_or_above >= k).nonzero().max())
    return b, int(at_or_above[b] - hist[b])


Passes = Callable[[], Iterable[tuple[int, list[torch.Tensor]]]]


def magnitude_thresholds(passes: Passes, numels: list[int],
                         densities: list[float]) -> list[Threshold]:
    """Thresholds that keep the k = int(density * numel) largest magnitudes of each tensor."""
    ks = [m if d >= 1 else int(d * m) for d, m in zip(densities, numels)]
    return count_thresholds(passes, numels, ks)


def count_thresholds(passes: Passes, numels: list[int], ks: list[int]) -> list[Threshold]:
    """Exact k-th largest magnitude of several tensors seen only as chunk streams: the threshold
    of tensor i keeps its ks[i] largest magnitudes (all when ks[i] >= numel, none when 0).

    ``passes()`` returns a fresh iterable of (row_start, [chunk of tensor i for each i]);
    pass 1 histograms the high 16 bits, pass 2 the low 16 bits inside the selected bin, and a
    third pass runs only when ties at the threshold must be broken by position."""
    n = len(numels)
    todo = [i for i in range(n) if 0 < ks[i] < numels[i]]
    out: list[Threshold] = [KEEP_ALL if ks[i] >= numels[i] else Threshold(float("inf"), 0)
                            for i in range(n)]
    if not todo:
        return out
    hi = {i: torch.zeros(1 << 15, dtype=torch.long) for i in todo}  # sign bit is 0
    for _, parts in passes():
        for i in todo:
            hi[i] += torch.bincount(_bits(parts[i]) >> 16, minlength=1 << 15)
    sel = {i: _select(hi[i], ks[i]) for i in todo}
    lo = {i: torch.zeros(1 << 16, dtype=torch.long) for i in todo}
    for _, parts in passes():
        for i in todo:
            bits = _bits(parts[i])
            lo[i] += torch.bincount(bits[(bits >> 16) == sel[i][0]] & 0xFFFF, minlength=1 << 16)
    need_order = []
    for i in todo:
        low, above_lo = _select(lo[i], ks[i] - sel[i][1])
        value_bits = (sel[i][0] << 16) | low
        value = torch.tensor([value_bits], dtype=torch.int32).view(torch.float32).item()
        ties_kept = ks[i] - sel[i][1] - above_lo
        out[i] = Threshold(value, ties_kept)
        if ties_kept < int(lo[i][low]):
            need_order.append(i)
    if need_order:
        before = {i: {} for i in need_order}
        seen = dict.fromkeys(need_order, 0)
        for row_start, parts in passes():
            for i in need_order:
                before[i][row_start] = seen[i]
                seen[i] += int((parts[i].detach().abs().float() == out[i].value).sum())
        for i in need_order:
            out[i] = Threshold(out[i].value, out[i].ties_kept, before[i])
    return out


def keep_mask(delta: torch.Tensor, t: Threshold, row_start: int = 0) -> torch.Tensor:
    """Which entries of a chunk the threshold keeps (bool, the chunk's shape)."""
    if t.ties_kept < 0:
        return torch.ones_like(delta, dtype=torch.bool)
    mag = delta.abs()
    keep = mag > t.value
    if t.ties_kept > 0:
        eq = mag == t.value
        if t.ties_before is None:
            keep |= eq
        else:
            rank = t.ties_before[row_start] + eq.reshape(-1).cumsum(0).reshape(eq.shape) - 1
            keep |= eq & (rank < t.ties_kept)
    return keep


def apply_threshold(delta: torch.Tensor, t: Threshold, row_start: int = 0) -> torch.Tensor:
    """Zero the entries of a chunk that fall below the model's threshold."""
    if t.ties_kept < 0:
        return delta
    return delta * keep_mask(delta, t, row_start)


def trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = int(density * numel) largest-magnitude entries of a whole tensor."""
    (t,) = magnitude_thresholds(lambda: [(0, [delta])], [delta.numel()], [density])
    return apply_threshold(delta, t)


def elect_and_merge(deltas: list[torch.Tensor], weights: list[float],
                    majority_sign: str = "total") -> torch.Tensor:
    """Sign election on the (unweighted) trimmed task vectors, then the disjoint mean of the
    weighted entries that agree with it: sum_i w_i tau_i [agree] / #agree (peft's definition)."""
    stacked = torch.stack(deltas)  # (n_models, *shape)
    mask = merge_utils.calculate_majority_sign_mask(stacked, method=majority_sign)
    w = torch.tensor(weights, dtype=stacked.dtype).view(-1, *([1] * (stacked.dim() - 1)))
    return merge_utils.disjoint_merge(stacked.mul_(w), mask)


def mix(deltas: list[torch.Tensor], weights: list[float],
        majority_sign: str | None = None) -> torch.Tensor:
    """Combine sparsified task vectors: the weighted sum sum_i w_i tau_i (``majority_sign``
    None: the "linear" variants), else TIES sign election and disjoint mean."""
    if majority_sign is None:
        return weighted_average(deltas, weights, normalize=False)
    return elect_and_merge(deltas, weights, majority_sign)


def ties(base: torch.Tensor, tensors: list[torch.Tensor], weights: list[float],
         densities: list[float], majority_sign: str = "total", scale: float = 1.0) -> torch.Tensor:
    """base + scale * TIES(trimmed task vectors), on whole tensors."""
    deltas = [trim(t - base, d) for t, d in zip(tensors, densities)]
    return base + scale * elect_and_merge(deltas, weights, majority_sign)


def prepare(chunks: Chunks, shape: tuple[int, ...], densities: list[float] | None,
            opts: TiesOptions) -> list[Threshold]:
    """Each model's magnitude threshold over the whole tensor, from passes over its chunks."""
    def passes():
        for ts in chunks():
            yield ts.row_start, [m - ts.base for m in ts.models]

    return magnitude_thresholds(passes, [math.prod(shape)] * len(densities), densities)


def apply(ts: TensorSet, opts: TiesOptions) -> torch.Tensor:
    if ts.prepared is None:  # a whole tensor, without the engine's chunking
        return ties(ts.base, ts.models, ts.weights, ts.densities, opts.majority_sign, opts.scale)
    deltas = [apply_threshold(m - ts.base, t, ts.row_start) for m, t in zip(ts.models, ts.prepared)]
    return ts.base + opts.scale * elect_and_merge(deltas, ts.weights, opts.majority_sign)
