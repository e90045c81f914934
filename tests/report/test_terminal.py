"""The terminal at 80 columns: the comparison table keeps every strategy label whole and every
column header a unique abbreviation, whatever the number of strategies or probes; the sentences,
the ranking and its rule follow it; ``retain run``'s table ends with its sentence."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from retain.experiments.comparison import _table_rows, comparison_rows, write_comparison
from retain.report import tables
from retain.report.tables import comparison_tables, print_run, unique_abbrev

from report_fixtures import demo_results


@pytest.fixture
def term(monkeypatch) -> Console:
    """An 80-column terminal that keeps what is printed."""
    console = Console(width=80, record=True, color_system=None)
    monkeypatch.setattr(tables, "console", console)
    return console


def _matches(short: str, names: list[str]) -> list[str]:
    """The names an abbreviation can stand for ("head…tail"; a whole name: itself)."""
    if "…" not in short:
        return [n for n in names if n == short]
    head, tail = short.split("…")
    return [n for n in names if n.startswith(head) and n.endswith(tail)
            and len(n) >= len(head) + len(tail)]


def test_unique_abbrev():
    names = ["math", "writing", "multilingual", "multimodal", "full lr=1e-3", "full lr=1e-4"]
    short = unique_abbrev(names, 8)
    assert short == ["math", "writing", "multili…", "multimo…", "full l…3", "full l…4"]
    short = unique_abbrev(names, 6)
    assert short[:2] == ["math", "writi…"] and len(set(short)) == len(names)
    for s, name in zip(short, names):
        assert len(s) <= 6 and _matches(s, names) == [name]
    # names that differ only in the middle, at a width too small to show it: kept whole
    assert unique_abbrev(["abcXdef", "abcYdef"], 3) == ["abcXdef", "abcYdef"]


def _check_tables(strategies: list[str], rows: list[dict], width: int = 80) -> list:
    tabs, legend = comparison_tables(rows, strategies, "t", width)
    probes = list(dict.fromkeys(r["probe"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    for t in tabs:
        labels = [str(c) for c in t.columns[0].cells]
        assert len(set(labels)) == len(labels)  # no two row labels alike
        heads = [str(c.header) for c in t.columns[1:]]
        assert len(set(heads)) == len(heads)
        if t.columns[0].header == "strategy":  # probes across, each header "probe\nmetric↑"
            assert labels == ["before", *strategies]  # whole, never cut
            for h in heads:
                p, m = h.split("\n")
                assert len(_matches(p, probes)) == 1
                assert len(_matches(legend.get(m[:-1], m[:-1]), metrics)) == 1
        else:  # strategies across, abbreviated; the legend gives each one in full
            for h in heads:
                assert _matches(legend.get(h, h), ["before", *strategies]) == [legend.get(h, h)]
    return tabs


def test_the_demo_table_fits_80_columns(term, tmp_path):
    labels, results = demo_results()
    tabs = _check_tables(labels, _table_rows(comparison_rows(labels, results)))
    assert len(tabs) == 1  # the twelve strategies in rows, nine probe metrics across
    summary = write_comparison(tmp_path, labels, results,
                               title="retain demo: tiny model, legal domain")
    text = term.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    # every label in full at the start of its row: "full lr=1e-3" and "full lr=1e-4" apart
    for label in labels:
        assert any(line.startswith(label + " ") for line in lines), label
    assert not re.search(r"\b(writi|safet)(?![a-z…])", text)  # no header cut by the terminal
    assert "shortened: writi… = writing, multi… = multilingual, instr… = instructions" in text
    # the sentences, best ranked first, then the rule and the ranking
    flat = " ".join(text.split())
    first = summary["ranking"]["order"][0]["strategy"]
    assert first == "l2sp"
    assert (f"{first}: learnt legal (accuracy 0.00 -> 0.87, 52 of 60 items; ce 8.14 -> 4.87); "
            "lost multilingual") in flat
    assert flat.index("l2sp: learnt") < flat.index("full lr=1e-3: learnt")
    assert "Ranked by mean retained capability among the runs that reach 80%" in flat
    assert ("10. full lr=1e-3: retained 0.480, new-domain gain +1.00; fell off the cliff: "
            "multilingual.accuracy, safety.refusal_rate, instructions.accuracy") in flat


def _many(n_probes: int, strategies: list[str]) -> list[dict]:
    """Table rows of ``n_probes`` probes with long, similar names."""
    return [{"probe": f"lm-eval:mmlu_subject_{i:02d}", "metric": "accuracy",
             "higher_is_better": True, "before": 0.5, "after": {s: 0.4 for s in strategies}}
            for i in range(n_probes)]


def test_many_probes_turn_or_split_the_table(term):
    few = ["full lr=1e-3", "full lr=1e-4", "lora"]
    (turned,) = _check_tables(few, _many(16, few))  # 16 probes, 3 strategies: probes in rows
    assert turned.columns[0].header == "probe.metric"
    many = [f"full lr={i}e-4" for i in range(1, 13)]
    split = _check_tables(many, _many(16, many))  # 16 x 12: the columns over several tables
    assert len(split) > 1 and sum(len(t.columns) - 1 for t in split) == 16
    tables.print_comparison(_many(16, many), many, "t")
    assert max(len(line) for line in term.export_text().splitlines()) <= 80


def test_print_run_fits_80_columns_and_ends_with_its_sentence(term):
    labels, results = demo_results(["full lr=1e-3"])
    res = {**results[0], "model": {"name": "tiny", "params": 3_500_000, "trainable_params":
                                   3_500_000}, "drift": {"overall": {"relative_l2": 0.04}}}
    print_run(res)
    text = term.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = " ".join(text.split())
    assert ("full lr=1e-3: learnt legal (accuracy 0.00 -> 1.00, 60 of 60 items; ce 8.14 -> "
            "3.72); lost math (0.98 -> 0.68, 18 of 60 items)") in flat


def test_labels_are_text_not_markup(term):
    labels = ["lora [bold]r=8[/bold]", "full"]
    rows = [{"probe": "math", "metric": "accuracy", "higher_is_better": True, "before": 0.9,
             "after": {s: 0.5 for s in labels}}]
    tables.print_comparison(rows, labels, "t")
    assert "lora [bold]r=8[/bold]" in term.export_text()
