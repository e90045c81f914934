"""The report in a real browser: headless Chromium (Debian's ``chromium``) loads report.html from
disk, with a harness script injected ahead of the page that records script errors, calls to
``alert``, blocked resources and what rendered; then a screenshot is kept as a test artifact
(``tests/artifacts/``, or ``$RETAIN_TEST_ARTIFACTS``). Skipped only when Chromium is absent and
``CI`` is not set: in CI a missing browser is a failure. A comparison of 13 runs is also checked
at 1400 pixels: neither the page nor any of its tables is wider than the window.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from retain.report import html as rh

from report_fixtures import make_comparison, make_demo_comparison, make_run

# The fixtures' comparison.json holds no ranking: every section but that one.
NO_RANKING = [s for s in rh.SECTIONS if s != "ranking"]

ARTIFACTS = Path(os.environ.get("RETAIN_TEST_ARTIFACTS") or Path(__file__).parents[1] / "artifacts")
# Section headings in page order; "Ranking" only where comparison.json holds one.
HEADINGS = ("Summary", "Trade-off: the new domain against the old",
            "What changed, strategy by capability", "Ranking", "Capabilities before and after",
            "Strategies and their papers", "Training curves", "Weight drift per layer",
            "Guard events", "Items lost and gained (paired, the same items before and after)",
            "Examples: the model's answers before and after", "Configuration")

# Runs before the page's own content (and before its Content-Security-Policy), so it can watch.
HARNESS = """<script>
(function () {
  var root = document.documentElement;
  function mark(name, value) { root.setAttribute('data-' + name, value); }
  window.onerror = function (msg) { mark('script-error', String(msg)); };
  window.alert = function (x) { mark('alert-called', String(x)); };
  document.addEventListener('securitypolicyviolation', function (e) {
    mark('csp-violation', e.violatedDirective + ' ' + e.blockedURI); });
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images);
    mark('images-ok', imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length);
    mark('images', imgs.length);
    mark('scripts', document.scripts.length);
    mark('sections', Array.prototype.map.call(document.querySelectorAll('section[id]'),
                                              function (s) { return s.id; }).join(','));
    mark('headings', Array.prototype.map.call(document.querySelectorAll('h2'),
                                              function (h) { return h.textContent; }).join('|'));
    mark('overflow-px', Math.max(0, root.scrollWidth - window.innerWidth));
    mark('table-overflow-px', Math.max.apply(null, [0].concat(Array.prototype.map.call(
      document.querySelectorAll('div.scroll'), function (d) { return d.scrollWidth - d.clientWidth; }))));
    mark('harness', 'ran');
  });
})();
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; CI must run the browser test "
                    "(apt-get install -y --no-install-recommends chromium)")
    pytest.skip("chromium not installed (apt-get install chromium) and CI is not set")


def _run_chromium(exe: str, tmp: Path, url: str, *args: str,
                  width: int = 1280) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
           "--enable-logging=stderr", "--v=0", f"--window-size={width},2000", *args, url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _attrs(dom: str) -> dict[str, str]:
    m = re.search(r"<html\b([^>]*)>", dom)
    assert m, dom[:500]
    return {k: v.replace("&amp;", "&") for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1))}


def _check_page(exe: str, report: Path, tmp: Path, *, sections: list[str] = NO_RANKING,
                width: int = 1280) -> tuple[dict[str, str], str]:
    harness = report.with_name("harness.html")
    page = report.read_text(encoding="utf-8")
    harness.write_text(page.replace("<head>", "<head>" + HARNESS, 1), encoding="utf-8")
    proc = _run_chromium(exe, tmp, harness.as_uri(), "--virtual-time-budget=10000", "--dump-dom",
                         width=width)
    assert "Uncaught" not in proc.stderr, proc.stderr[-3000:]
    attrs, dom = _attrs(proc.stdout), proc.stdout
    assert attrs.get("harness") == "ran", "the page did not finish loading"
    assert "script-error" not in attrs and "alert-called" not in attrs, attrs
    assert "csp-violation" not in attrs, attrs  # nothing external was asked for, nothing blocked
    assert attrs["scripts"] == "1"  # the harness's own: the report has none
    assert attrs["images"] == attrs["images-ok"] and int(attrs["images"]) >= 5
    assert attrs["sections"].split(",") == sections
    headings = [h for h in HEADINGS if h != "Ranking" or "ranking" in sections]
    assert attrs["headings"].split("|") == headings
    assert int(attrs["overflow-px"]) == 0, f"the page is wider than a {width}-pixel window"
    assert int(attrs["table-overflow-px"]) == 0, "a table is wider than the page (it scrolls)"
    return attrs, dom


def test_run_report_in_chromium(tmp_path: Path, fast_figures):
    exe = _chromium()
    report = rh.build_report(make_run(tmp_path / "run", "lora", guard=True))
    _, dom = _check_page(exe, report, tmp_path)
    # the planted answer is text on the page, not an element
    assert "12 &lt;script&gt;alert(1)&lt;/script&gt; &amp; \"quotes\"" in dom


def test_comparison_report_in_chromium_with_screenshot(tmp_path: Path):
    exe = _chromium()
    report = rh.build_report(make_comparison(tmp_path / "cmp"))
    _check_page(exe, report, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-comparison.png"
    shot.unlink(missing_ok=True)
    _run_chromium(exe, tmp_path, report.as_uri(), "--virtual-time-budget=10000",
                  f"--screenshot={shot}")
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)  # (H, W, C) floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1280)
    not_white = (pixels[..., :3].min(axis=2) < 0.9).mean()
    assert not_white > 0.03, f"the screenshot is nearly blank ({not_white:.1%} inked)"
    print(f"report screenshot: {shot}")


def test_thirteen_runs_fit_a_1400_pixel_window(tmp_path: Path):
    """The demo's twelve strategies and one long label: the first screen leads with the
    sentences and the ranking's rule, and nothing is wider than the window."""
    exe = _chromium()
    report = rh.build_report(make_demo_comparison(tmp_path / "cmp"))
    _, dom = _check_page(exe, report, tmp_path, sections=list(rh.SECTIONS), width=1400)
    summary = dom[dom.index('<section id="summary">'):dom.index('<section id="tradeoff">')]
    assert summary.count("<li>") == 13 and "Ranked by mean retained capability" in summary
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in summary  # the planted label, escaped
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report-comparison-13-runs.png"
    shot.unlink(missing_ok=True)
    _run_chromium(exe, tmp_path, report.as_uri(), "--virtual-time-budget=10000",
                  f"--screenshot={shot}", width=1400)
    print(f"report screenshot: {shot}")
