"""The forecast's law and its pieces, on numbers whose answer is known."""

import math

import pytest

from retain.errors import UserError
from retain.forecast.check import auroc
from retain.forecast.law import draws, fit, link, lr_area, quantiles, rate_residual
from retain.forecast.pilots import plan_pilots, point_steps
from retain.train.loop import lr_factor


@pytest.mark.parametrize("c, alpha", [(-3.0, 0.6), (2.5, 0.3), (-0.8, 1.0)])
def test_fit_recovers_known_parameters_from_a_synthetic_curve(c, alpha):
    xs = [0.01 * k for k in range(1, 13)]
    law = fit(xs, [c * x ** alpha for x in xs])
    assert law.alpha == pytest.approx(alpha, abs=0.011)
    assert law.c == pytest.approx(c, rel=0.05)
    assert law.resid_sd < 1e-3 * abs(c)


def test_fit_recovers_parameters_under_noise_and_the_interval_covers_the_truth():
    import random

    rng = random.Random(0)
    c, alpha = -4.0, 0.5
    xs = [0.005 * k for k in range(1, 16)]
    truth = c * 0.3 ** alpha  # 4x beyond the last point
    covered = 0
    for trial in range(40):
        ys = [c * x ** alpha + rng.gauss(0, 0.05) for x in xs]
        law = fit(xs, ys)
        assert abs(law.alpha - alpha) < 0.2
        lo, hi = quantiles(draws(xs, ys, 0.3, n=200, seed=trial), 0.8)
        covered += lo <= truth <= hi
    assert 24 <= covered <= 40  # an 80% interval of the law: not far below 80%


def test_fit_needs_two_distinct_positive_areas():
    assert fit([0.0, 0.0], [1.0, 2.0]) is None
    assert fit([0.1], [1.0]) is None


def test_lr_area_is_the_sum_of_the_loops_own_rates():
    want = 1e-3 * sum(lr_factor(t, steps=50, warmup_steps=5, schedule="cosine") for t in range(20))
    assert lr_area(20, lr=1e-3, steps=50, warmup_steps=5, schedule="cosine") == pytest.approx(want)
    # a cosine run's second half covers less area than its first
    half = lr_area(25, lr=1.0, steps=50, warmup_steps=0, schedule="cosine")
    assert lr_area(50, lr=1.0, steps=50, warmup_steps=0, schedule="cosine") - half < half


def test_logit_link_is_finite_at_the_ends_and_inverts():
    for kind in ("asin", "logit", "identity"):
        g, inv = link(True, 40, kind)
        assert math.isfinite(g(1.0)) and math.isfinite(g(0.0))
        for y in (0.0, 0.25, 1.0):
            assert inv(g(y)) == pytest.approx(y)
        assert 0.0 <= inv(g(0.9) - 100) <= inv(g(0.9) + 100) <= 1.0  # bounded both ways
    with pytest.raises(ValueError):
        link(True, 40, "probit")
    g, inv = link(False, 40)  # a cross-entropy: the log, positive whatever the change
    assert g(2.5) == pytest.approx(math.log(2.5)) and inv(g(2.5)) == pytest.approx(2.5)
    assert inv(g(8.0) - 100.0) > 0


def test_two_rates_recover_the_rate_exponent_and_leave_no_rate_residual():
    """Pilots at the planned rate and twice it: the law's rate exponent (beta) is identified,
    and a plan at the piloted rate is predicted from both."""
    S = [5.0, 15.0, 25.0]
    truth = lambda s, r: -0.02 * r ** 1.5 * s ** 0.6  # noqa: E731
    law = fit(S * 2, [truth(s, 1) for s in S] + [truth(s, 2) for s in S], [1.0] * 3 + [2.0] * 3)
    assert (law.alpha, law.beta, law.rates) == (pytest.approx(0.6), pytest.approx(1.5), 2)
    assert law.delta(150.0) == pytest.approx(truth(150.0, 1), rel=1e-6)
    res = rate_residual([(r, s, truth(s, r)) for r in (1.0, 2.0) for s in S], law)
    assert res[1.0] == pytest.approx(0, abs=1e-9) and res[2.0] == pytest.approx(0, abs=1e-9)
    one = fit(S, [truth(s, 1) for s in S])  # one rate: beta is the area's (= alpha)
    assert one.beta == one.alpha and one.rates == 1
    fixed = fit(S, [truth(s, 1) for s in S], alpha=0.3)  # a fixed exponent is kept
    assert fixed.alpha == 0.3


def test_plan_pilots_splits_the_budget_and_refuses_a_budget_too_small():
    assert plan_pilots(300, 1e-3, 0.2) == [{"lr": 1e-3, "steps": 30}, {"lr": 2e-3, "steps": 30}]
    assert plan_pilots(30, 1e-3, 0.2) == [{"lr": 1e-3, "steps": 6}]  # one pilot: too few for two
    with pytest.raises(UserError, match="at least"):
        plan_pilots(10, 1e-3, 0.2)
    with pytest.raises(UserError, match="budget"):
        plan_pilots(300, 1e-3, 1.5)
    with pytest.raises(UserError, match="positive"):
        plan_pilots(300, 1e-3, 0.2, rates=[-1.0])
    assert point_steps(30, 3) == [10, 20, 30]


def test_auroc():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    assert auroc([0.5], [True]) is None
