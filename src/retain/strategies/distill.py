"""Distillation to the frozen base: a KL term that keeps the fine-tuned model's next-token
distributions on the training batches close to those of the model it started from."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from retain.strategies.base import RunContext, Strategy, StrategyConfig


def is_peft(model: torch.nn.Module) -> bool:
    """A PEFT model can run as its own base (``disable_adapter``): no second copy needed."""
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def masked_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Mean over unmasked positions of KL(teacher || student) between softmax(logits / T), in nats.

    teacher_logits, student_logits: (B, T, V); mask: (B, T), 1 = real token."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (B, T, V)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)  # (B, T)
    m = mask.to(kl.dtype)
    return (kl * m).sum() / m.sum().clamp(min=1)


class Distill(Strategy):
    """Distillation to the base, in the spirit of Learning without Forgetting (Li & Hoiem 2016,
    "Learning without Forgetting", https://arxiv.org/abs/1606.09282), with the base model as the
    teacher on the new-domain training batches.

    penalty = weight * T^2 * mean over attended positions of KL(p_base || p_model), both softmaxes
    at temperature T (the T^2 keeps gradient size independent of T, as in Hinton et al. 2015).
    The teacher runs under no_grad in eval mode (no dropout). With a PEFT model the teacher is the
    same model with its adapter disabled (no second copy in memory); otherwise prepare keeps a
    frozen deep copy of the base. The penalty costs one teacher forward per step; the student's
    logits are the loop's own (``outputs``), or one more forward when a loop does not pass them.
    """

    name: ClassVar[str] = "distill"
    family: ClassVar[str] = "regularization"
    citation: ClassVar[str] = 'Li & Hoiem, "Learning without Forgetting", 2016, https://arxiv.org/abs/1606.09282'

    class Config(StrategyConfig):
        weight: float = Field(1.0, ge=0, description="multiplier of the KL term in the loss")
        temperature: float = Field(1.0, gt=0, description="softmax temperature T of both distributions")

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.teacher: torch.nn.Module | None = None  # frozen copy, only for non-PEFT models

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        if is_peft(model):
            self.teacher = None
            ctx.info[self.name] = {"teacher": "adapter disabled (no copy)"}
        else:
            self.teacher = copy.deepcopy(model).eval()
            if ctx.base_state:
                self.teacher.load_state_dict(ctx.base_state, strict=False)
            self.teacher.requires_grad_(False)
            ctx.info[self.name] = {"teacher": "frozen copy of the base"}
        ctx.info[self.name].update(weight=self.config.weight, temperature=self.config.temperature)
        return model

    @torch.no_grad()
    def _teacher_logits(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if is_peft(model):
            was_training = model.training
            model.eval()
            try:
                with model.disable_adapter():
                    return model(input_ids=ids, attention_mask=mask).logits
            finally:
                model.train(was_training)
        if self.teacher is None:
            raise RuntimeError("Distill.penalty called before prepare")
        device = next(model.parameters()).device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher(input_ids=ids, attention_mask=mask).logits

    def penalty(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        if is_peft(model) and self.teacher is not None:
            self.teacher = None  # wrapped by a later PEFT strategy: the adapter route needs no copy
        teacher = self._teacher_logits(model, ids, mask)  # (B, T, V)
        # (B, T, V): the loop's own forward of this batch when it hands it over
        student = getattr(outputs, "logits", None)
        if student is None or student.shape[0] != ids.shape[0]:
            student = model(input_ids=ids, attention_mask=mask).logits
        student = student[:, -ids.shape[1]:]  # a prompt-learning adapter's virtual tokens first
        T = self.config.temperature
        return self.config.weight * T * T * masked_kl(teacher, student, mask, T)
