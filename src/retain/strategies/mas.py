"""MAS: the EWC-style quadratic pull toward the prepare-time weights, weighted by the Memory Aware
Synapses importance (sensitivity of the output logits) instead of the Fisher. Needs no labels."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.ewc import AnchoredQuadratic, Normalize, anchor_of, check_covers
from retain.strategies.fisher import (Importance, estimate_mas, estimate_once, load_importance,
                                     normalize_importance, save_importance)


class MAS(Strategy):
    """Memory Aware Synapses (Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to
    forget", https://arxiv.org/abs/1711.09601).

    penalty = (lam / 2) * sum_i Omega_i * (theta_i - theta*_i)^2 (with the 1/2, like ``EWC``),
    theta* = trainable weights at prepare time, Omega = mean over reference samples of
    |d ||logits||^2 / d theta| (``fisher.estimate_mas``), rescaled by ``normalize`` (default: to
    mean 1). Reused from ``importance_path`` when given, else estimated and saved (raw) to
    ``out_dir/mas_importance.safetensors``.
    """

    name: ClassVar[str] = "mas"
    family: ClassVar[str] = "regularization"
    citation: ClassVar[str] = (
        'Aljundi et al., "Memory Aware Synapses: Learning what (not) to forget", 2018, '
        "https://arxiv.org/abs/1711.09601"
    )

    class Config(StrategyConfig):
        lam: float = Field(1.0, ge=0, description="strength; penalty = lam/2 * sum Omega (theta - theta*)^2")
        n_samples: int = Field(64, ge=1, description="reference examples used for the importance")
        chunk_size: int = Field(8, ge=1, description="examples per vectorized per-sample-gradient call")
        normalize: Normalize = Field("mean", description="rescale Omega: none | mean (to mean 1) | max")
        importance_path: Path | None = Field(None, description="reuse this saved MAS importance")

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.importance: Importance = {}  # raw MAS importance, CPU
        self._quad: AnchoredQuadratic | None = None
        self._info: dict = {}
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"importance": dict(self.importance), "info": self._info}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        cfg = self.config
        info: dict = {"lam": cfg.lam, "normalize": cfg.normalize, "estimator": "mas", "penalty_has_half": True}
        if self._resume is not None:  # a resumed run: the importance of its first part
            self.importance, info = dict(self._resume["importance"]), dict(self._resume["info"])
        elif cfg.importance_path is not None:
            self.importance, meta = load_importance(cfg.importance_path)
            check_covers(self.importance, model, f"the MAS importance in {cfg.importance_path}")
            info.update(source="loaded", importance_path=str(cfg.importance_path), n_samples=meta.get("n_samples"))
        else:
            start = time.perf_counter()
            self.importance = estimate_once(lambda: estimate_mas(
                model, ctx.reference, n_samples=cfg.n_samples, seed=ctx.seed,
                chunk_size=cfg.chunk_size), model)
            n_used = min(cfg.n_samples, len(ctx.reference))
            info.update(source="estimated", n_samples=n_used, estimate_seconds=round(time.perf_counter() - start, 3))
            if ctx.out_dir is not None:
                meta = {"kind": "mas", "estimator": "mas", "n_samples": n_used, "seed": ctx.seed}
                saved = save_importance(Path(ctx.out_dir) / "mas_importance.safetensors", self.importance, meta)
                info["importance_path"] = str(saved)
        weights = normalize_importance(self.importance, cfg.normalize)
        self._quad = AnchoredQuadratic(weights, anchor_of(model))
        info["n_params"] = sum(v.numel() for v in weights.values())
        self._info = ctx.info[self.name] = info
        return model

    fused_penalty: ClassVar[bool] = True

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        if self._quad is None:
            raise RuntimeError("MAS.penalty called before prepare")
        return 0.5 * self.config.lam * self._quad(model)

    def penalty_grad(self, model: torch.nn.Module) -> torch.Tensor | None:
        if self._quad is None:
            raise RuntimeError("MAS.penalty_grad called before prepare")
        return self._quad.add_grad(model, 0.5 * self.config.lam)
