"""The probe callback: what the model can do before training, every N steps, and after.

One object scores a run's probes for the recipe and for a ``Trainer`` alike: ``before`` (or
``reuse`` of a caller's before-results of the same probe set), ``on_step_end`` every ``every``
steps on the during-training probes, ``after``. Each scoring is logged as a ``probe`` record.
``score`` is the same scoring without a record (the guard's checks). The before-results ride in
checkpoints, so a resumed run never probes partly trained weights as "before".
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch

from retain.errors import UserError
from retain.train.callbacks.base import Callback, LoopState


def probe_keys(probes: Sequence) -> list[str]:
    """The sorted ``probe.metric`` keys a probe list reports."""
    return sorted(f"{p.name}.{p.metric}" for p in probes)


class ProbeCallback(Callback):
    """Scores ``probes`` (before and after) and ``during`` (every ``every`` steps; default: the
    same probes) on ``tokenizer``'s model, inside ``context()`` (e.g. autocast), ``batch_size``
    items at a time, against ``base_model`` for KL-to-base probes (settable until the first
    scoring). ``log(record)``: where probe records go (the recorder). Every process scores its
    share of the items. ``last``: ``(step, results)`` of the newest scoring."""

    name = "probe"
    decides = False  # never returns a Decision

    def __init__(self, tokenizer, probes: list, *, during: list | None = None, every: int = 0,
                 base_model: torch.nn.Module | None = None, batch_size: int = 32,
                 context: Callable[[], Any] = contextlib.nullcontext,
                 log: Callable[[dict], None] | None = None, progress: bool = False):
        self.tokenizer, self.probes = tokenizer, probes
        self.during = probes if during is None else during
        self.every, self.base_model, self.batch_size = every, base_model, batch_size
        self.context, self.progress = context, progress
        self.log = log or (lambda record: None)
        self.before: list | None = None
        self.last: tuple[int, list] | None = None

    def score(self, model: torch.nn.Module, probes: list, *, progress: bool = False) -> list:
        """``list[ProbeResult]`` of ``model`` on ``probes``, logging nothing."""
        from retain.probes import evaluate

        with self.context():
            return evaluate(model, self.tokenizer, probes, base_model=self.base_model,
                            batch_size=self.batch_size, progress=progress)

    def probe(self, model: torch.nn.Module, step: int, stage: str) -> list:
        res = self.score(model, self.during if stage == "during" else self.probes,
                         progress=self.progress)
        self.log({"event": "probe", "stage": stage, "step": step,
                  "results": {r.key: r.value for r in res}})
        self.last = (step, res)
        return res

    def measure_before(self, model: torch.nn.Module, step: int = 0) -> list:
        self.before = self.probe(model, step, "before")
        return self.before

    def reuse(self, before: list) -> list:
        """A caller's before-results (a comparison probes its base once): they must be of this
        probe set, or "after" would not measure what "before" did."""
        want, have = probe_keys(self.probes), sorted(r.key for r in before)
        if want != have:
            raise ValueError(f"the given before-results ({', '.join(have)}) are not of this "
                             f"run's probe set ({', '.join(want)}): take them from probe_set")
        self.log({"event": "probe", "stage": "before", "step": 0, "reused": True,
                  "results": {r.key: r.value for r in before}})
        self.before = list(before)
        return self.before

    def on_step_end(self, state: LoopState) -> None:
        if self.every and state.step % self.every == 0:
            self.probe(state.model, state.step, "during")

    def after(self, model: torch.nn.Module, step: int) -> list:
        return self.probe(model, step, "after")

    def state_dict(self) -> dict[str, Any]:
        return {"probes": probe_keys(self.probes),
                "before": [r.to_dict() for r in self.before or []]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from retain.probes.base import ProbeResult

        if state["probes"] != probe_keys(self.probes):
            raise UserError(f"the checkpoint's run probed {', '.join(state['probes'])}, this run "
                            f"probes {', '.join(probe_keys(self.probes))}: resume with the same "
                            f"probes, n, data and strategies, or start over")
        self.before = [ProbeResult(**r) for r in state["before"]]
