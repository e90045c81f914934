"""How forgetting scales with how hard a fine-tune pushes: a power law in steps (or any positive
knob) fitted by log-log least squares, and the Spearman rank correlation (e.g. drift vs forgetting).

Power law of forgetting in fine-tuning steps: Kalajdzievski, 2024, "Scaling Laws for Forgetting
When Fine-Tuning Large Language Models", https://arxiv.org/abs/2401.05605.
Spearman, 1904, "The Proof and Measurement of Association between Two Things",
https://doi.org/10.2307/1412159.
"""

from __future__ import annotations

import math
from typing import Sequence


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> dict | None:
    """Fit ``y = A * x**alpha`` by least squares of ``log y`` on ``log x``.

    Only points with ``x > 0`` and ``y > 0`` enter (a log needs them; a run that forgot nothing
    or improved has no place on a log-log line); ``excluded`` counts the others. Returns
    ``{A, alpha, r2, n, excluded}`` (``r2`` in log space; None with exactly two points, where any
    line fits), or None when fewer than two distinct ``x`` remain."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y)
           if _finite(a) and _finite(b) and a > 0 and b > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    alpha = sxy / sxx
    intercept = my - alpha * mx
    ss_res = sum((p[1] - intercept - alpha * p[0]) ** 2 for p in pts)
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    r2 = None if n < 3 else (1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)
    return {"A": math.exp(intercept), "alpha": alpha, "r2": r2, "n": n,
            "excluded": len(x) - n}


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (``[10, 20, 20] -> [1, 2.5, 2.5]``)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the ranks (ties averaged). None with fewer than
    three finite pairs or when either side is constant (no order to correlate)."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    pairs = [(a, b) for a, b in zip(x, y) if _finite(a) and _finite(b)]
    if len(pairs) < 3:
        return None
    rx, ry = ranks([p[0] for p in pairs]), ranks([p[1] for p in pairs])
    n = len(pairs)
    mx, my = sum(rx) / n, sum(ry) / n
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / math.sqrt(sxx * syy)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
