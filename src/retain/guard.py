"""The guard: limits on what a fine-tune may erode, checked on a cheap probe subset while training.

    guard: {limits: ["safety.refusal_rate>=0.9", "max_forgetting=0.05"], every: 10, n: 24}

Every ``every`` steps the guard scores the model on ``n`` items of each probe its limits name.
One rule (``confirm``) decides "crossed" everywhere: during training, for the last good
checkpoint, and at the end. ``sequential`` (the default): a one-sided test rejects "the limit
holds" at ``alpha`` over the whole run (Bonferroni over every planned look and test);
``interval``: the check's whole 95% interval is beyond the limit; ``point``: the point estimate
is. A check that crosses no limit keeps an in-memory CPU copy of the trainable weights (for a
PEFT model: the adapter only) as the last good checkpoint, so a point estimate below a limit
inside the noise is no failure anywhere. When a limit is crossed, training stops (``action:
stop``), goes on (``keep``), or rolls back to the last good checkpoint with the learning rate
scaled by ``backoff_factor`` and goes on (``backoff``, at most ``max_backoffs`` times, then
stop). At the end (``verify``, the default in a run) the weights the run ends with are scored
on the final check (the whole selection part, ``probe_n`` items or ``verify_n``) and judged by
the same rule: crossing a limit there, the last good checkpoint is restored (a ``rollback``
event with the step kept, the steps thrown away and the evidence) and scored too, and a limit
that still fails is reported (``unmet``), never hidden. A final check on fewer than ``WEAK_N``
items per probe is said to be a weak verdict. All of this happens before the strategies finalize
and the after-probes run. A limit that already fails on the model before training is refused:
there is no checkpoint to fall back to. In the loop the guard is a callback
(``retain.train.callbacks.guard``) whose decisions the loop carries out.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from retain.errors import UserError
from retain.guard_limits import MAX_FORGETTING, GuardConfig
from retain.metrics.forgetting import PROPORTION_METRICS, oriented
from retain.train.callbacks.base import Decision

WEAK_N = 100  # a final check on fewer items per probe is a weak verdict (said, with guard.verify_n)


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
        limit (``_crossed_at``)."""
        from retain.metrics.bounds import z_of

        if self.alpha_each is None:
            self.alpha_each = self.config.alpha / (self.looks * max(1, self._tests(values)))
        return self._crossed_at(values, before, before_items, z_of(self.alpha_each))

    def _crossed_at(self, values: dict[str, float], before: dict[str, float],
                    before_items: dict[str, list[bool]], z: float) -> list[dict]:
        """The limits a one-sided bound ``z`` standard errors to the model's side still fails:
        Wilson for proportions, normal from the 95% interval otherwise; max_forgetting: the
        paired lower bound of each retained probe's drop on the same items (unpaired, from the
        bound of the value now, where the items do not pair). A negative ``z`` is a bound to
        the other side (the p-value's search walks through it)."""
        from retain.metrics.bounds import normal_bound, paired_drop_bound, wilson_bound

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
        """The limits ``values`` fail, reported with the point values. ``confirmed``: by the
        run's rule (``confirm``), each failure with its evidence (``_evidence``); else by the
        point estimate (only the check before training is judged so). ``sequential``: the
        run-wide test; ``interval``: the end of the check's 95% interval that is best for the
        model (a ">=" limit fails only if even the upper end is below it; ``max_forgetting``
        measures the drop to the favourable end); ``point``: the point estimate. ``before``:
        what ``max_forgetting`` is measured from (default: the guard's check before training)."""
        before = self.before if before is None else before
        before_items = self.before_items if before_items is None else before_items
        if confirmed and self.config.confirm == "sequential":
            failed = self._sequential(values, before, before_items)
        else:
            failed = self._by_interval(values, confirmed, before)
        if confirmed:
            for f in failed:
                f.update(self._evidence(f, values, before, before_items))
        return failed

    def _by_interval(self, values: dict[str, float], confirmed: bool,
                     before: dict[str, float]) -> list[dict]:
        """``confirm: interval`` (``confirmed``) or the point estimate (not, or ``point``)."""
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

    def _evidence(self, failure: dict, values: dict[str, float], before: dict[str, float],
                  before_items: dict[str, list[bool]]) -> dict[str, Any]:
        """What a crossing rests on: the probe's score now with its 95% interval and item count,
        the score before (max_forgetting), the one-sided p-value of "the limit holds" and the
        error rate the rule compares it with (``alpha_each``; ``interval``: 0.025, the end of a
        95% interval; ``point``: none)."""
        key = failure["probe"]
        lo, hi = self._ci.get(key, (math.nan, math.nan))
        alpha = {"sequential": self.alpha_each, "interval": 0.025}.get(self.config.confirm)
        out = {"score": values.get(key), "ci": [lo, hi], "n": self._n.get(key),
               "p_value": self._p_value(failure["limit"], values, before, before_items),
               "alpha": alpha}
        if failure["limit"].startswith(MAX_FORGETTING):
            out["before"] = before.get(key)
        return out

    def _p_value(self, limit: str, values: dict[str, float], before: dict[str, float],
                 before_items: dict[str, list[bool]]) -> float:
        """The run-wide test's one-sided p-value for ``limit``: the error rate at which its bound
        would sit exactly on the limit (found by bisection on z; the bounds are monotone in z)."""
        from statistics import NormalDist

        def crossed(z: float) -> bool:
            return any(f["limit"] == limit
                       for f in self._crossed_at(values, before, before_items, z))

        lo, hi = -10.0, 10.0
        if crossed(hi) or not crossed(lo):
            return 1.0 - NormalDist().cdf(hi if crossed(hi) else lo)
        for _ in range(60):  # crossed(lo) and not crossed(hi)
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if crossed(mid) else (lo, mid)
        return 1.0 - NormalDist().cdf(lo)

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

    def due(self, step: int, last: int) -> bool:
        """Whether ``step`` of a run of ``last`` steps gets a check: every ``every`` steps, but
        not the last step when the final check will judge those weights (a check there would
        make them the last good checkpoint, leaving the final check nothing to roll back to)."""
        return step % self.every == 0 and not (step == last and self.verify is not None)

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
        if self._judge(step, values, failed, model):
            return Decision()  # no limit crossed: kept as the last good checkpoint
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
        """Record the check of ``step``; True when no limit is crossed by the run's rule (then
        its weights, when given, become the last good checkpoint: one rule decides "crossed"
        and "good", so a point estimate below a limit inside the noise fails nothing).
        ``failed``: the limits it crossed by that rule."""
        below = [f["limit"] for f in self._failures(values, confirmed=False)]
        self.checks.append({"step": step, "values": values, "passed": not failed,
                            "ci": {k: list(v) for k, v in self._ci.items()}, "n": dict(self._n),
                            "below": below})
        self.log({"event": "guard", "step": step, "values": values, "passed": not failed,
                  "below": below, "crossed": [f["limit"] for f in failed]})
        self._last_ok = not failed
        if self._last_ok and model is not None:
            self.keep(step, model)
        return self._last_ok

    def finish(self, step: int, model) -> None:
        """After training, settle the weights the run ends with, by the rule of the checks. With
        ``verify``: the final weights (unless the guard stopped training: then the last good
        checkpoint) are scored on the final check's probes; crossing a limit there, the last
        good checkpoint is restored (a ``rollback`` event) and scored too; a limit that still
        fails is an ``unmet`` event. Without: the final weights are judged on a last small check
        (if the last check was earlier) and the last good checkpoint is restored when they
        cross a limit (a ``rollback`` event)."""
        if self.verify is not None:
            return self._finish_verified(step, model)
        last = self.checks[-1]["step"] if self.checks else 0
        failed: list[dict] = []
        if step != last and not self.stopped:
            values = self._values(model)
            failed = self._failures(values)
            self._judge(step, values, failed)
        if self._last_ok:
            self.say(f"guard: every limit holds at the end (step {step})" if not self.events else
                     f"guard: limits crossed during training, but the final step {step} meets "
                     f"every limit again")
            return
        at = self.checks[-1]["step"] if self.checks else step
        self._rollback(at, failed, model)

    def _finish_verified(self, step: int, model) -> None:
        if self.stopped:
            self._rollback(self.checks[-1]["step"] if self.checks else step, [], model)
            at = self.good_step
        else:
            at = step
        failed = self._score_full(at, model)
        if failed and at != self.good_step and self._good_state is not None:
            self._rollback(at, failed, model)
            at = self.good_step
            failed = self._score_full(at, model)
            self.events[-1]["kept"] = self._kept()
        if failed:
            for f in failed:
                self.events.append({"step": at, "action": "unmet", **f})
            values = ", ".join(f"{f['limit']} ({f['value']:.3f})" for f in failed)
            self.say(f"guard: WARNING: the weights the run ends with (step {at}) fail {values} "
                     f"on the final check")
        elif at != step:
            self.say(f"guard: the checkpoint of step {at} meets every limit on the final check")
        else:
            self.say(f"guard: every limit holds at the end (step {step}) on the final check")
        if self.weak_verdict():
            self.say(f"guard: the final check scored {self.final_n()} items per probe: a weak "
                     f"verdict (a 95% interval on so few spans about +-{self._spread():.2f}); "
                     f"set guard.verify_n for a larger one")

    def _rollback(self, at: int, failed: list[dict], model) -> None:
        """Restore the last good checkpoint at the end of training: one ``rollback`` event with
        the step kept, the steps thrown away and the evidence (each crossed limit with its
        score, interval and p-value; after a stop, the stop's)."""
        self.restore(model)
        crossed = failed or [{k: v for k, v in e.items() if k not in ("step", "action")}
                             for e in self.events if e["step"] == at and e["action"] in ("stop", "continue")]
        self.events.append({"step": at, "action": "rollback", "to_step": self.good_step,
                            "discarded": [self.good_step + 1, at], "crossed": crossed,
                            "kept": self._kept()})
        why = "; ".join(evidence_text(f) for f in crossed)
        self.say(f"guard: rolled back at the end of training: the run ends with step "
                 f"{self.good_step}'s weights, steps {self.good_step + 1}-{at} thrown away ({why})")

    def _kept(self) -> dict[str, Any]:
        """The scores of the checkpoint rolled back to: its final check when scored, else its
        check during training."""
        src = next((c for c in reversed(self.final_check) if c["step"] == self.good_step), None)
        src = src or next((c for c in reversed(self.checks) if c["step"] == self.good_step), {})
        return {"step": self.good_step, "values": src.get("values", {}), "ci": src.get("ci", {}),
                "n": src.get("n", {})}

    def _score_full(self, step: int, model) -> list[dict]:
        """Score the final check's probes (the selection parts); the limits they cross by the
        run's rule (under ``sequential`` the final check is one of its looks), with evidence."""
        values = self._values(model, self.verify)
        failed = self._failures(values, before=self.before_full or None,
                                before_items=self.before_full_items or None)
        self.final_check.append({"step": step, "values": values, "passed": not failed,
                                 "ci": {k: list(v) for k, v in self._ci.items()},
                                 "n": dict(self._n)})
        self.log({"event": "guard", "step": step, "stage": "verify", "values": values,
                  "passed": not failed})
        return failed

    def final_n(self) -> int | None:
        """The fewest items per probe the final check scored (None: no final check yet)."""
        ns = [n for c in self.final_check for n in (c.get("n") or {}).values()]
        return min(ns) if ns else None

    def weak_verdict(self) -> bool:
        """True when the final check scored fewer than ``WEAK_N`` items of some probe."""
        n = self.final_n()
        return n is not None and n < WEAK_N

    def _spread(self) -> float:
        """The widest half-width of a 95% interval in the last final check."""
        ci = (self.final_check[-1].get("ci") or {}).values() if self.final_check else []
        return max(((hi - lo) / 2 for lo, hi in ci if math.isfinite(hi - lo)), default=0.0)

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
                "verify": self.verify is not None, "final_check": self.final_check,
                "final_n": self.final_n(), "weak_verdict": self.weak_verdict()}


def evidence_text(f: dict) -> str:
    """"instructions.accuracy>=0.8: instructions.accuracy 0.625 [0.43, 0.79] on 24 items,
    p=0.004" (a crossed limit; max_forgetting: the drop and the score before)."""
    lo, hi = (f.get("ci") or [math.nan, math.nan])[:2]
    score = f.get("score", f.get("value"))
    text = str(f.get("limit"))
    if isinstance(score, (int, float)):
        text += f": {f.get('probe')} {score:.3f}"
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and math.isfinite(lo):
        text += f" [{lo:.2f}, {hi:.2f}]"
    if f.get("n"):
        text += f" on {f['n']} items"
    if isinstance(f.get("before"), (int, float)):
        text += f" (before {f['before']:.3f}, a drop of {f.get('value', math.nan):.3f})"
    if isinstance(f.get("p_value"), (int, float)):
        text += f", p={f['p_value']:.2g}"
        if isinstance(f.get("alpha"), (int, float)):
            text += f" <= {f['alpha']:.2g}"
    return text


def event_text(e: dict) -> str:
    """One line for a guard event of ``results["guard"]["events"]`` (terminal and report)."""
    act = e.get("action")
    if act == "rollback":
        lo, hi = (e.get("discarded") or [None, None])[:2]
        kept = e.get("kept") or {}
        read = ", ".join(f"{k} {v:.3f}" for k, v in (kept.get("values") or {}).items()
                         if isinstance(v, (int, float)))
        why = "; ".join(evidence_text(f) for f in e.get("crossed") or [])
        return (f"step {e.get('step')}: rolled back to step {e.get('to_step')}'s weights, steps "
                f"{lo}-{hi} thrown away" + (f" ({why})" if why else "")
                + (f"; step {e.get('to_step')} read {read}" if read else ""))
    if act == "unmet":
        return (f"step {e.get('step')}: the weights the run ends with still fail "
                f"{evidence_text(e)}")
    verb = {"stop": "stopped", "continue": "trained on", "backoff":
            f"back to step {e.get('to_step')}, learning rate x{e.get('lr_scale', 1):g}"}
    return f"step {e.get('step')}: crossed {evidence_text(e)} -> {verb.get(act, act)}"


def _say(line: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(line, markup=False)
