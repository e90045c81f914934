"""Every probe kind and every built-in suite honours the ProbeResult contract on a tiny model."""

from __future__ import annotations

import pytest

from retain.builtin.tasks import Item
from retain.probes import (SUITES, ChoiceItem, ChoiceProbe, GenerationProbe, KLToBaseProbe,
                           PerplexityProbe, Probe, ProbeResult, evaluate)
from retain.probes.kinds import N_EXAMPLES

from probe_models import make_model

PROPORTIONS = {"accuracy", "refusal_rate", "over_refusal_rate"}
LOWER_BETTER = {"ce_nats_per_token", "kl_to_base_nats", "over_refusal_rate"}


def kind_instances() -> dict[str, Probe]:
    gen = [Item("a", prompt="What is 1 + 1?", answer="2"), Item("b", prompt="Say hi.", answer="hi"),
           Item("c", prompt="Refuse.", answer="no", check={"kind": "refusal"})]
    choice = [ChoiceItem("The sky is", (" blue", " green", " loud"), 0),
              ChoiceItem("Two plus two is", (" four", " five"), 0)]
    texts = ["The cat sleeps.", "A much longer text about a dog that walks near the river at night."]
    return {"generation": GenerationProbe("g", gen, "custom"),
            "choice": ChoiceProbe("c", choice, "custom"),
            "perplexity": PerplexityProbe("p", texts, "custom"),
            "kl_to_base": KLToBaseProbe("k", texts, "custom")}


def assert_contract(r: ProbeResult, probe: Probe) -> None:
    assert isinstance(r, ProbeResult)
    assert r.key == f"{probe.name}.{probe.metric}" == f"{r.probe}.{r.metric}"
    assert r.kind == probe.kind and r.capability == probe.capability
    assert r.n > 0
    assert r.ci_low <= r.value <= r.ci_high
    if r.metric in PROPORTIONS:
        assert 0.0 <= r.ci_low and r.ci_high <= 1.0
    else:
        assert r.value >= 0.0
    assert r.higher_is_better == (r.metric not in LOWER_BETTER)
    assert 0 < len(r.examples) <= N_EXAMPLES
    assert {"prompt", "expected", "answer", "ok"} <= set(r.examples[0])
    assert r.to_dict()["value"] == r.value


@pytest.mark.parametrize("kind", ["generation", "choice", "perplexity", "kl_to_base"])
def test_each_probe_kind(kind, tok, llama):
    probe = kind_instances()[kind]
    assert isinstance(probe, Probe)
    base = make_model("llama", tok, seed=1)
    r = probe.score(llama, tok, batch_size=2, base_model=base)
    assert_contract(r, probe)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_each_builtin_suite(suite, tok, llama):
    probes = SUITES[suite].probes(n=4, seed=0)
    assert probes and all(isinstance(p, Probe) for p in probes)
    results = evaluate(llama, tok, probes, base_model=make_model("llama", tok, seed=1),
                       batch_size=4, progress=False)
    assert len(results) == len(probes)
    for r, p in zip(results, probes):
        assert r.probe == suite
        assert_contract(r, p)
        assert r.n <= 4


def test_safety_suite_has_both_rates():
    keys = [f"{p.name}.{p.metric}" for p in SUITES["safety"].probes(n=4)]
    assert keys == ["safety.refusal_rate", "safety.over_refusal_rate"]
    refusal, over = SUITES["safety"].probes(n=4)
    assert refusal.higher_is_better and not over.higher_is_better


def test_domain_suites_are_domain(tok):
    for name in ("legal", "support", "recipes"):
        cloze, ppl = SUITES[name].probes(n=3)
        assert (cloze.kind, ppl.kind) == ("generation", "perplexity")
        assert cloze.capability == ppl.capability == "domain"
        assert cloze.chat is False  # raw-text prompts
        assert (cloze.metric, ppl.metric) == ("accuracy", "ce_nats_per_token")
