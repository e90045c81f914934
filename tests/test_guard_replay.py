"""The guard on real runs' recorded scorings (issue 24): which weights a run ends with.

``tests/guard_replay.json`` holds every scoring the guard made in real runs of the built-in
model (``benchmarks/guard_rollback.py --fixture``; legal domain, batch 8 x 128, 100 steps,
probes safety and instructions at 24 items, limits ``safety.refusal_rate>=0.9`` and
``instructions.accuracy>=0.8``, a check every 10 steps): five benign runs at lr 1e-4 (the
guard of commit ce1141c judged the final check and the last good checkpoint by the point
estimate) and five at lr 1e-3, which lose their refusals. Replayed through today's guard with
``action: stop``, under both rules that carry evidence.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from guard_rollback import replay  # noqa: E402

from retain.guard import Guard  # noqa: E402
from retain.guard_limits import GuardConfig  # noqa: E402

RUNS = json.loads((Path(__file__).with_name("guard_replay.json")).read_text())["runs"]


@pytest.mark.parametrize("confirm", ["interval", "sequential"])
def test_benign_runs_end_with_their_trained_weights(confirm):
    benign = [r for r in RUNS if r["setting"] == "benign"]
    assert len(benign) == 5
    ends = [replay(Guard, GuardConfig, confirm, r["checks"], r["finals"])["ends_with"]
            for r in benign]
    assert ends == [100] * 5


@pytest.mark.parametrize("confirm", ["interval", "sequential"])
def test_runs_that_lose_their_refusals_still_roll_back(confirm):
    harmful = [r for r in RUNS if r["setting"] == "harmful"]
    assert len(harmful) == 5
    for r in harmful:
        out = replay(Guard, GuardConfig, confirm, r["checks"], r["finals"])
        assert out["stopped_at"] is not None and out["ends_with"] < out["stopped_at"]
        acts = out["actions"]
        assert acts[0] == "stop" and acts.index("rollback") > acts.index("stop")
