"""Processes of one run cannot go apart: every callback decision is the main process's (a
2-process gloo group with a planted callback that decides otherwise on process 1), each process
seeds its own dropout, and the run folder is ready before any process goes on."""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

import pytest
import torch

from retain.train.callbacks import Callback, Decision

STEPS = 5


class Planted(Callback):
    """Keeps the weights at step 1; then decides per process: step 2 restore + lr x0.5 on the
    main process, lr x0.25 on the other; step 3 stop on the other only; step 4 stop on the main.
    ``case`` "lacking": the other process has nothing kept when the main process restores;
    "apart": what it kept differs from the main process's copy."""

    def __init__(self, rank: int, case: str = "follow"):
        self.rank, self.case, self.kept, self.lrs, self.seed = rank, case, None, [], None

    def on_train_begin(self, state):
        self.seed = torch.initial_seed()

    def on_step_end(self, state):
        self.lrs.append(state.optimizer.param_groups[0]["lr"])
        if state.step == 1:
            self.kept = {n: p.detach().clone() for n, p in state.model.named_parameters()}
            if self.case == "apart" and self.rank == 1:
                next(iter(self.kept.values())).add_(1e-3)
        if state.step == 2:
            if self.rank == 0:
                return Decision(restore=self.kept, lr_scale=0.5)
            if self.case == "lacking":
                return Decision()
            return Decision(restore=self.kept, lr_scale=0.25)
        if state.step == 3 and self.rank == 1:
            return Decision(stop=True)
        if state.step == 4 and self.rank == 0:
            return Decision(stop=True)
        return None


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from transformers import LlamaConfig, LlamaForCausalLM

    from retain.builtin.build import build_tokenizer
    from retain.data import load_train_data
    from retain.train import TrainConfig, train
    from retain.train.loop import make_accelerator

    tok = build_tokenizer()
    data = load_train_data("builtin:legal", tok, seq_len=32, n=8, seed=0)
    acc = make_accelerator(torch.device("cpu"))
    report = {}
    for case in ("follow", "lacking", "apart"):
        torch.manual_seed(0)  # the same initial weights on both processes
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, bos_token_id=1, eos_token_id=2, pad_token_id=0))
        cb = Planted(rank, case)
        cfg = TrainConfig(lr=1e-2, steps=STEPS, batch_size=2, log_every=1, seed=7,
                          schedule="constant")
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                res = train(model, data, pad_id=0, config=cfg, callbacks=[cb], accelerator=acc,
                            progress=False)
            report[case] = {"steps": res.steps, "lrs": cb.lrs, "seed": cb.seed,
                            "weights": [float(p.double().sum()) for p in model.parameters()],
                            "said": [str(w.message) for w in said if "differs" in str(w.message)]}
        except RuntimeError as e:
            report[case] = {"error": str(e)}
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_every_process_carries_out_the_main_process_decision(reports):
    a, b = (r["follow"] for r in reports)
    assert a["steps"] == b["steps"] == 4  # process 1's stop at step 3 is not followed
    assert a["lrs"] == b["lrs"] and a["lrs"][2] == pytest.approx(a["lrs"][0] * 0.5)
    assert a["weights"] == b["weights"]  # the same lr: bit-identical weights
    assert [w.split(":")[0] for w in a["said"]] == ["step 2", "step 3", "step 4"]  # not silent
    assert b["said"] == []  # said once, by the main process


def test_a_process_with_nothing_kept_raises_everywhere(reports):
    for r in reports:
        assert "no kept state to restore" in r["lacking"]["error"]


def test_processes_that_kept_different_weights_raise_on_restore(reports):
    for r in reports:
        assert "restored different kept weights" in r["apart"]["error"]


def test_each_process_seeds_its_own_dropout(reports):
    assert [r["follow"]["seed"] for r in reports] == [7, 8]  # the main process: the run's seed


def test_run_folder_is_ready_before_any_process_goes_on(tmp_path):
    """Every process waits before the main process touches the folder (their preflights have
    seen it as it was) and again once config.yaml is written."""
    from retain.config import load_config
    from retain.train.callbacks.recorder import Recorder

    out = tmp_path / "run"
    seen = []
    config = load_config(None, [f"out={out}"])
    barrier = lambda: seen.append((out / "config.yaml").exists())  # noqa: E731
    with Recorder(out).recording(config.model_dump(mode="json"), 0, mode="new", barrier=barrier):
        assert seen == [False, True]
