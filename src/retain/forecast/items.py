"""Per-item signals for the item-level forecast: a number per probe item that moves smoothly while
the item's pass/fail outcome flips, so a trend over a few pilot steps can say *which* items go.

    generation item   mean log-probability per token of its reference answer given the prompt
                      (for a refusal item: the canonical refusal; for a math item: the answer)
    choice item       margin: log-probability of the right choice minus the best wrong one

Higher is better for every signal (the item's reference is the good outcome), so a falling
signal predicts a lost item; for a lower-is-better rate (over-refusal) the reference answer is
the helpful one, whose likelihood falling is the item being lost too. Other kinds (lm-eval,
HumanEval) have no signal here and get no item forecast; nor do perplexity texts, which have no
pass/fail outcome to lose.
"""

from __future__ import annotations

from typing import Sequence

from retain import formats
from retain.probes import engine, loglik


def supports(probe) -> bool:
    """Whether ``probe`` has a per-item signal."""
    from retain.probes.kinds import ChoiceProbe, GenerationProbe

    if isinstance(probe, GenerationProbe):
        return all(isinstance(it.answer, str) and it.answer for it in probe.items)
    return isinstance(probe, ChoiceProbe)


def signals(model, tokenizer, probe, *, batch_size: int = 32) -> list[float]:
    """One signal per item of ``probe`` (module doc), in item order; the model in eval mode,
    without gradients, for the call (its mode restored after)."""
    with engine.inference_mode(model):
        return _signals(model, tokenizer, probe, batch_size)


def _signals(model, tokenizer, probe, batch_size: int) -> list[float]:
    from retain.probes.kinds import ChoiceProbe, GenerationProbe

    idx = list(range(len(probe)))
    if isinstance(probe, ChoiceProbe):
        scores = probe.choice_scores(model, tokenizer, idx, batch_size=batch_size)
        return [s[it.label] - max(v for j, v in enumerate(s) if j != it.label)
                if len(s) > 1 else s[0] for it, s in zip(probe.items, scores)]
    if isinstance(probe, GenerationProbe):
        contexts = formats.encode_prompts(tokenizer, [it.prompt for it in probe.items], probe.chat)
        answers = formats.encode_pieces(tokenizer, [it.answer for it in probe.items])
        lps = loglik.continuation_logprobs(model, tokenizer, contexts, [[a] for a in answers],
                                           batch_size=batch_size)
        return [lp[0] / max(len(a), 1) for lp, a in zip(lps, answers)]
    raise ValueError(f"probe {probe.name}: no per-item signal for its kind")


def slopes(zs: Sequence[float], start: Sequence[float],
           traces: Sequence[Sequence[float]]) -> list[float]:
    """Per item, the least-squares ``b`` of ``signal - start = b * z`` over the pilot points
    (``z``: the capability law's axis at each point, ``r**beta * S**alpha``; ``traces[j][i]``:
    item i's signal at point j)."""
    zz = sum(z * z for z in zs) or 1.0
    return [sum(z * (tr[i] - start[i]) for z, tr in zip(zs, traces)) / zz
            for i in range(len(start))]
