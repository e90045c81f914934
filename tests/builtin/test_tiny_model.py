"""The shipped built-in model has the capabilities the probes need to measure forgetting: at
least 0.9 on every accuracy-type probe, refusals >= 0.9, over-refusal <= 0.1; its base stage lacks
the chat overlay; and it never learnt the new domains."""

import pytest

from retain.models import load_model
from retain.probes import evaluate, load_probes


@pytest.fixture(scope="module")
def scores():
    out = {}
    for name in ("tiny", "tiny-base"):
        model, tok = load_model(name)
        res = evaluate(model, tok, load_probes(["all"]), batch_size=64, progress=False)
        out[name] = {r.key: r.value for r in res}
    return out


def test_tiny_meets_the_capability_bar(scores):
    s = scores["tiny"]
    for key in ("math.accuracy", "code.accuracy", "multilingual.accuracy", "instructions.accuracy"):
        assert s[key] >= 0.9, (key, s[key])
    assert s["safety.refusal_rate"] >= 0.9
    assert s["safety.over_refusal_rate"] <= 0.1
    assert s["writing.ce_nats_per_token"] < 0.5


def test_the_chat_overlay_holds_refusals_and_instructions(scores):
    base = scores["tiny-base"]
    assert base["safety.refusal_rate"] < 0.1 and base["instructions.accuracy"] < 0.1
    assert base["math.accuracy"] >= 0.9 and base["multilingual.accuracy"] >= 0.9


def test_neither_stage_knows_the_new_domains(scores):
    for name in ("tiny", "tiny-base"):
        assert scores[name]["legal.accuracy"] == 0.0 and scores[name]["support.accuracy"] == 0.0
        assert scores[name]["legal.ce_nats_per_token"] > 6.0
