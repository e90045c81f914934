"""What only a CUDA device can show: bf16 mixed precision keeps fp32 master weights (pure bf16
rounds most small updates away), ``auto`` resolves to bf16, a short run on the GPU completes with
its peak memory and checkpoints (and resumes from one), and gradient checkpointing leaves the loss
curve unchanged. Every test skips without CUDA, so CPU CI skips them all; benchmarks/gpu_check.sh
runs them on a GPU machine."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from retain.config import load_config
from retain.data import load_train_data
from retain.models import load_model, resolve_dtype
from retain.report import results as rr
from retain.run import run
from retain.train import TrainConfig, train
from retain.train import checkpoint as ckpt
from retain.train.precision import resolve_mixed_precision, upcast_trainable

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"


def needs_bf16() -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device does not support bf16")


def changed_fraction(mixed_precision: str) -> float:
    """Share of the trainable weight values of the built-in model, loaded in bf16, that differ
    after 3 AdamW steps at lr 1e-5 (the run's recipe: upcast the trainable weights first when
    mixed precision is on)."""
    model, tok = load_model("tiny", dtype="bfloat16", device=DEVICE)
    data = load_train_data("builtin:legal", tok, seq_len=128, n=32, seed=0)
    if mixed_precision != "no":
        assert upcast_trainable(model) > 0
    before = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    train(model, data, pad_id=tok.pad_token_id, progress=False,
          config=TrainConfig(lr=1e-5, steps=3, batch_size=8, mixed_precision=mixed_precision))
    after = dict(model.named_parameters())
    changed = sum(int((after[n].detach().float() != b).sum()) for n, b in before.items())
    return changed / sum(b.numel() for b in before.values())


def test_bf16_mixed_precision_updates_every_weight_pure_bf16_does_not():
    needs_bf16()
    mixed = changed_fraction("bf16")
    pure = changed_fraction("no")
    print(f"weights changed after 3 steps at lr 1e-5: mixed bf16 {mixed:.4f}, pure bf16 {pure:.4f}")
    assert mixed >= 0.99, f"mixed bf16 changed only {mixed:.2%} of the weights"
    assert pure < 0.25, f"pure bf16 changed {pure:.2%}: expected most updates rounded away"


def test_auto_resolves_to_bf16_on_cuda():
    needs_bf16()
    dev = torch.device(DEVICE)
    assert resolve_mixed_precision("auto", dev) == "bf16"
    assert resolve_dtype("auto", dev) == torch.bfloat16
    assert resolve_mixed_precision("no", dev) == "no"
    assert resolve_mixed_precision("fp16", dev) == "fp16"  # allowed on CUDA (with a scaler)


def short_run(out, *extra: str) -> dict:
    config = load_config(None, ["model=tiny", "steps=6", f"device={DEVICE}", "mixed_precision=bf16",
                                "checkpoint_every=3", "batch_size=4", "seq_len=128", "data_n=32",
                                "reference_n=16", "probes=[writing]", "probe_n=4", "log_every=1",
                                "warmup_steps=0", "progress=false", f"out={out}", *extra])
    return run(config)


def test_short_run_on_cuda_with_checkpoints(tmp_path):
    needs_bf16()
    out = tmp_path / "run"
    res = short_run(out)
    assert res["status"] == "complete"
    assert res["model"]["device"].startswith("cuda") and res["model"]["mixed_precision"] == "bf16"
    assert res["model"]["dtype"] == "bfloat16"  # dtype auto on a bf16 GPU
    t = res["training"]
    assert t["steps"] == 6 and t["tokens_per_s"] > 0
    assert t["peak_memory_bytes"] is not None and t["peak_memory_bytes"] > 0
    assert [s for s, _ in t["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert torch.isfinite(torch.tensor([v for _, v in t["loss_curve"]])).all()
    assert [p.name for p in ckpt.checkpoints_in(out)] == ["step-00000003", "step-00000006"]
    assert json.loads((out / rr.RESULTS_FILE).read_text())["status"] == "complete"


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    needs_bf16()
    out = tmp_path / "run"
    whole = short_run(out)
    # As if killed after the step-3 checkpoint: no results, no step-6 checkpoint.
    (out / rr.RESULTS_FILE).unlink()
    for p in ckpt.checkpoints_in(out)[1:]:
        shutil.rmtree(p)
    resumed = short_run(out, "resume=true")
    assert resumed["status"] == "complete" and resumed["training"]["resumed_from_step"] == 3
    a = torch.tensor([v for _, v in whole["training"]["loss_curve"]])
    b = torch.tensor([v for _, v in resumed["training"]["loss_curve"]])
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)


def test_gradient_checkpointing_keeps_the_loss_curve(model_dir, tmp_path):
    needs_bf16()
    curves = []
    for gc in (False, True):
        config = load_config(None, [f"model={model_dir}", "steps=5", f"device={DEVICE}",
                                    "mixed_precision=bf16", f"gradient_checkpointing={str(gc).lower()}",
                                    "batch_size=4", "seq_len=64", "data_n=32", "lr=1e-3",
                                    "warmup_steps=0", "log_every=1", "probes=[writing]", "probe_n=2",
                                    "progress=false", f"out={tmp_path / f'gc-{gc}'}"])
        res = run(config)
        assert res["status"] == "complete" and res["config"]["gradient_checkpointing"] is gc
        curves.append(torch.tensor([v for _, v in res["training"]["loss_curve"]]))
    assert len(curves[0]) == 5
    torch.testing.assert_close(curves[1], curves[0], rtol=2e-2, atol=2e-2)  # bf16 tolerance
