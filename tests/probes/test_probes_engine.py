"""The batched engine: padding never changes answers or scores; CE and KL match hand computation;
the generation budget covers the longest expected answer; models keep their train/eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retain import formats
from retain.builtin.tasks import Item
from retain.probes import SUITES, GenerationProbe, KLToBaseProbe, PerplexityProbe, format_prompt
from retain.probes import engine, loglik
from retain.formats import PLAIN_FORMAT, encode, encode_scored_text

from probe_models import make_model, pair_scores

PROMPTS = ["hi", "What is 2 + 2?", "Translate to French: the red cat", "a" * 40, "x",
           "Hello there, how are you today?", "Write the word dog in capital letters."]
TEXTS = ["The cat sleeps.", "A longer text about a dog that walks near the river at night.", "Hi."]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("pad", [True, False])
def test_batched_generation_equals_one_by_one(arch, pad, tok, tok_no_pad):
    t = tok if pad else tok_no_pad  # without a pad token, EOS pads
    model = make_model(arch, t)
    prompts = [encode(t, format_prompt(t, p)) for p in PROMPTS]
    batched = engine.generate(model, t, prompts, max_new_tokens=12, batch_size=4)
    single = [engine.generate(model, t, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(len(a) > 3 for a in batched)  # not trivially empty


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_batched_logprobs_equal_one_by_one(arch, tok):
    model = make_model(arch, tok)
    seqs = [encode_scored_text(tok, t) for t in TEXTS]
    batched = engine.token_logprobs(model, tok, seqs, batch_size=3)
    for s, b in zip(seqs, batched):
        (one,) = engine.token_logprobs(model, tok, [s], batch_size=1)
        assert b.shape == (len(s) - 1,)
        torch.testing.assert_close(b, one, atol=1e-4, rtol=1e-4)


def test_perplexity_equals_hand_computed_ce(tok, llama):
    total, count = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([tok(text).input_ids])  # <s> + characters
            logits = llama(input_ids=ids).logits[0, :-1]  # (T-1, V)
            total += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    r = PerplexityProbe("p", TEXTS, "writing").score(llama, tok, batch_size=2)
    assert r.value == pytest.approx(total / count, rel=1e-5)
    assert r.n == len(TEXTS) and r.ci_low <= r.value <= r.ci_high


def test_kl_zero_for_base_and_positive_otherwise(tok, llama):
    probe = KLToBaseProbe("drift", TEXTS, "drift")
    same = probe.score(llama, tok, base_model=llama, batch_size=2)
    assert same.value == pytest.approx(0.0, abs=1e-6)
    other = probe.score(llama, tok, base_model=make_model("llama", tok, seed=3), batch_size=2)
    assert other.value > 0.01 and other.ci_low > 0.0
    with pytest.raises(ValueError, match="needs base_model"):
        probe.score(llama, tok)


def test_mode_is_restored(tok):
    model = make_model("llama", tok).train()
    PerplexityProbe("p", TEXTS, "x").score(model, tok)
    GenerationProbe("g", [Item("a", prompt="hi", answer="x")], "x").score(model, tok)
    assert model.training
    model.eval()
    PerplexityProbe("p", TEXTS, "x").score(model, tok)
    assert not model.training


def test_format_prompt(tok, tok_no_pad):
    assert format_prompt(tok, "hi") == "<s><|user|>hi<|assistant|>"
    assert format_prompt(tok, "hi", chat=False) == "hi"
    assert encode(tok, format_prompt(tok, "hi")).count(tok.bos_token_id) == 1  # no doubled BOS
    t = tok_no_pad
    t.chat_template, saved = None, t.chat_template
    try:
        assert format_prompt(t, "hi") == PLAIN_FORMAT.format(prompt="hi") == "User: hi\nAssistant:"
    finally:
        t.chat_template = saved


def test_pad_falls_back_to_eos(tok_no_pad):
    assert formats.pad_token_id(tok_no_pad) == tok_no_pad.eos_token_id


def test_budget_is_sized_from_answers(tok):
    short = engine.generation_budget(tok, ["4"])
    long = engine.generation_budget(tok, ["4", "x" * 100])
    assert short >= 2 and long >= 101 + 1 and long > short
    assert engine.generation_budget(tok, ["x" * 1000], cap=64) == 64


class EchoModel(torch.nn.Module):
    """A stand-in LM whose greedy answer is the expected one, cut to the generation budget:
    a probe scores it perfectly only if the budget covers every answer."""

    def __init__(self, tok, answers: dict[str, str]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok, self.answers = tok, answers
        self.config = type("C", (), {"max_position_embeddings": 4096})()
        self.generation_config = None

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tok.decode([i for i, m in zip(ids, mask) if m])
            new = self.tok(self.answers[prompt], add_special_tokens=False).input_ids
            new = (new + [self.tok.eos_token_id])[:generation_config.max_new_tokens]
            rows.append(ids + new)
        width = max(map(len, rows))
        return torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("suite", ["math", "code", "multilingual", "safety", "instructions",
                                   "legal", "support", "recipes"])
def test_budget_covers_longest_answer(suite, tok):
    for probe in SUITES[suite].probes(n=60, seed=0):
        if not isinstance(probe, GenerationProbe):
            continue
        answers = {tok.decode(encode(tok, format_prompt(tok, it.prompt, probe.chat))): it.answer
                   for it in probe.items}
        r = probe.score(EchoModel(tok, answers), tok, batch_size=16)
        assert r.value == (1.0 if probe.higher_is_better else 0.0), r.key
        longest = max(len(tok(it.answer, add_special_tokens=False).input_ids) for it in probe.items)
        assert probe.budget(tok) > longest


def test_too_short_budget_is_caught(tok):
    # The echo test above can fail: with a fixed short budget the right answers score wrong.
    items = [Item("a", prompt="Say it.", answer="a long expected answer")]
    probe = GenerationProbe("g", items, "x", max_new_tokens=5)
    answers = {tok.decode(encode(tok, format_prompt(tok, "Say it."))): items[0].answer}
    assert probe.score(EchoModel(tok, answers), tok).value == 0.0


CONTEXTS = ["What is 2 + 2?", "Pick one", "A much longer question about rivers, dogs and cats?"]
CHOICES = [[" 4", " 5", " four", ""], [" a"], [" yes", " no", " the river at night", " x"]]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_shared_context_scores_equal_pair_by_pair(arch, batch_size, tok):
    """A context scored once for all its continuations (its cache shared, left padding, positions
    from the first real token) gives each continuation the log-likelihood it has as a sequence of
    its own; an empty continuation scores 0; a batch never splits an item."""
    model = make_model(arch, tok)
    assert engine.shares_prefix(model)
    contexts = [encode(tok, format_prompt(tok, c)) for c in CONTEXTS]
    conts = [[tok(c, add_special_tokens=False)["input_ids"] for c in cs] for cs in CHOICES]
    got = loglik.continuation_logprobs(model, tok, contexts, conts, batch_size=batch_size)
    want = pair_scores(model, tok, contexts, conts)
    assert [len(r) for r in got] == [len(r) for r in want]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)
    assert got[0][3] == 0.0 and all(x < 0 for x in got[2])


def test_prompt_tuning_and_single_token_choices(tok):
    """A prompt-learning adapter (virtual tokens on every call) takes the pair-by-pair path; a
    probe whose choices are all one token needs only the contexts' forward."""
    from peft import PromptTuningConfig, get_peft_model

    model = make_model("llama", tok)
    contexts = [encode(tok, format_prompt(tok, c)) for c in CONTEXTS]
    one = [[[tok.convert_tokens_to_ids(ch)] for ch in "abc"] for _ in CONTEXTS]
    calls = []
    h = model.register_forward_hook(lambda *a: calls.append(1))
    got = loglik.continuation_logprobs(model, tok, contexts, one, batch_size=32)
    h.remove()
    assert len(calls) == 1  # 3 items x 3 one-token choices: one forward of the 3 contexts
    for g, w in zip(got, pair_scores(model, tok, contexts, one)):
        assert g == pytest.approx(w, abs=1e-4)
    peft_model = get_peft_model(make_model("llama", tok), PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    assert not engine.shares_prefix(peft_model)
    conts = [[tok(c, add_special_tokens=False)["input_ids"] for c in cs] for cs in CHOICES]
    got = loglik.continuation_logprobs(peft_model, tok, contexts, conts, batch_size=4)
    assert [len(r) for r in got] == [len(c) for c in CHOICES]


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning"])
def test_prompt_tuned_generation_equals_its_own_greedy_decoding(kind, tok):
    """A prompt-tuned model's batched answers are the greedy answers of its forward pass (the
    virtual tokens prepended once). PEFT's generate under transformers 5 prepends them again at
    every step, and answered differently (checked: it fails this test)."""
    from peft import PromptEncoderConfig, PromptTuningConfig, get_peft_model

    cfg = (PromptTuningConfig if kind == "prompt_tuning" else PromptEncoderConfig)(
        task_type="CAUSAL_LM", num_virtual_tokens=6, **({} if kind == "prompt_tuning" else
                                                        {"encoder_hidden_size": 16}))
    model = get_peft_model(make_model("llama", tok), cfg).eval()
    with torch.no_grad():
        for p in model.prompt_encoder.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    prompts = [encode(tok, format_prompt(tok, p)) for p in PROMPTS[:4]]
    got = engine.generate(model, tok, prompts, max_new_tokens=10, batch_size=4)
    want = []
    with torch.no_grad():
        for ids in prompts:
            seq = torch.tensor([ids])
            for _ in range(10):
                nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
                if nxt.item() == tok.eos_token_id:
                    break
                seq = torch.cat([seq, nxt], 1)
            want.append(engine.cut_at_stop(tok.decode(seq[0, len(ids):].tolist(),
                                                      skip_special_tokens=True)))
    assert got == want
    assert any(len(a) > 3 for a in got)


def test_prompt_tuned_perplexity_scores_the_text_positions(tok):
    """A prompt-tuned model's logits start with its virtual tokens' positions; the perplexity
    probe scores the text's own (it read the virtual positions before: CE 13.6 on the demo)."""
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(make_model("llama", tok), PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=5)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in TEXTS:
            ids = torch.tensor([encode_scored_text(tok, text)])
            logits = model(input_ids=ids).logits[0, 5:-1]  # text positions, (T-1, V)
            total += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
    r = PerplexityProbe("p", TEXTS, "writing").score(model, tok, batch_size=2)
    assert r.value == pytest.approx(total / count, rel=1e-5)


def test_slot_decoding_equals_batched_generate_on_the_builtin_model():
    """Continuous batching (rows leave at EOS, a budget or a stop string; new prompts join and
    are left-padded to the others) gives every prompt the answer that ``model.generate`` gives
    it in a plain batch, on the built-in chat model whose answers end at different lengths; and
    it runs fewer decoding steps."""
    from retain.models import load_model
    from retain.probes import load_probes

    model, tok = load_model("tiny", dtype="float32", device="cpu")
    probes = [p for p in load_probes(["math", "instructions", "safety"], n=16, seed=0)
              if isinstance(p, GenerationProbe)]
    prompts = [encode(tok, format_prompt(tok, it.prompt, p.chat)) for p in probes
               for it in p.items]
    steps = []
    hook = model.register_forward_pre_hook(
        lambda _m, a, kw: steps.append(kw["input_ids"].shape[1] == 1), with_kwargs=True)
    got = engine.generate(model, tok, prompts, max_new_tokens=40, batch_size=6)
    slot_steps, steps[:] = sum(steps), []
    with engine.inference_mode(model):
        rows = engine._generate_batches(model, prompts, formats.pad_token_id(tok),
                                        engine.eos_token_ids(model, tok), 40, 6)
    hook.remove()
    want = []
    for row in rows:
        row = row[:next((j for j, t in enumerate(row) if t == tok.eos_token_id), len(row))]
        want.append(engine.cut_at_stop(tok.decode(row, skip_special_tokens=True)))
    assert got == want
    assert len({len(a) for a in got}) > 5  # answers of many lengths: rows left at many steps
    assert slot_steps < sum(steps)
