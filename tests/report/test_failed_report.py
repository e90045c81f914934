"""`retain report` on a run that failed (results.json "status": "failed"): the page says where
and why it failed with the metrics logged so far, a comparison shows its finished runs and names
the failed one, and a report that fails half-way leaves no file behind (no page, no figure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retain.report import html as rh
from retain.report import results as rr

from report_fixtures import PLANTED, make_run

fast = pytest.mark.usefixtures("fast_figures")


def make_failed_run(d: Path, *, reason: str = "non-finite gradient norm (nan); the weights are "
                    "those of step 1", train_records: bool = True) -> Path:
    """A run folder as run.py leaves it when training fails at step 2: config.yaml,
    metrics.jsonl (the before-probes and the steps logged so far), results.json "failed"."""
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"model": "tiny", "data": "builtin:legal", "strategies": [{"name": "full"}],
           "lr": 1e4, "steps": 4, "seed": 0, "note": PLANTED}
    (d / rr.CONFIG_FILE).write_text("model: tiny\nlr: 10000.0\nsteps: 4\n")
    recs = [{"event": "probe", "stage": "before", "step": 0,
             "results": {"math.accuracy": 0.99, "writing.ce_nats_per_token": 0.3612,
                         "legal.ce_nats_per_token": 8.139}}]
    if train_records:
        recs.append({"event": "train", "step": 1, "loss": 3.25, "lm_loss": 3.25, "penalty": 0.0,
                     "lr": 1e4, "grad_norm": 41.5, "tokens_seen": 3072})
    with open(d / rr.METRICS_FILE, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    rr.write_json_atomic(d / rr.RESULTS_FILE, {
        **rr.header("failed", 0, cfg),
        "failure": {"step": 2, "stage": "train", "reason": reason + " " + PLANTED,
                    "last_checkpoint": None}})
    return d


@fast
def test_report_of_a_failed_run_renders_the_failure(tmp_path: Path):
    d = make_failed_run(tmp_path / "nan")
    page = rh.build_report(d).read_text()
    assert "failed" in page and "at step 2" in page and "stage train" in page
    assert "non-finite gradient norm (nan)" in page
    assert PLANTED not in page  # the reason is untrusted text too
    # the metrics so far: the before-probes and the last logged training step
    assert "math.accuracy" in page and "0.990" in page and "8.139" in page
    assert "3.250" in page  # the loss at step 1
    assert "no checkpoint" in page
    assert (d / "figures" / "probes.png").is_file()
    # nothing that needs an after-probe: no trade-off, no heatmap, no capability table
    assert not (d / "figures" / "tradeoff.png").exists()
    assert not (d / "figures" / "deltas.png").exists()


@fast
def test_report_of_a_failed_run_without_metrics(tmp_path: Path):
    d = make_failed_run(tmp_path / "nan", train_records=False)
    (d / rr.METRICS_FILE).unlink()
    page = rh.build_report(d).read_text()
    assert "at step 2" in page and "no metrics" in page


@fast
def test_comparison_with_a_failed_run(tmp_path: Path):
    c = tmp_path / "cmp"
    make_run(c / "lora", "lora")
    make_run(c / "full", "full")
    make_failed_run(c / "full-lr-1e4")
    (c / "comparison.json").write_text(json.dumps({"title": "t", "runs": [
        {"strategy": "lora", "dir": "lora"}, {"strategy": "full", "dir": "full"},
        {"strategy": "full lr=1e4", "dir": "full-lr-1e4"}]}))
    page = rh.build_report(c).read_text()
    assert "full lr=1e4" in page and "at step 2" in page
    assert (c / "figures" / "tradeoff.png").is_file()  # the finished runs still compared


def test_a_report_that_fails_leaves_no_figure(tmp_path: Path, monkeypatch):
    """A chart drawn before the failure is not left behind (the old code wrote figures/
    probes.png, then crashed)."""
    d = make_run(tmp_path / "r")

    def boom(*a, **k):
        raise RuntimeError("chart failed")

    monkeypatch.setattr("retain.report.plots.plot_tradeoff", boom)
    with pytest.raises(RuntimeError):
        rh.build_report(d)
    assert not (d / "report.html").exists()
    assert not (d / "figures").exists() or list((d / "figures").iterdir()) == []
    assert [p.name for p in d.iterdir() if p.name.startswith(".")] == []


def test_cli_report_of_a_failed_run(tmp_path: Path):
    d = make_failed_run(tmp_path / "nan")
    r = subprocess.run([sys.executable, "-m", "retain.cli", "report", str(d)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and (d / "report.html").is_file()


@fast
def test_comparison_whose_runs_all_failed(tmp_path: Path):
    c = tmp_path / "cmp"
    make_failed_run(c / "a")
    make_failed_run(c / "b", reason="CUDA out of memory")
    (c / "comparison.json").write_text("{}")
    page = rh.build_report(c).read_text()
    assert "2 runs, all failed" in page and "CUDA out of memory" in page
    assert page.count("at step 2") >= 2
