"""One fine-tuning run, measured: the recipe that everything else (CLI, demo, sweeps) calls.

    check every input (preflight) -> load model -> probe (before) -> strategies prepare ->
    train data -> train (penalties; probes, guard, checkpoints) -> strategies finalize ->
    probe (after) -> metrics -> the run folder

The run folder (see ``retain.report.results``): ``config.yaml`` first, ``metrics.jsonl`` as the run
goes, ``checkpoints/`` every ``checkpoint_every`` steps, then ``summary.csv`` and, last and
atomically, ``results.json``; ``model/`` if asked. A run that fails after it started writes
``results.json`` with ``"status": "failed"``; a user mistake found late leaves nothing behind.
Under several processes (``torchrun``) every process trains and probes its share; only the main
process writes.
"""

from __future__ import annotations

import copy
import shutil
import time
from contextlib import contextmanager
from pathlib import Path


from retain.version import __version__
from retain.config import RunConfig, to_yaml
from retain.errors import UserError
from retain.report import results as rr
from retain.train import checkpoint as ckpt


def _save_model(model, tokenizer, out: Path) -> None:
    tmp = out / f".{rr.MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out / rr.MODEL_DIR)


def _save_fisher(model, data: list[dict], config: RunConfig, out: Path) -> Path:
    """The final model's diagonal Fisher on 64 of its training examples (empirical, seeded),
    over every floating parameter, as ``retain fisher`` writes it: ``model/fisher.safetensors``."""
    from retain.strategies.fisher import model_fisher, save_importance

    n = min(64, len(data))
    fisher = model_fisher(model, data, n=n, seed=config.seed)
    return save_importance(out / rr.MODEL_DIR / "fisher.safetensors", fisher, {
        "kind": "fisher", "model": str(out / rr.MODEL_DIR), "data": config.data,
        "estimator": "empirical", "n": n, "seed": config.seed, "seq_len": config.seq_len,
        "retain_version": __version__})


def _records(path: Path) -> list[str]:
    """The record lines of a JSONL file (blank lines are not records), unparsed."""
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip()]


def _truncate_jsonl(path: Path, records: int) -> None:
    """Keep the first ``records`` of a resumed run's metrics.jsonl (later ones are redone)."""
    rr.write_text_atomic(path, "".join(_records(path)[:records]))


@contextmanager
def _run_folder(config: RunConfig, plan, main: bool, failure: dict):
    """Create (or clean, or keep for a resume) the run folder and write ``config.yaml``. A
    ``UserError`` raised inside removes what the run wrote (a late user mistake leaves nothing);
    any other failure writes ``results.json`` with status "failed", the step and the reason."""
    from retain.preflight import clean_out_dir
    from retain.train.loop import process_state

    out = Path(config.out)
    created = not out.exists()
    state = process_state()
    # Under several processes: every preflight has looked at the folder as it was (else one
    # could find the main process's config.yaml and refuse a "non-empty" folder) before the
    # main process changes it, and nobody goes on before it is ready. One process: no-ops.
    state.wait_for_everyone()
    if main:
        if plan.out_mode == "clean":
            clean_out_dir(out)
        out.mkdir(parents=True, exist_ok=True)
        if plan.out_mode != "resume":
            rr.write_text_atomic(out / rr.CONFIG_FILE, to_yaml(config))
    state.wait_for_everyone()
    try:
        yield
    except UserError:
        if main and plan.out_mode != "resume":
            shutil.rmtree(out) if created else clean_out_dir(out)
        raise
    except Exception as e:  # not KeyboardInterrupt: an interrupted run stays unfinished
        if main:
            last = ckpt.latest(out)
            rr.write_json_atomic(out / rr.RESULTS_FILE, {
                **rr.header("failed", config.seed, config.model_dump(mode="json")),
                "failure": {"step": getattr(e, "step", None),
                            "stage": failure.get("stage"),
                            "reason": getattr(e, "reason", None) or f"{type(e).__name__}: {e}",
                            "last_checkpoint": str(last) if last else None}})
        raise


def run(config: RunConfig, *, before: list | None = None) -> dict:
    """Run ``config`` and write its run folder; returns the ``results.json`` content.

    ``before``: the probe results of the same model on the same probes, when the caller already
    has them (a comparison probes its base once, not once per strategy).
    """
    from retain.preflight import preflight
    from retain.train.loop import process_state

    t_start = time.perf_counter()
    main = process_state().is_main_process  # under torchrun / accelerate launch, one writes
    plan = preflight(config)  # every user mistake, before the model is loaded or a file written
    failure: dict = {"stage": "load"}
    with _run_folder(config, plan, main, failure):
        results = _run(config, plan, before, main, failure)
        results["wall_s"] = time.perf_counter() - t_start
        if main:
            rr.write_summary_csv(Path(config.out) / rr.SUMMARY_FILE, results)
            rr.write_json_atomic(Path(config.out) / rr.RESULTS_FILE, results)
    return results


def _run(config: RunConfig, plan, before: list | None, main: bool, failure: dict) -> dict:
    from accelerate.utils import set_seed

    from retain.metrics.outcome import outcome
    from retain.models import copy_state, count_params, load_model, load_state
    from retain.probes import evaluate, sandbox
    from retain.formats import pad_token_id
    from retain.probes.engine import max_positions
    from retain.report.trackers import log_metrics, make_trackers, start_trackers
    from retain.strategies import RunContext, describe, strategy_label
    from retain.train import Checkpointer, TrainConfig, train
    from retain.train.callbacks import EveryN
    from retain.train.loop import make_accelerator, process_state
    from retain.train.precision import autocast, upcast_trainable

    out, tok, strategies = Path(config.out), plan.tokenizer, plan.strategies
    sandbox.configure(config.sandbox)  # generated code of this run: refused or warned once
    rank = process_state().process_index
    resume = ckpt.load(plan.checkpoint, rank) if plan.out_mode == "resume" else None
    saved = ckpt.join_tree(resume.extra_tensors, resume.extra["state"]) if resume else {}
    tracker_kwargs, tracker_init = make_trackers(config.report_to, out)
    set_seed(config.seed)
    model, _ = load_model(config.model, dtype=plan.dtype, device=plan.device,
                          trust_remote_code=config.trust_remote_code, tokenizer=tok)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    if (limit := max_positions(model)) and config.seq_len > limit:
        raise UserError(f"seq_len={config.seq_len} is longer than the model's {limit} positions")
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(f"{type(model).__name__} does not support gradient checkpointing")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is useless (and refused) while recomputing
    acc = make_accelerator(device, **tracker_kwargs)  # trackers (report_to) log through it
    start_trackers(acc, config.model_dump(mode="json"), tracker_init)
    mixed = plan.mixed_precision

    def log(record: dict) -> None:  # metrics.jsonl, and a copy to the trackers
        if main:
            rr.append_jsonl(out / rr.METRICS_FILE, record)
        log_metrics(acc, record)
    base_state = copy_state(model)  # CPU copy: drift and strategies (EWC, L2-SP) compare to it
    probes, probes_during = plan.probes, plan.probes_during
    needs_base = any(getattr(p, "needs_base", False)
                     for p in probes + probes_during + plan.guard_probes)
    base_model = copy.deepcopy(model) if needs_base else None  # for KL-to-base probes

    def probe(m, step: int, stage: str) -> list:  # every process scores its share of the items
        with autocast(device, mixed):
            res = evaluate(m, tok, probes_during if stage == "during" else probes,
                           base_model=base_model, batch_size=config.probe_batch_size,
                           progress=config.progress and main)
        log({"event": "probe", "stage": stage, "step": step, "results": {r.key: r.value for r in res}})
        return res

    # 1. Before: what the model can do now (measured here unless the caller measured it).
    failure["stage"] = "before"
    if resume is not None:
        from retain.probes.base import ProbeResult

        _truncate_jsonl(out / rr.METRICS_FILE, resume.extra["metrics_lines"]) if main else None
        before = [ProbeResult(**r) for r in resume.extra["before"]]
    elif before is None:
        before = probe(model, 0, "before")
    else:  # a caller's "before" must measure what "after" will: the run's own probe set
        want, have = [f"{p.name}.{p.metric}" for p in probes], [r.key for r in before]
        if sorted(want) != sorted(have):
            raise ValueError(f"the given before-results ({', '.join(have)}) are not of this "
                             f"run's probe set ({', '.join(want)}): take them from probe_set")
        log({"event": "probe", "stage": "before", "step": 0, "reused": True,
             "results": {r.key: r.value for r in before}})
    callbacks = [EveryN(config.probe_every, lambda step, m: probe(m, step, "during"))]
    if config.guard:  # limits checked while training; refused now if the base fails them
        from retain.guard import guard_callback

        callbacks.append(guard_callback(
            config, plan.guard_probes, tok, model, verify_probes=plan.guard_verify,
            base_model=base_model, log=log, main=main,
            context=lambda: autocast(device, mixed), resumed=resume is not None))

    # 2. Strategies prepare the model, then the data (in list order). Mixed precision: trainable
    #    weights in fp32 (master weights) once the PEFT strategies have made theirs, so that the
    #    regularizers anchor and weigh fp32 weights.
    failure["stage"] = "prepare"
    ctx = RunContext(tokenizer=tok, seed=config.seed, out_dir=out if main else None,
                     device=device, base_state=base_state, reference=plan.reference)
    with autocast(device, mixed):
        for s in strategies:
            if resume is not None:
                s.load_state_dict(saved["strategies"].get(s.name, {}))
            if mixed != "no" and s.family != "peft":
                upcast_trainable(model)
            model = s.prepare(model, ctx)
    if mixed != "no":
        upcast_trainable(model)
    train_data = plan.domain_data
    for s in strategies:
        train_data = s.train_data(train_data, ctx)
    trainable = count_params(model, trainable_only=True)
    if resume is not None:
        load_state(model, resume.trainable)
        for cb in callbacks:
            if cb.name:
                cb.load_state_dict(saved["callbacks"][cb.name])

    # 3. Train: LM loss + the strategies' penalties; probes, guard and checkpoints on the way.
    failure["stage"] = "train"
    tcfg = TrainConfig(lr=config.lr, steps=config.steps, batch_size=config.batch_size,
                       grad_accum=config.grad_accum, warmup_steps=config.warmup_steps,
                       schedule=config.schedule, weight_decay=config.weight_decay,
                       max_grad_norm=config.max_grad_norm, seed=config.seed,
                       log_every=config.log_every, mixed_precision=mixed)

    def extra_state():  # what a checkpoint keeps beside the loop's own state
        tree = {"strategies": {s.name: s.state_dict() for s in strategies},
                "callbacks": {cb.name: cb.state_dict() for cb in callbacks if cb.name}}
        tensors, js = ckpt.split_tree(tree)
        return tensors, {"state": js, "metrics_lines": len(_records(out / rr.METRICS_FILE)),
                         "before": [r.to_dict() for r in before], "inputs": plan.inputs}
    checkpointer = Checkpointer(out, config.checkpoint_every, config.keep_checkpoints, extra_state)
    callbacks.append(checkpointer)  # last: a checkpoint holds the step's guard decision
    # A failure here (TrainingFailed) carries its step into the failed results.json.
    trained = train(model, train_data, pad_id=pad_token_id(tok), config=tcfg,
                    strategies=strategies, on_log=log, accelerator=acc, callbacks=callbacks,
                    resume=resume, progress=config.progress)

    # 4. Strategies finalize (merge adapters, merge with the base, ...), in list order.
    failure["stage"] = "finalize"
    for s in strategies:
        model = s.finalize(model, ctx)
    model.eval()

    # 5. After: what it can do now, and what changed.
    failure["stage"] = "after"
    after = probe(model, trained.steps, "after")
    acc.end_training()
    results = {
        **rr.header("complete", config.seed, config.model_dump(mode="json")),
        "strategy": strategy_label(strategies),
        "strategies": describe(strategies),
        "strategy_info": ctx.info,
        "model": {"name": config.model, "architecture": type(model).__name__,
                  "params": count_params(model), "trainable_params": trainable,
                  "dtype": str(dtype).removeprefix("torch."), "device": str(device),
                  "mixed_precision": mixed},
        "data": {"spec": config.data, "examples": len(plan.domain_data),
                 "heldout_examples": plan.heldout,
                 "train_examples": len(train_data),
                 "train_tokens": sum(len(e["input_ids"]) for e in train_data),
                 "reference_spec": config.reference, "reference_examples": len(plan.reference)},
        "training": {"steps": trained.steps, "stopped_early": trained.stopped_early,
                     "tokens_seen": trained.tokens_seen,
                     "loss_tokens": trained.loss_tokens, "tokens_per_s": trained.tokens_per_s,
                     "wall_s": trained.wall_s, "final_loss": trained.final_loss,
                     "lr": config.lr, "batch_size": config.batch_size,
                     "grad_accum": config.grad_accum, "processes": acc.num_processes,
                     "global_batch": config.batch_size * config.grad_accum * acc.num_processes,
                     "seq_len": config.seq_len,
                     "resumed_from_step": trained.resumed_from_step,
                     "checkpoint_s": checkpointer.seconds,
                     "peak_memory_bytes": trained.peak_memory_bytes,
                     "loss_curve": [[h["step"], h["loss"]] for h in trained.history]},
        **outcome(before, after, base_state, model),  # probes, comparison, domain_gain, drift
    }
    if plan.split:  # guarded probes: what was selected on, apart from what is reported
        results["probe_split"] = plan.split
    if (used := sandbox.isolation_used()) is not None:  # a code probe ran (humaneval)
        results["sandbox"] = used
    for cb in callbacks:  # e.g. results["guard"]
        if cb.name and hasattr(cb, "summary"):
            results[cb.name] = cb.summary()
    if main and config.save_model:
        _save_model(model, tok, out)
        if config.save_fisher and hasattr(model, "peft_config"):  # an adapter folder
            results["fisher_file"] = None  # its tensors are not the base's names: no merge
        elif config.save_fisher:  # the fine-tune's own Fisher, on its own domain
            results["fisher_file"] = str(_save_fisher(model, plan.domain_data, config, out))
    return results

