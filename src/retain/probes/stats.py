"""Confidence intervals for probe scores: Wilson for proportions, a seeded bootstrap for means.

Proportions (accuracy, refusal rates) use the Wilson score interval, which stays inside [0, 1]
and behaves at 0/n and n/n where the normal approximation collapses. Per-token means
(cross-entropy, KL) are ratios (total nats / total tokens); their interval is a percentile
bootstrap over texts, because tokens within one text are not independent.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

Z_95 = 1.959963984540054  # two-sided 95% standard-normal quantile
BOOTSTRAP_RESAMPLES = 1000


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (95% by default); (0, 1) at n=0.

    Wilson, "Probable Inference, the Law of Succession, and Statistical Inference", 1927,
    https://doi.org/10.1080/01621459.1927.10502953
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp float noise so that lo <= p <= hi holds exactly at the ends.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_ratio_interval(numerators: Sequence[float], denominators: Sequence[float], *,
                             resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95,
                             seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``sum(num) / sum(den)``, resampling the units (texts)
    with replacement; seeded, so the same inputs give the same interval."""
    m = len(numerators)
    if m != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    if m == 0:
        return math.nan, math.nan
    total = sum(numerators) / max(sum(denominators), 1e-12)
    if m == 1:
        return total, total
    rng = random.Random(seed)
    stats = []
    for _ in range(resamples):
        idx = [rng.randrange(m) for _ in range(m)]
        den = sum(denominators[i] for i in idx)
        stats.append(sum(numerators[i] for i in idx) / max(den, 1e-12))
    stats.sort()
    lo = stats[int(math.floor((1 - level) / 2 * (resamples - 1)))]
    hi = stats[int(math.ceil((1 + level) / 2 * (resamples - 1)))]
    return min(lo, total), max(hi, total)
