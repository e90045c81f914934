#!/usr/bin/env bash
# gpu_check.sh: everything retain checks on a lent GPU machine, in one short run that stops
# itself within GPU_CHECK_BUDGET_S (default 450 s, under 8 minutes), and prints one table:
#   0. find a Python with retain's dependencies (.venv/bin/python, else python3) and say what is
#      missing; wheels carried in .whl/ are installed beside it (the device machine's python3 has
#      torch but no pydantic, and reaches no registry); only where no Python has torch is a .venv
#      created and installed as the Makefile does (which needs the package registry);
#   1. pytest tests/test_cuda.py (CUDA-only tests: they skip without a GPU);
#   2. the architecture matrix (tests/models, benchmarks/arch_matrix.py) on the GPU in bf16
#      autocast over fp32 master weights -> arch_matrix_cuda.md;
#   3. with two GPUs or more: 2-GPU DDP and FSDP against one GPU (benchmarks/gpu_multi.py,
#      NCCL) -> multi/gpu_multi.md; with one, the row says so;
#   4. benchmarks/gpu_bench.py: tokens/s, peak memory, train and Fisher time of full / LoRA / EWC
#      on a random-init Qwen2-0.5B-shaped model -> gpu_check.json and gpu_check.md;
#   5. pytest tests/train (the training loop's quick tests).
# Each step runs under `timeout`; a failed step does not stop the next. Results, the log and the
# table go to $OUT/benchmarks/results when OUT is set (the device machine's returned folder),
# else to benchmarks/results. GPU_CHECK_DEVICE=cpu runs the same steps on the CPU (a dry run of
# the script itself; gpu_bench then uses its small "smoke" size).
#
#     bash benchmarks/gpu_check.sh            # from anywhere; it cds to the repository root
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
RESULTS=${OUT:+$OUT/benchmarks/results}
RESULTS=${RESULTS:-benchmarks/results}
mkdir -p "$RESULTS" || exit 1
RESULTS=$(cd "$RESULTS" && pwd)
LOG=$RESULTS/gpu_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
finish() {  # let tee write the last lines before the script ends (and $OUT is collected)
    exec 1>&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$1"
}

BUDGET=${GPU_CHECK_BUDGET_S:-450}
DEV=${GPU_CHECK_DEVICE:-cuda}
T0=$SECONDS
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# The working tree's retain, whether or not it is installed (an editable install is the same).
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

declare -a SUMMARY=()
say() { printf '\n=== [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
left() { echo $((BUDGET - (SECONDS - T0))); }

# step NAME CAP_S CMD...: run CMD under timeout (CAP_S, or less when the budget is short).
step() {
    local name=$1 cap=$2
    shift 2
    local t=$(( $(left) - 10 ))
    (( t > cap )) && t=$cap
    if (( t < 20 )); then
        say "$name: skipped (the ${BUDGET} s budget is spent)"
        SUMMARY+=("| $name | SKIPPED (no time left) | |")
        return
    fi
    say "$name (timeout ${t} s): $*"
    local start=$SECONDS rc steplog
    steplog=$(mktemp)
    timeout -k 15 "$t" "$@" 2>&1 | tee "$steplog"
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - start)) verdict counts
    case $rc in
        0) verdict="ok" ;;
        124|137) verdict="TIMEOUT after ${took} s (limit ${t} s)" ;;
        *) verdict="FAILED (exit $rc)" ;;
    esac
    # pytest's counts ("5 passed, 1 skipped"; all skipped on a GPU machine means no CUDA), or
    # the matrix's "N of M tests passed"
    counts=$(tail -n 3 "$steplog" | grep -Eo '[0-9]+ (passed|failed|skipped|errors?|xfailed|xpassed)|[0-9]+ of [0-9]+ tests passed' \
        | paste -sd, - | sed 's/,/, /g')
    rm -f "$steplog"
    SUMMARY+=("| $name | $verdict${counts:+ ($counts)} | $took |")
}

# ---------------------------------------------------------------- 0. the Python environment
# What retain imports (pyproject's "datasets" is not imported) plus pytest for the tests.
NEEDED="torch transformers peft accelerate safetensors tokenizers pydantic typer rich matplotlib yaml numpy"
CANDIDATES=("$ROOT/.venv/bin/python" python3)
missing() {  # the modules of $NEEDED (and pytest) that $1 cannot import
    "$1" - $NEEDED pytest <<'EOF' 2>/dev/null || echo "python-broken"
import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
EOF
}
has() { command -v "$1" >/dev/null 2>&1 && "$1" -c "import $2" 2>/dev/null; }
pick_python() {  # PY: the first candidate that lacks nothing
    PY=""
    for cand in "${CANDIDATES[@]}"; do
        if command -v "$cand" >/dev/null 2>&1 && [ -z "$(missing "$cand")" ]; then
            PY=$cand
            return
        fi
    done
}

say "environment"
pick_python
if [ -z "$PY" ]; then
    for cand in "${CANDIDATES[@]}"; do
        command -v "$cand" >/dev/null 2>&1 && echo "$cand lacks: $(missing "$cand")"
    done
fi
# Wheels carried in .whl/ (the device machine's python3 has torch, transformers, peft and pytest
# but no pydantic, and fetches nothing): installed beside it, into a folder on PYTHONPATH.
if [ -z "$PY" ] && compgen -G ".whl/*.whl" >/dev/null; then
    SITE=${TMPDIR:-/tmp}/retain-site
    for cand in "${CANDIDATES[@]}"; do
        has "$cand" torch || continue
        say "installing the carried wheels into $SITE for $cand:" $(cd .whl && ls)
        if "$cand" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" .whl/*.whl; then
            export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH#"$ROOT/src"}"
            SUMMARY+=("| wheels from .whl/ | installed into $SITE | |")
        else
            SUMMARY+=("| wheels from .whl/ | install FAILED | |")
        fi
        break
    done
    pick_python
fi
# No torch anywhere: build .venv as the Makefile does (plain torch: a CUDA build on a GPU
# machine), if the package registry answers; without one this fails within seconds.
if [ -z "$PY" ] && ! has "${CANDIDATES[0]}" torch && ! has python3 torch; then
    if command -v python3 >/dev/null 2>&1; then
        say "no torch anywhere: creating .venv and installing (needs the package registry)"
        [ -x .venv/bin/python ] || python3 -m venv .venv
        PIP=(timeout -k 5 150 .venv/bin/python -m pip install -q --retries 0 --timeout 15)
        if [ -x .venv/bin/python ]; then
            "${PIP[@]}" torch || echo "pip install torch failed (no registry?)"
            "${PIP[@]}" -e '.[test]' || echo "pip install -e '.[test]' failed (no registry?)"
        fi
        pick_python
    else
        echo "no python3 on this machine: nothing can run"
    fi
fi
if [ -z "$PY" ]; then
    # Nothing complete: use the best there is (the benchmark's imports, else torch) and let the
    # steps say what breaks.
    for imports in "torch, transformers, peft, accelerate, pydantic, yaml" "torch"; do
        for cand in "${CANDIDATES[@]}"; do
            if has "$cand" "$imports"; then
                PY=$cand
                break 2
            fi
        done
    done
    echo "WARNING: no Python with all of retain's dependencies; ${PY:-none} lacks:" \
         "${PY:+$(missing "$PY")}"
    if [ -n "$PY" ] && [[ " $(missing "$PY") " == *" pydantic "* ]]; then
        cat <<'EOF'
To carry pydantic (Python 3.12 on the device machine), in the repository root on a machine with pip:
  echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    typing-extensions==4.16.0
then run with carry [".whl"]: this script installs them.
EOF
    fi
fi
if [ -n "$PY" ]; then
    echo "python: $PY"
    "$PY" - <<'EOF'
import sys
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA build {torch.version.cuda})")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"CUDA: {torch.cuda.device_count()} device(s), {p.name}, {p.total_memory / 2**30:.0f} GiB, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
else:
    print("WARNING: torch sees no CUDA device: the CUDA tests will skip and the benchmark fails")
try:
    import retain, transformers
    print(f"retain {retain.__version__} from {retain.__file__}, transformers {transformers.__version__}")
except Exception as e:
    print(f"WARNING: cannot import retain: {type(e).__name__}: {e}")
EOF
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total \
        --format=csv,noheader
    NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
    SUMMARY+=("| environment | $PY, $NGPU GPU(s)$( [ -n "$(missing "$PY")" ] && echo ", missing: $(missing "$PY")") | |")
else
    SUMMARY+=("| environment | NO usable Python (torch missing everywhere) | |")
fi

# ---------------------------------------------------------------- 1-5. tests and benchmarks
if [ -n "$PY" ]; then
    HAS_PYTEST=0
    "$PY" -c 'import pytest' 2>/dev/null && HAS_PYTEST=1
    PYTEST=("$PY" -m pytest -rfEs -p no:cacheprovider)  # -q comes from pyproject.toml
    if (( HAS_PYTEST )); then
        step "tests/test_cuda.py" 120 "${PYTEST[@]}" tests/test_cuda.py
        step "architecture matrix ($DEV, bf16 autocast)" 150 "$PY" benchmarks/arch_matrix.py \
            --device "$DEV" --out "$RESULTS/arch_matrix_$DEV.md"
    else
        SUMMARY+=("| tests, architecture matrix | SKIPPED (pytest is not installed for $PY) | |")
    fi
    if [ "$DEV" = cpu ] || (( NGPU >= 2 )); then
        step "2 x DDP and 2 x FSDP against 1 ($DEV)" 150 "$PY" benchmarks/gpu_multi.py \
            --device "$DEV" --steps 20 --out "$RESULTS/multi"
    else
        SUMMARY+=("| 2 x DDP and 2 x FSDP against 1 | not run: $NGPU GPU(s) here, it needs 2 | |")
    fi
    SIZE=qwen2-0.5b
    [ "$DEV" = cpu ] && SIZE=smoke
    step "gpu_bench.py ($SIZE)" 150 "$PY" benchmarks/gpu_bench.py --size "$SIZE" \
        --device "$DEV" --steps 20 --out "$RESULTS"
    (( HAS_PYTEST )) && step "tests/train" 60 "${PYTEST[@]}" tests/train
fi

# ---------------------------------------------------------------- summary: one table
say "summary (${SECONDS}s since start)"
{
    echo "gpu_check.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - T0)) s, device $DEV"
    echo
    echo "| check | result | s |"
    echo "|---|---|---|"
    for line in "${SUMMARY[@]}"; do echo "$line"; done
} | tee "$RESULTS/gpu_check_summary.md"
for f in "$RESULTS/multi/gpu_multi.md" "$RESULTS/gpu_check.md"; do
    [ -f "$f" ] && { echo; cat "$f"; }
done
echo
echo "the matrix's cells: $RESULTS/arch_matrix_$DEV.md; files in $RESULTS:" $(cd "$RESULTS" && ls)
printf '%s\n' "${SUMMARY[@]}" | grep -qE 'FAILED|TIMEOUT|NO usable' && finish 1
finish 0
