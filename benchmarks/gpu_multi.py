"""Two processes against one on the same global batch: data-parallel (DDP) and sharded (FSDP2)
training of the built-in model under EWC + L2-SP + MAS + replay, each one's final weights and
scores against the one-process run's, and its wall time. ``benchmarks/gpu_check.sh`` runs it when
two GPUs are lent (NCCL, bf16 autocast over fp32 weights, where rounding differs between the
runs); ``--device cpu`` runs it on 2 gloo processes (tests/test_fsdp.py asserts the CPU case).

    python benchmarks/gpu_multi.py --out DIR [--device cuda|cpu] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

STRATEGIES = ("strategies=[{name: ewc, n_samples: 16}, {name: l2sp, alpha: 0.1},"
              " {name: mas, n_samples: 16, lam: 0.1}, {name: replay}]")
MODES = {"1 process": (1, 8, []), "2 x DDP": (2, 4, []), "2 x FSDP": (2, 4, ["--fsdp"])}


def launch(out: Path, procs: int, batch: int, more: list[str], a) -> float:
    """Wall seconds of one ``retain run`` (raises with its stderr tail when it fails)."""
    cmd = [sys.executable, "-m", "retain.cli", "run", "--model", "tiny", "--steps", str(a.steps),
           "--batch-size", str(batch), "--seq-len", "128", "--save-model", "--out", str(out),
           "--overwrite", "lr=1e-4", "warmup_steps=0", "progress=false", f"device={a.device}",
           STRATEGIES, "probes=[math,writing,safety]", "probe_n=32", *more]
    if procs > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if a.device == "cpu" else dict(os.environ)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:8])} ... exited {r.returncode}: {r.stderr[-1500:]}")
    return time.perf_counter() - t0


def against(run: Path, ref: Path) -> dict:
    """Largest per-tensor relative weight difference and largest score difference."""
    a, b = (load_file(str(d / "model" / "model.safetensors")) for d in (run, ref))
    rel = max(float((a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp_min(1e-30))
              for k in b)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (run, ref))
    scores = max(abs(x["after"] - y["after"]) for x, y in zip(ra["comparison"], rb["comparison"])
                 if isinstance(y.get("after"), float))
    return {"max_rel_weight_diff": rel, "max_score_diff": scores,
            "tokens_per_s": ra["training"]["tokens_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, (procs, batch, more) in MODES.items():
        folder = a.out / name.replace(" ", "").lower()
        try:
            wall = launch(folder, procs, batch, more, a)
            rows[name] = {"wall_s": wall, **against(folder, a.out / "1process")}
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            rows[name] = {"error": str(e)[-400:]}
    (a.out / "gpu_multi.json").write_text(json.dumps(rows, indent=2))
    lines = [f"2 processes against 1 ({a.device}, {a.steps} steps, global batch 8 x 128 tokens, "
             "EWC + L2-SP + MAS + replay)", "",
             "| run | wall s | tokens/s | max rel weight diff vs 1 process | max score diff |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | FAILED: {r['error'].splitlines()[-1] if r['error'] else ''} | | | |"
                     if "error" in r else
                     f"| {name} | {r['wall_s']:.1f} | {r['tokens_per_s']:.0f} | "
                     f"{r['max_rel_weight_diff']:.2e} | {r['max_score_diff']:.2e} |")
    (a.out / "gpu_multi.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if any("error" in r for r in rows.values()) else 0)


if __name__ == "__main__":
    main()
