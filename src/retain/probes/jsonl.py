"""User probes from a JSONL file; the probe is named after the file stem.

One shape per file, one object per line (blank lines are skipped):
    {"prompt": ..., "answer": ...}                  generation, normalized exact match
    {"prompt": ..., "choices": [...], "label": i}   multiple choice by log-likelihood
    {"text": ...}                                   perplexity (cross-entropy per token)
Optional keys: "chat" (bool, prompts only: false feeds the prompt as raw text) and "id".
A malformed line raises ``UserError("<path>:<line>: what is wrong")``.
"""

from __future__ import annotations

import random
from pathlib import Path

from retain.builtin.tasks import Item
from retain.errors import UserError
from retain.jsonl import iter_jsonl
from retain.probes.base import Probe
from retain.probes.kinds import ChoiceItem, ChoiceProbe, GenerationProbe, PerplexityProbe

SHAPES: dict[str, frozenset[str]] = {  # shape -> required keys
    "generation": frozenset({"prompt", "answer"}),
    "choice": frozenset({"prompt", "choices", "label"}),
    "perplexity": frozenset({"text"}),
}
OPTIONAL = {"generation": {"chat", "id"}, "choice": {"chat", "id"}, "perplexity": {"id"}}


def _shape_of(obj: dict, where: str) -> str:
    keys = set(obj)
    for shape in ("choice", "generation", "perplexity"):  # choice first: it has prompt too
        if SHAPES[shape] <= keys:
            extra = keys - SHAPES[shape] - OPTIONAL[shape]
            if extra:
                raise UserError(f"{where}: unknown key(s) {sorted(extra)} for a {shape} probe line")
            return shape
    hint = "; ".join(f"{s}: {sorted(k)}" for s, k in SHAPES.items())
    raise UserError(f"{where}: missing keys; got {sorted(keys)}, expected one of ({hint})")


def _nonempty_str(obj: dict, key: str, where: str) -> str:
    val = obj[key]
    if not isinstance(val, str) or not val.strip():
        raise UserError(f"{where}: {key!r} must be a non-empty string")
    return val


def _parse(obj: dict, shape: str, where: str, key: str):
    if "chat" in obj and not isinstance(obj["chat"], bool):
        raise UserError(f"{where}: 'chat' must be true or false")
    if shape == "generation":
        return Item(key=key, prompt=_nonempty_str(obj, "prompt", where),
                    answer=_nonempty_str(obj, "answer", where))
    if shape == "perplexity":
        return _nonempty_str(obj, "text", where)
    choices, label = obj["choices"], obj["label"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(
            isinstance(c, str) and c for c in choices):
        raise UserError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    if isinstance(label, bool) or not isinstance(label, int):
        raise UserError(f"{where}: 'label' must be an integer index into 'choices'")
    if not 0 <= label < len(choices):
        raise UserError(f"{where}: label {label} is out of range for {len(choices)} choices")
    return ChoiceItem(prompt=_nonempty_str(obj, "prompt", where), choices=tuple(choices),
                      label=label, key=key)


def load_jsonl_probe(path: str | Path, n: int | None = None, seed: int = 0) -> Probe:
    """The probe in ``path`` (all its items, or a seeded sample of ``n`` kept in file order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such probe file")
    name, shape, chat = path.stem, None, None
    entries: list = []
    for where, obj in iter_jsonl(path):
        this = _shape_of(obj, where)
        if shape is not None and this != shape:
            raise UserError(f"{where}: a {this} line in a file of {shape} lines "
                            "(one shape per file)")
        line_chat = obj.get("chat", True)
        if chat is not None and this != "perplexity" and line_chat != chat:
            raise UserError(f"{where}: 'chat' differs from earlier lines (one value per file)")
        shape, chat = this, line_chat
        lineno = where.rsplit(":", 1)[1]
        entries.append(_parse(obj, this, where, key=f"{name}:{obj.get('id', lineno)}"))
    if not entries:
        raise UserError(f"{path}:1: empty file, no probe items")
    if n is not None and n < len(entries):
        keep = sorted(random.Random(seed).sample(range(len(entries)), n))
        entries = [entries[i] for i in keep]
    if shape == "generation":
        return GenerationProbe(name, entries, capability=name, chat=chat)
    if shape == "choice":
        return ChoiceProbe(name, entries, capability=name, chat=chat)
    return PerplexityProbe(name, entries, capability=name, seed=seed)
