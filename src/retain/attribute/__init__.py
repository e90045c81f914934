"""``retain attribute``: which training examples work against which retained capability.

    the data's records, tokenized as a run trains on them  ->  each capability's direction: the
    mean unit loss gradient of its probe's reference outcomes (``grads.capability_direction``)
    ->  per example, the cosine of its loss gradient with each direction, at the base model,
    both whitened by the data's diagonal Fisher (``grads.preconditioner``)  ->  harm = minus that cosine (training on it raises the capability's loss, to
    first order)  ->  attribution.jsonl, ranked, and ``write_filtered`` for ``retain run --data``

A plain gradient-alignment score (TracIn at one checkpoint, Pruthi et al. 2020, with cosine
normalization as in He, Xia & Henderson 2024, "What is in your safe data?",
https://arxiv.org/abs/2404.01099). Evaluated against dattri's TracIn and kronfluence (identity
factors: the same scores; EK-FAC: a different ranking) on a tiny Llama; see the README.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from retain.errors import UserError

ATTRIBUTION_FILE = "attribution.jsonl"
SUMMARY_FILE = "attribution.json"  # the settings, the counts, the cost and a filter written
PREVIEW_CHARS = 200
FISHER_SAMPLE = 64  # records whose squared gradients make the diagonal Fisher


def records_of(spec: str, *, n: int | None = None, seed: int = 0) -> list[tuple[str, Any, str]]:
    """``(shape, payload, line)`` of every record of a data spec: a JSONL file's records with
    their own JSON line, or a built-in domain's training examples as ``{"text": ...}`` lines."""
    from retain.data import DEFAULT_BUILTIN_N, builtin_records, domain_of, parse_record
    from retain.jsonl import iter_jsonl

    if domain_of(spec) is not None:
        return [("text", r["text"], json.dumps(r, ensure_ascii=False))
                for r in builtin_records(spec, n=n or DEFAULT_BUILTIN_N, seed=seed)]
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist")
    out = [(*parse_record(obj, where), json.dumps(obj, ensure_ascii=False))
           for where, obj in iter_jsonl(path)]
    if not out:
        raise UserError(f"{path}: no examples (the file is empty)")
    return out[:n] if n else out


def _preview(shape: str, payload: Any) -> str:
    if shape == "text":
        text = payload
    elif shape == "prompt_completion":
        text = f"{payload[0]} -> {payload[1]}"
    else:
        text = " | ".join(f"{m['role']}: {m['content']}" for m in payload)
    return text[:PREVIEW_CHARS]


def attribute(model_name: str, data: str, *, probes: Sequence[str] = ("retained",),
              probe_n: int | None = None, seq_len: int = 256, n: int | None = None,
              seed: int = 0, out: str | Path, progress: bool = True,
              lora_r: int | None = None) -> list[dict[str, Any]]:
    """Score every record of ``data`` against every retained capability of ``probes`` at the
    model ``model_name``; write ``out/attribution.jsonl`` (one line per record: index, preview,
    ``harm`` per probe key, ``rank`` per key, 1 = most harmful) and return its rows.
    ``lora_r``: score through a fresh LoRA adapter of that rank instead of the full weights
    (``grads.lora_projection``: the gradients randomly projected to r values per row, for
    models too large for full per-example gradients)."""
    from accelerate.utils import set_seed

    from retain.attribute.grads import (capability_direction, diagonal_fisher,
                                        example_alignments, preconditioner,
                                        reference_examples)
    from retain.formats import encode_record, pad_token_id
    from retain.models import load_model, load_tokenizer
    from retain.probes import load_probes
    from retain.report import results as rr

    tok = load_tokenizer(model_name)
    recs = records_of(data, n=n, seed=seed)
    examples = [encode_record(tok, s, p, seq_len) for s, p, _ in recs]
    if not any(examples):
        raise UserError(f"{data}: no example keeps a token to learn from within seq_len={seq_len}")
    loaded = load_probes(list(probes), n=probe_n, seed=seed)
    refs = {f"{p.name}.{p.metric}": reference_examples(p, tok, seq_len) for p in loaded}
    refs = {k: v for k, v in refs.items() if v}
    if not refs:
        raise UserError(f"probes {', '.join(probes)}: none has reference outcomes to attribute "
                        f"against (lm-eval and HumanEval probes have none)")
    import time

    t0 = time.perf_counter()
    set_seed(seed)
    model, _ = load_model(model_name, tokenizer=tok)
    if lora_r:
        from retain.attribute.grads import lora_projection

        model = lora_projection(model, lora_r)
    model.train(False)  # dropout off: a deterministic gradient at the base
    pad = pad_token_id(tok)
    import torch

    keys = sorted(refs)
    kept = [i for i, e in enumerate(examples) if e is not None]
    # Whitened by the data's own diagonal Fisher (a seeded sample of its records): both sides
    # are compared in the metric of the weights' usual movement (grads.preconditioner).
    import random

    sample = random.Random(seed).sample(kept, min(FISHER_SAMPLE, len(kept)))
    pre = preconditioner(diagonal_fisher(model, [examples[i] for i in sample], pad))
    G = torch.stack([capability_direction(model, refs[k], pad) for k in keys]) * pre  # (C, P)
    bar = _bar(len(kept)) if progress else None
    try:
        dots, norms = example_alignments(model, [examples[i] for i in kept], G, pad,
                                         precondition=pre, progress=bar.step if bar else None)
    finally:
        if bar:
            bar.close()
    cos = dots / (norms[:, None] * G.norm(dim=1).cpu()[None, :]).clamp_min(1e-12)  # (N, C)
    harm = (-cos).tolist()
    rows = []
    for j, i in enumerate(kept):
        shape, payload, _ = recs[i]
        rows.append({"index": i, "preview": _preview(shape, payload),
                     "harm": {k: harm[j][c] for c, k in enumerate(keys)}})
    for k in keys:
        for r, row in enumerate(sorted(rows, key=lambda x: -x["harm"][k]), 1):
            row.setdefault("rank", {})[k] = r
    wall = time.perf_counter() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rr.write_text_atomic(out / ATTRIBUTION_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                          for r in rows))
    config = {"model": model_name, "data": data, "probes": list(probes), "probe_n": probe_n,
              "seq_len": seq_len, "n": n, "lora_r": lora_r}
    rr.write_json_atomic(out / SUMMARY_FILE, {
        **rr.header("complete", seed, config, kind="attribution"), "records": len(recs),
        "scored": len(kept), "capabilities": keys, "gradient_size": int(G.shape[1]),
        "references": {k: len(refs[k]) for k in keys}, "fisher_sample": len(sample),
        "score": "harm = minus the cosine of the example's and the capability's loss "
                 "gradients, both whitened by the data's diagonal Fisher, at the base model",
        "wall_s": round(wall, 2), "examples_per_s": round(len(kept) / max(wall, 1e-9), 2),
        "peak_rss_mb": _peak_rss_mb()})
    return rows


def _peak_rss_mb() -> float | None:
    """This process's peak resident memory in MiB (None where the OS does not say)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)
    except (ImportError, OSError):
        return None


def write_filtered(data: str, rows: list[dict], key: str, drop_top: float, path: str | Path,
                   *, n: int | None = None, seed: int = 0,
                   out: str | Path | None = None) -> dict[str, int]:
    """Write ``data``'s records without the ``drop_top`` share most harmful to ``key`` (a probe
    key of ``rows``), as a JSONL ``retain run --data`` reads; the counts written and dropped.
    ``out``: the attribution folder, whose attribution.json then records the filter."""
    from retain.report import results as rr

    if not 0 < drop_top < 1:
        raise UserError(f"drop-top {drop_top:g}: give a share in (0, 1), e.g. 0.05")
    if not rows or key not in rows[0]["harm"]:
        known = ", ".join(sorted(rows[0]["harm"])) if rows else "none"
        raise UserError(f"no attribution for {key!r}; scored: {known}")
    recs = records_of(data, n=n, seed=seed)
    k = max(1, round(drop_top * len(rows)))
    drop = {r["index"] for r in sorted(rows, key=lambda x: -x["harm"][key])[:k]}
    lines = [line for i, (_, _, line) in enumerate(recs) if i not in drop]
    rr.write_text_atomic(Path(path), "".join(line + "\n" for line in lines))
    got = {"written": len(lines), "dropped": len(drop)}
    summary = Path(out) / SUMMARY_FILE if out is not None else None
    if summary is not None and summary.is_file():
        record = json.loads(summary.read_text(encoding="utf-8"))
        record["filtered"] = {"path": str(path), "capability": key, "drop_top": drop_top,
                              "dropped_indices": sorted(drop), **got}
        rr.write_json_atomic(summary, record)
    return got


class _bar:
    def __init__(self, total: int):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.p = Progress(TextColumn("attributing"), BarColumn(), MofNCompleteColumn(),
                          console=Console(stderr=True), transient=True)
        self.t = self.p.add_task("", total=total)
        self.p.start()

    def step(self, done: int) -> None:
        self.p.update(self.t, completed=done)

    def close(self) -> None:
        self.p.stop()
