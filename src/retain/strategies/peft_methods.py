"""Parameter-efficient fine-tuning methods besides LoRA, every one through ``peft``: IA3, prompt
tuning, prefix tuning, LoHa, LoKr and orthogonal subspace fine-tuning (OSF). Each is its options
and its peft config; ``peft_base.PeftStrategy`` wraps, reports and merges. Prompt and prefix
tuning have no merge: the run keeps the ``PeftModel`` and evaluates through it. Target modules
default to peft's per-architecture table.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from retain.errors import UserError
from retain.strategies.base import RunContext, StrategyConfig
from retain.strategies.peft_base import PeftStrategy, Seeding, Targets, linear_targets


# ---------------------------------------------------------------- IA3
class IA3(PeftStrategy):
    """IA3: learned vectors rescale keys, values and feed-forward activations.
    Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
    In-Context Learning", https://arxiv.org/abs/2205.05638"""

    name: ClassVar[str] = "ia3"
    citation: ClassVar[str] = ("Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better "
                               "and Cheaper than In-Context Learning, https://arxiv.org/abs/2205.05638")

    class Config(StrategyConfig):
        target_modules: Targets = None  # None: peft's table (Llama: k_proj, v_proj, down_proj)
        feedforward_modules: Targets = None  # subset of target_modules scaled on their input

    seeding: ClassVar[Seeding] = "none"  # its vectors start at one

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import IA3Config, TaskType

        c = self.config
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=c.target_modules,
                         feedforward_modules=c.feedforward_modules)


# ---------------------------------------------------------------- prompt tuning
class PromptTuning(PeftStrategy):
    """Prompt tuning: a few trainable virtual-token embeddings are prepended to every input.
    Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
    https://arxiv.org/abs/2104.08691"""

    name: ClassVar[str] = "prompt_tuning"
    citation: ClassVar[str] = ("Lester et al. 2021, The Power of Scale for Parameter-Efficient "
                               "Prompt Tuning, https://arxiv.org/abs/2104.08691")
    merges: ClassVar[bool] = False

    class Config(StrategyConfig):
        num_virtual_tokens: int = Field(20, ge=1)
        init: Literal["random", "vocab", "text"] = "random"  # vocab: embeddings of random tokens
        init_text: str | None = None  # for init="text": its token embeddings, cycled to length

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit, TaskType

        c = self.config
        if c.init == "text" and not c.init_text:
            raise UserError("prompt_tuning: init='text' needs init_text")
        how = PromptTuningInit.SAMPLE_VOCAB if c.init == "vocab" else PromptTuningInit.RANDOM
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                  num_virtual_tokens=c.num_virtual_tokens, prompt_tuning_init=how)

    def after_wrap(self, wrapped: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        c = self.config
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


# ---------------------------------------------------------------- prefix tuning
class PrefixTuning(PeftStrategy):
    """Prefix tuning: trainable key/value prefixes at every attention layer.
    Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
    https://arxiv.org/abs/2101.00190"""

    name: ClassVar[str] = "prefix_tuning"
    citation: ClassVar[str] = ("Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for "
                               "Generation, https://arxiv.org/abs/2101.00190")
    merges: ClassVar[bool] = False

    class Config(StrategyConfig):
        num_virtual_tokens: int = Field(20, ge=1)
        prefix_projection: bool = False  # True: prefixes come from an MLP (the paper's reparam.)
        encoder_hidden_size: int | None = Field(None, ge=1)  # that MLP's width (None: hidden size)

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import PrefixTuningConfig, TaskType

        c = self.config
        kw = {"encoder_hidden_size": c.encoder_hidden_size} if c.encoder_hidden_size else {}
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM,
                                  num_virtual_tokens=c.num_virtual_tokens,
                                  prefix_projection=c.prefix_projection, **kw)


# ---------------------------------------------------------------- LoHa
class LoHa(PeftStrategy):
    """LoHa: the weight update is a Hadamard product of two low-rank products (nn.Linear only).
    Hyeon-Woo et al. 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient
    Federated Learning", https://arxiv.org/abs/2108.06098"""

    name: ClassVar[str] = "loha"
    citation: ClassVar[str] = ("Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for "
                               "Communication-Efficient Federated Learning, "
                               "https://arxiv.org/abs/2108.06098")

    class Config(StrategyConfig):
        r: int = Field(8, ge=1)
        alpha: float = Field(8.0, gt=0)  # update scale alpha / r
        rank_dropout: float = Field(0.0, ge=0, lt=1)
        module_dropout: float = Field(0.0, ge=0, lt=1)
        target_modules: Targets = None  # None: peft's table (Llama: q_proj, v_proj)

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import LoHaConfig, TaskType

        c = self.config
        return LoHaConfig(task_type=TaskType.CAUSAL_LM, r=c.r, alpha=c.alpha,
                          rank_dropout=c.rank_dropout, module_dropout=c.module_dropout,
                          target_modules=linear_targets(self.name, model, c.target_modules))


# ---------------------------------------------------------------- LoKr
class LoKr(PeftStrategy):
    """LoKr: the weight update is a Kronecker product of a small and a low-rank factor
    (nn.Linear only). Yeh et al. 2024, "Navigating Text-To-Image Customization: From LyCORIS
    Fine-Tuning to Model Evaluation", https://arxiv.org/abs/2309.14859"""

    name: ClassVar[str] = "lokr"
    citation: ClassVar[str] = ("Yeh et al. 2024, Navigating Text-To-Image Customization: From "
                               "LyCORIS Fine-Tuning to Model Evaluation, "
                               "https://arxiv.org/abs/2309.14859")

    class Config(StrategyConfig):
        r: int = Field(8, ge=1)
        alpha: float = Field(8.0, gt=0)
        rank_dropout: float = Field(0.0, ge=0, lt=1)
        module_dropout: float = Field(0.0, ge=0, lt=1)
        decompose_both: bool = False  # also factor the small Kronecker factor into low rank
        decompose_factor: int = -1  # -1: factor sizes as close to sqrt(dim) as possible
        target_modules: Targets = None

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import LoKrConfig, TaskType

        c = self.config
        return LoKrConfig(task_type=TaskType.CAUSAL_LM, r=c.r, alpha=c.alpha,
                          rank_dropout=c.rank_dropout, module_dropout=c.module_dropout,
                          decompose_both=c.decompose_both, decompose_factor=c.decompose_factor,
                          target_modules=linear_targets(self.name, model, c.target_modules))


# ---------------------------------------------------------------- OSF
class OSF(PeftStrategy):
    """Orthogonal subspace fine-tuning: each weight's top singular directions are frozen and
    the update is confined to the orthogonal rest (nn.Linear only; trains many parameters).
    Nayak et al. 2025, "Sculpting Subspaces: Constrained Full Fine-Tuning in LLMs for Continual
    Learning", https://arxiv.org/abs/2504.07097"""

    name: ClassVar[str] = "osf"
    citation: ClassVar[str] = ("Nayak et al. 2025, Sculpting Subspaces: Constrained Full Fine-Tuning "
                               "in LLMs for Continual Learning, https://arxiv.org/abs/2504.07097")

    class Config(StrategyConfig):
        # Preserved (frozen) rank per weight: an int, or a fraction in (0, 1] of min(out, in);
        # None: half. The trainable rank is min(out, in) - effective_rank.
        effective_rank: int | float | None = Field(None, gt=0)
        target_modules: Targets = None  # None: peft's table (Llama: all attention and MLP)

    seeding: ClassVar[Seeding] = "none"  # it starts from an SVD of each weight

    def peft_config(self, model: torch.nn.Module, ctx: RunContext) -> Any:
        from peft import OSFConfig, TaskType

        c = self.config
        return OSFConfig(task_type=TaskType.CAUSAL_LM, effective_rank=c.effective_rank,
                         target_modules=linear_targets(self.name, model, c.target_modules))


PEFT_METHODS: tuple[type[PeftStrategy], ...] = (IA3, PromptTuning, PrefixTuning, LoHa, LoKr, OSF)
