"""Agreement, time and peak memory of retain's merges against mergekit's on the same inputs.

    python benchmarks/merge_vs_mergekit.py [--mergekit /tmp/mk-venv/bin/mergekit-yaml]
                                           [--work /tmp/retain-vs-mergekit] [--large DIR]

mergekit is a benchmark-only tool, never a dependency of retain: install it in its own venv,
    python -m venv /tmp/mk-venv && /tmp/mk-venv/bin/pip install torch==2.13.0 && \\
    /tmp/mk-venv/bin/pip install mergekit
Inputs: a random tiny Llama (hidden 256, 4 layers, the built-in tokenizer) and two perturbed
fine-tunes, fp32. Each tool runs in a child process under GNU time -v (wall time and peak RSS
include interpreter start-up and imports). ``--large DIR`` also runs TIES on the three ~500 MB
fine-tunes that ``merge_memory.py`` builds in DIR.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path


def _breadcrumbs(method: str, normalize: bool) -> tuple[dict, dict]:
    """Breadcrumbs (or its TIES form) at density 0.9, gamma 0.01, weights 1, in both tools."""
    opts = {"density": 0.9, "gamma": 0.01}
    return (dict(method=method, base="base", models=["ft1", "ft2"], weights=[1.0, 1.0], **opts),
            dict(merge_method=method, base_model="base", parameters={"normalize": normalize},
                 models=[{"model": m, "parameters": {"weight": 1.0, **opts}}
                         for m in ("ft1", "ft2")]))


# name -> (retain call, mergekit config), weights chosen so definitions show where they differ
CASES = {
    "linear": (
        dict(method="linear", models=["ft1", "ft2"], weights=[0.3, 0.7]),
        dict(merge_method="linear", models=[{"model": "ft1", "parameters": {"weight": 0.3}},
                                            {"model": "ft2", "parameters": {"weight": 0.7}}])),
    "task_arithmetic": (
        dict(method="task_arithmetic", base="base", models=["ft1", "ft2"], weights=[0.6, 0.4]),
        dict(merge_method="task_arithmetic", base_model="base",
             models=[{"model": "ft1", "parameters": {"weight": 0.6}},
                     {"model": "ft2", "parameters": {"weight": 0.4}}])),
    "ties (weights 1)": (
        dict(method="ties", base="base", models=["ft1", "ft2"], weights=[1.0, 1.0], density=0.5),
        dict(merge_method="ties", base_model="base",
             models=[{"model": "ft1", "parameters": {"weight": 1.0, "density": 0.5}},
                     {"model": "ft2", "parameters": {"weight": 1.0, "density": 0.5}}])),
    "ties (weights 0.7/0.3)": (
        dict(method="ties", base="base", models=["ft1", "ft2"], weights=[0.7, 0.3], density=0.5),
        dict(merge_method="ties", base_model="base",
             models=[{"model": "ft1", "parameters": {"weight": 0.7, "density": 0.5}},
                     {"model": "ft2", "parameters": {"weight": 0.3, "density": 0.5}}])),
    "breadcrumbs (weights 1)": _breadcrumbs("breadcrumbs", normalize=False),
    # mergekit's breadcrumbs_ties sums the agreeing entries unless told to normalize; retain's
    # (like both tools' ties) takes their weighted mean, the TIES paper's disjoint mean
    "breadcrumbs_ties (weights 1, mergekit normalize: true)": _breadcrumbs("breadcrumbs_ties",
                                                                           normalize=True),
    "model_stock": (
        dict(method="model_stock", base="base", models=["ft1", "ft2"]),
        dict(merge_method="model_stock", base_model="base",
             models=[{"model": "ft1"}, {"model": "ft2"}])),
    "slerp": (
        dict(method="slerp", base="base", models=["ft1"], alpha=0.3),
        dict(merge_method="slerp", base_model="base", models=[{"model": "base"}, {"model": "ft1"}],
             parameters={"t": 0.3})),
}


def build(work: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from retain.builtin.build import build_tokenizer

    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=704,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
                      max_position_embeddings=256, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    for name, seed in (("base", None), ("ft1", 1), ("ft2", 2)):
        if seed is not None:
            g = torch.Generator().manual_seed(seed)
            model.load_state_dict({k: v + 0.02 * torch.randn(v.shape, generator=g)
                                   for k, v in base.items()})
        model.save_pretrained(work / name)
        tok.save_pretrained(work / name)


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall s, peak RSS MB) of a command under GNU time -v."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{res.stderr[-3000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr)[1])
    return wall, kb * 1024 / 1e6


def retain_cmd(work: Path, call: dict, out: Path) -> list[str]:
    """The command that merges ``call`` (model names under ``work``) with retain into ``out``."""
    call = dict(call)
    call["models"] = [str(work / m) for m in call["models"]]
    if "base" in call:
        call["base"] = str(work / call["base"])
    code = ("import json, sys; from retain.merging import merge; c = json.loads(sys.argv[1]); "
            "merge(c.pop('method'), c.pop('models'), sys.argv[2], overwrite=True, **c)")
    return [sys.executable, "-c", code, json.dumps(call), str(out)]


def mergekit_cmd(exe: str | Path, work: Path, cfg: dict, out: Path, yml: Path) -> list[str]:
    """The command that merges ``cfg`` (model names under ``work``, float32) with mergekit; the
    config is written to ``yml``."""
    import yaml

    cfg = json.loads(json.dumps(cfg))
    for m in cfg["models"]:
        m["model"] = str(work / m["model"])
    if "base_model" in cfg:
        cfg["base_model"] = str(work / cfg["base_model"])
    cfg["dtype"] = "float32"
    yml.write_text(yaml.safe_dump(cfg))
    return [str(exe), str(yml), str(out)]


def run_retain(work: Path, call: dict, out: Path) -> tuple[float, float]:
    return timed(retain_cmd(work, call, out))


def run_mergekit(exe: str, work: Path, cfg: dict, out: Path, tmp: Path) -> tuple[float, float]:
    return timed(mergekit_cmd(exe, work, cfg, out, tmp))


def max_abs_diff(a: Path, b: Path) -> tuple[float, float, str]:
    """Largest |a - b| over all tensors, largest |a| for scale, and the tensor where it occurs."""
    from retain.merging.sources import FolderSource

    sa, sb = FolderSource(a), FolderSource(b)
    if set(sa.names()) != set(sb.names()):
        raise RuntimeError(f"tensor names differ: {set(sa.names()) ^ set(sb.names())}")
    worst, scale, where = 0.0, 0.0, ""
    for n in sa.names():
        x, y = sa.get(n).float(), sb.get(n).float()
        d = float((x - y).abs().max()) if x.numel() else 0.0
        scale = max(scale, float(x.abs().max()) if x.numel() else 0.0)
        if d > worst:
            worst, where = d, n
    return worst, scale, where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit", default="/tmp/mk-venv/bin/mergekit-yaml")
    ap.add_argument("--work", type=Path, default=Path("/tmp/retain-vs-mergekit"))
    ap.add_argument("--large", type=Path, default=None,
                    help="folder with base, ft0, ft1, ft2 from merge_memory.py")
    ap.add_argument("--skip-small", action="store_true", help="only the --large comparison")
    args = ap.parse_args()
    if not Path(args.mergekit).exists():
        sys.exit(f"mergekit not found at {args.mergekit} (see this file's docstring)")
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "ft2" / "model.safetensors").exists():
        build(args.work)
    rows = []
    for name, (rcall, mcfg) in ({} if args.skip_small else CASES).items():
        slug = re.sub(r"\W+", "_", name)
        r_out, m_out = args.work / f"out_retain_{slug}", args.work / f"out_mergekit_{slug}"
        r_wall, r_rss = run_retain(args.work, rcall, r_out)
        m_wall, m_rss = run_mergekit(args.mergekit, args.work, mcfg, m_out,
                                     args.work / f"{slug}.yml")
        diff, scale, where = max_abs_diff(r_out, m_out)
        rows.append({"case": name, "max_abs_diff": diff, "max_abs_value": scale, "at": where,
                     "retain_s": round(r_wall, 1), "mergekit_s": round(m_wall, 1),
                     "retain_peak_MB": round(r_rss), "mergekit_peak_MB": round(m_rss)})
        print(json.dumps(rows[-1]), flush=True)
    if args.large is not None:
        w = args.large
        rcall = dict(method="ties", base="base", models=["ft0", "ft1", "ft2"], density=0.5)
        mcfg = dict(merge_method="ties", base_model="base", models=[
            {"model": f"ft{i}", "parameters": {"weight": 1.0, "density": 0.5}} for i in range(3)])
        r_wall, r_rss = run_retain(w, rcall, w / "out_retain_ties")
        m_wall, m_rss = run_mergekit(args.mergekit, w, mcfg, w / "out_mergekit_ties",
                                     w / "ties.yml")
        diff, scale, where = max_abs_diff(w / "out_retain_ties", w / "out_mergekit_ties")
        rows.append({"case": "ties, 3 x 509 MB", "max_abs_diff": diff, "max_abs_value": scale,
                     "at": where, "retain_s": round(r_wall, 1), "mergekit_s": round(m_wall, 1),
                     "retain_peak_MB": round(r_rss), "mergekit_peak_MB": round(m_rss)})
        print(json.dumps(rows[-1]), flush=True)
    (args.work / ("results_large.json" if args.skip_small else "results.json")).write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| case | max abs diff | retain s / MB | mergekit s / MB |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['max_abs_diff']:.2e} | {r['retain_s']} / "
              f"{r['retain_peak_MB']} | {r['mergekit_s']} / {r['mergekit_peak_MB']} |")


if __name__ == "__main__":
    main()
