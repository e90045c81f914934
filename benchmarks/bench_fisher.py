"""EWC's diagonal Fisher: retain's per-sample estimator (module by module from one batched
forward and backward per chunk: ``strategies/per_sample.py``) against the plain loop of one
forward and backward per sample (target: at least 1.5x faster, same values), on the
built-in model and the built-in reference data (the examples EWC estimates on). Both compute the
empirical Fisher (squared per-sample gradients of the data's own labels, averaged), so the
values must agree; the estimator with sampled labels runs the same machinery.

    python benchmarks/bench_fisher.py ARGS_JSON OUT_JSON   (run by bench.py)
"""

from __future__ import annotations

import time

import torch

from bench_common import SectionArgs, check_row, figure, section_main
from fisher_speed import loop_fisher


def main(args: SectionArgs) -> dict:
    from retain.data import load_reference_data
    from retain.models import load_model
    from retain.strategies import fisher as fs

    n = 32 if args.quick else 64
    torch.manual_seed(0)
    model, tok = load_model("tiny", dtype="float32", device="cpu")
    full = load_reference_data("builtin:retained", tok, seq_len=128, n=n, seed=0)
    # the same examples cut to 16 tokens: where per-sample matmuls are too small to keep the
    # cores busy one at a time, and vectorizing pays
    short = [{k: v[:16] for k, v in e.items()} for e in full]
    figures, config = [], {"samples": n, "estimator": "empirical"}
    for label, examples in (("up to 128 tokens a sample", full), ("16 tokens a sample", short)):
        tokens = sum(len(e["input_ids"]) for e in examples)
        ours, loop, err = [], [], 0.0
        for _ in range(args.reps):
            t = time.perf_counter()
            ref = loop_fisher(model, examples)
            loop.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = fs.estimate_fisher(model, examples, "empirical")
            ours.append(time.perf_counter() - t)
            err = max(err, max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max())
                               for k in ref))
        ok = err <= 1e-4
        name = f"diagonal Fisher, {n} samples, {label} ({tokens} tokens)"
        figures += [
            figure(name, "s", ours, loop, baseline="per-sample loop (forward + backward each)",
                   target=1.5, target_text="at least 1.5x faster"),
            check_row(f"{name}: same values (max relative difference at most 1e-4)", ok,
                      f"max relative difference {err:.1e} (largest |difference| of a tensor over "
                      f"its largest entry)"),
        ]
    return {"figures": figures, "config": config}


if __name__ == "__main__":
    section_main(main)
