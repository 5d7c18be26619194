#!/usr/bin/env bash
# Validate the fused CUDA G2 gate kernel on a GPU machine, in one run of at most 540 s:
#   env       versions (env.log)
#   locks     remove stale torch-extension build locks (a killed build leaves one, and the
#             next load would wait on it forever)
#   build     the CUDA extension (Hopper: TORCH_CUDA_ARCH_LIST=9.0, cached in
#             $TORCH_EXTENSIONS_DIR) (build.log)
#   tests     tests/test_cuda_kernel.py, test_cuda_training_step.py, test_cuda_dispatch.py
#             on the CUDA backend only (G2LSTM_TEST_BACKENDS=cuda: a missing GPU fails them,
#             it does not skip them); not the compile-only test_cuda_compile.py (tests.log)
#   graph     the CUDA graph test's result, read from tests.log
#   memcheck  compute-sanitizer --tool memcheck on tiny calls of every kernel variant
#             (python -m fairseq_g2lstm.cuda.memcheck; memcheck.log); skipped, with the
#             reason, where the tool is missing or refuses the device
#   bench-float32, bench-bfloat16
#             benchmarks/gate_kernel.py, float32 (TF32 off and on) and bfloat16
#             (bench-*.md, bench-*.log)
# Everything goes under $OUT (default /tmp/g2lstm-gpu-check). $OUT/summary.txt is rewritten
# after every phase (and when one starts), so a run killed from outside still says what it
# reached. One deadline for the whole run (G2LSTM_GPU_CHECK_DEADLINE, default 540 s): each
# phase gets what is left (some have a cap), and a phase with less left than its minimum
# is skipped. Exit status 0 only when no phase failed or ran out of time.
#
#   bash scripts/gpu_check.sh              # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --fake-gpu   # (or G2LSTM_FAKE_GPU=1) on a CPU machine: a dry run
#                                          # of the script, the host emulation in the GPU's place
#
# --fake-gpu checks the script, not the kernel: it builds the host emulation instead of the
# CUDA extension, runs the tests on the host backend, runs the memcheck cases on the host
# without compute-sanitizer, skips the graph check, and dry-runs the benchmark on the CPU
# with the host emulation as the kernel row; the summary says so.
#
# Needs torch (with CUDA on the GPU machine), ninja, a C++ compiler, pytest, and nvcc for the
# CUDA build; neither fairseq nor the network. Wheel files placed in .whl/ (in the repository
# root) are installed into /tmp/site first, e.g. fairseq for the fairseq training-step test.
# Variables: OUT, PYTHON (default python3), TORCH_EXTENSIONS_DIR (default
# /tmp/g2lstm-torch-extensions), G2LSTM_GPU_CHECK_DEADLINE (seconds), and, for the test of
# this script, G2LSTM_GPU_CHECK_PYTEST_K (a pytest -k filter for the tests phase).
set -uo pipefail
cd "$(dirname "$0")/.."

FAKE="${G2LSTM_FAKE_GPU:-0}"
for arg in "$@"; do
    case "$arg" in
        --fake-gpu) FAKE=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done
[ "$FAKE" = "0" ] || FAKE=1

OUT="${OUT:-/tmp/g2lstm-gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEADLINE="${G2LSTM_GPU_CHECK_DEADLINE:-540}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/g2lstm-torch-extensions}"
mkdir -p "$TORCH_EXTENSIONS_DIR"
if [ "$FAKE" = 1 ]; then
    MODE="fake-gpu (host emulation on the CPU in the GPU's place: this checks the script, not the kernel)"
    BACKEND=host
else
    MODE="gpu"
    BACKEND=cuda
fi
export G2LSTM_TEST_BACKENDS="$BACKEND"

PHASES=(env locks build tests graph memcheck bench-float32 bench-bfloat16)
declare -A STATUS DETAIL
for p in "${PHASES[@]}"; do STATUS[$p]=pending; DETAIL[$p]=""; done
BUDGET=0
LIMIT=""
RC=0

left() { echo $((DEADLINE - SECONDS)); }

result_line() {
    local p bad="" open=""
    for p in "${PHASES[@]}"; do
        case "${STATUS[$p]}" in
            FAILED|TIMEOUT) bad+=" $p(${STATUS[$p]})" ;;
            pending|running) open+=" $p" ;;
        esac
    done
    if [ -n "$bad" ]; then
        echo "FAIL:$bad"
    elif [ -n "$open" ]; then
        echo "INCOMPLETE: not finished:$open"
    elif [ "$FAKE" = 1 ]; then
        echo "PASS (fake GPU: the script ran end to end; nothing ran on a GPU)"
    else
        echo "PASS: build, tests, graph and memcheck on the GPU"
    fi
}

write_summary() {
    local p
    {
        echo "# G2-LSTM kernel GPU check (scripts/gpu_check.sh): rewritten after every phase"
        echo "mode: $MODE"
        echo "deadline: ${DEADLINE}s; elapsed: ${SECONDS}s; written $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        for p in "${PHASES[@]}"; do
            printf '%-15s %-8s %s\n' "$p" "${STATUS[$p]}" "${DETAIL[$p]}"
        done
        echo "result: $(result_line)"
        for p in float32 bfloat16; do
            if [ -f "$OUT/bench-$p.md" ]; then
                echo
                echo "## bench-$p: goals (all tables in bench-$p.md)"
                sed -n '/^Stopped after/p; /^### Goals/,$p' "$OUT/bench-$p.md"
            fi
        done
    } > "$OUT/summary.txt.tmp" && mv -f "$OUT/summary.txt.tmp" "$OUT/summary.txt"
}

set_status() {  # phase status detail...
    local phase=$1 status=$2
    shift 2
    STATUS[$phase]=$status
    DETAIL[$phase]="$*"
    write_summary
    echo "== $phase: $status${*:+ - $*}"
}

clean_locks() {  # stale build locks of torch's cpp_extension (FileBaton) under TORCH_EXTENSIONS_DIR
    local found
    found=$(find "$TORCH_EXTENSIONS_DIR" -maxdepth 3 -type f -name lock 2>/dev/null | wc -l)
    find "$TORCH_EXTENSIONS_DIR" -maxdepth 3 -type f -name lock -delete 2>/dev/null
    echo "$found"
}

start_phase() {  # phase minimum cap: sets BUDGET, or marks the phase skipped and fails
    local phase=$1 minimum=$2 cap=$3 remaining
    remaining=$(left)
    if [ "$remaining" -lt "$minimum" ]; then
        set_status "$phase" skipped "deadline: ${remaining}s left, it needs at least ${minimum}s"
        return 1
    fi
    BUDGET=$remaining
    LIMIT="the deadline"
    if [ "$cap" -gt 0 ] && [ "$cap" -lt "$BUDGET" ]; then BUDGET=$cap; LIMIT="the phase's cap"; fi
    set_status "$phase" running "started at ${SECONDS}s, up to ${BUDGET}s"
    return 0
}

run_timed() {  # phase log command...: runs it under BUDGET; sets RC; marks a timeout
    local phase=$1 log=$2 began=$SECONDS
    shift 2
    timeout --kill-after=5 "$BUDGET" "$@" > "$log" 2>&1
    RC=$?
    PHASE_SECONDS=$((SECONDS - began))
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        local removed
        removed=$(clean_locks)
        set_status "$phase" TIMEOUT "killed by $LIMIT after ${PHASE_SECONDS}s (budget ${BUDGET}s; removed $removed build lock(s)); see $(basename "$log")"
        return 1
    fi
    return 0
}

last_line() { grep -v '^\s*$' "$1" 2>/dev/null | tail -1 | cut -c1-200; }

write_summary

# --- env ------------------------------------------------------------------------------------
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
env_probe() {
    date -u
    echo "mode: $MODE"
    if [ "$FAKE" = 0 ]; then nvidia-smi || echo "nvidia-smi: not found"; fi
    command -v nvcc && nvcc --version | tail -2
    "$PY" - <<'PYEOF'
import importlib, sys
import torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
for name in ("numpy", "pytest", "ninja", "fairseq"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "present"))
    except ImportError as err:
        print(name, "absent:", err)
import fairseq_g2lstm.cuda.validation  # the package must import without fairseq
print("fairseq_g2lstm imports")
PYEOF
}
export -f env_probe
export MODE FAKE PY
if start_phase env 5 90 && run_timed env "$OUT/env.log" bash -c env_probe; then
    cat "$OUT/env.log"
    if [ "$RC" -ne 0 ]; then
        set_status env FAILED "rc=$RC: $(last_line "$OUT/env.log")"
    elif [ "$FAKE" = 0 ] && grep -q '^device None' "$OUT/env.log"; then
        set_status env FAILED "torch sees no CUDA device"
    else
        set_status env ok "$(grep -E '^(torch|device) ' "$OUT/env.log" | tr '\n' ' ' | sed 's/ *$//')"
    fi
fi

# --- locks ----------------------------------------------------------------------------------
if start_phase locks 1 30; then
    set_status locks ok "removed $(clean_locks) stale build lock(s) under $TORCH_EXTENSIONS_DIR"
fi

# --- build ----------------------------------------------------------------------------------
if [ "$FAKE" = 1 ]; then BUILD_ARGS=(--host --verbose); else BUILD_ARGS=(--verbose); fi
if start_phase build 30 0 && run_timed build "$OUT/build.log" "$PY" -m fairseq_g2lstm.cuda.build "${BUILD_ARGS[@]}"; then
    if [ "$RC" -eq 0 ]; then
        set_status build ok "$(grep '^built ' "$OUT/build.log" | tail -1 | cut -c1-160)"
    else
        set_status build FAILED "rc=$RC: $(grep -m1 -iE 'error|FAILED' "$OUT/build.log" | cut -c1-200)"
    fi
fi

# --- tests ----------------------------------------------------------------------------------
TEST_ARGS=(tests/test_cuda_kernel.py tests/test_cuda_training_step.py tests/test_cuda_dispatch.py)
if [ -n "${G2LSTM_GPU_CHECK_PYTEST_K:-}" ]; then TEST_ARGS+=(-k "$G2LSTM_GPU_CHECK_PYTEST_K"); fi
NO_BUILD="no build (build: ${STATUS[build]})"
if [ "${STATUS[build]}" != ok ]; then
    set_status tests skipped "$NO_BUILD"
elif start_phase tests 60 240 \
        && run_timed tests "$OUT/tests.log" "$PY" -m pytest -v -rfEs -p no:cacheprovider "${TEST_ARGS[@]}"; then
    counts=$(grep -E '^=* ?[0-9]+ (passed|failed|error)' "$OUT/tests.log" | tail -1 | tr -d '=' | sed 's/^ *//')
    failed=$(grep -E '^(FAILED|ERROR) ' "$OUT/tests.log" | head -10 | cut -c1-160 | tr '\n' ';')
    if [ "$RC" -eq 0 ]; then
        set_status tests ok "$BACKEND backend: ${counts:-$(last_line "$OUT/tests.log")}"
    else
        set_status tests FAILED "rc=$RC, $BACKEND backend: ${counts:-$(last_line "$OUT/tests.log")}; ${failed}"
    fi
fi
grep -E '^(FAILED|ERROR) ' "$OUT/tests.log" 2>/dev/null | head -20

# --- graph (read from the tests) ------------------------------------------------------------
GRAPH_TEST="test_cuda_graph_replay_draws_fresh_noise"
if [ "$FAKE" = 1 ]; then
    set_status graph skipped "fake GPU: CUDA graphs need a GPU (the test skips on the host backend)"
else
    outcome=$(grep -oE "::$GRAPH_TEST\[cuda\] (PASSED|FAILED|ERROR|SKIPPED)" "$OUT/tests.log" 2>/dev/null | head -1 | awk '{print $2}')
    case "$outcome" in
        PASSED) set_status graph ok "$GRAPH_TEST passed: each replay drew fresh noise, the stream at the generator's offset" ;;
        FAILED|ERROR|SKIPPED) set_status graph FAILED "$GRAPH_TEST: $outcome (see tests.log)" ;;
        *) set_status graph skipped "not reached: the tests did not run $GRAPH_TEST" ;;
    esac
fi

# --- memcheck -------------------------------------------------------------------------------
find_sanitizer() {
    local dir
    command -v compute-sanitizer && return 0
    for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" "$(dirname "$(command -v nvcc 2>/dev/null || echo /none/bin/nvcc)")/.." /usr/local/cuda; do
        if [ -n "$dir" ] && [ -x "$dir/bin/compute-sanitizer" ]; then echo "$dir/bin/compute-sanitizer"; return 0; fi
    done
    return 1
}
MEMCHECK_LOG="$OUT/memcheck.log"
if [ "${STATUS[build]}" != ok ]; then
    set_status memcheck skipped "$NO_BUILD"
elif [ "$FAKE" = 1 ]; then
    if start_phase memcheck 20 120 && run_timed memcheck "$MEMCHECK_LOG" "$PY" -m fairseq_g2lstm.cuda.memcheck --backend host; then
        if [ "$RC" -eq 0 ] && grep -q "g2lstm memcheck cases: done" "$MEMCHECK_LOG"; then
            set_status memcheck skipped "fake GPU: compute-sanitizer not run; its cases ran on the host emulation without it: $(last_line "$MEMCHECK_LOG")"
        else
            set_status memcheck FAILED "the memcheck cases failed on the host emulation (rc=$RC): $(last_line "$MEMCHECK_LOG")"
        fi
    fi
elif ! SANITIZER=$(find_sanitizer); then
    set_status memcheck skipped "compute-sanitizer not found (PATH, CUDA_HOME, next to nvcc, /usr/local/cuda)"
elif start_phase memcheck 30 150 \
        && run_timed memcheck "$MEMCHECK_LOG" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool memcheck \
            --error-exitcode 3 --print-limit 20 "$PY" -m fairseq_g2lstm.cuda.memcheck --backend cuda; then
    errors=$(grep -oE 'ERROR SUMMARY: [0-9]+ error' "$MEMCHECK_LOG" | tail -1 | grep -oE '[0-9]+')
    if [ "$RC" -eq 0 ] && [ "${errors:-x}" = 0 ] && grep -q "g2lstm memcheck cases: done" "$MEMCHECK_LOG"; then
        set_status memcheck ok "0 errors: $(grep 'g2lstm memcheck cases: done' "$MEMCHECK_LOG" | cut -c1-120)"
    elif [ -n "$errors" ] && [ "$errors" != 0 ]; then
        set_status memcheck FAILED "$errors memcheck error(s); first: $(grep -m1 -E '^========= (Invalid|Misaligned|Out|Address|Program hit)' "$MEMCHECK_LOG" | cut -c1-160)"
    elif grep -q "Traceback" "$MEMCHECK_LOG"; then
        set_status memcheck FAILED "the cases raised under the sanitizer (rc=$RC): $(last_line "$MEMCHECK_LOG")"
    else
        set_status memcheck skipped "compute-sanitizer refused or could not start (rc=$RC): $(grep -m1 -iE 'error|not supported' "$MEMCHECK_LOG" | cut -c1-160)"
    fi
fi

# --- benchmark ------------------------------------------------------------------------------
bench() {  # dtype minimum cap
    local dtype=$1 phase="bench-$1" md="$OUT/bench-$1.md" args
    rm -f "$md"
    if [ "${STATUS[build]}" != ok ]; then
        set_status "$phase" skipped "$NO_BUILD"
        return
    fi
    start_phase "$phase" "$2" "$3" || return
    if [ "$FAKE" = 1 ]; then
        args=(--device cpu --kernel host --batches 2 --hiddens 8 --steps 3 --iters 2 --warmup 1)
    else
        # Python, CUDA and cuDNN start-up come out of the budget: the script stops starting sizes before it.
        args=(--budget-s $((BUDGET > 60 ? BUDGET - 30 : BUDGET / 2)))
    fi
    run_timed "$phase" "$OUT/bench-$dtype.log" "$PY" benchmarks/gate_kernel.py --dtype "$dtype" --out "$md" "${args[@]}" \
        || return
    local sizes
    sizes=$(grep -c '^### B=' "$md" 2>/dev/null)
    if [ "$RC" -eq 0 ]; then
        set_status "$phase" ok "${sizes:-0} size(s) in ${PHASE_SECONDS}s$(grep -q '^Stopped after' "$md" 2>/dev/null && echo ' (stopped early: time)'); tables in $(basename "$md")"
    else
        set_status "$phase" FAILED "rc=$RC: $(last_line "$OUT/bench-$dtype.log")"
    fi
}
bench float32 40 150
bench bfloat16 30 150

echo "== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
case "$(result_line)" in PASS*) exit 0 ;; *) exit 1 ;; esac
