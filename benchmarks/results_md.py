"""RESULTS.md from the bench's JSON report: the machine and packages, every target met or
missed, each section's figures (median [min-max] of the repetitions, the baseline beside it and
their ratio per repetition), and the scaling section extrapolated from the measured costs."""

from __future__ import annotations

TITLES = {
    "probes": "Probes vs lm-evaluation-harness",
    "train": "Training step vs transformers.Trainer; penalty overheads",
    "fisher": "Fisher: retain's per-sample estimator vs a per-sample loop",
    "merges": "Merges vs mergekit",
    "demo": "The demo's wall time",
}
# Model shapes of the scaling section: (name, parameters, layers, hidden size, KV heads x dim).
SHAPES = (("0.5B (Qwen2-0.5B shape)", 0.49e9, 24, 896, 2 * 64),
          ("7B (Llama-2-7B shape)", 6.7e9, 32, 4096, 32 * 128),
          ("70B (Llama-2-70B shape)", 69e9, 80, 8192, 8 * 128))
GPU = {"name": "one H100/H200-class GPU", "flops": 989e12, "mfu": 0.4, "bw": 3.35e12,
       "mem_gb": 80}


def _num(x: float) -> str:
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.1:
        return f"{x:.2f}"
    return f"{x:.1e}" if ax else "0"


def _span(s: dict | None) -> str:
    if not s:
        return "-"
    if s["n"] == 1:
        return _num(s["median"])
    return f"{_num(s['median'])} [{_num(s['min'])}-{_num(s['max'])}]"


def _ratio(row: dict) -> str:
    r = row.get("ratio")
    if not r:
        return "-"
    if row["ratio_kind"] == "overhead":
        f = lambda v: f"{100 * v:+.1f}%"  # noqa: E731
        return f"{f(r['median'])} [{f(r['min'])} to {f(r['max'])}]"
    return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"


def _met(row: dict) -> str:
    met = row.get("met")
    return "-" if met is None else ("**met**" if met else "**missed**")


def targets_table(report: dict) -> str:
    lines = ["| target | figure | result |", "|---|---|---|"]
    for sec in report["sections"].values():
        for row in sec.get("figures", []):
            if row.get("met") is None:
                continue
            if row.get("check"):
                lines.append(f"| {row['name']} | {row['detail']} | {_met(row)} |")
            elif row.get("target_text"):
                fig = _ratio(row) if "ratio" in row else f"{_span(row['ours'])} {row['unit']}"
                lines.append(f"| {row['name']}: {row['target_text']} | {fig} | {_met(row)} |")
    return "\n".join(lines)


def _section(name: str, sec: dict) -> list[str]:
    out = [f"## {TITLES.get(name, name)}", ""]
    if "error" in sec:
        return out + ["The section failed:", "", "```", sec["error"], "```", ""]
    rows = [r for r in sec.get("figures", []) if not r.get("check")]
    if rows:
        out += ["| figure | retain | baseline | baseline's figure | ratio | target |",
                "|---|---|---|---|---|---|"]
        for r in rows:
            target = f"{r['target_text']}: {_met(r)}" if r.get("target_text") else "-"
            out.append(f"| {r['name']} ({r['unit']}) | {_span(r['ours'])} | {r['baseline'] or '-'}"
                       f" | {_span(r.get('base'))} | {_ratio(r)} | {target} |")
        out.append("")
    checks = [r for r in sec.get("figures", []) if r.get("check")]
    for r in checks:
        mark = "" if r.get("met") is None else f" ({_met(r)})"
        out.append(f"- {r['name']}: {r['detail']}{mark}")
    for note in sec.get("notes", []):
        out.append(f"- {note}")
    if sec.get("config"):
        out.append(f"- settings: {', '.join(f'{k} {v}' for k, v in sec['config'].items())}")
    out += [f"- section wall time {sec['wall_s']:.0f} s", ""]
    return out


def _scaling(report: dict) -> list[str]:
    """Time and memory of a probe pass and of EWC's Fisher for larger models, from the costs
    measured here (tokens a pass processes, achieved FLOP/s of this machine) and stated
    assumptions about a GPU."""
    probes = report["sections"].get("probes", {}).get("config", {})
    train = report["sections"].get("train", {})
    pass_ = probes.get("probe_pass")
    plain = next((r for r in train.get("figures", []) if r["name"].startswith("training step")),
                 None)
    out = ["## Scaling on paper", ""]
    if not pass_ or not plain:
        return out + ["Needs the probes and train sections of the same run.", ""]
    n_tiny = train["config"]["params"]
    cpu_flops = 6 * n_tiny * plain["ours"]["median"]  # fwd + bwd = 6 N FLOPs a token
    scored, decode_steps = pass_["scored_tokens"], pass_["decode_steps"]
    fisher_tokens = train["config"]["fisher_tokens"]
    out += [
        "Measured here, used below: the default probe pass (the six retained suites and the "
        f"domain, {pass_['items']} items) runs {scored:,} tokens through the model in prefill or "
        f"scoring forwards and {decode_steps} greedy decoding steps ({pass_['decode_rows']:,} "
        f"generated rows x steps); it took {_num(pass_['seconds'])} s on the built-in "
        f"model ({n_tiny / 1e6:.1f}M parameters). This CPU trains at "
        f"{cpu_flops / 1e9:.0f} GFLOP/s (6 N FLOPs a token at {_num(plain['ours']['median'])} "
        f"tokens/s). EWC's Fisher takes 64 reference examples ({fisher_tokens:,} tokens), one "
        "forward and backward each.",
        "",
        f"Assumed for a GPU: {GPU['name']}, {GPU['flops'] / 1e12:.0f} TFLOP/s dense bf16 at "
        f"{GPU['mfu']:.0%} utilization for prefill, scoring and backward; each decoding step "
        f"reads every weight once ({GPU['bw'] / 1e12:.2f} TB/s). Memory in bf16: weights 2 N "
        "bytes; the probe pass adds the KV cache of a 64-prompt batch of 512 tokens; the Fisher "
        "adds its float32 accumulator (4 N) and one per-sample gradient at a time (chunk 1; "
        "retain's default chunk of 8 holds 8 gradients, 4 N bytes each, so large models need "
        "`chunk_size: 1`); training with EWC adds the Fisher and anchor (8 N, float32) to "
        "AdamW's 16 N of master weights and moments.",
        "",
        "| model | probe pass, this CPU | probe pass, GPU | probe pass memory | Fisher, GPU | "
        "Fisher memory | EWC training memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n, layers, hidden, kv in SHAPES:
        cpu_pass = (2 * n * scored + 2 * n * pass_["decode_rows"]) / (cpu_flops / 3)
        gpu_prefill = 2 * n * scored / (GPU["flops"] * GPU["mfu"])
        gpu_decode = decode_steps * 2 * n / GPU["bw"]
        kv_gb = 2 * layers * kv * 2 * 64 * 512 / 1e9
        fisher_s = 6 * n * fisher_tokens / (GPU["flops"] * GPU["mfu"])
        w = 2 * n / 1e9
        out.append(f"| {name} | {_num(cpu_pass / 3600)} h | {_num(gpu_prefill + gpu_decode)} s "
                   f"| {_num(w + kv_gb)} GB | {_num(fisher_s)} s | {_num(w + 4 * n / 1e9 + 2 * n / 1e9)}"
                   f" GB | {_num((16 + 8) * n / 1e9 + w)} GB + activations |")
    out += [
        "",
        f"A 70B model does not fit one {GPU['mem_gb']} GB GPU for any of these (140 GB of bf16 "
        "weights): it needs the weights sharded over processes, which retain's probes and "
        "Fisher do not do (FSDP and DeepSpeed are untested).",
        "",
        "What scales with processes (`accelerate launch`, `torchrun`): training is data "
        "parallel (each process a share of the global batch; tokens/s grows with processes "
        "until communication dominates); probing shards the items over processes and gathers "
        "the outcomes, so a probe pass and every guard check divide by the number of processes; "
        "fan-out (`--list/--only/--collect`) spreads whole runs over a scheduler's jobs. What "
        "does not: EWC's Fisher and MAS's importance are estimated on rank 0 and broadcast "
        "(their time is that of one process); a merge streams tensor by tensor in one process "
        "(bounded by disk and memory bandwidth); the comparison's statistics are negligible.",
        "",
    ]
    return out


def render(report: dict) -> str:
    m = report["machine"]
    v = report["versions"]
    pv = report.get("peer_versions") or {}
    mode = "quick (smaller inputs; not the record)" if report["quick"] else "full"
    lines = [
        "# retain benchmarks",
        "",
        f"Written by `make bench` (`python benchmarks/bench.py`{' --quick' if report['quick'] else ''})"
        f" on {report['started']}: {mode}, {report['reps']} repetitions of every figure, "
        f"{report['wall_s'] / 60:.1f} min in all. Each figure is the median of the repetitions "
        "with their range in brackets; a ratio is taken per repetition against the baseline "
        "measured in the same round (retain, then the baseline), then summarised the same way.",
        "",
    ]
    for name, when in (report.get("remeasured") or {}).items():  # bench.py --update
        lines += [f"The {name} section was measured again on {when['started']} (load average "
                  f"{when['load_avg'][0]:.2f} at its start, {when['wall_s']:.0f} s, on "
                  f"{when.get('cpu', 'the same machine')}, 2 cores, "
                  + ", ".join(f"{k} {v}" for k, v in (when.get("versions") or {}).items() if v)
                  + "); the other sections are from the run below.", ""]
    lines += [
        "## Machine and packages",
        "",
        f"- {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB memory, GPU: {m['gpu'] or 'none'};"
        f" Python {m['python']}, {m['torch_threads']} torch threads; load average "
        f"{m['load_avg'][0]:.2f} at the start, {report['load_avg_end'][0]:.2f} at the end",
        "- retain's environment: " + ", ".join(f"{k} {v[k]}" for k in v if v[k]),
        "- peers' venv (`.bench/peers`, never retain's dependencies): "
        + (", ".join(f"{k} {pv[k]}" for k in pv if pv[k]) or "not installed"),
        "",
        "## Targets",
        "",
        targets_table(report),
        "",
    ]
    for name, sec in report["sections"].items():
        lines += _section(name, sec)
    lines += _scaling(report)
    return "\n".join(lines) + "\n"
