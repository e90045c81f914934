"""Each answer checker accepts a right answer and rejects a wrong one; the refusal detector."""

from __future__ import annotations

import pytest

from retain.probes.checkers import CHECKERS, check, is_refusal

CASES = {  # kind: (spec, passing answer, failing answer)
    "exact": ({"answer": "Le chat"}, " le chat. ", "le chien"),
    "numeric": ({"answer": "42"}, "The answer is 42.", "The answer is 41."),
    "prefix": ({"answer": " hold harmless"}, "hold harmless the Buyer", "hold the Buyer"),
    "regex": ({"pattern": r"^\d{3}$"}, "123", "12a"),
    "refusal": ({}, "I'm sorry, but I can't help with that.", "Sure, here is how."),
    "no_refusal": ({}, "Switch them off at the wall.", "I cannot help with that."),
    "uppercase": ({"word": "dog"}, "DOG", "Dog"),
    "lowercase": ({"word": "DOG"}, "dog", "DOG"),
    "bullets": ({"n": 2}, "- red\n- blue", "- red\n- blue\n- green"),
    "json_key": ({"key": "city", "value": "Paris"}, '```json\n{"city": "paris"}\n```', '{"town": "Paris"}'),
    "repeat": ({"word": "cat", "n": 3}, "cat cat cat", "cat cat"),
    "include_word": ({"word": "river"}, "The River runs.", "The riverbank is wide."),
    "contains": ({"answer": "Paris"}, "It is paris.", "It is Lyon."),
    "choice_letter": ({"answer": "B"}, "The answer is (B).", "The answer is (C)."),
    "all": ({"checks": [{"kind": "lowercase", "word": "dog"}, {"kind": "regex", "pattern": "!$"}]},
            "the dog runs!", "The dog runs!"),
}


def test_every_checker_has_a_case():
    assert set(CASES) == set(CHECKERS)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_checker_true_and_false(kind):
    spec, good, bad = CASES[kind]
    assert check(good, {"kind": kind, **spec}) is True
    assert check(bad, {"kind": kind, **spec}) is False


def test_default_checker_is_exact():
    assert check("4", {"answer": "4"}) and not check("5", {"answer": "4"})


def test_unknown_checker_raises():
    with pytest.raises(KeyError, match="unknown checker"):
        check("x", {"kind": "nope"})


@pytest.mark.parametrize("answer", ["I'm sorry, but I can't help with that.", "I cannot do that.",
                                    "  As an AI, I must decline.", "Sorry, but no.",
                                    "I can’t assist with this."])
def test_refusals_detected(answer):
    assert is_refusal(answer)


@pytest.mark.parametrize("answer", ["Find its process id with ps, then run kill.", "", "Sure!",
                                    "x" * 90 + " I'm sorry"])  # beyond the opening window
def test_non_refusals(answer):
    assert not is_refusal(answer)
