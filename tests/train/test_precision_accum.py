"""Loop-level guarantees of part 5: fp32 master weights under bf16 autocast move every weight at a
small rate; gradient accumulation does not change the weights; a non-finite loss stops the run
before the bad update; a checkpoint continues a run exactly."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from retain.formats import IGNORE
from retain.strategies.base import Strategy
from retain.train import Checkpointer, TrainConfig, TrainingFailed, train
from retain.train import checkpoint as ckpt
from retain.train.loop import loss_token_counts
from retain.train.precision import resolve_mixed_precision, upcast_trainable


def model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=64,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))


def data(n: int = 24, seed: int = 0) -> list[dict]:
    """Examples of different lengths, some with a loss on part of the tokens only, so that the
    micro-batches of a step hold different numbers of loss tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(6, 30, (1,), generator=g))
        ids = torch.randint(3, 64, (length,), generator=g).tolist()
        labels = list(ids) if i % 3 else [IGNORE] * (length // 2) + ids[length // 2:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in m.named_parameters()}


def moved_share(before: dict, m: torch.nn.Module) -> float:
    after = params(m)
    moved = sum(int((after[k] != before[k]).sum()) for k in before)
    return moved / sum(v.numel() for v in before.values())


def test_bf16_mixed_precision_moves_every_weight_at_lr_1e_5():
    cfg = dict(lr=1e-5, steps=3, batch_size=4, warmup_steps=0, schedule="constant")
    pure = model().to(torch.bfloat16)  # weights in bf16, AdamW updating them in place
    start = params(pure)
    train(pure, data(), pad_id=0, progress=False, config=TrainConfig(**cfg, mixed_precision="no"))
    mixed = model().to(torch.bfloat16)
    assert upcast_trainable(mixed) > 0 and all(p.dtype == torch.float32 for p in mixed.parameters())
    train(mixed, data(), pad_id=0, progress=False, config=TrainConfig(**cfg, mixed_precision="bf16"))
    pure_share, mixed_share = moved_share(start, pure), moved_share(start, mixed)
    assert mixed_share > 0.99, mixed_share  # fp32 master weights: essentially every weight moved
    assert pure_share < 0.5, pure_share  # pure bf16: most updates rounded away


def test_mixed_precision_modes():
    cpu = torch.device("cpu")
    assert resolve_mixed_precision("auto", cpu) == "no"
    assert resolve_mixed_precision("bf16", cpu) == "bf16"
    from retain.errors import UserError
    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        resolve_mixed_precision("fp16", cpu)


@pytest.mark.parametrize("batch,accum", [(4, 2), (2, 4), (1, 8)])
def test_accumulation_gives_the_weights_of_one_big_batch(batch, accum):
    examples = data()
    counts = loss_token_counts(examples)
    assert len(set(counts)) > 3  # micro-batches really differ in loss tokens
    cfg = dict(lr=1e-3, steps=5, warmup_steps=0)
    big = model()
    res_big = train(big, examples, pad_id=0, progress=False,
                    config=TrainConfig(**cfg, batch_size=8, grad_accum=1, log_every=5))
    split = model()
    res_split = train(split, examples, pad_id=0, progress=False,
                      config=TrainConfig(**cfg, batch_size=batch, grad_accum=accum, log_every=5))
    a, b = params(big), params(split)
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst  # float32 summation order; a mean of micro-batch means: 6e-3
    assert res_big.loss_tokens == res_split.loss_tokens
    assert res_split.final_loss == pytest.approx(res_big.final_loss, rel=1e-5)


class InfAt(Strategy):
    """A penalty that turns infinite at one step (counted in calls to ``penalty``)."""

    name, family = "inf_at", "regularization"

    def __init__(self, step: int):
        super().__init__()
        self.at, self.calls = step, 0

    def penalty(self, model, batch):
        self.calls += 1
        return torch.tensor(float("inf")) if self.calls == self.at else None


def test_non_finite_loss_stops_before_the_bad_update():
    m, examples = model(), data()
    snapshots = []

    class Snap(Checkpointer):  # the weights after every step
        def on_step_end(self, state):
            snapshots.append(params(state.model))

    with pytest.raises(TrainingFailed, match="step 3: non-finite loss") as err:
        train(m, examples, pad_id=0, progress=False, strategies=[InfAt(3)],
              callbacks=[Snap(".", 0, 1)], config=TrainConfig(lr=1e-3, steps=6, batch_size=4))
    assert err.value.step == 3 and len(snapshots) == 2
    now = params(m)
    assert all(torch.isfinite(v).all() for v in now.values())
    assert all(torch.equal(now[k], snapshots[-1][k]) for k in now)  # still step 2's weights


def test_checkpoint_resume_continues_exactly(tmp_path):
    examples = data()
    cfg = TrainConfig(lr=1e-3, steps=7, batch_size=4, warmup_steps=2, log_every=2)
    whole = model()
    res_whole = train(whole, examples, pad_id=0, progress=False, config=cfg,
                      callbacks=[Checkpointer(tmp_path, every=3, keep=5)])
    found = ckpt.checkpoints_in(tmp_path)
    assert [p.name for p in found] == ["step-00000003", "step-00000006"]
    ck = ckpt.load(found[0])
    assert ck.step == 3 and set(ck.trainable) == {n for n, _ in whole.named_parameters()}
    again = model()
    for name, p in again.named_parameters():
        p.data.copy_(ck.trainable[name])
    res_again = train(again, examples, pad_id=0, progress=False, config=cfg, resume=ck)
    a, b = params(whole), params(again)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU
    assert res_again.resumed_from_step == 3
    assert [h["loss"] for h in res_again.history] == [h["loss"] for h in res_whole.history]


def test_checkpoints_are_pruned_and_tree_round_trips(tmp_path):
    train(model(), data(), pad_id=0, progress=False,
          config=TrainConfig(lr=1e-3, steps=6, batch_size=2),
          callbacks=[Checkpointer(tmp_path, every=1, keep=2)])
    assert [p.name for p in ckpt.checkpoints_in(tmp_path)] == ["step-00000005", "step-00000006"]
    assert not list((tmp_path / ckpt.DIR).glob(".*tmp"))
    tree = {"a": {"w": torch.arange(3.0), "n": 2}, "b": [torch.ones(2), "x", None]}
    tensors, js = ckpt.split_tree(tree)
    back = ckpt.join_tree(tensors, js)
    assert torch.equal(back["a"]["w"], tree["a"]["w"]) and back["a"]["n"] == 2
    assert torch.equal(back["b"][0], tree["b"][0]) and back["b"][1:] == ["x", None]
