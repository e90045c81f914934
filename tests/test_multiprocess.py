"""Two processes (torchrun, gloo on the CPU) run EWC + replay + self-replay with a guard: both end
with the same weights, one run folder is written, and the scores equal a one-process run of the
same global batch within float tolerance (probe items split across the processes; the Fisher
estimated once; the self-replay pool generated once, by the main process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("mp_worker.py")
CONFIG = ["model=tiny", "steps=8", "seq_len=64", "lr=1e-3", "warmup_steps=0", "log_every=2",
          "strategies=[{name: ewc, n_samples: 8}, {name: replay},"
          " {name: self_replay, num_prompts: 8, max_new_tokens: 8}]",
          "probes=[math,writing,safety]",
          "probe_n=8", "guard.limits=['writing.ce_nats_per_token<=0.40']", "guard.every=2",
          "guard.n=8", "guard.confirm=point", "progress=false", "save_model=false"]


def launch(tmp: Path, name: str, procs: int, batch: int) -> tuple[dict, list[dict], list]:
    """results.json, each process's final weights and the self-replay pool it trained on."""
    out, weights = tmp / name, tmp / f"{name}-weights"
    weights.mkdir()
    cmd = [sys.executable, str(WORKER), str(weights), *CONFIG, f"out={out}", f"batch_size={batch}"]
    if procs > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return (json.loads((out / "results.json").read_text()),
            [load_file(str(weights / f"rank{i}.safetensors")) for i in range(procs)],
            [json.loads((weights / f"rank{i}-pool.json").read_text()) for i in range(procs)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mp")
    return launch(tmp, "two", procs=2, batch=4), launch(tmp, "one", procs=1, batch=8), tmp


def test_both_processes_end_with_the_same_weights(runs):
    (_, (w0, w1), _), _, _ = runs
    assert set(w0) == set(w1)
    for k in w0:
        assert (w0[k] == w1[k]).all(), k  # bit-identical: DDP and the guard's rollback alike


def test_one_run_folder_and_one_fisher(runs):
    (res, _, _), _, tmp = runs
    out = tmp / "two"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "fisher.safetensors",
                                                    "metrics.jsonl", "results.json", "summary.csv"]
    assert res["training"]["processes"] == 2 and res["training"]["global_batch"] == 8
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    befores = [r for r in records if r.get("stage") == "before" and r["event"] == "probe"]
    assert len(befores) == 1  # written once, not once per process


def test_scores_equal_a_one_process_run_of_the_same_global_batch(runs):
    (two, w2, _), (one, w1, _), _ = runs
    worst = max(float((w2[0][k] - w1[0][k]).abs().max()) for k in w1[0])
    assert worst < 1e-4, worst  # float summation order only
    assert two["training"]["steps"] == one["training"]["steps"]
    assert [e["step"] for e in two["guard"]["events"]] == [e["step"] for e in one["guard"]["events"]]
    assert two["guard"]["events"] and two["guard"]["rolled_back_to_step"] is not None  # crossed
    assert two["guard"]["rolled_back_to_step"] == one["guard"]["rolled_back_to_step"]
    for a, b in zip(two["probes"]["after"], one["probes"]["after"]):
        assert (a["probe"], a["metric"], a["n"]) == (b["probe"], b["metric"], b["n"])
        assert a["value"] == pytest.approx(b["value"], abs=1e-3), a["probe"]
    loss2 = [x[1] for x in two["training"]["loss_curve"]]
    loss1 = [x[1] for x in one["training"]["loss_curve"]]
    assert loss2 == pytest.approx(loss1, rel=1e-4)
    fisher = two["strategy_info"]["ewc"]
    assert fisher["source"] == "estimated" and fisher["n_samples"] == 8


def test_every_process_trains_on_the_main_process_self_replay_pool(runs):
    """The worker makes the other process's generation answer differently: the pool it trains
    on is still the main process's, and the one a single process generates."""
    (two, _, (p0, p1)), (one, _, (p,)), _ = runs
    assert p0 and p1 == p0 == p
    info = two["strategy_info"]["self_replay"]
    assert info == one["strategy_info"]["self_replay"] and info["pseudo_examples"] == len(p0)
