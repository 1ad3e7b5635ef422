/* Loads a Hugging Face tokenizer.json (BPE model) into an hr_tokenizer:
 * vocab, merges ("a b" or ["a","b"]), added_tokens, normalizer,
 * pre_tokenizer, post_processor and decoder. Anything it does not
 * implement fails at load with its type named, never silently.
 * Also reads tokenizer_config.json (chat_template, bos/eos). */
#include <jansson.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static const char gpt2_re[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jbool(json_t *o, const char *k, bool def) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static char *dupn(const char *s, size_t n) {
    char *d = hr_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static tok_step *new_step(tok_step **arr, int *n) {
    *arr = hr_xrealloc(*arr, (size_t)(*n + 1) * sizeof(tok_step));
    tok_step *s = &(*arr)[(*n)++];
    memset(s, 0, sizeof(*s));
    return s;
}

/* pattern: {"String": "..."} or {"Regex": "..."} */
static int read_pattern(json_t *pat, tok_step *s, hr_err *err) {
    json_t *str = json_object_get(pat, "String"), *re = json_object_get(pat, "Regex");
    if (json_is_string(str)) {
        s->str = dupn(json_string_value(str), json_string_length(str));
        s->str_len = json_string_length(str);
        return HR_OK;
    }
    if (json_is_string(re)) {
        s->re = tok_regex_compile(json_string_value(re), json_string_length(re), err);
        return s->re ? HR_OK : err->code;
    }
    return hr_err_set(err, HR_EINVAL, "tokenizer.json: pattern is neither String nor Regex");
}

static int read_normalizer(json_t *n, hr_tokenizer *t, hr_err *err) {
    if (!n || json_is_null(n)) return HR_OK;
    const char *type = jstr(n, "type");
    if (!type) return hr_err_set(err, HR_EINVAL, "tokenizer.json: normalizer without type");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(n, "normalizers"), i, v) {
            int rc = read_normalizer(v, t, err);
            if (rc) return rc;
        }
        return HR_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = jstr(n, "prepend");
        if (!p) return hr_err_set(err, HR_EINVAL, "tokenizer.json: Prepend without prepend");
        tok_step *s = new_step(&t->norm, &t->n_norm);
        s->type = TOK_N_PREPEND;
        s->str = hr_xstrdup(p);
        s->str_len = strlen(p);
        return HR_OK;
    }
    if (!strcmp(type, "Replace")) {
        tok_step *s = new_step(&t->norm, &t->n_norm);
        s->type = TOK_N_REPLACE;
        json_t *c = json_object_get(n, "content");
        if (!json_is_string(c)) return hr_err_set(err, HR_EINVAL, "tokenizer.json: Replace without content");
        s->str2 = dupn(json_string_value(c), json_string_length(c));
        s->str2_len = json_string_length(c);
        return read_pattern(json_object_get(n, "pattern"), s, err);
    }
    if (!strcmp(type, "Strip")) {
        tok_step *s = new_step(&t->norm, &t->n_norm);
        s->type = TOK_N_STRIP;
        s->left = jbool(n, "strip_left", true);
        s->right = jbool(n, "strip_right", true);
        return HR_OK;
    }
    if (!strcmp(type, "NFC")) {
        tok_step *s = new_step(&t->norm, &t->n_norm);
        s->type = TOK_N_NFC;
        return HR_OK;
    }
    /* NFD/NFKC/NFKD and Lowercase need more Unicode tables (compatibility
     * decompositions, full case mapping); approximate ids would be worse
     * than refusing. */
    return hr_err_set(err, HR_EUNSUP, "tokenizer.json: normalizer %s is not supported", type);
}

static int read_split_behavior(const char *b, tok_split_behavior *out, hr_err *err) {
    if (!b) return hr_err_set(err, HR_EINVAL, "tokenizer.json: Split without behavior");
    if (!strcmp(b, "Removed"))
        *out = TOK_SPLIT_REMOVED;
    else if (!strcmp(b, "Isolated"))
        *out = TOK_SPLIT_ISOLATED;
    else if (!strcmp(b, "MergedWithPrevious"))
        *out = TOK_SPLIT_PREV;
    else if (!strcmp(b, "MergedWithNext"))
        *out = TOK_SPLIT_NEXT;
    else if (!strcmp(b, "Contiguous"))
        *out = TOK_SPLIT_CONTIGUOUS;
    else
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: Split behavior %s is not supported", b);
    return HR_OK;
}

static int read_prepend_scheme(json_t *n, tok_prepend_scheme *out) {
    const char *ps = jstr(n, "prepend_scheme");
    if (ps) {
        *out = !strcmp(ps, "first") ? TOK_PREPEND_FIRST : !strcmp(ps, "never") ? TOK_PREPEND_NEVER : TOK_PREPEND_ALWAYS;
    } else {
        /* older files: add_prefix_space */
        *out = jbool(n, "add_prefix_space", true) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    }
    return HR_OK;
}

static int read_pretok(json_t *n, hr_tokenizer *t, hr_err *err) {
    if (!n || json_is_null(n)) return HR_OK;
    const char *type = jstr(n, "type");
    if (!type) return hr_err_set(err, HR_EINVAL, "tokenizer.json: pre_tokenizer without type");
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(n, "pretokenizers"), i, v) {
            int rc = read_pretok(v, t, err);
            if (rc) return rc;
        }
        return HR_OK;
    }
    tok_step *s = new_step(&t->pre, &t->n_pre);
    if (!strcmp(type, "ByteLevel")) {
        s->type = TOK_P_BYTELEVEL;
        s->add_prefix_space = jbool(n, "add_prefix_space", true);
        s->use_regex = jbool(n, "use_regex", true);
        if (s->use_regex && !(s->re = tok_regex_compile(gpt2_re, sizeof(gpt2_re) - 1, err))) return err->code;
        return HR_OK;
    }
    if (!strcmp(type, "Split")) {
        s->type = TOK_P_SPLIT;
        s->invert = jbool(n, "invert", false);
        int rc = read_split_behavior(jstr(n, "behavior"), &s->behavior, err);
        if (rc) return rc;
        return read_pattern(json_object_get(n, "pattern"), s, err);
    }
    if (!strcmp(type, "Digits")) {
        s->type = TOK_P_DIGITS;
        s->individual_digits = jbool(n, "individual_digits", false);
        s->re = tok_regex_compile("\\p{N}", 5, err);
        return s->re ? HR_OK : err->code;
    }
    if (!strcmp(type, "Metaspace")) {
        s->type = TOK_P_METASPACE;
        const char *r = jstr(n, "replacement");
        if (!r) r = "\xE2\x96\x81";
        s->str = hr_xstrdup(r);
        s->str_len = strlen(r);
        s->split = jbool(n, "split", true);
        return read_prepend_scheme(n, &s->prepend);
    }
    if (!strcmp(type, "WhitespaceSplit")) {
        s->type = TOK_P_WHITESPACE_SPLIT;
        return HR_OK;
    }
    t->n_pre--;
    return hr_err_set(err, HR_EUNSUP, "tokenizer.json: pre_tokenizer %s is not supported", type);
}

static int read_decoder(json_t *n, hr_tokenizer *t, hr_err *err) {
    if (!n || json_is_null(n)) return HR_OK;
    const char *type = jstr(n, "type");
    if (!type) return hr_err_set(err, HR_EINVAL, "tokenizer.json: decoder without type");
    t->has_decoder = true;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(n, "decoders"), i, v) {
            int rc = read_decoder(v, t, err);
            if (rc) return rc;
        }
        return HR_OK;
    }
    tok_step *s = new_step(&t->dec, &t->n_dec);
    if (!strcmp(type, "ByteLevel"))
        s->type = TOK_D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        s->type = TOK_D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        s->type = TOK_D_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        s->type = TOK_D_METASPACE;
        const char *r = jstr(n, "replacement");
        if (!r) r = "\xE2\x96\x81";
        s->str = hr_xstrdup(r);
        s->str_len = strlen(r);
        read_prepend_scheme(n, &s->prepend);
    } else if (!strcmp(type, "Strip")) {
        s->type = TOK_D_STRIP;
        const char *c = jstr(n, "content");
        if (!c) c = " ";
        s->str = hr_xstrdup(c);
        s->str_len = strlen(c);
        s->start = (int)json_integer_value(json_object_get(n, "start"));
        s->stop = (int)json_integer_value(json_object_get(n, "stop"));
    } else if (!strcmp(type, "Replace")) {
        s->type = TOK_D_REPLACE;
        const char *c = jstr(n, "content");
        json_t *p = json_object_get(n, "pattern");
        const char *ps = jstr(p, "String");
        if (!c || !ps) {
            t->n_dec--;
            return hr_err_set(err, HR_EUNSUP, "tokenizer.json: Replace decoder needs a String pattern");
        }
        s->str = hr_xstrdup(ps);
        s->str_len = strlen(ps);
        s->str2 = hr_xstrdup(c);
        s->str2_len = strlen(c);
    } else {
        t->n_dec--;
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: decoder %s is not supported", type);
    }
    return HR_OK;
}

static int32_t lookup_any(hr_tokenizer *t, const char *s) {
    int32_t id = hr_tokenizer_token_id(t, s);
    return id;
}

static int read_post(json_t *n, hr_tokenizer *t, hr_err *err) {
    if (!n || json_is_null(n)) return HR_OK;
    const char *type = jstr(n, "type");
    if (!type) return hr_err_set(err, HR_EINVAL, "tokenizer.json: post_processor without type");
    if (!strcmp(type, "ByteLevel")) return HR_OK; /* only trims offsets */
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(n, "processors"), i, v) {
            int rc = read_post(v, t, err);
            if (rc) return rc;
        }
        return HR_OK;
    }
    if (strcmp(type, "TemplateProcessing") != 0)
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: post_processor %s is not supported", type);
    json_t *single = json_object_get(n, "single"), *specials = json_object_get(n, "special_tokens");
    size_t i;
    json_t *v;
    free(t->post);
    t->post = NULL;
    t->n_post = 0;
    t->has_post = true;
    bool seen_a = false;
    json_array_foreach(single, i, v) {
        json_t *sp = json_object_get(v, "SpecialToken");
        if (json_object_get(v, "Sequence")) {
            t->post = hr_xrealloc(t->post, (size_t)(t->n_post + 1) * sizeof(int32_t));
            t->post[t->n_post++] = -1;
            seen_a = true;
            continue;
        }
        const char *name = jstr(sp, "id");
        if (!name) return hr_err_set(err, HR_EINVAL, "tokenizer.json: TemplateProcessing item without id");
        json_t *st = json_object_get(specials, name), *ids = json_object_get(st, "ids");
        size_t k;
        json_t *idv;
        if (!json_is_array(ids)) {
            int32_t id = lookup_any(t, name);
            if (id < 0) return hr_err_set(err, HR_EINVAL, "tokenizer.json: TemplateProcessing token %s unknown", name);
            t->post = hr_xrealloc(t->post, (size_t)(t->n_post + 1) * sizeof(int32_t));
            t->post[t->n_post++] = id;
            continue;
        }
        json_array_foreach(ids, k, idv) {
            t->post = hr_xrealloc(t->post, (size_t)(t->n_post + 1) * sizeof(int32_t));
            t->post[t->n_post++] = (int32_t)json_integer_value(idv);
        }
    }
    if (!seen_a) return hr_err_set(err, HR_EINVAL, "tokenizer.json: TemplateProcessing single without $A");
    return HR_OK;
}

static int read_model(json_t *m, hr_tokenizer **out, hr_err *err) {
    const char *type = jstr(m, "type");
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (type && strcmp(type, "BPE") != 0)
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: model type %s is not supported (only BPE)", type);
    if (!json_is_object(vocab) || (merges && !json_is_array(merges)))
        return hr_err_set(err, HR_EINVAL, "tokenizer.json: model without vocab/merges (type %s)", type ? type : "?");
    if (json_object_get(m, "dropout") && !json_is_null(json_object_get(m, "dropout")) &&
        json_number_value(json_object_get(m, "dropout")) > 0)
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: BPE dropout is not supported");
    const char *csp = jstr(m, "continuing_subword_prefix"), *eow = jstr(m, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return hr_err_set(err, HR_EUNSUP, "tokenizer.json: continuing_subword_prefix/end_of_word_suffix not supported");

    int max_id = -1;
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (id < 0 || id > 16 * 1024 * 1024) return hr_err_set(err, HR_EINVAL, "tokenizer.json: bad id for %s", k);
        if (id > max_id) max_id = (int)id;
    }
    hr_tokenizer *t = tok_alloc(max_id + 1);
    t->model = TOK_MODEL_BPE;
    json_object_foreach(vocab, k, v) tok_set_token(t, (int32_t)json_integer_value(v), k, strlen(k), true);
    t->ignore_merges = jbool(m, "ignore_merges", false);
    t->byte_fallback = jbool(m, "byte_fallback", false);
    t->fuse_unk = jbool(m, "fuse_unk", false);
    const char *unk = jstr(m, "unk_token");
    if (unk) t->unk_id = tok_smap_get(&t->vocab, unk, strlen(unk));

    tok_pmap_init(&t->merges, json_array_size(merges));
    size_t i;
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t al, bl;
        char *tmp = NULL;
        if (json_is_string(v)) {
            const char *s = json_string_value(v), *sp = strchr(s, ' ');
            if (!sp) {
                hr_tokenizer_free(t);
                return hr_err_set(err, HR_EINVAL, "tokenizer.json: merge %zu has no space", i);
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(v) && json_array_size(v) == 2) {
            a = json_string_value(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            if (!a || !b) {
                hr_tokenizer_free(t);
                return hr_err_set(err, HR_EINVAL, "tokenizer.json: merge %zu is not two strings", i);
            }
            al = strlen(a);
            bl = strlen(b);
        } else {
            hr_tokenizer_free(t);
            return hr_err_set(err, HR_EINVAL, "tokenizer.json: merge %zu malformed", i);
        }
        int32_t ia = tok_smap_get(&t->vocab, a, al), ib = tok_smap_get(&t->vocab, b, bl);
        tmp = hr_xmalloc(al + bl + 1);
        memcpy(tmp, a, al);
        memcpy(tmp + al, b, bl);
        int32_t im = tok_smap_get(&t->vocab, tmp, al + bl);
        free(tmp);
        if (ia < 0 || ib < 0 || im < 0) {
            hr_tokenizer_free(t);
            return hr_err_set(err, HR_EINVAL, "tokenizer.json: merge %zu uses a token missing from the vocab", i);
        }
        tok_pmap_put(&t->merges, ia, ib, (int32_t)i, im);
    }
    *out = t;
    return HR_OK;
}

int tok_load_hf_json(const char *path, hr_tokenizer **out, hr_err *err) {
    json_error_t je;
    hr_tokenizer *t = NULL;
    int rc;
    *out = NULL;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je); /* tekken.json spells byte 0 as "\u0000" */
    if (!root) return hr_err_set(err, HR_EINVAL, "%s: JSON error line %d: %s", path, je.line, je.text);
    if (json_is_array(json_object_get(root, "vocab")) && json_is_object(json_object_get(root, "config"))) {
        rc = tok_load_tekken(root, path, &t, err);
        json_decref(root);
        *out = t;
        return rc;
    }
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) {
        rc = hr_err_set(err, HR_EINVAL, "%s: no model object", path);
        goto fail;
    }
    if ((rc = read_model(model, &t, err))) goto fail;

    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(root, "added_tokens"), i, v) {
        json_t *c = json_object_get(v, "content");
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!json_is_string(c) || id < 0 || id > 16 * 1024 * 1024) {
            rc = hr_err_set(err, HR_EINVAL, "%s: added token %zu malformed", path, i);
            goto fail;
        }
        tok_added a = {
            .content = (char *)json_string_value(c),
            .len = json_string_length(c),
            .id = (int32_t)id,
            .special = jbool(v, "special", false),
            .lstrip = jbool(v, "lstrip", false),
            .rstrip = jbool(v, "rstrip", false),
            .normalized = jbool(v, "normalized", false),
            .single_word = jbool(v, "single_word", false),
        };
        tok_add_added(t, &a);
    }
    if ((rc = read_normalizer(json_object_get(root, "normalizer"), t, err))) goto fail;
    if ((rc = read_pretok(json_object_get(root, "pre_tokenizer"), t, err))) goto fail;
    if ((rc = read_post(json_object_get(root, "post_processor"), t, err))) goto fail;
    if ((rc = read_decoder(json_object_get(root, "decoder"), t, err))) goto fail;
    if ((rc = tok_finish(t, err))) goto fail;
    json_decref(root);
    *out = t;
    return HR_OK;
fail:
    hr_err_prefix(err, "%s", path);
    hr_tokenizer_free(t);
    json_decref(root);
    return rc;
}

/* tokenizer_config.json: "bos_token" / "eos_token" are strings or
 * {"content": ...} objects; chat_template a string (or a list of named ones:
 * we take "default"). Missing file or keys are fine. */
static char *token_field(json_t *v) {
    if (json_is_string(v)) return hr_xstrdup(json_string_value(v));
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return hr_xstrdup(json_string_value(json_object_get(v, "content")));
    return NULL;
}

void tok_read_config(hr_tokenizer *t, const char *dir) {
    char p[4096];
    /* newer checkpoints keep the template in its own file */
    snprintf(p, sizeof(p), "%s/chat_template.jinja", dir);
    char *tpl = NULL;
    size_t tl;
    if (hr_read_file(p, &tpl, &tl, NULL) == HR_OK) {
        free(t->chat_template);
        t->chat_template = tpl;
    }
    snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
    json_t *root = json_load_file(p, 0, NULL);
    if (!root) return;
    char *bos = token_field(json_object_get(root, "bos_token"));
    char *eos = token_field(json_object_get(root, "eos_token"));
    if (bos) {
        free(t->bos_str);
        t->bos_str = bos;
        t->bos = hr_tokenizer_token_id(t, bos);
    }
    if (eos) {
        free(t->eos_str);
        t->eos_str = eos;
        t->eos = hr_tokenizer_token_id(t, eos);
    }
    json_t *ct = json_object_get(root, "chat_template");
    if (tpl) ct = NULL; /* chat_template.jinja wins, as in transformers */
    if (json_is_string(ct)) {
        free(t->chat_template);
        t->chat_template = hr_xstrdup(json_string_value(ct));
    } else if (json_is_array(ct)) {
        size_t i;
        json_t *v;
        json_array_foreach(ct, i, v) {
            const char *name = json_string_value(json_object_get(v, "name"));
            const char *tpl = json_string_value(json_object_get(v, "template"));
            if (name && tpl && !strcmp(name, "default")) {
                free(t->chat_template);
                t->chat_template = hr_xstrdup(tpl);
            }
        }
    }
    json_decref(root);
}
