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
from pathlib import Path
from typing import Sequence


from retain.version import __version__
from retain.config import RunConfig
from retain.errors import UserError
from retain.report import results as rr
from retain.train import checkpoint as ckpt


def _save_model(model, tokenizer, out: Path, state: dict | None = None) -> None:
    """The model (``state``: its weights whole, for a sharded model) and tokenizer, written
    into a temporary folder renamed into place."""
    tmp = out / f".{rr.MODEL_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
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


def run(config: RunConfig, *, before: list | None = None, callbacks: Sequence = (),
        probes: list | None = None) -> dict:
    """Run ``config`` and write its run folder; returns the ``results.json`` content.

    ``before``: the probe results of the same model on the same probes, when the caller already
    has them (a comparison probes its base once, not once per strategy). ``callbacks``: more
    ``retain.train.callbacks.Callback``s on the loop (after the run's own probes and guard,
    before the checkpointer), e.g. the forecast's pilots. ``probes``: measure these instead of
    the config's probe set (before, during and after), e.g. a forecast pilot's selection parts.
    """
    from retain.preflight import preflight
    from retain.train.callbacks.recorder import Recorder
    from retain.train.loop import process_state

    t_start = time.perf_counter()
    state = process_state()
    plan = preflight(config)  # every user mistake, before the model is loaded or a file written
    if probes is not None:
        import dataclasses

        plan = dataclasses.replace(plan, probes=list(probes), probes_during=list(probes))
    # Under torchrun / accelerate launch every process trains and probes; the main one writes.
    recorder = Recorder(config.out, main=state.is_main_process)
    with recorder.recording(config.model_dump(mode="json"), config.seed, mode=plan.out_mode,
                            barrier=state.wait_for_everyone):
        results = _run(config, plan, before, recorder, callbacks)
        results["wall_s"] = time.perf_counter() - t_start
        recorder.write(results)
    return results


def _run(config: RunConfig, plan, before: list | None, recorder, more: Sequence) -> dict:
    from retain.models import copy_state, count_params, load_state
    from retain.probes import sandbox
    from retain.formats import pad_token_id
    from retain.report.trackers import make_trackers, start_trackers
    from retain.strategies import RunContext
    from retain.strategies.base import training_data
    from retain.train import Checkpointer, train
    from retain.train.callbacks.checkpointer import load_run_state, run_state
    from retain.train.callbacks.probes import ProbeCallback
    from retain.train.callbacks.recorder import model_info, results
    from retain.train import sharding
    from retain.train.loop import make_accelerator, process_state
    from retain.train.precision import autocast

    out, tok, strategies, main = Path(config.out), plan.tokenizer, plan.strategies, recorder.main
    sandbox.configure(config.sandbox)  # generated code of this run: refused or warned once
    world = process_state().num_processes
    if config.fsdp and world == 1 and main:
        import sys

        print("fsdp: one process, nothing to shard: start the run under torchrun or accelerate "
              "launch with several to shard it", file=sys.stderr)
    resume = (ckpt.load(plan.checkpoint, process_state().process_index,
                        sharded=config.fsdp and world > 1, world=world) if plan.out_mode == "resume" else None)
    tracker_kwargs, tracker_init = make_trackers(config.report_to, out)
    model = _load(config, plan)
    if config.fsdp and world > 1:  # before anything copies a weight
        from retain.train.sharding import shard_model

        shard_model(model)
    p0 = next(model.parameters())
    device, dtype, mixed = p0.device, p0.dtype, plan.mixed_precision
    recorder.accelerator = acc = make_accelerator(device, **tracker_kwargs)  # trackers log through it
    start_trackers(acc, config.model_dump(mode="json"), tracker_init)
    base_state = copy_state(model)  # CPU copy: drift and strategies (EWC, L2-SP) compare to it
    needs_base = any(getattr(p, "needs_base", False)
                     for p in plan.probes + plan.probes_during + plan.guard_probes)
    probing = ProbeCallback(tok, plan.probes, during=plan.probes_during, every=config.probe_every,
                            base_model=copy.deepcopy(model) if needs_base else None,  # KL to base
                            batch_size=config.probe_batch_size, log=recorder.log,
                            context=lambda: autocast(device, mixed), progress=config.progress and main)
    guard = _guard(config, plan, probing, recorder)  # [] or [its callback]
    callbacks = [recorder, probing, *guard, *more]
    checkpointer = Checkpointer(out, config.checkpoint_every, config.keep_checkpoints,
                                lambda: _extra_state(run_state(callbacks, strategies), plan))

    # 1. Before: what the model can do now (measured here unless the caller measured it); the
    #    guard refuses limits the model fails already. A resume has it all in its checkpoint.
    recorder.stage = "before"
    if resume is not None:
        saved = load_run_state(resume.extra_tensors, resume.extra["state"], callbacks)
    else:
        saved = {}
        probing.measure_before(model) if before is None else probing.reuse(before)
        for g in guard:
            g.start(model)

    # 2. Strategies prepare the model, then the data (in list order).
    recorder.stage = "prepare"
    ctx = RunContext(tokenizer=tok, seed=config.seed, out_dir=out if main else None,
                     device=device, base_state=base_state, reference=plan.reference)
    model = _prepare(model, strategies, ctx, mixed, saved.get("strategies"))
    train_data = training_data(strategies, plan.domain_data, ctx)
    trainable = count_params(model, trainable_only=True)
    if resume is not None:
        load_state(model, resume.trainable)

    # 3. Train: LM loss + the strategies' penalties; probes, guard, checkpoints on the way (the
    #    checkpointer last: a checkpoint holds the step's guard decision). A failure here
    #    (TrainingFailed) carries its step into the failed results.json.
    recorder.stage = "train"
    trained = train(model, train_data, pad_id=pad_token_id(tok), config=_train_config(config, mixed),
                    strategies=strategies, accelerator=acc, callbacks=[*callbacks, checkpointer],
                    resume=resume, progress=config.progress)

    # 4. Strategies finalize (merge adapters, merge with the base, ...), in list order.
    recorder.stage = "finalize"
    for s in strategies:
        model = s.finalize(model, ctx)
    model.eval()

    # 5. After: what it can do now, and what changed.
    recorder.stage = "after"
    after = probing.after(model, trained.steps)
    # A sharded model whole, on every process (all join the all-gathers, here and in the
    # drift of results), before the end of training takes the process group down.
    whole = sharding.full_state(model) if config.save_model and sharding.is_sharded(model) else None
    extra = {"probe_split": plan.split} if plan.split else {}  # selected on apart from reported
    if (used := sandbox.isolation_used()) is not None:  # a code probe ran (humaneval)
        extra["sandbox"] = used
    res = results(config=config.model_dump(mode="json"), seed=config.seed, strategies=strategies,
                  strategy_info=ctx.info, model=model, before=probing.before, after=after,
                  model_info=model_info(model, name=config.model, trainable=trainable,
                                        dtype=dtype, device=device, mixed=mixed),
                  data=_data_info(config, plan, train_data),
                  training=_training_info(config, trained, acc, checkpointer),
                  base_state=base_state, callbacks=callbacks, **extra)
    if whole is not None:
        if main:
            _save_model(model, tok, out, whole)
    elif main and config.save_model:
        _save_model(model, tok, out)
        if config.save_fisher and hasattr(model, "peft_config"):  # an adapter folder
            res["fisher_file"] = None  # its tensors are not the base's names: no merge
        elif config.save_fisher:  # the fine-tune's own Fisher, on its own domain
            res["fisher_file"] = str(_save_fisher(model, plan.domain_data, config, out))
    acc.end_training()
    return res


def _load(config: RunConfig, plan):
    """The model, seeded, checked against ``seq_len``, with gradient checkpointing if asked."""
    from accelerate.utils import set_seed

    from retain.models import load_model
    from retain.probes.engine import max_positions

    set_seed(config.seed)
    model, _ = load_model(config.model, dtype=plan.dtype, device=plan.device,
                          trust_remote_code=config.trust_remote_code, tokenizer=plan.tokenizer)
    if (limit := max_positions(model)) and config.seq_len > limit:
        raise UserError(f"seq_len={config.seq_len} is longer than the model's {limit} positions")
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(f"{type(model).__name__} does not support gradient checkpointing")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # a cache is useless (and refused) while recomputing
    return model


def _guard(config: RunConfig, plan, probing, recorder) -> list:
    """The guard's callback, when the run has limits: it scores the selection part of the guarded
    probes, and the weights the run ends with on the same probes at full size."""
    if not config.guard:
        return []
    from retain.train.callbacks.guard import guard_callback

    return [guard_callback(config.guard, probing, plan.guard_probes, plan.guard_verify,
                           probe_every=config.probe_every, steps=config.steps, log=recorder.log,
                           main=recorder.main)]


def _prepare(model, strategies, ctx, mixed: str, saved: dict | None):
    """Each strategy prepares the model, in list order (resumed: from its saved state). Mixed
    precision: trainable weights in fp32 (master weights) once the PEFT strategies have made
    theirs, so that the regularizers anchor and weigh fp32 weights."""
    from retain.train.precision import autocast, upcast_trainable

    with autocast(ctx.device, mixed):
        for s in strategies:
            if saved is not None:
                s.load_state_dict(saved.get(s.name, {}))
            if mixed != "no" and s.family != "peft":
                upcast_trainable(model)
            model = s.prepare(model, ctx)
    if mixed != "no":
        upcast_trainable(model)
    return model


def _extra_state(state: tuple[dict, dict], plan) -> tuple[dict, dict]:
    """What a checkpoint keeps beside the loop's own state: the strategies' and callbacks'
    states, and the fingerprint of the inputs (a resume must read the same)."""
    tensors, js = state
    return tensors, {"state": js, "inputs": plan.inputs}


def _train_config(config: RunConfig, mixed: str):
    from retain.train import TrainConfig

    return TrainConfig(lr=config.lr, steps=config.steps, batch_size=config.batch_size,
                       grad_accum=config.grad_accum, warmup_steps=config.warmup_steps,
                       schedule=config.schedule, weight_decay=config.weight_decay,
                       max_grad_norm=config.max_grad_norm, seed=config.seed,
                       log_every=config.log_every, mixed_precision=mixed)


def _data_info(config: RunConfig, plan, train_data: list[dict]) -> dict:
    return {"spec": config.data, "examples": len(plan.domain_data),
            "heldout_examples": plan.heldout, "train_examples": len(train_data),
            "train_tokens": sum(len(e["input_ids"]) for e in train_data),
            "reference_spec": config.reference, "reference_examples": len(plan.reference)}


def _training_info(config: RunConfig, trained, acc, checkpointer) -> dict:
    return {"steps": trained.steps, "stopped_early": trained.stopped_early,
            "tokens_seen": trained.tokens_seen, "loss_tokens": trained.loss_tokens,
            "tokens_per_s": trained.tokens_per_s, "wall_s": trained.wall_s,
            "final_loss": trained.final_loss, "lr": config.lr, "batch_size": config.batch_size,
            "grad_accum": config.grad_accum, "processes": acc.num_processes,
            "global_batch": config.batch_size * config.grad_accum * acc.num_processes,
            "seq_len": config.seq_len, "resumed_from_step": trained.resumed_from_step,
            "checkpoint_s": checkpointer.seconds, "peak_memory_bytes": trained.peak_memory_bytes,
            "loss_curve": [[h["step"], h["loss"]] for h in trained.history]}
