"""Fanning a comparison out on a scheduler: ``--list`` indexes the planned runs, two ``--only``
processes side by side each write their own run folder and no summary, ``--collect`` writes the
comparison from the finished runs without training and refuses, naming them, while runs are
missing; a bad index is a one-line error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from compare_files import cli, compare_file as _file

from retain.experiments.runner import read_only
from retain.errors import UserError


def _cli(capsys, *args) -> tuple[int, str, str]:
    """``retain compare ARGS`` in this process: (exit code, stdout, stderr)."""
    return cli(capsys, "compare", *args)


def test_read_only():
    assert read_only(["1", "0,1"], 3) == [0, 1]
    for bad in (["3"], ["-1"], ["a"]):
        with pytest.raises(UserError):
            read_only(bad, 3)


def test_fan_out(tmp_path, model_dir, capsys):
    path = _file(tmp_path, model_dir)
    cmp = tmp_path / "cmp"
    names = ["full-seed0", "lora-r-2-seed0"]

    code, out, _ = _cli(capsys, path, "--list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert [ln.split("\t") for ln in lines] == [
        ["0", "full", "0", str(cmp / names[0]), "new"],
        ["1", "lora r=2", "0", str(cmp / names[1]), "new"]]
    assert not cmp.exists()  # nothing ran

    code, _, err = _cli(capsys, path, "--only", "9")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--only 9" in err

    code, _, err = _cli(capsys, path, "--collect")
    assert code == 2 and "runs 0, 1 not complete" in err and not cmp.exists()

    # two jobs of an array, side by side
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "retain.cli", "compare", str(path), "--only",
                               str(i)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    for p in procs:
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out
    for n in names:
        assert (cmp / n / "results.json").is_file()
    assert not (cmp / "comparison.json").exists()

    code, out, _ = _cli(capsys, path, "--list")
    assert [ln.split("\t")[-1] for ln in out.splitlines()] == ["complete", "complete"]

    mtimes = {n: (cmp / n / "results.json").stat().st_mtime_ns for n in names}
    code, out, err = _cli(capsys, path, "--collect")
    assert code == 0, err
    assert (cmp / "comparison.json").is_file()
    assert "2 already complete, 0 to run" in out
    assert {n: (cmp / n / "results.json").stat().st_mtime_ns for n in names} == mtimes

    # a run lost its results: collecting refuses, naming it, rather than training it
    (cmp / names[1] / "results.json").unlink()
    code, _, err = _cli(capsys, path, "--collect")
    assert code == 2 and "run 1 not complete (1: unfinished)" in err
    assert len(err.strip().splitlines()) == 1


def test_sweep_list(tmp_path, model_dir, capsys):
    from retain.experiments.sweep import run_sweep

    assert run_sweep(_file(tmp_path, model_dir), ["lr=1e-3,2e-3"], listing=True) == {}
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[:2] for ln in lines] == [
        ["0", "full lr=0.001"], ["1", "full lr=0.002"], ["2", "lora r=2 lr=0.001"],
        ["3", "lora r=2 lr=0.002"]]
    assert not (tmp_path / "cmp").exists()
