"""report_to trackers through accelerate: name handling, the missing-package error, the record ->
scalars mapping, and a real TensorBoard log read back from its event file."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.errors import UserError
from retain.report import trackers as tr

TRAIN = {"event": "train", "step": 10, "loss": 2.5, "lm_loss": 2.4, "penalty": 0.1, "lr": 1e-3,
         "grad_norm": None, "tokens_seen": 3072, "tokens_per_s": 7400.0, "elapsed_s": 0.4}


def test_normalize_report_to():
    assert tr.normalize_report_to(None) == [] and tr.normalize_report_to("none") == []
    assert tr.normalize_report_to([]) == [] and tr.normalize_report_to(["None"]) == []
    assert tr.normalize_report_to("tensorboard, wandb,tensorboard") == ["tensorboard", "wandb"]
    with pytest.raises(UserError, match="unknown tracker 'tensorbord'"):
        tr.normalize_report_to(["tensorbord"])


def test_all_means_the_installed_ones(monkeypatch):
    monkeypatch.setattr(tr, "_installed", lambda mod: mod in ("tensorboard", "mlflow"))
    assert tr.normalize_report_to("all") == ["tensorboard", "mlflow"]


def test_missing_package_is_a_user_error(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(tr, "_installed", lambda mod: False)
    with pytest.raises(UserError, match="pip install tensorboard"):
        tr.make_trackers(["tensorboard"], tmp_path)
    with pytest.raises(UserError, match="pip install comet-ml"):
        tr.make_trackers("comet_ml", tmp_path)
    assert tr.make_trackers("none", tmp_path) == ({}, {})  # nothing asked: nothing needed


def test_tracker_values():
    v = tr.tracker_values(TRAIN)
    assert v["train/loss"] == 2.5 and v["train/lr"] == 1e-3 and "train/grad_norm" not in v
    assert "train/step" not in v and "train/event" not in v
    probe = {"event": "probe", "stage": "during", "step": 20,
             "results": {"math.accuracy": 0.5, "bad": float("nan")}}
    assert tr.tracker_values(probe) == {"probe/math.accuracy": 0.5}
    assert tr.tracker_values({**probe, "stage": "after"}) == {"after/math.accuracy": 0.5}


def test_flat_config():
    assert tr.flat_config({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": "x"}) == {
        "a.b": 1, "a.c": "[1, 2]", "d": "None", "e": "x"}


def test_no_tracker_is_a_no_op():
    class Acc:
        log_with: list = []

        def log(self, *a, **k):
            raise AssertionError("must not log")

        def init_trackers(self, *a, **k):
            raise AssertionError("must not start")

    tr.start_trackers(Acc(), {"lr": 1.0})
    tr.log_metrics(Acc(), TRAIN)


def test_tensorboard_end_to_end(tmp_path: Path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install tensorboard)")
    from accelerate import Accelerator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc_kwargs, init_kwargs = tr.make_trackers(["tensorboard"], tmp_path)
    assert acc_kwargs["project_dir"] == str(tmp_path / "trackers")
    acc = Accelerator(cpu=True, **acc_kwargs)
    tr.start_trackers(acc, {"lr": 1e-3, "model": {"name": "tiny"}}, init_kwargs)
    tr.log_metrics(acc, {"event": "probe", "stage": "before", "step": 0,
                         "results": {"math.accuracy": 0.6}})
    tr.log_metrics(acc, TRAIN)
    tr.log_metrics(acc, {**TRAIN, "step": 20, "loss": 1.5})
    tr.log_metrics(acc, {"event": "probe", "stage": "during", "step": 20,
                         "results": {"math.accuracy": 0.4}})
    acc.end_training()

    files = list((tmp_path / "trackers" / tr.PROJECT).glob("events.out.tfevents.*"))  # hparams: a subfolder
    assert files
    ea = EventAccumulator(str(files[0].parent))
    ea.Reload()
    loss = [(e.step, e.value) for e in ea.Scalars("train/loss")]
    assert loss == [(10, 2.5), (20, 1.5)]
    assert [(e.step, round(e.value, 6)) for e in ea.Scalars("probe/math.accuracy")] == [(0, 0.6), (20, 0.4)]
