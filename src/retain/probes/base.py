"""What every probe kind shares: the result record and the probe protocol.

A probe scores one model on one capability with one metric and returns a ``ProbeResult`` with
its sample size and a 95% confidence interval. Results are keyed ``"<probe>.<metric>"``
(``safety.refusal_rate``), the names that summaries, guards and reports use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


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

    @property
    def key(self) -> str:
        return f"{self.probe}.{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Probe(Protocol):
    name: str
    metric: str
    higher_is_better: bool
    capability: str
    kind: str

    def score(self, model, tokenizer, *, batch_size: int = 32, base_model=None) -> ProbeResult:
        """Score ``model``; ``base_model`` is needed only by divergence-from-base probes."""
        ...
