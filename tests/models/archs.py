"""Tiny random-weight configs of the causal-LM architectures retain is tested on (the support
matrix, tests/models/test_arch_matrix.py), sized for the built-in tokenizer: 2 layers, width
32. ``ARCHS`` maps a ``model_type`` to its config keywords beyond the common ones."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Where the matrix's load/probe and training tests run: the CPU, or (benchmarks/gpu_check.sh,
# RETAIN_MATRIX_DEVICE=cuda) a GPU in bf16 autocast over fp32 master weights.
DEVICE = torch.device(os.environ.get("RETAIN_MATRIX_DEVICE", "cpu"))
MIXED = "bf16" if DEVICE.type == "cuda" else "no"

IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
COMMON = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "intermediate_size": 64, "max_position_embeddings": 256}
GPT_STYLE = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256}  # no COMMON keys
ARCHS: dict[str, dict] = {
    "llama": {},
    "mistral": {"num_key_value_heads": 2},
    "mixtral": {"num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {"num_key_value_heads": 2},
    "qwen3": {"num_key_value_heads": 2, "head_dim": 8},
    "gemma": {"num_key_value_heads": 1, "head_dim": 8},
    "gemma2": {"num_key_value_heads": 2, "head_dim": 8},
    "gemma3_text": {"num_key_value_heads": 2, "head_dim": 8},
    "phi3": {},
    "phi": {},
    "gpt2": GPT_STYLE,
    "gpt_bigcode": GPT_STYLE,
    "gpt_neox": {},
    "opt": {"ffn_dim": 64, "word_embed_proj_dim": 32},
    "olmo2": {},
    "granite": {},
    "falcon": {},
}


def tiny_arch(arch: str, vocab: int, shift: float = 0.0) -> torch.nn.Module:
    """A seeded random-weight model of ``arch`` (a transformers ``model_type``), every weight
    moved by ``shift`` (a stand-in fine-tune of the same seed)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = ARCHS[arch]
    kw = {**IDS, "vocab_size": vocab, **(extra if extra is GPT_STYLE else {**COMMON, **extra})}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kw))
    if shift:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(shift)
    return model


def save_arch(folder: Path, arch: str, shift: float = 0.0) -> Path:
    """``folder/arch``: the tiny model (``tiny_arch``) as safetensors with the built-in
    tokenizer."""
    from retain.builtin.build import build_tokenizer

    tok = build_tokenizer()
    path = Path(folder) / arch
    tiny_arch(arch, len(tok), shift).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def tied(model: torch.nn.Module) -> bool:
    """Input and output embeddings share their weight."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight
