"""Worker of tests/test_multiprocess.py (not a test): one ``retain.run.run`` under torchrun (or
alone), saving each process's final weights to ``WEIGHTS_DIR/rank{R}.safetensors``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/mp_worker.py WEIGHTS_DIR key=value ...
"""

import sys

import torch
from retain.train.loop import process_state
from safetensors.torch import save_file

import retain.metrics.outcome
from retain.config import load_config
from retain.run import run

torch.set_num_threads(1)
weights_dir, overrides = sys.argv[1], sys.argv[2:]
drift = retain.metrics.outcome.weight_drift


def capture(base, current):  # the run computes drift from every process's final weights
    rank = process_state().process_index
    save_file({k: v.detach().cpu().contiguous() for k, v in current.items()},
              f"{weights_dir}/rank{rank}.safetensors")
    return drift(base, current)


retain.metrics.outcome.weight_drift = capture
run(load_config(None, overrides))
