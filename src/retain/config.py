"""The run's configuration: one frozen pydantic model, where a typo is an error and not a default.

Load it from YAML with command-line style overrides (torchtune's idea):

    config = load_config("run.yaml", ["lr=3e-4", "strategies.0.r=16", "probes=[math,legal]"])

Strategy entries are validated by their own configs (``retain.strategies.build_strategies``) and
stored with every option resolved, so ``config.yaml`` in a run folder says exactly what ran.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retain.errors import UserError
from retain.guard_limits import GuardConfig


class RunConfig(BaseModel):
    """One fine-tuning run, measured before and after."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # the model
    model: str = "tiny"  # "tiny", "tiny-base", a local folder or a hub id
    dtype: str = "auto"  # the weights as loaded: auto = bf16 on CUDA when supported, else fp32
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    trust_remote_code: bool = False
    # the data
    data: str = "builtin:legal"  # a JSONL path or builtin:legal / support / recipes
    data_n: int | None = Field(None, gt=0)  # examples to use (built-in default 2000; JSONL: all)
    data_holdout: float = Field(0.1, ge=0, lt=1)  # JSONL data: share held out as the domain probe
    data_holdout_max: int = Field(200, gt=0)  # ... at most this many examples
    domain_probes: list[str] = Field(default_factory=list)  # your own domain probe JSONL files
    # held-out data files (the 3 data shapes): domain probes named after the file (a sequence's
    # earlier and later tasks), measured as a data file's own held-out split is
    heldout_probes: list[str] = Field(default_factory=list)
    # data of what to keep (replay, EWC): builtin:retained or a JSONL path, or a list of them
    # (concatenated, reference_n from each, then shuffled)
    reference: str | list[str] = "builtin:retained"
    reference_n: int = Field(512, gt=0)
    # the strategies, in hook order: [{name: lora, r: 16}, {name: replay}]
    strategies: list[dict[str, Any]] = Field(default_factory=lambda: [{"name": "full"}])
    # training
    lr: float = Field(1e-4, gt=0)
    steps: int = Field(100, gt=0)
    batch_size: int = Field(16, gt=0)  # per device and micro-batch
    grad_accum: int = Field(1, gt=0)  # micro-batches per optimizer step
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, no on CPU
    gradient_checkpointing: bool = False  # recompute activations in backward (the model's switch)
    # shard weights, gradients and AdamW's moments over the processes (FSDP2, retain.train.sharding)
    fsdp: bool = False
    seq_len: int = Field(256, gt=1)  # tokens per example (longer ones are truncated)
    warmup_steps: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"  # after the linear warm-up
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)  # None: no clipping
    seed: int = 0
    # measuring
    probes: list[str] = Field(default_factory=list)  # default: retained suites + the domain
    probe_n: int | None = Field(None, gt=0)  # items per probe (None: each suite's default)
    probe_every: int = Field(0, ge=0)  # probe during training every N steps (0: never)
    probes_during: list[str] | None = None  # the probes run during training (None: `probes`)
    probe_batch_size: int = Field(32, gt=0)
    # generated code (humaneval) where Linux namespaces cannot be made: auto runs it with
    # rlimits only and warns once; require refuses (retain.probes.sandbox)
    sandbox: Literal["auto", "require"] = "auto"
    log_every: int = Field(10, gt=0)  # a training record into metrics.jsonl every N steps
    report_to: str | list[str] | None = None  # trackers: "tensorboard", "wandb", "all", ...
    # limits checked while training, with rollback: [safety.refusal_rate>=0.9] (retain.guard)
    guard: GuardConfig | None = None
    # checkpoints: every N optimizer steps (0: none), the last K kept; resume: continue from one
    checkpoint_every: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, gt=0)
    resume: bool = False
    # output
    out: Path = Path("runs/run")  # default: runs/<strategies>-seed<seed>
    overwrite: bool = False
    save_model: bool = False
    # with save_model: the fine-tuned model's own diagonal Fisher on its training data (64
    # examples, empirical) beside it, model/fisher.safetensors, for retain merge --method fisher
    save_fisher: bool = False
    progress: bool = True

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("probes"):
            from retain.data import domain_of

            domain = domain_of(str(data.get("data", "builtin:legal")))
            data["probes"] = ["retained"] + ([domain] if domain else [])
        if data.get("out") in (None, ""):
            specs = data.get("strategies") or [{"name": "full"}]
            names = [s if isinstance(s, str) else str(s.get("name", "x")) for s in specs]
            data["out"] = Path("runs") / f"{'+'.join(names)}-seed{data.get('seed', 0)}"
        return data

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategies(cls, specs: Any) -> list[dict[str, Any]]:
        from retain.strategies import build_strategies

        if not isinstance(specs, list):
            raise UserError("strategies must be a list, e.g. [{name: lora, r: 16}]")
        # Validates names, options and combinations now, before anything is loaded.
        return [{"name": s.name, **s.config.model_dump(mode="json")}
                for s in build_strategies(specs)]


# Keys that say how a run is carried out, not what it computes: two configs that differ only in
# these are the same run (a comparison reuses its folder; --resume continues it).
NOT_IDENTITY = ("out", "overwrite", "resume", "progress", "checkpoint_every", "keep_checkpoints",
                "sandbox", "fsdp")  # fsdp: how the weights are laid out, not what is trained


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A config (as plain data) less the keys in ``NOT_IDENTITY``."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def _one_line(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(x) for x in e["loc"]) or "config"
    if e["type"] == "extra_forbidden":
        known = GuardConfig.model_fields if e["loc"][0] == "guard" else RunConfig.model_fields
        return f"config: unknown key {where!r} (known: {', '.join(known)})"
    return f"config: {where}: {e['msg'].removeprefix('Value error, ')}"


def parse_config(data: dict[str, Any]) -> RunConfig:
    """A ``RunConfig`` from plain data; a mistake becomes a one-line UserError."""
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise UserError(_one_line(e)) from None


def apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    """Apply one ``a.b=c`` override (``c`` read as YAML: numbers, lists, true/false) in place;
    a number in the path indexes a list (``strategies.0.r=16``)."""
    if "=" not in override:
        raise UserError(f"override {override!r} must look like key=value")
    path, raw = override.split("=", 1)
    keys = path.strip().split(".")
    value = yaml.safe_load(raw) if raw.strip() else None
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise UserError(f"override {override!r}: no item {key} in a list of {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise UserError(f"override {override!r}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and key not in node:
                node[key] = {}
            if isinstance(node[key], str) and keys[0] == "strategies":
                node[key] = {"name": node[key]}  # strategies: [lora] then strategies.0.r=16
            node = node[key]
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of config keys at the top level")
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                    **flags: Any) -> RunConfig:
    """A ``RunConfig`` from a YAML file (or the defaults when None), then keyword ``flags`` (the
    CLI's options, whole values), then ``a.b=c`` overrides: file < flags < overrides."""
    data = read_yaml(path) if path is not None else {}
    data.update({k: str(v) if isinstance(v, Path) else v for k, v in flags.items()})
    data = copy.deepcopy(data)  # overrides edit nested values: never the caller's
    if "strategies" in data or any(o.startswith("strategies.") for o in overrides):
        data["strategies"] = list(data.get("strategies") or [{"name": "full"}])
    for o in overrides:
        apply_override(data, o)
    return parse_config(data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A ``RunConfig`` from a YAML file (or the defaults when None) plus ``a.b=c`` overrides."""
    return load_run_config(path, overrides)


def to_yaml(config: RunConfig) -> str:
    """The resolved config as YAML (what ``config.yaml`` of a run folder holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
