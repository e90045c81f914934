"""What every merge method shares: the per-tensor inputs (``TensorSet``), the frozen options base,
and the registry entry (``MergeMethod``). A method is a pure function of one tensor name's inputs;
the engine (``engine.py``) feeds it tensor by tensor, from folders or from state dicts, and cuts
large tensors into row chunks so memory stays small. A method that needs a whole-tensor quantity
(TIES's magnitude threshold, SLERP's angle) computes it in ``prepare`` from passes over the chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any, Callable, Iterable, Literal

import torch
from pydantic import BaseModel, ConfigDict

from retain.errors import UserError


class MergeOptions(BaseModel):
    """Base of every method's options: frozen, and a typo is an error, not a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TensorSet:
    """The inputs of one tensor name. Tensors are float32 and share one shape.

    ``weights``/``densities`` have one entry per model; ``stats`` holds each model's statistic
    for this tensor (diagonal Fisher rows, or the Gram matrix of the layer's inputs), when the
    method uses one. ``rows`` is the chunk's row range in the whole tensor (None: all of it);
    ``prepared`` is what the method's ``prepare`` computed over the whole tensor."""

    name: str
    base: torch.Tensor | None
    models: list[torch.Tensor]
    weights: list[float]
    densities: list[float] | None = None
    stats: list[torch.Tensor] | None = None
    rows: tuple[int, int] | None = None
    prepared: Any = None

    @property
    def row_start(self) -> int:
        return 0 if self.rows is None else self.rows[0]


Chunks = Callable[[], Iterable[TensorSet]]  # a fresh pass over one tensor's chunks per call


# How a method uses the base model:
#   "required": it merges task vectors (model - base), so a base is needed;
#   "pair":     it combines two endpoints: (base, model) when one model is given, else two models;
#   "template": the base, when given, only supplies names, config and tokenizer.
BaseRole = Literal["required", "pair", "template"]


@dataclass(frozen=True)
class MergeMethod:
    """One registry entry: the options model, the per-tensor function and how it uses inputs."""

    name: str
    options: type[MergeOptions]
    apply: Callable[[TensorSet, MergeOptions], torch.Tensor]
    base_role: BaseRole
    citation: str  # title, year, link
    stats: Literal["fisher", "gram"] | None = None  # per-model statistics files it needs
    default_weight: float = 1.0
    min_models: int = 1  # fewest fine-tunes (besides the base) the method can merge
    # whole-tensor pass(es) over the chunks: (chunks, full shape, densities, options) -> prepared
    prepare: Callable[[Chunks, tuple[int, ...], list[float] | None, MergeOptions], Any] | None = None

    def check_counts(self, n_models: int, has_base: bool) -> None:
        """Refuse a number of inputs the method cannot use, with one clear line."""
        least = max(1, self.min_models)
        if n_models < least:
            raise UserError(f"merge method {self.name!r} needs at least {least} "
                            f"model{'s' if least > 1 else ''}, got {n_models}")
        if self.base_role == "required" and not has_base:
            raise UserError(f"merge method {self.name!r} merges task vectors: give --base")
        if self.base_role == "pair" and n_models + (1 if has_base and n_models == 1 else 0) != 2:
            raise UserError(
                f"merge method {self.name!r} combines two endpoints: give --base and one model, "
                f"or two models (got {n_models} model(s){' and a base' if has_base else ''})")


def pair(ts: TensorSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The two endpoints of a two-point method: (base, model) or (model 0, model 1)."""
    if len(ts.models) == 1:
        assert ts.base is not None, "pair() with one model needs the base"
        return ts.base, ts.models[0]
    a, b = ts.models
    return a, b


def task_vectors(ts: TensorSet) -> list[torch.Tensor]:
    """tau_i = theta_i - theta_base, one per model (Ilharco et al. 2023)."""
    assert ts.base is not None, "task vectors need the base"
    return [m - ts.base for m in ts.models]


CHUNK_ELEMENTS = 1 << 19  # rows per chunk are chosen so one input chunk holds at most this many


def row_chunks(shape: tuple[int, ...]) -> list[tuple[int, int] | None]:
    """Row ranges (dim 0) that cut a tensor into chunks of at most CHUNK_ELEMENTS entries (a
    row is never split); [None] when the tensor is small enough to take whole. Fixed, so
    streaming and in-memory merges cut identically (DARE's masks are drawn per chunk)."""
    numel = math.prod(shape)
    if len(shape) == 0 or numel <= CHUNK_ELEMENTS:
        return [None]
    step = max(1, CHUNK_ELEMENTS // max(1, numel // shape[0]))
    return [(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]
