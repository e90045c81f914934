"""Fisher estimation time: the vectorized torch.func estimator (retain's) against a Python loop of
per-sample backward passes, on a small Llama; also the vmap with SDPA attention (no batching rule
on CPU) instead of the eager attention retain switches to. Both must agree; prints a table.

    OMP_NUM_THREADS=1 python benchmarks/fisher_speed.py [--hidden 256 --layers 4 --n 64 --len 64]

Measured on the 2-core build machine, 1 thread, CPU seconds, 64 samples (loop / vmap, chunk 8-32):
0.21M params x 64 tokens: 1.4-1.8x; 3.3M (built-in shape) x 16 tokens: 1.8-2.1x; 3.3M x 64 tokens:
0.95-1.09x (compute-bound: the loop's matmuls are already big enough). Max rel. error ~1e-6.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from retain.strategies import fisher as fs


def loop_fisher(model, examples):
    """Reference: one forward + backward per sample, squared gradients averaged."""
    model.eval()
    params = fs.trainable_parameters(model)
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    for e in examples:
        logits = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
        loss = F.cross_entropy(logits[:-1], torch.tensor(e["labels"][1:]), ignore_index=-100)
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            total[k] += g.pow(2)
    return {k: v / len(examples) for k, v in total.items()}


def timed(fn, repeats):
    """Best-of-repeats process CPU seconds (less sensitive than wall time to other jobs on a
    shared machine; equal to wall time at one thread when the machine is idle)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)  # defaults: the built-in model's shape
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=704)
    ap.add_argument("--vocab", type=int, default=128)
    ap.add_argument("--n", type=int, default=64, help="samples")
    ap.add_argument("--len", type=int, default=64, help="tokens per sample")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      intermediate_size=args.intermediate, vocab_size=args.vocab, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    examples = [{"input_ids": (ids := torch.randint(3, args.vocab, (args.len,), generator=gen).tolist()),
                 "labels": ids} for _ in range(args.n)]
    print(f"Llama {n_params / 1e6:.2f}M params, {args.n} samples x {args.len} tokens, "
          f"{torch.get_num_threads()} thread(s)")

    t_loop, ref = timed(lambda: loop_fisher(model, examples), args.repeats)
    rows = [("per-sample loop (reference)", t_loop, 0.0)]
    for chunk in (8, 16, 32):
        t, got = timed(lambda: fs.estimate_fisher(model, examples, "empirical", chunk_size=chunk), args.repeats)
        err = max(((got[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)
        rows.append((f"torch.func vmap, eager attn, chunk {chunk}", t, err))
    old = fs._estimation_mode  # the same vmap, leaving SDPA in place
    fs._estimation_mode = lambda m: _eval_only(m)
    try:
        t, got = timed(lambda: fs.estimate_fisher(model, examples, "empirical", chunk_size=16), 1)
    finally:
        fs._estimation_mode = old
    err = max(((got[k] - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref)
    rows.append(("torch.func vmap, SDPA attn, chunk 16", t, err))
    t, _ = timed(lambda: fs.estimate_fisher(model, examples, "batched", batch_size=8), args.repeats)
    rows.append(("batched estimator, batch 8 (not per-sample)", t, float("nan")))

    print(f"{'method':46s} {'cpu s':>8s} {'loop/this':>9s} {'max rel err':>11s}")
    for name, t, err in rows:
        print(f"{name:46s} {t:8.2f} {t_loop / t:9.2f} {err:11.1e}")


class _eval_only:
    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


if __name__ == "__main__":
    main()
