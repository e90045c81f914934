"""The ``retain merge`` command as a plain typer-annotated function; ``retain/cli.py`` registers it
with ``app.command("merge")(merge_command)``. Options map onto ``retain.merging.merge``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from retain.errors import UserError


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--{what} takes comma-separated numbers, got {text!r}") from None


def _parse_set(items: list[str]) -> dict:
    """``--set key=value``: values read as YAML scalars (numbers, true/false, strings)."""
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def merge_command(
    models: Annotated[Optional[list[str]], typer.Argument(
        help="model folders (or LoRA adapter folders over --base) to merge")] = None,
    method: Annotated[Optional[str], typer.Option(
        help="linear, wise_ft, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, "
             "breadcrumbs_ties, della, della_linear, model_stock (2+ models), slerp, fisher, "
             "regmean")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder")] = None,
    base: Annotated[Optional[str], typer.Option(help="the base model folder")] = None,
    weights: Annotated[Optional[str], typer.Option(help="per-model weights, e.g. 0.5,0.5")] = None,
    density: Annotated[Optional[float], typer.Option(
        help="ties/dare/della/breadcrumbs: share of entries kept")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="wise_ft/slerp: 0 = base, 1 = model")] = None,
    seed: Annotated[Optional[int], typer.Option(help="dare/della: seed of the drop masks")] = None,
    scale: Annotated[Optional[float], typer.Option(help="task vector methods: lambda")] = None,
    fisher: Annotated[Optional[list[str]], typer.Option(
        help="fisher: each model's own Fisher, in model order (repeat), from retain fisher "
        "MODEL --data ITS_DATA --out FILE")] = None,
    gram: Annotated[Optional[list[str]], typer.Option(
        help="regmean: one Gram-matrix safetensors file per model (repeat)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="any other method option, key=value (repeat), e.g. gamma=0.01 "
        "(breadcrumbs), epsilon=0.1 (della), majority_sign=frequency")] = None,
    config: Annotated[Optional[Path], typer.Option(help="a merge YAML file")] = None,
    shard_size: Annotated[str, typer.Option(help="output shard size, e.g. 2GB, 500MB")] = "2GB",
    dtype: Annotated[Optional[str], typer.Option(help="float32, float16 or bfloat16")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output folder")] = False,
    search: Annotated[bool, typer.Option(
        "--search", help="score a grid of coefficients on the probes in memory (--base BASE FT)"
        " and pick one; writes search.json and curve.png into --out")] = False,
    alphas: Annotated[Optional[str], typer.Option(
        help="--search: the grid, e.g. 0,0.25,0.5,0.75,1 (default 0,0.1,...,1)")] = None,
    param: Annotated[str, typer.Option(
        help="--search with a --method other than wise_ft: the option the grid sets")] = "scale",
    probes: Annotated[Optional[list[str]], typer.Option(
        "--probes", "-p", help="--search: suites (default: retained + --domain; repeat)")] = None,
    domain: Annotated[str, typer.Option(help="--search: the new-domain suite, or your own "
                                        "domain probe JSONL file")] = "legal",
    domain_metric: Annotated[str, typer.Option(
        help="--search: score the new domain by its accuracy, or by the fall of its "
             "cross-entropy (ce: finer than a proportion on few items)")] = "accuracy",
    probe_n: Annotated[Optional[int], typer.Option(help="--search: items per probe")] = None,
    min_gain_share: Annotated[float, typer.Option(
        help="--search: share of the new-domain gain the pick must keep")] = 0.8,
    soup: Annotated[bool, typer.Option(
        "--soup", help="--search: greedy soup of several fine-tunes first")] = False,
) -> None:
    """Merge fine-tunes (and/or a base) into one model folder, tensor by tensor."""
    if search:
        _search(models or [], method, out, base, alphas, param, probes, domain, probe_n,
                min_gain_share, soup, seed, domain_metric)
        return
    try:
        path = _run(models or [], method, out, base, weights, density, alpha, seed, scale,
                    fisher or [], gram or [], set_ or [], config, shard_size, dtype, overwrite)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"merged model written to {path}")


def _search(models, method, out, base, alphas, param, probes, domain, probe_n, min_gain_share,
            soup, seed, domain_metric) -> None:
    from retain.merging.search_cli import print_search, run_search

    try:
        if base is None or out is None:
            raise UserError("--search needs --base BASE, a fine-tune, and --out")
        record = run_search(base, models, out, probes=probes, domain=domain,
                            method=method or "wise_ft", param=param,
                            values=_floats(alphas, "alphas"), min_gain_share=min_gain_share,
                            soup=soup, probe_n=probe_n, seed=seed or 0,
                            domain_metric=domain_metric)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    print_search(record)
    typer.echo(f"search written to {Path(out) / 'search.json'}")


def _run(models, method, out, base, weights, density, alpha, seed, scale, fisher, gram, sets,
         config, shard_size, dtype, overwrite) -> Path:
    from rich.progress import Progress

    from retain.merging.config import load_merge_config
    from retain.merging.engine import merge

    options = _parse_set(sets)
    for key, value in (("density", density), ("alpha", alpha), ("seed", seed), ("scale", scale)):
        if value is not None:
            options[key] = value
    if fisher:
        options["fisher_files"] = fisher
    if gram:
        options["gram_files"] = gram
    kwargs: dict = {"weights": _floats(weights, "weights"), "base": base,
                    "shard_size": shard_size, "dtype": dtype}
    if config is not None:
        cfg = load_merge_config(config)
        cfg_kwargs = cfg.merge_kwargs()
        # command-line values override the file's
        kwargs = {**cfg_kwargs, **{k: v for k, v in kwargs.items() if v is not None}}
        if shard_size == "2GB":
            kwargs["shard_size"] = cfg.shard_size
        kwargs.update(options)
        method, models, out = method or cfg.method, models or [m.path for m in cfg.models], \
            out or Path(cfg.out)
    else:
        kwargs.update(options)
    if not method:
        raise UserError("give --method (or --config)")
    if not models:
        raise UserError("give at least one model folder (or --config)")
    if out is None:
        raise UserError("give --out (or --config)")
    with Progress(transient=True) as bar:
        task = bar.add_task(f"merging ({method})", total=None)
        return merge(method, models, out, overwrite=overwrite,
                     progress=lambda i, n, name: bar.update(task, completed=i, total=n), **kwargs)
