"""Full fine-tuning: every weight is trained and nothing protects the old capabilities.

The baseline every other strategy is measured against (all four hooks are no-ops). Standard
practice since "Universal Language Model Fine-tuning for Text Classification" (Howard & Ruder,
2018, https://arxiv.org/abs/1801.06146).
"""

from __future__ import annotations

from typing import ClassVar

from retain.strategies.base import Strategy, StrategyConfig


class FullConfig(StrategyConfig):
    """No options: full fine-tuning is the loop's default."""


class FullFineTune(Strategy):
    """Train all weights; the hooks of ``Strategy`` (all no-ops) are kept as they are."""

    name: ClassVar[str] = "full"
    family: ClassVar[str] = "baseline"
    citation: ClassVar[str] = ("Howard & Ruder, 2018, \"Universal Language Model Fine-tuning for "
                               "Text Classification\", https://arxiv.org/abs/1801.06146")
    Config: ClassVar[type[StrategyConfig]] = FullConfig
