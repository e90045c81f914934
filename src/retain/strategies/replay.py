"""Replay: a fraction r of the training examples comes from reference data (the capabilities to
keep), mixed in deterministically, so the model keeps rehearsing what it knew.

Robins 1995, "Catastrophic Forgetting, Rehearsal and Pseudorehearsal", Connection Science 7(2),
https://doi.org/10.1080/09540099550039318 (rehearsal); for LLM fine-tuning see e.g. Scialom et al.
2022, "Fine-tuned Language Models are Continual Learners", https://arxiv.org/abs/2205.12393.

``mix_replay`` is the one mixing routine (``self_replay`` uses it too); see it for how r holds.
"""

from __future__ import annotations

import random
from typing import ClassVar

from pydantic import Field

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig

IGNORE = -100  # label that takes no loss


def replay_count(n_new: int, fraction: float) -> int:
    """Replay examples to add to ``n_new`` new ones so that they are ``fraction`` of the total."""
    return round(fraction * n_new / (1.0 - fraction))


def _draw(pool: list[dict], n: int, rng: random.Random) -> list[dict]:
    """``n`` examples of ``pool``: without replacement while it lasts, then another shuffled pass."""
    out: list[dict] = []
    while len(out) < n:
        order = list(range(len(pool)))
        rng.shuffle(order)
        out.extend(pool[i] for i in order[: n - len(out)])
    return out


def mix_replay(data: list[dict], pool: list[dict], fraction: float,
               seed: int) -> tuple[list[dict], dict]:
    """``data`` with ``replay_count(len(data), fraction)`` examples of ``pool`` interleaved evenly.

    Position k of the result (N examples, R of them replay) is a replay slot when
    floor((k + 1) R / N) > floor(k R / N). So every run of B consecutive examples -- every batch of
    a loop that takes batches in list order, and every prefix, for a loop that stops early -- holds
    floor(rB) or ceil(rB) replay examples (r = R / N). A loop that shuffles the list keeps r exactly
    over the epoch and on average per batch (hypergeometric spread). The new examples keep their
    order; which reference examples are drawn, and in what order, depends only on ``seed``.
    Returns ``(examples, counts)``; counts are what the report shows."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"replay fraction must be in (0, 1), got {fraction}")
    if not pool:
        raise UserError("replay: the replay pool is empty (no reference data: set the run's "
                        "reference data to builtin:retained or a JSONL of what to keep)")
    n_new = len(data)
    n_replay = replay_count(n_new, fraction)
    drawn = iter(_draw(pool, n_replay, random.Random(f"replay:{seed}")))
    new = iter(data)
    total = n_new + n_replay
    out = [next(drawn) if (k + 1) * n_replay // total > k * n_replay // total else next(new)
           for k in range(total)]
    picked = [ex for k, ex in enumerate(out) if (k + 1) * n_replay // total > k * n_replay // total]
    counts = {
        "fraction": fraction,
        "new_examples": n_new,
        "replay_examples": n_replay,
        "replay_fraction_actual": n_replay / total if total else 0.0,
        "replay_tokens": sum(len(ex["input_ids"]) for ex in picked),
        "replay_loss_tokens": sum(sum(1 for lab in ex["labels"][1:] if lab != IGNORE)
                                  for ex in picked),  # positions that take a loss
        "pool_examples": len(pool),
        "unique_replay_examples": min(n_replay, len(pool)),
    }
    return out, counts


class Replay(Strategy):
    """Mix reference examples (``ctx.reference``) into the training data at fraction r."""

    name: ClassVar[str] = "replay"
    family: ClassVar[str] = "replay"
    citation: ClassVar[str] = ("Robins 1995, Catastrophic Forgetting, Rehearsal and "
                               "Pseudorehearsal, https://doi.org/10.1080/09540099550039318")

    class Config(StrategyConfig):
        fraction: float = Field(0.25, gt=0, lt=1)  # share of training examples that are replay

    def train_data(self, data: list[dict], ctx: RunContext) -> list[dict]:
        mixed, counts = mix_replay(data, list(ctx.reference), self.config.fraction, ctx.seed)
        ctx.info[self.name] = {"source": "reference", **counts}
        return mixed
