"""DELLA: drop task-vector entries at random with a probability that falls with their magnitude
rank (MagPrune), rescale the survivors by 1 / (1 - p_i), then merge with TIES sign election (della)
or add them up (della_linear).

DELLA-Merging: Reducing Interference in Model Merging through Magnitude-Based Sampling
(Deep, Bhardwaj & Poria, 2024), https://arxiv.org/abs/2406.11617

Per task vector tau_i = theta_i - base and per row (the paper's row-wise ranking: a row of a
weight matrix is one output unit; a 1-D tensor is one row), rank the n entries by magnitude,
r = 0 for the largest, and drop entry j with probability

    p_j   = (1 - density - epsilon) + 2 * epsilon * r_j / (n - 1)      (largest kept most)
    tau'  = tau * keep / (1 - p),   keep ~ Bernoulli(1 - p)             (E[tau'] = tau)
    merged = base + scale * TIES(w_i, tau'_i)                           (della)
    merged = base + scale * sum_i w_i tau'_i                            (della_linear)

so the drop probabilities span [1 - density - epsilon, 1 - density + epsilon] and average
1 - density. ``epsilon`` must keep them in [0, 1]: epsilon <= min(density, 1 - density). With
epsilon 0 it is DARE, draw for draw (same seeded generators); with density 1 and epsilon 0 it is
task arithmetic (della_linear) or TIES without trimming (della). The keep masks are drawn from a
``torch.Generator`` seeded per (seed, tensor name, model, chunk start row), so a merge is
reproducible and independent of tensor order (the engine's row chunks are fixed, and rows are
never split, so the ranking is the same streamed or in memory; a 1-D tensor larger than one chunk
is ranked within each chunk). Equal magnitudes are ranked in position order.

Where others differ: the paper writes p_j = p_min + (epsilon / n) r_j with p_min = p - epsilon / 2,
so its epsilon is the whole width of the range, twice this one (halve a paper's epsilon), and its
r_j / n stops one step short of the top; mergekit's ``epsilon`` is the half-width, as here. mergekit
ranks along dim 1 (a matrix's rows, as here), in recent versions rescales survivors to keep the
task vector's norm instead of by 1 / (1 - p_j), refuses density +/- epsilon outside (0, 1), calls
``scale`` ``lambda``, and weights and normalizes its sign election its own way (this package's
follows peft's disjoint mean, as ``ties`` does).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from retain.errors import UserError
from retain.merging.base import MergeOptions, TensorSet, task_vectors
from retain.merging.dare import generator_for
from retain.merging.ties import mix


def epsilon_problem(density: float, epsilon: float) -> str | None:
    """Why (density, epsilon) would put a drop probability outside [0, 1], or None."""
    if epsilon > min(density, 1 - density) + 1e-9:
        return (f"epsilon {epsilon} with density {density} puts drop probabilities outside "
                f"[0, 1]: it must be at most min(density, 1 - density) = "
                f"{min(density, 1 - density):.6g}")
    return None


class DellaLinearOptions(MergeOptions):
    density: float = Field(0.5, gt=0, le=1)  # mean keep probability of each entry
    epsilon: float = Field(0.1, ge=0)  # half-width of the drop-probability range
    seed: int = Field(0, ge=0)
    scale: float = 1.0  # lambda: multiplies the merged task vector

    @field_validator("epsilon")
    @classmethod
    def _in_range(cls, epsilon: float, info: ValidationInfo) -> float:
        density = info.data.get("density")
        problem = density is not None and epsilon_problem(density, epsilon)
        if problem:
            raise ValueError(problem)
        return epsilon


class DellaOptions(DellaLinearOptions):
    majority_sign: Literal["total", "frequency"] = "total"  # sum of values, or count of signs


def keep_probabilities(rows: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """1 - p_j per entry of a (rows, n) tensor: density + epsilon for each row's largest
    magnitude down to density - epsilon for its smallest, linear in the rank."""
    n = rows.shape[1]
    if epsilon == 0 or n < 2:
        return torch.full(rows.shape, density, dtype=rows.dtype)
    order = rows.abs().argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand_as(order))
    q = density + epsilon * (1 - 2 * rank.double() / (n - 1))
    return q.clamp_(0, 1).to(rows.dtype)


def magprune(tau: torch.Tensor, density: float, epsilon: float,
             generator: torch.Generator) -> torch.Tensor:
    """Keep each entry with probability 1 - p_j (its row's magnitude rank), rescale survivors
    by 1 / (1 - p_j). Rows are dim 0 (a 0-D or 1-D tensor is one row)."""
    if density >= 1 and epsilon == 0:
        return tau
    problem = epsilon_problem(density, epsilon)
    if problem:
        raise UserError(f"della: {problem}")
    rows = tau.reshape(tau.shape[0] if tau.dim() >= 2 else 1, -1)
    q = keep_probabilities(rows, density, epsilon)
    keep = torch.rand(rows.shape, generator=generator) < q  # the draws DARE makes, for epsilon 0
    return torch.where(keep, rows / q, torch.zeros_like(rows)).reshape(tau.shape)


def della(ts: TensorSet, density_default: float, epsilon: float, seed: int, scale: float,
          majority_sign: str | None = None) -> torch.Tensor:
    """base + scale * combine(MagPrune(tau_i)); combine is sum_i w_i (...), or TIES when
    ``majority_sign`` is given."""
    densities = ts.densities or [density_default] * len(ts.models)
    deltas = [magprune(tau, d, epsilon, generator_for(seed, ts.name, i, ts.row_start))
              for i, (tau, d) in enumerate(zip(task_vectors(ts), densities))]
    return ts.base + scale * mix(deltas, ts.weights, majority_sign)


def apply_linear(ts: TensorSet, opts: DellaLinearOptions) -> torch.Tensor:
    return della(ts, opts.density, opts.epsilon, opts.seed, opts.scale)


def apply_ties(ts: TensorSet, opts: DellaOptions) -> torch.Tensor:
    return della(ts, opts.density, opts.epsilon, opts.seed, opts.scale, opts.majority_sign)
