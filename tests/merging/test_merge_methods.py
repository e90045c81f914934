"""Golden values for every merge method on small hand-written tensors (expected values computed
by hand here, not by calling the code), plus the properties each method promises."""

import math

import pytest
from pydantic import ValidationError
import torch
from peft.utils import merge_utils

from retain.errors import UserError
import retain.merging.base as merging_base
from retain.merging import MERGE_METHODS, interpolate, merge_state_dicts
from retain.merging.dare import drop_and_rescale, generator_for
from retain.merging.fisher import fisher_average
from retain.strategies.fisher import normalize_importance
from retain.merging.regmean import compute_grams, regmean
from retain.merging.slerp import slerp
from retain.merging.ties import ties, trim

T = torch.tensor


def sd(*values):
    return {"w": T(values, dtype=torch.float32)}


def test_interpolate_endpoints_and_midpoint():
    base, ft = T([0.0, 10.0]), T([4.0, 2.0])
    assert torch.equal(interpolate(base, ft, 0.0), base)
    assert torch.equal(interpolate(base, ft, 1.0), ft)
    assert torch.allclose(interpolate(base, ft, 0.25), T([1.0, 8.0]))  # 0.75*base + 0.25*ft


def test_wise_ft_method_alpha_0_is_base_and_1_is_finetune():
    base, ft = sd(0.0, 10.0), sd(4.0, 2.0)
    assert torch.equal(merge_state_dicts("wise_ft", base, [ft], alpha=0.0)["w"], base["w"])
    assert torch.equal(merge_state_dicts("wise_ft", base, [ft], alpha=1.0)["w"], ft["w"])
    assert torch.allclose(merge_state_dicts("wise_ft", base, [ft], alpha=0.5)["w"], T([2.0, 6.0]))


def test_linear_weighted_average():
    out = merge_state_dicts("linear", None, [sd(1.0, 2.0), sd(3.0, 6.0)], weights=[1, 3])
    assert torch.allclose(out["w"], T([2.5, 5.0]))  # (1*1 + 3*3)/4, (1*2 + 3*6)/4
    raw = merge_state_dicts("linear", None, [sd(1.0, 2.0), sd(3.0, 6.0)], weights=[1, 3],
                            normalize=False)
    assert torch.allclose(raw["w"], T([10.0, 20.0]))


def test_task_arithmetic():
    base, m1, m2 = sd(1.0, 1.0), sd(2.0, 0.0), sd(1.0, 3.0)  # tau1 = [1, -1], tau2 = [0, 2]
    out = merge_state_dicts("task_arithmetic", base, [m1, m2], weights=[1.0, 0.5])
    assert torch.allclose(out["w"], T([2.0, 1.0]))  # [1 + 1 + 0, 1 - 1 + 1]
    out = merge_state_dicts("task_arithmetic", base, [m1, m2], weights=[1.0, 0.5], scale=2.0)
    assert torch.allclose(out["w"], T([3.0, 1.0]))  # [1 + 2*1, 1 + 2*0]


def test_ties_sign_election_by_mass_and_disjoint_mean():
    base = sd(0.0, 0.0, 0.0, 0.0)
    models = [sd(3.0, -1.0, 0.5, -2.0), sd(-1.0, -2.0, 0.4, 4.0), sd(-1.0, 1.0, 1.0, 1.0)]
    # sums [1, -2, 1.9, 3] -> signs [+, -, +, +]; entry 0: two of three are negative, the mass wins
    out = merge_state_dicts("ties", base, models, density=1.0)["w"]
    assert torch.allclose(out, T([3.0, -1.5, 1.9 / 3, 2.5]))
    # by count of signs instead, entry 0 elects "-" and averages -1, -1
    freq = merge_state_dicts("ties", base, models, density=1.0, majority_sign="frequency")["w"]
    assert torch.allclose(freq, T([-1.0, -1.5, 1.9 / 3, 2.5]))


def test_ties_trims_by_magnitude_before_electing():
    base = sd(1.0, 1.0, 1.0, 1.0)
    deltas = [(3.0, -1.0, 0.5, -2.0), (-1.0, -2.0, 0.4, 4.0), (-1.5, 1.0, 0.2, 0.1)]
    models = [sd(*[1.0 + x for x in d]) for d in deltas]
    # density 0.5 keeps 2 of 4: [3,0,0,-2], [0,-2,0,4], [-1.5,1,0,0]; sums [1.5,-1,0,2]
    out = merge_state_dicts("ties", base, models, density=0.5)["w"]
    assert torch.allclose(out, T([1 + 3.0, 1 - 2.0, 1 + 0.0, 1 + 4.0]))
    assert torch.equal(trim(T([3.0, -1.0, 0.5, -2.0]), 0.5), T([3.0, 0.0, 0.0, -2.0]))


def test_ties_weights_scale_entries_as_in_peft():
    base = sd(0.0, 0.0, 0.0, 0.0)
    models = [sd(3.0, -1.0, 0.5, -2.0), sd(-1.0, -2.0, 0.4, 4.0), sd(-1.0, 1.0, 1.0, 1.0)]
    out = merge_state_dicts("ties", base, models, weights=[2, 1, 1], density=1.0)["w"]
    # signs elected on unweighted tensors; disjoint mean of weighted entries over the count:
    # [2*3/1, (2*-1 + -2)/2, (2*0.5 + 0.4 + 1)/3, (4 + 1)/2]
    assert torch.allclose(out, T([6.0, -2.0, 0.8, 2.5]))


def test_ties_equals_peft_ties():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, 7, generator=g)
    models = [base + torch.randn(5, 7, generator=g) for _ in range(3)]
    ours = ties(base, models, [1.0, 0.5, 2.0], [0.4] * 3)
    peft = base + merge_utils.ties([m - base for m in models], T([1.0, 0.5, 2.0]), 0.4)
    assert torch.allclose(ours, peft)


def test_dare_keeps_or_drops_and_rescales():
    tau = torch.full((10_000,), 2.0)
    out = drop_and_rescale(tau, 0.25, generator_for(0, "w", 0))
    assert set(out.unique().tolist()) <= {0.0, 8.0}  # dropped, or 2 / 0.25
    assert abs((out != 0).float().mean().item() - 0.25) < 0.02
    assert abs(out.mean().item() - 2.0) < 0.15  # unbiased in expectation


def test_dare_is_seeded():
    g = torch.Generator().manual_seed(1)
    base = {"w": torch.zeros(64, 64)}
    models = [{"w": torch.randn(64, 64, generator=g)} for _ in range(2)]
    for method in ("dare_linear", "dare_ties"):
        a = merge_state_dicts(method, base, models, density=0.3, seed=7)["w"]
        b = merge_state_dicts(method, base, models, density=0.3, seed=7)["w"]
        c = merge_state_dicts(method, base, models, density=0.3, seed=8)["w"]
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_dare_density_one_is_task_arithmetic_and_ties():
    base, m1, m2 = sd(1.0, 1.0), sd(2.0, 0.0), sd(1.0, 3.0)
    lin = merge_state_dicts("dare_linear", base, [m1, m2], density=1.0)["w"]
    assert torch.allclose(lin, T([2.0, 2.0]))  # 1 + 1 + 0, 1 - 1 + 2
    tie = merge_state_dicts("dare_ties", base, [m1, m2], density=1.0)["w"]
    assert torch.allclose(tie, T([2.0, 3.0]))  # entry 1: sum +1 elects "+", only tau2=2 agrees


def test_slerp_golden_values():
    a, b = T([1.0, 0.0]), T([0.0, 1.0])
    h = math.sqrt(0.5)
    assert torch.allclose(slerp(a, b, 0.5), T([h, h]))
    assert torch.allclose(slerp(a, b, 1 / 3), T([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    assert torch.allclose(slerp(2 * a, 2 * b, 0.5), T([2 * h, 2 * h]))
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    # near-parallel: falls back to linear interpolation
    assert torch.allclose(slerp(T([1.0, 2.0]), T([2.0, 4.0]), 0.5), T([1.5, 3.0]))


def test_slerp_method_uses_base_as_first_endpoint():
    out = merge_state_dicts("slerp", sd(1.0, 0.0), [sd(0.0, 1.0)], alpha=0.5)["w"]
    h = math.sqrt(0.5)
    assert torch.allclose(out, T([h, h]))
    with pytest.raises(UserError, match="two endpoints"):
        merge_state_dicts("slerp", None, [sd(1.0, 0.0)])


def test_fisher_weighted_average():
    out = fisher_average([T([1.0, 1.0]), T([3.0, 3.0])], [T([1.0, 3.0]), T([3.0, 1.0])],
                         [1.0, 1.0], epsilon=1e-12)
    assert torch.allclose(out, T([2.5, 1.5]))  # (1*1 + 3*3)/4, (3*1 + 1*3)/4


def test_fisher_with_proportional_fishers_is_plain_average():
    """Each model's Fisher is divided by its mean, so F, 2F and 1000F weigh every entry alike."""
    g = torch.Generator().manual_seed(2)
    models = [{"w": torch.randn(4, 5, generator=g)} for _ in range(3)]
    f = torch.rand(4, 5, generator=g)
    out = merge_state_dicts("fisher", None, models,
                            stats=[{"w": f}, {"w": 2 * f}, {"w": 1000 * f}])["w"]
    avg = (models[0]["w"] + models[1]["w"] + models[2]["w"]) / 3
    assert torch.allclose(out, avg, atol=1e-6)


def test_regmean_golden_values():
    w1, w2 = T([[1.0, 0.0]]), T([[0.0, 1.0]])  # (out=1, in=2)
    g1, g2 = T([[2.0, 1.0], [1.0, 2.0]]), torch.eye(2)
    # [2,2] @ inv([[3,1],[1,3]]) = [2,2] @ [[3,-1],[-1,3]]/8 = [0.5, 0.5]
    assert torch.allclose(regmean([w1, w2], [g1, g2], [1, 1], 1.0), T([[0.5, 0.5]]))
    # off-diagonals halved: [2,1.5] @ inv([[3,.5],[.5,3]]) = [5.25, 3.5]/8.75
    assert torch.allclose(regmean([w1, w2], [g1, g2], [1, 1], 0.5), T([[0.6, 0.4]]))


def test_regmean_grams_of_a_linear_layer():
    lin = torch.nn.Linear(3, 2)
    x = T([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = lin

        def forward(self, input_ids, attention_mask=None):
            return self.proj(input_ids)

    grams = compute_grams(Wrap(), [{"input_ids": x}])
    assert torch.allclose(grams["proj.weight"], x.T @ x)


def test_every_method_is_registered_with_citation_and_frozen_options():
    for name, m in MERGE_METHODS.items():
        assert m.name == name and "http" in m.citation
        opts = m.options()
        field = next(iter(m.options.model_fields), "not_an_option")  # model_stock has none
        with pytest.raises(ValidationError):
            setattr(opts, field, getattr(opts, field, 1))
        with pytest.raises(ValidationError):
            m.options(not_an_option=1)


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="no option 'densty'"):
        merge_state_dicts("ties", sd(0.0), [sd(1.0)], densty=0.5)
    with pytest.raises(UserError, match="give --base"):
        merge_state_dicts("ties", None, [sd(1.0)])


@pytest.mark.parametrize("method,opts", [
    ("linear", {}), ("wise_ft", {"alpha": 0.3}), ("task_arithmetic", {"scale": 0.7}),
    ("ties", {"density": 0.3}), ("ties", {"density": 0.6, "majority_sign": "frequency"}),
    ("dare_ties", {"density": 1.0}), ("slerp", {"alpha": 0.4}), ("fisher", {}), ("regmean", {}),
    ("breadcrumbs", {"density": 0.5, "gamma": 0.1}),
    ("breadcrumbs_ties", {"density": 0.7, "gamma": 0.05, "majority_sign": "frequency"}),
    ("della", {"density": 1.0, "epsilon": 0.0}), ("model_stock", {})])
def test_chunked_merge_equals_whole_tensor_merge(method, opts, monkeypatch):
    """The engine cuts big tensors into row chunks; the result must not depend on it. Values are
    quantized so that TIES meets many equal magnitudes at its threshold."""
    from retain.merging import engine
    from retain.merging.base import TensorSet

    g = torch.Generator().manual_seed(4)
    q = lambda t: (t * 4).round() / 4  # noqa: E731
    base = {"w": q(torch.randn(37, 11, generator=g)), "b": q(torch.randn(37, generator=g))}
    models = [{k: q(v + torch.randn(v.shape, generator=g)) for k, v in base.items()}
              for _ in range(2 if method in ("slerp",) else 3)]
    spec = MERGE_METHODS[method]
    stats = None
    if spec.stats == "fisher":  # of mean 1, as the engine normalizes them before apply sees them
        stats = [normalize_importance({k: torch.rand(v.shape, generator=g)
                                       for k, v in base.items()}, "mean") for _ in models]
    if spec.stats == "gram":
        stats = [{"w": (lambda x: x.T @ x)(torch.randn(20, 11, generator=g))} for _ in models]
    use_base = None if spec.base_role == "template" or (spec.base_role == "pair"
                                                        and len(models) == 2) else base
    if method == "wise_ft":
        models = models[:1]
        use_base = base
    monkeypatch.setattr(merging_base, "CHUNK_ELEMENTS", 50)  # "w" in 9 chunks of 4 rows, "b" in 1
    assert len(engine.row_chunks((37, 11))) == 10
    chunked = merge_state_dicts(method, use_base, models, stats=stats, **opts)
    o = spec.options(**opts)
    n = len(models)
    for k in base:
        ts = TensorSet(k, use_base[k] if use_base else None, [m[k] for m in models], [1.0] * n,
                       [o.density] * n if hasattr(o, "density") else None,
                       [s[k] for s in stats] if stats and k in stats[0] else None)
        assert torch.allclose(chunked[k], spec.apply(ts, o), atol=1e-5), (method, k)


def test_ties_trim_keeps_exactly_k_with_equal_magnitudes():
    x = T([1.0, -2.0, 2.0, 1.0, -1.0, 2.0, 0.5, -2.0, 1.0, 1.0])  # four 2s, five 1s
    out = trim(x, 0.6)  # k = 6: the four 2s and the first two 1s
    assert torch.equal(out, T([1.0, -2.0, 2.0, 1.0, 0.0, 2.0, 0.0, -2.0, 0.0, 0.0]))
    assert int((trim(x, 0.25) != 0).sum()) == 2 and torch.equal(trim(x, 0.05), torch.zeros(10))
