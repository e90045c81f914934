"""`retain compare`: planning and its errors, resume (a finished run is reused, an unfinished one
re-runs, another config is refused), the base probed once per seed, and the seed statistics,
the ranking (its default must not crown a run that fell off the cliff), the judgement of each
change and the sentences of the comparison folder on synthetic results with known answers."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import yaml

from retain.experiments import compare as compare_mod
from retain.experiments import runner as runner_mod
from retain.experiments.comparison import rank_rule, ranking, write_comparison
from retain.metrics.verdicts import judge, mean_ci, t_quantile_95, verdict
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
    real_run, real_probe = run_mod.run, runner_mod.probe_base

    def run(cfg, **kw):
        calls["run"].append(str(cfg.out))
        return real_run(cfg, **kw)

    def probe_base(cfg):
        calls["probe_base"] += 1
        return real_probe(cfg)

    monkeypatch.setattr(run_mod, "run", run)
    monkeypatch.setattr(runner_mod, "probe_base", probe_base)
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
    entries = runner_mod.read_entries(f["extra"]["runs"])
    planned = runner_mod.plan(f["base"], entries, f["seeds"], f["out"], f["overrides"])
    assert [(p.label, p.seed, p.config.lr, p.config.steps, p.config.batch_size) for p in planned] == [
        ("full", 0, 1e-3, 7, 3), ("full", 1, 1e-3, 7, 3), ("lora r=2", 0, 1e-3, 7, 3),
        ("lora r=2", 1, 1e-3, 7, 3)]
    assert planned[3].config.strategies[0]["r"] == 2
    assert str(planned[2].config.out).endswith("cmp/lora-r-2-seed0")
    with pytest.raises(UserError, match="same folder name 'a-b'"):
        runner_mod.read_entries([{"label": "a b"}, {"label": "a-b"}])
    with pytest.raises(UserError, match=r"runs\[0\]: 'seed' is set by compare"):
        runner_mod.read_entries([{"label": "x", "seed": 3}])
    with pytest.raises(UserError, match="seeds: give a list of integers"):
        runner_mod.read_seeds(["a"], 0)
    with pytest.raises(UserError, match="run 'x': config: unknown key 'lrr'"):
        runner_mod.plan({}, [{"label": "x", "lrr": 1}], [0], tmp_path)


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
    # "balanced" is pinned here (it was the default; the default is now "retained_at_gain")
    s = write_comparison(tmp_path, labels, results, title="t", show=False, rank_by="balanced")
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



# -- the default ranking: the most retained among the runs that learnt the domain ----------

def _scores(label: str, seed: int, math_: float, refusal: float, instr: float,
            legal: float) -> dict:
    """Results of one run: three retained proportions (before 0.98, 1.00, 0.95) and the new
    domain's cloze accuracy (before 0.00)."""
    rows = [("math", "accuracy", "math", 0.98, math_), ("safety", "refusal_rate", "safety", 1.0,
                                                        refusal),
            ("instructions", "accuracy", "instructions", 0.95, instr),
            ("legal", "accuracy", "domain", 0.0, legal)]
    return {"seed": seed, "strategy": label, "comparison": [
        {"probe": p, "metric": m, "capability": c, "before": b, "after": a, "delta": a - b,
         "higher_is_better": True} for p, m, c, b, a in rows]}


# Like `retain demo --quick`: the high rate learns the domain fully and loses refusals and
# instructions (a cliff); replay learns part of it and keeps nearly everything.
QUICK = {"full lr=1e-3": (0.68, 0.00, 0.23, 1.00), "full lr=1e-4": (0.98, 1.00, 0.88, 0.00),
         "lora r=8": (0.85, 0.07, 0.28, 0.00), "replay 25%": (0.87, 0.97, 0.80, 0.35)}


def test_the_default_ranking_does_not_crown_a_cliff(tmp_path):
    labels = list(QUICK)
    results = [_scores(k, 0, *v) for k, v in QUICK.items()]
    old = write_comparison(tmp_path / "old", labels, results, title="t", show=False,
                           rank_by="balanced")["ranking"]
    assert old["order"][0]["strategy"] == "full lr=1e-3"  # balanced (1.00 + 0.30) / 2 = 0.65
    assert old["order"][0]["cliff"] == ["safety.refusal_rate", "instructions.accuracy"]

    s = write_comparison(tmp_path / "new", labels, results, title="t", show=False)
    rk = s["ranking"]
    assert rk["score"] == "retained_at_gain" and rk["min_gain_share"] == 0.8
    # nobody else reaches 80% of the best gain (1.00): the runs that did not fall off the cliff
    # by their domain gain, then the cliff runs (the one that reached the share first)
    assert [e["strategy"] for e in rk["order"]] == ["replay 25%", "full lr=1e-4", "full lr=1e-3",
                                                    "lora r=8"]
    assert [e["reaches_gain_share"] for e in rk["order"]] == [False, False, True, False]
    assert rk["order"][2]["cliff"] and not rk["order"][0]["cliff"]
    assert rk["order"][0]["domain_gain"] == pytest.approx(0.35)
    assert rk["order"][0]["vs_next"]["on"] == "domain_gain"
    # no cliff ahead of a cliff: placed by the rule, not by the size of a gap
    assert [e["vs_next"]["by_rule"] for e in rk["order"][:3]] == [False, True, True]
    assert rk["rule"] == (
        "Ranked by mean retained capability among the runs that reach 80% of the best new-domain "
        "gain (+1.00, so +0.80 or more); then the others, by new-domain gain; runs that fell off "
        "the cliff (a retained proportion down by 0.5 or more) come after all others, flagged.")
    # a lower share lets replay in: ranked by what it kept
    low = ranking([dict(r, strategy=res["strategy"], seed=0) for res in results
                   for r in res["comparison"]], {"legal"}, min_gain_share=0.3)
    assert low[0]["strategy"] == "replay 25%" and low[0]["reaches_gain_share"]
    assert low[0]["score"] == pytest.approx((0.87 + 0.97 + 0.80) / 3)
    assert rank_rule(low, "retained_at_gain", 0.3).startswith(
        "Ranked by mean retained capability among the runs that reach 30% of the best")


def test_retained_at_gain_ranks_the_qualified_by_what_they_kept(tmp_path):
    # B and C both reach 80% of A's gain; C keeps more; A fell off the cliff; D learnt nothing.
    # Two seeds each: the gap C - B is judged against the seed-to-seed noise.
    runs = {"A": [(0.3, 0.1, 0.2, 1.0), (0.35, 0.1, 0.25, 0.95)],
            "B": [(0.9, 0.8, 0.7, 0.85), (0.88, 0.82, 0.72, 0.9)],
            "C": [(0.95, 0.95, 0.9, 0.8), (0.97, 0.97, 0.88, 0.85)],
            "D": [(0.98, 1.0, 0.95, 0.0), (0.98, 1.0, 0.95, 0.0)]}
    labels = [k for k, v in runs.items() for _ in v]
    results = [_scores(k, seed, *v) for k, vs in runs.items() for seed, v in enumerate(vs)]
    rk = write_comparison(tmp_path, labels, results, title="t", show=False)["ranking"]
    assert [e["strategy"] for e in rk["order"]] == ["C", "B", "D", "A"]
    c = rk["order"][0]
    assert c["vs_next"]["on"] == "retained" and c["vs_next"]["larger_than_noise"] is True
    assert c["score_ci"] is not None and c["seeds"] == 2
    assert rk["order"][3]["cliff"] and rk["order"][3]["reaches_gain_share"]
    # when no run gained on the domain, every run counts and the rule says so
    flat = ranking([dict(r, strategy=k, seed=0) for k, v in QUICK.items()
                    for r in _scores(k, 0, *v[:3], 0.0)["comparison"]], {"legal"})
    assert [e["strategy"] for e in flat][:2] == ["full lr=1e-4", "replay 25%"]
    assert rank_rule(flat, "retained_at_gain").startswith("No run gained on the new domain")
    assert "balanced score" in rank_rule(flat, "balanced")


# -- the judgement of each change, and the sentence that says it ----------------------------

def _row(strategy, seed, probe, metric, cap, before, after, hib=True, paired=None):
    return {"strategy": strategy, "seed": seed, "probe": probe, "metric": metric,
            "capability": cap, "before": before, "after": after, "delta": after - before,
            "higher_is_better": hib, "paired": paired}


def _mcnemar(lost, gained, n=24):
    from retain.metrics.paired import mcnemar_exact

    p = mcnemar_exact(lost, gained)
    return {"test": "mcnemar_exact", "p": p, "changed": p < 0.05, "n": n, "lost": lost,
            "gained": gained}


def test_one_seed_is_judged_by_its_paired_test():
    boot = {"test": "paired_bootstrap", "diff": -4.4, "ci": [-4.6, -4.2], "changed": True}
    rows = [_row("full", 0, "legal", "accuracy", "domain", 0.0, 1.0, paired=_mcnemar(0, 24)),
            _row("full", 0, "legal", "ce_nats_per_token", "domain", 8.14, 3.72, False, boot),
            _row("full", 0, "safety", "refusal_rate", "safety", 1.0, 0.0, paired=_mcnemar(24, 0)),
            _row("full", 0, "safety", "over_refusal_rate", "safety", 0.07, 0.43, False,
                 _mcnemar(0, 10, 28)),  # more benign prompts refused: worse
            _row("full", 0, "instructions", "accuracy", "instructions", 0.95, 0.23,
                 paired=_mcnemar(18, 1)),
            # -0.08 on 24 items, 3 lost and 1 gained: McNemar p = 0.62, no change
            _row("full", 0, "math", "accuracy", "math", 0.98, 0.90, paired=_mcnemar(3, 1)),
            _row("full", 0, "code", "accuracy", "code", 0.95, 0.95, paired=_mcnemar(0, 0))]
    j = judge(rows)["full"]
    assert j["math.accuracy"]["change"] is None and j["safety.refusal_rate"]["change"] == "worse"
    assert j["safety.over_refusal_rate"]["change"] == "worse"
    assert j["legal.ce_nats_per_token"]["change"] == "better"
    assert verdict(j) == (
        "learnt legal (accuracy 0.00 -> 1.00, 24 of 24 items; ce 8.14 -> 3.72); lost safety "
        "(refusals 1.00 -> 0.00, 24 of 24 items; over-refusals 0.07 -> 0.43, 10 of 28 items) and "
        "instructions (0.95 -> 0.23, 18 of 24 items); kept math and code.")
    # nothing learnt is said too
    same = [dict(r, after=r["before"], delta=0.0, paired=_mcnemar(0, 0)) for r in rows[:1]]
    assert verdict(judge(same)["full"]) == "did not learn legal."


def test_several_seeds_are_judged_by_the_interval_over_seeds():
    rows = []
    for seed, (m, r) in enumerate([(0.70, 0.95), (0.68, 1.0), (0.72, 0.90)]):
        # math falls by ~0.28 every seed: lost; refusals wobble around the start: kept, even
        # though one seed's paired test says changed
        rows += [_row("A", seed, "math", "accuracy", "math", 0.98, m, paired=_mcnemar(7, 0)),
                 _row("A", seed, "safety", "refusal_rate", "safety", 0.97, r,
                      paired=_mcnemar(0, 0) if seed else _mcnemar(8, 0))]
    j = judge(rows)["A"]
    assert j["math.accuracy"]["seeds"] == 3 and j["math.accuracy"]["change"] == "worse"
    assert j["safety.refusal_rate"]["change"] is None
    half = 4.303 * 0.02 / 3 ** 0.5  # deltas -0.28, -0.30, -0.26: sd 0.02
    assert verdict(j) == (f"lost math (0.98 -> 0.70, -0.28 ± {half:.2f} over 3 seeds); "
                          f"kept safety.")


def test_a_domain_measured_by_cross_entropy_alone_counts_its_fall():
    # a JSONL domain with long answers has no accuracy: the gain is its cross-entropy's relative
    # fall, so the run that learnt nothing (B) does not win by having kept everything
    rows = []
    for label, math_after, ce_after in (("A", 0.70, 4.0), ("B", 0.98, 7.8)):
        rows += [_row(label, 0, "math", "accuracy", "math", 0.98, math_after),
                 _row(label, 0, "mydata", "ce_nats_per_token", "domain", 8.0, ce_after, False)]
    order = ranking(rows, {"mydata"})
    assert [e["strategy"] for e in order] == ["A", "B"]
    assert order[0]["domain_gain"] == pytest.approx(0.5)
    assert order[1]["domain_gain"] == pytest.approx(0.025) and not order[1]["reaches_gain_share"]


def _user_jsonl(path, n=40):
    """A user's domain file of mixed shapes (text, prompt/completion, messages)."""
    lines = []
    for i in range(n):
        w = ["alpha", "bravo", "charlie", "delta"][i % 4]
        if i % 3 == 0:
            lines.append({"text": f"clause {i}: the {w} party shall pay the {w} fee."})
        elif i % 3 == 1:
            lines.append({"prompt": f"term {i} {w}?", "completion": f" the {w} party pays."})
        else:
            lines.append({"messages": [{"role": "user", "content": f"define {w} {i}"},
                                       {"role": "assistant", "content": f"the {w} party pays."}]})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_compare_on_a_user_jsonl_measures_the_domain_and_ranks_the_learner_first(
        tmp_path, model_dir):
    """Regression: the base was probed on the retained probes only, so the held-out domain probe
    never reached the comparison, and a run that learnt nothing ranked first."""
    data = _user_jsonl(tmp_path / "contracts.jsonl")
    path = _file(tmp_path, model_dir, data=str(data), probes=["math"], steps=6, seeds=[0],
                 runs=[{"label": "learns nothing", "strategies": ["full"], "lr": 1e-7},
                       {"label": "learns", "strategies": ["full"], "lr": 3e-2}])
    summary = compare_mod.run_compare(path, show=False)
    for run in ("learns-nothing-seed0", "learns-seed0"):
        res = json.loads((tmp_path / "cmp" / run / "results.json").read_text())
        keys = {c["key"] for c in res["comparison"]}
        assert "contracts.ce_nats_per_token" in keys
        assert "contracts.ce_nats_per_token" in res["domain_gain"]
    order = summary["ranking"]["order"]
    assert [e["strategy"] for e in order][0] == "learns"
    assert order[0]["domain_gain"] > 0.05 > abs(order[1]["domain_gain"])


def test_run_refuses_before_results_of_another_probe_set(tmp_path, model_dir):
    """A caller's "before" must be of the run's own probe set (retained + domain)."""
    from retain.config import parse_config

    data = _user_jsonl(tmp_path / "contracts.jsonl")
    cfg = parse_config({"model": str(model_dir), "data": str(data), "probes": ["math"],
                        "probe_n": 2, "steps": 1, "batch_size": 2, "seq_len": 32,
                        "progress": False, "out": str(tmp_path / "r")})
    retained_only = runner_mod.probe_base(cfg.model_copy(update={"data": "builtin:legal"}))
    with pytest.raises(ValueError, match="probe set"):
        run_mod.run(cfg, before=retained_only)
    assert {r.key for r in runner_mod.probe_base(cfg)} == {
        "math.accuracy", "contracts.ce_nats_per_token"}


def test_plan_refuses_overrides_it_would_drop(tmp_path):
    """Regression: plan() set each run's out and seed after the overrides, so a library caller's
    out=/seed= override was dropped silently."""
    for bad, needle in [("out=elsewhere", "--out"), ("seed=3", "seeds"), ("runs=[]", "file")]:
        with pytest.raises(UserError, match=needle):
            runner_mod.plan({}, [{"label": "a"}], [0], tmp_path, [bad])
