"""Confidence intervals: Wilson golden values and the bootstrap's basic properties."""

from __future__ import annotations

import pytest

from retain.probes.stats import bootstrap_ratio_interval, wilson_interval

# Golden 95% Wilson intervals (z = 1.96), e.g. R's prop.test(correct=FALSE) / statsmodels.
GOLDEN = [((0, 10), (0.0, 0.2775)), ((5, 10), (0.2366, 0.7634)), ((8, 10), (0.4902, 0.9433)),
          ((10, 10), (0.7225, 1.0)), ((1, 100), (0.0018, 0.0545)), ((50, 100), (0.4038, 0.5962))]


@pytest.mark.parametrize("kn,expected", GOLDEN)
def test_wilson_golden(kn, expected):
    lo, hi = wilson_interval(*kn)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_bootstrap_contains_estimate_and_is_seeded():
    num, den = [3.0, 5.0, 2.0, 9.0, 4.0], [2, 3, 1, 4, 2]
    lo, hi = bootstrap_ratio_interval(num, den, seed=1)
    assert lo <= sum(num) / sum(den) <= hi and lo < hi
    assert (lo, hi) == bootstrap_ratio_interval(num, den, seed=1)
    assert bootstrap_ratio_interval([2.0], [4]) == (0.5, 0.5)
    # identical units: no spread
    assert bootstrap_ratio_interval([1.0] * 4, [2] * 4) == (0.5, 0.5)
