"""Built-in suites: held out from training, registry and groups, load_probes and evaluate."""

from __future__ import annotations

import pytest

from retain.builtin.tasks import TASKS, items
from retain.errors import UserError
from retain.probes import GROUPS, SUITES, evaluate, list_suites, load_probes
from retain.probes.suites import RETAINED, probe_items

from probe_models import make_model


@pytest.mark.parametrize("task", TASKS)
def test_probe_items_are_held_out(task):
    probe_keys = {it.key for it in probe_items(task, 200, seed=0)}
    train_keys = {it.key for it in items(task, "train", 5000, seed=0)}
    assert probe_keys and not probe_keys & train_keys


def test_probe_items_distinct_and_seeded():
    a = probe_items("code", 50, seed=0)
    assert len({(it.prompt, it.answer) for it in a}) == len(a) == 50
    assert a == probe_items("code", 50, seed=0) and a != probe_items("code", 50, seed=1)
    benign = probe_items("safety_benign", 500, seed=0)  # a small space: capped, no repeats
    assert 0 < len(benign) < 500 and len({it.prompt for it in benign}) == len(benign)


def test_registry_and_groups():
    assert GROUPS["retained"] == RETAINED == ("math", "code", "writing", "multilingual", "safety",
                                              "instructions")
    assert set(GROUPS["all"]) == set(RETAINED) | {"legal", "support", "recipes"}
    listing = list_suites()
    assert set(SUITES) | set(GROUPS) | {"humaneval", "lm-eval:TASK"} == set(listing)
    assert all(d and "\n" not in d for d in listing.values())


def test_load_probes_expands_groups_once():
    probes = load_probes(["retained", "math", "legal"], n=3)
    names = [p.name for p in probes]
    assert names.count("math") == 1 and names.count("safety") == 2 and names.count("legal") == 2
    assert {p.name for p in probes} == set(RETAINED) | {"legal"}
    assert all(len(getattr(p, "items", getattr(p, "texts", None))) == 3 for p in probes
               if p.metric != "over_refusal_rate")


def test_default_n():
    (math,) = load_probes(["math"])
    assert 100 <= len(math.items) <= 200


def test_unknown_suite_lists_known():
    with pytest.raises(UserError, match="unknown probe suite 'maths'.*math.*retained"):
        load_probes(["maths"])


def test_evaluate_needs_base_for_drift_and_restores_mode(tok):
    model = make_model("llama", tok).train()
    probes = load_probes(["drift", "math"], n=2)
    with pytest.raises(UserError, match="need a base model"):
        evaluate(model, tok, probes)
    results = evaluate(model, tok, probes, base_model=model, progress=True)
    assert [r.key for r in results] == ["drift.kl_to_base_nats", "math.accuracy"]
    assert results[0].value == pytest.approx(0.0, abs=1e-6)
    assert model.training
