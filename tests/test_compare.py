"""`retain compare`: planning and its errors, resume (a finished run is reused, an unfinished one
re-runs, another config is refused), the base probed once per seed, and the seed statistics and
ranking of the comparison folder on synthetic results with known answers."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import yaml

from retain import compare as compare_mod
from retain.comparison import mean_ci, ranking, t_quantile_95, write_comparison
from retain.errors import UserError

run_mod = importlib.import_module("retain.run")  # the module (retain.run is also the function)




def _file(tmp_path, model_dir, **kw):
    data = {"model": str(model_dir), "steps": 2, "batch_size": 2, "seq_len": 32, "warmup_steps": 0,
            "data_n": 4, "reference_n": 4, "probes": ["math", "legal"], "probe_n": 2,
            "progress": False, "out": str(tmp_path / "cmp"), "seeds": [0, 1],
            "runs": [{"label": "full", "strategies": ["full"], "lr": 1e-3},
                     {"label": "lora r=2", "strategies": [{"name": "lora", "r": 2}], "lr": 1e-3}],
            **kw}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def counted(monkeypatch):
    calls = {"run": [], "probe_base": 0}
    real_run, real_probe = run_mod.run, compare_mod.probe_base

    def run(cfg, **kw):
        calls["run"].append(str(cfg.out))
        return real_run(cfg, **kw)

    def probe_base(cfg):
        calls["probe_base"] += 1
        return real_probe(cfg)

    monkeypatch.setattr(run_mod, "run", run)
    monkeypatch.setattr(compare_mod, "probe_base", probe_base)
    return calls


def test_compare_resumes_where_it_stopped(tmp_path, model_dir, counted):
    path = _file(tmp_path, model_dir)
    out = tmp_path / "cmp"
    summary = compare_mod.run_compare(path, show=False)
    names = ["full-seed0", "full-seed1", "lora-r-2-seed0", "lora-r-2-seed1"]
    assert sorted(p.rsplit("/", 1)[1] for p in counted["run"]) == names
    assert counted["probe_base"] == 2  # once per seed, shared by both strategies
    assert {p.name for p in out.iterdir()} >= {*names, "summary.csv", "comparison.json",
                                               "capabilities.png", "tradeoff.png"}
    assert [r["dir"].rsplit("/", 1)[1] for r in summary["runs"]] == [
        "full-seed0", "full-seed1", "lora-r-2-seed0", "lora-r-2-seed1"]
    assert set(summary["seed_deltas"]) == {"full", "lora r=2"}
    mtimes = {n: (out / n / "results.json").stat().st_mtime_ns for n in names}

    # an interrupted comparison: one run lost its results.json (config.yaml is still there)
    (out / "lora-r-2-seed1" / "results.json").unlink()
    counted["run"].clear()
    counted["probe_base"] = 0
    again = compare_mod.run_compare(path, show=False)
    assert [p.rsplit("/", 1)[1] for p in counted["run"]] == ["lora-r-2-seed1"]
    assert counted["probe_base"] == 1
    for n in names[:3]:
        assert (out / n / "results.json").stat().st_mtime_ns == mtimes[n]
    assert again["ranking"]["order"] == summary["ranking"]["order"]  # deterministic re-run

    # a complete repeat runs nothing
    counted["run"].clear()
    compare_mod.run_compare(path, show=False)
    assert counted["run"] == []

    # another config for the same folders is refused, then replaced with overwrite
    path = _file(tmp_path, model_dir, steps=3, seeds=[0])
    with pytest.raises(UserError, match=r"full-seed0 holds another run \(steps: 2 there, 3 "
                                         r"planned\) \(and 1 more\); use --overwrite"):
        compare_mod.run_compare(path, show=False)
    assert counted["run"] == []
    compare_mod.run_compare(path, show=False, overwrite=True)
    assert len(counted["run"]) == 2
    assert json.loads((out / "full-seed0" / "results.json").read_text())["config"]["steps"] == 3


def test_compare_continues_an_interrupted_run_from_its_checkpoint(tmp_path, model_dir):
    import shutil

    path = _file(tmp_path, model_dir, seeds=[0], checkpoint_every=1, keep_checkpoints=3,
                 runs=[{"label": "full", "strategies": ["full"], "lr": 1e-3}])
    run_dir = tmp_path / "cmp" / "full-seed0"
    compare_mod.run_compare(path, show=False)
    first = json.loads((run_dir / "results.json").read_text())
    # killed after the checkpoint of step 1: no results, no later checkpoint
    (run_dir / "results.json").unlink()
    shutil.rmtree(run_dir / "checkpoints" / "step-00000002")
    compare_mod.run_compare(path, show=False)
    again = json.loads((run_dir / "results.json").read_text())
    assert again["training"]["resumed_from_step"] == 1
    assert [r["value"] for r in again["probes"]["after"]] == pytest.approx(
        [r["value"] for r in first["probes"]["after"]], abs=1e-6)


def test_plan_and_its_errors(tmp_path):
    f = compare_mod.load_compare_file(_file(tmp_path, "m", steps=7), ["batch_size=3"])
    entries = compare_mod.read_entries(f["extra"]["runs"])
    planned = compare_mod.plan(f["base"], entries, f["seeds"], f["out"], f["overrides"])
    assert [(p.label, p.seed, p.config.lr, p.config.steps, p.config.batch_size) for p in planned] == [
        ("full", 0, 1e-3, 7, 3), ("full", 1, 1e-3, 7, 3), ("lora r=2", 0, 1e-3, 7, 3),
        ("lora r=2", 1, 1e-3, 7, 3)]
    assert planned[3].config.strategies[0]["r"] == 2
    assert str(planned[2].config.out).endswith("cmp/lora-r-2-seed0")
    with pytest.raises(UserError, match="same folder name 'a-b'"):
        compare_mod.read_entries([{"label": "a b"}, {"label": "a-b"}])
    with pytest.raises(UserError, match=r"runs\[0\]: 'seed' is set by compare"):
        compare_mod.read_entries([{"label": "x", "seed": 3}])
    with pytest.raises(UserError, match="seeds: give a list of integers"):
        compare_mod.read_seeds(["a"], 0)
    with pytest.raises(UserError, match="run 'x': config: unknown key 'lrr'"):
        compare_mod.plan({}, [{"label": "x", "lrr": 1}], [0], tmp_path)


# -- the statistics, on synthetic results --------------------------------------------------

def _res(seed: int, math_after: float, legal_after: float) -> dict:
    rows = [("math", "accuracy", "math", 0.8, math_after, True),
            ("writing", "ce_nats_per_token", "writing", 2.0, 2.5, False),
            ("legal", "accuracy", "domain", 0.1, legal_after, True)]
    return {"seed": seed, "comparison": [
        {"probe": p, "metric": m, "capability": c, "before": b, "after": a, "delta": a - b,
         "higher_is_better": h} for p, m, c, b, a, h in rows]}


def test_t_intervals():
    assert t_quantile_95(2) == 4.303 and t_quantile_95(30) == 2.042
    assert abs(t_quantile_95(31) - 2.040) < 2e-3 and abs(t_quantile_95(1000) - 1.962) < 1e-3
    m = mean_ci([1.0, 2.0, 3.0])  # sd 1, half-width 4.303 / sqrt(3)
    assert m["mean"] == 2.0 and m["ci"] == pytest.approx([2 - 4.303 / 3 ** .5, 2 + 4.303 / 3 ** .5])
    assert mean_ci([0.5])["ci"] is None and mean_ci([])["mean"] is None


def test_seed_deltas_and_ranking(tmp_path):
    # A keeps math (0.8 -> ~0.78) and learns legal; B forgets math; C is A shifted by a tiny,
    # seed-to-seed noisy amount: A vs C is within the noise, B vs the others is not.
    results = [_res(0, 0.78, 0.60), _res(1, 0.76, 0.62), _res(2, 0.80, 0.58),
               _res(0, 0.20, 0.70), _res(1, 0.25, 0.72), _res(2, 0.22, 0.68),
               _res(0, 0.79, 0.58), _res(1, 0.75, 0.63), _res(2, 0.78, 0.60)]
    labels = ["A"] * 3 + ["B"] * 3 + ["C"] * 3
    s = write_comparison(tmp_path, labels, results, title="t", show=False)
    d = s["seed_deltas"]["A"]["math.accuracy"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(-0.02)
    half = 4.303 * 0.02 / math.sqrt(3)  # deltas -0.02, -0.04, 0.0: sd 0.02
    assert d["ci"] == pytest.approx([-0.02 - half, -0.02 + half])
    assert s["seed_deltas"]["B"]["writing.ce_nats_per_token"]["ci"] == pytest.approx([0.5, 0.5])

    order = s["ranking"]["order"]
    assert s["ranking"]["score"] == "balanced"
    assert [e["strategy"] for e in order] == ["A", "C", "B"]
    assert order[0]["score"] == pytest.approx((0.78 + 0.60) / 2)
    assert order[0]["vs_next"]["larger_than_noise"] is False  # A vs C: paired diffs 0.005,.0,0
    assert order[1]["vs_next"]["larger_than_noise"] is True  # C vs B
    assert order[2]["vs_best"]["strategy"] == "A" and order[2]["vs_best"]["larger_than_noise"]
    assert order[2]["vs_best"]["mean_diff"] > 0.2
    # the table and charts show the mean over seeds; summary.csv keeps every run with its seed
    assert s["tradeoff"]["A"]["retained_score"] == pytest.approx(0.78)
    lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert lines[0].startswith("strategy,seed,probe") and len(lines) == 1 + 9 * 3
    # ranked by the domain alone, B comes first
    rows = [dict(r, strategy=lab) for lab, res in zip(labels, results) for r in
            [dict(c, seed=res["seed"]) for c in res["comparison"]]]
    assert ranking(rows, {"legal"}, "domain")[0]["strategy"] == "B"


def test_one_seed_has_no_noise_verdict(tmp_path):
    s = write_comparison(tmp_path, ["A", "B"], [_res(0, 0.8, 0.6), _res(0, 0.2, 0.7)], title="t",
                         show=False)
    assert "seed_deltas" not in s
    assert s["ranking"]["order"][0]["score_ci"] is None
    assert s["ranking"]["order"][0]["vs_next"]["larger_than_noise"] is None
    assert (tmp_path / "summary.csv").read_text().startswith("strategy,probe,metric")
