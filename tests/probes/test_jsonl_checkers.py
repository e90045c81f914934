"""User JSONL probes choose their checker (per line, or per file on a settings line) and carry
few-shot examples; generation cuts an answer at the next turn and gives a chat model room to
answer in a sentence; each malformed value is a one-line error naming file:line."""

from __future__ import annotations

import pytest

from retain import formats
from retain.probes import GenerationProbe, engine, format_prompt, load_probes
from retain.probes.checkers import check
from retain.probes.jsonl import fewshot_prompt, load_jsonl_probe

from test_probes_engine import EchoModel  # answers as told, cut to the budget
from test_probes_jsonl import assert_names_file_and_line, write


def graded(probe: GenerationProbe, answers: list[str]) -> list[bool]:
    return [check(a, probe.spec(it)) for a, it in zip(answers, probe.items)]


def test_each_checker_per_line(tmp_path):
    probe = load_jsonl_probe(write(tmp_path, "mixed.jsonl", [
        {"prompt": "Capital of France?", "answer": "Paris"},
        {"prompt": "Pi to two decimals?", "answer": "3.14", "checker": "numeric"},
        {"prompt": "Name a primary color.", "answer": "red", "checker": "contains"},
        {"prompt": "A date?", "answer": r"\d{4}-\d\d-\d\d", "checker": "regex"},
        {"prompt": "Which is a fruit? A) stone B) pear", "answer": "B", "checker": "choice_letter"},
    ]))
    kinds = [probe.spec(it)["kind"] for it in probe.items]
    assert kinds == ["exact", "numeric", "contains", "regex", "choice_letter"]
    right = ["The capital of France is **Paris**.", "It is about 3.14.",
             "Red is a primary color.", "Today is 2024-05-01.", "The answer is (B)."]
    wrong = ["Lyon", "3.15", "Green.", "Today.", "A) stone"]
    assert graded(probe, right) == [True] * 5
    assert graded(probe, wrong) == [False] * 5


def test_settings_line_sets_the_default_and_a_line_overrides_it(tmp_path):
    probe = load_jsonl_probe(write(tmp_path, "nums.jsonl", [
        {"checker": "numeric"},
        {"prompt": "2 + 2?", "answer": "4"},
        {"prompt": "Say four.", "answer": "four", "checker": "exact"},
    ]))
    assert [probe.spec(it)["kind"] for it in probe.items] == ["numeric", "exact"]
    assert [it.key for it in probe.items] == ["nums:2", "nums:3"]  # the settings line is line 1


def test_fewshot_is_prepended_as_q_and_a(tmp_path):
    shots = [{"prompt": "2 + 2?", "answer": "4"}, {"prompt": "3 + 3?", "answer": "6"}]
    gen = load_jsonl_probe(write(tmp_path, "add.jsonl", [
        {"fewshot": shots, "checker": "numeric"}, {"prompt": "5 + 5?", "answer": "10"}]))
    assert gen.items[0].prompt == "Q: 2 + 2?\nA: 4\n\nQ: 3 + 3?\nA: 6\n\nQ: 5 + 5?\nA:"
    assert gen.items[0].prompt == fewshot_prompt((("2 + 2?", "4"), ("3 + 3?", "6")), "5 + 5?")
    mc = load_jsonl_probe(write(tmp_path, "mc.jsonl", [
        {"fewshot": shots[:1]}, {"prompt": "Sky?", "choices": [" blue", " red"], "label": 0}]))
    assert mc.items[0].prompt == "Q: 2 + 2?\nA: 4\n\nQ: Sky?\nA:"
    assert fewshot_prompt((), "as is") == "as is"


def test_scored_end_to_end_with_runaway_answers(tmp_path, tok):
    """A model that answers in a sentence and runs on into the next turn scores right."""
    probe = load_jsonl_probe(write(tmp_path, "quiz.jsonl", [
        {"checker": "choice_letter", "fewshot": [{"prompt": "A) cat B) car: a vehicle?",
                                                   "answer": "B"}]},
        {"prompt": "A) oak B) rock: a tree?", "answer": "A"},
        {"prompt": "A) sun B) moon: a star?", "answer": "A"},
        {"prompt": "A) salt B) gold: a metal?", "answer": "B"},
    ]))
    said = ["The answer is A, since an oak is a tree.\nQ: A) dog B) pen: an animal?\nA: A",
            "A) sun\nUser: thanks!", "The answer is A.\nQ: A) gold B) salt: a metal?\nA: B"]
    answers = {tok.decode(formats.encode(tok, format_prompt(tok, it.prompt))): a
               for it, a in zip(probe.items, said)}
    out = probe.outcomes(EchoModel(tok, answers), tok, range(3))
    assert [o["answer"] for o in out] == ["The answer is A, since an oak is a tree.", "A) sun",
                                          "The answer is A."]
    assert [o["passed"] for o in out] == [True, True, False]
    # The floor made room for the sentence: a budget sized from "A"/"B" alone would cut it.
    bare = engine.generation_budget(tok, [it.answer for it in probe.items])
    assert bare < len(out[0]["answer"]) <= probe.budget(tok)  # one token per character here


def test_cut_at_stop():
    assert engine.cut_at_stop("42\nUser: and 3 + 3?\nAssistant: 6") == "42"
    assert engine.cut_at_stop("Sure.\nHuman: more") == "Sure."
    assert engine.cut_at_stop("line one\nline two") == "line one\nline two"


def test_budget_floor(tok):
    chat = GenerationProbe("g", load_probes(["math"], n=3)[0].items, "math")
    raw = GenerationProbe("g", chat.items, "math", chat=False)
    assert chat.budget(tok) == engine.CHAT_FLOOR_TOKENS > raw.budget(tok)
    assert GenerationProbe("g", chat.items, "math", budget_cap=20).budget(tok) == 20
    saved = tok.chat_template
    try:
        tok.chat_template = saved + "{# <think> #}"  # a reasoning model's template
        assert chat.budget(tok) == chat.budget_cap  # the thinking floor, within the cap
    finally:
        tok.chat_template = saved


BAD = {  # case: (lines, line number in the message, words in the message)
    "unknown_checker": ([{"prompt": "p", "answer": "a", "checker": "fuzzy"}], 1, "one of exact"),
    "checker_type": ([{"checker": 3}, {"prompt": "p", "answer": "a"}], 1, "'checker'"),
    "numeric_answer": ([{"prompt": "p", "answer": "4"}, {"prompt": "q", "answer": "four",
                                                         "checker": "numeric"}], 2, "number"),
    "numeric_default": ([{"checker": "numeric"}, {"prompt": "q", "answer": "four"}], 2, "number"),
    "letter_answer": ([{"prompt": "p", "answer": "Paris", "checker": "choice_letter"}], 1,
                      "one letter"),
    "bad_regex": ([{"prompt": "p", "answer": "(unclosed", "checker": "regex"}], 1, "valid regex"),
    "fewshot_on_line": ([{"prompt": "p", "answer": "a", "fewshot": []}], 1, "first line"),
    "fewshot_type": ([{"fewshot": "Q: 1\nA: 1"}, {"prompt": "p", "answer": "a"}], 1, "list"),
    "fewshot_empty": ([{"fewshot": []}, {"prompt": "p", "answer": "a"}], 1, "non-empty list"),
    "fewshot_example": ([{"fewshot": [{"prompt": "x", "answer": "y"}, {"prompt": "x"}]},
                         {"prompt": "p", "answer": "a"}], 1, "example 2"),
    "settings_late": ([{"prompt": "p", "answer": "a"}, {"checker": "numeric"}], 2, "first line"),
    "checker_for_choice": ([{"checker": "numeric"},
                            {"prompt": "p", "choices": ["a", "b"], "label": 0}], 1, "do not apply"),
    "fewshot_for_text": ([{"fewshot": [{"prompt": "x", "answer": "y"}]}, {"text": "t"}], 1,
                         "do not apply"),
    "checker_on_choice_line": ([{"prompt": "p", "choices": ["a", "b"], "label": 0,
                                 "checker": "exact"}], 1, "unknown key"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_value_names_file_and_line(case, tmp_path):
    assert_names_file_and_line(tmp_path, case, *BAD[case])
