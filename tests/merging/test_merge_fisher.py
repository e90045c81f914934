"""Fisher-weighted merging that means something: each model's Fisher is normalized by its mean,
Fishers that do not cover the models (names, shapes) or are the same file twice are refused before
anything is written, and nothing falls back to a plain average without a word."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from retain.errors import UserError
from retain.merging import merge, merge_state_dicts
from retain.merging.sources import FolderSource


def state(folder: Path) -> dict[str, torch.Tensor]:
    src = FolderSource(folder)
    return {n: src.get(n) for n in src.names()}


def fishers(folder: Path, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(t.shape, generator=g) ** 4 for n, t in state(folder).items()}


def write(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return str(path)


def test_larger_fisher_dominates_hand_computed():
    """theta_a = 0, theta_b = 1; F_a = [9, 1] (mean 5 -> [1.8, 0.2]), F_b = [1, 1] (mean 1)."""
    a, b = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    fa, fb = {"w": torch.tensor([9.0, 1.0])}, {"w": torch.tensor([1.0, 1.0])}
    out = merge_state_dicts("fisher", None, [a, b], stats=[fa, fb])["w"]
    assert torch.allclose(out, torch.tensor([1 / 2.8, 1 / 1.2]), atol=1e-6)
    assert out[0] < 0.5 < out[1]  # a holds entry 0 (its Fisher there is 9x its other one)
    raw = merge_state_dicts("fisher", None, [a, b], stats=[fa, fb], normalize="none")["w"]
    assert torch.allclose(raw, torch.tensor([1 / 10, 1 / 2]), atol=1e-6)  # the paper's, unscaled


def test_scaling_one_fisher_by_1000_does_not_change_the_merge(tiny, tmp_path):
    f1, f2 = fishers(tiny["ft1"], 1), fishers(tiny["ft2"], 2)
    p1, p2 = write(tmp_path / "f1.safetensors", f1), write(tmp_path / "f2.safetensors", f2)
    p2k = write(tmp_path / "f2k.safetensors", {k: 1000 * v for k, v in f2.items()})
    models = [tiny["ft1"], tiny["ft2"]]
    m = state(merge("fisher", models, tmp_path / "m", fisher_files=[p1, p2]))
    mk = state(merge("fisher", models, tmp_path / "mk", fisher_files=[p1, p2k]))
    lin = state(merge("linear", models, tmp_path / "lin"))
    assert all(torch.allclose(m[n], mk[n], atol=1e-6) for n in m)
    assert any(not torch.allclose(m[n], lin[n], atol=1e-4) for n in m)  # the Fisher does weigh
    raw = state(merge("fisher", models, tmp_path / "raw", fisher_files=[p1, p2k],
                      normalize="none"))  # without normalization the scaled Fisher wins
    assert any(not torch.allclose(m[n], raw[n], atol=1e-4) for n in m)
    # the streaming merge normalizes as the in-memory one does
    mem = merge_state_dicts("fisher", None, [state(x) for x in models], stats=[f1, f2])
    assert all(torch.equal(mem[n], m[n]) for n in m)


def test_fisher_without_a_models_tensor_is_refused_and_nothing_written(tiny, tmp_path):
    f1, f2 = fishers(tiny["ft1"], 1), fishers(tiny["ft2"], 2)
    missing = sorted(f2)[3]
    del f2[missing]
    p1, p2 = write(tmp_path / "f1.safetensors", f1), write(tmp_path / "f2.safetensors", f2)
    with pytest.raises(UserError, match=f"f2.safetensors has no Fisher for tensor '{missing}'"):
        merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "m", fisher_files=[p1, p2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f1.safetensors", "f2.safetensors"]


def test_lora_named_fisher_no_longer_falls_back_to_a_plain_average(tiny, tmp_path):
    """A LoRA run's Fisher names adapter weights: no tensor matches. It used to merge as a plain
    average for every tensor, silently; now it is refused with a hint."""
    lora = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight":
            torch.rand(4, 32),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight":
            torch.rand(32, 4)}
    p1 = write(tmp_path / "a.safetensors", lora)
    p2 = write(tmp_path / "b.safetensors", {k: 2 * v for k, v in lora.items()})
    first = sorted(FolderSource(tiny["ft1"]).names())[0]
    with pytest.raises(UserError, match=f"a.safetensors has no Fisher for tensor '{first}'.*LoRA"):
        merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "m", fisher_files=[p1, p2])
    assert not (tmp_path / "m").exists()


def test_fisher_of_another_shape_is_refused(tiny, tmp_path):
    f1, f2 = fishers(tiny["ft1"], 1), fishers(tiny["ft2"], 2)
    name = "model.norm.weight"
    f2[name] = torch.rand(f2[name].shape[0] + 1)
    p1, p2 = write(tmp_path / "f1.safetensors", f1), write(tmp_path / "f2.safetensors", f2)
    with pytest.raises(UserError, match=f"'{name}' in .*f2.safetensors has shape"):
        merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "m", fisher_files=[p1, p2])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("same_path", [True, False])
def test_identical_fishers_are_refused(tiny, tmp_path, same_path):
    f = fishers(tiny["base"], 0)  # as EWC's file: the base's Fisher, the same for both fine-tunes
    p1 = write(tmp_path / "ewc1.safetensors", f)
    p2 = p1 if same_path else write(tmp_path / "ewc2.safetensors", f)
    with pytest.raises(UserError, match="hold the same Fisher.*retain fisher MODEL --data"):
        merge("fisher", [tiny["ft1"], tiny["ft2"]], tmp_path / "m", fisher_files=[p1, p2])
    assert not (tmp_path / "m").exists()
    with pytest.raises(UserError, match="same Fisher"):
        merge_state_dicts("fisher", None, [state(tiny["ft1"]), state(tiny["ft2"])], stats=[f, f])


def test_negative_or_zero_fishers_are_refused():
    models = [{"w": torch.zeros(3)}, {"w": torch.ones(3)}]
    with pytest.raises(UserError, match="negative or non-finite"):
        merge_state_dicts("fisher", None, models, stats=[{"w": torch.ones(3)},
                                                         {"w": torch.tensor([1.0, -1.0, 1.0])}])
    with pytest.raises(UserError, match="zero everywhere"):
        merge_state_dicts("fisher", None, models, stats=[{"w": torch.ones(3)},
                                                         {"w": torch.zeros(3)}])


def test_tied_weights_in_a_state_dict_share_their_fisher():
    """model.state_dict() names a tied embedding twice; named_parameters() (the Fisher) once."""
    g = torch.Generator().manual_seed(0)
    models, stats = [], []
    for _ in range(2):
        emb = torch.randn(5, 3, generator=g)
        models.append({"embed.weight": emb, "norm.weight": torch.randn(3, generator=g),
                       "lm_head.weight": emb})
        stats.append({"embed.weight": torch.rand(5, 3, generator=g),
                      "norm.weight": torch.rand(3, generator=g)})
    out = merge_state_dicts("fisher", None, models, stats=stats)
    assert torch.equal(out["lm_head.weight"], out["embed.weight"])
    untied = [{**m, "lm_head.weight": m["lm_head.weight"].clone()} for m in models]
    with pytest.raises(UserError, match="no Fisher for tensor 'lm_head.weight'"):
        merge_state_dicts("fisher", None, untied, stats=stats)


def test_cli_refuses_identical_fishers_on_one_line(tiny, tmp_path):
    import typer

    from retain.merging.cli import merge_command

    app = typer.Typer()
    app.command("merge")(merge_command)
    app.command("noop")(lambda: None)
    p = write(tmp_path / "fisher.safetensors", fishers(tiny["base"], 0))
    res = CliRunner().invoke(app, ["merge", "--method", "fisher", str(tiny["ft1"]),
                                   str(tiny["ft2"]), "--fisher", p, "--fisher", p,
                                   "--out", str(tmp_path / "m")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "same Fisher" in lines[0]
    assert not (tmp_path / "m").exists()
