"""One-sided confidence bounds at a chosen error rate: what the guard needs to say "crossed"
with a stated false-alarm probability over a whole run.

- ``wilson_bound``: the Wilson score bound of a proportion (Wilson, 1927, "Probable inference,
  the law of succession, and statistical inference", https://doi.org/10.2307/2276774).
- ``normal_bound``: value +- z * se, the standard error read off a symmetric 95% interval (for
  means such as cross-entropy, whose probes report a bootstrap interval).
- ``paired_drop_bound``: the lower bound of the mean per-item drop on the same items scored
  twice (lost minus gained, over n), with the paired (Wald) variance of the difference.
- ``z_of``: the normal quantile for a one-sided error rate.
Pure functions: no probes, no models.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

Z95 = NormalDist().inv_cdf(0.975)  # the half-width factor of the probes' 95% intervals


def z_of(alpha: float) -> float:
    """z with P(Z > z) = alpha (one-sided)."""
    return NormalDist().inv_cdf(1.0 - alpha)


def wilson_bound(p: float, n: int, z: float, upper: bool) -> float:
    """The upper (or lower) one-sided Wilson bound of a proportion ``p`` observed on ``n`` items."""
    if n <= 0:
        return 1.0 if upper else 0.0
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return min(1.0, centre + half) if upper else max(0.0, centre - half)


def normal_bound(value: float, ci_low: float, ci_high: float, z: float, upper: bool) -> float:
    """``value`` +- ``z`` standard errors, the standard error read off a 95% interval."""
    se = max(ci_high - ci_low, 0.0) / (2 * Z95)
    return value + z * se if upper else value - z * se


def paired_drop_bound(before_ok: Sequence[bool], after_ok: Sequence[bool], z: float) -> float:
    """Lower one-sided bound of the mean drop (before - after, per item, in [-1, 1]) on items
    scored twice: the drop is ``(lost - gained) / n``, its variance
    ``((lost + gained) / n - drop^2) / n``."""
    n = len(before_ok)
    if n == 0 or n != len(after_ok):
        raise ValueError("paired outcomes must be of the same, non-empty list of items")
    lost = sum(1 for b, a in zip(before_ok, after_ok) if b and not a)
    gained = sum(1 for b, a in zip(before_ok, after_ok) if a and not b)
    drop = (lost - gained) / n
    var = max((lost + gained) / n - drop * drop, 0.0) / n
    return drop - z * math.sqrt(var)
