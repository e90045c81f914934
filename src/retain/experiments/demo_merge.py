"""`retain demo --merge`: specialists, merged. Fine-tune one specialist of the built-in model on
each built-in new domain (legal contracts, support replies; full fine-tuning, same settings), merge
the two (a plain average; with the base: task arithmetic, TIES, DARE-TIES seeded, Breadcrumbs-TIES,
DELLA, Model Stock; Fisher-weighted averaging with each specialist's Fisher estimated on its own
domain data, normalized), score every model in memory on both
domains and every retained capability, and write ``merge_table.csv`` and ``merge.json``.
Citations: see ``retain.merging.MERGE_METHODS``.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

DOMAINS = ("legal", "support")
# Same settings for both specialists, so that neither merge input is favoured: the demo's high
# rate and steps (lr 1e-3, 100 steps), where a specialist learns its domain's cloze; at lr 3e-4
# and 40 steps only the domain's cross-entropy moved, and every merge scored 0 on both domains.
COMMON: dict[str, Any] = {"model": "tiny", "steps": 100, "batch_size": 8, "seq_len": 128,
                          "lr": 1e-3, "seed": 0, "warmup_steps": 5, "probe_n": 40,
                          "probe_batch_size": 64}
QUICK: dict[str, Any] = {"steps": 15, "probe_n": 16}
# name -> (merge method, options); every method merges both specialists over the base.
MERGES: dict[str, tuple[str, dict[str, Any]]] = {
    "average": ("linear", {}),  # the plain average: what every weighted method must beat
    "task_arithmetic": ("task_arithmetic", {}),
    "ties": ("ties", {"density": 0.5}),
    "dare_ties": ("dare_ties", {"density": 0.5, "seed": 0}),
    "breadcrumbs_ties": ("breadcrumbs_ties", {"density": 0.9, "gamma": 0.01}),
    "della": ("della", {"density": 0.5, "epsilon": 0.1, "seed": 0}),
    "model_stock": ("model_stock", {}),
    "fisher": ("fisher", {}),
}
FISHER_SAMPLES = 32  # domain examples per specialist for its diagonal (empirical) Fisher


def _row(results: list[dict]) -> dict[str, float]:
    """``probe.metric`` -> value, plus the oriented means of the domains and retained capabilities
    (proportion metrics only; cross-entropy stays in its own columns)."""
    from retain.report.plots import PROPORTION_METRICS, oriented

    row = {f"{r['probe']}.{r['metric']}": float(r["value"]) for r in results}
    kept = [oriented(r["metric"], r["value"]) for r in results
            if r["metric"] in PROPORTION_METRICS and r["capability"] != "domain"]
    row["retained_mean"] = sum(kept) / len(kept) if kept else float("nan")
    return row


def run_merge_demo(out: Path = Path("runs/demo-merge"), quick: bool = False, *,
                   overwrite: bool = True, settings: dict[str, Any] | None = None,
                   fisher: bool = True, progress: bool = True) -> dict:
    """Train the two specialists (run folders ``out/<domain>``), merge, score, write, print.
    ``settings`` overrides ``COMMON`` (and ``QUICK``) keys. Returns the ``merge.json`` record."""
    import torch

    from retain.config import parse_config
    from retain.data import load_train_data
    from retain.merging import MERGE_METHODS, merge_state_dicts
    from retain.models import load_model
    from retain.probes import evaluate, load_probes
    from retain.report import results as rr
    from retain.run import run

    t0 = time.perf_counter()
    cfg = {**COMMON, **(QUICK if quick else {}), **(settings or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probe_specs = ["retained", *DOMAINS]

    # 1. The specialists: one run each (the base is probed once, by the first).
    runs: dict[str, dict] = {}
    before = None
    for domain in DOMAINS:
        rc = parse_config({**cfg, "data": f"builtin:{domain}", "strategies": [{"name": "full"}],
                           "probes": probe_specs, "out": str(out / domain),
                           "overwrite": overwrite, "save_model": True, "progress": progress})
        runs[domain] = run(rc, before=before)
        if before is None:
            from retain.probes.base import ProbeResult
            before = [ProbeResult(**r) for r in runs[domain]["probes"]["before"]]
    rows: dict[str, dict[str, float]] = {"base": _row(runs[DOMAINS[0]]["probes"]["before"])}
    for domain in DOMAINS:
        rows[f"{domain} specialist"] = _row(runs[domain]["probes"]["after"])

    # 2. Merges, in memory: one model object, each merged state dict loaded into it.
    model, tok = load_model(cfg["model"], dtype="float32", device="cpu")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    specialists = []
    for domain in DOMAINS:
        m, _ = load_model(str(out / domain / rr.MODEL_DIR), dtype="float32", device="cpu")
        specialists.append(dict(m.state_dict()))  # not cloned: tied weights keep one storage
        del m
    fishers, notes = None, []
    if fisher:
        from retain.strategies.fisher import estimate_fisher

        fishers, t_f = [], time.perf_counter()
        for domain, state in zip(DOMAINS, specialists):
            model.load_state_dict(state)
            data = load_train_data(f"builtin:{domain}", tok, seq_len=cfg["seq_len"],
                                   n=FISHER_SAMPLES, seed=cfg["seed"])
            fishers.append(estimate_fisher(model, data, "empirical", n_samples=FISHER_SAMPLES,
                                           seed=cfg["seed"]))
        notes.append(f"Fishers: empirical diagonal, {FISHER_SAMPLES} examples of each "
                     f"specialist's own domain ({time.perf_counter() - t_f:.1f}s)")
    else:
        notes.append("fisher merge skipped (fisher=False)")

    probes = load_probes(probe_specs, n=cfg["probe_n"], seed=cfg["seed"])
    merges: dict[str, dict] = {}
    for name, (method, options) in MERGES.items():
        if method == "fisher" and fishers is None:
            continue
        with torch.no_grad():
            merged = merge_state_dicts(method, None if method in ("fisher", "linear") else base,
                                       specialists, stats=fishers if method == "fisher" else None,
                                       **options)
            model.load_state_dict(merged)
        del merged
        model.eval()
        res = evaluate(model, tok, probes, batch_size=cfg["probe_batch_size"], progress=progress)
        rows[name] = _row([r.to_dict() for r in res])
        merges[name] = {"method": method, "options": options,
                        "citation": MERGE_METHODS[method].citation}

    # 3. The table.
    keys = list(rows["base"])
    record = {"settings": cfg, "domains": list(DOMAINS), "merges": merges, "notes": notes,
              "runs": {d: str(out / d) for d in DOMAINS},
              "higher_is_better": {f"{r['probe']}.{r['metric']}": r["higher_is_better"]
                                   for r in runs[DOMAINS[0]]["probes"]["before"]},
              "rows": rows, "wall_s": time.perf_counter() - t0}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", *keys])
    for label, row in rows.items():
        writer.writerow([label, *[f"{row.get(k, float('nan')):.4f}" for k in keys]])
    rr.write_text_atomic(out / "merge_table.csv", buf.getvalue())
    rr.write_json_atomic(out / "merge.json", record)
    print_merge_table(record)
    return record


# The columns the terminal shows (every metric is in merge_table.csv): (key, header).
SHOWN = (("legal.accuracy", "legal"), ("legal.ce_nats_per_token", "l.ce"),
         ("support.accuracy", "supp"), ("support.ce_nats_per_token", "s.ce"),
         ("retained_mean", "kept"), ("safety.refusal_rate", "refus"),
         ("instructions.accuracy", "instr"))


def print_merge_table(record: dict) -> None:
    """One row per model, the key metrics as columns (within 80 columns; every metric of every
    model is in merge_table.csv)."""
    from rich.console import Console
    from rich.table import Table

    hib = record["higher_is_better"]
    shown = [(k, h) for k, h in SHOWN if k in next(iter(record["rows"].values()))]
    table = Table(padding=(0, 1), title=f"specialists, merged ({record['settings']['steps']} "
                  f"steps, probe_n {record['settings']['probe_n']})")
    table.add_column("model", no_wrap=True)
    for k, h in shown:
        arrow = "" if k == "retained_mean" else "↑" if hib.get(k, True) else "↓"
        table.add_column(h + arrow, justify="right", no_wrap=True)
    for label, row in record["rows"].items():
        table.add_row(label, *[f"{row[k]:.2f}" for k, _ in shown])
    console = Console(width=80)
    console.print(table)
    for note in record["notes"]:
        console.print(note)
    console.print(f"written: {Path(record['runs'][record['domains'][0]]).parent / 'merge_table.csv'}"
                  f" ({record['wall_s']:.0f}s)")
