"""Fixtures shared by the top-level tests: a tiny random Llama saved as a model folder."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A 2-layer, 32-wide Llama with the built-in tokenizer, saved with safetensors (seeded)."""
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64,
                                         max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                                         eos_token_id=tok.eos_token_id,
                                         pad_token_id=tok.pad_token_id))
    path = tmp_path_factory.mktemp("models") / "llama"
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
