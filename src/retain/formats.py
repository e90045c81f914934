"""How text becomes tokens, for training and for probing alike: the prompt format (the
tokenizer's chat template, else ``User: ...\nAssistant:``), encoding without a doubled BOS,
scored text, and one training example per record shape (text, prompt/completion, messages).
Below both ``retain.data`` and ``retain.probes``, which import it and never each other, so a
probe formats a prompt exactly as training formatted it.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100  # label of a position that takes no loss (PyTorch's cross-entropy ignore_index)
PLAIN_FORMAT = "User: {prompt}\nAssistant:"  # for tokenizers without a chat template


# ---------------------------------------------------------------- prompts and tokens
def format_prompt(tokenizer, prompt: str, chat: bool = True) -> str:
    """The text a model sees for ``prompt``: the tokenizer's chat template (with the generation
    prompt) when it has one, else ``"User: {prompt}\\nAssistant:"``; raw text when not ``chat``.

    Encode the result with ``encode`` (it avoids a doubled BOS when the template writes one)."""
    if not chat:
        return prompt
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_FORMAT.format(prompt=prompt)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's own special tokens, minus a doubled leading
    BOS (chat templates often write the BOS themselves)."""
    return _drop_doubled_bos(tokenizer, list(tokenizer(text, add_special_tokens=True)["input_ids"]))


def _drop_doubled_bos(tokenizer, ids: list[int]) -> list[int]:
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        return ids[1:]
    return ids


def encode_prompts(tokenizer, prompts: list[str], chat: bool = True) -> list[list[int]]:
    """``encode(format_prompt(p))`` for every prompt, the texts tokenized in one batched call
    (the same ids as one call each; far fewer round trips into the tokenizer)."""
    if not prompts:
        return []
    texts = [format_prompt(tokenizer, p, chat) for p in prompts]
    batch = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [_drop_doubled_bos(tokenizer, list(ids)) for ids in batch]


def encode_pieces(tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text as a continuation (no special tokens), each distinct text tokenized
    once, all in one batched call: e.g. the choices of many multiple-choice items."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return []
    ids = dict(zip(distinct, tokenizer(distinct, add_special_tokens=False)["input_ids"]))
    return [list(ids[t]) for t in texts]


def encode_scored_text(tokenizer, text: str) -> list[int]:
    """Ids of a text to score: like ``encode`` but always opening with a BOS (or EOS, as GPT-2
    tokenizers have no BOS of their own), so that every token of the text has a context."""
    ids = encode(tokenizer, text)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is not None and (not ids or ids[0] != start):
        ids = [start] + ids
    return ids


def pad_token_id(tokenizer) -> int:
    """The pad id; tokenizers without one (GPT-2) pad with EOS (the attention mask hides it)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id):
        if tid is not None:
            return int(tid)
    return 0


# ---------------------------------------------------------------- one example
def _example(ids: list[int], labels: list[int], seq_len: int) -> dict | None:
    """Truncate to ``seq_len``; None when no position is left to learn from (label 0 is never
    predicted: the loss shifts labels by one)."""
    ids, labels = ids[:seq_len], labels[:seq_len]
    if all(lab == IGNORE for lab in labels[1:]):
        return None
    return {"input_ids": ids, "labels": labels}


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def encode_text(tokenizer, text: str, seq_len: int) -> dict | None:
    """Raw text: BOS (or EOS for BOS-less tokenizers like GPT-2's) + text + EOS, loss everywhere."""
    ids = encode_scored_text(tokenizer, text)
    if not ids or ids[-1] != tokenizer.eos_token_id:
        ids += _eos(tokenizer)
    return _example(ids, list(ids), seq_len)


def _plain_segments(messages: list[dict]) -> list[tuple[str, bool]]:
    """(text, is_assistant) segments in the ``User: ...\\nAssistant:`` format, for tokenizers
    without a chat template (the format ``format_prompt`` falls back to)."""
    segs = []
    for m in messages:
        if m["role"] == "user":
            sep = "\n" if segs and not segs[-1][0].endswith("\n") else ""
            segs.append((sep + PLAIN_FORMAT.format(prompt=m["content"]), False))
        elif m["role"] == "assistant":
            c = m["content"]
            segs.append((c if c[:1].isspace() else " " + c, True))
        else:
            segs.append((m["content"] + "\n", False))
    return segs


def encode_messages(tokenizer, messages: list[dict], seq_len: int, *,
                    loss_on: str = "assistant") -> dict | None:
    """A chat, through the tokenizer's chat template. ``loss_on="assistant"`` takes the loss on
    assistant turns only (found by rendering each prefix of the chat; if the template does not
    render prefixes consistently, the loss falls back to every token); ``"all"`` on every token."""
    if not getattr(tokenizer, "chat_template", None):
        ids: list[int] = []
        labels: list[int] = []
        for text, is_assistant in _plain_segments(messages):
            seg = list(tokenizer(text, add_special_tokens=not ids)["input_ids"])
            if is_assistant:
                seg += _eos(tokenizer)
            ids += seg
            labels += seg if (is_assistant or loss_on == "all") else [IGNORE] * len(seg)
        return _example(ids, labels, seq_len)

    def render(msgs: list[dict], gen: bool = False) -> list[int]:
        if not msgs:
            return []
        return encode(tokenizer, tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=gen))

    ids = render(messages)
    if loss_on == "all":
        return _example(ids, list(ids), seq_len)
    labels = [IGNORE] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, stop = render(messages[:i], gen=True), render(messages[: i + 1])
        if ids[: len(start)] != start or ids[: len(stop)] != stop or len(start) > len(stop):
            return _example(ids, list(ids), seq_len)  # template not prefix-consistent
        labels[len(start): len(stop)] = ids[len(start): len(stop)]
    return _example(ids, labels, seq_len)


def encode_prompt_completion(tokenizer, prompt: str, completion: str, seq_len: int) -> dict | None:
    """A prompt formatted as ``format_prompt`` does (chat template, or the plain
    ``User:/Assistant:`` format) and its completion; loss on the completion only."""
    return encode_messages(tokenizer, [{"role": "user", "content": prompt},
                                       {"role": "assistant", "content": completion}], seq_len)


def encode_record(tokenizer, shape: str, payload: Any, seq_len: int) -> dict | None:
    """One parsed JSONL record (``retain.data.parse_record``: its shape and payload) as an
    example; None when nothing is left to learn from within ``seq_len``."""
    if shape == "text":
        return encode_text(tokenizer, payload, seq_len)
    if shape == "prompt_completion":
        return encode_prompt_completion(tokenizer, *payload, seq_len)
    return encode_messages(tokenizer, payload, seq_len)
