"""Batched inference for the probes: prompt formatting, greedy generation, log-likelihoods, KL.

Sequences are sorted by length so that a batch holds similar lengths (little padding).
Generation pads on the left (new tokens follow every prompt directly); scoring pads on the right
(positions stay 0..L-1, and causal attention never lets a real token see a pad). Every call runs
under ``torch.no_grad()`` with the model in eval mode, restored afterwards, on the model's device.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from retain.formats import pad_token_id
from retain.probes.slots import KVSlab

# Where an answer ends though the model goes on: a model without a chat template runs on into
# the next turn of the plain format ("\nUser: ..."), and past a few-shot answer into the next
# question ("\nQ: ...", the few-shot format of ``probes.jsonl``). Cutting the decoded text there
# equals stopping there, for greedy decoding.
STOP_STRINGS = ("\nUser:", "\nuser:", "\nUSER:", "\nHuman:", "\nAssistant:", "\nQ:")
# A chat model answers in a sentence ("The answer is 42.") where the budget from the expected
# answers fits the bare answer only; a thinking model (a template that writes <think>) reasons
# before it answers. Both floors stay within a probe's cap (``GenerationProbe.budget_cap``).
CHAT_FLOOR_TOKENS = 48
THINKING_FLOOR_TOKENS = 1024


# ---------------------------------------------------------------- prompts and tokens
# format_prompt, encode, encode_scored_text, pad_token_id, PLAIN_FORMAT: in retain.formats
def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends an answer: the tokenizer's EOS and the model's generation EOS ids."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for tid in [tokenizer.eos_token_id] + (gen_eos if isinstance(gen_eos, list) else [gen_eos]):
        if tid is not None and int(tid) not in ids:
            ids.append(int(tid))
    return ids


def max_positions(model) -> int | None:
    """The longest sequence the model accepts, when its config says (None: unbounded)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        val = getattr(cfg, name, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


def generation_budget(tokenizer, answers: Sequence[str | None], *, margin_tokens: int = 8,
                      margin_fraction: float = 0.25, floor: int = 0, cap: int = 256) -> int:
    """``max_new_tokens`` for greedy answers: the longest expected answer in tokens, plus a margin
    (the larger of ``margin_tokens`` and ``margin_fraction`` of it) and one for EOS, at least
    ``floor`` (``answer_floor``), capped. A budget shorter than an answer would silently score a
    correct answer as wrong."""
    longest = max((len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers if a),
                  default=0)
    need = longest + max(margin_tokens, math.ceil(margin_fraction * longest)) + 1
    return max(1, min(cap, max(floor, need)))


def answer_floor(tokenizer, chat: bool) -> int:
    """The least budget a model needs to answer a prompt in its own words: 0 for raw text
    (a cloze continues the prompt), ``CHAT_FLOOR_TOKENS`` for a chat prompt, and
    ``THINKING_FLOOR_TOKENS`` where the chat template writes ``<think>`` (a reasoning model)."""
    if not chat:
        return 0
    if "<think>" in str(getattr(tokenizer, "chat_template", None) or ""):
        return THINKING_FLOOR_TOKENS
    return CHAT_FLOOR_TOKENS


# ---------------------------------------------------------------- model state
def model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def inference_mode(*models) -> Iterator[None]:
    """Eval mode and no gradients for the duration; each model's previous mode is restored."""
    live = [m for m in models if m is not None]
    was_training = [m.training for m in live]
    try:
        for m in live:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, t in zip(live, was_training):
            m.train(t)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (memory errors show early)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int,
              side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and (B, T) attention mask, padded on ``side`` ("left" or "right")."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if side == "left":
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s):] = 1
        else:
            ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, :len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------- generation
def cut_at_stop(text: str, stops: Sequence[str] = STOP_STRINGS) -> str:
    """``text`` up to the first of ``stops`` (all of it when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:cut]


def _virtual_prompt(model):
    """For a PEFT prompt-tuning or P-tuning model, a greedy ``generate(ids, mask, config) ->
    (B, new) ids`` that prepends the virtual tokens' embeddings once and then decodes with the
    base model's cache; None for other models.

    PEFT's own ``generate`` for these adapters, under transformers 5, prepends the virtual tokens
    again at every decoding step: its answers differ from the model's own greedy answers (and the
    cache grows by the virtual tokens every step). Left padding sits between the virtual tokens
    and the prompt, masked, with positions counted over the real tokens only, so each prompt
    sees what it sees unpadded."""
    cfg = getattr(model, "active_peft_config", None)
    kind = str(getattr(getattr(cfg, "peft_type", None), "value", ""))
    if cfg is None or kind not in ("PROMPT_TUNING", "P_TUNING"):
        return None
    base = model.get_base_model()

    def run(ids: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
        words = base.get_input_embeddings()(ids)  # (B, T, H)
        prompt = model.get_prompt(batch_size=ids.shape[0]).to(words.dtype)  # (B, nv, H)
        mask = torch.cat([torch.ones(prompt.shape[:2], dtype=mask.dtype, device=mask.device),
                          mask], dim=1)
        # given embeddings alone, a decoder-only generate returns the new tokens alone
        return base.generate(inputs_embeds=torch.cat([prompt, words], dim=1),
                             attention_mask=mask, generation_config=config)
    return run


def generate(model, tokenizer, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             batch_size: int = 32, stop_strings: Sequence[str] = STOP_STRINGS) -> list[str]:
    """Greedy answers (decoded, special tokens dropped, cut at the first EOS and then at the
    first of ``stop_strings``) to token-id prompts, in the order given.

    Decoder-only models with a plain cache (``shares_prefix``) decode with ``_SlotDecoder``:
    ``batch_size`` rows at a time, a row leaving as soon as its answer is over (EOS, budget, or
    a stop string) and the next prompts taking the free rows, so no row waits for the longest
    answer of its batch. Other models go through ``model.generate`` a batch at a time (with the
    stop strings cut from the decoded text: for greedy decoding the same answer). Either way an
    answer is the model's own greedy decoding of its prompt."""
    pad_id = pad_token_id(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    limit = max_positions(model)
    seqs = [list(p) for p in prompts]
    if limit is not None:  # keep the tail of a prompt that would not fit with its answer
        seqs = [s[-max(1, limit - max_new_tokens):] for s in seqs]
    rows: list[list[int] | None] = [None] * len(seqs)
    with inference_mode(model):
        if _virtual_prompt(model) is None and shares_prefix(model):
            rows = _SlotDecoder(model, tokenizer, pad_id, eos_ids, max_new_tokens,
                                batch_size, stop_strings).run(seqs)
        if any(r is None for r in rows):  # not decodable by slots: the model's own generate
            rows = _generate_batches(model, seqs, pad_id, eos_ids, max_new_tokens, batch_size)
    answers = []
    for row in rows:
        for j, tid in enumerate(row):
            if tid in eos_ids:
                row = row[:j]
                break
        answers.append(cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop_strings))
    return answers


def _generate_batches(model, seqs: list[list[int]], pad_id: int, eos_ids: list[int],
                      max_new_tokens: int, batch_size: int) -> list[list[int]]:
    """New ids of each prompt by ``model.generate``, length-sorted batches padded on the left."""
    # A fresh config: a checkpoint's sampling defaults (temperature, repetition penalty, ...)
    # must not leak into a greedy measurement.
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              use_cache=True, pad_token_id=pad_id, eos_token_id=eos_ids or None)
    device = model_device(model)
    rows: list[list[int]] = [[] for _ in seqs]
    virtual = _virtual_prompt(model)
    for batch in length_sorted_batches([len(p) for p in seqs], batch_size):
        ids, mask = pad_batch([seqs[i] for i in batch], pad_id, side="left")
        if virtual is None:
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)[:, ids.shape[1]:]
        else:
            out = virtual(ids.to(device), mask.to(device), config)
        for i, row in zip(batch, out.tolist()):  # (B, new) ids
            rows[i] = row
    return rows


class _SlotDecoder:
    """Greedy decoding over ``batch_size`` rows sharing one key/value cache, refilled as rows
    finish (continuous batching).

    Every row holds the cache of its prompt and answer so far, padded on the left to the common
    length (the attention mask hides the padding; positions count real tokens only, so a row
    computes what it computes alone), and the next token to feed. A step feeds every row's token
    and takes the argmax. A row ends at EOS, at ``max_new_tokens``, or once its text holds a stop
    string (checked every ``STOP_CHECK`` steps; the answer is cut there anyway). Finished rows
    leave the cache; when a quarter of the rows are free (or none is busy), the next prompts are
    prefilled together and their cache joined to the others', left-padded to a common length;
    columns no row uses any more are dropped. The cache lives in a ``KVSlab`` (buffers written in
    place, not grown by concatenation every step)."""

    STOP_CHECK = 8

    def __init__(self, model, tokenizer, pad_id: int, eos_ids: list[int], max_new_tokens: int,
                 batch_size: int, stop_strings: Sequence[str]):
        self.model, self.tok, self.pad_id = model, tokenizer, pad_id
        self.eos = set(eos_ids)
        self.budget, self.size, self.stops = max_new_tokens, max(1, batch_size), stop_strings
        self.device = model_device(model)
        self.cache_kw = cache_kwarg(model)
        # the last position's logits only (a prefill's others would be (B, T, vocab))
        self.keep_kw = takes_kwarg(model, "logits_to_keep")

    def _forward(self, ids, mask, pos, cache=None):
        kw = {self.cache_kw: cache} if cache is not None else {}
        if self.keep_kw:
            kw["logits_to_keep"] = 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), use_cache=True, **kw)
        cache = getattr(out, "cache", None) or out.past_key_values
        return out.logits[:, -1].argmax(-1).cpu(), cache  # (B,) next ids

    @staticmethod
    def _layers(cache):
        """The cache's per-layer key/value holders, when every one is a plain growing layer."""
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return None
        return layers

    def run(self, seqs: list[list[int]]) -> list[list[int] | None]:
        out: list[list[int] | None] = [None] * len(seqs)
        queue = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first
        idx: list[int] = []  # prompt index of each row
        gen: list[list[int]] = []  # new ids of each row, the last one not yet fed
        pos = torch.zeros(0, dtype=torch.long)  # (R,) position of each row's next token
        cache, slab, step = None, None, 0
        while queue or idx:
            free = self.size - len(idx)
            if queue and (not idx or free >= max(1, self.size // 4)):
                new, queue = queue[:free], queue[free:]
                ids, nmask = pad_batch([seqs[i] for i in new], self.pad_id, side="left")
                npos = (nmask.cumsum(-1) - 1).clamp_min(0)
                first, ncache = self._forward(ids, nmask, npos)
                nlayers = self._layers(ncache)
                if nlayers is None:
                    return out  # not a plain cache: the caller falls back to model.generate
                if slab is None:  # the first prefill's cache object, its layers the slab's
                    slab = KVSlab(nlayers, min(self.size, len(seqs)),
                                  headroom=min(self.budget, 128) + 1)
                    cache = ncache
                    cache.layers = slab.layers
                slab.join(nlayers, nmask)
                idx += new
                gen += [[int(t)] for t in first]
                pos = torch.cat([pos, nmask.sum(-1)])
            # rows whose answer is over leave
            step += 1
            check = step % self.STOP_CHECK == 0 and self.stops
            done = [r for r, g in enumerate(gen) if g[-1] in self.eos or len(g) >= self.budget
                    or (check and any(s in self.tok.decode(g, skip_special_tokens=True)
                                      for s in self.stops))]
            if done:
                for r in done:
                    out[idx[r]] = gen[r]
                keep = [r for r in range(len(idx)) if r not in set(done)]
                idx, gen, pos = [idx[r] for r in keep], [gen[r] for r in keep], pos[keep]
                slab.keep(keep)
                if not idx or (queue and self.size - len(idx) >= max(1, self.size // 4)):
                    continue  # refill before the next step
            ids = torch.tensor([[g[-1]] for g in gen], dtype=torch.long)  # (R, 1)
            nxt, _ = self._forward(ids, slab.open_column(), pos.unsqueeze(1), cache)
            slab.commit()
            pos = pos + 1
            for g, t in zip(gen, nxt.tolist()):
                g.append(t)
        return out


def takes_kwarg(model, name: str) -> bool:
    """Whether the model (under any PEFT wrapper) names ``name`` in its forward's signature."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- log-likelihoods
def _logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    device = model_device(model)
    # Right-padded ids: a causal decoder needs no mask (no real token sees the padding after
    # it), and without one it takes the unmasked attention path.
    masked = {} if shares_prefix(model) else {"attention_mask": mask.to(device)}
    out = model(input_ids=ids.to(device), use_cache=False, **masked)
    # A prompt-learning adapter returns the virtual tokens' positions first: keep the text's.
    return out.logits[:, -ids.shape[1]:].float()  # (B, T, V)


def token_logprobs(model, tokenizer, seqs: Sequence[Sequence[int]], *,
                   batch_size: int = 32) -> list[torch.Tensor]:
    """For each sequence of L ids, the (L-1,) log-probabilities (nats) of ids 1..L-1 given their
    prefix, on the CPU."""
    pad_id = pad_token_id(tokenizer)
    result: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    with inference_mode(model):
        for batch in length_sorted_batches([len(s) for s in seqs], batch_size):
            ids, mask = pad_batch([seqs[i] for i in batch], pad_id, side="right")
            logp = _logits(model, ids, mask).log_softmax(-1)[:, :-1]  # (B, T-1, V)
            target = ids[:, 1:].to(logp.device)  # (B, T-1)
            picked = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).cpu()  # (B, T-1)
            for r, i in enumerate(batch):
                result[i] = picked[r, :len(seqs[i]) - 1]
    return result


def shares_prefix(model) -> bool:
    """Whether a context's key/value cache can be reused by its continuations, and rows of one
    cache decoded, left and joined independently (``_SlotDecoder``): a decoder-only Hugging Face
    model whose cache is plain full attention (no sliding window, no recurrent state) and no
    prompt-learning adapter (virtual tokens are prepended on every call)."""
    from transformers import PreTrainedModel

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(model, "config", None)
    if not isinstance(inner, PreTrainedModel) or cfg is None or \
            getattr(cfg, "is_encoder_decoder", False):
        return False
    peft_cfg = getattr(model, "active_peft_config", None)
    if peft_cfg is not None and getattr(peft_cfg, "is_prompt_learning", False):
        return False
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if getattr(text_cfg, "sliding_window", None) or getattr(text_cfg, "layer_types", None) and \
            any(t != "full_attention" for t in text_cfg.layer_types):
        return False
    return True


def cache_kwarg(model) -> str:
    """The forward's name for a key/value cache: ``cache`` (transformers 5.x) or the older
    ``past_key_values`` (custom models, and the name 5.x still accepts with a warning)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def token_kl(model, base_model, tokenizer, seqs: Sequence[Sequence[int]], *,
             batch_size: int = 32) -> list[torch.Tensor]:
    """For each sequence of L ids, the (L-1,) KL(base || model) in nats of the next-token
    distributions at positions 0..L-2 (the predictions of ids 1..L-1), on the CPU."""
    pad_id = pad_token_id(tokenizer)
    result: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    with inference_mode(model, base_model):
        for batch in length_sorted_batches([len(s) for s in seqs], batch_size):
            ids, mask = pad_batch([seqs[i] for i in batch], pad_id, side="right")
            logq = _logits(model, ids, mask)[:, :-1].log_softmax(-1)  # (B, T-1, V) model
            logp = _logits(base_model, ids, mask)[:, :-1].log_softmax(-1).to(logq.device)  # base
            if logp.shape[-1] != logq.shape[-1]:
                raise ValueError(f"model and base vocabularies differ: {logq.shape[-1]} vs "
                                 f"{logp.shape[-1]}")
            # sum_v p (log p - log q), per position
            kl = F.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)  # (B, T-1)
            kl = kl.clamp_min(0.0).cpu()  # float noise can dip below 0
            for r, i in enumerate(batch):
                result[i] = kl[r, :len(seqs[i]) - 1]
    return result
