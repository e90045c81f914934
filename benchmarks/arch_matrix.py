"""The README's support table, generated from the architecture matrix's test results
(tests/models/test_arch_matrix.py): runs it with a JUnit report, then writes one row per
architecture (tied or untied embeddings; the three probe kinds after loading a saved folder;
each strategy family; every merge method; the save/load round trip; ``retain diff``) between the README's
``<!-- support-table -->`` markers. A cell the tests show peft cannot do reads "no" with its
footnote; a failing test reads "FAIL".

    python benchmarks/arch_matrix.py [--readme README.md]
    python benchmarks/arch_matrix.py --device cuda --out arch_matrix_cuda.md   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests" / "models"
START, END = "<!-- support-table -->", "<!-- /support-table -->"


def outcomes(junit: Path) -> dict[str, bool]:
    """test id (``name[params]``) -> passed."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = any(c.tag in ("failure", "error") for c in case)
        out[case.get("name")] = not failed
    return out


def table(results: dict[str, bool]) -> str:
    sys.path.insert(0, str(TESTS))
    from archs import ARCHS, tied, tiny_arch
    from test_arch_matrix import STRATEGIES, UNSUPPORTED

    from retain.builtin.build import build_tokenizer

    vocab = len(build_tokenizer())
    notes: dict[str, int] = {}

    def cell(test_id: str, key: tuple[str, str] | None = None) -> str:
        if test_id not in results:
            return "–"
        if not results[test_id]:
            return "FAIL"
        if key in UNSUPPORTED:
            n = notes.setdefault(UNSUPPORTED[key], len(notes) + 1)
            return f"no ({n})"
        return "yes"

    head = (["architecture", "embeddings", "load + 3 probe kinds"] + list(STRATEGIES)
            + ["14 merge methods", "save/load", "`retain diff`"])
    rows = []
    for arch in ARCHS:
        rows.append([f"`{arch}`", "tied" if tied(tiny_arch(arch, vocab)) else "untied",
                     cell(f"test_load_and_every_probe_kind[{arch}]")]
                    + [cell(f"test_strategy_family[{arch}-{f}]", (arch, f)) for f in STRATEGIES]
                    + [cell(f"test_every_merge_method[{arch}]"),
                       cell(f"test_save_and_load_round_trip[{arch}]"),
                       cell(f"test_retain_diff[{arch}]")])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    why = {"does not work with use_dora": "peft's LoRA cannot put DoRA on a mixture of experts' "
                                          "expert parameters (a one-line error says so)",
           "specify `target_modules`": "peft has no default IA3 targets for this architecture: "
                                       "give the ia3 strategy `target_modules` and "
                                       "`feedforward_modules` (a one-line error says so)"}
    lines += [""] + [f"({n}) {why.get(text, text)}." for text, n in notes.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: load, probe and train on the "
                    "GPU in bf16 autocast over fp32 master weights (benchmarks/gpu_check.sh)")
    ap.add_argument("--out", type=Path, help="write the table to this file, not the README")
    a = ap.parse_args()
    env = {**os.environ, "RETAIN_MATRIX_DEVICE": a.device}
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=",
                        str(TESTS / "test_arch_matrix.py"), f"--junitxml={junit}"], cwd=ROOT,
                       env=env)
        results = outcomes(junit)
        md = table(results)
    print(md)
    failed = sorted(k for k, ok in results.items() if not ok)
    print(f"matrix on {a.device}: {len(results) - len(failed)} of {len(results)} tests passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    if a.out:
        a.out.write_text(md + "\n", encoding="utf-8")
        return
    text = a.readme.read_text(encoding="utf-8")
    block = f"{START}\n{md}\n{END}"
    if START not in text:
        raise SystemExit(f"{a.readme} has no {START} ... {END} block to fill")
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    a.readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
