"""Rough edges a new user hit (issue 18, item 10): an override that compare, sweep or sequence
would drop is refused; a malformed JSONL line names its column; the NaN message offers --resume
only when a checkpoint exists; `retain diff`'s default folder tells two `.../model` apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.errors import UserError


def retain(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


# -- (b) an override the command does not honour is an error -------------------------------

@pytest.fixture
def no_runs(monkeypatch):
    """compare, sweep and sequence stubbed: the calls they got (nothing trains)."""
    from retain.experiments import compare, sequence, sweep

    calls = []
    for mod, name in ((compare, "run_compare"), (sweep, "run_sweep"), (sequence, "run_sequence")):
        monkeypatch.setattr(mod, name, lambda *a, _n=name, **k: calls.append((_n, a, k)))
    return calls


@pytest.mark.parametrize("args, needle", [
    (["sweep", "--set", "steps=1,2", "out=DIR"], "use --out DIR"),
    (["sweep", "--set", "steps=1,2", "seeds=[0,1]"], "seeds is a key of the sweep file"),
    (["sweep", "--set", "steps=1,2", "grid.lr=[1]"], "grid is a key of the sweep file"),
    (["sweep", "--set", "steps=1,2", "seed=3"], "seeds"),
    (["sweep", "out=DIR"], "use --out DIR"),  # the override in the file's place
    (["sweep", "--set", "steps=1,2", "overwrite=true"], "use --overwrite"),
    (["compare", "c.yaml", "out=DIR"], "use --out DIR"),
    (["compare", "c.yaml", "rank_by=retained"], "rank_by is a key of the compare file"),
    (["compare", "c.yaml", "title=x"], "title is a key of the compare file"),
    (["sequence", "s.yaml", "out=DIR"], "use --out DIR"),
    (["sequence", "s.yaml", "tasks=[builtin:legal]"], "tasks is a key of the sequence file"),
])
def test_an_override_the_command_would_drop_is_refused(no_runs, monkeypatch, capsys, args,
                                                        needle):
    from retain import cli

    monkeypatch.setattr(sys, "argv", ["retain", *[a.replace("DIR", "runs/x") for a in args]])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and no_runs == []
    assert "\n" not in err and "Traceback" not in err and needle.replace("DIR", "runs/x") in err, err


def test_run_keys_still_pass_as_overrides(no_runs):
    from retain.cli import app

    for cmd in ("compare", "sequence", "sweep"):
        res = CliRunner().invoke(app, [cmd, "c.yaml", "steps=3", "strategies.0.r=4", "seeds_x=1",
                                       "--out", "x"])
        assert res.exit_code == 0, res.output
    assert [c[1][-1] if c[0] == "run_sweep" else c[1][1] for c in no_runs] == [
        ["steps=3", "strategies.0.r=4", "seeds_x=1"]] * 3


# -- (c) a malformed JSON line: file:line:column: what is wrong --------------------------------

def test_malformed_json_names_line_and_column(tmp_path):
    from retain.jsonl import iter_jsonl

    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "fine"}\n{"text": "a\tb"}\n')  # a raw tab inside a string
    with pytest.raises(UserError) as e:
        list(iter_jsonl(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}:2:12: "), msg
    assert "Invalid control character" in msg and "\n" not in msg
    assert msg.endswith("Invalid control character in a string (a raw tab or newline: "
                        "write it as \\t or \\n)"), msg


def test_malformed_json_through_the_cli(tmp_path):
    p = tmp_path / "probe.jsonl"
    p.write_text('{"prompt": "2+2?", "answer": "4"}\n{"prompt": "x", "answer": 4,}\n')
    r = retain("eval", "--probes", str(p))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{p}:2:29: not valid JSON: Expecting property name" in r.stderr, r.stderr


# -- (d) the NaN message offers --resume only when there is a checkpoint ------------------------

def _failing_run(monkeypatch, tmp_path, with_checkpoint: bool) -> str:
    import retain.run as run_mod
    from retain.cli import app
    from retain.train import TrainingFailed
    from retain.train import checkpoint as ckpt

    out = tmp_path / "r"

    def fail(cfg, **k):
        if with_checkpoint:
            step = out / ckpt.DIR / "step-00000004"
            step.mkdir(parents=True)
            (step / "state.json").write_text("{}")
            assert ckpt.latest(out) == step
        raise TrainingFailed(5, "non-finite loss (nan)")

    monkeypatch.setattr(run_mod, "run", fail)
    res = CliRunner().invoke(app, ["run", "--out", str(out), "--steps", "8"])
    assert res.exit_code == 1
    return res.stderr


def test_nan_message_without_a_checkpoint_does_not_offer_resume(monkeypatch, tmp_path):
    err = _failing_run(monkeypatch, tmp_path, with_checkpoint=False)
    assert "training failed at step 5" in err and "--resume" not in err, err
    assert "no checkpoint" in err and "start over" in err


def test_nan_message_with_a_checkpoint_offers_resume(monkeypatch, tmp_path):
    err = _failing_run(monkeypatch, tmp_path, with_checkpoint=True)
    assert "--resume" in err and "step 4" in err, err


# -- (g) retain diff's default folder -----------------------------------------------------------

def test_diff_default_folders_of_two_models_named_model_differ(tmp_path, monkeypatch):
    from retain.diff import default_out

    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "runs" / "full-lr-1e-3" / "model", tmp_path / "runs" / "lora-r-8" / "model"
    for m in (a, b):
        m.mkdir(parents=True)
    da, db = default_out(str(a)), default_out(str(b) + "/")
    assert da != db and da.parent == db.parent == Path("runs")
    assert da.name == "diff-runs-full-lr-1e-3-model" and db.name == "diff-runs-lora-r-8-model"
    assert default_out("runs/full-lr-1e-3/model") == da  # relative or absolute: one folder
    assert default_out("tiny") == Path("runs/diff-tiny")
    assert default_out("Qwen/Qwen2.5-0.5B") == Path("runs/diff-Qwen-Qwen2.5-0.5B")  # a hub id
