"""The page of a comparison folder (``retain compare``, ``retain demo``, ``retain sweep``): one
sentence per strategy in the ranking's order and the runs at a glance, the ranking as
comparison.json holds it (written once by ``write_comparison``; nothing is ranked again here),
the capabilities as a grid of runs, and the sections every page of runs has.
"""

from __future__ import annotations

from typing import Any

from retain.metrics.verdicts import SCORE_WORDS
from retain.report.html import run_sections as rs
from retain.report.html.failed import failure_words
from retain.report.html.folder import Folder
from retain.report.html.helpers import (
    arrow, breakable, change_class, ci, duration, esc, note, num, section, table)


def section_summary(folder: Folder) -> str:
    """The sentences (ranked), the failed runs left out, and the runs folded in a table."""
    head = ["run", "model", "steps", "seed", "lr", "trainable params", "wall time",
            "final loss", "drift (rel. L2)", "folder"]
    rows = []
    for r in folder.runs:
        res, t = r.results, r.results.get("training") or {}
        drift = ((res.get("drift") or {}).get("overall") or {}).get("relative_l2")
        rows.append([esc(r.label), esc((res.get("model") or {}).get("name")), num(t.get("steps")),
                     esc(res.get("seed")), esc(t.get("lr")),
                     num((res.get("model") or {}).get("trainable_params")),
                     duration(res.get("wall_s")), num(t.get("final_loss")), num(drift, 4),
                     f"<code>{esc(r.dir.name)}/</code>"])
    title = folder.comparison.get("title")
    intro = f"<p>{esc(title)}</p>" if title else ""
    intro += "".join(f'<p class="loss">failed, left out of the comparison: <b>{esc(r.label)}</b> '
                     f'(<code>{esc(r.dir.name)}/</code>) {failure_words(r.results)}</p>'
                     for r in folder.failed)
    # a long list of runs would push the charts off the first screen: folded
    opened = " open" if len(folder.runs) <= rs.SIDE_BY_SIDE else ""
    runs = (f"<details{opened}><summary>{len(folder.runs)} runs: model, steps, seed, rate, "
            f"time, drift, folder</summary>{table(head, rows)}</details>")
    ranking = folder.comparison.get("ranking")
    return section("summary", "Summary", intro + rs.verdict_list(folder.runs, ranking) + runs)


def section_ranking(folder: Folder) -> str:
    """The comparison's ranking (comparison.json) and its rule: score with its interval over
    seeds, new-domain gain, retained score, whether each gap to the next is larger than the
    noise, the Pareto front and the cliff. Empty without a ranking."""
    rk = folder.comparison.get("ranking")
    if not isinstance(rk, dict) or not rk.get("order"):
        return ""

    def gap(vs: Any) -> str:
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
             ci(o.get("score_ci")), num(o.get("domain_gain")), num(o.get("retained")),
             esc(o.get("seeds")), gap(o.get("vs_next")), flags(o)]
            for o in rk["order"] if isinstance(o, dict)]
    rule = rk.get("rule") or f"score: {rk.get('score')} = {rk.get('definition', '')}."
    return section("ranking", "Ranking", note(f"{rule} {rk.get('noise', '')}") + table(
        ["rank", "strategy", "score", "95% CI", "new-domain gain", "retained", "seeds",
         "gap to the next", ""], rows))


def section_capabilities(folder: Folder, figs: dict[str, bytes]) -> str:
    """A grid of probe metrics by runs: with up to ``SIDE_BY_SIDE`` runs, a column per run;
    with more, a row per run (the probe metrics across)."""
    keys: dict[str, dict] = {}
    for r in folder.runs:
        for c in r.results.get("comparison", []):
            k = keys.setdefault(f'{c["probe"]}.{c["metric"]}', {"row": c, "by": {}})
            k["by"][r.label] = c
    # grid[0]: the header; one row per probe metric, one column per run (before first)
    side = len(folder.runs) <= rs.SIDE_BY_SIDE
    grid = [["probe.metric" if side else "run: after (delta)", "before [95% CI]"] +
            [f"{esc(r.label)}: after (delta)" if side else esc(r.label) for r in folder.runs]]
    for key, k in sorted(keys.items(), key=lambda kv: kv[1]["row"].get("capability") == "domain"):
        c0 = k["row"]
        cells = [f'{breakable(key)} {arrow(c0.get("higher_is_better", True))}',
                 f'{num(c0["before"])} {ci(c0.get("before_ci"))}']
        for r in folder.runs:
            c = k["by"].get(r.label)
            if c is None:
                cells.append("–")
                continue
            d = c.get("delta")
            cells.append(f'<span class="{change_class(c)}">{num(c["after"])} '
                         f'({"+" if isinstance(d, (int, float)) and d > 0 else ""}{num(d)})'
                         f'</span> {ci(c.get("after_ci"))}')
        grid.append(cells)
    if not side:  # many runs: one per row, the probe metrics across
        grid = [list(col) for col in zip(*grid)]
    return rs.capabilities_section(table(grid[0], grid[1:], "caps"), figs)


def section_guard(folder: Folder) -> str:
    guarded = [r for r in folder.runs if isinstance(r.results.get("guard"), dict)]
    if not guarded:
        return ""
    return section("guard", "Guard events", "".join(
        f"<h3>{esc(r.label)}</h3>{rs.guard_html(r.results['guard'])}" for r in guarded))


def sections(folder: Folder, figs: dict[str, bytes]) -> list[str]:
    """The page's sections in ``run_sections.SECTIONS`` order: the answer first (sentences,
    charts, ranking), the long tables after; those with nothing to show are left out."""
    return [s for s in (
        section_summary(folder), rs.section_tradeoff(folder, figs),
        rs.section_changes(folder, figs), section_ranking(folder),
        section_capabilities(folder, figs), rs.section_strategies(folder),
        rs.section_training(folder, figs), rs.section_drift(folder, figs),
        section_guard(folder), rs.section_lost_items(folder), rs.section_examples(folder),
        rs.section_config(folder)) if s]


def title(folder: Folder) -> str:
    return str(folder.comparison.get("title") or f"{len(folder.runs)} runs compared")
