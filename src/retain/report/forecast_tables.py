"""A forecast (forecast.json) and its check (check.json) as terminal tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_forecast(fc: dict[str, Any]) -> None:
    """Per capability: now, predicted at the planned steps, the 80% interval, the law; the
    limits; the verdict; the items most likely lost."""
    plan = fc["plan"]
    table = Table(title=f"retain forecast: {'+'.join(plan['strategies'])} lr {plan['lr']:g}, "
                        f"{plan['steps']} steps on {plan['data']}")
    for col in ("probe.metric", "now", f"at step {plan['steps']}", "80% interval", "law",
                "fitted on"):
        table.add_column(col, justify="left" if col == "probe.metric" else "right")
    for c in fc["capabilities"]:
        law = c["law"]
        table.add_row(c["key"] + (" (new domain)" if c["capability"] == "domain" else ""),
                      _f(c["now"]), _f(c["predicted"]),
                      f"{_f(c['interval'][0])}-{_f(c['interval'][1])}" if c["interval"] else "-",
                      f"a={law['alpha']:.2f} b={law.get('beta', law['alpha']):.2f}" if law else "no fit",
                      c["fitted_on"])
    console.print(table)
    for lim in fc["limit_checks"]:
        when = (f"crossed at step {lim['crossed_at_step']}" if lim["crossed_at_step"]
                else "not crossed")
        console.print(f"  limit {lim['limit']}: {'kept' if lim['kept'] else 'NOT kept'} "
                      f"({when})", markup=False)
    console.print(f"verdict: {fc['verdict']['text']}", markup=False)
    for key, it in fc["items"].items():
        if it["predicted_lost"]:
            console.print(f"  {key}: {it['predicted_lost']} of {it['scored']} items predicted "
                          f"lost; most at risk:", markup=False)
            for t in it["top"][:min(5, it["predicted_lost"])]:
                console.print(f"    #{t['index']}: {t['prompt'][:90]!r}", markup=False)
    pilots = ", ".join(f"{p['steps']} steps at lr {p['lr']:g}" for p in fc["pilots"])
    console.print(f"pilots: {pilots}; {fc['pilot_wall_s']:.0f} s, and {fc['base_probe_s']:.0f} s "
                  f"probing the base", markup=False)


def print_check(ch: dict[str, Any]) -> None:
    table = Table(title="retain forecast --check")
    for col in ("probe.metric", "predicted", "actual", "error", "in 80% interval"):
        table.add_column(col, justify="left" if col == "probe.metric" else "right")
    for r in ch["capabilities"]:
        table.add_row(r["key"], _f(r["predicted"]), _f(r["actual"]), f"{r['error']:+.3f}",
                      "yes" if r["covered"] else "no")
    console.print(table)
    console.print(f"mean absolute error {_f(ch['mean_abs_error'])}, coverage "
                  f"{_f(ch['coverage'], 2)}", markup=False)
    for r in ch["items"]:
        console.print(f"  items {r['key']}: {r['lost']} lost, {r['predicted_lost']} predicted; "
                      f"AUROC {_f(r['auroc'], 2)}, precision {_f(r['precision'], 2)}, recall "
                      f"{_f(r['recall'], 2)}", markup=False)
