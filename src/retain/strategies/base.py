"""The strategy interface: how a mitigation method plugs into a run without touching the loop.

A strategy may (1) change the model before training (``prepare``: LoRA wraps it, EWC estimates
its Fisher), (2) change the training examples (``train_data``: replay mixes in old data),
(3) add a penalty to each step's loss (``penalty``: EWC, L2-SP, distillation; a penalty of the
weights alone may instead add its gradient directly, ``penalty_grad``), and
(4) change the model after training (``finalize``: merge with the base, merge-and-unload LoRA).
What ``prepare`` computed goes into checkpoints through ``state_dict``/``load_state_dict``.

A run lists strategies; their hooks run in list order for ``prepare``/``train_data``/``penalty``
(penalties are summed) and in list order for ``finalize``. ``tests/strategies`` checks this order.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict


class StrategyConfig(BaseModel):
    """Base of every strategy's config: frozen, and a typo is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass
class RunContext:
    """What a strategy may read about the run. ``base_state`` is a CPU copy of the base weights
    (name -> tensor) taken before any strategy ran; ``reference`` is tokenized data of the
    capabilities to keep (built-in mixture or the user's JSONL), for Fisher, replay, ..."""

    tokenizer: Any
    seed: int
    out_dir: Path | None
    device: torch.device
    base_state: dict[str, torch.Tensor] = field(default_factory=dict)
    reference: list[dict] = field(default_factory=list)  # examples: {"input_ids", "labels"}
    info: dict[str, Any] = field(default_factory=dict)  # strategies report here (into results)


class Strategy:
    """Default hooks do nothing; a strategy overrides the ones it needs."""

    name: ClassVar[str]
    family: ClassVar[str]  # "baseline" | "regularization" | "peft" | "replay" | "merging"
    citation: ClassVar[str] = ""  # title, year, link
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, config: StrategyConfig | None = None):
        self.config = config if config is not None else self.Config()

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return model

    def train_data(self, data: list[dict], ctx: RunContext) -> list[dict]:
        return data

    # True: retain's loop calls ``penalty_grad`` once per optimizer step instead of adding
    # ``penalty`` to every micro-batch's loss (other loops, e.g. the Trainer's, use ``penalty``).
    fused_penalty: ClassVar[bool] = False

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs: Any = None) -> torch.Tensor | None:
        """A term added to the loss of ``batch`` (differentiable), or None. ``outputs``: the
        loop's forward of ``batch`` when it has one (its ``.logits``), so that a penalty on the
        model's predictions need not run the model again."""
        return None

    def penalty_grad(self, model: torch.nn.Module) -> torch.Tensor | None:
        """For a penalty of the weights alone (``fused_penalty``): add its gradient to each
        trainable parameter's ``.grad`` in place, after the backward pass and before clipping,
        and return its value (detached). Same value and gradient as ``penalty``, without
        putting it through autograd."""
        return None

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return model

    # Checkpoints: what ``prepare`` computed that a resumed run must reuse rather than recompute
    # (a Fisher, a self-generated replay pool): tensors and JSON-able values, nested in dicts.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called before ``prepare`` when a run resumes; ``prepare`` then reuses ``state``."""


def call_penalty(strategy: Strategy, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 outputs: Any = None) -> torch.Tensor | None:
    """``strategy.penalty(model, batch, outputs=outputs)``; a strategy written against the
    two-argument form (``penalty(model, batch)``) is called without ``outputs``."""
    params = inspect.signature(strategy.penalty).parameters
    takes = "outputs" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return strategy.penalty(model, batch, outputs=outputs) if takes else \
        strategy.penalty(model, batch)
