"""Sparse distillation (teacher_cache.py): the KL over {the teacher's top-k, the rest} is the
full KL when the rest is one token, never above it otherwise; the cache is filled once before
training, read by tokens whatever the padding, and a row it has not seen is taught and kept."""

from __future__ import annotations

import pytest
import torch

from retain.strategies.distill import Distill, masked_kl
from retain.strategies.teacher_cache import TeacherCache, sparse_kl, top_k

from strategy_models import VOCAB, tiny_llama  # a helper module beside these tests
from test_regularization import context, perturb


def _logits(seed: int, shape=(2, 5, 11)):
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=g)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_rest_as_one_token_is_the_full_kl(temperature):
    """k = V - 1 (or more, cut to it): value and gradient equal the full-vocabulary KL."""
    t, s = _logits(0), _logits(1).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    full = masked_kl(t, s, mask, temperature)
    (g_full,) = torch.autograd.grad(full, s)
    for k in (10, 50):
        sparse = sparse_kl(s, *top_k(t, k, temperature), mask, temperature)
        (g_sparse,) = torch.autograd.grad(sparse, s)
        torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(g_sparse, g_full, rtol=1e-4, atol=1e-7)


def test_fewer_tokens_bound_the_full_kl_from_below():
    t, s = _logits(2), _logits(3)
    mask = torch.ones(2, 5)
    full = float(masked_kl(t, s, mask, 1.0))
    values = [float(sparse_kl(s, *top_k(t, k, 1.0), mask, 1.0)) for k in (1, 3, 6, 10)]
    assert all(0 <= v <= full + 1e-6 for v in values)
    assert values[-1] == pytest.approx(full, rel=1e-5)
    assert float(sparse_kl(t, *top_k(t, 3, 1.0), mask, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_padding_is_ignored_and_the_cache_reads_rows_by_their_tokens():
    teacher_calls = []

    def teacher(ids, mask):
        teacher_calls.append(ids.shape[0])
        return _logits(7, (*ids.shape, 11)) + ids.unsqueeze(-1).float()  # depends on the tokens

    cache = TeacherCache(k=4, temperature=1.0)
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    cache.fill(teacher, ids, mask)
    # the same examples, the other way round and padded wider
    ids2 = torch.tensor([[6, 7, 8, 9, 0], [3, 4, 5, 0, 0]])
    mask2 = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    idx, logp, rest = cache.lookup(teacher, ids2, mask2)
    assert teacher_calls == [2] and (cache.hits, cache.misses) == (2, 0)
    direct = top_k(teacher(ids, mask), 4, 1.0)
    torch.testing.assert_close(idx[0, :4], direct[0][1])
    torch.testing.assert_close(logp[1, :3], direct[1][0, :3])
    assert torch.isfinite(logp).all() and torch.isfinite(rest).all()
    value = sparse_kl(_logits(9, (2, 5, 11)), idx, logp, rest, mask2, 1.0)
    assert torch.isfinite(value)
    # a row never seen is taught now, and kept
    new = torch.tensor([[1, 2, 0, 0, 0]])
    cache.lookup(teacher, new, torch.tensor([[1, 1, 0, 0, 0]]))
    cache.lookup(teacher, new, torch.tensor([[1, 1, 0, 0, 0]]))
    assert (cache.hits, cache.misses) == (3, 1)


def _batch_rows(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (int(torch.randint(4, 10, (1,), generator=g)),), generator=g)
        rows.append({"input_ids": ids.tolist(), "labels": ids.tolist()})
    return rows


def test_distill_reads_the_cache_and_runs_no_teacher_in_a_step():
    """After ``data_ready`` a step runs no teacher forward; its value is the sparse KL to the
    base's top-k, and with k = V - 1 the full distillation's (the top_k 0 path)."""
    from retain.train.loop import collate

    rows = _batch_rows()
    batch = collate(rows[:4], pad_id=0)
    values = {}
    for k in (0, 8, VOCAB - 1):
        model = tiny_llama()
        strategy = Distill(Distill.Config(top_k=k, temperature=2.0))
        strategy.prepare(model, context(model))
        strategy.data_ready(rows, context(model))
        calls = []
        strategy.teacher.register_forward_hook(lambda *a: calls.append(1))
        perturb(model, std=0.05)  # the same move each time: the student leaves its teacher
        values[k] = strategy.penalty(model, batch)
        values[k].backward()
        assert model.lm_head.weight.grad.abs().sum() > 0
        if k:
            assert calls == [] and strategy.cache.misses == 0
            assert strategy._info["cached_examples"] == len(rows)
        else:
            assert calls == [1]
    assert 0 < values[8].item() <= values[0].item()
    torch.testing.assert_close(values[VOCAB - 1], values[0], rtol=1e-5, atol=1e-7)


def test_the_cache_holds_the_rows_other_strategies_add():
    """Distillation listed before replay: the cache is taught on the data the loop will train
    on, replay's rows included (``training_data`` then ``data_ready``), so no step has to run
    the teacher. Taught in ``train_data`` (list order), it missed every replay row: 9 of 64
    rows through the Trainer on the built-in model."""
    from retain.strategies import build_strategies
    from retain.strategies.base import training_data
    from retain.strategies.teacher_cache import key_of

    model = tiny_llama()
    ctx = context(model)
    ctx.reference = _batch_rows(20, seed=1)
    distill, replay = build_strategies([{"name": "distill", "top_k": 4},
                                        {"name": "replay", "fraction": 0.5}])
    for s in (distill, replay):
        model = s.prepare(model, ctx)
    data = training_data([distill, replay], _batch_rows(10), ctx)
    assert len(data) > 10  # replay mixed its rows in
    keys = {key_of(torch.tensor(e["input_ids"]), torch.ones(len(e["input_ids"]), dtype=torch.long))
            for e in data}
    assert keys <= set(distill.cache.entries)
