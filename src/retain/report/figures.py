"""The report's own charts, from a run's ``metrics.jsonl`` and ``results.json``: the training loss,
each probe over the steps, and the weight drift per layer (relative L2). Each chart is saved as a
PNG (atomically) and its bytes are returned, so the HTML report can embed the same image.
Several runs (a comparison) share one chart, one colour per run label.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from retain.report.results import write_bytes_atomic  # noqa: E402

Series = list[tuple[int, float]]  # (step, value) points in step order


def figure_png(fig, dpi: int = 110, tight: bool = False) -> bytes:
    """``fig`` rendered to PNG bytes at ``dpi`` (cropped to its content when ``tight``), then
    closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: Path) -> bytes:
    """Render ``fig`` to PNG bytes, write them to ``path`` atomically, close it; the bytes."""
    data = figure_png(fig, dpi=130, tight=True)
    write_bytes_atomic(Path(path), data)
    return data


def read_metrics(path: Path) -> list[dict[str, Any]] | None:
    """The records of a ``metrics.jsonl``, or None when the file is absent. A line cut short by
    an interrupted run (or any line that is not a JSON object) is skipped, not fatal."""
    if not path.is_file():
        return None
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def loss_series(records: list[dict]) -> Series:
    """(step, total loss) of the ``"train"`` records."""
    return [(int(r["step"]), float(r["loss"])) for r in records
            if r.get("event") == "train" and _finite(r.get("loss")) and _finite(r.get("step"))]


def probe_series(records: list[dict]) -> dict[str, Series]:
    """``probe.metric`` -> (step, value) over the ``"probe"`` records (before at step 0, during,
    after at the last step), in file order."""
    out: dict[str, Series] = {}
    for r in records:
        if r.get("event") != "probe" or not _finite(r.get("step")):
            continue
        for key, value in (r.get("results") or {}).items():
            if _finite(value):
                out.setdefault(str(key), []).append((int(r["step"]), float(value)))
    return out


def _colours(labels: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def plot_loss(curves: dict[str, Series], path: Path) -> bytes:
    """Training loss against steps, one line per run label."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    colours = _colours(list(curves))
    for label, pts in curves.items():
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="." if len(pts) < 30 else None,
                label=label, color=colours[label])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (LM + penalties)")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    ax.set_title("training loss")
    return save_figure(fig, path)


def plot_probe_curves(curves: dict[str, dict[str, Series]], path: Path) -> bytes:
    """One panel per ``probe.metric``; in each, one line per run label (``curves[key][label]``).
    The last point of each line is the model after the strategies' finalize step."""
    keys = list(curves)
    labels = list(dict.fromkeys(label for key in keys for label in curves[key]))
    colours = _colours(labels)
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for label, pts in curves[key].items():
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", markersize=3,
                    label=label, color=colours[label])
        ax.set_title(key, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.subplots_adjust(hspace=0.55, wspace=0.3)  # fixed spacing: tight_layout doubles the draw
    if len(labels) > 1:  # the legend takes the title's place
        fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="lower center",
                   ncol=min(len(labels), 5), fontsize=8, bbox_to_anchor=(0.5, 0.93))
    else:
        fig.suptitle("probes during training", y=0.98)
    return save_figure(fig, path)


def short_layer_names(names: list[str]) -> list[str]:
    """Drop a prefix every name shares up to a dot (``model.layers.3`` -> ``layers.3``)."""
    parts = [n.split(".") for n in names]
    k = 0  # leading segments shared by all names (each keeps at least two)
    while len(parts) > 1 and all(len(p) > k + 2 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return [".".join(p[k:]) for p in parts]


def plot_drift(per_layer: dict[str, dict[str, dict]], path: Path) -> bytes:
    """Grouped bars of relative L2 drift ``||W - W0|| / ||W0||`` per layer group, one colour per
    run label (``per_layer[label][group]``), groups in the order the model lists them."""
    labels = list(per_layer)
    groups = list(dict.fromkeys(g for label in labels for g in per_layer[label]))
    colours = _colours(labels)
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(groups) * max(1, len(labels)) + 2), 4))
    for i, label in enumerate(labels):
        vals = []
        for g in groups:
            v = (per_layer[label].get(g) or {}).get("relative_l2")
            vals.append(float(v) if _finite(v) else 0.0)
        ax.bar([j + i * width for j in range(len(groups))], vals, width, label=label,
               color=colours[label])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels(short_layer_names(groups), rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("relative L2  ||W - W0|| / ||W0||")
    ax.grid(axis="y", alpha=0.3)
    if len(labels) > 1:
        ax.legend(fontsize=8)
    ax.set_title("weight drift from the base, per layer")
    return save_figure(fig, path)
