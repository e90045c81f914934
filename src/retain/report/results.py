"""The run folder's files: the versioned ``results.json`` schema, atomic writers, ``summary.csv``
and the ``metrics.jsonl`` log. Every table, plot and page is a rendering of ``results.json``.

A run folder holds ``config.yaml`` (resolved config, written first), ``metrics.jsonl`` (one JSON
record per training log / probe event, appended as the run goes), ``summary.csv`` and, written
last and atomically, ``results.json`` (``"status": "complete"``): a folder without it is a run
that did not finish. ``model/`` holds the weights when ``save_model`` is on.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
RESULTS_FILE, SUMMARY_FILE, METRICS_FILE, CONFIG_FILE, MODEL_DIR = (
    "results.json", "summary.csv", "metrics.jsonl", "config.yaml", "model")
RUN_FILES = (RESULTS_FILE, SUMMARY_FILE, METRICS_FILE, CONFIG_FILE)
SUMMARY_COLUMNS = ("strategy", "probe", "metric", "before", "after", "delta", "higher_is_better")

# results.json, schema_version 1 (keys at the top level):
#   schema_version, retain_version, status ("complete"), created (ISO time), seed, wall_s
#   config        the resolved RunConfig
#   strategy      label, e.g. "lora+replay";  strategies: [{name, family, citation, config}]
#   strategy_info what strategies reported (RunContext.info)
#   model         {name, architecture, params, trainable_params, dtype, device}
#   data          {spec, examples, tokens, reference_spec, reference_examples}
#   training      {steps, tokens_seen, loss_tokens, tokens_per_s, wall_s, final_loss, lr, ...}
#   probes        {"before": [ProbeResult dict], "after": [...]}
#   comparison    [{key, probe, metric, capability, kind, higher_is_better, n, before, after,
#                   delta, forgetting, retention, before_ci, after_ci}]
#   domain_gain   {key: gain}  for probes of capability "domain" (positive = learnt)
#   drift         {overall: {l2, relative_l2, base_l2, tensors}, per_layer: {group: {...}}}


def retain_version() -> str:
    """The installed retain's version, as results.json and the report record it."""
    from retain.version import __version__

    return __version__


def header(status: str, seed: int | None, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The keys every results.json opens with: schema and retain versions, ``status``
    ("complete" or "failed"), the creation time (UTC), the seed and the resolved config, then
    ``extra`` (e.g. ``kind="diff"``)."""
    import datetime as dt

    return {"schema_version": SCHEMA_VERSION, "retain_version": retain_version(), "status": status,
            **extra, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": seed, "config": config}


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; a run folder is meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    write_bytes_atomic(Path(path), text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON, atomically (NaN is written as null: JSON has no NaN)."""
    text = json.dumps(_clean(obj), indent=2, ensure_ascii=False, allow_nan=False)
    write_text_atomic(path, text + "\n")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, Paths -> str, tuples -> lists."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a line (a log: an interrupted run keeps the lines written so far)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_clean(record), ensure_ascii=False) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per probe metric: the columns of ``summary.csv``."""
    return [{"strategy": results["strategy"], "probe": c["probe"], "metric": c["metric"],
             "before": c["before"], "after": c["after"], "delta": c["delta"],
             "higher_is_better": c["higher_is_better"]} for c in results["comparison"]]


def summary_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in SUMMARY_COLUMNS})
    return buf.getvalue()


def write_summary_csv(path: str | Path, results: dict[str, Any]) -> None:
    write_text_atomic(path, summary_csv(summary_rows(results)))


def read_results(path: str | Path) -> dict[str, Any]:
    """``results.json`` of a run folder (or the file itself); refuses unknown schema versions."""
    from retain.errors import UserError

    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise UserError(f"{p} does not exist (an unfinished run has no results.json)")
    results = json.loads(p.read_text(encoding="utf-8"))
    version = results.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{p}: schema_version {version!r}, this retain reads {SCHEMA_VERSION}")
    return results
