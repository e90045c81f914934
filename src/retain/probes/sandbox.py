"""Run untrusted Python (a model's code completion plus its unit tests) in a separate, limited
process, for execution-based probes such as HumanEval (Chen et al. 2021, "Evaluating Large
Language Models Trained on Code", arXiv 2107.03374).

The parent never executes the code. ``run_python`` writes it to a fresh temporary directory and
starts a new interpreter (``python -I``, not a fork of the parent) through a small trusted
launcher (``sandbox_launcher.LAUNCHER``, run with ``python -I -S -B``), with an empty
environment, stdin on /dev/null and output to a file, in a new session (process group). The
parent waits up to a wall-clock timeout, then kills every process the program started and the
process group, and always deletes the directory (``sandbox_process``).

Isolation, as a run records it (``isolation_used``: results.json's "sandbox"): "namespaces" where
new network and PID namespaces applied, else "rlimits" (the layers marked "always" below). A
run's ``sandbox`` setting (``configure``): "auto" runs code either way and prints one warning line
per run when it falls back; "require" refuses, with a one-line UserError, before running code
that would not be isolated (``check_isolation``).

Layers, and which of them are guaranteed:

Always (enforced by the kernel or the parent, on any Linux):
  * resource limits set before the code runs, soft and hard alike, so the code cannot raise
    them: RLIMIT_AS (address space, 1 GiB by default), RLIMIT_CPU (timeout + 1 s of CPU, then
    SIGKILL), RLIMIT_FSIZE (largest file written, output included, 16 MiB), RLIMIT_NOFILE,
    RLIMIT_CORE = 0; RLIMIT_NPROC: inside a user namespace the sandbox's processes, outside
    one the uid's tasks now plus ``Limits.processes``. The kernel never applies RLIMIT_NPROC to
    root, so without a PID namespace root's program runs as uid 65534 ("nobody": it can then
    write only where anyone may and signal none of root's processes) when that uid can run the
    interpreter; otherwise (an interpreter under /root, say) its process count is unbounded
    until the timeout, which the report says (``processes_bounded``);
  * every process the program starts stays below the launcher (a child subreaper: orphans,
    ``setsid`` daemons included, are re-parented to it), and all of them are killed when the
    program ends or times out; then the process group too (SIGKILL);
  * an empty environment (no proxies, tokens or paths), stdin on /dev/null, a temporary working
    directory that is deleted afterwards, output read back from a size-limited file.

Best effort (applied when the kernel lets this process create namespaces, as with
``unshare -rn``; each one that applied is reported in ``RunResult.protections``):
  * network: a new network namespace, which has no interfaces but a loopback that is down, so
    no connection, not even to 127.0.0.1, can be made. Without it a prelude replaces the
    socket constructors before the code runs: that stops accidental use, not a determined
    program (it can reach the original class, or start another process);
  * processes: a new PID namespace. The code cannot see or signal any process outside it, and
    when the sandbox ends the kernel kills every process left in it. Without it, processes are
    found through the subreaper above (a program able to kill its ancestors can escape);
  * filesystem: a new mount namespace in which every mount is remounted read-only and the
    working directory is a private tmpfs (64 MiB by default; a bind mount of the directory if
    tmpfs is refused), so the code can write nowhere else and its files never reach the disk.
    Without it, writes are bounded only by the user's permissions and RLIMIT_FSIZE;
  * privileges: the code keeps the user's uid but no capabilities (bounding set emptied,
    SECBIT_NOROOT locked, no_new_privs), so it cannot undo the mounts, and as root it cannot
    override file permissions. This needs CAP_SETPCAP, i.e. root or a user namespace. The uid
    stays, but for root's fallback above (a root install's interpreter may live where no other
    user can read it), so without a PID namespace the code could signal the user's other
    processes, and without a mount namespace it can write wherever that uid may (for root:
    every root-owned file).

Not covered: CPU and memory shares between sandboxes (no cgroups), the number of files written
to the directory when no tmpfs applied, and anything a kernel exploit could do. It is a
containment for buggy or unlucky generated code, not a security boundary against an adversary.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from retain.errors import UserError
from retain.probes.sandbox_launcher import LAUNCHER, PRELUDE
from retain.probes.sandbox_process import end_tree, read_report, remove_tree, wait_exit

OUTPUT_TAIL_BYTES = 4096  # of stdout + stderr kept in a result (the end holds the traceback)
UNPRIVILEGED_UID = 65534  # "nobody": root's programs run as it where no PID namespace applied


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    timeout_s: float = 5.0  # wall clock, from the start of the launcher
    memory_mb: int = 1024  # RLIMIT_AS
    file_size_mb: int = 16  # RLIMIT_FSIZE: any one file, output included
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC (set inside a user namespace only)
    tmpfs_mb: int = 64  # size of the private working directory, when a mount namespace applies
    namespaces: bool = True  # try network/PID/mount namespaces (False: limits and prelude only)


@dataclass
class RunResult:
    """How one run ended. ``status``: "ok" (exit code 0), "failed" (another exit code, or killed
    by a resource limit), "timeout" (killed at the wall-clock limit) or "error" (the launcher
    itself failed before the code ran: a harness problem, not the code's)."""

    status: str
    returncode: int | None
    output: str  # the last OUTPUT_TAIL_BYTES of stdout + stderr
    duration_s: float
    protections: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The protections that applied, in one short line (``protections["summary"]``)."""
        return str(self.protections.get("summary", "unknown"))

    @property
    def isolation(self) -> str:
        """"namespaces" (new network and PID namespaces applied) or "rlimits" (the fallback:
        resource limits, a socket prelude, and a process tree killed at the end)."""
        return str(self.protections.get("isolation", "rlimits"))


def run_python(source: str, limits: Limits = Limits(), *,
               python: str | None = None) -> RunResult:
    """Run ``source`` as a Python program in the sandbox (``python``: the interpreter, by
    default this one's). The parent only writes the file and reads the results back.
    Under ``configure("require")`` a UserError, before anything runs, where the code would not
    be isolated (``check_isolation``)."""
    if _POLICY.mode == "require":
        check_isolation(limits, python)
    result = _run(source, limits, python or sys.executable)
    _POLICY.record(result)
    return result


def _run(source: str, limits: Limits, python: str) -> RunResult:
    # the real path: the launcher finds its mount by this name in /proc/self/mountinfo
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="retain-sandbox-"))
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as f:
        f.write(source)
    read_end, write_end = os.pipe()
    cfg = {"report_fd": write_end, "workdir": workdir, "program": program, "python": python,
           "prelude": PRELUDE, "cpu_s": math.ceil(limits.timeout_s) + 1,
           "memory_mb": limits.memory_mb, "file_size_mb": limits.file_size_mb,
           "open_files": limits.open_files, "processes": limits.processes,
           "tmpfs_mb": limits.tmpfs_mb, "namespaces": limits.namespaces,
           "uid": UNPRIVILEGED_UID}
    start = time.monotonic()
    timed_out = False
    try:
        # Output goes to an unnamed file of the parent's, not a pipe: RLIMIT_FSIZE bounds it, and
        # a program that floods its output cannot fill the parent's memory.
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", "-c", LAUNCHER, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={},
                cwd=workdir, close_fds=True, pass_fds=(write_end,), start_new_session=True)
            os.close(write_end)
            write_end = -1
            timed_out = not wait_exit(proc.pid, limits.timeout_s)
            # Always, while the launcher is not yet reaped (its pid cannot be reused): a
            # timed-out program, and whatever it left behind, setsid() daemons included.
            end_tree(proc.pid)
            proc.wait()
            duration = time.monotonic() - start
            out.seek(0, os.SEEK_END)
            out.seek(max(0, out.tell() - OUTPUT_TAIL_BYTES))
            output = out.read().decode("utf-8", errors="replace")
        report = read_report(read_end)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        remove_tree(workdir)
    if "launcher_error" in report or "summary" not in report:
        # the launcher did not reach the program: say so, do not blame the program
        detail = report.get("launcher_error", "") or output
        return RunResult("error", proc.returncode, detail[-OUTPUT_TAIL_BYTES:], duration, report)
    if timed_out:
        status = "timeout"
    else:
        status = "ok" if proc.returncode == 0 else "failed"
    return RunResult(status, proc.returncode, output, duration, report)


def run_many(sources: Sequence[str], limits: Limits = Limits(), *, workers: int | None = None,
             python: str | None = None) -> list[RunResult]:
    """``run_python`` on each source, ``workers`` at a time (threads that wait on processes),
    results in the order given."""
    if _POLICY.mode == "require":
        check_isolation(limits, python)  # once, before any of them runs
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers <= 1 or len(sources) <= 1:
        return [run_python(s, limits, python=python) for s in sources]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda s: run_python(s, limits, python=python), sources))


# ---------------------------------------------------------------- the run's policy
MODES = ("auto", "require")


class _Policy:
    """The run's ``sandbox`` setting and the weakest isolation its code ran under."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "auto"
        self.weakest: RunResult | None = None
        self.warned = False
        self.probes: dict[tuple[str, bool], RunResult] = {}  # (python, namespaces): an empty run

    def record(self, result: RunResult) -> None:
        if result.status == "error":  # the launcher failed: no code ran
            return
        fell_back = result.isolation != "namespaces"
        with self.lock:
            if self.weakest is None or (fell_back and self.weakest.isolation == "namespaces"):
                self.weakest = result
            warn, self.warned = fell_back and not self.warned, self.warned or fell_back
        if fell_back and self.mode == "require":  # check_isolation said otherwise: a changed host
            raise UserError(_refusal(result))
        if warn:  # once per run, not once per program
            print(f"warning: {_fallback(result)}; `sandbox: require` refuses to run it so",
                  file=sys.stderr, flush=True)


_POLICY = _Policy()


def _why(result: RunResult) -> str:
    """Why no namespaces were made, from the launcher's notes."""
    notes = [n for n in result.protections.get("notes", [])
             if n.startswith(("unshare", "namespaces"))]
    return notes[-1] if notes else "namespaces unavailable"


def _fallback(result: RunResult) -> str:
    return (f"generated code runs without Linux namespaces ({_why(result)}): rlimits, a socket "
            f"prelude and a killed process tree only ({result.summary})")


def _refusal(result: RunResult) -> str:
    return (f"sandbox: require, but {_fallback(result)}; allow user namespaces (e.g. sysctl "
            "kernel.apparmor_restrict_unprivileged_userns=0) or set sandbox: auto")


def configure(mode: str = "auto") -> None:
    """Start a run: ``mode`` "auto" runs code with rlimits only where namespaces cannot be made,
    with one warning line; "require" refuses (a UserError) before any such code runs. Forgets
    what earlier runs' code ran under (``isolation_used``)."""
    if mode not in MODES:
        raise ValueError(f"sandbox mode {mode!r}: one of {', '.join(MODES)}")
    with _POLICY.lock:
        _POLICY.mode, _POLICY.weakest, _POLICY.warned = mode, None, False


def check_isolation(limits: Limits = Limits(), python: str | None = None) -> str:
    """The isolation code run with ``limits`` gets here: "namespaces" or "rlimits" (an empty
    program is run once per interpreter and setting to find out). Under ``configure("require")``
    a one-line UserError when it would be "rlimits"."""
    key = (python or sys.executable, limits.namespaces)
    with _POLICY.lock:
        probe = _POLICY.probes.get(key)
    if probe is None:
        probe = _run("pass\n", Limits(namespaces=limits.namespaces), key[0])
        with _POLICY.lock:
            _POLICY.probes[key] = probe
    if _POLICY.mode == "require" and probe.isolation != "namespaces":
        raise UserError(_refusal(probe))
    return probe.isolation


def isolation_used() -> dict[str, str] | None:
    """What this run's code ran under since ``configure`` (the weakest of its programs):
    ``{"isolation": "namespaces" | "rlimits", "protections": summary, "processes_bounded"}``;
    None when no code ran. A run's results.json carries it as "sandbox"."""
    with _POLICY.lock:
        weakest = _POLICY.weakest
    if weakest is None:
        return None
    return {"isolation": weakest.isolation, "protections": weakest.summary,
            "processes_bounded": bool(weakest.protections.get("processes_bounded"))}


__all__ = ["Limits", "RunResult", "run_python", "run_many", "configure", "check_isolation",
           "isolation_used", "MODES"]
