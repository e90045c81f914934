"""``retain attribute`` against a library's influence function on the planted data: kronfluence's
EK-FAC (Grosse et al. 2023, the influence function made for LLMs) and its identity factors (the
plain gradient dot product), precision among the k records ranked most harmful (part 14).

The same records, tokens and tracked weights as ``retain attribute`` (the linear layers but the
head, the built-in model at its base): kronfluence's task sums the loss over a record's label
tokens (its convention), fits its factors on the data itself (labels sampled from the model for
the Fisher) and scores every (reference outcome, record) pair; a record's harm is minus its
summed score over the capability's reference outcomes (a positive score: training on the record
lowers the outcome's loss).

kronfluence is not a dependency of retain: install it apart (its wheel pins torchvision, which
nothing here needs), e.g. ``pip install --target /tmp/kf kronfluence einops einconv opt-einsum
--no-deps``, then

    PYTHONPATH=/tmp/kf OMP_NUM_THREADS=2 python benchmarks/attribution_libraries.py \\
        [--out benchmarks/attribution_libraries.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attribution_planted import planted_data

CASES = (("comply", "safety.refusal_rate"), ("english", "multilingual.accuracy"))


def kronfluence_harm(model, tok, records: list[dict], refs: list[dict], strategy: str,
                     tmp: Path) -> list[float]:
    """Per record, minus its summed kronfluence score over the reference outcomes."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from kronfluence.utils.dataset import DataLoaderKwargs

    from retain.formats import pad_token_id
    from retain.train.loop import collate

    head = model.get_output_embeddings()
    tracked = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and m is not head]

    def loss(batch, model, sample: bool = False) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits.float()
        logits = logits[..., :-1, :].reshape(-1, logits.size(-1))
        labels = batch["labels"][..., 1:].reshape(-1)
        if sample:  # the true Fisher: labels drawn from the model where a label is learnt
            with torch.no_grad():
                drawn = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            labels = torch.where(labels == -100, labels, drawn)
        return F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")

    class LM(Task):
        def compute_train_loss(self, batch, model, sample=False):
            return loss(batch, model, sample)

        def compute_measurement(self, batch, model):
            return loss(batch, model)

        def get_influence_tracked_modules(self):
            return tracked

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    class Rows(torch.utils.data.Dataset):
        def __init__(self, rows):
            self.rows = rows

        def __len__(self):
            return len(self.rows)

        def __getitem__(self, i):
            return self.rows[i]

    task = LM()
    model = prepare_model(model, task)
    pad = pad_token_id(tok)
    kw = DataLoaderKwargs(collate_fn=lambda ex: collate(ex, pad))
    an = Analyzer(analysis_name=strategy, model=model, task=task, cpu=True, output_dir=str(tmp))
    an.set_dataloader_kwargs(kw)
    an.fit_all_factors(factors_name=strategy, dataset=Rows(records), per_device_batch_size=8,
                       factor_args=FactorArguments(strategy=strategy), overwrite_output_dir=True)
    an.compute_pairwise_scores(scores_name=strategy, factors_name=strategy,
                               query_dataset=Rows(refs), train_dataset=Rows(records),
                               per_device_query_batch_size=8, per_device_train_batch_size=8,
                               score_args=ScoreArguments(), overwrite_output_dir=True)
    scores = an.load_pairwise_scores(scores_name=strategy)["all_modules"]  # (queries, records)
    return (-scores.sum(0)).tolist()


def measure(kind: str, key: str) -> dict:
    from retain.attribute import attribute, records_of
    from retain.attribute.grads import reference_examples
    from retain.formats import encode_record
    from retain.models import load_model, load_tokenizer
    from retain.probes import load_probes

    out = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = tmp / f"{kind}.jsonl"
        planted = planted_data(data, kind=kind)
        k = len(planted)
        probe_name = key.split(".")[0]
        t0 = time.perf_counter()
        rows = attribute("tiny", str(data), probes=[probe_name], probe_n=60, seq_len=128,
                         out=tmp / "retain", progress=False)
        out["retain"] = {"precision": len({r["index"] for r in sorted(
            rows, key=lambda r: -r["harm"][key])[:k]} & planted) / k,
            "wall_s": round(time.perf_counter() - t0, 1)}
        tok = load_tokenizer("tiny")
        records = [encode_record(tok, s, p, 128) for s, p, _ in records_of(str(data))]
        probe = next(p for p in load_probes([probe_name], n=60, seed=0)
                     if f"{p.name}.{p.metric}" == key)
        refs = reference_examples(probe, tok, 128)
        for strategy in ("identity", "ekfac"):
            model, _ = load_model("tiny", tokenizer=tok)
            model.train(False)
            t0 = time.perf_counter()
            harm = kronfluence_harm(model, tok, records, refs, strategy, tmp / strategy)
            top = set(sorted(range(len(harm)), key=lambda i: -harm[i])[:k])
            out[f"kronfluence_{strategy}"] = {"precision": len(top & planted) / k,
                                              "wall_s": round(time.perf_counter() - t0, 1)}
            print(kind, strategy, out[f"kronfluence_{strategy}"], flush=True)
    return {"capability": key, "records": len(records), "planted": k, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).with_name("attribution_libraries.json"))
    a = ap.parse_args()
    import kronfluence  # noqa: F401  (a clear ImportError before any work)

    results = {kind: measure(kind, key) for kind, key in CASES}
    a.out.write_text(json.dumps({"cases": results, "measured": time.strftime("%Y-%m-%d")},
                                indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
