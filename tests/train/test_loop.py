"""The training loop: padding, seeded batches, the lr schedule, loss going down, penalties added,
frozen weights untouched, probe callbacks on time, and bit-identical reruns with one seed."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer
from retain.data import load_train_data
from retain.formats import IGNORE
from retain.strategies.base import Strategy
from retain.train import TrainConfig, batch_indices, collate, lr_factor, train
from retain.train.callbacks import Callback, EveryN


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def legal(tok):
    return load_train_data("builtin:legal", tok, seq_len=48, n=32, seed=0)


def tiny(tok, seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))


def test_collate_pads_right_and_masks():
    b = collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]},
                 {"input_ids": [8], "labels": [IGNORE]}], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert b["labels"].tolist() == [[5, 6, 7], [IGNORE] * 3]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_batches_are_seeded_epochs():
    a = list(batch_indices(10, 4, 5, seed=1))
    assert a == list(batch_indices(10, 4, 5, seed=1)) != list(batch_indices(10, 4, 5, seed=2))
    assert sorted(sum(a, [])[:10]) == list(range(10))  # the first epoch sees every example once
    small = list(batch_indices(2, 3, 2, seed=0))  # fewer examples than a batch: they repeat
    assert [len(b) for b in small] == [3, 3] and set(sum(small, [])) == {0, 1}


def test_lr_schedule():
    f = lambda s, sch="cosine": lr_factor(s, steps=110, warmup_steps=10, schedule=sch)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(60, "constant") == 1.0
    assert lr_factor(5, steps=10, warmup_steps=0, schedule="cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.5)))


def test_loss_decreases(tok, legal):
    model = tiny(tok)
    res = train(model, legal, pad_id=0, progress=False,
                config=TrainConfig(lr=3e-3, steps=30, batch_size=8, log_every=5))
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5
    assert res.tokens_seen == 30 * 8 * 48 and res.loss_tokens == 30 * 8 * 47
    assert res.tokens_per_s > 0 and not model.training


class Pull(Strategy):
    """A penalty that is constant (2.0) plus a pull of one norm weight towards 0."""
    name, family = "pull", "regularization"
    calls = 0

    def penalty(self, model, batch):
        Pull.calls += 1
        assert batch["input_ids"].shape[0] == 4
        return 2.0 + 10.0 * model.model.norm.weight.pow(2).sum()


def test_penalty_is_added_and_only_trainable_params_move(tok, legal):
    model = tiny(tok)
    model.model.embed_tokens.weight.requires_grad_(False)
    emb = model.model.embed_tokens.weight.clone()
    norm0 = model.model.norm.weight.norm().item()
    res = train(model, legal, pad_id=0, strategies=[Pull()], progress=False,
                config=TrainConfig(lr=1e-2, steps=6, batch_size=4, log_every=3))
    assert Pull.calls == 6
    h = res.history[0]
    assert h["loss"] == pytest.approx(h["lm_loss"] + h["penalty"], rel=1e-5) and h["penalty"] > 2
    assert torch.equal(model.model.embed_tokens.weight, emb)  # frozen: bit-identical
    assert model.model.norm.weight.norm().item() < norm0


def test_probe_callback_every_n_steps_and_logs(tok, legal):
    seen, logs = [], []

    def on_probe(step, model):
        seen.append(step)

    train(tiny(tok), legal, pad_id=0, callbacks=[EveryN(3, on_probe)], on_log=logs.append,
          progress=False, config=TrainConfig(lr=1e-3, steps=7, batch_size=2, log_every=3))
    assert seen == [3, 6]
    assert [r["step"] for r in logs] == [3, 6, 7] and all(r["event"] == "train" for r in logs)


def test_same_seed_same_weights(tok, legal):
    cfg = TrainConfig(lr=1e-3, steps=4, batch_size=4, warmup_steps=2, seed=5)
    a, b = tiny(tok), tiny(tok)
    train(a, legal, pad_id=0, config=cfg, progress=True)
    train(b, legal, pad_id=0, config=cfg, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_callback_that_says_stop_stops_training(tok, legal):
    logs = []
    class StopAt4(Callback):
        def on_step_end(self, state):
            return state.step >= 4

    res = train(tiny(tok), legal, pad_id=0, callbacks=[StopAt4()],
                on_log=logs.append, progress=False,
                config=TrainConfig(lr=1e-3, steps=10, batch_size=2, log_every=3))
    assert res.steps == 4 and res.stopped_early
    assert [r["step"] for r in logs] == [3, 4]  # the partial window is logged at the stop


def test_apply_decision_restores_scales_and_stops_on_any_optimizer_and_scheduler():
    """The one function that carries out a callback's Decision, for the loop and a Trainer: a
    restore loads the kept tensors and drops AdamW's moments; a rate scale reaches the schedule's
    peak (also through accelerate's scheduler wrapper) and the next step's rate."""
    from types import SimpleNamespace

    from retain.train.callbacks import Decision, apply_decision

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert opt.state
    kept = {"weight": torch.zeros(2, 2)}
    assert not apply_decision(Decision(restore=kept, lr_scale=0.5), model, opt,
                              SimpleNamespace(scheduler=sched))
    assert torch.equal(model.weight.detach(), torch.zeros(2, 2)) and not opt.state
    assert sched.base_lrs == [5e-3] and opt.param_groups[0]["lr"] == 5e-3
    assert apply_decision(Decision(stop=True), model, opt, sched)
