"""Session fixtures for the probe tests: the character tokenizer (with and without a pad token)
and a tiny random Llama."""

from __future__ import annotations

import pytest

from retain.builtin.build import build_tokenizer

from probe_models import make_model


@pytest.fixture(scope="session")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tok_no_pad():
    t = build_tokenizer()
    t.pad_token = None  # like GPT-2's tokenizer
    assert t.pad_token_id is None
    return t


@pytest.fixture(scope="session")
def llama(tok):
    return make_model("llama", tok)
