"""Importance estimators (fisher.py): the vectorized torch.func estimators against slow per-sample
reference loops, the sampled Fisher against the exact expectation, MAS, online accumulation, I/O."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retain.errors import UserError
from retain.strategies import fisher as fs

from strategy_models import VOCAB, tiny_llama  # a helper module beside these tests


def reference_examples(n: int = 10, seed: int = 0) -> list[dict]:
    """Random token lists of varied length; the first tokens of each are masked (a 'prompt')."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(4, 13, (1,), generator=gen))
        ids = torch.randint(3, VOCAB, (length,), generator=gen).tolist()
        prompt = int(torch.randint(1, length - 1, (1,), generator=gen))
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def slow_grads(model, example, objective: str) -> dict[str, torch.Tensor]:
    """One sample, its own forward (no padding, model's default attention), plain autograd."""
    params = fs.trainable_parameters(model)
    ids = torch.tensor([example["input_ids"]])
    logits = model(input_ids=ids).logits[0]  # (T, V)
    if objective == "nll":
        labels = torch.tensor(example["labels"])
        loss = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100)
    else:  # MAS: mean over positions of ||logits_t||^2
        loss = logits.pow(2).sum(-1).mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def slow_stat(model, examples, objective="nll", reduce=torch.square):
    model.eval()
    total = None
    for e in examples:
        g = {k: reduce(v) for k, v in slow_grads(model, e, objective).items()}
        total = g if total is None else {k: total[k] + g[k] for k in g}
    return {k: v / len(examples) for k, v in total.items()}


def slow_batched(model, examples, batch_size):
    """Gradient of a minibatch mean = mean of per-sample gradients (linearity), then squared."""
    model.eval()
    total, n_batches = None, 0
    for start in range(0, len(examples), batch_size):
        grads = [slow_grads(model, e, "nll") for e in examples[start:start + batch_size]]
        sq = {k: (sum(g[k] for g in grads) / len(grads)).pow(2) for k in grads[0]}
        total = sq if total is None else {k: total[k] + sq[k] for k in sq}
        n_batches += 1
    return {k: v / n_batches for k, v in total.items()}


def assert_importance_close(got, want, rtol=1e-4):
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        scale = want[k].abs().max().item()
        err = (got[k] - want[k].to(got[k].dtype)).abs().max().item()
        assert err <= rtol * scale + 1e-12, f"{k}: max err {err:.3g} vs scale {scale:.3g}"


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def examples():
    return reference_examples()


def test_empirical_matches_per_sample_loop(model, examples):
    got = fs.estimate_fisher(model, examples, "empirical", chunk_size=4)  # chunks of uneven lengths
    want = slow_stat(model, fs.select_examples(examples, None, 0))
    assert_importance_close(got, want)
    assert all(v.abs().sum() > 0 for v in got.values())


def test_batched_matches_loop_and_differs_from_empirical(model, examples):
    got = fs.estimate_fisher(model, examples, "batched", batch_size=4)
    want = slow_batched(model, fs.select_examples(examples, None, 0), 4)
    assert_importance_close(got, want)
    empirical = fs.estimate_fisher(model, examples, "empirical")
    total = lambda imp: sum(v.sum() for v in imp.values())  # noqa: E731
    assert total(got) < 0.9 * total(empirical)  # squaring a mean loses the per-sample variance
    one = fs.estimate_fisher(model, examples, "batched", batch_size=1)
    assert_importance_close(one, empirical)  # batch of one = empirical


def test_sampled_matches_loop_on_the_same_draws(model, examples):
    got = fs.estimate_fisher(model, examples, "sampled", seed=3, chunk_size=3)
    drawn = fs.sample_labels(model, fs.select_examples(examples, None, 3), seed=3)
    assert_importance_close(got, slow_stat(model, drawn))


def test_sampled_labels_seeded_and_masked(model, examples):
    a = fs.sample_labels(model, examples, seed=5, chunk_size=4)
    b = fs.sample_labels(model, examples, seed=5, chunk_size=7)  # independent of chunking
    c = fs.sample_labels(model, examples, seed=6)
    assert a == b and a != c
    for e, s in zip(examples, a):
        assert len(s["labels"]) == len(e["labels"]) and s["input_ids"] == e["input_ids"]
        assert [t == -100 for t in s["labels"]] == [t == -100 for t in e["labels"]]
    first = fs.estimate_fisher(model, examples, "sampled", seed=5)
    again = fs.estimate_fisher(model, examples, "sampled", seed=5)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_sampled_converges_to_exact_fisher():
    """One predicted position: exact F = sum_y p(y) g_y^2 over the whole vocabulary."""
    model = tiny_llama(1).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(10)  # a less flat prediction (max p ~0.3)
    ids = [5, 9, 17, 33]
    params = fs.trainable_parameters(model)
    logits = model(input_ids=torch.tensor([ids])).logits[0, -2]
    probs = torch.softmax(logits, -1).detach()
    exact = {k: torch.zeros_like(p) for k, p in params.items()}
    for y in range(VOCAB):
        loss = F.cross_entropy(model(input_ids=torch.tensor([ids])).logits[0, -2:-1], torch.tensor([y]))
        for k, g in zip(params, torch.autograd.grad(loss, list(params.values()))):
            exact[k] += probs[y] * g.pow(2)
    example = {"input_ids": ids, "labels": [-100, -100, -100, ids[-1]]}
    mc = fs.estimate_fisher(model, [example] * 1000, "sampled", seed=0, chunk_size=250)
    mc_total = sum(v.sum() for v in mc.values())
    exact_total = sum(v.sum() for v in exact.values())
    assert abs(mc_total / exact_total - 1) < 0.05  # seeds 0-4 give 0.986-1.012


def test_mas_matches_loop_and_is_nonnegative(model, examples):
    got = fs.estimate_mas(model, examples, chunk_size=4)
    want = slow_stat(model, fs.select_examples(examples, None, 0), "mas", torch.abs)
    assert_importance_close(got, want)
    assert all((v >= 0).all() for v in got.values())


def test_lora_parameters_only(examples):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # B = 0 at init would zero A's gradients
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    model.train()
    got = fs.estimate_fisher(model, examples, "empirical", n_samples=6, seed=2)
    assert set(got) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in k for k in got)
    assert model.training  # mode restored
    assert model.get_base_model().config._attn_implementation == "sdpa"  # attention restored
    assert_importance_close(got, slow_stat(model, fs.select_examples(examples, 6, 2)))


def test_select_examples_seeded():
    ex = reference_examples(8)
    assert fs.select_examples(ex, 5, 1) == fs.select_examples(ex, 5, 1)
    assert fs.select_examples(ex, 5, 1) != fs.select_examples(ex, 5, 2)
    assert len(fs.select_examples(ex, 100, 0)) == 8
    with pytest.raises(UserError):
        fs.select_examples([], 4, 0)
    with pytest.raises(UserError):
        fs.estimate_fisher(tiny_llama(), ex, "exact")


def test_online_accumulation_formula():
    prev = {"a": torch.tensor([1.0, 2.0]), "b": torch.ones(2, 2)}
    new = {"a": torch.tensor([3.0, 0.0]), "b": torch.full((2, 2), 2.0)}
    acc = fs.accumulate_online(prev, new, gamma=0.5)
    assert torch.equal(acc["a"], torch.tensor([3.5, 1.0]))
    assert torch.equal(acc["b"], torch.full((2, 2), 2.5))
    with pytest.raises(UserError):
        fs.accumulate_online({"a": prev["a"]}, new, 0.5)


def test_normalize_importance():
    imp = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[4.0, 0.0]])}
    mean = fs.normalize_importance(imp, "mean")
    assert torch.allclose(torch.cat([v.flatten() for v in mean.values()]).mean(), torch.tensor(1.0))
    assert torch.equal(fs.normalize_importance(imp, "max")["b"], torch.tensor([[1.0, 0.0]]))
    zero = {"a": torch.zeros(3)}
    assert torch.equal(fs.normalize_importance(zero, "mean")["a"], zero["a"])


def test_save_load_round_trip(tmp_path, model, examples):
    imp = fs.estimate_fisher(model, examples, "empirical", n_samples=4)
    meta = {"estimator": "empirical", "n_samples": 4, "gamma": None, "seed": 0}
    path = fs.save_importance(tmp_path / "sub" / "fisher.safetensors", imp, meta)
    loaded, loaded_meta = fs.load_importance(path)
    assert loaded_meta == meta
    assert set(loaded) == set(imp) and all(torch.equal(loaded[k], imp[k]) for k in imp)
    assert [p.name for p in path.parent.iterdir()] == ["fisher.safetensors"]  # no temp file left
    with pytest.raises(UserError):
        fs.load_importance(tmp_path / "missing.safetensors")
