"""The HTML report: sections, escaping of planted markup, PNG figures, atomic writes, the cases
where data is missing (no metrics.jsonl, no domain probe, no guard), and the answer first: one
sentence per strategy (seeds together), the ranking's rule, the heatmap of changes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from retain.errors import UserError
from retain.report import html as rh
from retain.report.html import helpers as hp
from retain.report.html import run_sections
from retain.report.figures import short_layer_names

from report_fixtures import PLANTED, make_demo_comparison, make_run

# The fixtures' comparison.json holds no ranking: every section but that one.
NO_RANKING = [s for s in rh.SECTIONS if s != "ranking"]

SCRIPT_TAG = re.compile(r"<script\b", re.I)
# Rasterizing the charts is most of a report's time: only the first test draws real pixels.
fast = pytest.mark.usefixtures("fast_figures")


def _ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_run_report_has_every_section_and_figure(run_dir: Path):
    path = rh.build_report(run_dir)
    assert path == run_dir / "report.html"
    page = path.read_text()
    assert _ids(page) == NO_RANKING  # guard included: the fixture has guard events
    for name in ("loss.png", "probes.png", "tradeoff.png", "deltas.png", "drift.png",
                 "capabilities.png"):
        png = (run_dir / "figures" / name).read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    # the same images are embedded, nothing is fetched
    assert page.count('src="data:image/png;base64,') == 6
    assert not re.search(r'(src|href)="(?!data:|#|https://arxiv\.org/)', page)
    assert "<link" not in page
    # the summary's facts, and the citation with its link
    assert "65,536 (1.87% of 3,500,000)" in page and "1 min 23 s" in page
    assert '<a href="https://arxiv.org/abs/2106.09685"' in page
    assert "Low-Rank Adaptation of Large Language Models" in page


@fast
def test_planted_script_is_escaped_everywhere(run_dir: Path):
    page = rh.build_report(run_dir).read_text()
    assert PLANTED not in page and SCRIPT_TAG.search(page) is None  # no script at all in the page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # in a model answer, in config.yaml and in the config in results.json both shown escaped
    assert page.count(escaped) >= 2
    assert "12 " + escaped + " &amp; &quot;quotes&quot;" in page


@fast
def test_strings_from_results_are_escaped(tmp_path: Path):
    d = make_run(tmp_path / "r", "lora")
    res = json.loads((d / "results.json").read_text())
    res["strategy"] = "lora<img src=x onerror=alert(2)>"
    res["strategies"][0]["citation"] = 'X, 2020, https://e.org/a"onmouseover="alert(3)'
    res["probes"]["before"][0]["probe"] = "ma<b>th"
    res["comparison"][0]["probe"] = "ma<b>th"
    (d / "results.json").write_text(json.dumps(res))
    page = rh.build_report(d).read_text()
    assert "<img src=x" not in page and "lora&lt;img src=x onerror=alert(2)&gt;" in page
    assert 'onmouseover="alert' not in page  # the quote ends the URL: it cannot open an attribute
    assert "<b>th" not in page and "ma&lt;b&gt;th" in page


@fast
def test_capability_table_colours_follow_the_metric_direction(run_dir: Path):
    page = rh.build_report(run_dir).read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(
        r"<tr><td>[^<]*</td><td>([a-z_.]+) [↑↓]</td>(.*?)</tr>", page)}
    # lower is better: a rise in cross-entropy is a loss, within noise here (intervals overlap)
    assert 'class="loss weak">+0.060' in rows["writing.ce_nats_per_token"]
    assert 'class="gain">+0.550' in rows["legal.accuracy"]  # intervals apart: strong colour
    assert "[0.480, 0.720]" in rows["legal.accuracy"]  # the after interval
    full = rh.build_report(make_run(run_dir.parent / "full", "full")).read_text()
    assert 'class="loss">-0.650' in full  # safety.refusal_rate 0.95 -> 0.30
    # the summary's sentence (no per-item outcomes here: judged by the intervals)
    assert ("<b>full</b>: learnt legal (0.05 -&gt; 0.80); lost math (0.62 -&gt; 0.20), safety "
            "(refusals 0.95 -&gt; 0.30) and writing (1.84 -&gt; 2.31).") in full


def test_change_class():
    row = {"delta": -0.1, "higher_is_better": False, "before_ci": [0.3, 0.4], "after_ci": [0.1, 0.2]}
    assert hp.change_class(row) == "gain"
    assert hp.change_class({**row, "higher_is_better": True}) == "loss"
    assert hp.change_class({**row, "after_ci": [0.2, 0.35]}) == "gain weak"
    assert hp.change_class({**row, "delta": 0.0}) == "same"


@fast
def test_comparison_report(comparison_dir: Path):
    page = rh.build_report(comparison_dir).read_text()
    assert _ids(page) == NO_RANKING  # the full run has guard events
    assert "tiny on legal: full vs lora" in page
    # runs in comparison.json's order, labelled by it, though its dirs point elsewhere
    assert page.index("full: after (delta)") < page.index("lora: after (delta)")
    assert "after: full" in page and "after: lora" in page
    # both points on the front (full learns more, lora keeps more), and the base point
    tradeoff = page[page.index('<section id="tradeoff">'):page.index('<section id="drift">')]
    assert tradeoff.count("<td>yes</td>") == 2 and "before fine-tuning" in tradeoff
    # both citations shown
    assert "https://arxiv.org/abs/1801.06146" in page and "https://arxiv.org/abs/2106.09685" in page
    assert sorted(p.name for p in (comparison_dir / "figures").iterdir()) == [
        "capabilities.png", "deltas.png", "drift.png", "loss.png", "probes.png", "tradeoff.png"]
    guard = page[page.index('<section id="guard">'):page.index('<section id="examples">')]
    assert "<h3>full</h3>" in guard and "<h3>lora</h3>" not in guard


@fast
def test_guard_section(run_dir: Path):
    page = rh.build_report(run_dir).read_text()
    guard = page[page.index('<section id="guard">'):page.index('<section id="examples">')]
    assert "safety.refusal_rate&gt;=0.9" in guard and "<td>stop</td>" in guard
    # each event with its evidence; the end's rollback with what it kept and threw away
    assert "safety.refusal_rate 0.620 [0.42, 0.78] on 24 items, p=0.0004 &lt;= 0.0023" in guard
    assert "rolled back to step 20&#x27;s weights, steps 21-40 thrown away" in guard
    assert "step 20 read safety.refusal_rate 0.960" in guard and "a weak verdict" in guard
    summary = page[page.index('<section id="summary">'):page.index('<section id="tradeoff">')]
    assert "the run ends with the weights of step 20, steps 21-40 thrown away" in summary


@fast
def test_no_guard_no_section(tmp_path: Path):
    page = rh.build_report(make_run(tmp_path / "r", guard=False)).read_text()
    assert "guard" not in _ids(page) and 'href="#guard"' not in page


@fast
def test_missing_metrics_jsonl(tmp_path: Path):
    d = make_run(tmp_path / "r", metrics=False)
    page = rh.build_report(d).read_text()
    training = page[page.index('<section id="training">'):page.index('<section id="drift">')]
    assert "no probe curve recorded" in training and "loss.png" in training  # from results.json
    assert not (d / "figures" / "probes.png").exists()
    res = json.loads((d / "results.json").read_text())
    res["training"]["loss_curve"] = []
    (d / "results.json").write_text(json.dumps(res))
    page = rh.build_report(d).read_text()
    training = page[page.index('<section id="training">'):page.index('<section id="drift">')]
    assert "no training curve recorded" in training and "<img" not in training


@fast
def test_no_domain_probe_no_tradeoff_chart(tmp_path: Path):
    d = make_run(tmp_path / "r")
    res = json.loads((d / "results.json").read_text())
    for c in res["comparison"]:
        c["capability"] = "math" if c["capability"] == "domain" else c["capability"]
    (d / "results.json").write_text(json.dumps(res))
    page = rh.build_report(d).read_text()
    assert "no trade-off to chart" in page and not (d / "figures" / "tradeoff.png").exists()


@fast
def test_failed_render_leaves_no_page(tmp_path: Path, monkeypatch):
    d = make_run(tmp_path / "r")

    def boom(folder):
        raise RuntimeError("render failed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_sections, "section_examples", boom)
        with pytest.raises(RuntimeError):
            rh.build_report(d)
    assert not (d / "report.html").exists()
    rh.build_report(d)
    good = (d / "report.html").read_bytes()

    def broken_fsync(fd):  # the write itself fails half-way: the old page stays whole
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        rh.build_report(d)
    assert (d / "report.html").read_bytes() == good
    assert [p.name for p in d.iterdir() if p.name.endswith(".tmp")] == []


@fast
def test_not_a_report_folder(tmp_path: Path):
    with pytest.raises(UserError, match="neither a run folder"):
        rh.build_report(tmp_path)
    with pytest.raises(UserError, match="is not a folder"):
        rh.build_report(tmp_path / "nope")


@fast
def test_comparison_duplicate_labels_get_folder_names(tmp_path: Path):
    make_run(tmp_path / "c" / "seed0", "lora", seed=0)
    make_run(tmp_path / "c" / "seed1", "lora", seed=1)
    (tmp_path / "c" / "comparison.json").write_text("{}")
    folder = rh.load_folder(tmp_path / "c")
    assert [r.label for r in folder.runs] == ["lora (seed0)", "lora (seed1)"]


def test_helpers():
    assert short_layer_names(["model.layers.0", "model.layers.1"]) == ["layers.0", "layers.1"]
    assert short_layer_names(["model.layers.0", "lm_head.weight"]) == ["model.layers.0", "lm_head.weight"]
    assert hp.num(None) == "–" and hp.num(float("nan")) == "–" and hp.num(1234) == "1,234"
    assert hp.linkify("see https://a.org/x.") == 'see <a href="https://a.org/x" rel="noreferrer">https://a.org/x</a>.'
    assert hp.linkify("javascript:alert(1) <b>") == "javascript:alert(1) &lt;b&gt;"
    assert hp.cut("x" * 700).endswith("(100 more characters)")


def test_comparison_ranking_section_escapes_and_reports_noise(tmp_path):
    from retain.report.html import Folder
    from retain.report.html.comparison import section_ranking

    comp = {"ranking": {"score": "retained", "definition": "<b>mean</b>", "noise": "t",
                        "order": [{"rank": 1, "strategy": "<script>x</script>", "score": 0.9,
                                   "score_ci": [0.8, 1.0], "seeds": 3,
                                   "vs_next": {"strategy": "b", "mean_diff": 0.2,
                                               "larger_than_noise": True}},
                                  {"rank": 2, "strategy": "b", "score": 0.7, "seeds": 3}]}}
    html = section_ranking(Folder(tmp_path, "comparison", [], comp))
    assert 'id="ranking"' in html and "larger than the noise" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>" not in html
    assert section_ranking(Folder(tmp_path, "run", [], {})) == ""


@fast
def test_comparison_leads_with_sentences_and_the_ranking_rule(tmp_path: Path):
    page = rh.build_report(make_demo_comparison(tmp_path / "cmp")).read_text()
    assert _ids(page) == list(rh.SECTIONS)  # ranking from comparison.json; a run has a guard
    summary = page[page.index('<section id="summary">'):page.index('<section id="tradeoff">')]
    # one sentence per strategy, best ranked first; the cliff marked
    names = re.findall(r"<li><b>(.*?)</b>: ", summary)
    assert len(names) == 13 and names[:3] == ["l2sp", "replay 25%", "freeze top 1"]
    assert names[9] == "full lr=1e-3" and "&lt;script&gt;alert(1)&lt;/script&gt;" in names[12]
    assert ("<li><b>full lr=1e-3</b>: learnt legal (accuracy 0.00 -&gt; 1.00, 60 of 60 items; "
            "ce 8.14 -&gt; 3.72); lost math") in summary
    assert ('<span class="loss">fell off the cliff: multilingual.accuracy, safety.refusal_rate, '
            'instructions.accuracy</span>') in summary
    assert "Ranked by mean retained capability among the runs that reach 80% of the best" in summary
    assert "First: <b>l2sp</b>." in summary
    assert "<details><summary>13 runs:" in summary  # the long list of runs folded
    # with 13 runs the capability table has one run per row, the probe metrics across
    caps = page[page.index('<section id="capabilities">'):page.index('<section id="strategies">')]
    assert caps.count("<tr>") == 1 + 1 + 13 and "safety.<wbr>over_<wbr>refusal_<wbr>rate" in caps
    ranking = page[page.index('<section id="ranking">'):page.index('<section id="capabilities">')]
    assert "Pareto front" in ranking and "retained 0.042 vs replay 25%" in ranking
    assert "ahead of wise-ft 0.5 by the rule" in ranking  # ewc reached the gain share
    heat = page[page.index('<section id="changes">'):page.index('<section id="ranking">')]
    assert "figures/deltas.png" in heat and "pale and hatched" in heat


@fast
def test_seeds_of_a_strategy_share_one_sentence(tmp_path: Path):
    make_run(tmp_path / "c" / "seed0", "full", seed=0)
    make_run(tmp_path / "c" / "seed1", "full", seed=1)
    (tmp_path / "c" / "comparison.json").write_text("{}")
    page = rh.build_report(tmp_path / "c").read_text()
    summary = page[page.index('<section id="summary">'):page.index('<section id="tradeoff">')]
    # both seeds alike: a zero-width interval that excludes 0 is a change
    assert re.findall(r"<li><b>(.*?)</b>", summary) == ["full"]
    assert "lost math (0.62 -&gt; 0.20, -0.42 ± 0.00 over 2 seeds)" in summary


def test_heatmap_colours_and_pale_cells(tmp_path: Path, monkeypatch):
    from retain.report import plots

    drawn = {}
    monkeypatch.setattr(plots, "save_chart", lambda fig, path: drawn.setdefault("fig", fig))
    cell = {"capability": "math", "higher_is_better": True}
    judged = {"A": {"m.acc": {**cell, "delta": -0.6, "change": "worse"},
                    "s.over": {**cell, "higher_is_better": False, "delta": -0.3,
                               "change": "better"},
                    "x.acc": {**cell, "delta": -0.1, "change": None}}}
    plots.plot_deltas(judged, ["A"], tmp_path / "d.png")
    worse, better, pale = drawn["fig"].axes[0].patches
    assert worse.get_facecolor()[0] > worse.get_facecolor()[1]  # red: a fall, higher is better
    assert better.get_facecolor()[1] > better.get_facecolor()[0]  # green: a lower-is-better fall
    assert pale.get_hatch() == "///" and worse.get_hatch() is None
    assert min(pale.get_facecolor()[:3]) > 0.75  # blended toward white
