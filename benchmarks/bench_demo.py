"""Wall time of ``retain demo`` (twelve fine-tunes of the built-in model, probed before and
after) and ``retain demo --quick`` (four), each a fresh command in a fresh output folder, as a
user runs them: interpreter start-up, imports, training, probing, figures and tables included.

    python benchmarks/bench_demo.py ARGS_JSON OUT_JSON   (run by bench.py; --quick: --quick only)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench_common import SectionArgs, figure, run_child, section_main

RETAIN = [sys.executable, "-m", "retain.cli"]


def times(work: Path, reps: int, *flags: str) -> tuple[list[float], list[float]]:
    walls, peaks = [], []
    for i in range(reps):
        out = work / f"demo{'-'.join(flags)}-{i}"
        shutil.rmtree(out, ignore_errors=True)
        res = run_child([*RETAIN, "demo", *flags, "--out", out])
        walls.append(res["wall_s"])
        peaks.append(res["peak_rss_mb"])
        if i < reps - 1:  # the last one stays, for its table (comparison.json)
            shutil.rmtree(out, ignore_errors=True)
    return walls, peaks


def main(args: SectionArgs) -> dict:
    figures = []
    walls, peaks = times(args.work, args.reps, "--quick")
    figures.append(figure("retain demo --quick (4 fine-tunes, 40 steps, 24 items a probe)", "s",
                          walls, at_most=45, target_text="at most 45 s on 2 cores",
                          extra={"peak_rss_mb": max(peaks)}))
    if not args.quick:
        walls, peaks = times(args.work, args.reps)
        figures.append(figure("retain demo (12 fine-tunes, 100 steps, 60 items a probe)", "s",
                              walls, at_most=300, target_text="at most 300 s on 2 cores",
                              extra={"peak_rss_mb": max(peaks)}))
    return {"figures": figures}


if __name__ == "__main__":
    section_main(main)
