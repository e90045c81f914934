"""The report of a merge-search folder (``retain merge --search``): a search.json written by hand,
with and without its curve.png, rendered by ``build_report``: the pick first and marked in the
grid, every value shown, a cross-entropy domain shown as the (positive) cross-entropy, planted
markup escaped, and a broken search.json refused in one line."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from retain.errors import UserError
from retain.report import html as rh
from retain.report.html import search as sh

from report_fixtures import PLANTED, TINY_PNG

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
FT = f"runs/{PLANTED}-ft"
RETAINED = ["math.accuracy", "safety.refusal_rate"]


def _search(ce: bool = False, soup: bool = False, picked: float | None = 0.5) -> dict:
    """A search.json as ``run_search`` writes it: wise_ft over alpha 0, 0.5, 1."""
    domain = "legal.ce_nats_per_token" if ce else "legal.accuracy"
    new = [-2.5, -1.75, -1.25] if ce else [0.2, 0.61, 0.7]
    kept = [(0.8, 0.9), (0.75, 0.85), (0.4, 0.6)]
    points = [{"coefficient": c, "scores": {domain: n, RETAINED[0]: m, RETAINED[1]: r},
               "retained_mean": (m + r) / 2}
              for c, n, (m, r) in zip([0.0, 0.5, 1.0], new, kept)]
    record = {"base": "models/base", "finetunes": [FT] + (["runs/other"] if soup else []),
              "method": "wise_ft", "param": "alpha", "domain": domain,
              "domain_metric": "ce" if ce else "accuracy",
              "domain_score": "minus cross-entropy, nats per token" if ce else "proportion",
              "retained": RETAINED, "min_gain_share": 0.8, "probe_n": 64, "seed": 7,
              "base_scores": points[0]["scores"], "finetune_scores": points[2]["scores"],
              "points": points,
              "pick": {"coefficient": picked, "retained_mean": 0.8 if picked is not None else None,
                       "gain_share": 0.82 if picked is not None else None,
                       "reason": (f"coefficient {picked:g} keeps 82% of the new-domain gain with "
                                  f"mean retained score 0.800") if picked is not None else
                       "no point keeps 80% of the new-domain gain (+0.500)"},
              "chart": "curve.png"}
    if not ce:
        del record["domain_metric"]  # older files: accuracy
    if soup:
        record["soup"] = {"selected": [FT], "individual": [0.65, 0.41], "objective": 0.66,
                          "history": [[0, 0.65, True], [1, 0.6, False]]}
    return record


def _folder(tmp_path: Path, record: dict, curve: bool = True, name: str = "search") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / sh.SEARCH_FILE).write_text(json.dumps(record), encoding="utf-8")
    if curve:
        (d / "curve.png").write_bytes(TINY_PNG)
    return d


def _section(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def _rows(section: str) -> list[list[str]]:
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", r) for r in body.split("<tr>")[1:]]


def test_the_file_name_is_the_one_run_search_writes():
    from retain.merging.search_cli import CURVE_FILE, SEARCH_FILE

    assert sh.SEARCH_FILE == SEARCH_FILE and _search()["chart"] == CURVE_FILE


def test_the_page_leads_with_the_pick_and_marks_it_in_the_grid(tmp_path: Path):
    d = _folder(tmp_path, _search())
    path = rh.build_report(d)
    assert path == d / "report.html"
    page = path.read_text()
    assert re.findall(r'<section id="([a-z]+)">', page) == ["summary", "curve", "points",
                                                           "settings"]
    assert "<title>retain report: wise_ft search over alpha</title>" in page
    summary = _section(page, "summary")
    assert ("Picked: <b>alpha = 0.5</b> (82% of the new-domain gain): coefficient 0.5 keeps 82% "
            "of the new-domain gain with mean retained score 0.800." in summary)
    assert "Method <b>wise_ft</b>" in summary and "<code>models/base</code>" in summary
    assert f"<code>runs/{ESCAPED}-ft</code>" in summary
    # base, fine-tune and pick: the new domain and the retained mean
    assert [r[1:] for r in _rows(summary)] == [["0.200", "0.850"], ["0.700", "0.500"],
                                              ["0.610", "0.800"]]
    assert "at least 80% of the fine-tune&#x27;s gain" in summary
    rows = _rows(_section(page, "points"))
    assert [r[0] for r in rows] == ["0", '<span class="mark">0.5 ★ picked</span>', "1"]
    assert rows[1][1:] == ["0.610", "0.800", "0.750", "0.850"]
    assert "legal.<wbr>accuracy ↑" in _section(page, "points")
    settings = _section(page, "settings")
    for fact in ("<th>probe_n</th><td>64</td>", "<th>seed</th><td>7</td>",
                 "<th>min_gain_share</th><td>0.800 (80%)</td>",
                 "<th>domain_metric</th><td>accuracy</td>"):
        assert fact in settings
    assert "<script" not in page and "http" not in page.split("</footer>")[0].split("<main>")[1]


def test_the_curve_is_embedded_when_it_is_there(tmp_path: Path):
    with_curve = rh.build_report(_folder(tmp_path, _search())).read_text()
    b64 = base64.b64encode(TINY_PNG).decode()
    assert f'src="data:image/png;base64,{b64}"' in _section(with_curve, "curve")
    without = rh.build_report(_folder(tmp_path, _search(), curve=False, name="bare")).read_text()
    assert "data:image/png" not in without
    assert "no curve image (curve.png) in the folder" in _section(without, "curve")
    # a chart named with a folder in it is never read
    record = dict(_search(), chart="../curve.png")
    d = _folder(tmp_path, record, name="escape")
    (tmp_path / "curve.png").write_bytes(TINY_PNG)
    assert "data:image/png" not in rh.build_report(d).read_text()


def test_a_cross_entropy_domain_shows_the_positive_cross_entropy(tmp_path: Path):
    page = rh.build_report(_folder(tmp_path, _search(ce=True))).read_text()
    points = _section(page, "points")
    assert "(cross-entropy, nats per token) ↓" in points
    assert [r[1] for r in _rows(points)] == ["2.500", "1.750", "1.250"]
    assert [r[1] for r in _rows(_section(page, "summary"))] == ["2.500", "1.250", "1.750"]
    assert "-1.750" not in page and "-2.500" not in page
    assert "<th>domain_metric</th><td>ce</td>" in _section(page, "settings")


def test_the_soup_and_no_pick(tmp_path: Path):
    page = rh.build_report(_folder(tmp_path, _search(soup=True, picked=None))).read_text()
    summary = _section(page, "summary")
    assert "No coefficient picked: no point keeps 80% of the new-domain gain (+0.500)." in summary
    assert "★ picked" not in _section(page, "points") and "combined by greedy soup" in summary
    soup = _section(page, "soup")
    assert f"Kept: <code>runs/{ESCAPED}-ft</code>; the soup's objective 0.660" in soup
    assert ["<code>runs/other</code>", "0.410", "no"] in _rows(soup)
    assert ["2", "<code>runs/other</code>", "0.600", "dropped"] in _rows(
        soup.split("</table>", 1)[1])


@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({k: v for k, v in _search().items() if k != "points"}),
     "points is missing or not a list"),
    (json.dumps(dict(_search(), points=[{"coefficient": "x", "scores": {}}])),
     "a point lacks its coefficient or scores"),
    (json.dumps(dict(_search(), domain_metric="bleu")), "domain_metric is neither"),
])
def test_a_broken_search_json_is_a_one_line_user_error(tmp_path: Path, text: str, problem: str):
    d = tmp_path / "broken"
    d.mkdir()
    (d / sh.SEARCH_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as e:
        rh.build_report(d)
    assert problem in str(e.value) and "\n" not in str(e.value)
    assert not (d / "report.html").exists()


def test_a_run_folder_with_a_search_json_stays_a_run(run_dir: Path):
    (run_dir / sh.SEARCH_FILE).write_text("{broken", encoding="utf-8")
    assert rh.load_folder(run_dir).kind == "run"


def _split_search(picked: float | None = 0.5) -> dict:
    """A search.json with its probes split: the grid on the selection part, the base, fine-tune
    and pick again on the reporting part (``reported``)."""
    record = _search(picked=picked)
    record["split"] = {"legal.accuracy": {"selection": 40, "reporting": 40},
                       "math.accuracy": {"selection": 40, "reporting": 40},
                       "safety.refusal_rate": {"selection": 31, "reporting": 100}}
    record["scored_on"] = {"points": "selection", "reported": "reporting"}

    def rep(new: float, m: float, r: float, share: float | None) -> dict:
        return {"scores": {"legal.accuracy": new, RETAINED[0]: m, RETAINED[1]: r},
                "retained_mean": (m + r) / 2, "gain_share": share}

    record["reported"] = {"part": "reporting", "base": rep(0.25, 0.7, 0.9, 0.0),
                          "finetune": rep(0.65, 0.3, 0.5, 1.0),
                          "pick": None if picked is None else
                          {"coefficient": picked, **rep(0.55, 0.6, 0.8, 0.75)}}
    return record


def test_a_split_search_reports_the_held_out_scores(tmp_path: Path):
    page = rh.build_report(_folder(tmp_path, _split_search())).read_text()
    summary = _section(page, "summary")
    # base, fine-tune and pick from `reported`, not from the grid the pick was made on
    assert [r[1:] for r in _rows(summary)] == [["0.250", "0.800", "–"], ["0.650", "0.400", "–"],
                                              ["0.550", "0.700", "75%"]]
    assert "the pick (alpha = 0.5)" in summary
    assert "mean retained score 0.800 (on the selection part).</p>" in summary
    assert ("reported on held-out items: the reporting part of each probe (40–100 items), which "
            "shares no item with the selection part (31–40 items)") in summary
    assert "scored on the selection part (31–40 items per probe), the items the pick was made on" \
        in _section(page, "points")
    assert ("<th>split</th><td>selection 31–40, reporting 40–100 items per probe (disjoint)</td>"
            in _section(page, "settings"))
    unpicked = rh.build_report(_folder(tmp_path, _split_search(picked=None), name="none"))
    assert len(_rows(_section(unpicked.read_text(), "summary"))) == 2  # no pick: no pick row
