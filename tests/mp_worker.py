"""Worker of tests/test_multiprocess.py (not a test): one ``retain.run.run`` under torchrun (or
alone), saving each process's final weights to ``WEIGHTS_DIR/rank{R}.safetensors`` and the
self-replay pool it trained on to ``WEIGHTS_DIR/rank{R}-pool.json``. On processes other than the
main one, self-replay's generation answers differently (as sharded or nondeterministic kernels
can): a process that generated its own pool would train on other data than the main one.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/mp_worker.py WEIGHTS_DIR key=value ...
"""

import json
import sys

import torch
from retain.train.loop import process_state
from safetensors.torch import save_file

import retain.metrics.outcome
import retain.strategies.self_replay as self_replay
from retain.config import load_config
from retain.run import run

torch.set_num_threads(1)
weights_dir, overrides = sys.argv[1], sys.argv[2:]
rank = process_state().process_index
drift = retain.metrics.outcome.weight_drift
generate, mix = self_replay.generate_ids, self_replay.SelfReplay.train_data


def capture(base, current):  # the run computes drift from every process's final weights
    save_file({k: v.detach().cpu().contiguous() for k, v in current.items()},
              f"{weights_dir}/rank{rank}.safetensors")
    return drift(base, current)


def other_answers(*args, **kwargs):  # this process's generation differs from the main one's
    return [a[:1] for a in generate(*args, **kwargs)]


def keep_pool(self, data, ctx):  # the pool this process mixes into its training data
    with open(f"{weights_dir}/rank{rank}-pool.json", "w") as f:
        json.dump(self.pool, f)
    return mix(self, data, ctx)


retain.metrics.outcome.weight_drift = capture
self_replay.SelfReplay.train_data = keep_pool
if rank != 0:
    self_replay.generate_ids = other_answers
run(load_config(None, overrides))
