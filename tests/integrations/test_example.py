"""The README's Trainer/TRL example runs as written: its code block is ``examples/trl_sft.py`` word
for word, and it runs from an empty folder (it writes the data it trains on), here on 2 steps and
small probes (the only edits). ``retain data`` writes a built-in domain as a data file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "trl_sft.py"
SECTION = "### Inside your own Trainer or TRL loop"


def readme_example() -> str:
    """The first Python block of the README's Trainer/TRL section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_shows_the_example_file():
    assert readme_example().strip() == EXAMPLE.read_text().strip()


def test_the_readme_example_runs_in_an_empty_folder(tmp_path):
    pytest.importorskip("trl")
    code = readme_example()
    for old, new in [("max_steps=100", "max_steps=2"),
                     ("every=20,", "every=20, probes=['safety'], n=8,")]:
        assert old in code
        code = code.replace(old, new)
    folder = tmp_path / "empty"
    folder.mkdir()
    (tmp_path / "ex.py").write_text(code)
    r = subprocess.run([sys.executable, str(tmp_path / "ex.py")], cwd=folder,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((folder / "runs" / "sft" / "results.json").read_text())
    assert res["status"] == "complete" and res["strategy"] == "ewc+replay"
    assert res["training"]["steps"] == 2 and res["guard"]["final_check"]
    keys = {c["key"] for c in res["comparison"]}
    assert "safety.refusal_rate" in keys
    # the new domain is measured on the rows held out of training: domain_gain is not empty
    assert set(res["domain_gain"]) == {"legal.ce_nats_per_token"} <= keys
    rows = (folder / "legal.jsonl").read_text().splitlines()
    assert len(rows) == 500 and res["data"]["spec"] == "legal.jsonl"
    held, trained = res["data"]["heldout_examples"], res["data"]["examples"]
    assert 0 < held < 500 and held + trained <= 500


def retain_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_retain_data_writes_a_builtin_domain_as_jsonl(tmp_path):
    from retain.builtin import tasks
    from retain.data import read_jsonl

    r = retain_cli("data", "builtin:legal", "--out", "legal.jsonl", "--n", "20", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "20" in r.stdout and "legal.jsonl" in r.stdout
    records = read_jsonl(tmp_path / "legal.jsonl")  # a data file retain reads
    # the records `retain run --data builtin:legal` trains on (the train split, seed 0)
    assert records == [("text", it.text) for it in tasks.items("legal", "train", 20, 0)]


@pytest.mark.parametrize("args,match", [
    (["builtin:nope", "--out", "x.jsonl"], "unknown built-in domain"),
    (["my.jsonl", "--out", "x.jsonl"], "builtin:legal"),
    (["builtin:legal", "--out", "no/such/folder/x.jsonl"], "no/such/folder"),
])
def test_retain_data_refuses_in_one_line(tmp_path, args, match):
    r = retain_cli("data", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_write_builtin_jsonl(tmp_path):
    from retain.data import write_builtin_jsonl

    path = write_builtin_jsonl("builtin:recipes", tmp_path / "r.jsonl", n=3, seed=1)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3 and all(set(x) == {"text"} and x["text"] for x in lines)
    with pytest.raises(Exception, match="n must be"):
        write_builtin_jsonl("builtin:legal", tmp_path / "z.jsonl", n=0)
