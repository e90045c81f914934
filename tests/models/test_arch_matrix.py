"""The support matrix (issue 22, item 1): every architecture of ``archs.ARCHS`` (tiny random
weights, the built-in tokenizer) loaded from a saved folder, scored by the three probe kinds,
trained two steps under each strategy family, merged by each merge method, saved and loaded
back. ``benchmarks/arch_matrix.py`` runs this file and writes the README's support table from
its results."""

from __future__ import annotations

import json
import math

import pytest
import torch

from archs import ARCHS, DEVICE, MIXED, save_arch, tied, tiny_arch
from retain.builtin.build import build_tokenizer

STRATEGIES = {  # family -> the strategy list one run uses (small where prepare does real work)
    "full": ["full"], "ewc": [{"name": "ewc", "n_samples": 4}], "l2sp": ["l2sp"],
    "mas": [{"name": "mas", "n_samples": 4}], "distill": ["distill"], "lora": ["lora"],
    "dora": [{"name": "lora", "use_dora": True}], "ia3": ["ia3"], "replay": ["replay"],
    "wise_ft": ["wise_ft"]}
# Cells peft cannot do: each must stay a one-line UserError naming the reason (if peft learns
# to, the test fails and the cell moves to the supported side of the README's table).
UNSUPPORTED = {
    ("mixtral", "dora"): "does not work with use_dora",  # DoRA on MoE expert parameters
    ("phi3", "ia3"): "specify `target_modules`",  # no default IA3 targets in peft for these
    ("olmo2", "ia3"): "specify `target_modules`",
    ("granite", "ia3"): "specify `target_modules`",
}
MERGES = ["linear", "wise_ft", "task_arithmetic", "ties", "dare_linear", "dare_ties",
          "breadcrumbs", "breadcrumbs_ties", "della", "della_linear", "model_stock", "slerp",
          "fisher", "regmean"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def datasets(tok):
    from retain.data import load_reference_data, load_train_data

    return (load_train_data("builtin:legal", tok, seq_len=32, n=8, seed=0),
            load_reference_data("builtin:retained", tok, seq_len=32, n=8, seed=0))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_load_and_every_probe_kind(arch, tmp_path):
    from retain.models import load_model
    from retain.probes import evaluate, load_probes

    choice = tmp_path / "pick.jsonl"
    choice.write_text("".join(json.dumps({"prompt": f"{a} + {b} =", "choices": [str(a + b),
                                                                               str(a + b + 1)],
                                          "label": 0}) + "\n" for a, b in ((1, 2), (3, 4))))
    from retain.train.precision import autocast

    model, tok = load_model(str(save_arch(tmp_path, arch)), dtype="float32", device=DEVICE)
    assert type(model).__name__.lower().startswith(arch.split("_")[0])
    probes = load_probes(["math", "writing", str(choice)], n=2)
    kinds = {p.kind for p in probes}
    assert kinds == {"generation", "perplexity", "choice"}
    with autocast(DEVICE, MIXED):
        res = evaluate(model, tok, probes, progress=False)
    assert {r.kind for r in res} == kinds and all(math.isfinite(r.value) for r in res)


@pytest.mark.parametrize("family", list(STRATEGIES))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_strategy_family(arch, family, tok, datasets, tmp_path):
    from retain.models import copy_state
    from retain.strategies import RunContext, build_strategies
    from retain.train import TrainConfig, collate, train

    from retain.errors import UserError

    domain, reference = datasets
    strategies = build_strategies(STRATEGIES[family])
    model = tiny_arch(arch, len(tok)).to(DEVICE)
    ctx = RunContext(tokenizer=tok, seed=0, out_dir=tmp_path, device=DEVICE,
                     base_state=copy_state(model), reference=reference)
    if (arch, family) in UNSUPPORTED:
        with pytest.raises(UserError, match=UNSUPPORTED[arch, family]) as e:
            strategies[0].prepare(model, ctx)
        assert "\n" not in str(e.value)
        return
    for s in strategies:
        model = s.prepare(model, ctx)
    data = list(domain)
    for s in strategies:
        data = s.train_data(data, ctx)
    res = train(model, data, pad_id=0, strategies=strategies, progress=False,
                config=TrainConfig(lr=1e-3, steps=2, batch_size=2, log_every=1,
                                   mixed_precision=MIXED))
    assert all(math.isfinite(h["loss"]) for h in res.history)
    # bf16 autocast computes in bf16 and keeps the weights it updates in fp32
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    for s in strategies:
        model = s.finalize(model, ctx)
    batch = {k: v.to(DEVICE) for k, v in collate(data[:2], pad_id=0).items()}
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_merge_method(arch, tok, datasets):
    from retain.gram_cli import gram_matrices
    from retain.merging.engine import merge_state_dicts

    model = tiny_arch(arch, len(tok))
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    fts = [{k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in base.items()} for _ in range(2)]
    fisher = [{k: torch.full_like(v, 1.0 + i) for k, v in ft.items() if v.is_floating_point()}
              for i, ft in enumerate(fts)]  # each model's own (distinct) Fisher
    grams = []
    for ft in fts:  # each fine-tune's own Gram matrices of its linear layers' inputs
        model.load_state_dict(ft)
        grams.append(gram_matrices(model, list(datasets[0])[:4], 0)[0])
    for method in MERGES:
        kw = {"stats": {"fisher": fisher, "regmean": grams}[method]} \
            if method in ("fisher", "regmean") else {}
        uses_base = method not in ("linear", "slerp", "fisher", "regmean")
        merged = merge_state_dicts(method, base if uses_base else None, fts, **kw)
        assert set(merged) == set(base), method
        assert all(torch.isfinite(t).all() for t in merged.values() if t.is_floating_point())
        changed = any(not torch.equal(merged[k], base[k]) for k in base
                      if base[k].is_floating_point())
        assert changed, method


@pytest.mark.parametrize("arch", list(ARCHS))
def test_save_and_load_round_trip(arch, tok, tmp_path):
    from retain.models import load_model

    model = tiny_arch(arch, len(tok), shift=0.01)
    back, _ = load_model(str(save_arch(tmp_path, arch, shift=0.01)))
    a, b = model.state_dict(), back.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert tied(back) == tied(model)


def test_fisher_where_vmap_cannot_batch_equals_a_loop(tok, datasets):
    """Regression: GPT-2's forward has data-dependent control flow that vmap cannot batch, so EWC
    and MAS raised a deep RuntimeError on every GPT-2 model. The Fisher now falls back to one
    gradient per sample, with the values of a plain per-sample backward loop."""
    from retain.strategies.fisher import estimate_fisher, token_nll, trainable_parameters

    model = tiny_arch("gpt2", len(tok)).eval()
    examples = list(datasets[0])[:4]
    fisher = estimate_fisher(model, examples, n_samples=4)
    params = trainable_parameters(model)
    loop = {k: torch.zeros_like(p) for k, p in params.items()}
    for e in examples:
        logits = model(input_ids=torch.tensor([e["input_ids"]])).logits[0]
        g = torch.autograd.grad(token_nll(logits, torch.tensor(e["labels"])), list(params.values()))
        for k, gk in zip(params, g):
            loop[k] += gk.pow(2) / len(examples)
    worst = max(float(((fisher[k] - loop[k]).abs().max() / loop[k].abs().max().clamp_min(1e-12)))
                for k in params)
    assert worst < 1e-4


@pytest.mark.parametrize("arch", list(ARCHS))
def test_retain_diff(arch, tmp_path):
    """`retain diff BASE MODEL`: the same items probed on both, the drift measured."""
    from retain.diff import run_diff

    base, ft = save_arch(tmp_path / "base", arch), save_arch(tmp_path / "ft", arch, shift=0.01)
    res = run_diff(str(base), str(ft), probes=["math", "writing"], n=2, out=tmp_path / "diff",
                   progress=False)
    assert {c["key"] for c in res["comparison"]} == {"math.accuracy",
                                                     "writing.ce_nats_per_token"}
    assert res["drift"]["overall"]["relative_l2"] > 0
