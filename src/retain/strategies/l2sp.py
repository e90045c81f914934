"""L2-SP: an L2 pull of the trainable weights toward the starting point (the base weights),
instead of toward zero as plain weight decay does."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.ewc import AnchoredQuadratic
from retain.strategies.fisher import trainable_parameters


class L2SP(Strategy):
    """L2-SP (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
    Convolutional Networks", https://arxiv.org/abs/1802.01483).

    penalty = (alpha / 2) * sum over trainable parameters of ||theta - theta_0||^2 (with the 1/2,
    so the gradient is alpha * (theta - theta_0)). theta_0 is the base weight from
    ``ctx.base_state`` when it has one of the same name and shape; otherwise (adapter weights
    such as LoRA's A and B, which have no base counterpart) the value at prepare time. For LoRA,
    whose B starts at zero, that pulls B toward zero and with it the weight delta B @ A.
    """

    name: ClassVar[str] = "l2sp"
    family: ClassVar[str] = "regularization"
    citation: ClassVar[str] = (
        'Li, Grandvalet & Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional '
        'Networks", 2018, https://arxiv.org/abs/1802.01483'
    )

    class Config(StrategyConfig):
        alpha: float = Field(0.1, ge=0, description="strength; penalty = alpha/2 * ||theta - theta_0||^2")
        # theta_0 from this model's weights instead of the run's starting point, e.g. the
        # original base in a task sequence ("tiny", a folder or a hub id; None: the start)
        anchor_model: str | None = None

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.anchor: dict[str, torch.Tensor] = {}  # name -> theta_0 (CPU; base_state tensors are shared, not copied)
        self._quad: AnchoredQuadratic | None = None

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from_base, self._quad = 0, None
        base_state = ctx.base_state
        if self.config.anchor_model is not None:
            from retain.models import copy_state, load_model

            anchor, _ = load_model(self.config.anchor_model, dtype="float32", device="cpu")
            base_state = copy_state(anchor)
            del anchor
        for name, p in trainable_parameters(model).items():
            base = base_state.get(name)
            if base is not None and tuple(base.shape) == tuple(p.shape):
                self.anchor[name] = base
                from_base += 1
            else:
                self.anchor[name] = p.detach().to("cpu", copy=True)
        ctx.info[self.name] = {"alpha": self.config.alpha, "anchored_to_base": from_base,
                               "anchor_model": self.config.anchor_model,
                               "anchored_to_init": len(self.anchor) - from_base, "penalty_has_half": True}
        return model

    fused_penalty: ClassVar[bool] = True

    def _quadratic(self) -> AnchoredQuadratic:
        if self._quad is None:
            self._quad = AnchoredQuadratic(None, self.anchor)
        return self._quad

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        return 0.5 * self.config.alpha * self._quadratic()(model)

    def penalty_grad(self, model: torch.nn.Module) -> torch.Tensor | None:
        return self._quadratic().add_grad(model, 0.5 * self.config.alpha)
