"""The one experiments runner: plan runs from a base config, entries and seeds; find what each
run folder holds (new, complete, unfinished, another config); fan out (``--list``, ``--only``,
``--collect``, or submitting them to a launcher, ``retain.experiments.launch``); run what is
left, probing the base once per probe set. ``retain compare``,
``sweep``, ``demo`` and ``sequence`` plan their runs with it (a sequence chains its runs, but
plans, inspects and fans out through the same functions).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from retain.config import RunConfig, apply_override, parse_config, run_identity
from retain.errors import UserError

# Keys of a compare (or sweep, or demo) file that are not RunConfig keys ("quick": for
# `retain demo --quick` only).
COMPARE_KEYS = ("runs", "seeds", "out", "title", "rank_by", "min_gain_share", "quick", "launcher")


@dataclass
class Planned:
    """One run of a comparison or sweep: its label (shared by its seeds), seed and config."""

    label: str
    seed: int
    config: RunConfig
    state: str = "new"  # "new", "complete" (reused), "unfinished" (re-run), "conflict"
    results: dict | None = None
    why: str = ""  # what differs, for a conflict
    resources: dict = field(default_factory=dict)  # its entry's resources: (for --launcher)


def slug(label: str) -> str:
    """A label as a folder name: lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "run"


def entry_label(entry: dict[str, Any]) -> str:
    """An entry's label, else its strategy names joined by ``+``."""
    if entry.get("label"):
        return str(entry["label"])
    specs = entry.get("strategies") or [{"name": "full"}]
    return "+".join(s if isinstance(s, str) else str(s.get("name", "?")) for s in specs)


def read_entries(runs: Any, where: str = "runs") -> list[dict[str, Any]]:
    """The ``runs`` list: mappings of a ``label`` and RunConfig keys (``strategies``, ``lr``...)."""
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{where}: give a list of runs, e.g. [{{label: lora, strategies: [lora]}}]")
    entries = []
    for i, e in enumerate(runs):
        if isinstance(e, str):
            e = {"strategies": [e]}
        if not isinstance(e, dict):
            raise UserError(f"{where}[{i}]: expected a mapping with label and strategies, got {e!r}")
        for bad in ("out", "seed", "overwrite"):
            if bad in e:
                raise UserError(f"{where}[{i}]: {bad!r} is set by compare, not per run")
        entries.append(dict(e))
    labels = [entry_label(e) for e in entries]
    slugs = [slug(x) for x in labels]
    for i, s in enumerate(slugs):
        if slugs.index(s) != i:
            raise UserError(f"{where}: labels {labels[slugs.index(s)]!r} and {labels[i]!r} give the "
                            f"same folder name {s!r}; give the runs distinct labels")
    return entries


def read_seeds(seeds: Any, default: int) -> list[int]:
    if seeds is None:
        return [int(default)]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"seeds: give a list of integers, e.g. [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds: {seeds} repeats a seed")
    return list(seeds)


def check_overrides(args: Sequence[str], file_keys: Sequence[str], command: str) -> list[str]:
    """The ``a.b=c`` arguments of compare, sweep or sequence, which override keys of every
    run. A key of the file itself (``out``, ``seeds``, ``runs``...) or one the command sets per
    run (``seed``) would be dropped without a word: refused, with where it belongs."""
    for arg in args:
        key = arg.split("=", 1)[0].strip().split(".", 1)[0]
        if key in ("out", "overwrite"):
            raise UserError(f"{arg!r}: {key} is not a key of each run; use --{key}"
                            + (f" {arg.split('=', 1)[1]}" if key == "out" and "=" in arg else ""))
        if key == "seed":
            raise UserError(f"{arg!r}: {command} sets each run's seed from the file's seeds: "
                            "key; give seeds: [...] in the file")
        if key in file_keys:
            raise UserError(f"{arg!r}: {key} is a key of the {command} file, not of each run; "
                            "set it in the file")
    return list(args)


def plan(base: dict[str, Any], entries: Sequence[dict[str, Any]], seeds: Sequence[int], out: Path,
         overrides: Sequence[str] = ()) -> list[Planned]:
    """Every (entry, seed) run with its resolved config (all validated before anything runs):
    the base keys, then the entry's keys, then ``a.b=c`` overrides (the entry's ``set`` list).
    An override of what ``plan`` sets itself (``out``, ``seed``) is refused, not dropped. An
    entry's ``resources`` (what a launcher gives its jobs) is kept beside the config."""
    from retain.experiments.launch import read_resources

    check_overrides(overrides, COMPARE_KEYS, "compare")
    planned = []
    for e in entries:
        label = entry_label(e)
        resources = read_resources(e.get("resources", {}), f"run {label!r}: resources")
        keys = {k: v for k, v in e.items() if k not in ("label", "set", "resources")}
        for seed in seeds:
            data = copy.deepcopy({**base, **keys})
            if "strategies" in data:
                data["strategies"] = list(data["strategies"])
            for o in list(overrides) + list(e.get("set") or []):
                apply_override(data, o)
            data.update(seed=seed, out=str(Path(out) / f"{slug(label)}-seed{seed}"))
            try:
                cfg = parse_config(data)
            except UserError as err:
                raise UserError(f"run {label!r}: {err}") from None
            planned.append(Planned(label, seed, cfg, resources=resources))
    return planned


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            return f"{k}: {json.dumps(a.get(k))} there, {json.dumps(b.get(k))} planned"
    return "?"


def inspect(p: Planned) -> None:
    """Set ``p.state`` from its folder: new, complete (same config: reuse), unfinished (same
    config, no results: run again), or conflict (another config, or files retain did not write)."""
    from retain.report import results as rr

    out = Path(p.config.out)
    want = run_identity(p.config.model_dump(mode="json"))
    p.state, p.results = "new", None
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        p.state, p.why = "conflict", "it is not a folder"
        return
    res = None
    if (out / rr.RESULTS_FILE).is_file():
        try:
            res = json.loads((out / rr.RESULTS_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            res = None
    if isinstance(res, dict) and isinstance(res.get("config"), dict):
        have = run_identity(res["config"])
        if have != want:
            p.state, p.why = "conflict", _first_difference(have, want)
        elif res.get("status") == "complete" and res.get("schema_version") == rr.SCHEMA_VERSION:
            p.state, p.results = "complete", res
        else:
            p.state = "unfinished"
        return
    cfg_file = out / rr.CONFIG_FILE
    try:
        have = run_identity(yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        p.state, p.why = "conflict", f"it has no readable {rr.CONFIG_FILE}"
        return
    if have == want:
        p.state = "unfinished"
    else:
        p.state, p.why = "conflict", _first_difference(have, want)


def probe_base(cfg: RunConfig) -> list:
    """The config's model, before any fine-tuning, on the run's own probe set (``probe_set``:
    the retained probes and the new domain, held-out split included) and seed."""
    from accelerate.utils import set_seed

    from retain.models import load_model, load_tokenizer
    from retain.probe_set import probe_set
    from retain.probes import evaluate
    from retain.train.precision import autocast, resolve_mixed_precision

    from retain.probes import sandbox

    sandbox.configure(cfg.sandbox)  # the base's generated code runs as the run's would
    tok = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    probes = probe_set(cfg, tok).probes
    set_seed(cfg.seed)
    model, tok = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device,
                            trust_remote_code=cfg.trust_remote_code, tokenizer=tok)
    needs_base = any(getattr(p, "needs_base", False) for p in probes)
    device = next(model.parameters()).device
    # Under the autocast the run's after-probes use: before and after differ by training alone.
    with autocast(device, resolve_mixed_precision(cfg.mixed_precision, device)):
        # KL to the base of the base itself is 0: the model is its own reference here.
        return evaluate(model, tok, probes, base_model=model if needs_base else None,
                        batch_size=cfg.probe_batch_size, progress=cfg.progress)


def read_only(values: Sequence[str | int], n: int) -> list[int]:
    """The run indices of ``--only`` (repeatable, each an index or a comma list of them), in
    plan order without repeats; one out of ``0..n-1`` (or not an integer) is a ``UserError``."""
    picked = set()
    for v in values:
        for part in str(v).split(","):
            try:
                i = int(part.strip())
            except ValueError:
                raise UserError(f"--only {v}: give run indices from --list, e.g. --only 0,2") from None
            if not 0 <= i < n:
                raise UserError(f"--only {i}: no such run; the indices are 0 to {n - 1} (see --list)")
            picked.add(i)
    return sorted(picked)


def list_planned(planned: list[Planned], echo=print) -> list[dict]:
    """Print one tab-separated line per planned run (index, label, seed, folder, state, and for
    a conflict what differs) and return them as rows; ``len`` of them is the N of a job array."""
    rows = []
    for i, p in enumerate(planned):
        inspect(p)
        rows.append({"index": i, "label": p.label, "seed": p.seed, "dir": str(p.config.out),
                     "state": p.state})
        echo("\t".join([str(i), p.label, str(p.seed), str(p.config.out), p.state]
                       + ([p.why] if p.state == "conflict" else [])))
    return rows


def check_fan_out(listing: bool, only: Sequence[str | int], collect: bool,
                  launcher: str | None = None) -> None:
    """``--list``, ``--only`` and ``--collect`` are three modes: at most one; ``--launcher``
    submits the runs (or those of ``--only``), so it neither lists nor only collects."""
    if sum([listing, bool(only), collect]) > 1:
        raise UserError("--list, --only and --collect exclude each other")
    if launcher and (listing or collect):
        raise UserError(f"--launcher submits runs: it excludes --{'list' if listing else 'collect'}")


def check_conflicts(planned: list[Planned], chosen: set[int], overwrite: bool) -> None:
    """Folders of another config among ``chosen`` (inspected) are refused, all counted, unless
    ``overwrite``."""
    conflicts = [p for i, p in enumerate(planned) if p.state == "conflict" and i in chosen]
    if conflicts and not overwrite:
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise UserError(f"{first.config.out} holds another run ({first.why}){more}; use "
                        f"--overwrite to replace it, or another out")


def fan_out(planned: list[Planned], *, listing: bool = False, only: Sequence[str | int] = (),
            collect: bool = False, overwrite: bool = False, echo=print,
            launch=None) -> list[dict] | None:
    """``run_planned`` as ``--list``, ``--only`` or ``--collect`` ask: the results of every run
    when the caller should write its summary, else None (listing prints; ``only`` runs those
    runs alone, since the others may still be running elsewhere). ``launch``
    (``retain.experiments.launch.Launch``): the runs (or those of ``only``) are submitted as jobs
    and waited for; then, without ``only``, collected as ``collect`` does."""
    check_fan_out(listing, only, collect, launch and launch.launcher)
    if listing:
        list_planned(planned)  # printed even when quiet: it is what was asked for
        return None
    if launch is not None:
        from retain.experiments.launch import launch as submit

        chosen = read_only(only, len(planned)) if only else list(range(len(planned)))
        for p in planned:
            inspect(p)
        check_conflicts(planned, set(chosen), overwrite)
        submit(planned, launch, chosen, echo=echo)
        return None if only else run_planned(planned, echo=echo, collect=True)
    if only:
        run_planned(planned, overwrite=overwrite, echo=echo, only=read_only(only, len(planned)))
        return None
    return run_planned(planned, overwrite=overwrite, echo=echo, collect=collect)


def run_planned(planned: list[Planned], *, overwrite: bool = False, echo=print,
                only: Sequence[int] | None = None, collect: bool = False) -> list[dict]:
    """Run what is not done yet, in order; returns every run's results (reused or new; None
    for a run left out by ``only``, the indices of the runs to consider).

    Folders of another config are refused (all of them named, before anything runs) unless
    ``overwrite``, which replaces them; complete folders of the same config are always reused.
    ``collect`` runs nothing: it refuses, naming their indices, when some runs are not complete."""
    from retain.probe_set import probe_set_key
    from retain.run import run

    for p in planned:
        inspect(p)
    if collect:
        missing = [i for i, p in enumerate(planned) if p.state != "complete"]
        if missing:
            states = ", ".join(f"{i}: {planned[i].state}" for i in missing)
            raise UserError(f"--collect: run{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(str, missing))} not complete ({states}); run "
                            f"{'them' if len(missing) > 1 else 'it'} first, e.g. --only "
                            f"{','.join(map(str, missing))}")
    chosen = set(range(len(planned)) if only is None else only)
    check_conflicts(planned, chosen, overwrite)
    todo = sum(p.state != "complete" for i, p in enumerate(planned) if i in chosen)
    echo(f"{len(planned)} runs: {len(planned) - todo} already complete, {todo} to run"
         if only is None else f"{len(chosen)} of {len(planned)} runs (--only): "
         f"{len(chosen) - todo} already complete, {todo} to run")
    before_cache: dict[tuple, list] = {}
    for i, p in enumerate(planned, 1):
        name = f"[{i - 1}] {p.label} (seed {p.seed})"  # the index of --list and --only
        if i - 1 not in chosen:
            continue
        if p.state == "complete":
            echo(f"{name}: complete, reused")
            continue
        echo(f"{name}: {'continuing (unfinished)' if p.state == 'unfinished' else 'running'}"
             f" -> {p.config.out}")
        key = probe_set_key(p.config)
        if key not in before_cache:
            before_cache[key] = probe_base(p.config)
        # An unfinished run continues from its last checkpoint (or starts over without one).
        cfg = p.config.model_copy(update={"overwrite": p.state == "conflict",
                                          "resume": p.state == "unfinished"})
        p.results = run(cfg, before=before_cache[key])
        p.state = "complete"
    return [p.results for p in planned]
