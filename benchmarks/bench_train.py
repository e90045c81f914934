"""Training speed: retain's step against ``transformers.Trainer``, and each penalty strategy
(EWC, L2-SP, MAS; distillation with its teacher's top-k cached before training, and with
the full KL to a teacher run every step) against a plain step of retain's own loop.

Same model (the built-in one, fp32, on the CPU), data (the built-in legal domain, 128 tokens),
batch (8), optimizer (AdamW, lr 1e-3, 5 warm-up steps then cosine, weight decay 0, gradient
clipping at 1.0) and number of steps for every variant. Tokens/s counts the real (unpadded)
tokens of the steps after the first ``SKIP``, timed between the ends of consecutive steps, so
start-up, data preparation and a strategy's one-off work (EWC's Fisher, MAS's importance) are
not in it. Repetition i of every variant runs in the same round, one after the other.

    python benchmarks/bench_train.py ARGS_JSON OUT_JSON   (run by bench.py)
"""

from __future__ import annotations

import time

import torch

from bench_common import SectionArgs, check_row, figure, section_main

SKIP = 3  # steps left out of tokens/s (first-step allocations, warm caches)
PENALTIES = {  # label -> strategy spec; strengths as in the demo
    "EWC": {"name": "ewc", "lam": 0.1},
    "L2-SP": {"name": "l2sp", "alpha": 0.1},
    "MAS": {"name": "mas", "lam": 0.1},
    "distillation": {"name": "distill", "weight": 1.0},  # top-32 teacher cache (the default)
    "distillation, full KL (teacher every step)": {"name": "distill", "weight": 1.0, "top_k": 0},
}
TARGETS = {"EWC": 0.03, "L2-SP": 0.03, "MAS": 0.03, "distillation": 0.10}  # overhead bounds


def _setup(n_ref: int):
    from retain.data import load_reference_data, load_train_data
    from retain.models import load_model

    _, tok = load_model("tiny", dtype="float32", device="cpu")
    data = load_train_data("builtin:legal", tok, seq_len=128, n=512, seed=0)
    ref = load_reference_data("builtin:retained", tok, seq_len=128, n=n_ref, seed=0)
    return tok, data, ref


class _Stamps:
    """Times of the ends of steps, and the real tokens of each step."""

    def __init__(self):
        self.t: list[float] = []

    def tokens_per_s(self, tokens_per_step: list[int]) -> float:
        # steps SKIP+1 .. end: time from the end of step SKIP to the end of the last
        span = self.t[-1] - self.t[SKIP - 1]
        return sum(tokens_per_step[SKIP:len(self.t)]) / span


def retain_run(tok, data, ref, steps: int, spec: dict | None) -> tuple[float, dict]:
    """tokens/s of retain's loop with the strategy ``spec`` (None: plain full fine-tuning)."""
    from retain.models import copy_state, load_model
    from retain.formats import pad_token_id
    from retain.strategies import RunContext, build_strategies
    from retain.train import TrainConfig, train
    from retain.train.callbacks import Callback
    from retain.train.loop import batch_indices

    torch.manual_seed(0)
    model, _ = load_model("tiny", dtype="float32", device="cpu")
    strategies = build_strategies([spec] if spec else [{"name": "full"}])
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                     base_state=copy_state(model), reference=ref)
    for s in strategies:
        model = s.prepare(model, ctx)
    for s in strategies:  # as a run does: distillation's teacher pass over the data is here
        data = s.train_data(data, ctx)
    stamps = _Stamps()

    class Stamp(Callback):
        def on_step_end(self, state):
            stamps.t.append(time.perf_counter())

    cfg = TrainConfig(lr=1e-3, steps=steps, batch_size=8, warmup_steps=5, log_every=10**6)
    res = train(model, data, pad_id=pad_token_id(tok), config=cfg, strategies=strategies,
                callbacks=[Stamp()], progress=False)
    per_step = [sum(len(data[i]["input_ids"]) for i in idx)
                for idx in batch_indices(len(data), 8, steps, 0)]
    return stamps.tokens_per_s(per_step), {"final_loss": res.final_loss, "info": ctx.info}


def trainer_run(tok, data, steps: int) -> float:
    """tokens/s of ``transformers.Trainer`` on the same model, data, batch and optimizer."""
    import tempfile

    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from retain.models import load_model
    from retain.formats import pad_token_id
    from retain.train.loop import collate

    torch.manual_seed(0)
    model, _ = load_model("tiny", dtype="float32", device="cpu")
    pad = pad_token_id(tok)
    tokens: list[int] = []

    def collator(examples):
        tokens.append(sum(len(e["input_ids"]) for e in examples))
        return collate(examples, pad)

    stamps = _Stamps()

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            stamps.t.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=8, max_steps=steps, learning_rate=1e-3,
            warmup_steps=5, lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0,
            logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True,
            dataloader_num_workers=0, disable_tqdm=True, seed=0, bf16=False, fp16=False)
        trainer = Trainer(model=model, args=args, data_collator=collator,
                          train_dataset=Dataset.from_list(data), callbacks=[Stamp()])
        trainer.train()
    return stamps.tokens_per_s(tokens)


def main(args: SectionArgs) -> dict:
    steps = 15 if args.quick else 50
    tok, data, ref = _setup(n_ref=64 if args.quick else 128)
    plain, trainer = [], []
    pen: dict[str, list[float]] = {k: [] for k in PENALTIES}
    cache_s: list[float] = []  # distillation's one-off teacher pass over the 512 examples
    for _ in range(args.reps):  # one round: every variant once
        plain.append(retain_run(tok, data, ref, steps, None)[0])
        trainer.append(trainer_run(tok, data, steps))
        for label, spec in PENALTIES.items():
            rate, extra = retain_run(tok, data, ref, steps, spec)
            pen[label].append(rate)
            if label == "distillation":
                cache_s.append(extra["info"]["distill"]["cache_seconds"])
    figures = [figure(f"training step, full fine-tuning ({steps} steps of 8 x 128)", "tokens/s",
                      plain, trainer, better="higher", baseline="transformers.Trainer",
                      target=1.0, target_text="at least as fast as Trainer")]
    for label in PENALTIES:
        bound = TARGETS.get(label)
        figures.append(figure(f"{label} step vs a plain step", "tokens/s", pen[label], plain,
                              better="higher", baseline="retain, plain step", ratio="overhead",
                              target=bound, target_text=f"overhead at most {bound:.0%}"
                              if bound is not None else ""))
    from retain.models import count_params, load_model

    n_params = count_params(load_model("tiny", dtype="float32", device="cpu")[0])
    fisher_tokens = sum(len(e["input_ids"]) for e in ref[:64])
    return {"figures": figures, "config": {"steps": steps, "skip": SKIP, "batch": 8,
                                           "seq_len": 128, "lr": 1e-3, "params": n_params,
                                           "fisher_tokens": fisher_tokens,
                                           "distill_cache_s": sorted(cache_s)[len(cache_s) // 2],
                                           "train_examples": len(data)}}


if __name__ == "__main__":
    section_main(main)
