"""`retain diff`: a fine-tune of the built-in model against its base (paired table, lost items,
drift, a folder `retain report` renders), a LoRA adapter folder on its base, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from retain.diff import run_diff
from retain.errors import UserError
from retain.models import load_model
from retain.report.html import build_report
from retain.run import run
from retain.config import RunConfig


@pytest.fixture(scope="module")
def fine_tune(tmp_path_factory):
    """tiny after 30 steps of full fine-tuning on legal text at lr 1e-3 (the cliff begins)."""
    out = tmp_path_factory.mktemp("ft") / "run"
    run(RunConfig(model="tiny", out=str(out), steps=30, batch_size=8, seq_len=96, lr=1e-3,
                  warmup_steps=0, probes=["math"], probe_n=4, save_model=True, progress=False))
    return out / "model"


def test_diff_of_a_fine_tune(fine_tune, tmp_path):
    out = tmp_path / "diff"
    res = run_diff("tiny", str(fine_tune), probes=["safety", "instructions", "writing"], n=24,
                   out=out, progress=False)
    rows = {c["key"]: c for c in res["comparison"]}
    refusal = rows["safety.refusal_rate"]
    assert refusal["paired"]["test"] == "mcnemar_exact" and refusal["paired"]["n"] == 24
    assert rows["writing.ce_nats_per_token"]["paired"]["test"] == "paired_bootstrap"
    assert res["drift"]["overall"]["relative_l2"] > 0
    lost = [c for c in res["comparison"] if c["paired"] and c["paired"].get("lost")]
    assert lost, "30 steps at lr 1e-3 on legal text lose some chat-overlay items"
    item = lost[0]["paired"]["lost_items"][0]
    assert item["prompt"] and item["before"] != item["after"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["kind"] == "diff" and on_disk["comparison"] == json.loads(
        json.dumps(res["comparison"]))
    page = build_report(out).read_text()
    assert "Items lost and gained" in page and "paired test" in page


def test_diff_of_a_lora_adapter_on_its_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, tok = load_model("tiny", device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    res = run_diff("tiny", str(tmp_path / "adapter"), probes=["math"], n=8,
                   out=tmp_path / "diff", progress=False)
    assert res["config"]["adapter"] is True
    per_layer = res["drift"]["per_layer"]
    assert res["drift"]["overall"]["relative_l2"] > 0  # the adapter's effective delta B·A·scale
    moved = {k for k, v in per_layer.items() if v["l2"] > 0}
    assert moved and all(k.startswith("model.layers.") for k in moved)


def test_an_adapter_of_another_base_is_one_line(tmp_path, model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(model_dir)  # 32 wide, not tiny's shape
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "adapter")
    with pytest.raises(UserError, match="adapter"):
        run_diff("tiny", str(tmp_path / "adapter"), probes=["math"], n=2, out=tmp_path / "d",
                 progress=False)
    assert not (tmp_path / "d").exists()
    r = subprocess.run([sys.executable, "-m", "retain.cli", "diff", "tiny", str(model_dir),
                        "--probes", "math", "--n", "2", "--out", str(tmp_path / "d2")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "is missing in" in r.stderr, r.stderr  # checked from headers
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "d2").exists()
