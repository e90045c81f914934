"""Which probes a run measures: one function, used by every path that probes a run's model.

A run's probe set is its retained probes (``probes``) plus its new domain: the held-out split
of a JSONL ``data`` file, ``heldout_probes`` files and ``domain_probes`` files. ``retain run``,
``compare``, ``sweep``, ``sequence`` and the Trainer callback all take it from ``probe_set``,
so a comparison's "before" and a run's "after" cannot measure different things (a copy of
this logic in compare once dropped the new domain from every comparison on a user's JSONL).
"""

from __future__ import annotations

from dataclasses import dataclass
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

    probes: list  # retained + domain: the before and after probes
    during: list  # the probes every ``probe_every`` steps (default: ``probes``)
    domain_data: list[dict]  # tokenized training examples (the held-out records removed)
    heldout: int  # records of the data file held out as the domain probe


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
    during = None if config.probes_during is None else load_probes(
        config.probes_during, n=config.probe_n, seed=config.seed)
    domain_data, heldout = load_train_data_split(
        config.data, tokenizer, seq_len=config.seq_len, n=config.data_n, seed=config.seed,
        holdout=config.data_holdout, holdout_max=config.data_holdout_max)
    probes = probes + domain_probes(config, tokenizer, heldout, {p.name for p in probes})
    return ProbeSet(probes=probes, during=probes if during is None else during,
                    domain_data=domain_data, heldout=len(heldout))


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
