"""What every probe kind shares: the result record and the probe protocol.

A probe scores one model on one capability with one metric and returns a ``ProbeResult`` with
its sample size and a 95% confidence interval. Results are keyed ``"<probe>.<metric>"``
(``safety.refusal_rate``), the names that summaries, guards and reports use. Scoring is split in
two (per-item ``outcomes``, then ``aggregate``) so that processes can share a probe's items.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

# One item's outcome: a plain, picklable record (floats, ints, strings, bools; no tensors),
# e.g. {"answer": "12", "passed": True} or {"sum": 4.2, "count": 17}.
Outcome = dict[str, Any]


@dataclass
class ProbeResult:
    probe: str  # probe name, e.g. "math", "safety", "legal"
    metric: str  # e.g. "accuracy", "refusal_rate", "over_refusal_rate", "ce_nats_per_token"
    value: float
    n: int  # sample size: items (accuracy-type) or tokens/texts (cross-entropy)
    ci_low: float
    ci_high: float
    higher_is_better: bool
    capability: str  # what it measures: "math", ..., or "domain" for the new domain
    kind: str  # "generation", "choice", "perplexity", "kl_to_base"
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few prompt/answer/ok records
    # Every item, in item order, for paired before/after tests (``retain.metrics.paired``):
    # {"prompt", "expected", "answer", "ok"} (ok: a good outcome) for proportion metrics,
    # {"prompt", "sum", "count"} (nats and tokens) for per-token means. Texts trimmed.
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Probe(Protocol):
    """A probe over ``len(probe)`` items (prompts, questions or texts).

    ``score`` must equal ``aggregate(outcomes(..., range(len(probe)), ...))``: processes that each
    compute the outcomes of a share of the items, then aggregate all of them in item order,
    get the result one process would (``retain.probes.shard``)."""

    name: str
    metric: str
    higher_is_better: bool
    capability: str
    kind: str

    def __len__(self) -> int:
        """The number of items."""
        ...

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """The outcome of each item at ``indices``, in that order: plain picklable records (they
        are gathered across processes), each independent of which other items share the call.
        ``base_model`` is needed only by divergence-from-base probes."""
        ...

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        """The result from the outcomes of all items, in item order."""
        ...

    def score(self, model, tokenizer, *, batch_size: int = 32, base_model=None) -> ProbeResult:
        """Score ``model`` on every item; ``base_model`` is needed only by divergence-from-base
        probes."""
        ...


class ScoredFromOutcomes:
    """Mixin for a probe kind: ``score`` is ``aggregate`` of the outcomes of every item."""

    def score(self: Probe, model, tokenizer, *, batch_size: int = 32,
              base_model=None) -> ProbeResult:
        outcomes = self.outcomes(model, tokenizer, range(len(self)), batch_size=batch_size,
                                 base_model=base_model)
        return self.aggregate(outcomes)


def check_outcome_count(probe, outcomes: Sequence[Outcome]) -> None:
    """``aggregate`` needs one outcome per item: a short list would silently shrink ``n``."""
    if len(outcomes) != len(probe):
        raise ValueError(f"probe {probe.name}.{probe.metric}: {len(outcomes)} outcomes for "
                         f"{len(probe)} items")
