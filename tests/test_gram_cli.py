"""`retain gram`: the input Gram matrices of every untied linear layer, pad tokens excluded and
averaged over tokens, written atomically; they feed `retain merge --method regmean`."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from retain.cli import app
from retain.errors import UserError
from retain.gram_cli import gram_matrices, tied_names, write_gram


class Toy(torch.nn.Module):
    """Embedding (vocab 10, dim 3) -> Linear(3, 2); the output layer tied to the embedding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(10, 3)
        self.proj = torch.nn.Linear(3, 2)
        self.out = torch.nn.Linear(3, 10, bias=False)
        self.out.weight = self.emb.weight  # tied: no Gram

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        return self.out(h) + self.proj(h).sum() * 0


def test_the_gram_is_the_mean_outer_product_of_non_pad_inputs():
    model = Toy()
    examples = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4], "labels": [4]}]
    grams, tokens = gram_matrices(model, examples, pad_id=9, batch_size=2)
    assert tokens == 4 and set(grams) == {"proj.weight"}  # out.weight is tied: left out
    X = model.emb.weight[[1, 2, 3, 4]].detach().double()  # the 4 real tokens, not the 2 pads
    assert torch.allclose(grams["proj.weight"].double(), X.T @ X / 4, atol=1e-6)
    assert tied_names(model) == {"emb.weight", "out.weight"}


def test_retain_gram_writes_every_linear_and_feeds_regmean(tmp_path):
    g1, g2 = tmp_path / "legal.safetensors", tmp_path / "support.safetensors"
    write_gram("tiny", "builtin:legal", g1, n=4, seq_len=32)
    write_gram("tiny", "builtin:support", g2, n=4, seq_len=32)
    with safe_open(str(g1), "pt") as f:
        names = list(f.keys())
        assert len(names) == 28 and "lm_head.weight" not in names  # 4 layers x 7 linears
        assert f.metadata()["normalized"] == "mean over tokens"
        g = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert g.shape[0] == g.shape[1] and torch.allclose(g, g.T, atol=1e-5)
    with safe_open(str(g2), "pt") as f:  # another domain: other inputs, another Gram
        assert not torch.allclose(f.get_tensor("model.layers.0.self_attn.q_proj.weight"), g)
    with pytest.raises(UserError, match="exists"):
        write_gram("tiny", "builtin:legal", g1, n=4)
    from retain.models import load_model

    tiny, tok = load_model("tiny", dtype="float32", device="cpu")
    folder = tmp_path / "tiny"
    tiny.save_pretrained(folder)
    tok.save_pretrained(folder)
    out = tmp_path / "merged"
    res = CliRunner().invoke(app, ["merge", "--method", "regmean", str(folder), str(folder),
                                   "--gram", str(g1), "--gram", str(g2), "--out", str(out)])
    assert res.exit_code == 0, res.output
    merged, _ = load_model(str(out), dtype="float32", device="cpu")
    for (n, a), b in zip(tiny.named_parameters(), merged.parameters()):
        assert torch.allclose(a, b, atol=1e-4), n  # RegMean of a model with itself: itself


def test_cli_mistakes_exit_2(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "retain.cli", "gram", str(tmp_path / "nope"),
                        "--data", "builtin:legal", "--out", str(tmp_path / "g.safetensors")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
