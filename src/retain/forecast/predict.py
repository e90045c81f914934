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
TOP_ITEMS = 20  # items listed per probe in forecast.json's ranked list (all are scored)
# The links (``law.link``), chosen by benchmarks/forecast_validation.py over the variants it lists
# (each domain's plans predicted by the variant best on the other two): the identity for both
# proportions (asin and logit were within 0.03 of its error) and cross-entropy (the log grew a
# rising loss exponentially: 2.2 nats of error against 5.9).
PROPORTION_LINK = "identity"
CE_LINK = "identity"


def _start(pilots: list[dict], key: str, field: str) -> Any:
    """The value (or signals) at step 0: the first pilot's start point."""
    first = next((p for pl in pilots for p in pl["points"] if p["step"] == 0), None)
    return None if first is None else first[field].get(key)


def _series(pilots: list[dict], key: str, field: str,
            lr0: float) -> list[tuple[float, float, Any]]:
    """``(r, S, value)`` of every pilot point after the start: its rate as a multiple of the
    plan's ``lr0``, its schedule area (``x / lr``), the value."""
    return [(pl["lr"] / lr0, p["x"] / pl["lr"], p[field][key]) for pl in pilots
            for p in pl["points"] if p["step"] > 0 and key in p[field]]


def _link(row: dict):
    return link(row["metric"] in PROPORTION_METRICS, row["link_n"], row["link"])


def _value_at(row: dict, s: float, r: float = 1.0) -> float | None:
    """The point forecast of ``row``'s capability after schedule area ``s`` at ``r`` x the plan's
    rate."""
    law = row["law"]
    if law is None:
        return None
    g, inv = _link(row)
    return inv(g(row["now"]) + law["c"] * r ** law["beta"] * max(s, 0.0) ** law["alpha"])


def capability(key: str, result, pilots: list[dict], s_of, steps: int, lr0: float,
               fitted_on: str, level: float, scored_n: int, seed: int = 0,
               proportion_link: str = PROPORTION_LINK, alpha: float | None = None,
               ce_link: str = CE_LINK, backtest: bool = True) -> dict[str, Any]:
    """One capability's forecast: ``result`` is its reporting probe before training (now),
    ``s_of(step)`` the planned run's schedule area, ``lr0`` its rate, ``scored_n`` the items the pilots
    scored it on. The law is fitted in the link's space (``law.link``) on the pilots' changes
    from their start, and applied to the reporting value now."""
    import random

    now, metric = float(result.value), result.metric
    bounded = metric in PROPORTION_METRICS
    y0 = _start(pilots, key, "values")
    pts = _series(pilots, key, "values", lr0)
    kind = proportion_link if bounded else ce_link
    g_fit, _ = link(bounded, scored_n, kind)
    row = {"key": key, "capability": result.capability, "metric": metric,
           "higher_is_better": result.higher_is_better, "now": now, "n": result.n,
           "link": kind, "link_n": int(result.n), "scored_n": scored_n,
           "fitted_on": fitted_on, "start": y0, "law": None,
           "points": [{"lr": r * lr0, "x": r * lr0 * sa, "step_value": y} for r, sa, y in pts]}
    rs, ss = [r for r, _, _ in pts], [sa for _, sa, _ in pts]
    dys = [g_fit(y) - g_fit(y0) for _, _, y in pts] if y0 is not None else []
    law = fit(ss, dys, rs, alpha) if y0 is not None else None
    if law is None:
        return {**row, "predicted": None, "interval": None, "curve": []}
    g, inv = _link(row)
    # the noise of the measurement predicted: the reporting probe's own 95% half-width as an sd
    noise = max(0.0, (float(result.ci_high) - float(result.ci_low)) / (2 * 1.96))
    laws = boot_laws(ss, dys, rs, alpha=alpha, seed=seed)
    rng = random.Random(seed)
    jitter = [rng.gauss(0.0, noise) for _ in laws]
    # the law's own error when it extrapolated inside the pilots, grown to each distance
    bt = _backtest(ss, dys, rs, alpha) if backtest else None
    spread = [rng.gauss(0.0, 1.0) for _ in laws]

    def extra(sa: float) -> float:
        if bt is None or sa <= bt[1]:
            return 0.0
        a = law.alpha
        return bt[0] * (sa ** a - bt[1] ** a) / max(bt[1] ** a - bt[2] ** a, 1e-12)

    def band(sa: float) -> tuple[float, float]:
        sd = extra(sa)
        v = [inv(g(now) + b.delta(sa) + sd * z) + e for b, e, z in zip(laws, jitter, spread)]
        return quantiles([min(1.0, max(0.0, y)) for y in v] if bounded else v, level)
    row["law"] = {"c": law.c, "alpha": law.alpha, "beta": law.beta, "rates": law.rates,
                  "resid_sd": law.resid_sd, "n": law.n,
                  "backtest_sd": bt[0] if bt else None,
                  "form": f"{row['link']}(y) = {row['link']}(now) + c * r**beta * S**alpha"}
    grid = sorted({max(1, round(steps * k / (CURVE_POINTS - 1))) for k in range(CURVE_POINTS)})
    curve = [{"step": 0, "x": 0.0, "value": now, "lo": now, "hi": now}]
    for st in grid:
        sa = s_of(st)
        lo, hi = band(sa)
        curve.append({"step": st, "x": lr0 * sa, "value": _value_at(row, sa), "lo": lo,
                      "hi": hi})
    return {**row, "rate_residual": {f"{r * lr0:g}": v for r, v in rate_residual(
                [(r, sa, d) for (r, sa, _), d in zip(pts, dys)], law).items()},
            "predicted": curve[-1]["value"], "interval": [curve[-1]["lo"], curve[-1]["hi"]],
            "curve": curve}


def _backtest(ss: list, dys: list, rs: list, alpha) -> tuple[float, float, float] | None:
    """(rms error, last area, the area before it) of the law fitted without each pilot's last
    point and asked for it: how far off the law went extrapolating one stretch inside the
    pilots. None when too few points are left to fit."""
    last = max(ss)
    keep = [i for i, sa in enumerate(ss) if sa < last]
    held = [i for i, sa in enumerate(ss) if sa == last]
    if len({ss[i] for i in keep}) < 2 or not held:
        return None
    sub = fit([ss[i] for i in keep], [dys[i] for i in keep], [rs[i] for i in keep], alpha)
    if sub is None:
        return None
    err = [dys[i] - sub.delta(ss[i], rs[i]) for i in held]
    return math.sqrt(sum(e * e for e in err) / len(err)), last, max(ss[i] for i in keep)


def _kept(limit, rows: dict[str, dict], s: float, rate: float = 1.0) -> bool | None:
    """Whether the point forecast after schedule area ``s`` at ``rate`` x the plan's rate keeps
    ``limit`` (None: no law to say)."""
    from retain.guard_limits import MAX_FORGETTING

    if limit.key == MAX_FORGETTING:
        verdicts = []
        for r in rows.values():
            if r["capability"] == "domain" or r["metric"] not in PROPORTION_METRICS:
                continue
            v = _value_at(r, s, rate)
            if v is None:
                return None
            drop = oriented(r["metric"], r["now"]) - oriented(r["metric"], v)
            verdicts.append(limit.ok(drop))
        return all(verdicts)
    v = _value_at(rows[limit.key], s, rate)
    return None if v is None else limit.ok(v)


def limits_and_verdict(config, rows: dict[str, dict], limits: Sequence) -> tuple[list, dict]:
    """Each limit at the planned end and the step it is first crossed (the planned schedule);
    the verdict: whether the plan keeps every limit, else the most steps (a plan of fewer steps,
    its own schedule) and the highest rate (the planned steps) that keep them all."""
    area = {"lr": 1.0, "warmup_steps": config.warmup_steps, "schedule": config.schedule}
    T, lr = config.steps, config.lr
    out = []
    for lim in limits:
        crossed = next((s for s in range(1, T + 1) if _kept(lim, rows, lr_area(
            s, steps=T, **area)) is False), None)
        out.append({"limit": lim.text, "kept": _kept(lim, rows, lr_area(T, steps=T, **area)),
                    "crossed_at_step": crossed})
    if not limits:
        return out, {"keeps_all": None, "text": "no limits given: the forecast only"}
    if any(o["kept"] is None for o in out):
        return out, {"keeps_all": None, "text": "a limit's probe has no fitted law (see its "
                     "row): the forecast cannot judge it"}
    if all(o["kept"] for o in out):
        return out, {"keeps_all": True, "max_steps": T, "max_lr": lr,
                     "text": f"the plan keeps every limit ({T} steps at lr {lr:g})"}

    def all_kept(s: float, r: float = 1.0) -> bool:
        return all(_kept(lim, rows, s, r) for lim in limits)
    max_steps = next((s for s in range(T, 0, -1) if all_kept(lr_area(s, steps=s, **area))), None)
    full = lr_area(T, steps=T, **area)
    max_lr = next((lr * f / 100 for f in range(99, 0, -1) if all_kept(full, f / 100)), None)
    text = (f"the plan crosses {', '.join(o['limit'] for o in out if not o['kept'])}: "
            + (f"at most {max_steps} steps at lr {lr:g}" if max_steps else "no number of steps "
               f"at lr {lr:g}") + " or "
            + (f"lr at most {max_lr:.3g} for {T} steps" if max_lr else "no rate down to 1% of "
               "it") + " keeps every limit (a point forecast); else a mitigation is needed "
            "(e.g. -s lora, -s replay, -s ewc: forecast it the same way)")
    return out, {"keeps_all": False, "max_steps": max_steps, "max_lr": max_lr, "text": text}


def items(key: str, result, pilots: list[dict], law: dict | None, s_t: float, lr0: float,
          predicted: float | None) -> dict[str, Any] | None:
    """The reporting items of one probe ranked by how likely each is to be lost: among the items
    right now, the lowest predicted signal at the planned end first (the signal's own trend over
    the pilots, ``items.slopes``, with the capability's exponents). ``predicted_lost``: how many
    the capability forecast says go (its predicted drop times the items)."""
    start = _start(pilots, key, "signals")
    series = _series(pilots, key, "signals", lr0)
    if start is None or not series or result.metric not in PROPORTION_METRICS:
        return None  # no signals for this kind, or no pass/fail items to lose
    alpha, beta = (law["alpha"], law["beta"]) if law else (1.0, 1.0)
    zs = [r ** beta * sa ** alpha for r, sa, _ in series]  # the law's axis at each point
    b = item_signals.slopes(zs, start, [sig for _, _, sig in series])
    final = [s0 + bi * s_t ** alpha for s0, bi in zip(start, b)]
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
                    for r, i in enumerate(ranked[:TOP_ITEMS])]}


def predict(config, pilots: list[dict], before: list, scored_n: dict[str, int], fresh: set,
            limits: Sequence, *, level: float, proportion_link: str = PROPORTION_LINK,
            alpha: float | None = None, ce_link: str = CE_LINK,
            backtest: bool = True) -> dict[str, Any]:
    """forecast.json's body: ``capabilities``, ``limits``, ``verdict``, ``items``. ``scored_n``:
    probe key -> the items the pilots scored it on; ``fresh``: the keys scored on items apart
    from the reported ones (the others on a share of the reported items)."""
    area = {"lr": 1.0, "steps": config.steps, "warmup_steps": config.warmup_steps,
            "schedule": config.schedule}

    def s_of(step: int) -> float:
        return lr_area(step, **area)
    now = {r.key: r for r in before}
    rows = {k: capability(k, now[k], pilots, s_of, config.steps, config.lr,
                          "selection" if k in fresh else "reporting", level, n,
                          seed=config.seed, proportion_link=proportion_link, alpha=alpha,
                          ce_link=ce_link, backtest=backtest)
            for k, n in scored_n.items()}
    checked, verdict = limits_and_verdict(config, rows, limits)
    s_t = s_of(config.steps)
    ranked = {}
    for k, r in rows.items():
        got = items(k, now[k], pilots, r["law"], s_t, config.lr, r["predicted"])
        if got is not None:
            ranked[k] = got
    return {"x_planned": config.lr * s_t, "capabilities": list(rows.values()), "limit_checks": checked,
            "verdict": verdict, "items": ranked}
