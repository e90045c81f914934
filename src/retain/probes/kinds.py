"""The four probe kinds: greedy generation + checker, multiple choice by log-likelihood,
perplexity (cross-entropy per token) and KL divergence to the base model.

Each kind is a small dataclass holding its items; ``outcomes(model, tokenizer, indices)`` runs
the batched engine on some items, ``aggregate`` turns every item's outcome into one
``ProbeResult`` (n, a 95% interval, a few examples), and ``score`` does both on every item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from retain.builtin.tasks import Item
from retain import formats
from retain.probes import engine, loglik
from retain.probes.base import Outcome, ProbeResult, ScoredFromOutcomes, check_outcome_count
from retain.probes.checkers import check
from retain.probes.stats import bootstrap_ratio_interval, wilson_interval

N_EXAMPLES = 5  # examples kept per result, for the HTML report


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice question: ``choices[label]`` is right. Choices are appended to the
    formatted prompt as written (give them a leading space if the format needs one)."""

    prompt: str
    choices: tuple[str, ...]
    label: int
    key: str = ""


ITEM_TEXT_CHARS = 300  # prompts and answers kept per item in results (paired tests, lost items)
_ITEM_KEYS = ("prompt", "expected", "answer", "ok", "sum", "count")


def _trim(x: Any) -> Any:
    return x[:ITEM_TEXT_CHARS] if isinstance(x, str) else x


def probe_result(probe, value: float, n: int, ci: tuple[float, float], examples: list) -> ProbeResult:
    """The result; ``examples`` holds one record per item, in item order: the first few are
    shown as examples, all of them (trimmed) are kept as ``items`` for paired tests."""
    items = [{k: _trim(e[k]) for k in _ITEM_KEYS if k in e} for e in examples]
    return ProbeResult(probe=probe.name, metric=probe.metric, value=float(value), n=n,
                       ci_low=float(ci[0]), ci_high=float(ci[1]),
                       higher_is_better=probe.higher_is_better, capability=probe.capability,
                       kind=probe.kind, examples=examples[:N_EXAMPLES], items=items)


@dataclass
class GenerationProbe(ScoredFromOutcomes):
    """Greedy answers checked item by item; ``value`` is the share of items whose checker
    passes (``accuracy``, or e.g. ``refusal_rate`` with refusal checks).

    Each item's checker is its ``check`` spec (with ``answer`` filled in), else a normalized exact
    match on ``answer``. ``chat=False`` feeds prompts as raw text (cloze). ``max_new_tokens=None``
    sizes the budget from the longest expected answer (``engine.generation_budget``), at least
    ``engine.answer_floor`` (room for a chat model's sentence), at most ``budget_cap``. Answers
    are cut at ``engine.STOP_STRINGS`` (the next turn of a plain-format conversation)."""

    name: str
    items: list[Item]
    capability: str
    metric: str = "accuracy"
    higher_is_better: bool = True
    chat: bool = True
    max_new_tokens: int | None = None
    budget_cap: int = 256
    kind: ClassVar[str] = "generation"

    def spec(self, item: Item) -> dict[str, Any]:
        return {"kind": "exact", "answer": item.answer, **(item.check or {})}

    def budget(self, tokenizer) -> int:
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return engine.generation_budget(tokenizer, [it.answer for it in self.items],
                                        floor=engine.answer_floor(tokenizer, self.chat),
                                        cap=self.budget_cap)

    def __len__(self) -> int:
        return len(self.items)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"answer": str, "passed": bool}`` per item at ``indices``."""
        items = [self.items[i] for i in indices]
        prompts = formats.encode_prompts(tokenizer, [it.prompt for it in items], self.chat)
        # The budget comes from every item's answer, not this share's: a share's answers are
        # then those that one process scoring every item would give.
        answers = engine.generate(model, tokenizer, prompts, max_new_tokens=self.budget(tokenizer),
                                  batch_size=batch_size)
        return [{"answer": a, "passed": bool(check(a, self.spec(it)))}
                for a, it in zip(answers, items)]

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        check_outcome_count(self, outcomes)
        passed = [o["passed"] for o in outcomes]
        k, n = sum(passed), len(passed)
        # "ok" in an example means a good outcome: for a lower-is-better rate (over-refusal)
        # that is the checker failing.
        examples = [{"prompt": it.prompt, "expected": it.answer, "answer": o["answer"],
                     "ok": o["passed"] == self.higher_is_better}
                    for it, o in zip(self.items, outcomes)]
        return probe_result(self, k / n if n else 0.0, n, wilson_interval(k, n), examples)


@dataclass
class ChoiceProbe(ScoredFromOutcomes):
    """Multiple choice: the choice with the highest summed log-likelihood given the prompt is the
    model's answer; ``value`` is accuracy."""

    name: str
    items: list[ChoiceItem]
    capability: str
    metric: str = "accuracy"
    higher_is_better: bool = True
    chat: bool = True
    kind: ClassVar[str] = "choice"

    def __len__(self) -> int:
        return len(self.items)

    def choice_scores(self, model, tokenizer, indices: Sequence[int], *,
                      batch_size: int = 32) -> list[list[float]]:
        """Per item at ``indices``, each choice's summed log-likelihood (nats) given the prompt."""
        items = [self.items[i] for i in indices]
        contexts = formats.encode_prompts(tokenizer, [it.prompt for it in items], self.chat)
        flat = iter(formats.encode_pieces(tokenizer, [c for it in items for c in it.choices]))
        conts = [[next(flat) for _ in it.choices] for it in items]
        return loglik.continuation_logprobs(model, tokenizer, contexts, conts,
                                            batch_size=batch_size)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"pred": int}`` per item at ``indices``: the index of the most likely choice."""
        return [{"pred": max(range(len(s)), key=s.__getitem__)}
                for s in self.choice_scores(model, tokenizer, indices, batch_size=batch_size)]

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        check_outcome_count(self, outcomes)
        passed = [o["pred"] == it.label for it, o in zip(self.items, outcomes)]
        examples = [{"prompt": it.prompt, "expected": it.choices[it.label],
                     "answer": it.choices[o["pred"]], "ok": ok}
                    for it, o, ok in zip(self.items, outcomes, passed)]
        k, n = sum(passed), len(passed)
        return probe_result(self, k / n if n else 0.0, n, wilson_interval(k, n), examples)


def _text_ids(model, tokenizer, texts: list[str]) -> list[list[int]]:
    """Scored ids of each text, cut to the model's context length."""
    limit = engine.max_positions(model)
    seqs = [formats.encode_scored_text(tokenizer, t) for t in texts]
    return [s[:limit] if limit else s for s in seqs]


def _per_text_outcomes(per_token: list) -> list[Outcome]:
    """``{"sum": float, "count": int}`` per text from its (L-1,) per-token values."""
    return [{"sum": float(v.sum()), "count": int(v.numel())} for v in per_token]


def _per_text_mean_result(probe, texts: list[str], outcomes: list[Outcome],
                          seed: int) -> ProbeResult:
    """Token-weighted mean over all texts; 95% interval by bootstrap over texts."""
    check_outcome_count(probe, outcomes)
    sums = [o["sum"] for o in outcomes]
    counts = [o["count"] for o in outcomes]
    value = sum(sums) / max(sum(counts), 1)
    ci = bootstrap_ratio_interval(sums, counts, seed=seed)
    examples = [{"prompt": t, "expected": None, "answer": None, "ok": None,
                 "value": s / max(c, 1), "sum": s, "count": c}
                for t, s, c in zip(texts, sums, counts)]
    return probe_result(probe, value, len(texts), ci, examples)


@dataclass
class PerplexityProbe(ScoredFromOutcomes):
    """Cross-entropy of texts in nats per token (lower is better); ``n`` counts texts.

    Every text opens with a BOS (EOS for GPT-2-style tokenizers) so that all of its tokens are
    scored; texts longer than the model's context are cut to it. The 95% interval is a
    percentile bootstrap over texts (``stats.bootstrap_ratio_interval``)."""

    name: str
    texts: list[str]
    capability: str
    metric: str = "ce_nats_per_token"
    higher_is_better: bool = False
    seed: int = 0  # of the bootstrap
    kind: ClassVar[str] = "perplexity"

    def __len__(self) -> int:
        return len(self.texts)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"sum": nats, "count": tokens}`` per text at ``indices``."""
        seqs = _text_ids(model, tokenizer, [self.texts[i] for i in indices])
        nll = [-lp for lp in engine.token_logprobs(model, tokenizer, seqs, batch_size=batch_size)]
        return _per_text_outcomes(nll)

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        return _per_text_mean_result(self, self.texts, outcomes, self.seed)


@dataclass
class KLToBaseProbe(ScoredFromOutcomes):
    """Mean per-token KL(base || model) of next-token distributions on texts, in nats (lower is
    better; 0 for the base itself): how far the model drifted from the base. Needs
    ``base_model`` with the same tokenizer. Interval: bootstrap over texts."""

    name: str
    texts: list[str]
    capability: str
    metric: str = "kl_to_base_nats"
    higher_is_better: bool = False
    seed: int = 0
    kind: ClassVar[str] = "kl_to_base"
    needs_base: ClassVar[bool] = True

    def __len__(self) -> int:
        return len(self.texts)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"sum": nats, "count": tokens}`` of per-token KL per text at ``indices``."""
        if base_model is None:  # raised on every process alike, even one with no items
            raise ValueError(f"probe {self.name!r} ({self.kind}) needs base_model")
        seqs = _text_ids(model, tokenizer, [self.texts[i] for i in indices])
        kl = engine.token_kl(model, base_model, tokenizer, seqs, batch_size=batch_size)
        return _per_text_outcomes(kl)

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        return _per_text_mean_result(self, self.texts, outcomes, self.seed)


PROBE_KINDS = {cls.kind: cls for cls in (GenerationProbe, ChoiceProbe, PerplexityProbe,
                                         KLToBaseProbe)}

__all__ = ["ChoiceItem", "GenerationProbe", "ChoiceProbe", "PerplexityProbe", "KLToBaseProbe",
           "PROBE_KINDS", "N_EXAMPLES"]
