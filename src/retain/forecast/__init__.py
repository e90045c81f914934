"""``retain forecast``: what a planned fine-tune will cost each capability, from a few cheap pilots.

    pilots (pilots.py)  ->  per capability: the law fitted (law.py)  ->  now, predicted at the
    planned steps with an 80% interval, the step each limit is crossed  ->  the verdict (the
    plan keeps every limit, or the most steps / the highest rate that does)  ->  per item: which
    reporting items are predicted to be lost (items.py)  ->  forecast.json

``check.py`` compares a forecast with the finished run (``retain forecast --check RUN``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from retain.errors import UserError

FORECAST_FILE = "forecast.json"
LEVEL = 0.8  # of the prediction intervals


def _selection(config, reporting: list, n: int) -> dict[str, Any]:
    """Per probe key, a selection part of up to ``n`` fresh items (not among the reporting items)
    from the same suite loaded with more items; probes without fresh items (the domain's
    held-out split, small files) are absent: their curve is fitted on their reporting items."""
    from retain.probe_set import split_selection
    from retain.probes import load_probes

    size = config.probe_n or max((len(p) for p in reporting), default=60)
    pool = load_probes(config.probes, n=size + n, seed=config.seed)
    out = {}
    for p in reporting:
        try:
            _, sel, sizes = split_selection([p], pool, n, config.seed)
        except UserError:
            continue  # an uncuttable kind (lm-eval, HumanEval): fitted on its reporting items
        key = f"{p.name}.{p.metric}"
        if sizes[key]["reporting"] == len(p):  # fresh items, not carved out of the reporting
            out[key] = sel[0]
    return out


def _subsample(probe, n: int, seed: int):
    """A seeded ``n`` of ``probe``'s items (all when it has no more, or cannot be cut): what the
    pilots score of a probe with no fresh items (e.g. the domain's held-out texts)."""
    import random

    from retain.probe_set import pool_field, with_items

    if len(probe) <= n or pool_field(probe) is None:
        return probe
    return with_items(probe, sorted(random.Random(seed).sample(range(len(probe)), n)))


def _check_limits(limits: Sequence, keys: dict[str, Any]) -> None:
    from retain.guard_limits import MAX_FORGETTING

    for lim in limits:
        if lim.key != MAX_FORGETTING and lim.key not in keys:
            raise UserError(f"limit {lim.text}: no probe {lim.key} in this plan's probe set "
                            f"({', '.join(sorted(keys))})")


def forecast(config, *, limits: Sequence[str] = (), budget: float = 0.2,
             rates: list[float] | None = None, points: int = 3, select_n: int = 24,
             out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Forecast the planned run ``config`` (a ``RunConfig``) and write ``out/forecast.json``
    (and the pilots' run folders under ``out/pilots``); returns the forecast. ``budget``: the
    pilots' steps as a share of the planned steps; ``rates``: the pilots' rates (default: the
    planned rate and twice it); ``points``: probe points per pilot; ``select_n``: items per
    probe the pilots are probed on (a selection part apart from the reported items)."""
    from retain.experiments.runner import probe_base
    from retain.forecast.law import lr_area
    from retain.forecast.pilots import PilotCallback, plan_pilots, point_steps
    from retain.guard_limits import parse_limit
    from retain.models import load_tokenizer
    from retain.preflight import check_writable
    from retain.probe_set import probe_set
    from retain.probes.base import ProbeResult
    from retain.report import results as rr
    from retain.run import run

    out = Path(out)
    parsed = [parse_limit(t) for t in limits]
    if points < 2:
        raise UserError(f"points={points}: a pilot needs at least 2 points for a curve")
    if select_n < 4:
        raise UserError(f"select_n={select_n}: give at least 4 items per probe")
    pilots = plan_pilots(config.steps, config.lr, budget, rates)
    check_writable(out)
    if (out / FORECAST_FILE).exists() and not overwrite:
        raise UserError(f"{out} holds a forecast already; pass --overwrite or another --out")
    config = config.model_copy(update={"guard": None, "probe_every": 0, "save_model": False,
                                       "checkpoint_every": 0, "resume": False})
    tok = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    reporting = probe_set(config, tok).probes
    by_key = {f"{p.name}.{p.metric}": p for p in reporting}
    _check_limits(parsed, by_key)
    selection = _selection(config, reporting, select_n)
    scored_by_key = {k: selection.get(k) or _subsample(p, select_n, config.seed)
                     for k, p in by_key.items()}
    scored = list(scored_by_key.values())

    t0 = time.perf_counter()
    before = probe_base(config)  # now: the reporting items, shared by every pilot
    base_s = time.perf_counter() - t0
    area = {"steps": config.steps, "warmup_steps": config.warmup_steps,
            "schedule": config.schedule}
    done, start = [], None  # start: the selection parts before training (first pilot's)
    for i, pilot in enumerate(pilots):
        # A pilot is a real short run of the plan, measured on the selection parts: its before
        # (measured once) and after are its first and last points.
        folder = out / "pilots" / f"lr={pilot['lr']:g}"
        cb = PilotCallback(tok, scored, reporting, point_steps(pilot["steps"], points),
                           at_start=i == 0, batch_size=config.probe_batch_size)
        t1 = time.perf_counter()
        res = run(config.model_copy(update={"lr": pilot["lr"], "out": str(folder),
                                            "overwrite": True}),
                  before=start, callbacks=[cb], probes=scored)
        if start is None:
            start = [ProbeResult(**r) for r in res["probes"]["before"]]
            cb.points[0]["values"] = {r.key: r.value for r in start}
        cb.points[-1]["values"] = {f"{r['probe']}.{r['metric']}": r["value"]
                                   for r in res["probes"]["after"]}
        done.append({**pilot, "folder": str(folder), "wall_s": time.perf_counter() - t1,
                     "trained_steps": res["training"]["steps"],
                     "points": [{**p, "x": lr_area(p["step"], lr=pilot["lr"], **area)}
                                for p in cb.points]})
    from retain.forecast.predict import predict

    body = predict(config, done, before, {k: len(p) for k, p in scored_by_key.items()},
                   set(selection), parsed, level=LEVEL)
    result = {**rr.header("complete", config.seed, config.model_dump(mode="json"),
                          kind="forecast"),
              "plan": {"lr": config.lr, "steps": config.steps, "warmup_steps": config.warmup_steps,
                       "schedule": config.schedule, "data": config.data,
                       "strategies": [s["name"] for s in config.strategies] or ["full"]},
              "budget": budget, "limits": [lim.text for lim in parsed],
              "pilots": done, "select_n": select_n, "base_probe_s": base_s,
              "pilot_wall_s": sum(p["wall_s"] for p in done),
              "before": [r.to_dict() for r in before], **body}
    out.mkdir(parents=True, exist_ok=True)
    rr.write_json_atomic(out / FORECAST_FILE, result)
    return result


def refit(out: str | Path, *, write: bool = True, planned_rate_only: bool = False,
          **options: Any) -> dict[str, Any]:
    """Recompute the forecast in ``out`` from its pilots' recorded points (no training, no
    probing): for a change of the law, or limits given after the fact. Rewrites forecast.json
    unless ``write`` is False; ``planned_rate_only``: as if only the first pilot had run;
    ``options``: of ``predict`` (e.g. ``proportion_link``)."""
    import json

    from retain.config import RunConfig
    from retain.forecast.predict import predict
    from retain.guard_limits import parse_limit
    from retain.probes.base import ProbeResult
    from retain.report import results as rr

    path = Path(out) / FORECAST_FILE
    fc = json.loads(path.read_text(encoding="utf-8"))
    config = RunConfig.model_validate(fc["config"])
    n = {c["key"]: c.get("scored_n") or min(fc["select_n"], c["n"]) for c in fc["capabilities"]}
    fresh = {c["key"] for c in fc["capabilities"] if c["fitted_on"] == "selection"}
    pilots = fc["pilots"][:1] if planned_rate_only else fc["pilots"]
    body = predict(config, pilots, [ProbeResult(**r) for r in fc["before"]],
                   n, fresh,
                   [parse_limit(t) for t in fc["limits"]], level=LEVEL, **options)
    fc.update(body)
    if write:
        rr.write_json_atomic(path, fc)
    return fc
