"""EWC and online EWC: a Fisher-weighted pull of the trainable weights toward their values at
prepare time, so that weights that matter for the reference capabilities move least.

The anchored quadratic (``anchored.AnchoredQuadraticStrategy``) is shared with MAS and L2-SP;
EWC supplies only its importance, the Fisher. The Fisher estimators live in ``fisher.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator

from retain.strategies.anchored import AnchoredQuadraticStrategy, Normalize, check_covers
from retain.strategies.base import RunContext, StrategyConfig
from retain.strategies.fisher import (
    Estimator,
    Importance,
    accumulate_online,
    estimate_fisher,
    estimate_once,
    load_importance,
    save_importance,
)
from retain.train.sharding import full_tree, shard_like

FISHER_FILE = "fisher.safetensors"  # a run's raw Fisher, in its folder (online EWC reads it)


class EWC(AnchoredQuadraticStrategy):
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
        chunk_size: int = Field(8, ge=1, description="examples per batched per-sample-gradient pass")
        normalize: Normalize = Field("mean", description="rescale F: none | mean (to mean 1) | max")
        fisher_path: Path | None = Field(None, description="reuse this saved Fisher instead of estimating")
        previous_fisher_path: Path | None = Field(None, description="online EWC: Fisher of the earlier run")
        gamma: float = Field(1.0, ge=0, le=1, description="online EWC decay of the previous Fisher")

        @model_validator(mode="after")
        def _one_source(self) -> EWC.Config:
            if self.fisher_path is not None and self.previous_fisher_path is not None:
                raise ValueError("give fisher_path (reuse) or previous_fisher_path (online EWC), not both")
            return self

    state_key: ClassVar[str] = "fisher"  # checkpoints keep the raw Fisher under this key

    @classmethod
    def options_for_task(cls, options: dict[str, Any], previous_run: Path | None,
                         start_model: str) -> dict[str, Any]:
        """Online EWC along a sequence: every task after the first adds the previous task's saved
        Fisher (unless ``fisher_path`` fixes the Fisher)."""
        if previous_run is None or options.get("fisher_path"):
            return options
        return {**options, "previous_fisher_path": str(Path(previous_run) / FISHER_FILE)}

    @property
    def fisher(self) -> Importance:
        """The raw (unnormalized) Fisher, CPU: EWC's importance."""
        return self.importance

    def importance_of(self, model: torch.nn.Module, ctx: RunContext) -> tuple[Importance, dict]:
        """The Fisher: loaded from ``fisher_path``, or estimated (plus the decayed previous one for
        online EWC) and saved raw to ``out_dir/fisher.safetensors``."""
        cfg = self.config
        info: dict[str, Any] = {"lam": cfg.lam, "normalize": cfg.normalize, "penalty_has_half": True}
        if cfg.fisher_path is not None:
            fisher, meta = load_importance(cfg.fisher_path)
            check_covers(fisher, model, f"the Fisher in {cfg.fisher_path}")
            info.update(source="loaded", fisher_path=str(cfg.fisher_path),
                        estimator=meta.get("estimator"), n_samples=meta.get("n_samples"))
            return fisher, info
        start = time.perf_counter()
        fisher = estimate_once(lambda: estimate_fisher(
            model, ctx.reference, cfg.estimator, n_samples=cfg.n_samples, seed=ctx.seed,
            batch_size=cfg.batch_size, chunk_size=cfg.chunk_size), model)
        n_used = min(cfg.n_samples, len(ctx.reference))
        meta = {"kind": "fisher", "estimator": cfg.estimator, "n_samples": n_used, "seed": ctx.seed,
                "online_terms": 1, "gamma": None}
        info.update(source="estimated", estimator=cfg.estimator, n_samples=n_used,
                    estimate_seconds=round(time.perf_counter() - start, 3))
        if cfg.previous_fisher_path is not None:
            previous, prev_meta = load_importance(cfg.previous_fisher_path)
            fisher = accumulate_online(shard_like(previous, model), fisher, cfg.gamma)
            meta.update(online_terms=int(prev_meta.get("online_terms", 1)) + 1, gamma=cfg.gamma)
            info.update(source="online", gamma=cfg.gamma, previous_fisher_path=str(cfg.previous_fisher_path),
                        online_terms=meta["online_terms"])
        whole = full_tree(fisher)  # sharded: every process joins the all-gathers
        if ctx.out_dir is not None:
            saved = save_importance(Path(ctx.out_dir) / FISHER_FILE, whole, meta)
            info["fisher_path"] = str(saved)
        return fisher, info
