"""Layer freezing: train only some parameters and leave the rest of the model exactly as it was.

Choose the top ``top_blocks`` transformer blocks (the last entries of the model's block list,
found generically as its longest ``nn.ModuleList``: ``model.layers`` in Llama/Qwen2,
``transformer.h`` in GPT-2) and/or parameters whose names match regular expressions. Freezing
changes only ``requires_grad``; the weights stay in the same plain model, so nothing to finalize.
In the spirit of Howard & Ruder 2018, "Universal Language Model Fine-tuning for Text
Classification" (gradual unfreezing, top layers first), https://arxiv.org/abs/1801.06146
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig


def find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer blocks: its longest ``nn.ModuleList`` (ties: the one with
    more parameters). Returns ``(dotted name, module list)``."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise UserError("freeze: the model has no nn.ModuleList of blocks; use `modules` patterns")
    return max(lists, key=lambda nm: (len(nm[1]), sum(p.numel() for p in nm[1].parameters())))


def chosen_parameters(model: torch.nn.Module, top_blocks: int | None,
                      patterns: list[str]) -> list[str]:
    """Names of the parameters to train. Tied weights answer to each of their names (a pattern
    "lm_head" selects a head tied to the input embeddings), so the list may hold aliases."""
    names: set[str] = set()
    if top_blocks:
        list_name, blocks = find_blocks(model)
        if top_blocks > len(blocks):
            raise UserError(f"freeze: top_blocks={top_blocks}, but the model has {len(blocks)} blocks")
        first = len(blocks) - top_blocks
        for i in range(first, len(blocks)):
            prefix = f"{list_name}.{i}." if list_name else f"{i}."
            names |= {prefix + n for n, _ in blocks[i].named_parameters()}
    compiled = [re.compile(p) for p in patterns]
    all_names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    for rx in compiled:
        hits = [n for n in all_names if rx.search(n)]
        if not hits:
            raise UserError(f"freeze: pattern {rx.pattern!r} matches no parameter name "
                            f"(names look like {all_names[0]!r})")
        names |= set(hits)
    return [n for n in all_names if n in names]  # in model order


class Freeze(Strategy):
    """Train only the top k blocks and/or the parameters matching name patterns."""

    name: ClassVar[str] = "freeze"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Howard & Ruder 2018, Universal Language Model Fine-tuning for Text "
                               "Classification, https://arxiv.org/abs/1801.06146")
    sets_trainable: ClassVar[bool] = True  # it decides requires_grad: clashes with adapter methods

    class Config(StrategyConfig):
        top_blocks: int | None = Field(None, ge=1)  # train the last k transformer blocks
        modules: list[str] = []  # regexes (re.search) on parameter names, e.g. "lm_head", "norm"

        @model_validator(mode="after")
        def _something_to_train(self) -> "Freeze.Config":
            if not self.top_blocks and not self.modules:
                raise ValueError("freeze needs top_blocks or modules (or both)")
            for p in self.modules:
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"freeze: bad regular expression {p!r}: {e}") from e
            return self

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        c = self.config
        chosen = chosen_parameters(model, c.top_blocks, list(c.modules))
        params = dict(model.named_parameters(remove_duplicate=False))
        train = {id(params[n]) for n in chosen}  # ids: a tied tensor is one object
        for p in model.parameters():
            p.requires_grad_(id(p) in train)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        ctx.info["trainable_params"] = trainable
        ctx.info["freeze"] = {
            "trainable_params": trainable, "total_params": sum(p.numel() for p in model.parameters()),
            "trained_tensors": len(train),
            "block_list": find_blocks(model)[0] if c.top_blocks else None}
        return model
