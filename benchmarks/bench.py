"""``make bench``: every benchmark of retain against its baseline, side by side, written to
``benchmarks/RESULTS.md`` (and every repetition's value in ``benchmarks/RESULTS.json``).

    python benchmarks/bench.py [--quick] [--only probes,train,...] [--reps 3] [--out FILE]

Sections (each a ``bench_<name>.py`` run in a fresh process, one after the other, so that no
two measurements share the cores): probes vs lm-evaluation-harness, training step vs
``transformers.Trainer`` and the penalties' overhead, the Fisher estimator vs a per-sample loop,
merges vs mergekit, and the demo's wall time; then the scaling section, computed from the
measured costs. The peers (lm-eval, mergekit) are installed first into ``.bench/peers``, a venv
of their own (``peers.py``). ``--quick``: smaller inputs and no 12-entry demo or 509 MB merge,
for a check that everything still runs (about 5 minutes); figures from it are not the record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import machine, versions, write_json  # noqa: E402
import peers  # noqa: E402
import results_md  # noqa: E402

SECTIONS = ("probes", "train", "fisher", "merges", "demo")
NEEDS_PEERS = {"probes", "merges"}


def run_section(name: str, args, work: Path, peers_python: str | None) -> dict:
    """One section in a process of its own; its figures, or the error that stopped it."""
    out = work / f"{name}.json"
    spec = {"quick": args.quick, "reps": args.reps, "work": str(work / name),
            "peers_python": peers_python}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), json.dumps(spec),
                           str(out)], cwd=HERE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or "").strip().splitlines()[-15:]
        print(f"  {name}: FAILED after {wall:.0f} s\n    " + "\n    ".join(tail), flush=True)
        return {"error": "\n".join(tail), "wall_s": wall}
    data = json.loads(out.read_text())
    data["wall_s"] = wall
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, for a smoke check")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"some of {','.join(SECTIONS)}")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every figure (>= 3)")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown file (default benchmarks/RESULTS.md; --quick: "
                         "benchmarks/results/RESULTS-quick.md)")
    ap.add_argument("--work", type=Path, default=HERE.parent / ".bench" / "work")
    ap.add_argument("--peers", type=Path, default=peers.DEFAULT_DIR,
                    help="the peers' venv (installed when missing)")
    ap.add_argument("--no-peers", action="store_true", help="skip lm-eval and mergekit")
    ap.add_argument("--update", action="store_true",
                    help="measure the --only sections again and replace them in the existing "
                         "results (the others are kept, and the page says which were redone)")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {unknown[0]!r}; known: {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    if args.reps < 1:
        print("bench: --reps must be at least 1", file=sys.stderr)
        return 2
    out = args.out or (HERE / "results" / "RESULTS-quick.md" if args.quick
                       else HERE / "RESULTS.md")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    peers_python = None
    if not args.no_peers and NEEDS_PEERS & set(only):
        print(f"peers venv: {args.peers}", flush=True)
        peers_python = str(peers.ensure(args.peers))
    host = machine()
    report = {"started": started, "quick": args.quick, "reps": args.reps, "machine": host,
              "versions": versions(),
              "peer_versions": versions(peers_python, ("torch", "transformers", "lm_eval",
                                                       "mergekit")) if peers_python else {},
              "sections": {}}
    for name in only:
        print(f"[{name}] ...", flush=True)
        report["sections"][name] = res = run_section(name, args, args.work, peers_python)
        print(f"[{name}] {res['wall_s']:.0f} s", flush=True)
    report["load_avg_end"] = list(__import__("os").getloadavg())
    report["wall_s"] = time.perf_counter() - t0
    if args.update and out.with_suffix(".json").is_file():  # keep the other sections' record
        old = json.loads(out.with_suffix(".json").read_text())
        for name in only:
            old["sections"][name] = report["sections"][name]
            old.setdefault("remeasured", {})[name] = {
                "started": started, "load_avg": host["load_avg"],
                "wall_s": report["sections"][name].get("wall_s", 0.0), "cpu": host["cpu"],
                "versions": {**report["versions"], **{f"peers {k}": v for k, v in
                                                      report["peer_versions"].items()}}}
        report = old
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), report)  # every repetition's raw value
    out.write_text(results_md.render(report))
    print(f"wrote {out} in {report['wall_s'] / 60:.1f} min")
    print(results_md.targets_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
