"""The new-domain probe of a user's JSONL: a seeded held-out split (sizes, cap, determinism,
disjointness, errors), train examples as ``load_jsonl`` makes them, and the probes built from the
held-out records (cross-entropy on the trained-on tokens by hand, accuracy only with enough
short answers, outcomes over parts equal to ``score``, user probe files counted as domain).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from retain import formats
from retain import data
from retain.builtin import tasks
from retain.errors import UserError
from retain.probes import GenerationProbe, PerplexityProbe, engine
from retain.probes.domain import LabeledCEProbe, domain_probe_files, domain_probes

SEQ = 256


@pytest.fixture(scope="module")
def tiny():
    from retain.models import load_model

    torch.manual_seed(0)
    return load_model("tiny", device="cpu")


def write_jsonl(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def pc(k: int, answer: str | None = None) -> dict:
    return {"prompt": f"What is {k} + 1?", "completion": answer or str(k + 1)}


def hand_ce(model, seqs: list[list[int]], starts: list[int]) -> float:
    """Token-weighted mean -log p of seq[start:] given its prefix, straight from the logits."""
    nats, count = 0.0, 0
    with torch.no_grad():
        for seq, start in zip(seqs, starts):
            logp = model(torch.tensor([seq])).logits[0].float().log_softmax(-1)  # (L, V)
            for j in range(start, len(seq)):
                nats -= float(logp[j - 1, seq[j]])
                count += 1
    return nats / count


# ---------------------------------------------------------------- the split
def test_split_sizes_cap_and_minimum():
    recs = list(range(100))
    assert [len(x) for x in data.split_holdout(recs, 0.1, seed=0)] == [90, 10]
    assert [len(x) for x in data.split_holdout(list(range(5000)), 0.1, 0)] == [4800, 200]
    assert [len(x) for x in data.split_holdout(recs, 0.5, 0, cap=7)] == [93, 7]
    assert [len(x) for x in data.split_holdout(recs, 0.001, 0)] == [99, 1]  # at least one
    assert [len(x) for x in data.split_holdout([0, 1], 0.9, 0)] == [1, 1]  # one left to train


def test_split_deterministic_disjoint_and_in_order():
    recs = [("text", f"line {i}") for i in range(50)]
    train, held = data.split_holdout(recs, 0.2, seed=3)
    assert (train, held) == data.split_holdout(recs, 0.2, seed=3)
    assert held != data.split_holdout(recs, 0.2, seed=4)[1]
    assert not set(train) & set(held) and sorted(train + held) == sorted(recs)
    assert train == sorted(train, key=recs.index) and held == sorted(held, key=recs.index)


def test_holdout_zero_and_too_small(tmp_path):
    assert data.split_holdout([1, 2, 3], 0.0, 0) == ([1, 2, 3], [])
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": "only line"}])
    with pytest.raises(UserError, match="too few.*data_holdout=0") as err:
        data.split_holdout(data.read_jsonl(path), 0.1, 0, what=str(path))
    assert "\n" not in str(err.value) and "one.jsonl" in str(err.value)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        data.split_holdout([1, 2], 1.0, 0)


def test_load_jsonl_split_trains_like_load_jsonl_on_the_rest(tmp_path, tiny):
    _, tok = tiny
    objs = [pc(k) for k in range(30)]
    path = write_jsonl(tmp_path / "qa.jsonl", objs)
    train, held = data.load_jsonl_split(path, tok, seq_len=SEQ, n=12, seed=5, holdout=0.2)
    assert len(held) == 6 and len(train) == 12
    held_prompts = {p for _, (p, _) in held}
    rest = write_jsonl(tmp_path / "rest.jsonl",
                       [o for o in objs if o["prompt"] not in held_prompts])
    assert train == data.load_jsonl(rest, tok, seq_len=SEQ, n=12, seed=5)
    # holdout=0 is load_jsonl itself; a built-in domain holds nothing out
    assert data.load_jsonl_split(path, tok, seq_len=SEQ, holdout=0)[0] == data.load_jsonl(
        path, tok, seq_len=SEQ)
    assert data.load_train_data_split("builtin:legal", tok, seq_len=SEQ, n=3)[1] == []


# ---------------------------------------------------------------- the probes
def test_ce_on_prompt_completion_scores_the_completion_only(tiny):
    model, tok = tiny
    recs = [("prompt_completion", (f"What is {k} + 1?", str(k + 1))) for k in (3, 41, 7)]
    probes = domain_probes("mine", recs, tok, seq_len=SEQ, seed=0)
    assert [type(p) for p in probes] == [LabeledCEProbe]  # 3 short answers: no accuracy probe
    ce = probes[0]
    assert (ce.name, ce.capability, ce.metric, ce.higher_is_better) == (
        "mine", "domain", "ce_nats_per_token", False)
    seqs, starts = [], []
    for _, (prompt, answer) in recs:
        head = formats.encode(tok, formats.format_prompt(tok, prompt))
        seqs.append(head + tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        starts.append(len(head))
    res = ce.score(model, tok, batch_size=2)
    assert res.value == pytest.approx(hand_ce(model, seqs, starts), rel=1e-4)
    assert res.n == 3 and res.ci_low <= res.value <= res.ci_high and res.kind == "labeled_ce"
    assert res.examples[0]["prompt"] == "What is 3 + 1?" and res.examples[0]["expected"] == "4"


def test_ce_on_text_scores_every_token_after_the_first(tiny):
    model, tok = tiny
    texts = ["The bird rests behind the road.", "Every day, the friend sleeps under the house."]
    (ce,) = domain_probes("notes", [("text", t) for t in texts], tok, seq_len=SEQ, seed=0)
    seqs = [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"]
            + [tok.eos_token_id] for t in texts]
    assert ce.score(model, tok).value == pytest.approx(hand_ce(model, seqs, [1, 1]), rel=1e-4)


def test_accuracy_probe_only_with_enough_short_answers(tiny):
    _, tok = tiny
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    sys_chat = [{"role": "system", "content": "be brief"}] + chat
    short = [("prompt_completion", (f"What is {k} + 1?", str(k + 1))) for k in range(4)]
    recs = short + [("messages", chat), ("messages", sys_chat), ("text", "plain")]
    probes = domain_probes("mine", recs, tok, seq_len=SEQ, seed=0)
    gen = [p for p in probes if isinstance(p, GenerationProbe)]
    assert len(gen) == 1 and (gen[0].name, gen[0].capability) == ("mine", "domain")
    assert [it.prompt for it in gen[0].items][-1] == "hi"  # the system chat is skipped
    assert len(gen[0].items) == 5 and len(probes) == 2
    # one answer too long for max_answer_tokens leaves 4: no accuracy probe
    long = short + [("prompt_completion", ("Say it", "x " * 40)), ("messages", sys_chat)]
    assert [type(p) for p in domain_probes("mine", long, tok, seq_len=SEQ, seed=0)] == [
        LabeledCEProbe]


def test_outcomes_of_two_parts_aggregate_to_score(tiny):
    model, tok = tiny
    recs = [("prompt_completion", (f"What is {k} + 1?", str(k + 1))) for k in range(6)] + [
        ("text", "The warm garden walks inside the baker.")]
    ce, gen = domain_probes("mine", recs, tok, seq_len=SEQ, seed=1)
    assert len(ce) == 7
    parts = ce.outcomes(model, tok, [4, 5, 6]), ce.outcomes(model, tok, range(4), batch_size=3)
    whole, direct = ce.aggregate(parts[1] + parts[0]), ce.score(model, tok)
    assert (whole.value, whole.ci_low, whole.ci_high) == pytest.approx(
        (direct.value, direct.ci_low, direct.ci_high), rel=1e-5)
    assert whole.n == direct.n == 7 and [e["prompt"] for e in whole.examples] == [
        e["prompt"] for e in direct.examples]
    with pytest.raises(ValueError, match="6 outcomes for 7 items"):
        ce.aggregate(parts[1] + parts[0][:2])
    parts = gen.outcomes(model, tok, range(3)), gen.outcomes(model, tok, range(3, len(gen)))
    assert gen.aggregate(parts[0] + parts[1]).to_dict() == gen.score(model, tok).to_dict()


def test_training_like_text_gets_a_finite_ce_below_noise(tiny):
    model, tok = tiny
    seen = [("text", it.text) for it in tasks.items("writing", "train", 4, 0)]
    noise = [("text", "qzx vkw jjpf ooqz xwv kkqj zzpx")]
    (ce_seen,) = domain_probes("w", seen, tok, seq_len=SEQ, seed=0)
    (ce_noise,) = domain_probes("n", noise, tok, seq_len=SEQ, seed=0)
    value = ce_seen.score(model, tok).value
    assert math.isfinite(value) and 0 < value < ce_noise.score(model, tok).value


def test_domain_probe_files_count_as_domain(tmp_path):
    path = write_jsonl(tmp_path / "contracts.jsonl", [{"text": f"Clause {i}."} for i in range(4)])
    (probe,) = domain_probe_files([path], n=2, seed=0)
    assert isinstance(probe, PerplexityProbe)
    assert (probe.name, probe.capability, len(probe.texts)) == ("contracts", "domain", 2)


def test_split_holds_out_duplicates_whole():
    """Regression: a record duplicated in the file could be held out once and trained on as its
    copy; now every copy of a held-out record stays out of training, held out once."""
    recs = [("text", f"line {i % 10}") for i in range(40)]  # each line 4 times
    for seed in range(5):
        train, held = data.split_holdout(recs, 0.3, seed=seed)
        assert held and not set(train) & set(held)
        assert len(held) == len(set(held)) == 3  # 30% of the 10 distinct lines
        assert len(train) == 40 - 4 * len(held)
    with pytest.raises(UserError, match="distinct"):
        data.split_holdout([("text", "same")] * 5, 0.1, 0)
