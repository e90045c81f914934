"""Layer freezing (freeze.py): only the chosen blocks or name patterns train; every other weight
is bit-identical after an optimizer step, on Llama, GPT-2 and Qwen2 module naming."""

from __future__ import annotations

import pytest
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from retain.errors import UserError
from retain.strategies.base import RunContext
from retain.strategies.freeze import Freeze, find_blocks

VOCAB = 64
SPECIAL = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def llama():
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                        intermediate_size=64, **SPECIAL))


def gpt2():
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, n_positions=64, **SPECIAL))


def qwen2():
    return Qwen2ForCausalLM(Qwen2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, **SPECIAL))


ARCHS = {"llama": (llama, "model.layers"), "gpt2": (gpt2, "transformer.h"),
         "qwen2": (qwen2, "model.layers")}


def ctx() -> RunContext:
    return RunContext(tokenizer=None, seed=0, out_dir=None, device=torch.device("cpu"))


def step(model) -> None:
    ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2,
                            weight_decay=0.1)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


@pytest.mark.parametrize("arch", ARCHS)
def test_top_block_trains_and_nothing_else_moves(arch):
    make, block_list = ARCHS[arch]
    torch.manual_seed(0)
    model = make()
    assert find_blocks(model)[0] == block_list
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    c = ctx()
    model = Freeze(Freeze.Config(top_blocks=1)).prepare(model, c)
    step(model)
    top = f"{block_list}.2."
    for n, p in model.named_parameters():
        if n.startswith(top):
            assert p.requires_grad and not torch.equal(p, before[n]), n
        else:
            assert not p.requires_grad and torch.equal(p, before[n]), n
    want = sum(p.numel() for n, p in model.named_parameters() if n.startswith(top))
    assert c.info["trainable_params"] == want == c.info["freeze"]["trainable_params"]


def test_patterns_and_blocks_combine():
    torch.manual_seed(0)
    model = llama()
    model = Freeze(Freeze.Config(top_blocks=2, modules=[r"^model\.norm\."])).prepare(model, ctx())
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "model.norm.weight" in trained
    assert any(n.startswith("model.layers.1.") for n in trained)
    assert not any(n.startswith("model.layers.0.") or "embed" in n for n in trained)


def test_tied_head_answers_to_its_own_name():
    torch.manual_seed(0)
    model = gpt2()  # lm_head.weight is tied to transformer.wte.weight
    model = Freeze(Freeze.Config(modules=["lm_head"])).prepare(model, ctx())
    assert model.lm_head.weight.requires_grad and model.transformer.wte.weight.requires_grad
    assert not model.transformer.h[0].attn.c_attn.weight.requires_grad


def test_mistakes_are_user_errors():
    with pytest.raises(ValueError, match="top_blocks or modules"):
        Freeze.Config()
    with pytest.raises(ValueError, match="regular expression"):
        Freeze.Config(modules=["(unclosed"])
    with pytest.raises(UserError, match="matches no parameter"):
        Freeze(Freeze.Config(modules=["no_such_layer"])).prepare(llama(), ctx())
    with pytest.raises(UserError, match="has 3 blocks"):
        Freeze(Freeze.Config(top_blocks=4)).prepare(llama(), ctx())
