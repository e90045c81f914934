"""What sequential fine-tuning does to earlier domains on the built-in model, and which
strategies keep them: ``examples/sequence.yaml`` (legal -> support -> recipes, 100 steps each at
lr 1e-3, batch 8 x 128, 60 items per probe, 3 seeds, 6 runs), then one line per run: ACC, BWT,
FWT and forgetting of the cloze accuracy and of the cross-entropy, with 95% intervals over seeds,
and the mean accuracy matrix.

    OMP_NUM_THREADS=2 python benchmarks/sequence_evidence.py [--out runs/sequence-evidence] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from retain.experiments.sequence import run_sequence

ROOT = Path(__file__).resolve().parents[1]


def _ci(s: dict) -> str:
    ci = s.get("ci")
    return f"{s['mean']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/sequence-evidence"))
    ap.add_argument("--seeds", default="0,1,2")
    a = ap.parse_args()
    data = yaml.safe_load((ROOT / "examples" / "sequence.yaml").read_text())
    data["seeds"] = [int(x) for x in a.seeds.split(",")]
    summary = run_sequence(None, data=data, out=a.out)
    lines = []
    for e in summary["entries"]:
        for metric in ("accuracy", "ce_nats_per_token"):
            m = e["matrices"].get(metric, {})
            if "acc" not in m:
                continue
            lines.append(f"{e['label']:<14} {metric:<18} ACC {_ci(m['acc'])}  BWT {_ci(m['bwt'])}  "
                         f"FWT {_ci(m['fwt'])}  forgetting {_ci(m['forgetting'])}")
        lines.append(f"{'':<14} accuracy R: " + json.dumps(
            [[round(v, 3) for v in row] for row in e["matrices"]["accuracy"]["R"]]))
    text = "\n".join(lines)
    (a.out / "evidence.txt").write_text(text + "\n")
    print(text)
    print(f"wall {summary['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
