"""The page of a task-sequence folder (``retain sequence``): ``sequences.json`` and its heatmaps.
The answer first: which run ranks first by ACC of the primary metric, whether sequential full
fine-tuning forgets the earlier tasks beyond the noise and which runs do not, and the rule; then
the ranking, each run's accuracy matrices (ACC, BWT, FWT, forgetting) and retained capabilities
task by task, and the configuration. Every label and name from the file is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.report.html.helpers import (
    arrow, as_dict, as_list, ci, duration, esc, facts, img, note, num, read_checked_json,
    read_png, section, table)
from retain.report.tables import paired_cell

SEQUENCE_SECTIONS = ("summary", "ranking", "runs", "config")  # stable ids, in page order
SUMMARY_FILE = "sequences.json"  # = retain.experiments.sequence.SUMMARY_FILE (a test checks)
SCORES = {  # sequence_metrics.SCORES: name in the page, what it measures
    "acc": ("ACC", "the mean score on every task after the last task"),
    "bwt": ("BWT", "the mean change of each earlier task from the end of its own training to the "
                   "end of the sequence; below 0: forgetting"),
    "fwt": ("FWT", "the mean gain of each task before its own training (after the earlier "
                   "tasks) over the base model's score"),
    "forgetting": ("forgetting", "the mean drop of each earlier task from its best score before "
                                 "the last task to the end; above 0: forgotten"),
}
RULE = ("Ranked by ACC of {metric} (the mean {metric} over the tasks after the last task, "
        "{direction} is better); BWT below 0 is forgetting (BWT, FWT and forgetting on scores "
        "oriented so that higher is better); a difference counts when the 95% interval of the "
        "paired difference over seeds excludes 0, or with one seed when the paired test on the "
        "items says so.")
NOISE = {True: "beyond noise", False: "within noise"}  # None: fewer than two shared seeds


# -- loading ---------------------------------------------------------------------------------------

def load_sequence(d: Path) -> dict[str, Any]:
    """``d/sequences.json``, checked for the keys the page reads: a one-line UserError if not."""
    return read_checked_json(d / SUMMARY_FILE, _problem, "a summary written by retain sequence")


def _problem(s: Any) -> str | None:
    if not isinstance(s, dict):
        return "not a JSON object"
    for key, kind in (("metric", str), ("tasks", list), ("entries", list), ("ranking", list)):
        if not isinstance(s.get(key), kind):
            return f"{key} is missing or not a {'list' if kind is list else 'name'}"
    if any(not isinstance(e, dict) or "label" not in e or not isinstance(e.get("matrices"), dict)
           for e in s["entries"]):
        return "an entry lacks its label or matrices"
    if any(not isinstance(r, dict) or "label" not in r for r in s["ranking"]):
        return "a ranking row lacks its label"
    return None


def sequence_figures(d: Path, summary: dict) -> dict[str, bytes]:
    """The heatmaps ``sequences.json`` names (``matrix-<slug>.png`` next to it): file name ->
    PNG bytes. A name with a folder in it, or a file that is gone or not a PNG, is left out."""
    figs = {}
    for name in as_dict(summary.get("figures")).values():
        name = str(name)
        path = d / name
        data = read_png(path) if Path(name).name == name and path.suffix == ".png" else None
        if data is not None:
            figs[name] = data
    return figs


# -- helpers ---------------------------------------------------------------------------------------

def _label(x: Any) -> str:
    return "" if x is None else str(x)


def _score(s: Any) -> str:
    """A score of ``aggregate``: its mean with its 95% interval over seeds."""
    s = as_dict(s)
    return f"{num(s.get('mean'))} {ci(s.get('ci'))}".strip()


def _ordered(summary: dict) -> list[dict]:
    """The entries in ranking order; those without a rank (a matrix with gaps) after."""
    ranked = [_label(r.get("label")) for r in summary["ranking"]]
    return sorted(summary["entries"], key=lambda e: ranked.index(_label(e["label"]))
                  if _label(e["label"]) in ranked else len(ranked))


def _primary(summary: dict, entry: dict) -> dict:
    return as_dict(entry["matrices"].get(summary["metric"]))


def _higher_is_better(summary: dict) -> bool:
    for e in summary["entries"]:
        m = _primary(summary, e)
        if "higher_is_better" in m:
            return bool(m["higher_is_better"])
    return True


def _names(rows: list[dict]) -> str:
    return ", ".join(f"<b>{esc(_label(r.get('label')))}</b>" for r in rows)


def _forgets_words(r: dict) -> str:
    return {True: "forgets the earlier tasks beyond noise",
            False: "does not forget the earlier tasks beyond noise"}.get(
        r.get("forgets"), "forgetting not determined (one seed and no paired test of the earlier "
                          "tasks)")


# -- sections --------------------------------------------------------------------------------------

def section_summary(summary: dict) -> str:
    """The answer in sentences: first by ACC, sequential full fine-tuning's forgetting, which runs
    forget and which do not, and the rule."""
    metric, ranking = summary["metric"], summary["ranking"]
    hib = _higher_is_better(summary)
    parts = [f"<p>{esc(summary['title'])}</p>"] if summary.get("title") else []
    if ranking:
        first = ranking[0]
        text = (f"<b>{esc(_label(first.get('label')))}</b> ranks first by ACC of {esc(metric)} "
                f"({num(first.get('acc'))} {ci(first.get('acc_ci'))})")
        behind = [as_dict(as_dict(r.get("vs_best")).get("acc")).get("larger_than_noise")
                  for r in ranking[1:]]
        close = [r for r, b in zip(ranking[1:], behind) if b is False]
        if close:
            text += f"; within the noise of it: {_names(close)}"
        elif behind and all(b is None for b in behind):
            text += "; with one seed, no interval over seeds tells its lead from the noise"
        elif behind:
            text += "; every other run is behind it beyond noise"
        parts.append(f"<p>{text}.</p>")
    else:
        parts.append(note(f"no run has a complete matrix of {metric}: nothing to rank"))
    for r in ranking:
        if _label(r.get("label")).lower().startswith("full"):
            parts.append(f"<p>Sequential full fine-tuning (<b>{esc(_label(r.get('label')))}</b>) "
                         f"{_forgets_words(r)} (BWT {num(r.get('bwt'))} {ci(r.get('bwt_ci'))})."
                         f"</p>")
    groups = [("Forget the earlier tasks beyond noise", True),
              ("Do not forget them beyond noise", False),
              ("Not determined (one seed and no paired test)", None)]
    said = [f"{words}: {_names(rows)}." for words, v in groups
            if (rows := [r for r in ranking if r.get("forgets") is v])]
    unranked = [e for e in summary["entries"] if "acc" not in _primary(summary, e)]
    if unranked:
        said.append(f"Not ranked (a matrix of {esc(metric)} with gaps): {_names(unranked)}.")
    if said:
        parts.append(f"<p>{' '.join(said)}</p>")
    rule = RULE.format(metric=metric, direction="higher" if hib else "lower")
    parts.append(f'<p class="rule"><b>Ranking</b>: {esc(rule)}</p>')
    return section("summary", "Summary", "".join(parts))


def _vs_best(vs: Any) -> str:
    vs = as_dict(vs)
    if not vs:
        return "best"
    lines = []
    for key in ("acc", "bwt"):
        p = as_dict(vs.get(key))
        lines.append(f"{SCORES[key][0]} {num(p.get('mean_diff'))} {ci(p.get('ci'))} "
                     f"({NOISE.get(p.get('larger_than_noise'), 'one seed')})")
    return f'<span class="dim">{esc(_label(vs.get("label")))} − this:</span><br>' + "<br>".join(
        lines)


def section_ranking(summary: dict) -> str:
    ranking = summary["ranking"]
    if not ranking:
        return ""
    entries = {_label(e["label"]): e for e in summary["entries"]}
    forgets = {True: '<span class="loss">yes</span>', False: '<span class="gain">no</span>'}
    rows = []
    for r in ranking:
        m = _primary(summary, entries.get(_label(r.get("label")), {"matrices": {}}))
        rows.append([esc(r.get("rank")), f"<b>{esc(_label(r.get('label')))}</b>",
                     f"{num(r.get('acc'))} {ci(r.get('acc_ci'))}",
                     f"{num(r.get('bwt'))} {ci(r.get('bwt_ci'))}", _score(m.get("fwt")),
                     _score(m.get("forgetting")), forgets.get(r.get("forgets"), "–"),
                     _vs_best(r.get("vs_best")), esc(r.get("seeds"))])
    up = arrow(_higher_is_better(summary))
    said = note(f"ACC, BWT, FWT and forgetting of {summary['metric']}, means over seeds with "
                f"their 95% intervals; forgets: the BWT interval lies below 0 (one seed: a paired "
                f"test on the items shows an earlier task lost); vs the best: the best run's "
                f"score minus this one's over the seeds both ran")
    return section("ranking", "Ranking", said + table(
        ["rank", "run", f"ACC {up} [95% CI]", "BWT [95% CI]", "FWT", "forgetting",
         "forgets?", "vs the best", "seeds"], rows, "caps"))


def _matrix_table(tasks: list[str], m: dict) -> str:
    """Rows: the base, then after each task; columns: the tasks; the task just trained in bold."""
    rows = []
    for i, row in enumerate(as_list(m.get("R"))):
        name = "base" if i == 0 else f"after {esc(tasks[i - 1]) if i - 1 < len(tasks) else i}"
        rows.append([name] + [f"<b>{num(v)}</b>" if j == i - 1 else num(v)
                              for j, v in enumerate(as_list(row))])
    return table(["", *(esc(t) for t in tasks)], rows, "caps")


def _scores_table(m: dict) -> str:
    """ACC, BWT, FWT and forgetting side by side: the mean with its interval, then per seed."""
    scores = [as_dict(m.get(key)) for key in SCORES]
    seeds = [", ".join(f"{esc(k)}: {num(v)}" for k, v in as_dict(s.get("per_seed")).items()) or "–"
             for s in scores]
    return table(["", *(name for name, _ in SCORES.values())],
                 [["mean [95% CI]", *map(_score, scores)], ["per seed", *seeds]], "caps")


def _paired_table(m: dict) -> str:
    """One seed: each earlier task, its score after its own training against the end."""
    rows = []
    for p in as_list(m.get("paired")):
        p = as_dict(p)
        try:
            cell = esc(paired_cell(p)) if p.get("test") else "–"
        except (KeyError, TypeError, ValueError):
            cell = "–"
        changed = {True: "changed beyond noise", False: "within noise"}.get(p.get("changed"), "–")
        rows.append([esc(p.get("task")), cell, changed])
    if not rows:
        return ""
    return ('<p class="dim">each earlier task, the end of its own training against the end of '
            'the sequence (paired test on the same items):</p>' +
            table(["task", "paired test", ""], rows))


def _retained_table(tasks: list[str], retained: dict) -> str:
    if not retained:
        return note("no retained capability probed")
    finals = any(as_dict(as_dict(r).get("final")).get("ci") for r in retained.values())
    paired = any(as_dict(r).get("paired") for r in retained.values())  # one seed: the paired test
    head = ["capability", "base", *(f"after {esc(t)}" for t in tasks)] + (
        ["end: 95% CI over seeds"] if finals else []) + (
        ["paired test (base → end)"] if paired else [])
    rows = []
    for key, r in retained.items():
        r = as_dict(r)
        try:
            test = esc(paired_cell(r.get("paired")))
        except (KeyError, TypeError, ValueError):
            test = "–"
        rows.append([f"{esc(key)} {arrow(r.get('higher_is_better', True))}",
                     *(num(v) for v in as_list(r.get("values")))]
                    + ([ci(as_dict(r.get("final")).get("ci")) or "–"] if finals else [])
                    + ([test] if paired else []))
    return table(head, rows, "caps")


def _run_block(summary: dict, entry: dict, figs: dict[str, bytes], i: int) -> str:
    label, metric, tasks = _label(entry["label"]), summary["metric"], [
        _label(t) for t in as_list(entry.get("tasks")) or summary["tasks"]]
    seeds = as_list(entry.get("seeds"))
    name = _label(as_dict(summary.get("figures")).get(label))
    out = [f'<h3 id="run-{i}">{esc(label)} <span class="dim">{len(seeds)} seed(s): '
           f'{esc(", ".join(map(str, seeds)))}</span></h3>']
    out.append(img(figs[name], name, f"accuracy matrix of {label}", where="") if name in figs
               else note("no heatmap of this run's matrix in the folder"))
    mats = entry["matrices"]
    for m_name in [metric] + sorted(k for k in mats if k != metric):
        m = as_dict(mats.get(m_name))
        if not m:
            continue
        out.append(f"<h4>{esc(m_name)} {arrow(m.get('higher_is_better', True))}"
                   f"{' (the primary metric)' if m_name == metric else ''}</h4>")
        out.append(_matrix_table(tasks, m))
        out.append(_scores_table(m) if "acc" in m else note(
            f"the matrix of {m_name} has gaps: no ACC, BWT, FWT or forgetting"))
        out.append(_paired_table(m))
    out.append("<h4>Retained capabilities across the sequence</h4>")
    out.append(_retained_table(tasks, as_dict(entry.get("retained"))))
    return "".join(out)


def section_runs(summary: dict, figs: dict[str, bytes]) -> str:
    """Per run, in ranking order: the heatmap, each metric's matrix and scores, the retained."""
    entries = _ordered(summary)
    nav = " ".join(f'<a href="#run-{i}">{esc(_label(e["label"]))}</a>'
                   for i, e in enumerate(entries, 1))
    said = note("R[i][j]: task j's score after training through task i (a mean over seeds); "
                "row base: the model before the first task; in bold, each task right after "
                "its own training. " + "; ".join(f"{name}: {meaning}" for name, meaning in
                                                 SCORES.values()) + ".")
    blocks = "".join(_run_block(summary, e, figs, i) for i, e in enumerate(entries, 1))
    return section("runs", "Run by run: the accuracy matrices",
                   f"<nav>{nav}</nav>{said}{blocks}")


def section_config(summary: dict) -> str:
    settings = facts([("title", esc(summary.get("title"))),
                      ("tasks", " → ".join(esc(t) for t in summary["tasks"])),
                      ("primary metric", esc(summary["metric"])),
                      ("seeds", esc(", ".join(map(str, as_list(summary.get("seeds")))) or "–")),
                      ("memory (examples of earlier tasks kept)", num(summary.get("memory"))),
                      ("wall time", duration(summary.get("wall_s")))])
    rows = []
    for rec in as_list(summary.get("sequences")):
        rec = as_dict(rec)
        runs = [Path(str(p)) for p in as_list(rec.get("runs")) if p]
        folder = f"<code>{esc(runs[0].parent.name)}/</code>" if runs else "–"
        rows.append([esc(rec.get("label")), esc(rec.get("seed")), folder,
                     ", ".join(f"<code>{esc(p.name)}/</code>" for p in runs) or "–",
                     duration(rec.get("wall_s"))])
    seqs = table(["run", "seed", "folder", "task runs (each a run folder)", "wall time"], rows) \
        if rows else ""
    return section("config", "Configuration", settings + seqs)


def sequence_sections(summary: dict, figs: dict[str, bytes]) -> list[str]:
    """The page's sections, the answer first (``figs``: ``sequence_figures``)."""
    return [s for s in (section_summary(summary), section_ranking(summary),
                        section_runs(summary, figs), section_config(summary)) if s]
