"""A forecast against the finished run it forecast (``retain forecast --check RUN``): per capability
the error of the predicted after-score and whether the 80% interval held it; per probe the items
predicted lost against those lost (AUROC of the ranking, precision and recall of the predicted
set). Writes ``check.json`` beside forecast.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from retain.errors import UserError

CHECK_FILE = "check.json"


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve of ``scores`` for ``labels`` (Mann-Whitney, ties half);
    None when one class is empty."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found: give {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable JSON file ({e})") from None


def check(forecast_dir: str | Path, run_dir: str | Path) -> dict[str, Any]:
    """Compare the forecast in ``forecast_dir`` with the run in ``run_dir``; write check.json."""
    from retain.forecast import FORECAST_FILE
    from retain.report import results as rr

    fc = _read(Path(forecast_dir) / FORECAST_FILE, "the --out folder of a retain forecast")
    res = _read(Path(run_dir) / rr.RESULTS_FILE, "the folder of a finished retain run")
    out = {"kind": "forecast_check", "forecast": str(forecast_dir), "run": str(run_dir),
           **compare(fc, res, str(run_dir))}
    rr.write_json_atomic(Path(forecast_dir) / CHECK_FILE, out)
    return out


def compare(fc: dict[str, Any], res: dict[str, Any], run_dir: str = "the run") -> dict[str, Any]:
    """The check's numbers: a forecast (forecast.json's content) against a run's results."""
    if res.get("status") != "complete" or res.get("kind") not in (None, "run"):
        raise UserError(f"{run_dir} is not a complete run (status {res.get('status')!r})")
    after = {f"{r['probe']}.{r['metric']}": r for r in res["probes"]["after"]}
    before = {f"{r['probe']}.{r['metric']}": r for r in res["probes"]["before"]}
    steps = res["training"]["steps"]
    if steps != fc["plan"]["steps"] or res["config"]["lr"] != fc["plan"]["lr"]:
        raise UserError(f"{run_dir} trained {steps} steps at lr {res['config']['lr']:g}; the "
                        f"forecast planned {fc['plan']['steps']} at {fc['plan']['lr']:g}")
    rows = []
    for c in fc["capabilities"]:
        a = after.get(c["key"])
        if a is None or c["predicted"] is None:
            continue
        lo, hi = c["interval"]
        rows.append({"key": c["key"], "now": c["now"], "predicted": c["predicted"],
                     "actual": a["value"], "error": c["predicted"] - a["value"],
                     "abs_error": abs(c["predicted"] - a["value"]),
                     "interval": c["interval"], "covered": lo <= a["value"] <= hi})
    item_rows = []
    for key, it in fc["items"].items():
        b, a = before.get(key), after.get(key)
        if not b or not a or len(b["items"]) != len(a["items"]):
            continue
        lost = {i for i, (x, y) in enumerate(zip(b["items"], a["items"]))
                if x.get("ok") and not y.get("ok")}
        idx = [int(i) for i in it["risk"]]
        predicted = {t["index"] for t in it["top"] if t["predicted_lost"]}
        predicted |= set(sorted(idx, key=lambda i: -it["risk"][str(i)])[:it["predicted_lost"]])
        hit = len(predicted & lost)
        item_rows.append({"key": key, "lost": len(lost), "predicted_lost": len(predicted),
                          "auroc": auroc([it["risk"][str(i)] for i in idx],
                                         [i in lost for i in idx]),
                          "precision": hit / len(predicted) if predicted else None,
                          "recall": hit / len(lost) if lost else None})
    return {"capabilities": rows, "items": item_rows,
            "mean_abs_error": sum(r["abs_error"] for r in rows) / len(rows) if rows else None,
            "coverage": sum(r["covered"] for r in rows) / len(rows) if rows else None}
