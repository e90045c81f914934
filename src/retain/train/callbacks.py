"""What happens beside the optimizer step, as callbacks with the events of
``transformers.TrainerCallback``: train begin, log, step end, train end.

A callback reads the loop's state and returns a ``Decision`` from ``on_step_end`` (stop, restore
a kept state, scale the learning rate; ``True`` is short for stop); the loop carries it out, so
nothing changes the model or the optimizer behind the loop's back. Here: ``EveryN`` (run a
function every N steps: probes during training), ``Checkpointer``; the guard's callback lives in
``retain.guard``. State a callback keeps across a resume goes through ``state_dict`` /
``load_state_dict``, and what it reports into ``results.json`` through ``summary``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from retain.train import checkpoint as ckpt


@dataclass
class LoopState:
    """The loop as a callback sees it. ``model`` is the unwrapped model (no DDP wrapper)."""

    step: int
    max_steps: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    accelerator: Any
    counters: dict[str, Any] = field(default_factory=dict)  # JSON: tokens, history, window, ...

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class Decision:
    """What a callback asks of the loop at a step's end; the loop carries it out, in this order:
    load ``restore`` (trainable tensors by name; AdamW's moments are reset, as they belong to
    the weights left behind), multiply the learning rate by ``lr_scale`` from now on, ``stop``."""

    stop: bool = False
    restore: dict[str, torch.Tensor] | None = None
    lr_scale: float | None = None


def as_decision(x: Decision | bool | None) -> Decision:
    return x if isinstance(x, Decision) else Decision(stop=bool(x))


class Callback:
    """Default events do nothing; a callback overrides the ones it needs. ``name``: the key of
    its ``state_dict`` in checkpoints and of its ``summary`` in results.json (None: neither)."""

    name: str | None = None

    def on_train_begin(self, state: LoopState) -> None:
        pass

    def on_log(self, state: LoopState, record: dict) -> None:
        pass

    def on_step_end(self, state: LoopState) -> Decision | bool | None:
        return None

    def on_train_end(self, state: LoopState) -> None:
        pass


class EveryN(Callback):
    """``fn(step, model)`` every ``every`` steps (0: never), e.g. the probes during training."""

    def __init__(self, every: int, fn: Callable[[int, torch.nn.Module], Any]):
        self.every, self.fn = every, fn

    def on_step_end(self, state: LoopState) -> None:
        if self.every and state.step % self.every == 0:
            self.fn(state.step, state.model)


class Checkpointer(Callback):
    """Every ``every`` steps and at a stop: the trainable weights, optimizer, scheduler, scaler, every RNG (of
    every process), the loop's counters and ``extra()`` -> (tensors, JSON) of the run's own state,
    written atomically under ``run_dir/checkpoints``; the last ``keep`` are kept."""

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
        acc.wait_for_everyone()
        if main:
            tensors, js = self.extra()
            trainable = {n: p for n, p in state.model.named_parameters() if p.requires_grad}
            self.last = ckpt.save(self.run_dir, ckpt.Checkpoint(
                step=state.step, trainable=trainable, optimizer=state.optimizer.state_dict(),
                scheduler=state.scheduler.state_dict(),
                scaler=state.scaler.state_dict() if state.scaler is not None else None,
                loop=state.counters, extra_tensors=tensors, extra=js), keep=self.keep)
        acc.wait_for_everyone()
        self.seconds += time.perf_counter() - t0
