"""Replay and self-replay (replay.py, self_replay.py): the replay fraction of the example list and
of the loop's batches is r, mixing is deterministic per seed, counts are reported, and
self-replay examples are exactly the base model's own generations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer
from retain.errors import UserError
from retain.strategies.base import RunContext
from retain.strategies.replay import Replay, mix_replay, replay_count
from retain.strategies.self_replay import SelfReplay, builtin_prompts
from retain.train.loop import batch_indices


def examples(n: int, tag: int, length: int = 5) -> list[dict]:
    """Examples whose first token tells where they come from (tag) and second which one (i)."""
    return [{"input_ids": [tag, i] + [7] * (length - 2), "labels": [-100, i] + [7] * (length - 2)}
            for i in range(n)]


def ctx(reference: list[dict], seed: int = 0, tokenizer=None) -> RunContext:
    return RunContext(tokenizer=tokenizer, seed=seed, out_dir=None, device=torch.device("cpu"),
                      reference=reference)


@pytest.mark.parametrize("r", [0.1, 0.25, 0.5])
def test_fraction_of_the_list_and_of_every_run_of_examples(r):
    data, ref = examples(300, tag=1), examples(40, tag=2, length=9)
    mixed, counts = mix_replay(data, ref, r, seed=0)
    is_replay = [ex["input_ids"][0] == 2 for ex in mixed]
    assert abs(sum(is_replay) / len(mixed) - r) < 0.01
    assert counts["replay_examples"] == sum(is_replay) == replay_count(300, r)
    assert counts["replay_tokens"] == 9 * sum(is_replay)
    assert counts["replay_loss_tokens"] == 8 * sum(is_replay)
    assert [ex for ex in mixed if ex["input_ids"][0] == 1] == data  # new data: all, in order
    r_list = sum(is_replay) / len(mixed)
    for b in (8, 16):  # any B consecutive examples hold floor(rB) or ceil(rB) replay examples
        window = {sum(is_replay[k:k + b]) for k in range(len(mixed) - b)}
        assert window <= {math.floor(r_list * b), math.ceil(r_list * b)}


def test_deterministic_per_seed_and_pool_cycled_without_repeats_first():
    data, ref = examples(90, tag=1), examples(20, tag=2)
    a, _ = mix_replay(data, ref, 0.25, seed=3)
    b, _ = mix_replay(data, ref, 0.25, seed=3)
    c, _ = mix_replay(data, ref, 0.25, seed=4)
    assert a == b and a != c
    drawn = [ex["input_ids"][1] for ex in a if ex["input_ids"][0] == 2]  # 30 draws from 20
    assert sorted(drawn[:20]) == list(range(20))  # each reference example once before repeats


def test_loop_batches_hold_r_on_average():
    """The loop shuffles its examples, so the fraction holds on average over its batches."""
    data, ref = examples(600, tag=1), examples(100, tag=2)
    mixed, _ = mix_replay(data, ref, 0.25, seed=0)
    per_batch = [sum(mixed[i]["input_ids"][0] == 2 for i in idx) / 16
                 for idx in batch_indices(len(mixed), 16, 200, seed=0)]
    assert abs(sum(per_batch) / len(per_batch) - 0.25) < 0.03


def test_replay_strategy_reports_and_needs_reference():
    c = ctx(examples(10, tag=2))
    out = Replay(Replay.Config(fraction=0.2)).train_data(examples(40, tag=1), c)
    assert len(out) == 50 and c.info["replay"]["replay_examples"] == 10
    assert c.info["replay"]["source"] == "reference"
    with pytest.raises(UserError, match="reference"):
        Replay().train_data(examples(4, tag=1), ctx([]))
    with pytest.raises(ValueError):
        Replay.Config(fraction=1.0)


# ---------------------------------------------------------------- self-replay
@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)).eval()


def test_self_replay_examples_are_the_base_models_generations(tok, model, tmp_path):
    from retain.formats import encode, format_prompt

    prompts = ["What is 2 + 3?", "Say hello.", "What does len('abc') return in Python?",
               "Translate 'the red cat' into French.", "Hi"]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    s = SelfReplay(SelfReplay.Config(prompts=str(path), max_new_tokens=6, batch_size=2,
                                     fraction=0.5))
    c = ctx([], tokenizer=tok)
    assert s.prepare(model, c) is model
    assert len(s.pool) == len(prompts)
    for p, ex in zip(prompts, s.pool):
        ids = encode(tok, format_prompt(tok, p))
        with torch.no_grad():  # one prompt at a time: no padding at all
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        answer = out[0, len(ids):].tolist()
        if tok.eos_token_id in answer:
            answer = answer[: answer.index(tok.eos_token_id) + 1]
        assert ex["input_ids"] == ids + answer
        assert ex["labels"] == [-100] * len(ids) + answer  # the loss on the answer only
    mixed = s.train_data(examples(10, tag=1), c)
    info = c.info["self_replay"]
    assert len(mixed) == 20 and info["replay_examples"] == 10 and info["prompts"] == 5
    assert info["generation"] == "greedy" and info["source"] == "self-generated"


def test_self_replay_sampling_is_seeded_and_builtin_pool_is_train_split(tok, model):
    from retain.builtin import tasks

    cfg = SelfReplay.Config(num_prompts=6, max_new_tokens=4, do_sample=True, temperature=1.5)
    pools = []
    for seed in (0, 0, 1):
        s = SelfReplay(cfg)
        s.prepare(model, ctx([], seed=seed, tokenizer=tok))
        pools.append(s.pool)
    assert pools[0] == pools[1] and pools[0] != pools[2]
    prompts = builtin_prompts(40, seed=0)
    probe = {it.prompt for t in ("math", "safety_harmful") for it in tasks.items(t, "probe", 400, 0)}
    assert len(prompts) == 40 and not probe & set(prompts)
    with pytest.raises(RuntimeError, match="before prepare"):
        SelfReplay().train_data([], ctx([]))


@pytest.mark.parametrize("peft_name", ["lora", "prompt_tuning"])
def test_self_replay_after_a_peft_wrap_still_asks_the_base(tok, model, peft_name):
    """Listed after a PEFT method, self-replay generates with the adapter disabled."""
    import copy

    from retain.strategies import STRATEGIES

    cfg = SelfReplay.Config(num_prompts=4, max_new_tokens=5)
    plain = SelfReplay(cfg)
    plain.prepare(model, ctx([], tokenizer=tok))
    wrapped = STRATEGIES[peft_name]().prepare(copy.deepcopy(model), ctx([], tokenizer=tok))
    with torch.no_grad():  # an adapter far from the identity
        for n, p in wrapped.named_parameters():
            if p.requires_grad:
                p.normal_(0, 3.0, generator=torch.Generator().manual_seed(0))
    after = SelfReplay(cfg)
    after.prepare(wrapped, ctx([], tokenizer=tok))
    assert after.pool == plain.pool
