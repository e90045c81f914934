"""``--launcher ray`` and ``--launcher slurm``: submit the planned runs of a comparison or sweep
as jobs, wait for them, and say which failed.

Each run not complete yet is one job running the documented recipe, ``retain compare FILE
--only K`` (``python -m retain``, the submitting Python, in the submitting working directory),
its output in ``OUT/launch/run-K.log``. The jobs hand back exit codes only: results are read from
the run folders, by the caller's ``--collect`` once every job succeeded. Ray: one task per run;
SLURM: one job array (per set of resources) through submitit, or submitit's local executor
(``cluster: local``). The compare file's ``launcher:`` key gives the resources::

    launcher:
      resources: {cpus: 1, gpus: 0, memory_gb: 4}     # each run's (a run's resources: override)
      ray: {address: auto}                           # default: a Ray already started, or a local one
      slurm: {partition: gpu, time_min: 240, array_parallelism: 8, cluster: slurm,
              parameters: {account: me}}             # any other submitit slurm_* parameter
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from retain.errors import RunsFailed, UserError

LAUNCHERS = ("ray", "slurm")
RESOURCES = ("cpus", "gpus", "memory_gb")
SECTIONS = {"resources": RESOURCES, "ray": ("address",),
            "slurm": ("partition", "time_min", "array_parallelism", "cluster", "folder",
                      "parameters")}
DEFAULT_RESOURCES = {"cpus": 1, "gpus": 0}
DEFAULT_TIME_MIN = 240  # submitit's own default is 5 minutes


@dataclass
class Launch:
    """What ``fan_out`` needs to submit runs: the launcher, the command line after ``retain``
    that plans the same runs (``["compare", FILE, ...]``, ``--only K`` appended per job), the
    file's ``launcher:`` settings and the folder whose ``launch/`` gets the logs."""

    launcher: str
    command: list[str]
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    index: int
    label: str
    seed: int
    resources: dict[str, Any]
    log: Path
    code: int | None = None  # the command's exit code; None: the job itself failed
    error: str = ""


def job_flags(out: Path | None, overwrite: bool, overrides: Sequence[str]) -> list[str]:
    """The options of the command that launched the jobs, for each job's own command line."""
    return (["--out", str(out)] if out is not None else []) + (["--overwrite"] if overwrite
                                                                 else []) + list(overrides)


def _number(value: Any, where: str, integer: bool = False) -> int | float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or value < 0:
        raise UserError(f"{where}: {value!r} must be a{'n integer' if integer else ' number'} >= 0")
    return value


def read_resources(value: Any, where: str = "launcher.resources") -> dict[str, Any]:
    """``{cpus, gpus, memory_gb}`` checked: cpus an integer >= 1, gpus and memory_gb >= 0."""
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping, e.g. {{cpus: 4, gpus: 1, memory_gb: 16}}")
    for k, v in value.items():
        if k not in RESOURCES:
            raise UserError(f"{where}: unknown key {k!r} (known: {', '.join(RESOURCES)})")
        _number(v, f"{where}.{k}", integer=k == "cpus")
    if value.get("cpus") == 0:
        raise UserError(f"{where}.cpus: a run needs at least 1 cpu")
    return dict(value)


def read_settings(value: Any) -> dict[str, Any]:
    """The file's ``launcher:`` mapping, every key checked (see the module docstring)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError("launcher: expected a mapping of resources, ray and slurm")
    for section, v in value.items():
        if section not in SECTIONS:
            raise UserError(f"launcher: unknown key {section!r} (known: {', '.join(SECTIONS)})")
        if not isinstance(v, dict):
            raise UserError(f"launcher.{section}: expected a mapping of "
                            f"{', '.join(SECTIONS[section])}")
        for k in v:
            if k not in SECTIONS[section]:
                raise UserError(f"launcher.{section}: unknown key {k!r} "
                                f"(known: {', '.join(SECTIONS[section])})")
    read_resources(value.get("resources", {}))
    slurm = value.get("slurm", {})
    for k in ("time_min", "array_parallelism"):
        if k in slurm and (_number(slurm[k], f"launcher.slurm.{k}", integer=True) == 0):
            raise UserError(f"launcher.slurm.{k}: must be at least 1")
    if slurm.get("cluster", "slurm") not in ("slurm", "local"):
        raise UserError(f"launcher.slurm.cluster: {slurm['cluster']!r} is not slurm or local")
    if not isinstance(slurm.get("parameters", {}), dict):
        raise UserError("launcher.slurm.parameters: expected a mapping of submitit slurm_* "
                        "parameters without the prefix, e.g. {account: me, qos: high}")
    return dict(value)


def run_job(argv: list[str], cwd: str, log: str, cpus: int) -> int:
    """One job: ``python -m retain ARGV`` in ``cwd``, stdout and stderr into ``log``, at most
    ``cpus`` threads (OMP_NUM_THREADS, which torch reads); returns its exit code. Cancelled (a
    KeyboardInterrupt, as Ray's cancel and submitit's local cancel raise), it ends the run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cpus)}
    command = [sys.executable, "-m", "retain", *argv]
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ cd {shlex.quote(cwd)} && OMP_NUM_THREADS={cpus} {shlex.join(command)}\n")
        f.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            while True:  # not one blocking wait: an interrupt must get through within a second
                try:
                    return proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _last_line(text: str, empty: str = "(empty)") -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else empty


def _log_tail(path: Path) -> str:
    try:
        return _last_line(path.read_text(encoding="utf-8", errors="replace"), "(empty log)")
    except OSError:
        return "(no log)"


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {_last_line(str(err), '')}"


def launch(planned: Sequence, spec: Launch, chosen: Sequence[int], *, echo=print) -> None:
    """Submit the runs of ``chosen`` (indices into ``planned``) that are not complete, one job
    each, and wait for all of them. Raises ``RunsFailed`` naming the failed indices and the
    command that reruns them alone (the complete runs stay); returns when every job succeeded.
    Conflicting folders are refused by the caller first (``check_conflicts``)."""
    if spec.launcher not in LAUNCHERS:
        raise UserError(f"--launcher {spec.launcher}: give {' or '.join(LAUNCHERS)}")
    settings = read_settings(spec.settings)
    defaults = {**DEFAULT_RESOURCES, **settings.get("resources", {})}
    logs = Path(spec.out).resolve() / "launch"
    jobs = [Job(i, planned[i].label, planned[i].seed, {**defaults, **planned[i].resources},
                logs / f"run-{i}.log") for i in chosen if planned[i].state != "complete"]
    if not jobs:
        echo("nothing to submit: every run asked for is complete")
        return
    module = _package(spec.launcher, settings)
    submit = _ray if spec.launcher == "ray" else _slurm
    cwd = os.getcwd()
    argv = [[*spec.command, "--only", str(j.index)] for j in jobs]
    t0 = time.time()
    logs.mkdir(parents=True, exist_ok=True)
    echo(f"--launcher {spec.launcher}: {len(jobs)} run(s) to submit "
         f"({', '.join(str(j.index) for j in jobs)}); their logs: {logs}/run-K.log")
    for job in submit(module, jobs, argv, cwd, settings, logs):
        echo(f"[{job.index}] {job.label} (seed {job.seed}): "
             + ("done" if job.code == 0 else "FAILED") + f" after {time.time() - t0:.0f} s")
    failed = [j for j in jobs if j.code != 0]
    if not failed:
        return
    for j in failed:
        how = f"exit code {j.code}" if j.code is not None else f"the job failed ({j.error})"
        print(f"run {j.index} ({j.label}, seed {j.seed}) failed: {how}; log {j.log}: "
              f"{_log_tail(j.log)}", file=sys.stderr)
    idx = ",".join(str(j.index) for j in failed)
    rerun = shlex.join(["retain", *spec.command, "--only", idx, "--launcher", spec.launcher])
    several = len(failed) > 1
    raise RunsFailed(f"run{'s' if several else ''} {', '.join(map(str, (j.index for j in failed)))}"
                     f" failed ({len(jobs) - len(failed)} of {len(jobs)} submitted succeeded); "
                     f"rerun {'them' if several else 'it'} alone: {rerun}")


def _package(launcher: str, settings: dict):
    """The launcher's package (a one-line error without it); for SLURM, sbatch and srun too."""
    if launcher == "ray":
        try:
            import ray
        except ImportError:
            raise UserError("--launcher ray needs Ray: pip install 'retain[ray]'") from None
        return ray
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'retain[slurm]'") from None
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if settings.get("slurm", {}).get("cluster", "slurm") == "slurm" and missing:
        raise UserError(f"--launcher slurm: no {' or '.join(missing)} on PATH (not a SLURM login "
                        "node?); to run the jobs on this machine through submitit, set launcher: "
                        "{slurm: {cluster: local}} in the file")
    return submitit


# -- Ray ----------------------------------------------------------------------------------------

def _ray_options(r: dict[str, Any]) -> dict[str, Any]:
    opts = {"num_cpus": r["cpus"], "num_gpus": r.get("gpus", 0)}
    if r.get("memory_gb"):
        opts["memory"] = int(r["memory_gb"] * 2**30)
    return opts


def _ray_fits(ray, jobs: list[Job]) -> None:
    """Every run fits on some node alive now, else a one-line error (Ray would wait forever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
    for j in jobs:
        need = {names[k]: v for k, v in _ray_options(j.resources).items() if v}
        if not any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
            most = {k: max((n.get(k, 0) for n in nodes), default=0) for k in need}
            raise UserError(f"run {j.index} ({j.label}) asks {_show(need)} and no node of the Ray "
                            f"cluster has that (at most {_show(most)} on one node); lower its "
                            f"resources in the file's launcher: key or its runs entry")


def _show(res: dict[str, float]) -> str:
    return ", ".join(f"{v / 2**30:g} GB memory" if k == "memory" else f"{v:g} {k}"
                     for k, v in res.items())


def _ray(ray, jobs: list[Job], argv: list[list[str]], cwd: str, settings: dict, logs: Path):
    address = settings.get("ray", {}).get("address")
    started = not ray.is_initialized()
    if started:  # a test or a notebook may have started one already
        try:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(f"--launcher ray: no Ray at {address or 'this machine'} "
                            f"({_one_line(e)})") from None
    try:
        _ray_fits(ray, jobs)
        task = ray.remote(run_job)
        refs = {task.options(name=f"retain-run-{j.index}", max_retries=0,
                             **_ray_options(j.resources)).remote(a, cwd, str(j.log),
                                                                 j.resources["cpus"]): j
                for j, a in zip(jobs, argv)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                job = refs[done[0]]
                try:
                    job.code = ray.get(done[0])
                except Exception as e:  # the worker died, the node was lost, ...
                    job.error = _one_line(e)
                yield job
        except BaseException:  # Ctrl-C: cancelled, a task's subprocess.run kills its run
            for ref in pending:
                ray.cancel(ref)
            ray.wait(pending, num_returns=len(pending), timeout=30)
            raise
    finally:
        if started:
            ray.shutdown()


# -- SLURM (submitit) ---------------------------------------------------------------------------

def arrays(jobs: list[Job]) -> list[list[int]]:
    """The jobs (positions in ``jobs``) grouped into SLURM job arrays: one per set of resources,
    since the tasks of an array share theirs."""
    groups: dict[tuple, list[int]] = {}
    for k, j in enumerate(jobs):
        groups.setdefault(tuple(sorted(j.resources.items())), []).append(k)
    return list(groups.values())


def _slurm(submitit, jobs: list[Job], argv: list[list[str]], cwd: str, settings: dict,
           logs: Path):
    s = settings.get("slurm", {})
    cluster = s.get("cluster", "slurm")
    submitted = []
    try:
        for ks in arrays(jobs):
            submitted += _submit_array(submitit, [jobs[k] for k in ks], [argv[k] for k in ks],
                                       cwd, s, logs)
    except BaseException:  # an array refused, or interrupted: the others are not left running
        for _, sj in submitted:
            sj.cancel(check=False)
        raise
    by_job = {id(sj): j for j, sj in submitted}
    poll = 1 if cluster == "local" else 15
    try:
        for sj in submitit.helpers.as_completed([sj for _, sj in submitted], poll_frequency=poll):
            job = by_job[id(sj)]
            try:
                job.code = sj.result()
            except Exception as e:  # timed out, cancelled, the node died, ...
                job.error = f"job {sj.job_id}: {_one_line(e)}"
            yield job
    except BaseException:  # Ctrl-C: the jobs not finished are cancelled (scancel)
        for _, sj in submitted:
            if not sj.done():
                sj.cancel(check=False)
        raise


def _submit_array(submitit, jobs: list[Job], argv: list[list[str]], cwd: str, s: dict,
                  logs: Path) -> list:
    """One job array of ``jobs`` (which share their resources): [(job, submitit job)]."""
    executor = submitit.AutoExecutor(folder=Path(s.get("folder") or logs / "submitit"),
                                     cluster=s.get("cluster", "slurm"))
    r = jobs[0].resources
    params = {"name": "retain", "timeout_min": s.get("time_min", DEFAULT_TIME_MIN),
              "cpus_per_task": r["cpus"], "gpus_per_node": r.get("gpus", 0),
              "mem_gb": r.get("memory_gb"), "slurm_partition": s.get("partition"),
              "slurm_array_parallelism": s.get("array_parallelism"),
              **{f"slurm_{k}": v for k, v in s.get("parameters", {}).items()}}
    try:
        executor.update_parameters(**params)
    except (NameError, AssertionError, ValueError) as e:  # submitit's parameter checks
        raise UserError(f"launcher.slurm: submitit refused the parameters "
                        f"({str(e).splitlines()[0]})") from None
    with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal too
        try:
            array = executor.map_array(run_job, argv, [cwd] * len(jobs),
                                       [str(j.log) for j in jobs], [r["cpus"]] * len(jobs))
        except submitit.core.utils.FailedJobError as e:
            raise UserError(f"--launcher slurm: sbatch refused the job array "
                            f"({_last_line(str(e), 'no message')})") from None
    return list(zip(jobs, array))
