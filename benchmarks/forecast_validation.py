"""``retain forecast`` against the runs it forecast, beside two naive baselines (part 13).

Twelve planned runs on the built-in model: 3 built-in domains (legal, support, recipes) x 2 rates
x full fine-tuning and LoRA (r=8), 300 planned steps, batch 8 x 128 tokens, seed 0, the default
probe set (7 retained probes + the domain's 2) at 60 items, 10 warm-up steps then cosine. Rates:
full 3e-4 and 1e-3 (1e-3 is the built-in model's cliff), LoRA 1e-3 and 3e-3 (LoRA moves fewer
weights; its usual rates are higher). Each plan is forecast with the defaults (pilot budget 20%:
pilots of 30 steps at the planned rate and at twice it, 3 points each, 24 selection items per
probe), then run for real (its before-results are the forecast's base probing, reused).

Per capability (probe.metric) over the plans: the mean absolute error of the predicted after-score
of the forecast and of the baselines, "no change" (after = now) and "linear" (the planned-rate
pilot's change from its start, per step, least squares through the start, extrapolated to the
planned steps, bounded to [0, 1] for proportions); the coverage of the forecast's 80% intervals;
the item-level AUROC (reporting items right before training; lost = wrong after the real run)
where a probe lost some items and kept some; the pilots' wall time as a share of the real run's
(its training and after-probes plus the base probing it would have done).

    OMP_NUM_THREADS=2 python benchmarks/forecast_validation.py [--steps 300] [--only legal] \
        [--out benchmarks/forecast_validation.json]

Plans whose forecast and run are both in runs/forecast_validation/ are read, not redone;
``--refit`` recomputes their forecasts from the recorded pilots (a change of the law, seconds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DOMAINS = ["legal", "support", "recipes"]
METHODS = {"full": ([{"name": "full"}], [3e-4, 1e-3]), "lora": ([{"name": "lora", "r": 8}],
                                                                 [1e-3, 3e-3])}
BASE = ["model=tiny", "batch_size=8", "seq_len=128", "seed=0", "warmup_steps=10",
        "probe_n=60", "probe_batch_size=64", "progress=false"]


def plans(steps: int, only: list[str]) -> list[dict]:
    out = []
    for d in DOMAINS:
        if only and d not in only:
            continue
        for method, (strategies, rates) in METHODS.items():
            for lr in rates:
                out.append({"domain": d, "method": method, "lr": lr, "steps": steps,
                            "strategies": strategies,
                            "name": f"{d}-{method}-lr{lr:g}"})
    return out


def linear_baseline(fc: dict, cap: dict) -> float:
    """The planned-rate pilot's change per step (least squares through its start), extrapolated."""
    pilot = fc["pilots"][0]
    pts = [(p["step"], p["values"][cap["key"]]) for p in pilot["points"]
           if p["step"] > 0 and cap["key"] in p["values"]]
    y0 = cap["start"]
    slope = sum(s * (y - y0) for s, y in pts) / max(sum(s * s for s, _ in pts), 1e-12)
    v = cap["now"] + slope * fc["plan"]["steps"]
    from retain.metrics.forgetting import PROPORTION_METRICS

    return min(1.0, max(0.0, v)) if cap["metric"] in PROPORTION_METRICS else max(0.0, v)


def one(plan: dict, root: Path, refit: bool = False) -> dict:
    from retain.config import load_config
    from retain.forecast import forecast
    from retain.forecast.check import check
    from retain.probes.base import ProbeResult
    from retain.run import run

    folder = root / plan["name"]
    cfg = load_config(None, BASE + [f"data=builtin:{plan['domain']}", f"lr={plan['lr']}",
                                    f"steps={plan['steps']}", f"out={folder / 'run'}",
                                    f"strategies={json.dumps(plan['strategies'])}",
                                    "overwrite=true"])
    fc_file, run_file = folder / "forecast" / "forecast.json", folder / "run" / "results.json"
    if not fc_file.exists():
        forecast(cfg, out=folder / "forecast", overwrite=True)
    elif refit:  # the law recomputed from the recorded pilots
        from retain.forecast import refit as refit_forecast

        refit_forecast(folder / "forecast")
    fc = json.loads(fc_file.read_text())
    if not run_file.exists():
        run(cfg, before=[ProbeResult(**r) for r in fc["before"]])
    res = json.loads(run_file.read_text())
    ch = check(folder / "forecast", folder / "run")
    return {"plan": plan, "forecast": fc, "run": res, "check": ch,
            "forecast_dir": str(folder / "forecast")}


def summarize(done: list[dict]) -> dict:
    per_key: dict[str, dict] = {}
    costs = []
    for d in done:
        fc, res, ch = d["forecast"], d["run"], d["check"]
        after = {r["key"]: r for r in ch["capabilities"]}
        for cap in fc["capabilities"]:
            if cap["key"] not in after or cap["predicted"] is None:
                continue
            actual = after[cap["key"]]["actual"]
            row = per_key.setdefault(cap["key"], {"forecast": [], "no_change": [], "linear": [],
                                                  "covered": [], "auroc": []})
            row["forecast"].append(abs(cap["predicted"] - actual))
            row["no_change"].append(abs(cap["now"] - actual))
            row["linear"].append(abs(linear_baseline(fc, cap) - actual))
            row["covered"].append(after[cap["key"]]["covered"])
        for it in ch["items"]:
            if it["auroc"] is not None:
                per_key.setdefault(it["key"], {}).setdefault("auroc", []).append(it["auroc"])
        full_run = res["wall_s"] + fc["base_probe_s"]
        costs.append({"plan": d["plan"]["name"], "pilot_s": fc["pilot_wall_s"],
                      "base_probe_s": fc["base_probe_s"], "run_s": full_run,
                      "pilot_share": fc["pilot_wall_s"] / full_run,
                      "pilot_train_share": sum(p["trained_steps"] for p in fc["pilots"])
                      / res["training"]["steps"]})

    def mean(v):
        return sum(v) / len(v) if v else None
    table = {k: {"plans": len(r.get("forecast", [])), "mae_forecast": mean(r.get("forecast", [])),
                 "mae_no_change": mean(r.get("no_change", [])),
                 "mae_linear": mean(r.get("linear", [])),
                 "coverage_80": mean([float(c) for c in r.get("covered", [])]),
                 "item_auroc": mean(r.get("auroc", [])), "auroc_probes": len(r.get("auroc", []))}
             for k, r in per_key.items()}
    prop = {k: r for k, r in per_key.items() if not k.endswith("ce_nats_per_token")}
    allf = [x for r in prop.values() for x in r.get("forecast", [])]
    alln = [x for r in prop.values() for x in r.get("no_change", [])]
    alll = [x for r in prop.values() for x in r.get("linear", [])]
    allc = [float(x) for r in per_key.values() for x in r.get("covered", [])]
    alla = [x for r in per_key.values() for x in r.get("auroc", [])]
    ce = [k for k in per_key if k.endswith("ce_nats_per_token")]
    return {"per_capability": table, "overall": {  # MAE: proportions (CE is in nats)
        "mae_forecast": mean(allf), "mae_no_change": mean(alln), "mae_linear": mean(alll),
        "mae_ce_forecast": mean([x for k in ce for x in per_key[k]["forecast"]]),
        "mae_ce_no_change": mean([x for k in ce for x in per_key[k]["no_change"]]),
        "mae_ce_linear": mean([x for k in ce for x in per_key[k]["linear"]]),
        "coverage_80": mean(allc), "item_auroc": mean(alla),
        "pilot_share_mean": mean([c["pilot_share"] for c in costs]),
        "pilot_share_max": max((c["pilot_share"] for c in costs), default=None),
        "pilot_train_share": mean([c["pilot_train_share"] for c in costs])},
        "costs": costs}


VARIANTS = [{"proportion_link": link, "ce_link": ce, "alpha": a, "planned_rate_only": only}
            for link in ("asin", "identity", "logit") for ce in ("log", "identity")
            for a in (None, 0.3, 0.5) for only in (False, True)]


def variant_name(v: dict) -> str:
    return (f"{v['proportion_link']}/{v['ce_link']}, alpha "
            f"{'fitted' if v['alpha'] is None else v['alpha']}, "
            f"{'planned rate only' if v['planned_rate_only'] else 'both rates'}")


def refitted(done: list[dict], variant: dict) -> list[dict]:
    """``done`` with each forecast recomputed under ``variant`` (in memory) and re-checked."""
    from retain.forecast import refit
    from retain.forecast.check import compare

    out = []
    for d in done:
        fc = refit(Path(d["forecast_dir"]), write=False, **variant)
        out.append({**d, "forecast": fc, "check": compare(fc, d["run"])})
    return out


def variants(done: list[dict]) -> dict:
    """Every variant of the law on every plan (proportions' MAE), and a leave-one-domain-out
    estimate of choosing among them: the variant best on two domains, scored on the third."""
    by = {variant_name(v): (v, refitted(done, v)) for v in VARIANTS}
    table = {name: {k: summarize(ds)["overall"][k] for k in ("mae_forecast", "mae_ce_forecast",
                                                              "coverage_80")}
             for name, (_, ds) in by.items()}
    held = []
    for dom in sorted({d["plan"]["domain"] for d in done}):
        train = {n: summarize([d for d in ds if d["plan"]["domain"] != dom])["overall"]
                 ["mae_forecast"] for n, (_, ds) in by.items()}
        pick = min(train, key=train.get)
        test = summarize([d for d in by[pick][1] if d["plan"]["domain"] == dom])["overall"]
        held.append({"held_out": dom, "picked": pick, "mae": test["mae_forecast"],
                     "mae_no_change": test["mae_no_change"], "mae_linear": test["mae_linear"]})
    return {"by_variant": table,
            "best": min(table, key=lambda n: table[n]["mae_forecast"]),
            "leave_one_domain_out": held}


def markdown(summary: dict) -> str:
    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"
    lines = ["| probe.metric | plans | MAE forecast | MAE no change | MAE linear | 80% coverage "
             "| item AUROC (probes) |", "|---|---|---|---|---|---|---|"]
    for k, r in sorted(summary["per_capability"].items()):
        lines.append(f"| {k} | {r['plans']} | {f(r['mae_forecast'])} | {f(r['mae_no_change'])} | "
                     f"{f(r['mae_linear'])} | {f(r['coverage_80'], 2)} | "
                     f"{f(r['item_auroc'], 2)} ({r['auroc_probes']}) |")
    o = summary["overall"]
    lines.append(f"| **all proportions** (coverage, AUROC: all) | | **{f(o['mae_forecast'])}** | {f(o['mae_no_change'])} | "
                 f"{f(o['mae_linear'])} | **{f(o['coverage_80'], 2)}** | "
                 f"**{f(o['item_auroc'], 2)}** |")
    lines.append("")
    lines.append(f"Pilots' wall time: {f(o['pilot_share_mean'], 2)} of the real run's on average "
                 f"(max {f(o['pilot_share_max'], 2)}); their training steps "
                 f"{f(o['pilot_train_share'], 2)} of the run's.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--only", nargs="*", default=[], help="domains to run (default: all three)")
    ap.add_argument("--root", type=Path, default=Path("runs/forecast_validation"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/forecast_validation.json"))
    ap.add_argument("--refit", action="store_true", help="recompute each recorded forecast from "
                    "its pilots' points (no training) before checking it")
    args = ap.parse_args()
    import os
    import platform

    t0 = time.perf_counter()
    done = []
    for plan in plans(args.steps, args.only):
        t1 = time.perf_counter()
        done.append(one(plan, args.root, args.refit))
        print(f"{plan['name']}: {time.perf_counter() - t1:.0f} s", flush=True)
    summary = summarize(done)
    summary["variants"] = variants(done)
    summary["table_md"] = markdown(summary)
    summary["measured"] = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or
                           platform.machine(), "threads": os.environ.get("OMP_NUM_THREADS"),
                           "wall_s": time.perf_counter() - t0, "steps": args.steps,
                           # --refit: the forecasts recomputed from recorded pilots, so wall_s
                           # is that recomputation's, not the pilots' and runs' (README: 25 min)
                           "refit": args.refit,
                           "plans": [d["plan"]["name"] for d in done]}
    args.out.write_text(json.dumps(summary, indent=1))
    print(summary["table_md"])


if __name__ == "__main__":
    main()
