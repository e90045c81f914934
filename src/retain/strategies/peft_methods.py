"""Parameter-efficient fine-tuning methods besides LoRA, every one through ``peft``: IA3, prompt
tuning, prefix tuning, LoHa, LoKr and orthogonal subspace fine-tuning (OSF).

``prepare`` wraps the model with ``peft.get_peft_model`` (the base weights stay bit-identical and
frozen); ``finalize`` merges the adapter into a plain model (``merge_and_unload``) where peft can.
Prompt and prefix tuning have no merge: the run keeps the ``PeftModel`` and evaluates through it
(``ctx.info[name]["merged"]`` says so). Target modules default to peft's per-architecture table.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from retain.errors import UserError
from retain.strategies.base import RunContext, Strategy, StrategyConfig

Targets = list[str] | None  # module names (suffix match, as peft does); None: peft's default


# ---------------------------------------------------------------- shared helpers (no base class)
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


def _refuse_wrapped(method: str, model: torch.nn.Module) -> None:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise UserError(f"{method}: the model is already wrapped by a PEFT method; list one only")


def _linear_targets(method: str, model: torch.nn.Module, targets: Targets) -> list[str]:
    """The target names for a method that peft supports on ``nn.Linear`` only (LoHa, LoKr, OSF):
    a clear UserError for GPT-2-style ``Conv1D`` layers or names that match nothing."""
    _refuse_wrapped(method, model)
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


def _wrap(method: str, model: torch.nn.Module, peft_config, ctx: RunContext) -> torch.nn.Module:
    """``get_peft_model`` with peft's errors turned into one-line UserErrors; reports counts."""
    from peft import get_peft_model

    _refuse_wrapped(method, model)
    try:
        wrapped = get_peft_model(model, peft_config)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{method}: peft cannot wrap this model: {_first_line(e)}") from e
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    targets = getattr(peft_config, "target_modules", None)
    ctx.info["trainable_params"] = trainable
    ctx.info[method] = {"trainable_params": trainable, "total_params": total,
                        "target_modules": sorted(targets) if targets else None}
    return wrapped


def _merge(method: str, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
    """Fold the adapter into the weights and return the plain model (``merge_and_unload``)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise RuntimeError("finalize of a PEFT strategy got a model that is not a PeftModel")
    ctx.info.setdefault(method, {})["merged"] = True
    return model.merge_and_unload()


def _keep_wrapped(method: str, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
    """Prompt-based methods have no merge: the run evaluates through the PeftModel."""
    ctx.info.setdefault(method, {}).update(
        merged=False, note="prompt-based method: no merge exists; evaluated through the PeftModel "
                           "(its virtual tokens are prepended at every forward and generate)")
    return model


# ---------------------------------------------------------------- IA3
class IA3(Strategy):
    """IA3: learned vectors rescale keys, values and feed-forward activations.
    Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
    In-Context Learning", https://arxiv.org/abs/2205.05638"""

    name: ClassVar[str] = "ia3"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better "
                               "and Cheaper than In-Context Learning, https://arxiv.org/abs/2205.05638")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = True

    class Config(StrategyConfig):
        target_modules: Targets = None  # None: peft's table (Llama: k_proj, v_proj, down_proj)
        feedforward_modules: Targets = None  # subset of target_modules scaled on their input

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import IA3Config, TaskType

        c = self.config
        return _wrap(self.name, model, IA3Config(task_type=TaskType.CAUSAL_LM,
                                                 target_modules=c.target_modules,
                                                 feedforward_modules=c.feedforward_modules), ctx)

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _merge(self.name, model, ctx)


# ---------------------------------------------------------------- prompt tuning
class PromptTuning(Strategy):
    """Prompt tuning: a few trainable virtual-token embeddings are prepended to every input.
    Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
    https://arxiv.org/abs/2104.08691"""

    name: ClassVar[str] = "prompt_tuning"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Lester et al. 2021, The Power of Scale for Parameter-Efficient "
                               "Prompt Tuning, https://arxiv.org/abs/2104.08691")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = False

    class Config(StrategyConfig):
        num_virtual_tokens: int = Field(20, ge=1)
        init: Literal["random", "vocab", "text"] = "random"  # vocab: embeddings of random tokens
        init_text: str | None = None  # for init="text": its token embeddings, cycled to length

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        c = self.config
        if c.init == "text" and not c.init_text:
            raise UserError("prompt_tuning: init='text' needs init_text")
        how = PromptTuningInit.SAMPLE_VOCAB if c.init == "vocab" else PromptTuningInit.RANDOM
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)  # the virtual tokens' initial values are seeded
            wrapped = _wrap(self.name, model, PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM, num_virtual_tokens=c.num_virtual_tokens,
                prompt_tuning_init=how), ctx)
        if c.init == "text":
            # Same idea as peft's TEXT init, with the run's tokenizer instead of a reload by name.
            ids = ctx.tokenizer(c.init_text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise UserError("prompt_tuning: init_text tokenizes to nothing")
            ids = (ids * c.num_virtual_tokens)[: c.num_virtual_tokens]
            words = wrapped.get_input_embeddings().weight  # (V, H)
            table = wrapped.prompt_encoder[wrapped.active_adapter].embedding.weight  # (N, H)
            with torch.no_grad():
                table.copy_(words[torch.tensor(ids, device=words.device)].to(table.dtype))
        return wrapped

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _keep_wrapped(self.name, model, ctx)


# ---------------------------------------------------------------- prefix tuning
class PrefixTuning(Strategy):
    """Prefix tuning: trainable key/value prefixes at every attention layer.
    Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
    https://arxiv.org/abs/2101.00190"""

    name: ClassVar[str] = "prefix_tuning"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for "
                               "Generation, https://arxiv.org/abs/2101.00190")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = False

    class Config(StrategyConfig):
        num_virtual_tokens: int = Field(20, ge=1)
        prefix_projection: bool = False  # True: prefixes come from an MLP (the paper's reparam.)
        encoder_hidden_size: int | None = Field(None, ge=1)  # that MLP's width (None: hidden size)

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import PrefixTuningConfig, TaskType

        c = self.config
        kw = {"encoder_hidden_size": c.encoder_hidden_size} if c.encoder_hidden_size else {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            return _wrap(self.name, model, PrefixTuningConfig(
                task_type=TaskType.CAUSAL_LM, num_virtual_tokens=c.num_virtual_tokens,
                prefix_projection=c.prefix_projection, **kw), ctx)

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _keep_wrapped(self.name, model, ctx)


# ---------------------------------------------------------------- LoHa
class LoHa(Strategy):
    """LoHa: the weight update is a Hadamard product of two low-rank products (nn.Linear only).
    Hyeon-Woo et al. 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
    Federated Learning", https://arxiv.org/abs/2108.06098"""

    name: ClassVar[str] = "loha"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for "
                               "Communication-Efficient Federated Learning, "
                               "https://arxiv.org/abs/2108.06098")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = True

    class Config(StrategyConfig):
        r: int = Field(8, ge=1)
        alpha: float = Field(8.0, gt=0)  # update scale alpha / r
        rank_dropout: float = Field(0.0, ge=0, lt=1)
        module_dropout: float = Field(0.0, ge=0, lt=1)
        target_modules: Targets = None  # None: peft's table (Llama: q_proj, v_proj)

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import LoHaConfig, TaskType

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            return _wrap(self.name, model, LoHaConfig(
                task_type=TaskType.CAUSAL_LM, r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout,
                module_dropout=c.module_dropout,
                target_modules=_linear_targets(self.name, model, c.target_modules)), ctx)

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _merge(self.name, model, ctx)


# ---------------------------------------------------------------- LoKr
class LoKr(Strategy):
    """LoKr: the weight update is a Kronecker product of a small and a low-rank factor
    (nn.Linear only). Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS
    Fine-Tuning to Model Evaluation", https://arxiv.org/abs/2309.14859"""

    name: ClassVar[str] = "lokr"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Yeh et al. 2024, Navigating Text-To-Image Customization: From "
                               "LyCORIS Fine-Tuning to Model Evaluation, "
                               "https://arxiv.org/abs/2309.14859")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = True

    class Config(StrategyConfig):
        r: int = Field(8, ge=1)
        alpha: float = Field(8.0, gt=0)
        rank_dropout: float = Field(0.0, ge=0, lt=1)
        module_dropout: float = Field(0.0, ge=0, lt=1)
        decompose_both: bool = False  # also factor the small Kronecker factor into low rank
        decompose_factor: int = -1  # -1: factor sizes as close to sqrt(dim) as possible
        target_modules: Targets = None

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import LoKrConfig, TaskType

        c = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)
            return _wrap(self.name, model, LoKrConfig(
                task_type=TaskType.CAUSAL_LM, r=c.r, alpha=c.alpha, rank_dropout=c.rank_dropout,
                module_dropout=c.module_dropout, decompose_both=c.decompose_both,
                decompose_factor=c.decompose_factor,
                target_modules=_linear_targets(self.name, model, c.target_modules)), ctx)

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _merge(self.name, model, ctx)


# ---------------------------------------------------------------- OSF
class OSF(Strategy):
    """Orthogonal subspace fine-tuning: each weight's top singular directions are frozen and
    the update is confined to the orthogonal rest (nn.Linear only; trains many parameters).
    Nayak et al. 2025, "Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for Continual
    Learning", https://arxiv.org/abs/2504.07097"""

    name: ClassVar[str] = "osf"
    family: ClassVar[str] = "peft"
    citation: ClassVar[str] = ("Nayak et al. 2025, Sculpting Subspaces: Constrained Full Fine-Tuning "
                               "in LLMs for Continual Learning, https://arxiv.org/abs/2504.07097")
    wraps_model: ClassVar[bool] = True
    merges: ClassVar[bool] = True

    class Config(StrategyConfig):
        # Preserved (frozen) rank per weight: an int, or a fraction in (0, 1] of min(out, in);
        # None: half. The trainable rank is min(out, in) - effective_rank.
        effective_rank: int | float | None = Field(None, gt=0)
        target_modules: Targets = None  # None: peft's table (Llama: all attention and MLP)

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        from peft import OSFConfig, TaskType

        c = self.config
        return _wrap(self.name, model, OSFConfig(
            task_type=TaskType.CAUSAL_LM, effective_rank=c.effective_rank,
            target_modules=_linear_targets(self.name, model, c.target_modules)), ctx)

    def finalize(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        return _merge(self.name, model, ctx)


PEFT_METHODS: tuple[type[Strategy], ...] = (IA3, PromptTuning, PrefixTuning, LoHa, LoKr, OSF)
