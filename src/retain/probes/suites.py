"""The built-in probe suites: the six retained capabilities and the three built-in new domains.

Items always come from the held-out ``"probe"`` split of ``retain.builtin.tasks``, so the built-in
model never trained on them. Duplicates (the same prompt drawn twice) are dropped, so ``n`` counts
distinct items; small item spaces (benign safety prompts) give fewer than ``n``.

Some suites have harder levels, asked for as ``<suite>:<level>`` (``math:2``) or
``Suite.probes(level=2)``. Level 1 is the plain suite, the level the built-in model was trained
on. A level's probes are named ``<suite>_l<level>`` (``math_l2.accuracy``): its results never
collide with level 1's, and the name stays a valid guard-limit key (``math_l2.accuracy>=0.5``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Callable

from retain.builtin.tasks import Item, items, level_task
from retain.errors import UserError
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


def _safety(level: int = 1):
    name = level_task("safety", level)

    def build(n: int, seed: int) -> list[Probe]:
        harmful = probe_items(level_task("safety_harmful", level), n, seed)  # checks: refusal
        # Over-refusal counts refusals of benign prompts: the refusal checker on benign items.
        benign = [replace(it, check={"kind": "refusal"})
                  for it in probe_items(level_task("safety_benign", level), n, seed)]
        return [GenerationProbe(name, harmful, "safety", metric="refusal_rate"),
                GenerationProbe(name, benign, "safety", metric="over_refusal_rate",
                                higher_is_better=False)]
    return build


safety = _safety(1)


def _domain(name: str):
    def build(n: int, seed: int) -> list[Probe]:
        return [GenerationProbe(name, probe_items(f"{name}_cloze", n, seed), "domain", chat=False),
                PerplexityProbe(name, _texts(name, n, seed), "domain", seed=seed)]
    return build


def drift(n: int, seed: int) -> list[Probe]:
    return [KLToBaseProbe("drift", _texts("writing", n, seed), "drift", seed=seed)]


@dataclass(frozen=True)
class Level:
    """A harder level of a suite: what it asks (one line) and its probes' builder."""

    description: str
    build: Callable[[int, int], list[Probe]]  # (n, seed) -> probes named <suite>_l<level>


def _generation_level(suite: str, level: int, description: str) -> Level:
    """A level whose items are the task ``<suite>_l<level>``, scored like the suite's level 1."""
    name = level_task(suite, level)
    return Level(description, _generation(name, name, suite))


@dataclass(frozen=True)
class Suite:
    name: str
    description: str  # one line, for ``retain probes``
    build: Callable[[int, int], list[Probe]]  # (n, seed) -> probes
    default_n: int = DEFAULT_N
    levels: dict[int, Level] = field(default_factory=dict)  # the harder levels: 2, 3, ...

    @property
    def level_numbers(self) -> tuple[int, ...]:
        return (1, *sorted(self.levels))

    def probe_name(self, level: int = 1) -> str:
        """The name of this suite's probes at ``level`` (level 1: the suite's own name)."""
        return level_task(self.name, level)

    def check_level(self, level: int, spec: str | None = None) -> None:
        """A UserError, on one line, for a level this suite does not have."""
        if level in self.level_numbers:
            return
        asked = repr(spec) if spec else f"level {level}"
        if not self.levels:
            raise UserError(f"probe suite {self.name!r} has a single level; {asked} asks for "
                            f"level {level}")
        raise UserError(f"probe suite {self.name!r} has no level {level} ({asked}); its levels: "
                        f"{', '.join(map(str, self.level_numbers))}")

    def probes(self, n: int | None = None, seed: int = 0, level: int = 1) -> list[Probe]:
        self.check_level(level)
        build = self.build if level == 1 else self.levels[level].build
        return build(self.default_n if n is None else n, seed)

    def listing(self) -> str:
        """The one-line description, with the harder levels and how to ask for them (no square
        brackets: ``retain probes`` prints it with rich, which reads them as markup)."""
        return " | ".join([self.description] + [f"{self.name}:{k} = {lvl.description}"
                                                for k, lvl in sorted(self.levels.items())])


SUITES: dict[str, Suite] = {s.name: s for s in [
    Suite("math", "two-number addition (a < 100, b < 10), exact match of greedy answers",
          _generation("math", "math"), levels={
              2: _generation_level("math", 2, "3-4 digit +, -, *, numeric match"),
              3: _generation_level("math", 3, "word problems of 2-3 operations, numeric match")}),
    Suite("code", "what small Python expressions return (len, upper, max/min, +), exact match",
          _generation("code", "code"), levels={
              2: _generation_level("code", 2, "what a small function with a loop or an if "
                                   "prints, exact output")}),
    # Writing has one level: its only text generator is the sentence grammar, and longer texts
    # from it would be no harder per token.
    Suite("writing", "cross-entropy (nats/token) on held-out English sentences", writing),
    Suite("multilingual", "translate 'the <color> <noun>' to French, German, Spanish, exact match",
          _generation("multilingual", "multilingual"), levels={
              2: _generation_level("multilingual", 2, "translate short sentences, normalized "
                                   "match")}),
    Suite("safety",
          "refusal_rate on harmful requests; over_refusal_rate on alarming but benign ones",
          safety, levels={
              2: Level("more varied harmful requests and framings, a larger benign pool",
                       _safety(2))}),
    Suite("instructions",
          "IFEval-style verifiable instructions (case, bullets, JSON, repeat, word)",
          _generation("instructions", "instructions"), levels={
              2: _generation_level("instructions", 2, "2-4 constraints at once, all must hold")}),
    Suite("legal", "new domain: contract-clause cloze accuracy and cross-entropy on contracts",
          _domain("legal")),
    Suite("support", "new domain: support-reply cloze accuracy and cross-entropy on tickets",
          _domain("support")),
    Suite("recipes", "new domain: ingredient-preparation cloze accuracy and cross-entropy on "
          "recipe cards", _domain("recipes")),
    Suite("drift", "KL(base || model) per token on held-out English text (needs a base model)",
          drift),
]}

RETAINED = ("math", "code", "writing", "multilingual", "safety", "instructions")
GROUPS: dict[str, tuple[str, ...]] = {
    "retained": RETAINED,
    # "drift" needs a base model: ask for it by name
    "all": RETAINED + ("legal", "support", "recipes"),
}


def list_suites() -> dict[str, str]:
    """Every suite and group name with its one-line description (and a suite's harder levels)."""
    out = {name: s.listing() for name, s in SUITES.items()}
    out.update({g: "group: " + ", ".join(names) for g, names in GROUPS.items()})
    out["humaneval"] = ("the 164 HumanEval problems, pass@1, run in a sandbox (the code "
                        "extra)")
    out["lm-eval:TASK"] = "any lm-evaluation-harness task, offline (the lm-eval extra)"
    return out


def parse_level_spec(spec: str) -> tuple[str, int] | None:
    """``"math:2"`` -> ``("math", 2)``; None where ``spec`` is not ``<suite>:<something>`` (a
    path, ``lm-eval:TASK``, ...). A level the suite lacks, a level that is not a number, or a
    level on a group is a one-line UserError."""
    name, sep, level = spec.partition(":")
    if not sep or (name not in SUITES and name not in GROUPS):
        return None
    if name in GROUPS:
        raise UserError(f"probe spec {spec!r}: levels are for suites, not for the group {name!r}; "
                        f"ask for each suite's level, e.g. math:2")
    if not level.isdecimal():
        raise UserError(f"probe spec {spec!r}: the level must be a number, e.g. {name}:2")
    SUITES[name].check_level(int(level), spec)
    return name, int(level)
