"""`retain demo` on a reduced setting: the comparison folder has every file and column, and each
entry's run folder is complete. (The full demo's numbers are in the README, not asserted here.)"""

import csv
import json

from retain import demo

SMALL = {"steps": 2, "probe_n": 4, "probes": ["math", "safety", "legal"], "progress": False,
         "batch_size": 2, "seq_len": 64}


def test_demo_writes_a_complete_comparison_folder(tmp_path):
    entries = [demo.DEMO[0], next(e for e in demo.DEMO if e.label.startswith("lora"))]
    summary = demo.run_demo(tmp_path, entries=entries, settings=SMALL)
    for name in ("summary.csv", "comparison.json", "capabilities.png", "tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["strategy", "probe", "metric", "before", "after", "delta",
                             "higher_is_better"]
    assert {r["strategy"] for r in rows} == {e.label for e in entries}
    keys = {(r["probe"], r["metric"]) for r in rows}
    assert ("safety", "refusal_rate") in keys and ("legal", "accuracy") in keys
    for e in entries:
        res = json.loads((tmp_path / demo.slug(e.label) / "results.json").read_text())
        assert res["status"] == "complete"
    # the before-probes are measured once and shared by every entry
    a, b = (json.loads((tmp_path / demo.slug(e.label) / "results.json").read_text())
            for e in entries)
    assert a["probes"]["before"] == b["probes"]["before"]
    info = json.loads((tmp_path / "comparison.json").read_text())
    assert set(info["tradeoff"]) == {e.label for e in entries}
    assert set(info["cliff"]) == {e.label for e in entries}
    assert summary["pareto_front"]


def test_demo_entries_are_valid_configs():
    from retain.config import parse_config

    labels = [e.label for e in demo.DEMO]
    assert len(labels) == len(set(labels))
    assert set(demo.QUICK_LABELS) <= set(labels)
    for e in demo.DEMO:
        parse_config({**demo.COMMON, "strategies": e.strategies, "lr": e.lr})
