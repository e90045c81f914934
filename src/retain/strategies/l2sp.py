"""L2-SP: an L2 pull of the trainable weights toward the starting point (the base weights),
instead of toward zero as plain weight decay does: the anchored quadratic (``anchored.py``), w = 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from retain.strategies.anchored import AnchoredQuadraticStrategy
from retain.strategies.base import RunContext, StrategyConfig
from retain.strategies.fisher import Importance, trainable_parameters


class L2SP(AnchoredQuadraticStrategy):
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

    @classmethod
    def options_for_task(cls, options: dict[str, Any], previous_run: Path | None,
                         start_model: str) -> dict[str, Any]:
        """Along a sequence, ``anchor_model: base`` means the sequence's starting model (without
        it, each task anchors to its own starting point)."""
        if options.get("anchor_model") != "base":
            return options
        return {**options, "anchor_model": start_model}

    def strength(self) -> float:
        return self.config.alpha

    def importance_of(self, model: torch.nn.Module, ctx: RunContext) -> tuple[None, dict]:
        return None, {}  # w = 1 everywhere; nothing to checkpoint (the anchor is the base)

    def anchor_for(self, model: torch.nn.Module, ctx: RunContext, info: dict) -> Importance:
        """theta_0: the base weight of the same name and shape (from ``anchor_model`` when set),
        else the value at prepare time."""
        anchor, from_base = {}, 0
        base_state = ctx.base_state
        if self.config.anchor_model is not None:
            from retain.models import copy_state, load_model

            anchor_model, _ = load_model(self.config.anchor_model, dtype="float32", device="cpu")
            base_state = copy_state(anchor_model)
            del anchor_model
        for name, p in trainable_parameters(model).items():
            base = base_state.get(name)
            if base is not None and tuple(base.shape) == tuple(p.shape):
                anchor[name] = base  # base_state tensors are shared, not copied
                from_base += 1
            else:
                anchor[name] = p.detach().to("cpu", copy=True)
        info.update({"alpha": self.config.alpha, "anchored_to_base": from_base,
                     "anchor_model": self.config.anchor_model,
                     "anchored_to_init": len(anchor) - from_base, "penalty_has_half": True})
        return anchor
