"""Data-parallel probing: split a probe's items across processes and gather their outcomes.

Under ``torchrun``/``accelerate launch`` each process scores its round-robin share of the items
(``shard_indices``); ``gather_outcomes`` all-gathers every share and puts the outcomes back in
item order (``merge_shards``), so that every process aggregates the result one process would.
"""

from __future__ import annotations

from typing import Sequence

from retain.probes.base import Outcome, Probe

Shard = tuple[list[int], list[Outcome]]  # (item indices, their outcomes in the same order)


def process_rank_world() -> tuple[int, int]:
    """(rank, world size) of the default ``torch.distributed`` process group; (0, 1) when none
    is initialized (a single process, or a launcher whose processes never joined a group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The items of ``rank`` among ``world`` processes: ``rank, rank + world, ...`` below ``n``.

    Round robin: every item lands on exactly one rank and shares differ by at most one item
    (a rank gets none when ``n < world``)."""
    if world < 1 or not 0 <= rank < world or n < 0:
        raise ValueError(f"need n >= 0 and 0 <= rank < world, got n={n}, rank={rank}, "
                         f"world={world}")
    return list(range(rank, n, world))


def merge_shards(shards: Sequence[tuple[Sequence[int], Sequence[Outcome]]],
                 n: int) -> list[Outcome]:
    """The outcomes of items 0..n-1 in item order, from every rank's (indices, outcomes).

    Raises ValueError unless the shards cover each item exactly once (processes that disagree
    on a probe's items would otherwise aggregate a silently wrong result)."""
    merged: list[Outcome | None] = [None] * n
    for rank, (indices, outcomes) in enumerate(shards):
        if len(indices) != len(outcomes):
            raise ValueError(f"rank {rank}: {len(outcomes)} outcomes for {len(indices)} items")
        for i, outcome in zip(indices, outcomes):
            if not 0 <= i < n or merged[i] is not None:
                raise ValueError(f"rank {rank}: item {i} is out of range or scored twice "
                                 f"({n} items)")
            merged[i] = outcome
    missing = [i for i, o in enumerate(merged) if o is None]
    if missing:
        raise ValueError(f"items {missing[:10]} were scored by no rank ({n} items)")
    return merged  # type: ignore[return-value]  # no None left


def gather_outcomes(indices: Sequence[int], outcomes: Sequence[Outcome], n: int) -> list[Outcome]:
    """Every rank's (indices, outcomes), all-gathered to every rank (``all_gather_object``:
    pickled, works on gloo and NCCL) and merged into the outcomes of items 0..n-1.

    A collective: every rank of the default group must call it, once per probe, in the same
    order. On NCCL each process must have set its CUDA device (``accelerate`` does)."""
    import torch.distributed as dist

    shards: list[Shard | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, (list(indices), list(outcomes)))
    return merge_shards(shards, n)  # type: ignore[arg-type]  # every slot filled by the gather


def sharded_outcomes(probe: Probe, model, tokenizer, *, batch_size: int = 32,
                     base_model=None) -> list[Outcome]:
    """The outcomes of every item of ``probe``, each scored once by some rank, on every rank."""
    rank, world = process_rank_world()
    mine = shard_indices(len(probe), rank, world)
    outcomes = probe.outcomes(model, tokenizer, mine, batch_size=batch_size,
                              base_model=base_model)
    if world == 1:
        return outcomes
    return gather_outcomes(mine, outcomes, len(probe))


__all__ = ["process_rank_world", "shard_indices", "merge_shards", "gather_outcomes",
           "sharded_outcomes"]
