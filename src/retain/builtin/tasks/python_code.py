"""The ``code`` capability: level 1 asks what a tiny Python expression returns (len, upper,
max/min, +), level 2 what a small function with a loop or a conditional prints. Every answer is
computed here in plain Python, never by running the generated text.
"""

from __future__ import annotations

import math
import random

from retain.builtin.tasks.common import Item, word

def code_item(rng: random.Random) -> Item:
    kind = rng.randrange(4)
    if kind == 0:
        w = word(rng)
        return Item(f"code:len:{w}", f"What does len('{w}') return in Python?", str(len(w)))
    if kind == 1:
        w = word(rng)
        return Item(f"code:upper:{w}", f"What does '{w}'.upper() return in Python?", f"'{w.upper()}'")
    if kind == 2:
        a, b = rng.randrange(100), rng.randrange(100)
        fn = rng.choice(["max", "min"])
        val = max(a, b) if fn == "max" else min(a, b)
        return Item(f"code:{fn}:{a},{b}", f"What does {fn}({a}, {b}) return in Python?", str(val))
    w1, w2 = word(rng, 2, 4), word(rng, 2, 4)
    return Item(f"code:cat:{w1},{w2}", f"What does '{w1}' + '{w2}' return in Python?", f"'{w1}{w2}'")


def _program(rng: random.Random, form: int) -> tuple[tuple, str, str]:
    """(the parameters, a small program, what it prints). The output is computed here from the
    parameters in plain Python, never by running the generated text."""
    if form == 0:
        k, n = rng.randint(2, 5), rng.randint(5, 30)
        r = rng.randrange(k)
        code = (f"def total(n):\n    s = 0\n    for i in range(n):\n        if i % {k} == {r}:\n"
                f"            s += i\n    return s\n\nprint(total({n}))")
        return (k, r, n), code, str(sum(i for i in range(n) if i % k == r))
    if form == 1:
        chars, w = rng.choice(["aeiou", "rst", "lmn", "abc"]), word(rng, 4, 9)
        code = (f"def count(word):\n    c = 0\n    for ch in word:\n        if ch in '{chars}':\n"
                f"            c += 1\n    return c\n\nprint(count('{w}'))")
        return (chars, w), code, str(sum(ch in chars for ch in w))
    if form == 2:
        x0, m, limit = rng.randint(1, 9), rng.randint(2, 3), rng.randint(20, 500)
        code = (f"def steps(x):\n    n = 0\n    while x < {limit}:\n        x = x * {m}\n"
                f"        n += 1\n    return n\n\nprint(steps({x0}))")
        x, n = x0, 0
        while x < limit:
            x, n = x * m, n + 1
        return (x0, m, limit), code, str(n)
    if form == 3:
        xs = [rng.randint(-20, 99) for _ in range(rng.randint(4, 7))]
        cmp = rng.choice([">", "<"])
        code = (f"def pick(xs):\n    best = xs[0]\n    for x in xs:\n        if x {cmp} best:\n"
                f"            best = x\n    return best\n\nprint(pick({xs}))")
        return (cmp, *xs), code, str(max(xs) if cmp == ">" else min(xs))
    if form == 4:
        w = word(rng, 4, 9)
        code = (f"def rev(s):\n    out = ''\n    for ch in s:\n        out = ch + out\n"
                f"    return out\n\nprint(rev('{w}'))")
        return (w,), code, w[::-1]
    if form == 5:
        # n - start + 1 >= 7 > k: never an empty list
        k, start, n = rng.randint(2, 5), rng.randint(1, 6), rng.randint(12, 24)
        code = (f"def multiples(n):\n    out = []\n    for i in range({start}, n + 1):\n"
                f"        if i % {k} == 0:\n            out.append(i)\n    return out\n\n"
                f"print(multiples({n}))")
        return (k, start, n), code, str([i for i in range(start, n + 1) if i % k == 0])
    if form == 6:
        k, t, x = rng.randint(2, 6), rng.randint(10, 50), rng.randint(1, 80)
        w1, w2, w3 = rng.sample(["fizz", "big", "small", "even", "odd", "high", "low", "zero"], 3)
        code = (f"def label(x):\n    if x % {k} == 0:\n        return '{w1}'\n    elif x > {t}:\n"
                f"        return '{w2}'\n    else:\n        return '{w3}'\n\nprint(label({x}))")
        return (k, t, x, w1, w2, w3), code, w1 if x % k == 0 else w2 if x > t else w3
    start, n = rng.randint(1, 9), rng.randint(3, 8)
    code = (f"def prod(n):\n    p = {start}\n    for i in range(1, n + 1):\n        p = p * i\n"
            f"    return p\n\nprint(prod({n}))")
    return (start, n), code, str(start * math.factorial(n))


_PROGRAM_FORMS = 8


def code_l2_item(rng: random.Random) -> Item:
    """Level 2: what a small function with a loop or a conditional prints when called."""
    form = rng.randrange(_PROGRAM_FORMS)
    params, code, output = _program(rng, form)
    prompt = (f"What does this Python code print?\n\n```python\n{code}\n```\n\n"
              f"Answer with the printed output only.")
    # Checked like level 1 (``exact``: the normalized output, numbers compared as numbers).
    return Item(f"code2:{form}:{','.join(map(str, params))}", prompt, output)
