"""The strategy interface: how a mitigation method plugs into a run without touching the loop.
A strategy may change the model before training (``prepare``), the training examples
(``train_data``), each step's loss (``penalty``, or ``penalty_grad``) and the model after training
(``finalize``); hooks run in list order (``tests/strategies`` checks it). Checkpoints keep what
``prepare`` computed (``state_dict``); a task sequence carries options on (``options_for_task``)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

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
    """Default hooks do nothing; a strategy overrides the ones it needs: ``prepare`` (LoRA wraps
    the model, EWC estimates its Fisher), ``train_data`` (replay mixes in old data), ``penalty``
    (EWC, L2-SP, distillation; a penalty of the weights alone may instead add its gradient
    directly, ``penalty_grad``), ``finalize`` (merge with the base, merge-and-unload LoRA).
    ``prepare``/``train_data``/``penalty`` (summed) and ``finalize`` each run in list order;
    ``data_ready`` sees the data every ``train_data`` made (``training_data``)."""

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

    def data_ready(self, data: list[dict], ctx: RunContext) -> None:
        """The training data as the loop will see it: after every strategy's ``train_data``
        (a later strategy's replay rows included). Distillation teaches its cache here."""

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

    # Task sequences (``retain sequence``): what a strategy carries from one task's run to the
    # next (online EWC: the previous task's Fisher), as options of the next task's run.
    @classmethod
    def options_for_task(cls, options: dict[str, Any], previous_run: Path | None,
                         start_model: str) -> dict[str, Any]:
        """This strategy's options (its spec, ``name`` included) for one task of a sequence, given
        the previous task's run folder (None for the first task) and the sequence's starting
        model. Returns a new dict, or ``options`` unchanged (the default)."""
        return options


def call_penalty(strategy: Strategy, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 outputs: Any = None) -> torch.Tensor | None:
    """``strategy.penalty(model, batch, outputs=outputs)``; a strategy written against the
    two-argument form (``penalty(model, batch)``) is called without ``outputs``."""
    params = inspect.signature(strategy.penalty).parameters
    takes = "outputs" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    return strategy.penalty(model, batch, outputs=outputs) if takes else \
        strategy.penalty(model, batch)


def training_data(strategies: Sequence[Strategy], data: list[dict], ctx: RunContext) -> list[dict]:
    """The training data of a run: each strategy's ``train_data`` in list order, then each one's
    ``data_ready`` on the result. The one place a loop (``retain run``, the Trainer kit) turns
    its rows into what it trains on."""
    for s in strategies:
        data = s.train_data(data, ctx)
    for s in strategies:
        s.data_ready(data, ctx)
    return data
