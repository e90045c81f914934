"""The forecast's pilots: short real runs of the planned settings (``retain.run.run`` with one more
callback), probed densely on cheap parts of the probe set.

A pilot trains under the planned schedule (``steps`` of the plan, so its learning rates are the
planned run's first ones) and stops after ``stop_at`` steps. At its start (first pilot only: the
base is the same for all) and at ``points`` evenly spaced steps, ``PilotCallback`` scores the
selection parts of the retained probes (items the run's report does not use) and takes the
per-item signals of the reporting probes (``items.py``: forward passes only, no generation).
"""

from __future__ import annotations

import math
from typing import Any

from retain.errors import UserError
from retain.train.callbacks.base import Callback, Decision, LoopState

MIN_PILOT_STEPS = 4  # a pilot shorter than this has no curve to fit


def plan_pilots(steps: int, lr: float, budget: float,
                rates: list[float] | None = None) -> list[dict[str, Any]]:
    """``[{"lr", "steps"}]``: the pilots a budget of ``budget`` x the planned ``steps`` buys.
    Default rates: the planned rate and twice it (the higher rate covers more learning-rate area
    per step, so the fit sees further along the axis it extrapolates on) when the budget gives
    each pilot at least ``MIN_PILOT_STEPS``; else the planned rate alone."""
    if not 0 < budget <= 1:
        raise UserError(f"pilot budget {budget:g}: give a share of the planned steps in (0, 1]")
    total = math.floor(budget * steps)
    if rates is None:
        rates = [lr, 2 * lr] if total // 2 >= MIN_PILOT_STEPS else [lr]
    if any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise UserError(f"pilot rates {rates}: every rate must be a positive number")
    each = total // len(rates)
    if each < MIN_PILOT_STEPS:
        raise UserError(f"a pilot budget of {budget:g} x {steps} steps gives {each} step(s) per "
                        f"pilot for {len(rates)} rate(s); at least {MIN_PILOT_STEPS} are needed: "
                        f"raise --budget or give fewer --rates")
    return [{"lr": r, "steps": each} for r in rates]


def point_steps(stop_at: int, points: int) -> list[int]:
    """``points`` steps evenly spaced up to ``stop_at`` (the last one is ``stop_at``)."""
    return sorted({max(1, round(stop_at * (k + 1) / points)) for k in range(points)})


class PilotCallback(Callback):
    """A pilot's own measurements beside the run's probing: the capability values on
    ``selection`` at ``steps[:-1]`` (the run's before- and after-probes are the first and last
    points), the per-item signals of ``reporting`` at the start (when ``at_start``) and at the
    last of ``steps`` (a slope per item needs no more, and they cost a pass over every reported
    item); stops the run at the last of ``steps``. ``points``: ``[{"step", "values":
    {key: value}, "signals": {key: [per item]}}]``."""

    def __init__(self, tokenizer, selection: list, reporting: list, steps: list[int], *,
                 at_start: bool, batch_size: int = 32):
        from retain.forecast.items import supports

        self.tokenizer, self.selection, self.steps = tokenizer, selection, steps
        self.reporting = [p for p in reporting if supports(p)]
        self.at_start, self.batch_size = at_start, batch_size
        self.points: list[dict[str, Any]] = []

    def _measure(self, model, step: int, values: bool, signal: bool = True) -> None:
        from retain.forecast.items import signals
        from retain.probes import evaluate

        res = evaluate(model, self.tokenizer, self.selection, batch_size=self.batch_size,
                       progress=False) if values else []
        self.points.append({
            "step": step, "values": {r.key: r.value for r in res},
            "signals": {f"{p.name}.{p.metric}": signals(model, self.tokenizer, p,
                                                        batch_size=self.batch_size)
                        for p in (self.reporting if signal else [])}})

    def on_train_begin(self, state: LoopState) -> None:
        if self.at_start and state.step == 0:
            self._measure(state.model, 0, values=False)

    def on_step_end(self, state: LoopState) -> Decision | None:
        if state.step in self.steps:
            last = state.step >= self.steps[-1]
            self._measure(state.model, state.step, values=not last, signal=last)
        return Decision(stop=True) if state.step >= self.steps[-1] else None
