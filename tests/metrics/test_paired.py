"""Paired before/after tests: exact McNemar p-values against hand-computed binomial tails, the
paired bootstrap, lost/gained items, and a change that overlapping intervals would miss."""

from __future__ import annotations

import math

import pytest

from retain.metrics.paired import mcnemar_exact, paired_bootstrap_diff, paired_test
from retain.probes.stats import wilson_interval


@pytest.mark.parametrize("lost,gained,p", [
    (0, 0, 1.0), (5, 0, 2 / 32), (0, 6, 2 / 64), (10, 2, 2 * (1 + 12 + 66) / 4096),
    (3, 3, 1.0), (1, 0, 1.0)])
def test_mcnemar_exact_is_the_binomial_tail(lost, gained, p):
    assert mcnemar_exact(lost, gained) == pytest.approx(p)


def items(oks, prompt="q"):
    return [{"prompt": f"{prompt}{i}", "expected": "a", "answer": "a" if ok else "b", "ok": ok}
            for i, ok in enumerate(oks)]


def test_a_paired_change_that_two_intervals_would_miss():
    before = [True] * 90 + [False] * 10
    after = [False] * 8 + [True] * 82 + [False] * 10  # 8 items lost, none gained: 0.90 -> 0.82
    lo_b, hi_b = wilson_interval(90, 100)
    lo_a, hi_a = wilson_interval(82, 100)
    assert lo_b < hi_a  # the two 95% intervals overlap...
    res = paired_test({"items": items(before)}, {"items": items(after)})
    assert res["test"] == "mcnemar_exact" and res["lost"] == 8 and res["gained"] == 0
    assert res["p"] == pytest.approx(2 / 2 ** 8) and res["changed"]  # ...the paired test sees it
    assert res["lost_items"][0] == {"prompt": "q0", "expected": "a", "before": "a", "after": "b"}


def test_noise_both_ways_is_not_a_change():
    before = [True, False] * 20
    after = [False, True] * 20  # 20 lost, 20 gained
    res = paired_test({"items": items(before)}, {"items": items(after)})
    assert res["lost"] == res["gained"] == 20 and res["p"] == 1.0 and not res["changed"]


def test_items_that_do_not_pair_give_none():
    assert paired_test({"items": items([True] * 3)}, {"items": items([True] * 3, "x")}) is None
    assert paired_test({"items": items([True] * 3)}, {"items": items([True] * 4)}) is None
    assert paired_test({}, {"items": []}) is None


def test_paired_bootstrap_on_cross_entropy():
    sums = [10.0, 12.0, 8.0, 11.0, 9.5, 10.5]
    counts = [10, 12, 8, 10, 10, 10]
    same = paired_bootstrap_diff(sums, counts, sums, counts)
    assert same == (0.0, 0.0, 0.0)
    worse = [s + 0.2 * c for s, c in zip(sums, counts)]  # +0.2 nats on every token
    diff, lo, hi = paired_bootstrap_diff(sums, counts, worse, counts, seed=1)
    assert diff == pytest.approx(0.2) and lo > 0  # a shift of every text is a clear change
    res = paired_test({"items": [{"prompt": str(i), "sum": s, "count": c}
                                 for i, (s, c) in enumerate(zip(sums, counts))]},
                      {"items": [{"prompt": str(i), "sum": s, "count": c}
                                 for i, (s, c) in enumerate(zip(worse, counts))]})
    assert res["test"] == "paired_bootstrap" and res["changed"]
    assert res["diff"] == pytest.approx(0.2) and math.isfinite(res["ci"][0])
