"""The retention of a cross-entropy probe, as a reader sees it: results.json stores
exp(before - after) (a ratio of per-token probabilities, 4000-odd when the new domain is learnt);
the terminal table and the HTML report show the change in nats per token instead, with what the
column means stated, and the share kept for proportions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

from retain.metrics.forgetting import compare, retention
from retain.probes.base import ProbeResult
from retain.report import html as rh
from retain.report import tables

from report_fixtures import make_run


def _results() -> dict:
    """A run's results as run.py builds them: math kept at 0.8/0.9, writing's cross-entropy up
    0.97 nats, the new domain's down 8.35 nats (its stored retention exp(8.35) = 4230)."""
    def pr(probe, metric, value, hib, cap, kind):
        return ProbeResult(probe=probe, metric=metric, value=value, n=40, ci_low=value - 0.1,
                           ci_high=value + 0.1, higher_is_better=hib, capability=cap, kind=kind)

    before = [pr("math", "accuracy", 0.9, True, "math", "generation"),
              pr("writing", "ce_nats_per_token", 0.36, False, "writing", "perplexity"),
              pr("legal", "ce_nats_per_token", 8.46, False, "domain", "perplexity")]
    after = [pr("math", "accuracy", 0.72, True, "math", "generation"),
             pr("writing", "ce_nats_per_token", 1.33, False, "writing", "perplexity"),
             pr("legal", "ce_nats_per_token", 0.11, False, "domain", "perplexity")]
    comparison = compare(before, after)
    assert comparison[2]["retention"] == pytest.approx(math.exp(8.35))  # what is stored
    return {"strategy": "full", "model": {"name": "tiny", "params": 10, "trainable_params": 10},
            "comparison": comparison, "seed": 0}


def test_retention_cell():
    rows = _results()["comparison"]
    assert [tables.retention_cell(r) for r in rows] == ["0.80", "+0.97 nats", "-8.35 nats"]
    assert tables.retention_cell({"metric": "accuracy", "before": 0.0, "after": 0.5,
                                  "higher_is_better": True, "retention": None}) == "-"
    # rows written before retention was stored: computed from before/after
    assert tables.retention_cell({"metric": "over_refusal_rate", "before": 0.2, "after": 0.6,
                                  "higher_is_better": False}) == "0.50"
    assert retention(0.2, 0.6, False, "over_refusal_rate") == pytest.approx(0.5)


def test_terminal_shows_nats_not_an_exponential(monkeypatch):
    console = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(tables, "console", console)
    tables.print_run(_results())
    text = console.export_text()
    assert "4230" not in text and "4296" not in text
    assert "-8.35 nats" in text and "+0.97 nats" in text and "0.80" in text
    assert "retention: the share of a score kept" in " ".join(text.split())
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.usefixtures("fast_figures")
def test_html_run_table_shows_the_same(tmp_path: Path):
    from retain.report import results as rr

    d = make_run(tmp_path / "r", "full")
    res = rr.read_results(d)
    res["comparison"] = _results()["comparison"]
    rr.write_json_atomic(d / rr.RESULTS_FILE, res)
    page = rh.build_report(d).read_text()
    caps = page[page.index('<section id="capabilities">'):page.index('<section id="strategies">')]
    assert "<th>retention</th>" in caps
    assert "-8.35 nats" in caps and "+0.97 nats" in caps and "0.80" in caps
    assert "4230" not in caps and "share of a score kept" in caps
