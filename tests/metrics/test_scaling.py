"""Power-law fit and Spearman correlation on data with a known answer."""

from __future__ import annotations

import math
import random

import pytest

from retain.metrics.scaling import fit_power_law, ranks, spearman


def test_power_law_recovers_known_exponent_under_noise():
    rng = random.Random(0)
    steps = [10, 20, 40, 80, 160, 320, 640]
    y = [0.02 * s ** 0.5 * math.exp(rng.gauss(0, 0.05)) for s in steps]
    fit = fit_power_law(steps, y)
    assert fit["alpha"] == pytest.approx(0.5, abs=0.05)
    assert fit["A"] == pytest.approx(0.02, rel=0.3)
    assert 0.98 < fit["r2"] <= 1 and fit["n"] == 7 and fit["excluded"] == 0


def test_power_law_exact_and_drops_nonpositive_points():
    fit = fit_power_law([1, 2, 4, 8, 3], [3.0, 3 * 2 ** -1.5, 3 * 4 ** -1.5, 3 * 8 ** -1.5, -0.1])
    assert fit["alpha"] == pytest.approx(-1.5) and fit["A"] == pytest.approx(3.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["excluded"] == 1
    assert fit_power_law([5, 5, 10], [0.1, 0.2, 0.0]) is None  # one distinct x left
    assert fit_power_law([1, 2], [1.0, 2.0])["r2"] is None  # two points: any line fits


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # monotone but not linear: rank correlation is still 1
    assert spearman([1, 2, 3, 4], [1, 8, 27, 1000]) == pytest.approx(1.0)
    # a textbook case without ties: d = [0, -1, 1, 0, 0] -> 1 - 6*2/(5*24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
