"""The trade-off chart's labels: in a crowded chart (a dozen runs within a few hundredths of each
other, as a demo's mitigations are) no two label boxes overlap, none covers a point, and all stay
inside the axes; the placement is the same from one drawing to the next."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from retain.report import plots

CROWDED = {  # label -> (new-domain score, mean retained score)
    "full lr=1e-3": (1.00, 0.32), "ewc": (1.00, 0.76), "l2sp": (0.87, 0.91),
    "replay 25%": (1.00, 0.80), "self-replay 25%": (1.00, 0.79), "freeze top 1": (0.85, 0.78),
    "lora+replay": (0.99, 0.78), "wise-ft 0.5": (0.98, 0.77), "replay 50%": (1.00, 0.81),
    "distill": (0.97, 0.80), "lora r=16 on attention and MLP": (1.00, 0.78),
    "full lr=1e-4": (0.00, 0.89), "prompt tuning": (0.00, 0.05), "lora r=8": (0.01, 0.88),
}


def _drawn(points, monkeypatch, tmp_path: Path):
    """plot_tradeoff's figure, kept open (the chart is saved as usual): (figure, axes, labels,
    the renderer)."""
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: None)
    plots.plot_tradeoff(points, tmp_path / "t.png", base=(0.0, 0.9))
    fig = plt.gcf()
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t for t in ax.texts if t.get_text() in points]
    return fig, ax, labels, fig.canvas.get_renderer()


def test_crowded_labels_do_not_overlap(monkeypatch, tmp_path):
    fig, ax, labels, renderer = _drawn(CROWDED, monkeypatch, tmp_path)
    try:
        assert sorted(t.get_text() for t in labels) == sorted(CROWDED)
        boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in labels}  # text only
        for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2):
            assert not ba.overlaps(bb), f"{a!r} and {b!r} overlap"
        inside = ax.get_window_extent(renderer)
        for name, box in boxes.items():
            assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), name
            for x, y in CROWDED.values():  # no label covers a point
                px, py = ax.transData.transform((x, y))
                assert not box.contains(px, py), (name, x, y)
    finally:
        plt.close(fig)


def test_label_placement_is_deterministic(monkeypatch, tmp_path):
    places = []
    for _ in range(2):
        fig, ax, labels, renderer = _drawn(CROWDED, monkeypatch, tmp_path)
        places.append(sorted((t.get_text(), tuple(Text.get_window_extent(t, renderer).bounds))
                             for t in labels))
        plt.close(fig)
    assert places[0] == places[1]


def test_a_lone_point_keeps_its_label_beside_it(monkeypatch, tmp_path):
    fig, ax, labels, renderer = _drawn({"lora": (0.5, 0.5)}, monkeypatch, tmp_path)
    try:
        box = Text.get_window_extent(labels[0], renderer)
        px, py = ax.transData.transform((0.5, 0.5))
        assert 0 < box.x0 - px < 20 and abs(box.y0 - py) < 20  # just to its upper right
    finally:
        plt.close(fig)
