"""retain's strategies for a loop retain does not run: prepare the model (EWC's Fisher, L2-SP's
anchor, a LoRA wrap, self-replay's pool), mix the training data (replay, self-replay) into a
``datasets.Dataset``, sum the penalties of a batch, finalize after training (WiSE-FT).

    kit = RetainStrategies(["ewc", {"name": "replay", "fraction": 0.25}], model, tokenizer)
    model = kit.model                         # what the strategies prepared
    train = kit.train_dataset(my_rows)        # tokenized rows {"input_ids", "labels"}, replay in
    loss = lm_loss + kit.penalty(model, batch)   # done for you by RetainTrainerMixin
    model = kit.finalize(model)               # after training (RetainCallback does it for you)

The hooks are the strategies' own (``retain.strategies``), in list order, as in ``retain run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from retain.errors import UserError
from retain.strategies.base import call_penalty

IGNORE = -100


def tokenized_rows(rows: Any, tokenizer, *, seq_len: int = 512) -> list[dict]:
    """``{"input_ids", "labels"}`` examples of ``rows`` (a ``datasets.Dataset`` or a list of
    dicts). Rows that hold ``input_ids`` are taken as they are (labels from ``labels``, else
    from TRL's ``completion_mask``, else every token); other rows are records of the three
    shapes of retain's data files (``text``, ``prompt``+``completion``, ``messages``) and are
    tokenized as ``retain run`` tokenizes them (chat template, loss on the answer)."""
    from retain.data import encode_record, parse_record

    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: expected a dict, got {type(row).__name__}")
        if "input_ids" in row:
            ids = [int(t) for t in row["input_ids"]]
            if row.get("labels") is not None:
                labels = [int(t) for t in row["labels"]]
            elif row.get("completion_mask") is not None:
                labels = [t if m else IGNORE for t, m in zip(ids, row["completion_mask"])]
            else:
                labels = list(ids)
            if len(labels) != len(ids):
                raise UserError(f"{where}: labels and input_ids differ in length")
            ex = {"input_ids": ids[:seq_len], "labels": labels[:seq_len]}
        else:
            shape, payload = parse_record({k: v for k, v in row.items() if v is not None}, where)
            ex = encode_record(tokenizer, shape, payload, seq_len)
        if ex is not None:
            out.append(ex)
    if not out:
        raise UserError(f"no row keeps a token to learn from within seq_len={seq_len}")
    return out


def to_dataset(examples: Sequence[dict]):
    """A ``datasets.Dataset`` with columns ``input_ids`` and ``labels`` (-100: no loss); TRL's
    ``SFTTrainer`` uses such a dataset as it is, ``transformers.Trainer`` with a padding collator
    (e.g. ``DataCollatorForSeq2Seq``)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [list(e["input_ids"]) for e in examples],
                              "labels": [list(e["labels"]) for e in examples]})


class RetainStrategies:
    """retain's strategies prepared on ``model`` for a loop of your own (a Trainer, TRL, ...).

    ``strategies``: specs as in a run config (``"ewc"``, ``{"name": "l2sp", "alpha": 0.1}``);
    ``reference``: the data of what to keep (``builtin:retained`` or a JSONL path), for EWC's
    Fisher, MAS and replay; ``seq_len``: its token limit. Preparing runs now (a Fisher is
    estimated here), in list order; ``model`` is the prepared model (a PEFT strategy wraps it).
    """

    def __init__(self, strategies: Sequence[Mapping[str, Any] | str], model: torch.nn.Module,
                 tokenizer, *, reference: str = "builtin:retained", seed: int = 0,
                 seq_len: int = 512, reference_n: int = 512):
        from retain.data import load_reference_data
        from retain.models import copy_state
        from retain.strategies import RunContext, build_strategies, check_compatible

        self.strategies = build_strategies(list(strategies))
        check_compatible(self.strategies)
        self.tokenizer, self.seq_len = tokenizer, seq_len
        device = next(model.parameters()).device
        needs = {"regularization", "merging"} & {s.family for s in self.strategies}
        self.ctx = RunContext(
            tokenizer=tokenizer, seed=seed, out_dir=None, device=device,
            base_state=copy_state(model) if needs else {},  # L2-SP, distill, WiSE-FT read it
            reference=load_reference_data(reference, tokenizer, seq_len=seq_len, n=reference_n,
                                          seed=seed))
        for s in self.strategies:
            model = s.prepare(model, self.ctx)
        self.model = model
        self.finalized = False

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.strategies]

    @property
    def info(self) -> dict[str, Any]:
        """What the strategies reported (Fisher estimator, replay counts, ...): results.json's
        ``strategy_info``."""
        return self.ctx.info

    def train_examples(self, rows: Any) -> list[dict]:
        """``rows`` tokenized (``tokenized_rows``), then each strategy's ``train_data``."""
        data = tokenized_rows(rows, self.tokenizer, seq_len=self.seq_len)
        for s in self.strategies:
            data = s.train_data(data, self.ctx)
        return data

    def train_dataset(self, rows: Any):
        """``train_examples`` as a ``datasets.Dataset`` (``input_ids``, ``labels``)."""
        return to_dataset(self.train_examples(rows))

    def penalty(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                outputs=None) -> torch.Tensor | None:
        """The sum of the strategies' penalties for this batch (None: no strategy has one).
        ``model``: the unwrapped model (no DDP wrapper), as ``prepare`` saw it; ``outputs``: the
        loop's forward of ``batch`` when it has one (distillation then reuses its logits)."""
        total = None
        for s in self.strategies:
            p = call_penalty(s, model, batch, outputs)
            if p is not None:
                total = p if total is None else total + p
        return total

    def finalize(self, model: torch.nn.Module) -> torch.nn.Module:
        """Each strategy's ``finalize`` in list order (WiSE-FT merges with the base, LoRA merges
        its adapter); once."""
        if self.finalized:
            raise RuntimeError("these strategies were finalized already")
        for s in self.strategies:
            model = s.finalize(model, self.ctx)
        self.finalized = True
        return model
