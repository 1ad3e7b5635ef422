/* Incremental detokenizer: for byte-level BPE (tiny-bpe fixture, tiktoken
 * o200k) and SentencePiece-style BPE (a small tokenizer.json written here:
 * byte_fallback, Metaspace, Replace/ByteFallback/Fuse/Strip decoder), the
 * concatenation of all deltas must equal the full decode, every delta must be
 * complete UTF-8 and must never contain text a later token changes (checked
 * by requiring each delta to be a prefix-extension of the final text).
 * Texts hold emoji, CJK and combining marks that split across tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

static const char *const texts[] = {
    "Hello, world!",
    "Emoji: \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 "
    "\xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 done",
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x83\x86\xE3\x82\xAD\xE3\x82\xB9\xE3\x83\x88 "
    "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
    "  leading spaces and x\xCC\x81\xCC\x81 combining",
    "\xF0\x9F\xA4\x96\xF0\x9F\xA4\x96\xF0\x9F\xA4\x96",
    " a",
    "",
};

static bool valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t l = tok_utf8_valid_len((const unsigned char *)s + i, n - i);
        if (!l) return false;
        i += l;
    }
    return true;
}

static void check_stream(const hr_tokenizer *t, const char *label, const char *text) {
    hr_err err = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    hr_encode_opts o = {0};
    CHECK_EQ_INT(hr_tokenizer_encode(t, text, strlen(text), &o, &ids, &n, &err), HR_OK);
    char *full = NULL;
    CHECK_EQ_INT(hr_tokenizer_decode(t, ids, n, false, &full, &err), HR_OK);
    hr_detok *d = hr_detok_new(t, false);
    tok_buf acc = {0};
    tok_buf_put(&acc, "", 0);
    for (size_t i = 0; i < n; i++) {
        const char *delta;
        size_t dl = hr_detok_push(d, ids[i], &delta);
        CHECK_MSG(dl == strlen(delta), "%s: delta length", label);
        CHECK_MSG(valid_utf8(delta, dl), "%s: delta %zu not complete UTF-8", label, i);
        tok_buf_put(&acc, delta, dl);
        /* never emitted text that the final decode does not start with */
        CHECK_MSG(acc.len <= strlen(full) && memcmp(acc.p, full, acc.len) == 0, "%s: emitted text changed at %zu",
                  label, i);
    }
    const char *delta;
    size_t dl = hr_detok_flush(d, &delta);
    tok_buf_put(&acc, delta, dl);
    CHECK_MSG(strcmp(acc.p, full) == 0, "%s: stream \"%s\" != decode \"%s\"", label, acc.p, full);
    /* SentencePiece decoding drops one leading space by design */
    if (!(text[0] == ' ' && !strcmp(label, "spm")))
        CHECK_MSG(strcmp(full, text) == 0, "%s: decode \"%s\" != text \"%s\"", label, full, text);
    hr_detok_free(d);
    tok_buf_free(&acc);
    free(full);
    free(ids);
}

/* A token stream cut inside a UTF-8 character: nothing may be emitted until
 * it completes; flush of a dangling half gives U+FFFD. */
static void check_split_bytes(const hr_tokenizer *t, const char *label) {
    /* byte-level: bytes F0 9F 98 80 (U+1F600) as four single-byte tokens */
    int32_t ids[4];
    const unsigned char emoji[4] = {0xF0, 0x9F, 0x98, 0x80};
    for (int i = 0; i < 4; i++) {
        char u[5];
        size_t l = tok_utf8_encode(tok_byte_to_cp[emoji[i]], u);
        u[l] = 0;
        ids[i] = hr_tokenizer_token_id(t, u);
    }
    if (ids[0] < 0) return; /* not a byte-level vocab */
    hr_detok *d = hr_detok_new(t, false);
    const char *delta;
    for (int i = 0; i < 3; i++) CHECK_MSG(hr_detok_push(d, ids[i], &delta) == 0, "%s: partial char emitted", label);
    CHECK_EQ_INT(hr_detok_push(d, ids[3], &delta), 4);
    CHECK(memcmp(delta, emoji, 4) == 0);
    CHECK_EQ_INT(hr_detok_push(d, ids[0], &delta), 0);
    CHECK_EQ_INT(hr_detok_flush(d, &delta), 3);
    CHECK_STREQ(delta, "\xEF\xBF\xBD");
    hr_detok_free(d);
}

/* SentencePiece-style tokenizer.json: chars of "helo wrd", merges for "he",
 * "ll", "hell", "hello", "▁w", byte fallback for everything else. */
static void write_spm_json(const char *path) {
    FILE *f = fopen(path, "w");
    HR_ASSERT(f);
    fprintf(f, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
               "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
               "\"normalizer\":null,"
               "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\","
               "\"split\":false},"
               "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\","
               "\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"special_tokens\":{\"<s>\":{\"id\":"
               "\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}},"
               "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":"
               "\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
               "\"content\":\" \",\"start\":1,\"stop\":0}]},"
               "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"fuse_unk\":true,\"byte_fallback\":true,"
               "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2");
    for (int b = 0; b < 256; b++) fprintf(f, ",\"<0x%02X>\":%d", b, 3 + b);
    static const char *const extra[] = {"\\u2581", "h",  "e",  "l",    "o",     "w",        "r",
                                        "d",       "he", "ll", "hell", "hello", "\\u2581w", "\\u2581h"};
    for (size_t i = 0; i < HR_ARRAY_LEN(extra); i++) fprintf(f, ",\"%s\":%zu", extra[i], 259 + i);
    fprintf(f, "},\"merges\":[\"h e\",\"l l\",\"he ll\",\"hell o\",\"\\u2581 w\",\"\\u2581 h\"]}}");
    fclose(f);
}

static void test_spm(void) {
    char path[] = "/tmp/hearth_spm_XXXXXX.json";
    int fd = mkstemps(path, 5);
    HR_ASSERT(fd >= 0);
    close(fd);
    write_spm_json(path);
    hr_tokenizer *t = NULL;
    hr_err err = {0};
    CHECK_EQ_INT(hr_tokenizer_load_file(path, NULL, &t, &err), HR_OK);
    remove(path);
    if (!t) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    /* "▁hello▁wé": 'h e' (rank 0) beats '▁ h' (rank 5), so ▁ stays alone;
     * é is not in the vocab and falls back to its two bytes */
    int32_t *ids = NULL;
    size_t n = 0;
    hr_encode_opts o = {.add_special_tokens = true};
    CHECK_EQ_INT(hr_tokenizer_encode(t, "hello w\xC3\xA9", 9, &o, &ids, &n, &err), HR_OK);
    /* <s> ▁ hello ▁w <0xC3> <0xA9> */
    static const int32_t want[] = {1, 259, 270, 271, 3 + 0xC3, 3 + 0xA9};
    CHECK_EQ_INT(n, HR_ARRAY_LEN(want));
    for (size_t i = 0; i < n && i < HR_ARRAY_LEN(want); i++) CHECK_EQ_INT(ids[i], want[i]);
    char *s = NULL;
    CHECK_EQ_INT(hr_tokenizer_decode(t, ids, n, true, &s, &err), HR_OK);
    CHECK_STREQ(s, "hello w\xC3\xA9");
    free(s);
    free(ids);
    for (size_t i = 0; i < HR_ARRAY_LEN(texts); i++) check_stream(t, "spm", texts[i]);
    hr_tokenizer_free(t);
}

/* GPT-2's bytes_to_unicode() and its inverse (values from the Python original). */
static void test_byte_map(void) {
    CHECK_EQ_INT(tok_byte_to_cp[0], 256);
    CHECK_EQ_INT(tok_byte_to_cp[' '], 288);
    CHECK_EQ_INT(tok_byte_to_cp[127], 289);
    CHECK_EQ_INT(tok_byte_to_cp[160], 322);
    CHECK_EQ_INT(tok_byte_to_cp[173], 323);
    CHECK_EQ_INT(tok_byte_to_cp['A'], 'A');
    CHECK_EQ_INT(tok_byte_to_cp[255], 255);
    int bad = 0;
    for (int b = 0; b < 256; b++) bad += tok_cp_to_byte(tok_byte_to_cp[b]) != b;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(tok_cp_to_byte(324), -1);
    CHECK_EQ_INT(tok_cp_to_byte(' '), -1);
}

int main(void) {
    const char *fx = test_fixtures();
    test_byte_map();
    char p[1024];
    hr_err err = {0};
    hr_tokenizer *t = NULL;
    snprintf(p, sizeof(p), "%s/tokenizers/tiny-bpe/tokenizer.json", fx);
    CHECK_EQ_INT(hr_tokenizer_load_file(p, NULL, &t, &err), HR_OK);
    if (t) {
        for (size_t i = 0; i < HR_ARRAY_LEN(texts); i++) check_stream(t, "tiny-bpe", texts[i]);
        check_split_bytes(t, "tiny-bpe");
        hr_tokenizer_free(t);
    }
    snprintf(p, sizeof(p), "%s/tokenizers/tiktoken/o200k_base.tiktoken", fx);
    t = NULL;
    CHECK_EQ_INT(hr_tokenizer_load_file(p, "o200k_harmony", &t, &err), HR_OK);
    if (t) {
        for (size_t i = 0; i < HR_ARRAY_LEN(texts); i++) check_stream(t, "o200k", texts[i]);
        hr_tokenizer_free(t);
    }
    test_spm();
    return test_report("tokenizer/test_detok");
}
