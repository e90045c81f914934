"""The README's demo figures are the demo's own: its table is generated from the summary the demo
wrote (``docs/demo_summary.csv``), and a fresh quick demo reproduces its recorded summary
(``docs/demo_quick_summary.csv``), so a change that moves the demo's numbers fails here until
both summaries and the README are regenerated (see ``retain.report.demo_table``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from retain.report.demo_table import demo_table, read_summary, readme_block, replace_block

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_readme_demo_table_is_generated_from_the_demo_summary():
    table = demo_table(read_summary(DOCS / "demo_summary.csv"))
    assert readme_block((ROOT / "README.md").read_text(encoding="utf-8")) == table
    assert table.count("\n") == 1 + 1 + 12  # header, rule, before, twelve strategies


def test_demo_table_layout():
    rows = [{"strategy": "a", "probe": "math", "metric": "accuracy", "before": "0.5",
             "after": "0.25"}]
    table = demo_table(rows)
    assert table.splitlines()[2].startswith("| before | 0.50 | - |")
    assert table.splitlines()[3].startswith("| a | 0.25 | - |")
    text = "x\n<!-- demo-table:start -->\nold\n<!-- demo-table:end -->\ny"
    assert readme_block(replace_block(text, table)) == table


def _close(a: str, b: str, metric: str) -> bool:
    x, y = float(a), float(b)
    if metric.startswith("ce") or "nats" in metric:  # cross-entropy: 2% of the value
        return math.isclose(x, y, rel_tol=0.02, abs_tol=0.02)
    return abs(x - y) <= 1 / 24 + 1e-9  # a proportion on 24 items: one item


@pytest.mark.timeout(900)
def test_a_fresh_quick_demo_reproduces_its_recorded_summary(tmp_path):
    from retain.experiments import demo

    demo.run_demo(tmp_path / "quick", quick=True, settings={"progress": False})
    fresh = {(r["strategy"], r["probe"], r["metric"]): r
             for r in read_summary(tmp_path / "quick" / "summary.csv")}
    recorded = {(r["strategy"], r["probe"], r["metric"]): r
                for r in read_summary(DOCS / "demo_quick_summary.csv")}
    assert set(fresh) == set(recorded)
    off = [(k, col, recorded[k][col], fresh[k][col]) for k in recorded for col in ("before", "after")
           if not _close(recorded[k][col], fresh[k][col], k[2])]
    assert not off, off
