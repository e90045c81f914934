"""The recorder: the run folder, written the same way by ``retain run`` and by a ``Trainer``.

    config.yaml     first: what ran
    metrics.jsonl   as the run goes: train records (``on_log``), probe and guard records (``log``);
                    each record also goes to the trackers (``report_to``) when there are any
    summary.csv     then, with
    results.json    last and atomically (``write``); built by ``results()`` from the run's parts

A run that fails after it started gets ``results.json`` with ``"status": "failed"``, its stage,
step and reason (``recording``); a user mistake found late leaves nothing behind. Only the main
process writes. Across a resume the recorder keeps the length of ``metrics.jsonl``: records
after the checkpoint are redone, so they are cut (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from retain.errors import UserError
from retain.report import results as rr
from retain.train import checkpoint as ckpt
from retain.train.callbacks.base import Callback, LoopState
from retain.train.sharding import model_class


def clean_out_dir(out: Path) -> None:
    """Remove what a run writes (results.json first: a crash now cannot leave old results
    looking current), keeping anything else the user put there."""
    (out / rr.RESULTS_FILE).unlink(missing_ok=True)
    for name in rr.RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in (rr.MODEL_DIR, ckpt.DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("fisher.safetensors", "mas_importance.safetensors"):
        (out / name).unlink(missing_ok=True)


def record_lines(path: Path) -> list[str]:
    """The record lines of a JSONL file (blank lines are not records), unparsed."""
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip()]


class Recorder(Callback):
    """Writes the run folder ``out`` (module doc). ``accelerator``: the run's, whose trackers get
    a copy of each record (None: no trackers). ``stage``: what the run is doing, for the failure
    record; the recipe sets it as it goes."""

    name = "recorder"
    decides = False  # never returns a Decision

    def __init__(self, out: str | Path, *, main: bool = True, accelerator=None):
        self.out, self.main, self.accelerator = Path(out), main, accelerator
        self.stage = "load"

    # -- the folder -----------------------------------------------------------------------------
    def create(self, config: dict[str, Any], *, clean: bool) -> None:
        """Make the folder (``clean``: remove a previous run's files first) and write
        ``config.yaml``."""
        if not self.main:
            return
        if clean:
            clean_out_dir(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        rr.write_text_atomic(self.out / rr.CONFIG_FILE,
                             yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    @contextmanager
    def recording(self, config: dict[str, Any], seed: int | None, *, mode: str,
                  barrier: Callable[[], None] = lambda: None) -> Iterator["Recorder"]:
        """The folder for a run of ``mode`` "new", "clean" or "resume" (kept as it is); inside,
        a ``UserError`` removes what the run wrote and any other failure writes the failure
        record. ``barrier``: every process waits there (the folder is looked at by all before
        the main process changes it, and ready before anyone goes on)."""
        created = not self.out.exists()
        barrier()
        if mode == "resume":
            self.out.mkdir(parents=True, exist_ok=True) if self.main else None
        else:
            self.create(config, clean=mode == "clean")
        barrier()
        try:
            yield self
        except UserError:
            if self.main and mode != "resume":
                shutil.rmtree(self.out) if created else clean_out_dir(self.out)
            raise
        except Exception as e:  # not KeyboardInterrupt: an interrupted run stays unfinished
            self.write_failure(e, seed, config)
            raise

    def write_failure(self, e: BaseException, seed: int | None, config: dict[str, Any], *,
                      step: int | None = None, checkpoint: Path | None = None) -> dict:
        """The failure record as results.json: the stage, the step (the error's own, else
        ``step``), the reason and the last checkpoint (``checkpoint``, else the run folder's).
        Written by the main process; returned."""
        last = checkpoint or ckpt.latest(self.out)
        own = getattr(e, "step", None)
        record = {**rr.header("failed", seed, config),
                  "failure": {"step": own if own is not None else step, "stage": self.stage,
                              "reason": getattr(e, "reason", None) or f"{type(e).__name__}: {e}",
                              "last_checkpoint": str(last) if last else None}}
        if self.main:
            rr.write_json_atomic(self.out / rr.RESULTS_FILE, record)
        return record

    # -- as the run goes ------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """One record into metrics.jsonl and to the trackers."""
        if self.main:
            rr.append_jsonl(self.out / rr.METRICS_FILE, record)
        if self.accelerator is not None:
            from retain.report.trackers import log_metrics

            log_metrics(self.accelerator, record)

    def on_log(self, state: LoopState, record: dict) -> None:
        self.log(record)

    def state_dict(self) -> dict[str, Any]:
        return {"metrics_lines": len(record_lines(self.out / rr.METRICS_FILE))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resumed: keep the records written up to the checkpoint (later ones are redone)."""
        if self.main:
            path = self.out / rr.METRICS_FILE
            rr.write_text_atomic(path, "".join(record_lines(path)[:state["metrics_lines"]]))

    # -- the end --------------------------------------------------------------------------------
    def write(self, results: dict[str, Any]) -> None:
        """summary.csv, then results.json (atomically, last)."""
        if self.main:
            rr.write_summary_csv(self.out / rr.SUMMARY_FILE, results)
            rr.write_json_atomic(self.out / rr.RESULTS_FILE, results)


def results(*, config: dict[str, Any], seed: int | None, strategies: Sequence,
            strategy_info: dict, model, model_info: dict[str, Any], data: dict[str, Any],
            training: dict[str, Any], before: list, after: list, base_state: dict,
            callbacks: Sequence[Callback] = (), **extra: Any) -> dict[str, Any]:
    """results.json of a finished run: the header, the strategies, ``model_info`` (see
    ``model_info``), ``data`` and ``training`` as the caller knows them, the outcome of ``before``
    vs ``after`` (probes, comparison, domain gain, drift from ``base_state``), each named
    callback's ``summary()`` (e.g. ``guard``), then ``extra``."""
    from retain.metrics.outcome import outcome
    from retain.strategies import describe, strategy_label

    out = {**rr.header("complete", seed, config),
           "strategy": strategy_label(strategies), "strategies": describe(strategies),
           "strategy_info": strategy_info, "model": model_info, "data": data,
           "training": training, **outcome(before, after, base_state, model)}
    for cb in callbacks:
        if cb.name and hasattr(cb, "summary"):
            out[cb.name] = cb.summary()
    return {**out, **extra}


def model_info(model, *, name: str, trainable: int, dtype, device, mixed: str) -> dict[str, Any]:
    """results.json's ``model``: name, architecture, parameters (all, and trainable while it
    trained), the dtype it was loaded in, its device and the mixed precision of training."""
    from retain.models import count_params

    return {"name": name, "architecture": model_class(model).__name__, "params": count_params(model),
            "trainable_params": trainable, "dtype": str(dtype).removeprefix("torch."),
            "device": str(device), "mixed_precision": mixed}

