"""Golden figures of one run, recorded before the part-12 refactor (one recipe, one recorder, one
runner): the same seeds must keep giving the same weights and scores. A change that moves them
on purpose re-records them (``RECORD=1 pytest tests/test_golden.py`` prints the new values)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retain.config import parse_config
from retain.run import run

GOLDEN = Path(__file__).with_name("golden_run.json")


def _figures(out: Path, res: dict) -> dict:
    weights = load_file(str(out / "model" / "model.safetensors"))
    return {"norms": {k: float(v.double().norm()) for k, v in sorted(weights.items())},
            "loss_curve": [x[1] for x in res["training"]["loss_curve"]],
            "after": {f"{r['probe']}.{r['metric']}": r["value"] for r in res["probes"]["after"]}}


def test_a_run_gives_its_recorded_weights_and_scores(model_dir, tmp_path):
    cfg = parse_config({
        "model": str(model_dir), "out": str(tmp_path / "g"), "steps": 6, "batch_size": 4,
        "seq_len": 48, "lr": 3e-3, "warmup_steps": 1, "data_n": 16, "reference_n": 8,
        "strategies": [{"name": "ewc", "n_samples": 8}, {"name": "replay", "fraction": 0.25}],
        "probes": ["math", "writing", "safety"], "probe_n": 4, "log_every": 2,
        "progress": False, "save_model": True})
    got = _figures(tmp_path / "g", run(cfg))
    if os.environ.get("RECORD"):
        GOLDEN.write_text(json.dumps(got, indent=1))
        pytest.skip("recorded")
    want = json.loads(GOLDEN.read_text())
    assert set(got["norms"]) == set(want["norms"])
    for k, v in want["norms"].items():
        assert got["norms"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert got["loss_curve"] == pytest.approx(want["loss_curve"], rel=1e-5)
    assert got["after"] == pytest.approx(want["after"], abs=1e-6)
    assert torch.__version__  # the recorded figures are of the pinned torch (Makefile)
