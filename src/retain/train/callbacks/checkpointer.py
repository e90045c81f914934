"""The checkpointer callback: everything a resume needs, every N steps and at a stop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from retain.train import checkpoint as ckpt
from retain.train.callbacks.base import Callback, LoopState
from retain.train.sharding import is_sharded, reshard


class Checkpointer(Callback):
    """Every ``every`` steps and at a stop: the trainable weights, optimizer, scheduler, scaler,
    every RNG (of every process), the loop's counters and ``extra()`` -> (tensors, JSON) of the
    run's own state, written atomically under ``run_dir/checkpoints``; the last ``keep`` kept.
    Put it last among the callbacks: a checkpoint holds the step's other decisions."""

    decides = False  # never returns a Decision

    def __init__(self, run_dir: str | Path, every: int, keep: int,
                 extra: Callable[[], tuple[dict[str, torch.Tensor], dict]] | None = None):
        self.run_dir, self.every, self.keep = Path(run_dir), every, keep
        self.extra = extra or (lambda: ({}, {}))
        self.seconds = 0.0  # time spent writing checkpoints
        self.last: Path | None = None  # the newest checkpoint written

    def on_step_end(self, state: LoopState) -> None:
        # Also at the step a callback stopped the run: a resume from it ends where it stopped.
        if self.every and (state.step % self.every == 0 or state.counters.get("stopped")):
            self.write(state)

    def write(self, state: LoopState) -> None:
        t0 = time.perf_counter()
        acc, main = state.accelerator, state.is_main
        tmp = ckpt.tmp_dir(self.run_dir, state.step)
        if main:
            tmp.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        ckpt.write_rng(tmp, acc.process_index)  # every process: its own RNG streams
        sharded, shards = is_sharded(state.model), None
        if sharded:  # (after probing the root group's weights are gathered whole)
            reshard(state.model)
        ck = self._checkpoint(state) if main or sharded else None
        if sharded:  # every process writes its shards of the weights, moments and run state
            opt_js, shapes = ckpt.write_tensors(tmp, ck, suffix=f"-rank{acc.process_index}")
            shards = {"world": acc.num_processes, "shapes": shapes, "optimizer": opt_js}
        acc.wait_for_everyone()
        if main:
            self.last = ckpt.save(self.run_dir, ck, keep=self.keep, shards=shards)
        acc.wait_for_everyone()
        self.seconds += time.perf_counter() - t0


    def _checkpoint(self, state: LoopState) -> ckpt.Checkpoint:
        tensors, js = self.extra()
        trainable = {n: p for n, p in state.model.named_parameters() if p.requires_grad}
        return ckpt.Checkpoint(
            step=state.step, trainable=trainable, optimizer=state.optimizer.state_dict(),
            scheduler=state.scheduler.state_dict(),
            scaler=state.scaler.state_dict() if state.scaler is not None else None,
            loop=state.counters, extra_tensors=tensors, extra=js)


def run_state(callbacks, strategies=()) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON) of the state a resume needs beside the loop's own: each strategy's and
    each named callback's ``state_dict``."""
    return ckpt.split_tree({"strategies": {s.name: s.state_dict() for s in strategies},
                            "callbacks": {cb.name: cb.state_dict() for cb in callbacks if cb.name}})


def load_run_state(tensors: dict[str, torch.Tensor], js: dict, callbacks) -> dict:
    """Give each named callback its state from ``run_state``'s output; returns the whole tree
    (``["strategies"]``: the strategies' states, which their ``prepare`` needs). A checkpoint of
    a run with other callbacks (a guard then, none now) is refused: it would resume another run."""
    from retain.errors import UserError

    tree = ckpt.join_tree(tensors, js)
    saved, now = set(tree["callbacks"]), {cb.name for cb in callbacks if cb.name}
    if saved != now:
        raise UserError(f"the checkpoint's run had {', '.join(sorted(saved)) or 'no callbacks'}, "
                        f"this one has {', '.join(sorted(now)) or 'none'}: resume with the same "
                        f"settings (probes, guard), or start over")
    for cb in callbacks:
        if cb.name:
            cb.load_state_dict(tree["callbacks"][cb.name])
    return tree
