"""`retain demo`: the forgetting cliff and its cures on the built-in model, in minutes on a CPU.

One fine-tune of the built-in chat model ("tiny") on the built-in new domain (legal contracts),
under each entry of ``DEMO`` below, with the same data, steps, batch and seed for all. Writes a
comparison folder: one run folder per entry, ``summary.csv`` (all runs, a ``strategy`` column),
``comparison.json``, ``capabilities.png`` and ``tradeoff.png``, and prints the table.

Adding a strategy to the demo is one line in ``DEMO``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.errors import UserError


@dataclass(frozen=True)
class DemoEntry:
    label: str  # the column name in the table and the chart
    strategies: list[dict[str, Any]]
    lr: float
    settings: dict[str, Any] = field(default_factory=dict)  # other RunConfig keys, if any


# How the rates were picked: "full, high lr" is a common fine-tuning rate for a model this size
# (the rate the built-in model itself was tuned at); "low lr" is 10x lower; LoRA uses the
# high rate, as LoRA rates are usually set higher than full fine-tuning ones.
DEMO: list[DemoEntry] = [
    DemoEntry("full lr=1e-3", [{"name": "full"}], 1e-3),
    DemoEntry("full lr=1e-4", [{"name": "full"}], 1e-4),
    DemoEntry("lora r=8", [{"name": "lora", "r": 8}], 1e-3),
]

# Shared by every entry, so that the comparison is fair.
COMMON: dict[str, Any] = {"model": "tiny", "data": "builtin:legal", "steps": 150, "batch_size": 16,
                          "seq_len": 256, "seed": 0, "warmup_steps": 10, "probe_n": 100}
QUICK: dict[str, Any] = {"steps": 60, "probe_n": 40}


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def run_demo(out: Path = Path("runs/demo"), *, quick: bool = False, overwrite: bool = True,
             entries: list[DemoEntry] | None = None, settings: dict[str, Any] | None = None) -> dict:
    """Run every demo entry into ``out/<slug>/`` and write the comparison files in ``out``."""
    from retain.comparison import write_comparison
    from retain.config import parse_config
    from retain.run import run

    entries = entries if entries is not None else DEMO
    if not entries:
        raise UserError("the demo has no entries")
    common = {**COMMON, **(QUICK if quick else {}), **(settings or {})}
    out = Path(out)
    t0 = time.time()
    labels, results = [], []
    for i, e in enumerate(entries, 1):
        print(f"[{i}/{len(entries)}] {e.label}", flush=True)
        cfg = parse_config({**common, **e.settings, "strategies": e.strategies, "lr": e.lr,
                            "out": out / slug(e.label), "overwrite": overwrite})
        results.append(run(cfg))
        labels.append(e.label)
    wall_s = time.time() - t0
    return write_comparison(out, labels, results, title="retain demo: tiny model, legal domain",
                            extra={"quick": quick, "wall_s": round(wall_s, 1)})
