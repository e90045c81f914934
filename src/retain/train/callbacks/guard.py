"""The guard as a training callback: its checks every N steps (decisions the loop carries out),
the final check and rollback at train end, its state in checkpoints, its summary in results.

The limits, the tests and the decisions themselves are ``retain.guard.Guard``; this file only
puts one on the loop's events, for the recipe and for a ``Trainer`` alike.
"""

from __future__ import annotations

from typing import Any, Callable

from retain.guard import Guard
from retain.guard_limits import GuardConfig, guard_every
from retain.train.callbacks.base import Callback, Decision, LoopState


class GuardCallback(Callback):
    """The weights of the first step kept at train begin (unless resumed), a check every
    ``guard.every`` steps, the final check and the rollback at train end."""

    name = "guard"

    def __init__(self, guard: Guard):
        self.guard, self._resumed = guard, False

    def start(self, model) -> None:
        """Check the model before training: a limit it fails already is refused."""
        self.guard.start(model)

    def on_train_begin(self, state: LoopState) -> None:
        if not self._resumed:
            self.guard.keep(state.step, state.model)  # the model as the strategies prepared it

    def on_step_end(self, state: LoopState) -> Decision | None:
        if self.guard.due(state.step, state.max_steps):
            return self.guard.decide(state.step, state.model)
        return None

    def on_train_end(self, state: LoopState) -> None:
        self.guard.finish(state.step, state.model)

    @property
    def stopped(self) -> bool:
        return self.guard.stopped

    def state_dict(self) -> dict[str, Any]:
        return self.guard.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.guard.load_state_dict(state)
        self._resumed = True

    def summary(self) -> dict[str, Any]:
        return self.guard.summary()


def guard_scorer(probing, probes: list) -> Callable[[Any], list]:
    """``model -> list[ProbeResult]`` on ``probes`` through the run's probe callback (its
    context, base model and batch size), quietly: it runs inside the training bar."""
    return lambda model: probing.score(model, probes)


def guard_callback(config: GuardConfig, probing, probes: list, verify_probes: list, *,
                   probe_every: int, steps: int, log: Callable[[dict], None] | None = None,
                   main: bool = True) -> GuardCallback:
    """The guard of a run of ``steps`` steps, scoring through ``probing`` (a ``ProbeCallback``):
    its checks on ``probes`` (the guarded probes' selection part), its final check on
    ``verify_probes`` (the same at full size; empty or ``verify`` off: none). ``probe_every``:
    the run's probing period (the guard's default period). Every process checks; only the main
    process prints."""
    every = guard_every(config, probe_every, steps)
    score = guard_scorer(probing, probes)  # the checks' scorer first, the final check's second
    verify = guard_scorer(probing, verify_probes) if verify_probes and config.verify else None
    final = verify is not None  # the final check replaces a check at the last step
    guard = Guard(config, every, score=score, log=log,
                  say=None if main else (lambda line: None), verify=verify,
                  looks=steps // every - (final and steps % every == 0) + final)
    return GuardCallback(guard)
