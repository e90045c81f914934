"""``retain report DIR``: a run folder or a comparison folder rendered into one self-contained
``DIR/report.html`` (CSS inline, images as base64 PNG data URIs, no script, nothing fetched),
plus the same charts as PNG files in ``DIR/figures/``; a task-sequence folder (``retain
sequence``: ``sequences.json`` and its heatmaps) too, by ``retain.report.sequence_html``, and a
merge-search folder (``retain merge --search``: ``search.json`` and ``curve.png``) by
``retain.report.search_html``.
Everything comes from ``results.json`` (and ``metrics.jsonl`` for the curves; the ranking from
``comparison.json``). Model output, prompts, names and config values are untrusted text: every
one goes through ``html.escape`` before it reaches the page.

The page leads with the answer: one sentence per strategy on what it lost and gained, and the
ranking's rule; then the trade-off chart and the heatmap of changes; the long tables after,
laid out so that the page never scrolls sideways, whatever the number of runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import retain
from retain.errors import UserError
from retain.report import figures as fg
from retain.report.results import (
    CONFIG_FILE, METRICS_FILE, RESULTS_FILE, read_results, write_text_atomic)
from retain.report.tables import RETENTION_WORDS, changed, paired_cell, retention_cell

REPORT_FILE, FIGURES_DIR, COMPARISON_FILE = "report.html", "figures", "comparison.json"
SECTIONS = ("summary", "tradeoff", "changes", "ranking", "capabilities", "strategies", "training",
            "drift", "guard", "items", "examples", "config")  # stable ids; "guard" only when a run
# has guard events, "ranking" only for a comparison folder whose comparison.json holds one
FAILED_SECTIONS = ("failure", "training", "config")  # the page of runs that all failed
MAX_TEXT = 600  # characters of a prompt or an answer shown before it is cut
SIDE_BY_SIDE = 3  # runs shown in columns side by side; with more, one run per row


@dataclass
class Run:
    """One run folder: its label in the report, results.json, metrics.jsonl (None: absent)."""
    label: str
    dir: Path
    results: dict[str, Any]
    metrics: list[dict] | None
    config_text: str | None = None
    strategy: str = ""  # the label its seeds share (``label`` adds the folder name to each)

    def __post_init__(self) -> None:
        self.strategy = self.strategy or self.label


@dataclass
class Folder:
    dir: Path
    kind: str  # "run", "comparison", "sequence" or "search"
    runs: list[Run]  # none in a sequence or search folder: its page reads its one JSON file
    comparison: dict[str, Any] = field(default_factory=dict)  # comparison.json, if any
    sequence: dict[str, Any] = field(default_factory=dict)  # sequences.json, if any
    search: dict[str, Any] = field(default_factory=dict)  # search.json, if any
    # runs whose results.json says "failed" (no after-probes, no comparison): kept apart from
    # ``runs`` so that every comparison section sees complete runs only
    failed: list[Run] = field(default_factory=list)


# -- loading ---------------------------------------------------------------------------------

def is_failed(results: dict[str, Any]) -> bool:
    """A run that stopped on an error: results.json holds its ``failure`` and no comparison."""
    return results.get("status") == "failed"


def _strategy_name(results: dict[str, Any]) -> str | None:
    """The run's strategy label; a failed run's results.json has none, its config does."""
    if results.get("strategy"):
        return str(results["strategy"])
    specs = (results.get("config") or {}).get("strategies")
    if isinstance(specs, list) and specs:
        return "+".join(str(s.get("name", "?") if isinstance(s, dict) else s) for s in specs)
    return None


def _load_run(d: Path, label: str | None = None) -> Run:
    results = read_results(d)
    cfg = d / CONFIG_FILE
    return Run(label=label or _strategy_name(results) or d.name, dir=d, results=results,
               metrics=fg.read_metrics(d / METRICS_FILE),
               config_text=cfg.read_text(encoding="utf-8", errors="replace") if cfg.is_file() else None)


def load_folder(d: Path) -> Folder:
    """A run folder (``results.json``), a task-sequence folder (``sequences.json``), a
    comparison folder (``comparison.json`` and run folders inside; runs keep the order and
    labels comparison.json gives them) or a merge-search folder (``search.json``)."""
    from retain.report.search_html import SEARCH_FILE, load_search
    from retain.report.sequence_html import SUMMARY_FILE, load_sequence

    d = Path(d)
    if not d.is_dir():
        raise UserError(f"{d} is not a folder")
    if (d / RESULTS_FILE).is_file():
        run = _load_run(d)
        return Folder(d, "run", [], failed=[run]) if is_failed(run.results) else \
            Folder(d, "run", [run])
    if (d / SUMMARY_FILE).is_file():
        return Folder(d, "sequence", [], sequence=load_sequence(d))
    subs = sorted(p for p in d.iterdir() if p.is_dir() and (p / RESULTS_FILE).is_file())
    if not (d / COMPARISON_FILE).is_file() or not subs:
        if (d / SEARCH_FILE).is_file():
            return Folder(d, "search", [], search=load_search(d))
        raise UserError(f"{d} is neither a run folder ({RESULTS_FILE}) nor a comparison folder "
                        f"({COMPARISON_FILE} and run folders with {RESULTS_FILE}) nor a sequence "
                        f"folder ({SUMMARY_FILE}) nor a merge-search folder ({SEARCH_FILE})")
    try:
        comp = json.loads((d / COMPARISON_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{d / COMPARISON_FILE} is not valid JSON: {e}") from None
    # comparison.json names each run's folder (perhaps by an old absolute path): match by name
    labels = {Path(str(r.get("dir", ""))).name: str(r.get("strategy"))
              for r in comp.get("runs", []) if isinstance(r, dict) and r.get("strategy")}
    order = {name: i for i, name in enumerate(labels)}
    subs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    runs = [_load_run(p, labels.get(p.name)) for p in subs]
    seen: dict[str, int] = {}
    for r in runs:  # two runs of one strategy (seeds) need distinct labels
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.dir.name})"
    return Folder(d, "comparison", [r for r in runs if not is_failed(r.results)], comp,
                  failed=[r for r in runs if is_failed(r.results)])


# -- small formatting helpers (all return safe HTML) ------------------------------------------

def read_checked_json(path: Path, problem, what: str) -> Any:
    """``path``'s JSON, checked by ``problem(data) -> str | None``; a one-line UserError naming
    the file when it is not JSON or has a problem (``what``: who writes such a file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON, or not UTF-8
        raise UserError(f"{path} is not valid JSON: {e}") from None
    found = problem(data)
    if found:
        raise UserError(f"{path} is not {what}: {found}")
    return data


def esc(x: Any) -> str:
    """Untrusted text -> HTML text (quotes too, so it is also safe inside an attribute)."""
    return html.escape("" if x is None else str(x), quote=True)


def _cut(text: Any) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"… ({len(s) - MAX_TEXT} more characters)"


def num(x: Any, digits: int = 3) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _ci(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f'<span class="ci">[{num(ci[0])}, {num(ci[1])}]</span>'
    return ""


def _duration(s: Any) -> str:
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        return "–"
    m, sec = divmod(float(s), 60)
    return f"{int(m)} min {sec:.0f} s" if m else f"{sec:.1f} s"


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def change_class(row: dict) -> str:
    """CSS class of a before/after row: ``gain``/``loss`` by the metric's direction, ``weak``
    added when the paired test on the same items sees no change (``tables.changed``: results
    without per-item outcomes, when the two intervals overlap), ``same`` for no change."""
    d = row.get("delta")
    if not isinstance(d, (int, float)) or not math.isfinite(d) or abs(d) < 1e-12:
        return "same"
    good = d > 0 if row.get("higher_is_better", True) else d < 0
    return ("gain" if good else "loss") + ("" if changed(row) else " weak")


_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: Any) -> str:
    """Escape ``text``, turning its http(s) URLs into links (only those schemes)."""
    s, out, last = "" if text is None else str(text), [], 0
    for m in _URL.finditer(s):
        url = m.group(0).rstrip(".,;)")
        out.append(esc(s[last:m.start()]))
        out.append(f'<a href="{esc(url)}" rel="noreferrer">{esc(url)}</a>')
        last = m.start() + len(url)
    out.append(esc(s[last:]))
    return "".join(out)


def _img(data: bytes, name: str, alt: str, wide: bool = False, where: str = FIGURES_DIR) -> str:
    """The PNG embedded as a data URI, captioned with its file (``where``: its folder in DIR)."""
    b64 = base64.b64encode(data).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'
            f'<figcaption>{esc(where + "/" + name if where else name)}</figcaption></figure>')


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller). In a box that scrolls sideways should a
    table ever be wider than the page (the layouts below keep them narrower), so that the page
    itself never does."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def _breakable(key: str) -> str:
    """An escaped ``probe.metric`` that may wrap after its dots and underscores (a narrow
    column header instead of one as wide as the name)."""
    return re.sub(r"([._])", r"\1<wbr>", esc(key))


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


# -- figures (saved under DIR/figures/, embedded in the page) --------------------------------

def _comparison_rows(runs: list[Run]) -> list[dict]:
    from retain.experiments.comparison import comparison_rows

    return comparison_rows([r.label for r in runs], [r.results for r in runs])


def _strategies(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r.strategy for r in runs))


def _strategy_rows(runs: list[Run]) -> list[dict]:
    """Comparison rows labelled by strategy: the seeds of a strategy share its label."""
    from retain.experiments.comparison import comparison_rows

    return comparison_rows([r.strategy for r in runs], [r.results for r in runs])


def _judged(runs: list[Run]) -> dict[str, dict[str, dict]]:
    """``comparison.judge`` of the runs, seeds of a strategy together."""
    from retain.experiments.comparison import judge

    return judge(_strategy_rows(runs))


def make_figures(folder: Folder, out: Path | None = None) -> dict[str, bytes]:
    """Every chart the data allows: name (``loss.png``...) -> PNG bytes, also written to ``out``
    (default ``DIR/figures/``). A chart without data is left out (its section says why). A
    sequence folder's heatmaps are read from beside its sequences.json (``retain sequence`` drew
    them), a search folder's curve from beside its search.json. Runs that failed get only their
    curves so far, and only when no run finished."""
    if folder.kind == "sequence":
        from retain.report.sequence_html import sequence_figures

        return sequence_figures(folder.dir, folder.sequence)
    if folder.kind == "search":
        from retain.report.search_html import search_figures

        return search_figures(folder.dir, folder.search)
    from retain.report.plots import (
        PROPORTION_METRICS, plot_capabilities, plot_deltas, plot_tradeoff)

    out = Path(out) if out is not None else folder.dir / FIGURES_DIR
    figs, runs = {}, folder.runs
    curved = runs or folder.failed  # a diverged run's curves would swamp the finished ones
    losses = {r.label: _loss_curve(r) for r in curved}
    losses = {k: v for k, v in losses.items() if v}
    if losses:
        figs["loss.png"] = fg.plot_loss(losses, out / "loss.png")
    probes: dict[str, dict[str, fg.Series]] = {}
    for r in curved:
        for key, pts in fg.probe_series(r.metrics or []).items():
            probes.setdefault(key, {})[r.label] = pts
    if probes:
        figs["probes.png"] = fg.plot_probe_curves(probes, out / "probes.png")
    if not runs:
        return figs

    rows = _comparison_rows(runs)
    labels = [r.label for r in runs]
    if any(r["metric"] in PROPORTION_METRICS for r in rows):
        plot_capabilities(rows, labels, out / "capabilities.png",
                          title="capabilities before and after fine-tuning")
        figs["capabilities.png"] = (out / "capabilities.png").read_bytes()
    trade = tradeoff(runs)
    if trade is not None:
        plot_tradeoff(trade[0], out / "tradeoff.png", base=trade[1])
        figs["tradeoff.png"] = (out / "tradeoff.png").read_bytes()
    judged = _judged(runs)
    if judged:
        plot_deltas(judged, _strategies(runs), out / "deltas.png")
        figs["deltas.png"] = (out / "deltas.png").read_bytes()
    drift = {r.label: (r.results.get("drift") or {}).get("per_layer") or {} for r in runs}
    drift = {k: v for k, v in drift.items() if v}
    if drift:
        figs["drift.png"] = fg.plot_drift(drift, out / "drift.png")
    return figs


def tradeoff(runs: list[Run]) -> tuple[dict[str, tuple[float, float]], tuple[float, float]] | None:
    """(label -> (new-domain score, mean retained score) after, the same before fine-tuning),
    or None when the probes lack a proportion metric on either axis."""
    from retain.report.plots import PROPORTION_METRICS, tradeoff_points

    rows = _comparison_rows(runs)
    domain = {r["probe"] for r in rows if r["capability"] == "domain"}
    if {r["probe"] in domain for r in rows if r["metric"] in PROPORTION_METRICS} != {True, False}:
        return None
    before = [dict(r, strategy="before", after=r["before"]) for r in rows
              if r["strategy"] == runs[0].label]
    return tradeoff_points(rows, domain), tradeoff_points(before, domain)["before"]


def _loss_curve(r: Run) -> fg.Series:
    """From metrics.jsonl; from results.json's ``training.loss_curve`` when that log is gone."""
    if r.metrics:
        pts = fg.loss_series(r.metrics)
        if pts:
            return pts
    curve = (r.results.get("training") or {}).get("loss_curve") or []
    return [(int(p[0]), float(p[1])) for p in curve
            if isinstance(p, (list, tuple)) and len(p) == 2 and fg._finite(p[1])]


# -- sections ----------------------------------------------------------------------------------

def _run_facts(r: Run) -> list[tuple[str, str]]:
    res = r.results
    m, t, d = res.get("model") or {}, res.get("training") or {}, res.get("data") or {}
    params, trainable = m.get("params"), m.get("trainable_params")
    share = (f" ({100 * trainable / params:.2f}% of {num(params)})"
             if isinstance(params, int) and isinstance(trainable, int) and params else "")
    drift = ((res.get("drift") or {}).get("overall") or {}).get("relative_l2")
    return [
        ("model", esc(m.get("name")) + (f' <span class="dim">{esc(m.get("architecture"))}, '
                                        f'{esc(m.get("dtype"))}, {esc(m.get("device"))}</span>'
                                        if m.get("architecture") else "")),
        ("strategy", esc(res.get("strategy"))),
        ("new-domain data", esc(d.get("spec")) + (f' <span class="dim">{num(d.get("examples"))} '
                                                  f'examples</span>' if "examples" in d else "")),
        ("steps", num(t.get("steps"))),
        ("learning rate, batch", f'{esc(t.get("lr"))}, {esc(t.get("batch_size"))} × '
                                 f'{esc(t.get("seq_len"))} tokens'),
        ("seed", esc(res.get("seed"))),
        ("wall time", _duration(res.get("wall_s")) +
         (f' <span class="dim">(training {_duration(t.get("wall_s"))}, '
          f'{num(t.get("tokens_per_s"), 0)} tokens/s)</span>' if "wall_s" in t else "")),
        ("trainable params", num(trainable) + share),
        ("final training loss", num(t.get("final_loss"))),
        ("weight drift (relative L2)", num(drift, 4)),
        ("created", esc(res.get("created")) + f' <span class="dim">retain '
                                              f'{esc(res.get("retain_version"))}</span>'),
    ]


def _verdicts(folder: Folder) -> str:
    """One sentence per strategy on what it learnt, lost, gained and kept (``comparison.verdict``:
    judged by the paired tests, or by the interval over seeds), a run that fell off the cliff
    marked; for a comparison with a ranking, in its order, followed by its rule."""
    from retain.experiments.comparison import cliff_count, judge, mean_rows, verdict

    rk = folder.comparison.get("ranking") if folder.kind == "comparison" else None
    rk = rk if isinstance(rk, dict) and rk.get("order") else {}
    ranked = [o.get("strategy") for o in rk.get("order", []) if isinstance(o, dict)]
    strategies = _strategies(folder.runs)
    rows = _strategy_rows(folder.runs)
    judged, means = judge(rows), mean_rows(rows)  # the cliff: on the mean over seeds
    items = []
    for s in sorted(strategies, key=lambda s: ranked.index(s) if s in ranked else len(ranked)):
        lost = cliff_count(means, s)
        flag = (f' <span class="loss">fell off the cliff: {esc(", ".join(lost))}</span>'
                if lost else "")
        items.append(f"<li><b>{esc(s)}</b>: {esc(verdict(judged.get(s, {})))}{flag}</li>")
    rule = (f'<p class="rule"><b>Ranking</b>: {esc(rk["rule"])} First: <b>{esc(ranked[0])}</b>.'
            f'</p>') if rk.get("rule") and ranked else ""
    return f'<ul class="verdicts">{"".join(items)}</ul>{rule}'


def section_summary(folder: Folder) -> str:
    if folder.kind == "run":
        r = folder.runs[0]
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _run_facts(r))
        return _section("summary", "Summary",
                        _verdicts(folder) + f'<table class="facts">{rows}</table>')
    head = ["run", "model", "steps", "seed", "lr", "trainable params", "wall time",
            "final loss", "drift (rel. L2)", "folder"]
    rows = []
    for r in folder.runs:
        res, t = r.results, r.results.get("training") or {}
        drift = ((res.get("drift") or {}).get("overall") or {}).get("relative_l2")
        rows.append([esc(r.label), esc((res.get("model") or {}).get("name")), num(t.get("steps")),
                     esc(res.get("seed")), esc(t.get("lr")),
                     num((res.get("model") or {}).get("trainable_params")),
                     _duration(res.get("wall_s")), num(t.get("final_loss")), num(drift, 4),
                     f"<code>{esc(r.dir.name)}/</code>"])
    title = folder.comparison.get("title")
    intro = f"<p>{esc(title)}</p>" if title else ""
    intro += "".join(f'<p class="loss">failed, left out of the comparison: <b>{esc(r.label)}</b> '
                     f'(<code>{esc(r.dir.name)}/</code>) {_failure_words(r.results)}</p>'
                     for r in folder.failed)
    # a long list of runs would push the charts off the first screen: folded
    opened = " open" if len(folder.runs) <= SIDE_BY_SIDE else ""
    runs = (f"<details{opened}><summary>{len(folder.runs)} runs: model, steps, seed, rate, "
            f"time, drift, folder</summary>{_table(head, rows)}</details>")
    return _section("summary", "Summary", intro + _verdicts(folder) + runs)


def section_strategies(folder: Folder) -> str:
    seen, items = set(), []
    for r in folder.runs:
        for s in r.results.get("strategies") or []:
            name = s.get("name")
            if name in seen:
                continue
            seen.add(name)
            cfg = json.dumps(s.get("config") or {}, ensure_ascii=False, sort_keys=True)
            items.append(f'<li><b>{esc(name)}</b> <span class="dim">{esc(s.get("family"))}</span>'
                         f'<br>{linkify(s.get("citation")) or "<i>no citation</i>"}'
                         f'<br><code class="cfg">{esc(cfg)}</code></li>')
    body = f'<ul class="cites">{"".join(items)}</ul>' if items else _note(
        "plain full fine-tuning: no strategy listed")
    return _section("strategies", "Strategies and their papers", body)


def _cap_rows_run(r: Run) -> list[list[str]]:
    rows = []
    comp = sorted(r.results.get("comparison", []), key=lambda c: c.get("capability") == "domain")
    for c in comp:
        cls = change_class(c)
        d = c.get("delta")
        rows.append([
            esc(c.get("capability")), f'{esc(c["probe"])}.{esc(c["metric"])} '
                                      f'{_arrow(c.get("higher_is_better", True))}',
            num(c.get("n")), f'{num(c["before"])} {_ci(c.get("before_ci"))}',
            f'{num(c["after"])} {_ci(c.get("after_ci"))}',
            f'<span class="{cls}">{"+" if isinstance(d, (int, float)) and d > 0 else ""}'
            f'{num(d)}</span> {_ci(c.get("delta_ci"))}', esc(paired_cell(c.get("paired"))),
            esc(retention_cell(c))])
    return rows


def section_capabilities(folder: Folder, figs: dict[str, bytes]) -> str:
    legend = ('<p class="legend"><span class="gain">better</span> <span class="loss">worse</span> '
              '(by the metric\'s direction ↑/↓); pale: the paired test on the same items does not '
              'show a change (exact McNemar p &ge; 0.05 for proportions, with the items lost/gained; '
              'a paired bootstrap 95% interval of the change that includes 0 for cross-entropy).'
              '</p>')
    if folder.kind == "run":
        table = _table(["capability", "probe.metric", "n", "before [95% CI]", "after [95% CI]",
                        "delta", "paired test", "retention"], _cap_rows_run(folder.runs[0]),
                       "caps") + _note(RETENTION_WORDS)
    else:
        keys: dict[str, dict] = {}
        for r in folder.runs:
            for c in r.results.get("comparison", []):
                k = keys.setdefault(f'{c["probe"]}.{c["metric"]}', {"row": c, "by": {}})
                k["by"][r.label] = c
        # grid[0]: the header; one row per probe metric, one column per run (before first)
        side = len(folder.runs) <= SIDE_BY_SIDE
        grid = [["probe.metric" if side else "run: after (delta)", "before [95% CI]"] +
                [f"{esc(r.label)}: after (delta)" if side else esc(r.label) for r in folder.runs]]
        for key, k in sorted(keys.items(), key=lambda kv: kv[1]["row"].get("capability") == "domain"):
            c0 = k["row"]
            cells = [f'{_breakable(key)} {_arrow(c0.get("higher_is_better", True))}',
                     f'{num(c0["before"])} {_ci(c0.get("before_ci"))}']
            for r in folder.runs:
                c = k["by"].get(r.label)
                if c is None:
                    cells.append("–")
                    continue
                d = c.get("delta")
                cells.append(f'<span class="{change_class(c)}">{num(c["after"])} '
                             f'({"+" if isinstance(d, (int, float)) and d > 0 else ""}{num(d)})'
                             f'</span> {_ci(c.get("after_ci"))}')
            grid.append(cells)
        if not side:  # many runs: one per row, the probe metrics across
            grid = [list(col) for col in zip(*grid)]
        table = _table(grid[0], grid[1:], "caps")
    fig = _img(figs["capabilities.png"], "capabilities.png", "capabilities before and after") \
        if "capabilities.png" in figs else ""
    return _section("capabilities", "Capabilities before and after", legend + table + fig)


def section_training(folder: Folder, figs: dict[str, bytes]) -> str:
    parts = []
    if "loss.png" not in figs and "probes.png" not in figs:
        return _section("training", "Training curves", _note("no training curve recorded"))
    missing = [r.label for r in folder.runs or folder.failed if r.metrics is None]
    if missing:
        parts.append(_note(f"no {METRICS_FILE} in: {', '.join(missing)} (the loss comes from "
                           f"{RESULTS_FILE}; no probe curve recorded)"))
    if "loss.png" in figs:
        parts.append(_img(figs["loss.png"], "loss.png", "training loss against steps"))
    if "probes.png" in figs:
        parts.append(_note("each probe at step 0 (before), every probe_every steps, and after "
                           "the strategies' finalize step (the last point)" if folder.runs else
                           "each probe as logged until the run failed (step 0: before)"))
        parts.append(_img(figs["probes.png"], "probes.png", "probe values against steps",
                          wide=True))
    return _section("training", "Training curves", "".join(parts))


def section_tradeoff(folder: Folder, figs: dict[str, bytes]) -> str:
    if "tradeoff.png" not in figs:
        return _section("tradeoff", "Trade-off: the new domain against the old", _note(
            "no trade-off to chart: it needs a proportion-type probe of the new domain "
            "(capability \"domain\") and one of a retained capability"))
    from retain.report.plots import pareto_front

    points, base = tradeoff(folder.runs)
    front = set(pareto_front(points)) if len(points) > 1 else set()
    head = ["", "new-domain score", "mean retained score"] + (
        ["on the Pareto front"] if front else [])
    body = [["before fine-tuning", num(base[0]), num(base[1])] + (["–"] if front else [])]
    body += [[esc(k), num(x), num(y)] + (["yes" if k in front else "no"] if front else [])
             for k, (x, y) in points.items()]
    table = _table(head, body)
    text = ("scores after training, higher is better on both axes; the star is the model "
            "before fine-tuning")
    return _section("tradeoff", "Trade-off: the new domain against the old",
                    _note(text) + _img(figs["tradeoff.png"], "tradeoff.png", "trade-off chart") + table)


def section_changes(folder: Folder, figs: dict[str, bytes]) -> str:
    """The heatmap of every strategy's change on every probe metric (``plots.plot_deltas``)."""
    if "deltas.png" not in figs:
        return ""
    text = ("each strategy's change on each probe metric (the number: after - before, a mean "
            "over seeds when there are several); green better and red worse by the metric's "
            "direction; pale and hatched: not a real change (one seed: the paired test on the "
            "same items; several seeds: a 95% interval over seeds that holds 0)")
    return _section("changes", "What changed, strategy by capability",
                    _note(text) + _img(figs["deltas.png"], "deltas.png", "heatmap of changes",
                                       wide=True))


def section_ranking(folder: Folder) -> str:
    """The comparison's ranking (comparison.json) and its rule: score with its interval over
    seeds, new-domain gain, retained score, whether each gap to the next is larger than the
    noise, the Pareto front and the cliff. Empty for a single run."""
    from retain.experiments.comparison import SCORE_WORDS

    rk = folder.comparison.get("ranking") if folder.kind == "comparison" else None
    if not isinstance(rk, dict) or not rk.get("order"):
        return ""

    def verdict(vs: Any) -> str:
        if not isinstance(vs, dict):
            return "–"
        if vs.get("by_rule"):  # the next is in a lower tier: the gap does not place them
            return f"ahead of {esc(vs.get('strategy'))} by the rule"
        noise = vs.get("larger_than_noise")
        word = {True: "larger than the noise", False: "within the noise"}.get(
            noise, "one seed: no interval")
        on = vs.get("on")  # the score compared
        on = f"{esc(SCORE_WORDS.get(on, on))} " if on else ""
        return f"{on}{num(vs.get('mean_diff'))} vs {esc(vs.get('strategy'))} ({word})"

    def flags(o: dict) -> str:
        out = ["Pareto front"] if o.get("pareto") else []
        if o.get("cliff"):
            out.append(f'<span class="loss">fell off the cliff: '
                       f'{esc(", ".join(map(str, o["cliff"])))}</span>')
        return "; ".join(out) or "–"

    rows = [[esc(o.get("rank")), esc(o.get("strategy")), num(o.get("score")),
             _ci(o.get("score_ci")), num(o.get("domain_gain")), num(o.get("retained")),
             esc(o.get("seeds")), verdict(o.get("vs_next")), flags(o)]
            for o in rk["order"] if isinstance(o, dict)]
    rule = rk.get("rule") or f"score: {rk.get('score')} = {rk.get('definition', '')}."
    return _section("ranking", "Ranking", _note(f"{rule} {rk.get('noise', '')}") + _table(
        ["rank", "strategy", "score", "95% CI", "new-domain gain", "retained", "seeds",
         "gap to the next", ""], rows))


def section_drift(folder: Folder, figs: dict[str, bytes]) -> str:
    if "drift.png" not in figs:
        return _section("drift", "Weight drift per layer", _note("no weight drift recorded"))
    rows = []
    for r in folder.runs:
        o = (r.results.get("drift") or {}).get("overall") or {}
        rows.append([esc(r.label), num(o.get("l2"), 4), num(o.get("relative_l2"), 4),
                     num(o.get("tensors"))])
    return _section("drift", "Weight drift per layer",
                    _img(figs["drift.png"], "drift.png", "relative L2 drift per layer") +
                    _table(["run", "L2 of W - W0", "relative L2", "tensors"], rows))


def _guard_html(g: dict) -> str:
    limits = "".join(f"<li><code>{esc(x if isinstance(x, str) else json.dumps(x))}</code></li>"
                     for x in g.get("limits") or [])
    events = [[num(e.get("step")), f'<code>{esc(e.get("limit"))}</code>', num(e.get("value")),
               esc(e.get("action"))] for e in g.get("events") or [] if isinstance(e, dict)]
    back = g.get("rolled_back_to_step")
    out = f"<p>limits:</p><ul>{limits}</ul>" if limits else ""
    out += _table(["step", "limit", "value", "action"], events, "guard") if events else _note(
        "no limit was crossed")
    if back is not None:
        out += (f'<p class="loss">rolled back: the final model is the checkpoint of step '
                f'{esc(back)}, the last check that met every limit</p>')
    for c in g.get("final_check") or []:  # the final weights, scored on the full-size probes
        if isinstance(c, dict):
            vals = ", ".join(f"{esc(k)} {num(v)}" for k, v in (c.get("values") or {}).items())
            verdict = "meets every limit" if c.get("passed") else "fails a limit"
            out += (f'<p class="{"dim" if c.get("passed") else "loss"}">final check on the '
                    f'full-size probes, weights of step {num(c.get("step"))}: {verdict} '
                    f'({vals})</p>')
    return out


def section_guard(folder: Folder) -> str:
    guarded = [r for r in folder.runs if isinstance(r.results.get("guard"), dict)]
    if not guarded:
        return ""
    if folder.kind == "run":
        body = _guard_html(guarded[0].results["guard"])
    else:
        body = "".join(f"<h3>{esc(r.label)}</h3>{_guard_html(r.results['guard'])}" for r in guarded)
    return _section("guard", "Guard events", body)


def _answer(ex: dict | None) -> str:
    if ex is None:
        return "–"
    if ex.get("answer") is None and "value" in ex:  # perplexity-type: a per-text score
        return f'<span class="dim">{num(ex.get("value"))} nats/token</span>'
    mark = {True: '<span class="gain mark">✓</span> ', False: '<span class="loss mark">✗</span> '}
    return f'<pre>{mark.get(ex.get("ok"), "")}{esc(_cut(ex.get("answer")))}</pre>'


def section_examples(folder: Folder) -> str:
    """Per probe, up to 5 prompts with the answer before and after (matched by prompt): each
    run's answer in a column of its own, or, with more than ``SIDE_BY_SIDE`` runs, one under
    the other in one column."""
    side = len(folder.runs) <= SIDE_BY_SIDE
    first = folder.runs[0].results.get("probes") or {}
    blocks = []
    for b in first.get("before") or []:
        key = f'{b.get("probe")}.{b.get("metric")}'
        before = b.get("examples") or []
        if not before:
            continue
        afters = []
        for r in folder.runs:
            res = next((a for a in (r.results.get("probes") or {}).get("after") or []
                        if f'{a.get("probe")}.{a.get("metric")}' == key), {})
            afters.append(res.get("examples") or [])
        rows = []
        for i, ex in enumerate(before):
            cells = [f'<pre>{esc(_cut(ex.get("prompt")))}</pre>',
                     f'<pre>{esc(_cut(ex.get("expected")))}</pre>' if ex.get("expected")
                     is not None else "–", _answer(ex)]
            answers = []
            for after in afters:
                match = next((a for a in after if a.get("prompt") == ex.get("prompt")),
                             after[i] if i < len(after) else None)
                answers.append(_answer(match))
            cells += answers if side else ["".join(
                f'<div class="by"><span class="dim">{esc(r.label)}</span><br>{a}</div>'
                for r, a in zip(folder.runs, answers))]
            rows.append(cells)
        head = ["prompt", "expected", "before"] + (
            ["after"] if folder.kind == "run" else [f"after: {esc(r.label)}" for r in folder.runs]
            if side else ["after, run by run"])
        blocks.append(f'<details open><summary>{esc(key)} <span class="dim">'
                      f'{esc(b.get("kind"))}</span></summary>{_table(head, rows, "examples")}'
                      f'</details>')
    body = "".join(blocks) or _note("no examples recorded")
    return _section("examples", "Examples: the model's answers before and after", body)


def section_lost_items(folder: Folder) -> str:
    """Per run and probe, the items the paired test counted as lost (right before, wrong after)
    and gained, with the prompt and both answers."""
    blocks = []
    for r in folder.runs:
        for c in r.results.get("comparison", []):
            p = c.get("paired") or {}
            for kind in ("lost", "gained"):
                listed = p.get(f"{kind}_items") or []
                if not listed:
                    continue
                rows = [[f'<pre>{esc(_cut(x.get("prompt")))}</pre>',
                         f'<pre>{esc(_cut(x.get("expected")))}</pre>',
                         f'<pre>{esc(_cut(x.get("before")))}</pre>',
                         f'<pre>{esc(_cut(x.get("after")))}</pre>'] for x in listed]
                label = "" if folder.kind == "run" else f"{esc(r.label)}: "
                blocks.append(f'<details><summary>{label}{esc(c["key"])}: {p.get(kind)} item(s) '
                              f'{kind}</summary>{_table(["prompt", "expected", "before", "after"], rows, "examples")}</details>')
    body = "".join(blocks) or _note("no item changed (or the results keep no per-item outcomes)")
    return _section("items", "Items lost and gained (paired, the same items before and after)",
                    body)


def _failure_words(res: dict) -> str:
    """Where and why a run failed, as escaped HTML: "at step 2 (stage train): reason"."""
    f = res.get("failure") if isinstance(res.get("failure"), dict) else {}
    step, stage = f.get("step"), f.get("stage")
    where = " ".join(x for x in (f"at step {esc(step)}" if step is not None else "",
                                 f"(stage {esc(stage)})" if stage else "") if x)
    return f'{where or "(where unknown)"}: {esc(f.get("reason") or "no reason recorded")}'


def _metrics_so_far(r: Run) -> str:
    """What metrics.jsonl logged before the failure: each probe metric at the first and the
    last probe record, and the last training step's loss, gradient norm and learning rate."""
    if r.metrics is None:
        return _note(f"no metrics so far: {METRICS_FILE} is absent")
    probes = [m for m in r.metrics if m.get("event") == "probe" and
              isinstance(m.get("results"), dict)]
    trains = [m for m in r.metrics if m.get("event") == "train"]
    if not probes and not trains:
        return _note(f"no metrics so far: nothing was logged to {METRICS_FILE} before the failure")
    out = ""
    if probes:
        shown = [probes[0]] + ([probes[-1]] if len(probes) > 1 else [])
        keys = list(dict.fromkeys(k for m in shown for k in m["results"]))
        head = ["probe.metric"] + [f'{esc(m.get("stage"))}, step {esc(m.get("step"))}'
                                   for m in shown]
        out += _table(head, [[esc(k)] + [num(m["results"].get(k)) for m in shown]
                             for k in keys], "caps")
    if trains:
        t = trains[-1]
        out += _table(["last logged step", "loss", "gradient norm", "learning rate"],
                      [[num(t.get("step")), num(t.get("loss")), num(t.get("grad_norm")),
                        esc(t.get("lr"))]])
    else:
        out += _note("no training step was logged before the failure")
    return out


def section_failure(folder: Folder) -> str:
    """Each failed run: where it failed (stage, step), why, its last checkpoint, and the
    metrics it logged so far."""
    blocks = []
    for r in folder.failed:
        f = r.results.get("failure") if isinstance(r.results.get("failure"), dict) else {}
        cfg = r.results.get("config") or {}
        last = f.get("last_checkpoint")
        resume = (f"<code>{esc(last)}</code> (add --resume to continue from it)" if last else
                  "no checkpoint (rerun the same command to start over)")
        facts = [("failed", _failure_words(r.results)), ("model", esc(cfg.get("model"))),
                 ("strategy", esc(_strategy_name(r.results))),
                 ("learning rate, steps", f'{esc(cfg.get("lr"))}, {esc(cfg.get("steps"))}'),
                 ("last checkpoint", resume), ("created", esc(r.results.get("created")))]
        rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
        head = "" if folder.kind == "run" else f"<h3>{esc(r.label)}</h3>"
        blocks.append(f'{head}<table class="facts">{rows}</table>'
                      f"<p>metrics so far:</p>{_metrics_so_far(r)}")
    return _section("failure", "The run failed" if len(folder.failed) == 1 else
                    "The runs failed", "".join(blocks))


def section_config(folder: Folder) -> str:
    blocks = []
    for r in folder.runs + folder.failed:
        text = r.config_text or json.dumps(r.results.get("config") or {}, indent=2,
                                           ensure_ascii=False)
        blocks.append(f"<details><summary>{esc(r.label)}: {esc(CONFIG_FILE)}</summary>"
                      f"<pre>{esc(text)}</pre></details>")
    return _section("config", "Configuration", "".join(blocks))


# -- the page ----------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
 max-width:1180px;margin:0 auto;padding:0 24px 48px;background:#fff}
header{border-bottom:1px solid #d0d7de;padding:18px 0 8px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:30px 0 10px;border-bottom:1px solid
 #eaeef2;padding-bottom:4px} h3{font-size:15px}
nav a{margin-right:12px;color:#0969da;text-decoration:none;font-size:13px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f6f8fa} table.facts th{background:#f6f8fa;font-weight:600;width:220px}
table.caps td{font-variant-numeric:tabular-nums}
table.caps .ci{display:block} div.scroll{overflow-x:auto;max-width:100%}
ul.verdicts{padding-left:20px} ul.verdicts li{margin-bottom:4px} p.rule{font-size:14px}
div.by{margin-bottom:6px}
.gain{background:#dafbe1;color:#116329;padding:1px 4px;border-radius:3px}
.loss{background:#ffebe9;color:#a40e26;padding:1px 4px;border-radius:3px}
.gain.weak{background:#f0fbf2;color:#4b8a5a} .loss.weak{background:#fff5f4;color:#b65c68}
.same{color:#57606a} .ci,.dim{color:#57606a;font-size:12px} .note{color:#57606a;font-style:italic}
.mark{font-weight:700}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12.5px/1.35 ui-monospace,Menlo,
 Consolas,monospace;max-width:360px;display:inline-block;vertical-align:top}
code{font:12.5px ui-monospace,Menlo,Consolas,monospace} code.cfg{color:#57606a;font-size:11.5px}
figure{margin:10px 0} figure img{max-width:min(100%,720px)} figure.wide img{max-width:100%} figcaption{font-size:11px;color:#57606a}
details{margin:6px 0 10px} summary{cursor:pointer;font-weight:600}
ul.cites li{margin-bottom:8px} footer{margin-top:36px;color:#57606a;font-size:12px}
"""


def render(folder: Folder, figs: dict[str, bytes]) -> str:
    """The whole page as one string (figures from ``make_figures``)."""
    sources = f"{esc(RESULTS_FILE)} and {esc(METRICS_FILE)}"
    if folder.kind == "sequence":
        from retain.report.sequence_html import SEQUENCE_SECTIONS, SUMMARY_FILE, sequence_sections

        sections, order = sequence_sections(folder.sequence, figs), SEQUENCE_SECTIONS
        title = str(folder.sequence.get("title") or "a task sequence")
        sources = esc(SUMMARY_FILE)
    elif folder.kind == "search":
        from retain.report.search_html import (SEARCH_FILE, SEARCH_SECTIONS, search_sections,
                                               search_title)

        sections, order = search_sections(folder.search, figs), SEARCH_SECTIONS
        title, sources = search_title(folder.search), esc(SEARCH_FILE)
    elif not folder.runs:  # every run failed: where and why, the curves so far, the config
        sections = [section_failure(folder), section_training(folder, figs),
                    section_config(folder)]
        order = FAILED_SECTIONS
        first = folder.failed[0].results
        f = first.get("failure") if isinstance(first.get("failure"), dict) else {}
        title = (f'{_strategy_name(first)} on {(first.get("config") or {}).get("model")}: failed'
                 + (f' at step {f["step"]}' if f.get("step") is not None else "")
                 if folder.kind == "run" else f"{len(folder.failed)} runs, all failed")
    else:  # the answer first (sentences, charts, ranking), the long tables after
        sections = [section_summary(folder), section_tradeoff(folder, figs),
                    section_changes(folder, figs), section_ranking(folder),
                    section_capabilities(folder, figs), section_strategies(folder),
                    section_training(folder, figs), section_drift(folder, figs),
                    section_guard(folder), section_lost_items(folder), section_examples(folder),
                    section_config(folder)]
        sections, order = [s for s in sections if s], SECTIONS
    ids = [sid for sid in order if f'<section id="{sid}">' in "".join(sections)]
    nav = "".join(f'<a href="#{sid}">{sid}</a>' for sid in ids)
    if folder.kind == "run" and folder.runs:
        res = folder.runs[0].results
        title = f'{res.get("strategy")} on {(res.get("model") or {}).get("name")}'
    elif folder.kind == "comparison" and folder.runs:
        title = str(folder.comparison.get("title") or f"{len(folder.runs)} runs compared")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            f'img-src data:; style-src \'unsafe-inline\'">'
            f'<title>retain report: {esc(title)}</title><style>{CSS}</style></head>\n<body>'
            f'<header><h1>retain report: {esc(title)}</h1>'
            f'<p class="dim">{esc(folder.kind)} folder <code>{esc(folder.dir.name)}</code></p>'
            f'<nav>{nav}</nav></header>\n<main>\n' + "\n".join(sections) +
            f'\n</main><footer>generated by retain {esc(retain.__version__)} at {esc(now)} from '
            f'{sources}</footer></body></html>\n')


def build_report(dir: Path) -> Path:
    """Render the run, comparison, sequence or search folder ``dir`` into ``dir/report.html`` (written
    atomically: a failure leaves no half page) and the charts of a run or comparison into
    ``dir/figures/*.png``; the page's path."""
    folder = load_folder(Path(dir))
    # Charts are drawn into a hidden folder and moved into figures/ only once the page is
    # rendered: a report that fails half-way leaves neither a page nor a stray chart.
    staging = Path(tempfile.mkdtemp(prefix=".figures-", dir=folder.dir))
    try:
        figs = make_figures(folder, staging)
        page = render(folder, figs)
        drawn = [p for p in staging.iterdir() if p.name in figs]
        if drawn:
            (folder.dir / FIGURES_DIR).mkdir(exist_ok=True)
        for p in drawn:
            os.replace(p, folder.dir / FIGURES_DIR / p.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    path = folder.dir / REPORT_FILE
    write_text_atomic(path, page)
    return path
