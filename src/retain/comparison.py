"""A comparison folder: several runs of one model and domain under different strategies.

Renders the runs' ``results.json`` into ``summary.csv`` (all runs, a ``strategy`` column),
``comparison.json`` (the trade-off points, the Pareto front, the run folders), the charts and
the terminal table. Used by ``retain demo`` and ``retain compare``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.report.plots import (
    PROPORTION_METRICS, oriented, pareto_front, plot_capabilities, plot_tradeoff, tradeoff_points)
from retain.report.results import summary_csv, write_json_atomic, write_text_atomic
from retain.report.tables import console, print_comparison


def comparison_rows(labels: list[str], results: list[dict]) -> list[dict[str, Any]]:
    """Summary rows of every run, with the run's label as ``strategy``."""
    rows = []
    for label, res in zip(labels, results):
        for c in res["comparison"]:
            rows.append({"strategy": label, "probe": c["probe"], "metric": c["metric"],
                         "before": c["before"], "after": c["after"], "delta": c["delta"],
                         "higher_is_better": c["higher_is_better"],
                         "capability": c.get("capability", c["probe"])})
    return rows


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


def write_comparison(out: Path, labels: list[str], results: list[dict], *, title: str,
                     extra: dict[str, Any] | None = None, show: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(labels, results)
    domain = {r["probe"] for r in rows if r["capability"] == "domain"}
    points = tradeoff_points(rows, domain)
    before_rows = [dict(r, strategy="before", after=r["before"]) for r in rows
                   if r["strategy"] == labels[0]]
    base_point = tradeoff_points(before_rows, domain).get("before")
    write_text_atomic(out / "summary.csv", summary_csv(
        [{k: r[k] for k in ("strategy", "probe", "metric", "before", "after", "delta",
                            "higher_is_better")} for r in rows]))
    plot_capabilities(rows, labels, out / "capabilities.png", title=title)
    plot_tradeoff(points, out / "tradeoff.png", base=base_point, title=title)
    summary = {
        "title": title,
        "runs": [{"strategy": label, "dir": str(Path(res.get("out_dir", out / label))),
                  "trainable_params": res.get("model", {}).get("trainable_params"),
                  "wall_s": res.get("wall_s")} for label, res in zip(labels, results)],
        "tradeoff": {s: {"domain_score": x, "retained_score": y} for s, (x, y) in points.items()},
        "before": {"domain_score": base_point[0], "retained_score": base_point[1]} if base_point else None,
        "pareto_front": pareto_front(points),
        "cliff": {s: cliff_count(rows, s) for s in labels},
        **(extra or {}),
    }
    write_json_atomic(out / "comparison.json", summary)
    if show:
        print_comparison(_table_rows(rows), labels, title=title)
        for s in labels:
            x, y = points.get(s, (float("nan"), float("nan")))
            console.print(f"  {s:>22}: new-domain {x:.2f}, retained {y:.2f}, "
                          f"lost >=0.5 on {len(summary['cliff'][s])}: {', '.join(summary['cliff'][s]) or '-'}")
        if "wall_s" in summary:
            console.print(f"finished in {summary['wall_s']:.0f} s; wrote {out}/summary.csv, "
                          f"capabilities.png, tradeoff.png")
    return summary
