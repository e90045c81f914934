"""``--launcher ray`` and ``--launcher slurm`` (issue 22, item 3): the runs submitted as jobs on a
local Ray (2 CPUs) and on submitit's local executor give the sequential run's results, bit for
bit (a sweep's too, through the same path); a failed run is reported by index with its log, the others complete, and the command the
error names reruns it alone; resources reach the jobs and the SLURM job array (one per set of
resources, checked on the script submitit hands a stand-in ``sbatch``); a missing package, no
``sbatch`` or a bad ``launcher:`` key is a one-line error, exit 2."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import pytest
from compare_files import cli, compare_file

from retain.data import write_builtin_jsonl
from retain.experiments.compare import run_compare
from retain.experiments.launch import Job, arrays, run_job

NAMES = ["full-seed0", "lora-r-2-seed0"]
# what a run computed (its folder, timings and creation time aside)
COMPUTED = ("comparison", "probes", "drift", "domain_gain", "strategy_info")


def _computed(folder):
    res = json.loads((folder / "results.json").read_text())
    assert res["status"] == "complete"
    return {k: res.get(k) for k in COMPUTED} | {
        "loss_curve": res["training"]["loss_curve"], "final_loss": res["training"]["final_loss"]}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, model_dir):
    """The tiny comparison run one run after another in this process: what launchers must give."""
    tmp = tmp_path_factory.mktemp("sequential")
    run_compare(compare_file(tmp, model_dir), show=False)
    return {n: _computed(tmp / "cmp" / n) for n in NAMES}


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_ray_gives_the_sequential_results(tmp_path, model_dir, capsys, sequential, ray_cluster):
    runs = [{"label": "full", "strategies": ["full"], "lr": 1e-3},
            {"label": "lora r=2", "strategies": [{"name": "lora", "r": 2}], "lr": 1e-3,
             "resources": {"cpus": 2}}]  # not a RunConfig key: the same run as the sequential one
    path = compare_file(tmp_path, model_dir, runs=runs)
    out = tmp_path / "ray"
    code, stdout, err = cli(capsys, "compare", path, "--out", out, "--launcher", "ray")
    assert code == 0, err
    assert "[0] full (seed 0): done" in stdout and "[1] lora r=2 (seed 0): done" in stdout
    assert {n: _computed(out / n) for n in NAMES} == sequential
    assert json.loads((out / "comparison.json").read_text())["runs"]  # collected
    # each job ran the recipe, threads as its cpus
    head = [(out / "launch" / f"run-{i}.log").read_text().splitlines()[0] for i in (0, 1)]
    assert "OMP_NUM_THREADS=1 " in head[0] and "OMP_NUM_THREADS=2 " in head[1]
    assert shlex.split(head[1])[-8:] == ["-m", "retain", "compare", str(path), "--out", str(out),
                                         "--only", "1"]

    # a run asking more than any node has is refused before anything is submitted
    runs[0]["resources"] = {"cpus": 3}
    path = compare_file(tmp_path, model_dir, runs=runs)
    code, _, err = cli(capsys, "compare", path, "--out", tmp_path / "big", "--launcher", "ray")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run 0 (full) asks 3 CPU" in err and "at most 2 CPU" in err
    assert not (tmp_path / "big" / "launch" / "run-1.log").exists()


def test_failed_run_is_reported_and_rerun_alone(tmp_path, model_dir, capsys, ray_cluster):
    late = tmp_path / "late.jsonl"  # run 1's data: missing when it runs, so it fails there
    runs = [{"label": "full", "strategies": ["full"], "lr": 1e-3},
            {"label": "lora r=2", "strategies": [{"name": "lora", "r": 2}], "lr": 1e-3,
             "data": str(late)}]
    path = compare_file(tmp_path, model_dir, runs=runs)
    out = tmp_path / "cmp"
    code, _, err = cli(capsys, "compare", path, "--launcher", "ray")
    lines = err.strip().splitlines()
    assert code == 1, err
    log = out / "launch" / "run-1.log"
    assert f"run 1 (lora r=2, seed 0) failed: exit code 2; log {log}: error: data file " \
           f"{late} does not exist" in lines
    assert lines[-1] == f"error: run 1 failed (1 of 2 submitted succeeded); rerun it alone: " \
                        f"retain compare {path} --only 1 --launcher ray"
    assert _computed(out / NAMES[0])  # the other run completed
    assert not (out / NAMES[1] / "results.json").exists() and not (out / "comparison.json").exists()

    write_builtin_jsonl("builtin:legal", late, n=8)
    done = (out / NAMES[0] / "results.json").stat().st_mtime_ns
    code, stdout, err = cli(capsys, *shlex.split(lines[-1].split("alone: ")[1])[1:])
    assert code == 0, err
    assert "[1] lora r=2 (seed 0): done" in stdout and "[0]" not in stdout
    assert not (out / "comparison.json").exists()  # --only: no summary
    code, stdout, err = cli(capsys, "compare", path, "--collect")
    assert code == 0, err
    assert "2 already complete, 0 to run" in stdout and (out / "comparison.json").is_file()
    assert (out / NAMES[0] / "results.json").stat().st_mtime_ns == done  # reused, not rerun


def test_submitit_local_gives_the_sequential_results(tmp_path, model_dir, capsys, sequential):
    pytest.importorskip("submitit")
    path = compare_file(tmp_path, model_dir, launcher={"slurm": {"cluster": "local"}})
    code, stdout, err = cli(capsys, "compare", path, "--launcher", "slurm")
    assert code == 0, err
    out = tmp_path / "cmp"
    assert {n: _computed(out / n) for n in NAMES} == sequential
    assert (out / "comparison.json").is_file()
    assert len(list((out / "launch" / "submitit").glob("*_result.pkl"))) == 2  # two jobs ran

    # complete runs are not submitted again
    code, stdout, err = cli(capsys, "compare", path, "--launcher", "slurm")
    assert code == 0 and "nothing to submit" in stdout


def test_sweep_through_submitit_local(tmp_path, model_dir, capsys):
    """``retain sweep --launcher``: each job replans the sweep (the same --set axes) and runs its
    point; the sweep folder is written from the run folders."""
    pytest.importorskip("submitit")
    path = compare_file(tmp_path, model_dir, runs=[{"label": "full", "strategies": ["full"]}],
                        launcher={"slurm": {"cluster": "local"}})
    code, _, err = cli(capsys, "sweep", path, "--set", "lr=1e-3,2e-3", "--launcher", "slurm")
    assert code == 0, err
    out = tmp_path / "cmp"
    points = json.loads((out / "sweep.json").read_text())["points"]
    assert [(p["label"], p["lr"]) for p in points] == [("full lr=0.001", 1e-3),
                                                       ("full lr=0.002", 2e-3)]
    head = (out / "launch" / "run-1.log").read_text().splitlines()[0]
    assert head.endswith(f"-m retain sweep {path} --set lr=1e-3,2e-3 --only 1")


def test_slurm_job_array(tmp_path, model_dir, capsys, monkeypatch):
    """What submitit hands sbatch: one array of the 2 runs with the file's resources (a
    stand-in sbatch records it and refuses, so nothing runs)."""
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name in ("sbatch", "srun"):
        (bin_ / name).write_text("#!/bin/sh\necho 'sbatch: error: invalid account: me' >&2\n"
                                 "exit 1\n")
        (bin_ / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:/usr/bin:/bin")
    path = compare_file(tmp_path, model_dir, launcher={
        "resources": {"cpus": 2, "gpus": 1, "memory_gb": 8},
        "slurm": {"partition": "gpu", "time_min": 30, "array_parallelism": 1,
                  "parameters": {"account": "me"}}})
    code, _, err = cli(capsys, "compare", path, "--launcher", "slurm")
    assert code == 2 and err.strip() == ("error: --launcher slurm: sbatch refused the job array "
                                         "(sbatch: error: invalid account: me)")
    scripts = list((tmp_path / "cmp" / "launch" / "submitit").glob(".submission_file_*.sh"))
    assert len(scripts) == 1
    text = scripts[0].read_text()
    for line in ("--array=0-1%1", "--partition=gpu", "--cpus-per-task=2", "--gpus-per-node=1",
                 "--mem=8GB", "--time=30", "--account=me"):
        assert f"#SBATCH {line}\n" in text

    # a parameter submitit does not know: one line, before anything is submitted
    path = compare_file(tmp_path, model_dir, launcher={"slurm": {"parameters": {"acount": "me"}}})
    code, _, err = cli(capsys, "compare", path, "--out", tmp_path / "p", "--launcher", "slurm")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "launcher.slurm: submitit refused the parameters (Unknown argument 'acount'" in err

    # a run with its own resources goes to an array of its own
    jobs = [Job(i, "x", 0, r, tmp_path) for i, r in enumerate(
        [{"cpus": 1}, {"cpus": 4, "gpus": 1}, {"cpus": 1}])]
    assert arrays(jobs) == [[0, 2], [1]]


def test_cancelled_job_ends_its_run(tmp_path, model_dir):
    """Ray cancels a running task by raising KeyboardInterrupt in its thread (an asynchronous
    exception, seen only between bytecodes, not inside one blocking wait): the job's run must end
    then, rather than going on alone (a later launch would run the same index twice at once)."""
    import ctypes
    import threading

    path = compare_file(tmp_path, model_dir, steps=20000)
    raised = []

    def job():
        try:
            run_job(["compare", str(path), "--only", "0"], os.getcwd(), str(tmp_path / "log"), 1)
        except KeyboardInterrupt:
            raised.append(True)

    thread = threading.Thread(target=job)
    thread.start()
    time.sleep(1)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                               ctypes.py_object(KeyboardInterrupt))
    thread.join(timeout=40)
    assert not thread.is_alive() and raised  # the run was ended, not waited for
    assert not (tmp_path / "cmp" / "full-seed0" / "results.json").exists()


@pytest.mark.parametrize("launcher, settings, message", [
    ("ray", None, "--launcher ray needs Ray: pip install 'retain[ray]'"),
    ("slurm", None, "--launcher slurm needs submitit: pip install 'retain[slurm]'"),
    ("slurm", {"slurm": {}}, "--launcher slurm: no sbatch or srun on PATH"),
    ("ray", {"resources": {"cpu": 1}}, "launcher.resources: unknown key 'cpu'"),
    ("ray", {"slurm": {"cluster": "k8s"}}, "launcher.slurm.cluster: 'k8s' is not slurm or local"),
    ("ray", {"ray": {"adress": "auto"}}, "launcher.ray: unknown key 'adress'"),
    ("ray", {"resources": {"gpus": -1}}, "launcher.resources.gpus: -1 must be a number >= 0"),
    ("lsf", None, "--launcher lsf: give ray or slurm"),
])
def test_launcher_errors(tmp_path, model_dir, capsys, monkeypatch, launcher, settings, message):
    if settings is None:  # the package missing
        monkeypatch.setitem(sys.modules, {"ray": "ray", "slurm": "submitit"}.get(launcher, "x"),
                            None)
    else:
        monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    path = compare_file(tmp_path, model_dir, **({"launcher": settings} if settings else {}))
    code, _, err = cli(capsys, "compare", path, "--launcher", launcher)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err
    assert not (tmp_path / "cmp").exists()  # refused before anything


def test_launcher_flags_and_run_resources(tmp_path, model_dir, capsys):
    path = compare_file(tmp_path, model_dir)
    for flag in ("--list", "--collect"):
        code, _, err = cli(capsys, "compare", path, "--launcher", "ray", flag)
        assert code == 2 and f"--launcher submits runs: it excludes {flag}" in err
    # a runs entry's resources are checked when the file is read, launcher or not
    runs = [{"label": "full", "strategies": ["full"], "resources": {"cpus": 0}}]
    code, _, err = cli(capsys, "compare", compare_file(tmp_path, model_dir, runs=runs), "--list")
    assert code == 2 and "run 'full': resources.cpus: a run needs at least 1 cpu" in err
