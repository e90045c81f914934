"""The page of an attribution folder (``retain attribute``): ``attribution.json`` (settings,
counts, cost, a filter written) and ``attribution.jsonl`` (per example: preview, harm and rank
per capability). Per capability the distribution of the scores with the top share marked and
the most harmful examples with their text; then the filter and the settings. Every example's
text is escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retain.report.html.helpers import (
    as_dict, as_list, esc, facts, img, is_number, note, num, read_checked_json, section, table)

SUMMARY_FILE = "attribution.json"  # = retain.attribute.SUMMARY_FILE (a test checks)
ROWS_FILE = "attribution.jsonl"  # = retain.attribute.ATTRIBUTION_FILE
SECTIONS = ("summary", "capabilities", "filtered", "settings")
TOP = 20  # examples listed per capability
CHART = "attribution.png"


def load_attribution(d: Path) -> dict[str, Any]:
    """``d/attribution.json`` with the rows of ``d/attribution.jsonl`` under ``"rows"`` (a row
    that is not an object with a preview and numeric harms is refused, naming its line)."""
    from retain.errors import UserError

    summary = read_checked_json(d / SUMMARY_FILE, _problem, "an attribution written by "
                                                            "retain attribute")
    path = d / ROWS_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: run retain attribute again")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        harm = row.get("harm") if isinstance(row, dict) else None
        if not isinstance(harm, dict) or not all(is_number(v) for v in harm.values()):
            raise UserError(f"{path}:{i}: not an attribution row (index, preview, harm)")
        rows.append(row)
    summary["rows"] = rows
    return summary


def _problem(s: Any) -> str | None:
    if not isinstance(s, dict) or s.get("kind") != "attribution":
        return "not an attribution (kind is not attribution)"
    if not isinstance(s.get("capabilities"), list):
        return "capabilities is missing or not a list"
    return None


def attribution_figures(a: dict[str, Any]) -> dict[str, bytes]:
    """One histogram per capability of the examples' harm scores, the top ``drop`` share (the
    filter's, else 5%) shaded."""
    from retain.report.figures import figure_png
    from retain.report.plots import plt

    keys = [k for k in as_list(a.get("capabilities")) if isinstance(k, str)]
    rows = as_list(a.get("rows"))
    if not keys or not rows:
        return {}
    share = as_dict(a.get("filtered")).get("drop_top")
    share = share if is_number(share) and 0 < share < 1 else 0.05
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        vals = sorted((r["harm"][k] for r in rows if is_number(r["harm"].get(k))), reverse=True)
        if not vals:
            continue
        cut = vals[max(0, round(share * len(vals)) - 1)]
        ax.hist(vals, bins=40, color="tab:blue", alpha=0.8)
        ax.axvspan(cut, max(vals), color="tab:red", alpha=0.15,
                   label=f"top {100 * share:g}%")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("harm (higher: works more against it)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return {CHART: figure_png(fig)}


def title(a: dict[str, Any]) -> str:
    return f"attribution of {as_dict(a.get('config')).get('data')} on " \
           f"{as_dict(a.get('config')).get('model')}"


def sections(a: dict[str, Any], figs: dict[str, bytes]) -> list[str]:
    cfg, rows = as_dict(a.get("config")), as_list(a.get("rows"))
    keys = [k for k in as_list(a.get("capabilities")) if isinstance(k, str)]
    out = [section("summary", "Summary", note(
        f"{num(a.get('scored'))} examples scored against {len(keys)} capabilities; a score "
        f"above 0 means training on the example works against the capability (to first "
        f"order), the higher the more") + facts([
            ("examples", f"{num(a.get('scored'))} of {num(a.get('records'))} records"),
            ("capabilities", esc(", ".join(keys))),
            ("score", esc(a.get("score"))),
            ("cost", f"{num(a.get('wall_s'), 1)} s, {num(a.get('examples_per_s'), 1)} "
                     f"examples/s, peak memory {num(a.get('peak_rss_mb'), 0)} MiB")]))]
    body = img(figs[CHART], CHART, "harm scores per capability", wide=True) if CHART in figs \
        else ""
    for k in keys:
        ranked = sorted((r for r in rows if is_number(r["harm"].get(k))),
                        key=lambda r: -r["harm"][k])
        positive = sum(1 for r in ranked if r["harm"][k] > 0)
        body += f"<h3>{esc(k)}</h3>" + note(
            f"{positive} of {len(ranked)} examples work against it; the {min(TOP, len(ranked))} "
            f"that work against it most:")
        body += table(["rank", "example", "harm", "text"], [
            [num(i), num(r.get("index")), num(r["harm"][k]),
             f"<pre>{esc(r.get('preview'))}</pre>"] for i, r in enumerate(ranked[:TOP], 1)])
    out.append(section("capabilities", "The examples that work against each capability", body))
    f = as_dict(a.get("filtered"))
    out.append(section("filtered", "Filtered data", facts([
        ("file", f"<code>{esc(f.get('path'))}</code>"), ("protects", esc(f.get("capability"))),
        ("dropped", f"{num(f.get('dropped'))} (the top {num(100 * f['drop_top'], 3)}%)"
         if is_number(f.get("drop_top")) else num(f.get("dropped"))),
        ("written", num(f.get("written")))]) + note("train on it with retain run --data FILE"))
        if f else note("no filtered file written (--write-filtered FILE --drop-top 0.05)"))
    out.append(section("settings", "Settings", facts(
        [(k, f"<code>{esc(json.dumps(v))}</code>") for k, v in cfg.items()] +
        [("seed", esc(a.get("seed"))), ("created", esc(a.get("created"))),
         ("retain", esc(a.get("retain_version")))])))
    return out
