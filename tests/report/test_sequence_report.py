"""The report of a task-sequence folder (``retain sequence``): built from planted task results
through ``summarize`` and ``write_sequences`` (no training), then rendered by ``build_report``:
the answer first (who ranks first, who forgets beyond noise), the ranking in order, each run's
matrices and retained capabilities, planted markup escaped, and a broken sequences.json refused
in one line."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from retain.errors import UserError
from retain.experiments import sequence as seq
from retain.experiments.runner import slug
from retain.experiments.sequence_metrics import summarize, write_sequences
from retain.report import html as rh
from retain.report.html import sequence as sh

from report_fixtures import PLANTED

pytestmark = pytest.mark.usefixtures("fast_figures")  # heatmaps as 1x1 PNGs: no rasterizing

TASKS = ["a", "b", "c"]
N_ITEMS = 20
SCRIPT_LABEL = f"{PLANTED} ewc"
ESCAPED_LABEL = "&lt;script&gt;alert(1)&lt;/script&gt; ewc"
BASE = {"a": 0.05, "b": 0.1, "c": 0.0, "math": 0.8}


def _rows(label: str, seed: int) -> list[dict[str, float]]:
    """Accuracy of tasks a, b, c and of the retained math: the base, then after each task."""
    if label == "full":  # learns each task, loses the earlier ones: BWT about -0.63
        return [BASE, {**BASE, "a": 0.913, "math": 0.7},
                {"a": 0.4, "b": 0.85, "c": 0.05, "math": 0.6},
                {"a": 0.2 + 0.01 * seed, "b": 0.3, "c": 0.95, "math": 0.5}]
    if label == "replay":  # keeps them: BWT about 0, its sign varying with the seed
        return [BASE, {**BASE, "a": 0.88, "math": 0.8},
                {"a": 0.87, "b": 0.8, "c": 0.05, "math": 0.8},
                {"a": 0.86 + 0.03 * (seed - 1), "b": 0.81, "c": 0.9, "math": 0.75}]
    return [BASE, {**BASE, "a": 0.9, "math": 0.75}, {"a": 0.8, "b": 0.8, "c": 0.0, "math": 0.7},
            {"a": 0.6 + 0.01 * seed, "b": 0.6, "c": 0.9, "math": 0.7}]


def _probes(values: dict[str, float]) -> list[dict]:
    """Probe results: accuracy with per-item outcomes (paired by prompt), and for each task a
    cross-entropy of 2 - accuracy without items (a second task metric)."""
    out = []
    for probe, v in values.items():
        k = round(v * N_ITEMS)
        out.append({"probe": probe, "metric": "accuracy", "value": v, "higher_is_better": True,
                    "capability": "math" if probe == "math" else "domain", "kind": "generation",
                    "n": N_ITEMS, "items": [{"prompt": f"{probe} {i}", "ok": i < k}
                                            for i in range(N_ITEMS)]})
        if probe != "math":
            out.append({"probe": probe, "metric": "ce", "value": 2.0 - v, "higher_is_better": False,
                        "capability": "domain", "kind": "perplexity", "n": N_ITEMS, "items": []})
    return out


def make_sequence(out: Path, labels=("full", "replay", SCRIPT_LABEL), seeds=(0, 1, 2)) -> Path:
    """A sequence folder as ``retain sequence`` writes it, from planted task results."""
    records = []
    for label in labels:
        for seed in seeds:
            rows, chain = _rows(label, seed), out / f"{slug(label)}-seed{seed}"
            results = [{"probes": {"before": _probes(rows[i]), "after": _probes(rows[i + 1])},
                        "config": {"out": str(chain / f"{i}-{t}")}, "wall_s": 2.0}
                       for i, t in enumerate(TASKS)]
            records.append(summarize(label, seed, TASKS, results))
    write_sequences(out, records, title="planted: a -> b -> c", show=False,
                    extra={"wall_s": 12.5, "seeds": list(seeds), "memory": 16})
    return out


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def _run_block(page: str, i: int) -> str:
    return _section(page, "runs").split(f'<h3 id="run-{i}">', 1)[1].split("<h3 ", 1)[0]


@pytest.fixture
def seq_dir(tmp_path: Path) -> Path:
    return make_sequence(tmp_path / "seq")


def test_the_page_leads_with_the_ranking_and_who_forgets(seq_dir: Path):
    path = rh.build_report(seq_dir)
    assert path == seq_dir / "report.html"
    page = path.read_text()
    assert re.findall(r'<section id="([a-z]+)">', page) == list(sh.SEQUENCE_SECTIONS)
    summary = _section(page, "summary")
    assert "<b>replay</b> ranks first by ACC of accuracy" in summary
    assert ("Sequential full fine-tuning (<b>full</b>) forgets the earlier tasks beyond noise"
            in summary)
    assert f"Forget the earlier tasks beyond noise: <b>{ESCAPED_LABEL}</b>, <b>full</b>." in summary
    assert "Do not forget them beyond noise: <b>replay</b>." in summary
    assert "Ranked by ACC of accuracy (the mean accuracy over the tasks after the last task, " \
           "higher is better)" in summary
    # the ranking table in ACC order, its forgets column right for each run
    rows = _section(page, "ranking").split("<tr>")[2:]
    assert [re.search(r"<td><b>(.*?)</b></td>", r).group(1) for r in rows] == [
        "replay", ESCAPED_LABEL, "full"]
    assert '<span class="gain">no</span>' in rows[0] and '<span class="loss">yes</span>' in rows[2]
    assert "best" in rows[0] and "(beyond noise)" in rows[2]


def test_each_run_shows_its_heatmap_matrices_and_retained_capabilities(seq_dir: Path):
    page = rh.build_report(seq_dir).read_text()
    full = _run_block(page, 3)  # third in the ranking
    assert full.startswith("full ")
    png = (seq_dir / "matrix-full.png").read_bytes()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in full
    # the primary matrix: rows base, after a, b, c; task a right after its training 0.913
    acc = full.split("<h4>accuracy ↑ (the primary metric)</h4>", 1)[1].split("<h4>", 1)[0]
    assert re.findall(r"<tr><td>(base|after [abc])</td>", acc) == [
        "base", "after a", "after b", "after c"]
    assert "<td><b>0.913</b></td>" in acc and "<td>0.210</td>" in acc  # a at the end, mean
    # BWT per seed: ((0.2 + 0.01 seed - 0.913) + (0.3 - 0.85)) / 2; the mean with its interval
    assert "<td>0: -0.632, 1: -0.627, 2: -0.622</td>" in acc
    assert re.search(r'<td>-0\.6\d\d <span class="ci">\[-0\.6\d\d, -0\.6\d\d\]</span></td>', acc)
    # the second metric in a table of its own: cross-entropy, 2 - accuracy
    assert "<h4>ce ↓</h4>" in full and "<td><b>1.087</b></td>" in full
    retained = full.split("Retained capabilities across the sequence", 1)[1]
    assert re.search(r"math\.accuracy ↑</td><td>0\.800</td><td>0\.700</td><td>0\.600</td>"
                     r"<td>0\.500</td>", retained)
    config = _section(page, "config")
    assert "a → b → c" in config and "12.5 s" in config and "<code>full-seed2/</code>" in config


def test_a_planted_label_is_escaped_everywhere(seq_dir: Path):
    page = rh.build_report(seq_dir).read_text()
    assert PLANTED not in page and re.search(r"<script\b", page, re.I) is None
    assert page.count(ESCAPED_LABEL) >= 5  # summary, ranking, vs-best, run heading, config


def test_one_seed_forgets_by_the_paired_test_on_the_items(tmp_path: Path):
    d = make_sequence(tmp_path / "one", labels=("replay", "full"), seeds=(0,))
    page = rh.build_report(d).read_text()
    summary = _section(page, "summary")
    assert "with one seed, no interval over seeds tells its lead from the noise" in summary
    assert ("Sequential full fine-tuning (<b>full</b>) forgets the earlier tasks beyond noise"
            in summary)
    assert "Do not forget them beyond noise: <b>replay</b>." in summary
    assert "(one seed)" in _section(page, "ranking")
    # the paired test of each earlier task: a lost 14 of 20 items in full, nothing in replay
    assert "p=0.000 -14/+0</td><td>changed beyond noise" in _run_block(page, 2)
    assert "changed beyond noise" not in _run_block(page, 1)


@pytest.mark.parametrize("text,match", [
    ("{not json", "sequences.json is not valid JSON"),
    ("[]", "not a summary written by retain sequence: not a JSON object"),
    ('{"metric": "accuracy", "tasks": [], "entries": [{}], "ranking": []}',
     "an entry lacks its label or matrices"),
])
def test_a_broken_sequences_json_is_a_one_line_error(tmp_path: Path, text: str, match: str):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "sequences.json").write_text(text)
    with pytest.raises(UserError, match=match) as e:
        rh.build_report(d)
    assert "\n" not in str(e.value) and not (d / "report.html").exists()


def test_a_figure_outside_the_folder_is_not_read(seq_dir: Path):
    (seq_dir.parent / "secret.png").write_bytes((seq_dir / "matrix-full.png").read_bytes())
    data = json.loads((seq_dir / "sequences.json").read_text())
    data["figures"] = {"full": "../secret.png"}
    (seq_dir / "sequences.json").write_text(json.dumps(data))
    page = rh.build_report(seq_dir).read_text()
    assert page.count("data:image/png") == 0 and "no heatmap of this run" in page


def test_the_summary_file_name_is_the_sequence_commands():
    assert sh.SUMMARY_FILE == seq.SUMMARY_FILE
