"""The one training loop, on ``accelerate.Accelerator``: ``accelerate launch`` (or ``torchrun``)
runs it data-parallel on several devices without a code change.

Each step: a seeded batch of examples (right-padded; every process takes its slice of the global
batch), loss = LM loss + the sum of the strategies' penalties, backward, gradient clipping, AdamW
over the trainable parameters only, a linear warm-up then cosine decay (or constant) learning
rate. A log record every ``log_every`` steps and a callback every ``probe_every`` steps (the run
probes the model there); a progress bar shows the loss and tokens/s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from retain.data import IGNORE


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    steps: int = 100
    batch_size: int = 16  # examples per process and step
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine" (to 0 at the last step) or "constant", after warm-up
    weight_decay: float = 0.0  # on matrices only (not on norms and biases)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    probe_every: int = 0  # 0: never
    mixed_precision: str = "no"  # passed to Accelerator: "no", "bf16", "fp16" (forced "no" on CPU)


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int  # non-pad input tokens, all processes
    loss_tokens: int  # tokens that took a loss (labels != -100 after the shift)
    wall_s: float  # training time, probing excluded
    tokens_per_s: float
    final_loss: float  # mean total loss over the last log window
    history: list[dict] = field(default_factory=list)  # the log records
    stopped_early: bool = False  # on_probe asked to stop before config.steps


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


def make_accelerator(device: torch.device, mixed_precision: str = "no", **kwargs):
    """The run's Accelerator (``kwargs``: e.g. ``log_with``/``project_dir`` for trackers)."""
    from accelerate import Accelerator

    cpu = device.type == "cpu"
    # The model is already where load_model put it (cuda:LOCAL_RANK under accelerate launch);
    # without device_placement=False a single process would move a cuda:1 model to cuda:0.
    return Accelerator(cpu=cpu, mixed_precision="no" if cpu else mixed_precision,
                       device_placement=False, **kwargs)


def _progress_bar(total: int):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"),
                    TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def train(model: torch.nn.Module, data: Sequence[dict], *, pad_id: int, config: TrainConfig,
          strategies: Sequence = (), on_log: Callable[[dict], None] | None = None,
          on_probe: Callable[[int, torch.nn.Module], bool | None] | None = None,
          progress: bool = True, accelerator=None) -> TrainResult:
    """Train ``model`` in place on tokenized ``data`` for ``config.steps`` optimizer steps.

    ``strategies`` add ``penalty(model, batch)`` terms to the loss. ``on_log(record)`` gets a
    record every ``log_every`` steps and at the last; ``on_probe(step, model)`` runs every
    ``probe_every`` steps (main process only, model in eval mode, time not counted); if it
    returns True, training stops there (a guard, early stopping)."""
    if not data:
        raise ValueError("no training examples")
    device = next(model.parameters()).device
    acc = accelerator or make_accelerator(device, config.mixed_precision)
    torch.manual_seed(config.seed)  # dropout and anything else random in the forward pass
    opt = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                            fused=device.type == "cuda" or None)
    # Not prepared by accelerate: its scheduler wrapper steps once per process, and our
    # schedule counts global optimizer steps.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(
        s, steps=config.steps, warmup_steps=config.warmup_steps, schedule=config.schedule))
    model, opt = acc.prepare(model, opt)
    inner = acc.unwrap_model(model)
    device = next(inner.parameters()).device
    rank, world = acc.process_index, acc.num_processes

    history: list[dict] = []
    tokens = torch.zeros((), dtype=torch.long, device=device)  # non-pad tokens, this rank
    loss_tokens = torch.zeros((), dtype=torch.long, device=device)
    window = torch.zeros(3, device=device)  # sum of (total loss, lm loss, penalty) since log
    window_n, train_s, last_loss, grad_norm, step = 0, 0.0, float("nan"), None, 0
    stop = torch.zeros((), dtype=torch.long, device=device)
    bar = _progress_bar(config.steps) if progress and acc.is_main_process else None
    task = bar.add_task("", total=config.steps, loss=float("nan"), tps=0.0) if bar else None
    if bar:
        bar.start()

    def emit(step: int) -> None:
        """A log record of the steps since the last one (averaged over processes)."""
        nonlocal window_n, last_loss
        elapsed = train_s + time.perf_counter() - t0
        seen = int(acc.reduce(tokens.clone(), "sum"))
        w = (acc.reduce(window.clone(), "mean") / window_n).tolist()
        last_loss = w[0]
        rec = {"event": "train", "step": step, "loss": w[0], "lm_loss": w[1], "penalty": w[2],
               "lr": sched.get_last_lr()[0],
               "grad_norm": None if grad_norm is None else float(grad_norm),
               "tokens_seen": seen, "tokens_per_s": seen / max(elapsed, 1e-9),
               "elapsed_s": elapsed}
        history.append(rec)
        window.zero_()
        window_n = 0
        if on_log and acc.is_main_process:
            on_log(rec)
        if bar:
            bar.update(task, loss=w[0], tps=rec["tokens_per_s"])

    model.train()
    t0 = time.perf_counter()
    try:
        global_batches = batch_indices(len(data), config.batch_size * world, config.steps,
                                       config.seed)
        for step, idx in enumerate(global_batches, 1):
            mine = idx[rank * config.batch_size:(rank + 1) * config.batch_size]
            batch = {k: v.to(device) for k, v in collate([data[i] for i in mine], pad_id).items()}
            lm_loss = model(**batch).loss  # mean CE over this rank's loss tokens
            penalty = torch.zeros((), device=device)
            for s in strategies:
                p = s.penalty(inner, batch)
                if p is not None:
                    penalty = penalty + p
            loss = lm_loss + penalty
            acc.backward(loss)
            if config.max_grad_norm is not None:
                grad_norm = acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

            tokens += batch["attention_mask"].sum()
            loss_tokens += (batch["labels"][:, 1:] != IGNORE).sum()
            window += torch.stack([loss.detach(), lm_loss.detach(), penalty.detach()]).float()
            window_n += 1
            if step % config.log_every == 0 or step == config.steps:
                emit(step)
            if bar:
                bar.advance(task)
            if on_probe and config.probe_every and step % config.probe_every == 0:
                train_s += time.perf_counter() - t0
                if acc.is_main_process:
                    inner.eval()
                    stop.fill_(bool(on_probe(step, inner)))
                    inner.train()
                t0 = time.perf_counter()
                if int(acc.reduce(stop.clone(), "sum")):  # every process stops together
                    if window_n:
                        emit(step)
                    break
    finally:
        if bar:
            bar.stop()
        inner.eval()
    train_s += time.perf_counter() - t0
    seen = int(acc.reduce(tokens, "sum"))
    return TrainResult(steps=step, tokens_seen=seen,
                       loss_tokens=int(acc.reduce(loss_tokens, "sum")), wall_s=train_s,
                       tokens_per_s=seen / max(train_s, 1e-9), final_loss=last_loss,
                       history=history, stopped_early=step < config.steps)
