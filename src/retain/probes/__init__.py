"""Probes: score a model on the capabilities a fine-tune may erode.

    probes = load_probes(["retained", "legal", "my_probe.jsonl"], n=100, seed=0)
    results = evaluate(model, tokenizer, probes, base_model=base)   # list[ProbeResult]

Each result is keyed ``"<probe>.<metric>"`` and carries n, a 95% interval and a few examples.
Under ``torchrun``/``accelerate launch`` the processes share each probe's items (``shard``).
"""

from __future__ import annotations

from pathlib import Path

from retain.errors import UserError
from retain.probes.base import Outcome, Probe, ProbeResult
from retain.formats import format_prompt
from retain.probes.jsonl import load_jsonl_probe
from retain.probes.kinds import (ChoiceItem, ChoiceProbe, GenerationProbe, KLToBaseProbe,
                                 PerplexityProbe)
from retain.probes.shard import process_rank_world, sharded_outcomes
from retain.probes.suites import (DEFAULT_N, GROUPS, QUICK_N, SUITES, list_suites,
                                  parse_level_spec)

__all__ = ["Probe", "ProbeResult", "Outcome", "format_prompt", "load_probes", "evaluate",
           "list_suites", "SUITES", "GROUPS", "DEFAULT_N", "QUICK_N", "GenerationProbe",
           "ChoiceProbe", "PerplexityProbe", "KLToBaseProbe", "ChoiceItem", "load_jsonl_probe"]


def load_probes(specs: list[str], n: int | None = None, seed: int = 0) -> list[Probe]:
    """Probes for each spec: a suite name, a suite's harder level (``math:2``, probes named
    ``math_l2``), a group name (``retained``, ``all``) or a path to a ``.jsonl`` file.
    ``n`` items per probe (None: each suite's default, a file's every line)."""
    if isinstance(specs, str):
        specs = [specs]
    names: list[str] = []
    probes: list[Probe] = []
    for spec in specs:
        if spec in GROUPS or spec in SUITES:
            for name in GROUPS.get(spec, (spec,)):
                if name not in names:  # "retained" plus "math" asks for math once
                    names.append(name)
                    probes += SUITES[name].probes(n, seed)
        elif (leveled := parse_level_spec(spec)) is not None:  # "math:2"; unknown levels raise
            suite, level = SUITES[leveled[0]], leveled[1]
            if suite.probe_name(level) not in names:  # "math:1" is "math"
                names.append(suite.probe_name(level))
                probes += suite.probes(n, seed, level=level)
        elif spec == "humaneval":  # needs retain[code]: imported only when asked for
            from retain.probes.humaneval import load_humaneval_probe
            probes.append(load_humaneval_probe(n=n, seed=seed))
        elif spec.startswith("lm-eval:"):  # needs retain[lm-eval]; one probe per task
            from retain.probes.lm_eval_probe import load_lm_eval_probes
            probes += load_lm_eval_probes(spec, n=n, seed=seed)
        elif spec.endswith(".jsonl") or Path(spec).is_file():
            probes.append(load_jsonl_probe(spec, n=n, seed=seed))
        else:
            raise UserError(f"unknown probe suite {spec!r}; known: "
                            f"{', '.join(list(SUITES) + list(GROUPS))}, humaneval, lm-eval:TASK, "
                            "suite:level (e.g. math:2), or a path to a .jsonl file")
    return probes


def _score(probe: Probe, model, tokenizer, *, shard: bool, batch_size: int,
           base_model) -> ProbeResult:
    """One probe's result: its items shared by the processes when ``shard``, else all here.
    A probe without ``outcomes``/``aggregate`` (duck-typed, older) is scored whole by each."""
    kw = dict(batch_size=batch_size, base_model=base_model)
    if shard and hasattr(probe, "outcomes") and hasattr(probe, "aggregate"):
        return probe.aggregate(sharded_outcomes(probe, model, tokenizer, **kw))
    return probe.score(model, tokenizer, **kw)


def evaluate(model, tokenizer, probes: list[Probe], *, base_model=None, batch_size: int = 32,
             progress: bool = True, distributed: bool | None = None) -> list[ProbeResult]:
    """Score ``model`` on every probe, in order. ``base_model`` (same tokenizer) is needed by
    divergence probes (``kl_to_base``). Models return to their previous train/eval mode.

    In an initialized ``torch.distributed`` group of several processes (``distributed=None``,
    the default) every process must call this with the same probes: each scores its share of
    every probe's items and all return the same results, those of one process. Pass
    ``distributed=False`` where only some processes call it: each then scores every item (as
    every process does for a sharded model, whose forwards need them all).
    The progress bar shows on the main process only."""
    needy = [p.name for p in probes
             if getattr(p, "needs_base", False) or p.kind == "kl_to_base"]
    if needy and base_model is None:
        raise UserError(f"probe(s) {', '.join(needy)} need a base model to compare with")
    from retain.train.sharding import is_sharded, reshard

    rank, world = process_rank_world()
    # A sharded (FSDP) model needs every process in each forward: all score every item.
    shard = world > 1 and distributed is not False and not is_sharded(model)

    def score(p: Probe) -> ProbeResult:
        return _score(p, model, tokenizer, shard=shard, batch_size=batch_size,
                      base_model=base_model)

    try:
        return _score_all(probes, score, progress and rank == 0)
    finally:
        if is_sharded(model):
            reshard(model)  # a forward alone leaves the root group's weights gathered


def _score_all(probes: list[Probe], score, progress: bool) -> list[ProbeResult]:
    """``score`` of each probe in turn, under a progress bar when ``progress``."""
    if not progress:
        return [score(p) for p in probes]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = []
    columns = (TextColumn("probing {task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=len(probes))
        for p in probes:
            bar.update(task, description=f"{p.name}.{p.metric}")
            results.append(score(p))
            bar.advance(task)
    return results
