"""The page of runs that all failed (a run folder, or a comparison none of whose runs finished):
where and why each one stopped, its last checkpoint, what ``metrics.jsonl`` logged so far, the
training curves up to the failure and the configuration. A comparison with some finished runs
gets the comparison page, which names its failed runs in a line (``failure_words``).
"""

from __future__ import annotations

from retain.report.html import run_sections as rs
from retain.report.html.folder import Folder, Run, strategy_name
from retain.report.html.helpers import esc, facts, note, num, section, table
from retain.report.results import METRICS_FILE

SECTIONS = ("failure", "training", "config")  # stable ids, in page order


def failure_words(res: dict) -> str:
    """Where and why a run failed, as escaped HTML: "at step 2 (stage train): reason"."""
    f = res.get("failure") if isinstance(res.get("failure"), dict) else {}
    step, stage = f.get("step"), f.get("stage")
    where = " ".join(x for x in (f"at step {esc(step)}" if step is not None else "",
                                 f"(stage {esc(stage)})" if stage else "") if x)
    return f'{where or "(where unknown)"}: {esc(f.get("reason") or "no reason recorded")}'


def metrics_so_far(r: Run) -> str:
    """What metrics.jsonl logged before the failure: each probe metric at the first and the
    last probe record, and the last training step's loss, gradient norm and learning rate."""
    if r.metrics is None:
        return note(f"no metrics so far: {METRICS_FILE} is absent")
    probes = [m for m in r.metrics if m.get("event") == "probe" and
              isinstance(m.get("results"), dict)]
    trains = [m for m in r.metrics if m.get("event") == "train"]
    if not probes and not trains:
        return note(f"no metrics so far: nothing was logged to {METRICS_FILE} before the failure")
    out = ""
    if probes:
        shown = [probes[0]] + ([probes[-1]] if len(probes) > 1 else [])
        keys = list(dict.fromkeys(k for m in shown for k in m["results"]))
        head = ["probe.metric"] + [f'{esc(m.get("stage"))}, step {esc(m.get("step"))}'
                                   for m in shown]
        out += table(head, [[esc(k)] + [num(m["results"].get(k)) for m in shown]
                            for k in keys], "caps")
    if trains:
        t = trains[-1]
        out += table(["last logged step", "loss", "gradient norm", "learning rate"],
                     [[num(t.get("step")), num(t.get("loss")), num(t.get("grad_norm")),
                       esc(t.get("lr"))]])
    else:
        out += note("no training step was logged before the failure")
    return out


def section_failure(folder: Folder) -> str:
    """Each failed run: where it failed (stage, step), why, its last checkpoint, and the
    metrics it logged so far."""
    blocks = []
    for r in folder.failed:
        f = r.results.get("failure") if isinstance(r.results.get("failure"), dict) else {}
        cfg = r.results.get("config") or {}
        last = f.get("last_checkpoint")
        resume = (f"<code>{esc(last)}</code> (add --resume to continue from it)" if last else
                  "no checkpoint (rerun the same command to start over)")
        head = f"<h3>{esc(r.label)}</h3>" if folder.labelled else ""
        blocks.append(head + facts([
            ("failed", failure_words(r.results)), ("model", esc(cfg.get("model"))),
            ("strategy", esc(strategy_name(r.results))),
            ("learning rate, steps", f'{esc(cfg.get("lr"))}, {esc(cfg.get("steps"))}'),
            ("last checkpoint", resume), ("created", esc(r.results.get("created")))])
            + f"<p>metrics so far:</p>{metrics_so_far(r)}")
    return section("failure", "The run failed" if len(folder.failed) == 1 else
                   "The runs failed", "".join(blocks))


def sections(folder: Folder, figs: dict[str, bytes]) -> list[str]:
    """Where and why, the curves so far, the config."""
    return [section_failure(folder), rs.section_training(folder, figs), rs.section_config(folder)]


def title(folder: Folder) -> str:
    if folder.labelled:
        return f"{len(folder.failed)} runs, all failed"
    first = folder.failed[0].results
    f = first.get("failure") if isinstance(first.get("failure"), dict) else {}
    return (f'{strategy_name(first)} on {(first.get("config") or {}).get("model")}: failed'
            + (f' at step {f["step"]}' if f.get("step") is not None else ""))
