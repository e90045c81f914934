"""`retain sequence FILE`: train on task A, then B, then C under each strategy (and seed), and
measure every task and the retained capabilities after each one: the accuracy matrix.

    model: tiny                   # any RunConfig key: the base of every task's run
    steps: 100                    # per task
    seeds: [0, 1, 2]
    out: runs/sequence
    memory: 256                   # examples of earlier tasks kept (reservoir) for replay and EWC
    tasks: [builtin:legal, builtin:support, builtin:recipes]   # or {name: mine, data: my.jsonl}
    runs:
      - {label: full, strategies: [full]}
      - {label: online ewc, strategies: [{name: ewc, lam: 0.1}]}

Each task of a sequence is one ``retain run`` folder (``out/<label>-seed<k>/<i>-<task>/``) that
starts from the model the previous task ended with (saved in its ``model/``); a sequence
interrupted after task k reuses the complete task folders and continues from task k. Every run
probes every task (a built-in domain's suite, a JSONL task's held-out split, written once under
``out/tasks/``, or its own probe files) and the retained suites, so R[i][j] is read from the
results of task i's run; row 0 is the base model (task 0's before-probes).

Across tasks: the model carries over; EWC becomes online EWC (each task's Fisher, estimated on
the retained reference and the memory of earlier tasks at the task's start, is added to the
previous one times EWC's ``gamma``: Schwarz et al. 2018, https://arxiv.org/abs/1805.06370);
replay and the Fisher draw from the retained reference plus a fixed-size memory of earlier tasks'
training examples (reservoir sampling, seeded: Vitter 1985; for continual learning Chaudhry et
al. 2019, https://arxiv.org/abs/1902.10486); LoRA, OSF and WiSE-FT finalize after every task
(adapters merged, WiSE-FT interpolating with the task's starting point); L2-SP anchors to each
task's starting point, or to the original base with ``anchor_model``.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from retain.config import RunConfig, read_yaml, apply_override, parse_config
from retain.errors import UserError
from retain.experiments.runner import Planned, entry_label, inspect, read_entries, read_seeds, slug
from retain.experiments.sequence_metrics import SUMMARY_FILE  # where the writer keeps it

SEQUENCE_KEYS = ("tasks", "runs", "seeds", "out", "title", "memory", "keep_models")
SEQUENCE_FILE = "sequence.json"  # one sequence (a label and a seed): its matrices
DEFAULT_MEMORY = 256


# -- tasks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One task of the sequence: its name, the data its run trains on, and how it is probed."""

    name: str
    data: str  # a data spec for RunConfig.data
    suites: tuple[str, ...] = ()  # built-in suites (its own domain's)
    heldout: str | None = None  # a held-out data file (a JSONL task's split)
    probe_files: tuple[str, ...] = ()  # the user's probe files for it
    # the split files still to write, ((path, records), ...): written once the plan is checked
    pending: tuple = field(default=(), compare=False, repr=False)


def _records_of(spec: str, n: int | None, seed: int) -> list[dict]:
    """The record dicts a run of ``data: spec`` trains on (what the memory keeps)."""
    from retain.builtin import tasks as builtin
    from retain.data import DEFAULT_BUILTIN_N, domain_of, read_jsonl

    domain = domain_of(spec)
    if domain is not None:
        return [{"text": it.text} for it in builtin.items(domain, "train", n or DEFAULT_BUILTIN_N,
                                                          seed)]
    return [_as_record(shape, payload) for shape, payload in read_jsonl(spec)]


def _as_record(shape: str, payload: Any) -> dict:
    if shape == "text":
        return {"text": payload}
    if shape == "prompt_completion":
        return {"prompt": payload[0], "completion": payload[1]}
    return {"messages": payload}


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    from retain.report.results import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_tasks(tasks: Any, out: Path, holdout: float, holdout_max: int, *,
               write: bool = True) -> list[Task]:
    """The ``tasks`` list: ``builtin:<domain>`` strings, or ``{name, data, probes}`` mappings.
    A JSONL task without ``probes`` is split once (seed 0, the same for every seed) into
    ``out/tasks/<name>.jsonl`` (trained on) and ``out/tasks/heldout/<name>.jsonl`` (its probe),
    written now, or with ``write=False`` by ``write_task_files`` (after the plan is checked, so
    that a mistake found later leaves nothing behind)."""
    from retain.data import BUILTIN_DOMAINS, domain_of, read_jsonl, split_holdout
    from retain.probes.suites import SUITES

    if not isinstance(tasks, list) or len(tasks) < 2:
        raise UserError("tasks: give at least two tasks, e.g. [builtin:legal, builtin:support]")
    found: list[Task] = []
    for i, t in enumerate(tasks):
        where = f"tasks[{i}]"
        if isinstance(t, str):
            t = {"data": t}
        if not isinstance(t, dict) or "data" not in t:
            raise UserError(f"{where}: give a data spec (builtin:legal) or {{name, data, probes}}")
        unknown = set(t) - {"name", "data", "probes"}
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} (name, data, probes)")
        spec = str(t["data"])
        domain = domain_of(spec)
        if domain is not None and domain not in BUILTIN_DOMAINS:
            raise UserError(f"{where}: unknown built-in domain {spec!r}; known: "
                            f"{', '.join('builtin:' + d for d in BUILTIN_DOMAINS)}")
        name = str(t.get("name") or domain or Path(spec).stem)
        if not name.isidentifier():
            raise UserError(f"{where}: task name {name!r} must be a word (letters, digits, _)")
        if domain is None and name in SUITES:  # its probes would share the suite's keys
            raise UserError(f"{where}: task name {name!r} is a built-in probe suite's; name the "
                            f"task otherwise, e.g. {{name: my_{name}, data: {spec}}}")
        probes = t.get("probes")
        if probes is not None and (not isinstance(probes, list) or not probes):
            raise UserError(f"{where}: probes must be a list of probe files")
        if domain is not None:
            found.append(Task(name, spec, suites=(domain,),
                              probe_files=tuple(map(str, probes or ()))))
        elif probes:
            found.append(Task(name, spec, probe_files=tuple(map(str, probes))))
        else:  # held out once, so that every seed and every run probes the same records
            train, held = split_holdout(read_jsonl(spec), holdout or 0.1, 0, holdout_max,
                                        what=spec)
            data, heldout = out / "tasks" / f"{name}.jsonl", out / "tasks" / "heldout" / f"{name}.jsonl"
            found.append(Task(name, str(data), heldout=str(heldout), pending=(
                (data, [_as_record(*r) for r in train]), (heldout, [_as_record(*r) for r in held]))))
    names = [t.name for t in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"tasks: the name {dup[0]!r} is used twice; give the tasks distinct names")
    if write:
        write_task_files(found)
    return found


def write_task_files(tasks: Sequence[Task]) -> None:
    """Write the split files of the JSONL tasks (``read_tasks(..., write=False)``)."""
    for t in tasks:
        for path, records in t.pending:
            _write_jsonl(path, records)


# -- the memory of earlier tasks -------------------------------------------------------------------

def reservoir(stream: Sequence[Any], size: int, rng: random.Random) -> list[Any]:
    """A uniform random sample of ``size`` items of ``stream`` (all of it when shorter), kept in
    one pass: Vitter's algorithm R. Deterministic for a seeded ``rng``."""
    kept: list[Any] = []
    for seen, item in enumerate(stream):
        if seen < size:
            kept.append(item)
        else:
            j = rng.randrange(seen + 1)
            if j < size:
                kept[j] = item
    return kept


def write_memory(path: Path, tasks: Sequence[Task], upto: int, size: int, seed: int,
                 data_n: int | None) -> Path:
    """The memory after tasks 0..``upto``: a reservoir of their training records, seeded."""
    stream = [r for t in tasks[: upto + 1] for r in _records_of(t.data, data_n, seed)]
    _write_jsonl(path, reservoir(stream, size, random.Random(f"memory:{seed}")))
    return path


# -- planning --------------------------------------------------------------------------------------

@dataclass
class Chain:
    """One sequence: a run entry at one seed, its task runs in order."""

    label: str
    seed: int
    dir: Path
    runs: list[Planned] = field(default_factory=list)


def _task_config(base: dict, entry: dict, overrides: Sequence[str], tasks: list[Task], i: int,
                 seed: int, chain_dir: Path, memory: int) -> RunConfig:
    data = copy.deepcopy({**base, **{k: v for k, v in entry.items() if k not in ("label", "set")}})
    for o in list(overrides) + list(entry.get("set") or []):
        apply_override(data, o)
    start_model = data.get("model", "tiny")
    if i > 0:
        data["model"] = str(chain_dir / _task_dir(i - 1, tasks[i - 1]) / "model")
    probes = list(data.get("probes") or ["retained"])
    data.update(
        data=tasks[i].data, seed=seed, save_model=True, out=str(chain_dir / _task_dir(i, tasks[i])),
        probes=probes + [s for t in tasks for s in t.suites if s not in probes],
        heldout_probes=[t.heldout for t in tasks if t.heldout],
        domain_probes=list(data.get("domain_probes") or []) + [p for t in tasks for p in t.probe_files],
        data_holdout=0.0)  # a JSONL task was split once already
    if i > 0 and memory:
        ref = data.get("reference", "builtin:retained")
        data["reference"] = (list(ref) if isinstance(ref, list) else [ref]) + [
            str(chain_dir / f"memory-{i - 1}.jsonl")]
    from retain.strategies import STRATEGIES

    previous = chain_dir / _task_dir(i - 1, tasks[i - 1]) if i > 0 else None
    strategies = []
    for s in data.get("strategies") or [{"name": "full"}]:
        s = {"name": s} if isinstance(s, str) else dict(s)
        cls = STRATEGIES.get(s["name"]) if isinstance(s.get("name"), str) else None
        if cls is not None:  # what it carries between tasks (online EWC's Fisher, L2-SP's anchor)
            s = cls.options_for_task(s, previous, start_model)
        strategies.append(s)
    data["strategies"] = strategies
    return parse_config(data)


def _task_dir(i: int, task: Task) -> str:
    return f"{i}-{task.name}"


def plan_chains(f: dict, tasks: list[Task], out: Path) -> list[Chain]:
    chains = []
    for e in f["entries"]:
        label = entry_label(e)
        for seed in f["seeds"]:
            chain = Chain(label, seed, out / f"{slug(label)}-seed{seed}")
            for i in range(len(tasks)):
                try:
                    cfg = _task_config(f["base"], e, f["overrides"], tasks, i, seed, chain.dir,
                                       f["memory"])
                except UserError as err:
                    raise UserError(f"run {label!r}, task {tasks[i].name}: {err}") from None
                chain.runs.append(Planned(label, seed, cfg))
            chains.append(chain)
    return chains


def load_sequence_file(path: str | Path | None, overrides: Sequence[str] = (),
                       data: dict | None = None) -> dict[str, Any]:
    raw = dict(data) if data is not None else read_yaml(path)
    base = {k: v for k, v in raw.items() if k not in SEQUENCE_KEYS}
    if "data" in base:
        raise UserError("data is not a key of a sequence file: list the tasks' data under tasks")
    if "overwrite" in base:
        raise UserError("overwrite is not a key of a sequence file: use --overwrite")
    memory = raw.get("memory", DEFAULT_MEMORY)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
        raise UserError(f"memory: {memory!r} must be a number of examples >= 0")
    if "tasks" not in raw:
        raise UserError(f"{path}: a sequence file needs tasks: [builtin:legal, builtin:support, ...]")
    return {"base": base, "tasks": raw["tasks"], "overrides": list(overrides),
            "entries": read_entries(raw.get("runs") or [{"label": "full", "strategies": ["full"]}]),
            "seeds": read_seeds(raw.get("seeds"), base.get("seed", 0)),
            "out": Path(str(raw.get("out") or "runs/sequence")), "memory": memory,
            "title": str(raw.get("title") or ""), "keep_models": bool(raw.get("keep_models", False))}


# -- running ---------------------------------------------------------------------------------------

def run_chain(chain: Chain, tasks: list[Task], f: dict, *, overwrite: bool, echo=print) -> list[dict]:
    """Run (or reuse, or continue) the tasks of one sequence in order; returns their results."""
    from retain.probes.base import ProbeResult
    from retain.run import run

    for p in chain.runs:
        inspect(p)
    conflicts = [p for p in chain.runs if p.state == "conflict"]
    if conflicts and not overwrite:
        raise UserError(f"{conflicts[0].config.out} holds another run ({conflicts[0].why}); use "
                        f"--overwrite to replace it, or another out")
    results: list[dict] = []
    for i, p in enumerate(chain.runs):
        name = f"{chain.label} (seed {chain.seed}), task {i + 1}/{len(tasks)} {tasks[i].name}"
        if p.state == "complete":
            echo(f"{name}: complete, reused")
            results.append(p.results)
            continue
        if i > 0 and f["memory"]:
            write_memory(chain.dir / f"memory-{i - 1}.jsonl", tasks, i - 1, f["memory"],
                         chain.seed, p.config.data_n)
        echo(f"{name}: {'continuing' if p.state == 'unfinished' else 'running'} -> {p.config.out}")
        before = None
        if results:  # the same model and probes as the previous task's after-probes
            after = results[-1]["probes"]["after"]
            if not any(r["kind"] == "kl_to_base" for r in after):
                before = [ProbeResult(**r) for r in after]
        cfg = p.config.model_copy(update={"overwrite": p.state == "conflict",
                                          "resume": p.state == "unfinished"})
        if i > 0 and not (Path(chain.runs[i - 1].config.out) / "model").is_dir():
            raise UserError(f"{chain.runs[i - 1].config.out}/model is gone (a finished sequence "
                            f"keeps its last model only): rerun with --overwrite, or set "
                            f"keep_models: true")
        p.results = run(cfg, before=before)
        p.state = "complete"
        results.append(p.results)
    if not f["keep_models"]:  # a finished sequence needs only its last model
        for p in chain.runs[:-1]:
            shutil.rmtree(Path(p.config.out) / "model", ignore_errors=True)
    return results


def _chain_state(chain: Chain) -> str:
    """complete (every task folder complete), new (none started) or unfinished."""
    for p in chain.runs:
        inspect(p)
    states = {p.state for p in chain.runs}
    return "complete" if states == {"complete"} else "new" if states == {"new"} else "unfinished"


def run_sequence(path: str | Path | None, overrides: Sequence[str] = (), *, out: Path | None = None,
                 overwrite: bool = False, show: bool = True, data: dict | None = None,
                 extra: dict | None = None, listing: bool = False,
                 only: Sequence[str | int] = (), collect: bool = False) -> dict:
    """Run (or resume) every sequence of ``path`` and write the sequence folder's summary.
    On a scheduler, as ``retain compare``: ``listing`` prints the sequences (index, label,
    seed, folder, state), ``only`` runs those alone (no summary), ``collect`` writes the summary
    from complete sequences only, refusing while one is not (the first two return ``{}``)."""
    from retain.experiments.runner import check_fan_out, read_only

    from retain.experiments.sequence_metrics import summarize, write_sequences

    f = load_sequence_file(path, overrides, data)
    out = Path(out or f["out"])
    probe_cfg = parse_config({**f["base"], "out": str(out / "_check")})  # the base keys, checked
    tasks = read_tasks(f["tasks"], out, probe_cfg.data_holdout, probe_cfg.data_holdout_max,
                       write=False)
    chains = plan_chains(f, tasks, out)  # every config checked before anything is written
    check_fan_out(listing, only, collect)
    if listing:
        for i, c in enumerate(chains):
            print("\t".join([str(i), c.label, str(c.seed), str(c.dir), _chain_state(c)]))
        return {}
    chosen = read_only(only, len(chains)) if only else list(range(len(chains)))
    if collect:
        missing = [i for i, c in enumerate(chains) if _chain_state(c) != "complete"]
        if missing:
            raise UserError(f"--collect: sequence(s) {', '.join(map(str, missing))} not complete;"
                            f" run them first, e.g. --only {','.join(map(str, missing))}")
    write_task_files(tasks)
    echo = print if show else (lambda s: None)
    echo(f"{len(chains)} sequence(s) of {len(tasks)} tasks: {' -> '.join(t.name for t in tasks)}")
    t0 = time.time()
    records = []
    for i, chain in enumerate(chains):
        if i not in chosen:
            continue
        results = run_chain(chain, tasks, f, overwrite=overwrite, echo=echo)
        record = summarize(chain.label, chain.seed, [t.name for t in tasks], results)
        from retain.report.results import write_json_atomic

        write_json_atomic(chain.dir / SEQUENCE_FILE, record)
        records.append(record)
    if only:  # the others may still be running elsewhere: no summary
        return {}
    title = f["title"] or f"retain sequence: {probe_cfg.model}, {' -> '.join(t.name for t in tasks)}"
    return write_sequences(out, records, title=title, show=show,
                           extra={"wall_s": round(time.time() - t0, 1), "seeds": f["seeds"],
                                  "memory": f["memory"], **(extra or {})})
