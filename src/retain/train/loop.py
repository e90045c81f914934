"""The one training loop, on ``accelerate.Accelerator``: ``accelerate launch`` (or ``torchrun``)
runs it data-parallel on several devices without a code change.

Each optimizer step: a seeded global batch (every process takes its micro-batches), the LM loss
normalized by the loss tokens of the whole global batch plus the strategies' penalties, backward
under mixed precision (``precision.py``), a finiteness check, gradient clipping, AdamW over the
trainable parameters only, a linear warm-up then cosine (or constant) learning rate. A log record
every ``log_every`` steps, then the callbacks (the progress bar, probes, the guard, checkpoints:
``callbacks/``), whose decisions the loop carries out (``apply_decision``).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from retain.formats import IGNORE
from retain.strategies.base import call_penalty
from retain.train.callbacks.base import (Callback, Decision, LoopState, apply_decision,
                                         as_decision)
from retain.train.callbacks.progress import ProgressBar
from retain.train.checkpoint import Checkpoint, set_rng_state
from retain.train.precision import autocast, grad_scaler
from retain.train.sharding import full, is_sharded, reshard, set_gradient_sync


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    steps: int = 100
    batch_size: int = 16  # examples per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" (to 0 at the last step) or "constant", after warm-up
    weight_decay: float = 0.0  # on matrices only (not on norms and biases)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    mixed_precision: str = "no"  # resolved: "no", "bf16", "fp16" (see retain.train.precision)


class TrainingFailed(RuntimeError):
    """Training cannot go on: a non-finite loss or gradient at ``step`` (the weights are those
    of the step before; no optimizer step was taken with the bad values)."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"training failed at step {step}: {reason}")
        self.step, self.reason = step, reason


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int  # non-pad input tokens, all processes
    loss_tokens: int  # tokens that took a loss (labels != -100 after the shift)
    wall_s: float  # training time, probing and checkpoints excluded
    tokens_per_s: float
    final_loss: float  # mean total loss over the last log window
    history: list[dict] = field(default_factory=list)  # the log records
    stopped_early: bool = False  # a callback asked to stop before config.steps
    resumed_from_step: int | None = None  # the checkpoint this call continued from
    peak_memory_bytes: int | None = None  # CUDA only: torch.cuda.max_memory_allocated


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of ``{"input_ids", "labels"}`` into (B, T) tensors + attention mask."""
    T = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` lists of ``batch_size`` example indices: seeded epochs of permutations, joined
    end to end (a batch may span two epochs; fewer examples than a batch simply repeat)."""
    g = torch.Generator().manual_seed(seed)
    pool: list[int] = []
    for _ in range(steps):
        while len(pool) < batch_size:
            pool += torch.randperm(n, generator=g).tolist()
        yield pool[:batch_size]
        pool = pool[batch_size:]


def lr_factor(step: int, *, steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at 0-based ``step``: linear warm-up, then cosine or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters: decay on matrices, none on vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def process_state():
    """accelerate's ``PartialState`` of this process. Without CUDA it must be asked for the CPU
    (gloo): a bare ``PartialState()`` takes each of torchrun's processes for a world of one."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def make_accelerator(device: torch.device, **kwargs):
    """The run's Accelerator (``kwargs``: e.g. ``log_with``/``project_dir`` for trackers). Mixed
    precision is the loop's own (``retain.train.precision``), not accelerate's."""
    from accelerate import Accelerator

    # The model is already where load_model put it (cuda:LOCAL_RANK under accelerate launch);
    # without device_placement=False a single process would move a cuda:1 model to cuda:0.
    return Accelerator(cpu=device.type == "cpu", device_placement=False, **kwargs)


def loss_token_counts(data: Sequence[dict]) -> list[int]:
    """Per example: the positions that take a loss (labels != -100 after the one-token shift)."""
    return [sum(1 for lab in e["labels"][1:] if lab != IGNORE) for e in data]


def main_decision(d: Decision, acc, device: torch.device, step: int, cb) -> Decision:
    """The main process's decision, which every process carries out (one all-gather of each
    process's stop / restore / lr_scale). A restore loads each process's own kept weights (the
    same under DDP): a process that has none while the main process restores raises on every
    process at once, and processes that decided otherwise are named in a warning."""
    mine = torch.tensor([float(d.stop), float(d.restore is not None),
                         math.nan if d.lr_scale is None else float(d.lr_scale)],
                        dtype=torch.float64, device=device)
    every = acc.gather(mine).reshape(acc.num_processes, 3).cpu().tolist()
    what = [(bool(s), bool(r), None if math.isnan(x) else x) for s, r, x in every]
    stop, restore, lr_scale = what[0]
    name = type(cb).__name__
    if restore and not all(r for _, r, _ in what):
        lacking = [i for i, (_, r, _) in enumerate(what) if not r]
        raise RuntimeError(f"step {step}: the main process's {name} restores its kept weights, "
                           f"but process(es) {lacking} have no kept state to restore: the "
                           "processes' callbacks went apart")
    if acc.is_main_process and (other := [i for i, w in enumerate(what) if w != what[0]]):
        import warnings

        warnings.warn(f"step {step}: {name}'s decision on process(es) {other} differs from the "
                      f"main process's (stop, restore, lr_scale = {what[0]}): all follow the "
                      "main process", RuntimeWarning, stacklevel=2)
    return Decision(stop=stop, restore=d.restore if restore else None, lr_scale=lr_scale)


def check_same_weights(state: dict[str, torch.Tensor], acc, device: torch.device,
                       step: int) -> None:
    """Raise on every process when the weights they restored differ (a sum and a sum of
    squares in float64: cheap, and restores are rare)."""
    fp = torch.zeros(2, dtype=torch.float64)
    for t in state.values():
        t = t.detach().double()
        fp += torch.stack([t.sum(), t.square().sum()]).cpu()
    every = acc.gather(fp.to(device)).reshape(acc.num_processes, 2)
    if not bool((every == every[0]).all()):
        raise RuntimeError(f"step {step}: the processes restored different kept weights "
                           f"(fingerprints {every.tolist()}): they would train apart")


def train(model: torch.nn.Module, data: Sequence[dict], *, pad_id: int, config: TrainConfig,
          strategies: Sequence = (), on_log: Callable[[dict], None] | None = None,
          callbacks: Sequence[Callback] = (), resume: Checkpoint | None = None,
          progress: bool = True, accelerator=None) -> TrainResult:
    """Train ``model`` in place on tokenized ``data`` for ``config.steps`` optimizer steps.

    One optimizer step takes ``batch_size * grad_accum * processes`` examples (the global batch).
    Its LM loss is the mean cross-entropy over the loss tokens of the whole global batch, so the
    weights do not depend on how the batch is split into micro-batches and processes.
    ``strategies`` add ``penalty(model, batch, outputs)`` terms (once per optimizer step,
    averaged over micro-batches), or, for penalties of the weights alone (``fused_penalty``),
    their gradient once per step after the backward pass (``penalty_grad``). ``on_log(record)`` gets a record every ``log_every`` steps and at the last
    (main process). After each step every callback's ``on_step_end`` runs, on every process, in
    list order, with the training clock stopped; the loop carries out their ``Decision``s
    (restore, lr scale, stop). ``resume``: a checkpoint of this run to continue from.
    A non-finite loss or gradient raises ``TrainingFailed`` before the bad update is applied."""
    if not data:
        raise ValueError("no training examples")
    device = next(model.parameters()).device
    acc = accelerator or make_accelerator(device)
    # Dropout and anything else random in the forward pass; one seed per process (each drops
    # other units on its other examples), the main process's being the run's seed.
    torch.manual_seed(config.seed + acc.process_index)
    sharded = is_sharded(model)
    if sharded:  # the optimizer and the gradient clip hold the shards, not gathered weights
        reshard(model)
    opt = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                            fused=device.type in ("cuda", "cpu") or None)
    # Not prepared by accelerate: its scheduler wrapper steps once per process, and our
    # schedule counts global optimizer steps.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
        s, steps=config.steps, warmup_steps=config.warmup_steps, schedule=config.schedule))
    scaler = grad_scaler(device, config.mixed_precision)
    if not sharded:  # DDP under several processes; a sharded model syncs its own gradients
        model, opt = acc.prepare(model, opt)
    inner = acc.unwrap_model(model)
    device = next(inner.parameters()).device
    rank, world, accum = acc.process_index, acc.num_processes, config.grad_accum
    params = [p for p in inner.parameters() if p.requires_grad]
    counts = loss_token_counts(data)
    # Penalties of the weights alone add their gradient once per optimizer step, after the
    # backward pass (``penalty_grad``); the others go into each micro-batch's loss.
    fused = [s for s in strategies if getattr(s, "fused_penalty", False)]
    in_loss = [s for s in strategies if not getattr(s, "fused_penalty", False)]

    # The loop's counters, JSON (they go into checkpoints): global token counts, the log window
    # (this rank's share of the LM loss, and the penalty, summed since the last log record).
    c = {"tokens": 0, "loss_tokens": 0, "train_s": 0.0, "history": [], "window": [0.0, 0.0],
         "window_n": 0, "grad_norm": None}
    start = 0
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        if scaler is not None and resume.scaler:
            scaler.load_state_dict(resume.scaler)
        c.update(resume.loop)
        start = resume.step
        set_rng_state(resume.rng["tensors"], resume.rng["json"])
    state = LoopState(step=start, max_steps=config.steps, model=inner, optimizer=opt,
                      scheduler=sched, scaler=scaler, accelerator=acc, counters=c)
    bar = ProgressBar() if progress else None  # first: it advances before a step's probes
    callbacks = [bar, *callbacks] if bar else list(callbacks)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def emit(step: int) -> None:
        """A log record of the steps since the last one (the LM loss summed over processes)."""
        elapsed = c["train_s"] + time.perf_counter() - t0
        w = torch.tensor(c["window"], device=device, dtype=torch.float64)
        lm = float(acc.reduce(w[0].clone(), "sum")) / c["window_n"]  # ranks hold shares
        pen = float(w[1]) / c["window_n"]  # the same on every rank
        rec = {"event": "train", "step": step, "loss": lm + pen, "lm_loss": lm, "penalty": pen,
               "lr": sched.get_last_lr()[0], "grad_norm": c["grad_norm"],
               "tokens_seen": c["tokens"], "tokens_per_s": c["tokens"] / max(elapsed, 1e-9),
               "elapsed_s": elapsed}
        c["history"].append(rec)
        c["window"], c["window_n"] = [0.0, 0.0], 0
        if on_log and acc.is_main_process:
            on_log(rec)
        for cb in callbacks:
            cb.on_log(state, rec)

    def pause(fn):  # run fn with the training clock stopped
        nonlocal t0
        c["train_s"] += time.perf_counter() - t0
        try:
            return fn()
        finally:
            t0 = time.perf_counter()

    for cb in callbacks:
        cb.on_train_begin(state)
    model.train()
    # A run resumed from the checkpoint of the step a callback stopped it at ends there too.
    step, stopped = start, bool(c.get("stopped"))
    t0 = time.perf_counter()
    try:
        global_batches = [] if stopped else batch_indices(  # stopped: nothing left to train
            len(data), config.batch_size * accum * world, config.steps, config.seed)
        for step, idx in enumerate(global_batches, 1):
            if step <= start:
                continue  # resumed: these batches were trained on before the checkpoint
            state.step = step
            n_step = sum(counts[i] for i in idx)  # loss tokens of the whole global batch
            lm_part = torch.zeros((), device=device)  # this rank's share of the step's LM loss
            penalty = torch.zeros((), device=device)
            for m in range(accum):
                lo = (rank * accum + m) * config.batch_size
                mine = idx[lo:lo + config.batch_size]
                batch = {k: v.to(device) for k, v in collate([data[i] for i in mine], pad_id).items()}
                n_micro = sum(counts[i] for i in mine)
                last = m == accum - 1
                if sharded:  # reduce-scatter once per step, after the last micro-batch
                    set_gradient_sync(model, last)
                with (contextlib.nullcontext() if last or sharded else acc.no_sync(model)), \
                        autocast(device, config.mixed_precision):
                    out = model(**batch)  # .loss: mean CE over this micro-batch's loss tokens
                    lm = out.loss * (n_micro / max(n_step, 1)) if n_micro else out.logits.sum() * 0
                    pen = torch.zeros((), device=device)
                    for s in in_loss:
                        p = call_penalty(s, inner, batch, out)
                        if p is not None:
                            pen = pen + p
                    # DDP (and FSDP) average gradients over processes: scale the LM share up.
                    loss = lm.float() * world + pen.float() / accum
                (scaler.scale(loss) if scaler is not None else loss).backward()
                lm_part += lm.detach().float()
                penalty += pen.detach().float() / accum
            if scaler is not None:
                scaler.unscale_(opt)
            for s in fused:  # penalties of the weights alone: their gradient added directly
                p = s.penalty_grad(inner)
                if p is not None:
                    penalty += p.detach().float().to(device)
            if config.max_grad_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            norm = full(norm)  # sharded: the norm over every shard (a DTensor until gathered)
            # One sync per step: is the loss (any process) or the gradient non-finite?
            bad = torch.stack([~torch.isfinite(lm_part + penalty),
                               ~torch.isfinite(norm) & (scaler is None)]).float()
            if world > 1:
                bad = acc.reduce(bad, "sum")
            bad_loss, bad_grad = (bool(x) for x in bad.tolist())
            if bad_loss or bad_grad:
                what = "loss" if bad_loss else "gradient norm"
                value = float(lm_part + penalty) if bad_loss else float(norm)
                raise TrainingFailed(step, f"non-finite {what} ({value}); the weights are those "
                                     f"of step {step - 1}")
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

            c["tokens"] += sum(len(data[i]["input_ids"]) for i in idx)
            c["loss_tokens"] += n_step
            c["grad_norm"] = float(norm)
            c["window"][0] += float(lm_part)
            c["window"][1] += float(penalty)
            c["window_n"] += 1
            if step % config.log_every == 0 or step == config.steps:
                emit(step)
            for cb in callbacks:  # later callbacks (checkpoints) see earlier ones' decisions
                d = as_decision(pause(lambda: cb.on_step_end(state)))
                if world > 1 and cb.decides:  # all carry out the main process's decision
                    d = main_decision(d, acc, device, step, cb)
                stopped = apply_decision(d, inner, opt, sched) or stopped
                if d.restore is not None and world > 1 and not sharded:  # shards differ
                    check_same_weights(d.restore, acc, device, step)
                c["stopped"] = stopped  # later callbacks (the checkpointer) see the stop
            if stopped:
                if c["window_n"]:
                    emit(step)
                break
    finally:
        if bar:
            bar.close()  # also on an error, which skips on_train_end
        inner.eval()
    c["train_s"] += time.perf_counter() - t0
    for cb in callbacks:
        cb.on_train_end(state)
    history = c["history"]
    return TrainResult(steps=step, tokens_seen=c["tokens"], loss_tokens=c["loss_tokens"],
                       wall_s=c["train_s"], tokens_per_s=c["tokens"] / max(c["train_s"], 1e-9),
                       final_loss=history[-1]["loss"] if history else float("nan"),
                       history=history, stopped_early=step < config.steps,
                       resumed_from_step=resume.step if resume is not None else None,
                       peak_memory_bytes=torch.cuda.max_memory_allocated(device)
                       if device.type == "cuda" else None)
