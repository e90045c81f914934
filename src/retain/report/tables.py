"""Terminal tables (rich) rendered from probe results and from a run's results.json."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from retain.metrics.forgetting import retention
from retain.metrics.verdicts import changed, verdicts

console = Console()


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _arrow(higher_is_better: bool) -> str:
    return "↑" if higher_is_better else "↓"


def print_results(results: Iterable, title: str = "probe results") -> None:
    """One row per probe result: value, 95% CI, n."""
    table = Table(title=title)
    for col in ("probe", "metric", "value", "95% CI", "n"):
        table.add_column(col, justify="right" if col in ("value", "95% CI", "n") else "left")
    for r in results:
        table.add_row(r.probe, f"{r.metric} {_arrow(r.higher_is_better)}", _fmt(r.value),
                      f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]", str(r.n))
    console.print(table)


def _delta_style(delta: float, higher_is_better: bool, threshold: float = 0.05) -> str:
    good = delta > 0 if higher_is_better else delta < 0
    if abs(delta) < threshold:
        return ""
    return "green" if good else "red"


# Metric names in a column header, at most 5 characters (the arrow takes the 6th).
_SHORT = {"accuracy": "acc", "refusal_rate": "ref", "over_refusal_rate": "o-ref",
          "ce_nats_per_token": "ce", "cloze_accuracy": "cloze"}
HEADER_WIDTH = 6  # a score ("0.98", "13.64") fits; nine columns and a label fit in 80


def unique_abbrev(names: Sequence[str], width: int) -> list[str]:
    """Each name in at most ``width`` characters, no two alike: a name that fits stays whole;
    a longer one is cut, "…" marking the cut, to the first of "head…", then "hea…l", "he…il"...
    that matches no other name (a name matches when it starts with the head and ends with the
    tail), so every abbreviation points at one name only. A name with no such form (names
    that differ only in the middle, at a tiny width) stays whole rather than become ambiguous."""
    width = max(2, width)
    out = []
    for name in names:
        others = [n for n in names if n != name]
        short = name
        for k in range(width - 1, -1, -1) if len(name) > width else ():
            head, tail = name[:k], name[len(name) - (width - 1 - k):] if width - 1 - k else ""
            if not any(o.startswith(head) and o.endswith(tail) and len(o) >= k + len(tail)
                       for o in others):
                short = f"{head}…{tail}"
                break
        out.append(short)
    return out


def _grid(title: str, corner: str, row_labels: list[str], headers: list[str],
          cells: list[list[str]], bold_first: bool = False) -> Table:
    """A table of row labels (never cut) and right-aligned columns of scores, one space apart.
    Labels and headers are names (a "[" in one is text, not markup); cells may hold markup."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    table.add_column(corner, no_wrap=True)
    for h in headers:
        table.add_column(Text(h), justify="right", no_wrap=True)
    for i, (label, row) in enumerate(zip(row_labels, cells)):
        table.add_row(Text(label), *row, style="bold" if bold_first and i == 0 else None)
    return table


def _width(table: Table) -> int:
    return Measurement.get(console, console.options.update(width=10_000), table).maximum


def comparison_tables(rows: list[dict[str, Any]], strategies: list[str], title: str,
                      width: int) -> tuple[list[Table], dict[str, str]]:
    """The comparison as tables no wider than ``width``, and the abbreviations used (short ->
    full name). Strategies in rows, one column per probe metric, headed by the probe and the
    metric, each cut to a unique abbreviation; when that is too wide, the transpose (probe
    metrics in rows, strategies as columns) if it fits, else the columns split over tables."""
    probes = list(dict.fromkeys(r["probe"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    p_short = dict(zip(probes, unique_abbrev(probes, HEADER_WIDTH)))
    m_short = dict(zip(metrics, unique_abbrev(
        [_SHORT.get(m, m) for m in metrics], HEADER_WIDTH - 1)))
    legend = {p_short[p]: p for p in probes if p_short[p] != p}
    legend.update({m_short[m]: m for m in metrics if m_short[m] != m})
    heads = [f"{p_short[r['probe']]}\n{m_short[r['metric']]}{_arrow(r['higher_is_better'])}"
             for r in rows]
    labels = ["before", *strategies]
    # grid[i][j]: row label i ("before", then each strategy), probe metric j
    grid = [[_fmt(r["before"], 2) for r in rows]]
    for s in strategies:
        line = []
        for r in rows:
            after = r["after"].get(s)
            style = "" if after is None else _delta_style(after - r["before"],
                                                          r["higher_is_better"])
            text = _fmt(after, 2)
            line.append(f"[{style}]{text}[/{style}]" if style else text)
        grid.append(line)
    table = _grid(title, "strategy", labels, heads, grid, bold_first=True)
    if _width(table) <= width:
        return [table], legend
    keys = [f"{r['probe']}.{r['metric']} {_arrow(r['higher_is_better'])}" for r in rows]
    for w in range(max(map(len, labels)), HEADER_WIDTH - 1, -1):  # the widest headers that fit
        s_short = unique_abbrev(labels, w)
        turned = _grid(title, "probe.metric", keys, s_short, [list(col) for col in zip(*grid)])
        if _width(turned) <= width:  # its rows name the probe metrics in full
            return [turned], {a: s for a, s in zip(s_short, labels) if a != s}
    tables, start = [], 0
    while start < len(rows):  # as many columns per table as fit, at least one
        stop = start + 1
        while stop < len(rows) and _width(_grid("", "strategy", labels, heads[start:stop + 1],
                                                [g[start:stop + 1] for g in grid])) <= width:
            stop += 1
        tables.append(_grid(title if not tables else "", "strategy", labels, heads[start:stop],
                            [g[start:stop] for g in grid], bold_first=True))
        start = stop
    return tables, legend


def print_comparison(rows: list[dict[str, Any]], strategies: list[str], title: str) -> None:
    """The score of each probe metric after each strategy (and before), red where it lost more
    than 0.05, green where it gained, laid out to fit the terminal (``comparison_tables``); then
    the abbreviations used. rows: dicts with probe, metric, higher_is_better, before, and
    ``after[strategy]``."""
    tables, legend = comparison_tables(rows, strategies, title, console.width)
    for table in tables:
        console.print(table)
    if legend:
        console.print("shortened: " + ", ".join(f"{a} = {full}" for a, full in legend.items()),
                      markup=False, highlight=False)


def paired_cell(paired: dict | None) -> str:
    """The paired test in a few characters: "p=0.003 -5/+1" (McNemar: items lost/gained) or
    "[-0.12, -0.03]" (the bootstrap interval of the change); "-" when the items do not pair."""
    if not paired:
        return "-"
    if paired["test"] == "mcnemar_exact":
        return f"p={paired['p']:.3f} -{paired['lost']}/+{paired['gained']}"
    lo, hi = paired["ci"]
    return f"[{lo:+.3f}, {hi:+.3f}]"


RETENTION_WORDS = ("retention: the share of a score kept (after / before); of a cross-entropy "
                   "or KL, its change in nats per token (+: worse)")


def _in_nats(row: dict[str, Any]) -> bool:
    return "nats" in str(row.get("metric", "")) or row.get("kind") in ("perplexity", "kl_to_base")


def retention_cell(row: dict[str, Any]) -> str:
    """The retention column (``RETENTION_WORDS``): "0.80" for a proportion, "-" where it is
    undefined; "+0.97 nats" for a quantity in nats, whose stored retention, exp(before - after),
    runs into the thousands when the new domain is learnt and says nothing at a glance."""
    before, after = row.get("before"), row.get("after")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (before, after)):
        return "-"
    if _in_nats(row):
        return f"{after - before:+.2f} nats"
    ret = row.get("retention", retention(before, after, bool(row.get("higher_is_better", True)),
                                         str(row.get("metric", ""))))
    return "-" if ret is None else f"{ret:.2f}"


def print_run(results: dict[str, Any]) -> None:
    """A run's results.json as a table: each probe before, after, delta (coloured only where the
    paired test says it changed), the paired test, retention; then one sentence on what it
    learnt, lost, gained and kept (``metrics.verdicts.verdict``), the items lost, weight drift and
    training facts."""
    table = Table(title=f"retain run: {results.get('strategy', '?')} on {results['model']['name']}")
    for col in ("probe.metric", "before", "after", "delta", "paired test", "retention", "n"):
        table.add_column(col, justify="left" if col == "probe.metric" else "right")
    rows = sorted(results["comparison"], key=lambda c: c.get("capability") == "domain")
    for c in rows:
        style = _delta_style(c["delta"], c["higher_is_better"], threshold=0.0) if changed(c) else ""
        delta = f"{c['delta']:+.3f}"
        table.add_row(f"{c['probe']}.{c['metric']} {_arrow(c['higher_is_better'])}"
                      + (" (new domain)" if c.get("capability") == "domain" else ""),
                      _fmt(c["before"]), _fmt(c["after"]),
                      f"[{style}]{delta}[/{style}]" if style else delta,
                      paired_cell(c.get("paired")),
                      retention_cell(c), str(c.get("n", "")))
    console.print(table)
    console.print(RETENTION_WORDS, markup=False, highlight=False, style="dim")
    label = str(results.get("strategy", "?"))
    console.print(f"{label}: {verdicts([label], [results])[label]}", markup=False, highlight=False)
    for c in rows:
        p = c.get("paired") or {}
        if c.get("capability") != "domain" and p.get("lost_items") and p.get("changed"):
            first = p["lost_items"][0]
            console.print(f"{c['key']}: {p['lost']} item(s) lost, e.g. {first['prompt']!r}: "
                          f"{first['before']!r} -> {first['after']!r}", markup=False,
                          highlight=False)
    drift = results.get("drift", {}).get("overall", {})
    train = results.get("training")
    facts = (f"trainable params {results['model'].get('trainable_params', 0):,} of "
             f"{results['model'].get('params', 0):,}; {train.get('steps')} steps, "
             f"{train.get('tokens_seen', 0):,} tokens, {train.get('tokens_per_s', 0):,.0f} "
             f"tokens/s; " if train else f"{results['model'].get('params', 0):,} params; ")
    console.print(f"{facts}weight drift relative L2 {drift.get('relative_l2', float('nan')):.4f}"
                  + (f"; wall {results['wall_s']:.0f} s" if "wall_s" in results else ""))
    if results.get("guard"):
        console.print(guard_summary(results["guard"]), markup=False, highlight=False)


def guard_summary(g: dict) -> str:
    """The guard's record in a few lines: each event (evidence included), the weights the run
    ends with, and a weak final check said as such."""
    from retain.guard import event_text

    lines = [f"guard: {event_text(e)}" for e in g.get("events") or [] if isinstance(e, dict)]
    back = g.get("rolled_back_to_step")
    lines.append(f"guard: the run ends with the weights of step {back}" if back is not None
                 else "guard: the run ends with its trained weights")
    if g.get("weak_verdict"):
        lines.append(f"guard: the final check scored {g.get('final_n')} items per probe: a weak "
                     f"verdict; set guard.verify_n for a larger one")
    return "\n".join(lines)
