"""LoRA: base weights stay bit-identical while training, few parameters train, and finalize
returns a plain model whose weights are exactly base + scale * B @ A (Llama and GPT-2 Conv1D)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer
from retain.data import load_train_data
from retain.metrics import lora_delta, weight_drift
from retain.models import copy_state
from retain.strategies import RunContext, build_strategies
from retain.train import TrainConfig, train

IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def llama(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64, **IDS))


def ctx_for(model, tok):
    return RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                      base_state=copy_state(model))


def fit(model, tok, steps=3):
    data = load_train_data("builtin:legal", tok, seq_len=32, n=8)
    train(model, data, pad_id=0, progress=False,
          config=TrainConfig(lr=1e-2, steps=steps, batch_size=4))


def test_base_bit_identical_small_trainable_count_then_plain_merged_model(tok):
    model = llama(tok)
    base = copy_state(model)
    [lora] = build_strategies([{"name": "lora", "r": 2, "alpha": 4}])
    ctx = ctx_for(model, tok)
    peft_model = lora.prepare(model, ctx)
    # all-linear on Llama: q,k,v,o (32x32), gate/up (32->64), down (64->32), per layer, r=2
    per_layer = 4 * 2 * (32 + 32) + 2 * 2 * (32 + 64) + 2 * (64 + 32)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == ctx.info["lora"]["trainable_params"] == 2 * per_layer
    assert trainable < 0.1 * sum(base[n].numel() for n in base)
    assert "lm_head" not in ctx.info["lora"]["target_modules"]
    fit(peft_model, tok)

    inner = peft_model.base_model.model
    for name, w0 in base.items():
        here = name.replace(".weight", ".base_layer.weight") if "proj" in name else name
        assert torch.equal(inner.get_parameter(here), w0), name  # frozen: bit-identical
    q = inner.model.layers[0].self_attn.q_proj
    expected = base["model.layers.0.self_attn.q_proj.weight"].double() + lora_delta(
        q.lora_A["default"].weight, q.lora_B["default"].weight, q.scaling["default"])
    assert q.lora_B["default"].weight.abs().sum() > 0  # B starts at 0: it trained

    merged = lora.finalize(peft_model, ctx)
    assert type(merged) is LlamaForCausalLM
    assert set(dict(merged.named_parameters())) == set(base)
    assert torch.allclose(merged.model.layers[0].self_attn.q_proj.weight.double(), expected,
                          atol=1e-6)
    drift = weight_drift(base, dict(merged.named_parameters()))
    assert drift["overall"]["l2"] > 0
    assert drift["per_tensor"]["model.embed_tokens.weight"]["l2"] == 0.0  # not a LoRA target


def test_gpt2_conv1d_and_options(tok):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4,
                                       n_positions=64, **IDS))
    base = copy_state(model)
    [lora] = build_strategies([{"name": "lora", "r": 2, "use_rslora": True,
                                "target_modules": ["c_attn"]}])
    ctx = ctx_for(model, tok)
    m = lora.prepare(model, ctx)
    assert ctx.info["lora"]["target_modules"] == ["c_attn"]
    assert ctx.info["lora"]["trainable_params"] == 2 * 2 * (32 + 96)
    layer = m.base_model.model.transformer.h[0].attn.c_attn
    assert layer.scaling["default"] == pytest.approx(16 / 2 ** 0.5)  # rsLoRA: alpha / sqrt(r)
    fit(m, tok, steps=2)
    merged = lora.finalize(m, ctx)
    assert type(merged) is GPT2LMHeadModel
    d = weight_drift(base, dict(merged.named_parameters()))
    moved = {n for n, e in d["per_tensor"].items() if e["l2"] > 0}
    assert moved == {f"transformer.h.{i}.attn.c_attn.weight" for i in range(2)}


def test_dora_runs_and_merges(tok):
    model = llama(tok)
    [lora] = build_strategies([{"name": "lora", "r": 2, "use_dora": True,
                                "target_modules": ["q_proj", "v_proj"]}])
    ctx = ctx_for(model, tok)
    m = lora.prepare(model, ctx)
    fit(m, tok, steps=2)
    assert type(lora.finalize(m, ctx)) is LlamaForCausalLM
