"""What ``retain report DIR`` was given: a run folder (``results.json``), a comparison folder
(``comparison.json`` and run folders), a task-sequence folder (``sequences.json``) or a
merge-search folder (``search.json``), read into one ``Folder`` whose ``kind`` picks the page.
Runs that failed are kept apart from the finished ones, so every comparison sees complete runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.errors import UserError
from retain.report.figures import read_metrics
from retain.report.html.attribution import SUMMARY_FILE as ATTRIBUTION_FILE
from retain.report.html.attribution import load_attribution
from retain.report.html.forecast import FORECAST_FILE, load_forecast
from retain.report.html.search import SEARCH_FILE, load_search
from retain.report.html.sequence import SUMMARY_FILE, load_sequence
from retain.report.results import CONFIG_FILE, METRICS_FILE, RESULTS_FILE, read_results

COMPARISON_FILE = "comparison.json"


@dataclass
class Run:
    """One run folder: its label in the report, results.json, metrics.jsonl (None: absent)."""
    label: str
    dir: Path
    results: dict[str, Any]
    metrics: list[dict] | None
    config_text: str | None = None
    strategy: str = ""  # the label its seeds share (``label`` adds the folder name to each)

    def __post_init__(self) -> None:
        self.strategy = self.strategy or self.label


@dataclass
class Folder:
    dir: Path
    kind: str  # "run", "comparison", "sequence", "search", "forecast" or "attribution"
    runs: list[Run]  # none in a sequence or search folder: its page reads its one JSON file
    comparison: dict[str, Any] = field(default_factory=dict)  # comparison.json, if any
    sequence: dict[str, Any] = field(default_factory=dict)  # sequences.json, if any
    search: dict[str, Any] = field(default_factory=dict)  # search.json, if any
    forecast: dict[str, Any] = field(default_factory=dict)  # forecast.json (+ its check)
    attribution: dict[str, Any] = field(default_factory=dict)  # attribution.json (+ its rows)
    # runs whose results.json says "failed" (no after-probes, no comparison): kept apart from
    # ``runs`` so that every comparison section sees complete runs only
    failed: list[Run] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        """Whether each run's part of a section is headed by its label: not in a run folder,
        whose page is about its one run."""
        return self.kind != "run"


def is_failed(results: dict[str, Any]) -> bool:
    """A run that stopped on an error: results.json holds its ``failure`` and no comparison."""
    return results.get("status") == "failed"


def strategy_name(results: dict[str, Any]) -> str | None:
    """The run's strategy label; a failed run's results.json has none, its config does."""
    if results.get("strategy"):
        return str(results["strategy"])
    specs = (results.get("config") or {}).get("strategies")
    if isinstance(specs, list) and specs:
        return "+".join(str(s.get("name", "?") if isinstance(s, dict) else s) for s in specs)
    return None


def _load_run(d: Path, label: str | None = None) -> Run:
    results = read_results(d)
    cfg = d / CONFIG_FILE
    text = cfg.read_text(encoding="utf-8", errors="replace") if cfg.is_file() else None
    return Run(label=label or strategy_name(results) or d.name, dir=d, results=results,
               metrics=read_metrics(d / METRICS_FILE), config_text=text)


def load_folder(d: Path) -> Folder:
    """A run folder (``results.json``), a task-sequence folder (``sequences.json``), a
    comparison folder (``comparison.json`` and run folders inside; runs keep the order and
    labels comparison.json gives them) or a merge-search folder (``search.json``)."""
    d = Path(d)
    if not d.is_dir():
        raise UserError(f"{d} is not a folder")
    if (d / RESULTS_FILE).is_file():
        run = _load_run(d)
        return Folder(d, "run", [], failed=[run]) if is_failed(run.results) else \
            Folder(d, "run", [run])
    if (d / SUMMARY_FILE).is_file():
        return Folder(d, "sequence", [], sequence=load_sequence(d))
    if (d / FORECAST_FILE).is_file():
        return Folder(d, "forecast", [], forecast=load_forecast(d))
    if (d / ATTRIBUTION_FILE).is_file():
        return Folder(d, "attribution", [], attribution=load_attribution(d))
    subs = sorted(p for p in d.iterdir() if p.is_dir() and (p / RESULTS_FILE).is_file())
    if not (d / COMPARISON_FILE).is_file() or not subs:
        if (d / SEARCH_FILE).is_file():
            return Folder(d, "search", [], search=load_search(d))
        raise UserError(f"{d} is neither a run folder ({RESULTS_FILE}) nor a comparison folder "
                        f"({COMPARISON_FILE} and run folders with {RESULTS_FILE}) nor a sequence "
                        f"folder ({SUMMARY_FILE}) nor a merge-search folder ({SEARCH_FILE}) nor "
                        f"a forecast folder ({FORECAST_FILE}) nor an attribution folder "
                        f"({ATTRIBUTION_FILE})")
    try:
        comp = json.loads((d / COMPARISON_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{d / COMPARISON_FILE} is not valid JSON: {e}") from None
    # comparison.json names each run's folder (perhaps by an old absolute path): match by name
    labels = {Path(str(r.get("dir", ""))).name: str(r.get("strategy"))
              for r in comp.get("runs", []) if isinstance(r, dict) and r.get("strategy")}
    order = {name: i for i, name in enumerate(labels)}
    subs.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    runs = [_load_run(p, labels.get(p.name)) for p in subs]
    seen: dict[str, int] = {}
    for r in runs:  # two runs of one strategy (seeds) need distinct labels
        seen[r.label] = seen.get(r.label, 0) + 1
    for r in runs:
        if seen[r.label] > 1:
            r.label = f"{r.label} ({r.dir.name})"
    return Folder(d, "comparison", [r for r in runs if not is_failed(r.results)], comp,
                  failed=[r for r in runs if is_failed(r.results)])
