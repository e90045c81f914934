"""Model Stock: per tensor (layer), move from the pretrained weights toward the average of N >= 2
fine-tunes by a ratio set by the angle between their task vectors, so that a few fine-tunes land
near the center of the fine-tuned weights' distribution.

Model Stock: All we need is just a few fine-tuned models (Jang, Yun & Han, 2024),
https://arxiv.org/abs/2403.19522

    tau_i   = theta_i - w0,  w_avg = (1 / N) sum_i theta_i
    cos     = mean over pairs i < j of <tau_i, tau_j> / (|tau_i| |tau_j|)   (the whole tensor)
    t       = N cos / (1 + (N - 1) cos)
    merged  = t * w_avg + (1 - t) * w0

Two fine-tunes at 90 degrees (cos 0) give the base, identical task vectors (cos 1) give w_avg.
The paper states t with one angle theta; for N > 2 it is estimated here as the mean pairwise
cosine, as mergekit does. Degenerate cases: a pair with a zero task vector counts as cos 0, and
cos is clamped to [0, 1] (a negative mean cosine would make t negative, or divide by zero at
cos = -1 / (N - 1)), so t stays in [0, 1]: the merge lies between the base and w_avg, and is the
base when the task vectors are orthogonal, opposed or all zero. The cosines are accumulated over
the engine's row chunks, so a streamed merge equals the in-memory one.

The fine-tunes are averaged uniformly (the paper's geometry): unequal per-model weights are
refused. Where mergekit may differ: it does not clamp cos (negative cosines give t < 0 or blow
up), counts a pair as cos 0 only through a 1e-6 floor on the norm product (which also shrinks the
cosine of tiny task vectors), and offers a per-row ("filter_wise") angle, not offered here.
"""

from __future__ import annotations

import math

import torch

from retain.errors import UserError
from retain.merging.base import Chunks, MergeOptions, TensorSet, task_vectors
from retain.merging.linear import interpolate, weighted_average


class ModelStockOptions(MergeOptions):
    """Model Stock has no options: t follows from the angle and the number of fine-tunes."""


def ratio(gram: list[list[float]]) -> float:
    """t = N cos / (1 + (N - 1) cos) from the Gram matrix of the N task vectors; cos is the
    mean pairwise cosine (0 for a pair with a zero vector), clamped to [0, 1]."""
    n = len(gram)
    if n < 2:
        raise UserError(f"merge method 'model_stock' needs at least 2 models, got {n}")
    cosines = []
    for i in range(n):
        for j in range(i + 1, n):
            norms = math.sqrt(gram[i][i] * gram[j][j])
            cosines.append(gram[i][j] / norms if norms > 0 else 0.0)
    cos = min(1.0, max(0.0, sum(cosines) / len(cosines)))
    return n * cos / (1 + (n - 1) * cos)


def prepare(chunks: Chunks, shape, densities, opts: ModelStockOptions) -> float:
    """t for the whole tensor, from the task vectors' dot products accumulated over its chunks."""
    gram: list[list[float]] | None = None
    for ts in chunks():
        if len(set(ts.weights)) > 1:
            raise UserError("merge method 'model_stock' averages the fine-tunes uniformly: "
                            "give no per-model weights (or equal ones)")
        taus = [t.double().flatten() for t in task_vectors(ts)]
        if gram is None:
            gram = [[0.0] * len(taus) for _ in taus]
        for i, a in enumerate(taus):
            for j in range(i, len(taus)):
                gram[i][j] += float(a @ taus[j])
    return ratio([[gram[min(i, j)][max(i, j)] for j in range(len(gram))]
                  for i in range(len(gram))])


def apply(ts: TensorSet, opts: ModelStockOptions) -> torch.Tensor:
    t = ts.prepared
    if t is None:  # a whole tensor, without the engine's chunking
        t = prepare(lambda: [ts], tuple(ts.base.shape), ts.densities, opts)
    w_avg = weighted_average(ts.models, [1.0] * len(ts.models))
    return interpolate(ts.base, w_avg, t)
