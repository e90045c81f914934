"""The streaming engine on tiny saved models: merged folders load and generate, match the formula
and the in-memory API, shard in and out, take LoRA adapters, refuse mismatches by tensor name, and
leave no output folder when interrupted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from retain.errors import UserError
from retain.merging import merge, merge_from_config, merge_state_dicts
from retain.merging import output as output_mod
from retain.merging.sources import FolderSource


def state(folder: Path) -> dict[str, torch.Tensor]:
    src = FolderSource(folder)
    return {n: src.get(n) for n in src.names()}


def test_task_arithmetic_folder_matches_formula_and_loads(tiny, tmp_path):
    out = merge("task_arithmetic", [tiny["ft1"], tiny["ft2"]], tmp_path / "m", base=tiny["base"],
                weights=[0.7, 0.3])
    b, f1, f2, got = state(tiny["base"]), state(tiny["ft1"]), state(tiny["ft2"]), state(out)
    assert set(got) == set(b)
    for n in b:
        want = b[n] + 0.7 * (f1[n] - b[n]) + 0.3 * (f2[n] - b[n])
        assert torch.allclose(got[n], want, atol=1e-6), n
    mem = merge_state_dicts("task_arithmetic", b, [f1, f2], weights=[0.7, 0.3])
    assert all(torch.equal(mem[n], got[n]) for n in b)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("ab", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4
    card = (out / "README.md").read_text()
    assert "task_arithmetic" in card and "retain" in card and "arxiv.org/abs/2212.04089" in card
    assert not list(tmp_path.glob(".m.*"))  # no temporary folders left


def test_sharded_input_and_output(tiny, tmp_path):
    single = merge("linear", [tiny["ft1"], tiny["ft2"]], tmp_path / "one")
    sharded = merge("linear", [tiny["ft1_sharded"], tiny["ft2"]], tmp_path / "many",
                    shard_size="30KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (sharded / "model.safetensors").exists()
    for f in files:  # each shard respects the size unless a single tensor is bigger
        tensors = load_file(sharded / f)
        assert len(tensors) == 1 or sum(t.numel() * 4 for t in tensors.values()) <= 30_000
    a, b = state(single), state(sharded)
    assert all(torch.equal(a[n], b[n]) for n in a)
    model = AutoModelForCausalLM.from_pretrained(sharded)
    assert torch.equal(model.state_dict()["model.norm.weight"], a["model.norm.weight"])


def test_dtype_option_writes_half_precision(tiny, tmp_path):
    out = merge("linear", [tiny["ft1"], tiny["ft2"]], tmp_path / "h", dtype="bfloat16")
    assert all(t.dtype == torch.bfloat16 for t in load_file(out / "model.safetensors").values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def _lora(model, tmp: Path, **cfg) -> tuple[Path, dict[str, torch.Tensor]]:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(**cfg))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n or "lora_embedding_B" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(tmp)
    merged = peft_model.merge_and_unload()
    return tmp, {k: v.detach().clone() for k, v in merged.state_dict().items()}


def test_lora_adapter_equals_merge_and_unload(tiny, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny["base"])
    adapter, want = _lora(model, tmp_path / "adapter", r=4, lora_alpha=8,
                          target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"])
    out = merge("linear", [adapter], tmp_path / "m", base=tiny["base"])
    got = state(out)
    assert any(not torch.equal(got[n], w) for n, w in state(tiny["base"]).items())
    for n, w in got.items():
        assert torch.allclose(w, want[n], atol=1e-6), n


def test_gpt2_conv1d_lora_adapter_is_transposed(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1,
                                       n_head=2, bos_token_id=0, eos_token_id=0)).eval()
    model.save_pretrained(tmp_path / "gpt2")
    adapter, want = _lora(model, tmp_path / "adapter", r=2, lora_alpha=4,
                          target_modules=["c_attn", "c_proj"], fan_in_fan_out=True)
    got = state(merge("task_arithmetic", [adapter], tmp_path / "m", base=tmp_path / "gpt2"))
    for n, w in got.items():
        assert torch.allclose(w, want[n], atol=1e-6), n


def _edit(src: Path, dst: Path, fn) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    fn(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_mismatches_are_refused_naming_the_tensor(tiny, tmp_path):
    name = "model.layers.1.mlp.up_proj.weight"
    wrong_shape = _edit(tiny["ft1"], tmp_path / "shape",
                        lambda t: t.__setitem__(name, t[name][:-1]))
    with pytest.raises(UserError, match=rf"'{name}' has shape \[47, 32\]"):
        merge("ties", [wrong_shape, tiny["ft2"]], tmp_path / "o", base=tiny["base"])
    renamed = _edit(tiny["ft1"], tmp_path / "name",
                    lambda t: t.__setitem__("model.layers.1.mlp.up.weight", t.pop(name)))
    with pytest.raises(UserError, match=f"'{name}' of .* is missing in"):
        merge("ties", [renamed, tiny["ft2"]], tmp_path / "o", base=tiny["base"])
    other_tok = tmp_path / "tok"
    shutil.copytree(tiny["ft1"], other_tok)
    tj = json.loads((other_tok / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    vocab["Z"], vocab["Y"] = vocab["Y"], vocab["Z"]
    (other_tok / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(UserError, match="tokenizer mismatch: token id"):
        merge("linear", [other_tok, tiny["ft2"]], tmp_path / "o", base=tiny["base"])
    cfg = tmp_path / "arch"
    shutil.copytree(tiny["ft1"], cfg)
    (cfg / "config.json").write_text(json.dumps({**json.loads((cfg / "config.json").read_text()),
                                                 "model_type": "qwen2"}))
    with pytest.raises(UserError, match="architecture mismatch"):
        merge("linear", [cfg, tiny["ft2"]], tmp_path / "o", base=tiny["base"])
    assert not (tmp_path / "o").exists()


def test_interrupted_merge_leaves_no_output_folder(tiny, tmp_path, monkeypatch):
    real, calls = output_mod.ShardWriter.write, []

    def flaky(self, name, tensor):
        calls.append(name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(self, name, tensor)

    monkeypatch.setattr(output_mod.ShardWriter, "write", flaky)
    with pytest.raises(KeyboardInterrupt):
        merge("linear", [tiny["ft1"], tiny["ft2"]], tmp_path / "out", shard_size="30KB")
    assert list(tmp_path.iterdir()) == []


def test_output_guards(tiny, tmp_path):
    with pytest.raises(UserError, match="also an input"):
        merge("linear", [tiny["ft1"], tiny["ft2"]], tiny["ft2"])
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        merge("linear", [tiny["ft1"], tiny["ft2"]], out)
    merge("linear", [tiny["ft1"], tiny["ft2"]], out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_fisher_files_proportional_fishers_is_plain_average(tiny, tmp_path):
    """Each Fisher is divided by its mean: a Fisher and 7 times it weigh every entry equally."""
    fisher = {n: torch.rand(t.shape) for n, t in state(tiny["base"]).items()}
    save_file(fisher, tmp_path / "f.safetensors")
    save_file({n: 7 * t for n, t in fisher.items()}, tmp_path / "f7.safetensors")
    f, f7 = str(tmp_path / "f.safetensors"), str(tmp_path / "f7.safetensors")
    fm = state(merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "fm", fisher_files=[f, f7]))
    lm = state(merge("linear", [tiny["ft1"], tiny["ft2"]], tmp_path / "lm"))
    assert all(torch.allclose(fm[n], lm[n], atol=1e-6) for n in lm)
    with pytest.raises(UserError, match="needs one fisher file per model"):
        merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "x")


def test_dare_streaming_equals_in_memory_and_yaml_config(tiny, tmp_path):
    out = merge("dare_ties", [tiny["ft1_sharded"], tiny["ft2"]], tmp_path / "d",
                base=tiny["base"], density=0.5, seed=3, shard_size="50KB")
    mem = merge_state_dicts("dare_ties", state(tiny["base"]),
                            [state(tiny["ft1"]), state(tiny["ft2"])], density=0.5, seed=3)
    got = state(out)
    assert all(torch.equal(got[n], mem[n]) for n in mem)
    (tmp_path / "merge.yaml").write_text(
        f"method: dare_ties\nbase: {tiny['base']}\nmodels:\n  - {{path: {tiny['ft1']}}}\n"
        f"  - {tiny['ft2']}\noptions: {{density: 0.5, seed: 3}}\nout: {tmp_path / 'y'}\n")
    got2 = state(merge_from_config(tmp_path / "merge.yaml"))
    assert all(torch.equal(got2[n], mem[n]) for n in mem)


def test_model_card_holds_a_config_that_reproduces_the_merge(tiny, tmp_path):
    import yaml

    from retain.merging.config import MergeConfig

    out = merge("ties", [tiny["ft1"], tiny["ft2"]], tmp_path / "a", base=tiny["base"],
                densities=[0.3, 0.6], majority_sign="frequency")
    card = (out / "README.md").read_text()
    block = card.split("```yaml\n")[1].split("```")[0]
    cfg = MergeConfig.from_dict({**yaml.safe_load(block), "out": str(tmp_path / "b")})
    assert [m.density for m in cfg.models] == [0.3, 0.6]
    again = merge_from_config(cfg)
    a, b = state(out), state(again)
    assert all(torch.equal(a[n], b[n]) for n in a)
