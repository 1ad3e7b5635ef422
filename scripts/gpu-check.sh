#!/usr/bin/env bash
# GPU correctness check, the one script that runs on the device machine:
# every CUDA op against its host reference (tests/backend/test_cuda_ops.c),
# the same under compute-sanitizer (memcheck), and optionally the GEMV/copy
# bandwidth microbenchmark. Binaries come from a carried build directory
# (default build-cuda-dev: copy build-cuda-*/backend_test_cuda_ops there);
# without one it configures and builds build-cuda-dev itself (needs the
# deps of scripts/install-deps.sh). Logs go to $OUT (or /tmp/gpu-check).
#   usage: scripts/gpu-check.sh [--bench] [--no-sanitizer]
set -u
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/gpu-check}
BIN=${HEARTH_CUDA_BIN:-build-cuda-dev}
BENCH=0
SAN=1
for a in "$@"; do
    case "$a" in
        --bench) BENCH=1 ;;
        --no-sanitizer) SAN=0 ;;
        *) echo "usage: $0 [--bench] [--no-sanitizer]" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUTDIR"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUTDIR/device.txt"

if [ ! -x "$BIN/backend_test_cuda_ops" ]; then
    echo "== no carried build in $BIN: building"
    cmake -S . -B "$BIN" -G Ninja -DHEARTH_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a-real &&
        cmake --build "$BIN" -j16 --target backend_test_cuda_ops || { echo "build failed"; exit 1; }
fi

# cuBLASLt is linked dynamically; fall back to the pip wheel's copy if the
# system loader does not know it
if ldd "$BIN/backend_test_cuda_ops" | grep -q 'not found'; then
    d=$(python3 -c 'import nvidia.cublas as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
    export LD_LIBRARY_PATH="${d}:${LD_LIBRARY_PATH:-}"
    ldd "$BIN/backend_test_cuda_ops" | grep -i cublas
fi

rc=0
echo "== test_cuda_ops"
if [ "$BENCH" = 1 ]; then export HEARTH_CUDA_BENCH=1; fi
HEARTH_TEST_VERBOSE=1 "$BIN/backend_test_cuda_ops" 2>&1 | tee "$OUTDIR/test_cuda_ops.log"
r=${PIPESTATUS[0]}
echo "test_cuda_ops rc=$r"
[ "$r" = 0 ] || rc=1
unset HEARTH_CUDA_BENCH

if [ "$SAN" = 1 ] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck"
    compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/backend_test_cuda_ops" > "$OUTDIR/sanitizer.log" 2>&1
    r=$?
    tail -n 5 "$OUTDIR/sanitizer.log"
    echo "compute-sanitizer rc=$r"
    [ "$r" = 0 ] || rc=1
fi
echo "gpu-check: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
