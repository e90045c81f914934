"""The forecast's law: how a capability's score moves with the steps and the rate of a fine-tune.

    g(y) = g(y0) + c * r**beta * S**alpha,   S(s) = sum over steps t < s of the schedule's
                                             factor (warm-up, cosine), r = lr / planned lr

with ``g`` the link of the metric (``link``): the identity, the arcsine of the square root or the
empirical logit for a proportion (kept in [0, 1]), the identity or the log for a cross-entropy;
``retain.forecast.predict`` says which it uses and why (benchmarks/forecast_validation.py
compares them on real runs).

Forgetting follows a power law in fine-tuning steps (Kalajdzievski, 2024, "Scaling Laws for
Forgetting When Fine-Tuning Large Language Models", https://arxiv.org/abs/2401.05605). Counting
steps weighted by the schedule (the forward area S1 of Tissue et al., 2024, "Scaling Law with
Learning Rate Annealing", https://arxiv.org/abs/2408.11029) puts a cosine schedule's late steps,
which move the weights less, on the same axis as the pilot's early ones. The rate gets its own
exponent ``beta``, fitted from pilots at two rates: at equal ``lr * S`` a higher rate forgets
more on the built-in model (README, sweep: 1e-3 x 25 steps loses 0.26, 3e-4 x 100 steps 0.13),
so the area alone (``beta = alpha``) would carry a fast pilot's damage into a slower plan. With
one rate ``beta`` is not identified and taken as ``alpha`` (the area), which only matters for
another rate than the one piloted. ``alpha`` is kept in (0, 1]: forgetting exponents fitted in
the literature and by ``retain sweep`` (0.60) are below 1, and a convex law fitted to a few early
points extrapolates without bound. ``c`` takes either sign.

The fit is least squares over a grid of (``alpha``, ``beta``) with ``c`` in closed form for each;
``boot_laws`` is a residual bootstrap of the fit (both exponents refitted each time), from which
the caller makes the prediction interval with the noise of the measurement it predicts. Pure
functions of numbers: no model, no probes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHAS = np.round(np.arange(0.05, 1.0001, 0.01), 2)  # 0.05 .. 1.00
BETAS = np.round(np.arange(0.0, 3.0001, 0.05), 2)  # 0 .. 3


@dataclass(frozen=True)
class Law:
    c: float
    alpha: float
    beta: float  # the rate's exponent (= alpha when the pilots had one rate: not identified)
    resid_sd: float  # residual standard deviation (n - 2 degrees of freedom; 0 with 2 points)
    n: int  # points fitted
    rates: int = 1  # distinct pilot rates the fit saw

    def delta(self, s: float, r: float = 1.0) -> float:
        """The predicted change from the start after schedule area ``s`` at ``r`` x the plan's
        rate."""
        return self.c * max(r, 0.0) ** self.beta * max(s, 0.0) ** self.alpha


def lr_area(step: int, *, lr: float, steps: int, warmup_steps: int, schedule: str) -> float:
    """The sum of the learning rates of the first ``step`` optimizer steps of a run planned for
    ``steps`` steps (the loop's own schedule, ``retain.train.loop.lr_factor``)."""
    from retain.train.loop import lr_factor

    return lr * sum(lr_factor(t, steps=steps, warmup_steps=warmup_steps, schedule=schedule)
                    for t in range(min(step, steps)))


def _points(s: Sequence[float], dy: Sequence[float], r: Sequence[float] | None):
    r = [1.0] * len(s) if r is None else list(r)
    pts = [(a, b, q) for a, b, q in zip(s, dy, r)
           if a > 0 and q > 0 and math.isfinite(a) and math.isfinite(b) and math.isfinite(q)]
    return pts


def _grid(pts, alpha: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(Z of shape (alphas, betas, points), the alphas, the betas, several rates?). One rate:
    the area ``r * S`` carries the rate (beta = alpha). ``alpha``: fixed (None: the grid)."""
    S = np.array([p[0] for p in pts])
    r = np.array([p[2] for p in pts])
    several = len(set(r.tolist())) > 1
    alphas = ALPHAS if alpha is None else np.array([alpha])
    a = alphas[:, None, None]
    if several:
        b = BETAS[None, :, None]
        Z = np.exp(a * np.log(S)[None, None, :] + b * np.log(r)[None, None, :])
        return Z, alphas, BETAS, True
    Z = np.exp(a * np.log(S * r)[None, None, :])  # (alphas, 1, points)
    return Z, alphas, np.array([np.nan]), False


def _best(Z: np.ndarray, D: np.ndarray) -> list[tuple[float, int, int, float]]:
    """Per row of ``D`` (fits, points): (c, alpha index, beta index, sse) of least sse."""
    zz = (Z * Z).sum(-1)  # (A, B)
    zd = np.einsum("abn,kn->abk", Z, D)  # (A, B, K)
    c = zd / zz[..., None]
    sse = (D * D).sum(-1)[None, None, :] - zd * c
    A, B, K = sse.shape
    flat = np.argmin(sse.reshape(A * B, K), axis=0)  # the first minimum, as a scan would find
    ia, ib = np.unravel_index(flat, (A, B))
    k = np.arange(K)
    return [(float(ci), int(x), int(y), float(max(e, 0.0)))
            for ci, x, y, e in zip(c[ia, ib, k], ia, ib, sse[ia, ib, k])]


def _law(c: float, ia: int, ib: int, sse: float, alphas, betas, n: int, several: bool) -> Law:
    alpha = float(alphas[ia])
    return Law(c=c, alpha=alpha, beta=float(betas[ib]) if several else alpha,
               resid_sd=math.sqrt(sse / (n - 2)) if n > 2 else 0.0, n=n,
               rates=2 if several else 1)


def fit(s: Sequence[float], dy: Sequence[float], r: Sequence[float] | None = None,
        alpha: float | None = None) -> Law | None:
    """The least-squares law (module doc) of the changes ``dy`` after schedule areas ``s`` at
    rates ``r`` (x the plan's; default 1), ``alpha`` fixed when given; None without two points
    at distinct areas."""
    pts = _points(s, dy, r)
    if len({(a * q) for a, _, q in pts}) < 2:
        return None
    Z, alphas, betas, several = _grid(pts, alpha)
    (c, ia, ib, sse), = _best(Z, np.array([[b for _, b, _ in pts]]))
    return _law(c, ia, ib, sse, alphas, betas, len(pts), several)


LINKS = ("asin", "logit", "identity", "log")  # asin/logit for proportions, log for a mean


def link(metric_is_proportion: bool, n: int, kind: str = "asin"):
    """``(g, g_inverse)`` of a metric. A proportion measured on ``n`` items: ``asin``, the
    arcsine of its square root (the variance-stabilizing transform of a binomial proportion,
    Anscombe 1948: one item more or less moves it about as much anywhere in [0, 1], where the
    logit of 1 - 1/24 is already two units from that of 1, so a first lost item reads as a cliff);
    ``logit``, the empirical logit of ``(k + 0.5) / (n + 1)``; ``identity``. Bounded at 0 and 1
    both ways. A cross-entropy: ``log`` (it is positive and moves by factors) or ``identity``
(kept at 0 or above)."""
    if not metric_is_proportion:
        if kind == "identity":
            return (lambda y: y), (lambda z: max(0.0, z))
        return (lambda y: math.log(max(y, 1e-9))), (lambda z: math.exp(max(-50.0, min(50.0, z))))
    if kind == "asin":
        return (lambda y: math.asin(math.sqrt(min(1.0, max(0.0, y))))), \
            (lambda z: math.sin(min(math.pi / 2, max(0.0, z))) ** 2)
    if kind == "identity":
        return (lambda y: y), (lambda z: min(1.0, max(0.0, z)))
    if kind != "logit":
        raise ValueError(f"link {kind!r}: one of {', '.join(LINKS)}")

    def g(y: float) -> float:
        p = (y * n + 0.5) / (n + 1)
        return math.log(p / (1 - p))

    def inv(z: float) -> float:
        p = 1 / (1 + math.exp(-max(-50.0, min(50.0, z))))
        return min(1.0, max(0.0, (p * (n + 1) - 0.5) / n))
    return g, inv


def boot_laws(s: Sequence[float], dy: Sequence[float], r: Sequence[float] | None = None, *,
              alpha: float | None = None, n: int = 300, seed: int = 0) -> list[Law]:
    """``n`` bootstrap refits of the law: the fit's residuals (inflated for the two parameters
    fitted) resampled onto its fitted values. Their predictions at an area make the law's own
    uncertainty there, extrapolation included."""
    law = fit(s, dy, r, alpha)
    if law is None:
        return []
    pts = _points(s, dy, r)
    fitted = np.array([law.delta(a, q) for a, _, q in pts])
    k = len(pts)
    inflate = math.sqrt(k / (k - 2)) if k > 2 else 1.0  # residuals understate the errors
    resid = (np.array([b for _, b, _ in pts]) - fitted) * inflate
    rng = np.random.default_rng(seed)
    D = fitted[None, :] + resid[rng.integers(0, k, size=(n, k))]
    Z, alphas, betas, several = _grid(pts, alpha)
    return [_law(c, ia, ib, sse, alphas, betas, k, several) for c, ia, ib, sse in _best(Z, D)]


def draws(s: Sequence[float], dy: Sequence[float], s_new: float, r: Sequence[float] | None = None,
          *, n: int = 300, seed: int = 0) -> list[float]:
    """``n`` bootstrap predictions of the change after area ``s_new`` at the plan's rate."""
    return [law.delta(s_new) for law in boot_laws(s, dy, r, n=n, seed=seed)]


def quantiles(values: Sequence[float], level: float) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (empirical quantiles)."""
    v = sorted(values)
    lo = (1 - level) / 2
    return v[int(lo * (len(v) - 1))], v[int(math.ceil((1 - lo) * (len(v) - 1)))]


def rate_residual(points: Sequence[tuple[float, float, float]], law: Law) -> dict[float, float]:
    """Per pilot rate, the mean residual of its points (``(r, s, dy)``) under the joint law: near
    zero when the law puts the rates on one curve."""
    by: dict[float, list[float]] = {}
    for r, s, dy in points:
        by.setdefault(r, []).append(dy - law.delta(s, r))
    return {r: sum(v) / len(v) for r, v in by.items()}
