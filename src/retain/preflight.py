"""Check first, then work: everything a user can get wrong in a run, checked before the model is
loaded or anything is written.

``preflight(config)`` validates the strategies, probes, guard, device and dtype, loads the
tokenizer (cheap) to read and tokenize the data file, and decides what to do with the out folder
(``new``, ``clean`` a failed or replaced run, or ``resume`` from a checkpoint). A mistake is one
``UserError`` line; nothing has been written when it is raised.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from retain.config import run_identity
from retain.errors import UserError
from retain.report import results as rr
from retain.train import checkpoint as ckpt


@dataclass
class Plan:
    """What ``run`` will do, all of it checked."""

    strategies: list
    probes: list
    probes_during: list
    guard_probes: list
    guard_verify: list  # the guard's probes at full size (probe_n): its final check
    tokenizer: Any
    domain_data: list[dict]  # tokenized training examples of the new domain
    reference: list[dict]  # tokenized reference data (replay, EWC)
    device: torch.device
    dtype: torch.dtype
    mixed_precision: str  # resolved: no / bf16 / fp16
    out_mode: str  # "new" (empty or missing folder), "clean" (remove a run's files), "resume"
    checkpoint: Path | None = None  # resume from this
    heldout: int = 0  # examples of the data file held out as the domain probe
    split: dict | None = None  # guarded probe key -> {"selection": k, "reporting": m} sizes
    inputs: dict | None = None  # the inputs' fingerprint (train/inputs.py), kept in checkpoints


def check_writable(out: Path) -> None:
    """The nearest existing folder at or above ``out`` must take a new file (tried for real:
    permission bits do not tell for root or read-only mounts)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"out {out}: {probe} exists and is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".retain-write-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise UserError(f"out {out}: cannot write in {probe} ({e.strerror or e})") from None


def results_status(out: Path) -> str | None:
    """The ``status`` of the run in ``out`` ("complete", "failed"), "unreadable", or None when
    it has no results.json."""
    if not (out / rr.RESULTS_FILE).is_file():
        return None
    try:
        return json.loads((out / rr.RESULTS_FILE).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def out_mode(config) -> tuple[str, Path | None]:
    """("new" | "clean" | "resume", checkpoint) for the run folder, or a UserError saying why
    it cannot be used. A folder whose results say "failed" may be rerun without ``overwrite``."""
    out = Path(config.out)
    check_writable(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"out {out} exists and is not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return "new", None
    status = results_status(out)
    if config.resume:
        if status == "complete":
            raise UserError(f"{out} holds a complete run: nothing to resume (--overwrite to redo)")
        try:
            have = yaml.safe_load((out / rr.CONFIG_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            raise UserError(f"{out} has no readable {rr.CONFIG_FILE}: not a retain run to "
                            "resume") from None
        have, want = run_identity(have), run_identity(config.model_dump(mode="json"))
        if have != want:
            diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            raise UserError(f"{out} holds a run of another config (differs in {', '.join(diff)});"
                            " resume with the same options, or use another out")
        last = ckpt.latest(out)
        if last is None:  # killed before its first checkpoint: nothing to continue from
            import sys

            print(f"{out}: no checkpoint: starting over", file=sys.stderr)
            return "clean", None
        return "resume", last
    if config.overwrite or status == "failed":
        return "clean", None
    hint = ("--resume to continue it from its last checkpoint, " if ckpt.latest(out) else "")
    raise UserError(f"run folder {out} is not empty; {hint}--overwrite to replace it, or "
                    "choose another out")


def check_fsdp(config, strategies, probes) -> None:
    """What sharded training (``fsdp``) runs, tested: the strategies of ``sharding.SHARDABLE``,
    no probe that needs a second (base) model, no Fisher saved beside the model."""
    from retain.train.sharding import SHARDABLE

    if bad := [s.name for s in strategies if s.name not in SHARDABLE]:
        raise UserError(f"fsdp: {', '.join(bad)} is not wired for sharded training; it runs "
                        f"{', '.join(SHARDABLE)} (or drop fsdp: data-parallel runs them all)")
    if needy := [p.name for p in probes if getattr(p, "needs_base", False)]:
        raise UserError(f"fsdp: probe {needy[0]} compares with a copy of the base model, which "
                        "sharded training does not keep; drop it or fsdp")
    if config.save_fisher:
        raise UserError("fsdp: save_fisher is not wired for sharded training; estimate it "
                        "afterwards with `retain fisher` on the saved model")


def preflight(config) -> Plan:
    """Check everything ``run(config)`` needs from the user, cheaply, in the order a user would
    fix it; returns the plan. Loads the tokenizer, never the model's weights."""
    if config.save_fisher and not config.save_model:
        raise UserError("save_fisher writes the Fisher beside the saved model: set save_model too")
    from retain.data import load_reference_data
    from retain.models import load_tokenizer, resolve_device, resolve_dtype
    from retain.probe_set import probe_set
    from retain.probes import load_probes
    from retain.strategies import build_strategies
    from retain.train.precision import resolve_mixed_precision

    strategies = build_strategies(config.strategies)
    ps_probes = load_probes(config.probes, n=config.probe_n, seed=config.seed)  # checked first
    if config.fsdp:
        check_fsdp(config, strategies, ps_probes)
    if config.guard is not None:  # a limit naming no probe: refused before the tokenizer loads
        from retain.guard_limits import select_probes

        select_probes(ps_probes, config.guard.parsed())
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    mixed = resolve_mixed_precision(config.mixed_precision, device)
    mode, last = out_mode(config)
    tok = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    ps = probe_set(config, tok, retained=ps_probes)  # the run's probes: retained + the new domain
    reference = load_reference_data(config.reference, tok, seq_len=config.seq_len,
                                    n=config.reference_n, seed=config.seed)
    inputs = None
    if config.checkpoint_every or mode == "resume":  # what a resume must find unchanged
        from retain.train.inputs import check_same, fingerprint
        from retain.train.loop import process_state

        inputs = fingerprint(config, process_state().num_processes)
        if mode == "resume":
            recorded = json.loads((last / "state.json").read_text(encoding="utf-8"))
            check_same(recorded.get("extra", {}).get("inputs"), inputs, str(config.out))
    return Plan(strategies=strategies, probes=ps.probes, probes_during=ps.during,
                guard_probes=ps.guard_checks, guard_verify=ps.guard_verify, tokenizer=tok,
                domain_data=ps.domain_data,
                reference=reference, device=device, dtype=dtype, mixed_precision=mixed,
                out_mode=mode, checkpoint=last, heldout=ps.heldout, inputs=inputs,
                split=ps.split)
