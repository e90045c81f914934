"""From the pilots' points to the forecast: each capability's law and prediction, the limits, the
verdict, and the ranked items (see ``retain.forecast``). Pure: numbers and probe results in,
forecast.json's body out."""

from __future__ import annotations

import math
from typing import Any, Sequence

from retain.forecast import items as item_signals
from retain.forecast.law import boot_laws, fit, link, lr_area, quantiles, rate_residual
from retain.metrics.forgetting import PROPORTION_METRICS, oriented

CURVE_POINTS = 25  # points of each predicted curve kept for the report's plot


def _start(pilots: list[dict], key: str, field: str) -> Any:
    """The value (or signals) at step 0: the first pilot's start point."""
    first = next((p for pl in pilots for p in pl["points"] if p["step"] == 0), None)
    return None if first is None else first[field].get(key)


def _series(pilots: list[dict], key: str, field: str) -> list[tuple[float, float, Any]]:
    """``(lr, x, value)`` of every pilot point after the start."""
    return [(pl["lr"], p["x"], p[field][key]) for pl in pilots for p in pl["points"]
            if p["step"] > 0 and key in p[field]]


def _link(row: dict):
    return link(row["metric"] in PROPORTION_METRICS, row["link_n"])


def _value_at(row: dict, x: float) -> float | None:
    """The point forecast of ``row``'s capability at area ``x``."""
    law = row["law"]
    if law is None:
        return None
    g, inv = _link(row)
    return inv(g(row["now"]) + law["c"] * max(x, 0.0) ** law["alpha"])


def capability(key: str, result, pilots: list[dict], x_of, steps: int, fitted_on: str,
               level: float, scored_n: int, seed: int = 0) -> dict[str, Any]:
    """One capability's forecast: ``result`` is its reporting probe before training (now),
    ``x_of(step)`` the planned run's learning-rate area, ``scored_n`` the items the pilots
    scored it on. The law is fitted in the link's space (``law.link``) on the pilots' changes
    from their start, and applied to the reporting value now."""
    import random

    now, metric = float(result.value), result.metric
    bounded = metric in PROPORTION_METRICS
    y0 = _start(pilots, key, "values")
    pts = _series(pilots, key, "values")
    g_fit, _ = link(bounded, scored_n)
    row = {"key": key, "capability": result.capability, "metric": metric,
           "higher_is_better": result.higher_is_better, "now": now, "n": result.n,
           "link": "logit" if bounded else "log", "link_n": int(result.n),
           "fitted_on": fitted_on, "start": y0, "law": None,
           "points": [{"lr": lr, "x": x, "step_value": y} for lr, x, y in pts]}
    xs = [x for _, x, _ in pts]
    dys = [g_fit(y) - g_fit(y0) for _, _, y in pts] if y0 is not None else []
    law = fit(xs, dys) if y0 is not None else None
    if law is None:
        return {**row, "predicted": None, "interval": None, "curve": []}
    g, inv = _link(row)
    # the noise of the measurement predicted: the reporting probe's own 95% half-width as an sd
    noise = max(0.0, (float(result.ci_high) - float(result.ci_low)) / (2 * 1.96))
    laws = boot_laws(xs, dys, seed=seed)
    rng = random.Random(seed)
    jitter = [rng.gauss(0.0, noise) for _ in laws]

    def band(x: float) -> tuple[float, float]:
        v = [inv(g(now) + b.delta(x)) + e for b, e in zip(laws, jitter)]
        return quantiles([min(1.0, max(0.0, y)) for y in v] if bounded else v, level)
    row["law"] = {"c": law.c, "alpha": law.alpha, "resid_sd": law.resid_sd, "n": law.n,
                  "form": f"{row['link']}(y) = {row['link']}(now) + c * area**alpha"}
    grid = sorted({max(1, round(steps * k / (CURVE_POINTS - 1))) for k in range(CURVE_POINTS)})
    curve = [{"step": 0, "x": 0.0, "value": now, "lo": now, "hi": now}]
    for s in grid:
        x = x_of(s)
        lo, hi = band(x)
        curve.append({"step": s, "x": x, "value": _value_at(row, x), "lo": lo, "hi": hi})
    return {**row, "rate_residual": {f"{lr:g}": r for lr, r in rate_residual(
                [(lr, x, d) for (lr, x, _), d in zip(pts, dys)], law).items()},
            "predicted": curve[-1]["value"], "interval": [curve[-1]["lo"], curve[-1]["hi"]],
            "curve": curve}


def _kept(limit, rows: dict[str, dict], x: float) -> bool | None:
    """Whether the point forecast at area ``x`` keeps ``limit`` (None: no law to say)."""
    from retain.guard import MAX_FORGETTING

    if limit.key == MAX_FORGETTING:
        verdicts = []
        for r in rows.values():
            if r["capability"] == "domain" or r["metric"] not in PROPORTION_METRICS:
                continue
            v = _value_at(r, x)
            if v is None:
                return None
            drop = oriented(r["metric"], r["now"]) - oriented(r["metric"], v)
            verdicts.append(limit.ok(drop))
        return all(verdicts)
    v = _value_at(rows[limit.key], x)
    return None if v is None else limit.ok(v)


def limits_and_verdict(config, rows: dict[str, dict], limits: Sequence) -> tuple[list, dict]:
    """Each limit at the planned end and the step it is first crossed (the planned schedule);
    the verdict: whether the plan keeps every limit, else the most steps (a plan of fewer steps,
    its own schedule) and the highest rate (the planned steps) that keep them all."""
    area = {"warmup_steps": config.warmup_steps, "schedule": config.schedule}
    T, lr = config.steps, config.lr
    out = []
    for lim in limits:
        crossed = next((s for s in range(1, T + 1) if _kept(lim, rows, lr_area(
            s, lr=lr, steps=T, **area)) is False), None)
        out.append({"limit": lim.text, "kept": _kept(lim, rows, lr_area(T, lr=lr, steps=T, **area)),
                    "crossed_at_step": crossed})
    if not limits:
        return out, {"keeps_all": None, "text": "no limits given: the forecast only"}
    if any(o["kept"] is None for o in out):
        return out, {"keeps_all": None, "text": "a limit's probe has no fitted law (see its "
                     "row): the forecast cannot judge it"}
    if all(o["kept"] for o in out):
        return out, {"keeps_all": True, "max_steps": T, "max_lr": lr,
                     "text": f"the plan keeps every limit ({T} steps at lr {lr:g})"}

    def all_kept(x: float) -> bool:
        return all(_kept(lim, rows, x) for lim in limits)
    max_steps = next((s for s in range(T, 0, -1)
                      if all_kept(lr_area(s, lr=lr, steps=s, **area))), None)
    full = lr_area(T, lr=1.0, steps=T, **area)
    max_lr = next((lr * f / 100 for f in range(99, 0, -1) if all_kept(lr * f / 100 * full)), None)
    text = (f"the plan crosses {', '.join(o['limit'] for o in out if not o['kept'])}: "
            + (f"at most {max_steps} steps at lr {lr:g}" if max_steps else "no number of steps "
               f"at lr {lr:g}") + " or "
            + (f"lr at most {max_lr:.3g} for {T} steps" if max_lr else "no rate down to 1% of "
               "it") + " keeps every limit (a point forecast); else a mitigation is needed "
            "(e.g. -s lora, -s replay, -s ewc: forecast it the same way)")
    return out, {"keeps_all": False, "max_steps": max_steps, "max_lr": max_lr, "text": text}


def items(key: str, result, pilots: list[dict], alpha: float, x_t: float,
          predicted: float | None) -> dict[str, Any] | None:
    """The reporting items of one probe ranked by how likely each is to be lost: among the items
    right now, the lowest predicted signal at the planned end first (the signal's own trend over
    the pilots, ``items.slopes``, with the capability's exponent). ``predicted_lost``: how many
    the capability forecast says go (its predicted drop times the items)."""
    start = _start(pilots, key, "signals")
    series = _series(pilots, key, "signals")
    if start is None or not series or result.metric not in PROPORTION_METRICS:
        return None  # no signals for this kind, or no pass/fail items to lose
    xs = [0.0] + [x for _, x, _ in series]
    b = item_signals.slopes(xs, [start] + [s for _, _, s in series], alpha)
    final = [s0 + bi * x_t ** alpha for s0, bi in zip(start, b)]
    ok = [bool(it.get("ok")) for it in result.items]
    ranked = sorted((i for i in range(len(ok)) if ok[i]), key=lambda i: final[i])
    drop = 0.0
    if predicted is not None:
        drop = oriented(result.metric, float(result.value)) - oriented(result.metric, predicted)
    k = min(len(ranked), max(0, round(drop * len(ok))))
    return {"key": key, "predicted_lost": k, "scored": len(ranked),
            "risk": {str(i): -final[i] for i in ranked},  # higher: more likely lost
            "top": [{"index": i, "rank": r + 1, "prompt": str(result.items[i].get("prompt", ""))[:200],
                     "signal_now": start[i], "signal_predicted": final[i],
                     "predicted_lost": r < k}
                    for r, i in enumerate(ranked[:20])]}


def predict(config, pilots: list[dict], before: list, scored: dict, fresh: set,
            limits: Sequence, *, level: float) -> dict[str, Any]:
    """forecast.json's body: ``capabilities``, ``limits``, ``verdict``, ``items``. ``scored``:
    probe key -> the probe the pilots scored; ``fresh``: the keys scored on items apart from
    the reported ones (the others on a share of the reported items)."""
    area = {"steps": config.steps, "warmup_steps": config.warmup_steps,
            "schedule": config.schedule}

    def x_of(step: int) -> float:
        return lr_area(step, lr=config.lr, **area)
    now = {r.key: r for r in before}
    rows = {k: capability(k, now[k], pilots, x_of, config.steps,
                          "selection" if k in fresh else "reporting", level, len(p),
                          seed=config.seed)
            for k, p in scored.items()}
    checked, verdict = limits_and_verdict(config, rows, limits)
    x_t = x_of(config.steps)
    ranked = {}
    for k, r in rows.items():
        alpha = r["law"]["alpha"] if r["law"] else 1.0
        got = items(k, now[k], pilots, alpha, x_t, r["predicted"])
        if got is not None:
            ranked[k] = got
    return {"x_planned": x_t, "capabilities": list(rows.values()), "limit_checks": checked,
            "verdict": verdict, "items": ranked}
