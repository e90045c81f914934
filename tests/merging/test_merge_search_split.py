"""`retain merge --search` / `--soup` choose on one part of every probe and report on another: the
grid, the soup and the pick are scored on a selection part, the base, the fine-tune and the picked
point again on a reporting part that shares no item with it, and both sizes are in search.json.
A spy on ``probe_scores`` sees which items each score came from and which weights were scored."""

from __future__ import annotations

import json

import pytest

from retain.merging import search as ms
from retain.merging import search_cli as sc
from retain.probes import load_probes

PROBES = ["math", "legal"]


def _items(probe) -> list[str]:
    for name in ("items", "texts", "examples"):
        if hasattr(probe, name):
            return [repr(x) for x in getattr(probe, name)]
    raise AssertionError(f"probe {probe.name} keeps no items")


class Spy:
    """Wraps ``probe_scores``: per call, the items scored (probe key -> item reprs), a fingerprint
    of the weights, the scores, and whether greedy soup was running."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        self.in_soup = False
        real_scores, real_soup = sc.probe_scores, ms.greedy_soup

        def scores(model, tok, probes, **kw):
            out = real_scores(model, tok, probes, **kw)
            self.calls.append({"items": {f"{p.name}.{p.metric}": tuple(_items(p)) for p in probes},
                               "weights": tuple(round(float(p.detach().double().sum()), 6)
                                                for p in model.parameters()),
                               "scores": out, "soup": self.in_soup})
            return out

        def soup(*a, **kw):
            self.in_soup = True
            try:
                return real_soup(*a, **kw)
            finally:
                self.in_soup = False

        monkeypatch.setattr(sc, "probe_scores", scores)
        monkeypatch.setattr(ms, "greedy_soup", soup)

    def parts(self, record: dict) -> tuple[dict, dict]:
        """(the selection items: those the grid was scored on, the reporting items: the other)."""
        kinds = {json.dumps(c["items"], sort_keys=True) for c in self.calls}
        assert len(kinds) == 2, "every score is on one of two item sets"
        grid = [c for c in self.calls if any(c["scores"] == p["scores"] for p in record["points"])]
        sel = grid[0]["items"]
        rep = next(c["items"] for c in self.calls if c["items"] != sel)
        return sel, rep


def _disjoint(sel: dict, rep: dict) -> None:
    assert sel.keys() == rep.keys()
    for key in sel:
        assert not set(sel[key]) & set(rep[key]), key


def test_the_pick_is_reported_on_items_it_was_not_chosen_on(tiny, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"])], tmp_path / "s",
                           probes=PROBES, values=[0.0, 0.5, 1.0], probe_n=3, seed=0,
                           domain_metric="ce", plot=False)
    sel, rep = spy.parts(record)
    _disjoint(sel, rep)
    # both sizes recorded, and they are the numbers of items actually scored
    assert record["split"] == {k: {"selection": len(sel[k]), "reporting": len(rep[k])}
                               for k in sel}
    assert all(v == {"selection": 3, "reporting": 3} for v in record["split"].values())
    on = {json.dumps(c["items"], sort_keys=True): [] for c in spy.calls}
    for c in spy.calls:
        on[json.dumps(c["items"], sort_keys=True)].append(c)
    sel_calls, rep_calls = on[json.dumps(sel, sort_keys=True)], on[json.dumps(rep, sort_keys=True)]
    # every grid point and the base_scores/finetune_scores the pick uses: the selection part
    assert all(any(c["scores"] == p["scores"] for c in sel_calls) for p in record["points"])
    assert any(c["scores"] == record["base_scores"] for c in sel_calls)
    assert any(c["scores"] == record["finetune_scores"] for c in sel_calls)
    # the reported base, fine-tune and pick: the reporting part, at the weights that were picked
    coef = record["pick"]["coefficient"]
    assert coef is not None and record["reported"]["pick"]["coefficient"] == coef
    picked = next(c for c in sel_calls
                  if c["scores"] == record["points"][[p["coefficient"] for p in
                                                      record["points"]].index(coef)]["scores"])
    again = [c for c in rep_calls if c["weights"] == picked["weights"]]
    assert again and again[-1]["scores"] == record["reported"]["pick"]["scores"]
    assert record["reported"]["base"]["scores"] in [c["scores"] for c in rep_calls]
    assert record["reported"]["finetune"]["scores"] in [c["scores"] for c in rep_calls]
    assert record["scored_on"]["points"] == "selection"
    assert record["scored_on"]["reported"] == "reporting"
    # the reporting part is the probes as loaded at probe_n (what the search reported before)
    assert rep == {f"{p.name}.{p.metric}": tuple(_items(p))
                   for p in load_probes(PROBES, n=3, seed=0)}
    # the domain's cross-entropy differs between the parts: the reported numbers are new ones
    key = record["domain"]
    assert record["reported"]["base"]["scores"][key] != record["base_scores"][key]
    rp = record["reported"]["pick"]
    full = (record["reported"]["finetune"]["scores"][key]
            - record["reported"]["base"]["scores"][key])
    assert rp["gain_share"] == pytest.approx(
        (rp["scores"][key] - record["reported"]["base"]["scores"][key]) / full)
    assert rp["retained_mean"] == pytest.approx(rp["scores"]["math.accuracy"])


def test_greedy_soup_selects_on_the_selection_part(tiny, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"]), str(tiny["ft2"])],
                           tmp_path / "soup", probes=PROBES, values=[0.0, 1.0], soup=True,
                           probe_n=3, seed=0, domain_metric="ce", plot=False)
    sel, rep = spy.parts(record)
    _disjoint(sel, rep)
    soup_calls = [c for c in spy.calls if c["soup"]]
    assert len(soup_calls) >= 3  # each fine-tune alone, then the two together
    assert all(c["items"] == sel for c in soup_calls)
    assert record["scored_on"]["soup"] == "selection"
    assert record["reported"]["pick"] is not None


def test_the_users_domain_file_is_split_too(tiny, tmp_path, monkeypatch):
    probe = tmp_path / "contracts.jsonl"
    probe.write_text("".join(json.dumps({"text": f"The Tenant shall pay rent on day {i}."}) + "\n"
                             for i in range(10)))
    spy = Spy(monkeypatch)
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"])], tmp_path / "own",
                           probes=["math"], domain=str(probe), values=[0.0, 1.0], probe_n=4,
                           seed=0, domain_metric="ce", plot=False)
    sel, rep = spy.parts(record)
    _disjoint(sel, rep)
    assert record["split"]["contracts.ce_nats_per_token"] == {"selection": 4, "reporting": 4}
    # all of a small file (probe_n unset): carved in two, still disjoint
    spy.calls.clear()
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"])], tmp_path / "all",
                           probes=["math"], domain=str(probe), values=[0.0, 1.0],
                           seed=0, domain_metric="ce", plot=False)
    sel, rep = spy.parts(record)
    _disjoint(sel, rep)
    assert record["split"]["contracts.ce_nats_per_token"] == {"selection": 5, "reporting": 5}


def test_print_search_reports_the_held_out_scores(tiny, tmp_path, capsys):
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"])], tmp_path / "p",
                           probes=PROBES, values=[0.0, 1.0], probe_n=3, seed=0,
                           domain_metric="ce", plot=False)
    sc.print_search(record)
    out = capsys.readouterr().out
    assert "scored on the selection part (3 items per probe)" in out
    assert "reported on the held-out reporting part (3 items per probe" in out
    pick = record["reported"]["pick"]
    assert f"pick alpha={pick['coefficient']:g}:" in out
    assert f"{pick['scores'][record['domain']]:.3f}" in out



def test_the_report_page_shows_a_real_search_on_held_out_items(tiny, tmp_path):
    from retain.report import html as rh

    out = tmp_path / "page"
    record = sc.run_search(str(tiny["base"]), [str(tiny["ft1"])], out, probes=PROBES,
                           values=[0.0, 1.0], probe_n=3, seed=0, domain_metric="ce")
    page = rh.build_report(out).read_text()
    assert "reported on held-out items: the reporting part of each probe (3 items)" in page
    ce = -record["reported"]["pick"]["scores"][record["domain"]]  # shown as the cross-entropy
    assert f"<td>{ce:.3f}</td>" in page.split('<section id="summary">', 1)[1].split("</section>")[0]
