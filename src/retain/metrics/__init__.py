"""Pure metric functions: before/after forgetting and retention, weight drift, and the
continual-learning accuracy-matrix metrics (ACC, BWT, FWT, forgetting). Each cites its source."""

from retain.metrics.continual import (average_accuracy, average_forgetting, bwt,
                                      forgetting_matrix, fwt)
from retain.metrics.drift import layer_of, lora_delta, weight_drift
from retain.metrics.forgetting import compare, delta, forgetting, gain, retention

__all__ = ["average_accuracy", "average_forgetting", "bwt", "compare", "delta", "forgetting",
           "forgetting_matrix", "fwt", "gain", "layer_of", "lora_delta", "retention",
           "weight_drift"]
