"""The run's probe set, decided once (``retain.probe_set``): retained + domain, and for guarded
probes a selection part (the guard chooses on it) disjoint from the reporting part (results
report it), both sizes recorded."""

from __future__ import annotations

import json

import pytest

from retain.config import parse_config
from retain.models import load_tokenizer
from retain.probe_set import probe_set, split_selection, with_items
from retain.probes import load_probes


def _texts(p):
    return {repr(x) for x in getattr(p, "items", None) or getattr(p, "texts")}


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


def test_guarded_probes_select_apart_from_what_they_report(tok, tmp_path):
    cfg = parse_config({"probes": ["math", "safety", "writing"], "probe_n": 20, "seed": 3,
                        "out": str(tmp_path / "r"),
                        "guard": {"limits": ["safety.refusal_rate>=0.9", "max_forgetting=0.05"],
                                  "n": 8}})
    ps = probe_set(cfg, tok)
    report = {f"{p.name}.{p.metric}": p for p in ps.probes}
    verify = {f"{p.name}.{p.metric}": p for p in ps.guard_verify}
    checks = {f"{p.name}.{p.metric}": p for p in ps.guard_checks}
    # max_forgetting guards every retained proportion probe; writing (cross-entropy) is not guarded
    assert set(verify) == set(checks) == set(ps.split) == {
        "math.accuracy", "safety.refusal_rate", "safety.over_refusal_rate"}
    for key, sel in verify.items():
        assert not _texts(sel) & _texts(report[key]), key  # disjoint by content
        assert _texts(checks[key]) <= _texts(sel) and len(checks[key]) == min(8, len(sel))
        assert ps.split[key] == {"selection": len(sel), "reporting": len(report[key])}
    # a suite with room keeps its reporting items as without a guard; a small one is carved
    plain = {f"{p.name}.{p.metric}": p for p in load_probes(cfg.probes, n=20, seed=3)}
    assert _texts(report["math.accuracy"]) == _texts(plain["math.accuracy"])
    assert ps.split["math.accuracy"] == {"selection": 20, "reporting": 20}
    assert report["writing.ce_nats_per_token"] is not None
    # the same config gives the same split
    again = probe_set(cfg, tok)
    assert [_texts(p) for p in again.guard_verify] == [_texts(p) for p in ps.guard_verify]


def test_a_small_pool_is_carved_out_of_the_reporting_items():
    (p,) = load_probes(["math"], n=10, seed=0)
    rep, sel, sizes = split_selection([p], [p], 10, seed=1)  # the pool has nothing fresh
    assert sizes["math.accuracy"] == {"selection": 5, "reporting": 5}
    assert not _texts(rep[0]) & _texts(sel[0]) and _texts(rep[0]) | _texts(sel[0]) == _texts(p)
    assert len(with_items(p, [0, 2])) == 2


def test_a_guarded_run_reports_the_split_and_verifies_on_the_selection(model_dir, tmp_path):
    from retain.run import run

    cfg = parse_config({"model": str(model_dir), "out": str(tmp_path / "r"), "steps": 2,
                        "batch_size": 2, "seq_len": 32, "data_n": 4, "reference_n": 4,
                        "probes": ["math"], "probe_n": 10, "progress": False,
                        "guard": {"limits": ["max_forgetting=1"], "n": 4}})
    res = run(cfg)
    assert res["probe_split"] == {"math.accuracy": {"selection": 10, "reporting": 10}}
    after = next(r for r in res["probes"]["after"] if r["probe"] == "math")
    assert len(after["items"]) == 10
    g = res["guard"]
    # the check at step 1 and the final check (which judges step 2: no check there)
    assert g["confirm"] == "sequential" and g["looks"] == 1 + 1
    assert g["final_check"] and g["final_check"][0]["passed"]
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["probe_split"] == res["probe_split"]
