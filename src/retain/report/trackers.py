"""Training curves to experiment trackers (TensorBoard, W&B, MLflow, ...) through accelerate's
tracker API, named the way the ecosystem's ``report_to`` names them. ``metrics.jsonl`` stays the
record; trackers get a copy of each record as it is logged:

    acc_kwargs, init_kwargs = make_trackers(config.report_to, out)     # {} when none asked for
    acc = Accelerator(cpu=..., **acc_kwargs)                           # logs under out/trackers/
    start_trackers(acc, config.model_dump(mode="json"), init_kwargs)
    ...  log_metrics(acc, record)  for every metrics.jsonl record ...  acc.end_training()
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Iterable

from retain.errors import UserError

PROJECT = "retain"  # accelerate's project_name: TensorBoard writes to <project_dir>/trackers/retain
TRACKER_DIR = "trackers"
# report_to name -> the module it needs (and the pip package that provides it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "comet_ml": ("comet_ml", "comet-ml"),
            "aim": ("aim", "aim"), "clearml": ("clearml", "clearml"),
            "dvclive": ("dvclive", "dvclive"), "swanlab": ("swanlab", "swanlab"),
            "trackio": ("trackio", "trackio")}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _tensorboard_installed() -> bool:
    # accelerate's TensorBoard tracker takes torch.utils.tensorboard, which needs the package
    return _installed("tensorboard") or _installed("tensorboardX")


def normalize_report_to(report_to: str | Iterable[str] | None) -> list[str]:
    """``report_to`` as transformers accepts it: None / "none" / [] -> no tracker, "all" ->
    every installed one, a name or comma-separated names or a list -> those, in order."""
    if report_to is None:
        return []
    names = report_to.split(",") if isinstance(report_to, str) else list(report_to)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if names in ([], ["none"]):
        return []
    if "all" in names:
        return [n for n, (mod, _) in TRACKERS.items()
                if (_tensorboard_installed() if n == "tensorboard" else _installed(mod))]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"report_to: unknown tracker {unknown[0]!r}; choose from "
                        f"{', '.join(TRACKERS)}, 'all' or 'none'")
    return list(dict.fromkeys(names))


def make_trackers(report_to: str | Iterable[str] | None,
                  run_dir: str | Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """``(accelerator_kwargs, init_kwargs)``: ``Accelerator(**accelerator_kwargs)`` (``log_with``
    and ``project_dir`` = ``run_dir/trackers``; empty when no tracker is asked for) and the
    ``init_kwargs`` of ``init_trackers``. Raises ``UserError`` naming the pip package when a
    requested tracker is not installed (accelerate itself would drop it with a warning)."""
    names = normalize_report_to(report_to)
    for n in names:
        mod, pkg = TRACKERS[n]
        ok = _tensorboard_installed() if n == "tensorboard" else _installed(mod)
        if not ok:
            raise UserError(f"report_to {n!r} needs the {pkg} package: pip install {pkg}")
    if not names:
        return {}, {}
    init_kwargs = {"tensorboard": {"flush_secs": 10}} if "tensorboard" in names else {}
    return {"log_with": names, "project_dir": str(Path(run_dir) / TRACKER_DIR)}, init_kwargs


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"a.b": scalar}`` (lists and None as strings): what hparams accept."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        elif isinstance(v, (bool, int, float, str)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def start_trackers(accelerator, config: dict[str, Any] | None = None,
                   init_kwargs: dict[str, dict] | None = None) -> None:
    """``init_trackers`` with the run's config flattened (no-op without trackers)."""
    if accelerator.log_with:
        accelerator.init_trackers(PROJECT, config=flat_config(config or {}),
                                  init_kwargs=init_kwargs or {})


def tracker_values(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` record -> tracker scalars: ``train/loss``, ``train/lr``, ...;
    ``probe/<probe.metric>`` for the before and during probes and ``after/<probe.metric>`` for
    the final model (it may be a merge, so it is not the same curve). Non-numbers are dropped."""
    def ok(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    event = record.get("event")
    if event == "train":
        return {f"train/{k}": float(v) for k, v in record.items()
                if k not in ("event", "step") and ok(v)}
    if event == "probe":
        side = "after" if record.get("stage") == "after" else "probe"
        return {f"{side}/{k}": float(v) for k, v in (record.get("results") or {}).items() if ok(v)}
    return {f"{event or 'event'}/{k}": float(v) for k, v in record.items()
            if k not in ("event", "step") and ok(v)}


def log_metrics(accelerator, record: dict[str, Any], step: int | None = None) -> None:
    """Send one ``metrics.jsonl`` record to the trackers (main process only, as accelerate
    does; a no-op when none were asked for). ``step`` defaults to the record's own."""
    if not accelerator.log_with:
        return
    values = tracker_values(record)
    if values:
        accelerator.log(values, step=record.get("step") if step is None else step)
