"""Training data, tokenized: the new domain to learn and the reference data of what to keep.

New-domain data is a JSONL file, one example a line, in one of three shapes --
``{"text": ...}`` (loss on every token), ``{"prompt": ..., "completion": ...}`` (loss on the
completion only) or ``{"messages": [{"role", "content"}, ...]}`` (loss on the assistant turns) --
or a built-in domain (``builtin:legal``, ``builtin:support``, ``builtin:recipes``). Reference
data (``builtin:retained``: the built-in model's own chat-stage mixture, train split) feeds
replay, EWC's Fisher, ...
An example is ``{"input_ids": list[int], "labels": list[int]}``, labels -100 where no loss is taken.
``load_jsonl_split`` keeps a seeded share of a user's JSONL out of training, for its domain probe.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from retain.errors import UserError
from retain.formats import encode_messages, encode_record, encode_text
from retain.jsonl import iter_jsonl

BUILTIN_DOMAINS = ("legal", "support", "recipes")
DEFAULT_BUILTIN_N = 2000  # examples drawn from a built-in domain when not told
_ROLES = ("system", "user", "assistant")


# ---------------------------------------------------------------- JSONL files
def _str_field(obj: dict, key: str, where: str) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise UserError(f"{where}: {key!r} must be a non-empty string")
    return v


def parse_record(obj: Any, where: str) -> tuple[str, Any]:
    """(shape, payload) of one JSONL record, or a UserError naming the line."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise UserError(f"{where}: 'messages' must be a non-empty list")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(
                    m.get("content"), str):
                raise UserError(f"{where}: message {j} must be {{\"role\": one of "
                                f"{'/'.join(_ROLES)}, \"content\": a string}}")
        if not any(m["role"] == "assistant" for m in msgs):
            raise UserError(f"{where}: 'messages' has no assistant turn to learn from")
        return "messages", [{"role": m["role"], "content": m["content"]} for m in msgs]
    if "prompt" in obj or "completion" in obj:
        if "prompt" not in obj or "completion" not in obj:
            raise UserError(f"{where}: a prompt needs a completion (and a completion a prompt)")
        return "prompt_completion", (_str_field(obj, "prompt", where),
                                     _str_field(obj, "completion", where))
    if "text" in obj:
        return "text", _str_field(obj, "text", where)
    raise UserError(f"{where}: expected {{\"text\"}}, {{\"prompt\", \"completion\"}} or "
                    f"{{\"messages\"}}; got keys {sorted(obj)}")


def read_jsonl(path: str | Path) -> list[tuple[str, Any]]:
    """Parsed (shape, payload) records of a training JSONL file; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    records = [parse_record(obj, where) for where, obj in iter_jsonl(path)]
    if not records:
        raise UserError(f"{path}: no examples (the file is empty)")
    return records


def _finish(examples: list[dict | None], what: str, seq_len: int) -> list[dict]:
    kept = [e for e in examples if e is not None]
    if not kept:
        raise UserError(f"{what}: no example keeps a token to learn from within seq_len={seq_len} "
                        "(prompts too long?)")
    return kept


def _encode_records(records: list[tuple[str, Any]], tokenizer, *, seq_len: int, n: int | None,
                    seed: int, what: str) -> list[dict]:
    """Tokenized examples of parsed records (all, or a seeded sample of ``n``), in order."""
    if n is not None and n < len(records):
        keep = sorted(random.Random(seed).sample(range(len(records)), n))
        records = [records[i] for i in keep]
    return _finish([encode_record(tokenizer, s, p, seq_len) for s, p in records], what, seq_len)


def load_jsonl(path: str | Path, tokenizer, *, seq_len: int, n: int | None = None,
               seed: int = 0) -> list[dict]:
    """Tokenized examples of a JSONL file (all lines, or a seeded sample of ``n``), in order."""
    return _encode_records(read_jsonl(path), tokenizer, seq_len=seq_len, n=n, seed=seed,
                           what=str(path))


# ---------------------------------------------------------------- held-out split
DEFAULT_HOLDOUT = 0.1  # share of a user's JSONL records held out as the new-domain probe
DEFAULT_HOLDOUT_MAX = 200  # at most this many held-out records (probing time stays bounded)


def _content(record: Any) -> str:
    """A record's content as one string: two records with equal content are duplicates."""
    return json.dumps(record, sort_keys=True, default=str)


def split_holdout(records: list, holdout: float = DEFAULT_HOLDOUT, seed: int = 0,
                  cap: int | None = DEFAULT_HOLDOUT_MAX, *,
                  what: str = "data") -> tuple[list, list]:
    """(train, held-out) records: a seeded ``holdout`` share of the distinct records (rounded, at
    least 1, at most ``cap``, and always leaving 1 to train on) held out; both keep file order and
    are disjoint by content: a duplicated record is held out once and none of its copies is
    trained on (else the probe would score text the model trained on). ``holdout=0`` (or
    ``cap=0``) holds nothing out. ``what`` names the data in errors."""
    if not 0 <= holdout < 1:
        raise UserError(f"data_holdout must be in [0, 1), got {holdout}")
    if cap is not None and cap < 0:
        raise UserError(f"data_holdout_max must be >= 0, got {cap}")
    if holdout == 0 or cap == 0:
        return list(records), []
    keys = [_content(r) for r in records]
    first = list(dict.fromkeys(keys))  # distinct contents, in file order
    if len(first) < 2:
        raise UserError(f"{what}: {len(first)} distinct record(s) is too few to hold some out as "
                        "the new-domain probe; add records or set data_holdout=0")
    k = min(max(1, round(holdout * len(first))), len(first) - 1)
    if cap is not None:
        k = min(k, cap)
    held = {first[i] for i in random.Random(seed).sample(range(len(first)), k)}
    train = [r for r, key in zip(records, keys) if key not in held]
    seen: set[str] = set()
    heldout = [r for r, key in zip(records, keys)
               if key in held and not (key in seen or seen.add(key))]
    return train, heldout


def load_jsonl_split(path: str | Path, tokenizer, *, seq_len: int, n: int | None = None,
                     seed: int = 0, holdout: float = DEFAULT_HOLDOUT,
                     holdout_max: int | None = DEFAULT_HOLDOUT_MAX,
                     ) -> tuple[list[dict], list[tuple[str, Any]]]:
    """(tokenized train examples, held-out (shape, payload) records) of a JSONL file, read once.

    The held-out records (``split_holdout``) are never trained on; the rest are sampled (``n``)
    and tokenized exactly as ``load_jsonl`` does. Build the domain probe from the held-out
    records with ``retain.probes.domain.domain_probes``."""
    train, held = split_holdout(read_jsonl(path), holdout, seed, holdout_max, what=str(path))
    return _encode_records(train, tokenizer, seq_len=seq_len, n=n, seed=seed,
                           what=str(path)), held


# ---------------------------------------------------------------- built-in data
def domain_of(spec: str) -> str | None:
    """The built-in domain a data spec names (``"builtin:legal"`` -> ``"legal"``), else None."""
    return spec.split(":", 1)[1] if spec.startswith("builtin:") else None


def load_train_data(spec: str, tokenizer, *, seq_len: int, n: int | None = None,
                    seed: int = 0) -> list[dict]:
    """The new domain's tokenized examples: ``builtin:legal`` / ``builtin:support`` /
    ``builtin:recipes`` (``n`` items of the train split, default 2000) or a JSONL path."""
    from retain.builtin import tasks

    domain = domain_of(spec)
    if domain is None:
        return load_jsonl(spec, tokenizer, seq_len=seq_len, n=n, seed=seed)
    if domain not in BUILTIN_DOMAINS:
        raise UserError(f"unknown built-in domain {spec!r}; known: "
                        f"{', '.join('builtin:' + d for d in BUILTIN_DOMAINS)}, or a .jsonl path")
    its = tasks.items(domain, "train", n or DEFAULT_BUILTIN_N, seed)
    return _finish([encode_text(tokenizer, it.text, seq_len) for it in its], spec, seq_len)


def load_train_data_split(spec: str, tokenizer, *, seq_len: int, n: int | None = None,
                          seed: int = 0, holdout: float = DEFAULT_HOLDOUT,
                          holdout_max: int | None = DEFAULT_HOLDOUT_MAX,
                          ) -> tuple[list[dict], list[tuple[str, Any]]]:
    """``load_train_data`` plus the held-out records of a JSONL spec (``load_jsonl_split``);
    a built-in domain holds nothing out (its probe suite has its own held-out split)."""
    if domain_of(spec) is None:
        return load_jsonl_split(spec, tokenizer, seq_len=seq_len, n=n, seed=seed,
                                holdout=holdout, holdout_max=holdout_max)
    return load_train_data(spec, tokenizer, seq_len=seq_len, n=n, seed=seed), []


def retained_mixture() -> dict[str, float]:
    """Task -> share of the built-in model's chat stage: the capabilities a fine-tune should keep."""
    from retain.builtin.build import CHAT_MIX

    return dict(CHAT_MIX)


def load_reference_data(spec: str | list[str], tokenizer, *, seq_len: int, n: int = 512,
                        seed: int = 0) -> list[dict]:
    """Tokenized data of the capabilities to keep. ``builtin:retained``: ``n`` train-split items
    of the built-in chat mixture in its proportions, rendered as the build trained on them (chat
    template, loss on every token), seeded and shuffled. Or a JSONL path (any of the 3 shapes), or
    a list of such specs (a sequence's memory of earlier tasks beside the retained mixture)."""
    from retain.builtin import tasks

    if isinstance(spec, (list, tuple)):  # several sources: reference_n from each, shuffled
        out = [ex for one in spec for ex in load_reference_data(one, tokenizer, seq_len=seq_len,
                                                                n=n, seed=seed)]
        random.Random(seed).shuffle(out)
        return out
    if spec != "builtin:retained":
        if spec.startswith("builtin:"):
            raise UserError(f"unknown reference data {spec!r}; use builtin:retained or a .jsonl path")
        return load_jsonl(spec, tokenizer, seq_len=seq_len, n=n, seed=seed)
    mix = retained_mixture()
    total = sum(mix.values())
    out: list[dict | None] = []
    for task, share in mix.items():
        for it in tasks.items(task, "train", max(1, round(n * share / total)), seed):
            if it.text is not None:
                out.append(encode_text(tokenizer, it.text, seq_len))
            else:
                out.append(encode_messages(tokenizer, [{"role": "user", "content": it.prompt},
                                                       {"role": "assistant", "content": it.answer}],
                                           seq_len, loss_on="all"))
    random.Random(seed).shuffle(out)
    return _finish(out, spec, seq_len)[:n]


# ---------------------------------------------------------------- a built-in domain as a file
def builtin_records(spec: str, *, n: int = DEFAULT_BUILTIN_N, seed: int = 0) -> list[dict]:
    """``n`` training examples of a built-in domain (``builtin:legal`` / ``support`` /
    ``recipes``) as JSONL records, ``{"text": ...}``: the examples ``retain run --data
    builtin:...`` trains on (train split, seeded). A bad spec or ``n`` is a ``UserError``."""
    from retain.builtin import tasks

    domain = domain_of(spec)
    if domain not in BUILTIN_DOMAINS:
        raise UserError(f"unknown built-in domain {spec!r}; known: "
                        f"{', '.join('builtin:' + d for d in BUILTIN_DOMAINS)}")
    if n < 1:
        raise UserError(f"n must be at least 1, got {n}")
    return [{"text": it.text} for it in tasks.items(domain, "train", n, seed)]


def write_builtin_jsonl(spec: str, path: str | Path, *, n: int = DEFAULT_BUILTIN_N,
                        seed: int = 0) -> Path:
    """Write ``n`` examples of a built-in domain (``builtin:legal`` / ``builtin:support`` /
    ``builtin:recipes``) as a JSONL data file, one ``{"text": ...}`` a line: the examples
    ``retain run --data builtin:...`` trains on (train split, seeded; the domain's probe suite
    holds other items). A file to train on where a data file is asked for, or the shape of one's
    own. Returns the path; a bad spec, ``n`` or folder is a ``UserError``."""
    records = builtin_records(spec, n=n, seed=seed)
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    try:
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path
