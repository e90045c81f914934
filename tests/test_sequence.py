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
    (["builtin:legal", {"name": "math", "data": "x.jsonl"}], "built-in probe suite"),
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


# -- a real sequence on the built-in model -----------------------------------------------------------

BASE = {"model": "tiny", "steps": 3, "lr": 1e-3, "batch_size": 4, "seq_len": 48, "probe_n": 4,
        "probes": ["math"], "warmup_steps": 0, "progress": False, "reference_n": 16,
        "memory": 16, "data_n": 24}
RUNS = [
    {"label": "online ewc", "strategies": [{"name": "ewc", "lam": 0.1, "n_samples": 4}]},
    {"label": "lora+replay", "strategies": [{"name": "lora", "r": 4},
                                            {"name": "replay", "fraction": 0.25}]},
    {"label": "l2sp base", "strategies": [{"name": "l2sp", "anchor_model": "base"}]},
    {"label": "wise-ft", "strategies": ["full", {"name": "wise_ft", "alpha": 0.5}]},
    {"label": "osf", "strategies": [{"name": "osf"}]},
]


@pytest.fixture(scope="module")
def notes(tmp_path_factory) -> Path:
    """A user's JSONL task: prompt/completion records, no probe file (its held-out split probes)."""
    path = tmp_path_factory.mktemp("data") / "notes.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Code word {i}?", "completion": f"zebra {i}"})
                            + "\n" for i in range(40)))
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory, notes):
    out = tmp_path_factory.mktemp("seq")
    data = {**BASE, "tasks": ["builtin:legal", "builtin:support", str(notes)], "runs": RUNS,
            "out": str(out)}
    return out, seq.run_sequence(None, data=data, show=False)


def _task(out: Path, label: str, i: int) -> dict:
    d = sorted((out / f"{label}-seed0").glob(f"{i}-*"))[0]
    return json.loads((d / "results.json").read_text())


def test_every_strategy_runs_through_three_tasks(ran):
    out, summary = ran
    assert summary["tasks"] == ["legal", "support", "notes"]
    assert [e["label"] for e in summary["entries"]] == [r["label"] for r in RUNS]
    for rec in summary["sequences"]:
        ce = rec["matrices"]["ce_nats_per_token"]
        assert len(ce["R"]) == 4 and all(len(r) == 3 and None not in r for r in ce["R"])
        assert {"acc", "bwt", "fwt", "forgetting"} <= set(ce)
        assert rec["retained"]["math.accuracy"]["values"][0] is not None
        chain = out / f"{seq.slug(rec['label'])}-seed0"
        models = sorted(p.parent.name for p in chain.glob("*/model"))
        assert models == ["2-notes"]  # a finished sequence keeps its last model only
    for e in summary["entries"]:
        assert (out / summary["figures"][e["label"]]).is_file()
    assert (out / seq.SUMMARY_FILE).is_file()
    # the notes task was split once: its held-out records probe every task's run
    first = _task(out, "online-ewc", 0)
    assert "notes.ce_nats_per_token" in {c["key"] for c in first["comparison"]}


def test_online_ewc_accumulates_the_fisher_of_each_finished_task(ran):
    out, _ = ran
    info = [_task(out, "online-ewc", i)["strategy_info"]["ewc"] for i in range(3)]
    assert info[0]["source"] == "estimated"
    assert [x["source"] for x in info[1:]] == ["online", "online"]
    assert [x["online_terms"] for x in info[1:]] == [2, 3]
    assert info[2]["previous_fisher_path"].endswith("1-support/fisher.safetensors")


def test_replay_draws_from_the_memory_of_earlier_tasks(ran):
    out, _ = ran
    chain = out / "lora-replay-seed0"
    second = _task(out, "lora-replay", 2)
    assert second["config"]["reference"] == ["builtin:retained", str(chain / "memory-1.jsonl")]
    memory = [json.loads(line) for line in (chain / "memory-1.jsonl").read_text().splitlines()]
    assert len(memory) == 16
    texts = [m["text"] for m in memory]
    assert any("Agreement" in t for t in texts) and any("Customer:" in t for t in texts)
    assert second["strategy_info"]["replay"]["pool_examples"] == 16 + 16  # retained + memory
    # LoRA merged after every task: each task's run starts from a plain model
    assert second["model"]["trainable_params"] < second["model"]["params"] / 10


def test_l2sp_anchors_to_the_original_base(ran):
    out, _ = ran
    last = _task(out, "l2sp-base", 2)
    assert last["config"]["strategies"][0]["anchor_model"] == "tiny"
    assert last["strategy_info"]["l2sp"]["anchored_to_init"] == 0


def test_an_interrupted_sequence_continues_from_the_task_it_stopped_at(tmp_path, monkeypatch,
                                                                        notes):
    import retain.run

    real = retain.run.run
    data = {**BASE, "tasks": ["builtin:legal", "builtin:support", str(notes)],
            "runs": [{"label": "full", "strategies": ["full"]}], "out": str(tmp_path)}

    def dies_at_task_2(cfg, **kw):
        if Path(cfg.out).name.startswith("2-"):
            raise KeyboardInterrupt
        return real(cfg, **kw)

    monkeypatch.setattr(retain.run, "run", dies_at_task_2)
    with pytest.raises(KeyboardInterrupt):
        seq.run_sequence(None, data=data, show=False)
    done = {p: (p / "results.json").stat().st_mtime for p in (tmp_path / "full-seed0").glob("[01]-*")}
    assert len(done) == 2 and (tmp_path / "full-seed0" / "1-support" / "model").is_dir()
    monkeypatch.setattr(retain.run, "run", real)
    calls = []
    monkeypatch.setattr(retain.run, "run", lambda cfg, **kw: calls.append(cfg.out) or real(cfg, **kw))
    summary = seq.run_sequence(None, data=data, show=False)
    assert [Path(c).name for c in calls] == ["2-notes"]  # tasks 0 and 1 reused
    assert all((p / "results.json").stat().st_mtime == t for p, t in done.items())
    assert len(summary["sequences"][0]["matrices"]["ce_nats_per_token"]["R"]) == 4


def test_cli_refuses_a_file_without_tasks(tmp_path):
    import subprocess
    import sys

    f = tmp_path / "s.yaml"
    f.write_text("model: tiny\n")
    r = subprocess.run([sys.executable, "-m", "retain.cli", "sequence", str(f)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "tasks" in r.stderr
    assert "Traceback" not in r.stderr


def test_one_seed_forgets_by_the_paired_tests_in_the_metrics_direction():
    from retain.experiments.sequence_metrics import _forgets

    one = {"bwt": {"ci": None}}
    rose = [{"task": "a", "changed": True, "diff": 0.4}]  # cross-entropy up on task a: lost
    assert _forgets({**one, "higher_is_better": False, "paired": rose}) is True
    assert _forgets({**one, "higher_is_better": True, "paired": rose}) is False
    assert _forgets({**one, "higher_is_better": True,
                     "paired": [{"changed": True, "lost": 5, "gained": 1}]}) is True
    assert _forgets({**one, "higher_is_better": True, "paired": []}) is None


def test_the_example_sequence_file_plans_six_runs_of_three_seeds(tmp_path):
    root = Path(__file__).resolve().parents[1]
    f = seq.load_sequence_file(root / "examples" / "sequence.yaml")
    chains = seq.plan_chains(f, seq.read_tasks(f["tasks"], tmp_path, 0.1, 200), tmp_path)
    assert len(chains) == 18 and {c.seed for c in chains} == {0, 1, 2}
    l2sp = next(c for c in chains if c.label == "l2sp to base").runs[2].config
    assert l2sp.strategies[0]["anchor_model"] == "tiny"


def test_the_shipped_sequence_demo_plans_four_runs_of_three_tasks(tmp_path):
    from retain.experiments.demo import SEQUENCE_FILE

    f = seq.load_sequence_file(SEQUENCE_FILE)
    tasks = seq.read_tasks(f["tasks"], tmp_path, 0.1, 200)
    chains = seq.plan_chains(f, tasks, tmp_path)
    assert [t.name for t in tasks] == ["legal", "support", "recipes"]
    assert [c.label for c in chains] == ["full", "online ewc", "replay 25%", "lora r=8"]
    first, last = chains[1].runs[0].config, chains[1].runs[2].config
    assert first.model == "tiny" and last.model.endswith("1-support/model")
    assert set(last.probes) >= {"legal", "support", "recipes", "safety"}


def test_sequences_fan_out_list_only_collect(tmp_path, capsys):
    data = {**BASE, "tasks": ["builtin:legal", "builtin:support"], "out": str(tmp_path),
            "runs": [{"label": "full", "strategies": ["full"]},
                     {"label": "replay", "strategies": [{"name": "replay", "fraction": 0.25}]}]}
    assert seq.run_sequence(None, data=data, listing=True) == {}
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[::4] for ln in lines] == [["0", "new"], ["1", "new"]]
    assert seq.run_sequence(None, data=data, only=["1"], show=False) == {}
    assert not (tmp_path / seq.SUMMARY_FILE).exists()  # the others may still be running
    with pytest.raises(UserError, match=r"sequence\(s\) 0 not complete.*--only 0"):
        seq.run_sequence(None, data=data, collect=True, show=False)
    seq.run_sequence(None, data=data, only=["0"], show=False)
    summary = seq.run_sequence(None, data=data, collect=True, show=False)
    assert [e["label"] for e in summary["entries"]] == ["full", "replay"]
    with pytest.raises(UserError, match="no such run"):
        seq.run_sequence(None, data=data, only=["5"], show=False)


def test_a_mistake_found_while_planning_leaves_nothing_behind(tmp_path, notes):
    base = {**BASE, "out": str(tmp_path / "o"), "tasks": ["builtin:legal", str(notes)]}
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        seq.run_sequence(None, data={**base, "runs": [{"label": "x", "strategies": ["nope"]}]},
                         show=False)
    with pytest.raises(UserError, match="no such run"):
        seq.run_sequence(None, data=base, only=["7"], show=False)
    assert not (tmp_path / "o").exists()  # the JSONL task's split files were not written
