"""The command line end to end (as a user types it): help, listings, eval on the built-in model,
and user mistakes as one line on stderr with exit code 2, never a traceback."""

import json
import subprocess
import sys

import pytest


def retain(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command():
    r = retain("--help")
    assert r.returncode == 0
    for cmd in ("probes", "strategies", "eval", "run", "demo", "merge", "report", "compare", "sweep",
                "sequence", "fisher", "gram", "diff", "forecast"):
        assert cmd in r.stdout, cmd


@pytest.mark.parametrize("cmd", ["eval", "run", "demo", "merge", "report", "sequence", "fisher",
                                 "forecast"])
def test_every_command_has_help(cmd):
    r = retain(cmd, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout


def test_listings():
    assert "safety" in retain("probes").stdout
    out = retain("strategies").stdout
    assert "ewc" in out and "arxiv.org" in out


def test_eval_on_the_builtin_model(tmp_path):
    r = retain("eval", "--probes", "math", "--n", "8", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "r.json").read_text())["results"]
    assert res[0]["probe"] == "math" and res[0]["n"] == 8


@pytest.mark.parametrize("args, needle", [
    (["eval", "--model", "/no/such/folder"], "/no/such/folder"),
    (["eval", "--probes", "no_such_suite"], "no_such_suite"),
    (["run", "--strategy", "no_such_strategy"], "no_such_strategy"),
    (["run", "lr=oops"], "lr"),
    (["report", "/no/such/run"], "/no/such/run"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, needle):
    r = retain(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert needle in r.stderr


def test_malformed_probe_jsonl_names_file_and_line(tmp_path):
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"prompt": "2+2?", "answer": "4"}\n{"prompt": "no answer"}\n')
    r = retain("eval", "--probes", str(bad))
    assert r.returncode == 2
    assert f"{bad}:2:" in r.stderr and "Traceback" not in r.stderr


def test_readme_documents_every_registered_strategy_and_suite():
    from pathlib import Path

    from retain.probes import SUITES
    from retain.strategies import STRATEGIES

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in STRATEGIES:
        assert f"`{name}`" in readme, f"strategy {name} is not in the README"
    for name in SUITES:
        if name != "drift":
            assert name in readme, f"suite {name} is not in the README"


def test_example_configs_are_valid():
    """The files in examples/ are what the README points users to: each must parse."""
    from pathlib import Path

    from retain.experiments.compare import load_compare_file, plan
    from retain.config import load_config

    ex = Path(__file__).parents[1] / "examples"
    cfg = load_config(ex / "run.yaml")
    assert [s["name"] for s in cfg.strategies] == ["lora", "replay"]
    f = load_compare_file(ex / "compare.yaml")
    assert f["seeds"] == [0, 1, 2] and len(f["extra"]["runs"]) == 3
    import yaml

    from retain.experiments.sweep import expand, read_grid

    sw = yaml.safe_load((ex / "sweep.yaml").read_text())
    assert len(expand(sw["runs"], read_grid(sw["grid"]))) == 2 * 3 * 3
