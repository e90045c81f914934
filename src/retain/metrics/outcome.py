"""What a fine-tune did, in results.json's terms: the probe results before and after, their
comparison rows (with the paired tests), the new domain's gain and the weight drift from the base.
Shared by ``retain run`` and the Trainer callback, so both write the same keys."""

from __future__ import annotations

from typing import Any

import torch

from retain.metrics.drift import weight_drift
from retain.metrics.forgetting import compare, gain


def outcome(before: list, after: list, base_state: dict[str, torch.Tensor],
            model: torch.nn.Module) -> dict[str, Any]:
    """``{"probes", "comparison", "domain_gain", "drift"}`` of results.json. ``before``/``after``:
    ``ProbeResult`` lists; ``base_state``: a CPU copy of the base weights (name -> tensor)."""
    comparison = compare(before, after)
    with torch.no_grad():
        # A PEFT model that was not merged (prompt/prefix tuning) prefixes every base name;
        # its base weights are what the drift compares (they did not move).
        plain = model.get_base_model() if hasattr(model, "get_base_model") else model
        drift = weight_drift(base_state, dict(plain.named_parameters()))
    return {
        "probes": {"before": [r.to_dict() for r in before], "after": [r.to_dict() for r in after]},
        "comparison": comparison,
        "domain_gain": {c["key"]: gain(c["before"], c["after"], c["higher_is_better"])
                        for c in comparison if c["capability"] == "domain"},
        "drift": drift,
    }
