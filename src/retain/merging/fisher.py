"""Fisher-weighted averaging: each parameter is averaged with weights proportional to its diagonal
Fisher information in each model, so a model "votes" most on the parameters it relies on.

Merging Models with Fisher-Weighted Averaging (Matena & Raffel, 2022),
https://arxiv.org/abs/2111.09832
merged = sum_i w_i (F_i + eps) theta_i / sum_i w_i (F_i + eps), elementwise. The Fisher files are
safetensors (tensor name -> diagonal Fisher, the same shape), one per model, each estimated on
that model with its own domain's data (``retain fisher MODEL --data DATA --out FILE``).

Before merging (``check_fishers``, a pass over every file before anything is written):
- Coverage: every floating-point tensor of the models needs a Fisher of the same shape in every
  file; otherwise the merge is refused, naming the first missing tensor and the file. (A Fisher
  that covers other names, e.g. a LoRA run's adapter weights, used to fall back to a plain
  average for every tensor without a word.) Entries must be finite and >= 0.
- Identity: files whose tensors are identical are refused. The same Fisher for every model makes
  the merge a plain average; that is what EWC's ``fisher.safetensors`` gives, since it is the base
  model's Fisher on the reference data, the same for every fine-tune of a base.
- Normalization (``normalize="mean"``, the default): each model's Fisher is divided by its mean over
  every entry of the merged tensors, so each model brings the same total weight and only where
  it puts it counts. Fishers estimated on different data, sample counts or sequence lengths
  differ in overall scale by orders of magnitude, which would otherwise decide the merge; and with
  a mean of 1 the epsilon (1e-6) is negligible wherever a model's Fisher is not itself near zero
  (an entry that is 0 in every model gets the plain weighted average). ``normalize="none"`` keeps
  the raw Fishers, as in the paper. The mean is summed in float64 over sorted names and fixed row
  chunks, so folder and in-memory merges, in any tensor order, get the same scales.
"""

from __future__ import annotations

import hashlib
from typing import Literal, Sequence

import torch
from pydantic import Field

from retain.errors import UserError
from retain.merging.base import MergeOptions, TensorSet, row_chunks

FISHER_HINT = ("estimate each model's own Fisher on its own data: "
               "retain fisher MODEL --data DATA --out FILE")


class FisherOptions(MergeOptions):
    fisher_files: tuple[str, ...] = ()  # one safetensors file per model (streaming merges)
    epsilon: float = Field(1e-6, gt=0)  # added to every (normalized) Fisher entry
    normalize: Literal["mean", "none"] = "mean"  # divide each model's Fisher by its mean


def fisher_average(tensors: list[torch.Tensor], fishers: list[torch.Tensor],
                   weights: list[float], epsilon: float = 1e-6) -> torch.Tensor:
    """sum_i w_i (F_i + eps) theta_i / sum_i w_i (F_i + eps), elementwise."""
    num = torch.zeros_like(tensors[0])
    den = torch.zeros_like(tensors[0])
    for t, f, w in zip(tensors, fishers, weights):
        fw = (f.to(t.dtype) + epsilon) * w
        num.add_(fw * t)
        den.add_(fw)
    return num / den


def apply(ts: TensorSet, opts: FisherOptions) -> torch.Tensor:
    if ts.stats is None:  # the engine checks coverage before merging: this is a caller's bug
        raise ValueError(f"fisher: no Fisher given for tensor {ts.name!r}")
    return fisher_average(ts.models, ts.stats, ts.weights, opts.epsilon)


def _missing_message(name: str, src, model_label: str) -> str:
    names = src.names()
    hint = FISHER_HINT
    if any("lora_" in n for n in names):
        hint = ("it holds LoRA adapter weights, not the model's tensors; merge the adapter into "
                "its base first, then " + FISHER_HINT)
    return (f"{src.label} has no Fisher for tensor {name!r} of {model_label} "
            f"({len(names)} tensors in the file); {hint}")


def check_fishers(template, stats: Sequence, normalize: str) -> list[float]:
    """Refuse Fisher sources that do not cover the template's floating tensors (or differ in
    shape, or hold negative or non-finite entries) and sources identical to each other; return
    each source's divisor (its mean over the covered entries, or 1 with ``normalize="none"``).
    ``template``: a TensorSource; ``stats``: StatsFile / StatsDict objects, one per model."""

    names = sorted(n for n in template.names() if template.dtype(n).is_floating_point)
    for s in stats:
        for name in names:
            sh = s.shape(name)
            if sh is None:
                raise UserError(_missing_message(name, s, template.label))
            if tuple(sh) != tuple(template.shape(name)):
                raise UserError(f"the Fisher of tensor {name!r} in {s.label} has shape {list(sh)}, "
                                f"the model's {list(template.shape(name))}")
    scales, digests = [], []
    for s in stats:
        total, count, digest = 0.0, 0, hashlib.sha256()
        for name in names:
            for rows in row_chunks(tuple(template.shape(name))):
                t = s.get(name, rows)
                f = t.double()
                if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
                    raise UserError(f"the Fisher of tensor {name!r} in {s.label} has negative or "
                                    "non-finite entries")
                total += float(f.sum())
                count += f.numel()
                digest.update(f"{name}|{t.dtype}|{list(t.shape)}".encode())
                digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests.append(digest.hexdigest())
        mean = total / max(count, 1)
        if normalize == "mean" and not mean > 0:
            raise UserError(f"the Fisher in {s.label} is zero everywhere: nothing to weight by; "
                            + FISHER_HINT)
        scales.append(mean if normalize == "mean" else 1.0)
    for j, dj in enumerate(digests):
        for i in range(j):
            if digests[i] == dj:
                raise UserError(
                    f"{stats[i].label} and {stats[j].label} hold the same Fisher, so the merge "
                    "would be a plain average (EWC's fisher.safetensors is the base model's Fisher "
                    "on the reference data, the same for every fine-tune); " + FISHER_HINT)
    return scales
