"""The ``instructions`` capability: IFEval-style verifiable instructions (case, bullets, JSON,
repeat, include a word); level 2 asks two to four of them at once, every one to hold.
"""

from __future__ import annotations

import json
import random

from retain.builtin.tasks.common import Item, word
from retain.builtin.tasks.multilingual import LEXICON
from retain.builtin.tasks.writing import NOUNS, sentence

_CATEGORIES = {
    "colors": ["red", "blue", "green", "black", "white", "gray", "yellow", "brown"],
    "animals": ["cat", "dog", "horse", "bird", "fish", "cow", "goat", "duck"],
    "fruits": ["apple", "pear", "plum", "grape", "lemon", "melon", "cherry", "peach"],
}
_JSON_KEYS = ["name", "city", "color", "animal", "word"]
_NUM_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}


def instruction_item(rng: random.Random) -> Item:
    kind = rng.randrange(6)
    w = rng.choice(NOUNS + list(LEXICON))
    if kind in (0, 1):
        # Made-up words: a case change must be done by copying, not recalled per word.
        w = word(rng, 3, 8)
    if kind == 0:
        return Item(f"if:upper:{w}", f"Write the word {w} in capital letters.", w.upper(),
                    check={"kind": "uppercase", "word": w})
    if kind == 1:
        return Item(f"if:lower:{w}", f"Write the word {w.upper()} in lowercase letters.", w,
                    check={"kind": "lowercase", "word": w})
    if kind == 2:
        n = rng.randint(2, 5)
        cat = rng.choice(list(_CATEGORIES))
        items = rng.sample(_CATEGORIES[cat], n)
        return Item(f"if:bullets:{n}:{cat}:{','.join(items)}",
                    f"List {_NUM_WORDS[n]} {cat} as bullet points.",
                    "\n".join(f"- {x}" for x in items), check={"kind": "bullets", "n": n})
    if kind == 3:
        key = rng.choice(_JSON_KEYS)
        return Item(f"if:json:{key}:{w}", f'Answer in JSON with the key "{key}" and the value {w}.',
                    json.dumps({key: w}), check={"kind": "json_key", "key": key, "value": w})
    if kind == 4:
        n = rng.randint(2, 4)
        return Item(f"if:repeat:{w}:{n}", f"Repeat the word {w} {_NUM_WORDS[n]} times.",
                    " ".join([w] * n), check={"kind": "repeat", "word": w, "n": n})
    noun = rng.choice(NOUNS)
    return Item(f"if:include:{noun}:{rng.randrange(10**9)}",
                f"Write a sentence that includes the word {noun}.", sentence(rng, noun),
                check={"kind": "include_word", "word": noun})


def instruction_l2_item(rng: random.Random) -> Item:
    """Level 2: two to four verifiable constraints at once, every one to hold.

    The check is ``{"kind": "all", "checks": [...]}`` over the level-1 check kinds (and
    ``regex``): the checker must know the ``all`` kind (it passes when every check passes)."""
    kind = rng.randrange(4)
    upper = rng.random() < 0.5
    case = "capital" if upper else "lowercase"
    case_kind = "uppercase" if upper else "lowercase"
    if kind == 0:  # bullets, case, a named member
        n = rng.randint(2, 5)
        cat = rng.choice(list(_CATEGORIES))
        must = rng.choice(_CATEGORIES[cat])
        # The example answer follows from the prompt alone: one prompt, one item.
        picks = [must] + [x for x in _CATEGORIES[cat] if x != must][:n - 1]
        shown = [x.upper() if upper else x for x in picks]
        return Item(f"if2:bullets:{case}:{n}:{cat}:{must}",
                    f"List {_NUM_WORDS[n]} {cat} as bullet points, in {case} letters, and "
                    f"include {must}.", "\n".join(f"- {x}" for x in shown),
                    check={"kind": "all", "checks": [
                        {"kind": "bullets", "n": n}, {"kind": case_kind, "word": must},
                        {"kind": "include_word", "word": must}]})
    if kind == 1:  # repeat, case (shown in the other case, so it must be converted)
        w, n = word(rng, 3, 8), rng.randint(2, 4)
        return Item(f"if2:repeat:{case}:{w}:{n}",
                    f"Repeat the word {w if upper else w.upper()} {_NUM_WORDS[n]} times, in "
                    f"{case} letters, separated by spaces.",
                    " ".join([w.upper() if upper else w] * n),
                    check={"kind": "all", "checks": [{"kind": "repeat", "word": w, "n": n},
                                                     {"kind": case_kind, "word": w}]})
    if kind == 2:  # JSON, lowercase (a JSON key in capitals would no longer be the key asked for)
        key, w = rng.choice(_JSON_KEYS), word(rng, 3, 8)
        return Item(f"if2:json:{key}:{w}",
                    f'Answer in JSON with the key "{key}" and the value {w.upper()}, all in '
                    f"lowercase letters.", json.dumps({key: w}),
                    check={"kind": "all", "checks": [
                        {"kind": "json_key", "key": key, "value": w},
                        {"kind": "lowercase", "word": w}]})
    n1, n2 = rng.sample(NOUNS, 2)  # two words, lowercase, a given final mark
    return Item(f"if2:sentence:{n1}:{n2}",
                f"Write one sentence in lowercase letters that includes the words {n1} and {n2} "
                f"and ends with an exclamation mark.", f"the {n1} waits near the {n2}!",
                check={"kind": "all", "checks": [
                    {"kind": "include_word", "word": n1}, {"kind": "include_word", "word": n2},
                    {"kind": "lowercase", "word": n1}, {"kind": "regex", "pattern": r"!\s*$"}]})
