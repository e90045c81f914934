"""`retain eval`: load a model, score it on probes, print the table, optionally save JSON."""

from __future__ import annotations

from pathlib import Path

from retain.errors import UserError


def evaluate_model(model: str = "tiny", probes: list[str] | None = None, *, n: int | None = None,
                   batch_size: int = 32, seed: int = 0, device: str = "auto", dtype: str = "auto",
                   trust_remote_code: bool = False, json_out: Path | None = None,
                   print_table: bool = True) -> list:
    """Score ``model`` on ``probes`` (suite names, groups or JSONL paths); returns ProbeResults."""
    from retain.models import load_model
    from retain.probes import evaluate, load_probes
    from retain.report.results import write_json_atomic
    from retain.report.tables import print_results

    specs = list(probes or ["all"])
    loaded = load_probes(specs, n=n, seed=seed)  # validate the probes before loading weights
    needs_base = any(p.kind == "kl_to_base" for p in loaded)
    if needs_base:
        raise UserError("divergence-from-base probes need a base model; use them inside `retain run`")
    m, tok = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    results = evaluate(m, tok, loaded, batch_size=batch_size)
    if print_table:
        print_results(results, title=f"retain eval: {model}")
    if json_out is not None:
        write_json_atomic(Path(json_out), {"model": model, "seed": seed,
                                           "results": [r.to_dict() for r in results]})
    return results
