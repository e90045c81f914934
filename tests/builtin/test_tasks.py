"""The built-in task generators: probe items are held out from training, splits are stable,
and the new domains never appear in the built-in model's training mixture."""

import re

import pytest

from retain.builtin import build, tasks
from retain.data import BUILTIN_DOMAINS


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
    assert BUILTIN_DOMAINS == ("legal", "support", "recipes")
    assert not mixed & {t for d in BUILTIN_DOMAINS for t in (d, f"{d}_cloze")}
    assert {t for d in BUILTIN_DOMAINS for t in (d, f"{d}_cloze")} <= set(tasks.TASKS)


# Words too common to tell two domains apart.
_FUNCTION_WORDS = {"a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "by",
                   "at", "is", "it", "its", "then", "until", "your", "our", "we", "us", "my",
                   "this", "any", "all", "be", "from", "into", "over", "not", "will", "may"}


def _words(*task_names: str) -> set[str]:
    out = set()
    for task in task_names:
        for split in ("train", "probe"):
            for it in tasks.items(task, split, 300, seed=0):
                for s in (it.text, it.prompt, it.answer):
                    out |= set(re.findall(r"[a-z]+", (s or "").lower()))
    return out - _FUNCTION_WORDS


def test_recipes_share_little_vocabulary_with_legal_and_support():
    others = _words("legal", "legal_cloze", "support", "support_cloze")
    recipes = _words("recipes", "recipes_cloze")
    assert len(recipes) > 100
    # Measured: 0 of its ~130 distinct words occur in contracts or tickets; a copy of legal: all.
    assert len(recipes & others) / len(recipes) < 0.05, sorted(recipes & others)
    legal = _words("legal", "legal_cloze")
    assert len(legal & others) / len(legal) == 1.0


def test_recipes_are_seeded_and_held_out_by_text():
    for task in ("recipes", "recipes_cloze"):
        a, b = tasks.items(task, "train", 30, seed=1), tasks.items(task, "train", 30, seed=1)
        assert a == b and a != tasks.items(task, "train", 30, seed=2)
    train = {it.text for it in tasks.items("recipes", "train", 3000, seed=0)}
    probe = {it.text for it in tasks.items("recipes", "probe", 300, seed=0)}
    assert len(probe) == 300 and not probe & train
    train_prompts = {it.prompt for it in tasks.items("recipes_cloze", "train", 3000, seed=0)}
    assert not train_prompts & {it.prompt for it in tasks.items("recipes_cloze", "probe", 300, 0)}


def test_recipe_cloze_asks_what_the_training_text_teaches():
    docs = [it.text for it in tasks.items("recipes", "train", 500, seed=0)]
    # The first ingredient line ends within 128 characters (the demo's seq_len): a fine-tune
    # at that length sees every ingredient's preparation (ingredients are shuffled).
    assert max(d.index("\n", d.index("\n- ") + 1) for d in docs) < 128
    preps = {name: prep for _, _, name, prep in tasks.RECIPE_INGREDIENTS}
    for it in tasks.items("recipes_cloze", "probe", 100, seed=0):
        [name] = [n for n in preps if it.prompt.endswith(f" {n},")]
        assert it.answer == " " + preps[name]
        assert any(f"{name},{it.answer}\n" in d for d in docs)


def test_tokenizer_round_trips_every_task():
    tok = build.build_tokenizer()
    for task in tasks.TASKS:
        for it in tasks.items(task, "train", 30, seed=0):
            for s in (it.prompt, it.answer, it.text):
                if s:
                    ids = tok(s, add_special_tokens=False).input_ids
                    assert tok.unk_token_id not in ids, (task, s)
                    assert tok.decode(ids) == s
