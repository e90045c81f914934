"""`retain merge --search` on tiny random Llama folders: one point per alpha, alpha 0 is the base,
the chart and search.json are written, mistakes exit 2, and greedy soup picks from several."""

import json

import pytest
from typer.testing import CliRunner

from retain.cli import app
from retain.merging.search_cli import probe_scores
from retain.models import load_model
from retain.probes import load_probes

PROBES = ["--probes", "math", "--probes", "safety", "--probes", "legal", "--probe-n", "3"]


def invoke(args):
    return CliRunner().invoke(app, ["merge", "--search", *args])


def test_search_writes_one_point_per_alpha_and_alpha0_is_the_base(tiny, tmp_path):
    out = tmp_path / "search"
    res = invoke(["--base", str(tiny["base"]), str(tiny["ft1"]), "--out", str(out),
                  "--alphas", "0,0.5,1", *PROBES])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "search.json").read_text())
    assert [p["coefficient"] for p in record["points"]] == [0.0, 0.5, 1.0]
    assert record["domain"] == "legal.accuracy"
    assert "safety.over_refusal_rate" in record["retained"]
    model, tok = load_model(str(tiny["base"]), dtype="float32", device="cpu")
    base = probe_scores(model, tok, load_probes(["math", "safety", "legal"], n=3))
    # the grid and base_scores are on the selection part; the probes at n=3 are the reporting part
    assert record["points"][0]["scores"] == pytest.approx(record["base_scores"])
    assert record["reported"]["base"]["scores"] == pytest.approx(base)
    assert record["pick"]["reason"]
    assert (out / "curve.png").stat().st_size > 0
    assert "pick (min gain share 80%)" in res.output


def test_search_other_method_grids_its_option(tiny, tmp_path):
    out = tmp_path / "ties"
    res = invoke(["--base", str(tiny["base"]), str(tiny["ft1"]), str(tiny["ft2"]),
                  "--method", "ties", "--param", "scale", "--alphas", "0,1", "--out", str(out),
                  *PROBES])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "search.json").read_text())
    assert record["param"] == "scale" and len(record["points"]) == 2
    # ties with scale 0 adds no task vector: the base's scores
    assert record["points"][0]["scores"] == pytest.approx(record["base_scores"])


def test_search_soup_and_mistakes(tiny, tmp_path):
    two = ["--base", str(tiny["base"]), str(tiny["ft1"]), str(tiny["ft2"])]
    res = invoke([*two, "--out", str(tmp_path / "x"), *PROBES])
    assert res.exit_code == 2 and "--soup" in res.output
    res = invoke(["--base", str(tiny["base"]), "--out", str(tmp_path / "y")])
    assert res.exit_code == 2
    res = invoke([*two, "--soup", "--alphas", "1", "--out", str(tmp_path / "soup"), *PROBES])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "soup" / "search.json").read_text())
    assert record["soup"]["selected"] and len(record["soup"]["individual"]) == 2


def test_search_scores_the_domain_by_its_cross_entropy_gain(tiny, tmp_path):
    out = tmp_path / "ce"
    res = invoke(["--base", str(tiny["base"]), str(tiny["ft1"]), "--out", str(out),
                  "--alphas", "0,1", "--domain-metric", "ce", *PROBES])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "search.json").read_text())
    assert record["domain"] == "legal.ce_nats_per_token" and record["domain_metric"] == "ce"
    assert "legal.accuracy" not in record["retained"]  # the domain's own metrics are not retained
    model, tok = load_model(str(tiny["base"]), dtype="float32", device="cpu")
    from retain.probes import evaluate

    ce = next(r.value for r in evaluate(model, tok, load_probes(["legal"], n=3), progress=False)
              if r.metric == "ce_nats_per_token")
    assert record["reported"]["base"]["scores"]["legal.ce_nats_per_token"] == pytest.approx(-ce)
    assert record["points"][0]["scores"] == pytest.approx(record["base_scores"])
    assert record["pick"]["coefficient"] is not None


def test_search_takes_the_users_own_domain_probe(tiny, tmp_path):
    probe = tmp_path / "contracts.jsonl"
    probe.write_text("".join(json.dumps({"text": f"The Tenant shall pay rent on day {i}."}) + "\n"
                             for i in range(6)))
    out = tmp_path / "own"
    res = invoke(["--base", str(tiny["base"]), str(tiny["ft1"]), "--out", str(out),
                  "--alphas", "0,1", "--domain", str(probe), "--domain-metric", "ce",
                  "--probes", "math", "--probe-n", "3"])
    assert res.exit_code == 0, res.output
    record = json.loads((out / "search.json").read_text())
    assert record["domain"] == "contracts.ce_nats_per_token"
    assert record["retained"] == ["math.accuracy"]
    res = invoke(["--base", str(tiny["base"]), str(tiny["ft1"]), "--out", str(out),
                  "--domain", str(probe), "--probes", "math", "--probe-n", "3"])
    assert res.exit_code == 2 and "--domain-metric ce" in res.output  # no accuracy in a text probe
