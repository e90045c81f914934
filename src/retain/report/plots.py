"""PNG charts rendered from summary rows (``strategy,probe,metric,before,after,delta,
higher_is_better``): capabilities per strategy, the trade-off between learning the new domain
and keeping the old (one point per strategy, the Pareto front marked), and a heatmap of every
strategy's change on every probe metric.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize, to_rgb  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from retain.metrics.forgetting import PROPORTION_METRICS, oriented  # noqa: E402,F401 (re-exported)


def tradeoff_points(rows: Iterable[dict], domain_probes: set[str]) -> dict[str, tuple[float, float]]:
    """strategy -> (new-domain score, mean retained capability), both after training.

    The retained score is the mean of the proportion-type retained metrics, oriented so that
    higher is better; cross-entropy metrics are left out of the mean (they have no common scale)
    and stay in the tables. The domain score is the mean of the domain's proportion metrics.
    """
    acc: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["metric"] not in PROPORTION_METRICS:
            continue
        side = "domain" if r["probe"] in domain_probes else "retained"
        acc.setdefault(r["strategy"], {"domain": [], "retained": []})[side].append(
            oriented(r["metric"], float(r["after"])))
    return {s: (sum(v["domain"]) / max(1, len(v["domain"])),
                sum(v["retained"]) / max(1, len(v["retained"]))) for s, v in acc.items()}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points that no other point beats on both axes (higher is better on both)."""
    front = []
    for name, (x, y) in points.items():
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y)
                        for n2, (x2, y2) in points.items() if n2 != name)
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


def save_chart(fig, path: Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (a temporary file, renamed), close it;
    the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    plt.close(fig)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a chart is for everyone to read
    os.replace(tmp, path)
    return path


# Where a label may go around its point, in order of preference: offsets in points of the label's
# nearest corner from the point, with the alignment that puts the label on that side; tried at
# growing distances, so a crowded label ends up at the nearest free place (a leader line joins it).
_SIDES = ((1, 1, "left", "bottom"), (1, -1, "left", "top"), (-1, 1, "right", "bottom"),
          (-1, -1, "right", "top"), (0, 1, "center", "bottom"), (0, -1, "center", "top"),
          (1, 0, "left", "center"), (-1, 0, "right", "center"))
_RINGS = (5, 12, 20, 30, 42, 56, 72, 90, 110, 132, 156)  # distances, in points


def _overlap(a, b) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _crossings(a: tuple[float, float], b: tuple[float, float], boxes: list) -> int:
    """How many ``boxes`` the segment a-b passes through (sampled at 24 points)."""
    steps = [(a[0] + (b[0] - a[0]) * k / 24, a[1] + (b[1] - a[1]) * k / 24) for k in range(25)]
    return sum(any(o[0] < x < o[2] and o[1] < y < o[3] for x, y in steps) for o in boxes)


def place_labels(ax, points: dict[str, tuple[float, float]], *, fontsize: float = 8,
                 marks: Iterable[tuple[float, float]] = (), obstacles: Iterable = ()) -> list:
    """Label each point with its name so that no two labels overlap, none covers a point, an
    unlabelled mark (data coordinates) or an obstacle (display-space boxes, e.g. the legend's)
    and all stay inside the axes: a simple deterministic repel. The least crowded points are
    labelled first (they keep the place beside them); each label takes, among ``_SIDES`` at the
    distances ``_RINGS``, the free place nearest its point, a leader line across another label
    or point counting as 30 points farther; with no free place, the one it overlaps least.
    The annotations, in the order of ``points``."""
    fig = ax.figure
    fig.canvas.draw()  # the axes' place on the canvas, and a renderer to measure text with
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    pad = 1.5 * px_per_pt  # room between two labels
    dots = {n: tuple(ax.transData.transform(xy)) for n, xy in points.items()}
    dot_r = 4.5 * px_per_pt  # a marker of s=60 is about 7.7 points across

    def around(x: float, y: float) -> tuple[float, float, float, float]:
        return (x - dot_r, y - dot_r, x + dot_r, y + dot_r)

    markers = [around(*c) for c in dots.values()]
    markers += [around(*ax.transData.transform(xy)) for xy in marks]
    taken = markers + [tuple(b.extents) for b in obstacles]
    sizes = {}
    for name in points:  # each label's size, measured once
        t = ax.text(0, 0, name, fontsize=fontsize)
        b = t.get_window_extent(renderer)
        sizes[name] = (b.width + 2 * pad, b.height + 2 * pad)
        t.remove()
    near = 60 * px_per_pt

    def crowding(n: str) -> int:
        x, y = dots[n]
        return sum(abs(x - u) < near and abs(y - v) < near for u, v in dots.values()) - 1

    placed, labels = {}, []
    for name in sorted(points, key=lambda n: (crowding(n), -dots[n][1], dots[n][0], n)):
        (x, y), (w, h) = dots[name], sizes[name]
        own = around(x, y)
        best = None
        for r in _RINGS:
            for dx, dy, ha, va in _SIDES:
                cx, cy = x + dx * r * px_per_pt, y + dy * r * px_per_pt  # the anchor corner
                x0 = cx - (0 if ha == "left" else w if ha == "right" else w / 2)
                y0 = cy - (0 if va == "bottom" else h if va == "top" else h / 2)
                box = (x0, y0, x0 + w, y0 + h)
                bad = sum(_overlap(box, o) for o in taken) + h * (
                    max(0.0, frame.x0 - box[0]) + max(0.0, box[2] - frame.x1) +
                    max(0.0, frame.y0 - box[1]) + max(0.0, box[3] - frame.y1))
                cost = (1e6 + bad if bad > 0 else 0.0) + r
                if r > _RINGS[1]:
                    cost += 30 * _crossings((x, y), (cx, cy),
                                            labels + [m for m in markers if m != own])
                if best is None or cost < best[0]:
                    best = (cost, box, (dx * r, dy * r), ha, va, r)
        _, box, offset, ha, va, r = best
        taken.append(box)
        labels.append(box)
        placed[name] = ax.annotate(
            name, points[name], textcoords="offset points", xytext=offset, fontsize=fontsize,
            ha=ha, va=va, zorder=5,
            arrowprops=None if r <= _RINGS[1] else dict(arrowstyle="-", lw=0.5, color="0.55",
                                                         shrinkA=0, shrinkB=3))
    return [placed[n] for n in points]


def plot_tradeoff(points: dict[str, tuple[float, float]], path: Path, *,
                  base: tuple[float, float] | None = None, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(7, 5))
    front = pareto_front(points)
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=60, zorder=3, color="tab:blue" if name in front else "tab:gray")
    if len(front) > 1:
        ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--",
                color="tab:blue", alpha=0.6, label="Pareto front")
    if base is not None:
        ax.scatter([base[0]], [base[1]], marker="*", s=160, color="tab:orange", zorder=4,
                   label="before fine-tuning")
    ax.set_xlabel("new-domain score after (higher is better)")
    ax.set_ylabel("mean retained capability after (higher is better)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="best", fontsize=8)  # where it hides no point
    ax.set_title(title or "learning the new domain vs keeping the old")
    fig.canvas.draw()  # the legend's place, kept clear of labels
    place_labels(ax, points, marks=[base] if base is not None else [],
                 obstacles=[legend.get_window_extent()])
    return save_chart(fig, path)


def plot_capabilities(rows: list[dict], strategies: list[str], path: Path, title: str = "") -> Path:
    """Grouped bars: each proportion-type metric before, and after each strategy."""
    keys = []
    for r in rows:
        k = f"{r['probe']}.{r['metric']}"
        if r["metric"] in PROPORTION_METRICS and k not in keys:
            keys.append(k)
    by = {(r["strategy"], f"{r['probe']}.{r['metric']}"): r for r in rows}
    series = {"before": [next(float(by[(s, k)]["before"]) for s in strategies if (s, k) in by)
                         for k in keys]}
    for s in strategies:
        series[s] = [float(by[(s, k)]["after"]) if (s, k) in by else 0.0 for k in keys]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(keys)), 4.5))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colors: one per strategy
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(keys))], vals, width, label=name,
               color="black" if name == "before" else colors[(i - 1) % len(colors)], alpha=0.9)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels(keys, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (over-refusal: lower is better)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside the bars
    ax.set_title(title or "capabilities before and after fine-tuning")
    return save_chart(fig, path)


def plot_deltas(judged: dict[str, dict[str, dict]], strategies: list[str], path: Path,
                title: str = "") -> Path:
    """A heatmap, one row per strategy and one column per probe metric (retained first, the new
    domain last), of the change after training (``verdicts.judge``). The colour is the change
    oriented so that green is better and red worse, clipped at +-1 (proportions span 0-1; a
    cross-entropy change in nats saturates past it); the number is the delta as measured. A
    cell whose change is not real (no paired change, or an interval over seeds that holds 0)
    is drawn pale and hatched."""
    cells = {(s, k): c for s in strategies for k, c in judged.get(s, {}).items()}
    keys = list(dict.fromkeys(k for _, k in cells))
    keys.sort(key=lambda k: any(c["capability"] == "domain" for (_, k2), c in cells.items()
                                if k2 == k))
    cmap, norm = plt.get_cmap("RdYlGn"), Normalize(-1.0, 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys) + 3.0),
                                    max(2.4, 0.36 * len(strategies) + 1.8)))
    for i, s in enumerate(strategies):
        for j, k in enumerate(keys):
            c = cells.get((s, k))
            if c is None:
                continue
            good = c["delta"] if c["higher_is_better"] else -c["delta"]
            rgb = to_rgb(cmap(norm(max(-1.0, min(1.0, good)))))
            real = c["change"] is not None
            if not real:  # blended 75% toward white: the colour says which way, faintly
                rgb = tuple(0.25 * v + 0.75 for v in rgb)
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=rgb, hatch=None if real else "///",
                                   edgecolor="white" if real else "#c8ccd0", linewidth=0.8))
            ax.text(j + 0.5, i + 0.5, f"{c['delta']:+.2f}", ha="center", va="center", fontsize=7,
                    color="black" if real else "#57606a")
    ax.set_xlim(0, len(keys))
    ax.set_ylim(len(strategies), 0)  # the first strategy on top
    ax.set_xticks([j + 0.5 for j in range(len(keys))])
    arrows = {k: "↑" if c["higher_is_better"] else "↓" for (_, k), c in cells.items()}
    ax.set_xticklabels([f"{k} {arrows[k]}" for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_yticks([i + 0.5 for i in range(len(strategies))])
    ax.set_yticklabels(strategies, fontsize=8)
    ax.tick_params(length=0)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("change: green better, red worse (clipped at ±1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title((title + "\n" if title else "") + "change after fine-tuning (pale, hatched: not "
                 "a real change)", fontsize=10)
    return save_chart(fig, path)
