"""Probes from EleutherAI's lm-evaluation-harness (Gao et al., "A framework for few-shot language
model evaluation", https://doi.org/10.5281/zenodo.5371628; Biderman et al. 2024, "Lessons from
the Trenches on Reproducible Evaluation of Language Models", arXiv 2405.14782): any lm-eval task,
scored by lm-eval's own task definition (prompts, few-shot, filters, metrics) on the model in
memory, its result turned into a retain ``ProbeResult``.

    probes = load_probes(["lm-eval:arc_easy", "lm-eval:my_tasks/qa.yaml"], n=200)

``pip install 'retain[lm-eval]'``. TASK is a registered task name (a group or tag gives one probe
per task in it) or the path of a task YAML file (its folder is searched for the tasks it
includes). Offline only: datasets are read from the local Hugging Face cache or from local files;
a task whose dataset is a set of local files (``dataset_path: json``, csv, parquet, ...) builds
its datasets cache in a temporary directory rather than under ``~/.cache/huggingface``.

Per-item outcomes come from lm-eval's per-document log (``log_samples``): ``outcomes`` asks
lm-eval's evaluator for exactly the documents at ``indices`` (its ``samples`` argument), so the
processes of a data-parallel run share a task's documents like any other probe's items. The
value is the task's aggregation (for ``mean`` metrics, the mean) of the main metric over the
documents; the interval is Wilson's for 0/1 per-document scores (accuracy, exact match),
otherwise mean +- 1.96 standard errors (lm-eval's closed form for mean metrics, a seeded
bootstrap of the aggregation for the others). Every document's score is kept in the result's
``items``, so before/after results of a mean metric pair (McNemar for 0/1 scores, documents
lost/gained; a paired bootstrap for other means).

Caveats: with few-shot examples, lm-eval draws them from one seeded stream in document order,
so a document's examples can depend on which documents share the call (a sharded run can then
differ slightly from one process; zero-shot tasks do not). Tasks that lm-eval marks as unsafe
(they execute generated code in-process) are refused: use the ``humaneval`` probe, which runs
code in a sandbox. Group-level aggregates (e.g. MMLU's weighted mean) are not formed.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from retain.errors import UserError
from retain.probes import engine
from retain.probes.base import Outcome, ProbeResult, ScoredFromOutcomes, check_outcome_count
from retain.probes.stats import Z_95, wilson_interval

SPEC_PREFIX = "lm-eval:"
N_EXAMPLES = 5
BOOTSTRAP_RESAMPLES = 1000  # for metrics whose aggregation is not a mean
# datasets builders that read local files: their cache can live in a temporary directory
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "sql"}
KIND_OF_OUTPUT = {"multiple_choice": "choice", "loglikelihood": "choice",
                  "generate_until": "generation", "loglikelihood_rolling": "perplexity"}

# lm-eval's simple_evaluate defaults (lm_eval.defaults), used the same way here so that a probe
# scores what simple_evaluate would.
_RANDOM_SEED, _OTHER_SEED = 0, 1234


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.evaluator import evaluate  # noqa: F401
    except ImportError as e:
        raise UserError("lm-eval probes need the lm-eval package: pip install 'retain[lm-eval]'"
                        ) from e


def _plain(value: Any) -> Any:
    """A per-document metric value as plain Python (numpy scalars become floats/ints), so that
    outcomes pickle and compare like every other probe's."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _clip(text: Any, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def _name_part(text: str) -> str:
    """A task or metric name as a retain key part (``probe.metric``: letters, digits, _ and -)."""
    return re.sub(r"[^\w\-]", "_", text)


@contextlib.contextmanager
def _offline_datasets(cache_dir: str | None) -> Iterator[None]:
    """Hugging Face datasets offline for the duration, with its cache in ``cache_dir`` (None:
    the user's cache). The settings are module globals read when a dataset loads (their
    environment variables are read once, at import), so they are set and restored here."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconstants

    saved = (dconfig.HF_DATASETS_CACHE, dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE)
    try:
        if cache_dir is not None:
            dconfig.HF_DATASETS_CACHE = Path(cache_dir)
        dconfig.HF_HUB_OFFLINE = True
        hconstants.HF_HUB_OFFLINE = True
        yield
    finally:
        dconfig.HF_DATASETS_CACHE, dconfig.HF_HUB_OFFLINE, hconstants.HF_HUB_OFFLINE = saved


@contextlib.contextmanager
def _seeded_like_simple_evaluate() -> Iterator[None]:
    """Seed python, numpy and torch as ``lm_eval.simple_evaluate`` does, and give the caller's
    generators their states back afterwards (a probe during training must not reset them)."""
    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        random.seed(_RANDOM_SEED)
        np.random.seed(_OTHER_SEED)
        torch.manual_seed(_OTHER_SEED)
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])


_MANAGERS: dict[tuple[str, ...], Any] = {}


def _task_manager(include: tuple[str, ...]):
    """lm-eval's task index: the built-in tasks (indexing them takes seconds: built once per
    process) when ``include`` is empty, else only the folders in ``include``."""
    from lm_eval.tasks import TaskManager

    if include not in _MANAGERS:
        _MANAGERS[include] = (TaskManager(include_path=list(include), include_defaults=False)
                              if include else TaskManager())
    return _MANAGERS[include]


def _load_tasks(task: str) -> tuple[dict[str, Any], tempfile.TemporaryDirectory | None]:
    """``{task_name: lm-eval Task}`` for a task name or YAML path, offline, and the temporary
    datasets cache it lives on (None when the data came from the user's cache).

    A local-files task is built with its cache in a temporary directory; a hub dataset is not in
    that empty cache, so it is then built again from the user's cache (still offline)."""
    path = Path(task).expanduser()
    is_file = path.suffix in (".yaml", ".yml") or path.is_file()
    if is_file and not path.is_file():
        raise UserError(f"lm-eval task file {task!r} does not exist")
    spec = str(path.resolve()) if is_file else task
    manager = _task_manager((str(path.resolve().parent),) if is_file else ())
    if not is_file and spec not in manager.all_tasks:
        raise UserError(f"lm-eval has no task, group or tag named {task!r} (or pass the path "
                        f"of a task YAML file)")
    tmp = tempfile.TemporaryDirectory(prefix="retain-lm-eval-datasets-",
                                      ignore_cleanup_errors=True)
    try:
        with _offline_datasets(tmp.name):
            loaded = manager.load([spec])["tasks"]
    except Exception as first:  # noqa: BLE001  (datasets raises many kinds here)
        tmp.cleanup()
        tmp = None
        try:
            with _offline_datasets(None):
                loaded = manager.load([spec])["tasks"]
        except Exception as e:  # noqa: BLE001
            raise UserError(f"lm-eval task {task!r} cannot be loaded offline: "
                            f"{type(e).__name__}: {e} (first try, on local files: "
                            f"{type(first).__name__}: {first})") from e
    if tmp is not None and not any(
            str(getattr(t, "DATASET_PATH", "")) in LOCAL_BUILDERS for t in loaded.values()):
        tmp.cleanup()  # nothing of it is in use
        tmp = None
    return loaded, tmp


class LMEvalProbe(ScoredFromOutcomes):
    """One lm-eval task over the documents ``doc_ids`` (indices into its evaluation split).

    ``metric``/``filter_name``: which of the task's metrics and filters is the result (default:
    the first of each, e.g. ``acc`` and ``none``). The probe is named ``lm-eval-<task>`` and its
    metric is the lm-eval metric, with the filter appended when it is not ``none``
    (``exact_match_strict-match``)."""

    def __init__(self, task, doc_ids: Sequence[int], *, metric: str | None = None,
                 filter_name: str | None = None, seed: int = 0, cache=None):
        self.task = task
        self.task_name: str = task.task_name
        if getattr(task, "UNSAFE_CODE", False):
            raise UserError(f"lm-eval task {self.task_name!r} runs generated code in-process "
                            "(lm-eval marks it unsafe); use the humaneval probe, which runs code "
                            "in a sandbox")
        self.doc_ids = list(doc_ids)
        aggregations = task.aggregation()
        self.lm_metric = metric or next(iter(aggregations))
        if self.lm_metric not in aggregations:
            raise UserError(f"lm-eval task {self.task_name!r} has no metric {self.lm_metric!r}; "
                            f"it has {', '.join(aggregations)}")
        filters = [f.name for f in getattr(task, "_filters", [])] or ["none"]
        self.filter_name = filter_name or filters[0]
        self.name = "lm-eval-" + _name_part(self.task_name)
        suffix = "" if self.filter_name == "none" else "_" + self.filter_name
        self.metric = _name_part(self.lm_metric + suffix)
        self.higher_is_better = bool(task.higher_is_better().get(self.lm_metric, True))
        self.capability = self.task_name
        self.kind = KIND_OF_OUTPUT.get(getattr(task, "OUTPUT_TYPE", None), "generation")
        self.seed = seed
        self._cache = cache  # the temporary datasets cache the task reads from, kept alive
        # As simple_evaluate does: a task without a few-shot setting runs zero-shot.
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def outcomes(self, model, tokenizer, indices: Sequence[int], *, batch_size: int = 32,
                 base_model=None) -> list[Outcome]:
        """``{"doc_id", "value", "target", "answer"}`` per document at ``indices``: ``value`` is
        lm-eval's per-document score of the main metric (e.g. 0.0/1.0 for ``acc``)."""
        docs = [self.doc_ids[i] for i in indices]
        if not docs:
            return []
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM

        # A fresh few-shot stream per call, seeded as simple_evaluate seeds it.
        self.task.set_fewshot_seed(seed=_OTHER_SEED)
        with engine.inference_mode(model), _seeded_like_simple_evaluate():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            # simple_evaluate's defaults, bar stderr: retain computes its own interval.
            out = evaluate(lm=lm, task_dict={"tasks": {self.task_name: self.task}},
                           samples={self.task_name: docs}, bootstrap_iters=0,
                           log_samples=True, fewshot_as_multiturn=True)
        by_doc = {s["doc_id"]: s for s in out["samples"][self.task_name]
                  if s.get("filter", "none") == self.filter_name}
        missing = [d for d in docs if d not in by_doc]
        if missing:
            raise RuntimeError(f"lm-eval returned no {self.filter_name!r} record for documents "
                               f"{missing[:10]} of {self.task_name}")
        return [self._outcome(by_doc[d]) for d in docs]

    def _outcome(self, sample: dict) -> Outcome:
        target, answer = sample.get("target"), sample.get("filtered_resps")
        if self.task.OUTPUT_TYPE == "multiple_choice":
            # show the choices, not their indices and log-likelihoods
            with contextlib.suppress(Exception):
                choices = self.task.doc_to_choice(sample["doc"])
                scores = [r[0] if isinstance(r, (list, tuple)) else r for r in answer]
                answer = choices[max(range(len(scores)), key=scores.__getitem__)]
                target = choices[target] if isinstance(target, int) else target
        elif isinstance(answer, list) and len(answer) == 1:
            answer = answer[0]
        return {"doc_id": int(sample["doc_id"]), "value": _plain(sample[self.lm_metric]),
                "target": _clip(target), "answer": _clip(answer)}

    def aggregate(self, outcomes: list[Outcome]) -> ProbeResult:
        check_outcome_count(self, outcomes)
        values = [o["value"] for o in outcomes]
        n = len(values)
        agg = self.task.aggregation()[self.lm_metric]
        value = float(agg(values)) if n else 0.0
        lo, hi = self._interval(agg, values, value)
        items = [self._item(o, self._is_mean(agg, values)) for o in outcomes]
        examples = [{k: it[k] for k in ("prompt", "expected", "answer", "ok", "value")}
                    for it in items[:N_EXAMPLES]]
        return ProbeResult(probe=self.name, metric=self.metric, value=value, n=n, ci_low=lo,
                           ci_high=hi, higher_is_better=self.higher_is_better,
                           capability=self.capability, kind=self.kind, examples=examples,
                           items=items)

    @staticmethod
    def _is_mean(agg, values: list) -> bool:
        """Whether the metric is the plain mean of numeric per-document scores (accuracy, exact
        match, ...): only then do per-document changes add up to the change of the value."""
        from lm_eval.api import metrics

        return agg is metrics.mean and all(isinstance(v, (bool, int, float)) for v in values)

    def _item(self, o: Outcome, is_mean: bool) -> dict[str, Any]:
        """One document for paired before/after tests (``retain.metrics.paired``): "ok" (right
        or not) for a mean of 0/1 scores (McNemar), "sum"/"count" for any mean of numbers (a
        paired bootstrap of the mean's change when some score is not 0/1), neither otherwise
        (e.g. F1 or perplexity over the whole corpus: no per-document test). "prompt" names the
        document: it pairs items and heads the lost/gained lists."""
        v = o["value"]
        numeric = isinstance(v, (bool, int, float))
        item: dict[str, Any] = {"prompt": f"{self.task_name} doc {o['doc_id']}",
                                "doc_id": o["doc_id"], "expected": o["target"],
                                "answer": o["answer"], "value": v if numeric else None,
                                "ok": None}
        if is_mean:
            item.update(sum=float(v), count=1)
            if v in (0, 1):
                item["ok"] = bool(v) == self.higher_is_better
        return item

    def _interval(self, agg, values: list, value: float) -> tuple[float, float]:
        from lm_eval.api import metrics

        n = len(values)
        numeric = all(isinstance(v, (bool, int, float)) for v in values)
        if agg is metrics.mean and numeric and all(v in (0, 1) for v in values):
            return wilson_interval(int(sum(values)), n)
        if n < 2:
            return math.nan, math.nan
        if agg in (metrics.mean, metrics.acc_all):
            se = metrics.stderr_for_metric(agg, bootstrap_iters=1)(values)  # closed form
        else:
            # lm-eval's own bootstrap runs a multiprocessing pool; a seeded one here is enough
            rng = random.Random(self.seed)
            draws = [float(agg([values[rng.randrange(n)] for _ in range(n)]))
                     for _ in range(BOOTSTRAP_RESAMPLES)]
            mu = sum(draws) / len(draws)
            se = math.sqrt(sum((d - mu) ** 2 for d in draws) / (len(draws) - 1))
        return value - Z_95 * se, value + Z_95 * se


def load_lm_eval_probes(task: str, n: int | None = None, seed: int = 0, **kwargs
                        ) -> list[LMEvalProbe]:
    """One probe per lm-eval task named by ``task`` (a task, group or tag name, or a YAML path;
    ``"lm-eval:"`` in front is accepted), each over all its evaluation documents or a seeded
    sample of ``n`` in document order. ``kwargs`` go to ``LMEvalProbe``."""
    _require_lm_eval()
    if task.startswith(SPEC_PREFIX):
        task = task[len(SPEC_PREFIX):]
    if not task:
        raise UserError("lm-eval probe: name a task, e.g. lm-eval:arc_easy or "
                        "lm-eval:path/to/task.yaml")
    loaded, cache = _load_tasks(task)
    probes = []
    for t in loaded.values():
        total = len(t.eval_docs)
        docs = list(range(total))
        if n is not None and n < total:
            docs = sorted(random.Random(seed).sample(docs, n))
        probes.append(LMEvalProbe(t, docs, seed=seed, cache=cache, **kwargs))
    return probes


__all__ = ["LMEvalProbe", "load_lm_eval_probes", "SPEC_PREFIX"]
