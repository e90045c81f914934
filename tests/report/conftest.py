"""Fixtures of the report tests: a run folder, a comparison folder, and charts not rasterized."""

from __future__ import annotations

from pathlib import Path

import pytest

from report_fixtures import TINY_PNG, make_comparison, make_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run", "lora", guard=True)


@pytest.fixture
def comparison_dir(tmp_path: Path) -> Path:
    return make_comparison(tmp_path / "cmp")


@pytest.fixture
def fast_figures(monkeypatch):
    """Charts are built as usual but not rasterized (a 1x1 PNG instead): rendering is most of
    a report's time, and most tests look at the page, not at the pixels."""
    from matplotlib.figure import Figure

    def savefig(self, fname, **kwargs):
        if hasattr(fname, "write"):
            fname.write(TINY_PNG)
        else:
            Path(fname).write_bytes(TINY_PNG)

    monkeypatch.setattr(Figure, "savefig", savefig)
