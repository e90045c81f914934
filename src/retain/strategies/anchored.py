"""The anchored quadratic of EWC, online EWC, MAS and L2-SP: a pull of the trainable weights toward
an anchor, weighted per parameter by an importance. ``AnchoredQuadratic`` is the sum (differentiable,
or its gradient added in place); ``AnchoredQuadraticStrategy`` is the strategy around it, each method
supplying only how it gets its importance (EWC: the Fisher; MAS: output sensitivity; L2-SP: 1) and,
if not the prepare-time weights, its anchor."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.fisher import Importance, normalize_importance, trainable_parameters
from retain.train.sharding import all_sum, is_dtensor, local, shard_like

Normalize = Literal["none", "mean", "max"]


class AnchoredQuadratic:
    """sum_i w_i * (theta_i - anchor_i)^2 over the named parameters of ``anchor`` (no 1/2, no
    strength: the strategy applies those); ``weights`` None means w = 1 (L2-SP). Kept as
    sqrt(w) (importances are >= 0), moved once to each parameter's device and dtype on first
    use: ``(sqrt(w) * (theta - anchor))^2`` is the same sum, and the fused gradient needs it.

    ``__call__`` is the differentiable penalty (for loops that add it to the loss);
    ``add_grad`` adds its gradient to ``.grad`` in place with a few multi-tensor ops, which
    costs far less than a pass through autograd (retain's own loop)."""

    def __init__(self, weights: Importance | None, anchor: Importance):
        self.weights = weights
        self.anchor = anchor
        self._placed: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}

    def _terms(self, model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor | None,
                                                           torch.Tensor]]:
        """(parameter, sqrt(w) or None, anchor) per name, placed like the parameter."""
        params = dict(model.named_parameters())
        out = []
        for name, anchor in self.anchor.items():
            p = params.get(name)
            if p is None:
                raise RuntimeError(
                    f"parameter {name} (present at prepare time) is not in the model: was it wrapped "
                    "by a later strategy? List regularization strategies after PEFT ones."
                )
            placed = self._placed.get(name)
            if placed is None or placed[1].device != p.device or placed[1].dtype != p.dtype:
                w = self.weights[name] if self.weights is not None else None
                sw = w.to(p.device, torch.float32).sqrt().to(p.dtype) if w is not None else None
                placed = self._placed[name] = (sw, anchor.to(p.device, p.dtype))
            out.append((p, *placed))
        return out

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        total = None
        for p, sw, a in self._terms(model):
            d = p - a
            term = (d if sw is None else sw * d).pow(2).sum()
            total = term if total is None else total + term
        if total is None:
            return torch.zeros(())
        return total

    @torch.no_grad()
    def add_grad(self, model: torch.nn.Module, scale: float) -> torch.Tensor:
        """Add the gradient of ``scale * self(model)``, 2 * scale * w * (theta - anchor), to
        every parameter's ``.grad``; return ``scale * self(model)``, detached."""
        terms = self._terms(model)
        if not terms:
            return torch.zeros(())
        # Sharded (FSDP): each process works on its shards, and the value is reduced once.
        ps = [t[0] for t in terms]
        sharded = is_dtensor(ps[0])
        d = torch._foreach_sub([local(p) for p in ps], [local(t[2]) for t in terms])  # theta - a
        sw = [None if t[1] is None else local(t[1]) for t in terms]
        weighted = sw[0] is not None
        if weighted:
            torch._foreach_mul_(d, sw)  # sqrt(w) (theta - anchor)
        value = all_sum(torch.stack(torch._foreach_norm(d)).float().pow(2).sum(), sharded)
        for p in ps:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [local(p.grad) for p in ps]
        if weighted:
            torch._foreach_addcmul_(grads, d, sw, value=2.0 * scale)  # + 2 s sqrt(w) sqrt(w) (theta - a)
        else:
            torch._foreach_add_(grads, d, alpha=2.0 * scale)
        return scale * value


def check_covers(importance: Importance, model: torch.nn.Module, what: str) -> None:
    """A loaded importance must name exactly the model's trainable parameters, with their shapes."""
    params = trainable_parameters(model)
    if set(importance) != set(params):
        diff = sorted(set(importance) ^ set(params))[:3]
        raise UserError(f"{what} does not match the model's trainable parameters (e.g. {diff})")
    for k, p in params.items():
        if tuple(importance[k].shape) != tuple(p.shape):
            raise UserError(f"{what} has shape {tuple(importance[k].shape)} for {k}, the model {tuple(p.shape)}")


def anchor_of(model: torch.nn.Module) -> Importance:
    """CPU copy of the trainable weights now: the anchor theta*."""
    return {k: p.detach().to("cpu", copy=True) for k, p in trainable_parameters(model).items()}


class AnchoredQuadraticStrategy(Strategy):
    """penalty = (strength / 2) * sum_i w_i * (theta_i - anchor_i)^2, with the 1/2 so that its
    gradient is strength * w * (theta - anchor); added once per optimizer step (``fused_penalty``).

    A method supplies ``importance_of`` (the raw w per trainable parameter and what to report; None:
    w = 1), and may override ``anchor_for`` (default: the trainable weights at prepare time) and
    ``strength`` (default: the ``lam`` option). A raw importance is rescaled by the ``normalize``
    option and, under ``state_key``, checkpointed so that a resumed run reuses it."""

    family: ClassVar[str] = "regularization"
    fused_penalty: ClassVar[bool] = True
    state_key: ClassVar[str | None] = None  # the raw importance's key in checkpoints; None: none

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.importance: Importance | None = {}  # raw (unnormalized), CPU; None: w = 1
        self.anchor: Importance = {}  # name -> theta* (CPU)
        self._quad: AnchoredQuadratic | None = None
        self._info: dict = {}
        self._resume: dict | None = None

    # -- what a method supplies ------------------------------------------------------------------
    def importance_of(self, model: torch.nn.Module, ctx: RunContext) -> tuple[Importance | None, dict]:
        """The raw importance of each trainable parameter (None: 1 everywhere) and the facts
        to report in ``ctx.info[name]``. Not called when a resumed run reuses its checkpoint's."""
        raise NotImplementedError

    def anchor_for(self, model: torch.nn.Module, ctx: RunContext, info: dict) -> Importance:
        """theta*: the trainable weights at prepare time (CPU copies), unless a method says other
        (it may report how it chose into ``info``)."""
        return anchor_of(model)

    def strength(self) -> float:
        return self.config.lam

    # -- the shared machinery --------------------------------------------------------------------
    def state_dict(self) -> dict:
        if self.state_key is None:
            return {}
        return {self.state_key: dict(self.importance), "info": self._info}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        if self._resume and self.state_key is not None:  # a resumed run: its first part's importance
            self.importance = dict(self._resume[self.state_key])
            info = dict(self._resume["info"])
        else:
            self.importance, info = self.importance_of(model, ctx)
        weights = None
        if self.importance is not None:  # one read from a file is whole: shard it like the model
            self.importance = shard_like(self.importance, model)
            weights = normalize_importance(self.importance, self.config.normalize)
        self.anchor = shard_like(self.anchor_for(model, ctx, info), model)
        self._quad = AnchoredQuadratic(weights, self.anchor)
        if weights is not None:
            info["n_params"] = sum(v.numel() for v in weights.values())
        self._info = ctx.info[self.name] = info
        return model

    def _prepared(self, hook: str) -> AnchoredQuadratic:
        if self._quad is None:
            raise RuntimeError(f"{type(self).__name__}.{hook} called before prepare")
        return self._quad

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        return 0.5 * self.strength() * self._prepared("penalty")(model)

    def penalty_grad(self, model: torch.nn.Module) -> torch.Tensor | None:
        return self._prepared("penalty_grad").add_grad(model, 0.5 * self.strength())
