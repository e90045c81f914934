"""Coefficient search and greedy soup with an injected score function on a tiny linear model."""

import pytest
import torch

from retain.errors import UserError
from retain.merging.search import (CurvePoint, greedy_soup, interpolation_curve, method_curve,
                                   pick_coefficient, plot_curve)


def model_and_states():
    model = torch.nn.Linear(2, 1, bias=False)
    base = {"weight": torch.tensor([[0.0, 0.0]])}
    ft = {"weight": torch.tensor([[1.0, 2.0]])}
    return model, base, ft


def test_interpolation_curve_scores_each_alpha_in_place():
    model, base, ft = model_and_states()
    seen = []

    def score(m):
        w = m.weight.detach().clone()
        seen.append(w)
        return {"new": float(w[0, 1]), "old": -float(w.abs().sum())}

    points = interpolation_curve(model, base, ft, score, alphas=[0.0, 0.5, 1.0])
    assert [p.coefficient for p in points] == [0.0, 0.5, 1.0]
    assert points[0].scores == {"new": 0.0, "old": 0.0}  # alpha 0 is the base
    assert points[1].scores == {"new": 1.0, "old": -1.5}
    assert points[2].scores == {"new": 2.0, "old": -3.0}  # alpha 1 is the fine-tune
    assert torch.equal(model.weight.detach(), ft["weight"])  # left holding the fine-tune


def test_method_curve_over_task_arithmetic_scale():
    model, base, ft = model_and_states()
    points = method_curve(model, lambda m: {"w1": float(m.weight.detach()[0, 1])}, "task_arithmetic",
                          base, [ft], "scale", [0.0, 0.5, 2.0])
    assert [p.scores["w1"] for p in points] == [0.0, 1.0, 4.0]


def test_pick_coefficient_keeps_share_of_gain_and_most_retained():
    pts = [CurvePoint(0.0, {"new": 0.2, "math": 0.9, "safety": 0.9}),
           CurvePoint(0.3, {"new": 0.5, "math": 0.85, "safety": 0.8}),  # gain 0.3 of 0.6: 50%
           CurvePoint(0.6, {"new": 0.7, "math": 0.8, "safety": 0.7}),  # gain 0.5: 83%, kept 0.75
           CurvePoint(0.8, {"new": 0.75, "math": 0.6, "safety": 0.5}),  # gain 92%, kept 0.55
           CurvePoint(1.0, {"new": 0.8, "math": 0.5, "safety": 0.3})]
    pick = pick_coefficient(pts, "new", pts[0].scores, pts[-1].scores, min_gain_share=0.8)
    assert pick.point.coefficient == 0.6
    assert pick.retained == pytest.approx(0.75) and pick.gain_share == pytest.approx(5 / 6)
    looser = pick_coefficient(pts, "new", pts[0].scores, pts[-1].scores, min_gain_share=0.5)
    assert looser.point.coefficient == 0.3
    only_math = pick_coefficient(pts, "new", pts[0].scores, pts[-1].scores, retained=["math"])
    assert only_math.point.coefficient == 0.6
    none = pick_coefficient(pts[:2], "new", pts[0].scores, pts[-1].scores, min_gain_share=0.9)
    assert none.point is None and "90%" in none.reason


def test_greedy_soup_skips_an_ingredient_that_hurts():
    model = torch.nn.Linear(2, 1, bias=False)
    target = torch.tensor([[1.0, 1.0]])
    cands = [{"weight": torch.tensor([[1.2, 0.8]])},   # own score -0.4
             {"weight": torch.tensor([[0.8, 1.2]])},   # -0.4, average with #0 hits the target
             {"weight": torch.tensor([[5.0, 5.0]])},   # -8: far off, must be skipped
             {"weight": torch.tensor([[1.0, 1.1]])}]   # -0.1: best alone, goes first

    def score(m):
        return {"acc": -float((m.weight.detach() - target).abs().sum())}

    res = greedy_soup(model, cands, score, "acc")
    assert res.individual == pytest.approx([-0.4, -0.4, -8.0, -0.1])
    # order by own score: 3, 0, 1 (tie keeps index order), 2
    # {3,0}: [1.1, .95] -> -0.15 < -0.1, skipped; {3,1}: [.9, 1.15] -> -0.25, skipped; {3,2} skipped
    assert res.selected == [3]
    assert [h[0] for h in res.history] == [3, 0, 1, 2]
    assert torch.allclose(model.weight.detach(), cands[3]["weight"])
    # without the lone best one, the two complementary ingredients are kept together
    res2 = greedy_soup(model, cands[:3], score, "acc")
    assert res2.selected == [0, 1] and res2.objective == pytest.approx(0.0)
    assert torch.allclose(model.weight.detach(), target)
    with pytest.raises(UserError):
        greedy_soup(model, [], score, "acc")


def test_plot_curve_writes_a_png(tmp_path):
    pts = [CurvePoint(a, {"new": a, "old": 1 - a}) for a in (0.0, 0.5, 1.0)]
    path = plot_curve(pts, tmp_path / "curve.png", new_domain="new")
    assert path.read_bytes()[:4] == b"\x89PNG"
