"""Diagonal importance of each trainable parameter, estimated on the reference data.

Three named Fisher estimators (they give different numbers: van de Ven 2025, arXiv 2502.11756),
the MAS importance, and safetensors save/load so that later runs (online EWC) and Fisher-weighted
merging reuse them. Per-sample gradients come module by module (``per_sample``), or, where a model
does not allow that, from ``torch.func`` (vmap over grad of the whole model).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.func import functional_call, grad, vmap

from retain.errors import UserError
from retain.strategies.per_sample import Unsupported, per_sample_totals
from retain.train.sharding import all_sum, is_dtensor, local, reshard

Estimator = Literal["empirical", "sampled", "batched"]
ESTIMATORS: tuple[str, ...] = ("empirical", "sampled", "batched")
Importance = dict[str, torch.Tensor]  # parameter name (as in model.named_parameters()) -> tensor


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters the optimizer will train (requires_grad), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def select_examples(examples: list[dict], n_samples: int | None, seed: int) -> list[dict]:
    """A seeded random subset of ``n_samples`` examples (all of them, shuffled, when None or more
    than there are): the reference data may be ordered by capability, so the first n would not do."""
    if not examples:
        raise UserError("importance estimation needs reference examples, and there are none")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(examples), generator=gen).tolist()
    n = len(examples) if n_samples is None else min(n_samples, len(examples))
    return [examples[i] for i in order[:n]]


def pad_right(examples: list[dict], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a list of examples: (B, T) input_ids, (B, T) labels (-100 on padding), (B, T) mask.

    No attention mask is given to the model: with right padding and causal attention the padded
    tail cannot change earlier positions, and a mask-free forward is what vmap handles best."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.as_tensor(e["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.as_tensor(e["labels"], dtype=torch.long)
        mask[i, :n] = True
    return ids.to(device), labels.to(device), mask.to(device)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL of one sequence over its unmasked labels, in nats per token.

    logits: (T, V); labels: (T,) aligned with the inputs (HF convention, -100 = masked): position t
    predicts labels[t + 1]. A sequence with no unmasked label has loss 0."""
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)  # (T-1, V)
    targets = labels[1:]  # (T-1,)
    valid = targets != -100
    picked = logp.gather(-1, torch.where(valid, targets, 0).unsqueeze(-1)).squeeze(-1)  # (T-1,)
    return -(picked * valid).sum() / valid.sum().clamp(min=1)


def logit_sq_norm(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAS objective of one sequence: squared L2 norm of the logit vector, averaged over the real
    (unpadded) positions. logits: (T, V); mask: (T,) bool."""
    sq = logits.float().pow(2).sum(-1)  # (T,)
    return (sq * mask).sum() / mask.sum().clamp(min=1)


@contextlib.contextmanager
def _estimation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout: the importance must be deterministic) and, for HF models, eager
    attention while vmapping (SDPA has no vmap batching rule on CPU and falls back to a slow
    per-sample loop). Both are restored afterwards."""
    was_training = model.training
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    old_attn = getattr(config, "_attn_implementation", None)
    switch = hasattr(base, "set_attn_implementation") and old_attn not in (None, "eager")
    model.eval()
    try:
        if switch:
            base.set_attn_implementation("eager")
        yield
    finally:
        if switch:
            base.set_attn_implementation(old_attn)
        model.train(was_training)


def _per_sample_stat(
    model: torch.nn.Module,
    objective: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    examples: list[dict],
    reduce: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int,
) -> Importance:
    """Mean over examples of ``reduce(grad of objective)`` per trainable parameter, over chunks
    of ``chunk_size`` examples of similar length (sorted: little padding; the mean is the same).
    Module by module (``per_sample``: a batched forward and backward, per-sample gradients formed
    and reduced one module at a time) where the model allows it, else one whole-model
    ``vmap(grad(f))`` per chunk (memory ~ chunk_size x #trainable)."""
    trainable = trainable_parameters(reshard(model))
    params = {k: p.detach() for k, p in trainable.items()}
    if not params:
        raise UserError("the model has no trainable parameters to estimate importance for")
    if any(is_dtensor(p) for p in params.values()):
        return _sharded_per_sample_stat(model, objective, examples, reduce)
    device = _device(model)
    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))
    model_was_training = model.training
    model.eval()  # no dropout: the importance must be deterministic
    try:
        total = per_sample_totals(model, objective,
                                  (pad_right(c, device) for c in _chunks(ordered, chunk_size)),
                                  reduce, trainable)
        return {k: (v / len(examples)).cpu() for k, v in total.items()}
    except Unsupported:
        pass  # the whole-model vmap below
    finally:
        model.train(model_was_training)

    def per_sample(p: Importance, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor):
        logits = functional_call(model, p, (ids.unsqueeze(0),)).logits[0]  # (T, V)
        return objective(logits, labels, mask)

    per_sample_grads = vmap(grad(per_sample), in_dims=(None, 0, 0, 0))

    def one_by_one(p: Importance, ids, labels, mask) -> Importance:
        """The same per-sample gradients, sample after sample: for a model whose forward has
        data-dependent control flow, which vmap cannot batch (e.g. GPT-2's attention)."""
        outs = [grad(per_sample)(p, ids[i], labels[i], mask[i]) for i in range(len(ids))]
        return {k: torch.stack([o[k] for o in outs]) for k in p}

    total = {k: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for k, p in params.items()}
    batched = True
    with _estimation_mode(model):
        for chunk in _chunks(ordered, chunk_size):
            ids, labels, mask = pad_right(chunk, device)
            try:  # name -> (B, *shape)
                grads = (per_sample_grads if batched else one_by_one)(params, ids, labels, mask)
            except RuntimeError as e:
                if not batched or "vmap" not in str(e):
                    raise
                batched = False
                grads = one_by_one(params, ids, labels, mask)
            for k, g in grads.items():
                total[k] += reduce(g.float()).sum(0)  # reduce works in place: g is a fresh (B, *shape)
    return {k: (v / len(examples)).cpu() for k, v in total.items()}


def _sharded_per_sample_stat(model, objective, examples: list[dict], reduce) -> Importance:
    """``_per_sample_stat`` of a sharded (FSDP) model: every process takes the same sample
    through a backward pass, so that the reduce-scatter (a mean of equal gradients) leaves each
    process that sample's gradient on its shards, which it reduces and sums there. The weights
    stay sharded throughout; the samples are not shared out (each gradient is computed once,
    by every process together). Returns DTensors laid out like the parameters."""
    params = trainable_parameters(model)
    total = {k: torch.zeros(local(p).shape, dtype=torch.float32, device=p.device)
             for k, p in params.items()}
    with _estimation_mode(model):
        for e in examples:
            ids, labels, mask = pad_right([e], _device(model))
            model.zero_grad(set_to_none=True)
            objective(model(input_ids=ids).logits[0], labels[0], mask[0]).backward()
            for k, p in params.items():
                if p.grad is not None:
                    total[k] += reduce(local(p.grad).float())
    model.zero_grad(set_to_none=True)
    reshard(model)  # (the root group stays gathered after a backward with no optimizer step)
    from torch.distributed.tensor import DTensor

    return {k: DTensor.from_local(v / len(examples), params[k].device_mesh, params[k].placements,
                                  shape=params[k].shape, stride=params[k].stride(), run_check=False)
            for k, v in total.items()}


def sample_labels(model: torch.nn.Module, examples: list[dict], seed: int, chunk_size: int = 8) -> list[dict]:
    """Copies of the examples whose labels are drawn from the model's own next-token distribution
    (teacher-forced on the true inputs) wherever the true label is unmasked: the targets of the
    true ('sampled') Fisher. Seeded, and independent of ``chunk_size``."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad(), _estimation_mode(model):
        for chunk in _chunks(examples, chunk_size):
            ids, _, _ = pad_right(chunk, _device(model))
            probs = torch.softmax(model(input_ids=ids).logits.float(), dim=-1).cpu()  # (B, T, V)
            for i, e in enumerate(chunk):
                n = len(e["input_ids"])
                if n < 2:  # nothing to predict
                    out.append(dict(e))
                    continue
                drawn = torch.multinomial(probs[i, : n - 1], 1, generator=gen).squeeze(-1)  # (n-1,)
                true = torch.as_tensor(e["labels"][1:n], dtype=torch.long)
                new = torch.where(true != -100, drawn, true).tolist()
                out.append({**e, "labels": [e["labels"][0]] + new})
    return out


def _batched_fisher(model: torch.nn.Module, examples: list[dict], batch_size: int) -> Importance:
    """Squared gradient of each minibatch's mean loss, averaged over minibatches: what most
    libraries compute. It is not the Fisher (cross terms between samples survive); for comparison."""
    params = trainable_parameters(model)
    total = {k: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for k, p in params.items()}
    batches = list(_chunks(examples, batch_size))
    with _estimation_mode(model):
        for batch in batches:
            ids, labels, _ = pad_right(batch, _device(model))
            logits = model(input_ids=ids).logits  # (B, T, V)
            loss = torch.stack([token_nll(logits[i], labels[i]) for i in range(len(batch))]).mean()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for k, g in zip(params, grads):
                if g is not None:
                    total[k] += g.float().pow(2)
    return {k: (v / len(batches)).cpu() for k, v in total.items()}


def estimate_fisher(
    model: torch.nn.Module,
    examples: list[dict],
    estimator: Estimator = "empirical",
    *,
    n_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    chunk_size: int = 8,
) -> Importance:
    """Diagonal Fisher of the trainable parameters on ``n_samples`` seeded-chosen examples.

    The per-sample loss is the sample's mean next-token NLL over its unmasked labels (nats per
    token), so the scale does not grow with sequence length.
    - ``empirical``: mean over samples of the squared gradient of the true-label loss.
    - ``sampled``: same, with labels drawn from the model's own predictive distribution at every
      unmasked position (the true Fisher, one Monte Carlo draw per position; seeded by ``seed``).
    - ``batched``: squared gradient of the mean loss of minibatches of ``batch_size``, averaged
      over minibatches (equals ``empirical`` when batch_size is 1).
    Returns float32 CPU tensors named as in ``model.named_parameters()``."""
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown Fisher estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    chosen = select_examples(examples, n_samples, seed)
    if estimator == "batched":
        return _batched_fisher(model, chosen, batch_size)
    if estimator == "sampled":
        chosen = sample_labels(model, chosen, seed, chunk_size)
    return _per_sample_stat(
        model, lambda logits, labels, mask: token_nll(logits, labels), chosen, torch.Tensor.square_, chunk_size
    )


def estimate_mas(
    model: torch.nn.Module,
    examples: list[dict],
    *,
    n_samples: int | None = None,
    seed: int = 0,
    chunk_size: int = 8,
) -> Importance:
    """MAS importance (Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to
    forget", https://arxiv.org/abs/1711.09601): mean over samples of the absolute gradient of the
    squared L2 norm of the output logits (averaged over the sequence's positions). Needs no labels."""
    chosen = select_examples(examples, n_samples, seed)
    return _per_sample_stat(
        model, lambda logits, labels, mask: logit_sq_norm(logits, mask), chosen, torch.Tensor.abs_, chunk_size
    )


def estimate_once(estimate: Callable[[], Importance], model: torch.nn.Module) -> Importance:
    """``estimate()`` on the main process only, broadcast to the others (under several processes
    each would otherwise spend the time, and on a GPU their sums could differ by float noise).
    Every process must call it; a single process just calls ``estimate()``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return estimate()
    if any(is_dtensor(p) for p in model.parameters()):  # sharded: every process takes part
        return estimate()
    params = trainable_parameters(model)
    if dist.get_rank() == 0:
        out = estimate()
    else:
        out = {k: torch.zeros(p.shape, dtype=torch.float32) for k, p in params.items()}
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    device = _device(model) if dist.get_backend() == "nccl" else torch.device("cpu")
    for name in sorted(out):
        t = out[name].to(device, torch.float32)
        dist.broadcast(t, src=0)
        out[name] = t.cpu()
    return out


def normalize_importance(importance: Importance, how: Literal["none", "mean", "max"]) -> Importance:
    """Rescale by one global constant (the mean or the max over every entry of every tensor), so
    that relative importance across parameters is kept while the penalty's strength stops depending
    on the estimator, the data and the model size. An all-zero importance is returned unchanged."""
    if how == "none":
        return dict(importance)
    if any(is_dtensor(v) for v in importance.values()):  # sharded: over every shard
        scale = _sharded_scale(list(importance.values()), how)
    else:
        flat = torch.cat([v.flatten().float() for v in importance.values()])
        scale = flat.mean() if how == "mean" else flat.max()
    if not scale > 0:
        return dict(importance)
    return {k: v / scale for k, v in importance.items()}


def _sharded_scale(values: list[torch.Tensor], how: str) -> torch.Tensor:
    """``normalize_importance``'s mean or max over DTensor shards: one all-reduce."""
    if how == "mean":
        total = all_sum(torch.stack([local(v).double().sum() for v in values]).sum(), True)
        return (total / sum(v.numel() for v in values)).float()
    mine = [local(v).max() for v in values if local(v).numel()]
    top = torch.stack(mine).max().double() if mine else torch.tensor(-math.inf, dtype=torch.float64)
    return all_sum(top, True, op="max").float()


def accumulate_online(previous: Importance, new: Importance, gamma: float) -> Importance:
    """Online EWC (Schwarz et al. 2018, "Progress & Compress", https://arxiv.org/abs/1805.06370):
    F = gamma * F_previous + F_new, per parameter."""
    if set(previous) != set(new):
        missing = sorted(set(new) ^ set(previous))[:3]
        raise UserError(f"the previous Fisher does not cover the same parameters as this model (e.g. {missing})")
    for k in new:
        if previous[k].shape != new[k].shape:
            raise UserError(f"the previous Fisher has shape {tuple(previous[k].shape)} for {k}, the model {tuple(new[k].shape)}")
    return {k: gamma * previous[k].float() + new[k].float() for k in new}


def save_importance(path: str | Path, importance: Importance, metadata: dict[str, Any]) -> Path:
    """Write importance tensors to a safetensors file, atomically (temp file, then rename).
    Metadata values are stored JSON-encoded (safetensors metadata is str -> str)."""
    return save_float32_atomic(path, importance, {k: json.dumps(v) for k, v in metadata.items()})


def save_float32_atomic(path: str | Path, tensors: Importance, metadata: dict[str, str]) -> Path:
    """``tensors`` as float32 CPU tensors in a safetensors file with ``metadata`` (str -> str),
    written to a temporary file beside ``path`` and renamed over it: never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_importance(path: str | Path) -> tuple[Importance, dict[str, Any]]:
    """Read a file written by ``save_importance``: (tensors, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"importance file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v  # written by another tool: keep the string
    return load_file(str(path)), meta


def model_fisher(net, examples: list[dict], *, n: int, estimator: str = "empirical",
                 seed: int = 0, chunk_size: int = 8) -> dict:
    """``net``'s diagonal Fisher over every floating-point parameter (whatever was frozen for
    training) on ``n`` of ``examples`` (seeded): what a Fisher merge weighs a model by."""
    for p in net.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return estimate_fisher(net, examples, estimator, n_samples=n, seed=seed,
                           batch_size=chunk_size, chunk_size=chunk_size)
