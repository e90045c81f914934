"""The page of a merge-search folder (``retain merge --search``): ``search.json`` and its
``curve.png``. The answer first (the coefficient picked and why; the base, the fine-tune and the
pick scored on the held-out reporting part when the search split its probes), then the curve,
every point of the grid, the greedy soup and the settings. A new domain scored by cross-entropy
(stored as minus it, so higher is better) is shown as the cross-entropy, lower is better.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.report.html.helpers import (
    arrow, as_dict, as_list, breakable, esc, facts, img, is_number, note, num, read_checked_json,
    read_png, section, table)

SEARCH_SECTIONS = ("summary", "curve", "points", "soup", "settings")  # stable ids, page order
SEARCH_FILE = "search.json"  # = retain.merging.search_cli.SEARCH_FILE (a test checks)
SOUP_OBJECTIVE = "(new-domain score + mean retained score) / 2"  # search_cli's objective


# -- loading ---------------------------------------------------------------------------------------

def load_search(d: Path) -> dict[str, Any]:
    """``d/search.json``, checked for the keys the page reads: a one-line UserError if not."""
    return read_checked_json(d / SEARCH_FILE, _problem,
                             "a search written by retain merge --search")


def _problem(s: Any) -> str | None:
    if not isinstance(s, dict):
        return "not a JSON object"
    for key, kind in (("base", str), ("method", str), ("param", str), ("domain", str),
                      ("finetunes", list), ("retained", list), ("points", list), ("pick", dict)):
        if not isinstance(s.get(key), kind):
            what = {list: "a list", dict: "an object"}.get(kind, "a name")
            return f"{key} is missing or not {what}"
    if s.get("domain_metric", "accuracy") not in ("accuracy", "ce"):
        return "domain_metric is neither accuracy nor ce"
    if any(not isinstance(k, str) for k in s["retained"]):
        return "a retained score name is not a name"
    if any(not isinstance(p, dict) or not is_number(p.get("coefficient"))
           or not isinstance(p.get("scores"), dict) for p in s["points"]):
        return "a point lacks its coefficient or scores"
    if "soup" in s and not isinstance(s["soup"], dict):
        return "soup is not an object"
    return None


def search_figures(d: Path, search: dict) -> dict[str, bytes]:
    """The curve ``search.json`` names (``curve.png`` next to it): file name -> PNG bytes. A name
    with a folder in it, or a file that is gone or not a PNG, is left out."""
    name = search.get("chart")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".png"):
        return {}
    data = read_png(d / name)
    return {name: data} if data is not None else {}


# -- helpers ---------------------------------------------------------------------------------------

def _ce(search: dict) -> bool:
    return search.get("domain_metric", "accuracy") == "ce"


def _share(x: Any) -> str:
    return f"{x:.0%}" if is_number(x) else "–"


def _coef(x: Any) -> str:
    return f"{x:g}" if is_number(x) else esc(x)


def _domain_value(search: dict, scores: Any) -> str:
    """The new domain's score in ``scores``: the cross-entropy itself (positive) for a CE
    domain, whose score in the file is its negative."""
    v = as_dict(scores).get(search["domain"])
    return num(-v if _ce(search) and is_number(v) else v)


def _domain_head(search: dict) -> str:
    if _ce(search):
        return f"{breakable(search['domain'])} (cross-entropy, nats per token) {arrow(False)}"
    return f"{breakable(search['domain'])} {arrow(True)}"


def _retained_mean(search: dict, scores: Any) -> float | None:
    vals = [as_dict(scores).get(k) for k in search["retained"]]
    return sum(vals) / len(vals) if vals and all(map(is_number, vals)) else None


def _picked(search: dict, p: dict) -> bool:
    c = search["pick"].get("coefficient")
    return is_number(c) and p.get("coefficient") == c


def _finetune_label(search: dict) -> str:
    if "soup" in search:
        return "the soup"
    return "the fine-tune" if len(search["finetunes"]) == 1 else "the best single fine-tune"


def _paths(paths: list) -> str:
    return ", ".join(f"<code>{esc(p)}</code>" for p in paths) or "–"


def _coef_words(search: dict) -> str:
    if search["method"] == "wise_ft":
        return f"<b>{esc(search['param'])}</b> (0 = base, 1 = fine-tune)"
    return f"its option <b>{esc(search['param'])}</b>"


# -- sections --------------------------------------------------------------------------------------

def section_summary(search: dict) -> str:
    """The answer in sentences: the pick and why, the method, the models, the scores it keeps."""
    pick, param = search["pick"], search["param"]
    reason = esc(pick.get("reason") or "no reason given")
    if is_number(pick.get("coefficient")):
        share = pick.get("gain_share")
        share = f" ({share:.0%} of the new-domain gain)" if is_number(share) else ""
        where = " (on the selection part)" if search.get("split") else ""
        parts = [f"<p>Picked: <b>{esc(param)} = {_coef(pick['coefficient'])}</b>{share}: "
                 f"{reason}{where}.</p>"]
    else:
        parts = [f"<p>No coefficient picked: {reason}.</p>"]
    parts.append(f"<p>Method <b>{esc(search['method'])}</b>, searched over {_coef_words(search)}"
                 f", {len(search['points'])} point(s); base <code>{esc(search['base'])}</code>, "
                 f"fine-tune(s) {_paths(search['finetunes'])}"
                 f"{'; combined by greedy soup first' if 'soup' in search else ''}.</p>")
    point = next((p for p in search["points"] if _picked(search, p)), None)
    reported = as_dict(search.get("reported"))
    if reported:  # held-out numbers: the reporting part, not the items the pick was made on
        parts.append(_reported(search, reported))
    else:  # a search written before the split: the one set of items it had
        rows = [["base", _domain_value(search, search.get("base_scores")),
                 num(_retained_mean(search, search.get("base_scores")))],
                [_finetune_label(search), _domain_value(search, search.get("finetune_scores")),
                 num(_retained_mean(search, search.get("finetune_scores")))]]
        if point is not None:
            rows.append([f'<span class="mark">the pick ({esc(param)} = '
                         f'{_coef(point["coefficient"])})</span>',
                         _domain_value(search, point["scores"]),
                         num(_retained_mean(search, point["scores"]))])
        parts.append(table(["", _domain_head(search), f"retained mean {arrow(True)}"], rows,
                           "caps"))
    rule = (f"The pick: among the points whose new-domain gain over the base is at least "
            f"{_share(search.get('min_gain_share'))} of the fine-tune's gain, the one with the "
            f"highest mean retained score (ties: more gain).")
    if _ce(search):
        rule += (" The new domain is scored by its cross-entropy: its gain is the fall of the "
                 "cross-entropy in nats per token.")
    parts.append(f'<p class="rule">{esc(rule)}</p>')
    return section("summary", "Summary", "".join(parts))


def _sizes(search: dict, part: str) -> str:
    """Items per probe in one part of the split: "40" or "14–100" ("–" without a split)."""
    vals = sorted({v.get(part) for v in as_dict(search.get("split")).values()
                   if isinstance(v, dict) and is_number(v.get(part))})
    return "–" if not vals else f"{vals[0]:g}" if len(vals) == 1 else f"{vals[0]:g}–{vals[-1]:g}"


def _reported(search: dict, reported: dict) -> str:
    """The base, the fine-tune and the pick scored on the reporting part."""
    rows = []
    for name, label in (("base", "base"), ("finetune", _finetune_label(search)), ("pick", None)):
        r = as_dict(reported.get(name))
        if not r:
            continue
        if label is None:
            label = (f'<span class="mark">the pick ({esc(search["param"])} = '
                     f'{_coef(r.get("coefficient"))})</span>')
        share = _share(r.get("gain_share")) if name == "pick" else "–"
        rows.append([label, _domain_value(search, r.get("scores")),
                     num(_retained_mean(search, r.get("scores"))), share])
    held_out = note(f"reported on held-out items: the reporting part of each probe "
                    f"({_sizes(search, 'reporting')} items), which shares no item with the "
                    f"selection part ({_sizes(search, 'selection')} items) the grid, the soup "
                    "and the pick were scored on")
    return held_out + table(["", _domain_head(search), f"retained mean {arrow(True)}",
                             "share of the fine-tune's gain"], rows, "caps")


def section_curve(search: dict, figs: dict[str, bytes]) -> str:
    name = search.get("chart")
    if name in figs:
        body = img(figs[name], name, f"{search['method']} search curve", where="")
    else:
        body = note(f"no curve image ({name or 'none named'}) in the folder")
    return section("curve", "The curve", body)


def section_points(search: dict) -> str:
    """Every point of the grid: the coefficient (the pick marked), the new domain, the retained
    mean, each retained score."""
    retained = search["retained"]
    rows = []
    for p in search["points"]:
        coef = (f'<span class="mark">{_coef(p["coefficient"])} ★ picked</span>'
                if _picked(search, p) else _coef(p["coefficient"]))
        s = p["scores"]
        rows.append([coef, _domain_value(search, s), num(p.get("retained_mean")),
                     *(num(s.get(k)) for k in retained)])
    head = [esc(search["param"]), _domain_head(search), f"retained mean {arrow(True)}",
            *(f"{breakable(k)} {arrow(True)}" for k in retained)]
    where = (f"scored on the selection part ({_sizes(search, 'selection')} items per probe), "
             "the items the pick was made on; " if search.get("split") else "")
    said = note(f"{where}retained scores are oriented so that higher is better (an over-refusal "
                "rate as 1 − the rate); the retained mean is their mean; ★ the picked coefficient")
    return section("points", "Every point of the grid", said + table(head, rows, "caps"))


def section_soup(search: dict) -> str:
    if "soup" not in search:
        return ""
    soup, fts = search["soup"], search["finetunes"]

    def name(i: Any) -> str:
        ok = isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(fts)
        return f"<code>{esc(fts[i])}</code>" if ok else esc(i)

    selected = set(map(str, as_list(soup.get("selected"))))
    own = [[f"<code>{esc(f)}</code>", num(v), "yes" if str(f) in selected else "no"]
           for f, v in zip(fts, as_list(soup.get("individual")))]
    steps = [[str(n), name(h[0]), num(h[1]), "kept" if h[2] else "dropped"]
             for n, h in enumerate(as_list(soup.get("history")), 1)
             if isinstance(h, list) and len(h) == 3]
    body = [f"<p>Greedy soup (Wortsman et al., 2022): the fine-tunes added one at a time, best "
            f"first, each kept only if the soup's objective does not fall. Kept: "
            f"{_paths(as_list(soup.get('selected')))}; the soup's objective "
            f"{num(soup.get('objective'))}.</p>",
            note(f"objective: {SOUP_OBJECTIVE}" + (", the new-domain score being minus the "
                                                   "cross-entropy" if _ce(search) else ""))]
    if own:
        body.append(table(["fine-tune", "its own objective", "in the soup"], own, "caps"))
    if steps:
        body.append(table(["step", "fine-tune tried", "soup objective", ""], steps, "caps"))
    return section("soup", "Greedy soup", "".join(body))


def section_settings(search: dict) -> str:
    probe_n = search.get("probe_n")
    rows = [("method, parameter", f"{esc(search['method'])}, {esc(search['param'])}"),
            ("new domain", f"<code>{esc(search['domain'])}</code> <span class=\"dim\">"
                           f"{esc(search.get('domain_score'))}</span>"),
            ("domain_metric", esc(search.get("domain_metric", "accuracy"))),
            ("retained", _paths(search["retained"])),
            ("min_gain_share", f"{num(search.get('min_gain_share'))} "
                               f"({_share(search.get('min_gain_share'))})"),
            ("probe_n", "all items" if probe_n is None else esc(probe_n)),
            ("seed", esc(search.get("seed")))]
    if search.get("split"):
        rows.append(("split", f"selection {_sizes(search, 'selection')}, reporting "
                              f"{_sizes(search, 'reporting')} items per probe (disjoint)"))
    return section("settings", "Settings", facts(rows))


def search_title(search: dict) -> str:
    return f"{search['method']} search over {search['param']}"


def search_sections(search: dict, figs: dict[str, bytes]) -> list[str]:
    """The page's sections, the answer first (``figs``: ``search_figures``)."""
    return [s for s in (section_summary(search), section_curve(search, figs),
                        section_points(search), section_soup(search), section_settings(search))
            if s]
