"""The numbers of a task sequence: from each task run's probe results, the accuracy matrix of
every task metric (R[i][j]: task j's score after training through task i; row 0 the base), ACC,
BWT, FWT and average forgetting (``retain.metrics.continual``), the paired tests of each earlier
task between the end of its own training and the end of the sequence, and the retained
capabilities after each task; then the means over seeds with 95% intervals, and a ranking.

BWT, FWT and forgetting are computed on oriented scores (a cross-entropy is negated), so that a
negative BWT always means forgetting; ACC is the mean final score as measured.
"""

from __future__ import annotations

from typing import Any, Sequence

from retain.metrics.continual import average_accuracy, average_forgetting, bwt, fwt
from retain.metrics.paired import paired_test

SCORES = ("acc", "bwt", "fwt", "forgetting")

SUMMARY_FILE = "sequences.json"  # the folder: every sequence, and the means over seeds


def _rows(results: list[dict]) -> list[dict[str, dict]]:
    """Probe results keyed ``probe.metric``: the base (task 0's before), then after each task."""
    rows = [results[0]["probes"]["before"]] + [r["probes"]["after"] for r in results]
    return [{f"{p['probe']}.{p['metric']}": p for p in row} for row in rows]


def summarize(label: str, seed: int, tasks: Sequence[str], results: list[dict]) -> dict[str, Any]:
    """sequence.json of one sequence (``results``: its task runs' results, in task order)."""
    rows = _rows(results)
    T = len(tasks)
    metrics = sorted({k.split(".", 1)[1] for k in rows[0] for t in tasks if k.startswith(t + ".")})
    matrices: dict[str, Any] = {}
    for m in metrics:
        keys = [f"{t}.{m}" for t in tasks]
        full = [[row.get(k, {}).get("value") for k in keys] for row in rows]  # (T+1) x T
        hib = next(row[k]["higher_is_better"] for row in rows for k in keys if k in row)
        entry: dict[str, Any] = {"higher_is_better": hib, "R": full, "keys": keys}
        if all(v is not None for row in full for v in row):
            sign = 1.0 if hib else -1.0
            R = [[sign * v for v in row] for row in full[1:]]  # oriented, T x T
            entry.update(acc=average_accuracy(full[1:]), bwt=bwt(R),
                         fwt=fwt(R, [sign * v for v in full[0]]),
                         forgetting=average_forgetting(R))
        # each earlier task: its score after its own training against the end of the sequence
        entry["paired"] = []
        for j in range(T - 1):
            own, final = rows[j + 1].get(keys[j]), rows[T].get(keys[j])
            test = paired_test(own, final, seed=seed) if own and final else None
            entry["paired"].append({"task": tasks[j], **(_brief(test) if test else {})})
        matrices[m] = entry
    retained = {}
    for k, first in rows[0].items():
        if first.get("capability") == "domain" or any(k.startswith(t + ".") for t in tasks):
            continue
        test = paired_test(first, rows[T][k], seed=seed) if k in rows[T] else None
        retained[k] = {"higher_is_better": first["higher_is_better"],
                       "values": [row.get(k, {}).get("value") for row in rows],
                       "paired": _brief(test) if test else None}
    return {"label": label, "seed": seed, "tasks": list(tasks),
            "runs": [r.get("config", {}).get("out") for r in results],
            "matrices": matrices, "retained": retained,
            "wall_s": sum(r.get("wall_s") or 0 for r in results)}


def _brief(test: dict) -> dict:
    return {k: test[k] for k in ("test", "p", "changed", "lost", "gained", "diff", "ci", "n")
            if k in test}


def primary_metric(record: dict) -> str:
    """The metric the ranking uses: accuracy when every task has it, else the first complete."""
    mats = record["matrices"]
    for m in ["accuracy"] + sorted(mats):
        if m in mats and "acc" in mats[m]:
            return m
    raise ValueError("no task metric is complete in every row")


# -- over seeds ------------------------------------------------------------------------------------

def aggregate(records: list[dict]) -> list[dict[str, Any]]:
    """One entry per label (first-seen order): the seeds, per metric the mean matrix and each
    score's mean with its 95% t-interval over seeds (``comparison.mean_ci``), and the retained
    values per row (means) with the final value's interval."""
    from retain.experiments.comparison import mean_ci

    labels = list(dict.fromkeys(r["label"] for r in records))
    out = []
    for label in labels:
        mine = [r for r in records if r["label"] == label]
        entry: dict[str, Any] = {"label": label, "seeds": [r["seed"] for r in mine],
                                 "tasks": mine[0]["tasks"], "matrices": {}, "retained": {}}
        for m, first in mine[0]["matrices"].items():
            mats = [r["matrices"][m]["R"] for r in mine if m in r["matrices"]]
            mean_R = [[_mean([M[i][j] for M in mats]) for j in range(len(mats[0][0]))]
                      for i in range(len(mats[0]))]
            e = {"higher_is_better": first["higher_is_better"], "R": mean_R}
            for s in SCORES:
                vals = {r["seed"]: r["matrices"][m][s] for r in mine if s in r["matrices"].get(m, {})}
                if vals:
                    e[s] = {**mean_ci(list(vals.values())), "per_seed": vals}
            e["paired"] = [p for r in mine for p in r["matrices"][m]["paired"]] if len(mine) == 1 \
                else None
            entry["matrices"][m] = e
        for k, first in mine[0]["retained"].items():
            rows = [r["retained"][k]["values"] for r in mine if k in r["retained"]]
            entry["retained"][k] = {
                "higher_is_better": first["higher_is_better"],
                "values": [_mean([v[i] for v in rows]) for i in range(len(rows[0]))],
                "final": mean_ci([v[-1] for v in rows]),
                "paired": first["paired"] if len(mine) == 1 else None}
        out.append(entry)
    return out


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def rank(entries: list[dict], metric: str) -> list[dict[str, Any]]:
    """Labels ranked by mean ACC of ``metric`` (best first), each with its BWT, and the paired
    differences to the best in ACC and in BWT over the seeds both ran (``larger_than_noise``: the
    95% interval excludes 0; None with fewer than two shared seeds), as ``retain compare`` rules."""
    from retain.experiments.comparison import paired_over_seeds

    scored = [e for e in entries if "acc" in e["matrices"].get(metric, {})]
    hib = scored[0]["matrices"][metric]["higher_is_better"] if scored else True
    sign = 1.0 if hib else -1.0  # a cross-entropy ACC ranks lowest first
    order = sorted(scored, key=lambda e: -sign * e["matrices"][metric]["acc"]["mean"])
    out = []
    for i, e in enumerate(order):
        m = e["matrices"][metric]
        row = {"rank": i + 1, "label": e["label"], "acc": m["acc"]["mean"], "acc_ci": m["acc"]["ci"],
               "bwt": m["bwt"]["mean"], "bwt_ci": m["bwt"]["ci"], "seeds": m["acc"]["n"],
               "forgets": _forgets(m)}
        if i > 0:
            best = order[0]["matrices"][metric]
            row["vs_best"] = {"label": order[0]["label"],
                              "acc": paired_over_seeds(best["acc"]["per_seed"], m["acc"]["per_seed"]),
                              "bwt": paired_over_seeds(best["bwt"]["per_seed"], m["bwt"]["per_seed"])}
        out.append(row)
    return out


def _forgets(m: dict) -> bool | None:
    """Does the sequence forget its earlier tasks beyond noise? With several seeds: BWT's
    interval lies below 0; with one: a paired test on the items says an earlier task lost."""
    ci = m["bwt"]["ci"]
    if ci is not None:
        return ci[1] < 0
    if m.get("paired"):
        sign = 1.0 if m["higher_is_better"] else -1.0  # a cross-entropy that rose was lost

        def lost(p: dict) -> bool:
            if p.get("diff") is not None:
                return sign * p["diff"] < 0
            return p.get("lost", 0) > p.get("gained", 0)
        return any(p.get("changed") and lost(p) for p in m["paired"])
    return None


# -- the folder ------------------------------------------------------------------------------------

def write_sequences(out, records: list[dict], *, title: str, show: bool = True,
                    extra: dict | None = None) -> dict[str, Any]:
    """sequences.json (every sequence, the means over seeds, the ranking) and one heatmap of the
    accuracy matrix per label (``matrix-<label>.png``) in ``out``; prints the tables."""
    from pathlib import Path

    from retain.experiments.runner import slug
    from retain.report.results import write_json_atomic

    out = Path(out)
    entries = aggregate(records)
    metric = primary_metric(records[0])
    summary = {"title": title, "tasks": records[0]["tasks"], "metric": metric,
               "entries": entries, "ranking": rank(entries, metric), "sequences": records,
               "figures": {}, **(extra or {})}
    for e in entries:
        path = out / f"matrix-{slug(e['label'])}.png"
        plot_matrix(e, metric, path)
        summary["figures"][e["label"]] = path.name
    write_json_atomic(out / SUMMARY_FILE, summary)
    if show:
        print_sequences(summary)
    return summary


def plot_matrix(entry: dict, metric: str, path) -> None:
    """A heatmap of the mean accuracy matrix: rows base, after task 1..T; columns the tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = entry["matrices"][metric]
    R, tasks = m["R"], entry["tasks"]
    rows = ["base"] + [f"after {t}" for t in tasks]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(tasks), 1.0 + 0.5 * len(rows)))
    vals = [[v if v is not None else float("nan") for v in row] for row in R]
    im = ax.imshow(vals, cmap="viridis" if m["higher_is_better"] else "viridis_r", aspect="auto")
    for i, row in enumerate(R):
        for j, v in enumerate(row):
            if v is not None:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=9)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(f"{entry['label']}: {metric}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    ci = s.get("ci")
    return f"{s['mean']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def print_sequences(summary: dict) -> None:
    """The accuracy matrix of each label, its scores with intervals, and the ranking (80 cols)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=80, highlight=False)
    metric, tasks = summary["metric"], summary["tasks"]
    console.print(summary["title"], style="bold", markup=False)
    for e in summary["entries"]:
        m = e["matrices"][metric]
        t = Table(title=f"{e['label']} ({metric}, {len(e['seeds'])} seed(s))", title_justify="left")
        t.add_column("after")
        for name in tasks:
            t.add_column(name, justify="right")
        for i, row in enumerate(m["R"]):
            t.add_row("base" if i == 0 else tasks[i - 1],
                      *["-" if v is None else f"{v:.3f}" for v in row])
        console.print(t)
        console.print("  " + "; ".join(f"{s.upper()} {_fmt(m.get(s))}" for s in SCORES),
                      markup=False)
    t = Table(title=f"ranking by ACC of {metric} (BWT < 0: forgetting)", title_justify="left")
    for col in ("#", "run", "ACC", "BWT", "forgets", "vs best (ACC)"):
        t.add_column(col)
    for r in summary["ranking"]:
        vs = r.get("vs_best", {}).get("acc")
        noise = ("-" if vs is None else "noise?" if vs["larger_than_noise"] is None
                 else "beyond noise" if vs["larger_than_noise"] else "within noise")
        forgets = {True: "yes", False: "no", None: "?"}[r["forgets"]]
        t.add_row(str(r["rank"]), r["label"], f"{r['acc']:.3f}", f"{r['bwt']:+.3f}", forgets,
                  noise)
    console.print(t)
