"""Distillation to the frozen base: a KL term that keeps the fine-tuned model's next-token
distributions on the training batches close to those of the model it started from. By default
the base's top-k distribution of every training example is computed once before training
(``teacher_cache``), so that a step runs no teacher forward."""

from __future__ import annotations

import copy
import time
import weakref
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.fisher import pad_right
from retain.strategies.teacher_cache import TeacherCache, sparse_kl

CACHE_BATCH = 32  # examples per teacher forward of the pre-pass (sorted by length)


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
    frozen deep copy of the base. The student's logits are the loop's own (``outputs``), or one
    more forward when a loop does not pass them.

    ``top_k`` > 0 (default 32): the teacher's k most likely tokens at every position of every
    training example, and the probability of the rest as one bucket, are computed once before
    training (``data_ready``); a step then reads them instead of running the teacher, and the
    KL is taken over {those k tokens, the rest} (never above the full KL; the same when the rest
    is one token). A row not seen before training (another strategy's data added later) is taught
    when it comes, and kept. ``top_k`` 0: the full-vocabulary KL to a teacher run every step.
    """

    name: ClassVar[str] = "distill"
    family: ClassVar[str] = "regularization"
    citation: ClassVar[str] = 'Li & Hoiem, "Learning without Forgetting", 2016, https://arxiv.org/abs/1606.09282'

    class Config(StrategyConfig):
        weight: float = Field(1.0, ge=0, description="multiplier of the KL term in the loss")
        temperature: float = Field(1.0, gt=0, description="softmax temperature T of both distributions")
        top_k: int = Field(32, ge=0, description="teacher tokens kept per position, computed once "
                                                 "before training; 0: full KL, teacher every step")

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.teacher: torch.nn.Module | None = None  # frozen copy, only for non-PEFT models
        self._peft_model: weakref.ref | None = None  # the teacher, adapter off (not a copy)
        self.cache: TeacherCache | None = None

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        self._peft_model = None
        if is_peft(model):
            self.teacher, self._peft_model = None, weakref.ref(model)
            ctx.info[self.name] = {"teacher": "adapter disabled (no copy)"}
        else:
            self.teacher = copy.deepcopy(model).eval()
            if ctx.base_state:
                self.teacher.load_state_dict(ctx.base_state, strict=False)
            self.teacher.requires_grad_(False)
            ctx.info[self.name] = {"teacher": "frozen copy of the base"}
        ctx.info[self.name].update(weight=self.config.weight, temperature=self.config.temperature,
                                   top_k=self.config.top_k)
        self._info = ctx.info[self.name]
        self.cache = (TeacherCache(self.config.top_k, self.config.temperature)
                      if self.config.top_k > 0 else None)
        return model

    def data_ready(self, data: list[dict], ctx: RunContext) -> None:
        """The teacher's top-k of every training example, once, before training: the data as
        the loop will see it, other strategies' rows (replay) included."""
        if self.cache is None or not data:
            return
        model = self._peft_model() if self._peft_model is not None else self.teacher
        if model is None:
            raise RuntimeError("Distill.data_ready called before prepare")
        if self._peft_model is None:
            model.to(ctx.device)
        start = time.perf_counter()
        distinct = list({tuple(e["input_ids"]): e for e in data}.values())  # each example once
        distinct.sort(key=lambda e: len(e["input_ids"]))
        for at in range(0, len(distinct), CACHE_BATCH):
            chunk = distinct[at:at + CACHE_BATCH]
            ids, _, mask = pad_right(chunk, ctx.device)
            self.cache.fill(lambda i, m: self._teacher_logits(model, i, m, full=bool(m.all())),
                            ids, mask.long())
        self._info.update(cached_examples=len(self.cache.entries),
                          cache_mb=round(self.cache.nbytes() / 2**20, 1),
                          cache_seconds=round(time.perf_counter() - start, 2))

    @torch.no_grad()
    def _teacher_logits(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                        full: bool = False) -> torch.Tensor:
        """The teacher's (B, T, V) logits; ``full``: no padding, so no mask (the faster
        attention path, same logits)."""
        if full:
            mask = None
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
        if is_peft(model) and self.teacher is not None and self.cache is None:
            self.teacher = None  # wrapped by a later PEFT strategy: the adapter route needs no copy
        # (B, T, V): the loop's own forward of this batch when it hands it over
        student = getattr(outputs, "logits", None)
        if student is None or student.shape[0] != ids.shape[0]:
            student = model(input_ids=ids, attention_mask=mask).logits
        student = student[:, -ids.shape[1]:]  # a prompt-learning adapter's virtual tokens first
        T = self.config.temperature
        if self.cache is not None:
            teacher_model = self.teacher if self.teacher is not None else model
            idx, logp, rest = self.cache.lookup(
                lambda i, m: self._teacher_logits(teacher_model, i, m), ids, mask)
            return self.config.weight * T * T * sparse_kl(student, idx, logp, rest, mask, T)
        teacher = self._teacher_logits(model, ids, mask)  # (B, T, V)
        return self.config.weight * T * T * masked_kl(teacher, student, mask, T)
