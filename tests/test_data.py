"""Training data: each JSONL shape masks the right positions, truncation, malformed lines name
file:line, the built-in domain and the reference mixture are seeded and render like the build."""

from __future__ import annotations

import json

import pytest

from retain import formats
from retain import data
from retain.builtin import tasks
from retain.builtin.build import CHAT_MIX, build_tokenizer, render
from retain.errors import UserError

IGNORE = formats.IGNORE


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def trained_text(tok, ex) -> str:
    """The characters that take a loss, '_' elsewhere."""
    return "".join(tok.decode([i]) if lab != IGNORE else "_"
                   for i, lab in zip(ex["input_ids"], ex["labels"]))


def write_jsonl(tmp_path, lines, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return p


def test_text_takes_loss_everywhere_and_ends_with_eos(tok):
    ex = formats.encode_text(tok, "abc", seq_len=64)
    assert ex["input_ids"] == [tok.bos_token_id] + tok("abc", add_special_tokens=False).input_ids \
        + [tok.eos_token_id]
    assert ex["labels"] == ex["input_ids"]


def test_prompt_completion_loss_on_completion_only(tok):
    ex = formats.encode_prompt_completion(tok, "What is 2 + 2?", "4", seq_len=64)
    assert tok.decode(ex["input_ids"]) == "<s><|user|>What is 2 + 2?<|assistant|>4<|end|>"
    assert trained_text(tok, ex).strip("_") == "4<|end|>"


def test_messages_loss_on_assistant_turns_only(tok):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]
    ex = formats.encode_messages(tok, msgs, seq_len=128)
    assert trained_text(tok, ex) == "_" * 5 + "yo<|end|>" + "_" * 7 + "ok<|end|>"
    assert formats.encode_messages(tok, msgs, 128, loss_on="all")["labels"] == ex["input_ids"]


def test_no_chat_template_falls_back_to_the_plain_format(tok):
    plain = build_tokenizer()
    plain.chat_template = None
    ex = formats.encode_prompt_completion(plain, "hi", "yo", seq_len=64)
    assert tok.decode(ex["input_ids"]) == "<s>User: hi\nAssistant: yo<|end|>"
    assert trained_text(plain, ex).strip("_") == " yo<|end|>"


def test_truncation_and_nothing_left_to_learn(tok):
    assert len(formats.encode_text(tok, "x" * 100, seq_len=16)["input_ids"]) == 16
    assert formats.encode_prompt_completion(tok, "p" * 40, "c", seq_len=16) is None


def test_jsonl_all_shapes(tmp_path, tok):
    p = write_jsonl(tmp_path, [{"text": "abc", "id": 7}, "",
                               {"prompt": "q", "completion": "a"},
                               {"messages": [{"role": "user", "content": "u"},
                                             {"role": "assistant", "content": "v"}]}])
    exs = data.load_train_data(str(p), tok, seq_len=64)
    assert len(exs) == 3
    assert [trained_text(tok, e).strip("_") for e in exs] == ["<s>abc<|end|>", "a<|end|>",
                                                             "v<|end|>"]
    sub = data.load_train_data(str(p), tok, seq_len=64, n=2, seed=1)
    assert len(sub) == 2 and sub == data.load_train_data(str(p), tok, seq_len=64, n=2, seed=1)


@pytest.mark.parametrize("bad, msg", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"prompt": "only"}, "needs a completion"),
    ({"text": ""}, "non-empty string"),
    ({"text": 3}, "non-empty string"),
    ({"question": "?"}, "expected"),
    ({"messages": [{"role": "user", "content": "u"}]}, "no assistant turn"),
    ({"messages": [{"role": "robot", "content": "u"}]}, "message 0"),
])
def test_malformed_line_names_file_and_line(tmp_path, tok, bad, msg):
    p = write_jsonl(tmp_path, [{"text": "fine"}, bad])
    with pytest.raises(UserError, match=msg) as e:
        data.load_train_data(str(p), tok, seq_len=64)
    assert str(e.value).startswith(f"{p}:2:2: " if msg == "not valid JSON" else f"{p}:2: ")


def test_missing_and_empty_files(tmp_path, tok):
    with pytest.raises(UserError, match="does not exist"):
        data.load_train_data(str(tmp_path / "none.jsonl"), tok, seq_len=64)
    with pytest.raises(UserError, match="empty"):
        data.load_train_data(str(write_jsonl(tmp_path, [""])), tok, seq_len=64)


def test_builtin_domain_is_seeded_train_split_text(tok):
    a = data.load_train_data("builtin:legal", tok, seq_len=2000, n=5, seed=3)
    assert a == data.load_train_data("builtin:legal", tok, seq_len=2000, n=5, seed=3)
    assert a != data.load_train_data("builtin:legal", tok, seq_len=512, n=5, seed=4)
    first = tasks.items("legal", "train", 5, 3)[0].text
    assert tok.decode(a[0]["input_ids"]) == f"<s>{first}<|end|>"
    assert len(data.load_train_data("builtin:support", tok, seq_len=64, n=3)) == 3
    assert len(data.load_train_data("builtin:recipes", tok, seq_len=64, n=3)) == 3
    with pytest.raises(UserError, match="unknown built-in domain"):
        data.load_train_data("builtin:medical", tok, seq_len=64)
    assert data.domain_of("builtin:legal") == "legal" and data.domain_of("x.jsonl") is None


def test_reference_mixture_renders_like_the_build(tok):
    ref = data.load_reference_data("builtin:retained", tok, seq_len=1000, n=200, seed=0)
    assert len(ref) == 200
    assert all(e["labels"] == e["input_ids"] for e in ref)  # the build trained on every token
    rendered = {tuple(render(it, tok)) for task in CHAT_MIX for it in tasks.items(task, "train",
                                                                                  200, 0)}
    assert all(tuple(e["input_ids"]) in rendered for e in ref)
    assert ref == data.load_reference_data("builtin:retained", tok, seq_len=1000, n=200, seed=0)
    with pytest.raises(UserError, match="unknown reference"):
        data.load_reference_data("builtin:nothing", tok, seq_len=64)
