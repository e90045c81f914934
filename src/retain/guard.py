"""The guard: limits on what a fine-tune may erode, checked on a cheap probe subset while training.

    guard: {limits: ["safety.refusal_rate>=0.9", "max_forgetting=0.05"], every: 10, n: 24}

Every ``every`` steps the guard scores the model on ``n`` items of each probe its limits name.
A check that meets every limit keeps an in-memory CPU copy of the trainable weights (for a PEFT
model: the adapter only). A limit counts as crossed when the check's whole 95% interval is
beyond it (``confirm: interval``; ``point`` judges the point estimate), so noise on a few items
does not stop a healthy run; but only a check whose point estimate meets every limit becomes the
last good checkpoint (a check in between trains on without being kept). When a limit is crossed,
training stops (``action: stop``), goes on (``keep``), or rolls back to the last good checkpoint
with the learning rate scaled by ``backoff_factor`` and goes on (``backoff``, at most
``max_backoffs`` times, then stop). At the end the final weights are judged by the point
estimate; failing, the last good checkpoint is restored. With ``verify`` (the default in a run)
the weights the run ends with are then scored on the run's full-size probes: if they fail there,
the last good checkpoint is restored and scored too, and a limit that still fails is reported
(``final_check`` in results), never hidden. All of this happens before the strategies finalize
and the after-probes run. A limit that already fails on the model before training is refused:
there is no checkpoint to fall back to. In the loop the guard is a callback
(``retain.train.callbacks.guard``) whose decisions the loop carries out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retain.errors import UserError
from retain.metrics.forgetting import PROPORTION_METRICS, oriented
from retain.train.callbacks.base import Decision

MAX_FORGETTING = "max_forgetting"
_LIMIT = re.compile(r"^\s*([A-Za-z_][\w\-]*(?:\.[A-Za-z_]\w*)?)\s*(>=|<=|==|=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Limit:
    key: str  # "safety.refusal_rate" (a probe.metric key) or "max_forgetting"
    op: str  # ">=", "<=", ">", "<"
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.key}{self.op}{self.threshold:g}"

    def ok(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return {">=": value >= self.threshold, "<=": value <= self.threshold,
                ">": value > self.threshold, "<": value < self.threshold}[self.op]


def parse_limit(text: str) -> Limit:
    """``"safety.refusal_rate>=0.9"``, ``"writing.ce_nats_per_token<=2.0"``, or
    ``"max_forgetting=0.05"`` (no retained proportion metric may drop by more than 0.05, oriented
    so that a drop is a loss); a malformed one is a UserError naming the text."""
    m = _LIMIT.match(str(text))
    if not m:
        raise UserError(f"guard limit {text!r}: expected probe.metric>=value, probe.metric<=value "
                        f"or max_forgetting=value, e.g. safety.refusal_rate>=0.9")
    key, op, raw = m.groups()
    try:
        threshold = float(raw)
    except ValueError:
        raise UserError(f"guard limit {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(threshold):
        raise UserError(f"guard limit {text!r}: the value must be a finite number")
    if key == MAX_FORGETTING:
        if op not in ("=", "==", "<=", "<"):
            raise UserError(f"guard limit {text!r}: max_forgetting takes =, <= or <, e.g. "
                            f"max_forgetting=0.05")
        if threshold < 0:
            raise UserError(f"guard limit {text!r}: max_forgetting must be >= 0")
        return Limit(key, "<" if op == "<" else "<=", threshold)
    if "." not in key:
        raise UserError(f"guard limit {text!r}: {key!r} is not probe.metric (e.g. math.accuracy) "
                        f"nor max_forgetting")
    if op in ("=", "=="):
        raise UserError(f"guard limit {text!r}: say >= or <= for a probe metric (= is only for "
                        f"max_forgetting)")
    return Limit(key, op, threshold)


class GuardConfig(BaseModel):
    """``guard:`` of a run config; a bare list (or string) of limits is accepted as ``limits``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    limits: list[str]  # stored normalized: "safety.refusal_rate>=0.9", "max_forgetting<=0.05"
    every: int | None = Field(None, gt=0)  # steps between checks (None: probe_every or steps/10)
    n: int = Field(24, gt=0)  # items per probe in a check: small, a check runs during training
    # stop: end training; keep: train on (still end on the last good check); backoff: roll back
    # to the last good check, scale the learning rate by backoff_factor, train on (at most
    # max_backoffs times, then stop)
    action: Literal["stop", "keep", "backoff"] = "stop"
    backoff_factor: float = Field(0.5, gt=0, lt=1)
    max_backoffs: int = Field(3, ge=1)
    # sequential: a limit counts as crossed when a one-sided test at alpha / (looks x tests)
    # says so (Bonferroni over every planned check, the final one included, and every limit:
    # the chance of any false alarm in the whole run is at most alpha); max_forgetting is a
    # paired test on the same items. interval: the check's whole 95% interval is beyond the
    # limit (per check: no run-wide rate); point: the point estimate is (the oldest rule)
    confirm: Literal["sequential", "interval", "point"] = "sequential"
    alpha: float = Field(0.05, gt=0, lt=0.5)  # the run-wide false-alarm rate of "sequential"
    # the weights a run ends with are scored once more on the run's full-size probes (probe_n)
    verify: bool = True

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"limits": [data]}
        if isinstance(data, list):
            return {"limits": data}
        return data

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, limits: Any) -> list[str]:
        if isinstance(limits, str):
            limits = [limits]
        if not isinstance(limits, list) or not limits:
            raise UserError("guard: give at least one limit, e.g. limits: [safety.refusal_rate>=0.9]")
        return [parse_limit(x).text for x in limits]

    def parsed(self) -> list[Limit]:
        return [parse_limit(x) for x in self.limits]


def guard_every(config: GuardConfig, probe_every: int, steps: int) -> int:
    """Steps between checks: the config's, else ``probe_every``, else a tenth of the run."""
    return config.every or probe_every or max(1, steps // 10)


def select_probes(probes: list, limits: list[Limit]) -> list:
    """The probes a check needs: those its limits name, and with ``max_forgetting`` every
    retained proportion probe. A limit naming no probe of the run is a UserError."""
    keys = {f"{p.name}.{p.metric}": p for p in probes}
    for lim in limits:
        if lim.key != MAX_FORGETTING and lim.key not in keys:
            raise UserError(f"guard limit {lim.text!r}: the run has no probe {lim.key!r} "
                            f"(it has: {', '.join(keys) or 'none'})")
    for lim in limits:  # a limit no proportion can meet is a typo, not sampling noise
        p = keys.get(lim.key)
        if p is not None and p.metric in PROPORTION_METRICS and not (
                lim.ok(0.0) or lim.ok(1.0) or (lim.op in (">=", ">") and lim.threshold < 1)
                or (lim.op in ("<=", "<") and lim.threshold > 0)):
            raise UserError(f"guard limit {lim.text!r}: {lim.key} is a proportion in [0, 1]; "
                            f"no model can meet it")
    wanted = {lim.key for lim in limits}
    retained = [k for k, p in keys.items() if p.capability != "domain" and p.metric in PROPORTION_METRICS]
    if MAX_FORGETTING in wanted:
        if not retained:
            raise UserError("guard: max_forgetting needs a retained probe with a proportion "
                            "metric (accuracy, refusal_rate, ...) among the run's probes")
        wanted |= set(retained)
    return [p for k, p in keys.items() if k in wanted]


class Guard:
    """The limits of one run, its checks, its last good checkpoint and its events.

    ``score(model) -> list[ProbeResult]`` scores the guard's probe subset; ``log(record)`` gets
    a ``{"event": "guard", ...}`` record per check; ``say(line)`` prints to the terminal."""

    def __init__(self, config: GuardConfig, every: int, score: Callable[[Any], list],
                 log: Callable[[dict], None] | None = None,
                 say: Callable[[str], None] | None = None,
                 verify: Callable[[Any], list] | None = None, looks: int | None = None):
        self.config, self.limits, self.every = config, config.parsed(), every
        # the planned looks at the data (checks, and the final check): the Bonferroni count
        self.looks = max(1, looks or 1)
        self.alpha_each: float | None = None  # per test and look; set once the tests are known
        self._items: dict[str, list[bool]] = {}  # the last scoring's per-item outcomes
        self.before_items: dict[str, list[bool]] = {}  # the guard's check before training
        self.before_full_items: dict[str, list[bool]] = {}  # the final check's items before
        self.score, self.log, self.say = score, log or (lambda r: None), say or _say
        self.verify = verify if config.verify else None  # scores the full-size probes
        self.before: dict[str, float] = {}
        self.before_full: dict[str, float] = {}  # the base on the full-size probes (verify)
        self.final_check: list[dict] = []  # verify's scorings of the weights the run ends with
        self.meta: dict[str, tuple[str, str]] = {}  # key -> (metric, capability)
        self.checks: list[dict] = []
        self.events: list[dict] = []
        self.good_step: int | None = None
        self._good_state: dict | None = None
        self._last_ok = True
        self.rolled_back_to_step: int | None = None
        self._ci: dict[str, tuple[float, float]] = {}
        self.stopped = False  # a limit was crossed and training stopped
        self.backoffs, self.lr_scale = 0, 1.0  # back-offs so far; the learning rate's factor

    # -- measuring -------------------------------------------------------------------------
    def _values(self, model, score: Callable[[Any], list] | None = None) -> dict[str, float]:
        res = (score or self.score)(model)
        for r in res:
            self.meta[r.key] = (r.metric, r.capability)
        self._ci = {r.key: (float(r.ci_low), float(r.ci_high)) for r in res}
        self._n = {r.key: int(r.n) for r in res}
        self._items = {r.key: [bool(i["ok"]) for i in r.items] for r in res
                       if r.items and all("ok" in i for i in r.items)}
        return {r.key: float(r.value) for r in res}

    def _end(self, key: str, value: float, upper: bool) -> float:
        """``value``, or with ``confirm: interval`` the upper/lower end of its 95% interval."""
        if self.config.confirm == "point":
            return value
        lo, hi = self._ci.get(key, (value, value))
        return hi if upper else lo

    def _forgetting(self, values: dict[str, float],
                    before: dict[str, float] | None = None) -> tuple[float, str | None]:
        """The largest oriented drop of a retained proportion metric since before training."""
        before = self.before if before is None else before
        worst, where = 0.0, None
        for key, v in values.items():
            metric, capability = self.meta[key]
            if capability == "domain" or metric not in PROPORTION_METRICS or key not in before:
                continue
            drop = oriented(metric, before[key]) - oriented(metric, v)
            if where is None or drop > worst:
                worst, where = drop, key
        return worst, where

    def _tests(self, values: dict[str, float]) -> int:
        """Tests per look: one per limit, one per retained proportion probe for max_forgetting."""
        retained = sum(1 for k in values if self.meta[k][1] != "domain"
                       and self.meta[k][0] in PROPORTION_METRICS)
        return sum(retained if lim.key == MAX_FORGETTING else 1 for lim in self.limits)

    def _sequential(self, values: dict[str, float], before: dict[str, float],
                    before_items: dict[str, list[bool]]) -> list[dict]:
        """The limits crossed by the run-wide test: a one-sided bound at ``alpha_each`` beyond the
        limit (Wilson for proportions, normal from the 95% interval otherwise); max_forgetting:
        the paired lower bound of each retained probe's drop on the same items (unpaired, from
        the bound of the value now, where the items do not pair)."""
        from retain.metrics.bounds import normal_bound, paired_drop_bound, wilson_bound, z_of

        if self.alpha_each is None:
            self.alpha_each = self.config.alpha / (self.looks * max(1, self._tests(values)))
        z = z_of(self.alpha_each)

        def bound(key: str, upper: bool) -> float:
            metric, v = self.meta[key][0], values[key]
            if metric in PROPORTION_METRICS:
                return wilson_bound(v, self._n.get(key, 0), z, upper)
            lo, hi = self._ci.get(key, (v, v))
            return normal_bound(v, lo, hi, z, upper)

        failed = []
        for lim in self.limits:
            if lim.key != MAX_FORGETTING:
                v = values.get(lim.key, math.nan)
                if not math.isfinite(v) or not lim.ok(bound(lim.key, lim.op in (">=", ">"))):
                    failed.append({"limit": lim.text, "value": v, "probe": lim.key})
                continue
            worst = None  # (bound of the drop, drop, key)
            for key, v in values.items():
                metric, capability = self.meta[key]
                if capability == "domain" or metric not in PROPORTION_METRICS or key not in before:
                    continue
                drop = oriented(metric, before[key]) - oriented(metric, v)
                b_ok, a_ok = before_items.get(key), self._items.get(key)
                if b_ok and a_ok and len(b_ok) == len(a_ok):
                    low = paired_drop_bound(b_ok, a_ok, z)
                else:  # the favourable end of the value now, against the point before
                    fav = bound(key, metric != "over_refusal_rate")
                    low = oriented(metric, before[key]) - oriented(metric, fav)
                if worst is None or low > worst[0]:
                    worst = (low, drop, key)
            if worst is not None and not lim.ok(worst[0]):
                failed.append({"limit": lim.text, "value": worst[1], "probe": worst[2]})
        return failed

    def _failures(self, values: dict[str, float], confirmed: bool = True,
                  before: dict[str, float] | None = None,
                  before_items: dict[str, list[bool]] | None = None) -> list[dict]:
        """The limits ``values`` fail, reported with the point values. When ``confirmed`` (and
        ``confirm: interval``) each limit is judged on the end of the check's 95% interval that
        is best for the model: a ">=" limit fails only if even the upper end is below it, and
        ``max_forgetting`` measures the drop to the favourable end (from ``before``, default
        the guard's own check before training)."""
        if confirmed and self.config.confirm == "sequential":
            return self._sequential(values, self.before if before is None else before,
                                    self.before_items if before_items is None else before_items)
        failed = []
        for lim in self.limits:
            if lim.key == MAX_FORGETTING:
                value, where = self._forgetting(values, before)
                judged = value
                if confirmed:
                    fav = {k: self._end(k, v, self.meta[k][0] != "over_refusal_rate")
                           for k, v in values.items()}
                    judged = self._forgetting(fav, before)[0]
            else:
                value, where = values.get(lim.key, math.nan), lim.key
                judged = self._end(lim.key, value, lim.op in (">=", ">")) if confirmed else value
            if not lim.ok(judged):
                failed.append({"limit": lim.text, "value": value, "probe": where})
        return failed

    # -- the run's hooks -------------------------------------------------------------------
    def start(self, model) -> None:
        """Score the model before training (the reference of ``max_forgetting``); refuse to
        guard a run whose limits fail already."""
        self.before = self._values(model)
        self.before_items = dict(self._items)
        failed = self._failures(self.before, confirmed=False)  # the base meets them, plainly
        self.checks.append({"step": 0, "stage": "before", "values": dict(self.before),
                            "passed": not failed})
        self.log({"event": "guard", "step": 0, "stage": "before", "values": self.before,
                  "passed": not failed})
        if failed:
            f = failed[0]
            raise UserError(
                f"guard: {f['limit']} already fails before training ({f['probe']} = "
                f"{f['value']:.3f} on {self.config.n} items per probe); loosen the limit, or raise "
                f"guard.n if that is sampling noise")
        if self.verify is not None and any(lim.key == MAX_FORGETTING for lim in self.limits):
            self.before_full = self._values(model, self.verify)  # what the final drop is from
            self.before_full_items = dict(self._items)
        self.say(f"guard: {', '.join(lim.text for lim in self.limits)} hold before training; "
                 f"checking every {self.every} steps on {self.config.n} items per probe")

    def keep(self, step: int, model) -> None:
        """Copy the trainable weights to CPU as the last checkpoint that met every limit."""
        self._good_state = {n: p.detach().to("cpu", copy=True)
                            for n, p in model.named_parameters() if p.requires_grad}
        self.good_step = step

    def check(self, step: int, model) -> bool:
        """Check the limits at ``step``; True when training should stop."""
        return self.decide(step, model).stop

    def decide(self, step: int, model) -> Decision:
        """Check the limits at ``step`` and say what the loop should do: nothing (they hold: the
        weights become the last good checkpoint), stop, train on (``keep``), or roll back to the
        last good checkpoint and scale the learning rate (``backoff``, up to ``max_backoffs``
        times, then stop)."""
        values = self._values(model)
        failed = self._failures(values)
        if self._judge(step, values, failed, model) or not failed:
            return Decision()  # kept as the last good checkpoint, or not evidence of a crossing
        act = self.config.action
        if act == "backoff" and self.backoffs < self.config.max_backoffs:
            self.backoffs += 1
            self.lr_scale *= self.config.backoff_factor
            for f in failed:
                self.events.append({"step": step, "action": "backoff", **f,
                                    "to_step": self.good_step, "lr_scale": self.lr_scale})
            self.say(f"guard: step {step}: {', '.join(f['limit'] for f in failed)} crossed -> "
                     f"back to step {self.good_step}, learning rate x{self.lr_scale:g} "
                     f"(back-off {self.backoffs} of {self.config.max_backoffs})")
            self._last_ok = True  # the weights go back to the last good check
            return Decision(restore=self._good_state, lr_scale=self.config.backoff_factor)
        action = "continue" if act == "keep" else "stop"
        self.stopped = action == "stop"
        for f in failed:
            self.events.append({"step": step, "action": action, **f})
            where = f" at {f['probe']}" if f["limit"].startswith(MAX_FORGETTING) else ""
            self.say(f"guard: step {step}: {f['limit']} crossed, value {f['value']:.3f}{where} "
                     f"-> {'stopping' if action == 'stop' else 'training on'}")
        return Decision(stop=self.stopped)

    def _judge(self, step: int, values: dict[str, float], failed: list[dict], model=None) -> bool:
        """Record the check of ``step``; True when its point estimates meet every limit (then
        its weights, when given, become the last good checkpoint). ``failed``: the limits it
        crossed by the evidence rule."""
        point_failed = self._failures(values, confirmed=False)
        self.checks.append({"step": step, "values": values, "passed": not point_failed})
        self.log({"event": "guard", "step": step, "values": values, "passed": not point_failed,
                  "failed": [f["limit"] for f in point_failed],
                  "crossed": [f["limit"] for f in failed]})
        self._last_ok = not point_failed
        if self._last_ok and model is not None:
            self.keep(step, model)
        return self._last_ok

    def finish(self, step: int, model) -> None:
        """After training, settle the weights the run ends with. With ``verify``: the final
        weights (unless the guard stopped training: then the last good checkpoint) are scored on
        the full-size probes; failing, the last good checkpoint is restored and scored too; a
        limit that still fails is an ``unmet`` event. Without: the final weights are judged on
        the small check by the point estimate (if the last check was earlier) and the last good
        checkpoint is restored when they fail."""
        if self.verify is not None:
            return self._finish_verified(step, model)
        last = self.checks[-1]["step"] if self.checks else 0
        if step != last and not self.stopped:
            values = self._values(model)
            self._judge(step, values, self._failures(values))
        if self._last_ok:
            self.say(f"guard: every limit holds at the end (step {step})" if not self.events else
                     f"guard: limits crossed during training, but the final step {step} meets "
                     f"every limit again")
            return
        self.restore(model)
        self.say(f"guard: rolled back to the checkpoint of step {self.good_step}, the last that "
                 f"met every limit")

    def _finish_verified(self, step: int, model) -> None:
        if self.stopped:
            self.restore(model)
            at = self.good_step
        else:
            at = step
        failed = self._score_full(at, model)
        if failed and at != self.good_step and self._good_state is not None:
            self.restore(model)
            self.say(f"guard: the final weights (step {at}) fail {failed[0]['limit']} on the "
                     f"full probes ({failed[0]['value']:.3f}): rolled back to step "
                     f"{self.good_step}, the last check that met every limit")
            at = self.good_step
            failed = self._score_full(at, model)
        if failed:
            for f in failed:
                self.events.append({"step": at, "action": "unmet", **f})
            values = ", ".join(f"{f['limit']} ({f['value']:.3f})" for f in failed)
            self.say(f"guard: WARNING: the weights the run ends with (step {at}) fail {values} "
                     f"on the full probes")
        elif at != step:
            self.say(f"guard: rolled back to the checkpoint of step {at}, which meets every "
                     f"limit on the full probes")
        else:
            self.say(f"guard: every limit holds at the end (step {step}) on the full probes")

    def _score_full(self, step: int, model) -> list[dict]:
        """Score the final check's probes (the selection parts); the limits they fail: by the
        run-wide test under ``sequential`` (the final check is one of its looks), else by the
        point estimate."""
        values = self._values(model, self.verify)
        failed = self._failures(values, confirmed=self.config.confirm == "sequential",
                                before=self.before_full or None,
                                before_items=self.before_full_items or None)
        self.final_check.append({"step": step, "values": values, "passed": not failed})
        self.log({"event": "guard", "step": step, "stage": "verify", "values": values,
                  "passed": not failed})
        return failed

    def restore(self, model) -> None:
        """Load the last good checkpoint into ``model`` (its trainable tensors, in place)."""
        from retain.models import load_state

        if self._good_state is None:
            raise RuntimeError("guard: no checkpoint to roll back to")
        load_state(model, self._good_state)
        self.rolled_back_to_step = self.good_step

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the guard: its checks and its last good weights."""
        return {"before": self.before, "meta": {k: list(v) for k, v in self.meta.items()},
                "checks": self.checks, "events": self.events, "good_step": self.good_step,
                "good_state": self._good_state, "last_ok": self._last_ok,
                "stopped": self.stopped, "backoffs": self.backoffs, "lr_scale": self.lr_scale,
                "before_full": self.before_full, "before_items": self.before_items,
                "before_full_items": self.before_full_items, "alpha_each": self.alpha_each}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's guard state (instead of ``start``)."""
        self.before, self.checks, self.events = state["before"], state["checks"], state["events"]
        self.meta = {k: tuple(v) for k, v in state["meta"].items()}
        self.good_step, self._good_state = state["good_step"], state["good_state"]
        self._last_ok = state["last_ok"]
        self.stopped, self.backoffs, self.lr_scale = (state["stopped"], state["backoffs"],
                                                      state["lr_scale"])
        self.before_full = state.get("before_full", {})
        self.before_items = state.get("before_items", {})
        self.before_full_items = state.get("before_full_items", {})
        self.alpha_each = state.get("alpha_each")

    def summary(self) -> dict[str, Any]:
        """``results["guard"]``: limits, events (step, limit, value, action, probe), the step
        rolled back to (None: the final weights met every limit), and every check's values."""
        return {"limits": [lim.text for lim in self.limits], "every": self.every,
                "n": self.config.n, "action": self.config.action, "confirm": self.config.confirm,
                "alpha": self.config.alpha, "looks": self.looks, "alpha_each": self.alpha_each,
                "events": self.events, "rolled_back_to_step": self.rolled_back_to_step,
                "backoffs": self.backoffs, "lr_scale": self.lr_scale, "checks": self.checks,
                "verify": self.verify is not None, "final_check": self.final_check}


def _say(line: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(line, markup=False)
