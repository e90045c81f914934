"""Every registered strategy honours the same contract, through the same checks: class facts
(name, family, citation), a strict config, and prepare / train_data / penalty / finalize returning
the right types on a tiny Llama inside the real training loop. Plus the registry's refusals."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer
from retain.data import load_reference_data, load_train_data
from retain.errors import UserError
from retain.models import copy_state
from retain.strategies import STRATEGIES, RunContext, StrategyConfig, build_strategies
from retain.strategies.base import training_data
from retain.train import TrainConfig, collate, train

FAMILIES = {"baseline", "peft", "regularization", "replay", "merging"}
# Smaller than the defaults where a strategy does real work in prepare, to keep the test fast.
SMALL = {"ewc": {"n_samples": 4}, "mas": {"n_samples": 4}, "freeze": {"top_blocks": 1},
         "self_replay": {"num_prompts": 4, "max_new_tokens": 4}}


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def datasets(tok):
    return (load_train_data("builtin:legal", tok, seq_len=40, n=16, seed=0),
            load_reference_data("builtin:retained", tok, seq_len=40, n=16, seed=0))


def tiny(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_class_facts_and_strict_config(name):
    cls = STRATEGIES[name]
    assert cls.name == name and cls.family in FAMILIES
    assert re.search(r"(19|20)\d\d", cls.citation) and "http" in cls.citation
    assert issubclass(cls.Config, StrategyConfig) and cls.Config.model_config["extra"] == "forbid"
    with pytest.raises(UserError, match="unknown option 'no_such_option'"):
        build_strategies([{"name": name, "no_such_option": 1}])


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_hooks_return_the_right_types(name, tok, datasets, tmp_path):
    domain, reference = datasets
    [strategy] = build_strategies([{"name": name, **SMALL.get(name, {})}])
    model = tiny(tok)
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=tmp_path, device=torch.device("cpu"),
                     base_state=copy_state(model), reference=reference)

    model = strategy.prepare(model, ctx)
    assert isinstance(model, torch.nn.Module)
    assert any(p.requires_grad for p in model.parameters())

    data = training_data([strategy], list(domain), ctx)  # train_data, then data_ready
    assert isinstance(data, list) and data
    assert all(set(e) >= {"input_ids", "labels"} and len(e["input_ids"]) == len(e["labels"])
               and all(isinstance(i, int) for i in e["input_ids"]) for e in data)

    batch = collate(data[:2], pad_id=0)
    p = strategy.penalty(model, batch)
    assert p is None or (isinstance(p, torch.Tensor) and p.dim() == 0 and torch.isfinite(p))
    res = train(model, data, pad_id=0, strategies=[strategy], progress=False,
                config=TrainConfig(lr=1e-3, steps=2, batch_size=2, log_every=1))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)

    model = strategy.finalize(model, ctx)
    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape[0] == 2 and logits.shape[-1] == len(tok)
    json.dumps(ctx.info, default=str)  # what strategies report goes into results.json


def test_registry_refusals():
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        build_strategies(["nope"])
    with pytest.raises(UserError, match="option 'r'"):
        build_strategies([{"name": "lora", "r": 0}])
    with pytest.raises(UserError, match="both wrap the model"):
        build_strategies(["lora", "ia3"])
    with pytest.raises(UserError, match="listed twice"):
        build_strategies(["replay", "replay"])
    with pytest.raises(UserError, match="freezes them"):
        build_strategies(["full", "lora"])
    with pytest.raises(UserError, match="needs a name"):
        build_strategies([{"r": 8}])
    assert [s.name for s in build_strategies(["lora", {"name": "replay"}])] == ["lora", "replay"]


@pytest.mark.parametrize("name", [n for n, c in STRATEGIES.items() if c.fused_penalty])
def test_fused_penalty_grad_equals_autograd(name, tok, datasets):
    """A strategy whose loop path is ``penalty_grad`` adds exactly the gradient, and returns
    the value, of its differentiable ``penalty``, away from the anchor (after weights moved)."""
    _, reference = datasets
    [strategy] = build_strategies([{"name": name, **SMALL.get(name, {})}])
    model = tiny(tok)
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                     base_state=copy_state(model), reference=reference)
    model = strategy.prepare(model, ctx)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    params = [p for p in model.parameters() if p.requires_grad]
    value = strategy.penalty(model, {})
    expected = torch.autograd.grad(value, params, allow_unused=True)
    for p in params:  # a gradient already there is added to, not replaced
        p.grad = torch.ones_like(p)
    fused = strategy.penalty_grad(model)
    assert value.item() > 0
    torch.testing.assert_close(fused, value.detach(), rtol=1e-5, atol=0)
    for p, e in zip(params, expected):
        e = torch.zeros_like(p) if e is None else e
        torch.testing.assert_close(p.grad, e + 1, rtol=1e-5, atol=1e-7)


def test_loop_takes_the_fused_path_and_matches_the_loss_path(tok, datasets):
    """EWC trained by the loop (fused gradient) ends where the same run with the penalty in the
    loss ends; a mutation that dropped the fused gradient would not."""
    domain, reference = datasets

    def run(fused: bool):
        [s] = build_strategies([{"name": "l2sp", "alpha": 50.0}])
        type(s).fused_penalty = fused
        try:
            model = tiny(tok)
            ctx = RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                             base_state=copy_state(model), reference=reference)
            model = s.prepare(model, ctx)
            start = copy_state(model)
            train(model, domain, pad_id=0, strategies=[s], progress=False,
                  config=TrainConfig(lr=1e-2, steps=6, batch_size=4, log_every=1))
            return start, copy_state(model)
        finally:
            type(s).fused_penalty = True

    start, a = run(True)
    _, b = run(False)
    plain_model = tiny(tok)
    train(plain_model, domain, pad_id=0, progress=False,
          config=TrainConfig(lr=1e-2, steps=6, batch_size=4, log_every=1))
    c = copy_state(plain_model)
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    moved = max(float((c[k] - a[k]).abs().max()) for k in a)
    assert gap < 1e-5 < moved  # same weights with both paths; the penalty did change them


@pytest.mark.parametrize("top_k", [0, 32])
def test_distill_reuses_the_loops_logits(tok, datasets, top_k):
    """Given the loop's outputs, distillation runs the teacher only (one forward, not two; none
    with the teacher's top-k cached before training) and gives the same penalty as when it runs
    the student itself."""
    domain, reference = datasets
    [s] = build_strategies([{"name": "distill", "top_k": top_k}])
    model = tiny(tok)
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                     base_state=copy_state(model), reference=reference)
    model = s.prepare(model, ctx)
    assert training_data([s], domain[:3], ctx) == domain[:3]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    batch = collate(domain[:3], pad_id=0)
    teacher_runs = 0 if top_k else 1
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in (model, s.teacher)]
    out = model(**batch)
    calls.clear()
    with_outputs = s.penalty(model, batch, outputs=out)
    assert len(calls) == teacher_runs  # the teacher's forward alone, if any
    calls.clear()
    alone = s.penalty(model, batch)
    assert len(calls) == teacher_runs + 1
    for h in hooks:
        h.remove()
    assert with_outputs.item() > 0
    torch.testing.assert_close(with_outputs, alone)
