"""`retain compare`: one model and one new domain under several strategies (and seeds), one run
folder each, then the comparison folder (``retain.experiments.comparison``). Repeating the
command resumes it.

    model: tiny                  # any RunConfig key: the base of every run
    steps: 100
    out: runs/compare            # the comparison folder; runs go to out/<label>-seed<k>/
    seeds: [0, 1, 2]             # optional (default: [seed])
    runs:
      - {label: full, strategies: [full], lr: 1.0e-4}
      - {label: lora r=8, strategies: [{name: lora, r: 8}], lr: 1.0e-3}

A run folder whose ``results.json`` is complete and whose config equals the planned one is reused;
an unfinished one of the same config continues from its last checkpoint (or runs again without
one); one of another config is refused unless
``overwrite``. The base model is probed once per seed (and probe set), and the runs share it.
A ``quick:`` key is read by ``retain demo --quick`` only (``experiments/demo.yaml``) and ignored
here.

The runs are planned, inspected and run by ``retain.experiments.runner``. Fanning out on a
scheduler (``docs/fan-out.md``): ``--list`` prints the planned runs with an
index, ``--only K`` runs run K alone (its own folder; the comparison folder is left alone), and
``--collect`` writes the comparison from complete runs only, refusing when one is missing;
``--launcher ray|slurm`` submits the runs as jobs, waits, and collects
(``retain.experiments.launch``, resources from the file's ``launcher:`` key).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from retain.config import read_yaml
from retain.errors import UserError
from retain.experiments.comparison import DEFAULT_RANK, MIN_GAIN_SHARE
from retain.experiments.launch import Launch, job_flags, read_settings
from retain.experiments.runner import COMPARE_KEYS, fan_out, plan, read_entries, read_seeds



def split_file(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the base RunConfig keys, the compare keys) of a compare or sweep file."""
    base = {k: v for k, v in data.items() if k not in COMPARE_KEYS}
    return base, {k: data[k] for k in COMPARE_KEYS if k in data}


def load_compare_file(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The compare file as ``{base, extra, overrides, seeds, out, title, rank_by}``;
    ``overrides`` (``a.b=c``) apply to every run."""
    return compare_data(read_yaml(path) if path is not None else {}, overrides)


def compare_data(data: dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``load_compare_file`` of data already read (a sweep file less its ``grid``)."""
    base, extra = split_file(data)
    if "overwrite" in base:
        raise UserError("overwrite is not a key of a compare file: use --overwrite")
    read_settings(extra.get("launcher"))  # checked even when no launcher is asked for
    return {"base": base, "extra": extra, "overrides": list(overrides),
            "seeds": read_seeds(extra.get("seeds"), base.get("seed", 0)),
            "out": Path(str(extra.get("out") or "runs/compare")),
            "title": str(extra.get("title") or ""), "rank_by": str(extra.get("rank_by") or DEFAULT_RANK),
            "min_gain_share": extra.get("min_gain_share", MIN_GAIN_SHARE)}


def run_compare(path: str | Path, overrides: Sequence[str] = (), *, out: Path | None = None,
                overwrite: bool = False, show: bool = True, listing: bool = False,
                only: Sequence[str | int] = (), collect: bool = False, launcher: str | None = None,
                data: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict:
    """Run (or resume) the comparison of ``path`` and write its comparison folder; with
    ``listing``, ``only``, ``collect`` or ``launcher`` as ``fan_out`` says (the first two, and
    ``only`` with ``launcher``, return ``{}``).
    ``data``: the file's content, already read (``path`` then only names it in messages);
    ``extra``: more keys for ``comparison.json``."""
    from retain.experiments.comparison import RANK_SCORES, write_comparison

    f = compare_data(read_yaml(path) if data is None else data, overrides)
    if "runs" not in f["extra"]:
        raise UserError(f"{path}: a compare file needs runs: [{{label: ..., strategies: [...]}}]")
    if f["rank_by"] not in RANK_SCORES:
        raise UserError(f"rank_by: {f['rank_by']!r} is not one of {', '.join(RANK_SCORES)}")
    share = f["min_gain_share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise UserError(f"min_gain_share: {share!r} must be a number between 0 and 1")
    flags = job_flags(out, overwrite, f["overrides"])  # the jobs' own, if launched
    out = Path(out or f["out"])
    entries = read_entries(f["extra"]["runs"])
    planned = plan(f["base"], entries, f["seeds"], out, f["overrides"])
    spec = None
    if launcher:
        if data is not None:
            raise UserError("--launcher needs a compare file: its jobs read it")
        spec = Launch(launcher, ["compare", str(path), *flags],
                      out, f["extra"].get("launcher") or {})
    t0 = time.time()
    results = fan_out(planned, listing=listing, only=only, collect=collect, overwrite=overwrite,
                      echo=print if show else (lambda s: None), launch=spec)
    if results is None:
        return {}
    cfg = planned[0].config
    title = f["title"] or f"retain compare: {cfg.model} on {cfg.data}"
    return write_comparison(out, [p.label for p in planned], results, title=title, show=show,
                            rank_by=f["rank_by"], min_gain_share=float(share),
                            extra={"wall_s": round(time.time() - t0, 1), "seeds": f["seeds"],
                                   **(extra or {})})
