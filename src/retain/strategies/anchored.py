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


class _Group:
    """The anchored parameters of one device and dtype, with their anchor and sqrt(w) held
    flat (one tensor each), so that theta - anchor, its weighting and the sum of squares are
    one operation apiece over every weight. On the CPU the difference goes into one buffer
    kept between steps (a fresh allocation of 4 bytes a weight each step costs the CPU more in
    page faults than the arithmetic); CUDA's caching allocator makes a fresh one free, and
    keeps the peak memory where it was."""

    def __init__(self, params: list[torch.Tensor], sw: list[torch.Tensor] | None,
                 anchor: list[torch.Tensor]):
        self.params = params
        self.shapes = [local(p).shape for p in params]  # shards under FSDP
        self.sizes = [local(p).numel() for p in params]
        self.anchor = torch.cat([local(a).reshape(-1) for a in anchor])
        self.sw = None if sw is None else torch.cat([local(w).reshape(-1) for w in sw])
        self.buffer = (torch.empty_like(self.anchor) if self.anchor.device.type == "cpu"
                       else None)
        self._views = None if self.buffer is None else self.views(self.buffer)
        self.sw_views = None if self.sw is None else self.views(self.sw)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [v.view(s) for v, s in zip(flat.split(self.sizes), self.shapes)]

    def diff(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """sqrt(w) (theta - anchor), flat and as one view per parameter."""
        params = [local(p) for p in self.params]  # read each step: FSDP may swap the shards
        if self.buffer is None:
            flat = torch.cat([p.reshape(-1) for p in params])
            views = self.views(flat)
        else:
            flat, views = self.buffer, self._views
            torch._foreach_copy_(views, params)
        flat.sub_(self.anchor)
        if self.sw is not None:
            flat.mul_(self.sw)
        return flat, views

    @staticmethod
    def sum_sq(flat: torch.Tensor) -> torch.Tensor:
        if flat.dtype in (torch.float32, torch.float64):
            return flat.dot(flat).float()
        return torch.linalg.vector_norm(flat, dtype=torch.float32).pow(2)


class _Terms:
    """The penalty's operands for one model, built once and reused every step: its anchored
    parameters (as registered) and one ``_Group`` per device and dtype among them."""

    def __init__(self, params: list[torch.Tensor], sw: list[torch.Tensor | None],
                 anchor: list[torch.Tensor]):
        self.params = params
        self.sharded = is_dtensor(params[0])
        self.keys = self.keys_of(params)
        self.index = {k: [i for i, kk in enumerate(self.keys) if kk == k]
                      for k in dict.fromkeys(self.keys)}
        weighted = sw[0] is not None
        self.groups = [_Group([params[i] for i in ix], [sw[i] for i in ix] if weighted else None,
                              [anchor[i] for i in ix]) for ix in self.index.values()]

    @staticmethod
    def keys_of(params: list[torch.Tensor]) -> list[tuple]:
        return [(local(p).device, p.dtype) for p in params]

    def value_and_diffs(self) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """sum_i w_i (theta_i - anchor_i)^2 (over every process when sharded) and, per group,
        sqrt(w) (theta - anchor) as one view per parameter."""
        total, diffs = None, []
        for g in self.groups:
            flat, views = g.diff()
            v = g.sum_sq(flat).to(self.groups[0].anchor.device)
            total = v if total is None else total + v
            diffs.append(views)
        return all_sum(total, self.sharded), diffs

    def grads(self, diffs: list[list[torch.Tensor]], scale: float,
              into: list[list[torch.Tensor]] | None = None) -> list[list[torch.Tensor]]:
        """``scale`` * 2 w (theta - anchor) per group: added into ``into`` (in place), or new."""
        out = []
        for gi, (g, d) in enumerate(zip(self.groups, diffs)):
            sw = g.sw_views
            if into is not None:
                if sw is not None:  # + 2 s sqrt(w) sqrt(w) (theta - a)
                    torch._foreach_addcmul_(into[gi], d, sw, value=2.0 * scale)
                else:
                    torch._foreach_add_(into[gi], d, alpha=2.0 * scale)
                out.append(into[gi])
            else:
                new = torch._foreach_mul(d, sw) if sw is not None else [t.clone() for t in d]
                torch._foreach_mul_(new, 2.0 * scale)
                out.append(new)
        return out

    def per_group(self, tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return [[tensors[i] for i in ix] for ix in self.index.values()]

    def from_groups(self, grouped: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [None] * len(self.params)  # type: ignore[list-item]
        for ix, ts in zip(self.index.values(), grouped):
            for i, t in zip(ix, ts):
                out[i] = t
        return out


class AnchoredQuadratic:
    """sum_i w_i * (theta_i - anchor_i)^2 over the named parameters of ``anchor`` (no 1/2, no
    strength: the strategy applies those); ``weights`` None means w = 1 (L2-SP). Kept as
    sqrt(w) (importances are >= 0), moved once to each parameter's device and dtype on first
    use: ``(sqrt(w) * (theta - anchor))^2`` is the same sum, and the fused gradient needs it.

    Both entry points run the same few multi-tensor (``torch._foreach_*``) ops over every
    parameter at once, with no Python loop over tensors per step: ``add_grad`` adds the
    gradient to ``.grad`` in place (retain's own loop, once per optimizer step), ``__call__``
    is the differentiable value (loops that add it to the loss, e.g. the Trainer's), whose
    backward computes the same gradient."""

    def __init__(self, weights: Importance | None, anchor: Importance):
        self.weights = weights
        self.anchor = anchor
        self._terms_cache: _Terms | None = None

    def _terms(self, model: torch.nn.Module) -> _Terms | None:
        """The operands for ``model``'s parameters now (None: no anchored parameter); rebuilt
        only when a parameter object, its device or its dtype changed since the last call."""
        params = dict(model.named_parameters())
        missing = next((n for n in self.anchor if n not in params), None)
        if missing is not None:
            raise RuntimeError(
                f"parameter {missing} (present at prepare time) is not in the model: was it wrapped "
                "by a later strategy? List regularization strategies after PEFT ones."
            )
        ps = [params[n] for n in self.anchor]
        if not ps:
            return None
        cached = self._terms_cache
        if (cached is not None and all(a is b for a, b in zip(ps, cached.params))
                and _Terms.keys_of(ps) == cached.keys):  # model.to() keeps the objects
            return cached
        sw, anchor = [], []
        for name, p in zip(self.anchor, ps):
            w = self.weights[name] if self.weights is not None else None
            sw.append(w.to(p.device, torch.float32).sqrt().to(p.dtype) if w is not None else None)
            anchor.append(self.anchor[name].to(p.device, p.dtype))
        self._terms_cache = _Terms(ps, sw, anchor)
        return self._terms_cache

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        terms = self._terms(model)
        if terms is None:
            return torch.zeros(())
        return _Penalty.apply(terms, *terms.params)

    @torch.no_grad()
    def add_grad(self, model: torch.nn.Module, scale: float) -> torch.Tensor:
        """Add the gradient of ``scale * self(model)``, 2 * scale * w * (theta - anchor), to
        every parameter's ``.grad``; return ``scale * self(model)``, detached."""
        terms = self._terms(model)
        if terms is None:
            return torch.zeros(())
        value, diffs = terms.value_and_diffs()
        for p in terms.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        terms.grads(diffs, scale, into=terms.per_group([local(p.grad) for p in terms.params]))
        return scale * value


class _Penalty(torch.autograd.Function):
    """The anchored quadratic's value as an autograd node over the parameters: forward and
    backward are the multi-tensor ops of ``_Terms`` (the backward recomputes the difference,
    so nothing of a step's size is kept between the two)."""

    @staticmethod
    def forward(ctx, terms: _Terms, *params: torch.Tensor) -> torch.Tensor:
        ctx.terms = terms
        return terms.value_and_diffs()[0]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        terms: _Terms = ctx.terms
        _, diffs = terms.value_and_diffs()
        return (None, *terms.from_groups(terms.grads(diffs, float(grad_out))))


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
