"""What every built-in task shares: the ``Item`` a generator yields, the stable train/probe
split of its key, the name of a task's harder level, and the made-up words that the code and
instruction tasks draw.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Literal

Split = Literal["train", "probe"]
PROBE_SHARE_PERCENT = 20  # share of each item space held out for the probes
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Item:
    """One task item. ``text`` items are raw text; the others are a chat turn (prompt -> answer).

    ``check`` names a verifier in ``retain.probes.checkers`` and its arguments; ``None`` means
    the answer must match ``answer`` (normalized exact match).
    """

    key: str
    prompt: str | None = None
    answer: str | None = None
    text: str | None = None
    check: dict | None = field(default=None, hash=False)


def split_of(key: str) -> Split:
    """Stable split of an item key: the same on every machine and Python version."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return "probe" if h % 100 < PROBE_SHARE_PERCENT else "train"


def level_task(task: str, level: int) -> str:
    """The task name of ``task`` at ``level``: level 1 is ``task`` itself."""
    return task if level == 1 else f"{task}_l{level}"


def word(rng: random.Random, lo: int = 2, hi: int = 7) -> str:
    """A made-up lowercase word of ``lo`` to ``hi`` letters."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))
