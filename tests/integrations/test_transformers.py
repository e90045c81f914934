"""retain in someone else's loop: a real ``transformers.Trainer`` and a real TRL ``SFTTrainer`` on
the built-in model with EWC + replay and the callback's guard crossed (training stops, the weights
are the last passing check's, the run folder is complete and renders), the penalty counted once
per optimizer step under gradient accumulation, back-off through the Trainer's optimizer, the
data conversion, the new domain's held-out split (probed, never trained on), the Trainer's
``resume_from_checkpoint`` (the callback's before-results and guard continue from the checkpoint)
and the callback's one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, TrainerCallback, TrainingArguments

from retain.builtin import tasks
from retain.errors import UserError
from retain.integrations.transformers import (RetainCallback, RetainStrategies, RetainTrainer,
                                              RetainTrainerMixin, tokenized_rows)
from retain.models import load_model
from retain.report import results as rr

# Crossed at step 4 on the built-in model at lr 1e-3 (writing CE 0.36 -> 0.40 at step 2 -> 0.48).
GUARD = {"limits": ["writing.ce_nats_per_token<=0.40"], "every": 2, "n": 8, "confirm": "point"}
STRATEGIES = [{"name": "ewc", "n_samples": 16, "lam": 0.1}, {"name": "replay", "fraction": 0.25}]


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return load_model("tiny", dtype="float32", device="cpu")


def legal_rows(n: int = 120) -> list[dict]:
    return [{"text": it.text} for it in tasks.items("legal", "train", n, 0)]


def args(out, **kw):
    base = dict(output_dir=str(out), max_steps=8, per_device_train_batch_size=8,
                learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=2,
                save_strategy="no", report_to=[], seed=0, use_cpu=True, disable_tqdm=True)
    return base | kw


class Recorder(TrainerCallback):
    """The trainable weights at the end of every step (after the callbacks before it)."""

    def __init__(self):
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kw):
        self.states[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()
                                          if p.requires_grad}


def check_guarded_run(trainer, cb, rec, out, kit, domain) -> None:
    trainer.add_callback(cb)
    trainer.add_callback(rec)  # after the callback: it sees the weights the guard kept
    trainer.train()
    res = cb.results
    # the guard crossed at step 4, training stopped there, and rolled back to step 2
    assert res["training"]["steps"] == trainer.state.global_step == 4 < 8
    assert [(e["step"], e["action"]) for e in res["guard"]["events"]] == [(4, "stop"),
                                                                          (4, "rollback")]
    assert res["guard"]["events"][1]["to_step"] == 2
    assert res["guard"]["rolled_back_to_step"] == 2
    final = {n: p for n, p in cb.model.named_parameters() if p.requires_grad}
    assert set(final) == set(rec.states[2])
    assert all(torch.equal(final[n], rec.states[2][n]) for n in final)
    assert not all(torch.equal(final[n], rec.states[4][n]) for n in final)
    # the run folder of `retain run`, complete, and `retain report` renders it
    for name in rr.RUN_FILES:
        assert (out / name).is_file(), name
    on_disk = json.loads((out / rr.RESULTS_FILE).read_text())
    assert on_disk["status"] == "complete" and on_disk["strategy"] == "ewc+replay"
    assert on_disk["strategy_info"]["replay"]["replay_examples"] > 0
    after = {c["key"]: c["after"] for c in on_disk["comparison"]}
    assert after["writing.ce_nats_per_token"] <= 0.40  # the restored weights meet the limit
    events = [json.loads(line) for line in (out / rr.METRICS_FILE).read_text().splitlines()]
    stages = [e.get("stage") for e in events if e["event"] == "probe"]
    assert stages == ["before", "during", "after"]
    assert [e["step"] for e in events if e["event"] == "train"] == [2, 4]
    # probes and guard checks went into the Trainer's logs; its own loss records were kept
    hist = trainer.state.log_history
    assert any("retain/writing.ce_nats_per_token" in h for h in hist)
    assert [h["step"] for h in hist if "retain/guard/passed" in h] == [2, 4]
    assert [h["step"] for h in hist if "loss" in h] == [2, 4]
    # the new domain: the rows the kit held out of training, probed before and after
    key = f"{domain}.ce_nats_per_token"
    assert list(on_disk["domain_gain"]) == [key] and key in after
    assert on_disk["domain_gain"][key] > 0  # learnt (lr 1e-3, 4 steps)
    assert on_disk["data"]["heldout_examples"] == len(kit.heldout) == 12  # 10% of 120 rows
    assert on_disk["data"]["examples"] == 108
    from retain.report.html import build_report

    assert "guard" in build_report(out).read_text()


def test_trainer_ewc_replay_guard_stops_and_rolls_back(tiny, tmp_path):
    model, tok = tiny
    kit = RetainStrategies(STRATEGIES, model, tok, seq_len=64, reference_n=64)
    trainer = RetainTrainer(model=kit.model, args=TrainingArguments(**args(tmp_path / "hf")),
                            train_dataset=kit.train_dataset(legal_rows()),
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
                            processing_class=tok, retain=kit)
    out = tmp_path / "run"
    cb = RetainCallback(tok, trainer=trainer, strategies=kit, probes=["writing"], n=8, every=4,
                        guard=GUARD, out=out, data="legal.jsonl")
    check_guarded_run(trainer, cb, Recorder(), out, kit, "legal")


def test_sft_trainer_ewc_replay_guard_stops_and_rolls_back(tiny, tmp_path):
    trl = pytest.importorskip("trl")
    model, tok = tiny
    kit = RetainStrategies(STRATEGIES, model, tok, seq_len=64, reference_n=64)

    class RetainSFTTrainer(RetainTrainerMixin, trl.SFTTrainer):
        pass

    trainer = RetainSFTTrainer(model=kit.model, processing_class=tok, retain=kit,
                               args=trl.SFTConfig(**args(tmp_path / "hf"), max_length=64),
                               train_dataset=kit.train_dataset(legal_rows()))
    out = tmp_path / "run"
    cb = RetainCallback(tok, trainer=trainer, strategies=kit, probes=["writing"], n=8, every=4,
                        guard=GUARD, out=out, data="legal.jsonl")
    check_guarded_run(trainer, cb, Recorder(), out, kit, "legal")


def test_sft_trainer_with_a_peft_model(tiny, tmp_path):
    """A PEFT model the user wrapped: probes and the guard see the adapter, the rollback restores
    the adapter's weights only, drift is measured on the base names."""
    trl = pytest.importorskip("trl")
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    model = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    trainer = trl.SFTTrainer(model=model, processing_class=tok,
                             args=trl.SFTConfig(**args(tmp_path / "hf", learning_rate=1e-2),
                                                max_length=64),
                             train_dataset=Dataset.from_list(legal_rows(64)))
    cb = RetainCallback(tok, trainer=trainer, probes=["writing"], n=8,
                        guard={**GUARD, "limits": ["writing.ce_nats_per_token<=0.39"]},
                        out=tmp_path / "run")
    rec = Recorder()
    trainer.add_callback(cb)
    trainer.add_callback(rec)
    trainer.train()
    res = cb.results
    assert res["guard"]["events"], "the tighter limit should be crossed at lr 1e-2"
    good = res["guard"]["rolled_back_to_step"]
    final = {n: p for n, p in cb.model.named_parameters() if p.requires_grad}
    assert final and all("lora_" in n for n in final)
    assert good == 2  # crossed at step 4
    assert all(torch.equal(final[n], rec.states[good][n]) for n in final)
    assert res["model"]["trainable_params"] < res["model"]["params"] / 10


def _l2sp_weights(tok, model, tmp_path, batch: int, accum: int) -> dict[str, torch.Tensor]:
    kit = RetainStrategies([{"name": "l2sp", "alpha": 50.0}], model, tok, seq_len=64,
                           reference_n=8)
    rows = legal_rows(16)
    trainer = RetainTrainer(
        model=kit.model, processing_class=tok, retain=kit,
        args=TrainingArguments(**args(tmp_path / f"hf{accum}", max_steps=2,
                                      per_device_train_batch_size=batch,
                                      gradient_accumulation_steps=accum, max_grad_norm=0.0)),
        train_dataset=kit.train_dataset(rows),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    trainer.train()
    return {n: p.detach().clone() for n, p in kit.model.named_parameters()}


def test_penalty_counts_once_per_optimizer_step_under_accumulation(tmp_path):
    """8 x 1 and 4 x 2 (the same global batches) end with the same weights up to float rounding
    (3.4e-5 of 2.0e-3 moved, the same without the penalty: Adam amplifies rounding where a
    gradient is near 0); a penalty added per micro-batch without the Trainer's scaling doubles in
    the second and moves them apart by 1.7e-3."""
    torch.manual_seed(0)
    m1, tok = load_model("tiny", dtype="float32", device="cpu")
    m2, _ = load_model("tiny", dtype="float32", device="cpu")
    a = _l2sp_weights(tok, m1, tmp_path, batch=8, accum=1)
    b = _l2sp_weights(tok, m2, tmp_path, batch=4, accum=2)
    base, _ = load_model("tiny", dtype="float32", device="cpu")
    moved = max((a[n] - p).abs().max().item() for n, p in base.named_parameters())
    gap = max((a[n] - b[n]).abs().max().item() for n in a)
    assert moved > 1e-4
    assert gap < moved * 0.1, (gap, moved)


def test_backoff_scales_the_trainers_learning_rate_and_trains_on(tiny, tmp_path):
    model, tok = tiny
    trainer = RetainTrainer(model=model, processing_class=tok,
                            args=TrainingArguments(**args(tmp_path / "hf")),
                            train_dataset=RetainStrategies([], model, tok).train_dataset(legal_rows()),
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    cb = RetainCallback(tok, trainer=trainer, probes=["writing"], n=8, out=tmp_path / "run",
                        guard={**GUARD, "action": "backoff", "max_backoffs": 3})
    trainer.add_callback(cb)
    trainer.train()
    g = cb.results["guard"]
    assert trainer.state.global_step == 8  # trained on
    assert g["backoffs"] >= 1 and [e["action"] for e in g["events"]][0] == "backoff"
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * g["lr_scale"])


def test_tokenized_rows_takes_every_shape(tiny):
    _, tok = tiny
    rows = [{"text": "The lessee shall pay rent."},
            {"prompt": "Add 2 and 3.", "completion": "5"},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
            {"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]},
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}]
    ex = tokenized_rows(rows, tok, seq_len=64)
    assert len(ex) == 5
    assert ex[0]["labels"] == ex[0]["input_ids"]  # text: loss on every token
    assert ex[1]["labels"][0] == -100 and ex[1]["labels"][-1] != -100  # the answer only
    assert ex[3]["labels"] == [-100, -100, 7, 8] and ex[4]["labels"] == [-100, 6, 7]
    with pytest.raises(UserError, match="row 0"):
        tokenized_rows([{"question": "?"}], tok)


@pytest.mark.parametrize("kw,match", [
    ({"probes": ["no_such_suite"]}, "unknown probe suite"),
    ({"guard": ["writing.ce_nats_per_token<0.4x"]}, "not a number"),
    ({"guard": ["math.accuracy>=0.9"], "probes": ["writing"]}, "no probe 'math.accuracy'"),
    ({"every": -1}, "every=-1"),
])
def test_callback_refuses_mistakes_before_training(tiny, tmp_path, kw, match):
    _, tok = tiny
    with pytest.raises(UserError, match=match):
        RetainCallback(tok, out=tmp_path / "run", **kw)


def test_callback_refuses_a_finished_run_folder(tiny, tmp_path):
    _, tok = tiny
    (tmp_path / rr.RESULTS_FILE).write_text("{}")
    with pytest.raises(UserError, match="not empty"):
        RetainCallback(tok, out=tmp_path)
    RetainCallback(tok, out=tmp_path, overwrite=True)  # allowed when asked


def test_self_replay_and_replay_mix_into_the_dataset(tiny):
    model, tok = tiny
    rows = legal_rows(30)
    kit = RetainStrategies([{"name": "self_replay", "fraction": 0.25, "num_prompts": 8,
                             "max_new_tokens": 8}], model, tok, seq_len=64, reference_n=16)
    ds = kit.train_dataset(rows, holdout=0)  # all 30 rows trained on
    info = kit.info["self_replay"]
    assert info["source"] == "self-generated" and info["replay_examples"] == 10  # 30 new: 25%
    assert len(ds) == 40 and ds.column_names == ["input_ids", "labels"]
    new = {tuple(e["input_ids"]) for e in tokenized_rows(rows, tok, seq_len=64)}
    assert sum(tuple(x) not in new for x in ds["input_ids"]) == 10  # the pseudo-examples


# -- the new domain's held-out split ---------------------------------------------------------------
def test_train_dataset_holds_the_domain_split_out(tiny):
    from retain.data import parse_record, split_holdout

    model, tok = tiny
    rows = legal_rows(40)
    rows += [dict(rows[0]), dict(rows[5])]  # duplicates: held out whole or trained whole
    tokenized = {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, 7, 8]}  # trained on, never held
    kit = RetainStrategies([], model, tok, seq_len=1024)  # untruncated: distinct examples
    ds = kit.train_dataset(rows + [tokenized])
    records = [parse_record(r, "") for r in rows]
    train, held = split_holdout(records, 0.1, seed=0)  # the split retain run makes of a file
    assert kit.heldout == held and len(held) == 4
    trained = {tuple(x) for x in ds["input_ids"]}
    for shape, payload in held:
        ex = tokenized_rows([{shape: payload}], tok, seq_len=1024)[0]
        assert tuple(ex["input_ids"]) not in trained
    assert len(ds) == len(train) + 1 and tuple(tokenized["input_ids"]) in trained
    with pytest.raises(UserError, match="once"):  # a second split would hide the first one
        kit.train_dataset(rows)
    none = RetainStrategies([], model, tok, seq_len=1024)
    assert len(none.train_dataset(rows, holdout=0)) == len(rows) and none.heldout == []


def test_callback_refuses_a_trainer_that_trains_on_the_held_out_rows(tiny, tmp_path):
    model, tok = tiny
    rows = legal_rows(40)
    kit = RetainStrategies([], model, tok, seq_len=1024)
    kit.train_dataset(rows)  # holds 4 rows out ...
    everything = Dataset.from_list(tokenized_rows(rows, tok, seq_len=1024))  # ... trained on anyway
    trainer = RetainTrainer(model=kit.model, processing_class=tok,
                            args=TrainingArguments(**args(tmp_path / "hf")),
                            train_dataset=everything,
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    trainer.add_callback(RetainCallback(tok, trainer=trainer, strategies=kit, probes=["writing"],
                                        n=8, out=tmp_path / "run"))
    with pytest.raises(UserError, match="4 of the rows held out"):
        trainer.train()
    assert trainer.state.global_step == 0


# -- the Trainer's resume_from_checkpoint ------------------------------------------------------------
class Crash(Exception):
    pass


class Kill(TrainerCallback):
    """A crash: at the start of optimizer step ``step + 1``, or in ``on_train_end``."""

    def __init__(self, step: int | None = None):
        self.step = step

    def on_step_begin(self, args, state, control, **kw):
        if self.step is not None and state.global_step == self.step:
            raise Crash

    def on_train_end(self, args, state, control, **kw):
        if self.step is None:
            raise Crash


def resumable(tmp_path, name: str, kill: Kill | None = None):
    """EWC + replay, a guard crossed at step 4 of 8 (stop, roll back to 2), a checkpoint every
    2 steps; a fresh model, kit and Trainer each time, as a new process would make them."""
    torch.manual_seed(0)
    model, tok = load_model("tiny", dtype="float32", device="cpu")
    kit = RetainStrategies(STRATEGIES, model, tok, seq_len=64, reference_n=64)
    trainer = RetainTrainer(
        model=kit.model, processing_class=tok, retain=kit,
        args=TrainingArguments(**args(tmp_path / f"hf-{name}", save_strategy="steps",
                                      save_steps=2)),
        train_dataset=kit.train_dataset(legal_rows()),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    if kill is not None:
        trainer.add_callback(kill)  # before the callback: its on_train_end runs first
    cb = RetainCallback(tok, trainer=trainer, strategies=kit, probes=["writing"], n=8, every=4,
                        guard=GUARD, out=tmp_path / f"run-{name}", data="legal.jsonl")
    trainer.add_callback(cb)
    return trainer, cb


def events(out) -> list[tuple]:
    return [(e["event"], e.get("stage"), e["step"])
            for e in map(json.loads, (out / rr.METRICS_FILE).read_text().splitlines())]


@pytest.mark.parametrize("kill", [3, None], ids=["killed-at-step-3", "killed-after-the-stop"])
def test_resume_from_checkpoint_continues_the_callbacks_run(tmp_path, kill):
    """Killed after the checkpoint of step 2 (resumed from it: the guard's check of step 2 and
    the before-results come from it, not from probing the partly trained weights), or in the
    after-probes once the guard had stopped at step 4 (resumed from step 4's checkpoint: it ends
    there, rolled back to step 2): the results are the uninterrupted run's."""
    trainer, cb = resumable(tmp_path, "whole")
    trainer.train()
    whole = cb.results

    trainer, cb = resumable(tmp_path, "cut", Kill(kill))
    with pytest.raises(Crash):
        trainer.train()
    # the crash is recorded (the mixin), and a failed run's folder takes the resumed run
    failed = json.loads((tmp_path / "run-cut" / rr.RESULTS_FILE).read_text())
    assert failed["status"] == "failed" and failed["failure"]["stage"] == "train"
    assert failed["failure"]["last_checkpoint"].endswith("checkpoint-2" if kill else "checkpoint-4")
    trainer, cb = resumable(tmp_path, "cut")
    trainer.train(resume_from_checkpoint=True)
    res = cb.results
    assert res["status"] == "complete"

    assert res["probes"]["before"] == whole["probes"]["before"]
    for k in ("rolled_back_to_step", "events", "backoffs"):
        assert res["guard"][k] == whole["guard"][k], k
    assert [c["step"] for c in res["guard"]["checks"]] == [c["step"] for c in whole["guard"]["checks"]]
    assert res["training"]["steps"] == whole["training"]["steps"] == 4
    curve, whole_curve = res["training"]["loss_curve"], whole["training"]["loss_curve"]
    assert [s for s, _ in curve] == [s for s, _ in whole_curve] == [2, 4]
    assert [v for _, v in curve] == pytest.approx([v for _, v in whole_curve], abs=1e-5)
    a = {c["key"]: c["after"] for c in whole["comparison"]}
    b = {c["key"]: c["after"] for c in res["comparison"]}
    assert b == pytest.approx(a, abs=1e-5) and "legal.ce_nats_per_token" in b
    assert res["drift"]["overall"]["l2"] == pytest.approx(whole["drift"]["overall"]["l2"], rel=1e-4)
    assert events(tmp_path / "run-cut") == events(tmp_path / "run-whole")


def test_resume_refuses_a_checkpoint_without_the_callbacks_state(tiny, tmp_path):
    model, tok = tiny
    trainer = RetainTrainer(model=model, processing_class=tok,
                            args=TrainingArguments(**args(tmp_path / "hf", max_steps=2,
                                                          save_strategy="steps", save_steps=2)),
                            train_dataset=Dataset.from_list(tokenized_rows(legal_rows(16), tok,
                                                                           seq_len=64)),
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    trainer.train()  # a checkpoint of step 2, written without RetainCallback
    trainer.args.max_steps = 4
    trainer.add_callback(RetainCallback(tok, trainer=trainer, probes=["writing"], n=8,
                                        out=tmp_path / "run"))
    with pytest.raises(UserError, match="checkpoint-2 holds no RetainCallback state"):
        trainer.train(resume_from_checkpoint=True)


def test_trainer_steps_read_distillations_cache(tiny, tmp_path):
    """Through the Trainer (its collator pads the batches its own way), every row a step sees was
    taught before training, replay's rows too: no step runs the teacher (it missed 9 of 64 rows
    when the cache was taught before replay mixed its rows in)."""
    model, tok = tiny
    kit = RetainStrategies([{"name": "distill"}, {"name": "replay", "fraction": 0.25}], model,
                           tok, seq_len=64, reference_n=8)
    trainer = RetainTrainer(model=kit.model, args=TrainingArguments(**args(tmp_path / "hf",
                                                                           max_steps=4)),
                            train_dataset=kit.train_dataset(legal_rows()),
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
                            processing_class=tok, retain=kit)
    trainer.train()
    cache = kit.strategies[0].cache
    assert (cache.hits, cache.misses) == (32, 0)


class _Raise(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 3:
            raise RuntimeError("the disk is full")


class _Poison(TrainerCallback):
    """NaN into every weight at the end of step 2: step 3's loss is NaN."""

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))


@pytest.mark.parametrize("how", ["error", "nan"])
def test_a_failed_trainer_run_leaves_a_failure_record(tiny, tmp_path, how):
    """An error out of ``train`` (the mixin) or a non-finite loss in the Trainer's logs: results.json
    says "failed" with the stage, step and reason, as a failed ``retain run`` does (it said
    nothing before: config.yaml and metrics.jsonl, no results); the folder may be reused."""
    model, tok = tiny
    kit = RetainStrategies([], model, tok, seq_len=64)
    trainer = RetainTrainer(model=kit.model, args=TrainingArguments(**args(tmp_path / "hf",
                                                                           logging_steps=1)),
                            train_dataset=kit.train_dataset(legal_rows(40)),
                            data_collator=DataCollatorForSeq2Seq(tok, padding=True),
                            processing_class=tok, retain=kit)
    out = tmp_path / "run"
    cb = RetainCallback(tok, trainer=trainer, strategies=kit, probes=["writing"], n=4, out=out)
    trainer.add_callback(cb)
    trainer.add_callback(_Raise() if how == "error" else _Poison())
    with pytest.raises(RuntimeError, match="the disk is full" if how == "error"
                       else "training failed at step 3: non-finite loss"):
        trainer.train()  # the mixin stops before step 3's update (the Trainer alone trains on)
    on_disk = json.loads((out / rr.RESULTS_FILE).read_text())
    assert on_disk["status"] == "failed" and on_disk["failure"]["stage"] == "train"
    assert on_disk["failure"]["step"] == 3
    reason = on_disk["failure"]["reason"]
    assert ("RuntimeError: the disk is full" in reason if how == "error"
            else "non-finite loss (nan); the weights are those of step 2" in reason)
    assert on_disk["config"]["out"] == str(out)
    RetainCallback(tok, probes=["writing"], n=4, out=out)  # a failed run's folder: no overwrite


def test_a_plain_trainers_nan_loss_stops_and_is_recorded(tiny, tmp_path):
    """Without the mixin the callback sees the loss in the Trainer's logs only (which show a NaN
    as 0 unless ``logging_nan_inf_filter=False``): training stops at that log, results.json
    says "failed", and no after-probes are run on NaN weights."""
    from transformers import Trainer

    model, tok = tiny
    trainer = Trainer(model=model, processing_class=tok,
                      args=TrainingArguments(**args(tmp_path / "hf", logging_steps=1,
                                                    logging_nan_inf_filter=False)),
                      train_dataset=Dataset.from_list(tokenized_rows(legal_rows(40), tok,
                                                                     seq_len=64)),
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True))
    out = tmp_path / "run"
    cb = RetainCallback(tok, trainer=trainer, probes=["writing"], n=4, out=out)
    trainer.add_callback(cb)
    trainer.add_callback(_Poison())
    trainer.train()
    assert trainer.state.global_step == 3 < 8
    on_disk = json.loads((out / rr.RESULTS_FILE).read_text())
    assert on_disk["status"] == "failed" and on_disk["failure"]["step"] == 3
    assert "non-finite training loss (nan) logged at step 3" in on_disk["failure"]["reason"]
    stages = [json.loads(x).get("stage") for x in (out / rr.METRICS_FILE).read_text().splitlines()]
    assert "after" not in stages
