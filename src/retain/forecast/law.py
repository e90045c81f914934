"""The forecast's law: how a capability's score moves with the learning-rate area of a fine-tune.

    g(y(s)) = g(y0) + c * x(s)**alpha,    x(s) = sum over steps t < s of lr_t   (the "area")

with ``g`` the link of the metric: the empirical logit for a proportion (accuracy, refusal rate:
``link``), the log for a cross-entropy. In logit space a steady push becomes the
cliff users see (flat while every item is far from its boundary, then falling fast) and a
prediction never leaves [0, 1].

Forgetting follows a power law in fine-tuning steps (Kalajdzievski, 2024, "Scaling Laws for
Forgetting When Fine-Tuning Large Language Models", https://arxiv.org/abs/2401.05605). Counting
steps weighted by their learning rate instead of plain steps (the forward area S1 of Tissue et
al., 2024, "Scaling Law with Learning Rate Annealing", https://arxiv.org/abs/2408.11029) puts two
things the plain law cannot hold on one axis: a cosine schedule (late steps move the weights less,
so the planned run's end is not the pilot's slope extrapolated) and the rate (a pilot at half the
rate covers half the area per step). Pilots at two rates check that collapse (``rate_residual``).
``c`` takes either sign (a domain's loss falls, a refusal rate falls, an accuracy may rise).
``alpha`` is kept in (0, 1]: forgetting exponents fitted in the literature and by ``retain
sweep`` on the built-in model (0.60) are below 1, and a convex law fitted to a few early points
extrapolates without bound.

The fit is least squares over a grid of ``alpha`` with ``c`` in closed form for each;
``draws`` is a residual bootstrap of the fit (``alpha`` refitted each time), from which the caller
makes the prediction interval with the noise of the measurement it predicts. Pure functions of
numbers: no model, no probes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

ALPHAS = [round(0.05 + 0.01 * i, 2) for i in range(96)]  # 0.05 .. 1.00


@dataclass(frozen=True)
class Law:
    c: float
    alpha: float
    resid_sd: float  # residual standard deviation (n - 2 degrees of freedom; 0 with 2 points)
    n: int  # points fitted

    def delta(self, x: float) -> float:
        """The predicted change from the start at area ``x``."""
        return self.c * max(x, 0.0) ** self.alpha


def lr_area(step: int, *, lr: float, steps: int, warmup_steps: int, schedule: str) -> float:
    """The sum of the learning rates of the first ``step`` optimizer steps of a run planned for
    ``steps`` steps (the loop's own schedule, ``retain.train.loop.lr_factor``)."""
    from retain.train.loop import lr_factor

    return lr * sum(lr_factor(t, steps=steps, warmup_steps=warmup_steps, schedule=schedule)
                    for t in range(min(step, steps)))


def fit(x: Sequence[float], dy: Sequence[float]) -> Law | None:
    """The least-squares ``dy = c * x**alpha`` over ``ALPHAS``; None without two points at
    distinct positive areas."""
    pts = [(a, b) for a, b in zip(x, dy) if a > 0 and math.isfinite(a) and math.isfinite(b)]
    if len({a for a, _ in pts}) < 2:
        return None
    best = None
    for alpha in ALPHAS:
        z = [a ** alpha for a, _ in pts]
        c = sum(zi * b for zi, (_, b) in zip(z, pts)) / sum(zi * zi for zi in z)
        sse = sum((b - c * zi) ** 2 for zi, (_, b) in zip(z, pts))
        if best is None or sse < best[0] - 1e-15:
            best = (sse, c, alpha)
    sse, c, alpha = best
    n = len(pts)
    return Law(c=c, alpha=alpha, resid_sd=math.sqrt(sse / (n - 2)) if n > 2 else 0.0, n=n)


def link(metric_is_proportion: bool, n: int):
    """``(g, g_inverse)``: the empirical logit of a proportion measured on ``n`` items
    (``(k + 0.5) / (n + 1)``, finite at 0 and 1), else the log (a cross-entropy is positive and
    moves by factors: a domain's loss falls from 8 nats towards 3, not through 0)."""
    if not metric_is_proportion:
        return (lambda y: math.log(max(y, 1e-9))), (lambda z: math.exp(max(-50.0, min(50.0, z))))

    def g(y: float) -> float:
        p = (y * n + 0.5) / (n + 1)
        return math.log(p / (1 - p))

    def inv(z: float) -> float:
        p = 1 / (1 + math.exp(-max(-50.0, min(50.0, z))))
        return min(1.0, max(0.0, (p * (n + 1) - 0.5) / n))
    return g, inv


def boot_laws(x: Sequence[float], dy: Sequence[float], *, n: int = 300,
              seed: int = 0) -> list[Law]:
    """``n`` bootstrap refits of the law: the fit's residuals (inflated for the two parameters
    fitted) resampled onto its fitted values. Their predictions at an area make the law's own
    uncertainty there, extrapolation included."""
    law = fit(x, dy)
    if law is None:
        return []
    pts = [(a, b) for a, b in zip(x, dy) if a > 0 and math.isfinite(a) and math.isfinite(b)]
    fitted = [law.delta(a) for a, _ in pts]
    k = len(pts)
    inflate = math.sqrt(k / (k - 2)) if k > 2 else 1.0  # residuals understate the errors
    resid = [(b - f) * inflate for (_, b), f in zip(pts, fitted)]
    rng = random.Random(seed)
    return [fit([a for a, _ in pts], [f + rng.choice(resid) for f in fitted]) or law
            for _ in range(n)]


def draws(x: Sequence[float], dy: Sequence[float], x_new: float, *, n: int = 300,
          seed: int = 0) -> list[float]:
    """``n`` bootstrap predictions of the change at ``x_new`` (``boot_laws``)."""
    return [law.delta(x_new) for law in boot_laws(x, dy, n=n, seed=seed)]


def quantiles(values: Sequence[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (empirical quantiles)."""
    v = sorted(values)
    lo = (1 - level) / 2
    return v[int(lo * (len(v) - 1))], v[int(math.ceil((1 - lo) * (len(v) - 1)))]


def rate_residual(points: Sequence[tuple[float, float, float]], law: Law) -> dict[float, float]:
    """Per pilot rate, the mean residual of its points (``(lr, x, dy)``) under the joint law: near
    zero when the area puts the rates on one curve."""
    by: dict[float, list[float]] = {}
    for lr, x, dy in points:
        by.setdefault(lr, []).append(dy - law.delta(x))
    return {lr: sum(v) / len(v) for lr, v in by.items()}
