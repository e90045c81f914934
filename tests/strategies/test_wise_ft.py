"""WiSE-FT (wise_ft.py): alpha=0 gives the base bit for bit, alpha=1 the fine-tune, 0.5 the
midpoint; it runs on the plain model a PEFT merge leaves; merging strategies must come last."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.errors import UserError
from retain.models import copy_state
from retain.strategies.base import RunContext
from retain.strategies.wise_ft import WiseFT, check_order


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=64, bos_token_id=1, eos_token_id=2, pad_token_id=0))


def finetuned(model) -> dict[str, torch.Tensor]:
    """Perturb every weight in place (a stand-in for training); returns the perturbed copy."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return copy_state(model)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_alpha_endpoints_and_midpoint(alpha):
    model = tiny_llama()
    base = copy_state(model)
    ft = finetuned(model)
    c = RunContext(tokenizer=None, seed=0, out_dir=None, device=torch.device("cpu"), base_state=base)
    out = WiseFT(WiseFT.Config(alpha=alpha)).finalize(model, c)
    for n, p in out.named_parameters():
        if alpha == 0.0:
            assert torch.equal(p, base[n]), n
        elif alpha == 1.0:
            assert torch.equal(p, ft[n]), n
        else:
            assert torch.allclose(p, (base[n] + ft[n]) / 2, atol=1e-6), n
    assert c.info["wise_ft"]["alpha"] == alpha
    assert c.info["wise_ft"]["params"] == sum(p.numel() for p in model.parameters())


def test_after_lora_merge_the_model_is_plain_and_interpolated():
    from retain.strategies.lora import LoRA

    model = tiny_llama()
    base = copy_state(model)
    c = RunContext(tokenizer=None, seed=0, out_dir=None, device=torch.device("cpu"), base_state=base)
    lora = LoRA()
    wrapped = lora.prepare(model, c)
    with torch.no_grad():  # a trained adapter: B != 0
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    with pytest.raises(UserError, match="plain model"):
        WiseFT().finalize(wrapped, c)
    merged = lora.finalize(wrapped, c)
    ft = copy_state(merged)
    out = WiseFT(WiseFT.Config(alpha=0.25)).finalize(merged, c)
    assert type(out) is LlamaForCausalLM
    changed = 0
    for n, p in out.named_parameters():
        assert torch.allclose(p, 0.75 * base[n] + 0.25 * ft[n], atol=1e-6), n
        changed += not torch.equal(base[n], ft[n])
    assert changed > 0


def test_config_and_shape_mistakes():
    with pytest.raises(ValueError):
        WiseFT.Config(alpha=1.5)
    model = tiny_llama()
    base = copy_state(model)
    base["model.norm.weight"] = torch.ones(7)
    c = RunContext(tokenizer=None, seed=0, out_dir=None, device=torch.device("cpu"), base_state=base)
    with pytest.raises(UserError, match="model.norm.weight"):
        WiseFT().finalize(model, c)


def test_merging_must_come_last_and_needs_mergeable_peft():
    from retain.strategies.lora import LoRA
    from retain.strategies.peft_methods import PromptTuning
    from retain.strategies.replay import Replay

    check_order([LoRA(), Replay(), WiseFT()])  # fine
    with pytest.raises(UserError, match="listed last"):
        check_order([LoRA(), WiseFT(), Replay()])
    with pytest.raises(UserError, match="prompt_tuning"):
        check_order([PromptTuning(), WiseFT()])
