"""Sharded training (``fsdp``, FSDP2 ``fully_shard``) on two CPU processes (torchrun, gloo):
EWC, L2-SP and MAS penalties over each process's shards, the Fisher estimated on sharded
weights, replay, gradient accumulation and the guard's rollback give the weights, scores,
drift and Fisher of a one-process run of the same global batch within float tolerance; a run
resumed from a sharded checkpoint ends bit-identical to the uninterrupted one; what sharded
training does not run is refused in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

# Every sharded penalty at once (ewc + l2sp + mas), replay, two micro-batches per step, and a
# guard that rolls back (its limit is crossed at step 2 on these settings).
CONFIG = ["--model", "tiny", "--steps", "6", "--seq-len", "64", "--save-model", "--checkpoint-every",
          "2", "lr=1e-3", "warmup_steps=0", "log_every=2", "grad_accum=2", "progress=false",
          "strategies=[{name: ewc, n_samples: 8}, {name: l2sp, alpha: 0.1}, {name: mas, n_samples: 8,"
          " lam: 0.1}, {name: replay}]", "probes=[math,writing]", "probe_n=8",
          "guard.limits=['writing.ce_nats_per_token<=0.378']", "guard.every=2", "guard.n=8",
          "guard.confirm=point", "guard.action=backoff"]


def launch(out: Path, procs: int, batch: int, *more: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "retain.cli", "run", *CONFIG, "--batch-size", str(batch),
           "--out", str(out), *more]
    if procs > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp")
    launch(tmp / "two", 2, 2, "--fsdp")  # 2 processes x 2 examples x 2 micro-batches
    launch(tmp / "one", 1, 4)  # 1 process x 4 examples x 2 micro-batches: the same global batch
    return tmp


def _flat(x, path=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _flat(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _flat(v, f"{path}[{i}]")
    else:
        yield path, x


def test_weights_equal_the_one_process_run(runs):
    two, one = (load_file(str(runs / d / "model" / "model.safetensors")) for d in ("two", "one"))
    assert set(two) == set(one)  # tied embeddings saved once, as a plain save does
    for k in one:
        d = (two[k].double() - one[k].double()).norm() / one[k].double().norm()
        assert d < 1e-5, (k, float(d))


def test_scores_drift_and_guard_equal_the_one_process_run(runs):
    two, one = (json.loads((runs / d / "results.json").read_text()) for d in ("two", "one"))
    assert two["training"]["processes"] == 2 and two["config"]["fsdp"] is True
    assert two["model"]["architecture"] == one["model"]["architecture"] == "LlamaForCausalLM"
    g2, g1 = two["guard"], one["guard"]
    assert g1["backoffs"] >= 1  # the rollback ran
    assert one["drift"]["overall"]["l2"] > 1e-3  # and it trained
    assert [(e["step"], e["to_step"]) for e in g2["events"]] == \
        [(e["step"], e["to_step"]) for e in g1["events"]]
    a, b = dict(_flat(two)), dict(_flat(one))
    numbers = [k for k in b if k.startswith((".comparison", ".drift", ".guard.checks", ".probes"))
               and isinstance(b[k], float)]
    assert len(numbers) > 100 and any(k.startswith(".drift.per_tensor") for k in numbers)
    for k in numbers:
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k


def test_the_fisher_estimated_on_shards_equals_the_whole_one(runs):
    two, one = (load_file(str(runs / d / "fisher.safetensors")) for d in ("two", "one"))
    assert set(two) == set(one)
    for k in one:
        assert (two[k] - one[k]).abs().max() <= 1e-5 * one[k].abs().max(), k


def test_sharded_checkpoints_resume_bit_identical(runs):
    """Each process writes its shards; a resumed run continues from them exactly."""
    ck = runs / "two" / "checkpoints" / "step-00000004"
    assert {p.name for p in ck.glob("trainable-rank*.safetensors")} == \
        {"trainable-rank0.safetensors", "trainable-rank1.safetensors"}
    assert json.loads((ck / "state.json").read_text())["shards"]["world"] == 2
    again = runs / "again"
    shutil.copytree(runs / "two", again)
    shutil.rmtree(again / "checkpoints" / "step-00000006", ignore_errors=True)
    shutil.rmtree(again / "model")
    (again / "results.json").unlink()
    launch(again, 2, 2, "--fsdp", "--resume")
    res = json.loads((again / "results.json").read_text())
    assert res["training"]["resumed_from_step"] == 4
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (again, runs / "two"))
    assert all((a[k] == b[k]).all() for k in b)


def test_a_sharded_checkpoint_is_refused_by_an_unsharded_run(runs):
    from retain.errors import UserError
    from retain.train import checkpoint as ckpt

    ck = runs / "two" / "checkpoints" / "step-00000004"
    with pytest.raises(UserError, match="sharded weights"):
        ckpt.load(ck, 0, sharded=False)
    with pytest.raises(UserError, match="sharded over 2 processes"):
        ckpt.load(ck, 0, sharded=True, world=3)
    with pytest.raises(UserError, match="without sharded weights"):
        ckpt.load(runs / "one" / "checkpoints" / "step-00000004", 0, sharded=True, world=2)


@pytest.mark.parametrize("extra, says", [
    ("strategies=[{name: lora}]", "fsdp: lora is not wired for sharded training"),
    ("probes=[drift]", "fsdp: probe drift compares with a copy of the base model"),
    ("save_fisher=true", "fsdp: save_fisher is not wired"),
])
def test_what_sharding_does_not_run_is_refused_in_one_line(tmp_path, extra, says):
    r = subprocess.run([sys.executable, "-m", "retain.cli", "run", "--model", "tiny", "--steps",
                        "1", "--fsdp", "--out", str(tmp_path / "x"), "--save-model", extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert says in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x" / "results.json").exists()
