"""``run()`` end to end on a tiny Llama (a few steps): every file of the run folder, the exact
summary.csv columns, the refusal to overwrite, no results.json after a crash, the strategies'
hook order; and the config (YAML + overrides) and results helpers it rests on."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from transformers import LlamaForCausalLM

from retain import strategies as strategies_mod
from retain.config import RunConfig, apply_override, load_config, load_run_config, to_yaml
from retain.errors import UserError
from retain.report import results as rr
from retain.run import run
from retain.strategies.base import Strategy




def quick(model_dir, out, **kw) -> RunConfig:
    base = dict(model=str(model_dir), out=str(out), steps=4, batch_size=4, seq_len=48, lr=1e-3,
                warmup_steps=1, data_n=16, reference_n=8, probes=["math", "writing", "legal"],
                probe_n=3, probe_every=2, log_every=2, progress=False)
    return RunConfig(**{**base, **kw})


def test_run_writes_every_file(model_dir, tmp_path):
    out = tmp_path / "run"
    res = run(quick(model_dir, out, save_model=True))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.yaml", "metrics.jsonl", "summary.csv", "results.json", "model"])

    on_disk = rr.read_results(out)
    assert on_disk["status"] == "complete" and on_disk["schema_version"] == rr.SCHEMA_VERSION
    assert on_disk["strategy"] == "full" and on_disk["seed"] == 0
    assert on_disk["training"]["steps"] == 4 and on_disk["training"]["tokens_seen"] == 4 * 4 * 48
    assert on_disk["model"]["trainable_params"] == on_disk["model"]["params"] > 0
    keys = [c["key"] for c in on_disk["comparison"]]
    assert keys == ["math.accuracy", "writing.ce_nats_per_token", "legal.accuracy",
                    "legal.ce_nats_per_token"]
    assert set(on_disk["domain_gain"]) == {"legal.accuracy", "legal.ce_nats_per_token"}
    assert on_disk["domain_gain"]["legal.ce_nats_per_token"] > 0  # lr 1e-3 on legal text: learnt
    assert on_disk["drift"]["overall"]["relative_l2"] > 0
    assert "model.layers.1" in on_disk["drift"]["per_layer"]
    assert res["comparison"] == on_disk["comparison"]

    with open(out / "summary.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["strategy", "probe", "metric", "before", "after", "delta",
                       "higher_is_better"]
    assert len(rows) == 5 and rows[2][:3] == ["full", "writing", "ce_nats_per_token"]
    assert float(rows[2][5]) == pytest.approx(float(rows[2][4]) - float(rows[2][3]))

    records = rr.read_jsonl(out / "metrics.jsonl")
    probes = [(r["stage"], r["step"]) for r in records if r["event"] == "probe"]
    assert probes == [("before", 0), ("during", 2), ("during", 4), ("after", 4)]
    assert [r["step"] for r in records if r["event"] == "train"] == [2, 4]
    probe_keys = [set(r["results"]) for r in records if r["event"] == "probe"]
    assert all(k == probe_keys[0] for k in probe_keys)  # during = the same probes by default

    assert RunConfig(**yaml.safe_load((out / "config.yaml").read_text())) == quick(
        model_dir, out, save_model=True)
    from retain.models import load_model
    saved, _ = load_model(str(out / "model"))
    assert type(saved) is LlamaForCausalLM


def test_lora_run_trains_few_params(model_dir, tmp_path):
    res = run(quick(model_dir, tmp_path / "lora", strategies=[{"name": "lora", "r": 2}],
                    probes=["writing"], probes_during=["math"], probe_every=3))
    during = [r for r in rr.read_jsonl(tmp_path / "lora" / "metrics.jsonl")
              if r["event"] == "probe" and r["stage"] == "during"]
    assert [(r["step"], list(r["results"])) for r in during] == [(3, ["math.accuracy"])]
    assert res["strategy"] == "lora" and res["strategies"][0]["config"]["r"] == 2
    assert "Hu et al." in res["strategies"][0]["citation"]
    assert res["model"]["architecture"] == "LlamaForCausalLM"  # merged back
    assert 0 < res["model"]["trainable_params"] < 0.1 * res["model"]["params"]
    assert res["drift"]["overall"]["l2"] > 0 and res["drift"]["missing"] == []


def test_existing_folder_is_refused_unless_overwrite(model_dir, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        run(quick(model_dir, out, probes=["writing"], probe_every=0))
    run(quick(model_dir, out, probes=["writing"], probe_every=0, overwrite=True))
    assert rr.read_results(out)["status"] == "complete"
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_seq_len_longer_than_the_model_is_refused(model_dir, tmp_path):
    with pytest.raises(UserError, match="256 positions"):
        run(quick(model_dir, tmp_path / "long", seq_len=300, probes=["writing"]))


def test_interrupted_run_leaves_no_results(model_dir, tmp_path, monkeypatch):
    import retain.train

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(retain.train, "train", boom)
    out = tmp_path / "crash"
    with pytest.raises(KeyboardInterrupt):
        run(quick(model_dir, out, probes=["writing"], probe_every=0))
    assert (out / "config.yaml").exists() and not (out / "results.json").exists()
    with pytest.raises(UserError, match="unfinished"):
        rr.read_results(out)


CALLS: list[str] = []


def recorder(tag: str, fam: str):
    class Rec(Strategy):
        name, family, citation = tag, fam, "test"

        def prepare(self, model, ctx):
            CALLS.append(f"prepare:{tag}")
            assert ctx.base_state and ctx.reference and ctx.tokenizer is not None
            return model

        def train_data(self, data, ctx):
            CALLS.append(f"train_data:{tag}")
            return data

        def penalty(self, model, batch):
            CALLS.append(f"penalty:{tag}")
            return None

        def finalize(self, model, ctx):
            CALLS.append(f"finalize:{tag}")
            return model
    return Rec


def test_hooks_run_in_list_order(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(strategies_mod.STRATEGIES, "rec_a", recorder("rec_a", "regularization"))
    monkeypatch.setitem(strategies_mod.STRATEGIES, "rec_b", recorder("rec_b", "replay"))
    CALLS.clear()
    run(quick(model_dir, tmp_path / "order", strategies=["rec_b", "rec_a"], steps=2,
              probes=["writing"], probe_every=0))
    assert CALLS == ["prepare:rec_b", "prepare:rec_a", "train_data:rec_b", "train_data:rec_a",
                     "penalty:rec_b", "penalty:rec_a", "penalty:rec_b", "penalty:rec_a",
                     "finalize:rec_b", "finalize:rec_a"]


def test_config_yaml_overrides_and_errors(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("model: tiny\nlr: 1e-4\nstrategies:\n  - name: lora\n    r: 4\n")
    c = load_config(p, ["lr=3e-4", "strategies.0.r=16", "probes=[math,legal]", "steps=7"])
    assert c.lr == 3e-4 and c.steps == 7 and c.probes == ["math", "legal"]
    assert c.strategies[0] == {"name": "lora", "r": 16, "alpha": 16.0, "dropout": 0.0,
                               "target_modules": "all-linear", "use_dora": False,
                               "use_rslora": False}
    assert str(c.out) == "runs/lora-seed0"
    assert load_config(None, []).probes == ["retained", "legal"]
    assert load_config(None, ["data=x.jsonl"]).probes == ["retained"]
    assert RunConfig(**yaml.safe_load(to_yaml(c))) == c
    with pytest.raises(UserError, match="unknown key 'lrr'"):
        load_config(None, ["lrr=1"])
    with pytest.raises(UserError, match="config: steps"):
        load_config(None, ["steps=-1"])
    with pytest.raises(UserError, match="unknown option 'rank'"):
        load_config(p, ["strategies.0.rank=2"])
    with pytest.raises(UserError, match="key=value"):
        load_config(None, ["steps"])
    with pytest.raises(Exception):
        c.lr = 1.0  # frozen
    assert apply_override({"a": [{"b": 1}]}, "a.0.b=2") == {"a": [{"b": 2}]}
    flags = {"steps": 5, "lr": 1e-3, "strategies": [{"name": "lora"}]}
    c = load_run_config(p, ["steps=9", "strategies.0.r=2"], **flags)  # file < flags < overrides
    assert (c.steps, c.lr, c.strategies[0]["r"]) == (9, 1e-3, 2)
    assert flags["strategies"] == [{"name": "lora"}]  # the caller's values are not edited


def test_results_helpers(tmp_path):
    p = tmp_path / "x" / "r.json"
    rr.write_json_atomic(p, {"v": float("nan"), "p": tmp_path, "t": (1, 2)})
    assert json.loads(p.read_text()) == {"v": None, "p": str(tmp_path), "t": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]  # no temp file left behind
    rr.append_jsonl(tmp_path / "m.jsonl", {"a": 1})
    rr.append_jsonl(tmp_path / "m.jsonl", {"a": 2})
    assert rr.read_jsonl(tmp_path / "m.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "old").mkdir()
    rr.write_json_atomic(tmp_path / "old" / "results.json", {"schema_version": 0})
    with pytest.raises(UserError, match="schema_version"):
        rr.read_results(tmp_path / "old")


def test_drift_of_an_unmerged_peft_model_compares_its_base_weights(model_dir, tmp_path):
    # Prompt tuning keeps the PeftModel (nothing to merge): every base tensor must still be
    # matched by name, and none of them moved.
    res = run(quick(model_dir, tmp_path / "pt", strategies=[{"name": "prompt_tuning",
                                                            "num_virtual_tokens": 4}]))
    assert res["drift"]["missing"] == []
    assert res["drift"]["overall"]["tensors"] > 0 and res["drift"]["overall"]["l2"] == 0.0
