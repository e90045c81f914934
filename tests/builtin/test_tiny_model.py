"""The shipped built-in model has the capabilities the probes need to measure forgetting: at
least 0.9 on every accuracy-type probe, refusals >= 0.9, over-refusal <= 0.1; its base stage lacks
the chat overlay; and it never learnt the new domains (a short fine-tune learns one, recipes)."""

import pytest

from retain.config import RunConfig
from retain.models import load_model
from retain.probes import evaluate, load_probes
from retain.run import run


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
        for domain in ("legal", "support", "recipes"):
            assert scores[name][f"{domain}.accuracy"] == 0.0, (name, domain)
        # measured: legal 8.14 / 7.94, recipes 8.56 / 8.61 (tiny / tiny-base)
        assert scores[name]["legal.ce_nats_per_token"] > 6.0
        assert scores[name]["recipes.ce_nats_per_token"] > 6.0


def test_a_short_fine_tune_learns_recipes(tmp_path):
    # What the tiny model could not do (above), 40 steps of the demo's settings teach it.
    # Measured: accuracy 0.0 -> 0.83, cross-entropy 8.54 -> 3.84 (the method steps past the
    # 128 characters trained on stay unlearnt); 17-31 s on 2 shared CPU cores.
    res = run(RunConfig(model="tiny", data="builtin:recipes", out=tmp_path / "run", steps=40,
                        lr=1e-3, batch_size=8, seq_len=128, probes=["recipes"], probe_n=24,
                        progress=False))
    got = {c["key"]: (c["before"], c["after"]) for c in res["comparison"]}
    assert got["recipes.accuracy"][0] == 0.0 and got["recipes.accuracy"][1] >= 0.5
    before, after = got["recipes.ce_nats_per_token"]
    assert before > 6.0 and after < before - 3.0
