"""The page of a forecast folder (``retain forecast``): ``forecast.json`` and, once the real run
was checked, ``check.json``. The verdict first, then per capability the pilots' points, the fitted
law and its 80% band over the planned steps (the actual after-score marked when checked), the
limits, the items predicted lost, the pilots and the settings. Every model output (a prompt) is
escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.report.html.helpers import (
    as_dict, as_list, breakable, esc, facts, img, is_number, note, num, read_checked_json,
    section, table)

FORECAST_FILE = "forecast.json"  # = retain.forecast.FORECAST_FILE (a test checks)
CHECK_FILE = "check.json"  # = retain.forecast.check.CHECK_FILE
FORECAST_SECTIONS = ("verdict", "capabilities", "curves", "items", "pilots", "settings")
CHART = "forecast.png"


def load_forecast(d: Path) -> dict[str, Any]:
    """``d/forecast.json`` (checked for what the page reads), with ``check.json`` under
    ``"check"`` when the folder has one."""
    fc = read_checked_json(d / FORECAST_FILE, _problem, "a forecast written by retain forecast")
    if (d / CHECK_FILE).is_file():
        fc["check"] = read_checked_json(d / CHECK_FILE, lambda c: None if isinstance(c, dict)
                                        else "not a JSON object", "a forecast check")
    return fc


def _problem(fc: Any) -> str | None:
    if not isinstance(fc, dict) or fc.get("kind") != "forecast":
        return "not a forecast (kind is not forecast)"
    for key, kind in (("plan", dict), ("capabilities", list), ("pilots", list),
                      ("verdict", dict), ("items", dict), ("limit_checks", list)):
        if not isinstance(fc.get(key), kind):
            return f"{key} is missing or not {'a list' if kind is list else 'an object'}"
    if any(not isinstance(c, dict) or not isinstance(c.get("key"), str)
           for c in fc["capabilities"]):
        return "a capability lacks its key"
    return None


def forecast_figures(fc: dict[str, Any]) -> dict[str, bytes]:
    """One panel per capability: the pilots' points (their changes applied to the value now, by
    rate), the predicted curve and its 80% band over the planned steps' area, the actual
    after-score when checked."""
    from retain.report.figures import figure_png
    from retain.report.plots import plt

    caps = [c for c in as_list(fc["capabilities"]) if as_list(c.get("curve"))]
    if not caps:
        return {}
    actual = {r.get("key"): r.get("actual") for r in as_list(as_dict(fc.get("check"))
                                                           .get("capabilities"))}
    cols = min(3, len(caps))
    rows = (len(caps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, c in zip(axes.flat, caps):
        curve = c["curve"]
        xs = [p["x"] * 1e3 for p in curve]
        ax.fill_between(xs, [p["lo"] for p in curve], [p["hi"] for p in curve], alpha=0.2,
                        color="tab:blue", label="80% band")
        ax.plot(xs, [p["value"] for p in curve], color="tab:blue", label="forecast")
        start, now = c.get("start"), c.get("now")
        for lr in sorted({p["lr"] for p in as_list(c.get("points"))}):
            pts = [p for p in c["points"] if p["lr"] == lr]
            ax.scatter([0] + [p["x"] * 1e3 for p in pts],
                       [now] + [now + p["step_value"] - start for p in pts],
                       s=14, label=f"pilot lr {lr:g}", zorder=3)
        if is_number(actual.get(c["key"])):
            ax.scatter([xs[-1]], [actual[c["key"]]], marker="*", s=90, color="tab:red",
                       label="actual", zorder=4)
        ax.set_title(c["key"], fontsize=9)
        ax.set_xlabel("learning-rate area (x1e-3)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(caps):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    return {CHART: figure_png(fig)}


def title(fc: dict[str, Any]) -> str:
    plan = fc["plan"]
    return (f"forecast of {'+'.join(map(str, as_list(plan.get('strategies'))))} at lr "
            f"{plan.get('lr')}, {plan.get('steps')} steps")


def sections(fc: dict[str, Any], figs: dict[str, bytes]) -> list[str]:
    check = as_dict(fc.get("check"))
    actual = {r.get("key"): r for r in as_list(check.get("capabilities"))}
    verdict = [f"<p><b>{esc(fc['verdict'].get('text'))}</b></p>"]
    lims = [[esc(x.get("limit")), "kept" if x.get("kept") else "not kept",
             esc(x.get("crossed_at_step") or "–")] for x in fc["limit_checks"]]
    if lims:
        verdict.append(table(["limit", "at the planned end", "first crossed at step"], lims))
    if check:
        verdict.append(f"<p>Checked against <code>{esc(check.get('run'))}</code>: mean absolute "
                       f"error {num(check.get('mean_abs_error'))}, 80% intervals held "
                       f"{num(check.get('coverage'), 2)} of the after-scores.</p>")
    head = ["probe.metric", "now", "predicted", "80% interval", "law", "fitted on"]
    if check:
        head += ["actual", "in interval"]
    rows = []
    for c in fc["capabilities"]:
        law = c.get("law")
        iv = as_list(c.get("interval"))
        row = [breakable(c["key"]), num(c.get("now")), num(c.get("predicted")),
               f"{num(iv[0])}–{num(iv[1])}" if len(iv) == 2 else "–",
               esc(f"c={law['c']:.3g}, alpha={law['alpha']:.2f}, beta={law.get('beta', law['alpha']):.2f}"
                   f" ({law['form']})") if law
               else "no fit", esc(c.get("fitted_on"))]
        if check:
            a = actual.get(c["key"], {})
            row += [num(a.get("actual")), "yes" if a.get("covered") else "no" if a else "–"]
        rows.append(row)
    curves = img(figs[CHART], CHART, "forecast curves", wide=True) if CHART in figs \
        else note("No capability had a fitted law to draw.")
    items = []
    for key, it in as_dict(fc["items"]).items():
        top = [[esc(t.get("rank")), esc(t.get("index")), esc(t.get("prompt")),
                num(t.get("signal_now")), num(t.get("signal_predicted")),
                "yes" if t.get("predicted_lost") else ""] for t in as_list(it.get("top"))]
        items.append(f"<h3>{esc(key)}: {esc(it.get('predicted_lost'))} of {esc(it.get('scored'))}"
                     f" items predicted lost</h3>" + table(
                         ["rank", "item", "prompt", "signal now", "signal predicted",
                          "predicted lost"], top))
    for r in as_list(check.get("items")):
        items.append(f"<p>{esc(r.get('key'))}: {esc(r.get('lost'))} lost in the run; AUROC "
                     f"{num(r.get('auroc'), 2)}, precision {num(r.get('precision'), 2)}, recall "
                     f"{num(r.get('recall'), 2)}.</p>")
    pilots = [[num(p.get("lr"), 6), esc(p.get("steps")), esc(p.get("trained_steps")),
               num(p.get("wall_s"), 1), f"<code>{esc(p.get('folder'))}</code>"]
              for p in fc["pilots"]]
    plan = as_dict(fc["plan"])
    return [section("verdict", "Verdict", "".join(verdict)),
            section("capabilities", "Each capability at the planned end",
                    table(head, rows, "caps")),
            section("curves", "Pilots, law and band", curves),
            section("items", "Items predicted lost", "".join(items) or note("No item forecast.")),
            section("pilots", "Pilots", table(["lr", "steps", "trained", "wall s", "folder"],
                                              pilots) + note(
                f"{num(fc.get('pilot_wall_s'), 1)} s of pilots and "
                f"{num(fc.get('base_probe_s'), 1)} s probing the base.")),
            section("settings", "Settings", facts([(esc(k), esc(v)) for k, v in plan.items()]
                                                  + [("budget", esc(fc.get("budget"))),
                                                     ("limits", esc(fc.get("limits")))]))]
