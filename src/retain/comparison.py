"""A comparison folder: several runs of one model and domain under different strategies.

Renders the runs' ``results.json`` into ``summary.csv`` (all runs, a ``strategy`` column; a
``seed`` column too when a strategy ran under several seeds), ``comparison.json`` (the trade-off
points, the Pareto front, the ranking, the run folders; with several seeds the mean delta of every
probe with its 95% t-interval), the charts and the terminal table. Used by ``retain demo``,
``retain compare`` and ``retain sweep``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from retain.report.plots import (
    PROPORTION_METRICS, oriented, pareto_front, plot_capabilities, plot_tradeoff, tradeoff_points)
from retain.report.results import SUMMARY_COLUMNS, write_json_atomic, write_text_atomic
from retain.report.tables import console, print_comparison

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z95 = 1.959963984540054

RANK_SCORES = {
    "balanced": "mean of the new-domain score and the mean retained capability, after training",
    "retained": "mean retained capability after training (oriented proportion metrics)",
    "domain": "new-domain score after training (mean of its proportion metrics)",
}


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
                         "seed": res.get("seed")})
    return rows


def _unique(labels: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(labels))


def mean_rows(rows: list[dict]) -> list[dict]:
    """One row per strategy and probe metric: before, after and delta averaged over its seeds."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["probe"], r["metric"]), []).append(r)
    out = []
    for group in groups.values():
        mean = {k: sum(float(g[k]) for g in group) / len(group) for k in ("before", "after", "delta")}
        out.append({**group[0], **mean, "seed": None, "seeds": len(group)})
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


def run_scores(rows: list[dict], domain: set[str]) -> dict[tuple[str, Any], dict[str, float]]:
    """(strategy, seed) -> {domain, retained, balanced, ...}: each run's scores after training."""
    by_run: dict[tuple[str, Any], list[dict]] = {}
    for r in rows:
        by_run.setdefault((r["strategy"], r.get("seed")), []).append(r)
    scores = {}
    for key, rs in by_run.items():
        x, y = tradeoff_points([dict(r, strategy="_") for r in rs], domain).get("_", (math.nan,) * 2)
        scores[key] = {"domain": x, "retained": y, "balanced": (x + y) / 2}
    return scores


def _paired(a: dict[Any, float], b: dict[Any, float]) -> dict[str, Any]:
    """a - b over the seeds both ran (same seed: same data order and probe items), with its
    95% t-interval; larger than the noise when the interval excludes 0 (a paired t-test at 5%)."""
    seeds = [s for s in a if s in b]
    diff = mean_ci([a[s] - b[s] for s in seeds])
    ci = diff["ci"]
    return {"mean_diff": diff["mean"], "ci": ci, "seeds": len(seeds),
            "larger_than_noise": None if ci is None else bool(ci[0] > 0 or ci[1] < 0)}


def ranking(rows: list[dict], domain: set[str], by: str = "balanced") -> list[dict[str, Any]]:
    """Strategies ranked by the mean over seeds of the score ``by`` (see ``RANK_SCORES``), best
    first; each with its 95% t-interval and the paired difference to the next-ranked and to the
    best strategy (``larger_than_noise``: the interval of the difference excludes 0; None with
    fewer than two shared seeds)."""
    if by not in RANK_SCORES:
        raise ValueError(f"unknown ranking score {by!r}; known: {', '.join(RANK_SCORES)}")
    scores = run_scores(rows, domain)
    per: dict[str, dict[Any, float]] = {}
    for (strategy, seed), s in scores.items():
        per.setdefault(strategy, {})[seed] = s[by]
    stats = {k: mean_ci(list(v.values())) for k, v in per.items()}
    order = sorted(per, key=lambda k: -(stats[k]["mean"] if stats[k]["mean"] is not None
                                        else -math.inf))
    ranked = []
    for i, k in enumerate(order):
        e = {"rank": i + 1, "strategy": k, "score": stats[k]["mean"], "score_ci": stats[k]["ci"],
             "seeds": stats[k]["n"]}
        if i + 1 < len(order):
            e["vs_next"] = {"strategy": order[i + 1], **_paired(per[k], per[order[i + 1]])}
        if i > 0:
            e["vs_best"] = {"strategy": order[0], **_paired(per[order[0]], per[k])}
        ranked.append(e)
    return ranked


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


def cliff_count(rows: list[dict], strategy: str, drop: float = 0.5) -> list[str]:
    """Retained proportion metrics that ``strategy`` lost at least ``drop`` on (oriented)."""
    lost = []
    for r in rows:
        if r["strategy"] != strategy or r["capability"] == "domain" or \
                r["metric"] not in PROPORTION_METRICS:
            continue
        if oriented(r["metric"], r["before"]) - oriented(r["metric"], r["after"]) >= drop:
            lost.append(f"{r['probe']}.{r['metric']}")
    return lost


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
                     rank_by: str = "balanced") -> dict:
    """Write the comparison folder ``out`` of ``results`` (one per run, ``labels`` parallel).

    Runs that share a label are seeds of one strategy: tables and charts show their mean, and
    ``comparison.json`` gains ``seed_deltas`` (mean delta and 95% t-interval per probe metric).
    ``ranking`` orders the strategies by ``rank_by`` (see ``RANK_SCORES``)."""
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
    write_text_atomic(out / "summary.csv", _summary_csv(all_rows, multi_seed))
    plot_capabilities(rows, strategies, out / "capabilities.png", title=title)
    plot_tradeoff(points, out / "tradeoff.png", base=base_point, title=title)
    ranked = ranking(all_rows, domain, rank_by)
    summary = {
        "title": title,
        "runs": [{"strategy": label, "seed": res.get("seed"), "dir": _run_dir(res, out, label),
                  "trainable_params": res.get("model", {}).get("trainable_params"),
                  "wall_s": res.get("wall_s")} for label, res in zip(labels, results)],
        "tradeoff": {s: {"domain_score": x, "retained_score": y} for s, (x, y) in points.items()},
        "before": {"domain_score": base_point[0], "retained_score": base_point[1]} if base_point else None,
        "pareto_front": pareto_front(points),
        "cliff": {s: cliff_count(rows, s) for s in strategies},
        "ranking": {"score": rank_by, "definition": RANK_SCORES[rank_by],
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
        print_comparison(_table_rows(rows), strategies, title=title + (" (mean over seeds)"
                                                                          if multi_seed else ""))
        for s in strategies:
            x, y = points.get(s, (float("nan"), float("nan")))
            console.print(f"  {s:>22}: new-domain {x:.2f}, retained {y:.2f}, "
                          f"lost >=0.5 on {len(summary['cliff'][s])}: {', '.join(summary['cliff'][s]) or '-'}")
        print_ranking(summary["ranking"])
        if "wall_s" in summary:
            console.print(f"finished in {summary['wall_s']:.0f} s; wrote {out}/summary.csv, "
                          f"capabilities.png, tradeoff.png")
    return summary


def _fmt_ci(ci: list[float] | None) -> str:
    return "" if ci is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_ranking(rank: dict[str, Any]) -> None:
    """The ranking as a few terminal lines, saying which gaps exceed the seed-to-seed noise."""
    console.print(f"ranking by {rank['score']} score ({rank['definition']}):")
    for e in rank["order"]:
        score = "-" if e["score"] is None else f"{e['score']:.3f}"
        line = f"  {e['rank']}. {e['strategy']}: {score}{_fmt_ci(e['score_ci'])}"
        nxt = e.get("vs_next")
        if nxt and nxt["larger_than_noise"] is not None:
            verdict = "larger than the noise" if nxt["larger_than_noise"] else "within the noise"
            line += (f"; vs {nxt['strategy']}: {nxt['mean_diff']:+.3f}{_fmt_ci(nxt['ci'])} "
                     f"({verdict}, {nxt['seeds']} seeds)")
        console.print(line)
    if all(e["score_ci"] is None for e in rank["order"]):
        console.print("  (one seed per strategy: no interval; add seeds: [0, 1, 2] to see the noise)")
