"""``retain gram MODEL --data DATA --out FILE``: the input Gram matrix of every linear layer of a
model on its own domain data, the input of a RegMean merge (``retain merge --method regmean
--gram FILE ...``, one file per fine-tune).

For a linear layer y = x W^T with inputs X (tokens, in): G = X^T X / tokens, over the non-pad
tokens of ``n`` examples (the attention mask says which; a pad token's activations are not the
model's inputs). Averaged over tokens, so that each model counts the same in the merge whatever
its number of tokens (RegMean's sums, Jin et al. 2023, weigh models by their data size). Stored in
float32 under the layer's weight name (``model.layers.0.self_attn.q_proj.weight``), shape (in,
in). A linear layer whose weight is tied to another tensor (an output layer sharing the
embedding) gets no Gram: the merge averages it, as it does embeddings and norms.
"""

from __future__ import annotations

from pathlib import Path

import torch

from retain.version import __version__
from retain.errors import UserError


def tied_names(model: torch.nn.Module) -> set[str]:
    """Parameter names that share their storage with another parameter name."""
    seen: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        seen.setdefault(p.data_ptr(), []).append(name)
    return {n for names in seen.values() if len(names) > 1 for n in names}


@torch.no_grad()
def gram_matrices(model: torch.nn.Module, examples: list[dict], pad_id: int, *,
                  batch_size: int = 8) -> tuple[dict[str, torch.Tensor], int]:
    """({weight name: (in, in) Gram of its inputs, averaged over tokens}, tokens) of every
    untied ``nn.Linear`` of ``model`` on ``examples`` (``{"input_ids", "labels"}``)."""
    from retain.train.loop import collate

    tied = tied_names(model)
    device = next(model.parameters()).device
    grams: dict[str, torch.Tensor] = {}
    mask: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(key: str):
        def hook(module, args):
            x = args[0].detach()  # (B, T, in), or (B*T, in) where a model flattens (OPT's MLP)
            keep = mask["m"].reshape(-1)  # (B*T,)
            if x.shape[:-1].numel() != keep.numel():
                raise RuntimeError(f"{key}: inputs of shape {tuple(x.shape)} do not line up with "
                                   f"the batch's {keep.numel()} token positions")
            rows = x.reshape(-1, x.shape[-1])[keep].to(torch.float64)  # (tokens, in): non-pad
            g = grams.get(key)
            grams[key] = rows.T @ rows if g is None else g + rows.T @ rows
        return hook
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and f"{name}.weight" not in tied:
            hooks.append(m.register_forward_pre_hook(hook_for(f"{name}.weight")))
    was_training, tokens = model.training, 0
    model.eval()
    try:
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i:i + batch_size], pad_id)
            mask["m"] = batch["attention_mask"].to(device).bool()  # (B, T)
            tokens += int(mask["m"].sum())
            model(input_ids=batch["input_ids"].to(device),
                  attention_mask=batch["attention_mask"].to(device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {k: (g / max(tokens, 1)).to(torch.float32).cpu() for k, g in grams.items()}, tokens


def write_gram(model: str, data: str, out: str | Path, *, n: int = 64, seq_len: int = 256,
               seed: int = 0, device: str = "auto", dtype: str = "auto", batch_size: int = 8,
               overwrite: bool = False) -> Path:
    """The Gram matrices of ``model`` on ``n`` examples of ``data`` (seeded), written to ``out``."""
    from retain.data import load_train_data
    from retain.fisher_cli import check_inputs
    from retain.models import load_model, load_tokenizer
    from retain.formats import pad_token_id
    from retain.strategies.fisher import save_float32_atomic

    out = Path(out)
    check_inputs(model, out, n, overwrite)
    tok = load_tokenizer(model)  # data mistakes surface before the weights are read
    examples = load_train_data(data, tok, seq_len=seq_len, n=n, seed=seed)
    net, _ = load_model(model, dtype=dtype, device=device, tokenizer=tok)
    grams, tokens = gram_matrices(net, examples, pad_token_id(tok), batch_size=batch_size)
    if not grams:
        raise UserError(f"{model} has no untied linear layer to take a Gram matrix of")
    meta = {"kind": "gram", "model": model, "data": data, "n": str(min(n, len(examples))),
            "tokens": str(tokens), "seed": str(seed), "seq_len": str(seq_len),
            "normalized": "mean over tokens", "retain_version": __version__}
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    return save_float32_atomic(out, grams, meta)
