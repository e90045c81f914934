"""`retain demo`: the forgetting cliff and its cures on the built-in model, in minutes on a CPU.

One fine-tune of the built-in chat model ("tiny") on the built-in new domain (legal contracts),
under each run of the compare file ``demo.yaml`` next to this module (how its settings were
picked is written there), with the same data, steps, batch and seed for all. ``retain compare``
runs it: one run folder per entry (``out/<label>-seed0/``; repeating the demo reuses the complete
ones), ``summary.csv`` (all runs, a ``strategy`` column), ``comparison.json`` (with ``quick`` and
``wall_s``), ``capabilities.png`` and ``tradeoff.png``, and the printed table.

Adding a strategy to the demo is one line in ``demo.yaml``; its ``quick:`` key (runs and keys
for ``--quick``) is the only one ``retain compare`` does not use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from retain.config import read_yaml
from retain.errors import UserError
from retain.experiments.compare import run_compare
from retain.experiments.runner import entry_label

DEMO_FILE = Path(__file__).with_name("demo.yaml")


def _pick(runs: list, labels: Sequence[str], where: str) -> list:
    missing = set(labels) - {entry_label(e) for e in runs}
    if missing:
        raise UserError(f"{where}: no run labelled {', '.join(sorted(missing))} in {DEMO_FILE}")
    return [e for e in runs if entry_label(e) in labels]


def demo_data(quick: bool = False) -> dict[str, Any]:
    """``demo.yaml`` as a compare file's data: with ``quick``, its ``quick:`` runs and keys."""
    data = read_yaml(DEMO_FILE)
    fast = dict(data.pop("quick", None) or {})
    if quick:
        data["runs"] = _pick(data["runs"], fast.pop("runs", []), "quick.runs")
        data.update(fast)
    return data


def run_demo(out: Path | None = None, *, quick: bool = False, overwrite: bool = True,
             labels: Sequence[str] | None = None, settings: dict[str, Any] | None = None) -> dict:
    """Run (or resume) the demo into ``out`` (default: the file's ``runs/demo``) and write its
    comparison folder; ``labels`` keeps those runs alone, ``settings`` replaces base keys."""
    data = demo_data(quick)
    if labels is not None:
        data["runs"] = _pick(data["runs"], labels, "labels")
    data.update(settings or {})
    if not data["runs"]:
        raise UserError("the demo has no runs")
    return run_compare(DEMO_FILE, out=out, overwrite=overwrite, data=data, extra={"quick": quick})


SEQUENCE_FILE = Path(__file__).with_name("demo_sequence.yaml")


def run_sequence_demo(out: Path | None = None, *, overwrite: bool = True) -> dict:
    """``demo_sequence.yaml``: legal -> support -> recipes under four runs (``retain sequence``)."""
    from retain.experiments.sequence import run_sequence

    return run_sequence(SEQUENCE_FILE, out=out, overwrite=overwrite)
