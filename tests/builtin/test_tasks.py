"""The built-in task generators: probe items are held out from training, splits are stable,
and the new domains never appear in the built-in model's training mixture."""

import pytest

from retain.builtin import build, tasks


@pytest.mark.parametrize("task", tasks.TASKS)
def test_probe_items_are_held_out(task):
    probe = {it.key for it in tasks.items(task, "probe", 200, seed=123)}
    train = {it.key for it in tasks.items(task, "train", 3000, seed=0)}
    assert probe, task
    assert not probe & train


def test_split_is_stable_and_about_one_in_five():
    keys = [f"k{i}" for i in range(5000)]
    share = sum(tasks.split_of(k) == "probe" for k in keys) / len(keys)
    assert 0.17 < share < 0.23
    assert tasks.split_of("math:3+4") == tasks.split_of("math:3+4")


def test_items_are_seeded():
    a = tasks.items("code", "train", 20, seed=1)
    b = tasks.items("code", "train", 20, seed=1)
    c = tasks.items("code", "train", 20, seed=2)
    assert a == b and a != c


def test_answers_are_right():
    for it in tasks.items("math", "probe", 50, seed=0):
        nums = [int(t.strip("?.")) for t in it.prompt.split() if t.strip("?.").isdigit()]
        assert int(it.answer) == sum(nums)
    assert tasks.translate("cat", "red", "French") == "le chat rouge"
    assert tasks.translate("house", "white", "French") == "la maison blanche"
    assert tasks.translate("cat", "red", "German") == "die rote Katze"
    assert tasks.translate("book", "green", "Spanish") == "el libro verde"


def test_new_domains_are_not_in_the_training_mixture():
    mixed = set(build.BASE_MIX) | set(build.CHAT_MIX)
    assert not mixed & {"legal", "legal_cloze", "support", "support_cloze"}


def test_tokenizer_round_trips_every_task():
    tok = build.build_tokenizer()
    for task in tasks.TASKS:
        for it in tasks.items(task, "train", 30, seed=0):
            for s in (it.prompt, it.answer, it.text):
                if s:
                    ids = tok(s, add_special_tokens=False).input_ids
                    assert tok.unk_token_id not in ids, (task, s)
                    assert tok.decode(ids) == s
