"""Per-sample gradient statistics (the diagonal Fisher, MAS) module by module.

One ordinary batched forward, and one backward that stops at the outputs of the modules owning
trainable parameters (no weight gradient is formed there); then each such module turns its own
input and output gradient into per-sample gradients of its parameters: for ``nn.Linear`` the
outer products ``g_b^T x_b`` (one batched matmul), for any other module a ``torch.func`` vjp of
that module alone, vmapped over the samples. Each is reduced (squared, or made absolute) and
summed over the samples at once, while it is fresh, instead of holding every parameter's
per-sample gradient as a whole-model ``vmap`` does; the forward keeps the model's fast attention.

It applies to models whose trainable parameters are used only inside the forward of the module
that owns them, called with one tensor: HF decoder models, with or without LoRA. Anything else
raises ``Unsupported`` (the caller falls back to the whole-model vmap); so does a first chunk
whose per-sample gradients do not add up to the batch gradient (checked once, on that chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.func import functional_call, vjp, vmap

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Unsupported(Exception):
    """The model does not fit the module-by-module path (why, for the caller's log)."""


@dataclass
class _Call:
    module: torch.nn.Module
    names: list[str]  # the trainable parameters it owns, by full name
    local: list[str]  # the same, by name inside the module
    x: torch.Tensor  # its input (B, ...)
    out: torch.Tensor  # its output (B, ...)


def _owners(model: torch.nn.Module, params: dict[str, torch.nn.Parameter]):
    """module -> ([full names], [local names]) of the trainable parameters it owns directly.
    A parameter shared by two modules (tied embeddings) is owned by both."""
    by_id = {id(p): k for k, p in params.items()}
    out = {}
    for m in model.modules():
        own = [(by_id[id(p)], n) for n, p in m.named_parameters(recurse=False) if id(p) in by_id]
        if own:
            out[m] = ([k for k, _ in own], [n for _, n in own])
    missing = set(params) - {k for ks, _ in out.values() for k in ks}
    if missing:
        raise Unsupported(f"parameter {sorted(missing)[0]} has no owning module")
    return out


def _fast(m: torch.nn.Module) -> bool:
    """Modules whose per-sample gradients are formed here sample by sample, into one buffer."""
    if type(m) is torch.nn.Linear:
        return True
    return (type(m) is torch.nn.Embedding and m.max_norm is None
            and not m.scale_grad_by_freq and not m.sparse)


def _accumulate(total: torch.Tensor, per: torch.Tensor, reduce) -> None:
    """total += reduce(per) (``per`` may be overwritten); a square in one pass."""
    if reduce is torch.Tensor.square_:
        total.addcmul_(per, per)
    else:
        total += reduce(per)


def _rows(t: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """Sample ``b``'s first ``n`` positions (its real tokens) of a (B, T, ...) tensor."""
    return t[b, :n] if t.dim() >= 3 else t[b]


def _add_sample(call: _Call, g: torch.Tensor, b: int, n: int, loc: str, into: torch.Tensor,
                set_: bool = False) -> None:
    """Add sample ``b``'s gradient (over its ``n`` real positions; the padding's output
    gradient is zero) of ``call``'s parameter ``loc`` to ``into`` (its shape), or with
    ``set_``, write it there (a Linear's weight: no zeroing pass first)."""
    m = call.module
    if set_ and not (type(m) is torch.nn.Linear and loc == "weight"):
        into.zero_()
    if type(m) is torch.nn.Linear:  # g: (B, ..., out), x: (B, ..., in)
        g_b = _rows(g, b, n).reshape(-1, g.shape[-1]).float()  # (mixed precision: bf16 g, fp32 x)
        x_b = _rows(call.x, b, n).reshape(-1, call.x.shape[-1]).float()
        if loc != "weight":
            into.add_(g_b.sum(0))
        elif set_:
            torch.mm(g_b.T, x_b, out=into)  # (out, in)
        else:
            into.addmm_(g_b.T, x_b)
        return
    ids = call.x[b, :n].reshape(-1)  # embedding: (n,), (n, D)
    g_b = _rows(g, b, n).reshape(-1, g.shape[-1]).float()
    if m.padding_idx is not None:
        g_b = g_b * (ids != m.padding_idx).unsqueeze(-1).to(g_b.dtype)
    into.index_add_(0, ids, g_b)


def _sample_rows(call: _Call, g: torch.Tensor, b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedding's gradient for sample ``b`` as (rows, (rows, D) values): sparse."""
    ids, g_b = call.x[b, :n].reshape(-1), _rows(g, b, n).reshape(-1, g.shape[-1])
    rows, inverse = torch.unique(ids, return_inverse=True)
    vals = torch.zeros(len(rows), g_b.shape[-1], dtype=g_b.dtype, device=g_b.device)
    vals.index_add_(0, inverse, g_b)
    if call.module.padding_idx is not None:
        vals[rows == call.module.padding_idx] = 0
    return rows, vals


def _vmapped_grads(call: _Call, g: torch.Tensor,
                   params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """name -> (B, *shape): per-sample gradients of any other module's parameters, by a vjp
    of that module alone, vmapped over the samples (meant for small ones: norms, biases)."""
    m = call.module
    values = {loc: params[full].detach() for full, loc in zip(call.names, call.local)}

    def one(pv, x_b, g_b):
        _, pullback = vjp(lambda p: functional_call(m, p, (x_b.unsqueeze(0),)), pv)
        return pullback(g_b.unsqueeze(0))[0]

    per = vmap(one, in_dims=(None, 0, 0))(values, call.x, g)
    return {full: per[loc] for full, loc in zip(call.names, call.local)}


def per_sample_totals(model: torch.nn.Module, objective: Objective,
                      chunks: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                      reduce: Callable[[torch.Tensor], torch.Tensor],
                      params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """sum over every sample of ``reduce(per-sample gradient of objective)`` per parameter
    (float32, like the parameter); ``chunks`` yields right-padded (ids, labels, mask), each (B, T).
    Raises ``Unsupported`` before any result when the model does not fit (see the module)."""
    owners = _owners(model, params)
    calls: list[_Call] = []
    state = {"recording": True, "why": None}

    def hook(m, args, kwargs, output):
        if not state["recording"]:
            return
        if kwargs or len(args) != 1 or not torch.is_tensor(args[0]) or not torch.is_tensor(output):
            state["why"] = f"{type(m).__name__} is called with other than one tensor"
            return
        if args[0].dim() == 0 or args[0].shape[0] != state["batch"] or output.shape[0] != state["batch"]:
            state["why"] = f"{type(m).__name__}'s input is not one row per sample"  # GPT-2's positions
            return
        names, local = owners[m]
        calls.append(_Call(m, names, local, args[0].detach(), output))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in owners]
    total = {k: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for k, p in params.items()}
    try:
        for i, (ids, labels, mask) in enumerate(chunks):
            calls.clear()
            state["recording"], state["batch"] = True, ids.shape[0]
            logits = model(input_ids=ids).logits  # (B, T, V)
            state["recording"] = False
            if state["why"]:
                raise Unsupported(state["why"])
            if {k for c in calls for k in c.names} != set(params):
                raise Unsupported("a trainable parameter is not used by its module's forward")
            loss = vmap(objective)(logits, labels, mask).sum()  # samples are independent
            check = i == 0
            wrt = [c.out for c in calls] + (list(params.values()) if check else [])
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            pairs = [(c, g) for c, g in zip(calls, grads[:len(calls)]) if g is not None]
            lengths = mask.sum(1).tolist()  # real tokens of each (right-padded) sample
            sums = _reduce_chunk(pairs, lengths, params, total, reduce, keep_sums=check)
            if check:
                _check(sums, dict(zip(params, grads[len(calls):])))
            del logits, loss, grads
    finally:
        for h in handles:
            h.remove()
        calls.clear()
    return total


def _reduce_chunk(pairs: list[tuple[_Call, torch.Tensor]], lengths: list[int], params, total, reduce,
                  keep_sums: bool) -> dict[str, torch.Tensor]:
    """Add every sample's reduced gradient to ``total``, module by module; a parameter used by
    several calls (tied embeddings) is summed over them sample by sample first. Returns the
    per-sample gradients' sums when ``keep_sums`` (for ``_check``)."""
    uses: dict[str, int] = {}
    for c, _ in pairs:
        for k in c.names:
            uses[k] = uses.get(k, 0) + 1
    sums: dict[str, torch.Tensor] = {}

    def keep(k: str, per_sum: torch.Tensor) -> None:
        if keep_sums:
            sums[k] = sums[k] + per_sum if k in sums else per_sum.clone()

    n = len(lengths)
    for c, g in pairs:
        alone = [(k, loc) for k, loc in zip(c.names, c.local) if uses[k] == 1]
        if not alone:
            continue
        if not _fast(c.module):
            per = _vmapped_grads(c, g, params)
            for k, _ in alone:
                keep(k, per[k].sum(0))
                total[k] += reduce(per[k].float()).sum(0)
            continue
        for k, loc in alone:
            p = params[k]
            if type(c.module) is torch.nn.Embedding:  # sparse rows: no (V, D) per sample
                for b in range(n):
                    rows, vals = _sample_rows(c, g, b, lengths[b])
                    if keep_sums:
                        keep(k, torch.zeros(p.shape, dtype=vals.dtype, device=vals.device)
                             .index_add_(0, rows, vals))
                    total[k].index_add_(0, rows, reduce(vals.float()))
                continue
            buf = torch.empty(p.shape, dtype=torch.float32, device=g.device)
            for b in range(n):  # one sample's gradient at a time, reduced while in cache
                _add_sample(c, g, b, lengths[b], loc, buf, set_=True)
                keep(k, buf)
                _accumulate(total[k], buf, reduce)
    shared = [k for k, u in uses.items() if u > 1]
    for k in shared:
        users = [(c, g, c.local[c.names.index(k)]) for c, g in pairs if k in c.names]
        vmapped = {id(c): _vmapped_grads(c, g, params)[k] for c, g, _ in users if not _fast(c.module)}
        buf = torch.empty(params[k].shape, dtype=torch.float32, device=params[k].device)
        for b in range(n):
            buf.zero_()
            for c, g, loc in users:
                if id(c) in vmapped:
                    buf += vmapped[id(c)][b]
                else:
                    _add_sample(c, g, b, lengths[b], loc, buf)
            keep(k, buf)
            _accumulate(total[k], buf, reduce)
    return sums


def _check(sums: dict[str, torch.Tensor], batch: dict[str, torch.Tensor | None]) -> None:
    """The per-sample gradients of the first chunk must add up to its batch gradient: a
    parameter also used outside its module's forward, or an output changed in place, would not."""
    for k, b in batch.items():
        s = sums.get(k)
        if b is None and s is None:
            continue
        if b is None or s is None:
            raise Unsupported(f"per-sample gradients of {k} do not add up to the batch gradient")
        scale = float(b.abs().max())
        if float((s - b).abs().max()) > 1e-3 * scale + 1e-12:
            raise Unsupported(f"per-sample gradients of {k} do not add up to the batch gradient")
