"""The HTML building blocks every page of ``retain report`` is made of: escaping (every piece of
untrusted text, from model output to a file name, goes through ``esc``), numbers, intervals,
durations, arrows, links, tables, sections, notes and embedded images; and reading a page's
JSON file or PNG figure, checked. Each function returns HTML that is safe to put on the page.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from retain.errors import UserError
from retain.metrics.verdicts import changed

FIGURES_DIR = "figures"  # the charts of a run or comparison folder, beside its report.html
MAX_TEXT = 600  # characters of a prompt or an answer shown before it is cut
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- reading ------------------------------------------------------------------------------------

def read_checked_json(path: Path, problem, what: str) -> Any:
    """``path``'s JSON, checked by ``problem(data) -> str | None``; a one-line UserError naming
    the file when it is not JSON or has a problem (``what``: who writes such a file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # bad JSON, or not UTF-8
        raise UserError(f"{path} is not valid JSON: {e}") from None
    found = problem(data)
    if found:
        raise UserError(f"{path} is not {what}: {found}")
    return data


def read_png(path: Path) -> bytes | None:
    """The file's bytes if it is there and a PNG, else None."""
    data = path.read_bytes() if path.is_file() else b""
    return data if data.startswith(PNG_MAGIC) else None


def is_number(x: Any) -> bool:
    """A finite int or float (not a bool): what a JSON file may hold where a score belongs."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def as_dict(x: Any) -> dict:
    """``x`` if it is a dict, else an empty one (a file's field that is missing or malformed)."""
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    """``x`` if it is a list, else an empty one."""
    return x if isinstance(x, list) else []


# -- text and numbers ---------------------------------------------------------------------------

def esc(x: Any) -> str:
    """Untrusted text -> HTML text (quotes too, so it is also safe inside an attribute)."""
    return html.escape("" if x is None else str(x), quote=True)


def cut(text: Any) -> str:
    """``text`` (not escaped yet) cut to ``MAX_TEXT`` characters, saying how many were left out."""
    s = "" if text is None else str(text)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"… ({len(s) - MAX_TEXT} more characters)"


def num(x: Any, digits: int = 3) -> str:
    """A number for a table cell: "1,234", "0.123", "1.00e-05"; "–" for anything else."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    if x != 0 and abs(x) < 10 ** -digits:
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def ci(interval: Any) -> str:
    """A 95% interval ``[lo, hi]`` in small grey type; "" when there is none."""
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return f'<span class="ci">[{num(interval[0])}, {num(interval[1])}]</span>'
    return ""


def duration(s: Any) -> str:
    """Seconds as "2 min 5 s" or "4.2 s"; "–" when unknown."""
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        return "–"
    m, sec = divmod(float(s), 60)
    return f"{int(m)} min {sec:.0f} s" if m else f"{sec:.1f} s"


def arrow(higher_is_better: bool) -> str:
    """The metric's direction: ↑ higher is better, ↓ lower is."""
    return "↑" if higher_is_better else "↓"


def change_class(row: dict) -> str:
    """CSS class of a before/after row: ``gain``/``loss`` by the metric's direction, ``weak``
    added when the paired test on the same items sees no change (``verdicts.changed``: results
    without per-item outcomes, when the two intervals overlap), ``same`` for no change."""
    d = row.get("delta")
    if not isinstance(d, (int, float)) or not math.isfinite(d) or abs(d) < 1e-12:
        return "same"
    good = d > 0 if row.get("higher_is_better", True) else d < 0
    return ("gain" if good else "loss") + ("" if changed(row) else " weak")


_URL = re.compile(r"https?://[^\s<>\"']+")


def linkify(text: Any) -> str:
    """Escape ``text``, turning its http(s) URLs into links (only those schemes)."""
    s, out, last = "" if text is None else str(text), [], 0
    for m in _URL.finditer(s):
        url = m.group(0).rstrip(".,;)")
        out.append(esc(s[last:m.start()]))
        out.append(f'<a href="{esc(url)}" rel="noreferrer">{esc(url)}</a>')
        last = m.start() + len(url)
    out.append(esc(s[last:]))
    return "".join(out)


def breakable(key: str) -> str:
    """An escaped ``probe.metric`` that may wrap after its dots and underscores (a narrow
    column header instead of one as wide as the name)."""
    return re.sub(r"([._])", r"\1<wbr>", esc(key))


# -- blocks -------------------------------------------------------------------------------------

def img(data: bytes, name: str, alt: str, wide: bool = False, where: str = FIGURES_DIR) -> str:
    """The PNG embedded as a data URI, captioned with its file (``where``: its folder in DIR)."""
    b64 = base64.b64encode(data).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (f'<figure{cls}><img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'
            f'<figcaption>{esc(where + "/" + name if where else name)}</figcaption></figure>')


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (escaped by the caller). In a box that scrolls sideways should a
    table ever be wider than the page (the layouts keep them narrower), so that the page
    itself never does."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def facts(pairs: list[tuple[str, str]]) -> str:
    """A two-column table of facts: a name (HTML) and its value (HTML) per row."""
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="facts">{rows}</table>'


def section(sid: str, title: str, body: str) -> str:
    """A section of the page; ``sid`` is its stable id (the page's navigation links to it)."""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str) -> str:
    """A remark in italics (``text`` is escaped)."""
    return f'<p class="note">{esc(text)}</p>'
