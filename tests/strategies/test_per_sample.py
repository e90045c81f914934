"""The module-by-module per-sample path (per_sample.py) that the Fisher and MAS take: equal to
one backward per sample, for tied and untied embeddings, a padding row and LoRA; it refuses what
it cannot do exactly (the whole-model vmap takes over, with the same values)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from retain.strategies import fisher as fs
from retain.strategies import per_sample as ps

from strategy_models import tiny_llama  # a helper module beside these tests
from test_fisher import assert_importance_close, reference_examples, slow_stat


def _module_path(model, examples, objective="nll", chunk=4):
    """The module path alone (raises ``Unsupported`` instead of falling back)."""
    model.eval()
    obj = ((lambda lg, y, m: fs.token_nll(lg, y)) if objective == "nll"
           else (lambda lg, y, m: fs.logit_sq_norm(lg, m)))
    reduce = torch.Tensor.square_ if objective == "nll" else torch.Tensor.abs_
    chunks = (fs.pad_right(c, torch.device("cpu")) for c in fs._chunks(examples, chunk))
    total = ps.per_sample_totals(model, obj, chunks, reduce, fs.trainable_parameters(model))
    return {k: v / len(examples) for k, v in total.items()}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("objective", ["nll", "mas"])
def test_module_path_equals_one_backward_per_sample(tied, objective):
    model = tiny_llama()
    if tied:  # one parameter used by the embedding and the LM head: summed, then squared
        model.lm_head.weight = model.model.embed_tokens.weight
    examples = reference_examples(9)
    examples[0]["input_ids"][2] = 0  # the padding row (pad_token_id 0): its gradient is zero
    got = _module_path(model, examples, objective)
    reduce = torch.square if objective == "nll" else torch.abs
    assert_importance_close(got, slow_stat(model, examples, objective, reduce), rtol=1e-5)
    if not tied:  # (tied, the LM head's row 0 has a gradient)
        assert float(got["model.embed_tokens.weight"][0].abs().max()) == 0.0


def test_module_path_with_lora():
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                    init_lora_weights=False))
    examples = reference_examples(6)
    got = _module_path(model, examples)
    assert set(got) == set(fs.trainable_parameters(model)) and all("lora_" in k for k in got)
    assert_importance_close(got, slow_stat(model, examples), rtol=1e-5)


class _Sneaky(torch.nn.Module):
    """A parameter also used outside its module's forward: per-sample gradients by module
    would miss that use."""

    def __init__(self):
        super().__init__()
        self.inner = tiny_llama()
        self.config = self.inner.config

    def forward(self, input_ids):
        out = self.inner(input_ids=input_ids)
        out.logits = out.logits + self.inner.lm_head.weight.sum(-1)  # (V,), beside the module
        return out


def test_a_use_outside_the_module_is_caught_and_the_vmap_path_takes_over():
    model, examples = _Sneaky(), reference_examples(6)
    with pytest.raises(ps.Unsupported, match="do not add up"):
        _module_path(model, examples)
    got = fs.estimate_fisher(model, examples, "empirical", chunk_size=3)  # falls back
    assert_importance_close(got, slow_stat(model, fs.select_examples(examples, None, 0)))


def test_an_input_shared_by_the_batch_is_refused():
    """GPT-2 adds position embeddings of shape (1, T): not one row per sample."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64,
                                       n_positions=32))
    with pytest.raises(ps.Unsupported, match="one row per sample"):
        _module_path(model, reference_examples(4))
