#!/usr/bin/env bash
# Bounded libFuzzer run of tests/tokenizer/fuzz_encode.c (encoder, decoder,
# incremental detokenizer on arbitrary bytes) under ASan + UBSan.
# Skips (77) when clang with -fsanitize=fuzzer is not available.
# HEARTH_FUZZ_SECONDS (default 10) bounds the run.
set -euo pipefail
SRC="${HEARTH_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
CC="$(command -v clang || command -v clang-14 || true)"
[ -n "$CC" ] || { echo "SKIP: no clang"; exit 77; }
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
if ! echo 'int LLVMFuzzerTestOneInput(const char*d,long n){return 0;}' > "$OUT/t.c" ||
   ! "$CC" -fsanitize=fuzzer "$OUT/t.c" -o "$OUT/t" 2>/dev/null; then
    echo "SKIP: $CC has no libFuzzer"; exit 77
fi
"$CC" -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$SRC/src" "$SRC/tests/tokenizer/fuzz_encode.c" "$SRC"/src/tokenizer/*.c \
    "$SRC"/src/io/{gguf,ggml_quants,mapped}.c "$SRC"/src/core/{common,log,dtype}.c \
    -lpcre2-8 -ljansson -lm -lpthread -o "$OUT/fuzz_encode"
# a fourth tokenizer: tiny-bpe with NFC + Prepend + Replace normalizers
FX="${HEARTH_FIXTURES:-$SRC/../shared/fixtures}"
sed 's|"normalizer": null,|"normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},|' \
    "$FX/tokenizers/tiny-bpe/tokenizer.json" > "$OUT/variant.json"
export HEARTH_FUZZ_TOKENIZER="$OUT/variant.json"
mkdir -p "$OUT/corpus"
printf '\x00Hello, world! 123 <|im_start|>' > "$OUT/corpus/a"
printf '\x21<|start|>user<|message|>\xf0\x9f\x98\x80 e\xcc\x81' > "$OUT/corpus/b"
printf '\x02\xff\xfe  \n\n\t 12345678 \xe4\xb8\xad\xe6\x96\x87' > "$OUT/corpus/c"
cd "$OUT" && "$OUT/fuzz_encode" -max_total_time="${HEARTH_FUZZ_SECONDS:-10}" -max_len=2048 -rss_limit_mb=4096 \
    -print_final_stats=1 "$OUT/corpus" 2>&1 | tail -n 15
