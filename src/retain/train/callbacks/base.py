"""The callback protocol: what happens beside the optimizer step, with the events of
``transformers.TrainerCallback`` (train begin, log, step end, train end).

A callback reads the loop's state and returns a ``Decision`` from ``on_step_end`` (stop, restore
a kept state, scale the learning rate; ``True`` is short for stop); ``apply_decision`` carries it
out on any model, optimizer and scheduler (retain's loop and a ``transformers.Trainer`` alike), so
nothing changes the model or the optimizer behind the loop's back. State a callback keeps across
a resume goes through ``state_dict`` / ``load_state_dict``, and what it reports into
``results.json`` through ``summary``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


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
    main: bool | None = None  # the main process (None: ask the accelerator)

    @property
    def is_main(self) -> bool:
        return self.main if self.main is not None else self.accelerator.is_main_process


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


def apply_decision(d: Decision, model: torch.nn.Module, optimizer=None, scheduler=None) -> bool:
    """Carry out ``d`` on ``model`` (unwrapped), ``optimizer`` and ``scheduler`` (a torch
    ``LRScheduler``, or accelerate's wrapper of one); returns ``d.stop``. A restore loads the kept
    trainable tensors and clears the optimizer's moments (they belong to the weights left
    behind); a learning-rate scale multiplies the schedule's peak and the next step's rate."""
    from retain.models import load_state

    if d.restore is not None:
        load_state(model, d.restore)
        if optimizer is not None:
            optimizer.state.clear()
    if d.lr_scale is not None:
        sched = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler
        if sched is not None and hasattr(sched, "base_lrs"):
            sched.base_lrs = [lr * d.lr_scale for lr in sched.base_lrs]
        for g in (optimizer.param_groups if optimizer is not None else []):
            g["lr"] *= d.lr_scale
    return d.stop


class Callback:
    """Default events do nothing; a callback overrides the ones it needs. ``name``: the key of
    its ``state_dict`` in checkpoints and of its ``summary`` in results.json (None: neither).
    ``decides``: whether ``on_step_end`` may return a Decision; under several processes the loop
    makes them agree on it with one all-gather per step, which a callback that never decides
    (False) is spared."""

    name: str | None = None
    decides: bool = True

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

    decides = False

    def __init__(self, every: int, fn: Callable[[int, torch.nn.Module], Any]):
        self.every, self.fn = every, fn

    def on_step_end(self, state: LoopState) -> None:
        if self.every and state.step % self.every == 0:
            self.fn(state.step, state.model)
