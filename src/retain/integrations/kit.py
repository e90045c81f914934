"""retain's strategies for a loop retain does not run: prepare the model (EWC's Fisher, L2-SP's
anchor, a LoRA wrap, self-replay's pool), mix the training data (replay, self-replay) into a
``datasets.Dataset``, sum the penalties of a batch, finalize after training (WiSE-FT).

    kit = RetainStrategies(["ewc", {"name": "replay", "fraction": 0.25}], model, tokenizer)
    model = kit.model                         # what the strategies prepared
    train = kit.train_dataset(my_rows)        # tokenized rows {"input_ids", "labels"}, replay in;
                                              # a seeded 10% held out (kit.heldout): never in it
    loss = lm_loss + kit.penalty(model, batch)   # done for you by RetainTrainerMixin
    model = kit.finalize(model)               # after training (RetainCallback does it for you)

The hooks are the strategies' own (``retain.strategies``), in list order, as in ``retain run``.

The new domain's probe: ``train_dataset`` (and ``train_examples``) hold a seeded share of the
rows out, as ``retain run`` holds out a share of a JSONL ``--data`` (``retain.data.split_holdout``:
10%, at most 200, disjoint by content), and return the rest only; ``kit.heldout`` keeps the held-out
records, which ``RetainCallback(strategies=kit)`` probes as the new domain. The split is made
once per kit, where the rows come in, so the held-out rows cannot reach the training set through
the kit; ``holdout=0`` trains on every row (no domain probe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from retain.data import DEFAULT_HOLDOUT, DEFAULT_HOLDOUT_MAX
from retain.errors import UserError
from retain.strategies.base import call_penalty, training_data

IGNORE = -100


def tokenized_rows(rows: Any, tokenizer, *, seq_len: int = 512) -> list[dict]:
    """``{"input_ids", "labels"}`` examples of ``rows`` (a ``datasets.Dataset`` or a list of
    dicts). Rows that hold ``input_ids`` are taken as they are (labels from ``labels``, else
    from TRL's ``completion_mask``, else every token); other rows are records of the three
    shapes of retain's data files (``text``, ``prompt``+``completion``, ``messages``) and are
    tokenized as ``retain run`` tokenizes them (chat template, loss on the answer)."""
    from retain.data import parse_record
    from retain.formats import encode_record

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


def split_rows(rows: Any, *, holdout: float = DEFAULT_HOLDOUT,
               holdout_max: int | None = DEFAULT_HOLDOUT_MAX, seed: int = 0,
               ) -> tuple[list, list[tuple[str, Any]]]:
    """(rows to train on, held-out records): ``retain.data.split_holdout`` over the rows that are
    records of a data file's shapes (rows already tokenized are all trained on: a probe needs the
    record). The rows to train on keep their order; the held-out records are (shape, payload)
    pairs, as ``retain.probe_set.domain_probes`` takes them."""
    from retain.data import parse_record, split_holdout

    rows = list(rows)
    records = []  # (row index, record) of each record-shaped row
    for i, row in enumerate(rows):
        if isinstance(row, Mapping) and "input_ids" not in row:
            records.append((i, parse_record({k: v for k, v in row.items() if v is not None},
                                            f"row {i}")))
    if not records:
        return rows, []
    try:
        train, held = split_holdout([r for _, r in records], holdout, seed, holdout_max,
                                    what="rows")
    except UserError as e:  # named as the kit's arguments are
        raise UserError(str(e).replace("data_holdout", "holdout")) from None
    # ``train`` is a subsequence of the records, disjoint by content from ``held``: walk both
    dropped, pending = set(), iter(train)
    want = next(pending, None)
    for i, record in records:
        if want is not None and record == want:
            want = next(pending, None)
        else:
            dropped.add(i)
    return [row for i, row in enumerate(rows) if i not in dropped], held


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
    No strategies (``[]``): the kit still splits and tokenizes the rows (``train_dataset``).
    ``heldout``: the records ``train_dataset`` held out (None until it is called).
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
                                          seed=seed) if self.strategies else [])
        for s in self.strategies:
            model = s.prepare(model, self.ctx)
        self.model = model
        self.finalized = False
        self.seed = seed
        self.heldout: list[tuple[str, Any]] | None = None  # set by train_examples
        self.data_info: dict[str, int] = {}  # examples, heldout_examples, train_examples
        self._trained: set[int] = set()  # hashes of the training examples' input_ids

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.strategies]

    @property
    def info(self) -> dict[str, Any]:
        """What the strategies reported (Fisher estimator, replay counts, ...): results.json's
        ``strategy_info``."""
        return self.ctx.info

    def train_examples(self, rows: Any, *, holdout: float = DEFAULT_HOLDOUT,
                       holdout_max: int | None = DEFAULT_HOLDOUT_MAX) -> list[dict]:
        """``rows`` less a seeded ``holdout`` share (``split_rows``, kept in ``self.heldout``: the
        new domain's probe), tokenized (``tokenized_rows``), then each strategy's
        ``train_data``. Once per kit: its held-out split is the one the callback probes."""
        if self.heldout is not None:
            raise UserError("this kit split its training rows already (train_dataset is called "
                            "once per kit: its held-out rows are the domain probe); tokenize other "
                            "data with tokenized_rows(rows, tokenizer)")
        train, held = split_rows(rows, holdout=holdout, holdout_max=holdout_max, seed=self.seed)
        data = tokenized_rows(train, self.tokenizer, seq_len=self.seq_len)
        examples = len(data)
        data = training_data(self.strategies, data, self.ctx)
        self.heldout = held
        self.data_info = {"examples": examples, "heldout_examples": len(held),
                          "train_examples": len(data)}
        self._trained = {hash(tuple(e["input_ids"])) for e in data}
        return data

    def heldout_in(self, sequences: Any) -> int:
        """How many of the held-out rows' examples are among ``sequences`` (token id lists, e.g.
        a Trainer dataset's ``input_ids``) other than as one of the kit's own training examples
        (truncated to ``seq_len``, two different rows can give the same one)."""
        from retain.formats import encode_record

        if not self.heldout:
            return 0
        examples = (encode_record(self.tokenizer, shape, payload, self.seq_len)
                    for shape, payload in self.heldout)
        held = {hash(tuple(e["input_ids"])) for e in examples if e is not None} - self._trained
        return len(held & {hash(tuple(ids)) for ids in sequences}) if held else 0

    def train_dataset(self, rows: Any, *, holdout: float = DEFAULT_HOLDOUT,
                      holdout_max: int | None = DEFAULT_HOLDOUT_MAX):
        """``train_examples`` as a ``datasets.Dataset`` (``input_ids``, ``labels``): the rows
        less the held-out ones, tokenized, the strategies' data (replay) mixed in."""
        return to_dataset(self.train_examples(rows, holdout=holdout, holdout_max=holdout_max))

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
