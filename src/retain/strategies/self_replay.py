"""Self-replay: when the old training data is not at hand, let the base model write its own
rehearsal data. Before training, prompts from a seed pool are answered by the base model (batched
greedy or sampled generation); those pseudo-examples are replayed like ``replay`` does.

In the spirit of Huang et al. 2024, "Mitigating Catastrophic Forgetting in Large Language Models
with Self-Synthesized Rehearsal", https://arxiv.org/abs/2403.01244 (here: prompts from a pool
instead of in-context synthesized inputs, and no refinement pass by the fine-tuned model).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import Field

from retain.errors import UserError
from retain.jsonl import iter_jsonl
from retain.strategies.base import RunContext, Strategy, StrategyConfig
from retain.strategies.replay import IGNORE, mix_replay


def builtin_prompts(n: int, seed: int) -> list[str]:
    """``n`` prompts of the built-in capabilities (train split: never a probe item), drawn in the
    proportions of the built-in chat mixture; raw-text tasks (writing) have no prompt: skipped."""
    from retain.builtin import tasks
    from retain.data import retained_mixture

    mix = {t: w for t, w in retained_mixture().items()
           if tasks.items(t, "train", 1, seed)[0].prompt is not None}
    total = sum(mix.values())
    prompts = [it.prompt for t, w in mix.items()
               for it in tasks.items(t, "train", math.ceil(n * w / total), seed)]  # sum >= n
    random.Random(f"self_replay:prompts:{seed}").shuffle(prompts)
    return prompts[:n]


def read_prompts(path: str | Path, n: int, seed: int) -> list[str]:
    """Prompts of a JSONL file (``{"prompt": ...}`` a line); a seeded sample of ``n`` if longer."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"self_replay: prompt file {path} does not exist")
    prompts = []
    for where, obj in iter_jsonl(path):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"]:
            raise UserError(f"{where}: expected {{\"prompt\": a non-empty string}}")
        prompts.append(obj["prompt"])
    if not prompts:
        raise UserError(f"self_replay: {path} holds no prompts")
    if len(prompts) > n:
        keep = sorted(random.Random(seed).sample(range(len(prompts)), n))
        prompts = [prompts[i] for i in keep]
    return prompts


@torch.no_grad()
def generate_ids(model, tokenizer, prompt_ids: list[list[int]], *, max_new_tokens: int,
                 do_sample: bool, temperature: float, top_p: float, batch_size: int,
                 seed: int) -> list[list[int]]:
    """Answer token ids to token-id prompts, in order, each cut just after its first EOS (kept:
    the answer's end is part of what is rehearsed). Left padding; sampling is seeded."""
    from transformers import GenerationConfig

    from retain.probes.engine import (eos_token_ids, inference_mode, length_sorted_batches,
                                      model_device, pad_batch, pad_token_id)

    pad_id, eos_ids = pad_token_id(tokenizer), eos_token_ids(model, tokenizer)
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}
    config = GenerationConfig(do_sample=do_sample, num_beams=1, max_new_tokens=max_new_tokens,
                              pad_token_id=pad_id, eos_token_id=eos_ids or None, **sampling)
    device = model_device(model)
    answers: list[list[int]] = [[] for _ in prompt_ids]
    with inference_mode(model), torch.random.fork_rng(devices=[] if device.type == "cpu"
                                                      else [device]):
        torch.manual_seed(seed)
        for batch in length_sorted_batches([len(p) for p in prompt_ids], batch_size):
            ids, mask = pad_batch([prompt_ids[i] for i in batch], pad_id, side="left")
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config)
            for i, row in zip(batch, out[:, ids.shape[1]:].tolist()):  # (B, new) ids
                ends = [j for j, t in enumerate(row) if t in eos_ids]
                answers[i] = row[: ends[0] + 1] if ends else row
    return answers


def pseudo_examples(prompt_ids: list[list[int]], answers: list[list[int]]) -> list[dict]:
    """Training examples: prompt then answer, the loss on the answer only; empty answers dropped."""
    return [{"input_ids": p + a, "labels": [IGNORE] * len(p) + a}
            for p, a in zip(prompt_ids, answers) if a]


def made_once(make, device: torch.device):
    """``make()`` on the main process only, its (picklable) result sent to the others: under
    several processes each would otherwise generate its own pool, and generation can differ
    between them (sharding, nondeterministic kernels), which would leave the processes training
    on different data. A failure of the main process is raised on every process (no process
    waits on a broadcast that never comes). One process: just ``make()``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return make()
    box: list = [None]
    failed: Exception | None = None
    if dist.get_rank() == 0:
        try:
            box = [("ok", make())]
        except Exception as e:
            failed = e
            box = [("user" if isinstance(e, UserError) else "error", f"{type(e).__name__}: {e}")]
    # NCCL moves CUDA tensors only (the pickled bytes go through one); gloo takes the CPU.
    dist.broadcast_object_list(box, src=0,
                               device=device if dist.get_backend() == "nccl" else None)
    kind, value = box[0]
    if kind == "ok":
        return value
    if failed is not None:
        raise failed
    if kind == "user":
        raise UserError(value.removeprefix("UserError: "))
    raise RuntimeError(f"self_replay: the main process failed to generate the pool ({value})")


class SelfReplay(Strategy):
    """Replay the base model's own answers to seed prompts, generated before training."""

    name: ClassVar[str] = "self_replay"
    family: ClassVar[str] = "replay"
    citation: ClassVar[str] = ("Huang et al. 2024, Mitigating Catastrophic Forgetting in Large "
                               "Language Models with Self-Synthesized Rehearsal, "
                               "https://arxiv.org/abs/2403.01244")

    class Config(StrategyConfig):
        fraction: float = Field(0.25, gt=0, lt=1)  # share of training examples that are replay
        prompts: str | None = None  # JSONL of {"prompt": ...}; None: built-in train prompts
        num_prompts: int = Field(256, ge=1)  # size of the pseudo-example pool
        max_new_tokens: int = Field(64, ge=1)
        do_sample: bool = False  # False: greedy answers
        temperature: float = Field(1.0, gt=0)  # with do_sample
        top_p: float = Field(1.0, gt=0, le=1)  # with do_sample
        batch_size: int = Field(32, ge=1)  # generation batch

    def __init__(self, config: StrategyConfig | None = None):
        super().__init__(config)
        self.pool: list[dict] | None = None  # the pseudo-examples, made by prepare
        self._gen_info: dict = {}
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        return {"pool": self.pool, "gen_info": self._gen_info}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def prepare(self, model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module:
        """Generate the pseudo-examples from the base model (on the main process, which sends
        them to the others): a PEFT adapter listed before this strategy is disabled while
        generating, so the list order does not matter."""
        import contextlib

        from peft import PeftModel

        from retain.formats import encode, format_prompt
        from retain.probes.engine import eos_token_ids

        if self._resume is not None:  # a resumed run: the pool of its first part
            self.pool, self._gen_info = self._resume["pool"], self._resume["gen_info"]
            return model
        c = self.config

        def generate() -> tuple[list[dict], dict]:
            texts = (read_prompts(c.prompts, c.num_prompts, ctx.seed) if c.prompts
                     else builtin_prompts(c.num_prompts, ctx.seed))
            prompt_ids = [encode(ctx.tokenizer, format_prompt(ctx.tokenizer, t)) for t in texts]
            off = (model.disable_adapter() if isinstance(model, PeftModel)
                   else contextlib.nullcontext())
            with off:
                answers = generate_ids(model, ctx.tokenizer, prompt_ids,
                                       max_new_tokens=c.max_new_tokens, do_sample=c.do_sample,
                                       temperature=c.temperature, top_p=c.top_p,
                                       batch_size=c.batch_size, seed=ctx.seed)
            pool = pseudo_examples(prompt_ids, answers)
            eos = set(eos_token_ids(model, ctx.tokenizer))
            return pool, {
                "prompt_source": c.prompts or "builtin",
                "prompts": len(texts),
                "pseudo_examples": len(pool),
                "generation": (f"sampled (temperature {c.temperature}, top_p {c.top_p})"
                               if c.do_sample else "greedy"),
                "mean_answer_tokens": sum(map(len, answers)) / max(1, len(answers)),
                "answers_ended": (sum(1 for a in answers if a and a[-1] in eos)
                                  / max(1, len(answers))),
            }
        self.pool, self._gen_info = made_once(generate, ctx.device)
        return model

    def train_data(self, data: list[dict], ctx: RunContext) -> list[dict]:
        if self.pool is None:
            raise RuntimeError("self_replay: train_data ran before prepare generated the pool")
        if not self.pool:
            raise UserError("self_replay: the base model answered every seed prompt with nothing")
        mixed, counts = mix_replay(data, self.pool, self.config.fraction, ctx.seed)
        ctx.info[self.name] = {"source": "self-generated", **self._gen_info, **counts}
        return mixed
