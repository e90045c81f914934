"""SLERP: spherical linear interpolation between two models, tensor by tensor; vectors that are
near-parallel (|cos| above a threshold) or zero fall back to linear interpolation.

Animating rotation with quaternion curves (Shoemake, 1985), https://doi.org/10.1145/325165.325242
(applied to model merging by mergekit: Goddard et al., 2024, https://arxiv.org/abs/2403.13257)
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from retain.merging.base import Chunks, MergeOptions, TensorSet, pair
from retain.merging.linear import interpolate


class SlerpOptions(MergeOptions):
    alpha: float = Field(0.5, description="0 gives the first endpoint (the base), 1 the second")
    parallel_threshold: float = Field(0.9995, gt=0, le=1)  # |cos| above this: lerp


def slerp_weights(dot: float, sq_a: float, sq_b: float, alpha: float,
                  parallel_threshold: float = 0.9995, eps: float = 1e-8) -> tuple[float, float] | None:
    """(w_a, w_b) of the great-circle interpolation from a dot product and squared norms;
    None when the vectors are near-parallel or zero (then: linear interpolation)."""
    na, nb = math.sqrt(sq_a), math.sqrt(sq_b)
    if na < eps or nb < eps:
        return None
    cos = max(-1.0, min(1.0, dot / (na * nb)))
    if abs(cos) > parallel_threshold:
        return None
    theta = math.acos(cos)
    s = math.sin(theta)
    return math.sin((1 - alpha) * theta) / s, math.sin(alpha * theta) / s


def _combine(a: torch.Tensor, b: torch.Tensor, alpha: float, w: tuple[float, float] | None):
    return interpolate(a, b, alpha) if w is None else w[0] * a + w[1] * b


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float,
          parallel_threshold: float = 0.9995) -> torch.Tensor:
    """Interpolate along the great circle between a and b (the angle of the flattened tensors);
    the norms are interpolated by the same sin weights, as in the usual formula."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    w = slerp_weights(float(a64 @ b64), float(a64 @ a64), float(b64 @ b64), alpha,
                      parallel_threshold)
    return _combine(a, b, alpha, w)


def prepare(chunks: Chunks, shape, densities, opts: SlerpOptions) -> tuple[float, float] | None:
    """The sin weights from the dot product and norms accumulated over the chunks."""
    dot = sq_a = sq_b = 0.0
    for ts in chunks():
        a, b = (t.double().flatten() for t in pair(ts))
        dot, sq_a, sq_b = dot + float(a @ b), sq_a + float(a @ a), sq_b + float(b @ b)
    return {"w": slerp_weights(dot, sq_a, sq_b, opts.alpha, opts.parallel_threshold)}


def apply(ts: TensorSet, opts: SlerpOptions) -> torch.Tensor:
    a, b = pair(ts)
    if ts.prepared is None:  # a whole tensor, without the engine's chunking
        return slerp(a, b, opts.alpha, opts.parallel_threshold)
    return _combine(a, b, opts.alpha, ts.prepared["w"])
