"""Tiny random models (Llama, GPT-2, Qwen2) on the built-in character tokenizer, for the probe
tests (a uniquely named module: conftest modules of other test folders share the name "conftest")."""

from __future__ import annotations

import torch
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

# A wide init makes next-token distributions peaked, so greedy argmax has no near-ties that
# float noise from padding could flip.
INIT_RANGE = 0.5
MAX_POS = 256


def make_model(arch: str, tok, seed: int = 0):
    """A seeded tiny random ``arch`` ("llama", "gpt2", "qwen2") model for ``tok``, in eval mode."""
    torch.manual_seed(seed)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=MAX_POS,
                          initializer_range=INIT_RANGE, **ids)
        model = LlamaForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=MAX_POS,
                         initializer_range=INIT_RANGE, **ids)
        model = GPT2LMHeadModel(cfg)
    elif arch == "qwen2":
        cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                          max_position_embeddings=MAX_POS, initializer_range=INIT_RANGE, **ids)
        model = Qwen2ForCausalLM(cfg)
    else:
        raise ValueError(arch)
    return model.eval()


def pair_scores(model, tok, contexts, conts) -> list[list[float]]:
    """Each (context, continuation) pair scored as one sequence, one at a time: the reference
    for the shared-context scoring (``loglik.continuation_logprobs``)."""
    from retain.probes import engine

    out = []
    for ctx, cs in zip(contexts, conts):
        row = []
        for c in cs:
            (lp,) = engine.token_logprobs(model, tok, [ctx + c], batch_size=1)
            row.append(float(lp[len(ctx) - 1:len(ctx) - 1 + len(c)].sum()))
        out.append(row)
    return out
