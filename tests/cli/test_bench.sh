#!/usr/bin/env bash
# hearth bench: copy and latency produce sane JSON on the CPU; bad flags fail
# with one line and a non-zero exit. (Figures themselves go to docs/PERF.md.)
set -uo pipefail
BIN="${HEARTH_BIN:?}"
FIX="${HEARTH_FIXTURES:?}"
fail=0; pass=0
ok()  { pass=$((pass+1)); }
bad() { echo "FAIL: $*" >&2; fail=$((fail+1)); }

out=$("$BIN" bench copy --device cpu --size-mb 32 --iters 2 2>/dev/null)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["device"]=="cpu" and d["copy_gbps"]>0.1, d' "$out" && ok || bad "bench copy: $out"

out=$("$BIN" bench latency --model "$FIX/models/tiny-llama" --device cpu --threads 2 --input-len 16 --output-len 8 --num-iters 1 --num-iters-warmup 0 2>/dev/null | tail -n1)
python3 - "$out" <<'PY' && ok || bad "bench latency: $out"
import json, sys
d = json.loads(sys.argv[1])
assert d["batch_size"] == 1 and d["input_len"] == 16 and d["output_len"] == 8, d
assert d["ttft_ms"] > 0 and d["decode_tok_per_s"] > 0 and d["weight_bytes"] > 0, d
assert d["achieved_gbps"] > 0 and d["copy_gbps"] > 0, d
PY

out=$("$BIN" bench latency --model "$FIX/models/tiny-qwen2" --device cpu --batch-size 3 --input-len 5 --output-len 4 --num-iters 1 2>/dev/null | tail -n1)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["batch_size"]==3 and d["decode_tok_per_s"]>0, d' "$out" && ok || bad "bench latency batch 3: $out"

# bench gemm: one row per (shape, row count), time and rates positive
out=$("$BIN" bench gemm --device cpu --shape 96,64 --rows 1,5 --iters 2 --cache-mb 0 2>/dev/null)
python3 - "$out" <<'PY' && ok || bad "bench gemm: $out"
import sys
rows = [l.split() for l in sys.argv[1].splitlines() if l.startswith("linear ")]
assert [r[1:4] for r in rows] == [["96", "64", "1"], ["96", "64", "5"]], rows
assert all(float(r[4]) > 0 and float(r[6]) > 0 for r in rows), rows
PY

for args in "latency --model" "latency --model $FIX/models/tiny-llama --batch-size 0" "copy --size-mb -1" "nosuch" "serve --num-prompts x" \
    "gemm --rows 0" "gemm --rows 4,x" "gemm --shape 3" "gemm --shape 0,5" "gemm --iters 0" "gemm --bogus 1" "gemm --device nosuch"; do
    err=$("$BIN" bench $args 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ "$(printf '%s\n' "$err" | grep -c .)" -ge 1 ]; then ok; else bad "bench $args: rc=$rc err=$err"; fi
done
err=$("$BIN" bench latency --model /nonexistent/model --device cpu 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && echo "$err" | grep -q "nonexistent" && ok || bad "missing model: rc=$rc $err"

"$BIN" bench serve --help | grep -q -- "--max-concurrency" && ok || bad "bench serve --help"
echo "bench: $pass passed, $fail failed"
[ $fail -eq 0 ]
