"""Paired before/after tests on the same probe items: did this fine-tune change the score?

Two independent intervals overlap long after a paired test would see a change; the items are the
same before and after, so the change is judged item by item:
- proportions (accuracy, refusal rates): the exact McNemar test, a two-sided binomial test on the
  discordant pairs (right before and wrong after = lost, the reverse = gained). McNemar, 1947,
  "Note on the sampling error of the difference between correlated proportions or percentages",
  https://doi.org/10.1007/BF02295996
- per-token means (cross-entropy, KL): a paired percentile bootstrap of the difference of the
  token-weighted means, resampling texts (the same texts for both). Efron & Tibshirani, 1993,
  "An Introduction to the Bootstrap".
"changed" means p < 0.05 (McNemar) or a 95% interval of the difference that excludes 0.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

ALPHA = 0.05
LISTED_ITEMS = 20  # lost and gained items listed per probe (prompt and both answers)


def mcnemar_exact(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value: P(a split at least as uneven as lost/gained | n = lost +
    gained discordant pairs, each equally likely either way). 1.0 when nothing changed."""
    n = lost + gained
    if n == 0:
        return 1.0
    k = min(lost, gained)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap_diff(sums_a: Sequence[float], counts_a: Sequence[int],
                          sums_b: Sequence[float], counts_b: Sequence[int], *,
                          resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """(diff, lo, hi): ``b - a`` of token-weighted means ``sum(sums)/sum(counts)`` and its 95%
    percentile interval, resampling the texts (indices shared by a and b) with replacement."""
    m = len(sums_a)
    if not (m == len(counts_a) == len(sums_b) == len(counts_b)):
        raise ValueError("paired samples differ in length")
    mean = lambda s, c, idx: sum(s[i] for i in idx) / max(sum(c[i] for i in idx), 1e-12)
    every = range(m)
    diff = mean(sums_b, counts_b, every) - mean(sums_a, counts_a, every)
    if m < 2:
        return diff, diff, diff
    rng = random.Random(seed)
    stats = sorted(mean(sums_b, counts_b, idx) - mean(sums_a, counts_a, idx)
                   for idx in ([rng.randrange(m) for _ in every] for _ in range(resamples)))
    lo = stats[int(math.floor(0.025 * (resamples - 1)))]
    hi = stats[int(math.ceil(0.975 * (resamples - 1)))]
    return diff, min(lo, diff), max(hi, diff)


def _same_items(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) > 0 and all(x.get("prompt") == y.get("prompt") for x, y in zip(a, b))


def _listed(x: dict, y: dict) -> dict[str, Any]:
    return {"prompt": x.get("prompt"), "expected": x.get("expected"),
            "before": x.get("answer"), "after": y.get("answer")}


def paired_test(before: dict, after: dict, seed: int = 0) -> dict[str, Any] | None:
    """The paired test of one probe result before and after (``ProbeResult.to_dict()`` shapes,
    with ``items``), or None when the items do not pair (other items, or none kept)."""
    a, b = before.get("items") or [], after.get("items") or []
    if not _same_items(a, b):
        return None
    if all("ok" in x and x["ok"] is not None for x in a + b):
        lost = [_listed(x, y) for x, y in zip(a, b) if x["ok"] and not y["ok"]]
        gained = [_listed(x, y) for x, y in zip(a, b) if not x["ok"] and y["ok"]]
        p = mcnemar_exact(len(lost), len(gained))
        return {"test": "mcnemar_exact", "p": p, "changed": p < ALPHA, "n": len(a),
                "lost": len(lost), "gained": len(gained),
                "lost_items": lost[:LISTED_ITEMS], "gained_items": gained[:LISTED_ITEMS]}
    if all("sum" in x and "count" in x for x in a + b):
        diff, lo, hi = paired_bootstrap_diff([x["sum"] for x in a], [x["count"] for x in a],
                                             [x["sum"] for x in b], [x["count"] for x in b],
                                             seed=seed)
        return {"test": "paired_bootstrap", "diff": diff, "ci": [lo, hi],
                "changed": not lo <= 0.0 <= hi, "n": len(a)}
    return None
