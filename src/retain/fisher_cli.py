"""``retain fisher MODEL --data DATA --out FILE``: a model's own diagonal Fisher on its own domain
data, the input of a Fisher-weighted merge (``retain merge --method fisher --fisher FILE ...``,
one file per fine-tune). It reuses EWC's estimators (``retain.strategies.fisher``) over every
floating-point parameter and writes a safetensors file named as the model folder's tensors,
atomically, with the model, data, estimator, n and seed in its metadata.
"""

from __future__ import annotations

from pathlib import Path

from retain.version import __version__
from retain.errors import UserError
from retain.strategies.fisher import model_fisher


def check_inputs(model: str, out: Path, n: int, overwrite: bool) -> None:
    """The mistakes that need no model loaded, caught before the slow part (also ``retain
    gram``'s)."""
    from retain.merging.sources import is_adapter
    from retain.models import BUILTIN_MODELS

    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as "
                        f"{out / 'fisher.safetensors'}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if model not in BUILTIN_MODELS:
        if not Path(model).is_dir():
            raise UserError(f"model folder not found: {model}")
        if is_adapter(model):
            raise UserError(f"{model} is a PEFT adapter: merge it into its base first (retain "
                            "merge --method linear --base BASE ADAPTER --out FOLDER), then "
                            "take the Fisher or Gram of that folder")


def _check_names(model: str, fisher: dict) -> None:
    """The Fisher must cover the folder's floating tensors under their saved names (what
    ``retain merge`` will look up); tied weights are saved once and estimated once."""
    from retain.merging.sources import FolderSource

    src = FolderSource(model)
    for name in src.names():
        if src.dtype(name).is_floating_point and name not in fisher:
            raise UserError(f"the model's parameter names do not match the tensors saved in "
                            f"{model} (no parameter {name!r}); cannot write a Fisher that "
                            "retain merge would accept")


def write_fisher(model: str, data: str, out: str | Path, *, n: int = 64,
                 estimator: str = "empirical", seq_len: int = 256, seed: int = 0,
                 device: str = "auto", dtype: str = "auto", chunk_size: int = 8,
                 overwrite: bool = False) -> Path:
    """Estimate ``model``'s diagonal Fisher on ``n`` examples of ``data`` (seeded) over every
    floating-point parameter and write it to ``out``; returns ``out``."""
    from retain.strategies.fisher import ESTIMATORS

    out = Path(out)
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown Fisher estimator {estimator!r}; choose one of "
                        f"{', '.join(ESTIMATORS)}")
    check_inputs(model, out, n, overwrite)
    from retain.data import load_train_data
    from retain.models import load_model, load_tokenizer
    from retain.strategies.fisher import save_importance

    tok = load_tokenizer(model)  # data mistakes surface before the weights are read
    examples = load_train_data(data, tok, seq_len=seq_len, n=n, seed=seed)
    net, _ = load_model(model, dtype=dtype, device=device, tokenizer=tok)
    fisher = model_fisher(net, examples, n=n, estimator=estimator, seed=seed,
                          chunk_size=chunk_size)
    _check_names(model, fisher)
    meta = {"kind": "fisher", "model": model, "data": data, "estimator": estimator,
            "n": min(n, len(examples)), "seed": seed, "seq_len": seq_len,
            "dtype": str(next(net.parameters()).dtype).removeprefix("torch."),
            "retain_version": __version__}
    if out.exists() and not overwrite:  # appeared while estimating
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    return save_importance(out, fisher, meta)
