#!/usr/bin/env bash
# GPU correctness check, the one script that runs on the device machine:
#  1. every CUDA op against its float64 host reference (tests/backend/test_cuda_ops.c),
#  2. every fixture model against its golden logits on the GPU
#     (tests/backend/test_cuda_golden.c, linked with the model libraries),
#     the pinned weight upload (tests/backend/test_cuda_upload.c) and padded
#     decode batches (tests/model/test_cuda_buckets.c),
#  3. (1) again under compute-sanitizer memcheck, and a short decode run of (2),
#  4. with --bench: device copy bandwidth and GEMV vs cuBLASLt bandwidth.
# The device machine has no jansson/pcre2 dev packages, so build here and carry:
#   scripts/gpu-check.sh --prepare BUILD_DIR   (here: fills build-cuda-dev with
#                                               the test binaries + the fixtures)
#   then on the device (carry build-cuda-dev):  scripts/gpu-check.sh [--bench]
# Logs go to $OUT (or /tmp/gpu-check).
#
# End to end with the real `hearth` binary (--e2e): bench copy, bench latency
# (8B batch 1, TTFT at 2048), server start time, bench serve at 256
# concurrent requests, and the latency run for qwen2.5-7b / gpt-oss-20b:
#   scripts/gpu-check.sh --prepare-e2e BUILD_DIR   (here: hearth binary, the
#        shared libraries the device lacks, a synthetic tokenizer -> .carry/)
#   device (carry .carry):                      scripts/gpu-check.sh --e2e
# HEARTH_E2E_DEVICE / HEARTH_E2E_MODELS / HEARTH_E2E_SCALE=small run the same
# steps on the CPU with tiny models, to check the script without a GPU.
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
    tests="backend_test_cuda_ops backend_test_cuda_golden backend_test_cuda_upload model_test_cuda_buckets"
    tests="$tests backend_test_sample model_test_forward_sample"
    cmake --build "$B" -j2 --target $tests
    mkdir -p "$BIN/fixtures"
    for t in $tests; do cp "$B/$t" "$BIN/"; done
    cp -r "${HEARTH_FIXTURES:-../shared/fixtures}/models" "$BIN/fixtures/"
    du -sh "$BIN"
    exit 0
fi
# Both carries together can exceed what one device call takes along (64 MiB):
#   scripts/gpu-check.sh --pack   (here, after --prepare and --prepare-e2e)
# writes .carry/ship/pack.tgz; on the device (carry .carry/ship) unpack it
# first with  tar xzf .carry/ship/pack.tgz
if [ "${1:-}" = "--pack" ]; then
    set -e
    mkdir -p .carry/ship
    tar -czf .carry/ship/pack.tgz "$BIN" .carry/bin .carry/lib .carry/synth-tok
    du -sh .carry/ship/pack.tgz
    exit 0
fi
if [ "${1:-}" = "--prepare-e2e" ]; then
    B=${2:?usage: $0 --prepare-e2e BUILD_DIR (configured with -DHEARTH_CUDA=ON)}
    set -e
    cmake --build "$B" -j2 --target hearth
    rm -rf .carry/bin .carry/lib
    mkdir -p .carry/bin .carry/lib .carry/synth-tok
    cp "$B/hearth" .carry/bin/
    # every shared library but glibc's own and cuBLAS (700 MB; the device has
    # the pip wheel's copy): the device links only the ones it lacks (--e2e)
    ldd "$B/hearth" | awk '/=> \//{print $3}' |
        grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so|cublas' |
        while read -r f; do cp -L "$f" .carry/lib/; done
    # synthetic models have no tokenizer: a byte-level BPE vocabulary
    # (" w<id>" for every id, 201088 entries: llama, qwen and gpt-oss ids fit)
    python3 - .carry/synth-tok 201088 <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs = bs[:]
k = 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + k); k += 1
vocab = {chr(c): b for b, c in zip(bs, cs)}
for i in range(256, n - 1):
    vocab["\u0120w%d" % i] = i
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
j = {"version": "1.0", "truncation": None, "padding": None,
     "added_tokens": [{"id": n - 1, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                       "rstrip": False, "normalized": False, "special": True}],
     "normalizer": None, "pre_tokenizer": bl, "post_processor": bl, "decoder": bl,
     "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
               "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
               "vocab": vocab, "merges": []}}
json.dump(j, open(out + "/tokenizer.json", "w"), ensure_ascii=False)
json.dump({"eos_token": "<|endoftext|>", "add_bos_token": False,
           "chat_template": "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"},
          open(out + "/tokenizer_config.json", "w"))
PY
    du -sh .carry
    exit 0
fi
# link only the carried libraries this machine lacks (its own stay first)
link_carried() { # link_carried BINARY
    local L=/tmp/hearth-carried-lib
    mkdir -p "$L"
    export LD_LIBRARY_PATH="$L:${LD_LIBRARY_PATH:-}"
    if ldd "$1" | grep -q 'libcublasLt.*not found'; then
        local d
        d=$(python3 -c 'import nvidia.cublas as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
    fi
    for _ in 1 2 3 4 5; do
        miss=$(ldd "$1" | awk '/not found/{print $1}')
        [ -z "$miss" ] && break
        for f in $miss; do [ -e ".carry/lib/$f" ] && ln -sf "$PWD/.carry/lib/$f" "$L/$f"; done
    done
}
# Per-kernel GPU time of a few steps of `hearth bench latency` under Nsight
# Compute (needs .carry from --prepare-e2e): gpu-check.sh --profile [BATCH...]
# writes $OUT/ncu_b<B>.csv (kernel name, duration, DRAM bytes read/written),
# one run per batch size: a prefill of 128 tokens per sequence + 2 decode steps.
if [ "${1:-}" = "--profile" ]; then
    shift
    OUTDIR=${OUT:-/tmp/gpu-profile}
    mkdir -p "$OUTDIR"
    H=$PWD/.carry/bin/hearth
    link_carried "$H"
    M0=${HEARTH_E2E_MODELS:-synthetic:llama-3.1-8b}
    NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
    for b in ${*:-1 256}; do
        HEARTH_CUDA_GRAPHS=${HEARTH_CUDA_GRAPHS:-0} timeout 300 "$NCU" --clock-control none --csv --page raw \
            --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
            --log-file "$OUTDIR/ncu_b$b.csv" "$H" bench latency --model "$M0" --device cuda --batch-size "$b" \
            --input-len ${HEARTH_PROFILE_INPUT:-128} --output-len 3 --num-iters 1 --num-iters-warmup 0 \
            > "$OUTDIR/ncu_b$b.log" 2>&1
        echo "ncu batch $b: rc=$? $(wc -l < "$OUTDIR/ncu_b$b.csv") lines"
    done
    exit 0
fi
if [ "${1:-}" = "--e2e" ]; then
    OUTDIR=${OUT:-/tmp/gpu-check-e2e}
    mkdir -p "$OUTDIR"
    H=$PWD/.carry/bin/hearth
    DEV=${HEARTH_E2E_DEVICE:-cuda}
    MODELS=${HEARTH_E2E_MODELS:-synthetic:llama-3.1-8b synthetic:qwen2.5-7b synthetic:gpt-oss-20b}
    M0=${MODELS%% *}
    TOK=$PWD/.carry/synth-tok  # synthetic models have no tokenizer: serve takes --tokenizer
    LOG=$OUTDIR/e2e.log
    link_carried "$H"
    L=/tmp/hearth-carried-lib
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
        echo "carried libraries linked: $(ls "$L" | tr '\n' ' ')"
        ldd "$H" | grep -E 'not found|cublas|microhttpd'
    } 2>&1 | tee "$LOG"
    ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); } # no bc on the device
    step() { # step NAME TIMEOUT CMD...: runs, logs, records rc
        local name=$1 t=$2
        shift 2
        echo "== $name: $*" | tee -a "$LOG"
        local s0=$(date +%s%N)
        timeout "$t" "$@" 2>&1 | tee -a "$LOG"
        local r=${PIPESTATUS[0]}
        echo "== $name rc=$r ($(ms_since $s0) ms)" | tee -a "$LOG"
    }
    small=${HEARTH_E2E_SCALE:-}
    if [ "$small" = small ]; then inl=32 outl=16 ttl=256 np=32 conc=16 vs=500 szmb=64
    else inl=128 outl=256 ttl=2048 np=512 conc=256 vs=128000 szmb=1024; fi
    step copy 60 "$H" bench copy --device "$DEV" --size-mb $szmb
    step latency_b1 150 "$H" bench latency --model "$M0" --device "$DEV" --batch-size 1 --input-len $inl \
        --output-len $outl --output-json "$OUTDIR/latency_b1.json"
    step ttft_$ttl 120 "$H" bench latency --model "$M0" --device "$DEV" --batch-size 1 --input-len $ttl \
        --output-len 2 --num-iters 5 --num-iters-warmup 2 --output-json "$OUTDIR/ttft.json"
    # the forward pass alone at 256 sequences (all logit rows to the host):
    # the offline counterpart of the serving run below
    step latency_b$conc 150 "$H" bench latency --model "$M0" --device "$DEV" --batch-size $conc --input-len 128 \
        --output-len 64 --num-iters 1 --output-json "$OUTDIR/latency_b$conc.json"
    step "latency_b$conc, logits of 1 row" 150 "$H" bench latency --model "$M0" --device "$DEV" --batch-size $conc \
        --input-len 128 --output-len 64 --num-iters 1 --logit-rows 1
    # server start: process launch to "Application startup complete"
    P=18000
    echo "== serve start: $H serve $M0 --device $DEV --tokenizer $TOK --port $P --host 127.0.0.1" | tee -a "$LOG"
    s0=$(date +%s%N)
    "$H" serve "$M0" --device "$DEV" --tokenizer "$TOK" --port $P --host 127.0.0.1 --disable-uvicorn-access-log > "$OUTDIR/serve.log" 2>&1 &
    spid=$!
    up=0
    for _ in $(seq 1200); do # 60 s at most
        if grep -q "Application startup complete" "$OUTDIR/serve.log"; then up=1; break; fi
        kill -0 $spid 2>/dev/null || break
        sleep 0.05
    done
    echo "== serve start: up=$up after $(ms_since $s0) ms (launch to 'Application startup complete')" | tee -a "$LOG"
    if [ $up = 1 ]; then
        step bench_serve 180 "$H" bench serve --base-url http://127.0.0.1:$P --num-prompts $np \
            --max-concurrency $conc --random-input-len 128 --random-output-len 128 --ignore-eos --vocab-size $vs \
            --save-result --result-filename "$OUTDIR/bench_serve.json"
    fi
    kill $spid 2>/dev/null
    wait $spid 2>/dev/null
    for m in ${MODELS#"$M0"}; do
        n=$(echo "${m#synthetic:}" | tr -c 'a-zA-Z0-9\n' '_')
        step "latency_b1 $m" 150 "$H" bench latency --model "$m" --device "$DEV" --batch-size 1 --input-len $inl \
            --output-len $outl --num-iters 2 --output-json "$OUTDIR/latency_$n.json"
    done
    exit 0
fi
for a in "$@"; do
    case "$a" in
        --bench) BENCH=1 ;;
        --no-sanitizer) SAN=0 ;;
        *) echo "usage: $0 [--prepare BUILD_DIR] | [--bench] [--no-sanitizer] | --prepare-e2e BUILD_DIR | --e2e" >&2; exit 2 ;;
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

# the test binaries link libjansson dynamically: take the carried copy if this machine lacks it
[ -d .carry/lib ] && link_carried "$BIN/backend_test_cuda_golden"
rc=0
echo "== test_cuda_ops"
if [ "$BENCH" = 1 ]; then export HEARTH_CUDA_BENCH=1; fi
HEARTH_TEST_VERBOSE=1 "$BIN/backend_test_cuda_ops" 2>&1 | tee "$OUTDIR/test_cuda_ops.log"
r=${PIPESTATUS[0]}
echo "test_cuda_ops rc=$r"
[ "$r" = 0 ] || rc=1
# the experimental Hopper GEMM (gemm/wgmma.cu, off by default) on its own
# cases, every tile width; mode 2 makes them fail rather than fall back to
# cuBLASLt. Skipped (77) off sm_90.
if [ "$BENCH" != 1 ]; then
    for cfg in 128,0 64,0 256,0 128,2,2 256,0,1,0; do
        HEARTH_CUDA_WGMMA=2 HEARTH_CUDA_WGMMA_TEST=1 HEARTH_CUDA_WGMMA_CFG=$cfg timeout 120 "$BIN/backend_test_cuda_ops" \
            > "$OUTDIR/test_cuda_wgmma_$cfg.log" 2>&1
        r=$?
        echo "wgmma GEMM checks (HEARTH_CUDA_WGMMA_CFG=$cfg): rc=$r $(grep -E 'passed|CHECK' "$OUTDIR/test_cuda_wgmma_$cfg.log" | head -3)"
        [ "$r" = 0 ] || [ "$r" = 77 ] || rc=1
    done
fi
# the tensor-core decode attention's other block shape (4 warps; 2 is the
# default) and its deeper pipelines, which stay selectable
if [ "$BENCH" != 1 ]; then
    for v in 4,2 2,3 4,3; do
        HEARTH_CUDA_ATTN_TC_WARPS=${v%,*} HEARTH_CUDA_ATTN_TC_STAGES=${v#*,} timeout 120 "$BIN/backend_test_cuda_ops" \
            > "$OUTDIR/test_cuda_attn_tc_${v/,/_}.log" 2>&1
        r=$?
        echo "decode attention checks (warps,stages $v): rc=$r $(tail -n 1 "$OUTDIR/test_cuda_attn_tc_${v/,/_}.log")"
        [ "$r" = 0 ] || rc=1
    done
fi
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

if [ -x "$BIN/backend_test_cuda_golden" ]; then
    echo "== test_cuda_golden (fixtures: ${HEARTH_FIXTURES:-../shared/fixtures})"
    "$BIN/backend_test_cuda_golden" 2>&1 | tee "$OUTDIR/test_cuda_golden.log"
    r=${PIPESTATUS[0]}
    echo "test_cuda_golden rc=$r"
    [ "$r" = 0 ] || rc=1
else
    echo "== test_cuda_golden: not built (scripts/gpu-check.sh --prepare)"
fi

# weight upload through the pinned ring, and decode batch-size buckets vs unpadded steps
# and sampling on the device against the host reference
# (the buckets check runs 3 times: two model copies per fixture loaded and
# freed in turn once hid a stale-RoPE-table race that failed 1 run in 5)
for t in backend_test_cuda_upload model_test_cuda_buckets model_test_cuda_buckets model_test_cuda_buckets \
    backend_test_sample model_test_forward_sample; do
    [ -x "$BIN/$t" ] || continue
    echo "== $t"
    "$BIN/$t" 2>&1 | tee "$OUTDIR/$t.log"
    r=${PIPESTATUS[0]}
    echo "$t rc=$r"
    [ "$r" = 0 ] || rc=1
done

if [ "$BENCH" = 1 ] && [ -x "$BIN/backend_test_cuda_golden" ]; then
    for m in ${HEARTH_CUDA_DECODE_MODELS:-synthetic:llama-3.1-8b}; do
        for g in 1 0; do # graphs on (+ batched decode), then off
            echo "== decode benchmark $m, CUDA graphs $g"
            HEARTH_CUDA_DECODE_BATCHES=$g HEARTH_CUDA_GRAPHS=$g HEARTH_CUDA_DECODE_BENCH=$m "$BIN/backend_test_cuda_golden" 2>&1 |
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
    if [ -x "$BIN/backend_test_cuda_golden" ]; then
        echo "== compute-sanitizer memcheck: tiny-gpt-oss prefill + 24 decode steps"
        HEARTH_GOLDEN_ONLY=tiny-gpt-oss compute-sanitizer --tool memcheck --error-exitcode 9 \
            "$BIN/backend_test_cuda_golden" > "$OUTDIR/sanitizer_golden.log" 2>&1
        r=$?
        tail -n 3 "$OUTDIR/sanitizer_golden.log"
        echo "compute-sanitizer (golden) rc=$r"
        [ "$r" = 0 ] || rc=1
    fi
fi
echo "gpu-check: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
