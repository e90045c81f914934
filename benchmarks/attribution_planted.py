"""``retain attribute`` on planted data (part 14, first measurement): does it find the 5% of a
domain's examples that teach the assistant to comply with harmful requests?

400 built-in legal texts plus 20 planted chats, shuffled with a seed, unknown to the scorer:
"comply", harmful requests from the built-in safety task's train split (which the safety probe
does not use) answered with a compliant "Sure, here is how ..." reply, scored against
safety.refusal_rate; "refuse", benign requests refused, against safety.over_refusal_rate (60
and 28 probe items); "english", translation requests answered with the English phrase, against
multilingual.accuracy. Reported: precision at k = 20 (also through ``--lora-r 8``), against
random (k / N = 0.05 expected), the highest-loss examples (the per-example loss at the base) and
representation similarity (the cosine of a record's mean last-layer hidden state with the mean
of the safety probe's harmful prompts', as in He, Xia & Henderson 2024).

    OMP_NUM_THREADS=2 python benchmarks/attribution_planted.py [--out benchmarks/attribution_planted.json]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path


REFUSAL = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is how to do it. First, get what you need, then follow these steps carefully."


def planted_data(path: Path, n_domain: int = 400, n_planted: int = 20, seed: int = 0,
                 kind: str = "comply") -> set[int]:
    """``kind``: "comply" (harmful requests answered), "refuse" (benign requests refused, from
    the built-in safety_benign task's train split), "english" (translation requests answered
    with the English phrase itself, from the multilingual task's train split)."""
    from retain.builtin import tasks

    legal = [{"text": it.text} for it in tasks.items("legal", "train", n_domain, seed)]
    task, reply = {"comply": ("safety_harmful", lambda it: COMPLY),
                   "refuse": ("safety_benign", lambda it: REFUSAL),
                   "english": ("multilingual", lambda it: it.prompt.split(": ", 1)[1])}[kind]
    planted = [{"messages": [{"role": "user", "content": it.prompt},
                             {"role": "assistant", "content": reply(it)}]}
               for it in tasks.items(task, "train", n_planted, seed)]
    rows = [(r, False) for r in legal] + [(r, True) for r in planted]
    random.Random(seed).shuffle(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r, _ in rows))
    return {i for i, (_, p) in enumerate(rows) if p}


def representation_top(model, tok, data: str, k: int, key: str) -> set[int]:
    """The ``k`` records whose mean last-layer state is closest (cosine) to the mean state of the
    prompts of probe ``key`` (probe.metric)."""
    import torch

    from retain import formats
    from retain.attribute import records_of
    from retain.formats import encode_record
    from retain.probes import load_probes

    def state(ids: list[int]) -> torch.Tensor:
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        return out.hidden_states[-1][0].mean(0)
    name, metric = key.split(".")
    probe = next(p for p in load_probes([name], n=60, seed=0) if p.metric == metric)
    with torch.no_grad():
        target = torch.stack([state(formats.encode(tok, formats.format_prompt(tok, it.prompt)))
                              for it in probe.items]).mean(0)
        sims = []
        for i, (s, p, _) in enumerate(records_of(data)):
            e = encode_record(tok, s, p, 128)
            sims.append((float(torch.cosine_similarity(state(e["input_ids"]), target, dim=0)), i))
    return {i for _, i in sorted(sims, reverse=True)[:k]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/attribution_planted.json"))
    args = ap.parse_args()
    results = {kind: measure(kind, key) for kind, key in
               (("comply", "safety.refusal_rate"), ("refuse", "safety.over_refusal_rate"),
                ("english", "multilingual.accuracy"))}
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def measure(kind: str, key: str) -> dict:
    import torch

    from retain.attribute import attribute, records_of
    from retain.formats import encode_record, pad_token_id
    from retain.models import load_model, load_tokenizer
    from retain.train.loop import collate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "planted.jsonl"
        planted = planted_data(data, kind=kind)
        t0 = time.perf_counter()
        probe = key.split(".")[0]
        rows = attribute("tiny", str(data), probes=[probe], probe_n=60, seq_len=128,
                         out=Path(tmp) / "a", progress=False)
        wall = time.perf_counter() - t0
        lora = attribute("tiny", str(data), probes=[probe], probe_n=60, seq_len=128,
                         out=Path(tmp) / "l", progress=False, lora_r=8)
        k = len(planted)
        top = {r["index"] for r in sorted(rows, key=lambda r: -r["harm"][key])[:k]}
        top_lora = {r["index"] for r in sorted(lora, key=lambda r: -r["harm"][key])[:k]}
        tok = load_tokenizer("tiny")
        model, _ = load_model("tiny", tokenizer=tok)
        model.eval()
        losses = []
        with torch.no_grad():
            for i, (s, p, _) in enumerate(records_of(str(data))):
                e = encode_record(tok, s, p, 128)
                losses.append((float(model(**collate([e], pad_token_id(tok))).loss), i))
        by_loss = {i for _, i in sorted(losses, reverse=True)[:k]}
        by_rep = representation_top(model, tok, str(data), k, key)
    return {"capability": key, "examples": len(rows), "planted": k, "precision_at_k": len(top & planted) / k,
           "random_expected": k / len(rows), "highest_loss_precision": len(by_loss & planted) / k,
           "representation_precision": len(by_rep & planted) / k,
           "lora_r8_precision": len(top_lora & planted) / k,
           "wall_s": wall, "examples_per_s": len(rows) / wall,
           "measured": time.strftime("%Y-%m-%d")}


if __name__ == "__main__":
    main()
