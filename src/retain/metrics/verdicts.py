"""Whether a fine-tune's changes are real, and what it lost and gained, in one sentence.

Pure functions of the comparison rows of runs' ``results.json``: means with 95% t-intervals over
seeds, the judgement of each change (the paired test on the same items with one seed, the
interval over seeds with several), one sentence per strategy, and the cliff. Shared by
``experiments.comparison`` (comparison.json, the terminal) and ``report`` (pages, ``retain run``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from retain.metrics.forgetting import PROPORTION_METRICS, oriented

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z95 = 1.959963984540054

CLIFF_DROP = 0.5  # a retained proportion metric down by this much: the run fell off the cliff


def t_quantile_95(df: int) -> float:
    """Two-sided 95% Student-t quantile (a table to 30 df, then a Cornish-Fisher expansion)."""
    if df < 1:
        raise ValueError("need at least 1 degree of freedom")
    if df <= len(_T95):
        return _T95[df - 1]
    z = _Z95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values: Sequence[float]) -> dict[str, Any]:
    """Mean of ``values`` (one per seed) with its 95% t-interval, ``mean +- t * sd / sqrt(n)``;
    ``ci`` is None with a single value (no spread to measure)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return {"mean": None, "ci": None, "sd": None, "n": 0}
    m = sum(vals) / n
    if n == 1:
        return {"mean": m, "ci": None, "sd": None, "n": 1}
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    half = t_quantile_95(n - 1) * sd / math.sqrt(n)
    return {"mean": m, "ci": [m - half, m + half], "sd": sd, "n": n}


def comparison_rows(labels: list[str], results: list[dict]) -> list[dict[str, Any]]:
    """Summary rows of every run, with the run's label as ``strategy``."""
    rows = []
    for label, res in zip(labels, results):
        for c in res["comparison"]:
            rows.append({"strategy": label, "probe": c["probe"], "metric": c["metric"],
                         "before": c["before"], "after": c["after"], "delta": c["delta"],
                         "higher_is_better": c["higher_is_better"],
                         "capability": c.get("capability", c["probe"]),
                         "seed": res.get("seed"), "n": c.get("n"), "paired": c.get("paired"),
                         "before_ci": c.get("before_ci"), "after_ci": c.get("after_ci")})
    return rows


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per strategy and probe metric: before, after and delta averaged over its seeds."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["probe"], r["metric"]), []).append(r)
    out = []
    for group in groups.values():
        mean = {k: sum(float(g[k]) for g in group) / len(group)
                for k in ("before", "after", "delta")}
        one = len(group) == 1  # a mean has no paired test or interval of its own
        out.append({**group[0], **mean, "seed": None, "seeds": len(group),
                    **({} if one else {"paired": None, "before_ci": None, "after_ci": None})})
    return out


def seed_deltas(rows: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """strategy -> ``probe.metric`` -> the mean delta over seeds with its 95% t-interval
    (``{mean, ci, sd, n, deltas, higher_is_better}``; ``ci`` None with one seed)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = f"{r['probe']}.{r['metric']}"
        d = out.setdefault(r["strategy"], {}).setdefault(
            key, {"deltas": [], "higher_is_better": r["higher_is_better"]})
        d["deltas"].append(float(r["delta"]))
    for per_key in out.values():
        for d in per_key.values():
            d.update(mean_ci(d["deltas"]))
    return out


# How a metric is named in a sentence when its probe has several (safety: refusals, over-refusals).
METRIC_WORDS = {"refusal_rate": "refusals", "over_refusal_rate": "over-refusals",
                "ce_nats_per_token": "ce", "cloze_accuracy": "cloze"}
SCORE_WORDS = {"domain_gain": "new-domain gain"}  # a ranking score's name in a sentence


def judge(rows: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """strategy -> ``probe.metric`` -> its change, judged: the row averaged over the strategy's
    seeds (``mean_rows``) with ``ci`` (the delta's 95% t-interval over seeds, None with one),
    ``seeds``, and ``change``: "worse" or "better" (by the metric's direction) when the change
    is real, else None. Real: with several seeds, when the interval excludes 0; with one seed,
    when the run's paired test on the same items says changed (``changed``)."""
    spread = seed_deltas(rows)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in mean_rows(rows):
        key = f"{m['probe']}.{m['metric']}"
        d = spread[m["strategy"]][key]
        if d["n"] > 1:
            real = d["ci"] is not None and (d["ci"][0] > 0 or d["ci"][1] < 0)
        else:
            real = changed(m)
        good = m["delta"] > 0 if m["higher_is_better"] else m["delta"] < 0
        change = ("better" if good else "worse") if real and m["delta"] != 0 else None
        out.setdefault(m["strategy"], {})[key] = {**m, "ci": d["ci"], "seeds": d["n"],
                                                  "change": change}
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _detail(c: dict[str, Any]) -> str:
    """"0.95 -> 0.23" and how sure: with one seed, the items the paired test saw move that way
    (right to wrong for a fall; for a lower-is-better rate such as over-refusal, wrong to right
    is its rise), with several the mean delta and its interval's half-width."""
    text = f"{c['before']:.2f} -> {c['after']:.2f}"
    p = c.get("paired") or {}
    if c["seeds"] > 1 and c["ci"]:
        half = (c["ci"][1] - c["ci"][0]) / 2
        text += f", {c['delta']:+.2f} ± {half:.2f} over {c['seeds']} seeds"
    elif p.get("test") == "mcnemar_exact":
        text += f", {p['lost'] if c['delta'] < 0 else p['gained']} of {p['n']} items"
    return text


def verdict(changes: dict[str, dict[str, Any]]) -> str:
    """One sentence on one strategy's changes (``judge``): the new domain learnt, the capabilities
    lost, gained and kept, each probe with its numbers, e.g. "learnt legal (accuracy 0.00 -> 1.00,
    24 of 24 items; ce 8.14 -> 3.72); lost safety (refusals 1.00 -> 0.00, 24 of 24 items) and
    instructions (0.95 -> 0.23, 17 of 24 items); kept math and code."."""
    by_probe: dict[str, list[dict]] = {}
    for c in changes.values():
        by_probe.setdefault(c["probe"], []).append(c)
    learnt, flat, lost, gained, kept = [], [], [], [], []
    for probe, cs in by_probe.items():
        domain = cs[0]["capability"] == "domain"
        named = len(cs) > 1  # several metrics: say which one moved
        for change, bucket in (("better", learnt if domain else gained), ("worse", lost)):
            moved = [c for c in cs if c["change"] == change]
            if moved:
                bucket.append(probe + " (" + "; ".join(
                    (METRIC_WORDS.get(c["metric"], c["metric"]) + " " if named else "")
                    + _detail(c) for c in moved) + ")")
        if all(c["change"] is None for c in cs):
            (flat if domain else kept).append(probe)
    parts = [f"{verb} {_and(items)}" for verb, items in (
        ("learnt", learnt), ("did not learn", flat), ("lost", lost), ("gained", gained),
        ("kept", kept)) if items]
    return "; ".join(parts) + "." if parts else "no probe results."


def verdicts(labels: list[str], results: list[dict]) -> dict[str, str]:
    """strategy -> ``verdict`` sentence, for runs (``labels`` parallel; a shared label: seeds)."""
    judged = judge(comparison_rows(labels, results))
    return {s: verdict(judged.get(s, {})) for s in dict.fromkeys(labels)}


def cliff_count(rows: list[dict], strategy: str, drop: float = CLIFF_DROP) -> list[str]:
    """Retained proportion metrics that ``strategy`` lost at least ``drop`` on (oriented)."""
    lost = []
    for r in rows:
        if r["strategy"] != strategy or r["capability"] == "domain" or \
                r["metric"] not in PROPORTION_METRICS:
            continue
        if oriented(r["metric"], r["before"]) - oriented(r["metric"], r["after"]) >= drop:
            lost.append(f"{r['probe']}.{r['metric']}")
    return lost


def _apart(a: Any, b: Any) -> bool | None:
    """Whether two 95% intervals ``[lo, hi]`` are apart; None when either is unknown."""
    try:
        return bool(a[1] < b[0] or b[1] < a[0])
    except (TypeError, IndexError, KeyError):
        return None


def changed(row: dict[str, Any]) -> bool:
    """Whether a comparison row changed: by its paired test where it has one; results without
    per-item outcomes (older ones): when the before and after 95% intervals are apart, else
    (no intervals either) by more than 0.05."""
    p = row.get("paired")
    if p:
        return bool(p["changed"])
    apart = _apart(row.get("before_ci"), row.get("after_ci"))
    return apart if apart is not None else abs(row["delta"]) >= 0.05
