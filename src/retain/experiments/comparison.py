"""A comparison folder: several runs of one model and domain under different strategies.

Renders the runs' ``results.json`` into ``summary.csv`` (all runs, a ``strategy`` column; a
``seed`` column too when a strategy ran under several seeds), ``comparison.json`` (the trade-off
points, the Pareto front, the ranking and its rule, one sentence per strategy on what it lost and
gained, the run folders; with several seeds the mean delta of every probe with its 95%
t-interval), the charts and the terminal output. The judgement behind those sentences, which
the report and ``retain run``'s terminal share, is ``retain.metrics.verdicts``. Used by
``retain demo``, ``retain compare`` and ``retain sweep``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from retain.metrics.verdicts import (  # noqa: F401 (mean_ci: also sequence_metrics')
    CLIFF_DROP, SCORE_WORDS, cliff_count, comparison_rows, judge, mean_ci, mean_rows,
    seed_deltas, verdict)
from retain.report import tables
from retain.report.plots import (
    PROPORTION_METRICS, pareto_front, plot_capabilities, plot_deltas, plot_tradeoff,
    tradeoff_points)
from retain.report.results import SUMMARY_COLUMNS, write_json_atomic, write_text_atomic

DEFAULT_RANK = "retained_at_gain"
MIN_GAIN_SHARE = 0.8  # of the best new-domain gain, to count as having learnt the domain
RANK_SCORES = {
    "retained_at_gain": "mean retained capability among the runs whose new-domain gain (the rise "
                        "of its proportion metrics; with none, the relative fall of its "
                        "cross-entropy) reaches min_gain_share of the best gain; then the others "
                        "by new-domain gain; runs that fell off the cliff after all others",
    "balanced": "mean of the new-domain score and the mean retained capability, after training",
    "retained": "mean retained capability after training (oriented proportion metrics)",
    "domain": "new-domain score after training (mean of its proportion metrics)",
}


def _unique(labels: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def _point(rows: list[dict], domain: set[str]) -> tuple[float, float]:
    return tradeoff_points([dict(r, strategy="_") for r in rows], domain).get("_", (math.nan,) * 2)


def _domain_gain(rows: list[dict], domain: set[str], x: float) -> float:
    """How much one run learnt of the new domain: the rise of its domain score ``x`` (its
    proportion metrics); a domain measured by cross-entropy alone (a JSONL domain with long
    answers), the mean relative fall of its cross-entropy, (before - after) / before."""
    ours = [r for r in rows if r["probe"] in domain]
    if any(r["metric"] in PROPORTION_METRICS for r in ours):
        return x - _point([dict(r, after=r["before"]) for r in rows], domain)[0]
    rel = [(r["after"] - r["before"]) / abs(r["before"]) * (1 if r["higher_is_better"] else -1)
           for r in ours if r["before"]]
    return sum(rel) / len(rel) if rel else 0.0


def run_scores(rows: list[dict], domain: set[str]) -> dict[tuple[str, Any], dict[str, float]]:
    """(strategy, seed) -> {domain, retained, balanced, domain_gain}: each run's scores after
    training, and how much it learnt of the new domain (``_domain_gain``)."""
    by_run: dict[tuple[str, Any], list[dict]] = {}
    for r in rows:
        by_run.setdefault((r["strategy"], r.get("seed")), []).append(r)
    scores = {}
    for key, rs in by_run.items():
        x, y = _point(rs, domain)
        scores[key] = {"domain": x, "retained": y, "balanced": (x + y) / 2,
                       "domain_gain": _domain_gain(rs, domain, x)}
    return scores


def paired_over_seeds(a: dict[Any, float], b: dict[Any, float]) -> dict[str, Any]:
    """a - b over the seeds both ran (same seed: same data order and probe items), with its
    95% t-interval; larger than the noise when the interval excludes 0 (a paired t-test at 5%)."""
    seeds = [s for s in a if s in b]
    diff = mean_ci([a[s] - b[s] for s in seeds])
    ci = diff["ci"]
    return {"mean_diff": diff["mean"], "ci": ci, "seeds": len(seeds),
            "larger_than_noise": None if ci is None else bool(ci[0] > 0 or ci[1] < 0)}


def ranking(rows: list[dict], domain: set[str], by: str = DEFAULT_RANK,
            min_gain_share: float = MIN_GAIN_SHARE) -> list[dict[str, Any]]:
    """Strategies ranked by ``by`` (see ``RANK_SCORES``), best first, from the per-seed scores.

    "retained_at_gain" ranks in tiers: first the runs whose mean new-domain gain reaches
    ``min_gain_share`` of the best mean gain (every run when none gained), by mean retained
    capability; then the others by mean new-domain gain; runs that fell off the cliff
    (``cliff_count``, on the means over seeds) after all others, in the same two tiers. The other
    scores rank by their mean alone. Each entry has its score (retained, for "retained_at_gain")
    with its 95% t-interval, the new-domain gain and retained score, ``cliff``, ``pareto`` (on
    the front of the means), and the paired difference to the next-ranked (``vs_next``, on the
    score that placed this one: ``on``; ``by_rule`` when the next is in a lower tier) and to
    the best (``vs_best``, on the score);
    ``larger_than_noise``: the interval of the difference excludes 0; None with fewer than two
    shared seeds."""
    if by not in RANK_SCORES:
        raise ValueError(f"unknown ranking score {by!r}; known: {', '.join(RANK_SCORES)}")
    per: dict[str, dict[str, dict[Any, float]]] = {}  # strategy -> score name -> seed -> value
    for (strategy, seed), sc in run_scores(rows, domain).items():
        for name, v in sc.items():
            per.setdefault(strategy, {}).setdefault(name, {})[seed] = v
    stats = {k: {name: mean_ci(list(v.values())) for name, v in d.items()} for k, d in per.items()}

    def mean(k: str, name: str) -> float | None:
        return stats[k][name]["mean"]

    means = mean_rows(rows)
    cliff = {k: cliff_count(means, k) for k in per}
    front = set(pareto_front({k: (mean(k, "domain"), mean(k, "retained")) for k in per
                              if None not in (mean(k, "domain"), mean(k, "retained"))}))
    tiered = by == "retained_at_gain"
    best = max((g for k in per if (g := mean(k, "domain_gain")) is not None), default=0.0)
    bar = min_gain_share * best if best > 0 else -math.inf  # none gained: every run reaches it

    def reaches(k: str) -> bool:
        g = mean(k, "domain_gain")
        return g is not None and g >= bar - 1e-9  # 1e-9: a share of exactly the bar counts

    def on(k: str) -> str:  # the score that places k within its tier
        return by if not tiered else "retained" if reaches(k) else "domain_gain"

    def tier(k: str) -> tuple[bool, bool]:
        return (bool(cliff[k]), not reaches(k)) if tiered else (False, False)

    order = sorted(per, key=lambda k: (tier(k), -(mean(k, on(k)) if mean(k, on(k)) is not None
                                                  else -math.inf)))
    score = "retained" if tiered else by
    ranked = []
    for i, k in enumerate(order):
        e = {"rank": i + 1, "strategy": k, "score": mean(k, score),
             "score_ci": stats[k][score]["ci"], "seeds": stats[k][score]["n"],
             "domain_gain": mean(k, "domain_gain"), "domain_gain_ci": stats[k]["domain_gain"]["ci"],
             "retained": mean(k, "retained"), "cliff": cliff[k], "pareto": k in front}
        if tiered:
            e["reaches_gain_share"] = reaches(k)
        if i + 1 < len(order):  # by_rule: a tier apart, placed by the rule whatever the gap
            nxt = order[i + 1]
            e["vs_next"] = {"strategy": nxt, "on": on(k), "by_rule": tier(k) != tier(nxt),
                            **paired_over_seeds(per[k][on(k)], per[nxt][on(k)])}
        if i > 0:
            e["vs_best"] = {"strategy": order[0], "on": score,
                            **paired_over_seeds(per[order[0]][score], per[k][score])}
        ranked.append(e)
    return ranked


def rank_rule(order: list[dict[str, Any]], by: str, min_gain_share: float = MIN_GAIN_SHARE) -> str:
    """The ranking's rule in one sentence, with the numbers it used (``ranking``'s ``order``)."""
    flag = f"runs that fell off the cliff (a retained proportion down by {CLIFF_DROP} or more)"
    if by != "retained_at_gain":
        return f"Ranked by the {by} score, the {RANK_SCORES[by]}; {flag} are flagged."
    last = f"{flag} come after all others, flagged."
    best = max((e["domain_gain"] for e in order if e.get("domain_gain") is not None), default=0.0)
    if best <= 0:
        return f"No run gained on the new domain: ranked by mean retained capability; {last}"
    return (f"Ranked by mean retained capability among the runs that reach {min_gain_share:.0%} of "
            f"the best new-domain gain (+{best:.2f}, so +{min_gain_share * best:.2f} or more); "
            f"then the others, by new-domain gain; {last}")


def _table_rows(rows: list[dict]) -> list[dict]:
    table: dict[str, dict] = {}
    for r in rows:
        key = f"{r['probe']}.{r['metric']}"
        t = table.setdefault(key, {"probe": r["probe"], "metric": r["metric"], "after": {},
                                   "before": r["before"], "higher_is_better": r["higher_is_better"],
                                   "domain": r["capability"] == "domain"})
        t["after"][r["strategy"]] = r["after"]
    # retained capabilities first, then the new domain
    return sorted(table.values(), key=lambda t: t["domain"])


def _summary_csv(rows: list[dict], with_seed: bool) -> str:
    cols = list(SUMMARY_COLUMNS)
    if with_seed:
        cols.insert(1, "seed")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    return buf.getvalue()


def _run_dir(res: dict, out: Path, label: str) -> str:
    cfg_out = (res.get("config") or {}).get("out")
    return str(Path(res.get("out_dir") or cfg_out or out / label))


def write_comparison(out: Path, labels: list[str], results: list[dict], *, title: str,
                     extra: dict[str, Any] | None = None, show: bool = True,
                     rank_by: str = DEFAULT_RANK, min_gain_share: float = MIN_GAIN_SHARE) -> dict:
    """Write the comparison folder ``out`` of ``results`` (one per run, ``labels`` parallel).

    Runs that share a label are seeds of one strategy: tables and charts show their mean, and
    ``comparison.json`` gains ``seed_deltas`` (mean delta and 95% t-interval per probe metric).
    ``verdicts`` holds one sentence per strategy (``verdict``); ``ranking`` orders the strategies
    by ``rank_by`` (see ``RANK_SCORES``; ``min_gain_share`` for "retained_at_gain") and says
    its rule in ``rule``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_rows = comparison_rows(labels, results)
    strategies = _unique(labels)
    multi_seed = len(strategies) < len(labels)
    rows = mean_rows(all_rows) if multi_seed else all_rows  # one row per strategy and metric
    domain = {r["probe"] for r in rows if r["capability"] == "domain"}
    points = tradeoff_points(rows, domain)
    before_rows = [dict(r, strategy="before", after=r["before"]) for r in rows
                   if r["strategy"] == strategies[0]]
    base_point = tradeoff_points(before_rows, domain).get("before")
    judged = judge(all_rows)
    write_text_atomic(out / "summary.csv", _summary_csv(all_rows, multi_seed))
    plot_capabilities(rows, strategies, out / "capabilities.png", title=title)
    plot_tradeoff(points, out / "tradeoff.png", base=base_point, title=title)
    plot_deltas(judged, strategies, out / "deltas.png", title=title)
    ranked = ranking(all_rows, domain, rank_by, min_gain_share)
    summary = {
        "title": title,
        "runs": [{"strategy": label, "seed": res.get("seed"), "dir": _run_dir(res, out, label),
                  "trainable_params": res.get("model", {}).get("trainable_params"),
                  "wall_s": res.get("wall_s")} for label, res in zip(labels, results)],
        "verdicts": {s: verdict(judged.get(s, {})) for s in strategies},
        "tradeoff": {s: {"domain_score": x, "retained_score": y} for s, (x, y) in points.items()},
        "before": {"domain_score": base_point[0], "retained_score": base_point[1]} if base_point else None,
        "pareto_front": pareto_front(points),
        "cliff": {s: cliff_count(rows, s) for s in strategies},
        "ranking": {"score": rank_by, "definition": RANK_SCORES[rank_by],
                    "rule": rank_rule(ranked, rank_by, min_gain_share),
                    **({"min_gain_share": min_gain_share} if rank_by == "retained_at_gain" else {}),
                    "noise": "95% t-interval over seeds; a difference is larger than the noise "
                             "when the t-interval of the paired per-seed difference excludes 0",
                    "order": ranked},
        **(extra or {}),
    }
    if multi_seed:
        summary["seeds"] = sorted({r.get("seed") for r in results}, key=str)
        summary["seed_deltas"] = seed_deltas(all_rows)
    write_json_atomic(out / "comparison.json", summary)
    if show:
        show_comparison(summary, _table_rows(rows), strategies, multi_seed)
        if "wall_s" in summary:
            tables.console.print(f"finished in {summary['wall_s']:.0f} s; wrote {out}/summary.csv, "
                                 f"capabilities.png, tradeoff.png, deltas.png")
    return summary


def show_comparison(summary: dict[str, Any], table_rows: list[dict], strategies: list[str],
                    multi_seed: bool) -> None:
    """The comparison in the terminal: the score table, then one sentence per strategy (best
    ranked first), the ranking with its rule, the Pareto front."""
    out = tables.console
    tables.print_comparison(table_rows, strategies, title=summary["title"] + (
        " (mean over seeds)" if multi_seed else ""))
    for e in summary["ranking"]["order"]:  # best first
        out.print(f"{e['strategy']}: {summary['verdicts'][e['strategy']]}", markup=False,
                  highlight=False)
    print_ranking(summary["ranking"])
    if summary["pareto_front"]:
        out.print("Pareto front (no other strategy is better on both the new domain and the "
                  "retained score): " + ", ".join(summary["pareto_front"]), markup=False,
                  highlight=False)


def _fmt_ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_ranking(rank: dict[str, Any]) -> None:
    """The ranking as a few terminal lines: its rule, then per strategy its score, new-domain
    gain and retained score, whether the gap to the next exceeds the seed-to-seed noise, and
    the cliff it fell off."""
    out = tables.console
    out.print(rank.get("rule") or f"ranking by {rank['score']} score ({rank['definition']}):",
              markup=False, highlight=False)
    name = "retained" if rank["score"] == "retained_at_gain" else rank["score"]
    for e in rank["order"]:
        score = "-" if e["score"] is None else f"{e['score']:.3f}"
        line = f"  {e['rank']}. {e['strategy']}: {name} {score}{_fmt_ci(e['score_ci'])}"
        if name != "domain_gain" and e.get("domain_gain") is not None:
            line += f", new-domain gain {e['domain_gain']:+.2f}"
        if name != "retained" and e.get("retained") is not None:
            line += f", retained {e['retained']:.2f}"
        nxt = e.get("vs_next")
        if nxt and nxt["larger_than_noise"] is not None and not nxt.get("by_rule"):
            word = "larger than the noise" if nxt["larger_than_noise"] else "within the noise"
            on = SCORE_WORDS.get(nxt.get("on", name), nxt.get("on", name))
            line += (f"; vs {nxt['strategy']}: {on} {nxt['mean_diff']:+.3f}"
                     f"{_fmt_ci(nxt['ci'])} ({word}, {nxt['seeds']} seeds)")
        if e.get("cliff"):
            line += f"; fell off the cliff: {', '.join(e['cliff'])}"
        out.print(line, markup=False, highlight=False)
    if all(e["score_ci"] is None for e in rank["order"]):
        out.print("  (one seed per strategy: no interval; add seeds: [0, 1, 2] to see the noise)")
