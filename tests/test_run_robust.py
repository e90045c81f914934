"""A run checks first and then works: user mistakes are one line with exit code 2 and leave
nothing behind; a failure mid-run writes status "failed" and can be rerun; a SIGKILLed run
resumes from its checkpoint to the same weights and scores; JSONL data gets a domain score."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retain import strategies as strategies_mod
from retain.config import RunConfig
from retain.errors import UserError
from retain.report import results as rr
from retain.run import run
from retain.strategies.base import Strategy, StrategyConfig
from retain.train import TrainingFailed


def retain(*args, **kw):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, timeout=300, **kw)


def quick(model_dir, out, **kw) -> RunConfig:
    base = dict(model=str(model_dir), out=str(out), steps=6, batch_size=4, seq_len=48, lr=1e-3,
                warmup_steps=1, data_n=16, reference_n=8, probes=["math", "writing"],
                probe_n=3, log_every=2, progress=False)
    return RunConfig(**{**base, **kw})


# ---------------------------------------------------------------- user mistakes, from the CLI
@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "broken.jsonl"
    p.write_text('{"text": "fine"}\n{"text": oops}\n')
    return p


@pytest.mark.parametrize("args, needle", [
    (["--data", "no/such.jsonl"], "no/such.jsonl does not exist"),
    (["--data", "BAD"], "broken.jsonl:2"),
    (["-s", "ewc", "-s", "lora"], "'ewc' is listed before 'lora'"),
    (["--device", "cuda"], "no CUDA device"),
    (["--dtype", "float8"], "unknown dtype"),
    (["--mixed-precision", "fp16"], "fp16 needs a CUDA device"),
    (["--domain-probe", "no/such/probe.jsonl"], "no such probe file"),
])
def test_mistakes_are_one_line_exit_2_and_nothing_is_written(tmp_path, bad_data, args, needle):
    args = [str(bad_data) if a == "BAD" else a for a in args]
    out = tmp_path / "run"
    r = retain("run", "--steps", "2", "--out", str(out), *args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert needle in r.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_unwritable_out_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("x")
    r = retain("run", "--steps", "2", "--out", str(tmp_path / "a_file" / "run"))
    assert r.returncode == 2 and "is not a folder" in r.stderr and "Traceback" not in r.stderr


def test_a_late_user_mistake_leaves_nothing(model_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="already fails before training"):
        run(quick(model_dir, out, guard={"limits": ["math.accuracy>=0.9"]}))  # random: 0.0
    assert not out.exists()  # created by this run, so removed whole
    with pytest.raises(UserError, match="no model can meet it"):  # refused when read
        run(quick(model_dir, out, guard={"limits": ["math.accuracy>=1.5"]}))
    assert not out.exists()


# ---------------------------------------------------------------- failures
class InfAt(Strategy):
    """Test-only: the loss turns infinite at optimizer step ``at``."""

    name, family = "inf_at", "regularization"

    class Config(StrategyConfig):
        at: int = 3

    calls = 0

    def penalty(self, model, batch):
        self.calls += 1
        return torch.tensor(float("inf")) if self.calls == self.config.at else None


def test_non_finite_loss_fails_the_run_and_it_can_be_rerun(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(strategies_mod.STRATEGIES, "inf_at", InfAt)
    out = tmp_path / "run"
    cfg = quick(model_dir, out, strategies=[{"name": "inf_at", "at": 5}], checkpoint_every=2)
    with pytest.raises(TrainingFailed, match="step 5: non-finite loss"):
        run(cfg)
    res = json.loads((out / rr.RESULTS_FILE).read_text())
    assert res["status"] == "failed" and res["failure"]["step"] == 5
    assert res["failure"]["stage"] == "train" and "non-finite loss" in res["failure"]["reason"]
    assert res["failure"]["last_checkpoint"].endswith("step-00000004")
    # The same command again is allowed into the failed run's folder (here: no inf this time).
    again = run(cfg.model_copy(update={"strategies": [{"name": "inf_at", "at": 10**6}]}))
    assert again["status"] == "complete"
    assert json.loads((out / rr.RESULTS_FILE).read_text())["status"] == "complete"
    # A complete folder is not silently replaced.
    with pytest.raises(UserError, match="not empty"):
        run(cfg)


# ---------------------------------------------------------------- kill and resume
RUN_ARGS = ["run", "--model", "tiny", "--steps", "24", "--batch-size", "8", "--seq-len", "64",
            "--lr", "1e-3", "-s", "ewc", "-s", "replay", "--checkpoint-every", "4",
            "--probes", "math", "--probes", "writing", "--save-model",
            "probe_n=6", "strategies.0.n_samples=8", "warmup_steps=2", "keep_checkpoints=2"]


def test_sigkill_then_resume_gives_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same float sums in every process
    whole = retain(*RUN_ARGS, "--out", str(tmp_path / "whole"), env=env)
    assert whole.returncode == 0, whole.stderr

    rng = random.Random(int(time.time()))  # a random kill step, reported if the test fails
    kill_after = rng.choice([4, 8, 12, 16])
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "retain.cli", *RUN_ARGS, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "checkpoints" / f"step-{kill_after:08d}"
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.3))  # a step or three later
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / rr.RESULTS_FILE).exists(), f"finished before the kill (step {kill_after})"

    refused = retain(*RUN_ARGS, "--out", str(out), env=env)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = retain(*RUN_ARGS, "--out", str(out), "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr

    a = json.loads((tmp_path / "whole" / rr.RESULTS_FILE).read_text())
    b = json.loads((out / rr.RESULTS_FILE).read_text())
    assert b["training"]["resumed_from_step"] >= kill_after, kill_after
    for ra, rb in zip(a["probes"]["after"], b["probes"]["after"]):
        assert ra["key" if "key" in ra else "probe"] == rb["key" if "key" in rb else "probe"]
        assert rb["value"] == pytest.approx(ra["value"], abs=1e-6), (kill_after, ra["probe"])
    assert [x[1] for x in b["training"]["loss_curve"]] == pytest.approx(
        [x[1] for x in a["training"]["loss_curve"]], abs=1e-6)
    wa = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    wb = load_file(str(out / "model" / "model.safetensors"))
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst <= 1e-6, (kill_after, worst)
    lines = rr.read_jsonl(out / rr.METRICS_FILE)  # no record twice after the resume
    steps = [r["step"] for r in lines if r["event"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 24


# ---------------------------------------------------------------- the user's own domain
def test_jsonl_data_gets_a_held_out_domain_score(model_dir, tmp_path):
    data = tmp_path / "capitals.jsonl"
    rows = [{"prompt": f"Capital of land {i}?", "completion": f"City {i % 7}"} for i in range(60)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run(quick(model_dir, tmp_path / "run", data=str(data), steps=4, data_n=None))
    assert res["data"]["heldout_examples"] == 6 and res["data"]["examples"] == 54
    assert "capitals.ce_nats_per_token" in res["domain_gain"]
    assert "capitals.accuracy" in res["domain_gain"]  # short completions: exact match too
    assert res["domain_gain"]["capitals.ce_nats_per_token"] > 0  # lr 1e-3: it learnt something


# ---------------------------------------------------------------- mixed precision, every family
@pytest.mark.parametrize("strategies", [
    [{"name": "ewc", "n_samples": 4}], [{"name": "lora", "r": 2}, {"name": "ewc", "n_samples": 4}],
    [{"name": "freeze", "top_blocks": 1}], [{"name": "self_replay", "num_prompts": 4}],
    [{"name": "distill"}], [{"name": "prompt_tuning", "num_virtual_tokens": 4}]])
def test_bf16_weights_train_under_mixed_precision(model_dir, tmp_path, strategies):
    res = run(quick(model_dir, tmp_path / "run", steps=2, batch_size=2, dtype="bfloat16",
                    mixed_precision="bf16", strategies=strategies, data_n=8))
    assert res["status"] == "complete" and res["model"]["mixed_precision"] == "bf16"
    assert res["model"]["dtype"] == "bfloat16"
    losses = [x[1] for x in res["training"]["loss_curve"]]
    assert losses and all(x == x and abs(x) < 1e3 for x in losses)  # finite
    assert all(r["value"] == r["value"] for r in res["probes"]["after"])


def _interrupted(cfg, monkeypatch):
    """Run ``cfg`` and kill it (KeyboardInterrupt) once training is done: an unfinished folder."""
    import retain.metrics.outcome as outcome_mod

    def killed(*a, **k):
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(outcome_mod, "outcome", killed)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)


def test_resume_refuses_changed_inputs_naming_them(model_dir, tmp_path, monkeypatch):
    """Regression: a data file rewritten at the same path resumed silently (the domain's before
    score from the old held-out split, its after score from the new one)."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"old line {i} of text"}) + "\n" for i in range(30)))
    cfg = quick(model_dir, tmp_path / "r", data=str(data), checkpoint_every=2)
    _interrupted(cfg, monkeypatch)
    data.write_text("".join(json.dumps({"text": f"new line {i} of text"}) + "\n" for i in range(30)))
    with pytest.raises(UserError, match=r"d\.jsonl changed since its checkpoint") as err:
        run(cfg.model_copy(update={"resume": True}))
    assert "\n" not in str(err.value)
    proc = retain("run", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "r"),
                  "--resume", "--steps", "6", "--batch-size", "4", "--seq-len", "48", "--lr", "1e-3",
                  "--probes", "math", "--probes", "writing", "--checkpoint-every", "2",
                  "warmup_steps=1", "data_n=16", "reference_n=8", "probe_n=3", "log_every=2")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "d.jsonl changed since its checkpoint" in proc.stderr, proc.stderr


def test_resume_without_a_checkpoint_says_it_starts_over(model_dir, tmp_path, monkeypatch, capsys):
    cfg = quick(model_dir, tmp_path / "r")  # no checkpoints
    _interrupted(cfg, monkeypatch)
    capsys.readouterr()
    res = run(cfg.model_copy(update={"resume": True}))
    assert res["status"] == "complete" and res["training"]["resumed_from_step"] is None
    assert "no checkpoint: starting over" in capsys.readouterr().err
