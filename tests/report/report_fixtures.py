"""Hand-written run and comparison folders (no training) following results.json schema v1, with a
planted ``<script>`` in a model answer; also the README's demo table as synthetic results with
paired tests (a 13-run comparison folder of it); shared by the report tests (fixtures in
conftest.py). A module of its own name: other test folders have a ``conftest`` too."""

from __future__ import annotations

import json
from pathlib import Path

from retain.report import results as rr

PLANTED = "<script>alert(1)</script>"

# probe, metric, capability, kind, higher_is_better, before, after (per strategy)
PROBES = [
    ("math", "accuracy", "math", "generation", True, 0.62, {"full": 0.20, "lora": 0.55}),
    ("safety", "refusal_rate", "safety", "generation", True, 0.95, {"full": 0.30, "lora": 0.90}),
    ("safety", "over_refusal_rate", "safety", "generation", False, 0.10, {"full": 0.05, "lora": 0.12}),
    ("writing", "ce_nats_per_token", "writing", "perplexity", False, 1.84, {"full": 2.31, "lora": 1.90}),
    ("legal", "accuracy", "domain", "generation", True, 0.05, {"full": 0.80, "lora": 0.60}),
]
CITATIONS = {
    "full": 'Howard & Ruder, 2018, "Universal Language Model Fine-tuning", https://arxiv.org/abs/1801.06146',
    "lora": 'Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models", '
            'https://arxiv.org/abs/2106.09685',
}


def _ci(v: float, hib: bool, kind: str) -> list[float]:
    w = 0.04 if kind == "perplexity" else 0.12
    return [max(0.0, v - w), v + w if kind == "perplexity" else min(1.0, v + w)]


def _examples(probe: str, kind: str, stage: str, strategy: str) -> list[dict]:
    if kind == "perplexity":
        return [{"prompt": f"Once upon a time {i}", "expected": None, "answer": None, "ok": None,
                 "value": 1.8 + 0.1 * i + (0.4 if stage == "after" else 0.0)} for i in range(3)]
    out = []
    for i in range(3):
        answer = f"{probe} answer {i} ({stage}, {strategy})"
        if probe == "math" and i == 0 and stage == "after":
            answer = f"12 {PLANTED} & \"quotes\""
        out.append({"prompt": f"<u>{probe} question {i}<a>", "expected": f"{i + 10}",
                    "answer": answer, "ok": stage == "before" or i > 0})
    return out


def _probe_results(stage: str, strategy: str) -> list[dict]:
    res = []
    for probe, metric, cap, kind, hib, b, after in PROBES:
        v = b if stage == "before" else after[strategy]
        lo, hi = _ci(v, hib, kind)
        res.append({"probe": probe, "metric": metric, "value": v, "n": 40, "ci_low": lo,
                    "ci_high": hi, "higher_is_better": hib, "capability": cap, "kind": kind,
                    "examples": _examples(probe, kind, stage, strategy) if metric != "over_refusal_rate" else []})
    return res


def make_run(d: Path, strategy: str = "lora", *, seed: int = 0, metrics: bool = True,
             guard: bool = False, steps: int = 60) -> Path:
    """A complete run folder as run.py writes it (config.yaml, metrics.jsonl, summary.csv,
    results.json)."""
    d.mkdir(parents=True, exist_ok=True)
    before, after = _probe_results("before", strategy), _probe_results("after", strategy)
    comparison = []
    for b, a in zip(before, after):
        hib = b["higher_is_better"]
        comparison.append({
            "key": f'{b["probe"]}.{b["metric"]}', "probe": b["probe"], "metric": b["metric"],
            "capability": b["capability"], "kind": b["kind"], "higher_is_better": hib, "n": a["n"],
            "before": b["value"], "after": a["value"], "delta": a["value"] - b["value"],
            "forgetting": (b["value"] - a["value"]) if hib else (a["value"] - b["value"]),
            "retention": None, "before_ci": [b["ci_low"], b["ci_high"]],
            "after_ci": [a["ci_low"], a["ci_high"]]})
    layers = ["model.embed_tokens.weight"] + [f"model.layers.{i}" for i in range(4)] + \
        ["model.norm.weight", "lm_head.weight"]
    scale = 1.0 if strategy == "full" else 0.15
    per_layer = {name: {"l2": 0.5 * scale * (i + 1), "relative_l2": 0.01 * scale * (i + 1),
                        "base_l2": 50.0} for i, name in enumerate(layers)}
    loss_curve = [[s, 3.0 * 0.97 ** s + 0.5] for s in range(10, steps + 1, 10)]
    results = {
        "schema_version": rr.SCHEMA_VERSION, "retain_version": "0.1.0", "status": "complete",
        "created": "2026-12-01T10:00:00+00:00", "seed": seed, "wall_s": 83.4,
        "config": {"model": "tiny", "data": "builtin:legal", "strategies": [{"name": strategy}],
                   "lr": 1e-3, "steps": steps, "seed": seed, "note": PLANTED},
        "strategy": strategy,
        "strategies": [{"name": strategy, "family": "peft" if strategy == "lora" else "baseline",
                        "citation": CITATIONS[strategy], "config": {"r": 8}}],
        "strategy_info": {},
        "model": {"name": "tiny", "architecture": "LlamaForCausalLM", "params": 3_500_000,
                  "trainable_params": 3_500_000 if strategy == "full" else 65_536,
                  "dtype": "float32", "device": "cpu"},
        "data": {"spec": "builtin:legal", "examples": 512, "reference_spec": None,
                 "reference_examples": 0},
        "training": {"steps": steps, "tokens_seen": 184_320, "loss_tokens": 120_000,
                     "tokens_per_s": 7400.0, "wall_s": 24.9, "final_loss": loss_curve[-1][1],
                     "lr": 1e-3, "batch_size": 32, "seq_len": 96, "loss_curve": loss_curve},
        "probes": {"before": before, "after": after},
        "comparison": comparison,
        "domain_gain": {c["key"]: -c["forgetting"] for c in comparison if c["capability"] == "domain"},
        "drift": {"overall": {"l2": 3.1 * scale, "relative_l2": 0.04 * scale, "base_l2": 120.0,
                              "tensors": 30}, "per_layer": per_layer, "per_tensor": {}, "missing": []},
    }
    if guard:
        crossed = {"limit": "safety.refusal_rate>=0.9", "value": 0.62, "probe":
                   "safety.refusal_rate", "score": 0.62, "ci": [0.42, 0.78], "n": 24,
                   "p_value": 0.0004, "alpha": 0.0023}
        results["guard"] = {"limits": ["safety.refusal_rate>=0.9", "max_forgetting=0.05"],
                            "events": [crossed | {"step": 40, "action": "stop"},
                                       {"step": 40, "action": "rollback", "to_step": 20,
                                        "discarded": [21, 40], "crossed": [crossed],
                                        "kept": {"step": 20, "values": {
                                            "safety.refusal_rate": 0.96}}}],
                            "rolled_back_to_step": 20, "final_n": 24, "weak_verdict": True}
    (d / rr.CONFIG_FILE).write_text(f"model: tiny\nstrategies:\n- name: {strategy}\n"
                                    f"seed: {seed}\nnote: '{PLANTED}'\n")
    if metrics:
        recs = [{"event": "probe", "stage": "before", "step": 0,
                 "results": {f'{r["probe"]}.{r["metric"]}': r["value"] for r in before}}]
        for s, loss in loss_curve:
            recs.append({"event": "train", "step": s, "loss": loss, "lm_loss": loss, "penalty": 0.0,
                         "lr": 1e-3, "grad_norm": 0.8, "tokens_seen": s * 3072,
                         "tokens_per_s": 7400.0, "elapsed_s": s * 0.4})
            if s % 20 == 0:
                frac = s / steps
                recs.append({"event": "probe", "stage": "during", "step": s, "results": {
                    f'{b["probe"]}.{b["metric"]}': b["value"] + frac * (a["value"] - b["value"])
                    for b, a in zip(before, after)}})
        recs.append({"event": "probe", "stage": "after", "step": steps,
                     "results": {f'{r["probe"]}.{r["metric"]}': r["value"] for r in after}})
        with open(d / rr.METRICS_FILE, "w") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
            f.write('{"event": "train", "step": 7')  # a line cut short by an interrupted run
    rr.write_summary_csv(d / rr.SUMMARY_FILE, results)
    rr.write_json_atomic(d / rr.RESULTS_FILE, results)
    return d


def make_comparison(d: Path) -> Path:
    """A comparison folder: two runs (full, lora) + summary.csv + comparison.json."""
    from retain.experiments.comparison import comparison_rows
    from retain.report.results import summary_csv, write_json_atomic, write_text_atomic

    labels = ["full", "lora"]
    runs = [make_run(d / label, label, guard=(label == "full")) for label in labels]
    results = [rr.read_results(r) for r in runs]
    rows = comparison_rows(labels, results)
    write_text_atomic(d / "summary.csv", summary_csv(rows))
    write_json_atomic(d / "comparison.json", {
        "title": "tiny on legal: full vs lora",
        "runs": [{"strategy": label, "dir": f"/elsewhere/{label}"} for label in labels]})
    return d


def _tiny_png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1 RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\xff\xff\xff"))
            + chunk(b"IEND", b""))


TINY_PNG = _tiny_png()


# -- a demo-sized comparison: the README's `retain demo` table, one seed ---------------------

# probe, metric, capability, higher_is_better, items per probe
DEMO_KEYS = [("math", "accuracy", "math", True, 60), ("code", "accuracy", "code", True, 60),
             ("writing", "ce_nats_per_token", "writing", False, 60),
             ("multilingual", "accuracy", "multilingual", True, 60),
             ("safety", "refusal_rate", "safety", True, 60),
             ("safety", "over_refusal_rate", "safety", False, 28),
             ("instructions", "accuracy", "instructions", True, 60),
             ("legal", "accuracy", "domain", True, 60),
             ("legal", "ce_nats_per_token", "domain", False, 60)]
DEMO_TABLE = {  # label -> the score of each DEMO_KEYS metric ("before": the base model)
    "before": [0.98, 0.95, 0.36, 0.98, 1.00, 0.07, 0.95, 0.00, 8.14],
    "full lr=1e-3": [0.68, 0.75, 1.33, 0.22, 0.00, 0.00, 0.23, 1.00, 3.72],
    "full lr=1e-4": [0.98, 0.93, 0.36, 0.98, 1.00, 0.18, 0.88, 0.00, 4.95],
    "ewc": [0.85, 0.95, 0.69, 0.68, 0.73, 0.21, 0.62, 1.00, 4.14],
    "l2sp": [0.98, 0.92, 0.38, 0.88, 1.00, 0.25, 0.80, 0.87, 4.87],
    "distill": [0.85, 0.85, 0.46, 0.58, 0.98, 0.25, 0.75, 0.02, 3.13],
    "lora r=8": [0.85, 0.82, 0.63, 0.50, 0.07, 0.00, 0.28, 0.00, 3.20],
    "prompt tuning": [0.00, 0.15, 13.64, 0.00, 0.00, 0.00, 0.00, 0.00, 10.01],
    "freeze top 1": [0.98, 0.97, 0.46, 0.87, 0.67, 0.04, 0.45, 0.85, 3.75],
    "replay 25%": [0.87, 0.88, 0.49, 0.67, 0.97, 0.11, 0.80, 1.00, 3.74],
    "self-replay 25%": [0.70, 0.87, 0.78, 0.62, 0.97, 0.14, 0.78, 1.00, 3.68],
    "wise-ft 0.5": [0.95, 0.93, 0.37, 0.88, 0.97, 0.18, 0.87, 0.03, 4.54],
    "lora+replay": [0.85, 0.88, 0.47, 0.67, 0.83, 0.43, 0.68, 0.00, 3.28],
}


def demo_comparison_rows(after: list[float], before: list[float] | None = None) -> list[dict]:
    """results.json ``comparison`` rows from before/after scores, each with the paired test a
    real run records: exact McNemar on the fewest items that explain the two scores, a fixed
    +-0.05 bootstrap interval for cross-entropy."""
    from retain.metrics.paired import mcnemar_exact

    before = before or DEMO_TABLE["before"]
    rows = []
    for (probe, metric, cap, hib, n), b, a in zip(DEMO_KEYS, before, after):
        if metric == "ce_nats_per_token":
            paired = {"test": "paired_bootstrap", "diff": a - b, "ci": [a - b - 0.05, a - b + 0.05],
                      "changed": abs(a - b) > 0.05, "n": n}
        else:
            right_b, right_a = round(b * n), round(a * n)
            lost, gained = max(0, right_b - right_a), max(0, right_a - right_b)
            p = mcnemar_exact(lost, gained)
            paired = {"test": "mcnemar_exact", "p": p, "changed": p < 0.05, "n": n, "lost": lost,
                      "gained": gained, "lost_items": [], "gained_items": []}
        rows.append({"key": f"{probe}.{metric}", "probe": probe, "metric": metric,
                     "capability": cap, "kind": "perplexity" if metric.startswith("ce") else
                     "generation", "higher_is_better": hib, "n": n, "before": b, "after": a,
                     "delta": a - b, "paired": paired})
    return rows


def demo_results(labels: list[str] | None = None) -> tuple[list[str], list[dict]]:
    """(labels, results) of the demo table's strategies (all by default): enough of results.json
    for ``write_comparison`` and the verdicts."""
    labels = labels or [k for k in DEMO_TABLE if k != "before"]
    return labels, [{"seed": 0, "strategy": label, "model": {"name": "tiny"},
                     "comparison": demo_comparison_rows(DEMO_TABLE[label])} for label in labels]


def make_demo_comparison(d: Path, extra: int = 1) -> Path:
    """A comparison folder of the 12 demo strategies (plus ``extra`` long-labelled copies of
    "lora r=8"), each a complete run folder whose comparison rows are the demo table's, its
    comparison.json written by ``write_comparison`` (so with a ranking)."""
    from retain.experiments.comparison import write_comparison
    from retain.experiments.runner import slug

    labels = [k for k in DEMO_TABLE if k != "before"]
    labels += [f"lora r={16 * (i + 1)} on attention and MLP, alpha {32 * (i + 1)} ({PLANTED})"
               for i in range(extra)]
    results = []
    for i, label in enumerate(labels):
        run = make_run(d / slug(label), "full" if i % 2 == 0 else "lora", guard=i == 0)
        res = rr.read_results(run)
        res["out_dir"] = str(run)
        res["comparison"] = demo_comparison_rows(DEMO_TABLE.get(label, DEMO_TABLE["lora r=8"]))
        rr.write_json_atomic(run / rr.RESULTS_FILE, res)
        results.append(res)
    write_comparison(d, labels, results, title="retain demo: tiny model, legal domain", show=False)
    return d
