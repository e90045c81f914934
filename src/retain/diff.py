"""`retain diff BASE MODEL`: audit an existing fine-tune without training.

The same probes (the same items) on the base and on the fine-tune, the paired before/after table,
the items lost and gained, and the weight drift per layer, written as a run-style folder that
``retain report`` renders. MODEL is a model folder (or hub id) of the same architecture, or a PEFT
adapter folder, which is loaded on BASE (its effective weights: merged when the method merges,
e.g. LoRA's B·A·scale). A model or adapter that does not fit BASE is one line, exit 2.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from retain.errors import UserError
from retain.report import results as rr

ADAPTER_CONFIG = "adapter_config.json"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def load_adapter(base_model, path: str | Path):
    """``base_model`` (consumed) with the PEFT adapter at ``path``, merged into its weights when
    the method allows (LoRA, IA3, ...); prompt-based adapters stay a ``PeftModel``."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(path), is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError, TypeError) as e:
        raise UserError(f"adapter {path} does not fit the base model: {_first_line(e)}") from None
    try:
        return model.merge_and_unload()
    except (AttributeError, ValueError, NotImplementedError):
        return model  # prompt/prefix tuning: nothing to merge, the base weights did not move


def check_same_shape(base_state: dict[str, torch.Tensor], model: torch.nn.Module, what: str) -> None:
    """A fine-tune has the base's parameter names and shapes; anything else is refused."""
    params = dict(model.named_parameters())
    if set(params) != set(base_state):
        name = sorted(set(params) ^ set(base_state))[0]
        raise UserError(f"{what} is not a fine-tune of the base: parameter {name} is in one and "
                        "not the other")
    for name, p in params.items():
        if tuple(p.shape) != tuple(base_state[name].shape):
            raise UserError(f"{what} is not a fine-tune of the base: {name} has shape "
                            f"{tuple(p.shape)}, the base {tuple(base_state[name].shape)}")


def check_fits(base: str, model: str, is_adapter: bool) -> None:
    """Before any weight is read: names and shapes from the safetensors headers of local folders
    (a LoRA adapter's targets and shapes against the base); hub ids are checked once loaded."""
    import json

    from retain.merging.engine import check_compatible
    from retain.merging.sources import FolderSource, open_source
    from retain.models import BUILTIN_MODELS

    if not (base in BUILTIN_MODELS or Path(base).is_dir()) or not Path(model).is_dir():
        return
    base_src = FolderSource(base)
    if not is_adapter:
        check_compatible(base_src, [FolderSource(model)])
    elif json.loads((Path(model) / ADAPTER_CONFIG).read_text()).get("peft_type") == "LORA":
        open_source(model, base_src)


def default_out(model: str, parts: int = 3) -> Path:
    """``runs/diff-<name>``, the name made of the model's last ``parts`` path parts (its parent
    folders too: fine-tunes are often saved as ``<run>/model``, and two runs' ``model`` folders
    must not share a diff folder). A local folder is named by its resolved path, so a relative
    and an absolute path give one folder; a hub id (``org/name``) by what it says."""
    import re

    p = Path(model.rstrip("/") or model)
    if p.is_dir():
        p = p.resolve()
    names = [n for n in p.parts if n not in ("/", "", ".", "..")][-parts:]
    name = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip("-") for n in names)
    return Path("runs") / f"diff-{name or 'model'}"


def run_diff(base: str, model: str, *, probes: list[str] | None = None, n: int | None = None,
             seed: int = 0, out: Path | None = None, device: str = "auto", dtype: str = "auto",
             batch_size: int = 32, overwrite: bool = False, trust_remote_code: bool = False,
             progress: bool = True) -> dict:
    """Probe ``base`` and ``model`` on the same items and write the diff folder; returns its
    ``results.json`` content."""
    from retain.metrics import compare, gain, weight_drift
    from retain.models import copy_state, count_params, load_model, load_tokenizer
    from retain.train.callbacks.recorder import clean_out_dir
    from retain.probes import evaluate, load_probes

    specs = list(probes or ["retained"])
    loaded = load_probes(specs, n=n, seed=seed)  # every mistake before a weight is read
    needs_base = any(getattr(p, "needs_base", False) for p in loaded)  # KL to the base
    is_adapter = (Path(model) / ADAPTER_CONFIG).is_file()
    out = Path(out) if out else default_out(model)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} is not empty; --overwrite to replace it, or choose another --out")
    tok = load_tokenizer(base, trust_remote_code=trust_remote_code)
    if not is_adapter:
        load_tokenizer(model, trust_remote_code=trust_remote_code)  # a bad MODEL path: one line
    check_fits(base, model, is_adapter)
    base_m, _ = load_model(base, dtype=dtype, device=device, tokenizer=tok,
                           trust_remote_code=trust_remote_code)
    base_state = copy_state(base_m)
    if is_adapter:
        fine = load_adapter(copy.deepcopy(base_m), model)
        plain = fine.get_base_model() if hasattr(fine, "get_base_model") else fine
    else:
        fine, _ = load_model(model, dtype=dtype, device=device, tokenizer=tok,
                             trust_remote_code=trust_remote_code)
        plain = fine
    check_same_shape(base_state, plain, model)
    reference = base_m if needs_base else None
    before = evaluate(base_m, tok, loaded, base_model=reference, batch_size=batch_size,
                      progress=progress)
    after = evaluate(fine, tok, loaded, base_model=reference, batch_size=batch_size,
                     progress=progress)
    comparison = compare(before, after)
    with torch.no_grad():
        drift = weight_drift(base_state, dict(plain.named_parameters()))
    results = {
        **rr.header("complete", seed, {"base": base, "model": model, "probes": specs,
                                       "probe_n": n, "seed": seed, "dtype": dtype,
                                       "device": device, "adapter": is_adapter}, kind="diff"),
        "strategy": "adapter" if is_adapter else "fine-tune",
        "model": {"name": model, "base": base, "architecture": type(plain).__name__,
                  "params": count_params(plain),
                  "dtype": str(next(plain.parameters()).dtype).removeprefix("torch."),
                  "device": str(next(plain.parameters()).device)},
        "probes": {"before": [r.to_dict() for r in before], "after": [r.to_dict() for r in after]},
        "comparison": comparison,
        "domain_gain": {c["key"]: gain(c["before"], c["after"], c["higher_is_better"])
                        for c in comparison if c["capability"] == "domain"},
        "drift": drift,
    }
    if out.is_dir():
        clean_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    rr.write_summary_csv(out / rr.SUMMARY_FILE, results)
    rr.write_json_atomic(out / rr.RESULTS_FILE, results)
    return results
