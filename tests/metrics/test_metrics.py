"""Metric golden values: ACC/BWT/FWT/forgetting on a hand-made accuracy matrix, signs of
forgetting and retention per direction, and weight drift on tensors with known norms."""

from __future__ import annotations

import math

import pytest
import torch

from retain.metrics import (average_accuracy, average_forgetting, bwt, compare, delta, forgetting,
                            forgetting_matrix, fwt, gain, layer_of, lora_delta, retention,
                            weight_drift)
from retain.probes.base import ProbeResult

# R[i][j]: score on task j after training on tasks 0..i
R = [[0.9, 0.1, 0.2],
     [0.6, 0.8, 0.3],
     [0.5, 0.7, 0.9]]


def test_accuracy_matrix_golden_values():
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert bwt(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)  # -0.25
    assert fwt(R, [0.0, 0.05, 0.1]) == pytest.approx(((0.1 - 0.05) + (0.3 - 0.1)) / 2)  # 0.125
    F = forgetting_matrix(R)
    assert F[0] == [None, None, None]
    assert F[1][0] == pytest.approx(0.3) and F[1][1] is None
    assert F[2][0] == pytest.approx(0.4) and F[2][1] == pytest.approx(0.1) and F[2][2] is None
    assert average_forgetting(R) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        bwt([[1.0, 0.0]])


def test_directions():
    assert delta(0.8, 0.6) == pytest.approx(-0.2)
    assert forgetting(0.8, 0.6, True) == pytest.approx(0.2)  # accuracy fell: forgot
    assert forgetting(2.0, 2.5, False) == pytest.approx(0.5)  # CE rose: forgot
    assert gain(2.0, 1.5, False) == pytest.approx(0.5)  # domain CE fell: learnt
    assert retention(0.8, 0.6, True) == pytest.approx(0.75)
    assert retention(0.0, 0.5, True) is None
    assert retention(0.2, 0.6, False, "over_refusal_rate") == pytest.approx(0.4 / 0.8)
    assert retention(2.0, 2.5, False, "ce_nats_per_token") == pytest.approx(math.exp(-0.5))
    assert retention(0.0, 0.0, False, "kl_nats_per_token") == 1.0


def pr(probe, metric, value, hib, cap=None):
    return ProbeResult(probe, metric, value, 10, value - 0.1, value + 0.1, hib, cap or probe,
                       "generation")


def test_compare_pairs_by_key():
    rows = compare([pr("math", "accuracy", 0.8, True), pr("legal", "ce_nats_per_token", 3.0,
                                                          False, "domain")],
                   [pr("legal", "ce_nats_per_token", 2.0, False, "domain"),
                    pr("math", "accuracy", 0.4, True)])
    assert [r["key"] for r in rows] == ["math.accuracy", "legal.ce_nats_per_token"]
    assert rows[0]["forgetting"] == pytest.approx(0.4) and rows[0]["retention"] == pytest.approx(0.5)
    assert rows[1]["delta"] == pytest.approx(-1.0) and rows[1]["after_ci"] == [1.9, 2.1]


def test_weight_drift_known_tensors():
    base = {"model.layers.0.mlp.w": torch.ones(2, 2),  # ||W0|| = 2
            "model.layers.0.attn.w": torch.zeros(3),
            "model.layers.1.mlp.w": torch.full((4,), 3.0),  # ||W0|| = 6
            "model.norm.weight": torch.ones(1),
            "gone": torch.ones(1)}
    tuned = {"model.layers.0.mlp.w": torch.ones(2, 2) + torch.tensor([[3.0, 0], [0, 0]]),
             "model.layers.0.attn.w": torch.tensor([0.0, 4.0, 0.0]),
             "model.layers.1.mlp.w": torch.full((4,), 3.0),
             "model.norm.weight": torch.ones(1)}
    d = weight_drift(base, tuned)
    assert d["per_tensor"]["model.layers.0.mlp.w"]["relative_l2"] == pytest.approx(1.5)
    assert d["per_layer"]["model.layers.0"]["l2"] == pytest.approx(5.0)  # sqrt(9 + 16)
    assert d["per_layer"]["model.layers.0"]["relative_l2"] == pytest.approx(2.5)
    assert d["per_layer"]["model.layers.1"]["l2"] == 0.0
    assert d["overall"]["l2"] == pytest.approx(5.0)
    assert d["overall"]["relative_l2"] == pytest.approx(5.0 / math.sqrt(4 + 36 + 1))
    assert d["overall"]["tensors"] == 4 and d["missing"] == ["gone"]


def test_layer_grouping_and_lora_delta():
    assert layer_of("model.layers.12.self_attn.q_proj.weight") == "model.layers.12"
    assert layer_of("transformer.h.3.attn.c_attn.weight") == "transformer.h.3"
    assert layer_of("model.embed_tokens.weight") == "model.embed_tokens.weight"
    A, B = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1.0], [0.5]])  # r=1, in=3, out=2
    assert lora_delta(A, B, 2.0).tolist() == [[2.0, 4.0, 0.0], [1.0, 2.0, 0.0]]
    assert lora_delta(A, B, 2.0, fan_in_fan_out=True).shape == (3, 2)
