"""What each penalty costs inside a training step, measured within the same steps: the time in
the strategy's per-step hook (``penalty_grad`` for EWC, L2-SP and MAS; ``penalty`` for
distillation) over the time of the whole step, summed over the steps after the first
``bench_train.SKIP``. A ratio of times taken in one run, so it does not move with the load of
the machine the way two runs side by side do (the train section of ``make bench`` compares
whole runs, and on a shared machine its repetitions spread by tens of percent).

    python benchmarks/penalty_share.py [--steps 50] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import PENALTIES, SKIP, _setup  # noqa: E402


def share(tok, data, ref, steps: int, spec: dict) -> float:
    """Seconds in the strategy's step hook over seconds of the steps (after SKIP)."""
    from retain.formats import pad_token_id
    from retain.models import copy_state, load_model
    from retain.strategies import RunContext, build_strategies
    from retain.train import TrainConfig, train
    from retain.train.callbacks import Callback

    torch.manual_seed(0)
    model, _ = load_model("tiny", dtype="float32", device="cpu")
    [s] = build_strategies([spec])
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=None, device=torch.device("cpu"),
                     base_state=copy_state(model), reference=ref)
    model = s.prepare(model, ctx)
    data = s.train_data(data, ctx)
    hook = "penalty_grad" if s.fused_penalty else "penalty"
    inner = getattr(s, hook)
    spent: list[float] = [0.0]
    ends: list[float] = []
    per_step: list[float] = []

    def timed(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        spent[0] += time.perf_counter() - t
        return out

    setattr(s, hook, timed)

    class Stamp(Callback):
        def on_step_end(self, state):
            ends.append(time.perf_counter())
            per_step.append(spent[0])
            spent[0] = 0.0

    train(model, data, pad_id=pad_token_id(tok), strategies=[s], callbacks=[Stamp()],
          progress=False, config=TrainConfig(lr=1e-3, steps=steps, batch_size=8,
                                             warmup_steps=5, log_every=10**6))
    step_s = ends[-1] - ends[SKIP - 1]
    return sum(per_step[SKIP:]) / step_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    tok, data, ref = _setup(n_ref=128)
    print(f"| penalty | share of a step (median of {args.reps}) | range |")
    print("|---|---|---|")
    for label, spec in PENALTIES.items():
        vals = [share(tok, data, ref, args.steps, spec) for _ in range(args.reps)]
        print(f"| {label} | {statistics.median(vals):.1%} | {min(vals):.1%} to {max(vals):.1%} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
