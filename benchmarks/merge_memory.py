"""Peak resident memory of a streaming TIES merge of three ~500 MB fp32 fine-tunes, measured with
GNU time's -v, against the size of one model and the cost of importing torch + retain alone.

    OMP_NUM_THREADS=1 python benchmarks/merge_memory.py [--work /tmp/retain-merge-bench]

Builds a random Llama (hidden 1024, 8 layers, vocab 12000: ~509 MB in fp32) and three perturbed
"fine-tunes" under --work (not the repo), then merges them in a child process under
/usr/bin/time -v (install with `apt-get install -y time`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


def build(work: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=12000, hidden_size=1024, intermediate_size=2816,
                      num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16,
                      max_position_embeddings=512, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(work / "base")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i in range(3):
            for p in model.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
            model.save_pretrained(work / f"ft{i}")
    (work / "built").write_text("ok\n")


def timed(cmd: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command under GNU time -v."""
    if not Path("/usr/bin/time").exists():
        sys.exit("GNU time is missing: apt-get install -y time")
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)[1])
    return wall, kb * 1024


MERGE = """
import sys
from retain.merging import merge
w = sys.argv[1]
merge("ties", [f"{w}/ft0", f"{w}/ft1", f"{w}/ft2"], f"{w}/merged", base=f"{w}/base",
      density=0.5, shard_size="{shard}", overwrite=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/retain-merge-bench"))
    ap.add_argument("--shard-size", default="200MB")
    ap.add_argument("--clean", action="store_true", help="delete --work at the end")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "built").exists():
        print("building the base and three fine-tunes ...", flush=True)
        build(args.work)
    model_bytes = (args.work / "base" / "model.safetensors").stat().st_size
    py = sys.executable
    _, import_rss = timed([py, "-c", "import torch, safetensors, retain.merging"])
    wall, peak = timed([py, "-c", MERGE.replace("{shard}", args.shard_size), str(args.work)])
    out = args.work / "merged"
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    report = {
        "method": "ties (density 0.5), 3 fine-tunes + base, fp32",
        "one_model_MB": round(model_bytes / 1e6, 1),
        "peak_rss_MB": round(peak / 1e6, 1),
        "import_only_rss_MB": round(import_rss / 1e6, 1),
        "peak_minus_import_MB": round((peak - import_rss) / 1e6, 1),
        "peak_over_one_model": round(peak / model_bytes, 3),
        "wall_s": round(wall, 1),
        "output_shards": len(shards),
    }
    print(json.dumps(report, indent=2))
    if args.clean:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
