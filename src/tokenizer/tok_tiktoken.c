/* tiktoken encodings: a rank file (base64 token, space, rank per line) plus
 * a table giving each named encoding's split pattern and special tokens
 * (cl100k_base, o200k_base, o200k_harmony as in tiktoken_ext/openai_public.py;
 * llama3 for Meta's tiktoken-format tokenizer.model), Mistral's tekken.json
 * (the same BPE with ids shifted past its special tokens). Also resolves
 * $TIKTOKEN_ENCODINGS_BASE the way vLLM's gpt-oss recipe uses it. */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static const char cl100k_pat[] = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| "
                                 "?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
static const char o200k_pat[] = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{"
                                "M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                                "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{"
                                "M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                                "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char llama3_pat[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                 "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct named_special {
    const char *s;
    int32_t id;
} named_special;

static const named_special cl100k_sp[] = {
    {"<|endoftext|>", 100257},  {"<|fim_prefix|>", 100258},  {"<|fim_middle|>", 100259},
    {"<|fim_suffix|>", 100260}, {"<|endofprompt|>", 100276},
};
static const named_special o200k_sp[] = {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}};
/* o200k_harmony: o200k_base's plus these, then <|reserved_N|> for every
 * other id in 200000..201087 (the dict in tiktoken lets <|reserved_200018|>
 * also name 200018, and decoding 200018 gives that later name). */
static const named_special harmony_sp[] = {
    {"<|startoftext|>", 199998}, {"<|endoftext|>", 199999}, {"<|return|>", 200002},
    {"<|constrain|>", 200003},   {"<|channel|>", 200005},   {"<|start|>", 200006},
    {"<|end|>", 200007},         {"<|message|>", 200008},   {"<|call|>", 200012},
};

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (with padding) into out; returns length or -1. */
static long b64_decode(const char *s, size_t n, unsigned char *out) {
    long o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        int v = b64val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return o;
}

static void add_special(hr_tokenizer *t, const char *s, int32_t id) {
    tok_added a = {.content = (char *)s, .len = strlen(s), .id = id, .special = true};
    tok_add_added(t, &a);
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

int tok_load_tiktoken(const char *path, const char *encoding, hr_tokenizer **out, hr_err *err) {
    char *data = NULL;
    size_t len = 0;
    hr_tokenizer *t = NULL;
    int rc;
    *out = NULL;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!encoding) {
        if (has(base, "cl100k"))
            encoding = "cl100k_base";
        else if (has(base, "o200k_harmony"))
            encoding = "o200k_harmony";
        else if (has(base, "o200k"))
            encoding = "o200k_base";
        else if (!strcmp(base, "tokenizer.model"))
            encoding = "llama3";
        else
            return hr_err_set(err, HR_EINVAL,
                              "%s: cannot tell the tiktoken encoding from the file name; pass one "
                              "(o200k_harmony, o200k_base, cl100k_base, llama3)",
                              path);
    }
    const char *pat;
    if (!strcmp(encoding, "cl100k_base"))
        pat = cl100k_pat;
    else if (!strcmp(encoding, "o200k_base") || !strcmp(encoding, "o200k_harmony"))
        pat = o200k_pat;
    else if (!strcmp(encoding, "llama3"))
        pat = llama3_pat;
    else
        return hr_err_set(err, HR_EUNSUP, "unknown tiktoken encoding %s", encoding);

    if ((rc = hr_read_file(path, &data, &len, err))) return rc;
    if (len && b64val((unsigned char)data[0]) < 0) {
        /* a SentencePiece tokenizer.model is a protobuf, not a rank file */
        free(data);
        return hr_err_set(err, HR_EUNSUP,
                          "%s: not a tiktoken rank file (a SentencePiece model? hearth reads those "
                          "through tokenizer.json or a GGUF vocab)",
                          path);
    }
    /* first pass: count lines for the table size */
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) lines += data[i] == '\n';
    t = tok_alloc((int)lines + 1);
    t->model = TOK_MODEL_TIKTOKEN;
    int32_t max_rank = -1;
    unsigned char buf[1024];
    size_t lineno = 0;
    for (size_t i = 0; i < len;) {
        size_t e = i;
        while (e < len && data[e] != '\n') e++;
        lineno++;
        size_t sp = i;
        while (sp < e && data[sp] != ' ') sp++;
        if (e > i && !(e == i + 1 && data[i] == '\r')) {
            if (sp >= e || sp - i > 4 * sizeof(buf) / 3) {
                rc = hr_err_set(err, HR_EINVAL, "%s:%zu: not a tiktoken rank line (base64 token, space, rank)", path,
                                lineno);
                goto fail;
            }
            long bl = b64_decode(data + i, sp - i, buf);
            char *endp;
            long rank = strtol(data + sp + 1, &endp, 10);
            if (bl <= 0 || rank < 0 || rank > 16 * 1024 * 1024 || endp == data + sp + 1) {
                rc = hr_err_set(err, HR_EINVAL, "%s:%zu: bad base64 token or rank", path, lineno);
                goto fail;
            }
            tok_set_token(t, (int32_t)rank, (const char *)buf, (size_t)bl, true);
            if (rank > max_rank) max_rank = (int32_t)rank;
        }
        i = e + 1;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (tok_smap_get(&t->vocab, &c, 1) < 0) {
            rc = hr_err_set(err, HR_EINVAL, "%s: rank file lacks the single byte 0x%02x", path, b);
            goto fail;
        }
    }
    if (!strcmp(encoding, "cl100k_base"))
        for (size_t i = 0; i < HR_ARRAY_LEN(cl100k_sp); i++) add_special(t, cl100k_sp[i].s, cl100k_sp[i].id);
    else if (!strcmp(encoding, "o200k_base"))
        for (size_t i = 0; i < HR_ARRAY_LEN(o200k_sp); i++) add_special(t, o200k_sp[i].s, o200k_sp[i].id);
    else if (!strcmp(encoding, "o200k_harmony")) {
        for (size_t i = 0; i < HR_ARRAY_LEN(harmony_sp); i++) add_special(t, harmony_sp[i].s, harmony_sp[i].id);
        /* reserved names first claim their ids' strings, except 200018 whose
         * decoded name is the reserved one (tiktoken's later dict entry) */
        for (int32_t id = 200000; id < 201088; id++) {
            char s[48];
            bool named = false;
            for (size_t i = 0; i < HR_ARRAY_LEN(harmony_sp); i++) named = named || harmony_sp[i].id == id;
            if (named) continue;
            snprintf(s, sizeof(s), "<|reserved_%d|>", (int)id);
            add_special(t, s, id);
        }
        add_special(t, "<|endofprompt|>", 200018);
        t->eos = 200002; /* <|return|> ends a harmony completion */
    } else if (!strcmp(encoding, "llama3")) {
        /* Llama 3 (names as llama-models' llama3/tokenizer.py): 256
         * specials after the ranks */
        static const char *const named[] = {"<|begin_of_text|>",
                                            "<|end_of_text|>",
                                            "<|reserved_special_token_0|>",
                                            "<|reserved_special_token_1|>",
                                            "<|finetune_right_pad_id|>",
                                            "<|step_id|>",
                                            "<|start_header_id|>",
                                            "<|end_header_id|>",
                                            "<|eom_id|>",
                                            "<|eot_id|>",
                                            "<|python_tag|>",
                                            "<|image|>"};
        int32_t b0 = max_rank + 1;
        for (int i = 0; i < 256; i++) {
            char s[64];
            if (i < (int)HR_ARRAY_LEN(named))
                snprintf(s, sizeof(s), "%s", named[i]);
            else
                snprintf(s, sizeof(s), "<|reserved_special_token_%d|>", i - 10);
            add_special(t, s, b0 + i);
        }
        t->bos = b0;
        t->eos = b0 + 9;
    }
    if (t->bos < 0 && !strcmp(encoding, "o200k_harmony")) t->bos = 199998;
    if (t->eos < 0) t->eos = hr_tokenizer_token_id(t, "<|endoftext|>");
    if (t->bos >= 0) t->bos_str = hr_xstrdup(t->tok[t->bos]);
    if (t->eos >= 0) t->eos_str = hr_xstrdup(t->tok[t->eos]);

    tok_step *s = hr_xcalloc(1, sizeof(tok_step));
    t->pre = s;
    t->n_pre = 1;
    s->type = TOK_P_SPLIT;
    s->behavior = TOK_SPLIT_REMOVED; /* tiktoken keeps only the matches */
    s->invert = true;
    if (!(s->re = tok_regex_compile(pat, strlen(pat), err))) {
        rc = err->code;
        goto fail;
    }
    if ((rc = tok_finish(t, err))) goto fail;
    free(data);
    *out = t;
    return HR_OK;
fail:
    free(data);
    hr_tokenizer_free(t);
    return rc;
}

int hr_tokenizer_load_encoding(const char *encoding, hr_tokenizer **out, hr_err *err) {
    const char *base = getenv("TIKTOKEN_ENCODINGS_BASE");
    const char *file = !strcmp(encoding, "cl100k_base") ? "cl100k_base.tiktoken" : "o200k_base.tiktoken";
    char p[4096];
    *out = NULL;
    if (strcmp(encoding, "cl100k_base") && strcmp(encoding, "o200k_base") && strcmp(encoding, "o200k_harmony"))
        return hr_err_set(err, HR_EUNSUP, "unknown tiktoken encoding %s (o200k_harmony, o200k_base, cl100k_base)",
                          encoding);
    if (!base || !*base)
        return hr_err_set(err, HR_ENOTFOUND, "encoding %s: set TIKTOKEN_ENCODINGS_BASE to the folder holding %s",
                          encoding, file);
    snprintf(p, sizeof(p), "%s/%s", base, file);
    FILE *f = fopen(p, "rb");
    if (!f) return hr_err_set(err, HR_ENOTFOUND, "encoding %s: %s not found (TIKTOKEN_ENCODINGS_BASE)", encoding, p);
    fclose(f);
    return tok_load_tiktoken(p, encoding, out, err);
}

/* Mistral tekken.json (mistral-common's Tekkenizer): ranks listed in "vocab"
 * (base64 token_bytes), ids = rank + num_special, the vocab cut to
 * default_vocab_size - num_special; special tokens from "special_tokens", or
 * for files without them (<= v7) mistral-common's fixed list, then fillers
 * <SPECIAL_i>. Special-token text is not matched in input (Tekkenizer
 * encodes plain text only). */
static const char *const tekken_legacy[] = {
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
};

int tok_load_tekken(json_t *root, const char *path, hr_tokenizer **out, hr_err *err) {
    hr_tokenizer *t = NULL;
    int rc = HR_OK;
    json_t *cfg = json_object_get(root, "config"), *vocab = json_object_get(root, "vocab");
    const char *pat = json_string_value(json_object_get(cfg, "pattern"));
    json_int_t vsize = json_integer_value(json_object_get(cfg, "default_vocab_size"));
    json_int_t nsp = json_integer_value(json_object_get(cfg, "default_num_special_tokens"));
    json_t *specials = json_object_get(root, "special_tokens");
    *out = NULL;
    if (!pat || !json_is_array(vocab) || nsp <= 0 || vsize <= nsp || vsize > 16 * 1024 * 1024 ||
        (size_t)(vsize - nsp) > json_array_size(vocab))
        return hr_err_set(err, HR_EINVAL,
                          "%s: not a tekken tokenizer (config.pattern, vocab, default_vocab_size, "
                          "default_num_special_tokens)",
                          path);
    t = tok_alloc((int)vsize);
    t->model = TOK_MODEL_TIKTOKEN;
    unsigned char buf[1024];
    for (json_int_t i = 0; i < vsize - nsp; i++) {
        json_t *e = json_array_get(vocab, (size_t)i);
        const char *b64 = json_string_value(json_object_get(e, "token_bytes"));
        long bl = b64 && strlen(b64) < 4 * sizeof(buf) / 3 ? b64_decode(b64, strlen(b64), buf) : -1;
        if (bl <= 0 || json_integer_value(json_object_get(e, "rank")) != i) {
            rc = hr_err_set(err, HR_EINVAL, "%s: vocab entry %lld malformed", path, (long long)i);
            goto fail;
        }
        tok_set_token(t, (int32_t)(i + nsp), (const char *)buf, (size_t)bl, true);
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (tok_smap_get(&t->vocab, &c, 1) < 0) {
            rc = hr_err_set(err, HR_EINVAL, "%s: vocab lacks the single byte 0x%02x", path, b);
            goto fail;
        }
    }
    for (json_int_t i = 0; i < nsp; i++) {
        char s[64];
        const char *name = NULL;
        if (json_is_array(specials)) {
            size_t k;
            json_t *e;
            json_array_foreach(specials, k, e) if (json_integer_value(json_object_get(e, "rank")) == i) name =
                json_string_value(json_object_get(e, "token_str"));
        } else if (i < (json_int_t)HR_ARRAY_LEN(tekken_legacy))
            name = tekken_legacy[i];
        if (!name) {
            snprintf(s, sizeof(s), "<SPECIAL_%lld>", (long long)i);
            name = s;
        }
        add_special(t, name, (int32_t)i);
    }
    t->bos = hr_tokenizer_token_id(t, "<s>");
    t->eos = hr_tokenizer_token_id(t, "</s>");
    if (t->bos >= 0) t->bos_str = hr_xstrdup(t->tok[t->bos]);
    if (t->eos >= 0) t->eos_str = hr_xstrdup(t->tok[t->eos]);
    if (t->bos >= 0) { /* Tekkenizer.encode(s, bos=True, eos=False) */
        t->has_post = true;
        t->post = hr_xmalloc(2 * sizeof(int32_t));
        t->post[0] = t->bos;
        t->post[1] = -1;
        t->n_post = 2;
    }
    tok_step *st = hr_xcalloc(1, sizeof(tok_step));
    t->pre = st;
    t->n_pre = 1;
    st->type = TOK_P_SPLIT;
    st->behavior = TOK_SPLIT_REMOVED;
    st->invert = true;
    if (!(st->re = tok_regex_compile(pat, strlen(pat), err))) {
        rc = err->code;
        goto fail;
    }
    t->no_special_text = true;
    if ((rc = tok_finish(t, err))) goto fail;
    *out = t;
    return HR_OK;
fail:
    hr_tokenizer_free(t);
    return rc;
}
