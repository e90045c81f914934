"""WiSE-FT as a run's final step: interpolate the trained weights with the base weights,
theta = (1 - alpha) * theta_base + alpha * theta_trained (alpha = 0: the base, 1: the fine-tune).

Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", https://arxiv.org/abs/2109.01903
The interpolation itself is ``retain.merging.linear.interpolate`` (the one place it lives).
``finalize`` works on a plain model: list WiSE-FT after a PEFT method, whose own finalize merges
the adapter first (``check_order`` enforces that merging strategies come last).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import Field

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig


def check_order(strategies: Sequence[Strategy]) -> None:
    """Merging-family strategies must come last (finalize runs in list order, and they need the
    other strategies' finalize, e.g. LoRA's merge, done first), and cannot follow a PEFT method
    that never merges into the weights (prompt/prefix tuning: there is nothing to interpolate)."""
    merging = [i for i, s in enumerate(strategies) if s.family == "merging"]
    if merging and any(s.family != "merging" for s in strategies[merging[0]:]):
        after = next(s.name for s in strategies[merging[0]:] if s.family != "merging")
        raise UserError(f"{strategies[merging[0]].name!r} merges the trained model with the base "
                        f"in its finalize, so it must be listed last (move {after!r} before it)")
    unmerged = [s.name for s in strategies if s.family == "peft" and not getattr(s, "merges", True)]
    if merging and unmerged:
        raise UserError(f"{strategies[merging[0]].name!r} interpolates weights, but {unmerged[0]!r} "
                        "trains virtual tokens and leaves every weight unchanged: pick one")


class WiseFT(Strategy):
    """Weight-space ensemble of the base and the fine-tuned model, applied after training."""

    name: ClassVar[str] = "wise_ft"
    family: ClassVar[str] = "merging"
    citation: ClassVar[str] = ("Wortsman et al. 2022, Robust fine-tuning of zero-shot models, "
                               "https://arxiv.org/abs/2109.01903")

    class Config(StrategyConfig):
        alpha: float = Field(0.5, ge=0, le=1)  # weight of the fine-tuned model

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import PeftModel

        from retain.merging.linear import interpolate

        if isinstance(model, PeftModel):
            raise UserError("wise_ft needs a plain model: list it after the PEFT strategy, whose "
                            "finalize merges the adapter (prompt/prefix tuning cannot be merged)")
        if not ctx.base_state:
            raise RuntimeError("wise_ft: the run context holds no base weights (ctx.base_state)")
        alpha = self.config.alpha
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(ctx.base_state))
        if missing:
            raise UserError(f"wise_ft: the trained model has {len(missing)} parameters that the base "
                            f"lacks (first: {missing[0]!r}); both must share one architecture")
        n_values = 0
        with torch.no_grad():
            for name, p in params.items():
                base = ctx.base_state[name]
                if base.shape != p.shape:
                    raise UserError(f"wise_ft: {name} is {tuple(p.shape)} in the trained model but "
                                    f"{tuple(base.shape)} in the base")
                # float32 for the arithmetic; then back to the parameter's own dtype and device.
                mixed = interpolate(base.to(p.device, torch.float32), p.float(), alpha)
                p.copy_(mixed.to(p.dtype))
                n_values += p.numel()
        ctx.info[self.name] = {"alpha": alpha, "tensors": len(params), "params": n_values,
                               "formula": "(1 - alpha) * base + alpha * trained"}
        return model
