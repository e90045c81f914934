"""Which probes a run measures: one function, used by every path that probes a run's model.

A run's probe set is its retained probes (``probes``) plus its new domain: the held-out split
of a JSONL ``data`` file, ``heldout_probes`` files and ``domain_probes`` files. ``retain run``,
``compare``, ``sweep``, ``sequence`` and the Trainer callback all take it from ``probe_set``,
so a comparison's "before" and a run's "after" cannot measure different things (a copy of
this logic in compare once dropped the new domain from every comparison on a user's JSONL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The RunConfig fields ``probe_set`` reads (with the model and its loading options, they decide
# the base model's "before" results: a comparison may share them between runs that agree here).
PROBE_SET_FIELDS = ("model", "dtype", "device", "trust_remote_code", "probes", "probes_during",
                    "probe_n", "seed", "probe_batch_size", "data", "data_n", "data_holdout",
                    "data_holdout_max", "seq_len", "heldout_probes", "domain_probes", "guard")


@dataclass
class ProbeSet:
    """The probes of one run and the data split they were cut from."""

    probes: list  # retained + domain: the before and after probes (their reporting parts)
    during: list  # the probes every ``probe_every`` steps (default: ``probes``)
    domain_data: list[dict]  # tokenized training examples (the held-out records removed)
    heldout: int  # records of the data file held out as the domain probe
    guard_checks: list = field(default_factory=list)  # the guard's check: n selection items
    guard_verify: list = field(default_factory=list)  # its final check: the selection parts
    split: dict = field(default_factory=dict)  # probe key -> {"selection": k, "reporting": m}


def probe_set_key(config) -> str:
    """A string that is equal for two configs exactly when their base "before" results are."""
    import json

    dumped = config.model_dump(mode="json")
    return json.dumps({k: dumped.get(k) for k in PROBE_SET_FIELDS}, sort_keys=True)


def probe_set(config, tokenizer, retained: list | None = None) -> ProbeSet:
    """The probe set of ``config`` (a ``RunConfig``), with its data read and split: the retained
    probes (``retained`` when the caller loaded them already), then the domain probes (see the
    module docstring). Raises ``UserError`` on a bad probe spec or data file; loads no model
    weights."""
    from retain.data import load_train_data_split
    from retain.probes import load_probes

    probes = retained if retained is not None else load_probes(
        config.probes, n=config.probe_n, seed=config.seed)
    probes, checks, verify, split = guard_parts(config.guard, config.probes, probes,
                                                config.probe_n, config.seed)
    during = None if config.probes_during is None else load_probes(
        config.probes_during, n=config.probe_n, seed=config.seed)
    domain_data, heldout = load_train_data_split(
        config.data, tokenizer, seq_len=config.seq_len, n=config.data_n, seed=config.seed,
        holdout=config.data_holdout, holdout_max=config.data_holdout_max)
    probes = probes + domain_probes(config, tokenizer, heldout, {p.name for p in probes})
    return ProbeSet(probes=probes, during=probes if during is None else during,
                    domain_data=domain_data, heldout=len(heldout), guard_checks=checks,
                    guard_verify=verify, split=split)


def guard_parts(guard, specs: list[str], probes: list, n: int | None,
                seed: int) -> tuple[list, list, list, dict]:
    """(``probes`` with the guarded ones cut to their reporting parts, the guard's check probes
    (``guard.n`` items of each selection part), its final check's probes (the whole selection
    parts, as many items as the reporting parts, or ``guard.verify_n``, where the pool allows),
    the split's sizes);
    ``probes`` unchanged and empty lists without a guard. ``guard``: a ``GuardConfig``."""
    if guard is None:
        return probes, [], [], {}
    from retain.guard_limits import select_probes
    from retain.probes import load_probes

    guarded = select_probes(probes, guard.parsed())  # a limit naming no probe: UserError
    reported = n or max((len(p) for p in guarded), default=60)  # None: each suite's default
    size = guard.verify_n or reported  # the final check's items per probe
    pool = load_probes(specs, n=reported + size, seed=seed)  # the first `reported` are reported
    rep, sel, split = split_selection(guarded, pool, size, seed)
    cut = {id(p): r for p, r in zip(guarded, rep)}
    checks = [with_items(s, list(range(min(guard.n, len(s))))) for s in sel]
    return [cut.get(id(p), p) for p in probes], checks, sel, split


def domain_probes(config, tokenizer, heldout: list[tuple[str, Any]], taken: set[str]) -> list:
    """The user's domain, measured: probes of the held-out part of a JSONL data file (named after
    the file, ``_heldout`` added if a probe has that name already) and the user's own domain
    probe files."""
    from retain.data import read_jsonl
    from retain.probes.domain import domain_probe_files
    from retain.probes.domain import domain_probes as of_records

    name = Path(config.data).stem
    if name in taken:
        name += "_heldout"
    found = of_records(name, heldout, tokenizer, seq_len=config.seq_len,
                       seed=config.seed) if heldout else []
    for path in config.heldout_probes:  # data-shaped files, each its own domain probe
        found += of_records(Path(path).stem, read_jsonl(path), tokenizer,
                            seq_len=config.seq_len, seed=config.seed)
    return found + domain_probe_files(config.domain_probes, n=config.probe_n, seed=config.seed)


# ---------------------------------------------------------------- selection apart from reporting
MIN_SELECT = 8  # fewer fresh items than this: the selection part is carved out of the reporting


def pool_field(probe) -> str | None:
    """The list a probe keeps its items in (``items`` or ``texts``), None for kinds that cannot
    be cut (lm-eval, HumanEval)."""
    import dataclasses

    if not dataclasses.is_dataclass(probe):
        return None
    names = {f.name for f in dataclasses.fields(probe)}
    return next((n for n in ("items", "texts", "examples") if n in names), None)


def with_items(probe, keep: list[int]):
    """A copy of ``probe`` holding only its items at the indices ``keep`` (in that order)."""
    import dataclasses

    field = pool_field(probe)
    pool = getattr(probe, field)
    return dataclasses.replace(probe, **{field: [pool[i] for i in keep]})


def split_selection(reporting: list, pool: list, n: int, seed: int) -> tuple[list, list, dict]:
    """(reporting probes, selection probes, sizes): for each probe of ``reporting``, a selection
    part of up to ``n`` items that share no content with its reporting items, taken from the
    same probe of ``pool`` (the same specs loaded with more items: a suite's first items are its
    reporting items, so the next ones are fresh). Where the pool has fewer than ``MIN_SELECT``
    fresh items (a small file, a small template space), a seeded share of the reporting items
    is carved out instead (at most half), and the reporting part shrinks. ``sizes``: probe key
    -> {"selection": k, "reporting": m}. Selection and reporting never share an item: a guard
    or a search that chooses on the selection part reports on items it did not choose on."""
    import random

    by_key = {f"{p.name}.{p.metric}": p for p in pool}
    rep_out, sel_out, sizes = [], [], {}
    for p in reporting:
        key, field = f"{p.name}.{p.metric}", pool_field(p)
        if field is None:
            raise _unsplittable(key)
        mine = [repr(x) for x in getattr(p, field)]
        big = by_key.get(key)
        extra = getattr(big, field) if big is not None else []
        seen, fresh = set(mine), []
        for i, x in enumerate(extra):
            if repr(x) not in seen and len(fresh) < n:
                seen.add(repr(x))
                fresh.append(i)
        if len(fresh) >= min(MIN_SELECT, n):
            rep, sel = p, with_items(big, fresh)
        else:  # carve: a seeded selection out of the reporting items, at most half of them
            k = min(n, len(mine) // 2)
            if k == 0:
                raise _unsplittable(key, f"{len(mine)} item(s) are too few to split")
            chosen = set(random.Random(seed).sample(range(len(mine)), k))
            rep = with_items(p, [i for i in range(len(mine)) if i not in chosen])
            sel = with_items(p, sorted(chosen))
        rep_out.append(rep)
        sel_out.append(sel)
        sizes[key] = {"selection": len(getattr(sel, field)), "reporting": len(getattr(rep, field))}
    return rep_out, sel_out, sizes


def _unsplittable(key: str, why: str = "its items cannot be split"):
    from retain.errors import UserError

    return UserError(f"probe {key}: {why} into a selection part (what the guard or a merge "
                     "search chooses on) and a reporting part; leave it out of what is guarded "
                     "or searched, or give a larger probe file")
