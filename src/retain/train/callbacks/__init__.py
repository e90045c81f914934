"""Callbacks of the training loop (one file each), with the events of ``TrainerCallback``:

    base.py          LoopState, Decision, Callback, apply_decision, EveryN
    checkpointer.py  every N steps and at a stop: what a resume needs
    progress.py      the terminal's progress bar
    recorder.py      the run folder: config.yaml, metrics.jsonl (and trackers), results.json,
                     the failure record
    probes.py        the probes before, every N steps, after
    guard.py         the guard's checks, rollbacks and final check

``retain.train.loop`` runs them; ``retain.integrations.transformers`` maps a ``Trainer``'s events
onto the same objects. Only the protocol and the checkpointer are imported here (the others
import probing and the guard, which import this protocol).
"""

from retain.train.callbacks.base import (Callback, Decision, EveryN, LoopState, apply_decision,
                                         as_decision)
from retain.train.callbacks.checkpointer import Checkpointer

__all__ = ["Callback", "Checkpointer", "Decision", "EveryN", "LoopState", "apply_decision",
           "as_decision"]
