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


# How the settings were picked, so that the comparison is fair: every entry sees the same legal
# data, steps, batch, sequence length and seed. The rate is the same high rate (1e-3, the rate
# the built-in model was chat-tuned at, and the one that shows the cliff) for every method, so
# each method is judged at the rate where forgetting happens; "full, lr=1e-4" is the low-rate
# baseline (10x lower). Prompt tuning alone gets 1e-2, since it trains 0.2% of the parameters and
# its usual rates are ~10x higher. Strengths (EWC lam, L2-SP alpha, distillation weight, replay
# fraction, WiSE-FT alpha) are each method's defaults, except EWC's lam=0.1 (default 1), set
# from the size of its penalty against the loss at this model size; none was tuned on the probes.
HIGH_LR, LOW_LR = 1e-3, 1e-4
DEMO: list[DemoEntry] = [
    DemoEntry("full lr=1e-3", [{"name": "full"}], HIGH_LR),
    DemoEntry("full lr=1e-4", [{"name": "full"}], LOW_LR),
    DemoEntry("ewc", [{"name": "ewc", "lam": 0.1}], HIGH_LR),
    DemoEntry("l2sp", [{"name": "l2sp", "alpha": 0.1}], HIGH_LR),
    DemoEntry("distill", [{"name": "distill", "weight": 1.0}], HIGH_LR),
    DemoEntry("lora r=8", [{"name": "lora", "r": 8}], HIGH_LR),
    DemoEntry("prompt tuning", [{"name": "prompt_tuning", "num_virtual_tokens": 20}], 1e-2),
    DemoEntry("freeze top 1", [{"name": "freeze", "top_blocks": 1}], HIGH_LR),
    DemoEntry("replay 25%", [{"name": "replay", "fraction": 0.25}], HIGH_LR),
    DemoEntry("self-replay 25%", [{"name": "self_replay", "fraction": 0.25}], HIGH_LR),
    DemoEntry("wise-ft 0.5", [{"name": "full"}, {"name": "wise_ft", "alpha": 0.5}], HIGH_LR),
    DemoEntry("lora+replay", [{"name": "lora", "r": 8}, {"name": "replay", "fraction": 0.25}],
              HIGH_LR),
]
QUICK_LABELS = ("full lr=1e-3", "full lr=1e-4", "lora r=8", "replay 25%")

# Shared by every entry, so that the comparison is fair.
COMMON: dict[str, Any] = {"model": "tiny", "data": "builtin:legal", "steps": 100, "batch_size": 8,
                          "seq_len": 128, "seed": 0, "warmup_steps": 10, "probe_n": 60,
                          "probe_batch_size": 64}
QUICK: dict[str, Any] = {"steps": 40, "probe_n": 24}


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def run_demo(out: Path = Path("runs/demo"), *, quick: bool = False, overwrite: bool = True,
             entries: list[DemoEntry] | None = None, settings: dict[str, Any] | None = None) -> dict:
    """Run every demo entry into ``out/<slug>/`` and write the comparison files in ``out``."""
    from retain.compare import probe_base
    from retain.comparison import write_comparison
    from retain.config import parse_config
    from retain.run import run

    if entries is None:
        entries = [e for e in DEMO if e.label in QUICK_LABELS] if quick else DEMO
    if not entries:
        raise UserError("the demo has no entries")
    common = {**COMMON, **(QUICK if quick else {}), **(settings or {})}
    out = Path(out)
    t0 = time.time()
    configs = [parse_config({**common, **e.settings, "strategies": e.strategies, "lr": e.lr,
                             "out": out / slug(e.label), "overwrite": overwrite})
               for e in entries]  # every mistake is found before anything runs
    before = probe_base(configs[0])
    labels, results = [], []
    for i, (e, cfg) in enumerate(zip(entries, configs), 1):
        print(f"[{i}/{len(entries)}] {e.label}", flush=True)
        results.append(run(cfg, before=before))
        labels.append(e.label)
    wall_s = time.time() - t0
    return write_comparison(out, labels, results, title="retain demo: tiny model, legal domain",
                            extra={"quick": quick, "wall_s": round(wall_s, 1)})
