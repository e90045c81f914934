"""Model Breadcrumbs, DELLA and Model Stock on small hand-made tensors (expected values worked out
by hand in the comments), their statistical promises on large ones, and the contract every
registered merge method keeps (identity on identical inputs, names/shapes/dtypes kept, options
checked, results independent of tensor order)."""

import math

import pytest
import torch
from typer.testing import CliRunner

from retain.errors import UserError
import retain.merging.base as merging_base
from retain.merging import MERGE_METHODS, merge_state_dicts
from retain.merging.della import keep_probabilities, magprune
from retain.merging.dare import generator_for

T = torch.tensor


def sd(*values):
    return {"w": T(values, dtype=torch.float32)}


def plus(base, *deltas):
    """Models base + delta_i, each as a state dict."""
    return [{"w": base["w"] + T(d, dtype=torch.float32)} for d in deltas]


# ---- Model Breadcrumbs ----------------------------------------------------------------------


def test_breadcrumbs_masks_both_tails_and_sums():
    base = sd(*[1.0] * 10)
    # |tau1| ranked: 10, 9 | 7, 6, 5, 4, 3, 2 | 1, 0.5; density 0.6 keeps 6 of 10 after the
    # top gamma 0.2 = 2 outliers: [0, 0, 0, 2, -3, 4, 5, -6, 7, 0]
    # tau2: all equal magnitudes, ranked in position order: [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    models = plus(base, (10.0, -9.0, 1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0, 0.5), [1.0] * 10)
    out = merge_state_dicts("breadcrumbs", base, models, weights=[1.0, 0.5], density=0.6,
                            gamma=0.2, scale=2.0)["w"]
    # 1 + 2 * (m1 + 0.5 * m2)
    assert torch.equal(out, T([1.0, 1.0, 2.0, 6.0, -4.0, 10.0, 12.0, -10.0, 15.0, 1.0]))


def test_breadcrumbs_ties_elects_signs_on_the_masked_vectors():
    base = sd(1.0, 1.0, 1.0, 1.0)
    # density 0.5, gamma 0.25 of 4: remove the largest, keep the next two
    # tau1 = [4, -1, 2, 3] -> [0, 0, 2, 3]; tau2 = [-6, 2, -1, -1.5] -> [0, 2, 0, -1.5]
    models = plus(base, (4.0, -1.0, 2.0, 3.0), (-6.0, 2.0, -1.0, -1.5))
    kw = dict(density=0.5, gamma=0.25)
    lin = merge_state_dicts("breadcrumbs", base, models, **kw)["w"]
    assert torch.equal(lin, T([1.0, 3.0, 3.0, 2.5]))  # 1 + [0, 2, 2, 3 - 1.5]
    tie = merge_state_dicts("breadcrumbs_ties", base, models, **kw)["w"]
    assert torch.equal(tie, T([1.0, 3.0, 3.0, 4.0]))  # entry 3: sum +1.5 elects "+", only 3 agrees


def test_breadcrumbs_keeps_density_exactly_when_gamma_would_cut_into_it():
    base = sd(*[0.0] * 10)
    tau = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    # density 0.9 keeps 9: only the single largest (10) goes although gamma 0.2 asks for 2
    out = merge_state_dicts("breadcrumbs", base, plus(base, tau), density=0.9, gamma=0.2)["w"]
    assert torch.equal(out, T([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0]))
    # density 1 keeps everything whatever gamma: task arithmetic
    out = merge_state_dicts("breadcrumbs", base, plus(base, tau), density=1.0, gamma=0.3)["w"]
    assert torch.equal(out, T(tau))
    # a tensor of fewer than 1 / gamma entries loses no outlier, but keeps its top n_keep
    out = merge_state_dicts("breadcrumbs", base, plus(base, tau), density=0.5)["w"]  # gamma 0.01
    assert torch.equal(out, T([0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 7.0, 8.0, 9.0, 10.0]))


def test_breadcrumbs_ties_with_gamma_zero_is_ties():
    g = torch.Generator().manual_seed(5)
    q = lambda t: (t * 4).round() / 4  # noqa: E731 - many equal magnitudes at the thresholds
    base = {"w": q(torch.randn(9, 7, generator=g))}
    models = [{"w": q(base["w"] + torch.randn(9, 7, generator=g))} for _ in range(3)]
    a = merge_state_dicts("breadcrumbs_ties", base, models, density=0.4, gamma=0.0)["w"]
    b = merge_state_dicts("ties", base, models, density=0.4)["w"]
    assert torch.equal(a, b)


# ---- DELLA ----------------------------------------------------------------------------------


def test_della_keep_probabilities_fall_linearly_with_the_rank_in_each_row():
    rows = T([[1.0, 100.0, 10.0], [0.1, -0.3, 0.2]])
    # density 0.5, epsilon 0.2: the largest of each row is kept with 0.7, the smallest with 0.3
    expect = T([[0.3, 0.7, 0.5], [0.3, 0.7, 0.5]])
    assert torch.allclose(keep_probabilities(rows, 0.5, 0.2), expect)
    assert torch.equal(keep_probabilities(rows, 0.5, 0.0), torch.full((2, 3), 0.5))


def test_della_density_one_epsilon_zero_is_task_arithmetic_and_ties():
    base, m1, m2 = sd(1.0, 1.0), sd(2.0, 0.0), sd(1.0, 3.0)
    lin = merge_state_dicts("della_linear", base, [m1, m2], density=1.0, epsilon=0.0)["w"]
    assert torch.equal(lin, T([2.0, 2.0]))  # 1 + 1 + 0, 1 - 1 + 2
    tie = merge_state_dicts("della", base, [m1, m2], density=1.0, epsilon=0.0)["w"]
    assert torch.equal(tie, T([2.0, 3.0]))  # entry 1: sum +1 elects "+", only tau2 = 2 agrees


def test_della_with_epsilon_zero_is_dare_draw_for_draw():
    g = torch.Generator().manual_seed(6)
    base = {"w": torch.randn(40, 30, generator=g), "b": torch.randn(30, generator=g)}
    models = [{k: v + torch.randn(v.shape, generator=g) for k, v in base.items()}
              for _ in range(3)]
    for della, dare in (("della_linear", "dare_linear"), ("della", "dare_ties")):
        a = merge_state_dicts(della, base, models, density=0.3, epsilon=0.0, seed=4)
        b = merge_state_dicts(dare, base, models, density=0.3, seed=4)
        assert all(torch.equal(a[k], b[k]) for k in base), della


def test_della_kept_share_and_survival_by_magnitude():
    # 4000 rows of the magnitudes 1..10 (signs alternating): keep probability of magnitude m
    # (rank r = 10 - m) is 0.5 + 0.2 * (1 - 2 r / 9): 0.7 for 10 down to 0.3 for 1
    row = T([(-1.0) ** m * m for m in range(1, 11)])
    tau = row.repeat(4000, 1)
    out = magprune(tau, 0.5, 0.2, generator_for(0, "w", 0))
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.5) < 0.01  # the share kept is the density
    freq = kept.float().mean(0)  # per magnitude 1..10
    expect = T([0.5 + 0.2 * (1 - 2 * (10 - m) / 9) for m in range(1, 11)])
    assert (freq - expect).abs().max() < 0.04
    assert freq[-1] > freq[4] > freq[0]  # larger magnitudes survive more often
    # survivors are rescaled by 1 / (1 - p): unbiased
    assert torch.allclose(out[kept], (tau / expect)[kept])
    assert ((out.mean(0) - row).abs() <= 0.05 * row.abs() + 0.1).all()  # about 4 std errors


def test_della_is_seeded_and_independent_of_tensor_order():
    g = torch.Generator().manual_seed(7)
    base = {"a": torch.zeros(32, 16), "b": torch.zeros(16), "c": torch.zeros(8, 4)}
    models = [{k: torch.randn(v.shape, generator=g) for k, v in base.items()} for _ in range(2)]
    for method in ("della", "della_linear"):
        a = merge_state_dicts(method, base, models, density=0.4, epsilon=0.1, seed=7)
        b = merge_state_dicts(method, base, models, density=0.4, epsilon=0.1, seed=7)
        c = merge_state_dicts(method, base, models, density=0.4, epsilon=0.1, seed=8)
        assert all(torch.equal(a[k], b[k]) for k in base)
        assert not torch.equal(a["a"], c["a"])
        rev = lambda d: dict(reversed(list(d.items())))  # noqa: E731
        r = merge_state_dicts(method, rev(base), [rev(m) for m in models], density=0.4,
                              epsilon=0.1, seed=7)
        assert all(torch.equal(a[k], r[k]) for k in base)
        only_c = merge_state_dicts(method, {"c": base["c"]}, [{"c": m["c"]} for m in models],
                                   density=0.4, epsilon=0.1, seed=7)
        assert torch.equal(only_c["c"], a["c"])


def test_della_refuses_epsilon_outside_the_probability_range():
    base, m1, m2 = sd(1.0, 1.0), sd(2.0, 0.0), sd(1.0, 3.0)
    with pytest.raises(UserError, match="option 'epsilon'.*at most min"):
        merge_state_dicts("della", base, [m1, m2], density=0.9, epsilon=0.2)
    with pytest.raises(UserError, match="epsilon 0.1 with density 1.0"):  # a per-model density
        merge_state_dicts("della_linear", base, [m1, m2], densities=[1.0, 0.5])


# ---- Model Stock ----------------------------------------------------------------------------


def test_model_stock_orthogonal_task_vectors_give_the_base():
    base = sd(1.0, 1.0)
    # tau1 = [1, 1], tau2 = [1, -1]: cos 0, t = 0, although w_avg = [2, 1]
    out = merge_state_dicts("model_stock", base, plus(base, (1.0, 1.0), (1.0, -1.0)))["w"]
    assert torch.equal(out, base["w"])


def test_model_stock_identical_task_vectors_give_the_average():
    base = sd(1.0, 1.0)
    out = merge_state_dicts("model_stock", base, plus(base, (2.0, -1.0), (2.0, -1.0)))["w"]
    assert torch.allclose(out, T([3.0, 0.0]))  # cos 1, t = 2 / 2 = 1: w_avg


def test_model_stock_hand_computed_ratios():
    base = sd(1.0, 1.0)
    # tau1 = [1, 0], tau2 = [1, sqrt 3]: cos 1/2, t = 2 (1/2) / (1 + 1/2) = 2/3,
    # merged = base + t * mean(tau) = base + (2/3) [1, sqrt(3)/2]
    out = merge_state_dicts("model_stock", base, plus(base, (1.0, 0.0), (1.0, math.sqrt(3))))
    assert torch.allclose(out["w"], T([1 + 2 / 3, 1 + math.sqrt(3) / 3]))
    # three task vectors e1+e2, e2+e3, e1+e3: pairwise cos 1/2, t = 1.5 / 2 = 0.75,
    # mean(tau) = (2/3) [1, 1, 1], merged = base + 0.5
    base3 = sd(0.0, 2.0, -1.0)
    out = merge_state_dicts("model_stock", base3,
                            plus(base3, (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 0.0, 1.0)))
    assert torch.allclose(out["w"], T([0.5, 2.5, -0.5]))


def test_model_stock_degenerate_cases_give_the_base():
    base = sd(1.0, 1.0)
    opposed = plus(base, (1.0, 0.0), (-1.0, 0.1))  # cos < 0: clamped to 0
    assert torch.equal(merge_state_dicts("model_stock", base, opposed)["w"], base["w"])
    one_zero = plus(base, (0.0, 0.0), (1.0, 2.0))  # a zero task vector: cos 0
    assert torch.equal(merge_state_dicts("model_stock", base, one_zero)["w"], base["w"])
    all_zero = plus(base, (0.0, 0.0), (0.0, 0.0))
    assert torch.equal(merge_state_dicts("model_stock", base, all_zero)["w"], base["w"])


def test_model_stock_refuses_one_model_and_unequal_weights():
    base = sd(1.0, 1.0)
    with pytest.raises(UserError, match="needs at least 2 models, got 1"):
        merge_state_dicts("model_stock", base, plus(base, (1.0, 0.0)))
    with pytest.raises(UserError, match="uniformly"):
        merge_state_dicts("model_stock", base, plus(base, (1.0, 0.0), (0.0, 1.0)),
                          weights=[1.0, 2.0])
    with pytest.raises(UserError, match="give --base"):
        merge_state_dicts("model_stock", None, plus(base, (1.0, 0.0), (0.0, 1.0)))


def test_model_stock_cli_refuses_one_model_on_one_line(tmp_path):
    import typer

    from retain.merging.cli import merge_command

    app = typer.Typer()
    app.command("merge")(merge_command)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["merge", "--method", "model_stock", "--base",
                                   str(tmp_path / "base"), str(tmp_path / "ft"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [
        "error: merge method 'model_stock' needs at least 2 models, got 1"]


def test_model_stock_angle_is_the_whole_tensors_when_chunked(monkeypatch):
    from retain.merging import engine
    from retain.merging.base import TensorSet

    g = torch.Generator().manual_seed(8)
    base = torch.randn(37, 11, generator=g)
    shared = torch.randn(37, 11, generator=g)  # correlated task vectors: 0 < cos < 1
    models = [{"w": base + shared + torch.randn(37, 11, generator=g)} for _ in range(3)]
    spec = MERGE_METHODS["model_stock"]
    whole = spec.apply(TensorSet("w", base, [m["w"] for m in models], [1.0] * 3), spec.options())
    monkeypatch.setattr(merging_base, "CHUNK_ELEMENTS", 50)
    chunked = merge_state_dicts("model_stock", {"w": base}, models)["w"]
    assert torch.allclose(chunked, whole, atol=1e-6)
    assert not torch.allclose(whole, base) and not torch.allclose(
        whole, sum(m["w"] for m in models) / 3)  # strictly between base and w_avg


# ---- the contract of every registered method ------------------------------------------------


def _inputs(name, state, n=3):
    """(base, models, stats) for a method: identical models, with the base when it takes one."""
    spec = MERGE_METHODS[name]
    if spec.base_role == "pair":
        return state, [dict(state)], None
    models = [dict(state) for _ in range(max(n, spec.min_models))]
    base = state if spec.base_role == "required" else None
    stats = None
    if spec.stats == "fisher":
        stats = [{k: torch.rand(v.shape) + 0.1 for k, v in state.items()
                  if v.is_floating_point()} for _ in models]
    if spec.stats == "gram":
        stats = [{"w": (lambda x: x.T @ x)(torch.randn(20, 6))} for _ in models]
    return base, models, stats


@pytest.mark.parametrize("name", list(MERGE_METHODS))
def test_every_method_keeps_identical_inputs_names_shapes_and_dtypes(name):
    g = torch.Generator().manual_seed(9)
    state = {"w": torch.randn(5, 6, generator=g).to(torch.bfloat16),
             "b": torch.randn(6, generator=g), "ids": torch.arange(4)}
    base, models, stats = _inputs(name, state)
    out = merge_state_dicts(name, base, models, stats=stats)
    assert list(out) == list(state)
    for k, v in state.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, (name, k)
        assert torch.allclose(out[k].float(), v.float(), atol=1e-5), (name, k)
    with pytest.raises(UserError, match="has no option 'not_an_option'"):
        merge_state_dicts(name, base, models, stats=stats, not_an_option=1)


@pytest.mark.parametrize("name", list(MERGE_METHODS))
def test_every_method_is_independent_of_tensor_order(name):
    g = torch.Generator().manual_seed(10)
    state = {"w": torch.randn(5, 6, generator=g), "b": torch.randn(6, generator=g)}
    base, models, stats = _inputs(name, state)
    models = [{k: v + torch.randn(v.shape, generator=g) for k, v in m.items()} for m in models]
    rev = lambda d: d and dict(reversed(list(d.items())))  # noqa: E731
    a = merge_state_dicts(name, base, models, stats=stats)
    b = merge_state_dicts(name, rev(base), [rev(m) for m in models],
                          stats=stats and [rev(s) for s in stats])
    assert all(torch.equal(a[k], b[k]) for k in state), name


@pytest.mark.parametrize("method,opts", [
    ("breadcrumbs_ties", {"density": 0.6, "gamma": 0.05}),
    ("della", {"density": 0.4, "epsilon": 0.2, "seed": 2}), ("model_stock", {})])
def test_folder_merge_equals_in_memory_merge(method, opts, tiny, tmp_path):
    from retain.merging import merge
    from retain.merging.sources import FolderSource

    def state(folder):
        src = FolderSource(folder)
        return {n: src.get(n) for n in src.names()}

    out = merge(method, [tiny["ft1_sharded"], tiny["ft2"]], tmp_path / "m", base=tiny["base"],
                shard_size="50KB", **opts)
    mem = merge_state_dicts(method, state(tiny["base"]), [state(tiny["ft1"]), state(tiny["ft2"])],
                            **opts)
    got = state(out)
    assert all(torch.equal(got[n], mem[n]) for n in mem)
    assert MERGE_METHODS[method].citation.split(", http")[0] in (out / "README.md").read_text()
