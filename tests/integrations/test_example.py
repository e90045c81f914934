"""The README's TRL example is ``examples/trl_sft.py``, word for word, and it runs: here on 2 steps
and small probes (the only edits), from a fresh folder holding ``my_domain.jsonl``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "trl_sft.py"


def test_the_readme_shows_the_example_file():
    assert EXAMPLE.read_text().strip() in (ROOT / "README.md").read_text()


def test_the_example_runs(tmp_path):
    pytest.importorskip("trl")
    from retain.builtin import tasks

    with open(tmp_path / "my_domain.jsonl", "w") as f:
        for it in tasks.items("legal", "train", 64, 0):
            f.write(json.dumps({"text": it.text}) + "\n")
    code = EXAMPLE.read_text()
    for old, new in [("max_steps=100", "max_steps=2"),
                     ("every=20,", "every=20, probes=['safety'], n=8,")]:
        assert old in code
        code = code.replace(old, new)
    (tmp_path / "ex.py").write_text(code)
    r = subprocess.run([sys.executable, "ex.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "runs" / "sft" / "results.json").read_text())
    assert res["status"] == "complete" and res["strategy"] == "ewc+replay"
    assert res["training"]["steps"] == 2 and res["guard"]["final_check"]
    assert {c["key"] for c in res["comparison"]} >= {"safety.refusal_rate"}
