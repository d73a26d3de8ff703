#!/usr/bin/env bash
# benchmarks/gpu/run_all.sh - everything the first GPU session runs, in one call.
#
#   bash benchmarks/gpu/run_all.sh [OUT_DIR]        (from anywhere; it works in the repo root)
#
# With this workplace's GPU tool: first, here, `bash benchmarks/gpu/fetch_wheels.sh` (cffi for
# the GPU image's Python 3.12, into the git-ignored .whl/), then one call
#   run(command="bash benchmarks/gpu/run_all.sh", carry=[".whl"], timeout_s=600)
# and copy the returned files (files_at) into benchmarks/results/gpu/<date>/ and commit them.
#
# OUT_DIR: $OUT when set (the GPU tool's result folder), else benchmarks/results/gpu/run-<time>.
# Steps, in order; every step runs even if an earlier one failed, and each is recorded in
# OUT_DIR/run.log with its exact command, exit code and seconds:
#   0. environment: nvidia-smi, Python, torch and its CUDA; wheels carried in .whl/ (cffi and
#      pycparser, which the GPU image lacks: benchmarks/gpu/fetch_wheels.sh) go to a private
#      site directory, never into the system's Python
#   1. build: pip install --no-build-isolation -C cmake.define.LLMC_CUDA=ON into that site
#      directory (the CUDA backend must build: LLMC_CUDA=ON fails loudly otherwise); if pip
#      cannot build, CMake directly, laid out as the wheel would be
#   2. host checks: test_cuda_host_math.py, test_cuda_host_plan.py, test_cuda_backend.py
#   3. GPU parity: pytest parity_tests/test_cuda_parity.py (fp32 per layer with TF32 off, bf16
#      against autocast, CUDA vs the CPU core, determinism, the bf16 weight copy, the
#      classifier beyond 2^31 elements, device API), the trajectory test excluded here ...
#   4. ... and run on its own: the 5-step clipped AdamW trajectory against PyTorch and the CPU
#   5. benchmark: benchmarks/gpu_bench.py (GPT-2 124M, T=1024, B 16 and 64 first, then 32 and
#      48; pyllmc bf16/fp32 against PyTorch eager and torch.compile bf16), stopped from
#      starting new configurations when the time budget runs out
# Files in OUT_DIR (at most 8, the tool's limit): run.log, build.log, tests.log, parity.xml,
# trajectory.xml, gpu_bench-<gpu>-<time>.json and .md. Copy them to benchmarks/results/gpu/.
#
# Environment: PY (default python3), GPU_BUDGET_S (seconds for the whole script, default 540:
# the tool allows 600 per call), BENCH_ARGS (default "--steps 5 --warmup 2"), SITE (the
# private site directory, default /tmp/pyllmc-gpu-site), SKIP_BUILD=1 (use the pyllmc that
# is importable already). On a machine without a GPU every GPU step skips or reports "no
# CUDA device": that is the rehearsal (run there with PY=.venv/bin/python).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
START=$(date +%s)
PY="${PY:-python3}"
BUDGET="${GPU_BUDGET_S:-540}"
BENCH_ARGS="${BENCH_ARGS:---steps 5 --warmup 2}"
SITE="${SITE:-/tmp/pyllmc-gpu-site}"
if [ $# -ge 1 ]; then
    RES="$1"
elif [ -n "${OUT:-}" ]; then
    RES="$OUT"
else
    RES="$ROOT/benchmarks/results/gpu/run-$(date -u +%Y%m%d-%H%M%S)"
fi
mkdir -p "$RES"
LOG="$RES/run.log"
: >"$LOG"
export PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME LIMIT_S LOGFILE COMMAND...: run it under `timeout`, append its output to LOGFILE,
# record command, exit code and seconds in run.log; never stops the script
step() {
    local name="$1" limit="$2" out="$3"
    shift 3
    local t0 rc
    t0=$(date +%s)
    if [ "$limit" -lt 5 ]; then
        say "== $name: SKIPPED (time budget spent)"
        return 0
    fi
    say "== $name (limit ${limit}s): $*"
    echo "== $name: $*" >>"$out"
    timeout --kill-after=10 "$limit" "$@" >>"$out" 2>&1
    rc=$?
    say "   -> exit $rc in $(($(date +%s) - t0))s"
    [ "$rc" -eq 124 ] && say "   (stopped at its time limit)"
    return 0
}

say "run_all.sh at $(date -u +%FT%TZ) in $ROOT, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
say "budget ${BUDGET}s, PY=$PY, SITE=$SITE, results in $RES"

# CMake's CUDA detection and the host tests look for nvcc on PATH
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
    say "nvcc not on PATH: using /usr/local/cuda/bin/nvcc"
fi

# ---- 0. environment
{
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    echo "== nvcc"
    nvcc --version 2>&1 | tail -2 || echo "(no nvcc)"
    echo "== python / torch"
    "$PY" -c 'import sys, torch; print(sys.version.split()[0], sys.executable); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")' 2>&1
} >>"$LOG"
mkdir -p "$SITE"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import cffi, pycparser' 2>/dev/null; then
    if ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
        step "carried wheels" 120 "$LOG" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "$ROOT"/.whl/*.whl
    else
        say "!! cffi/pycparser missing and no wheels in .whl/ (run benchmarks/gpu/fetch_wheels.sh where pip works, carry .whl)"
    fi
fi

# ---- 1. build
BUILD_LOG="$RES/build.log"
: >"$BUILD_LOG"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
    step "build (pip, LLMC_CUDA=ON)" "$(($(left) < 420 ? $(left) : 420))" "$BUILD_LOG" \
        "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir --upgrade --target "$SITE" \
        -C cmake.define.LLMC_CUDA=ON "$ROOT"
    if ! "$PY" -c 'import pyllmc, sys; sys.exit(0 if pyllmc.cuda_built() else 1)' >>"$BUILD_LOG" 2>&1; then
        say "!! pip build gave no CUDA-enabled pyllmc: building with CMake directly"
        B="$ROOT/build-gpu"
        step "cmake configure" 120 "$BUILD_LOG" cmake -S core_c -B "$B" -DLLMC_CUDA=ON -DCMAKE_BUILD_TYPE=Release
        step "cmake build" "$(($(left) < 300 ? $(left) : 300))" "$BUILD_LOG" cmake --build "$B" -j "$(nproc)"
        rm -rf "$SITE/pyllmc"
        mkdir -p "$SITE/pyllmc/include"
        cp -r bindings/pyllmc/. "$SITE/pyllmc/"
        cp -r reference "$SITE/pyllmc/reference"
        cp core_c/include/llmc.h "$SITE/pyllmc/include/"
        cp "$B"/libllmc.so "$B"/_kernel_shim.so "$SITE/pyllmc/" 2>>"$BUILD_LOG"
    fi
fi
step "pyllmc info" 60 "$LOG" "$PY" -m pyllmc info
"$PY" -c 'import pyllmc; print("pyllmc imported from", pyllmc.__file__)' >>"$LOG" 2>&1

# ---- 2-4. tests
TESTS_LOG="$RES/tests.log"
: >"$TESTS_LOG"
step "host checks" 180 "$TESTS_LOG" "$PY" -m pytest -q -ra -p no:cacheprovider \
    parity_tests/test_cuda_host_math.py parity_tests/test_cuda_host_plan.py parity_tests/test_cuda_backend.py
# leave the benchmark at least 150 s of what is left
step "GPU parity" "$(($(left) - 150 < 300 ? $(left) - 150 : 300))" "$TESTS_LOG" "$PY" -m pytest -ra -v \
    -p no:cacheprovider -m gpu -k "not trajectory" --junitxml="$RES/parity.xml" parity_tests/test_cuda_parity.py
step "trajectory" "$(($(left) - 120 < 120 ? $(left) - 120 : 120))" "$TESTS_LOG" "$PY" -m pytest -ra -v \
    -p no:cacheprovider -m gpu -k trajectory --junitxml="$RES/trajectory.xml" parity_tests/test_cuda_parity.py
# the verdicts in run.log: failures by name, and each run's summary line
grep -E "^(FAILED|ERROR) |^=+ .*[0-9]+ (passed|failed|skipped|deselected|error).* =+$|^[0-9]+ (passed|failed|skipped)" \
    "$TESTS_LOG" | sed 's/^/   /' >>"$LOG"

# ---- 5. benchmark
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
step "benchmark" "$(($(left) - 15))" "$LOG" "$PY" benchmarks/gpu_bench.py --out "$RES" \
    --deadline-s "$(($(left) - 60 > 1 ? $(left) - 60 : 1))" $BENCH_ARGS

say "done in $(($(date +%s) - START))s; files: $(cd "$RES" && ls | tr '\n' ' ')"
