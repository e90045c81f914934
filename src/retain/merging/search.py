"""Search merges in memory: score a grid of merge coefficients with a user-supplied
``score_fn(model) -> {name: score}`` (higher is better), loading each grid point's weights into one
model object in place (nothing written to disk), and pick the coefficient that keeps the most
retained capability while keeping a stated share of the new-domain gain. Also greedy model soup:
Model soups (Wortsman et al., 2022), https://arxiv.org/abs/2203.05482, recipe "greedy soup".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from retain.errors import UserError
from retain.merging.engine import merge_state_dicts
from retain.merging.linear import interpolate, weighted_average

ScoreFn = Callable[[torch.nn.Module], dict[str, float]]
DEFAULT_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class CurvePoint:
    coefficient: float
    scores: dict[str, float]


@torch.no_grad()
def load_in_place(model: torch.nn.Module, tensors: Callable[[str], torch.Tensor | None]) -> None:
    """Copy ``tensors(name)`` into each state-dict entry of ``model`` (None: leave it)."""
    for name, param in model.state_dict().items():  # entries share storage with the model
        t = tensors(name)
        if t is not None:
            param.copy_(t.to(param.dtype))


def _check_names(model: torch.nn.Module, *states: dict[str, torch.Tensor]) -> None:
    names = set(model.state_dict())
    for s in states:
        missing = [n for n in s if n not in names]
        if missing:
            raise UserError(f"tensor {missing[0]!r} of a state dict is not in the model")


def interpolation_curve(model: torch.nn.Module, base: dict[str, torch.Tensor],
                        finetune: dict[str, torch.Tensor], score_fn: ScoreFn,
                        alphas: Sequence[float] = DEFAULT_ALPHAS) -> list[CurvePoint]:
    """Score WiSE-FT interpolations (alpha=0: base, 1: fine-tune). The model is left holding the
    fine-tune's weights."""
    _check_names(model, base, finetune)
    points = []
    for alpha in alphas:
        load_in_place(model, lambda n: interpolate(base[n].float(), finetune[n].float(), alpha)
                      if n in base and base[n].is_floating_point() else None)
        points.append(CurvePoint(float(alpha), dict(score_fn(model))))
    load_in_place(model, finetune.get)
    return points


def method_curve(model: torch.nn.Module, score_fn: ScoreFn, method: str,
                 base: dict[str, torch.Tensor] | None, models: Sequence[dict[str, torch.Tensor]],
                 param: str, values: Sequence[float], **options) -> list[CurvePoint]:
    """Score any merge method over a grid of one option (e.g. ties, param="scale"). Each point
    is merged in memory (one merged copy at a time) and copied into ``model``."""
    points = []
    for v in values:
        merged = merge_state_dicts(method, base, models, **{**options, param: v})
        _check_names(model, merged)
        load_in_place(model, merged.get)
        del merged
        points.append(CurvePoint(float(v), dict(score_fn(model))))
    return points


@dataclass(frozen=True)
class Pick:
    """The chosen point, why, and the numbers behind it."""

    point: CurvePoint | None
    retained: float | None  # mean retained score of the chosen point
    gain_share: float | None  # its new-domain gain / the fine-tune's gain
    reason: str


def pick_coefficient(points: Sequence[CurvePoint], new_domain: str,
                     base_scores: dict[str, float], finetune_scores: dict[str, float], *,
                     min_gain_share: float = 0.8, retained: Sequence[str] | None = None) -> Pick:
    """Among points whose new-domain gain over the base is at least ``min_gain_share`` of the
    fine-tune's gain, the one with the highest mean retained score (ties: more gain).
    ``retained`` defaults to every score name except ``new_domain``."""
    keys = list(retained) if retained is not None else [k for k in base_scores if k != new_domain]
    full_gain = finetune_scores[new_domain] - base_scores[new_domain]
    best: tuple[float, float, CurvePoint] | None = None
    for p in points:
        gain = p.scores[new_domain] - base_scores[new_domain]
        if gain < min_gain_share * full_gain - 1e-9:  # tolerance: scores are often 0.1-steps
            continue
        kept = sum(p.scores[k] for k in keys) / len(keys) if keys else 0.0
        if best is None or (kept, gain) > (best[0], best[1]):
            best = (kept, gain, p)
    if best is None:
        return Pick(None, None, None, f"no point keeps {min_gain_share:.0%} of the "
                                       f"new-domain gain ({full_gain:+.3f})")
    kept, gain, p = best
    share = gain / full_gain if full_gain else None
    return Pick(p, kept, share, f"coefficient {p.coefficient:g} keeps "
                f"{'all' if share is None else f'{share:.0%}'} of the new-domain gain "
                f"with mean retained score {kept:.3f}")


@dataclass
class SoupResult:
    selected: list[int]  # indices into the candidates, in the order they were added
    individual: list[float]  # each candidate's own objective
    objective: float  # the final soup's
    history: list[tuple[int, float, bool]] = field(default_factory=list)  # (index, score, kept)


def greedy_soup(model: torch.nn.Module, candidates: Sequence[dict[str, torch.Tensor]],
                score_fn: ScoreFn, objective: str | Callable[[dict[str, float]], float]
                ) -> SoupResult:
    """Greedy soup: sort candidates by their own score, start from the best, and add each next
    one only if the uniform average with it scores at least as well (the paper's >=). The model is
    left holding the final soup."""
    if not candidates:
        raise UserError("greedy soup needs at least one candidate")
    _check_names(model, *candidates)
    value = objective if callable(objective) else (lambda s: s[objective])

    def soup_score(indices: list[int]) -> float:
        load_in_place(model, lambda n: weighted_average(
            [candidates[i][n].float() for i in indices], [1.0] * len(indices))
            if n in candidates[0] and candidates[0][n].is_floating_point() else None)
        return float(value(score_fn(model)))

    individual = [soup_score([i]) for i in range(len(candidates))]
    order = sorted(range(len(candidates)), key=lambda i: -individual[i])
    selected, best = [order[0]], individual[order[0]]
    history = [(order[0], best, True)]
    for i in order[1:]:
        score = soup_score(selected + [i])
        kept = score >= best
        history.append((i, score, kept))
        if kept:
            selected.append(i)
            best = score
    soup_score(selected)  # leave the model holding the chosen soup
    return SoupResult(selected, individual, best, history)


def plot_curve(points: Sequence[CurvePoint], path: str | Path, *, new_domain: str | None = None,
               xlabel: str = "alpha (0 = base, 1 = fine-tune)") -> Path:
    """A line per score name against the coefficient (the new domain drawn thicker); PNG/SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [p.coefficient for p in points]
    for key in points[0].scores:
        ax.plot(xs, [p.scores[key] for p in points], marker="o", label=key,
                linewidth=3 if key == new_domain else 1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (higher is better)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
