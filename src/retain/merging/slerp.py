"""SLERP: spherical linear interpolation between two models, tensor by tensor; vectors that are
near-parallel (|cos| above a threshold) or zero fall back to linear interpolation.

Animating rotation with quaternion curves (Shoemake, 1985), https://doi.org/10.1145/325165.325242
(applied to model merging by mergekit: Goddard et al., 2024, https://arxiv.org/abs/2403.13257)
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet, pair
from retain.merging.linear import interpolate


class SlerpOptions(MergeOptions):
    alpha: float = Field(0.5, description="0 gives the first endpoint (the base), 1 the second")
    parallel_threshold: float = Field(0.9995, gt=0, le=1)  # |cos| above this: lerp


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float,
          parallel_threshold: float = 0.9995, eps: float = 1e-8) -> torch.Tensor:
    """Interpolate along the great circle between a and b (the angle of the flattened tensors);
    the norms are interpolated by the same sin weights, as in the usual formula."""
    na, nb = a.norm(), b.norm()
    if na < eps or nb < eps:
        return interpolate(a, b, alpha)
    cos = float(torch.dot(a.flatten(), b.flatten()) / (na * nb))
    cos = max(-1.0, min(1.0, cos))
    if abs(cos) > parallel_threshold:
        return interpolate(a, b, alpha)
    theta = math.acos(cos)
    s = math.sin(theta)
    wa, wb = math.sin((1 - alpha) * theta) / s, math.sin(alpha * theta) / s
    return wa * a + wb * b


def apply(ts: TensorSet, opts: SlerpOptions) -> torch.Tensor:
    a, b = pair(ts)
    return slerp(a, b, opts.alpha, opts.parallel_threshold)
