"""Before/after metrics of one probe: delta, forgetting, retention, new-domain gain.

Signs follow the probe's ``higher_is_better``: forgetting > 0 always means "got worse", gain > 0
always means "got better". Retention is a ratio where 1.0 means "all kept":
after/before for higher-is-better scores (accuracy, refusal rate); (1-after)/(1-before) for
lower-is-better rates (over-refusal); exp(before - after) for quantities in nats (cross-entropy,
KL), i.e. the ratio of per-token probabilities ppl_before/ppl_after. Forgetting measured as the
rise in cross-entropy: Kalajdzievski, 2024, "Scaling Laws for Forgetting When Fine-Tuning Large
Language Models", https://arxiv.org/abs/2401.05605.
"""

from __future__ import annotations

import math

# Metrics that are proportions in [0, 1]: they share one scale, so they can be averaged.
PROPORTION_METRICS = {"accuracy", "refusal_rate", "over_refusal_rate", "cloze_accuracy"}


def oriented(metric: str, value: float) -> float:
    """A proportion turned so that higher is better (over-refusal 0.1 -> 0.9)."""
    return 1.0 - value if metric == "over_refusal_rate" else value


def delta(before: float, after: float) -> float:
    """after - before, in the metric's own units."""
    return after - before


def forgetting(before: float, after: float, higher_is_better: bool) -> float:
    """How much worse the model got (negative: it improved)."""
    return before - after if higher_is_better else after - before


def gain(before: float, after: float, higher_is_better: bool) -> float:
    """How much better the model got: the new-domain gain (= -forgetting)."""
    return -forgetting(before, after, higher_is_better)


def retention(before: float, after: float, higher_is_better: bool, metric: str = "") -> float | None:
    """Share of the capability kept (1.0 = all, may exceed 1); None where undefined
    (a higher-is-better score that was 0 before, a lower-is-better rate that was 1 before)."""
    if higher_is_better:
        return after / before if before > 0 else None
    if metric.endswith("rate"):  # a share in [0, 1] where lower is better
        return (1.0 - after) / (1.0 - before) if before < 1 else None
    return math.exp(before - after)  # nats/token: ratio of geometric-mean token probabilities


def compare(before: list, after: list) -> list[dict]:
    """Rows pairing two lists of ``ProbeResult`` (matched by ``probe.metric`` key, in the order
    of ``before``): before/after values and intervals, delta, forgetting, retention, and the
    paired test on the same items (``paired``: None when the items do not pair)."""
    from retain.metrics.paired import paired_test

    after_by_key = {r.key: r for r in after}
    rows = []
    for b in before:
        a = after_by_key.get(b.key)
        if a is None:
            continue
        rows.append({
            "key": b.key, "probe": b.probe, "metric": b.metric, "capability": b.capability,
            "kind": b.kind, "higher_is_better": b.higher_is_better, "n": a.n,
            "before": b.value, "after": a.value, "delta": delta(b.value, a.value),
            "forgetting": forgetting(b.value, a.value, b.higher_is_better),
            "retention": retention(b.value, a.value, b.higher_is_better, b.metric),
            "before_ci": [b.ci_low, b.ci_high], "after_ci": [a.ci_low, a.ci_high],
            "paired": paired_test(b.to_dict(), a.to_dict())})
    return rows
