"""Generators for the built-in capabilities and the built-in new domains.

One source of items feeds both the built-in model's training mixture and the built-in probe
suites. Every generator enumerates a combinatorial item space; a stable hash of each item's key
puts it in the ``"train"`` or the ``"probe"`` split (about one item in five is a probe item), so
probe items are never trained on (``tests/builtin/test_tasks.py`` checks it).

The prompts are plain English questions, so the suites are meaningful for a real chat LLM too.

Harder levels of a capability are tasks of their own, named ``<task>_l<level>`` (``math_l2``,
``safety_benign_l2``); level 1 is the plain name, the level the built-in model was trained on. The
harder levels are in no training mixture, but they keep the same hash split, so a future model
trained on a level's ``"train"`` split would still never see its probe items.

Each capability has its module (``arithmetic`` is math, ``python_code`` is code, then
``writing``, ``multilingual``, ``safety``, ``instructions``; ``domains`` holds the new domains);
this one indexes their generators by task name and draws a split's items (``items``).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

from retain.builtin.tasks.arithmetic import math_l2_item, math_l3_item, math_space
from retain.builtin.tasks.common import PROBE_SHARE_PERCENT, Item, Split, level_task, split_of
from retain.builtin.tasks.domains import (LEGAL_CLAUSES, RECIPE_INGREDIENTS, RECIPE_STEPS,
                                          legal_cloze, legal_document, recipe_cloze,
                                          recipe_document, support_cloze, support_item)
from retain.builtin.tasks.instructions import instruction_item, instruction_l2_item
from retain.builtin.tasks.multilingual import (LANGUAGES, LEXICON, clause, multilingual_l2_item,
                                               multilingual_space, translate)
from retain.builtin.tasks.python_code import code_item, code_l2_item
from retain.builtin.tasks.safety import (BENIGN, BENIGN_2, REFUSAL, safety_benign_l2_space,
                                         safety_benign_space, safety_harmful_l2_space,
                                         safety_harmful_space)
from retain.builtin.tasks.writing import sentence, writing_item


SPACES: dict[str, Callable[[], Iterator[Item]]] = {
    "math": math_space,
    "multilingual": multilingual_space,
    "safety_harmful": safety_harmful_space,
    "safety_benign": safety_benign_space,
    "safety_harmful_l2": safety_harmful_l2_space,
    "safety_benign_l2": safety_benign_l2_space,
}
SAMPLERS: dict[str, Callable[[random.Random], Item]] = {
    "code": code_item,
    "writing": writing_item,
    "instructions": instruction_item,
    "legal": legal_document,
    "legal_cloze": legal_cloze,
    "support": support_item,
    "support_cloze": support_cloze,
    "recipes": recipe_document,
    "recipes_cloze": recipe_cloze,
    "math_l2": math_l2_item,
    "math_l3": math_l3_item,
    "code_l2": code_l2_item,
    "multilingual_l2": multilingual_l2_item,
    "instructions_l2": instruction_l2_item,
}
TASKS = tuple(SPACES) + tuple(SAMPLERS)


def items(task: str, split: Split, n: int, seed: int) -> list[Item]:
    """``n`` items of ``task`` from ``split``, seeded; finite spaces are sampled without
    replacement while they last (then cycled)."""
    if task in SPACES:
        pool = [it for it in SPACES[task]() if split_of(it.key) == split
                or (split == "train" and it.key.startswith("train-only:"))]
        if split == "probe":
            pool = [it for it in pool if not it.key.startswith("train-only:")]
        rng = random.Random(seed)
        out: list[Item] = []
        while len(out) < n:
            rng.shuffle(pool)
            out.extend(pool[: n - len(out)])
        return out
    if task not in SAMPLERS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    rng = random.Random(f"{task}:{split}:{seed}")
    out = []
    tries = 0
    while len(out) < n:
        it = SAMPLERS[task](rng)
        tries += 1
        if split_of(it.key) == split:
            out.append(it)
        if tries > 100 * n + 1000:
            raise RuntimeError(f"task {task!r} cannot fill {n} {split} items")
    return out


__all__ = [
    "Item", "Split", "PROBE_SHARE_PERCENT", "split_of", "level_task", "SPACES", "SAMPLERS", "TASKS",
    "items", "math_space", "math_l2_item", "math_l3_item", "code_item", "code_l2_item", "sentence",
    "writing_item", "LANGUAGES", "LEXICON", "translate", "clause", "multilingual_space",
    "multilingual_l2_item", "REFUSAL", "BENIGN", "BENIGN_2", "safety_harmful_space",
    "safety_benign_space", "safety_harmful_l2_space", "safety_benign_l2_space", "instruction_item",
    "instruction_l2_item", "LEGAL_CLAUSES", "legal_document", "legal_cloze", "support_item",
    "support_cloze", "RECIPE_INGREDIENTS", "RECIPE_STEPS", "recipe_document", "recipe_cloze",
]
