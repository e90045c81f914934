"""Reading user JSONL files with errors a user can act on: ``file:line: what is wrong``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from retain.errors import UserError


def iter_jsonl(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for each non-blank line of ``path``, ``where`` being ``path:line``.

    A line that is not JSON, or not a JSON object, raises ``UserError`` naming file and line.
    (Callers check that the file exists and say what an empty file means for them.)"""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:  # without its line break: a string left open is "unterminated", not a newline
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise UserError(f"{where}:{e.colno}: not valid JSON: {_what(e.msg)}") from None
            if not isinstance(obj, dict):
                raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def _what(msg: str) -> str:
    """json's message without its dangling " at" (the column says where), in words a user
    can act on for the common case of a raw tab or line break pasted into a string."""
    if msg.startswith("Invalid control character"):
        return ("Invalid control character in a string (a raw tab or newline: write it as "
                "\\t or \\n)")
    if msg.startswith("Unterminated string"):
        return "Unterminated string (it opens at this column and is never closed)"
    return msg.removesuffix(" at")
