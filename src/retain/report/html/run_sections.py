"""The sections about runs that the run page, the comparison page and the failed-run page share
(strategies, training curves, the trade-off, the changes heatmap, drift, items lost and gained,
examples, the configuration), the sentence per strategy, and the charts they embed, drawn from
each run's ``results.json`` and ``metrics.jsonl``. Every run is a column or a block of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retain.metrics.verdicts import cliff_count, comparison_rows, judge, mean_rows, verdict
from retain.report import figures as fg
from retain.report import plots
from retain.report.html.folder import Folder, Run
from retain.report.html.helpers import (
    FIGURES_DIR, cut, esc, img, is_number, linkify, note, num, section, table)
from retain.report.results import CONFIG_FILE, METRICS_FILE, RESULTS_FILE

SECTIONS = ("summary", "tradeoff", "changes", "ranking", "capabilities", "strategies", "training",
            "drift", "guard", "items", "examples", "config")  # stable ids; "guard" only when a run
# has guard events, "ranking" only for a comparison folder whose comparison.json holds one
SIDE_BY_SIDE = 3  # runs shown in columns side by side; with more, one run per row
CAPABILITIES_LEGEND = (
    '<p class="legend"><span class="gain">better</span> <span class="loss">worse</span> '
    '(by the metric\'s direction ↑/↓); pale: the paired test on the same items does not '
    'show a change (exact McNemar p &ge; 0.05 for proportions, with the items lost/gained; '
    'a paired bootstrap 95% interval of the change that includes 0 for cross-entropy).</p>')


# -- the runs' comparison rows -------------------------------------------------------------------

def run_rows(runs: list[Run]) -> list[dict]:
    """Comparison rows of every run, labelled by run (``verdicts.comparison_rows``)."""
    return comparison_rows([r.label for r in runs], [r.results for r in runs])


def strategies(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(r.strategy for r in runs))


def strategy_rows(runs: list[Run]) -> list[dict]:
    """Comparison rows labelled by strategy: the seeds of a strategy share its label."""
    return comparison_rows([r.strategy for r in runs], [r.results for r in runs])


# -- figures (saved under DIR/figures/, embedded in the page) ----------------------------------

def run_figures(folder: Folder, out: Path | None = None) -> dict[str, bytes]:
    """Every chart of the runs the data allows: name (``loss.png``...) -> PNG bytes, also
    written to ``out`` (default ``DIR/figures/``). A chart without data is left out (its
    section says why). Runs that failed get only their curves so far, and only when no run
    finished."""
    out = Path(out) if out is not None else folder.dir / FIGURES_DIR
    figs, runs = {}, folder.runs
    curved = runs or folder.failed  # a diverged run's curves would swamp the finished ones
    losses = {r.label: loss_curve(r) for r in curved}
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

    rows = run_rows(runs)
    labels = [r.label for r in runs]
    if any(r["metric"] in plots.PROPORTION_METRICS for r in rows):
        plots.plot_capabilities(rows, labels, out / "capabilities.png",
                                title="capabilities before and after fine-tuning")
        figs["capabilities.png"] = (out / "capabilities.png").read_bytes()
    trade = tradeoff(runs)
    if trade is not None:
        plots.plot_tradeoff(trade[0], out / "tradeoff.png", base=trade[1])
        figs["tradeoff.png"] = (out / "tradeoff.png").read_bytes()
    judged = judge(strategy_rows(runs))
    if judged:
        plots.plot_deltas(judged, strategies(runs), out / "deltas.png")
        figs["deltas.png"] = (out / "deltas.png").read_bytes()
    drift = {r.label: (r.results.get("drift") or {}).get("per_layer") or {} for r in runs}
    drift = {k: v for k, v in drift.items() if v}
    if drift:
        figs["drift.png"] = fg.plot_drift(drift, out / "drift.png")
    return figs


def tradeoff(runs: list[Run]) -> tuple[dict[str, tuple[float, float]], tuple[float, float]] | None:
    """(label -> (new-domain score, mean retained score) after, the same before fine-tuning),
    or None when the probes lack a proportion metric on either axis."""
    rows = run_rows(runs)
    domain = {r["probe"] for r in rows if r["capability"] == "domain"}
    if {r["probe"] in domain for r in rows
            if r["metric"] in plots.PROPORTION_METRICS} != {True, False}:
        return None
    before = [dict(r, strategy="before", after=r["before"]) for r in rows
              if r["strategy"] == runs[0].label]
    return plots.tradeoff_points(rows, domain), plots.tradeoff_points(before, domain)["before"]


def loss_curve(r: Run) -> fg.Series:
    """From metrics.jsonl; from results.json's ``training.loss_curve`` when that log is gone."""
    if r.metrics:
        pts = fg.loss_series(r.metrics)
        if pts:
            return pts
    curve = (r.results.get("training") or {}).get("loss_curve") or []
    return [(int(p[0]), float(p[1])) for p in curve
            if isinstance(p, (list, tuple)) and len(p) == 2 and is_number(p[1])]


# -- sections ----------------------------------------------------------------------------------

def verdict_list(runs: list[Run], ranking: dict[str, Any]) -> str:
    """One sentence per strategy on what it learnt, lost, gained and kept (``verdicts.verdict``:
    judged by the paired tests, or by the interval over seeds), a run that fell off the cliff
    marked; with a ``ranking`` (comparison.json's), in its order, followed by its rule."""
    rk = ranking if isinstance(ranking, dict) and ranking.get("order") else {}
    ranked = [o.get("strategy") for o in rk.get("order", []) if isinstance(o, dict)]
    rows = strategy_rows(runs)
    judged, means = judge(rows), mean_rows(rows)  # the cliff: on the mean over seeds
    items = []
    order = sorted(strategies(runs), key=lambda s: ranked.index(s) if s in ranked else len(ranked))
    for s in order:
        lost = cliff_count(means, s)
        flag = (f' <span class="loss">fell off the cliff: {esc(", ".join(lost))}</span>'
                if lost else "")
        items.append(f"<li><b>{esc(s)}</b>: {esc(verdict(judged.get(s, {})))}{flag}</li>")
    rule = (f'<p class="rule"><b>Ranking</b>: {esc(rk["rule"])} First: <b>{esc(ranked[0])}</b>.'
            f'</p>') if rk.get("rule") and ranked else ""
    return f'<ul class="verdicts">{"".join(items)}</ul>{rule}'


def capabilities_section(table_html: str, figs: dict[str, bytes]) -> str:
    """The capabilities section around its table (one run's or the comparison's grid)."""
    fig = img(figs["capabilities.png"], "capabilities.png", "capabilities before and after") \
        if "capabilities.png" in figs else ""
    return section("capabilities", "Capabilities before and after",
                   CAPABILITIES_LEGEND + table_html + fig)


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
    body = f'<ul class="cites">{"".join(items)}</ul>' if items else note(
        "plain full fine-tuning: no strategy listed")
    return section("strategies", "Strategies and their papers", body)


def section_training(folder: Folder, figs: dict[str, bytes]) -> str:
    parts = []
    if "loss.png" not in figs and "probes.png" not in figs:
        return section("training", "Training curves", note("no training curve recorded"))
    missing = [r.label for r in folder.runs or folder.failed if r.metrics is None]
    if missing:
        parts.append(note(f"no {METRICS_FILE} in: {', '.join(missing)} (the loss comes from "
                          f"{RESULTS_FILE}; no probe curve recorded)"))
    if "loss.png" in figs:
        parts.append(img(figs["loss.png"], "loss.png", "training loss against steps"))
    if "probes.png" in figs:
        parts.append(note("each probe at step 0 (before), every probe_every steps, and after "
                          "the strategies' finalize step (the last point)" if folder.runs else
                          "each probe as logged until the run failed (step 0: before)"))
        parts.append(img(figs["probes.png"], "probes.png", "probe values against steps",
                         wide=True))
    return section("training", "Training curves", "".join(parts))


def section_tradeoff(folder: Folder, figs: dict[str, bytes]) -> str:
    if "tradeoff.png" not in figs:
        return section("tradeoff", "Trade-off: the new domain against the old", note(
            "no trade-off to chart: it needs a proportion-type probe of the new domain "
            "(capability \"domain\") and one of a retained capability"))
    points, base = tradeoff(folder.runs)
    front = set(plots.pareto_front(points)) if len(points) > 1 else set()
    head = ["", "new-domain score", "mean retained score"] + (
        ["on the Pareto front"] if front else [])
    body = [["before fine-tuning", num(base[0]), num(base[1])] + (["–"] if front else [])]
    body += [[esc(k), num(x), num(y)] + (["yes" if k in front else "no"] if front else [])
             for k, (x, y) in points.items()]
    text = ("scores after training, higher is better on both axes; the star is the model "
            "before fine-tuning")
    return section("tradeoff", "Trade-off: the new domain against the old",
                   note(text) + img(figs["tradeoff.png"], "tradeoff.png", "trade-off chart")
                   + table(head, body))


def section_changes(folder: Folder, figs: dict[str, bytes]) -> str:
    """The heatmap of every strategy's change on every probe metric (``plots.plot_deltas``)."""
    if "deltas.png" not in figs:
        return ""
    text = ("each strategy's change on each probe metric (the number: after - before, a mean "
            "over seeds when there are several); green better and red worse by the metric's "
            "direction; pale and hatched: not a real change (one seed: the paired test on the "
            "same items; several seeds: a 95% interval over seeds that holds 0)")
    return section("changes", "What changed, strategy by capability",
                   note(text) + img(figs["deltas.png"], "deltas.png", "heatmap of changes",
                                    wide=True))


def section_drift(folder: Folder, figs: dict[str, bytes]) -> str:
    if "drift.png" not in figs:
        return section("drift", "Weight drift per layer", note("no weight drift recorded"))
    rows = []
    for r in folder.runs:
        o = (r.results.get("drift") or {}).get("overall") or {}
        rows.append([esc(r.label), num(o.get("l2"), 4), num(o.get("relative_l2"), 4),
                     num(o.get("tensors"))])
    return section("drift", "Weight drift per layer",
                   img(figs["drift.png"], "drift.png", "relative L2 drift per layer") +
                   table(["run", "L2 of W - W0", "relative L2", "tensors"], rows))


def guard_html(g: dict) -> str:
    """One run's guard: its limits, the events (each with its evidence: the score, its interval,
    the items, the test's p-value), the weights the run ends with, and the final check."""
    from retain.guard import event_text

    limits = "".join(f"<li><code>{esc(x if isinstance(x, str) else json.dumps(x))}</code></li>"
                     for x in g.get("limits") or [])
    events = [[num(e.get("step")), esc(e.get("action")), esc(event_text(e))]
              for e in g.get("events") or [] if isinstance(e, dict)]
    out = f"<p>limits:</p><ul>{limits}</ul>" if limits else ""
    out += table(["step", "action", "what happened"], events, "guard") if events else note(
        "no limit was crossed")
    out += f'<p class="{"dim" if guard_headline(g) is None else "loss"}">' \
           f'{esc(guard_headline(g) or "the run ends with its trained weights")}</p>'
    for c in g.get("final_check") or []:  # the weights the run ends with, on the final check
        if isinstance(c, dict):
            vals = ", ".join(f"{esc(k)} {num(v)}" for k, v in (c.get("values") or {}).items())
            said = "meets every limit" if c.get("passed") else "crosses a limit"
            out += (f'<p class="{"dim" if c.get("passed") else "loss"}">final check, weights '
                    f'of step {num(c.get("step"))}: {said} ({vals})</p>')
    if g.get("weak_verdict"):
        out += note(f"the final check scored {g.get('final_n')} items per probe: a weak verdict "
                    f"(set guard.verify_n for a larger one)")
    return out


def guard_headline(g: Any) -> str | None:
    """The sentence a page leads with when the guard changed the weights a run ends with (a
    stop, a rollback at the end); None when it did not."""
    if not isinstance(g, dict) or g.get("rolled_back_to_step") is None:
        return None
    back = next((e for e in reversed(g.get("events") or [])
                 if isinstance(e, dict) and e.get("action") == "rollback"), None)
    stop = next((e for e in g.get("events") or []
                 if isinstance(e, dict) and e.get("action") == "stop"), None)
    text = f"guard: the run ends with the weights of step {g['rolled_back_to_step']}"
    if back is not None:
        lo, hi = (back.get("discarded") or [None, None])[:2]
        text += f", steps {lo}-{hi} thrown away"
        crossed = back.get("crossed") or []
        if crossed:
            text += f" ({'stopped at' if stop else 'the end crossed'} " \
                    f"{', '.join(str(c.get('limit')) for c in crossed)})"
    return text


def _answer(ex: dict | None) -> str:
    if ex is None:
        return "–"
    if ex.get("answer") is None and "value" in ex:  # perplexity-type: a per-text score
        return f'<span class="dim">{num(ex.get("value"))} nats/token</span>'
    mark = {True: '<span class="gain mark">✓</span> ', False: '<span class="loss mark">✗</span> '}
    return f'<pre>{mark.get(ex.get("ok"), "")}{esc(cut(ex.get("answer")))}</pre>'


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
            cells = [f'<pre>{esc(cut(ex.get("prompt")))}</pre>',
                     f'<pre>{esc(cut(ex.get("expected")))}</pre>' if ex.get("expected")
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
            ["after"] if not folder.labelled else
            [f"after: {esc(r.label)}" for r in folder.runs] if side else ["after, run by run"])
        blocks.append(f'<details open><summary>{esc(key)} <span class="dim">'
                      f'{esc(b.get("kind"))}</span></summary>{table(head, rows, "examples")}'
                      f'</details>')
    body = "".join(blocks) or note("no examples recorded")
    return section("examples", "Examples: the model's answers before and after", body)


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
                rows = [[f'<pre>{esc(cut(x.get("prompt")))}</pre>',
                         f'<pre>{esc(cut(x.get("expected")))}</pre>',
                         f'<pre>{esc(cut(x.get("before")))}</pre>',
                         f'<pre>{esc(cut(x.get("after")))}</pre>'] for x in listed]
                label = f"{esc(r.label)}: " if folder.labelled else ""
                items = table(["prompt", "expected", "before", "after"], rows, "examples")
                blocks.append(f'<details><summary>{label}{esc(c["key"])}: {p.get(kind)} item(s) '
                              f'{kind}</summary>{items}</details>')
    body = "".join(blocks) or note("no item changed (or the results keep no per-item outcomes)")
    return section("items", "Items lost and gained (paired, the same items before and after)",
                   body)


def section_config(folder: Folder) -> str:
    blocks = []
    for r in folder.runs + folder.failed:
        text = r.config_text or json.dumps(r.results.get("config") or {}, indent=2,
                                           ensure_ascii=False)
        blocks.append(f"<details><summary>{esc(r.label)}: {esc(CONFIG_FILE)}</summary>"
                      f"<pre>{esc(text)}</pre></details>")
    return section("config", "Configuration", "".join(blocks))
