"""The README's demo table, generated from the demo's own ``summary.csv`` (so that the figures a
reader sees are the ones the demo wrote, never typed by hand).

    python -m retain.report.demo_table runs/demo/summary.csv            # print the table
    python -m retain.report.demo_table runs/demo/summary.csv --readme README.md   # rewrite it

The table sits between ``<!-- demo-table:start -->`` and ``<!-- demo-table:end -->`` in the
README; ``docs/demo_summary.csv`` is the summary it was made from, and a test checks that the two
agree.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

START, END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"
# (probe, metric, column heading), in the README's order
COLUMNS = [("math", "accuracy", "math"), ("code", "accuracy", "code"),
           ("writing", "ce_nats_per_token", "writing ce"),
           ("multilingual", "accuracy", "multilingual"), ("safety", "refusal_rate", "refusal"),
           ("safety", "over_refusal_rate", "over-refusal"),
           ("instructions", "accuracy", "instructions"), ("legal", "accuracy", "legal"),
           ("legal", "ce_nats_per_token", "legal ce")]


def read_summary(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def demo_table(rows: list[dict]) -> str:
    """The markdown table: a ``before`` row (the base, shared by every entry), then one row per
    strategy in the summary's order; a metric a summary lacks shows as ``-``."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    cell = {(r["strategy"], r["probe"], r["metric"]): r for r in rows}

    def fmt(x: str | None) -> str:
        return "-" if x in (None, "") else f"{float(x):.2f}"

    lines = ["| strategy | " + " | ".join(h for _, _, h in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    first = strategies[0] if strategies else None
    lines.append("| before | " + " | ".join(
        fmt((cell.get((first, p, m)) or {}).get("before")) for p, m, _ in COLUMNS) + " |")
    for s in strategies:
        lines.append(f"| {s} | " + " | ".join(
            fmt((cell.get((s, p, m)) or {}).get("after")) for p, m, _ in COLUMNS) + " |")
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """The table currently between the README's markers."""
    if START not in readme or END not in readme:
        raise ValueError(f"the README has no {START} ... {END} block")
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def replace_block(readme: str, table: str) -> str:
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{table}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m retain.report.demo_table SUMMARY_CSV [--readme README]")
    table = demo_table(read_summary(args[0]))
    if "--readme" in args:
        path = Path(args[args.index("--readme") + 1])
        path.write_text(replace_block(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    else:
        print(table)


if __name__ == "__main__":
    main()
