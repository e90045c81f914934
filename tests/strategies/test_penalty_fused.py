"""The anchored quadratic (EWC, online EWC, MAS, L2-SP) runs as a few flat multi-tensor ops
per step; its value and gradient, on both entry points (``add_grad`` in retain's loop, the
differentiable call in the Trainer's), equal the per-tensor formula sum w (theta - a)^2."""

from __future__ import annotations

import pytest
import torch

from retain.strategies.anchored import AnchoredQuadratic, anchor_of

from strategy_models import tiny_llama  # a helper module beside these tests


def _moved(seed: int):
    """A tiny Llama with every weight moved off its anchor, its anchor and a random importance."""
    model = tiny_llama(seed)
    anchor = anchor_of(model)
    g = torch.Generator().manual_seed(seed + 1)
    weights = {k: torch.rand(v.shape, generator=g) * 3 for k, v in anchor.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, anchor, weights


def _formula(model, anchor, weights):
    """Value and gradient written tensor by tensor, in float64: the reference."""
    params = dict(model.named_parameters())
    value, grads = 0.0, {}
    for k, a in anchor.items():
        d = params[k].detach().double() - a.double()
        w = weights[k].double() if weights is not None else torch.ones_like(d)
        value += float((w * d * d).sum())
        grads[k] = 2 * w * d
    return value, grads


@pytest.mark.parametrize("weighted", [True, False], ids=["ewc-mas", "l2sp"])
def test_add_grad_and_call_equal_the_formula(weighted):
    model, anchor, weights = _moved(0)
    quad = AnchoredQuadratic(weights if weighted else None, anchor)
    w = weights if weighted else None
    for step in range(3):  # the cached operands and the reused buffer follow the weights
        value, grads = _formula(model, anchor, w)
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)  # added to, not replaced
        got = quad.add_grad(model, scale=0.3)
        assert got.item() == pytest.approx(0.3 * value, rel=1e-5)
        for k, p in model.named_parameters():
            torch.testing.assert_close(p.grad.double(), 0.3 * grads[k] + 0.5, rtol=1e-5, atol=1e-7)
        for p in model.parameters():
            p.grad = None
        diff_value = quad(model)
        diff_value.mul(0.7).backward()
        assert diff_value.item() == pytest.approx(value, rel=1e-5)
        for k, p in model.named_parameters():
            torch.testing.assert_close(p.grad.double(), 0.7 * grads[k], rtol=1e-5, atol=1e-7)
        with torch.no_grad():  # a step of training: the next call must see the new weights
            for p in model.parameters():
                p.sub_(0.01 * p.grad.sign())


def test_mixed_dtypes_and_a_cast_model():
    """Parameters of two dtypes are summed group by group; ``model.to`` (which keeps the
    parameter objects) is noticed, not served from the stale float32 operands."""
    model, anchor, weights = _moved(1)
    quad = AnchoredQuadratic(weights, anchor)
    value, _ = _formula(model, anchor, weights)
    assert quad.add_grad(model, 1.0).item() == pytest.approx(value, rel=1e-5)
    model.model.norm.to(torch.float64)  # one parameter in float64, the rest in float32
    for p in model.parameters():
        p.grad = None
    assert quad.add_grad(model, 1.0).item() == pytest.approx(value, rel=1e-5)
    assert model.model.norm.weight.grad.dtype == torch.float64
    model.to(torch.bfloat16)
    for p in model.parameters():
        p.grad = None
    value16, _ = _formula(model, anchor, weights)
    assert quad.add_grad(model, 1.0).item() == pytest.approx(value16, rel=2e-2)
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())


def test_a_parameter_missing_from_the_model_is_named():
    model, anchor, weights = _moved(2)
    quad = AnchoredQuadratic(weights, {**anchor, "ghost.weight": torch.zeros(2)})
    with pytest.raises(RuntimeError, match="ghost.weight"):
        quad.add_grad(model, 1.0)
