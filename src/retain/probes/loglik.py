"""Multiple-choice log-likelihoods: each context scored once and shared by its choices.

A batch of contexts runs through the model once and its key/value cache serves every choice
(``continuation_logprobs``): the choices of an item packed in one row behind a 4D mask over the
cache, or a row per choice over a copy of it; short contexts go through one forward together
with their choices. Each form is checked against the plain one on the first batch of a call.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import torch

from retain.formats import pad_token_id
from retain.probes.engine import (cache_kwarg, shares_prefix, inference_mode,
                                  length_sorted_batches, model_device, pad_batch, takes_kwarg,
                                  token_logprobs)


def continuation_logprobs(model, tokenizer, contexts: Sequence[Sequence[int]],
                          continuations: Sequence[Sequence[Sequence[int]]], *,
                          batch_size: int = 32) -> list[list[float]]:
    """For each context (ids) and each of its continuations (ids), the summed log-probability
    (nats) of the continuation given the context: ``out[i][j]`` for ``continuations[i][j]``.

    Each context runs through the model once and its key/value cache is shared by its
    continuations (the multiple-choice case: one prompt, several answers), so a context is not
    scored once per choice. A batch is ``batch_size`` contexts: one forward of the contexts
    (padded on the right, unmasked: causal attention keeps the padding out of every real
    token's view), then one forward of the continuations but their last tokens over that cache
    (none when every continuation is one token): each item's choices packed in one row behind
    a 4D mask (``_rest_packed``) where the model passes the check of ``_packed_agrees``, else
    a row per choice over a copy of the cache. Positions continue from each context's real
    length, so every token sits where it sits unpadded. Models whose cache cannot be shared
    (``shares_prefix``: prompt-learning adapters, sliding windows, encoder-decoders) score each
    pair as one sequence, ``batch_size`` sequences a forward (``token_logprobs``)."""
    if any(len(c) == 0 for c in contexts):
        raise ValueError("every context needs at least one token (a BOS)")
    if not shares_prefix(model):
        seqs, spans = [], []
        for ctx, conts in zip(contexts, continuations):
            for cont in conts:
                seqs.append(list(ctx) + list(cont))
                spans.append((len(ctx) - 1, len(ctx) - 1 + len(cont)))  # logprobs[j] scores id j+1
        logps = token_logprobs(model, tokenizer, seqs, batch_size=batch_size)
        flat = iter(float(lp[s:e].sum()) for lp, (s, e) in zip(logps, spans))
        return [[next(flat) for _ in conts] for conts in continuations]

    pad_id = pad_token_id(tokenizer)
    device = model_device(model)
    out: list[list[float]] = [[0.0] * len(c) for c in continuations]
    # whether the packed form serves this model, and whether one forward of contexts and
    # choices together does: checked on a model's first batch that needs each, then remembered
    checked = _CHECKED.setdefault(model, {})
    key = str(getattr(getattr(model, "config", None), "_attn_implementation", ""))
    packed, inline = checked.get(key, (None, None))
    with inference_mode(model):
        # batches of similar rows: a context and its choices' tokens (the one-forward form's row)
        sizes = [len(c) + sum(max(0, len(x) - 1) for x in cs)
                 for c, cs in zip(contexts, continuations)]
        for batch in length_sorted_batches(sizes, batch_size):
            conts = [continuations[i] for i in batch]
            multi = max((len(c) for cs in conts for c in cs), default=0) >= 2 and \
                max(len(contexts[i]) for i in batch) <= INLINE_MAX_CONTEXT
            if inline and multi:  # one forward: contexts and choices together
                scores = _score_inline(model, [contexts[i] for i in batch], conts, pad_id)
                for b, i in enumerate(batch):
                    out[i] = scores[b]
                continue
            check_inline = inline is None and multi
            # Right padding and no mask: causal attention never lets a real token see the
            # padding after it, and the forward takes the unmasked (fastest) attention path.
            ids, mask = pad_batch([contexts[i] for i in batch], pad_id, side="right")  # (B, Lc)
            res = model(input_ids=ids.to(device), use_cache=True)
            last = (mask.sum(-1) - 1).to(res.logits.device)  # each context's last real token
            first = res.logits[torch.arange(len(batch), device=last.device), last]
            first = first.float().log_softmax(-1).cpu()  # (B, V): each first continuation id
            for b, i in enumerate(batch):
                for j, c in enumerate(continuations[i]):
                    if c:
                        out[i][j] = float(first[b, c[0]])
            conts = [continuations[i] for i in batch]
            if max((len(c) for cs in conts for c in cs), default=0) < 2:
                continue  # every continuation is one token: the context's logits are enough
            cache = getattr(res, "cache", None) or res.past_key_values
            if packed is None:  # first batch: check the packed form against the plain one
                packed, rest = _packed_agrees(model, cache, mask, conts, pad_id)
            else:
                rest = (_rest_packed if packed else _rest_replicated)(model, cache, mask, conts,
                                                                      pad_id)
            for b, i in enumerate(batch):
                for j, v in enumerate(rest[b]):
                    out[i][j] += v
            if check_inline:  # first batch: the one-forward form must give these scores
                try:
                    alt = _score_inline(model, [contexts[i] for i in batch], conts, pad_id)
                except Exception:  # noqa: BLE001 - any failure means: not this model
                    alt = None
                inline = alt is not None and all(
                    abs(x - y) <= 1e-3 for b, i in enumerate(batch)
                    for x, y in zip(alt[b], out[i]))
    checked[key] = (packed, inline)
    return out


# model -> {attention implementation: (packed form agrees, one-forward form agrees)}; a None is
# not yet checked. Weak: a model's entry goes with it.
_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


# Contexts up to this many tokens are scored with their choices in one forward (a 4D mask);
# longer ones in two (the contexts unmasked, the choices over their cache). Measured on the
# built-in model, 2 cores: 22-token contexts 10% faster in one forward, 143-token ones 13%
# slower (the masked attention over the whole row costs more than the second forward saves).
INLINE_MAX_CONTEXT = 64


class _Tree:
    """One item's choices but their last ids, as a prefix tree: choices that begin alike share
    the nodes of their common beginning, so each shared token runs through the model once.

    ids[q], depth[q]: node q's token and its depth (0 = the first id after the context);
    parents come before children. reads[j][t]: the node whose logits predict id t + 1 of choice
    j. sees: (n, n) bool, node q sees node k (k is q or an ancestor of q)."""

    def __init__(self, choices: Sequence[Sequence[int]]):
        self.ids: list[int] = []
        self.depth: list[int] = []
        parent: list[int] = []
        node: dict[tuple[int, ...], int] = {}
        self.reads: list[list[int]] = []
        for c in choices:
            path = []
            for t in range(1, len(c)):
                key = tuple(c[:t])
                if key not in node:
                    node[key] = len(self.ids)
                    self.ids.append(c[t - 1])
                    self.depth.append(t - 1)
                    parent.append(path[-1] if path else -1)
                path.append(node[key])
            self.reads.append(path)
        n = len(self.ids)
        self.sees = torch.eye(n, dtype=torch.bool)
        for q in range(n):
            if parent[q] >= 0:
                self.sees[q] |= self.sees[parent[q]]


def _additive(model, allow: torch.Tensor) -> torch.Tensor:
    """(B, 1, Q, K) additive mask of the model's compute dtype from a (B, Q, K) bool one (a float
    mask means the same to every attention implementation: eager adds it, sdpa takes it)."""
    device = model_device(model)
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else next(model.parameters()).dtype)
    bias = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)
    return bias[:, None].to(device)


def _logits_tail(model, keep: int, **inputs) -> torch.Tensor:
    """(B, keep, V) logits of the last ``keep`` positions (the model asked for those only when
    its forward takes ``logits_to_keep``: a row's others would cost (B, W, vocab))."""
    if takes_kwarg(model, "logits_to_keep"):
        inputs["logits_to_keep"] = keep
    return model(**inputs).logits[:, -keep:]


def _score_inline(model, ctxs: list[list[int]], conts: list, pad_id: int) -> list[list[float]]:
    """Per item and choice, the summed log-probability of the choice given the context, from
    one forward of each item's context followed by its choices' tree (``_Tree``) in one row: a
    4D mask lets a context token see the context before it, a tree node the context and its
    ancestors; a node's position is the context's length plus its depth. What the cached
    two-forward form computes, in one forward (no cache kept, none copied)."""
    device = model_device(model)
    trees = [_Tree(cs) for cs in conts]
    lens = [len(c) for c in ctxs]
    W = max(n + len(t.ids) for n, t in zip(lens, trees))
    ids = torch.full((len(ctxs), W), pad_id, dtype=torch.long)
    pos = torch.arange(W).repeat(len(ctxs), 1)  # padding: any position (it sees itself only)
    allow = torch.eye(W, dtype=torch.bool).repeat(len(ctxs), 1, 1)  # (B, W, W)
    causal = torch.ones(W, W, dtype=torch.bool).tril()
    for b, (ctx, L, tree) in enumerate(zip(ctxs, lens, trees)):
        n = len(tree.ids)
        ids[b, :L + n] = torch.tensor(list(ctx) + tree.ids, dtype=torch.long)
        pos[b, L:L + n] = L + torch.tensor(tree.depth, dtype=torch.long)
        allow[b, :L, :L] = causal[:L, :L]  # the context: causal
        allow[b, L:L + n, :L] = True  # every node sees the whole context
        allow[b, L:L + n, L:L + n] = tree.sees
    keep = W - min(lens) + 1  # from the shortest context's last position on
    logits = _logits_tail(model, keep, input_ids=ids.to(device),
                          attention_mask=_additive(model, allow), position_ids=pos.to(device),
                          use_cache=False)  # (B, keep, V)
    # every scored token at once: (row, position predicting it, id), then summed per choice
    rb, rq, rt, owner = [], [], [], []
    for b, (L, cs, tree) in enumerate(zip(lens, conts, trees)):
        for j, c in enumerate(cs):
            if c:
                rb += [b] * len(c)
                rq += [L - 1] + [L + q for q in tree.reads[j]]
                rt += list(c)
                owner += [(b, j)] * len(c)
    return _gather_sums(logits, W - keep, rb, rq, rt, owner, conts)


def _gather_sums(logits: torch.Tensor, offset: int, rb: list, rq: list, rt: list, owner: list,
                 conts: list) -> list[list[float]]:
    """Summed log-probabilities per (item, choice): row ``rb``, position ``rq`` (in the row;
    ``logits`` start at ``offset``) predicting id ``rt``, owned by ``owner``."""
    out = [[0.0] * len(cs) for cs in conts]
    if rb:
        rows = torch.tensor(rb, device=logits.device)
        at = torch.tensor(rq, device=logits.device) - offset
        sel = logits[rows, at].float().log_softmax(-1)
        picked = sel.gather(-1, torch.tensor(rt, device=sel.device).unsqueeze(-1)).squeeze(-1)
        for (b, j), v in zip(owner, picked.cpu().double().tolist()):
            out[b][j] += v
    return out


def _rest_replicated(model, cache, mask: torch.Tensor, conts: list, pad_id: int) -> list:
    """Per item and choice, the summed log-probabilities of choice ids 1..n-1 given the context
    and id 0: the context's cache copied once per choice, every choice a row of its own.

    cache: the contexts' (B rows, padded as ``mask``, (B, Lc)); conts[b][j]: ids."""
    device = model_device(model)
    rows = [(b, j) for b, cs in enumerate(conts) for j, c in enumerate(cs) if len(c) > 1]
    rest = [conts[b][j] for b, j in rows]
    idx = torch.tensor([b for b, _ in rows], dtype=torch.long)
    cache.batch_select_indices(idx.to(device))  # (R, ...): each row's context
    # Ids 0..n-2 of each choice, right-padded: they predict ids 1..n-1.
    cids, cmask = pad_batch([c[:-1] for c in rest], pad_id, side="right")  # (R, W)
    full_mask = torch.cat([mask[idx], cmask], dim=1)  # (R, Lc + W)
    cpos = mask[idx].sum(-1, keepdim=True) + torch.arange(cids.shape[1])  # (R, W)
    logp = model(input_ids=cids.to(device), attention_mask=full_mask.to(device),
                 position_ids=cpos.to(device), use_cache=True,
                 **{cache_kwarg(model): cache}).logits.float().log_softmax(-1).cpu()
    out = [[0.0] * len(cs) for cs in conts]
    for r, ((b, j), c) in enumerate(zip(rows, rest)):
        tgt = torch.tensor(c[1:], dtype=torch.long)
        out[b][j] = float(logp[r, :len(c) - 1].gather(-1, tgt.unsqueeze(-1)).sum())
    return out


def _rest_packed(model, cache, mask: torch.Tensor, conts: list, pad_id: int) -> list:
    """What ``_rest_replicated`` computes, with each item's choices as one tree (``_Tree``) in
    one row over the context's cache, uncopied: a 4D additive mask lets a node see the context
    and its ancestors only, and a node's position is the context's length plus its depth. One
    row per item instead of one per choice, no copy of the cache, shared beginnings once."""
    device = model_device(model)
    B, Lc = mask.shape
    trees = [_Tree(cs) for cs in conts]
    W = max(max(len(t.ids) for t in trees), 1)
    cids = torch.full((B, W), pad_id, dtype=torch.long)
    pos = torch.zeros((B, W), dtype=torch.long)
    allow = torch.cat([mask.bool()[:, None, :].expand(B, W, Lc),  # every query: the context
                       torch.eye(W, dtype=torch.bool).repeat(B, 1, 1)], dim=2)  # (B, W, Lc + W)
    ctx_len = mask.sum(-1)
    for b, tree in enumerate(trees):
        n = len(tree.ids)
        if n:
            cids[b, :n] = torch.tensor(tree.ids, dtype=torch.long)
            pos[b, :n] = ctx_len[b] + torch.tensor(tree.depth, dtype=torch.long)
            allow[b, :n, Lc:Lc + n] = tree.sees
    logits = model(input_ids=cids.to(device), attention_mask=_additive(model, allow),
                   position_ids=pos.to(device), use_cache=True,
                   **{cache_kwarg(model): cache}).logits  # (B, W, V)
    rb, rq, rt, owner = [], [], [], []
    for b, (cs, tree) in enumerate(zip(conts, trees)):
        for j, c in enumerate(cs):
            if len(c) > 1:
                rb += [b] * (len(c) - 1)
                rq += tree.reads[j]
                rt += list(c[1:])
                owner += [(b, j)] * (len(c) - 1)
    return _gather_sums(logits, 0, rb, rq, rt, owner, conts)


def _packed_agrees(model, cache, mask: torch.Tensor, conts: list,
                   pad_id: int) -> tuple[bool, list]:
    """Whether the packed form gives this model the plain form's scores on one batch (within
    1e-3 nats), and the plain form's scores. A model whose attention does not take a custom 4D
    mask as it is (flash attention, some remote code) fails or disagrees, and keeps the plain
    form."""
    width = cache.get_seq_length()
    try:
        packed = _rest_packed(model, cache, mask, conts, pad_id)
    except Exception:  # noqa: BLE001 - any failure means: not this model
        packed = None
    extra = cache.get_seq_length() - width
    if extra > 0:
        cache.crop(-extra)  # drop the packed forward's columns
    plain = _rest_replicated(model, cache, mask, conts, pad_id)
    ok = packed is not None and all(abs(a - b) <= 1e-3 for pa, pl in zip(packed, plain)
                                    for a, b in zip(pa, pl))
    return ok, plain
