"""``lm-eval:TASK`` probes (lm-evaluation-harness, Gao et al., doi 10.5281/zenodo.5371628): on
local JSONL tasks written here (offline), a multiple-choice and a generation task scored on the
built-in model agree with ``lm_eval.simple_evaluate`` run alone on the same task and model.

The items are held-out items of the built-in tasks in the built-in chat format, so that the
built-in model gets many, not all, of them right: the agreement is tested on scores that are
neither 0 nor 1."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed here: "
                                                "pip install 'retain[lm-eval]'")

import torch  # noqa: E402

from retain.errors import UserError  # noqa: E402
from retain.probes import ProbeResult, load_probes  # noqa: E402
from retain.probes.lm_eval_probe import LMEvalProbe, load_lm_eval_probes  # noqa: E402
from retain.probes.shard import merge_shards  # noqa: E402

N_MC, N_GEN = 12, 12


def _mc_docs(tok) -> list[dict]:
    """Two-number sums, the right answer among two near misses (its place rotating), and four
    copies of a question with no right answer whose label rotates: the model picks the same
    colour each time, so at least two of those four are wrong."""
    from retain.builtin.tasks import items
    from retain.formats import format_prompt

    docs = []
    for i, it in enumerate(items("math", "probe", N_MC - 4, 0)):
        right = int(it.answer)
        wrong = [str(right + 1), str(right + 10)]
        label = i % 3
        choices = wrong[:label] + [it.answer] + wrong[label:]
        docs.append({"q": format_prompt(tok, it.prompt), "choices": choices, "label": label})
    docs += [{"q": format_prompt(tok, "Pick a colour."), "choices": ["red", "blue", "green"],
              "label": label} for label in (0, 1, 2, 0)]
    return docs


def _gen_docs(tok) -> list[dict]:
    from retain.builtin.tasks import items
    from retain.formats import format_prompt

    return [{"q": format_prompt(tok, it.prompt), "a": it.answer}
            for task in ("multilingual", "instructions", "math")
            for it in items(task, "probe", N_GEN // 3, 0)]


def _write_task(folder: Path, name: str, docs: list[dict], body: str) -> Path:
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    yaml = folder / f"{name}.yaml"
    yaml.write_text(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                    f"    test: {data}\ntest_split: test\n{body}")
    return yaml


@pytest.fixture(scope="module")
def tiny():
    from retain.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory, tiny) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    tok = tiny[1]
    # The prompt already ends the chat turn: no delimiter between it and a choice or answer.
    mc = _write_task(folder, "retain_mc", _mc_docs(tok), (
        "output_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: \"{{label}}\"\ntarget_delimiter: \"\"\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"))
    gen = _write_task(folder, "retain_gen", _gen_docs(tok), (
        "output_type: generate_until\ndoc_to_text: \"{{q}}\"\ndoc_to_target: \"{{a}}\"\n"
        "target_delimiter: \"\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 24\n"
        "  do_sample: false\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n"))
    return {"mc": mc, "gen": gen}


@pytest.fixture
def private_datasets_cache(tmp_path, monkeypatch) -> Path:
    """datasets' default cache pointed at an empty folder (the reference runs write there, not
    under the user's home); a probe must leave it empty."""
    import datasets.config

    cache = tmp_path / "user_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def _reference(task_yaml: Path, model, tok, metric: str) -> tuple[float, int]:
    """``lm_eval.simple_evaluate`` alone on the same task and in-memory model."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    manager = TaskManager(include_path=str(task_yaml.parent), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=[str(task_yaml)], task_manager=manager)
    name = task_yaml.stem
    return float(out["results"][name][f"{metric},none"]), out["n-samples"][name]["effective"]


@pytest.mark.parametrize("kind, metric, n_docs", [("mc", "acc", N_MC),
                                                  ("gen", "exact_match", N_GEN)])
def test_agrees_with_simple_evaluate(kind, metric, n_docs, tasks, tiny, private_datasets_cache):
    model, tok = tiny
    [probe] = load_probes([f"lm-eval:{tasks[kind]}"])
    assert isinstance(probe, LMEvalProbe) and len(probe) == n_docs
    assert not private_datasets_cache.exists()  # the probe's cache went to a temporary folder
    result = probe.score(model, tok, batch_size=4)
    assert isinstance(result, ProbeResult)
    assert result.key == f"lm-eval-{tasks[kind].stem}.{metric}"
    assert result.n == n_docs
    assert result.kind == ("choice" if kind == "mc" else "generation")
    assert 0.0 <= result.ci_low <= result.value <= result.ci_high <= 1.0  # Wilson: 0/1 scores
    ref_value, ref_n = _reference(tasks[kind], model, tok, metric)
    print(f"{kind}: retain {result.value!r} vs simple_evaluate {ref_value!r} over {ref_n} docs")
    assert abs(result.value - ref_value) <= 1e-9
    assert ref_n == n_docs
    assert 0.0 < result.value < 1.0  # a score with some right and some wrong answers
    # every document is kept (doc id, right or not) for paired tests
    assert [it["doc_id"] for it in result.items] == probe.doc_ids
    assert sum(it["ok"] for it in result.items) == round(result.value * n_docs)


def test_shards_and_subsets(tasks, tiny, private_datasets_cache):
    model, tok = tiny
    [probe] = load_lm_eval_probes(str(tasks["mc"]))
    whole = probe.outcomes(model, tok, range(len(probe)), batch_size=4)
    assert [o["doc_id"] for o in whole] == list(range(N_MC))
    assert all(o["value"] in (0.0, 1.0) for o in whole)
    evens, odds = list(range(0, len(probe), 2)), list(range(1, len(probe), 2))
    shards = [(evens, probe.outcomes(model, tok, evens, batch_size=4)),
              (odds, probe.outcomes(model, tok, odds, batch_size=4))]
    merged = merge_shards(shards, len(probe))
    assert [o["doc_id"] for o in merged] == [o["doc_id"] for o in whole]
    assert probe.aggregate(merged).value == pytest.approx(probe.aggregate(whole).value, abs=1e-9)
    # n: a seeded subset of documents, in document order
    [sub] = load_probes([f"lm-eval:{tasks['mc']}"], n=5, seed=1)
    assert len(sub) == 5 and sub.doc_ids == sorted(sub.doc_ids)
    assert sub.doc_ids == load_lm_eval_probes(str(tasks["mc"]), n=5, seed=1)[0].doc_ids
    res = sub.score(model, tok, batch_size=4)
    assert res.n == 5
    assert not private_datasets_cache.exists()


def test_caller_random_state_and_model_mode_are_kept(tasks, tiny, private_datasets_cache):
    model, tok = tiny
    [probe] = load_lm_eval_probes(str(tasks["gen"]), n=2)
    random.seed(7)
    torch.manual_seed(7)
    expected_py, expected_torch = random.random(), torch.rand(1)
    random.seed(7)
    torch.manual_seed(7)
    model.train()
    try:
        probe.score(model, tok, batch_size=2)
        assert model.training  # restored
    finally:
        model.eval()
    assert random.random() == expected_py and torch.equal(torch.rand(1), expected_torch)


def test_bad_specs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_probes([f"lm-eval:{tmp_path / 'missing.yaml'}"])
    with pytest.raises(UserError, match="name a task"):
        load_probes(["lm-eval:"])


def test_interval_kinds():
    """0/1 scores: Wilson; other mean scores: lm-eval's closed-form standard error; other
    aggregations: a seeded bootstrap of the aggregation (both as mean +- 1.96 se)."""
    from types import SimpleNamespace

    from lm_eval.api import metrics

    from retain.probes.stats import Z_95, wilson_interval

    fake = SimpleNamespace(seed=0)
    binary = [1.0, 0.0, 1.0, 1.0]
    assert LMEvalProbe._interval(fake, metrics.mean, binary, 0.75) == wilson_interval(3, 4)
    scores = [0.2, 0.5, 0.9, 0.4]
    mu = sum(scores) / 4
    lo, hi = LMEvalProbe._interval(fake, metrics.mean, scores, mu)
    se = metrics.mean_stderr(scores)
    assert (lo, hi) == pytest.approx((mu - Z_95 * se, mu + Z_95 * se))
    med = metrics.median(scores)
    lo, hi = LMEvalProbe._interval(fake, metrics.median, scores, med)
    assert lo < med < hi and (lo, hi) == LMEvalProbe._interval(fake, metrics.median, scores, med)


def test_results_pair_item_by_item(tasks, tiny, private_datasets_cache, tmp_path):
    """Before/after results of an lm-eval probe carry every document (doc id, right or not), so
    compare (and with it run, diff and compare) gives a McNemar test and the documents lost and
    gained, which the report lists like any other probe's; a mean metric that is not 0/1 per
    document gets the paired bootstrap of its mean."""
    from retain.metrics import compare
    from retain.report.html import Folder, Run
    from retain.report.html.run_sections import section_lost_items
    from retain.report.tables import paired_cell

    model, tok = tiny
    [probe] = load_lm_eval_probes(str(tasks["mc"]))
    outs = probe.outcomes(model, tok, range(len(probe)), batch_size=4)
    before = probe.aggregate(outs)
    assert [it["doc_id"] for it in before.items] == list(range(N_MC))
    assert [it["ok"] for it in before.items] == [o["value"] == 1.0 for o in outs]
    # the after model: every right document wrong, and the first wrong one right
    first_wrong = next(i for i, o in enumerate(outs) if o["value"] == 0.0)
    flipped = [{**o, "value": 1.0 if i == first_wrong else 0.0} for i, o in enumerate(outs)]
    after = probe.aggregate(flipped)
    right = sum(o["value"] == 1.0 for o in outs)
    [row] = compare([before], [after])
    paired = row["paired"]
    assert paired["test"] == "mcnemar_exact" and paired["n"] == N_MC
    assert (paired["lost"], paired["gained"]) == (right, 1)
    from retain.metrics.paired import mcnemar_exact
    assert paired["p"] == mcnemar_exact(right, 1)
    assert paired["gained_items"][0]["prompt"] == f"retain_mc doc {first_wrong}"
    assert paired_cell(paired).endswith(f"-{right}/+1")
    # the same model twice: nothing lost or gained
    [same] = compare([before], [probe.aggregate(outs)])
    assert same["paired"]["lost"] == same["paired"]["gained"] == 0
    # a mean score that is not 0/1 per document: a paired bootstrap of the mean's change
    graded = probe.aggregate([{**o, "value": 0.25 + 0.5 * o["value"]} for o in outs])
    lower = probe.aggregate([{**o, "value": 0.1} for o in outs])
    test = compare([graded], [lower])[0]["paired"]
    assert test["test"] == "paired_bootstrap" and test["changed"]
    assert test["diff"] == pytest.approx(lower.value - graded.value)
    # the report lists them (a round trip through JSON, as results.json keeps them)
    results = json.loads(json.dumps({"comparison": [row]}))
    page = section_lost_items(Folder(tmp_path, "run", [Run("run", tmp_path, results, None)]))
    assert f"lm-eval-retain_mc.acc: {right} item(s) lost" in page
    assert f"retain_mc doc {first_wrong}" in page
