"""Choices that begin alike (" 41"/" 45", "The answer is A"/"The answer is B") share the tokens
of their common beginning in one forward: scores stay each pair's own, on both the one-forward
path (short contexts) and the cached one (long contexts), and fewer tokens go through the model."""

from __future__ import annotations

import pytest

from retain import formats
from retain.probes import loglik

from probe_models import make_model, pair_scores

# ids: shared beginnings, a choice that is the beginning of another, a repeated choice, one-id
# and empty choices
CHOICES = [[[5, 6, 7], [5, 6, 8], [5, 9], [5, 6, 7, 3], [5, 6, 7]],
           [[11], [11, 12], []],
           [[20, 21, 22, 23], [20, 21, 22, 24], [30, 31]]]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("context_chars", [10, 120])  # one forward (<= 64 tokens) / two
def test_shared_beginnings_score_aspair_scores(arch, context_chars, tok):
    model = make_model(arch, tok)
    contexts = [formats.encode(tok, formats.format_prompt(tok, f"q{i} " + "ab" * context_chars))
                for i in range(3)]
    assert all(len(c) > loglik.INLINE_MAX_CONTEXT for c in contexts) == (context_chars > 64)
    got = loglik.continuation_logprobs(model, tok, contexts, CHOICES, batch_size=3)
    want = pair_scores(model, tok, contexts, CHOICES)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)
    assert got[0][0] == pytest.approx(got[0][4], abs=1e-5)  # the same choice twice
    assert got[1][2] == 0.0


def test_a_shared_beginning_runs_once(tok):
    """Item 0's choices but their last ids hold 3 distinct beginnings, (5), (5, 6), (5, 6, 7): the
    cached form's row of choices is 3 ids wide and the one-forward form's row the context and 3
    (without sharing: 2 + 2 + 1 + 3 + 2 = 10 ids)."""
    model = make_model("llama", tok)
    contexts = [formats.encode(tok, formats.format_prompt(tok, "q"))] * 2
    conts = [CHOICES[0], [[5, 6, 7]]]
    widths = []
    hook = model.register_forward_pre_hook(
        lambda _m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    got = loglik.continuation_logprobs(model, tok, contexts, conts, batch_size=2)
    hook.remove()
    # the first batch of a call: contexts, the packed choices (checked against a row per choice),
    # then the one-forward form (checked against both)
    L = len(contexts[0])
    assert widths[0] == L and widths[1] == 3 and widths[-1] == L + 3
    assert got[0][0] == pytest.approx(pair_scores(model, tok, contexts[:1], [[[5, 6, 7]]])[0][0],
                                      abs=1e-4)
