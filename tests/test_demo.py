"""`retain demo` on a reduced setting: the comparison folder has every file and column, and each
entry's run folder is complete. (The full demo's numbers are in the README, not asserted here.)
The demo is the shipped compare file ``demo.yaml``, run by ``retain.experiments.compare``."""

import csv
import json
import re
from pathlib import Path

import retain
from retain.experiments import compare, demo, runner

SMALL = {"steps": 2, "probe_n": 4, "probes": ["math", "safety", "legal"], "progress": False,
         "batch_size": 2, "seq_len": 64}
QUICK_LABELS = {"full lr=1e-3", "full lr=1e-4", "lora r=8", "replay 25%"}
SRC = Path(retain.__file__).parent


def _planned(data, out):
    f = compare.compare_data(data)
    return runner.plan(f["base"], runner.read_entries(f["extra"]["runs"]), f["seeds"], out)


def test_demo_writes_a_complete_comparison_folder(tmp_path):
    labels = ["full lr=1e-3", "lora r=8"]
    summary = demo.run_demo(tmp_path, labels=labels, settings=SMALL)
    for name in ("summary.csv", "comparison.json", "capabilities.png", "tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["strategy", "probe", "metric", "before", "after", "delta",
                             "higher_is_better"]
    assert {r["strategy"] for r in rows} == set(labels)
    keys = {(r["probe"], r["metric"]) for r in rows}
    assert ("safety", "refusal_rate") in keys and ("legal", "accuracy") in keys
    dirs = [tmp_path / f"{runner.slug(label)}-seed0" for label in labels]  # compare's names
    assert [d.name for d in dirs] == ["full-lr-1e-3-seed0", "lora-r-8-seed0"]
    a, b = (json.loads((d / "results.json").read_text()) for d in dirs)
    assert a["status"] == b["status"] == "complete"
    # the before-probes are measured once and shared by every entry
    assert a["probes"]["before"] == b["probes"]["before"]
    info = json.loads((tmp_path / "comparison.json").read_text())
    assert info["title"] == "retain demo: tiny model, legal domain"
    assert info["quick"] is False and info["wall_s"] >= 0
    assert set(info["tradeoff"]) == set(labels)
    assert set(info["cliff"]) == set(labels)
    assert summary["pareto_front"]


def test_shipped_demo_file_plans_twelve_runs_and_a_quick_four(tmp_path):
    full = _planned(demo.demo_data(), tmp_path)
    assert len(full) == 12 and len({p.label for p in full}) == 12
    assert {(p.config.steps, p.config.probe_n, p.config.model) for p in full} == {(100, 60, "tiny")}
    quick = _planned(demo.demo_data(quick=True), tmp_path)
    assert {p.label for p in quick} == QUICK_LABELS and len(quick) == 4
    assert {(p.config.steps, p.config.probe_n) for p in quick} == {(40, 24)}
    assert [p.label for p in quick] == [p.label for p in full if p.label in QUICK_LABELS]


def test_shipped_demo_file_is_a_plain_compare_file(tmp_path):
    """`retain compare demo.yaml` plans the same twelve runs (its ``quick:`` key ignored)."""
    f = compare.load_compare_file(demo.DEMO_FILE)
    assert f["title"] == "retain demo: tiny model, legal domain" and str(f["out"]) == "runs/demo"
    planned = compare.run_compare(demo.DEMO_FILE, out=tmp_path, listing=True)
    assert planned == {}
    assert [p.config for p in _planned(demo.demo_data(), tmp_path)] == \
        [p.config for p in _planned(f["base"] | f["extra"], tmp_path)]


def test_nothing_in_experiments_imports_the_demo():
    """The demo runs the comparison runner, never the other way round (no import circle): of
    retain's modules only the command line imports ``retain.experiments.demo``."""
    pattern = re.compile(r"^\s*(from\s+retain\.experiments\.demo\s+import|import\s+retain\."
                         r"experiments\.demo\b(?!_)|from\s+retain\.experiments\s+import\s+"
                         r"(\(\s*)?([\w\s,]*,\s*)?demo\b(?!_)|from\s+\.demo\s+import)", re.M)
    importers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                       if pattern.search(p.read_text(encoding="utf-8")))
    assert importers == ["cli.py"]


def test_slug_is_defined_once():
    defs = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
            if re.search(r"^\s*def slug\(", p.read_text(encoding="utf-8"), re.M)]
    assert defs == ["experiments/runner.py"]
