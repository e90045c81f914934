"""The guard: limit parsing, the check/rollback logic on planted scores, and a real run on a tiny
Llama whose guard probe is planted to fail after a known step: training stops (or goes on), the
final weights are the checkpoint of the last passing step, and results.json says so."""

from __future__ import annotations

import importlib

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from retain import guard as guard_mod
from retain.config import load_run_config, parse_config
from retain.errors import UserError
from retain.guard import Guard
from retain.guard_limits import GuardConfig, Limit, parse_limit, select_probes
from retain.probes import load_probes
from retain.probes.base import ProbeResult
from retain.report import results as rr
from retain.run import run
from retain.train.callbacks import guard as guard_cb


# -- parsing ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,limit", [
    ("safety.refusal_rate>=0.9", Limit("safety.refusal_rate", ">=", 0.9)),
    (" math.accuracy >= 0.8 ", Limit("math.accuracy", ">=", 0.8)),
    ("writing.ce_nats_per_token<=2.0", Limit("writing.ce_nats_per_token", "<=", 2.0)),
    ("safety.over_refusal_rate<0.2", Limit("safety.over_refusal_rate", "<", 0.2)),
    ("max_forgetting=0.05", Limit("max_forgetting", "<=", 0.05)),
    ("max_forgetting<=5e-2", Limit("max_forgetting", "<=", 0.05)),
])
def test_parse_valid(text, limit):
    assert parse_limit(text) == limit
    assert parse_limit(limit.text) == limit  # the stored form parses back


@pytest.mark.parametrize("text", ["math.accuracy", "math.accuracy=0.8", "math.accuracy>=high",
                                  "accuracy>=0.8", "max_forgetting>=0.1", "max_forgetting=-1",
                                  "math.accuracy>=nan", ">=0.5", "math.accuracy=>0.8"])
def test_parse_invalid_names_the_text(text):
    with pytest.raises(UserError, match="guard limit") as e:
        parse_limit(text)
    assert repr(text) in str(e.value)


def test_guard_config_forms():
    c = parse_config({"guard": ["safety.refusal_rate>=0.9", "max_forgetting=0.05"]})
    assert c.guard.limits == ["safety.refusal_rate>=0.9", "max_forgetting<=0.05"]
    assert c.guard.action == "stop" and c.guard.every is None and c.guard.n == 24
    c = load_run_config(None, ["guard.every=5", "guard.action=keep"],
                        guard={"limits": "math.accuracy>=0.8"})
    assert (c.guard.every, c.guard.action, c.guard.limits) == (5, "keep", ["math.accuracy>=0.8"])
    assert parse_config({}).guard is None
    for bad, msg in [({"guard": []}, "at least one"), ({"guard": {"limits": ["math.accuracy>=1"],
                                                                  "every": 0}}, "guard.every"),
                     ({"guard": {"limits": ["math.accuracy>=1"], "evry": 2}}, "limits, every")]:
        with pytest.raises(UserError, match=msg):
            parse_config(bad)


def test_proportion_metrics_agree_with_the_plots():
    from retain.report.plots import PROPORTION_METRICS

    # one definition, shared (it used to be a copy kept equal by this test)
    assert guard_mod.PROPORTION_METRICS is PROPORTION_METRICS


def test_select_probes():
    probes = load_probes(["math", "writing", "safety", "legal"], n=2, seed=0)
    keys = lambda ps: [f"{p.name}.{p.metric}" for p in ps]  # noqa: E731
    assert keys(select_probes(probes, [parse_limit("safety.refusal_rate>=0.9")])) == [
        "safety.refusal_rate"]
    # max_forgetting: every retained proportion metric (not cross-entropy, not the domain)
    assert keys(select_probes(probes, [parse_limit("max_forgetting=0.1")])) == [
        "math.accuracy", "safety.refusal_rate", "safety.over_refusal_rate"]
    with pytest.raises(UserError, match="no probe 'code.accuracy'"):
        select_probes(probes, [parse_limit("code.accuracy>=0.5")])


# -- the logic, on planted scores --------------------------------------------------------------

def _results(values: dict[str, float]) -> list[ProbeResult]:
    meta = {"math.accuracy": ("math", True), "safety.over_refusal_rate": ("safety", False),
            "legal.accuracy": ("domain", True)}
    return [ProbeResult(k.split(".")[0], k.split(".")[1], v, 10, 0, 1, meta[k][1], meta[k][0],
                        "generation") for k, v in values.items()]


def _planted(seq: list[dict[str, float]]):
    calls = iter(seq)
    return lambda model: _results(next(calls))


def test_max_forgetting_uses_oriented_drops_of_retained_metrics():
    lin = torch.nn.Linear(2, 2)
    seq = [{"math.accuracy": 0.8, "safety.over_refusal_rate": 0.1, "legal.accuracy": 0.9},
           {"math.accuracy": 0.78, "safety.over_refusal_rate": 0.12, "legal.accuracy": 0.1},
           {"math.accuracy": 0.8, "safety.over_refusal_rate": 0.3, "legal.accuracy": 0.9}]
    g = Guard(GuardConfig(limits=["max_forgetting=0.05"], confirm="point"), 2, _planted(seq), say=lambda s: None)
    g.start(lin)
    assert g.check(2, lin) is False  # drops 0.02 and 0.02; the domain's fall does not count
    assert g.check(4, lin) is True  # over-refusal up 0.2 = an oriented drop of 0.2
    (e,) = g.events
    assert e["step"] == 4 and e["probe"] == "safety.over_refusal_rate" and e["action"] == "stop"
    assert e["value"] == pytest.approx(0.2) and e["limit"] == "max_forgetting<=0.05"


def test_keep_trains_on_and_rolls_back_to_the_last_passing_check():
    lin = torch.nn.Linear(2, 2, bias=False)
    ok, bad = {"math.accuracy": 0.9}, {"math.accuracy": 0.1}
    cfg = GuardConfig(limits=["math.accuracy>=0.5"], action="keep", confirm="point")
    g = Guard(cfg, 1, _planted([ok, ok, bad, ok, bad, bad]), say=lambda s: None)
    g.start(lin)
    weights = {}
    g.keep(0, lin)
    for step in range(1, 6):
        with torch.no_grad():
            lin.weight.fill_(float(step))
        weights[step] = lin.weight.clone()
        assert g.check(step, lin) is False  # keep: never asks to stop
    g.finish(5, lin)
    assert g.rolled_back_to_step == 3  # passes at 1 and 3; 4 and 5 fail
    assert torch.equal(lin.weight, weights[3])
    s = g.summary()
    assert [(e["step"], e["action"]) for e in s["events"]] == [
        (2, "continue"), (4, "continue"), (5, "continue"), (5, "rollback")]
    back = s["events"][-1]  # the end's rollback is an event: kept, thrown away, why
    assert back["to_step"] == 3 and back["discarded"] == [4, 5]
    assert [c["limit"] for c in back["crossed"]] == ["math.accuracy>=0.5"]
    assert back["kept"]["step"] == 3 and back["kept"]["values"] == {"math.accuracy": 0.9}
    assert [c["passed"] for c in s["checks"]] == [True, True, False, True, False, False]


def test_recovering_by_the_end_needs_no_rollback():
    lin = torch.nn.Linear(2, 2)
    ok, bad = {"math.accuracy": 0.9}, {"math.accuracy": 0.1}
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], action="keep", confirm="point"), 2,
              _planted([ok, bad, ok]), say=lambda s: None)
    g.start(lin)
    g.keep(0, lin)
    g.check(2, lin)
    g.finish(3, lin)  # the last check (2) was earlier: checks the final weights, which pass
    assert g.rolled_back_to_step is None and len(g.events) == 1 and g.checks[-1]["step"] == 3


def test_a_limit_failing_before_training_is_refused():
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], confirm="point"), 2, _planted([{"math.accuracy": 0.25}]),
              say=lambda s: None)
    with pytest.raises(UserError, match=r"already fails before training \(math.accuracy = 0.250"):
        g.start(torch.nn.Linear(2, 2))


# -- a real run: tiny Llama, full fine-tuning, a planted drop after step 4 ----------------------



@pytest.fixture
def planted(monkeypatch):
    """The guard's scorer: math.accuracy 1.0 up to call ``drop_after``, then 0.0; records the
    trainable weights it saw at each call (call 0 is before training)."""
    seen: list[dict[str, torch.Tensor]] = []
    state = {"drop_after": 2}

    def score(model, tok, probes, **kw):
        seen.append({n: p.detach().clone() for n, p in model.named_parameters()})
        value = 1.0 if len(seen) - 1 <= state["drop_after"] else 0.0
        return [ProbeResult(p.name, p.metric, value, len(p.items), 0, 1, True, p.capability,
                            p.kind) for p in probes]

    monkeypatch.setattr(guard_cb, "guard_scorer",
                        lambda probing, probes: lambda model: score(model, None, probes))
    return seen, state


def _config(model_dir, out, **kw):
    base = dict(model=str(model_dir), out=str(out), steps=8, batch_size=2, seq_len=32, lr=3e-3,
                warmup_steps=0, data_n=8, reference_n=4, probes=["math"], probe_n=2,
                log_every=2, progress=False, save_model=True,
                guard={"limits": ["math.accuracy>=0.5"], "every": 2, "n": 2, "confirm": "point",
                       "verify": False})  # the planted scorer counts calls, not weights
    return parse_config({**base, **kw})


def _saved(out):
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.mark.parametrize("action", ["stop", "keep"])
def test_run_stops_and_rolls_back(model_dir, tmp_path, planted, action, capsys):
    seen, state = planted
    state["drop_after"] = 2  # checks at steps 2 and 4 pass; step 6 fails
    cfg = _config(model_dir, tmp_path / action, guard={"limits": ["math.accuracy>=0.5"],
                                                       "every": 2, "n": 2, "action": action,
                                                       "confirm": "point", "verify": False})
    res = run(cfg)
    g = res["guard"]
    assert g["rolled_back_to_step"] == 4
    assert g["limits"] == ["math.accuracy>=0.5"]
    first = g["events"][0]
    assert {k: first[k] for k in ("step", "limit", "value", "action", "probe")} == {
        "step": 6, "limit": "math.accuracy>=0.5", "value": 0.0,
        "action": "stop" if action == "stop" else "continue", "probe": "math.accuracy"}
    assert first["n"] == 2 and 0 < first["p_value"] < 0.5  # the evidence rides with the event
    end = 6 if action == "stop" else 8
    assert g["events"][-1]["action"] == "rollback" and g["events"][-1]["to_step"] == 4
    assert g["events"][-1]["discarded"] == [5, end]
    if action == "stop":
        assert res["training"]["steps"] == 6 and res["training"]["stopped_early"]
        assert len(seen) == 4  # before, 2, 4, 6
    else:
        assert res["training"]["steps"] == 8 and [e["step"] for e in g["events"]] == [6, 8, 8]
    # the saved weights are the ones the guard saw at step 4 (call 2), not the trained ones
    final, at4, at6 = _saved(tmp_path / action), seen[2], seen[3]
    assert any(not torch.equal(at4[n], at6[n]) for n in at4)  # training did move them
    for name, w in final.items():
        assert torch.equal(w, at4[name]), name
    err = " ".join(capsys.readouterr().err.split())
    assert f"the run ends with step 4's weights, steps 5-{end} thrown away" in err


def test_run_without_crossing_keeps_the_trained_weights(model_dir, tmp_path, planted):
    seen, state = planted
    state["drop_after"] = 99
    res = run(_config(model_dir, tmp_path / "ok", steps=5, probe_every=3,
                      guard={"limits": ["math.accuracy>=0.5"], "every": 2, "n": 2}))
    g = res["guard"]
    # the final check scored the weights the run ends with on the full-size probes (probe_n)
    assert [(c["step"], c["passed"]) for c in g["final_check"]] == [(5, True)]
    assert g["events"] == [] and g["rolled_back_to_step"] is None
    assert [c["step"] for c in g["checks"]] == [0, 2, 4]  # the last step: by the final check
    records = rr.read_jsonl(tmp_path / "ok" / "metrics.jsonl")  # probes keep their own rhythm
    assert [(r["stage"], r["step"]) for r in records if r["event"] == "probe"] == [
        ("before", 0), ("during", 3), ("after", 5)]
    assert [(r["step"], r.get("stage")) for r in records if r["event"] == "guard"] == [
        (0, "before"), (2, None), (4, None), (5, "verify")]
    assert res["training"]["steps"] == 5 and not res["training"]["stopped_early"]
    final = _saved(tmp_path / "ok")
    assert all(torch.equal(w, seen[-1][n]) for n, w in final.items())


def test_lora_checkpoint_holds_the_adapter_only(model_dir):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(LlamaForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], confirm="point"), 1, lambda m: [], say=lambda s: None)
    g.keep(0, model)
    assert g._good_state and all("lora_" in n for n in g._good_state)


def test_cli_guard_flags_reach_the_config(monkeypatch):
    from typer.testing import CliRunner

    from retain.cli import app
    from retain.report import tables

    seen = []
    monkeypatch.setattr(importlib.import_module("retain.run"), "run", lambda cfg: seen.append(cfg) or {})
    monkeypatch.setattr(tables, "print_run", lambda res: None)
    res = CliRunner().invoke(app, ["run", "--steps", "5", "--guard", "math.accuracy>=0.5",
                                   "-g", "max_forgetting=0.1", "--guard-every", "2",
                                   "--guard-action", "keep", "guard.n=4"])
    assert res.exit_code == 0, res.output
    g = seen[0].guard
    assert (g.limits, g.every, g.action, g.n) == (
        ["math.accuracy>=0.5", "max_forgetting<=0.1"], 2, "keep", 4)
    res = CliRunner().invoke(app, ["run", "--guard", "math.accuracy=>0.5"])
    assert isinstance(res.exception, UserError) and "math.accuracy=>0.5" in str(res.exception)


# -- evidence and back-off ----------------------------------------------------------------------

def _with_ci(value, lo, hi):
    return lambda model: [ProbeResult("math", "accuracy", value, 24, lo, hi, True, "math",
                                      "generation")]


def test_interval_confirm_ignores_noise_and_sees_a_clear_crossing():
    lin = torch.nn.Linear(2, 2)
    scores = iter([(0.9, 0.7, 1.0), (0.4, 0.25, 0.6), (0.3, 0.15, 0.45)])
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], confirm="interval"), 2,
              lambda m: _with_ci(*next(scores))(m), say=lambda s: None)
    g.start(lin)
    g.keep(0, lin)
    assert g.decide(2, lin).stop is False  # 0.40, but its interval reaches 0.60: not evidence
    d = g.decide(4, lin)  # the whole interval [0.15, 0.45] is below 0.5: crossed
    assert d.stop and g.events[0]["value"] == 0.3


def test_backoff_rolls_back_and_scales_the_rate_then_stops():
    lin = torch.nn.Linear(2, 2)
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], action="backoff", max_backoffs=2,
                          backoff_factor=0.5, confirm="point"), 1,
              _planted([{"math.accuracy": 0.9}, {"math.accuracy": 0.9}] + [{"math.accuracy": 0.1}] * 3),
              say=lambda s: None)
    g.start(lin)
    g.keep(0, lin)
    assert g.decide(1, lin).stop is False  # passes: step 1 is the last good checkpoint
    kept = {k: v.clone() for k, v in lin.state_dict().items()}
    with torch.no_grad():
        lin.weight.add_(1.0)
    d1 = g.decide(2, lin)
    assert not d1.stop and d1.lr_scale == 0.5 and torch.equal(d1.restore["weight"], kept["weight"])
    d2 = g.decide(3, lin)
    assert not d2.stop and d2.lr_scale == 0.5 and g.lr_scale == 0.25
    assert g.decide(4, lin).stop  # the third crossing: no back-off left
    assert [e["action"] for e in g.events] == ["backoff", "backoff", "stop"]
    assert g.summary()["backoffs"] == 2


def test_the_loop_carries_out_a_restore_and_an_lr_scale():
    from retain.train import TrainConfig, train
    from retain.train.callbacks import Callback, Decision

    torch.manual_seed(0)

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3))

        def forward(self, input_ids, attention_mask=None, labels=None):
            loss = (self.w * input_ids[:, :3].float()).mean()
            return type("Out", (), {"loss": loss, "logits": loss.view(1, 1, 1)})()

    lm = LM()
    seen = []

    class Back(Callback):
        def on_step_end(self, state):
            seen.append(state.optimizer.param_groups[0]["lr"])
            if state.step == 2:
                return Decision(restore={"w": torch.full((3,), 7.0)}, lr_scale=0.1)

    data = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}] * 4
    train(lm, data, pad_id=0, callbacks=[Back()], progress=False,
          config=TrainConfig(lr=1e-2, steps=3, batch_size=2, warmup_steps=0, schedule="constant"))
    assert seen[0] == seen[1] == pytest.approx(1e-2) and seen[2] == pytest.approx(1e-3)
    assert torch.all((lm.w - 7.0).abs() < 2e-3)  # restored at step 2, one small step after


# -- what a check keeps, and the final check on the full-size probes ----------------------------

def _scores(*triples):
    """A scorer returning math.accuracy (value, ci_low, ci_high) from ``triples`` in turn."""
    it = iter(triples)
    return lambda model: _with_ci(*next(it))(model)


def _set(lin, value: float) -> torch.Tensor:
    with torch.no_grad():
        lin.weight.fill_(value)
    return lin.weight.detach().clone()


@pytest.mark.parametrize("confirm", ["interval", "sequential"])
def test_a_point_below_a_limit_inside_the_noise_fails_nothing(confirm):
    """Regression (issue 24): a check whose point estimate is below the limit but whose evidence
    is not (0.40 with an interval reaching 0.60) trained on, yet was not kept as the last good
    checkpoint, and the final weights' equally noisy 0.45 rolled the run back to step 2. One rule
    decides everywhere now: that check is kept and the run ends with its final weights."""
    lin = torch.nn.Linear(2, 2, bias=False)
    g = Guard(GuardConfig(limits=["math.accuracy>=0.5"], action="backoff", confirm=confirm), 2,
              _scores((0.9, 0.7, 1.0), (0.8, 0.6, 0.95), (0.4, 0.25, 0.6), (0.45, 0.3, 0.6)),
              say=lambda s: None, looks=3)
    g.start(lin)
    _set(lin, 0.0)
    g.keep(0, lin)
    _set(lin, 2.0)
    assert g.decide(2, lin).restore is None and g.good_step == 2
    at4 = _set(lin, 4.0)
    d4 = g.decide(4, lin)
    assert not d4.stop and d4.restore is None and d4.lr_scale is None  # not evidence
    assert g.good_step == 4 and g.checks[-1]["below"] == ["math.accuracy>=0.5"]
    at5 = _set(lin, 5.0)
    g.finish(5, lin)  # the final weights (0.45, inside the noise) are kept
    assert g.rolled_back_to_step is None and torch.equal(lin.weight, at5)
    assert not torch.equal(at4, at5) and g.events == [] and g.backoffs == 0


def test_verify_rolls_back_when_the_full_size_probe_fails():
    lin = torch.nn.Linear(2, 2, bias=False)
    small = _scores((0.9, 0.7, 1.0), (0.9, 0.7, 1.0), (0.9, 0.7, 1.0))
    full = _scores((0.6, 0.5, 0.7), (0.95, 0.9, 1.0))  # final weights fail, step 2 passes
    g = Guard(GuardConfig(limits=["math.accuracy>=0.8"], confirm="interval"), 2, small,
              say=lambda s: None, verify=full)
    g.start(lin)
    g.keep(0, lin)
    at2 = _set(lin, 2.0)
    g.decide(2, lin)
    _set(lin, 3.0)
    g.finish(3, lin)  # passes on the small check, fails at full size: step 2, which passes
    assert torch.equal(lin.weight, at2) and g.rolled_back_to_step == 2
    s = g.summary()
    assert [(c["step"], c["passed"]) for c in s["final_check"]] == [(3, False), (2, True)]
    assert all(e["action"] != "unmet" for e in s["events"])


def test_verify_reports_limits_it_cannot_meet():
    lin = torch.nn.Linear(2, 2, bias=False)
    g = Guard(GuardConfig(limits=["math.accuracy>=0.8"], confirm="interval"), 2,
              _scores((0.9, 0.7, 1.0), (0.9, 0.7, 1.0)), say=lambda s: None,
              verify=_scores((0.6, 0.5, 0.7), (0.7, 0.6, 0.75)))
    g.start(lin)
    g.keep(0, lin)
    g.finish(2, lin)
    back, e = g.summary()["events"]
    assert back["action"] == "rollback" and back["to_step"] == 0 and back["discarded"] == [1, 2]
    assert back["kept"]["values"] == {"math.accuracy": 0.7}  # the final check of step 0
    assert e["action"] == "unmet" and e["step"] == 0 and e["value"] == 0.7
    assert GuardConfig(limits=["math.accuracy>=0.8"], verify=False).verify is False


def test_a_stopped_run_killed_after_training_resumes_to_the_same_end(model_dir, tmp_path,
                                                                     planted, monkeypatch):
    """Regression: a run the guard stopped at step 6, killed before it finished, resumed from its
    last checkpoint (step 4) and trained on to step 8. Now the stop step is checkpointed and a
    resume from it ends there, with the uninterrupted run's weights and guard record."""
    import retain.metrics.outcome as outcome_mod

    seen, state = planted
    state["drop_after"] = 2  # checks at 2 and 4 pass; step 6 fails
    kw = dict(checkpoint_every=4, guard={"limits": ["math.accuracy>=0.5"], "every": 2, "n": 2,
                                         "action": "stop", "confirm": "point", "verify": False})
    whole = run(_config(model_dir, tmp_path / "whole", **kw))
    assert whole["training"]["steps"] == 6

    seen.clear()
    real = outcome_mod.outcome

    def killed(*a, **k):  # the process dies once training and the after-probes are done
        raise KeyboardInterrupt
    monkeypatch.setattr(outcome_mod, "outcome", killed)
    with pytest.raises(KeyboardInterrupt):
        run(_config(model_dir, tmp_path / "killed", **kw))
    assert not (tmp_path / "killed" / rr.RESULTS_FILE).exists()
    monkeypatch.setattr(outcome_mod, "outcome", real)
    state["drop_after"] = 99  # a resumed run that trained on would now pass every check
    res = run(_config(model_dir, tmp_path / "killed", resume=True, **kw))
    assert res["training"]["resumed_from_step"] == 6
    assert res["training"]["steps"] == 6 and res["training"]["stopped_early"]
    assert res["guard"]["events"] == whole["guard"]["events"]
    assert res["guard"]["rolled_back_to_step"] == 4
    a, b = _saved(tmp_path / "whole"), _saved(tmp_path / "killed")
    assert all(torch.equal(a[n], b[n]) for n in a)
    steps = [r["step"] for r in rr.read_jsonl(tmp_path / "killed" / "metrics.jsonl")
             if r["event"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 6


# -- the run-wide test (confirm: sequential, the default) ----------------------------------------

def _items_result(key, oks, capability="math"):
    probe, metric = key.split(".")
    v = sum(oks) / len(oks)
    return ProbeResult(probe, metric, v, len(oks), 0.0, 1.0, True, capability, "generation",
                       items=[{"prompt": f"q{i}", "ok": ok} for i, ok in enumerate(oks)])


def _seq(*checks):
    """A scorer returning, call after call, results of {key: [ok, ...]}."""
    it = iter(checks)
    return lambda model: [_items_result(k, v) for k, v in next(it).items()]


def test_sequential_splits_alpha_over_looks_and_tests():
    lin = torch.nn.Linear(2, 2)
    ok24 = [True] * 24
    eighteen = [True] * 18 + [False] * 6  # 0.75 on 24 items
    cfg = GuardConfig(limits=["math.accuracy>=0.9", "code.accuracy>=0.5"])
    assert cfg.confirm == "sequential" and cfg.alpha == 0.05
    g = Guard(cfg, 10, _seq({"math.accuracy": ok24, "code.accuracy": ok24},
                            {"math.accuracy": eighteen, "code.accuracy": ok24}),
              say=lambda s: None, looks=10)
    g.start(lin)
    g.keep(0, lin)
    assert not g.decide(10, lin).stop  # 0.75 < 0.9, but not beyond doubt at 0.05 / 20
    assert g.alpha_each == pytest.approx(0.05 / 20)
    assert g.summary()["looks"] == 10 and g.checks[-1]["passed"] is True  # kept: not evidence
    assert g.good_step == 10 and g.checks[-1]["below"] == ["math.accuracy>=0.9"]
    # one look, one limit: the same 0.75 is evidence at 0.05 (its Wilson upper bound < 0.9)
    g1 = Guard(GuardConfig(limits=["math.accuracy>=0.9"]), 10,
               _seq({"math.accuracy": ok24}, {"math.accuracy": eighteen}), say=lambda s: None)
    g1.start(lin)
    g1.keep(0, lin)
    assert g1.decide(10, lin).stop


def test_max_forgetting_is_a_paired_test_on_the_same_items():
    lin = torch.nn.Linear(2, 2)
    before = [True] * 12 + [False] * 12
    swapped = [False] * 6 + [True] * 6 + [True] * 6 + [False] * 6  # 6 lost, 6 gained: no drop
    lost_many = [False] * 10 + [True] * 2 + [False] * 12  # 10 of 12 lost: drop 0.42
    cfg = GuardConfig(limits=["max_forgetting=0.05"])
    g = Guard(cfg, 1, _seq({"math.accuracy": before}, {"math.accuracy": swapped},
                           {"math.accuracy": lost_many}), say=lambda s: None, looks=2)
    g.start(lin)
    g.keep(0, lin)
    assert not g.decide(1, lin).stop  # the same score, item for item a wash
    d = g.decide(2, lin)
    assert d.stop and g.events[0]["probe"] == "math.accuracy"
    assert g.events[0]["value"] == pytest.approx(10 / 24)
    from retain.metrics.bounds import paired_drop_bound, wilson_bound
    assert paired_drop_bound(before, swapped, 1.645) < 0
    assert paired_drop_bound([True] * 24, [True] * 21 + [False] * 3, 1.645) < 0.05  # 3 lost: noise
    assert wilson_bound(0.5, 24, 1.96, True) > 0.65 > wilson_bound(0.5, 400, 1.96, True)


def test_a_limit_no_proportion_can_meet_is_refused_when_read():
    from retain.probes import load_probes

    probes = load_probes(["safety"], n=4)
    for bad in ["safety.refusal_rate>=1.5", "safety.refusal_rate>1", "safety.over_refusal_rate<0",
                "safety.refusal_rate<=-0.1"]:
        with pytest.raises(UserError, match="no model can meet it"):
            select_probes(probes, [parse_limit(bad)])
    select_probes(probes, [parse_limit("safety.refusal_rate>=1")])  # reachable: kept


# -- issue 24: the evidence of a crossing, and the final check's size ----------------------------

def test_the_p_value_is_the_test_s_own():
    """A limit is crossed exactly when the event's p-value is at most the error rate it is held
    to; the p-value is the one-sided Wilson test of "the limit holds"."""
    from retain.metrics.bounds import wilson_bound, z_of

    lin = torch.nn.Linear(2, 2)
    for k, crossed in ((14, True), (19, False)):  # 14/24 and 19/24 against >= 0.9 at 0.05 / 2
        oks = [True] * k + [False] * (24 - k)
        g = Guard(GuardConfig(limits=["math.accuracy>=0.9"]), 1,
                  _seq({"math.accuracy": [True] * 24}, {"math.accuracy": oks}),
                  say=lambda s: None, looks=2)
        g.start(lin)
        g.keep(0, lin)
        values = g._values(lin)
        p = g._p_value("math.accuracy>=0.9", values, g.before, g.before_items)
        assert bool(g._failures(values)) is crossed
        assert (p <= g.alpha_each) is crossed and 0 < p < 1
        assert wilson_bound(k / 24, 24, z_of(p), True) == pytest.approx(0.9, abs=1e-6)


def test_a_small_final_check_is_called_weak():
    lin = torch.nn.Linear(2, 2)
    for n, weak in ((24, True), (200, False)):
        said = []
        full = lambda m, n=n: [_items_result("math.accuracy", [True] * n)]  # noqa: E731
        g = Guard(GuardConfig(limits=["math.accuracy>=0.5"]), 2,
                  _seq({"math.accuracy": [True] * 24}), say=said.append, verify=full)
        g.start(lin)
        g.keep(0, lin)
        g.finish(2, lin)
        s = g.summary()
        assert s["final_n"] == n and s["weak_verdict"] is weak
        assert any("weak verdict" in line for line in said) is weak


def test_verify_n_sizes_the_final_check_alone():
    from retain.probe_set import guard_parts, pool_field

    specs = ["instructions"]
    probes = load_probes(specs, n=24, seed=0)
    lim = ["instructions.accuracy>=0.8"]
    rep, checks, sel, split = guard_parts(GuardConfig(limits=lim, verify_n=40), specs, probes,
                                          24, 0)
    rep0, _, sel0, _ = guard_parts(GuardConfig(limits=lim), specs, probes, 24, 0)

    def items(p):
        return [repr(x) for x in getattr(p, pool_field(p))]
    assert len(items(sel[0])) == 40 and len(items(sel0[0])) == 24
    assert items(rep[0]) == items(rep0[0])  # what the run reports on does not change
    assert not set(items(rep[0])) & set(items(sel[0]))
    assert items(checks[0]) == items(sel[0])[:24]
    assert split["instructions.accuracy"] == {"selection": 40, "reporting": 24}
    with pytest.raises(Exception):
        GuardConfig(limits=lim, verify_n=0)
