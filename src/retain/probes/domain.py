"""The new-domain probes of a user's own data: built from records held out of training.

``domain_probes`` turns held-out JSONL records (``retain.data.load_jsonl_split``) into a
cross-entropy probe on exactly the tokens training takes a loss on (``LabeledCEProbe``) and, when
enough answers are short, an exact-match accuracy probe of greedy answers. ``domain_probe_files``
loads a user's probe files as new-domain probes, so that they count toward ``domain_gain``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from retain.builtin.tasks import Item
from retain.formats import IGNORE, encode_record
from retain.probes import engine
from retain.probes.base import Outcome, Probe, ProbeResult, ScoredFromOutcomes, check_outcome_count
from retain.probes.jsonl import load_jsonl_probe
from retain.probes.kinds import GenerationProbe, probe_result
from retain.probes.stats import bootstrap_ratio_interval

DOMAIN = "domain"  # the capability that domain_gain counts
MIN_ACCURACY_ITEMS = 5  # fewer short-answer records than this: no accuracy probe (too noisy)
SHOWN_CHARS = 300  # report examples keep this much of a prompt / target


def _shorten(text: str | None, limit: int = SHOWN_CHARS) -> str | None:
    return text if text is None or len(text) <= limit else text[:limit] + "…"


def _shown(shape: str, payload: Any) -> tuple[str, str | None]:
    """(prompt, expected) of a record as the report shows it, truncated: a text is all prompt;
    a chat shows its turns before the last assistant turn, and that turn as expected."""
    if shape == "text":
        return _shorten(payload), None
    if shape == "prompt_completion":
        return _shorten(payload[0]), _shorten(payload[1])
    last = max(i for i, m in enumerate(payload) if m["role"] == "assistant")
    context = "\n".join(f"{m['role']}: {m['content']}" for m in payload[:last])
    return _shorten(context), _shorten(payload[last]["content"])


@dataclass
class LabeledCEProbe(ScoredFromOutcomes):
    """Cross-entropy in nats per token (lower is better) on the labeled positions of tokenized
    examples -- the tokens training takes a loss on (the completion, the assistant turns, or every
    token of a text). ``n`` counts examples; the value is token-weighted; the 95% interval is a
    percentile bootstrap over examples (``stats.bootstrap_ratio_interval``), as for perplexity."""

    name: str
    examples: list[dict]  # {"input_ids", "labels"} as retain.data.encode_record gives them
    capability: str = DOMAIN
    shown: list[tuple[str, str | None]] = field(default_factory=list)  # (prompt, expected) each
    metric: str = "ce_nats_per_token"
    higher_is_better: bool = False
    seed: int = 0  # of the bootstrap
    kind: ClassVar[str] = "labeled_ce"

    def __len__(self) -> int:
        return len(self.examples)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """Per example at ``indices`` (in that order): {"sum": nats, "count": scored tokens}."""
        limit = engine.max_positions(model)
        chosen = [self.examples[i] for i in indices]
        seqs = [e["input_ids"][:limit] if limit else e["input_ids"] for e in chosen]
        logps = engine.token_logprobs(model, tokenizer, seqs, batch_size=batch_size)
        out = []
        for e, seq, lp in zip(chosen, seqs, logps):
            # lp[j] is log p(id j+1 | ids 0..j), so labels[1:] line up with lp: (L-1,) each.
            scored = torch.tensor([lab != IGNORE for lab in e["labels"][1:len(seq)]],
                                  dtype=torch.bool)
            out.append({"sum": float(-lp[scored].sum()), "count": int(scored.sum())})
        return out

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        """The result from every example's outcome, in example order."""
        check_outcome_count(self, outcomes)
        sums = [float(o["sum"]) for o in outcomes]
        counts = [int(o["count"]) for o in outcomes]
        value = sum(sums) / max(sum(counts), 1)
        ci = bootstrap_ratio_interval(sums, counts, seed=self.seed)
        examples = [{"prompt": p, "expected": x, "answer": None, "ok": None,
                     "value": s / max(c, 1), "sum": s, "count": c}
                    for (p, x), s, c in zip(self.shown, sums, counts)]
        return probe_result(self, value, len(outcomes), ci, examples)


def _qa(shape: str, payload: Any) -> tuple[str, str] | None:
    """(prompt, answer) of a single-turn record: prompt/completion, or a chat of exactly one user
    turn then one assistant turn. A system turn is skipped: ``GenerationProbe`` formats a user
    prompt alone, and the model trained with the system turn in context."""
    if shape == "prompt_completion":
        return payload
    if shape == "messages" and [m["role"] for m in payload] == ["user", "assistant"]:
        prompt, answer = payload[0]["content"], payload[1]["content"]
        if prompt.strip() and answer.strip():
            return prompt, answer
    return None


def domain_probes(name: str, records: list[tuple[str, Any]], tokenizer, *, seq_len: int,
                  seed: int, max_answer_tokens: int = 32) -> list[Probe]:
    """New-domain probes named ``name`` from held-out (shape, payload) records: cross-entropy on
    the trained-on tokens (records encoded as training encodes them, cut to ``seq_len``; those
    left with no labeled token are dropped) and, with at least 5 single-turn records whose answer
    has <= ``max_answer_tokens`` tokens, an exact-match accuracy of greedy answers. Either is
    omitted when no record qualifies; no records give no probes."""
    encoded = [(encode_record(tokenizer, s, p, seq_len), _shown(s, p)) for s, p in records]
    kept = [(ex, shown) for ex, shown in encoded if ex is not None]
    probes: list[Probe] = []
    if kept:
        probes.append(LabeledCEProbe(name, [ex for ex, _ in kept], shown=[s for _, s in kept],
                                     seed=seed))
    items = []
    for i, (shape, payload) in enumerate(records):
        qa = _qa(shape, payload)
        if qa and len(tokenizer(qa[1], add_special_tokens=False)["input_ids"]) <= max_answer_tokens:
            items.append(Item(key=f"{name}:{i}", prompt=qa[0], answer=qa[1]))
    if len(items) >= MIN_ACCURACY_ITEMS:
        probes.append(GenerationProbe(name, items, capability=DOMAIN))
    return probes


def domain_probe_files(paths: Sequence[str | Path], n: int | None = None,
                       seed: int = 0) -> list[Probe]:
    """The user's own new-domain probe files (``retain.probes.jsonl`` shapes, each named after its
    file stem; ``n`` items each, None: all), with capability "domain" so they count toward
    ``domain_gain``."""
    probes = []
    for path in paths:
        probe = load_jsonl_probe(path, n=n, seed=seed)
        probe.capability = DOMAIN
        probes.append(probe)
    return probes


__all__ = ["LabeledCEProbe", "domain_probes", "domain_probe_files", "MIN_ACCURACY_ITEMS"]
