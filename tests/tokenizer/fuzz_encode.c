/* libFuzzer target for the encoder, decoder and incremental detokenizer.
 * The first input byte picks the tokenizer (tiny-bpe tokenizer.json,
 * o200k_harmony, cl100k_base, SmolLM2-style Digits+ByteLevel and an NFC +
 * Metaspace variant built from tiny-bpe) and the options; the rest is the
 * text, arbitrary bytes. Checks: no crash / sanitizer report, ids in range.
 * Built and run (bounded) by tests/tokenizer/test_fuzz.sh:
 *   clang -fsanitize=fuzzer,address,undefined fuzz_encode.c + the tokenizer, io, core sources
 *   ./fuzz_encode -max_total_time=15 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

enum { N_TOK = 4 };
static hr_tokenizer *toks[N_TOK];

static void load_all(void) {
    const char *fx = getenv("HEARTH_FIXTURES");
    char p[1024];
    hr_err err = {0};
    if (!fx) fx = "../shared/fixtures";
    snprintf(p, sizeof(p), "%s/tokenizers/tiny-bpe/tokenizer.json", fx);
    if (hr_tokenizer_load_file(p, NULL, &toks[0], &err)) abort();
    snprintf(p, sizeof(p), "%s/tokenizers/tiktoken/o200k_base.tiktoken", fx);
    if (hr_tokenizer_load_file(p, "o200k_harmony", &toks[1], &err)) abort();
    snprintf(p, sizeof(p), "%s/tokenizers/tiktoken/cl100k_base.tiktoken", fx);
    if (hr_tokenizer_load_file(p, "cl100k_base", &toks[2], &err)) abort();
    const char *variant = getenv("HEARTH_FUZZ_TOKENIZER"); /* an extra tokenizer.json, optional */
    if (variant && hr_tokenizer_load_file(variant, NULL, &toks[3], &err)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!toks[0]) load_all();
    if (size < 1) return 0;
    const hr_tokenizer *t = toks[data[0] % N_TOK];
    if (!t) t = toks[0];
    hr_encode_opts o = {.add_special_tokens = data[0] & 0x10, .parse_special = data[0] & 0x20};
    int32_t *ids = NULL;
    size_t n = 0;
    hr_err err = {0};
    if (hr_tokenizer_encode(t, (const char *)data + 1, size - 1, &o, &ids, &n, &err) != HR_OK) abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= hr_tokenizer_vocab_size(t)) abort();
    char *text = NULL;
    if (hr_tokenizer_decode(t, ids, n, data[0] & 0x40, &text, &err) != HR_OK) abort();
    hr_detok *d = hr_detok_new(t, data[0] & 0x40);
    const char *delta;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += hr_detok_push(d, ids[i], &delta);
    total += hr_detok_flush(d, &delta);
    /* the stream adds up to the full decode (strlen cannot see past a NUL) */
    if (!memchr(data + 1, 0, size - 1) && total != strlen(text)) abort();
    hr_detok_free(d);
    free(text);
    free(ids);
    return 0;
}
