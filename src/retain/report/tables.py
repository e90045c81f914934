"""Terminal tables (rich) rendered from probe results and from a run's results.json."""

from __future__ import annotations

from typing import Any, Iterable

from rich import box
from rich.console import Console
from rich.table import Table

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


_SHORT = {"accuracy": "acc", "refusal_rate": "refus", "over_refusal_rate": "overref",
          "ce_nats_per_token": "ce"}


def print_comparison(rows: list[dict[str, Any]], strategies: list[str], title: str) -> None:
    """One row per strategy (and a first row "before"), one column per probe metric; each cell
    is the score after training, red where it lost more than 0.05, green where it gained.
    rows: dicts with probe, metric, higher_is_better, before, and ``after[strategy]``."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("strategy", no_wrap=True)
    for row in rows:
        name = row["probe"][:5] if row["metric"] == "accuracy" else \
            f"{row['probe'][:5]}\n{_SHORT.get(row['metric'], row['metric'])}"
        table.add_column(f"{name}{_arrow(row['higher_is_better'])}", justify="right",
                         min_width=5, no_wrap=True)
    table.add_row("before", *[_fmt(row["before"], 2) for row in rows], style="bold")
    for s in strategies:
        cells = []
        for row in rows:
            after = row["after"].get(s)
            if after is None:
                cells.append("-")
                continue
            style = _delta_style(after - row["before"], row["higher_is_better"])
            cells.append(f"[{style}]{after:.2f}[/{style}]" if style else f"{after:.2f}")
        table.add_row(s, *cells)
    console.print(table)


def paired_cell(paired: dict | None) -> str:
    """The paired test in a few characters: "p=0.003 -5/+1" (McNemar: items lost/gained) or
    "[-0.12, -0.03]" (the bootstrap interval of the change); "-" when the items do not pair."""
    if not paired:
        return "-"
    if paired["test"] == "mcnemar_exact":
        return f"p={paired['p']:.3f} -{paired['lost']}/+{paired['gained']}"
    lo, hi = paired["ci"]
    return f"[{lo:+.3f}, {hi:+.3f}]"


def changed(row: dict[str, Any]) -> bool:
    """Whether a comparison row changed: by its paired test where it has one, else by more than
    0.05 (older results without per-item outcomes)."""
    p = row.get("paired")
    return bool(p["changed"]) if p else abs(row["delta"]) >= 0.05


def print_run(results: dict[str, Any]) -> None:
    """A run's results.json as a table: each probe before, after, delta (coloured only where the
    paired test says it changed), the paired test, retention; then the items lost, the new-domain
    gain, weight drift and training facts."""
    table = Table(title=f"retain run: {results.get('strategy', '?')} on {results['model']['name']}")
    for col in ("probe.metric", "before", "after", "delta", "paired test", "retention", "n"):
        table.add_column(col, justify="left" if col == "probe.metric" else "right")
    rows = sorted(results["comparison"], key=lambda c: c.get("capability") == "domain")
    for c in rows:
        style = _delta_style(c["delta"], c["higher_is_better"], threshold=0.0) if changed(c) else ""
        delta = f"{c['delta']:+.3f}"
        ret = c.get("retention")
        table.add_row(f"{c['probe']}.{c['metric']} {_arrow(c['higher_is_better'])}"
                      + (" (new domain)" if c.get("capability") == "domain" else ""),
                      _fmt(c["before"]), _fmt(c["after"]),
                      f"[{style}]{delta}[/{style}]" if style else delta,
                      paired_cell(c.get("paired")),
                      "-" if ret is None else f"{ret:.2f}", str(c.get("n", "")))
    console.print(table)
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
        g = results["guard"]
        for ev in g.get("events", []):
            console.print(f"[red]guard: step {ev['step']}: {ev['limit']} (value {ev['value']:.3f}) "
                          f"-> {ev['action']}[/red]")
        if g.get("rolled_back_to_step") is not None:
            console.print(f"guard: the run ends with the checkpoint of step {g['rolled_back_to_step']}")
