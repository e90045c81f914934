"""User probes from a JSONL file; the probe is named after the file stem.

One shape per file, one object per line (blank lines are skipped):
    {"prompt": ..., "answer": ...}                  generation, graded by a checker (below)
    {"prompt": ..., "choices": [...], "label": i}   multiple choice by log-likelihood
    {"text": ...}                                   perplexity (cross-entropy per token)
Optional keys: "chat" (bool, prompts only: false feeds the prompt as raw text), "id", and on a
generation line "checker".

"checker" says how a generation line's "answer" is compared with the model's answer
(``retain.probes.checkers``, which reads a chat answer as a careful grader would):
    exact          (default) equal after normalizing: case, quotes, markdown, trailing
                   punctuation, a preamble such as "Sure! The answer is" (a number compares as
                   numeric)
    numeric        the number the answer settles on equals "answer" (a number) numerically
    contains       the answer contains "answer", case-insensitive
    regex          "answer" is a regular expression, searched in the answer
    choice_letter  the option letter the answer picks ("B", "(B)", "The answer is B.") equals
                   "answer" (a letter)

A file may open with a settings line, an object of only these keys:
    {"checker": "numeric", "fewshot": [{"prompt": "2 + 2?", "answer": "4"}, ...]}
Its "checker" is the default of every generation line (a line's own "checker" wins). Its
"fewshot" examples go before every prompt of a generation or choice file, as plain text:
    Q: <example prompt>\\nA: <example answer>\\n\\n ... Q: <prompt>\\nA:
which is the one user turn of a chat template, or the raw text when "chat" is false. One format
for every model; an answer that runs on into a next "\\nQ:" is cut there (``engine.STOP_STRINGS``).

A malformed line raises ``UserError("<path>:<line>: what is wrong")``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from retain.builtin.tasks import Item
from retain.errors import UserError
from retain.jsonl import iter_jsonl
from retain.probes.base import Probe
from retain.probes.checkers import expected_letter, parse_number
from retain.probes.kinds import ChoiceItem, ChoiceProbe, GenerationProbe, PerplexityProbe

SHAPES: dict[str, frozenset[str]] = {  # shape -> required keys
    "generation": frozenset({"prompt", "answer"}),
    "choice": frozenset({"prompt", "choices", "label"}),
    "perplexity": frozenset({"text"}),
}
OPTIONAL = {"generation": {"chat", "id", "checker"}, "choice": {"chat", "id"},
            "perplexity": {"id"}}
CHECKERS = ("exact", "numeric", "contains", "regex", "choice_letter")
SETTINGS = frozenset({"checker", "fewshot"})  # the keys of a file's opening settings line

Fewshot = tuple[tuple[str, str], ...]  # (prompt, answer) examples


def _shape_of(obj: dict, where: str) -> str:
    keys = set(obj)
    if "fewshot" in keys:
        raise UserError(f"{where}: 'fewshot' belongs on the file's first line, a settings line "
                        "of only 'checker' and 'fewshot'")
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


def _checker(value, where: str) -> str:
    if not isinstance(value, str) or value not in CHECKERS:
        raise UserError(f"{where}: 'checker' must be one of {', '.join(CHECKERS)}; got {value!r}")
    return value


def _fewshot(value, where: str) -> Fewshot:
    what = "'fewshot' must be a non-empty list of {\"prompt\": ..., \"answer\": ...} objects"
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {what}")
    for i, ex in enumerate(value, 1):
        if not (isinstance(ex, dict) and set(ex) == {"prompt", "answer"}
                and all(isinstance(v, str) and v.strip() for v in ex.values())):
            raise UserError(f"{where}: {what} of non-empty strings; example {i} is not")
    return tuple((ex["prompt"], ex["answer"]) for ex in value)


def fewshot_prompt(examples: Fewshot, prompt: str) -> str:
    """``prompt`` after its few-shot examples, in the Q/A text format (itself when none)."""
    if not examples:
        return prompt
    return "".join(f"Q: {p}\nA: {a}\n\n" for p, a in examples) + f"Q: {prompt}\nA:"


def _check_spec(checker: str, answer: str, where: str) -> dict | None:
    """The item's check spec for ``checker`` (None: the default exact match); a UserError when
    ``answer`` cannot be checked so."""
    shown = answer if len(answer) <= 40 else answer[:37] + "..."
    if checker == "numeric" and parse_number(answer) is None:
        raise UserError(f"{where}: checker 'numeric' needs a number as 'answer'; got {shown!r}")
    if checker == "choice_letter" and expected_letter(answer) is None:
        raise UserError(f"{where}: checker 'choice_letter' needs one letter as 'answer' (\"B\"); "
                        f"got {shown!r}")
    if checker == "regex":
        try:
            re.compile(answer)
        except re.error as e:
            raise UserError(f"{where}: 'answer' is not a valid regex for checker 'regex' "
                            f"({e.msg})") from None
        return {"kind": "regex", "pattern": answer}
    return None if checker == "exact" else {"kind": checker}


def _parse(obj: dict, shape: str, where: str, key: str, checker: str, fewshot: Fewshot):
    if "chat" in obj and not isinstance(obj["chat"], bool):
        raise UserError(f"{where}: 'chat' must be true or false")
    if shape == "generation":
        answer = _nonempty_str(obj, "answer", where)
        checker = _checker(obj.get("checker", checker), where)
        return Item(key=key, prompt=fewshot_prompt(fewshot, _nonempty_str(obj, "prompt", where)),
                    answer=answer, check=_check_spec(checker, answer, where))
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
    return ChoiceItem(prompt=fewshot_prompt(fewshot, _nonempty_str(obj, "prompt", where)),
                      choices=tuple(choices), label=label, key=key)


def _settings(obj: dict, where: str) -> tuple[str, Fewshot]:
    """(default checker, few-shot examples) of a settings line."""
    checker = _checker(obj["checker"], where) if "checker" in obj else "exact"
    return checker, _fewshot(obj["fewshot"], where) if "fewshot" in obj else ()


def load_jsonl_probe(path: str | Path, n: int | None = None, seed: int = 0) -> Probe:
    """The probe in ``path`` (all its items, or a seeded sample of ``n`` kept in file order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such probe file")
    name, shape, chat = path.stem, None, None
    checker, fewshot, settings_at = "exact", (), None
    entries: list = []
    for where, obj in iter_jsonl(path):
        if obj and set(obj) <= SETTINGS:
            if settings_at is not None or entries:
                raise UserError(f"{where}: a settings line (only 'checker', 'fewshot') must be "
                                "the file's first line")
            checker, fewshot = _settings(obj, where)
            settings_at = (where, set(obj))
            continue
        this = _shape_of(obj, where)
        if shape is not None and this != shape:
            raise UserError(f"{where}: a {this} line in a file of {shape} lines "
                            "(one shape per file)")
        line_chat = obj.get("chat", True)
        if chat is not None and this != "perplexity" and line_chat != chat:
            raise UserError(f"{where}: 'chat' differs from earlier lines (one value per file)")
        shape, chat = this, line_chat
        lineno = where.rsplit(":", 1)[1]
        entries.append(_parse(obj, this, where, f"{name}:{obj.get('id', lineno)}", checker,
                              fewshot))
    if not entries:
        raise UserError(f"{path}:1: empty file, no probe items")
    if settings_at is not None:
        where, keys = settings_at
        allowed = {"generation": SETTINGS, "choice": {"fewshot"}, "perplexity": set()}[shape]
        if keys - allowed:
            raise UserError(f"{where}: {sorted(keys - allowed)} do not apply to a file of "
                            f"{shape} lines")
    if n is not None and n < len(entries):
        keep = sorted(random.Random(seed).sample(range(len(entries)), n))
        entries = [entries[i] for i in keep]
    if shape == "generation":
        return GenerationProbe(name, entries, capability=name, chat=chat)
    if shape == "choice":
        return ChoiceProbe(name, entries, capability=name, chat=chat)
    return PerplexityProbe(name, entries, capability=name, seed=seed)
