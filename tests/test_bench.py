"""make bench's plumbing: ratios per repetition, targets met or missed, the markdown report
(scaling section included), and one real section run end to end by bench.py (the Fisher, the
smallest) -- the benchmarks themselves are not run by the test suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_common import figure, summary  # noqa: E402
import results_md  # noqa: E402


def test_ratios_are_taken_per_repetition_and_targets_checked():
    # times: retain 1, 2, 4 s against 3, 4, 4 s -> speedups 3, 2, 1 (median 2)
    row = figure("t", "s", [1, 2, 4], [3, 4, 4], target=2.0)
    assert row["ratio"]["median"] == 2 and row["ratio"]["min"] == 1 and row["met"] is True
    assert figure("t", "s", [1, 2, 4], [3, 4, 4.5], target=2.5)["met"] is False
    # rates: an overhead of 10% on tokens/s (90 against 100) misses a 5% bound
    over = figure("o", "tokens/s", [90, 90, 90], [100, 100, 100], better="higher",
                  ratio="overhead", target=0.05)
    assert over["ratio"]["median"] == pytest.approx(1 / 0.9 - 1) and over["met"] is False
    assert figure("w", "s", [40, 44, 50], at_most=45)["met"] is True  # the median, 44
    assert summary([3, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3, "values": [3, 1, 2]}


def _report() -> dict:
    train = {"figures": [figure("training step, full fine-tuning", "tokens/s", [8000] * 3,
                                [7900] * 3, better="higher", baseline="Trainer", target=1.0,
                                target_text="at least as fast as Trainer")],
             "config": {"params": 3.3e6, "fisher_tokens": 6000}, "wall_s": 60}
    probes = {"figures": [{"name": "same choice", "check": True, "met": False,
                           "detail": "999/1000 items"}],
              "config": {"probe_pass": {"items": 700, "scored_tokens": 120000,
                                        "decode_steps": 600, "decode_rows": 20000,
                                        "seconds": 10.0}}, "wall_s": 30}
    return {"started": "2026-12-02 20:00 UTC", "quick": False, "reps": 3, "wall_s": 1500,
            "machine": {"cores": 2, "memory_gb": 24, "cpu": "cpu", "gpu": None,
                        "python": "3.11", "torch_threads": 2, "load_avg": [0.1, 0, 0]},
            "load_avg_end": [1.0, 0, 0], "versions": {"torch": "2.13.0"},
            "peer_versions": {"lm_eval": "0.4.13"},
            "sections": {"probes": probes, "train": train,
                         "merges": {"error": "boom", "wall_s": 1}}}


def test_markdown_lists_targets_sections_failures_and_scaling():
    md = results_md.render(_report())
    assert "| training step, full fine-tuning: at least as fast as Trainer | 1.01x" in md
    assert "**met**" in md and "| same choice | 999/1000 items | **missed** |" in md
    assert "The section failed" in md and "boom" in md
    scaling = md[md.index("## Scaling on paper"):]
    for size in ("0.5B", "7B", "70B"):
        assert size in scaling
    assert "rank 0" in scaling  # what does not scale with processes is said


def test_bench_runs_a_section_end_to_end(tmp_path):
    out = tmp_path / "R.md"
    res = subprocess.run([sys.executable, str(BENCH / "bench.py"), "--quick", "--only", "fisher",
                          "--reps", "1", "--no-peers", "--out", str(out), "--work",
                          str(tmp_path / "w")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    md = out.read_text()
    assert "## Fisher: retain's per-sample estimator vs a per-sample loop" in md
    assert "same values" in md and "**met**" in md
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["sections"]["fisher"]["figures"][0]["ours"]["n"] == 1


def test_bench_refuses_an_unknown_section(tmp_path):
    res = subprocess.run([sys.executable, str(BENCH / "bench.py"), "--only", "nope"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "unknown section 'nope'" in res.stderr
    assert "Traceback" not in res.stderr
