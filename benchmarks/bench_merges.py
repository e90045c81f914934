"""Merges against mergekit on the same inputs: wall time and peak memory of the whole process
(interpreter start-up and imports included, as a user runs either tool), and the largest
difference between the two outputs where the methods are defined alike.

Inputs: a random tiny Llama (hidden 256, 4 layers, 14 MB in fp32) and two perturbed fine-tunes
(``merge_vs_mergekit.build``); in the full run also TIES of three ~509 MB fine-tunes with their
base (``merge_memory.build``), the case where streaming matters. mergekit runs from the peers'
venv (``peers.py``) with ``dtype: float32``; both tools write safetensors.

    python benchmarks/bench_merges.py ARGS_JSON OUT_JSON   (run by bench.py)
"""

from __future__ import annotations

import re
from pathlib import Path

from bench_common import SectionArgs, check_row, figure, run_child, section_main
from merge_memory import build as build_large
from merge_vs_mergekit import CASES, build, max_abs_diff, mergekit_cmd, retain_cmd

SMALL = ("linear", "task_arithmetic", "ties (weights 1)", "slerp", "breadcrumbs (weights 1)")
# What a difference within float32 rounding looks like (weights are of order 1).
SAME = 1e-6


def compare(name: str, reps: int, work: Path, rcall: dict, mcfg: dict, exe: Path) -> list[dict]:
    slug = re.sub(r"\W+", "_", name)
    r_out, m_out = work / f"out_retain_{slug}", work / f"out_mergekit_{slug}"
    ours, theirs = [], []
    for _ in range(reps):  # side by side: retain then mergekit, each repetition
        ours.append(run_child(retain_cmd(work, rcall, r_out)))
        theirs.append(run_child(mergekit_cmd(exe, work, mcfg, m_out, work / f"{slug}.yml")))
    diff, scale, where = max_abs_diff(r_out, m_out)
    label = f"merge: {name}"
    return [
        figure(f"{label}, time", "s", [r["wall_s"] for r in ours],
               [r["wall_s"] for r in theirs], baseline="mergekit"),
        figure(f"{label}, peak memory", "MB", [r["peak_rss_mb"] for r in ours],
               [r["peak_rss_mb"] for r in theirs], baseline="mergekit", ratio="speedup"),
        {"name": f"{label}: max |retain - mergekit|", "check": True, "met": None,
         "detail": f"{diff:.1e} at {where} (largest |weight| {scale:.2f})"
                   + ("" if diff <= SAME else "; see benchmarks/merge_results.md for where the "
                                              "definitions differ")},
    ]


def main(args: SectionArgs) -> dict:
    if args.peers_python is None:
        return {"figures": [], "notes": ["mergekit not installed (no peers venv): skipped"]}
    exe = Path(args.peers_python).parent / "mergekit-yaml"
    small = args.work / "small"
    small.mkdir(parents=True, exist_ok=True)
    if not (small / "ft2" / "model.safetensors").exists():
        build(small)
    figures = []
    for name in SMALL[:2] if args.quick else SMALL:
        figures += compare(name, args.reps, small, *CASES[name], exe)
    notes = []
    if not args.quick:
        large = args.work / "large"
        large.mkdir(parents=True, exist_ok=True)
        if not (large / "built").exists():
            build_large(large)
        rcall = dict(method="ties", base="base", models=["ft0", "ft1", "ft2"], density=0.5)
        mcfg = dict(merge_method="ties", base_model="base", models=[
            {"model": f"ft{i}", "parameters": {"weight": 1.0, "density": 0.5}} for i in range(3)])
        figures += compare("ties, 3 x 509 MB fine-tunes + base", args.reps, large, rcall, mcfg,
                           exe)
        # the same merge with output shards of 200 MB: what bounds retain's memory is the shard
        # it holds before writing (2 GB by default, so the whole 509 MB output here)
        figures += compare("ties, 3 x 509 MB, retain shard_size 200MB", args.reps, large,
                           {**rcall, "shard_size": "200MB"}, mcfg, exe)
    notes.append("peak memory 'ratio' is mergekit's peak over retain's (above 1: retain uses "
                 "less)")
    return {"figures": figures, "notes": notes}


if __name__ == "__main__":
    section_main(main)
