"""The strategy registry and the one place a run's strategy list is validated.

Adding a strategy: write its module (a ``Strategy`` subclass with its ``Config``) and add one line
to ``STRATEGIES``. ``build_strategies`` turns config specs into instances, validating each option
with the strategy's pydantic config and refusing combinations that cannot work together.
Hooks run in list order (``prepare``, then ``train_data``, then ``data_ready`` on the data every
``train_data`` made (``base.training_data``), then per step ``penalty`` summed, then ``finalize``);
``tests/test_run.py`` checks the order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.distill import Distill
from retain.strategies.ewc import EWC
from retain.strategies.freeze import Freeze
from retain.strategies.full import FullFineTune
from retain.strategies.l2sp import L2SP
from retain.strategies.lora import LoRA
from retain.strategies.mas import MAS
from retain.strategies.peft_methods import IA3, OSF, LoHa, LoKr, PrefixTuning, PromptTuning
from retain.strategies.replay import Replay
from retain.strategies.self_replay import SelfReplay
from retain.strategies.wise_ft import WiseFT, check_order

STRATEGIES: dict[str, type[Strategy]] = {
    "full": FullFineTune,  # the baseline
    # parameter-efficient: train few (new or selected) weights, freeze the rest
    "lora": LoRA,
    "ia3": IA3,
    "loha": LoHa,
    "lokr": LoKr,
    "osf": OSF,
    "prompt_tuning": PromptTuning,
    "prefix_tuning": PrefixTuning,
    "freeze": Freeze,
    # regularization: a penalty that holds the weights or the outputs near the base
    "ewc": EWC,
    "mas": MAS,
    "l2sp": L2SP,
    "distill": Distill,
    # replay: mix data of the old capabilities into training
    "replay": Replay,
    "self_replay": SelfReplay,
    # merging: combine the trained weights with the base after training
    "wise_ft": WiseFT,
}

__all__ = ["STRATEGIES", "RunContext", "Strategy", "StrategyConfig", "build_strategies",
           "check_compatible", "describe", "strategy_label"]


def _one_line(err: ValidationError, name: str) -> str:
    e = err.errors()[0]
    where = ".".join(str(x) for x in e["loc"]) or "config"
    if e["type"] == "extra_forbidden":
        known = ", ".join(STRATEGIES[name].Config.model_fields) or "none"
        return f"strategy {name!r}: unknown option {where!r} (known: {known})"
    msg = e["msg"].removeprefix("Value error, ")
    return f"strategy {name!r}: option {where!r}: {msg}" if e["loc"] else f"strategy {name!r}: {msg}"


def build_strategies(specs: Sequence[Mapping[str, Any] | str]) -> list[Strategy]:
    """Instances for specs like ``[{"name": "lora", "r": 16}, "replay"]`` (a bare string = the
    defaults), in order. Unknown names/options and incompatible combinations raise UserError."""
    out: list[Strategy] = []
    for spec in specs:
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise UserError(f"a strategy needs a name, e.g. {{name: lora}}; got {spec!r}")
        opts = dict(spec)
        name = opts.pop("name")
        if name not in STRATEGIES:
            raise UserError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
        cls = STRATEGIES[name]
        try:
            out.append(cls(cls.Config(**opts)))
        except ValidationError as e:
            raise UserError(_one_line(e, name)) from None
    check_compatible(out)
    return out


def check_compatible(strategies: Sequence[Strategy]) -> None:
    """Refuse combinations that contradict each other, before any work is done."""
    names = [s.name for s in strategies]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise UserError(f"strategy {dups[0]!r} is listed twice; list each strategy once")
    peft = [s.name for s in strategies if s.family == "peft"]
    if len(peft) > 1:
        raise UserError(f"strategies {' and '.join(peft)} both wrap the model in adapters; pick one")
    check_order(strategies)  # merging strategies last; none after prompt-based PEFT
    if peft:
        first_peft = names.index(peft[0])
        early = [s.name for s in strategies[:first_peft] if s.family == "regularization"]
        if early:
            raise UserError(f"{early[0]!r} is listed before {peft[0]!r}: it would anchor the "
                            f"weights that {peft[0]!r} then wraps; list {peft[0]!r} first")
    baseline = [s.name for s in strategies if s.family == "baseline"]
    if baseline and peft:
        raise UserError(f"{baseline[0]!r} trains every weight but {peft[0]!r} freezes them; "
                        "pick one")


def strategy_label(strategies: Sequence[Strategy]) -> str:
    """How a run is named in tables: ``"lora+replay"``; no strategy at all is ``"full"``."""
    return "+".join(s.name for s in strategies) or "full"


def describe(strategies: Sequence[Strategy]) -> list[dict[str, Any]]:
    """results.json's ``strategies``: name, family, citation and config of each, in order."""
    return [{"name": s.name, "family": s.family, "citation": s.citation,
             "config": s.config.model_dump(mode="json")} for s in strategies]
