"""The ``retain`` command line: thin wrappers that parse, validate and call the library.

Heavy imports (torch, transformers) happen inside the commands, so ``retain --help`` is quick.
A user mistake (``UserError``, a bad option) prints one line on stderr and exits with code 2;
runs that failed as jobs of ``--launcher`` (``RunsFailed``) one line too, exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from retain.errors import RunsFailed, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure what a fine-tune makes a model forget, and keep it.",
    pretty_exceptions_enable=False,
)


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


def _run_overrides(args: List[str], file_keys: tuple, command: str) -> List[str]:
    """The ``a.b=c`` arguments of compare, sweep or sequence (see ``check_overrides``)."""
    from retain.experiments.runner import check_overrides

    return check_overrides(args, file_keys, command)


@app.command("probes")
def probes_cmd() -> None:
    """List the built-in probe suites."""
    from rich.console import Console
    from rich.table import Table

    from retain.probes import list_suites

    table = Table("suite", "what it measures")
    for name, desc in list_suites().items():
        table.add_row(name, desc)
    Console().print(table)


@app.command("strategies")
def strategies_cmd() -> None:
    """List the registered strategies with their family and paper."""
    from rich.console import Console
    from rich.table import Table

    from retain.strategies import STRATEGIES

    table = Table("strategy", "family", "paper")
    for name, cls in STRATEGIES.items():
        table.add_row(name, cls.family, cls.citation or "-")
    Console().print(table)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("tiny", help="Model: 'tiny' (built-in), a local folder or a hub id."),
    probes: List[str] = typer.Option(["all"], "--probes", "-p",
                                     help="Suite or group name, or a JSONL file; repeatable."),
    n: Optional[int] = typer.Option(None, help="Items per suite (default: each suite's own)."),
    batch_size: int = typer.Option(32, min=1),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    trust_remote_code: bool = typer.Option(False, help="Run the model repo's own code (unsafe)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results here."),
) -> None:
    """Score a model on retained-capability probes and the new domain."""
    from retain.evaluate import evaluate_model

    evaluate_model(model, probes, n=n, batch_size=batch_size, seed=seed, device=device,
                   dtype=dtype, trust_remote_code=trust_remote_code, json_out=json_out)


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config."),
    model: Optional[str] = typer.Option(None, help="Model (default: tiny)."),
    data: Optional[str] = typer.Option(None, help="New-domain JSONL, or builtin:legal / "
                                       "builtin:support / builtin:recipes."),
    strategy: Optional[List[str]] = typer.Option(None, "--strategy", "-s",
                                                 help="Strategy name; repeat to compose."),
    lr: Optional[float] = typer.Option(None, help="Learning rate."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, help="Sequences per step."),
    seq_len: Optional[int] = typer.Option(None, help="Max tokens per sequence."),
    seed: Optional[int] = typer.Option(None),
    probe_every: Optional[int] = typer.Option(None, help="Probe every N steps (0: only before/after)."),
    probes: Optional[List[str]] = typer.Option(None, "--probes", "-p"),
    device: Optional[str] = typer.Option(None, help="auto (default), cpu, cuda, cuda:N."),
    dtype: Optional[str] = typer.Option(None, help="Weights as loaded: auto (bf16 on CUDA, else "
                                        "float32), float32, bfloat16, float16."),
    mixed_precision: Optional[str] = typer.Option(
        None, help="auto (bf16 on CUDA, no on CPU), no, bf16, fp16: fp32 master weights, "
        "half-precision compute."),
    grad_accum: Optional[int] = typer.Option(None, help="Micro-batches per optimizer step."),
    gradient_checkpointing: Optional[bool] = typer.Option(
        None, help="Recompute activations in backward (less memory, ~30% more time)."),
    checkpoint_every: Optional[int] = typer.Option(None, help="Write a checkpoint every N steps."),
    fsdp: Optional[bool] = typer.Option(None, help="Under torchrun / accelerate launch: shard the "
                                        "weights, gradients and optimizer state (FSDP2)."),
    resume: bool = typer.Option(False, help="Continue a killed or failed run in --out from its "
                                "last checkpoint (the same options)."),
    data_holdout: Optional[float] = typer.Option(
        None, help="Share of a JSONL --data held out as the new-domain probe (0.1)."),
    domain_probe: Optional[List[str]] = typer.Option(
        None, "--domain-probe", help="Your own new-domain probe JSONL; repeatable."),
    out: Optional[Path] = typer.Option(None, help="Run folder."),
    overwrite: bool = typer.Option(False, help="Replace an existing run folder."),
    save_model: Optional[bool] = typer.Option(None, help="Save the fine-tuned weights."),
    guard: Optional[List[str]] = typer.Option(
        None, "--guard", "-g", help="A limit checked while training, e.g. 'safety.refusal_rate>=0.9'"
        " or 'max_forgetting=0.05'; repeatable. The run ends on the last checkpoint meeting all."),
    guard_every: Optional[int] = typer.Option(None, help="Guard check every N steps "
                                              "(default: probe_every, else steps/10)."),
    guard_n: Optional[int] = typer.Option(None, help="Items per probe in a guard check (24)."),
    guard_action: Optional[str] = typer.Option(
        None, help="stop (default), keep (train on), or backoff (roll back to the last good "
        "check, halve the learning rate, train on; guard.max_backoffs=3 times, then stop)."),
) -> None:
    """Fine-tune a model on new-domain data, measuring what it forgets.

    Extra arguments of the form a.b=c override keys of the config file.
    """
    import json
    from retain.config import load_run_config

    flags = {"model": model, "data": data, "lr": lr, "steps": steps, "batch_size": batch_size,
             "seq_len": seq_len, "seed": seed, "probe_every": probe_every, "out": out,
             "save_model": save_model, "device": device, "dtype": dtype,
             "mixed_precision": mixed_precision, "grad_accum": grad_accum,
             "gradient_checkpointing": gradient_checkpointing, "fsdp": fsdp,
             "checkpoint_every": checkpoint_every, "data_holdout": data_holdout,
             "domain_probes": list(domain_probe) if domain_probe else None}
    flags = {k: v for k, v in flags.items() if v is not None}
    if strategy:
        flags["strategies"] = [{"name": s} for s in strategy]
    if probes:
        flags["probes"] = list(probes)
    if overwrite:
        flags["overwrite"] = True
    if resume:
        flags["resume"] = True
    guard_sets = [f"guard.{k}={json.dumps(v)}" for k, v in [
        ("limits", list(guard) if guard else None), ("every", guard_every), ("n", guard_n),
        ("action", guard_action)] if v is not None]
    cfg = load_run_config(config, overrides=guard_sets + list(ctx.args), **flags)
    from retain.report.tables import print_run
    from retain.run import run
    from retain.train import TrainingFailed
    from retain.train.loop import process_state

    try:
        results = run(cfg)
    except TrainingFailed as e:
        from retain.train import checkpoint as ckpt

        last = ckpt.latest(cfg.out)  # --resume needs one: offer it only then
        how = (f"rerun the same command to start over, or add --resume to continue from the "
               f"checkpoint of step {int(last.name.rsplit('-', 1)[-1])}" if last else
               "no checkpoint was written: rerun the same command to start over")
        typer.echo(f"error: {e}; results.json says failed ({how})", err=True)
        raise typer.Exit(1)
    if process_state().is_main_process:
        print_run(results)


@app.command("forecast", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def forecast_cmd(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (the plan)."),
    model: Optional[str] = typer.Option(None, help="Model (default: tiny)."),
    data: Optional[str] = typer.Option(None, help="New-domain JSONL or builtin:NAME."),
    strategy: Optional[List[str]] = typer.Option(None, "--strategy", "-s",
                                                 help="Strategy name; repeat to compose."),
    lr: Optional[float] = typer.Option(None, help="The planned learning rate."),
    steps: Optional[int] = typer.Option(None, help="The planned optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, help="Sequences per step."),
    seq_len: Optional[int] = typer.Option(None, help="Max tokens per sequence."),
    seed: Optional[int] = typer.Option(None),
    probes: Optional[List[str]] = typer.Option(None, "--probes", "-p"),
    limit: Optional[List[str]] = typer.Option(
        None, "--limit", "-l", help="A limit as the guard writes it, e.g. "
        "'safety.refusal_rate>=0.9' or 'max_forgetting=0.05'; repeatable."),
    budget: float = typer.Option(0.2, help="Pilot steps as a share of the planned steps."),
    rates: Optional[str] = typer.Option(None, help="Pilot rates, comma-separated (default: "
                                        "the planned rate and twice it)."),
    points: int = typer.Option(3, help="Probe points per pilot (besides the start)."),
    select_n: int = typer.Option(24, help="Items per probe the pilots are probed on (apart "
                                 "from the items the run reports)."),
    out: Path = typer.Option(Path("runs/forecast"), help="Forecast folder."),
    overwrite: bool = typer.Option(False, help="Replace a forecast in --out."),
    check: Optional[Path] = typer.Option(None, "--check", help="A finished run of the plan: "
                                         "compare the forecast in --out with it; trains nothing."),
) -> None:
    """Forecast what a planned fine-tune will cost each capability, from short pilots.

    Takes what `retain run` takes (extra a.b=c arguments override config keys). Writes
    OUT/forecast.json and the pilots' run folders under OUT/pilots.
    """
    from retain.report.forecast_tables import print_check, print_forecast

    if check is not None:
        from retain.forecast.check import check as check_forecast

        print_check(check_forecast(out, check))
        return
    from retain.config import load_run_config
    from retain.forecast import forecast

    flags = {"model": model, "data": data, "lr": lr, "steps": steps, "batch_size": batch_size,
             "seq_len": seq_len, "seed": seed}
    flags = {k: v for k, v in flags.items() if v is not None}
    if strategy:
        flags["strategies"] = [{"name": s} for s in strategy]
    if probes:
        flags["probes"] = list(probes)
    try:
        pilot_rates = [float(r) for r in rates.split(",")] if rates else None
    except ValueError:
        _fail(f"--rates {rates!r}: give numbers separated by commas, e.g. 1e-3,2e-3")
    cfg = load_run_config(config, overrides=list(ctx.args), **flags)
    fc = forecast(cfg, limits=list(limit or []), budget=budget, rates=pilot_rates,
                  points=points, select_n=select_n, out=out, overwrite=overwrite)
    print_forecast(fc)


@app.command("attribute")
def attribute_cmd(
    data: str = typer.Option(..., help="The training data: a JSONL file or builtin:NAME."),
    model: str = typer.Option("tiny", help="The model the data will fine-tune."),
    probes: Optional[List[str]] = typer.Option(None, "--probes", "-p",
                                               help="Capabilities to attribute (default: retained)."),
    probe_n: Optional[int] = typer.Option(None, help="Items per probe."),
    seq_len: int = typer.Option(256, help="Max tokens per example, as the run will train."),
    n: Optional[int] = typer.Option(None, help="Score only the first N records."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/attribution"), help="Folder for attribution.jsonl."),
    write_filtered: Optional[Path] = typer.Option(
        None, help="Also write the data without the examples most harmful to --capability."),
    drop_top: float = typer.Option(0.05, help="Share dropped by --write-filtered."),
    capability: Optional[str] = typer.Option(
        None, help="probe.metric the filter protects (default: the first scored)."),
    lora_r: Optional[int] = typer.Option(
        None, min=1, help="Score through a fresh LoRA adapter of this rank (randomly projected "
                          "gradients, for large models)."),
) -> None:
    """Score each training example by how much training on it works against each capability.

    Writes OUT/attribution.jsonl (index, preview, harm per probe.metric, rank); with
    --write-filtered FILE, a data file without the top --drop-top share, ready for --data.
    """
    from retain.attribute import attribute, write_filtered as write

    rows = attribute(model, data, probes=list(probes or ["retained"]), probe_n=probe_n,
                     seq_len=seq_len, n=n, seed=seed, out=out, lora_r=lora_r)
    keys = sorted(rows[0]["harm"]) if rows else []
    for k in keys:
        top = sorted(rows, key=lambda r: -r["harm"][k])[:3]
        typer.echo(f"{k}: most harmful " + "; ".join(
            f"#{r['index']} ({r['harm'][k]:+.3f}) {r['preview'][:60]!r}" for r in top))
    typer.echo(f"wrote {out / 'attribution.jsonl'} ({len(rows)} examples x {len(keys)} probes); "
               f"`retain report {out}` shows the top examples per capability")
    if write_filtered is not None:
        got = write(data, rows, capability or keys[0], drop_top, write_filtered, n=n, seed=seed,
                    out=out)
        typer.echo(f"wrote {write_filtered}: {got['written']} records, {got['dropped']} dropped")


# The fan-out options of compare and sweep (docs/fan-out.md).
_LIST_OPTION = typer.Option(False, "--list", help="Print the planned runs (index, label, seed, "
                            "folder, state) and exit; runs nothing.")
_ONLY_OPTION = typer.Option(None, "--only", help="Run only these runs (indices from --list; "
                            "repeatable or 0,2); writes no summary.")
_COLLECT_OPTION = typer.Option(False, "--collect", help="Only collect: write the summary from "
                               "complete runs, refusing if any is missing; trains nothing.")
_LAUNCHER_OPTION = typer.Option(None, "--launcher", help="Submit the runs as jobs, wait, then "
                                "collect: ray (a Ray task per run) or slurm (a SLURM job array, "
                                "through submitit); resources from the file's launcher: key.")


@app.command("compare", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def compare_cmd(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML: base run keys, runs: [{label, strategies, ...}],"
                                  " seeds: [0, 1, 2], out."),
    out: Optional[Path] = typer.Option(None, help="Comparison folder (default: the file's out)."),
    overwrite: bool = typer.Option(False, help="Replace run folders that hold another config."),
    listing: bool = _LIST_OPTION,
    only: Optional[List[str]] = _ONLY_OPTION,
    collect: bool = _COLLECT_OPTION,
    launcher: Optional[str] = _LAUNCHER_OPTION,
) -> None:
    """Run one model and domain under several strategies (and seeds); resumes when repeated.

    Extra arguments of the form a.b=c override keys of every run. On a cluster: --launcher ray
    or slurm, or by hand --list, one job per --only K, then --collect (docs/fan-out.md).
    """
    from retain.experiments.compare import run_compare
    from retain.experiments.runner import COMPARE_KEYS

    run_compare(config, _run_overrides(ctx.args, COMPARE_KEYS, "compare"), out=out,
                overwrite=overwrite, listing=listing, only=only or [], collect=collect,
                launcher=launcher)


@app.command("sweep", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def sweep_cmd(
    ctx: typer.Context,
    config: Optional[str] = typer.Argument(None, help="YAML: base run keys, grid: {lr: [...]}, "
                                           "optional runs, seeds, out."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="A grid axis, e.g. "
                                             "lr=1e-4,3e-4,1e-3 or strategies.0.r=4,8; repeatable."),
    out: Optional[Path] = typer.Option(None, help="Sweep folder (default: the file's out)."),
    overwrite: bool = typer.Option(False, help="Replace run folders that hold another config."),
    listing: bool = _LIST_OPTION,
    only: Optional[List[str]] = _ONLY_OPTION,
    collect: bool = _COLLECT_OPTION,
    launcher: Optional[str] = _LAUNCHER_OPTION,
) -> None:
    """Sweep a grid of runs and fit how forgetting grows with steps, learning rate and drift.

    Extra arguments of the form a.b=c override keys of every run. On a cluster: --launcher ray
    or slurm, or by hand --list, one job per --only K, then --collect (docs/fan-out.md).
    """
    from retain.experiments.runner import COMPARE_KEYS
    from retain.experiments.sweep import run_sweep

    overrides = list(ctx.args)
    if config is not None and "=" in config and not Path(config).is_file():
        overrides.insert(0, config)  # `retain sweep --set ... steps=10`: no file, an override
        config = None
    overrides = _run_overrides(overrides, COMPARE_KEYS + ("grid",), "sweep")
    run_sweep(config, list(sets or []), overrides, out=out, overwrite=overwrite,
              listing=listing, only=only or [], collect=collect, launcher=launcher)


@app.command("sequence", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def sequence_cmd(
    ctx: typer.Context,
    config: str = typer.Argument(..., help="YAML: base run keys, tasks: [builtin:legal, ...], "
                                 "runs: [{label, strategies}], optional seeds, memory, out."),
    out: Optional[Path] = typer.Option(None, help="Sequence folder (default: the file's out)."),
    overwrite: bool = typer.Option(False, help="Replace task folders that hold another config."),
    listing: bool = _LIST_OPTION,
    only: Optional[List[str]] = _ONLY_OPTION,
    collect: bool = _COLLECT_OPTION,
) -> None:
    """Train on task after task under each strategy; the accuracy matrix, ACC, BWT, FWT and
    forgetting with intervals over seeds; resumes when repeated.

    Extra arguments of the form a.b=c override keys of every task's run. On a scheduler:
    --list, one job per --only K (a whole sequence each), then --collect (docs/fan-out.md).
    """
    from retain.experiments.sequence import SEQUENCE_KEYS, run_sequence

    run_sequence(config, _run_overrides(ctx.args, SEQUENCE_KEYS, "sequence"), out=out,
                 overwrite=overwrite, listing=listing, only=only or [], collect=collect)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), help="Comparison folder."),
    quick: bool = typer.Option(False, help="A first look in about a minute (fewer steps/items)."),
    overwrite: bool = typer.Option(True, help="Replace run folders of another config (an earlier "
                                   "--quick demo); complete ones of the same are reused."),
    merge: bool = typer.Option(False, "--merge", help="Specialists, merged: a legal and a support "
                               "fine-tune merged four ways (default out: runs/demo-merge)."),
    sequence: bool = typer.Option(False, "--sequence", help="Three domains in a row (legal -> "
                                  "support -> recipes) under four runs: the accuracy matrix "
                                  "(default out: runs/demo-sequence)."),
) -> None:
    """Show the forgetting cliff and the cures on the built-in model, in minutes on a CPU."""
    if merge and sequence:
        raise UserError("--merge and --sequence are two demos: pick one")
    if sequence:
        from retain.experiments.demo import run_sequence_demo

        run_sequence_demo(None if out == Path("runs/demo") else out, overwrite=overwrite)
        return
    if merge:
        from retain.experiments.demo_merge import run_merge_demo

        run_merge_demo(Path("runs/demo-merge") if out == Path("runs/demo") else out, quick=quick,
                       overwrite=overwrite)
        return
    from retain.experiments.demo import run_demo

    run_demo(out, quick=quick, overwrite=overwrite)


@app.command("diff")
def diff_cmd(
    base: str = typer.Argument(..., help="The base model: 'tiny', a folder or a hub id."),
    model: str = typer.Argument(..., help="The fine-tune: a model folder, or a PEFT adapter "
                                "folder trained on BASE."),
    probes: List[str] = typer.Option(["retained"], "--probes", "-p",
                                     help="Suite or group name, or a JSONL file; repeatable."),
    n: Optional[int] = typer.Option(None, help="Items per probe (default: each suite's own)."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Folder (default: runs/diff- and the model "
                                       "path's last 3 parts, e.g. runs/diff-runs-lora-model)."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
    batch_size: int = typer.Option(32, min=1),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    trust_remote_code: bool = typer.Option(False, help="Run the model repo's own code (unsafe)."),
) -> None:
    """What did this fine-tune lose against its base? The same items on both, paired tests,
    the items lost and gained, weight drift per layer; no training."""
    from retain.diff import run_diff
    from retain.report.tables import print_run

    res = run_diff(base, model, probes=list(probes), n=n, seed=seed, out=out, device=device,
                   dtype=dtype, batch_size=batch_size, overwrite=overwrite,
                   trust_remote_code=trust_remote_code)
    print_run(res)


@app.command("report")
def report_cmd(
    dir: Path = typer.Argument(..., help="A run, comparison, sequence, merge-search, forecast "
                               "or attribution folder."),
) -> None:
    """Turn a run, comparison, sequence, merge-search, forecast or attribution folder into one
    self-contained DIR/report.html."""
    from retain.report.html import build_report

    typer.echo(f"wrote {build_report(dir)}")


@app.command("fisher")
def fisher_cmd(
    model: str = typer.Argument(..., help="A model folder (a fine-tune) or 'tiny'."),
    data: str = typer.Option(..., help="Its own domain's data: builtin:legal / builtin:support /"
                             " builtin:recipes or a JSONL file."),
    out: Path = typer.Option(..., help="The safetensors file to write."),
    n: int = typer.Option(64, help="Examples (seeded sample)."),
    estimator: str = typer.Option("empirical", help="empirical, sampled or batched (as EWC's)."),
    seq_len: int = typer.Option(256, help="Max tokens per example."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """A model's own diagonal Fisher on its own data, for retain merge --method fisher."""
    from retain.fisher_cli import write_fisher

    path = write_fisher(model, data, out, n=n, estimator=estimator, seq_len=seq_len, seed=seed,
                        device=device, dtype=dtype, overwrite=overwrite)
    typer.echo(f"Fisher written to {path}")


@app.command("gram")
def gram_cmd(
    model: str = typer.Argument(..., help="A model folder (a fine-tune) or 'tiny'."),
    data: str = typer.Option(..., help="Its own domain's data: builtin:legal / builtin:support /"
                             " builtin:recipes or a JSONL file."),
    out: Path = typer.Option(..., help="The safetensors file to write."),
    n: int = typer.Option(64, help="Examples (seeded sample)."),
    seq_len: int = typer.Option(256, help="Max tokens per example."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16, float16"),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """The input Gram matrices of a model's linear layers on its own data, for retain merge
    --method regmean (pad tokens excluded)."""
    from retain.gram_cli import write_gram

    path = write_gram(model, data, out, n=n, seq_len=seq_len, seed=seed, device=device,
                      dtype=dtype, overwrite=overwrite)
    typer.echo(f"Gram matrices written to {path}")


@app.command("data")
def data_cmd(
    spec: str = typer.Argument(..., help="A built-in domain: builtin:legal, builtin:support or "
                               "builtin:recipes."),
    out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write."),
    n: int = typer.Option(2000, help="Examples (the train split, seeded)."),
    seed: int = typer.Option(0),
) -> None:
    """Write a built-in domain as a JSONL data file ({"text": ...} a line): the examples
    --data builtin:... trains on, for wherever a data file is asked (e.g. the Trainer/TRL
    example), or as the shape of your own."""
    from retain.data import write_builtin_jsonl

    path = write_builtin_jsonl(spec, out, n=n, seed=seed)
    typer.echo(f"wrote {n} examples of {spec} to {path}")


def _register_merge() -> None:
    from retain.merging.cli import merge_command

    app.command("merge")(merge_command)


_register_merge()


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except RunsFailed as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
