"""The ``writing`` capability: short English texts from a small sentence grammar. Its nouns and
``sentence`` also feed the instruction tasks.
"""

from __future__ import annotations

import random

from retain.builtin.tasks.common import Item

NOUNS = ["dog", "cat", "bird", "farmer", "teacher", "child", "river", "garden", "house", "city",
          "horse", "friend", "doctor", "baker", "student", "window", "forest", "road", "boat", "book"]
_ADJS = ["old", "small", "happy", "quiet", "bright", "young", "tall", "busy", "warm", "gentle"]
_VERBS = ["walks", "sleeps", "waits", "sings", "works", "rests", "plays", "reads", "looks", "stays"]
_PREPS = ["near", "by", "behind", "beside", "under", "across from", "inside", "around"]
_TIMES = ["in the morning", "at night", "every day", "after lunch", "in the spring", "on Sunday"]
_OBJS = ["a letter", "the bread", "a song", "the news", "a small gift", "the old map", "a red apple"]
_TVERBS = ["finds", "brings", "carries", "writes", "buys", "opens", "shares", "reads"]


def sentence(rng: random.Random, noun: str | None = None) -> str:
    n1 = noun or rng.choice(NOUNS)
    n2 = rng.choice([n for n in NOUNS if n != n1])
    form = rng.randrange(4)
    if form == 0:
        s = f"the {rng.choice(_ADJS)} {n1} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {n2}"
    elif form == 1:
        s = f"the {n1} {rng.choice(_TVERBS)} {rng.choice(_OBJS)} {rng.choice(_TIMES)}"
    elif form == 2:
        s = f"{rng.choice(_TIMES)}, the {n1} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {n2}"
    else:
        s = (f"the {n1} {rng.choice(_VERBS)} {rng.choice(_PREPS)} the {n2}, "
             f"and the {n2} {rng.choice(_VERBS)} too")
    return s[0].upper() + s[1:] + "."


def writing_item(rng: random.Random) -> Item:
    k = rng.randint(1, 3)
    text = " ".join(sentence(rng) for _ in range(k))
    return Item(f"writing:{text}", text=text)
