"""The non-LoRA PEFT methods (peft_methods.py), one parametrized matrix: each leaves the base
weights bit-identical after a training step, trains few parameters, reports the count, merges
(or keeps the PeftModel for prompt-based methods, which must still generate)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from retain.errors import UserError
from retain.strategies import peft_methods as pm
from retain.strategies.base import RunContext

VOCAB = 64


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0))


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
                                      pad_token_id=0))


class CharTok:
    """Just enough tokenizer for prompt tuning's text init: one id per character."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3 + ord(ch) % (VOCAB - 3) for ch in text]}


def ctx() -> RunContext:
    return RunContext(tokenizer=CharTok(), seed=0, out_dir=None, device=torch.device("cpu"))


def train_step(model) -> None:
    ids = torch.randint(3, VOCAB, (2, 8), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()


METHODS = [pm.IA3, pm.PromptTuning, pm.PrefixTuning, pm.LoHa, pm.LoKr, pm.OSF]


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_base_weights_bit_identical_and_few_trainable(cls):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    total = sum(p.numel() for p in model.parameters())
    c = ctx()
    wrapped = cls().prepare(model, c)
    trainable = c.info["trainable_params"]
    assert trainable == sum(p.numel() for p in wrapped.parameters() if p.requires_grad) > 0
    # On a 25k-parameter model, default ranks/lengths are a sizeable share (LoHa r=8: 16%);
    # OSF trains the lower half of each weight's spectrum: fewer than all, but not "few".
    assert trainable < (0.75 if cls is pm.OSF else 0.2) * total
    adapters = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    train_step(wrapped)
    assert any(not torch.equal(adapters[n], p) for n, p in wrapped.named_parameters()
               if p.requires_grad), "the step changed no adapter parameter"
    base = wrapped.get_base_model().state_dict()
    for k, v in before.items():  # peft names base weights ...base_layer.weight: match the suffix
        hits = [bk for bk in base if bk == k or bk.replace(".base_layer", "") == k]
        assert hits and all(torch.equal(base[h], v) for h in hits), k


@pytest.mark.parametrize("cls,expected", [
    (pm.IA3, 2 * (32 + 32 + 64)),  # per layer: k and v output scales, down_proj input scale
    (pm.PromptTuning, 20 * 32),  # virtual tokens x hidden
    (pm.PrefixTuning, 20 * 2 * 2 * 32),  # virtual tokens x layers x (key, value) x hidden
    (pm.LoHa, 2 * 2 * 2 * (32 * 8 + 8 * 32)),  # layers x (q, v) x 2 products x (out r + r in)
], ids=lambda c: getattr(c, "name", ""))
def test_trainable_counts_match_the_method(cls, expected):
    c = ctx()
    cls().prepare(tiny_llama(), c)
    assert c.info["trainable_params"] == c.info[cls.name]["trainable_params"] == expected


@pytest.mark.parametrize("cls", [pm.IA3, pm.LoHa, pm.LoKr, pm.OSF], ids=lambda c: c.name)
def test_finalize_merges_into_plain_model(cls):
    c = ctx()
    s = cls()
    wrapped = s.prepare(tiny_llama(), c)
    train_step(wrapped)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    wrapped.eval()
    with torch.no_grad():
        want = wrapped(input_ids=ids).logits
    merged = s.finalize(wrapped, c)
    assert type(merged) is LlamaForCausalLM and c.info[cls.name]["merged"] is True
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, tiny_llama()(input_ids=ids).logits, atol=1e-4)  # it learnt


@pytest.mark.parametrize("cls", [pm.PromptTuning, pm.PrefixTuning], ids=lambda c: c.name)
def test_prompt_methods_keep_peft_model_and_generate(cls):
    from peft import PeftModel

    c = ctx()
    s = cls(cls.Config(num_virtual_tokens=4))
    wrapped = s.prepare(tiny_llama(), c)
    train_step(wrapped)
    out_model = s.finalize(wrapped, c)
    assert isinstance(out_model, PeftModel) and c.info[cls.name]["merged"] is False
    ids = torch.tensor([[1, 5, 9, 13], [1, 7, 11, 15]])
    out = out_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5,
                             do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9) and torch.equal(out[:, :4], ids)
    # The virtual tokens take part: the answer differs from the bare base model's, given a
    # prompt large enough to matter.
    with torch.no_grad():
        for p in out_model.parameters():
            if p.requires_grad:
                p.mul_(50)
        with_prompt = out_model(input_ids=ids).logits[:, -ids.shape[1]:]  # drop virtual positions
        with out_model.disable_adapter():
            without = out_model(input_ids=ids).logits
    assert not torch.allclose(with_prompt, without, atol=1e-3)


def test_prompt_tuning_text_init_copies_token_embeddings():
    c = ctx()
    wrapped = pm.PromptTuning(pm.PromptTuning.Config(num_virtual_tokens=5, init="text",
                                                     init_text="ab")).prepare(tiny_llama(), c)
    table = wrapped.prompt_encoder["default"].embedding.weight
    words = wrapped.get_input_embeddings().weight
    ids = [CharTok()("ab")["input_ids"][i % 2] for i in range(5)]
    assert torch.equal(table.detach(), words[ids].detach())
    with pytest.raises(UserError, match="init_text"):
        pm.PromptTuning(pm.PromptTuning.Config(init="text")).prepare(tiny_llama(), ctx())


def test_prompt_init_is_seeded():
    a = pm.PromptTuning(pm.PromptTuning.Config(num_virtual_tokens=3)).prepare(tiny_llama(), ctx())
    b = pm.PromptTuning(pm.PromptTuning.Config(num_virtual_tokens=3)).prepare(tiny_llama(), ctx())
    assert torch.equal(a.prompt_encoder["default"].embedding.weight,
                       b.prompt_encoder["default"].embedding.weight)


@pytest.mark.parametrize("cls", [pm.LoHa, pm.LoKr, pm.OSF], ids=lambda c: c.name)
def test_linear_only_methods_refuse_gpt2_conv1d(cls):
    with pytest.raises(UserError, match="Conv1D"):
        cls().prepare(tiny_gpt2(), ctx())
    with pytest.raises(UserError, match="match no module"):
        cls(cls.Config(target_modules=["nonexistent"])).prepare(tiny_llama(), ctx())


def test_gpt2_ia3_and_prompt_tuning_work():
    for cls in (pm.IA3, pm.PromptTuning):
        model = tiny_gpt2()
        c = ctx()
        wrapped = cls().prepare(model, c)
        train_step(wrapped)
        assert 0 < c.info["trainable_params"] < 2000


def test_defaults_follow_architecture():
    c = ctx()
    pm.LoHa().prepare(tiny_llama(), c)
    assert c.info["loha"]["target_modules"] == ["q_proj", "v_proj"]
    c = ctx()
    pm.IA3().prepare(tiny_gpt2(), c)
    assert "c_attn" in c.info["ia3"]["target_modules"]


def test_wrapping_twice_and_config_typos_fail():
    wrapped = pm.IA3().prepare(tiny_llama(), ctx())
    with pytest.raises(UserError, match="already wrapped"):
        pm.LoHa().prepare(wrapped, ctx())
    with pytest.raises(ValueError):
        pm.LoHa.Config(rank=4)  # extra="forbid": a typo is an error
    with pytest.raises(ValueError):
        pm.PromptTuning.Config(num_virtual_tokens=0)


def test_every_method_cites_a_paper():
    for cls in METHODS:
        assert cls.family == "peft" and "arxiv.org/abs/" in cls.citation and cls.__doc__
