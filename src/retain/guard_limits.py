"""The guard's limits and settings: ``"safety.refusal_rate>=0.9"`` parsed into a ``Limit``, the
``guard:`` block of a run config (``GuardConfig``), the period of its checks and the probes its
limits need. The guard itself (its checks, tests and rollbacks) is ``retain.guard``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retain.errors import UserError
from retain.metrics.forgetting import PROPORTION_METRICS

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
    # the weights a run ends with are scored once more, on the whole selection part of each
    # guarded probe (as many items as probe_n; verify_n: that many instead, for a verdict on
    # more items than the run reports on)
    verify: bool = True
    verify_n: int | None = Field(None, gt=0)

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
