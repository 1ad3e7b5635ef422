#!/usr/bin/env bash
# GPU correctness check, the one script that runs on the device machine:
#  1. every CUDA op against its float64 host reference (tests/backend/test_cuda_ops.c),
#  2. every fixture model against its golden logits on the GPU
#     (tests/backend/test_cuda_golden.c, linked with the model libraries),
#  3. (1) again under compute-sanitizer memcheck, and a short decode run of (2),
#  4. with --bench: device copy bandwidth and GEMV vs cuBLASLt bandwidth.
# The device machine has no jansson/pcre2 dev packages, so build here and carry:
#   scripts/gpu-check.sh --prepare BUILD_DIR   (here: fills build-cuda-dev with
#                                               the two binaries + the fixtures)
#   then on the device (carry build-cuda-dev):  scripts/gpu-check.sh [--bench]
# Logs go to $OUT (or /tmp/gpu-check).
#
# Also a compiler launcher, until CMakeLists stops handing the C-only flags
# "-Werror -Wno-format-truncation" to nvcc (which reads the second as the value
# of its own -Werror and stops): configure with
#   -DCMAKE_CUDA_COMPILER_LAUNCHER="$PWD/scripts/gpu-check.sh;--nvcc-wrap"
# and the flags reach gcc through -Xcompiler instead (see docs/CUDA.md).
set -u
if [ "${1:-}" = "--nvcc-wrap" ]; then
    shift
    cmd="$1"
    shift
    args=()
    for a in "$@"; do
        case "$a" in
            -Werror) args+=("-Xcompiler=-Werror") ;;
            -Wno-format-truncation) args+=("-Xcompiler=-Wno-format-truncation") ;;
            -Wall | -Wextra) ;;
            *) args+=("$a") ;;
        esac
    done
    exec "$cmd" "${args[@]}"
fi
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/gpu-check}
BIN=${HEARTH_CUDA_BIN:-build-cuda-dev}
BENCH=0
SAN=1
if [ "${1:-}" = "--prepare" ]; then
    B=${2:?usage: $0 --prepare BUILD_DIR (configured with -DHEARTH_CUDA=ON)}
    set -e
    cmake --build "$B" -j2 --target backend_test_cuda_ops backend_test_cuda_golden hr_model hr_io hr_quant
    # CMake links tests/backend against hr_backend only; the golden test also
    # needs the model: link it by hand (its model symbols are weak, -u pulls them)
    syms="hr_model_load hr_model_free hr_model_kv_alloc hr_model_forward hr_model_vocab_size hr_model_config"
    syms="$syms hr_model_weight_bytes st_file_open st_file_close st_file_find"
    u=$(for s in $syms; do printf -- '-Wl,-u,%s ' "$s"; done)
    cuda=$(dirname "$(dirname "$(command -v nvcc)")")
    (cd "$B" && g++ $u CMakeFiles/backend_test_cuda_golden.dir/tests/backend/test_cuda_golden.c.o \
        -o test_cuda_golden_linked libhr_model.a libhr_io.a libhr_backend.a libhr_quant.a libhr_cuda.a \
        libhr_core.a "$(pkg-config --variable=libdir jansson)/libjansson.a" -lm "$cuda/lib64/libcudart_static.a" \
        -ldl -lrt "$cuda/lib64/libcublasLt.so" -lpthread)
    mkdir -p "$BIN/fixtures"
    cp "$B/backend_test_cuda_ops" "$B/test_cuda_golden_linked" "$BIN/"
    cp -r "${HEARTH_FIXTURES:-../shared/fixtures}/models" "$BIN/fixtures/"
    du -sh "$BIN"
    exit 0
fi
for a in "$@"; do
    case "$a" in
        --bench) BENCH=1 ;;
        --no-sanitizer) SAN=0 ;;
        *) echo "usage: $0 [--prepare BUILD_DIR] | [--bench] [--no-sanitizer]" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUTDIR"
if [ -d "$BIN/fixtures/models" ]; then export HEARTH_FIXTURES="$PWD/$BIN/fixtures"; fi
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
if [ "$BENCH" = 1 ]; then
    echo "== the same shapes through cuBLASLt (HEARTH_CUDA_GEMV_MAX_T=0)"
    HEARTH_CUDA_BENCH=only HEARTH_CUDA_GEMV_MAX_T=0 "$BIN/backend_test_cuda_ops" 2>&1 | grep BENCH | tee -a "$OUTDIR/test_cuda_ops.log"
    echo "== GEMV split-K targets (T = 1)"
    for b in 0 1 4 8; do
        HEARTH_CUDA_BENCH=only HEARTH_CUDA_BENCH_T1=1 HEARTH_CUDA_GEMV_BPSM=$b "$BIN/backend_test_cuda_ops" 2>&1 |
            grep "BENCH linear" | tee -a "$OUTDIR/test_cuda_ops.log"
    done
fi
unset HEARTH_CUDA_BENCH

if [ -x "$BIN/test_cuda_golden_linked" ]; then
    echo "== test_cuda_golden (fixtures: ${HEARTH_FIXTURES:-../shared/fixtures})"
    "$BIN/test_cuda_golden_linked" 2>&1 | tee "$OUTDIR/test_cuda_golden.log"
    r=${PIPESTATUS[0]}
    echo "test_cuda_golden rc=$r"
    [ "$r" = 0 ] || rc=1
else
    echo "== test_cuda_golden: not built (scripts/gpu-check.sh --prepare)"
fi

if [ "$BENCH" = 1 ] && [ -x "$BIN/test_cuda_golden_linked" ]; then
    for m in ${HEARTH_CUDA_DECODE_MODELS:-synthetic:llama-3.1-8b}; do
        for g in 1 0; do # graphs on (+ batched decode), then off
            echo "== decode benchmark $m, CUDA graphs $g"
            HEARTH_CUDA_DECODE_BATCHES=$g HEARTH_CUDA_GRAPHS=$g HEARTH_CUDA_DECODE_BENCH=$m "$BIN/test_cuda_golden_linked" 2>&1 |
                tee -a "$OUTDIR/decode_bench.log"
        done
    done
fi

if [ "$SAN" = 1 ] && command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer memcheck"
    compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/backend_test_cuda_ops" > "$OUTDIR/sanitizer.log" 2>&1
    r=$?
    tail -n 5 "$OUTDIR/sanitizer.log"
    echo "compute-sanitizer rc=$r"
    [ "$r" = 0 ] || rc=1
    if [ -x "$BIN/test_cuda_golden_linked" ]; then
        echo "== compute-sanitizer memcheck: tiny-gpt-oss prefill + 24 decode steps"
        HEARTH_GOLDEN_ONLY=tiny-gpt-oss compute-sanitizer --tool memcheck --error-exitcode 9 \
            "$BIN/test_cuda_golden_linked" > "$OUTDIR/sanitizer_golden.log" 2>&1
        r=$?
        tail -n 3 "$OUTDIR/sanitizer_golden.log"
        echo "compute-sanitizer (golden) rc=$r"
        [ "$r" = 0 ] || rc=1
    fi
fi
echo "gpu-check: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
