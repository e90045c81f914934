"""The ``math`` capability: level 1 adds a < 100 and b < 10 (an enumerated item space), level 2
asks one +, - or * on 3-4 digit numbers, level 3 a word problem of 2-3 operations.
"""

from __future__ import annotations

import operator
import random
from typing import Iterator

from retain.builtin.tasks.common import Item

_NUMBER_ONLY = " Answer with the number only."  # one number for the numeric check to read
_ARITH = {  # operator -> (its function, its phrasings); level 1 asks "+" only, a < 100, b < 10
    "+": (operator.add, ["What is {a} + {b}?", "Compute {a} + {b}.",
                         "What is the sum of {a} and {b}?"]),
    "-": (operator.sub, ["What is {a} - {b}?", "Compute {a} - {b}.", "What is {a} minus {b}?"]),
    "*": (operator.mul, ["What is {a} * {b}?", "Compute {a} * {b}.",
                         "What is the product of {a} and {b}?"]),
}


def math_space() -> Iterator[Item]:
    templates = _ARITH["+"][1]
    for t, tpl in enumerate(templates):
        for a in range(100):
            for b in range(10):
                # Key on (a, b) alone: a held-out sum is held out in every phrasing.
                yield Item(key=f"math:{a}+{b}", prompt=tpl.format(a=a, b=b), answer=str(a + b))


def _operand(rng: random.Random) -> int:
    digits = rng.choice((3, 4))  # level 2: 3- and 4-digit operands, equally often
    return rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def math_l2_item(rng: random.Random) -> Item:
    """Level 2: one +, - or * on 3-4 digit numbers."""
    op = rng.choice(list(_ARITH))
    a, b = _operand(rng), _operand(rng)
    if op == "-" and b > a:
        a, b = b, a  # a non-negative difference: the level is about size, not signs
    fn, phrasings = _ARITH[op]
    return Item(f"math2:{a}{op}{b}", rng.choice(phrasings).format(a=a, b=b) + _NUMBER_ONLY,
                str(fn(a, b)), check={"kind": "numeric"})


_NAMES = ["Maya", "Leo", "Ana", "Omar", "Priya", "Tom", "Sara", "Ken", "Lucia", "Ben", "Nora",
          "Sam"]
_GOODS = [("apples", "bags"), ("marbles", "jars"), ("stickers", "packs"), ("pencils", "boxes"),
          ("cookies", "trays"), ("eggs", "cartons"), ("stamps", "albums"), ("beads", "bags")]
_VEHICLES = ["train", "bus", "truck", "boat", "car"]
_GIFTS = ["bike", "game", "jacket", "lamp", "guitar", "watch"]


def _word_problem(rng: random.Random, form: int) -> tuple[tuple[int, ...], str, int]:
    """(the numbers, the question, the answer) of one word problem of 2-3 operations."""
    a, b, c = rng.sample(_NAMES, 3)
    things, box = rng.choice(_GOODS)
    if form == 0:  # s + k*m - g
        s, k, m = rng.randint(5, 60), rng.randint(2, 9), rng.randint(4, 25)
        g = rng.randint(1, s + k * m - 1)
        return (s, k, m, g), (f"{a} has {s} {things}. {a} buys {k} {box} with {m} {things} in "
                              f"each, then gives {g} {things} to {b}. How many {things} does {a} "
                              f"have now?"), s + k * m - g
    if form == 1:  # (k*m - r) / p, r chosen so that the rest divides evenly
        k, m, p = rng.randint(2, 9), rng.randint(4, 25), rng.randint(2, 6)
        total = k * m
        # 1 <= r <= total - p: something is kept, and each friend gets at least one
        r = total % p + p * rng.randint(0 if total % p else 1, min(2, total // p - 1))
        return (k, m, r, p), (f"{a} has {k} {box} of {m} {things}. {a} keeps {r} and shares the "
                              f"rest equally among {p} friends. How many {things} does each "
                              f"friend get?"), (total - r) // p
    if form == 2:  # bill - k*c
        k, cost = rng.randint(2, 9), rng.randint(2, 15)
        bill = next(x for x in (20, 50, 100, 200) if x > k * cost)
        return (k, cost, bill), (f"{a} buys {k} {things} at ${cost} each and pays with a ${bill} "
                                 f"bill. How many dollars of change does {a} get?"), bill - k * cost
    if form == 3:  # v*h + w
        v, h, w = 5 * rng.randint(6, 24), rng.randint(2, 6), rng.randint(5, 90)
        return (v, h, w), (f"A {rng.choice(_VEHICLES)} travels {v} km per hour for {h} hours and "
                           f"then {w} km more. How many km does it travel in all?"), v * h + w
    if form == 4:  # x + (x + d) + 2 (x + d)
        x, d = rng.randint(3, 40), rng.randint(2, 20)
        return (x, d), (f"{a} has {x} {things}. {b} has {d} more {things} than {a}, and {c} has "
                        f"twice as many as {b}. How many {things} do the three of them have "
                        f"together?"), x + 3 * (x + d)
    save, weeks = rng.randint(5, 40), rng.randint(3, 12)  # save*weeks - spent
    spent = rng.randint(1, save * weeks - 1)
    return (save, weeks, spent), (f"{a} saves ${save} every week for {weeks} weeks, then spends "
                                  f"${spent} on a {rng.choice(_GIFTS)}. How many dollars does {a} "
                                  f"have left?"), save * weeks - spent


_WORD_PROBLEM_FORMS = 6


def math_l3_item(rng: random.Random) -> Item:
    """Level 3: a word problem of 2-3 operations on small numbers, names and objects templated."""
    form = rng.randrange(_WORD_PROBLEM_FORMS)
    nums, question, answer = _word_problem(rng, form)
    # Key on the form and numbers alone: held-out numbers are held out under every name.
    return Item(f"math3:{form}:{','.join(map(str, nums))}", question + _NUMBER_ONLY, str(answer),
                check={"kind": "numeric"})
