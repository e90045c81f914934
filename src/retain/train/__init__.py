"""Training: the one loop (``retain.train.loop``), shared by every strategy and every run, with its
callbacks (``callbacks/``: recorder, probes, guard, checkpointer, progress bar), checkpoints
(``checkpoint.py``), the inputs' fingerprint (``inputs.py``) and mixed precision
(``precision.py``)."""

from retain.train.callbacks import Callback, Checkpointer, LoopState
from retain.train.loop import (TrainConfig, TrainingFailed, TrainResult, batch_indices, collate,
                               lr_factor, train)

__all__ = ["Callback", "Checkpointer", "LoopState", "TrainConfig", "TrainingFailed", "TrainResult",
           "batch_indices", "collate", "lr_factor", "train"]
