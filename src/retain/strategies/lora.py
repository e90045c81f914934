"""LoRA: train a low-rank update ``B @ A * (alpha / r)`` beside each frozen weight, through ``peft``
(``peft_base.PeftStrategy`` wraps, reports, and at finalize merges the update into the weights).
Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
https://arxiv.org/abs/2106.09685 (DoRA: Liu et al., 2024, https://arxiv.org/abs/2402.09353;
rsLoRA's alpha / sqrt(r) scaling: Kalajdzievski, 2023, https://arxiv.org/abs/2312.03732).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from retain.strategies.base import RunContext, StrategyConfig
from retain.strategies.peft_base import PeftStrategy, Seeding


class LoRAConfig(StrategyConfig):
    r: int = Field(8, gt=0, description="rank of the update")
    alpha: float = Field(16.0, gt=0, description="scale numerator: the update is B@A * alpha/r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    # "all-linear" = every Linear/Conv1D of the blocks, not the output head (peft's shorthand);
    # works for Llama/Qwen (nn.Linear) and GPT-2 (Conv1D) alike. Or a list of module names.
    target_modules: str | list[str] = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False


class LoRA(PeftStrategy):
    """The base weights stay bit-identical during training; ``finalize`` merges the update into
    them (``merge_and_unload``) so the run's output is a plain model of the original architecture."""

    name: ClassVar[str] = "lora"
    citation: ClassVar[str] = ("Hu et al., 2021, \"LoRA: Low-Rank Adaptation of Large Language "
                               "Models\", https://arxiv.org/abs/2106.09685")
    Config: ClassVar[type[StrategyConfig]] = LoRAConfig
    seeding: ClassVar[Seeding] = "global"  # A's random init, from the run's RNG reseeded

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import LoraConfig

        c = self.config
        return LoraConfig(task_type="CAUSAL_LM", r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                          target_modules=c.target_modules, use_dora=c.use_dora,
                          use_rslora=c.use_rslora)
