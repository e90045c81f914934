"""EWC and online EWC: a Fisher-weighted pull of the trainable weights toward their values at
prepare time, so that weights that matter for the reference capabilities move least.

The quadratic penalty itself (``AnchoredQuadratic``) is shared with MAS, which only swaps the
importance. The Fisher estimators live in ``fisher.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.fisher import (
    Estimator,
    Importance,
    accumulate_online,
    estimate_fisher,
    estimate_once,
    load_importance,
    normalize_importance,
    save_importance,
    trainable_parameters,
)

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
        ps = [t[0] for t in terms]
        d = torch._foreach_sub(ps, [t[2] for t in terms])  # theta - anchor
        sw = [t[1] for t in terms]
        weighted = sw[0] is not None
        if weighted:
            torch._foreach_mul_(d, sw)  # sqrt(w) (theta - anchor)
        value = torch.stack(torch._foreach_norm(d)).float().pow(2).sum()
        for p in ps:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in ps]
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


class EWC(Strategy):
    """Elastic Weight Consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting
    in neural networks", https://arxiv.org/abs/1612.00796), with the online variant of Schwarz et
    al. 2018 ("Progress & Compress", https://arxiv.org/abs/1805.06370).

    penalty = (lam / 2) * sum_i F_i * (theta_i - theta*_i)^2   -- it carries the 1/2, as in the
    paper, so its gradient is lam * F * (theta - theta*). theta* = trainable weights at prepare
    time; F = diagonal Fisher of those weights on the reference data, by the named ``estimator``
    (see ``fisher.estimate_fisher``), then rescaled by ``normalize``: "mean" (default) divides F by
    its global mean so that lam means the same across estimators, data and model sizes (raw Fisher
    magnitudes differ by orders of magnitude between estimators); "none" keeps the raw Fisher.

    The Fisher comes from ``fisher_path`` (reused as is), or is estimated in prepare; with
    ``previous_fisher_path`` (a run continuing from an earlier one) it is online EWC:
    F = gamma * F_previous + F_new. The raw (unnormalized) F is saved to
    ``out_dir/fisher.safetensors`` for later runs (online EWC; a task sequence chains them). It
    is the starting model's Fisher on the reference data; for merging, take each fine-tune's
    own with ``retain fisher``.
    """

    name: ClassVar[str] = "ewc"
    family: ClassVar[str] = "regularization"
    citation: ClassVar[str] = (
        'Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", 2017, '
        "https://arxiv.org/abs/1612.00796"
    )

    class Config(StrategyConfig):
        lam: float = Field(1.0, ge=0, description="strength; penalty = lam/2 * sum F (theta - theta*)^2")
        estimator: Estimator = Field("empirical", description="empirical | sampled | batched")
        n_samples: int = Field(64, ge=1, description="reference examples used for the Fisher")
        batch_size: int = Field(8, ge=1, description="minibatch size of the 'batched' estimator")
        chunk_size: int = Field(8, ge=1, description="examples per vectorized per-sample-gradient call")
        normalize: Normalize = Field("mean", description="rescale F: none | mean (to mean 1) | max")
        fisher_path: Path | None = Field(None, description="reuse this saved Fisher instead of estimating")
        previous_fisher_path: Path | None = Field(None, description="online EWC: Fisher of the earlier run")
        gamma: float = Field(1.0, ge=0, le=1, description="online EWC decay of the previous Fisher")

        @model_validator(mode="after")
        def _one_source(self) -> EWC.Config:
            if self.fisher_path is not None and self.previous_fisher_path is not None:
                raise ValueError("give fisher_path (reuse) or previous_fisher_path (online EWC), not both")
            return self

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.fisher: Importance = {}  # raw (unnormalized) Fisher, CPU
        self._quad: AnchoredQuadratic | None = None
        self._info: dict = {}
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"fisher": dict(self.fisher), "info": self._info}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        cfg = self.config
        info: dict = {"lam": cfg.lam, "normalize": cfg.normalize, "penalty_has_half": True}
        if self._resume is not None:  # a resumed run: the Fisher of its first part
            self.fisher, info = dict(self._resume["fisher"]), dict(self._resume["info"])
        elif cfg.fisher_path is not None:
            self.fisher, meta = load_importance(cfg.fisher_path)
            check_covers(self.fisher, model, f"the Fisher in {cfg.fisher_path}")
            info.update(source="loaded", fisher_path=str(cfg.fisher_path),
                        estimator=meta.get("estimator"), n_samples=meta.get("n_samples"))
        else:
            start = time.perf_counter()
            new = estimate_once(lambda: estimate_fisher(
                model, ctx.reference, cfg.estimator, n_samples=cfg.n_samples, seed=ctx.seed,
                batch_size=cfg.batch_size, chunk_size=cfg.chunk_size), model)
            n_used = min(cfg.n_samples, len(ctx.reference))
            meta = {"kind": "fisher", "estimator": cfg.estimator, "n_samples": n_used, "seed": ctx.seed,
                    "online_terms": 1, "gamma": None}
            info.update(source="estimated", estimator=cfg.estimator, n_samples=n_used,
                        estimate_seconds=round(time.perf_counter() - start, 3))
            if cfg.previous_fisher_path is not None:
                previous, prev_meta = load_importance(cfg.previous_fisher_path)
                new = accumulate_online(previous, new, cfg.gamma)
                meta.update(online_terms=int(prev_meta.get("online_terms", 1)) + 1, gamma=cfg.gamma)
                info.update(source="online", gamma=cfg.gamma, previous_fisher_path=str(cfg.previous_fisher_path),
                            online_terms=meta["online_terms"])
            self.fisher = new
            if ctx.out_dir is not None:
                saved = save_importance(Path(ctx.out_dir) / "fisher.safetensors", new, meta)
                info["fisher_path"] = str(saved)
        weights = normalize_importance(self.fisher, cfg.normalize)
        self._quad = AnchoredQuadratic(weights, anchor_of(model))
        info["n_params"] = sum(v.numel() for v in weights.values())
        self._info = ctx.info[self.name] = info
        return model

    fused_penalty: ClassVar[bool] = True

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        if self._quad is None:
            raise RuntimeError("EWC.penalty called before prepare")
        return 0.5 * self.config.lam * self._quad(model)

    def penalty_grad(self, model: torch.nn.Module) -> torch.Tensor | None:
        if self._quad is None:
            raise RuntimeError("EWC.penalty_grad called before prepare")
        return self._quad.add_grad(model, 0.5 * self.config.lam)
