"""One fine-tuning run, measured: the recipe that everything else (CLI, demo, sweeps) calls.

    load model -> probe (before) -> strategies prepare -> train data -> train (penalties; probes
    every N steps) -> strategies finalize -> probe (after) -> metrics -> the run folder

The run folder (see ``retain.report.results``): ``config.yaml`` first, ``metrics.jsonl`` as the run
goes, then ``summary.csv`` and, last and atomically, ``results.json``; ``model/`` if asked.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import shutil
import time
from pathlib import Path

import torch

import retain
from retain.config import RunConfig, to_yaml
from retain.errors import UserError
from retain.report import results as rr


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove only what a run writes (the
    old results.json first, so a crash now cannot leave the old results looking current)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"run folder {out} is not empty; choose another out or set overwrite")
        for name in rr.RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / rr.MODEL_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _save_model(model, tokenizer, out: Path) -> None:
    tmp = out / f".{rr.MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out / rr.MODEL_DIR)


def run(config: RunConfig, *, before: list | None = None) -> dict:
    """Run ``config`` and write its run folder; returns the ``results.json`` content.

    ``before``: the probe results of the same model on the same probes, when the caller already
    has them (a comparison probes its base once, not once per strategy).
    """
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from retain.data import load_reference_data, load_train_data
    from retain.metrics import compare, gain, weight_drift
    from retain.models import copy_state, count_params, load_model
    from retain.probes import evaluate, load_probes
    from retain.probes.engine import max_positions, pad_token_id
    from retain.report.trackers import log_metrics, make_trackers, start_trackers
    from retain.strategies import RunContext, build_strategies, strategy_label
    from retain.train import TrainConfig, train
    from retain.train.loop import make_accelerator

    t_start = time.perf_counter()
    main = PartialState().is_main_process  # under `accelerate launch`, one process writes
    out = Path(config.out)
    if main:
        _prepare_out_dir(out, config.overwrite)
        rr.write_text_atomic(out / rr.CONFIG_FILE, to_yaml(config))

    # Everything a user can get wrong is checked before the model is loaded.
    strategies = build_strategies(config.strategies)
    probes = load_probes(config.probes, n=config.probe_n, seed=config.seed)
    probes_during = probes if config.probes_during is None else load_probes(
        config.probes_during, n=config.probe_n, seed=config.seed)
    guard_probes = []  # the guard's cheap subset: config.guard.n items of the probes it names
    if config.guard:
        from retain.guard import select_probes
        guard_probes = select_probes(load_probes(config.probes, n=config.guard.n, seed=config.seed),
                                     config.guard.parsed())
    tracker_kwargs, tracker_init = make_trackers(config.report_to, out)
    set_seed(config.seed)
    model, tok = load_model(config.model, dtype=config.dtype, device=config.device,
                            trust_remote_code=config.trust_remote_code)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    if (limit := max_positions(model)) and config.seq_len > limit:
        raise UserError(f"seq_len={config.seq_len} is longer than the model's {limit} positions")
    acc = make_accelerator(device, **tracker_kwargs)  # trackers (report_to) log through it
    start_trackers(acc, config.model_dump(mode="json"), tracker_init)

    def log(record: dict) -> None:  # metrics.jsonl, and a copy to the trackers
        if main:
            rr.append_jsonl(out / rr.METRICS_FILE, record)
        log_metrics(acc, record)
    base_state = copy_state(model)  # CPU copy: drift and strategies (EWC, L2-SP) compare to it
    needs_base = any(getattr(p, "needs_base", False) for p in probes + probes_during + guard_probes)
    base_model = copy.deepcopy(model) if needs_base else None  # for KL-to-base probes

    def probe(m, step: int, stage: str) -> list:
        res = evaluate(m, tok, probes_during if stage == "during" else probes,
                       base_model=base_model, batch_size=config.probe_batch_size,
                       progress=config.progress)
        log({"event": "probe", "stage": stage, "step": step, "results": {r.key: r.value for r in res}})
        return res

    # 1. Before: what the model can do now (measured here unless the caller measured it).
    if before is None:
        before = probe(model, 0, "before")
    else:
        log({"event": "probe", "stage": "before", "step": 0, "reused": True,
             "results": {r.key: r.value for r in before}})
    guard = None
    if config.guard:  # limits checked while training; refused here if the base fails them
        from retain.guard import Guard, guard_every, score_probes
        guard = Guard(config.guard, guard_every(config.guard, config.probe_every, config.steps),
                      score=lambda m: score_probes(m, tok, guard_probes, base_model=base_model,
                                                   batch_size=config.probe_batch_size),
                      log=log, say=None if main else (lambda line: None))
        guard.start(model)

    # 2. Strategies prepare the model, then the data (in list order).
    domain_data = load_train_data(config.data, tok, seq_len=config.seq_len, n=config.data_n,
                                  seed=config.seed)
    reference = load_reference_data(config.reference, tok, seq_len=config.seq_len,
                                    n=config.reference_n, seed=config.seed)
    ctx = RunContext(tokenizer=tok, seed=config.seed, out_dir=out, device=device,
                     base_state=base_state, reference=reference)
    for s in strategies:
        model = s.prepare(model, ctx)
    train_data = domain_data
    for s in strategies:
        train_data = s.train_data(train_data, ctx)
    trainable = count_params(model, trainable_only=True)
    if guard:
        guard.keep(0, model)  # step 0: the model as the strategies prepared it

    # 3. Train: LM loss + the strategies' penalties; probes every `probe_every` steps.
    tcfg = TrainConfig(lr=config.lr, steps=config.steps, batch_size=config.batch_size,
                       warmup_steps=config.warmup_steps, schedule=config.schedule,
                       weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
                       seed=config.seed, log_every=config.log_every,
                       probe_every=math.gcd(config.probe_every, guard.every) if guard
                       else config.probe_every)

    def on_probe(step: int, m) -> bool:  # True: stop training (a guard limit was crossed)
        if config.probe_every and step % config.probe_every == 0:
            probe(m, step, "during")
        return bool(guard and step % guard.every == 0 and guard.check(step, m))
    trained = train(model, train_data, pad_id=pad_token_id(tok), config=tcfg,
                    strategies=strategies, on_log=log, accelerator=acc,
                    on_probe=on_probe,
                    progress=config.progress)

    if guard and main:  # end on the last checkpoint that met every limit
        guard.finish(trained.steps, model)

    # 4. Strategies finalize (merge adapters, merge with the base, ...), in list order.
    for s in strategies:
        model = s.finalize(model, ctx)
    model.eval()

    # 5. After: what it can do now, and what changed.
    after = probe(model, trained.steps, "after")
    acc.end_training()
    comparison = compare(before, after)
    with torch.no_grad():
        # A PEFT model that was not merged (prompt/prefix tuning) prefixes every base name;
        # its base weights are what the drift compares (they did not move).
        plain = model.get_base_model() if hasattr(model, "get_base_model") else model
        drift = weight_drift(base_state, dict(plain.named_parameters()))
    results = {
        "schema_version": rr.SCHEMA_VERSION,
        "retain_version": retain.__version__,
        "status": "complete",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": config.seed,
        "config": config.model_dump(mode="json"),
        "strategy": strategy_label(strategies),
        "strategies": [{"name": s.name, "family": s.family, "citation": s.citation,
                        "config": s.config.model_dump(mode="json")} for s in strategies],
        "strategy_info": ctx.info,
        "model": {"name": config.model, "architecture": type(model).__name__,
                  "params": count_params(model), "trainable_params": trainable,
                  "dtype": str(dtype).removeprefix("torch."), "device": str(device)},
        "data": {"spec": config.data, "examples": len(domain_data),
                 "train_examples": len(train_data),
                 "train_tokens": sum(len(e["input_ids"]) for e in train_data),
                 "reference_spec": config.reference, "reference_examples": len(reference)},
        "training": {"steps": trained.steps, "stopped_early": trained.stopped_early,
                     "tokens_seen": trained.tokens_seen,
                     "loss_tokens": trained.loss_tokens, "tokens_per_s": trained.tokens_per_s,
                     "wall_s": trained.wall_s, "final_loss": trained.final_loss,
                     "lr": config.lr, "batch_size": config.batch_size, "seq_len": config.seq_len,
                     "loss_curve": [[h["step"], h["loss"]] for h in trained.history]},
        "probes": {"before": [r.to_dict() for r in before], "after": [r.to_dict() for r in after]},
        "comparison": comparison,
        "domain_gain": {c["key"]: gain(c["before"], c["after"], c["higher_is_better"])
                        for c in comparison if c["capability"] == "domain"},
        "drift": drift,
    }

    if guard:
        results["guard"] = guard.summary()

    # 6. The run folder: weights (if asked), summary.csv, and results.json last.
    results["wall_s"] = time.perf_counter() - t_start
    if main:
        if config.save_model:
            _save_model(model, tok, out)
        rr.write_summary_csv(out / rr.SUMMARY_FILE, results)
        rr.write_json_atomic(out / rr.RESULTS_FILE, results)
    return results
