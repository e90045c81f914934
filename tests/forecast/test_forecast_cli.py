"""``retain forecast`` end to end on the built-in model (as a user types it), ``--check`` against
the real run, and bad input as one line with exit code 2."""

import json
import subprocess
import sys

import pytest

PLAN = ["--data", "builtin:legal", "--steps", "40", "--lr", "1e-3", "--batch-size", "4",
        "--seq-len", "64", "--probes", "math", "--probes", "safety", "probe_n=8",
        "probe_batch_size=32", "progress=false"]


def retain(*args):
    return subprocess.run([sys.executable, "-m", "retain.cli", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def forecast_and_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    r = retain("forecast", *PLAN, "--limit", "safety.refusal_rate>=0.5", "--points", "2",
               "--select-n", "8", "--out", str(root / "fc"))
    assert r.returncode == 0, r.stderr[-2000:]
    r2 = retain("run", *PLAN, "--out", str(root / "run"))
    assert r2.returncode == 0, r2.stderr[-2000:]
    return root, r.stdout


def test_forecast_writes_what_it_prints(forecast_and_run):
    root, stdout = forecast_and_run
    fc = json.loads((root / "fc" / "forecast.json").read_text())
    assert fc["kind"] == "forecast" and fc["status"] == "complete"
    # the default budget (20% of 40 steps): two pilots of 4 steps, at the rate and twice it
    assert [(p["lr"], p["steps"], p["trained_steps"]) for p in fc["pilots"]] == [
        (1e-3, 4, 4), (2e-3, 4, 4)]
    caps = {c["key"]: c for c in fc["capabilities"]}
    assert set(caps) == {"math.accuracy", "safety.refusal_rate", "safety.over_refusal_rate"}
    for c in caps.values():
        assert c["law"] is not None and 0 < c["law"]["alpha"] <= 1
        lo, hi = c["interval"]
        assert lo <= c["predicted"] <= hi
        if c["link"] != "log":  # a proportion
            assert 0 <= lo and hi <= 1
    # the curve's points: 1 start + 2 per pilot, at areas that grow with step and rate
    xs = [p["x"] for p in caps["math.accuracy"]["points"]]
    assert len(xs) == 4 and xs[0] < xs[1] and xs[2] < xs[3] and xs[2] > xs[0]
    assert caps["math.accuracy"]["fitted_on"] == "selection"  # not the reported items
    lim = fc["limit_checks"][0]
    assert lim["limit"] == "safety.refusal_rate>=0.5" and isinstance(lim["kept"], bool)
    assert fc["verdict"]["keeps_all"] == lim["kept"]
    assert "verdict:" in stdout and "safety.refusal_rate" in stdout
    pilot = json.loads((root / "fc" / "pilots" / "lr=0.001" / "results.json").read_text())
    assert pilot["training"]["steps"] == 4 and pilot["training"]["stopped_early"]


def test_check_compares_the_forecast_with_the_run(forecast_and_run):
    root, _ = forecast_and_run
    r = retain("forecast", "--check", str(root / "run"), "--out", str(root / "fc"))
    assert r.returncode == 0, r.stderr[-2000:]
    ch = json.loads((root / "fc" / "check.json").read_text())
    run = json.loads((root / "run" / "results.json").read_text())
    actual = {c["key"]: c["after"] for c in run["comparison"]}
    for row in ch["capabilities"]:
        assert row["actual"] == pytest.approx(actual[row["key"]])
        assert row["error"] == pytest.approx(row["predicted"] - row["actual"])
        assert row["covered"] == (row["interval"][0] <= row["actual"] <= row["interval"][1])
    assert 0 <= ch["coverage"] <= 1 and "mean absolute error" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["--steps", "10"], "at least"),  # a budget too small for a pilot
    (["--budget", "2"], "budget"),
    (["--rates", "fast"], "--rates"),
    (["--limit", "nonsense"], "nonsense"),
    (["--limit", "poetry.accuracy>=0.5"], "poetry.accuracy"),
    (["--check", "/no/such/run"], "not found"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    r = retain("forecast", "--data", "builtin:legal", "--probes", "math", "probe_n=4",
               "--out", str(tmp_path / "fc"), *args)
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and needle in r.stderr


def test_report_renders_the_forecast_folder_with_its_check(forecast_and_run):
    from retain.forecast import FORECAST_FILE
    from retain.forecast.check import CHECK_FILE
    from retain.report.html import forecast as page

    assert (page.FORECAST_FILE, page.CHECK_FILE) == (FORECAST_FILE, CHECK_FILE)
    root, _ = forecast_and_run
    assert retain("forecast", "--check", str(root / "run"), "--out", str(root / "fc")).returncode == 0
    r = retain("report", str(root / "fc"))
    assert r.returncode == 0, r.stderr[-2000:]
    html = (root / "fc" / "report.html").read_text()
    fc = json.loads((root / "fc" / "forecast.json").read_text())
    assert fc["verdict"]["text"].split(":")[0] in html
    assert "in interval" in html and "AUROC" in html  # the check's columns
    assert (root / "fc" / "figures" / "forecast.png").read_bytes()[:4] == b"\x89PNG"
    assert "<script" not in html


def test_a_forecast_page_escapes_item_prompts(tmp_path):
    from retain.report.html.forecast import sections

    fc = {"kind": "forecast", "plan": {"strategies": ["full"], "lr": 1e-3, "steps": 10},
          "capabilities": [], "pilots": [], "limit_checks": [],
          "verdict": {"text": "no limits given"},
          "items": {"safety.refusal_rate": {"predicted_lost": 1, "scored": 1, "top": [
              {"rank": 1, "index": 0, "prompt": "<img src=x onerror=alert(1)>",
               "signal_now": -1.0, "signal_predicted": -2.0, "predicted_lost": True}]}}}
    html = "".join(sections(fc, {}))
    assert "<img src=x" not in html and "&lt;img src=x" in html
