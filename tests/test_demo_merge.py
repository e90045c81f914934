"""`run_merge_demo` on a tiny random Llama, 2 steps: the table has base, both specialists and
every merge, on both domains and the retained capabilities."""

import csv
import json

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from retain.builtin.build import build_tokenizer
from retain.experiments.demo_merge import MERGES, run_merge_demo


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory):
    import torch

    tok = build_tokenizer()
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, vocab_size=len(tok), max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("llama") / "model"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_merge_demo_writes_the_table(random_llama, tmp_path):
    out = tmp_path / "demo-merge"
    record = run_merge_demo(out, settings={"model": str(random_llama), "steps": 2, "probe_n": 4,
                                           "batch_size": 2, "seq_len": 32, "warmup_steps": 0,
                                           "probe_batch_size": 16},
                            progress=False)
    labels = ["base", "legal specialist", "support specialist", *MERGES]
    assert list(record["rows"]) == labels
    with open(out / "merge_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == labels
    for key in ("legal.accuracy", "support.accuracy", "math.accuracy",
                "safety.over_refusal_rate", "writing.ce_nats_per_token", "retained_mean"):
        assert key in rows[0]
    saved = json.loads((out / "merge.json").read_text())
    assert saved["merges"]["dare_ties"]["options"]["seed"] == 0
    # the specialists were trained: their weights differ from the base, so do the merges' scores
    # (cross-entropy moves even when a random model's accuracies stay at 0)
    ce = [r["writing.ce_nats_per_token"] for r in record["rows"].values()]
    assert len(set(ce)) > 1
    assert (out / "legal" / "model").is_dir() and (out / "support" / "model").is_dir()
