"""Regularization strategies: EWC (+ online), MAS, L2-SP and distillation to the base, each
checked against its formula on a tiny Llama; PEFT distillation keeps no second model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from retain.strategies import fisher as fs
from retain.strategies.base import RunContext
from retain.strategies.distill import Distill, masked_kl
from retain.strategies.ewc import EWC
from retain.strategies.l2sp import L2SP
from retain.strategies.mas import MAS

from strategy_models import VOCAB, tiny_llama  # a helper module beside these tests


def reference(n: int = 8, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, VOCAB, (int(torch.randint(4, 11, (1,), generator=gen)),), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] + ids[1:]})
    return out


def context(model, out_dir=None, seed=0) -> RunContext:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return RunContext(tokenizer=None, seed=seed, out_dir=out_dir, device=torch.device("cpu"),
                      base_state=state, reference=reference())


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # a right-padded row
    return {"input_ids": ids, "labels": ids.masked_fill(mask == 0, -100), "attention_mask": mask}


def perturb(model, std=0.01, seed=7):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * std)


@pytest.mark.parametrize("cls", [EWC, MAS])
def test_quadratic_penalty_zero_at_anchor_and_closed_form_gradient(cls):
    model = tiny_llama()
    strategy = cls(cls.Config(lam=3.0, normalize="none", n_samples=6))
    strategy.prepare(model, context(model))
    assert strategy.penalty(model, batch()).item() == 0.0
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    perturb(model)
    pen = strategy.penalty(model, batch())
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(pen, params)
    importance = strategy.fisher if cls is EWC else strategy.importance
    value = 0.0
    for name, p, g in zip(names, params, grads):
        closed = 3.0 * importance[name] * (p.detach() - anchor[name])  # lam * F * (theta - theta*)
        torch.testing.assert_close(g, closed, rtol=1e-5, atol=1e-9)
        value += (1.5 * importance[name] * (p.detach() - anchor[name]) ** 2).sum()
    torch.testing.assert_close(pen.detach(), value, rtol=1e-5, atol=0)  # carries the 1/2


def test_ewc_estimates_saves_reuses_and_reports(tmp_path):
    model = tiny_llama()
    ctx = context(model, out_dir=tmp_path, seed=4)
    strategy = EWC(EWC.Config(estimator="sampled", n_samples=5))
    strategy.prepare(model, ctx)
    info = ctx.info["ewc"]
    assert (info["estimator"], info["n_samples"], info["source"]) == ("sampled", 5, "estimated")
    expected = fs.estimate_fisher(model, ctx.reference, "sampled", n_samples=5, seed=4)
    assert all(torch.equal(strategy.fisher[k], expected[k]) for k in expected)
    saved, meta = fs.load_importance(tmp_path / "fisher.safetensors")
    assert (meta["estimator"], meta["n_samples"]) == ("sampled", 5)
    assert all(torch.equal(saved[k], expected[k]) for k in expected)  # the raw, unnormalized Fisher

    reused = EWC(EWC.Config(fisher_path=tmp_path / "fisher.safetensors"))
    ctx2 = context(model)
    reused.prepare(model, ctx2)
    assert ctx2.info["ewc"]["source"] == "loaded" and ctx2.info["ewc"]["estimator"] == "sampled"
    perturb(model)
    torch.testing.assert_close(reused.penalty(model, batch()), strategy.penalty(model, batch()))


def test_ewc_normalize_mean_scales_fisher_to_mean_one():
    model = tiny_llama()
    raw, norm = EWC(EWC.Config(normalize="none", n_samples=4)), EWC(EWC.Config(normalize="mean", n_samples=4))
    raw.prepare(model, context(model))
    norm.prepare(model, context(model))
    mean_f = torch.cat([v.flatten() for v in raw.fisher.values()]).mean()
    perturb(model)
    torch.testing.assert_close(norm.penalty(model, batch()), raw.penalty(model, batch()) / mean_f)


def test_online_ewc_accumulates_decayed_fisher(tmp_path):
    model = tiny_llama()
    first = EWC(EWC.Config(n_samples=6))
    first.prepare(model, context(model, out_dir=tmp_path / "run1"))
    perturb(model, std=0.2)  # the earlier run trained; this one continues from its weights
    ctx = context(model, out_dir=tmp_path / "run2")
    online = EWC(EWC.Config(n_samples=6, gamma=0.25, previous_fisher_path=tmp_path / "run1" / "fisher.safetensors"))
    online.prepare(model, ctx)
    new = fs.estimate_fisher(model, ctx.reference, "empirical", n_samples=6, seed=0)
    for k in new:
        torch.testing.assert_close(online.fisher[k], 0.25 * first.fisher[k] + new[k])
    assert ctx.info["ewc"]["source"] == "online" and ctx.info["ewc"]["online_terms"] == 2
    _, meta = fs.load_importance(tmp_path / "run2" / "fisher.safetensors")
    assert meta["online_terms"] == 2 and meta["gamma"] == 0.25
    assert online.penalty(model, batch()).item() == 0.0  # anchor = weights at prepare time


def test_ewc_config_is_strict():
    with pytest.raises(ValueError):
        EWC.Config(lamda=1.0)
    with pytest.raises(ValueError):
        EWC.Config(estimator="exact")
    with pytest.raises(ValueError):
        EWC.Config(fisher_path="a.safetensors", previous_fisher_path="b.safetensors")


def test_l2sp_zero_at_init_and_value_after_known_shift():
    model = tiny_llama()
    strategy = L2SP(L2SP.Config(alpha=0.5))
    ctx = context(model)
    strategy.prepare(model, ctx)
    assert strategy.penalty(model, batch()).item() == 0.0
    assert ctx.info["l2sp"]["anchored_to_base"] == len(list(model.parameters()))
    w = model.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w.add_(0.1)
    expected = 0.5 / 2 * w.numel() * 0.1**2
    torch.testing.assert_close(strategy.penalty(model, batch()).item(), expected, rtol=1e-4, atol=0)
    (g,) = torch.autograd.grad(strategy.penalty(model, batch()), [w])
    torch.testing.assert_close(g, torch.full_like(w, 0.5 * 0.1), rtol=1e-4, atol=1e-7)


def test_l2sp_lora_pulls_adapters_toward_init():
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"]))
    strategy = L2SP(L2SP.Config(alpha=1.0))
    ctx = context(tiny_llama())
    strategy.prepare(model, ctx)
    assert ctx.info["l2sp"]["anchored_to_base"] == 0 and ctx.info["l2sp"]["anchored_to_init"] == 4
    assert strategy.penalty(model, batch()).item() == 0.0
    perturb(model)
    assert strategy.penalty(model, batch()).item() > 0


def test_distill_zero_for_unchanged_model_positive_after_change():
    model = tiny_llama()
    strategy = Distill(Distill.Config(temperature=2.0))
    strategy.prepare(model, context(model))
    model.train()
    assert abs(strategy.penalty(model, batch()).item()) < 1e-6
    perturb(model, std=0.05)
    pen = strategy.penalty(model, batch())
    assert pen.item() > 1e-4
    pen.backward()  # gradients reach the student, never the frozen teacher
    assert model.lm_head.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in strategy.teacher.parameters())


def test_distill_masks_padding():
    gen = torch.Generator().manual_seed(0)
    t, s = torch.randn(1, 4, 8, generator=gen), torch.randn(1, 4, 8, generator=gen)
    s2 = s.clone()
    s2[0, 3] = 100.0  # only a padded position differs
    mask = torch.tensor([[1, 1, 1, 0]])
    torch.testing.assert_close(masked_kl(t, s, mask, 1.0), masked_kl(t, s2, mask, 1.0))
    assert masked_kl(t, t, mask, 1.0).abs() < 1e-6


def test_distill_peft_uses_the_same_model_and_is_zero_at_init():
    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    strategy = Distill()
    strategy.prepare(model, context(model))
    assert not any(isinstance(v, torch.nn.Module) for v in vars(strategy).values())  # no second copy
    model.train()
    assert abs(strategy.penalty(model, batch()).item()) < 1e-6  # LoRA B = 0: same as the base
    assert model.training
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    pen = strategy.penalty(model, batch())
    assert pen.item() > 1e-4
    pen.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
