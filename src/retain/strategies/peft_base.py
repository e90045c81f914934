"""The shape every PEFT method shares, as in ``peft`` itself: the method's options -> its peft
config -> ``get_peft_model``. A method (``lora.py``, ``peft_methods.py``) writes only its options
and ``peft_config``; ``PeftStrategy`` does the rest once: seeding the adapter's initial values,
wrapping (the base weights stay bit-identical and frozen; peft's errors become one-line
UserErrors), reporting the trainable parameters, and at ``finalize`` merge-and-unload.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy

Targets = list[str] | None  # module names (suffix match, as peft does); None: peft's default
Seeding = Literal["fork", "global", "none"]


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _matches(module_name: str, key: str) -> bool:
    """peft's rule for a list of target names: the full name, or its last dotted parts."""
    return module_name == key or module_name.endswith("." + key)


def _default_targets(method: str, model: torch.nn.Module) -> list[str]:
    """peft's per-architecture default targets for ``method`` ("loha", "lokr", "osf")."""
    from peft.utils import constants

    table = getattr(constants, f"TRANSFORMERS_MODELS_TO_{method.upper()}_TARGET_MODULES_MAPPING")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in table:
        raise UserError(f"{method}: no default target modules for model type {model_type!r}; "
                        "set target_modules (names of nn.Linear layers, e.g. q_proj, v_proj)")
    return list(table[model_type])


def refuse_wrapped(method: str, model: torch.nn.Module) -> None:
    """One PEFT method per model: a UserError if ``model`` is a PeftModel already."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise UserError(f"{method}: the model is already wrapped by a PEFT method; list one only")


def linear_targets(method: str, model: torch.nn.Module, targets: Targets) -> list[str]:
    """The target names for a method that peft supports on ``nn.Linear`` only (LoHa, LoKr, OSF):
    a clear UserError for GPT-2-style ``Conv1D`` layers or names that match nothing."""
    refuse_wrapped(method, model)
    names = list(targets) if targets is not None else _default_targets(method, model)
    matched = {n: m for n, m in model.named_modules() if any(_matches(n, k) for k in names)}
    if not matched:
        raise UserError(f"{method}: target_modules {names} match no module of this model")
    bad = sorted({n.split(".")[-1] + f" ({type(m).__name__})" for n, m in matched.items()
                  if not isinstance(m, torch.nn.Linear)})
    if bad:
        raise UserError(f"{method}: peft supports only nn.Linear layers here, and {', '.join(bad)} "
                        "is not one (GPT-2 uses Conv1D): use lora or ia3, or name nn.Linear "
                        "modules in target_modules")
    return names


class PeftStrategy(Strategy):
    """A PEFT method through ``peft``: ``peft_config`` builds the method's config from its options;
    ``prepare`` wraps the model with it and reports ``trainable_params`` (also as
    ``ctx.info["trainable_params"]``), ``total_params`` and ``target_modules`` under
    ``ctx.info[name]``; ``finalize`` folds the adapter into a plain model (``merge_and_unload``),
    or, for a method with no merge (``merges`` False: prompt and prefix tuning), keeps the
    PeftModel that the run then evaluates through (``ctx.info[name]["merged"]`` says which)."""

    family: ClassVar[str] = "peft"
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = True
    # How the adapter's initial values are seeded, kept per method so that its runs give the same
    # numbers: "fork" seeds a forked RNG with the run's seed (the run's own RNG stream is left as
    # it was); "global" reseeds the run's RNG with it (LoRA); "none" draws from the run's RNG as
    # it stands (IA3, whose vectors start at one, and OSF, which starts from an SVD).
    seeding: ClassVar[Seeding] = "fork"

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        """This method's ``peft`` config (task type CAUSAL_LM) from ``self.config``, for ``model``."""
        raise NotImplementedError

    def after_wrap(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        """A step after wrapping, outside the seeded block (prompt tuning's text init)."""
        return model

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        refuse_wrapped(self.name, model)
        config = self.peft_config(model, ctx)
        if self.seeding == "fork":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed)
                wrapped = self.wrap(model, config, ctx)
        else:
            if self.seeding == "global":
                torch.manual_seed(ctx.seed)
            wrapped = self.wrap(model, config, ctx)
        return self.after_wrap(wrapped, ctx)

    def wrap(self, model: torch.nn.Module, config: Any, ctx: RunContext) -> torch.nn.Module:
        """``get_peft_model`` with peft's errors turned into one-line UserErrors; reports counts."""
        from peft import get_peft_model

        try:
            wrapped = get_peft_model(model, config)
        except (ValueError, TypeError, KeyError) as e:
            raise UserError(f"{self.name}: peft cannot wrap this model: {_first_line(e)}") from e
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        total = sum(p.numel() for p in wrapped.parameters())
        # peft resolves defaults and "all-linear" into the config it keeps (the one passed in)
        targets = getattr(wrapped.peft_config["default"], "target_modules", None)
        ctx.info["trainable_params"] = trainable
        if isinstance(targets, str):  # a pattern peft matches as is
            targets = [targets]
        ctx.info[self.name] = {"trainable_params": trainable, "total_params": total,
                               "target_modules": sorted(targets) if targets else None}
        return wrapped

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import PeftModel

        if not self.merges:  # prompt-based: no merge exists
            ctx.info.setdefault(self.name, {}).update(
                merged=False, note="prompt-based method: no merge exists; evaluated through the "
                                   "PeftModel (its virtual tokens are prepended at every forward "
                                   "and generate)")
            return model
        if not isinstance(model, PeftModel):
            raise RuntimeError(f"finalize of {self.name} got a model that is not a PeftModel")
        ctx.info.setdefault(self.name, {})["merged"] = True
        return model.merge_and_unload()  # W <- W + the adapter's update; a plain transformers model
