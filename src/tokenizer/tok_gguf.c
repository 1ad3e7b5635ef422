/* GGUF vocabularies (tokenizer.ggml.*): the "gpt2" byte-level BPE model with
 * tokens, merges, token types, bos/eos and add_bos_token, its `pre` name
 * mapped to the pre-tokenizer the model's tokenizer.json uses (the same
 * table llama.cpp and transformers' GGUF loader keep), and the "llama"
 * SentencePiece model (Llama 2, Mistral, TinyLlama) rebuilt as transformers
 * does: BPE with byte fallback, merges from the file or derived from the
 * scores, Metaspace. Control tokens become special added tokens,
 * user-defined ones plain added tokens. */
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "tokenizer/tok_internal.h"

static const char llama3_split[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                   "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_split[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                  "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char gpt4o_split[] = "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}"
                                  "\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                                  "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}"
                                  "\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                                  "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tekken_split[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char gpt2_re[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef enum { PRE_GPT2, PRE_DIGITS_GPT2, PRE_SPLIT } pre_kind;

typedef struct pre_map {
    const char *name;
    pre_kind kind;
    const char *split;
} pre_map;

/* clang-format off */
static const pre_map pre_table[] = {
    {"default",    PRE_GPT2,        NULL},         {"gpt-2",      PRE_GPT2,  NULL},
    {"gpt2",       PRE_GPT2,        NULL},         {"smollm",     PRE_DIGITS_GPT2, NULL},
    {"llama-bpe",  PRE_SPLIT,       llama3_split}, {"llama3",     PRE_SPLIT, llama3_split},
    {"llama-v3",   PRE_SPLIT,       llama3_split}, {"smaug-bpe",  PRE_SPLIT, llama3_split},
    {"falcon3",    PRE_SPLIT,       llama3_split}, {"dbrx",       PRE_SPLIT, llama3_split},
    {"qwen2",      PRE_SPLIT,       qwen2_split},  {"deepseek-r1-qwen", PRE_SPLIT, qwen2_split},
    {"gpt-4o",     PRE_SPLIT,       gpt4o_split},  {"llama4",     PRE_SPLIT, gpt4o_split},
    {"tekken",     PRE_SPLIT,       tekken_split},
};
/* clang-format on */

static tok_step *add_pre(hr_tokenizer *t) {
    t->pre = hr_xrealloc(t->pre, (size_t)(t->n_pre + 1) * sizeof(tok_step));
    tok_step *s = &t->pre[t->n_pre++];
    memset(s, 0, sizeof(*s));
    return s;
}

static int set_pre(hr_tokenizer *t, const char *pre, hr_err *err) {
    const pre_map *m = NULL;
    for (size_t i = 0; i < HR_ARRAY_LEN(pre_table); i++)
        if (!strcmp(pre_table[i].name, pre)) m = &pre_table[i];
    if (!m) return hr_err_set(err, HR_EUNSUP, "GGUF tokenizer.ggml.pre \"%s\" is not supported", pre);
    if (m->kind == PRE_DIGITS_GPT2) {
        /* SmolLM2's tokenizer.json: Digits(individual) then ByteLevel */
        tok_step *d = add_pre(t);
        d->type = TOK_P_DIGITS;
        d->individual_digits = true;
        if (!(d->re = tok_regex_compile("\\p{N}", 5, err))) return err->code;
    }
    if (m->kind == PRE_SPLIT) {
        tok_step *s = add_pre(t);
        s->type = TOK_P_SPLIT;
        s->behavior = TOK_SPLIT_ISOLATED;
        if (!(s->re = tok_regex_compile(m->split, strlen(m->split), err))) return err->code;
    }
    tok_step *b = add_pre(t);
    b->type = TOK_P_BYTELEVEL;
    b->use_regex = m->kind != PRE_SPLIT;
    if (b->use_regex && !(b->re = tok_regex_compile(gpt2_re, sizeof(gpt2_re) - 1, err))) return err->code;
    return HR_OK;
}

/* A GGUF token in the byte alphabet stays as is; any other spelling is
 * rewritten into it (transformers' byte_level_tokenizer does the same). */
static void respell(const char *s, size_t n, tok_buf *o) {
    bool ok = true;
    for (size_t k = 0; k < n && ok;) {
        uint32_t cp;
        k += tok_utf8_decode(s + k, n - k, &cp);
        ok = tok_cp_to_byte(cp) >= 0;
    }
    o->len = 0;
    if (ok) {
        tok_buf_put(o, s, n);
        return;
    }
    for (size_t k = 0; k < n; k++) {
        char u[4];
        size_t l = tok_utf8_encode(tok_byte_to_cp[(unsigned char)s[k]], u);
        tok_buf_put(o, u, l);
    }
}

static bool in_alphabet(const char *s, size_t n) {
    for (size_t k = 0; k < n;) {
        uint32_t cp;
        k += tok_utf8_decode(s + k, n - k, &cp);
        if (tok_cp_to_byte(cp) < 0) return false;
    }
    return true;
}

typedef struct spm_merge {
    int32_t l, r, merged, seq;
    float score;
    int lenl, lenr;
} spm_merge;

/* transformers' generate_merges(vocab, scores): every split of a token into
 * two vocab pieces, ordered by score (high first), then longer left piece,
 * then longer right piece, then discovery order (a stable sort). */
static int spm_merge_cmp(const void *x, const void *y) {
    const spm_merge *a = x, *b = y;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->lenl != b->lenl) return a->lenl > b->lenl ? -1 : 1;
    if (a->lenr != b->lenr) return a->lenr > b->lenr ? -1 : 1;
    return a->seq - b->seq;
}

static int pair_cmp(const void *x, const void *y) {
    const spm_merge *a = x, *b = y;
    if (a->l != b->l) return a->l < b->l ? -1 : 1;
    return a->r < b->r ? -1 : a->r > b->r;
}

static void spm_derive_merges(hr_tokenizer *t, const float *scores, int n) {
    spm_merge *m = NULL;
    size_t nm = 0, cap = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *s = t->tok[i];
        uint32_t len = t->tok_len[i];
        if (!s || tok_smap_get(&t->vocab, s, len) != i) continue;
        size_t first = nm;
        int total = 0;
        for (uint32_t k = 0; k < len;) {
            uint32_t cp;
            k += (uint32_t)tok_utf8_decode(s + k, len - k, &cp);
            total++;
        }
        int lenl = 0;
        for (uint32_t k = 0; k < len;) {
            uint32_t cp;
            k += (uint32_t)tok_utf8_decode(s + k, len - k, &cp);
            lenl++;
            if (k >= len) break;
            int32_t l = tok_smap_get(&t->vocab, s, k), r = tok_smap_get(&t->vocab, s + k, len - k);
            if (l < 0 || r < 0) continue;
            if (nm == cap) {
                cap = cap ? cap * 2 : 1024;
                m = hr_xrealloc(m, cap * sizeof(spm_merge));
            }
            float sc;
            memcpy(&sc, scores + i, sizeof(sc));
            m[nm++] = (spm_merge){.l = l, .r = r, .merged = i, .score = sc, .lenl = lenl, .lenr = total - lenl};
        }
        if (nm > first) qsort(m + first, nm - first, sizeof(spm_merge), pair_cmp);
    }
    for (size_t k = 0; k < nm; k++) m[k].seq = (int32_t)k;
    if (nm) qsort(m, nm, sizeof(spm_merge), spm_merge_cmp);
    tok_pmap_init(&t->merges, nm);
    for (size_t k = 0; k < nm; k++) tok_pmap_put(&t->merges, m[k].l, m[k].r, (int32_t)k, m[k].merged);
    free(m);
}

/* LlamaTokenizer's pipeline: Metaspace(first, no split), decoder Replace +
 * ByteFallback + Fuse + Strip(1). */
static void spm_pipeline(hr_tokenizer *t) {
    static const char meta[] = "\xE2\x96\x81";
    tok_step *p = add_pre(t);
    p->type = TOK_P_METASPACE;
    p->str = hr_xstrdup(meta);
    p->str_len = 3;
    p->prepend = TOK_PREPEND_FIRST;
    t->dec = hr_xcalloc(4, sizeof(tok_step));
    t->n_dec = 4;
    t->dec[0].type = TOK_D_REPLACE;
    t->dec[0].str = hr_xstrdup(meta);
    t->dec[0].str_len = 3;
    t->dec[0].str2 = hr_xstrdup(" ");
    t->dec[0].str2_len = 1;
    t->dec[1].type = TOK_D_BYTEFALLBACK;
    t->dec[2].type = TOK_D_FUSE;
    t->dec[3].type = TOK_D_STRIP;
    t->dec[3].str = hr_xstrdup(" ");
    t->dec[3].str_len = 1;
    t->dec[3].start = 1;
    t->has_decoder = true;
    t->byte_fallback = true;
    t->fuse_unk = true;
}

int tok_load_gguf(const char *path, hr_tokenizer **out, hr_err *err) {
    hr_tokenizer *t = NULL;
    char *model = NULL, *pre = NULL;
    tok_buf sp = {0};
    int rc = HR_OK;
    *out = NULL;
    gguf_file *f = gguf_open(path, err);
    if (!f) return err->code ? err->code : HR_EIO;
    model = gguf_get_str(f, "tokenizer.ggml.model");
    if (!model) {
        rc = hr_err_set(err, HR_ENOTFOUND, "%s: no tokenizer.ggml.model", path);
        goto fail;
    }
    bool spm = !strcmp(model, "llama");
    if (strcmp(model, "gpt2") != 0 && !spm) {
        rc = hr_err_set(err, HR_EUNSUP, "%s: GGUF tokenizer model \"%s\" is not supported (gpt2 BPE, llama SPM)", path,
                        model);
        goto fail;
    }
    const gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const gguf_kv *merges = gguf_find_kv(f, "tokenizer.ggml.merges");
    const gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    const gguf_kv *scores = gguf_find_kv(f, "tokenizer.ggml.scores");
    if (merges && (merges->type != GGUF_TYPE_ARRAY || merges->arr_type != GGUF_TYPE_STRING)) merges = NULL;
    if (spm && !merges &&
        (!scores || scores->type != GGUF_TYPE_ARRAY || scores->arr_type != GGUF_TYPE_FLOAT32 ||
         scores->arr_len != (toks ? toks->arr_len : 0))) {
        rc = hr_err_set(err, HR_EINVAL, "%s: llama GGUF vocab without merges or float scores", path);
        goto fail;
    }
    if (!toks || toks->type != GGUF_TYPE_ARRAY || toks->arr_type != GGUF_TYPE_STRING || (!merges && !spm)) {
        rc = hr_err_set(err, HR_EINVAL, "%s: tokenizer.ggml.tokens/merges missing or not string arrays", path);
        goto fail;
    }
    if (toks->arr_len > 16 * 1024 * 1024) {
        rc = hr_err_set(err, HR_EINVAL, "%s: %llu tokens is too many", path, (unsigned long long)toks->arr_len);
        goto fail;
    }
    bool have_types = types && types->type == GGUF_TYPE_ARRAY && types->arr_len == toks->arr_len &&
                      (types->arr_type == GGUF_TYPE_INT32 || types->arr_type == GGUF_TYPE_UINT32);
    t = tok_alloc((int)toks->arr_len);
    t->model = TOK_MODEL_BPE;
    for (uint64_t i = 0; i < toks->arr_len; i++) {
        gguf_str s = gguf_get_arr_str(toks, i);
        if (spm) {
            sp.len = 0;
            tok_buf_put(&sp, s.ptr, s.len);
        } else
            respell(s.ptr, s.len, &sp);
        tok_set_token(t, (int32_t)i, sp.p ? sp.p : "", sp.len, true);
    }
    if (have_types) {
        const int32_t *ty = types->arr_data;
        for (uint64_t i = 0; i < toks->arr_len; i++) {
            int32_t ty_i;
            memcpy(&ty_i, ty + i, sizeof(ty_i));
            gguf_str s = gguf_get_arr_str(toks, i);
            if ((ty_i == 3 && (spm || in_alphabet(s.ptr, s.len))) || ty_i == 4) {
                tok_added a = {.content = (char *)s.ptr, .len = s.len, .id = (int32_t)i, .special = ty_i == 3};
                tok_add_added(t, &a);
            }
        }
    }
    if (!merges)
        spm_derive_merges(t, scores->arr_data, (int)toks->arr_len);
    else
        tok_pmap_init(&t->merges, merges->arr_len);
    for (uint64_t i = 0; merges && i < merges->arr_len; i++) {
        gguf_str m = gguf_get_arr_str(merges, i);
        const char *spc = memchr(m.ptr, ' ', m.len);
        if (!spc) {
            rc = hr_err_set(err, HR_EINVAL, "%s: merge %llu has no space", path, (unsigned long long)i);
            goto fail;
        }
        size_t al = (size_t)(spc - m.ptr);
        int32_t a = tok_smap_get(&t->vocab, m.ptr, al), b = tok_smap_get(&t->vocab, spc + 1, m.len - al - 1);
        tok_buf cat = {0};
        tok_buf_put(&cat, m.ptr, al);
        tok_buf_put(&cat, spc + 1, m.len - al - 1);
        int32_t r = tok_smap_get(&t->vocab, cat.p, cat.len);
        tok_buf_free(&cat);
        if (a < 0 || b < 0 || r < 0) {
            rc = hr_err_set(err, HR_EINVAL, "%s: merge %llu uses a token missing from the vocab", path,
                            (unsigned long long)i);
            goto fail;
        }
        tok_pmap_put(&t->merges, a, b, (int32_t)i, r);
    }
    if (spm) {
        spm_pipeline(t);
    } else {
        pre = gguf_get_str(f, "tokenizer.ggml.pre");
        if ((rc = set_pre(t, pre ? pre : "default", err))) goto fail;
        tok_step *d = hr_xcalloc(1, sizeof(tok_step));
        d->type = TOK_D_BYTELEVEL;
        t->dec = d;
        t->n_dec = 1;
        t->has_decoder = true;
    }

    int64_t bos = gguf_get_int(f, "tokenizer.ggml.bos_token_id", -1);
    int64_t eos = gguf_get_int(f, "tokenizer.ggml.eos_token_id", -1);
    if (bos >= 0 && bos < t->n_vocab) t->bos = (int32_t)bos;
    if (eos >= 0 && eos < t->n_vocab) t->eos = (int32_t)eos;
    if (t->bos >= 0) t->bos_str = hr_xstrdup(t->tok[t->bos]);
    if (t->eos >= 0) t->eos_str = hr_xstrdup(t->tok[t->eos]);
    /* llama.cpp (and transformers) add BOS to a SentencePiece vocab unless told otherwise */
    bool add_bos = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", spm);
    bool add_eos = gguf_get_bool(f, "tokenizer.ggml.add_eos_token", false);
    if ((add_bos && t->bos >= 0) || (add_eos && t->eos >= 0)) {
        t->has_post = true;
        t->post = hr_xmalloc(3 * sizeof(int32_t));
        if (add_bos && t->bos >= 0) t->post[t->n_post++] = t->bos;
        t->post[t->n_post++] = -1;
        if (add_eos && t->eos >= 0) t->post[t->n_post++] = t->eos;
    }
    t->chat_template = gguf_get_str(f, "tokenizer.chat_template");
    if ((rc = tok_finish(t, err))) goto fail;
    *out = t;
    t = NULL;
fail:
    if (rc) hr_err_prefix(err, "%s", "GGUF tokenizer");
    hr_tokenizer_free(t);
    free(model);
    free(pre);
    tok_buf_free(&sp);
    gguf_close(f);
    return rc;
}
