"""``retain fisher``: a model's own Fisher on its own data, covering every parameter, seeded,
different for different models and data, accepted by ``retain merge --method fisher``; user
mistakes are one line on stderr with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from retain.errors import UserError
from retain.fisher_cli import write_fisher
from retain.merging import merge
from retain.merging.sources import FolderSource
from retain.strategies.fisher import load_importance

SMALL = {"n": 4, "seq_len": 32}


def retain(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def other_model(model_dir, tmp_path_factory):
    """A second model: model_dir's weights perturbed (a cheap stand-in for a fine-tune)."""
    import shutil

    path = tmp_path_factory.mktemp("other") / "llama"
    shutil.copytree(model_dir, path)
    weights = load_file(path / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    save_file({k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in weights.items()},
              path / "model.safetensors", metadata={"format": "pt"})
    return path


def test_fisher_covers_every_parameter_with_metadata(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = write_fisher(str(model_dir), "builtin:legal", tmp_path / "sub" / "f.safetensors", **SMALL)
    fisher, meta = load_importance(out)
    params = dict(AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())
    assert set(fisher) == set(params)
    assert all(fisher[k].shape == p.shape for k, p in params.items())
    src = FolderSource(model_dir)
    assert {n for n in src.names() if src.dtype(n).is_floating_point} <= set(fisher)
    assert all(bool((v >= 0).all()) for v in fisher.values())
    assert sum(float(v.sum()) for v in fisher.values()) > 0
    assert {k: meta[k] for k in ("model", "data", "estimator", "n", "seed")} == {
        "model": str(model_dir), "data": "builtin:legal", "estimator": "empirical", "n": 4,
        "seed": 0}
    assert [p.name for p in out.parent.iterdir()] == ["f.safetensors"]  # no temp file left


def test_fisher_is_seeded_and_differs_between_models_and_data(model_dir, other_model, tmp_path):
    def est(model, data, name, seed=0):
        return load_file(write_fisher(str(model), data, tmp_path / name, seed=seed, **SMALL))

    a = est(model_dir, "builtin:legal", "a")
    again = est(model_dir, "builtin:legal", "again")
    assert set(a) == set(again) and all(torch.equal(a[k], again[k]) for k in a)
    for other in (est(other_model, "builtin:legal", "model"),
                  est(model_dir, "builtin:support", "data"),
                  est(model_dir, "builtin:legal", "seed", seed=1)):
        assert any(not torch.allclose(a[k], other[k]) for k in a)


def test_fishers_of_two_models_merge_and_identical_ones_are_refused(model_dir, other_model,
                                                                   tmp_path):
    fa = str(write_fisher(str(model_dir), "builtin:legal", tmp_path / "a.safetensors", **SMALL))
    fb = str(write_fisher(str(other_model), "builtin:support", tmp_path / "b.safetensors",
                          **SMALL))
    out = merge("fisher", [model_dir, other_model], tmp_path / "m", fisher_files=[fa, fb])
    assert (out / "model.safetensors").exists()
    with pytest.raises(UserError, match="same Fisher"):
        merge("fisher", [model_dir, other_model], tmp_path / "x", fisher_files=[fa, fa])
    assert not (tmp_path / "x").exists()


def test_library_refusals(model_dir, tmp_path):
    with pytest.raises(UserError, match="unknown Fisher estimator 'exact'"):
        write_fisher(str(model_dir), "builtin:legal", tmp_path / "f", estimator="exact")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="PEFT adapter: merge it into its base first"):
        write_fisher(str(adapter), "builtin:legal", tmp_path / "f")
    with pytest.raises(UserError, match="is a folder"):
        write_fisher(str(model_dir), "builtin:legal", tmp_path)


def test_cli_writes_the_builtin_models_fisher(tmp_path):
    """The built-in model ties its embeddings: saved once, estimated once, covered."""
    out = tmp_path / "tiny.fisher.safetensors"
    r = retain("fisher", "tiny", "--data", "builtin:legal", "--out", str(out), "--n", "2",
               "--seq-len", "32")
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    src = FolderSource("tiny")
    assert set(load_file(out)) == set(src.names())


@pytest.mark.parametrize("args, needle", [
    (["/no/such/model", "--data", "builtin:legal"], "model folder not found: /no/such/model"),
    (["tiny", "--data", "/no/such.jsonl"], "/no/such.jsonl"),
    (["tiny", "--data", "builtin:nope"], "builtin:nope"),
    (["tiny", "--data", "builtin:legal", "--estimator", "exact"], "exact"),
    (["tiny", "--data", "builtin:legal", "--out", "EXISTING"], "--overwrite"),
])
def test_cli_user_mistakes_are_one_line_and_exit_2(args, needle, tmp_path):
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"x")
    args = [str(existing) if a == "EXISTING" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "f.safetensors")]
    r = retain("fisher", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr
    assert existing.read_bytes() == b"x" and not (tmp_path / "f.safetensors").exists()


def test_a_run_writes_its_fine_tunes_fisher_and_two_of_them_merge(tmp_path):
    """save_fisher: each fine-tune's own Fisher beside its model, accepted by a Fisher merge."""
    from typer.testing import CliRunner

    from retain.cli import app
    from retain.config import parse_config
    from retain.run import run

    folders = []
    for domain in ("legal", "support"):
        out = tmp_path / domain
        res = run(parse_config({"model": "tiny", "data": f"builtin:{domain}", "steps": 2,
                                "batch_size": 4, "seq_len": 32, "data_n": 16, "probes": ["math"],
                                "probe_n": 2, "progress": False, "save_model": True,
                                "save_fisher": True, "out": str(out)}))
        assert res["fisher_file"] == str(out / "model" / "fisher.safetensors")
        folders.append(out / "model")
    merged = tmp_path / "merged"
    r = CliRunner().invoke(app, ["merge", "--method", "fisher", *map(str, folders), "--fisher",
                                 str(folders[0] / "fisher.safetensors"), "--fisher",
                                 str(folders[1] / "fisher.safetensors"), "--out", str(merged)])
    assert r.exit_code == 0, r.output
    with pytest.raises(UserError, match="set save_model too"):
        run(parse_config({"model": "tiny", "save_fisher": True, "out": str(tmp_path / "x")}))
