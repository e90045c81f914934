"""`retain sweep`: a grid of runs over any config keys, then how forgetting grows with how hard
the training pushes: against steps, learning rate (any numeric key) and weight drift from the base.

    grid: {lr: [1.0e-4, 3.0e-4, 1.0e-3], steps: [25, 50, 100]}     # or --set lr=1e-4,3e-4,1e-3
    runs: [{label: full, strategies: [full]}, {label: lora, strategies: [{name: lora, r: 8}]}]

The runs go through ``retain.experiments.compare`` (one folder each, resumable, the base probed
once per seed); the sweep folder gets the comparison files, ``sweep.json`` (points, fits,
correlations) and one chart per relation. Power law in steps: Kalajdzievski, 2024, "Scaling Laws
for Forgetting When Fine-Tuning Large Language Models", https://arxiv.org/abs/2401.05605.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from retain.errors import UserError

FORGETTING = ("mean, over the retained probes' proportion metrics (accuracy, refusal_rate, "
              "over_refusal_rate, cloze_accuracy; the new domain excluded), of the oriented drop "
              "before - after (over_refusal_rate counted as 1 - rate); > 0 is a loss, in [-1, 1]")
CE_RISE = "mean rise (after - before) of the retained probes' ce_nats_per_token, in nats/token"
DOMAIN_CE_GAIN = "mean fall (before - after) of the new domain's ce_nats_per_token, nats/token"
DRIFT = "relative L2 distance of the final weights from the base, ||W - W0|| / ||W0||"
CITATION = ('Kalajdzievski, 2024, "Scaling Laws for Forgetting When Fine-Tuning Large Language '
            'Models", https://arxiv.org/abs/2401.05605')


# -- the grid ----------------------------------------------------------------------------------

def parse_set(text: str) -> tuple[str, list[Any]]:
    """``"lr=1e-4,3e-4,1e-3"`` -> ``("lr", [0.0001, 0.0003, 0.001])``; a YAML list after ``=``
    (``"probes=[[math],[code]]"``) gives values that themselves hold commas."""
    if "=" not in text:
        raise UserError(f"--set {text!r}: expected key=v1,v2,... e.g. lr=1e-4,3e-4")
    key, raw = (x.strip() for x in text.split("=", 1))
    if not key or not raw:
        raise UserError(f"--set {text!r}: expected key=v1,v2,... e.g. lr=1e-4,3e-4")
    try:
        values = yaml.safe_load(raw) if raw.startswith("[") else [
            yaml.safe_load(v) for v in raw.split(",")]
    except yaml.YAMLError:
        raise UserError(f"--set {text!r}: the values are not valid YAML") from None
    if not isinstance(values, list) or not values:
        raise UserError(f"--set {text!r}: give at least one value")
    return key, [_number(v) for v in values]


def _number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: read it as the number it is."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def read_grid(grid: Any, where: str = "grid") -> dict[str, list[Any]]:
    if grid is None:
        return {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise UserError(f"{where}: expected a mapping of key: [values], e.g. {{lr: [1e-4, 1e-3]}}")
    return {str(k): [_number(v) for v in vs] for k, vs in grid.items()}


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else (json.dumps(v) if isinstance(v, (list, dict))
                                                   else str(v))


def expand(entries: list[dict[str, Any]], grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One compare entry per (entry, grid point): the point as ``set`` overrides, and a label
    ``"<entry> lr=0.001 steps=50"``. An entry's own ``grid`` replaces axes of the common one."""
    from retain.experiments.runner import entry_label

    out = []
    for e in entries:
        e = dict(e)
        axes = {**grid, **read_grid(e.pop("grid", None), f"grid of {entry_label(e)!r}")}
        if not axes:
            raise UserError("sweep: no grid; give grid: {lr: [...], steps: [...]} or --set lr=...")
        for bad in ("seed", "out", "overwrite"):
            if bad in axes:
                raise UserError(f"sweep: {bad!r} cannot be a grid axis" +
                                (" (use seeds: [0, 1, 2])" if bad == "seed" else ""))
        for point in itertools.product(*axes.values()):
            sets = [f"{k}={json.dumps(v)}" for k, v in zip(axes, point)]
            label = " ".join([entry_label(e)] + [f"{k}={_fmt(v)}" for k, v in zip(axes, point)])
            out.append({**e, "label": label, "set": list(e.get("set") or []) + sets,
                        "_entry": entry_label(e), "_point": dict(zip(axes, point))})
    return out


# -- measuring one run ------------------------------------------------------------------------

def forgetting(results: dict) -> float | None:
    """The sweep's forgetting of one run: see ``FORGETTING``. None without such a metric."""
    from retain.report.plots import PROPORTION_METRICS, oriented

    drops = [oriented(c["metric"], c["before"]) - oriented(c["metric"], c["after"])
             for c in results["comparison"]
             if c.get("capability") != "domain" and c["metric"] in PROPORTION_METRICS]
    return sum(drops) / len(drops) if drops else None


def ce_rise(results: dict) -> float | None:
    """See ``CE_RISE`` (forgetting as a rise in cross-entropy, as in Kalajdzievski 2024)."""
    rises = [c["after"] - c["before"] for c in results["comparison"]
             if c.get("capability") != "domain" and c["metric"] == "ce_nats_per_token"]
    return sum(rises) / len(rises) if rises else None


def domain_ce_gain(results: dict) -> float | None:
    """How much the new domain was learnt in nats/token: mean fall (before - after) of the
    domain's ce_nats_per_token (a finer measure than its cloze accuracy)."""
    falls = [c["before"] - c["after"] for c in results["comparison"]
             if c.get("capability") == "domain" and c["metric"] == "ce_nats_per_token"]
    return sum(falls) / len(falls) if falls else None


def _get(data: dict, key: str) -> Any:
    node: Any = data
    for k in key.split("."):
        if isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        elif isinstance(node, dict) and k in node:
            node = node[k]
        else:
            return None
    return node


def point_of(entry: dict[str, Any], seed: int, results: dict, axes: Sequence[str]) -> dict:
    """One sweep point: the run's knobs (as resolved in its config) and what it measured."""
    from retain.experiments.comparison import run_scores

    cfg = results["config"]
    rows = [dict(c, strategy="_", seed=seed, capability=c.get("capability", c["probe"]))
            for c in results["comparison"]]
    scores = run_scores(rows, {r["probe"] for r in rows if r["capability"] == "domain"})
    s = next(iter(scores.values()), {})
    return {"label": entry["label"], "entry": entry["_entry"], "seed": seed,
            "dir": str(cfg.get("out")), **{k: _get(cfg, k) for k in axes},
            "steps": results["training"]["steps"], "lr": cfg["lr"],
            "forgetting": forgetting(results), "ce_rise": ce_rise(results),
            "drift": ((results.get("drift") or {}).get("overall") or {}).get("relative_l2"),
            "domain_score": s.get("domain"), "domain_ce_gain": domain_ce_gain(results),
            "retained_score": s.get("retained")}


# -- the relations ----------------------------------------------------------------------------

def _numeric_axis(points: list[dict], axis: str) -> bool:
    vals = {p.get(axis) for p in points}
    return len(vals) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                 for v in vals)


def _groups(points: list[dict], axis: str, axes: Sequence[str]) -> dict[tuple, list[dict]]:
    """Points that differ only in ``axis`` (and seed): same entry, same other axes."""
    out: dict[tuple, list[dict]] = {}
    for p in points:
        key = (p["entry"],) + tuple((a, _fmt(p.get(a))) for a in axes if a != axis)
        out.setdefault(key, []).append(p)
    return out


def _name(key: tuple) -> str:
    return " ".join([key[0]] + [f"{a}={v}" for a, v in key[1:]])


def analyse(points: list[dict], axes: Sequence[str]) -> dict[str, Any]:
    """Fits and correlations of a sweep's points (``point_of``): for each numeric axis and each
    group of points that differ only in it, a power law ``y = A * x**alpha`` and Spearman's rho
    of y on x (y = forgetting and ce_rise); the mean forgetting at each value; Spearman's rho of
    drift and forgetting over all runs and per entry; each entry's mean over the grid."""
    from retain.metrics.scaling import fit_power_law, spearman

    fits, marginals = [], {}
    for axis in [a for a in axes if _numeric_axis(points, a)]:
        for key, group in _groups(points, axis, axes).items():
            for y in ("forgetting", "ce_rise"):
                xs = [p[axis] for p in group if p[y] is not None]
                ys = [p[y] for p in group if p[y] is not None]
                if len(set(xs)) < 2:
                    continue
                fit = fit_power_law(xs, ys)
                fits.append({"x": axis, "y": y, "group": _name(key), "spearman": spearman(xs, ys),
                             **(fit or {"A": None, "alpha": None, "r2": None,
                                        "n": 0, "excluded": len(xs)})})
        per_entry: dict[str, dict[str, list[float]]] = {}
        for p in points:
            if p["forgetting"] is not None:
                per_entry.setdefault(p["entry"], {}).setdefault(_fmt(p[axis]), []).append(
                    p["forgetting"])
        marginals[axis] = {e: {v: sum(f) / len(f) for v, f in d.items()}
                           for e, d in per_entry.items()}

    def rho(ps: list[dict], y: str) -> dict[str, Any]:
        pairs = [(p["drift"], p[y]) for p in ps if p["drift"] is not None and p[y] is not None]
        return {"rho": spearman([a for a, _ in pairs], [b for _, b in pairs]), "n": len(pairs)}

    entries = list(dict.fromkeys(p["entry"] for p in points))
    drift = {y: {"all": rho(points, y),
                 "per_entry": {e: rho([p for p in points if p["entry"] == e], y) for e in entries}}
             for y in ("forgetting", "ce_rise")}
    by_entry = {}
    for e in entries:
        ps = [p for p in points if p["entry"] == e]
        by_entry[e] = {k: _mean([p.get(k) for p in ps]) for k in
                       ("forgetting", "ce_rise", "drift", "domain_score", "domain_ce_gain",
                        "retained_score")}
    return {"fits": fits, "marginals": marginals, "drift_correlation": drift, "by_entry": by_entry}


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


# -- charts -----------------------------------------------------------------------------------

def plot_axis(points: list[dict], axis: str, axes: Sequence[str], fits: list[dict], path: Path) -> Path:
    """Forgetting against ``axis`` (log x), one line per group (mean over seeds), with the
    fitted power law dashed."""
    import matplotlib.pyplot as plt

    from retain.report.plots import save_chart as _save

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_fit = {f["group"]: f for f in fits if f["x"] == axis and f["y"] == "forgetting"}
    for i, (key, group) in enumerate(_groups(points, axis, axes).items()):
        xs = sorted({p[axis] for p in group})
        ys = [_mean([p["forgetting"] for p in group if p[axis] == x]) for x in xs]
        color = f"C{i % 10}"
        ax.plot(xs, [math.nan if y is None else y for y in ys], "o-", color=color,
                label=_name(key))
        f = by_fit.get(_name(key))
        if f and f.get("alpha") is not None:
            grid = [xs[0] * (xs[-1] / xs[0]) ** (j / 40) for j in range(41)]
            r2 = "" if f["r2"] is None else f", R²={f['r2']:.2f}"
            ax.plot(grid, [f["A"] * g ** f["alpha"] for g in grid], "--", color=color, alpha=0.6,
                    label=f"  fit: α={f['alpha']:.2f}{r2}")
    ax.set_xscale("log")
    values = sorted({p[axis] for p in points})
    ax.set_xticks(values, [_fmt(v) for v in values])  # the grid's own values, not 10^k
    ax.minorticks_off()
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel(axis)
    ax.set_ylabel("forgetting (mean oriented drop of retained proportions)")
    ax.set_title(f"forgetting vs {axis}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_drift(points: list[dict], corr: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from retain.report.plots import save_chart as _save

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, e in enumerate(dict.fromkeys(p["entry"] for p in points)):
        ps = [p for p in points if p["entry"] == e and p["drift"] and p["forgetting"] is not None]
        rho = corr["per_entry"][e]["rho"]
        ax.scatter([p["drift"] for p in ps], [p["forgetting"] for p in ps], color=f"C{i % 10}",
                   label=f"{e} (ρ={'–' if rho is None else f'{rho:.2f}'})")
    rho = corr["all"]["rho"]
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("weight drift from the base (relative L2)")
    ax.set_ylabel("forgetting (mean oriented drop of retained proportions)")
    ax.set_title(f"forgetting vs weight drift (Spearman ρ={'–' if rho is None else f'{rho:.2f}'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# -- the command ------------------------------------------------------------------------------

def run_sweep(path: str | Path | None, sets: Sequence[str] = (), overrides: Sequence[str] = (), *,
              out: Path | None = None, overwrite: bool = False, show: bool = True,
              listing: bool = False, only: Sequence[str | int] = (), collect: bool = False,
              launcher: str | None = None) -> dict:
    """Run (or resume) the sweep of ``path`` (or of the defaults) with ``--set`` axes added, and
    write the sweep folder; returns ``sweep.json``'s content. ``listing``, ``only``,
    ``collect`` and ``launcher`` as ``retain.experiments.runner.fan_out`` says (the first two,
    and ``only`` with ``launcher``, write nothing, return ``{}``)."""
    from retain.experiments.comparison import write_comparison
    from retain.experiments.compare import compare_data
    from retain.experiments.launch import Launch, job_flags
    from retain.experiments.runner import fan_out, plan, read_entries
    from retain.config import read_yaml
    from retain.report.results import write_json_atomic

    data = read_yaml(path) if path is not None else {}
    grid = read_grid(data.pop("grid", None))
    for s in sets:
        key, values = parse_set(s)
        grid[key] = values
    f = compare_data(data, overrides)
    command = ["sweep", *([str(path)] if path is not None else []),
               *[a for s in sets for a in ("--set", s)], *job_flags(out, overwrite, f["overrides"])]
    out = Path(out or f["extra"].get("out") or "runs/sweep")
    entries = read_entries(f["extra"].get("runs") or [{k: f["base"][k] for k in ("strategies",)
                                                       if k in f["base"]}])
    expanded = expand(entries, grid)
    axes = list(dict.fromkeys(k for e in expanded for k in e["_point"]))
    planned = plan(f["base"], [{k: v for k, v in e.items() if not k.startswith("_")}
                               for e in expanded], f["seeds"], out, f["overrides"])
    t0 = time.time()
    echo = print if show else (lambda s: None)
    spec = Launch(launcher, command, out, f["extra"].get("launcher") or {}) if launcher else None
    results = fan_out(planned, listing=listing, only=only, collect=collect, overwrite=overwrite,
                      echo=echo, launch=spec)
    if results is None:
        return {}
    by_label = {e["label"]: e for e in expanded}
    points = [point_of(by_label[p.label], p.seed, r, axes) for p, r in zip(planned, results)]
    analysis = analyse(points, axes)
    cfg = planned[0].config
    title = f["title"] or f"retain sweep: {cfg.model} on {cfg.data}"
    write_comparison(out, [p.label for p in planned], results, title=title, show=False,
                     extra={"sweep": "sweep.json", "wall_s": round(time.time() - t0, 1)})
    charts = []
    for axis in [a for a in axes if _numeric_axis(points, a)]:
        name = f"forgetting_vs_{axis.replace('.', '_')}.png"
        plot_axis(points, axis, axes, analysis["fits"], out / name)
        charts.append(name)
    if any(p["drift"] for p in points):
        plot_drift(points, analysis["drift_correlation"]["forgetting"], out / "forgetting_vs_drift.png")
        charts.append("forgetting_vs_drift.png")
    summary = {"title": title, "definitions": {"forgetting": FORGETTING, "ce_rise": CE_RISE,
                                               "domain_ce_gain": DOMAIN_CE_GAIN, "drift": DRIFT,
                                               "fit": "y = A * x**alpha, least squares of log y on "
                                                      "log x over the points with y > 0; r2 in "
                                                      "log space; spearman: rank correlation"},
               "citation": CITATION, "grid": grid, "seeds": f["seeds"], "axes": axes,
               "points": points, **analysis, "charts": charts,
               "wall_s": round(time.time() - t0, 1)}
    write_json_atomic(out / "sweep.json", summary)
    if show:
        print_sweep(summary, out)
    return summary


def print_sweep(summary: dict, out: Path) -> None:
    from rich.table import Table

    from retain.report.tables import console

    table = Table(title=summary["title"])
    for col in ("run", "seed", "steps", "lr", "drift", "forgetting", "ce rise", "domain",
                "domain ce gain"):
        table.add_column(col, justify="left" if col == "run" else "right")
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    for p in summary["points"]:  # the run column: the entry and any axis besides steps and lr
        run = " ".join([p["entry"]] + [f"{a}={_fmt(p.get(a))}" for a in summary["axes"]
                                       if a not in ("steps", "lr")])
        table.add_row(run, str(p["seed"]), str(p["steps"]), f"{p['lr']:g}", f(p["drift"], 4),
                      f(p["forgetting"]), f(p["ce_rise"]), f(p["domain_score"], 2),
                      f(p.get("domain_ce_gain"), 2))
    console.print(table)
    console.print(f"forgetting = {summary['definitions']['forgetting']}")
    for fit in summary["fits"]:
        if fit["y"] != "forgetting":
            continue
        law = ("no fit (fewer than 2 points with forgetting > 0)" if fit["alpha"] is None else
               f"forgetting = {fit['A']:.3g} * {fit['x']}^{fit['alpha']:.2f}"
               + ("" if fit["r2"] is None else f" (R²={fit['r2']:.2f}, n={fit['n']})"))
        rho = "-" if fit["spearman"] is None else f"{fit['spearman']:+.2f}"
        console.print(f"  {fit['group']}: vs {fit['x']}: Spearman {rho}; {law}")
    d = summary["drift_correlation"]["forgetting"]["all"]
    rho = "-" if d["rho"] is None else f"{d['rho']:+.2f}"
    console.print(f"  drift vs forgetting: Spearman {rho} over {d['n']} runs")
    for e, m in summary["by_entry"].items():
        console.print(f"  {e}: mean forgetting {f(m['forgetting'])}, mean drift {f(m['drift'], 4)}"
                      f", mean new-domain score {f(m['domain_score'], 2)}, CE gain "
                      f"{f(m.get('domain_ce_gain'), 2)} nats/token")
    console.print(f"wrote {out}/sweep.json, {', '.join(summary['charts'])}, summary.csv")
