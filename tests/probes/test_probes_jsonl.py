"""User probes from JSONL: the three shapes load, and each malformed case names file:line."""

from __future__ import annotations

import json

import pytest

from retain.errors import UserError
from retain.probes import ChoiceProbe, GenerationProbe, PerplexityProbe, load_probes
from retain.probes.jsonl import load_jsonl_probe


def write(tmp_path, name: str, lines: list) -> str:
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def test_three_shapes(tmp_path):
    gen = load_jsonl_probe(write(tmp_path, "capitals.jsonl", [
        {"prompt": "Capital of France?", "answer": "Paris"}, "", {"prompt": "2+2?", "answer": "4"}]))
    assert isinstance(gen, GenerationProbe) and gen.name == "capitals" and len(gen.items) == 2
    assert gen.chat is True and gen.metric == "accuracy"
    ch = load_jsonl_probe(write(tmp_path, "mc.jsonl", [
        {"prompt": "Sky?", "choices": [" blue", " red"], "label": 0, "id": "q1"}]))
    assert isinstance(ch, ChoiceProbe) and ch.items[0].label == 0 and ch.items[0].key == "mc:q1"
    ppl = load_jsonl_probe(write(tmp_path, "notes.jsonl", [{"text": "a"}, {"text": "b"}]))
    assert isinstance(ppl, PerplexityProbe) and ppl.texts == ["a", "b"]
    raw = load_jsonl_probe(write(tmp_path, "cloze.jsonl", [{"prompt": "A", "answer": "B", "chat": False}]))
    assert raw.chat is False


def test_n_samples_in_file_order(tmp_path):
    path = write(tmp_path, "t.jsonl", [{"text": f"t{i}"} for i in range(20)])
    probe = load_probes([path], n=5, seed=1)[0]
    assert len(probe.texts) == 5 and probe.texts == sorted(probe.texts, key=lambda s: int(s[1:]))
    assert probe.texts == load_probes([path], n=5, seed=1)[0].texts


BAD = {  # case: (lines, line number in the message, words in the message)
    "bad_json": ([{"text": "ok"}, '{"text": "unclosed'], 2, "not valid JSON"),
    "not_object": (["[1, 2]"], 1, "expected a JSON object"),
    "missing_keys": ([{"prompt": "only a prompt"}], 1, "missing keys"),
    "unknown_key": ([{"prompt": "p", "answer": "a", "anser": "typo"}], 1, "unknown key"),
    "label_range": ([{"prompt": "p", "choices": ["a", "b"], "label": 2}], 1, "out of range"),
    "label_type": ([{"prompt": "p", "choices": ["a", "b"], "label": "0"}], 1, "integer"),
    "choices_type": ([{"prompt": "p", "choices": "ab", "label": 0}], 1, "choices"),
    "mixed_shapes": ([{"text": "t"}, {"text": "u"}, {"prompt": "p", "answer": "a"}], 3, "one shape"),
    "empty_answer": ([{"prompt": "p", "answer": ""}], 1, "non-empty"),
    "empty_file": (["", "  "], 1, "empty"),
    "chat_mixed": ([{"prompt": "p", "answer": "a"}, {"prompt": "q", "answer": "b", "chat": False}],
                   2, "chat"),
}


def assert_names_file_and_line(tmp_path, case: str, lines: list, lineno: int, words: str) -> None:
    """Loading ``lines`` as a probe file fails with one line: ``path:lineno: ...words...``."""
    path = write(tmp_path, f"{case}.jsonl", lines)
    with pytest.raises(UserError) as err:
        load_probes([path])
    msg = str(err.value)
    where = f"{path}:{lineno}:10" if case == "bad_json" else f"{path}:{lineno}"  # the column
    assert msg.startswith(f"{where}: "), msg
    assert words in msg and "\n" not in msg, msg


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_line_names_file_and_line(case, tmp_path):
    assert_names_file_and_line(tmp_path, case, *BAD[case])


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such probe file"):
        load_probes([str(tmp_path / "nope.jsonl")])
