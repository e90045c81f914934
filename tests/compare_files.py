"""Helpers of the fan-out tests (test_fanout, test_launch): a tiny compare file and
``retain ARGS`` called in this process."""

from __future__ import annotations

import sys

import pytest
import yaml

from retain.cli import main


def compare_file(tmp_path, model_dir, name: str = "compare.yaml", **keys):
    """A tiny compare file (tests/test_compare.py's pattern): 2 runs, 1 seed, 2 steps; ``keys``
    replace or add top-level keys."""
    data = {"model": str(model_dir), "steps": 2, "batch_size": 2, "seq_len": 32, "warmup_steps": 0,
            "data_n": 4, "reference_n": 4, "probes": ["math"], "probe_n": 2, "progress": False,
            "out": str(tmp_path / "cmp"), "seeds": [0],
            "runs": [{"label": "full", "strategies": ["full"], "lr": 1e-3},
                     {"label": "lora r=2", "strategies": [{"name": "lora", "r": 2}], "lr": 1e-3}],
            **keys}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def cli(capsys, *args) -> tuple[int, str, str]:
    """``retain ARGS`` in this process: (exit code, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["retain", *map(str, args)]
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err
