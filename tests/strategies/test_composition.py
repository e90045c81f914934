"""Composition: LoRA + replay + WiSE-FT through the real run recipe (``retain.run.run``) on a tiny
model. Recording wrappers check the documented hook order (prepare, train_data, penalty each
step, finalize: each in list order) and the effects: replay counts in the results, LoRA merged
before WiSE-FT, the final weights the midpoint of the base and the merged fine-tune."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import retain.models
import retain.strategies
from retain.builtin.build import build_tokenizer
from retain.errors import UserError
from retain.models import copy_state
from retain.strategies import build_strategies
from retain.strategies.base import Strategy


class Recording(Strategy):
    """Delegates every hook to a real strategy and logs ``(name, hook)``; keeps the weights that
    finalize received and returned."""

    def __init__(self, inner: Strategy, log: list):
        self.inner, self.log = inner, log
        self.name, self.family, self.citation = inner.name, inner.family, inner.citation
        self.config = inner.config
        self.final_in = self.final_out = None
        self.final_in_type = None

    def prepare(self, model, ctx):
        self.log.append((self.name, "prepare"))
        return self.inner.prepare(model, ctx)

    def train_data(self, data, ctx):
        self.log.append((self.name, "train_data"))
        return self.inner.train_data(data, ctx)

    def penalty(self, model, batch, outputs=None):
        self.log.append((self.name, "penalty"))
        return self.inner.penalty(model, batch, outputs=outputs)

    def finalize(self, model, ctx):
        self.log.append((self.name, "finalize"))
        self.final_in_type, self.final_in = type(model), copy_state(model)
        model = self.inner.finalize(model, ctx)
        self.final_out = copy_state(model)
        return model


def tiny(tok) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, max_position_embeddings=256)).eval()


def test_lora_replay_wise_ft_in_documented_order(monkeypatch, tmp_path):
    from retain.config import RunConfig
    from retain.run import run

    tok = build_tokenizer()
    base = copy_state(tiny(tok))
    monkeypatch.setattr(retain.models, "load_model", lambda *a, **k: (tiny(tok), tok))
    log: list = []
    made: list[Recording] = []

    def recording_build(specs):  # called by the config's validation, then by the run
        made[:] = [Recording(s, log) for s in build_strategies(specs)]
        return list(made)

    monkeypatch.setattr(retain.strategies, "build_strategies", recording_build)
    steps = 3
    config = RunConfig(
        model="tiny", device="cpu", data="builtin:legal", data_n=30, reference_n=40, seq_len=96,
        strategies=[{"name": "lora", "r": 4}, {"name": "replay", "fraction": 0.25},
                    {"name": "wise_ft", "alpha": 0.5}],
        lr=1e-2, steps=steps, batch_size=4, warmup_steps=0, probes=["math"], probe_n=2,
        out=tmp_path / "run", progress=False)
    results = run(config)

    names = ["lora", "replay", "wise_ft"]
    expected = ([(n, "prepare") for n in names] + [(n, "train_data") for n in names]
                + [(n, "penalty") for n in names] * steps + [(n, "finalize") for n in names])
    assert log == expected

    # Replay's effect: 30 new + 10 replay examples, reported.
    info = results["strategy_info"]["replay"]
    assert info["new_examples"] == 30 and info["replay_examples"] == 10
    assert results["data"]["train_examples"] == 40

    # WiSE-FT got the plain model LoRA's merge left, and returned the midpoint with the base.
    lora, _, wise = made
    assert lora.final_in_type.__name__.startswith("Peft") and wise.final_in_type is LlamaForCausalLM
    merged = wise.final_in
    assert merged.keys() == lora.final_out.keys() == base.keys()
    assert all(torch.equal(merged[k], lora.final_out[k]) for k in merged)
    assert any(not torch.equal(merged[k], base[k]) for k in base)  # LoRA did train
    for k, v in wise.final_out.items():
        assert torch.allclose(v, (base[k] + merged[k]) / 2, atol=1e-6), k


def test_incompatible_combinations_fail_at_config_time():
    with pytest.raises(UserError, match="listed last"):
        build_strategies([{"name": "wise_ft"}, "lora"])
    with pytest.raises(UserError, match="pick one"):
        build_strategies(["prefix_tuning", "wise_ft"])
    with pytest.raises(UserError, match="pick one"):
        build_strategies(["lora", "ia3"])
    with pytest.raises(UserError, match="pick one"):
        build_strategies([{"name": "freeze", "top_blocks": 1}, "lora"])
    build_strategies(["ewc", "replay"])
    build_strategies(["ia3", "self_replay", "wise_ft"])
