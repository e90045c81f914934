"""`retain sequence`: the reservoir memory, the task list and its mistakes, the matrices and scores
on planted results, and a real 3-task sequence on the built-in model (legal -> support -> a
user's JSONL task with its held-out split) under every strategy that carries across tasks, then
an interrupted sequence that continues from the task it stopped at."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from retain.errors import UserError
from retain.experiments import sequence as seq
from retain.experiments.sequence_metrics import aggregate, primary_metric, rank, summarize
from retain.metrics.continual import bwt, fwt


# -- the memory ------------------------------------------------------------------------------------

def test_reservoir_keeps_size_items_uniformly_and_deterministically():
    stream = list(range(1000))
    a = seq.reservoir(stream, 50, random.Random("s"))
    assert len(a) == 50 == len(set(a)) and a == seq.reservoir(stream, 50, random.Random("s"))
    assert a != seq.reservoir(stream, 50, random.Random("t"))
    assert seq.reservoir(stream[:10], 50, random.Random(0)) == stream[:10]  # short: all of it
    # uniform: over many draws each half of the stream is kept about equally often
    late = sum(x >= 500 for s in range(200) for x in seq.reservoir(stream, 50, random.Random(s)))
    assert 0.45 < late / (200 * 50) < 0.55


# -- the task list -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tasks,match", [
    (["builtin:legal"], "at least two tasks"),
    (["builtin:legal", "builtin:nope"], "unknown built-in domain"),
    (["builtin:legal", "builtin:legal"], "used twice"),
    (["builtin:legal", {"data": "builtin:support", "color": 1}], "unknown key 'color'"),
    (["builtin:legal", {"name": "a b", "data": "builtin:support"}], "must be a word"),
    (["builtin:legal", "missing.jsonl"], "does not exist"),
])
def test_task_mistakes_are_one_line_errors(tmp_path, tasks, match):
    with pytest.raises(UserError, match=match):
        seq.read_tasks(tasks, tmp_path, 0.1, 200)


def test_a_jsonl_task_is_split_once_into_training_and_held_out_files(tmp_path):
    data = tmp_path / "notes.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n"
                            for i in range(40)))
    legal, notes = seq.read_tasks(["builtin:legal", str(data)], tmp_path / "out", 0.25, 200)
    assert legal.suites == ("legal",) and notes.name == "notes"
    train = Path(notes.data).read_text().splitlines()
    held = Path(notes.heldout).read_text().splitlines()
    assert len(held) == 10 and len(train) == 30 and not set(train) & set(held)
    assert Path(notes.heldout).name == "notes.jsonl"  # the probe is named after the task


# -- the numbers, on planted results -------------------------------------------------------------------

def _result(values: dict[str, float]) -> list[dict]:
    out = []
    for key, v in values.items():
        probe, metric = key.split(".")
        out.append({"probe": probe, "metric": metric, "value": v, "higher_is_better": metric != "ce",
                    "capability": "domain" if probe in "abc" else probe, "kind": "generation",
                    "n": 2, "items": [{"prompt": "p", "ok": v > 0.5}, {"prompt": "q", "ok": True}]})
    return out


def _planted(rows: list[dict[str, float]]) -> list[dict]:
    """Task results whose before (task 0) and after probes are ``rows`` (base, then per task)."""
    return [{"probes": {"before": _result(rows[i]), "after": _result(rows[i + 1])},
             "config": {"out": f"t{i}"}, "wall_s": 1.0} for i in range(len(rows) - 1)]


ROWS = [{"a.accuracy": 0.0, "b.accuracy": 0.1, "c.accuracy": 0.0, "math.accuracy": 1.0},
        {"a.accuracy": 0.9, "b.accuracy": 0.2, "c.accuracy": 0.1, "math.accuracy": 0.9},
        {"a.accuracy": 0.5, "b.accuracy": 0.8, "c.accuracy": 0.1, "math.accuracy": 0.7},
        {"a.accuracy": 0.3, "b.accuracy": 0.6, "c.accuracy": 1.0, "math.accuracy": 0.6}]


def test_summarize_builds_the_matrix_and_its_scores():
    rec = summarize("full", 0, ["a", "b", "c"], _planted(ROWS))
    m = rec["matrices"]["accuracy"]
    R = [[r[f"{t}.accuracy"] for t in "abc"] for r in ROWS]
    assert m["R"] == R
    assert m["acc"] == pytest.approx((0.3 + 0.6 + 1.0) / 3)
    assert m["bwt"] == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2) == bwt(R[1:])
    assert m["fwt"] == pytest.approx(((0.2 - 0.1) + (0.1 - 0.0)) / 2) == fwt(R[1:], R[0])
    assert m["forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    assert [p["task"] for p in m["paired"]] == ["a", "b"]
    assert rec["retained"]["math.accuracy"]["values"] == [1.0, 0.9, 0.7, 0.6]
    assert primary_metric(rec) == "accuracy"


def test_seeds_give_intervals_and_the_ranking_says_what_is_beyond_noise():
    better = [dict(r) for r in ROWS]
    better[3] = {**better[3], "a.accuracy": 0.85, "b.accuracy": 0.8}
    records = [summarize(label, s, ["a", "b", "c"], _planted(rows))
               for label, rows in (("full", ROWS), ("replay", better)) for s in (0, 1, 2)]
    for r in records:  # a little seed noise, so that intervals have width
        r["matrices"]["accuracy"]["acc"] += 0.01 * r["seed"]
        r["matrices"]["accuracy"]["bwt"] += 0.01 * r["seed"]
    entries = aggregate(records)
    full = entries[0]["matrices"]["accuracy"]
    assert full["bwt"]["n"] == 3 and full["bwt"]["ci"][1] < 0  # forgetting beyond noise
    order = rank(entries, "accuracy")
    assert [r["label"] for r in order] == ["replay", "full"]
    assert order[0]["forgets"] is False or order[0]["bwt"] > order[1]["bwt"]
    assert order[1]["vs_best"]["bwt"]["larger_than_noise"] is True
    assert order[1]["forgets"] is True
