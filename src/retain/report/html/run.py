"""The page of one finished run (``retain run``'s folder): the sentence on what it learnt, lost
and kept with the run's facts, then the sections every page of runs has, its capabilities as
one table (before and after with their intervals, the paired test, the retention) and its
guard's events.
"""

from __future__ import annotations

from retain.report.html import run_sections as rs
from retain.report.html.folder import Folder, Run
from retain.report.html.helpers import (
    arrow, change_class, ci, duration, esc, facts, note, num, section, table)
from retain.report.tables import RETENTION_WORDS, paired_cell, retention_cell


def run_facts(r: Run) -> list[tuple[str, str]]:
    """(name, HTML value) of the run: model, strategy, data, steps, rate, seed, time, drift..."""
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
        ("wall time", duration(res.get("wall_s")) +
         (f' <span class="dim">(training {duration(t.get("wall_s"))}, '
          f'{num(t.get("tokens_per_s"), 0)} tokens/s)</span>' if "wall_s" in t else "")),
        ("trainable params", num(trainable) + share),
        ("final training loss", num(t.get("final_loss"))),
        ("weight drift (relative L2)", num(drift, 4)),
        ("created", esc(res.get("created")) + f' <span class="dim">retain '
                                              f'{esc(res.get("retain_version"))}</span>'),
    ]


def section_summary(folder: Folder) -> str:
    """The verdict, the guard's headline when it changed the weights the run ends with, the
    facts."""
    head = rs.guard_headline(folder.runs[0].results.get("guard"))
    return section("summary", "Summary", rs.verdict_list(folder.runs, {}) +
                   (f'<p class="loss">{esc(head)}</p>' if head else "") +
                   facts(run_facts(folder.runs[0])))


def capability_rows(r: Run) -> list[list[str]]:
    """One row per probe metric, retained capabilities first, the new domain last."""
    rows = []
    comp = sorted(r.results.get("comparison", []), key=lambda c: c.get("capability") == "domain")
    for c in comp:
        cls = change_class(c)
        d = c.get("delta")
        rows.append([
            esc(c.get("capability")), f'{esc(c["probe"])}.{esc(c["metric"])} '
                                      f'{arrow(c.get("higher_is_better", True))}',
            num(c.get("n")), f'{num(c["before"])} {ci(c.get("before_ci"))}',
            f'{num(c["after"])} {ci(c.get("after_ci"))}',
            f'<span class="{cls}">{"+" if isinstance(d, (int, float)) and d > 0 else ""}'
            f'{num(d)}</span> {ci(c.get("delta_ci"))}', esc(paired_cell(c.get("paired"))),
            esc(retention_cell(c))])
    return rows


def section_capabilities(folder: Folder, figs: dict[str, bytes]) -> str:
    return rs.capabilities_section(
        table(["capability", "probe.metric", "n", "before [95% CI]", "after [95% CI]", "delta",
               "paired test", "retention"], capability_rows(folder.runs[0]), "caps")
        + note(RETENTION_WORDS), figs)


def section_guard(folder: Folder) -> str:
    g = folder.runs[0].results.get("guard")
    return section("guard", "Guard events", rs.guard_html(g)) if isinstance(g, dict) else ""


def sections(folder: Folder, figs: dict[str, bytes]) -> list[str]:
    """The page's sections in ``run_sections.SECTIONS`` order: the answer first (the sentence,
    the charts), the long tables after; those with nothing to show are left out."""
    return [s for s in (
        section_summary(folder), rs.section_tradeoff(folder, figs),
        rs.section_changes(folder, figs), section_capabilities(folder, figs),
        rs.section_strategies(folder), rs.section_training(folder, figs),
        rs.section_drift(folder, figs), section_guard(folder), rs.section_lost_items(folder),
        rs.section_examples(folder), rs.section_config(folder)) if s]


def title(folder: Folder) -> str:
    res = folder.runs[0].results
    return f'{res.get("strategy")} on {(res.get("model") or {}).get("name")}'
