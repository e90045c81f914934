"""Model merging: pure tensor functions, one module per method, a registry, and an engine that
streams safetensors folders tensor by tensor (or merges state dicts in memory).

    merge(method, models, out, *, base=None, weights=None, **options) -> Path
    merge_state_dicts(method, base, models, *, weights=None, **options) -> dict
    interpolate(base, finetune, alpha)        # WiSE-FT: alpha=0 base, alpha=1 fine-tune
    MERGE_METHODS                             # name -> MergeMethod (options model, citation)
    interpolation_curve / method_curve / pick_coefficient / greedy_soup   # in-memory search
"""

from retain.merging.base import MergeMethod, MergeOptions, TensorSet
from retain.merging.config import MergeConfig, load_merge_config, merge_from_config
from retain.merging.engine import merge, merge_state_dicts
from retain.merging.linear import interpolate
from retain.merging.registry import MERGE_METHODS
from retain.merging.search import (greedy_soup, interpolation_curve, method_curve,
                                   pick_coefficient)

__all__ = ["MERGE_METHODS", "MergeConfig", "MergeMethod", "MergeOptions", "TensorSet",
           "greedy_soup", "interpolate", "interpolation_curve", "load_merge_config", "merge",
           "merge_from_config", "merge_state_dicts", "method_curve", "pick_coefficient"]
