"""retain inside ``transformers.Trainer`` and TRL's ``SFTTrainer``: the probes before, during and
after training, the guard, and the strategies, in the loop you already run.

    class RetainSFTTrainer(RetainTrainerMixin, SFTTrainer):  # the strategies' penalties in its loss
        pass

    kit = RetainStrategies(["ewc", {"name": "replay", "fraction": 0.25}], model, tokenizer)
    trainer = RetainSFTTrainer(model=kit.model, args=..., train_dataset=kit.train_dataset(rows),
                               processing_class=tokenizer, retain=kit)  # 10% of rows held out
    trainer.add_callback(RetainCallback(tokenizer, trainer=trainer, strategies=kit,
                                        probes=["retained"], every=50, data="my_domain.jsonl",
                                        guard=["safety.refusal_rate>=0.9"], out="runs/sft"))
    trainer.train()        # then `retain report runs/sft`

``RetainCallback`` writes the run folder of ``retain run`` (``config.yaml``, ``metrics.jsonl``,
``summary.csv``, ``results.json``). The guard's decisions become the Trainer's: a rollback loads
the last passing trainable state into the model, ``stop`` sets ``control.should_training_stop``,
``backoff`` also scales the optimizer's learning rate and its schedule. ``RetainTrainerMixin``
adds the strategies' penalties to the Trainer's loss (``compute_loss``), once per optimizer step.

The new domain: the rows ``kit.train_dataset`` held out (``kit.heldout``) are probed before and
after, as ``retain run`` probes a JSONL's held-out split (``retain.probe_set.domain_probes``), so
``domain_gain`` is measured; the callback refuses a Trainer whose dataset holds them.

The Trainer's ``resume_from_checkpoint``: at each checkpoint the callback writes its state (the
before-results, the guard's checks and last good weights, the length of ``metrics.jsonl``) into
the Trainer's checkpoint folder, and the base weights of the trainable parameters (for drift and
KL-to-base probes) once into the run folder; a resumed run continues from them in the same run
folder, instead of probing partly trained weights as "before". A checkpoint without that state,
or other probes, is refused in one line.

A run that fails after it started gets ``results.json`` with ``"status": "failed"`` (the stage,
step, reason and the Trainer's last checkpoint), as a failed ``retain run`` does: an error out
of ``RetainTrainerMixin.train`` (``RetainCallback.fail``), a non-finite loss (the mixin stops
before that step's update, as ``retain run`` does), or with a plain ``Trainer`` a non-finite
loss in its logs (training stops there; the Trainer logs one as 0 unless
``logging_nan_inf_filter=False``). The same folder may then be used again without
``overwrite``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from retain.errors import UserError
from retain.integrations.kit import RetainStrategies, split_rows, to_dataset, tokenized_rows
from retain.report import results as rr
from retain.train import TrainingFailed
from retain.train.callbacks.recorder import clean_out_dir

__all__ = ["RetainCallback", "RetainStrategies", "RetainTrainerMixin", "RetainTrainer",
           "split_rows", "tokenized_rows", "to_dataset"]

STATE_FILE = "retain_callback"  # .json + .safetensors in each Trainer checkpoint folder
BASE_FILE = "trainer_base.safetensors"  # in the run folder: the trainable parameters' base


class RetainTrainerMixin:
    """Adds ``retain``'s (a ``RetainStrategies``) penalties to the loss of a ``Trainer``
    subclass: ``class MyTrainer(RetainTrainerMixin, SFTTrainer)``, then ``MyTrainer(...,
    retain=kit)``. The penalty counts once per optimizer step whatever the gradient
    accumulation (the Trainer's own scaling of the LM loss is read, not guessed), and only in
    training (not in evaluation)."""

    def __init__(self, *args, retain: RetainStrategies | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.retain = retain

    def train(self, *args, **kwargs):
        """The Trainer's ``train``; an error out of it is recorded by every ``RetainCallback``
        of this Trainer (``RetainCallback.fail``: results.json says "failed") and raised on."""
        try:
            return super().train(*args, **kwargs)
        except Exception as e:
            for cb in self.callback_handler.callbacks:
                if isinstance(cb, RetainCallback):
                    cb.fail(e, self.state.global_step, self.args.output_dir)
            raise

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        # return_outputs passed through: asking for outputs costs a second forward in TRL
        got = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                   num_items_in_batch=num_items_in_batch)
        loss, outputs = got if return_outputs else (got, None)
        if self.retain is not None and model.training:
            pen = self.retain.penalty(self.accelerator.unwrap_model(model), batch,
                                      outputs=outputs)
            if pen is not None:
                # The Trainer divides the loss by the accumulation steps afterwards unless it
                # was already normalized over the whole accumulated batch (num_items_in_batch).
                scaled = self.loss_is_scaled_for_ga
                if scaled is None:
                    scaled = ((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                              or self.compute_loss_func is not None)
                steps = self.current_gradient_accumulation_steps
                loss = loss + (pen / steps if scaled else pen).to(loss.dtype)
        if model.training and not torch.isfinite(loss.detach()).all():
            # before the backward and the update, as retain's own loop stops (the Trainer
            # would log the loss as 0 and train on): recorded by ``train`` below
            step = self.state.global_step + 1
            raise TrainingFailed(step, f"non-finite loss ({float(loss.detach().float().mean())});"
                                       f" the weights are those of step {step - 1}")
        return (loss, outputs) if return_outputs else loss


class RetainTrainer(RetainTrainerMixin, Trainer):
    """``transformers.Trainer`` with ``retain=RetainStrategies(...)``'s penalties in its loss."""


def _guard_config(guard: Any):
    from pydantic import ValidationError

    from retain.guard_limits import GuardConfig

    if guard is None or isinstance(guard, GuardConfig):
        return guard
    try:
        return GuardConfig.model_validate(guard)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "guard"
        raise UserError(f"guard.{where}: {err['msg']}") from None


class RetainCallback(TrainerCallback):
    """Probe, guard and record a Trainer's run into the run folder ``out``.

    ``probes``: suite names, groups or JSONL paths (as ``retain run --probes``), ``n`` items each;
    scored before training, every ``every`` optimizer steps (0: never; into the Trainer's logs as
    ``retain/<probe>.<metric>`` when ``trainer`` is given, so TensorBoard / W&B get them) and after.
    ``guard``: limits (``["safety.refusal_rate>=0.9"]``) or a guard mapping as in a run config
    (``{"limits": [...], "every": 20, "n": 24, "action": "backoff"}``). ``strategies``: the
    ``RetainStrategies`` the model was prepared with; finalized at train end, before the
    after-probes; the rows its ``train_dataset`` held out are the new domain's probe, named after
    ``data`` (the data's file name, e.g. ``"my_domain.jsonl"``: probe ``my_domain``; default
    ``domain``). ``domain_probes``: your own domain probe files (as ``retain run
    --domain-probe``). ``self.model`` is then the final model, ``self.results`` results.json.
    Every process of a multi-process run scores its share of the items; one writes.
    Input mistakes raise ``UserError`` here, before training. The Trainer's
    ``resume_from_checkpoint`` continues the callback's run from the checkpoint (module doc).

    The work is retain's own callbacks (``retain.train.callbacks``: the recorder, the probes,
    the guard), the ones ``retain run`` trains with; this class maps the Trainer's events onto
    them and carries out their decisions on the Trainer's model, optimizer and scheduler.
    """

    def __init__(self, tokenizer, *, probes: Sequence[str] = ("retained",), n: int | None = None,
                 every: int = 0, guard: Any = None, out: str | Path = "runs/trainer",
                 strategies: RetainStrategies | None = None, trainer: Trainer | None = None,
                 seed: int = 0, batch_size: int = 32, overwrite: bool = False,
                 data: str | None = None, drift: bool = True,
                 domain_probes: Sequence[str] = ()):
        from retain.preflight import check_writable, results_status
        from retain.probe_set import guard_parts
        from retain.probes import load_probes
        from retain.train.callbacks.probes import ProbeCallback
        from retain.train.callbacks.recorder import Recorder

        if every < 0:
            raise UserError(f"every={every}: give 0 (never) or a number of steps")
        self.tokenizer, self.kit, self.trainer = tokenizer, strategies, trainer
        self.specs, self.n, self.every, self.seed = list(probes), n, every, seed
        self.data, self.drift = data, drift
        self.domain_probe_files = list(domain_probes)
        self.guard_config = _guard_config(guard)  # the guard watches the retained probes
        # guarded probes: the guard chooses on a selection part, results report the rest
        self.retained, self.guard_probes, self.guard_verify, self.split = guard_parts(
            self.guard_config, self.specs, load_probes(self.specs, n=n, seed=seed), n, seed)
        self.out = Path(out)
        check_writable(self.out)
        status = results_status(self.out)
        if (self.out / rr.RESULTS_FILE).exists() and status != "failed" and not overwrite:
            raise UserError(f"run folder {self.out} is not empty; pass overwrite=True to replace "
                            f"it, or choose another out")
        self.overwrite = overwrite or status == "failed"  # a failed run may be redone there
        self.recorder = Recorder(self.out)
        # the domain's probes are added once the kit has split its rows (at train begin)
        self.probing = ProbeCallback(tokenizer, self.retained + self._domain_probes(),
                                     every=every, batch_size=batch_size, log=self.recorder.log)
        self._domain_known = strategies is None or strategies.heldout is not None
        self.callbacks: list = []  # recorder, probes, guard: made at train begin
        self.results: dict[str, Any] | None = None
        self.model: torch.nn.Module | None = None
        self._end_step: int | None = None  # resumed after the guard stopped: the run ends here
        self._failure: tuple[int, str] | None = None  # (step, reason): a non-finite loss logged
        self._run_config: dict[str, Any] | None = None  # config.yaml's, once the run started
        self._base_trainable: dict[str, torch.Tensor] | None = None  # for BASE_FILE

    @property
    def probes(self) -> list:
        return self.probing.probes

    @property
    def guard(self):
        """The run's ``retain.guard.Guard`` (None: no limits)."""
        return next((cb.guard for cb in self.callbacks if cb.name == "guard"), None)

    # -- helpers ------------------------------------------------------------------------------
    def _loop_state(self, state, model, optimizer=None, scheduler=None):
        from retain.train.callbacks import LoopState

        return LoopState(step=state.global_step if self._end_step is None else self._end_step,
                         max_steps=state.max_steps, model=model, optimizer=optimizer,
                         scheduler=scheduler, scaler=None, main=self.recorder.main,
                         accelerator=self.trainer.accelerator if self.trainer else None)

    def _to_trainer(self, values: dict[str, float], control) -> None:
        """Into the Trainer's logs (its history, console and trackers), when we know it. A log
        call clears ``control.should_log``: kept as it was, or the Trainer's own loss record of
        this step would be skipped."""
        if self.trainer is not None and values:
            should_log = control.should_log
            self.trainer.log(values)
            control.should_log = should_log

    def _mixed(self, args) -> str:
        return "bf16" if args.bf16 else "fp16" if args.fp16 else "no"

    def _domain_probes(self) -> list:
        """The new domain's probes (``retain.probe_set.domain_probes``, as ``retain run`` makes
        them): the kit's held-out rows, then the user's domain probe files."""
        from retain.config import parse_config
        from retain.probe_set import domain_probes

        held = self.kit.heldout if self.kit is not None and self.kit.heldout else []
        config = parse_config({"data": self.data or "domain", "probes": self.specs,
                               "probe_n": self.n, "seed": self.seed,
                               "seq_len": self.kit.seq_len if self.kit is not None else 512,
                               "domain_probes": self.domain_probe_files})
        return domain_probes(config, self.tokenizer, held, {p.name for p in self.retained})

    def _refuse_training_on_heldout(self) -> None:
        """The Trainer's dataset must not hold the rows the kit held out (the domain probe would
        score text the model trained on): a dataset made without ``kit.train_dataset``."""
        ds = self.trainer.train_dataset if self.trainer is not None else None
        if self.kit is None or "input_ids" not in (getattr(ds, "column_names", None) or []):
            return
        found = self.kit.heldout_in(ds["input_ids"])
        if found:
            raise UserError(f"the Trainer's train_dataset holds {found} of the rows held out "
                            f"as the new domain's probe (it would score text the model trained "
                            f"on): pass train_dataset=kit.train_dataset(rows), which leaves them "
                            f"out")

    def _snapshot_base(self, model) -> None:
        """The base the run is measured against, from ``model``'s current (base) weights: a CPU
        copy for drift, a frozen copy for KL-to-base probes, and the trainable parameters' base
        values for ``BASE_FILE`` (references into the drift copy where it has them)."""
        import copy

        from retain.models import copy_state

        plain = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._base_state = copy_state(plain) if self.drift else {}
        needs_base = any(getattr(p, "needs_base", False) for p in self.probes + self.guard_probes)
        self.probing.base_model = copy.deepcopy(model).eval() if needs_base else None
        self._base_trainable = None
        if self.drift or needs_base:
            plain_name = {id(p): n for n, p in plain.named_parameters()}
            self._base_trainable = {}
            for n, p in model.named_parameters():
                if p.requires_grad:
                    copied = self._base_state.get(plain_name.get(id(p), ""))
                    self._base_trainable[n] = (copied if copied is not None
                                               else p.detach().to("cpu", copy=True))

    def _start(self, args, state, model) -> None:
        """A fresh run: the run folder, the base, the before-probes, the guard's first check."""
        if self.recorder.main and not self.overwrite and any(
                (self.out / f).exists() for f in rr.RUN_FILES):
            raise UserError(f"run folder {self.out} holds an unfinished run; resume it with "
                            f"trainer.train(resume_from_checkpoint=...), or pass "
                            f"overwrite=True to start over")
        if self.recorder.main:
            (self.out / BASE_FILE).unlink(missing_ok=True)
        self._run_config = self._config(args, state, model)
        self.recorder.create(self._run_config, clean=self.out.is_dir())
        self.recorder.stage = "before"
        self._snapshot_base(model)
        self.probing.measure_before(model, state.global_step)
        for cb in self.callbacks:
            if cb.name == "guard":  # refuses limits the model fails already
                cb.start(model)
        self.recorder.stage = "train"

    def _resume(self, args, state, model, control) -> None:
        """A run resumed from the Trainer checkpoint of ``state.global_step``: the callbacks'
        state (the before-results, the guard, the length of ``metrics.jsonl``) as it was when
        the checkpoint was written, the base from the run folder. Refused in one line when the
        checkpoint holds no state of this callback, or of another run."""
        from safetensors.torch import load_file

        from retain.models import load_state
        from retain.train.callbacks.checkpointer import load_run_state

        step = state.global_step
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        where = folder / f"{STATE_FILE}.json"
        if not where.is_file():
            raise UserError(f"resuming at step {step}: {folder} holds no RetainCallback state "
                            f"(the callback writes it at each checkpoint); resume from a "
                            f"checkpoint of a run this callback recorded, or start over")
        js = json.loads(where.read_text(encoding="utf-8"))
        tensors = load_file(folder / f"{STATE_FILE}.safetensors") if js["tensors"] else {}
        try:
            load_run_state(tensors, js["state"], self.callbacks)
        except UserError as e:
            raise UserError(f"resuming at step {step}: {e}") from None
        if self.drift or any(getattr(p, "needs_base", False)
                             for p in self.probes + self.guard_probes):
            if not (self.out / BASE_FILE).is_file():
                raise UserError(f"resuming at step {step}: the run folder {self.out} has no "
                                f"{BASE_FILE} (the base weights the run is measured against); "
                                f"give the out of the run that wrote the checkpoint")
            base = load_file(self.out / BASE_FILE)
            now = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                   if p.requires_grad}
            if set(base) != set(now):
                raise UserError(f"resuming at step {step}: the model's trainable parameters are "
                                f"not those of the run in {self.out}")
            load_state(model, base)  # the base: in the model for a moment, then snapshot
            self._snapshot_base(model)
            load_state(model, now)
        else:
            self._base_state, self.probing.base_model = {}, None
        self._base_trainable = None  # BASE_FILE is there already
        self._run_config = self._config(args, state, model)
        self.recorder.stage = "train"
        if self.guard is not None and self.guard.stopped:  # the run had ended here: the
            self._end_step = step  # Trainer's one more step is void
            control.should_training_stop = True

    def _save_state(self, args, state) -> None:
        """The callbacks' state into the Trainer's checkpoint folder of ``state.global_step``
        (and, the first time, the base of the trainable parameters into the run folder)."""
        from retain.train.callbacks.checkpointer import run_state

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir():
            return
        if self._base_trainable is not None:
            _save_safetensors(self.out / BASE_FILE, self._base_trainable)
            self._base_trainable = None
        tensors, js = run_state(self.callbacks)
        if tensors:
            _save_safetensors(folder / f"{STATE_FILE}.safetensors", tensors)
        rr.write_text_atomic(folder / f"{STATE_FILE}.json",
                             json.dumps({"tensors": bool(tensors), "state": js}))

    # -- the Trainer's events -------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from retain.train.callbacks.guard import guard_callback
        from retain.train.precision import autocast

        self._t0 = time.perf_counter()
        self.recorder.main = state.is_world_process_zero
        if not self._domain_known:  # the kit split its rows after this callback was made
            self.probing.probes = self.probing.during = self.retained + self._domain_probes()
            self._domain_known = True
        self._refuse_training_on_heldout()
        device, mixed = next(model.parameters()).device, self._mixed(args)
        self.probing.context = lambda: autocast(device, mixed)
        self.callbacks = [self.recorder, self.probing]
        if self.guard_config is not None:
            self.callbacks.append(guard_callback(
                self.guard_config, self.probing, self.guard_probes, self.guard_verify,
                probe_every=self.every, steps=state.max_steps, log=self.recorder.log,
                main=self.recorder.main))
        if state.global_step > 0:  # the Trainer resumed from a checkpoint
            self._resume(args, state, model, control)
        else:
            self._start(args, state, model)
        self._trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for cb in self.callbacks:
            cb.on_train_begin(self._loop_state(state, model))

    def on_save(self, args, state, control, **kwargs):
        if self.recorder.main and self._end_step is None:
            self._save_state(args, state)

    def fail(self, error: BaseException, step: int, checkpoint_dir: str | None = None) -> None:
        """The run failed (``error`` raised out of ``Trainer.train`` at ``step``): results.json
        says so (stage, step, reason, the Trainer's last checkpoint), as a failed ``retain run``
        does. A ``UserError`` instead removes what this run wrote. ``RetainTrainerMixin.train``
        calls it; with a plain ``Trainer``, call it from your own ``except``."""
        if self._run_config is None or self.results is not None:
            return  # not started (nothing written), or already recorded
        if isinstance(error, UserError):
            if self.recorder.main:
                clean_out_dir(self.out)
            return
        last = get_last_checkpoint(checkpoint_dir) if checkpoint_dir and \
            Path(checkpoint_dir).is_dir() else None
        self.results = self.recorder.write_failure(error, self.seed, self._run_config, step=step,
                                                   checkpoint=Path(last) if last else None)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        logs = logs or {}
        loss = logs.get("loss")
        if self._end_step is None and loss is not None and not math.isfinite(loss) \
                and self._failure is None:
            # the update is made already (the Trainer has no check before it): stop and record
            self._failure = (state.global_step, f"non-finite training loss ({loss}) logged at "
                                                f"step {state.global_step}")
            control.should_training_stop = True
        if self._end_step is None and "loss" in logs:  # the Trainer's training log
            record = {"event": "train", "step": state.global_step, "loss": logs["loss"],
                      "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
            for cb in self.callbacks:
                cb.on_log(self._loop_state(state, model), record)

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None,
                    **kwargs):
        from retain.train.callbacks import apply_decision, as_decision

        step = state.global_step
        if self._end_step is not None:  # resumed after the guard stopped: nothing more to do
            control.should_training_stop = True
            return control
        loop = self._loop_state(state, model, optimizer, lr_scheduler)
        for cb in self.callbacks:
            if apply_decision(as_decision(cb.on_step_end(loop)), model, optimizer, lr_scheduler):
                control.should_training_stop = True
        if self.probing.last and self.probing.last[0] == step:  # probed now
            self._to_trainer({f"retain/{r.key}": r.value for r in self.probing.last[1]}, control)
        guard = self.guard
        if guard is not None and guard.checks and guard.checks[-1]["step"] == step:
            check = guard.checks[-1]
            self._to_trainer({f"retain/guard/{k}": v for k, v in check["values"].items()}
                             | {"retain/guard/passed": float(check["passed"])}, control)
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        from retain.train.callbacks.recorder import model_info, results

        if self._failure is not None:  # a non-finite loss: no after-probes on such weights
            step, reason = self._failure
            self.fail(TrainingFailed(step, reason), step, args.output_dir)
            return control
        self.recorder.stage = "after"
        loop = self._loop_state(state, model)
        step = loop.step
        for cb in self.callbacks:  # the guard's final check (and rollback when it fails)
            cb.on_train_end(loop)
        if self.kit is not None and not self.kit.finalized:
            model = self.kit.finalize(model)
        model.eval()
        after = self.probing.after(model, step)
        self.model = model
        losses = [h for h in state.log_history if "loss" in h and h.get("step", step + 1) <= step]
        p = next(model.parameters())
        extra = {"probe_split": self.split} if self.split else {}
        self.results = results(
            config=self._config(args, state, model), seed=self.seed,
            strategies=self.kit.strategies if self.kit is not None else [],
            strategy_info=self.kit.info if self.kit is not None else {}, model=model,
            model_info=model_info(model, name=_model_name(model), trainable=self._trainable,
                                  dtype=p.dtype, device=p.device, mixed=self._mixed(args)),
            data={"spec": self.data or "the Trainer's train_dataset",
                  **(self.kit.data_info if self.kit is not None else {})},
            training={"steps": step, "stopped_early": step < state.max_steps,
                      "lr": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                      "grad_accum": args.gradient_accumulation_steps,
                      "processes": args.world_size, "trainer": _trainer_name(self.trainer),
                      "final_loss": losses[-1]["loss"] if losses else None,
                      "loss_curve": [[h["step"], h["loss"]] for h in losses]},
            before=self.probing.before, after=after, base_state=self._base_state,
            callbacks=self.callbacks, wall_s=time.perf_counter() - self._t0, **extra)
        self.recorder.write(self.results)
        return control

    def _config(self, args, state, model) -> dict[str, Any]:
        """What ran, for config.yaml and results.json (the Trainer's settings that matter)."""
        return {"model": _model_name(model), "data": self.data or "the Trainer's train_dataset",
                "trainer": _trainer_name(self.trainer), "steps": state.max_steps,
                "lr": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                "grad_accum": args.gradient_accumulation_steps, "seed": self.seed,
                "strategies": [{"name": s.name, **s.config.model_dump(mode="json")}
                               for s in (self.kit.strategies if self.kit is not None else [])],
                "probes": self.specs, "probe_n": self.n, "probe_every": self.every,
                "guard": self.guard_config.model_dump(mode="json") if self.guard_config else None,
                "out": str(self.out)}


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """``tensors`` into ``path``, atomically (a temporary file renamed into place)."""
    import os

    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _model_name(model) -> str:
    plain = model.get_base_model() if hasattr(model, "get_base_model") else model
    return str(getattr(getattr(plain, "config", None), "_name_or_path", "") or type(plain).__name__)


def _trainer_name(trainer) -> str:
    return type(trainer).__name__ if trainer is not None else "transformers.Trainer"
