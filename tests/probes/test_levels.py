"""Harder levels of the built-in suites (``math:2``, ...): seeded distinct items, right answers,
distinct probe names, one-line errors for unknown levels, and level 1 exactly as before."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import operator
import re

import pytest

from retain.builtin import build, tasks
from retain.errors import UserError
from retain.probes import SUITES, list_suites, load_probes
from retain.probes.checkers import CHECKERS, check
from retain.probes.suites import parse_level_spec, probe_items

LEVELS = [(name, level) for name, s in SUITES.items() for level in s.levels]


def _digest(objs) -> str:
    return hashlib.sha256(json.dumps(objs, sort_keys=True, ensure_ascii=False).encode()
                          ).hexdigest()[:16]


def _rows(its) -> list:
    return [[it.key, it.prompt, it.answer, it.text, it.check] for it in its]


# Recorded before the levels were added (the built-in model was trained on level 1 and its
# tests hold items out by hash): 40 items of each split for seeds 0 and 7.
GOLDEN_LEVEL_1 = {
    "math": "a6653ba4d825c02b", "multilingual": "a6a1e279da6a4193",
    "safety_harmful": "0ca21c1de29776a4", "safety_benign": "4c1385421088434a",
    "code": "ffad79d16fafb057", "writing": "ed209603ec479d61",
    "instructions": "d6f627c140178864", "legal": "29eb1d1d64e7b4fe",
    "legal_cloze": "7cc5739244892837", "support": "7013d427e7510b61",
    "support_cloze": "c847c6585928e60a",
    # the third domain, recorded when it was added
    "recipes": "0ec9139708bd8ba9", "recipes_cloze": "9d00a4ec0ef56515",
}
# load_probes(["all", "drift"], n=30, seed=3), every item of every suite but recipes (recorded
# before recipes joined "all"; its items are pinned above)
GOLDEN_SUITES = "38c06e2cd6e4c2e2"


@pytest.mark.parametrize("task", sorted(GOLDEN_LEVEL_1))
def test_level_one_items_are_unchanged(task):
    got = [_rows(tasks.items(task, split, 40, seed)) for split in ("train", "probe")
           for seed in (0, 7)]
    assert _digest(got) == GOLDEN_LEVEL_1[task]


def test_level_one_suites_are_unchanged():
    probes = load_probes(["all", "drift"], n=30, seed=3)
    rows = [[p.name, p.metric, _rows(p.items) if hasattr(p, "items") else p.texts]
            for p in probes if p.name != "recipes"]
    assert _digest(rows) == GOLDEN_SUITES


def test_levels_are_new_tasks_outside_the_training_mixture():
    level_tasks = {t for t in tasks.TASKS if re.search(r"_l\d+$", t)}
    assert level_tasks == {"math_l2", "math_l3", "code_l2", "multilingual_l2", "instructions_l2",
                           "safety_harmful_l2", "safety_benign_l2"}
    assert not level_tasks & (set(build.BASE_MIX) | set(build.CHAT_MIX))
    assert set(LEVELS) == {("math", 2), ("math", 3), ("code", 2), ("multilingual", 2),
                           ("safety", 2), ("instructions", 2)}


@pytest.mark.parametrize("suite,level", LEVELS)
def test_each_level_gives_n_distinct_seeded_items(suite, level):
    probes = SUITES[suite].probes(n=100, seed=0, level=level)
    again = SUITES[suite].probes(n=100, seed=0, level=level)
    other = SUITES[suite].probes(n=100, seed=1, level=level)
    for p, q, r in zip(probes, again, other):
        assert p.name == f"{suite}_l{level}" and p.capability == suite
        # distinct prompts, not only distinct items: one prompt never has two expected answers
        assert len(p.items) == 100 and len({it.prompt for it in p.items}) == 100
        assert p.items == q.items and p.items != r.items
        assert all(tasks.split_of(it.key) == "probe" for it in p.items)


def test_level_items_are_not_level_one_items():
    for one, two in [("math", "math_l2"), ("code", "code_l2"), ("multilingual", "multilingual_l2"),
                     ("instructions", "instructions_l2"), ("safety_benign", "safety_benign_l2"),
                     ("safety_harmful", "safety_harmful_l2")]:
        first = {it.prompt for it in probe_items(one, 200, 0)}
        assert not first & {it.prompt for it in probe_items(two, 200, 0)}, two


def test_math_level_2_answers():
    ops = {"+": operator.add, "sum": operator.add, "-": operator.sub, "minus": operator.sub,
           "*": operator.mul, "product": operator.mul}
    seen = set()
    for it in probe_items("math_l2", 60, seed=0):
        a, b = map(int, re.findall(r"\d+", it.prompt))
        op = next(o for o in ops if re.search(rf"(^|\s){re.escape(o)}\s", it.prompt))
        seen.add(ops[op])
        assert 100 <= a <= 9999 and 100 <= b <= 9999
        assert int(it.answer) == ops[op](a, b) and int(it.answer) >= 0
        assert it.check == {"kind": "numeric"} and it.prompt.endswith("the number only.")
        assert check(f"The answer is {it.answer}.", {**it.check, "answer": it.answer})
    assert seen == {operator.add, operator.sub, operator.mul}


def test_math_level_3_answers():
    # Each form's answer, recomputed from the numbers as they appear in the question.
    forms = {
        "gives": lambda s, k, m, g: s + k * m - g,
        "keeps": lambda k, m, r, p: (k * m - r) / p,
        "change": lambda k, c, bill: bill - k * c,
        "km per hour": lambda v, h, w: v * h + w,
        "twice": lambda x, d: x + (x + d) + 2 * (x + d),
        "saves": lambda s, w, p: s * w - p,
    }
    seen = set()
    for it in probe_items("math_l3", 120, seed=0):
        nums = list(map(int, re.findall(r"\d+", it.prompt)))
        form = next(f for f in forms if f in it.prompt)
        seen.add(form)
        assert forms[form](*nums) == int(it.answer) > 0, it.prompt
    assert seen == set(forms)


def test_code_level_2_answers_match_running_the_program():
    # The generator never runs its text; the test does, on its own templates only.
    forms = set()
    for it in probe_items("code_l2", 80, seed=0):
        code = re.search(r"```python\n(.*)\n```", it.prompt, re.S).group(1)
        assert re.search(r"\b(for|while|if)\b", code) and code.count("\n") >= 5
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<item>", "exec"), {})
        assert out.getvalue() == it.answer + "\n", code
        assert it.check is None  # exact, as level 1
        spec = {"kind": "exact", "answer": it.answer}
        wrong = str(int(it.answer) + 1) if re.fullmatch(r"-?\d+", it.answer) else it.answer + "z"
        assert check(it.answer, spec) and not check(wrong, spec)
        forms.add(it.key.split(":")[1])
    assert len(forms) == 8


def test_multilingual_level_2_sentences():
    assert tasks.translate("dog", "red", "German", accusative=True) == "den roten Hund"
    assert tasks.translate("cat", "red", "German", accusative=True) == "die rote Katze"
    assert tasks.translate("book", "red", "German", accusative=True) == "das rote Buch"
    assert tasks.clause("house", "white", "small", "French") == (
        "the white house is small", "la maison blanche est petite")
    assert tasks.clause("car", None, "old", "Spanish", negated=True) == (
        "the car is not old", "el coche no es viejo")
    assert tasks.clause("moon", None, "big", "German", True)[1] == "der Mond ist nicht groß"
    items = probe_items("multilingual_l2", 120, seed=0)
    assert {it.prompt.split(":")[0] for it in items} == {f"Translate to {lang}"
                                                        for lang in tasks.LANGUAGES}
    liked = 0
    for it in items:  # the German direct object: den (masculine), die, das
        m = re.fullmatch(r"Translate to German: I like the (\w+) (\w+)\.", it.prompt)
        if m:
            liked += 1
            color, noun = m.groups()
            article = {"m": "den", "f": "die", "n": "das"}[tasks.LEXICON[noun][1][1]]
            assert it.answer == f"Ich mag {tasks.translate(noun, color, 'German', True)}."
            assert it.answer.startswith(f"Ich mag {article} ")
    assert liked
    for it in items:
        assert it.check is None  # exact, as level 1
        spec = {"kind": "exact", "answer": it.answer}
        assert check(it.answer, spec) and check(it.answer.lower().rstrip("."), spec)
        assert not check(it.answer.replace(" ", " le ", 1), spec)


def test_instruction_level_2_expected_answers_meet_every_constraint():
    kinds = set()
    for it in probe_items("instructions_l2", 80, seed=0):
        spec = it.check
        assert spec["kind"] == "all" and 2 <= len(spec["checks"]) <= 4
        assert all(c["kind"] in CHECKERS for c in spec["checks"])  # the level-1 kinds, and regex
        assert all(check(it.answer, c) for c in spec["checks"]), it
        # Flipping the letter case breaks at least one constraint.
        flipped = it.answer.swapcase()
        assert not all(check(flipped, c) for c in spec["checks"]), it
        kinds.add(it.key.split(":")[1])
    assert kinds == {"bullets", "repeat", "json", "sentence"}


def test_the_all_check_kind():
    if "all" not in CHECKERS:
        pytest.skip("checkers.py has no 'all' kind yet: instructions:2 needs it to be scored")
    it = probe_items("instructions_l2", 1, seed=0)[0]
    assert check(it.answer, it.check) and not check(it.answer.swapcase(), it.check)


def test_safety_level_2_pools():
    benign = probe_items("safety_benign_l2", 500, seed=0)
    harmful = probe_items("safety_harmful_l2", 500, seed=0)
    assert len(benign) > 4 * len(probe_items("safety_benign", 500, seed=0)) and len(benign) >= 100
    assert len(harmful) >= 100
    assert {it.check["kind"] for it in benign} == {"no_refusal"}
    assert {it.answer for it in harmful} == {tasks.REFUSAL}
    old = {r for r, _ in tasks.BENIGN}
    assert not old & {r for r, _ in tasks.BENIGN_2}
    refusal, over = load_probes(["safety:2"], n=30)
    assert (refusal.name, refusal.metric) == ("safety_l2", "refusal_rate")
    assert (over.name, over.metric, over.higher_is_better) == ("safety_l2", "over_refusal_rate",
                                                               False)
    assert {it.check["kind"] for it in over.items} == {"refusal"}


def test_level_specs_name_probes_apart():
    probes = load_probes(["retained", "math:2", "math:3", "math:1", "math:2", "code:2",
                          "multilingual:2", "safety:2", "instructions:2"], n=3)
    keys = [f"{p.name}.{p.metric}" for p in probes]
    assert len(keys) == len(set(keys))  # math:1 is math, asked for once; math:2 once
    assert {"math.accuracy", "math_l2.accuracy", "math_l3.accuracy", "code_l2.accuracy",
            "multilingual_l2.accuracy", "instructions_l2.accuracy", "safety_l2.refusal_rate",
            "safety_l2.over_refusal_rate"} <= set(keys)
    assert [p.name for p in load_probes(["math:1"], n=3)] == ["math"]
    assert [p.name for p in load_probes(["math:2"], n=3)] == ["math_l2"]
    assert parse_level_spec("math:3") == ("math", 3)
    assert parse_level_spec("lm-eval:hellaswag") is None and parse_level_spec("math") is None


@pytest.mark.parametrize("spec,message", [
    ("math:9", "probe suite 'math' has no level 9 .*levels: 1, 2, 3"),
    ("writing:2", "probe suite 'writing' has a single level"),
    ("legal:2", "probe suite 'legal' has a single level"),
    ("math:two", "the level must be a number"),
    ("math:", "the level must be a number"),
    ("retained:2", "levels are for suites, not for the group 'retained'"),
])
def test_unknown_levels_are_one_line_user_errors(spec, message):
    with pytest.raises(UserError, match=message) as err:
        load_probes([spec], n=3)
    assert "\n" not in str(err.value)


def test_level_option_on_a_suite():
    (p,) = SUITES["math"].probes(n=5, seed=0, level=3)
    assert p.name == "math_l3"
    with pytest.raises(UserError, match="no level 4"):
        SUITES["math"].probes(n=5, level=4)


def test_listing_names_the_levels():
    listing = list_suites()
    assert "math:2 = " in listing["math"] and "math:3 = " in listing["math"]
    assert "safety:2" in listing["safety"] and "instructions:2" in listing["instructions"]
    assert ":2" not in listing["writing"] and ":2" not in listing["legal"]
    # one line, and no square brackets: ``retain probes`` prints with rich, which eats them
    assert all("\n" not in d and "[" not in d for d in listing.values())
