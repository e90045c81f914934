"""MAS: the EWC-style quadratic pull toward the prepare-time weights (``anchored.py``), weighted by
the Memory Aware Synapses importance (sensitivity of the output logits) instead of the Fisher."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from retain.strategies.anchored import AnchoredQuadraticStrategy, Normalize, check_covers
from retain.strategies.base import RunContext, StrategyConfig
from retain.strategies.fisher import (Importance, estimate_mas, estimate_once, load_importance,
                                     save_importance)
from retain.train.sharding import full_tree


class MAS(AnchoredQuadraticStrategy):
    """Memory Aware Synapses (Aljundi et al. 2018, "Memory Aware Synapses: Learning what (not) to
    forget", https://arxiv.org/abs/1711.09601).

    penalty = (lam / 2) * sum_i Omega_i * (theta_i - theta*_i)^2 (with the 1/2, like ``EWC``),
    theta* = trainable weights at prepare time, Omega = mean over reference samples of
    |d ||logits||^2 / d theta| (``fisher.estimate_mas``), rescaled by ``normalize`` (default: to
    mean 1). Reused from ``importance_path`` when given, else estimated and saved (raw) to
    ``out_dir/mas_importance.safetensors``. Needs no labels.
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
        chunk_size: int = Field(8, ge=1, description="examples per batched per-sample-gradient pass")
        normalize: Normalize = Field("mean", description="rescale Omega: none | mean (to mean 1) | max")
        importance_path: Path | None = Field(None, description="reuse this saved MAS importance")

    state_key: ClassVar[str] = "importance"  # checkpoints keep the raw importance under this key

    def importance_of(self, model: torch.nn.Module, ctx: RunContext) -> tuple[Importance, dict]:
        """Omega: loaded from ``importance_path``, or estimated and saved raw."""
        cfg = self.config
        info: dict[str, Any] = {"lam": cfg.lam, "normalize": cfg.normalize, "estimator": "mas",
                                "penalty_has_half": True}
        if cfg.importance_path is not None:
            importance, meta = load_importance(cfg.importance_path)
            check_covers(importance, model, f"the MAS importance in {cfg.importance_path}")
            info.update(source="loaded", importance_path=str(cfg.importance_path), n_samples=meta.get("n_samples"))
            return importance, info
        start = time.perf_counter()
        importance = estimate_once(lambda: estimate_mas(
            model, ctx.reference, n_samples=cfg.n_samples, seed=ctx.seed,
            chunk_size=cfg.chunk_size), model)
        n_used = min(cfg.n_samples, len(ctx.reference))
        info.update(source="estimated", n_samples=n_used, estimate_seconds=round(time.perf_counter() - start, 3))
        whole = full_tree(importance)  # sharded: every process joins the all-gathers
        if ctx.out_dir is not None:
            meta = {"kind": "mas", "estimator": "mas", "n_samples": n_used, "seed": ctx.seed}
            saved = save_importance(Path(ctx.out_dir) / "mas_importance.safetensors", whole, meta)
            info["importance_path"] = str(saved)
        return importance, info
