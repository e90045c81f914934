"""The page around the sections: picks the page kind of a folder (run, comparison, failed runs,
task sequence, merge search, forecast, attribution), draws or reads its charts, wraps its sections in one
self-contained HTML document (CSS inline, images as data URIs, no script, nothing fetched) and
writes ``DIR/report.html`` and ``DIR/figures/`` atomically.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

from retain.report.html import (attribution, comparison, failed, forecast, run, run_sections,
                                search, sequence)
from retain.report.html.folder import Folder, load_folder
from retain.report.html.helpers import FIGURES_DIR, esc
from retain.report.results import METRICS_FILE, RESULTS_FILE, retain_version, write_text_atomic

REPORT_FILE = "report.html"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
 max-width:1180px;margin:0 auto;padding:0 24px 48px;background:#fff}
header{border-bottom:1px solid #d0d7de;padding:18px 0 8px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:19px;margin:30px 0 10px;border-bottom:1px solid
 #eaeef2;padding-bottom:4px} h3{font-size:15px}
nav a{margin-right:12px;color:#0969da;text-decoration:none;font-size:13px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13.5px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
thead th{background:#f6f8fa} table.facts th{background:#f6f8fa;font-weight:600;width:220px}
table.caps td{font-variant-numeric:tabular-nums}
table.caps .ci{display:block} div.scroll{overflow-x:auto;max-width:100%}
ul.verdicts{padding-left:20px} ul.verdicts li{margin-bottom:4px} p.rule{font-size:14px}
div.by{margin-bottom:6px}
.gain{background:#dafbe1;color:#116329;padding:1px 4px;border-radius:3px}
.loss{background:#ffebe9;color:#a40e26;padding:1px 4px;border-radius:3px}
.gain.weak{background:#f0fbf2;color:#4b8a5a} .loss.weak{background:#fff5f4;color:#b65c68}
.same{color:#57606a} .ci,.dim{color:#57606a;font-size:12px} .note{color:#57606a;font-style:italic}
.mark{font-weight:700}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:12.5px/1.35 ui-monospace,Menlo,
 Consolas,monospace;max-width:360px;display:inline-block;vertical-align:top}
code{font:12.5px ui-monospace,Menlo,Consolas,monospace} code.cfg{color:#57606a;font-size:11.5px}
figure{margin:10px 0} figure img{max-width:min(100%,720px)} figure.wide img{max-width:100%} figcaption{font-size:11px;color:#57606a}
details{margin:6px 0 10px} summary{cursor:pointer;font-weight:600}
ul.cites li{margin-bottom:8px} footer{margin-top:36px;color:#57606a;font-size:12px}
"""


def make_figures(folder: Folder, out: Path | None = None) -> dict[str, bytes]:
    """Every chart the data allows: name (``loss.png``...) -> PNG bytes, those of runs also
    written to ``out`` (default ``DIR/figures/``; ``run_sections.run_figures``). A sequence
    folder's heatmaps are read from beside its sequences.json (``retain sequence`` drew them),
    a search folder's curve from beside its search.json."""
    if folder.kind == "sequence":
        return sequence.sequence_figures(folder.dir, folder.sequence)
    if folder.kind == "search":
        return search.search_figures(folder.dir, folder.search)
    if folder.kind in ("forecast", "attribution"):
        figs = forecast.forecast_figures(folder.forecast) if folder.kind == "forecast" else \
            attribution.attribution_figures(folder.attribution)
        for name, data in figs.items() if out is not None else ():  # into figures/ (staged)
            (out / name).write_bytes(data)
        return figs
    return run_sections.run_figures(folder, out)


def _parts(folder: Folder, figs: dict[str, bytes]) -> tuple[list[str], tuple[str, ...], str, str]:
    """The page of the folder's kind: (its sections, their ids in page order, the title, the
    files it renders as HTML)."""
    runs = f"{esc(RESULTS_FILE)} and {esc(METRICS_FILE)}"
    if folder.kind == "sequence":
        s = folder.sequence
        return (sequence.sequence_sections(s, figs), sequence.SEQUENCE_SECTIONS,
                str(s.get("title") or "a task sequence"), esc(sequence.SUMMARY_FILE))
    if folder.kind == "search":
        s = folder.search
        return (search.search_sections(s, figs), search.SEARCH_SECTIONS, search.search_title(s),
                esc(search.SEARCH_FILE))
    if folder.kind == "forecast":
        f = folder.forecast
        sources = esc(forecast.FORECAST_FILE) + (f" and {esc(forecast.CHECK_FILE)}"
                                                 if "check" in f else "")
        return (forecast.sections(f, figs), forecast.FORECAST_SECTIONS, forecast.title(f),
                sources)
    if folder.kind == "attribution":
        a = folder.attribution
        return (attribution.sections(a, figs), attribution.SECTIONS, attribution.title(a),
                f"{esc(attribution.SUMMARY_FILE)} and {esc(attribution.ROWS_FILE)}")
    if not folder.runs:  # every run failed: where and why, the curves so far, the config
        return failed.sections(folder, figs), failed.SECTIONS, failed.title(folder), runs
    page = run if folder.kind == "run" else comparison
    return page.sections(folder, figs), run_sections.SECTIONS, page.title(folder), runs


def render(folder: Folder, figs: dict[str, bytes]) -> str:
    """The whole page as one string (figures from ``make_figures``)."""
    sections, order, title, sources = _parts(folder, figs)
    ids = [sid for sid in order if f'<section id="{sid}">' in "".join(sections)]
    nav = "".join(f'<a href="#{sid}">{sid}</a>' for sid in ids)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            f'img-src data:; style-src \'unsafe-inline\'">'
            f'<title>retain report: {esc(title)}</title><style>{CSS}</style></head>\n<body>'
            f'<header><h1>retain report: {esc(title)}</h1>'
            f'<p class="dim">{esc(folder.kind)} folder <code>{esc(folder.dir.name)}</code></p>'
            f'<nav>{nav}</nav></header>\n<main>\n' + "\n".join(sections) +
            f'\n</main><footer>generated by retain {esc(retain_version())} at {esc(now)} from '
            f'{sources}</footer></body></html>\n')


def build_report(dir: Path) -> Path:
    """Render the run, comparison, sequence or search folder ``dir`` into ``dir/report.html``
    (written atomically: a failure leaves no half page) and the charts of a run or comparison
    into ``dir/figures/*.png``; the page's path."""
    folder = load_folder(Path(dir))
    # Charts are drawn into a hidden folder and moved into figures/ only once the page is
    # rendered: a report that fails half-way leaves neither a page nor a stray chart.
    staging = Path(tempfile.mkdtemp(prefix=".figures-", dir=folder.dir))
    try:
        figs = make_figures(folder, staging)
        page = render(folder, figs)
        drawn = [p for p in staging.iterdir() if p.name in figs]
        if drawn:
            (folder.dir / FIGURES_DIR).mkdir(exist_ok=True)
        for p in drawn:
            os.replace(p, folder.dir / FIGURES_DIR / p.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    path = folder.dir / REPORT_FILE
    write_text_atomic(path, page)
    return path
