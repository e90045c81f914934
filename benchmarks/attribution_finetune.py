"""Does dropping what ``retain attribute`` ranks most harmful keep the capability? (part 14)

For each case: the data, attributed at the base model (``retain.attribute.attribute``); the top
5% for the case's capability dropped (``write_filtered``, the file ``--write-filtered`` writes)
and, as the control, a seeded random 5% dropped. Then the built-in model fine-tuned on all data,
on the drop-top file and on the drop-random file, ``--seeds`` seeds each (batch 8 x 128, full
fine-tuning, ``--lr``, ``--steps``, no held-out split: the domain is measured by its built-in
probe). Reported per case:

- the capability after each variant (mean over seeds) and the paired test of drop-top against
  drop-random over every (item, seed) pair: items drop-top keeps that drop-random loses
  (gained) and the reverse (lost), McNemar's exact p;
- the domain's gain (its built-in probe, accuracy and cross-entropy) after each variant, and
  the same paired test on its accuracy items (the gain must stay within noise).

Cases: ``comply`` (attribution_planted's 20 harmful requests answered, in 400 legal texts,
against safety.refusal_rate), ``english`` (20 translation requests answered in English, against
multilingual.accuracy) and ``support`` (400 unplanted support records, against the capability
the all-data run loses most, chosen on a separate seed).

    OMP_NUM_THREADS=2 python benchmarks/attribution_finetune.py [--cases comply,english,support]
        [--seeds 3] [--lr 3e-4] [--steps 200] [--out benchmarks/attribution_finetune.json]
    ... --explore: only all data against the planted examples dropped, one seed, per case
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from attribution_planted import planted_data
from retain.attribute import attribute, records_of, write_filtered
from retain.config import load_config
from retain.metrics.paired import mcnemar_exact
from retain.run import run

CASES = {  # name -> (planted kind or None, domain probe, probes, capability or None: choose)
    "comply": ("comply", "legal", ["safety", "legal"], "safety.refusal_rate"),
    "english": ("english", "legal", ["multilingual", "legal"], "multilingual.accuracy"),
    "support": (None, "support", ["safety", "instructions", "multilingual", "support"], None),
}
SHARE = 0.05


def write_data(case: str, path: Path) -> set[int]:
    """The case's data file; the planted indices (empty: nothing planted)."""
    kind = CASES[case][0]
    if kind is not None:
        return planted_data(path, kind=kind)
    path.write_text("".join(line + "\n" for _, _, line in records_of("builtin:support", n=400)))
    return set()


def finetune(data: Path, out: Path, probes: list[str], seed: int, lr: str, steps: int) -> dict:
    return run(load_config(None, [
        "model=tiny", f"data={data}", "data_holdout=0", "batch_size=8", "seq_len=128",
        f"lr={lr}", f"steps={steps}", f"seed={seed}", f"probes={json.dumps(probes)}",
        "probe_n=60", "probe_batch_size=64", "progress=false", "save_model=false",
        f"out={out}"]))


def after(res: dict, key: str) -> tuple[float, list[bool]]:
    """(the after-score, its per-item good outcomes) of probe ``key`` in a run's results."""
    r = next(x for x in res["probes"]["after"] if f"{x['probe']}.{x['metric']}" == key)
    return r["value"], [bool(i["ok"]) for i in r.get("items") or [] if "ok" in i]


def before(res: dict, key: str) -> float:
    return next(x["value"] for x in res["probes"]["before"]
                if f"{x['probe']}.{x['metric']}" == key)


def paired(runs_a: list[dict], runs_b: list[dict], key: str) -> dict:
    """drop-top (a) against drop-random (b) over every (item, seed) pair of ``key``."""
    gained = lost = 0
    for a, b in zip(runs_a, runs_b):
        oa, ob = after(a, key)[1], after(b, key)[1]
        assert len(oa) == len(ob), "the same items in both"
        gained += sum(x and not y for x, y in zip(oa, ob))
        lost += sum(y and not x for x, y in zip(oa, ob))
    return {"gained": gained, "lost": lost, "p": mcnemar_exact(lost, gained)}


def worst_capability(data: Path, tmp: Path, probes: list[str], domain: str, lr: str,
                     steps: int) -> str:
    """The retained proportion the all-data run loses most, on a seed of its own (99)."""
    res = finetune(data, tmp / "choose", probes, 99, lr, steps)
    drops = {c["key"]: c["before"] - c["after"] for c in res["comparison"]
             if c["capability"] != "domain" and c["key"].endswith(("accuracy", "refusal_rate"))}
    return max(drops, key=drops.get)


def measure(case: str, seeds: int, lr: str, steps: int, explore: bool) -> dict:
    kind, domain, probes, key = CASES[case]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = tmp / f"{case}.jsonl"
        planted = write_data(case, data)
        if key is None:
            key = worst_capability(data, tmp, probes, domain, lr, steps)
        t0 = time.perf_counter()
        rows = attribute("tiny", str(data), probes=[p for p in probes if p != domain],
                         probe_n=60, seq_len=128, out=tmp / "attr", progress=False)
        attr_s = time.perf_counter() - t0
        n = len(rows)
        k = max(1, round(SHARE * n))
        top = {r["index"] for r in sorted(rows, key=lambda r: -r["harm"][key])[:k]}
        write_filtered(str(data), rows, key, SHARE, tmp / "top.jsonl")
        rand = set(random.Random(0).sample(range(n), k))
        lines = data.read_text().splitlines()
        (tmp / "random.jsonl").write_text("".join(x + "\n" for i, x in enumerate(lines)
                                                  if i not in rand))
        if explore:  # all data against exactly the planted examples dropped
            (tmp / "clean.jsonl").write_text("".join(x + "\n" for i, x in enumerate(lines)
                                                     if i not in planted))
            variants = {"all": data, "clean": tmp / "clean.jsonl"}
            seeds = 1
        else:
            variants = {"all": data, "drop_top": tmp / "top.jsonl",
                        "drop_random": tmp / "random.jsonl"}
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for seed in range(seeds):
            for v, path in variants.items():
                runs[v].append(finetune(path, tmp / f"{v}-{seed}", probes, seed, lr, steps))
                print(case, v, seed, {x: round(after(runs[v][-1], x)[0], 3)
                                      for x in (key, f"{domain}.accuracy")}, flush=True)
    dom_acc, dom_ce = f"{domain}.accuracy", f"{domain}.ce_nats_per_token"
    out = {"capability": key, "examples": n, "planted": len(planted), "dropped": k,
           "precision_at_k": len(top & planted) / len(planted) if planted else None,
           "attribution_s": round(attr_s, 1), "lr": lr, "steps": steps, "seeds": seeds,
           "before": {x: round(before(runs["all"][0], x), 3) for x in (key, dom_acc, dom_ce)},
           "after": {v: {x: round(sum(after(r, x)[0] for r in rs) / len(rs), 3)
                         for x in (key, dom_acc, dom_ce)} for v, rs in runs.items()},
           "per_seed": {v: [round(after(r, key)[0], 3) for r in rs] for v, rs in runs.items()}}
    if not explore:
        out["top_vs_random"] = paired(runs["drop_top"], runs["drop_random"], key)
        out["domain_top_vs_random"] = paired(runs["drop_top"], runs["drop_random"], dom_acc)
        out["top_vs_all"] = paired(runs["drop_top"], runs["all"], key)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="comply,english,support")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", default="3e-4")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--explore", action="store_true")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).with_name("attribution_finetune.json"))
    a = ap.parse_args()
    t0 = time.time()
    results = {}
    for case in a.cases.split(","):
        results[case] = measure(case, a.seeds, a.lr, a.steps, a.explore)
        print(json.dumps({case: results[case]}), flush=True)
        a.out.write_text(json.dumps({"cases": results, "wall_s": round(time.time() - t0),
                                     "measured": time.strftime("%Y-%m-%d")}, indent=1))


if __name__ == "__main__":
    main()
