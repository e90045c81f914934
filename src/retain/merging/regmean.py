"""RegMean: merge each linear layer by the weights that best reproduce every model's outputs on
its own inputs (a least-squares problem solved in closed form from Gram matrices of the inputs).

Dataless Knowledge Fusion by Merging Weights of Language Models (Jin et al., 2023),
https://arxiv.org/abs/2212.09849
For a weight W_i (out, in) with input Gram G_i = X_i^T X_i (in, in), off-diagonals scaled by a:
W = (sum_i w_i W_i G~_i) (sum_i w_i G~_i)^-1,  G~_i = a G_i + (1 - a) diag(G_i).
Tensors without Gram matrices (embeddings, norms) get the weighted average.
"""

from __future__ import annotations

from typing import Iterable

import torch
from pydantic import Field

from retain.merging.base import MergeOptions, TensorSet
from retain.merging.linear import weighted_average


class RegMeanOptions(MergeOptions):
    gram_files: tuple[str, ...] = ()  # one safetensors file per model (streaming merges)
    off_diagonal_scale: float = Field(0.9, ge=0, le=1)  # a: 1 = plain RegMean, 0 = diagonal


def regmean(weights_: list[torch.Tensor], grams: list[torch.Tensor], weights: list[float],
            off_diagonal_scale: float = 0.9) -> torch.Tensor:
    """Closed-form RegMean for one (out, in) weight given each model's (in, in) input Gram."""
    a = off_diagonal_scale
    g_sum = torch.zeros_like(grams[0], dtype=torch.float64)  # (in, in)
    wg_sum = torch.zeros(weights_[0].shape, dtype=torch.float64)  # (out, in)
    for w_i, g, lam in zip(weights_, grams, weights):
        g = g.double()
        g_reg = a * g + (1 - a) * torch.diag(torch.diagonal(g))
        g_sum += lam * g_reg
        wg_sum += lam * (w_i.double() @ g_reg)
    # W g_sum = wg_sum  <=>  g_sum^T W^T = wg_sum^T (g_sum is symmetric)
    return torch.linalg.solve(g_sum, wg_sum.T).T.to(weights_[0].dtype)


def apply(ts: TensorSet, opts: RegMeanOptions) -> torch.Tensor:
    if ts.stats is None or ts.models[0].dim() != 2:
        return weighted_average(ts.models, ts.weights)
    return regmean(ts.models, ts.stats, ts.weights, opts.off_diagonal_scale)


@torch.no_grad()
def compute_grams(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """Gram matrices X^T X of the inputs of every ``nn.Linear``, keyed by its weight's name
    (``model.layers.0.mlp.up_proj.weight``); padding positions (attention_mask 0) are skipped."""
    grams: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor | None] = [None]

    def hook(name: str):
        def fn(module, inputs, output):
            x = inputs[0].detach().float()  # (B, T, in) or (N, in)
            if mask[0] is not None and x.dim() == 3 and x.shape[:2] == mask[0].shape:
                x = x[mask[0].bool()]  # (N, in)
            x = x.reshape(-1, x.shape[-1])
            g = x.T @ x  # (in, in)
            grams[name] = grams[name] + g if name in grams else g
        return fn

    handles = [m.register_forward_hook(hook(f"{n}.weight"))
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        for batch in batches:
            mask[0] = batch.get("attention_mask")
            model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")})
    finally:
        for h in handles:
            h.remove()
    return grams
