"""Training: the one loop (``retain.train.loop``), shared by every strategy and every run."""

from retain.train.loop import TrainConfig, TrainResult, batch_indices, collate, lr_factor, train

__all__ = ["TrainConfig", "TrainResult", "batch_indices", "collate", "lr_factor", "train"]
