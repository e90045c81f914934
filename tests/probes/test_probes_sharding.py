"""Probe items split across processes: shards cover every item once, the outcomes of the shards
aggregate to exactly what ``score`` gives, and two real gloo processes running ``evaluate``
each score half of the items and both return the single-process results.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from retain.builtin.tasks import Item
from retain.probes import (ChoiceItem, ChoiceProbe, GenerationProbe, KLToBaseProbe,
                           PerplexityProbe, Probe, evaluate, load_probes)
from retain.probes.shard import merge_shards, shard_indices

from probe_models import make_model

PROMPTS = ["What is 1 + 1?", "Say hi.", "Name a color.", "a" * 30, "x", "Count to three.",
           "Translate to French: the red cat"]
TEXTS = ["The cat sleeps.", "A longer text about a dog that walks near the river at night.",
         "Hi.", "Rain fell on the quiet town all evening.", "Numbers: 1, 2, 3, 4, 5."]
# batch_size=1: each item is computed alone whether or not it shares a call with others, so
# shards and one process run the same float operations and must agree exactly (batching's
# own invariance is test_probes_engine's concern, with tolerances).
BATCH = 1
WORKER_TIMEOUT_S = 120


def generation_probe(model, tok) -> GenerationProbe:
    """Seven prompts; the even ones expect the model's own answer, so some items pass."""
    items = [Item(f"g{i}", prompt=p, answer="zzz") for i, p in enumerate(PROMPTS)]
    probe = GenerationProbe("g", items, "custom", max_new_tokens=8)  # fixed budget
    answers = [o["answer"] for o in probe.outcomes(model, tok, range(len(items)), batch_size=BATCH)]
    probe.items = [replace(it, answer=a) if i % 2 == 0 and a.strip() else it
                   for i, (it, a) in enumerate(zip(items, answers))]
    return probe


def kind_probes(model, tok) -> dict[str, Probe]:
    choice = [ChoiceItem("The sky is", (" blue", " green", " loud"), 0),
              ChoiceItem("Two plus two is", (" four", " five"), 1),
              ChoiceItem("Cats say", (" meow", " woof", " moo"), 2),
              ChoiceItem("Ice is", (" cold", " hot"), 0),
              ChoiceItem("The sun rises in the", (" east", " west"), 1)]
    return {"generation": generation_probe(model, tok),
            "choice": ChoiceProbe("c", choice, "custom"),
            "perplexity": PerplexityProbe("p", TEXTS, "custom", seed=3),
            "kl_to_base": KLToBaseProbe("k", TEXTS, "custom")}


# ---------------------------------------------------------------- pure helpers
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 17])
def test_shard_indices_cover_each_item_once(n, world):
    shares = [shard_indices(n, rank, world) for rank in range(world)]
    flat = [i for share in shares for i in share]
    assert sorted(flat) == list(range(n))  # every item, none twice
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert all(share == sorted(share) for share in shares)
    if n < world:
        assert shares[-1] == []


@pytest.mark.parametrize("args", [(3, 2, 2), (3, -1, 2), (3, 0, 0), (-1, 0, 1)])
def test_shard_indices_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        shard_indices(*args)


def test_merge_shards_restores_item_order_and_checks_coverage():
    shards = [([0, 2, 4], [{"v": 0}, {"v": 2}, {"v": 4}]), ([1, 3], [{"v": 1}, {"v": 3}]), ([], [])]
    assert [o["v"] for o in merge_shards(shards, 5)] == [0, 1, 2, 3, 4]
    for bad in ([([0, 1], [{"v": 0}, {"v": 1}]), ([1], [{"v": 1}])],  # item 1 twice
                [([0], [{"v": 0}])],  # item 1 missing
                [([0, 1, 2], [{"v": 0}, {"v": 1}, {"v": 2}])],  # item 2 out of range
                [([0, 1], [{"v": 0}])]):  # fewer outcomes than indices
        with pytest.raises(ValueError):
            merge_shards(bad, 2)


# ---------------------------------------------------------------- each kind, shards by hand
@pytest.fixture(scope="module")
def models(tok):
    return make_model("llama", tok), make_model("llama", tok, seed=1)  # (model, base)


@pytest.mark.parametrize("kind", ["generation", "choice", "perplexity", "kl_to_base"])
def test_shard_outcomes_aggregate_to_score(kind, tok, models):
    model, base = models
    probe = kind_probes(model, tok)[kind]
    kw = dict(batch_size=BATCH, base_model=base)
    whole = probe.score(model, tok, **kw)
    every = probe.outcomes(model, tok, range(len(probe)), **kw)
    assert probe.aggregate(every) == whole
    if whole.metric == "accuracy":  # some items pass and some fail: order shows in examples
        assert 0.0 < whole.value < 1.0
    for world in (2, 3):
        shards = []
        for rank in range(world):
            idx = shard_indices(len(probe), rank, world)
            shards.append((idx, probe.outcomes(model, tok, idx, **kw)))
        merged = merge_shards(shards, len(probe))
        assert merged == every
        assert probe.aggregate(merged) == whole  # value, n, interval, examples: all exact
    assert probe.outcomes(model, tok, [], **kw) == []  # a rank with no items
    json.dumps(every)  # plain records: they cross processes
    with pytest.raises(ValueError):  # an outcome short would shrink n silently
        probe.aggregate(every[:-1])


def test_aggregate_sees_item_order(tok, models):
    """Outcomes out of item order give another result: the reordering is needed."""
    model, _ = models
    probe = kind_probes(model, tok)["perplexity"]
    every = probe.outcomes(model, tok, range(len(probe)), batch_size=BATCH)
    shuffled = every[1:] + every[:1]
    assert probe.aggregate(shuffled).examples != probe.aggregate(every).examples


# ---------------------------------------------------------------- two real processes
def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: join a gloo group, evaluate math and writing, write what it got and scored."""
    import torch.distributed as dist

    from retain.models import load_model

    torch.set_num_threads(1)  # two ranks on two cores; and the reference uses one thread too
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        model, tok = load_model("tiny", device="cpu")
        probes = load_probes(["math", "writing"], n=8, seed=0)
        scored: dict[str, list[int]] = {}
        for p in probes:  # record which items this rank scores
            def spy(*args, _p=p, _inner=p.outcomes, **kwargs):
                scored.setdefault(f"{_p.name}.{_p.metric}", []).extend(args[2])
                return _inner(*args, **kwargs)
            p.outcomes = spy
        results = evaluate(model, tok, probes, batch_size=BATCH, progress=False)
        local = evaluate(model, tok, probes, batch_size=BATCH, progress=False, distributed=False)
        record = {"results": [r.to_dict() for r in results], "scored": scored,
                  "local": [r.to_dict() for r in local]}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        dist.destroy_process_group()


def _run_ranks(world: int, tmp_path: Path) -> list[dict]:
    ctx = torch.multiprocessing.spawn(_rank_main, args=(world, str(tmp_path / "store"),
                                                        str(tmp_path)),
                                      nprocs=world, join=False)
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    while not ctx.join(timeout=1):  # raises if a rank failed
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"ranks still running after {WORKER_TIMEOUT_S} s (a hung collective?)")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


def test_two_processes_share_items_and_agree(tmp_path):
    from retain.models import load_model

    ranks = _run_ranks(2, tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' float operations, exactly
    try:
        model, tok = load_model("tiny", device="cpu")
        single = evaluate(model, tok, load_probes(["math", "writing"], n=8, seed=0),
                          batch_size=BATCH, progress=False)
    finally:
        torch.set_num_threads(threads)
    expected = [r.to_dict() for r in single]
    assert [f"{r['probe']}.{r['metric']}" for r in expected] == ["math.accuracy",
                                                                 "writing.ce_nats_per_token"]
    assert all(r["n"] == 8 for r in expected)
    for rank, got in enumerate(ranks):
        assert got["results"] == expected  # the same results as one process, on every rank
        assert got["local"] == expected  # distributed=False: this rank scored every item
        # Round robin: rank r scored items r, r+2, ... of each probe (and, unsharded, all 8).
        for key, seen in got["scored"].items():
            assert seen == list(range(rank, 8, 2)) + list(range(8)), key
