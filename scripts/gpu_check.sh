#!/usr/bin/env bash
# Validate the fused CUDA G2 gate kernel on a GPU machine, in one go:
#   1. build the extension (torch.utils.cpp_extension.load, Hopper only, cached in /tmp);
#   2. run tests/test_cuda_*.py: the kernel against the torch reference on the GPU;
#   3. run benchmarks/gate_kernel.py;
# and write the logs under $OUT (env.log, build.log, tests.log, bench.md, bench.log,
# summary.txt). Exit status 0 only when the build and every test passed.
#
# Made for the lent GPU machines (torch with CUDA, nvcc, ninja and pytest; no fairseq,
# no network): needs nothing but this checkout. About 4-6 minutes, the first build
# included. With the device tool, from the repository root:
#     run(command="bash scripts/gpu_check.sh", timeout_s=600)
# Wheels carried in .whl/ (run(..., carry=[".whl"])) are installed into /tmp/site first,
# e.g. fairseq for the fairseq training-step test, or pytest where it is missing.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-/tmp/g2lstm-gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/g2lstm-torch-extensions}"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

{
    date -u
    nvidia-smi || true
    command -v nvcc && nvcc --version | tail -2
    "$PY" -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    "$PY" -c "import pytest; print('pytest', pytest.__version__)" || echo "pytest: missing (carry a wheel in .whl/)"
    "$PY" -c "import fairseq; print('fairseq', fairseq.__version__)" 2>/dev/null || echo "fairseq: absent (its training-step test skips)"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

echo "== build"
start=$SECONDS
timeout 420 "$PY" -m fairseq_g2lstm.cuda.build --verbose > "$OUT/build.log" 2>&1
build_rc=$?
tail -3 "$OUT/build.log"
echo "== build: rc=$build_rc in $((SECONDS - start))s"

tests_rc=1
if [ "$build_rc" -eq 0 ]; then
    echo "== tests"
    start=$SECONDS
    # The host-emulation backend already runs in CI; here only the GPU matters.
    timeout 360 "$PY" -m pytest -q -rs --noconftest -p no:cacheprovider -k "not host" tests/test_cuda_*.py \
        2>&1 | tee "$OUT/tests.log"
    tests_rc=${PIPESTATUS[0]}
    echo "== tests: rc=$tests_rc in $((SECONDS - start))s"
fi

bench_rc=1
if [ "$build_rc" -eq 0 ]; then
    echo "== benchmark"
    start=$SECONDS
    timeout 240 "$PY" benchmarks/gate_kernel.py --out "$OUT/bench.md" > "$OUT/bench.log" 2>&1
    bench_rc=$?
    echo "== benchmark: rc=$bench_rc in $((SECONDS - start))s"
fi

{
    echo "build: rc=$build_rc ($(tail -1 "$OUT/build.log" 2>/dev/null))"
    echo "tests: rc=$tests_rc ($(tail -1 "$OUT/tests.log" 2>/dev/null))"
    echo "benchmark: rc=$bench_rc"
    if [ -f "$OUT/bench.md" ]; then
        sed -n '/^### Goals/,$p' "$OUT/bench.md"
    else
        tail -5 "$OUT/bench.log" 2>/dev/null
    fi
} > "$OUT/summary.txt"
echo "== summary"
cat "$OUT/summary.txt"

[ "$build_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ]
