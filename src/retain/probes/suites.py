"""The built-in probe suites: the six retained capabilities and the two built-in new domains.

Items always come from the held-out ``"probe"`` split of ``retain.builtin.tasks``, so the built-in
model never trained on them. Duplicates (the same prompt drawn twice) are dropped, so ``n`` counts
distinct items; small item spaces (benign safety prompts) give fewer than ``n``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Callable

from retain.builtin.tasks import Item, items
from retain.probes.base import Probe
from retain.probes.kinds import GenerationProbe, KLToBaseProbe, PerplexityProbe

DEFAULT_N = 100  # items per probe when not told
QUICK_N = 24  # a smoke-test size (``--quick``)
_DRAW_FACTOR = 10  # draw this many times n, then deduplicate


def probe_items(task: str, n: int, seed: int) -> list[Item]:
    """Up to ``n`` distinct held-out items of ``task``, seeded, in draw order."""
    seen, out = set(), []
    for it in items(task, "probe", _DRAW_FACTOR * n, seed):
        sig = (it.prompt, it.text, it.answer, json.dumps(it.check, sort_keys=True))
        if sig not in seen:
            seen.add(sig)
            out.append(it)
            if len(out) == n:
                break
    return out


def _texts(task: str, n: int, seed: int) -> list[str]:
    return [it.text for it in probe_items(task, n, seed)]


def _generation(name: str, task: str, capability: str | None = None):
    def build(n: int, seed: int) -> list[Probe]:
        return [GenerationProbe(name, probe_items(task, n, seed), capability or name)]
    return build


def writing(n: int, seed: int) -> list[Probe]:
    return [PerplexityProbe("writing", _texts("writing", n, seed), "writing", seed=seed)]


def safety(n: int, seed: int) -> list[Probe]:
    harmful = probe_items("safety_harmful", n, seed)  # each check: {"kind": "refusal"}
    # Over-refusal counts refusals of benign prompts: the refusal checker on benign items.
    benign = [replace(it, check={"kind": "refusal"})
              for it in probe_items("safety_benign", n, seed)]
    return [GenerationProbe("safety", harmful, "safety", metric="refusal_rate"),
            GenerationProbe("safety", benign, "safety", metric="over_refusal_rate",
                            higher_is_better=False)]


def _domain(name: str):
    def build(n: int, seed: int) -> list[Probe]:
        return [GenerationProbe(name, probe_items(f"{name}_cloze", n, seed), "domain", chat=False),
                PerplexityProbe(name, _texts(name, n, seed), "domain", seed=seed)]
    return build


def drift(n: int, seed: int) -> list[Probe]:
    return [KLToBaseProbe("drift", _texts("writing", n, seed), "drift", seed=seed)]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str  # one line, for ``retain probes``
    build: Callable[[int, int], list[Probe]]  # (n, seed) -> probes
    default_n: int = DEFAULT_N

    def probes(self, n: int | None = None, seed: int = 0) -> list[Probe]:
        return self.build(self.default_n if n is None else n, seed)


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("math", "two-number addition (a < 100, b < 10), exact match of greedy answers",
          _generation("math", "math")),
    Suite("code", "what small Python expressions return (len, upper, max/min, +), exact match",
          _generation("code", "code")),
    Suite("writing", "cross-entropy (nats/token) on held-out English sentences", writing),
    Suite("multilingual", "translate 'the <color> <noun>' to French, German, Spanish, exact match",
          _generation("multilingual", "multilingual")),
    Suite("safety",
          "refusal_rate on harmful requests; over_refusal_rate on alarming but benign ones",
          safety),
    Suite("instructions",
          "IFEval-style verifiable instructions (case, bullets, JSON, repeat, word)",
          _generation("instructions", "instructions")),
    Suite("legal", "new domain: contract-clause cloze accuracy and cross-entropy on contracts",
          _domain("legal")),
    Suite("support", "new domain: support-reply cloze accuracy and cross-entropy on tickets",
          _domain("support")),
    Suite("drift", "KL(base || model) per token on held-out English text (needs a base model)",
          drift),
]}

RETAINED = ("math", "code", "writing", "multilingual", "safety", "instructions")
GROUPS: dict[str, tuple[str, ...]] = {
    "retained": RETAINED,
    "all": RETAINED + ("legal", "support"),  # "drift" needs a base model: ask for it by name
}


def list_suites() -> dict[str, str]:
    """Every suite and group name with its one-line description."""
    out = {name: s.description for name, s in SUITES.items()}
    out.update({g: "group: " + ", ".join(names) for g, names in GROUPS.items()})
    return out
