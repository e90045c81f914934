"""Model Breadcrumbs: per task vector and tensor, mask out both tails of the magnitude
distribution (the few largest entries, outliers, and the many smallest, negligible ones), then add
the masked task vectors to the base: linearly (breadcrumbs), or with TIES sign election
(breadcrumbs_ties, as mergekit offers it).

Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks (Davari & Belilovsky, 2023),
https://arxiv.org/abs/2312.06795

    tau_i   = theta_i - base, its n entries ranked by |tau_i|, largest first
    m_i     = 1 on the entries ranked after the top n_top = int(gamma * n) and within the top
              n_top + n_keep, n_keep = int(density * n); 0 elsewhere (both tails)
    merged  = base + scale * sum_i w_i (m_i * tau_i)                        (breadcrumbs)
    merged  = base + scale * TIES(w_i, m_i * tau_i)                         (breadcrumbs_ties)

``density`` is the share of entries kept and ``gamma`` the share of the largest removed, as in
mergekit (the share of the smallest masked is 1 - density - gamma). The kept count is exact: when
density + gamma > 1 fewer outliers are removed (n_top = n - n_keep), so density 1 keeps everything
(task arithmetic), as in mergekit. Survivors are not rescaled. Ranks are exact over the whole
tensor even when the engine streams it in row chunks (the same two-pass select as TIES); equal
magnitudes are ranked in position order. Where mergekit may differ: its ``magnitude_outliers``
slices ``indices[n_bot:-n_top]``, which is empty when n_top = 0, so a tensor with fewer than
1 / gamma entries (a small bias or norm at gamma 0.01) loses its whole task vector there; here it
keeps its top n_keep entries. Weighted TIES follows this package's ``ties`` (peft's disjoint mean).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from retain.merging.base import Chunks, MergeOptions, TensorSet, task_vectors
from retain.merging.ties import Threshold, count_thresholds, keep_mask, mix


class BreadcrumbsOptions(MergeOptions):
    density: float = Field(0.9, gt=0, le=1)  # share of each task vector's entries kept
    gamma: float = Field(0.01, ge=0, lt=1)  # share of the largest-magnitude entries removed
    scale: float = 1.0  # lambda: multiplies the merged task vector


class BreadcrumbsTiesOptions(BreadcrumbsOptions):
    majority_sign: Literal["total", "frequency"] = "total"  # sum of values, or count of signs


def counts(numel: int, density: float, gamma: float) -> tuple[int, int]:
    """(n_top, n_keep): how many of the largest entries are removed, how many below them kept."""
    keep = numel if density >= 1 else int(density * numel)
    return min(int(gamma * numel), numel - keep), keep


def prepare(chunks: Chunks, shape: tuple[int, ...], densities: list[float] | None,
            opts: BreadcrumbsOptions) -> list[tuple[Threshold, Threshold]]:
    """Per model, the thresholds of its top n_top and top n_top + n_keep magnitudes, over the
    whole tensor, from passes over its chunks."""
    numel = math.prod(shape)
    ks = []
    for d in densities:
        top, keep = counts(numel, d, opts.gamma)
        ks += [top, top + keep]

    def passes():
        for ts in chunks():
            yield ts.row_start, [tau for tau in task_vectors(ts) for _ in (0, 1)]

    th = count_thresholds(passes, [numel] * len(ks), ks)
    return list(zip(th[0::2], th[1::2]))


def breadcrumbs_mask(tau: torch.Tensor, outliers: Threshold, kept: Threshold,
                     row_start: int = 0) -> torch.Tensor:
    """m * tau: entries within the top n_top + n_keep but not among the top n_top."""
    return tau * (keep_mask(tau, kept, row_start) & ~keep_mask(tau, outliers, row_start))


def breadcrumbs(ts: TensorSet, opts: BreadcrumbsOptions,
                majority_sign: str | None = None) -> torch.Tensor:
    """base + scale * combine(m_i * tau_i); combine is sum_i w_i (...), or TIES when
    ``majority_sign`` is given. A whole tensor (``ts.prepared`` None) is its own single chunk."""
    prepared = ts.prepared
    if prepared is None:
        prepared = prepare(lambda: [ts], tuple(ts.base.shape), ts.densities, opts)
    deltas = [breadcrumbs_mask(tau, top, kept, ts.row_start)
              for tau, (top, kept) in zip(task_vectors(ts), prepared)]
    return ts.base + opts.scale * mix(deltas, ts.weights, majority_sign)


def apply(ts: TensorSet, opts: BreadcrumbsOptions) -> torch.Tensor:
    return breadcrumbs(ts, opts)


def apply_ties(ts: TensorSet, opts: BreadcrumbsTiesOptions) -> torch.Tensor:
    return breadcrumbs(ts, opts, opts.majority_sign)
