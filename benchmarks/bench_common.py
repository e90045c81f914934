"""What every section of ``make bench`` shares: repeated timings summarised as a median and
spread, figures with a baseline measured side by side (their ratio per repetition), targets
checked as met or missed, child processes timed with their own peak memory, and the machine.

A section is a script ``benchmarks/bench_<name>.py`` with ``main(args) -> dict`` (``{"figures":
[...], "notes": [...]}``) run by ``bench.py`` in a process of its own; ``figure`` builds one row.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent


def summary(values: Sequence[float]) -> dict:
    """Median, min and max of repeated measurements (the spread is min..max)."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals}


def figure(name: str, unit: str, ours: Sequence[float], base: Sequence[float] | None = None, *,
           baseline: str = "", better: str = "lower", ratio: str = "speedup",
           target: float | None = None, target_text: str = "", at_most: float | None = None,
           extra: dict | None = None) -> dict:
    """One row of RESULTS.md. ``ours``/``base``: one value per repetition, measured side by side
    (repetition i of each in the same round). ``ratio``: ``speedup`` (base / ours for times,
    ours / base for rates), ``overhead`` (ours / base - 1 for times, base / ours - 1 for rates) or
    ``none``. ``target``: the ratio's bound (at least for a speedup, at most for an overhead);
    ``at_most``: a bound on the median of ``ours`` itself (a wall-time budget)."""
    row: dict[str, Any] = {"name": name, "unit": unit, "ours": summary(ours), "baseline": baseline,
                           "better": better, "ratio_kind": ratio, "target": target,
                           "target_text": target_text, **(extra or {})}
    if base is not None:
        row["base"] = summary(base)
        per = []
        for o, b in zip(ours, base):
            speed = (b / o) if better == "lower" else (o / b)  # > 1: retain is faster
            per.append(speed if ratio == "speedup" else 1.0 / speed - 1.0)
        if ratio != "none":
            row["ratio"] = summary(per)
    if target is not None and "ratio" in row:
        r = row["ratio"]["median"]
        row["met"] = bool(r >= target) if ratio == "speedup" else bool(r <= target)
    if at_most is not None:
        row["met"] = bool(row["ours"]["median"] <= at_most)
    return row


def check_row(name: str, ok: bool, detail: str) -> dict:
    """A pass/fail row with no timing (scores that must agree, values that must match)."""
    return {"name": name, "check": True, "met": bool(ok), "detail": detail}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# Run by a bare interpreter: it starts the command and reports the command's own peak resident
# memory. (A child forked straight from a bench process that holds torch would count that
# process's pages, copied at the fork, in its peak.)
_LAUNCH = ("import os, sys\n"
           "pid = os.fork()\n"
           "if pid == 0:\n"
           "    os.execvp(sys.argv[1], sys.argv[1:])\n"
           "_, status, usage = os.wait4(pid, 0)\n"
           "print(f'PEAK_RSS_KB={usage.ru_maxrss}', file=sys.stderr)\n"
           "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run_child(cmd: Sequence[str], *, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd``; its wall time (start-up and imports included), its peak resident memory in
    MB (the kernel's maximum for the process, read by ``os.wait4`` in a bare launcher), and
    its output. Raises when it fails."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-S", "-c", _LAUNCH, *map(str, cmd)], cwd=cwd,
                         env={**os.environ, **(env or {})}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... exited {res.returncode}:\n"
                           f"{res.stderr[-3000:]}")
    lines = res.stderr.rstrip().splitlines()
    peak_kb = int(lines[-1].split("=", 1)[1])
    return {"wall_s": wall, "peak_rss_mb": peak_kb / 1024, "stdout": res.stdout,
            "stderr": "\n".join(lines[:-1])}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _meminfo_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(python: str | Path = sys.executable,
             packages: Sequence[str] = ("torch", "transformers", "peft", "accelerate", "trl",
                                        "retain")) -> dict:
    """Installed versions of ``packages`` in the environment of ``python``."""
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except m.PackageNotFoundError: out[p] = None\n"
            "print(json.dumps(out))")
    res = subprocess.run([str(python), "-c", code, *packages], capture_output=True, text=True)
    return json.loads(res.stdout) if res.returncode == 0 else {}


def machine() -> dict:
    """Cores, memory, CPU, GPU (if any), Python, threads, and the load when asked."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cores": cores, "memory_gb": _meminfo_gb(), "cpu": _cpu_model(), "gpu": gpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "load_avg": list(os.getloadavg())}


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


@dataclass
class SectionArgs:
    """What ``bench.py`` hands a section (as JSON on its command line)."""

    quick: bool
    reps: int
    work: Path
    peers_python: str | None  # the peers' venv python (lm-eval, mergekit), None: not installed

    @classmethod
    def parse(cls, argv: Sequence[str]) -> tuple["SectionArgs", Path]:
        data = json.loads(argv[0])
        return (cls(quick=data["quick"], reps=data["reps"], work=Path(data["work"]),
                    peers_python=data.get("peers_python")), Path(argv[1]))


def section_main(fn: Callable[[SectionArgs], dict]) -> None:
    """Entry point of a section script: ``python bench_<name>.py ARGS_JSON OUT_JSON``."""
    args, out = SectionArgs.parse(sys.argv[1:])
    args.work.mkdir(parents=True, exist_ok=True)
    write_json(out, fn(args))
