"""`retain sweep`: --set parsing, the grid expansion, the relations on synthetic points with a
known exponent, and a two-run sweep on a tiny Llama (files, charts, resume)."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import yaml

from retain.errors import UserError
from retain.experiments.sweep import analyse, expand, forgetting, parse_set, run_sweep

run_mod = importlib.import_module("retain.run")


def test_parse_set():
    assert parse_set("lr=1e-4,3e-4,1e-3") == ("lr", [1e-4, 3e-4, 1e-3])
    assert parse_set("steps = 25,50") == ("steps", [25, 50])
    assert parse_set("strategies.0.r=4,8") == ("strategies.0.r", [4, 8])
    assert parse_set("probes=[[math],[code, writing]]") == ("probes", [["math"], ["code", "writing"]])
    assert parse_set("schedule=cosine,constant") == ("schedule", ["cosine", "constant"])
    for bad in ["lr", "lr=", "=1,2", "probes=[a, [b"]:
        with pytest.raises(UserError, match="--set"):
            parse_set(bad)


def test_expand_labels_and_overrides():
    out = expand([{"label": "full", "strategies": ["full"]},
                  {"label": "lora", "strategies": [{"name": "lora"}],
                   "grid": {"strategies.0.r": [4, 8]}}], {"lr": [1e-4, 1e-3]})
    assert [e["label"] for e in out] == [
        "full lr=0.0001", "full lr=0.001", "lora lr=0.0001 strategies.0.r=4",
        "lora lr=0.0001 strategies.0.r=8", "lora lr=0.001 strategies.0.r=4",
        "lora lr=0.001 strategies.0.r=8"]
    assert out[3]["set"] == ["lr=0.0001", "strategies.0.r=8"]
    with pytest.raises(UserError, match="'seed' cannot be a grid axis"):
        expand([{"label": "x"}], {"seed": [0, 1]})
    with pytest.raises(UserError, match="no grid"):
        expand([{"label": "x"}], {})


def test_forgetting_definition():
    res = {"comparison": [
        {"probe": "math", "metric": "accuracy", "capability": "math", "before": 0.8, "after": 0.5},
        {"probe": "safety", "metric": "over_refusal_rate", "capability": "safety",
         "before": 0.1, "after": 0.3},  # oriented 0.9 -> 0.7: a drop of 0.2
        {"probe": "writing", "metric": "ce_nats_per_token", "capability": "writing",
         "before": 2.0, "after": 9.0},  # not a proportion: left out
        {"probe": "legal", "metric": "accuracy", "capability": "domain", "before": 0.1,
         "after": 0.9}]}  # the new domain: left out
    assert forgetting(res) == pytest.approx((0.3 + 0.2) / 2)


def test_analyse_recovers_the_exponent_and_orders():
    points = []
    for lr, a in [(1e-4, 0.002), (1e-3, 0.01)]:
        for i, steps in enumerate([10, 20, 40, 80, 160]):
            noise = math.exp(0.03 * math.sin(7 * i + lr * 1e4))  # small, deterministic
            f = a * steps ** 0.5 * noise
            points.append({"entry": "full", "lr": lr, "steps": steps, "forgetting": f,
                           "ce_rise": None, "drift": f * 3 + 0.001 * i, "domain_score": 0.5,
                           "retained_score": 0.5, "seed": 0})
    res = analyse(points, ["lr", "steps"])
    steps_fits = [f for f in res["fits"] if f["x"] == "steps" and f["y"] == "forgetting"]
    assert [f["group"] for f in steps_fits] == ["full lr=0.0001", "full lr=0.001"]
    for f in steps_fits:
        assert f["alpha"] == pytest.approx(0.5, abs=0.05) and f["r2"] > 0.95
        assert f["spearman"] == pytest.approx(1.0)
    (a4,) = [f for f in steps_fits if f["group"].endswith("0.0001")]
    assert a4["A"] == pytest.approx(0.002, rel=0.15)
    lr_fits = [f for f in res["fits"] if f["x"] == "lr" and f["y"] == "forgetting"]
    assert len(lr_fits) == 5 and all(f["alpha"] == pytest.approx(math.log10(5), abs=0.05)
                                     for f in lr_fits)
    assert not [f for f in res["fits"] if f["y"] == "ce_rise"]  # no CE data: no CE fits
    assert res["drift_correlation"]["forgetting"]["all"]["rho"] > 0.95
    assert res["marginals"]["steps"]["full"]["10"] < res["marginals"]["steps"]["full"]["160"]




def test_tiny_sweep_end_to_end(tmp_path, model_dir, monkeypatch):
    cfg = {"model": str(model_dir), "batch_size": 2, "seq_len": 32, "warmup_steps": 0,
           "data_n": 4, "reference_n": 4, "probes": ["math", "writing", "legal"], "probe_n": 2,
           "progress": False, "lr": 1e-3, "out": str(tmp_path / "sw")}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    s = run_sweep(path, sets=["steps=1,3"], show=False)
    out = tmp_path / "sw"
    assert [p["steps"] for p in s["points"]] == [1, 3]
    assert [p["label"] for p in s["points"]] == ["full steps=1", "full steps=3"]
    assert all(p["drift"] > 0 and p["ce_rise"] is not None for p in s["points"])
    assert s["points"][1]["drift"] > s["points"][0]["drift"]
    assert s["charts"] == ["forgetting_vs_steps.png", "forgetting_vs_drift.png"]
    for name in s["charts"] + ["sweep.json", "comparison.json", "summary.csv", "tradeoff.png"]:
        assert (out / name).stat().st_size > 0, name
    on_disk = json.loads((out / "sweep.json").read_text())
    assert "oriented drop" in on_disk["definitions"]["forgetting"]
    assert "2401.05605" in on_disk["citation"]
    assert {f["x"] for f in on_disk["fits"]} == {"steps"}

    calls = []
    monkeypatch.setattr(run_mod, "run", lambda *a, **k: calls.append(a))
    again = run_sweep(path, sets=["steps=1,3"], show=False)  # resumed: nothing to run
    assert calls == [] and again["points"] == s["points"]


def test_cli_passes_sets_and_overrides(monkeypatch):
    from typer.testing import CliRunner

    from retain.experiments import sweep as sweep_mod
    from retain.cli import app

    seen = []
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda *a, **k: seen.append((a, k)))
    res = CliRunner().invoke(app, ["sweep", "--set", "lr=1e-4,1e-3", "--set", "steps=5,10",
                                   "probe_n=4", "batch_size=2"])
    assert res.exit_code == 0, res.output
    assert seen[0][0] == (None, ["lr=1e-4,1e-3", "steps=5,10"], ["probe_n=4", "batch_size=2"])
    assert seen[0][1] == {"out": None, "overwrite": False, "only": [], "listing": False,
                          "collect": False, "launcher": None}


def test_domain_ce_gain():
    from retain.experiments.sweep import domain_ce_gain

    res = {"comparison": [
        {"metric": "ce_nats_per_token", "capability": "domain", "before": 8.0, "after": 5.0},
        {"metric": "ce_nats_per_token", "capability": "writing", "before": 1.0, "after": 2.0},
        {"metric": "accuracy", "capability": "domain", "before": 0.0, "after": 1.0}]}
    assert domain_ce_gain(res) == 3.0
