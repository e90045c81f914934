"""Training throughput and peak memory of full fine-tuning, LoRA and EWC, each a short
``retain.run.run`` on a random-init model of Qwen2-0.5B's shape (or a ~2M-parameter one for a CPU
smoke run). Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` after every run, so a run
killed by a time limit still leaves the finished ones. Called by benchmarks/gpu_check.sh.

    python benchmarks/gpu_bench.py                                   # Qwen2-0.5B shape on CUDA
    python benchmarks/gpu_bench.py --size smoke --device cpu --steps 3 --out /tmp/gpu_smoke

Per run: tokens/s (``training.tokens_per_s``, all steps; and "steady", without the first steps),
peak memory (``training.peak_memory_bytes``, CUDA only), training wall time, EWC's Fisher time
(``strategy_info.ewc.estimate_seconds``) and each one's ratio to full fine-tuning. The data is
builtin:legal (examples of ~480 built-in tokens, so seq_len 512 truncates few); probing runs on a
few items only (it is not what is measured). The model, tokenizer and run folders live in a
temporary folder, removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

# Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, tied 151936-token embedding).
SIZES = {
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                       max_position_embeddings=32768, tie_word_embeddings=True),
    "smoke": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=6,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=8192,
                  max_position_embeddings=1024, tie_word_embeddings=True),
}
SHAPE_DEFAULTS = {"qwen2-0.5b": dict(seq_len=512, batch_size=8), "smoke": dict(seq_len=128, batch_size=4)}
STRATEGIES = {
    "full": "[{name: full}]",
    "lora": "[{name: lora, r: 16}]",
    "ewc": "[{name: ewc, n_samples: 16}]",
}
RATIO_KEYS = ("tokens_per_s", "tokens_per_s_steady", "peak_memory_bytes", "train_wall_s")


def build_model(size: str, device: str, dtype: torch.dtype, folder: Path) -> dict:
    """Save a seeded random-init Qwen2 of ``size`` (safetensors, in ``dtype``) with the built-in
    model's tokenizer (its ids are a subset of the vocabulary) into ``folder``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from retain.models import load_tokenizer

    tok = load_tokenizer("tiny")
    cfg = Qwen2Config(**SIZES[size], bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # initialize on the GPU: seconds instead of a minute on CPU
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    del model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"params": params, "build_s": round(time.perf_counter() - start, 2),
            "config": {k: v for k, v in SIZES[size].items()}}


def steady_tokens_per_s(metrics: list[dict], skip: int) -> float | None:
    """Tokens/s between the end of step ``skip`` and the last step (the first steps carry kernel
    selection and allocator warm-up), from the per-step train records of metrics.jsonl."""
    recs = [r for r in metrics if r.get("event") == "train"]
    first = next((r for r in recs if r["step"] == skip), None)
    if first is None or not recs or recs[-1]["step"] <= skip:
        return None
    dt = recs[-1]["elapsed_s"] - first["elapsed_s"]
    return (recs[-1]["tokens_seen"] - first["tokens_seen"]) / dt if dt > 0 else None


def one_run(name: str, args, model_dir: Path, work: Path, dtype_name: str) -> dict:
    """One ``retain.run.run`` with strategy ``name``; its figures, or the error."""
    from retain.config import load_config
    from retain.report import results as rr
    from retain.run import run

    out = work / f"run-{name}"
    overrides = [f"model={model_dir}", "data=builtin:legal", f"data_n={args.data_n}",
                 f"device={args.device}", "mixed_precision=bf16", f"dtype={dtype_name}",
                 f"seq_len={args.seq_len}", f"batch_size={args.batch_size}", f"steps={args.steps}",
                 "warmup_steps=0", f"lr={args.lr}", "probes=[writing]", f"probe_n={args.probe_n}",
                 "reference_n=64", "log_every=1", "progress=false", f"out={out}", "overwrite=true",
                 f"strategies={STRATEGIES[name]}"]
    rec: dict = {"strategy": name, "status": "failed"}
    cuda = args.device.startswith("cuda")
    if cuda:
        rec["allocated_before_bytes"] = torch.cuda.memory_allocated()  # leftovers of earlier runs
    start = time.perf_counter()
    try:
        res = run(load_config(None, overrides))
    except Exception as e:  # one failed run must not cost the others
        rec["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        rec["run_wall_s"] = round(time.perf_counter() - start, 2)
        traceback.print_exc()
        return rec
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    t = res["training"]
    metrics = rr.read_jsonl(out / rr.METRICS_FILE) if (out / rr.METRICS_FILE).exists() else []
    rec.update(
        status=res["status"],
        params=res["model"]["params"],
        trainable_params=res["model"]["trainable_params"],
        dtype=res["model"]["dtype"],
        mixed_precision=res["model"]["mixed_precision"],
        steps=t["steps"],
        tokens_seen=t["tokens_seen"],
        tokens_per_step=t["tokens_seen"] / max(t["steps"], 1),
        tokens_per_s=t["tokens_per_s"],
        tokens_per_s_steady=steady_tokens_per_s(metrics, min(3, t["steps"] // 3)),
        peak_memory_bytes=t["peak_memory_bytes"],
        train_wall_s=t["wall_s"],
        checkpoint_s=t["checkpoint_s"],
        run_wall_s=res["wall_s"],
        final_loss=t["final_loss"],
        fisher_s=(res.get("strategy_info") or {}).get("ewc", {}).get("estimate_seconds"),
    )
    return rec


def add_ratios(runs: list[dict]) -> None:
    """``vs_full``: each figure divided by full fine-tuning's; EWC's Fisher time also as a
    multiple of full fine-tuning's training time."""
    full = next((r for r in runs if r["strategy"] == "full" and r["status"] == "complete"), None)
    for r in runs:
        if full is None or r["status"] != "complete":
            continue
        r["vs_full"] = {k: (r[k] / full[k] if isinstance(r.get(k), (int, float))
                            and isinstance(full.get(k), (int, float)) and full[k] else None)
                        for k in RATIO_KEYS}
        if r.get("fisher_s") is not None and full.get("train_wall_s"):
            r["vs_full"]["fisher_s_per_full_train_s"] = r["fisher_s"] / full["train_wall_s"]


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def markdown(report: dict) -> str:
    e, s = report["environment"], report["settings"]
    params = report["model"].get("params")
    lines = [f"# retain GPU check: {s['size']} ({_f(params and params / 1e6, '.1f')}M params) "
             f"on {e['device_name']}", "",
             f"{s['steps']} steps, batch {s['batch_size']} x seq_len {s['seq_len']} (builtin:legal), "
             f"mixed_precision bf16, weights {s['dtype']}; torch {e['torch']}, "
             f"transformers {e['transformers']}. Ratios are to full fine-tuning.", "",
             "| strategy | status | trainable | tokens/s | x full | steady tok/s | x full "
             "| peak mem GiB | x full | train s | x full | Fisher s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        v = r.get("vs_full") or {}
        mem = r.get("peak_memory_bytes")
        lines.append(" | ".join([
            f"| {r['strategy']}", r["status"], _f(r.get("trainable_params"), ",d"),
            _f(r.get("tokens_per_s"), ",.0f"), _f(v.get("tokens_per_s"), ".2f"),
            _f(r.get("tokens_per_s_steady"), ",.0f"), _f(v.get("tokens_per_s_steady"), ".2f"),
            _f(mem / 2**30 if mem else None, ".2f"), _f(v.get("peak_memory_bytes"), ".2f"),
            _f(r.get("train_wall_s"), ".2f"), _f(v.get("train_wall_s"), ".2f"),
            _f(r.get("fisher_s"), ".2f")]) + " |")
    for r in report["runs"]:
        if r.get("error"):
            lines.append(f"\n{r['strategy']} failed: `{r['error']}`")
    if not report["complete"]:
        lines.append("\n(incomplete: the benchmark stopped before every run finished"
                     + (f": {report['stopped_by']}" if report.get("stopped_by") else "") + ")")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    add_ratios(report["runs"])
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="qwen2-0.5b")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq-len", type=int, default=None, help="default: 512 (qwen2-0.5b), 128 (smoke)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 8 (qwen2-0.5b), 4 (smoke)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--probe-n", type=int, default=8, help="items of the writing probe")
    ap.add_argument("--strategies", default="full,lora,ewc", help=f"some of {','.join(STRATEGIES)}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                    help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the model and run folders")
    args = ap.parse_args()
    for k, v in SHAPE_DEFAULTS[args.size].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or "full" not in names[:1]:
        ap.error(f"--strategies: start with full, then any of {', '.join(STRATEGIES)} (got {args.strategies})")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(f"gpu_bench: --device {args.device} but torch {torch.__version__} sees no CUDA device",
              file=sys.stderr)
        return 2
    # CUDA: weights in bf16 (as a user would load them), fp32 master copies of the trainable ones.
    # CPU: fp32 weights (bf16 weights are slow there), bf16 autocast all the same.
    dtype_name = "bfloat16" if cuda else "float32"
    args.data_n = max(64, args.steps * args.batch_size)

    import transformers

    import retain

    report = {
        "complete": False,
        "settings": {"size": args.size, "device": args.device, "steps": args.steps,
                     "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr,
                     "dtype": dtype_name, "mixed_precision": "bf16", "data": "builtin:legal",
                     "data_n": args.data_n, "probes": ["writing"], "probe_n": args.probe_n,
                     "strategies": {n: STRATEGIES[n] for n in names}},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "retain": retain.__version__, "python": platform.python_version(),
                        "cuda": torch.version.cuda,
                        "device_name": torch.cuda.get_device_name(args.device) if cuda else "CPU",
                        "device_memory_bytes": torch.cuda.get_device_properties(args.device).total_memory
                        if cuda else None,
                        "threads": torch.get_num_threads()},
        "model": {},
        "runs": [],
    }
    if cuda:
        torch.cuda.set_device(torch.device(args.device))
    # `timeout` sends SIGTERM: exit through the finally below (report written, temp folder gone).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="retain-gpu-bench-", dir=args.workdir))
    t0 = time.perf_counter()
    current: str | None = "(building the model)"
    try:
        print(f"gpu_bench: building a random {args.size} model in {work}", flush=True)
        report["model"] = build_model(args.size, args.device, getattr(torch, dtype_name), work / "model")
        print(f"gpu_bench: {report['model']['params'] / 1e6:.1f}M params, built and saved in "
              f"{report['model']['build_s']} s", flush=True)
        current = None
        write(report, args.out)
        for name in names:
            current = name
            print(f"gpu_bench: run {name} ({args.steps} steps)", flush=True)
            rec = one_run(name, args, work / "model", work, dtype_name)
            report["runs"].append(rec)
            current = None
            write(report, args.out)
            print(f"gpu_bench: {name}: {rec['status']}, "
                  f"{_f(rec.get('tokens_per_s'), ',.0f')} tokens/s, peak "
                  f"{_f((rec.get('peak_memory_bytes') or 0) / 2**30 if cuda else None, '.2f')} GiB, "
                  f"train {_f(rec.get('train_wall_s'), '.2f')} s, run {_f(rec.get('run_wall_s'), '.1f')} s"
                  + (f", Fisher {rec['fisher_s']} s" if rec.get("fisher_s") is not None else "")
                  + (f" -- {rec['error']}" if rec.get("error") else ""), flush=True)
        report["complete"] = True
    except BaseException as e:  # a failed model build, SIGTERM (SystemExit), Ctrl-C
        report["stopped_by"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        if current is not None:  # stopped in the middle of this run (or of the model build)
            report["runs"].append({"strategy": current, "status": "interrupted"})
        report["bench_wall_s"] = round(time.perf_counter() - t0, 2)
        write(report, args.out)
        if args.keep:
            print(f"gpu_bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(report))
    print(f"gpu_bench: wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 0 if all(r["status"] == "complete" for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
