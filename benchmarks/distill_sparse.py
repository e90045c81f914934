"""Sparse distillation (the teacher's top-k cached once before training, retain's default)
against full distillation (the full-vocabulary KL to a teacher run every step), on the demo's
settings: the built-in model, legal domain, 100 steps of 8 x 128 at lr 1e-3, 60 items a probe.

Per run: every probe's score after training, the training time and the one-off teacher pass,
and what full distillation minimizes -- the full-vocabulary KL(base || model) -- measured after
training on 64 of the training examples, for each run's model. A plain fine-tune (no
distillation) is the reference for how much either keeps.

    python benchmarks/distill_sparse.py [--ks 32,8] [--out benchmarks/distill_sparse.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = {"model": "tiny", "data": "builtin:legal", "steps": 100, "batch_size": 8,
            "seq_len": 128, "seed": 0, "warmup_steps": 10, "probe_n": 60,
            "probe_batch_size": 64, "save_model": True}


def kl_to_base(run_dir: Path, n: int = 64) -> float:
    """Mean full-vocabulary KL(base || model) per token on ``n`` legal training examples."""
    import torch

    from retain.data import load_train_data
    from retain.models import load_model
    from retain.probes.engine import token_kl

    base, tok = load_model("tiny", dtype="float32", device="cpu")
    model, _ = load_model(str(run_dir / "model"), dtype="float32", device="cpu")
    data = load_train_data("builtin:legal", tok, seq_len=128, n=n, seed=0)
    kls = token_kl(model, base, tok, [e["input_ids"] for e in data], batch_size=16)
    return float(torch.cat(kls).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", default="32,8", help="top-k values to compare with the full KL")
    ap.add_argument("--out", type=Path, default=HERE / "distill_sparse.json")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    runs = [("full KL", [{"name": "distill", "weight": 1.0, "top_k": 0}])]
    runs += [(f"top-{k}", [{"name": "distill", "weight": 1.0, "top_k": k}]) for k in ks]
    runs += [("no distillation", [{"name": "full"}])]
    with tempfile.TemporaryDirectory() as tmp:
        spec = {"title": "distillation: full KL vs the top-k cache", "out": f"{tmp}/runs",
                **SETTINGS, "runs": [{"label": label, "strategies": s, "lr": 1e-3}
                                     for label, s in runs]}
        path = Path(tmp) / "compare.json"  # YAML is a superset of JSON
        path.write_text(json.dumps(spec))
        subprocess.run([sys.executable, "-m", "retain", "compare", str(path)], check=True)
        rows = []
        for run_dir in sorted(Path(tmp, "runs").iterdir()):
            res_path = run_dir / "results.json"
            if not res_path.is_file():
                continue
            res = json.loads(res_path.read_text())
            info = res.get("strategy_info", {}).get("distill", {})
            rows.append({"run": run_dir.name.removesuffix("-seed0"),
                         "top_k": info.get("top_k"),
                         "after": {c["key"]: c["after"] for c in res["comparison"]},
                         "train_s": res["training"]["wall_s"],
                         "cache_s": info.get("cache_seconds"),
                         "final_loss": res["training"]["final_loss"],
                         "kl_to_base": kl_to_base(run_dir)})
    args.out.write_text(json.dumps({"settings": SETTINGS, "runs": rows}, indent=1) + "\n")
    keys = list(rows[0]["after"])
    print("| run | " + " | ".join(keys) + " | KL(base‖model) | train s | teacher pass s |")
    print("|---" * (len(keys) + 4) + "|")
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{r['after'][k]:.3f}" for k in keys)
              + f" | {r['kl_to_base']:.4f} | {r['train_s']:.1f} | {r['cache_s'] or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
