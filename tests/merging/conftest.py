"""Tiny saved models for the merging tests: a random Llama base with the built-in tokenizer and
two "fine-tunes" made by perturbing its weights; built once per session (about a second)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer


def tiny_llama(tok) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, tie_word_embeddings=False,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.02):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in state.items()}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer()
    model = tiny_llama(tok)
    paths = {"base": root / "base", "ft1": root / "ft1", "ft2": root / "ft2",
             "ft1_sharded": root / "ft1_sharded"}
    model.save_pretrained(paths["base"])
    tok.save_pretrained(paths["base"])
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for name, seed in (("ft1", 1), ("ft2", 2)):
        model.load_state_dict(perturbed(base_state, seed))
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    model.load_state_dict(perturbed(base_state, 1))
    model.save_pretrained(paths["ft1_sharded"], max_shard_size="40KB")
    tok.save_pretrained(paths["ft1_sharded"])
    return paths
