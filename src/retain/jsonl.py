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
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj
