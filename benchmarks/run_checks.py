"""Figures of part 5 on the built-in model, measured side by side in one process:

1. bf16 at lr 1e-5: the share of weights that moved after 3 steps with the weights loaded in
   bf16, pure bf16 (``mixed_precision=no``) against fp32 master weights (``bf16`` autocast);
2. gradient accumulation: max |w| difference after 5 steps of a global batch of 8 split as
   8 x 1, 4 x 2, 2 x 4 and 1 x 8, on the built-in chat mixture (examples of unequal length, so
   micro-batches hold unequal numbers of loss tokens); for scale, an equal-weight mean of
   micro-batch means (what a loop that averages per micro-batch computes);
3. checkpoint overhead: training time of one run without checkpoints and with one every
   ``--every`` steps (the loop's clock excludes checkpoint writes; their time is reported apart).

    OMP_NUM_THREADS=2 python benchmarks/run_checks.py [--steps 60 --every 10 --reps 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from retain.config import load_config
from retain.data import load_reference_data, load_train_data
from retain.models import load_model
from retain.formats import pad_token_id
from retain.run import run
from retain.train import TrainConfig, train
from retain.train import loop as loop_mod
from retain.train.precision import upcast_trainable


def snapshot(m):
    return {k: v.detach().float().clone() for k, v in m.named_parameters()}


def bf16_moved(data, pad) -> dict:
    out = {}
    for mode in ("no", "bf16"):
        m, _ = load_model("tiny", dtype="bfloat16", device="cpu")
        start = snapshot(m)
        if mode == "bf16":
            upcast_trainable(m)
        train(m, data, pad_id=pad, progress=False, config=TrainConfig(
            lr=1e-5, steps=3, batch_size=8, warmup_steps=0, schedule="constant",
            mixed_precision=mode))
        end = snapshot(m)
        moved = sum(int((end[k] != start[k]).sum()) for k in start)
        out[f"moved_share_{mode}"] = moved / sum(v.numel() for v in start.values())
    return out


def accumulation(data, pad) -> dict:
    def weights(batch, accum):
        m, _ = load_model("tiny", dtype="float32", device="cpu")
        train(m, data, pad_id=pad, progress=False, config=TrainConfig(
            lr=1e-3, steps=5, batch_size=batch, grad_accum=accum, warmup_steps=0))
        return snapshot(m)

    ref = weights(8, 1)
    diff = lambda w: max(float((w[k] - ref[k]).abs().max()) for k in ref)
    out = {f"max_abs_diff_{b}x{a}": diff(weights(b, a)) for b, a in ((4, 2), (2, 4), (1, 8))}
    real = loop_mod.loss_token_counts
    loop_mod.loss_token_counts = lambda d: [1] * len(d)  # every micro-batch weighs the same
    try:
        out["max_abs_diff_1x8_mean_of_means"] = diff(weights(1, 8))
    finally:
        loop_mod.loss_token_counts = real
    return out


def checkpoint_overhead(steps: int, every: int, reps: int) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):
            for ce in (0, every):
                out = Path(tmp) / f"r{rep}-{ce}"
                t0 = time.perf_counter()
                res = run(load_config(None, [
                    f"out={out}", f"steps={steps}", "batch_size=8", "seq_len=128", "lr=1e-3",
                    "probes=[math]", "probe_n=4", "progress=false", f"checkpoint_every={ce}",
                    "keep_checkpoints=2"]))
                size = sum(f.stat().st_size for f in (out / "checkpoints").rglob("*")
                           if f.is_file()) / max(1, len(list((out / "checkpoints").iterdir()))) \
                    if ce else 0
                rows.append({"checkpoint_every": ce, "train_s": res["training"]["wall_s"],
                             "checkpoint_s": res["training"]["checkpoint_s"],
                             "run_s": time.perf_counter() - t0, "checkpoint_bytes": size})
    base = [r for r in rows if not r["checkpoint_every"]]
    ck = [r for r in rows if r["checkpoint_every"]]
    mean = lambda xs: sum(xs) / len(xs)
    return {"rows": rows, "checkpoints_per_run": steps // every,
            "mean_checkpoint_s": mean([r["checkpoint_s"] for r in ck]) / (steps // every),
            "overhead_share_of_training": mean([r["checkpoint_s"] for r in ck])
            / mean([r["train_s"] for r in base])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    a = ap.parse_args()
    _, tok = load_model("tiny", device="cpu")
    data = load_train_data("builtin:legal", tok, seq_len=128, n=64, seed=0)
    pad = pad_token_id(tok)
    figures = {"threads": torch.get_num_threads(), "bf16_lr_1e-5": bf16_moved(data, pad),
               "accumulation": accumulation(
                   load_reference_data("builtin:retained", tok, seq_len=128, n=64), pad),
               "checkpoints": checkpoint_overhead(a.steps, a.every, a.reps)}
    text = json.dumps(figures, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
