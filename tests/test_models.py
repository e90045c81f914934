"""Loading models: tiny random Llama, GPT-2 and Qwen2 saved as safetensors load, probe and train;
every user mistake (bad path, no weights, unknown hub id offline) is a one-line UserError."""

from __future__ import annotations

import torch
import pytest
from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

from retain import models
from retain.builtin.build import build_tokenizer
from retain.errors import UserError

IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def tiny_model(arch: str, vocab: int):
    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64,
                                            max_position_embeddings=256, **IDS))
    if arch == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4,
                                          n_positions=256, **IDS))
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        intermediate_size=64, max_position_embeddings=256, **IDS))


def save_tiny(tmp_path, arch: str, *, pad: bool = True):
    tok = build_tokenizer()
    if not pad:
        tok.pad_token = None
    path = tmp_path / arch
    tiny_model(arch, len(tok)).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_load_probe_and_train_each_architecture(tmp_path, arch):
    from retain.data import load_train_data
    from retain.probes import evaluate, load_probes
    from retain.train import TrainConfig, train

    model, tok = models.load_model(str(save_tiny(tmp_path, arch)), device="auto")
    assert not model.training and model.device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32
    res = evaluate(model, tok, load_probes(["math", "writing"], n=2), progress=False)
    assert {r.key for r in res} == {"math.accuracy", "writing.ce_nats_per_token"}
    before = models.copy_state(model)
    data = load_train_data("builtin:legal", tok, seq_len=32, n=8)
    out = train(model, data, pad_id=tok.pad_token_id, config=TrainConfig(lr=1e-3, steps=2,
                batch_size=2), progress=False)
    assert out.tokens_seen == 2 * 2 * 32  # legal documents are longer than seq_len
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_pad_defaults_to_eos(tmp_path):
    model, tok = models.load_model(str(save_tiny(tmp_path, "llama", pad=False)))
    assert tok.pad_token_id == tok.eos_token_id == 2


def test_bad_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        models.load_model(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(UserError, match="no such folder"):
        models.load_model("./not-here")


def test_folder_without_safetensors_is_a_user_error(tmp_path):
    path = save_tiny(tmp_path, "llama")
    for f in path.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(UserError, match="no .safetensors"):
        models.load_model(str(path))
    (path / "config.json").unlink()
    with pytest.raises(UserError, match="config.json"):
        models.load_model(str(path))


def test_unknown_hub_id_offline_is_a_quick_user_error(monkeypatch):
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(UserError, match="not in the local cache"):
        models.load_model("retain-tests/no-such-model-3141")


def test_builtin_not_built_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setitem(models.BUILTIN_MODELS, "tiny", tmp_path / "tiny")
    with pytest.raises(UserError, match="retain.builtin.build"):
        models.load_model("tiny")


def test_device_and_dtype_resolution():
    assert models.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert models.resolve_device("auto").type == "cpu"
        assert models.resolve_dtype("auto", torch.device("cpu")) == torch.float32
        with pytest.raises(UserError, match="no CUDA"):
            models.resolve_device("cuda")
    assert models.resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(UserError, match="dtype"):
        models.resolve_dtype("int3")


def test_copy_state_is_a_detached_cpu_copy_with_tied_weights_once():
    model = tiny_model("gpt2", 50)  # GPT-2 ties lm_head to wte
    state = models.copy_state(model)
    assert "lm_head.weight" not in state and "transformer.wte.weight" in state
    assert models.count_params(model) == sum(t.numel() for t in state.values())
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    assert not torch.equal(state["transformer.wte.weight"], model.transformer.wte.weight)
