/* The encode/decode pipeline, in HF tokenizers' order: added tokens are cut
 * out of the raw text first (leftmost-longest, lstrip/rstrip/single_word),
 * the rest is normalized, cut again by normalized added tokens, pre-tokenized
 * (Split/ByteLevel/Digits/Metaspace), BPE-merged, and post-processed.
 * Decoding runs the decoder chain over the token strings. Also the public
 * accessors and the load entry points that dispatch on the file type. */
#include <ctype.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

/* ---- construction --------------------------------------------------------- */

hr_tokenizer *tok_alloc(int n_vocab) {
    hr_tokenizer *t = hr_xcalloc(1, sizeof(*t));
    t->n_vocab = n_vocab;
    t->tok = hr_xcalloc((size_t)n_vocab + 1, sizeof(char *));
    t->tok_len = hr_xcalloc((size_t)n_vocab + 1, sizeof(uint32_t));
    t->special = hr_xcalloc((size_t)n_vocab + 1, 1);
    tok_smap_init(&t->vocab, (size_t)n_vocab);
    t->unk_id = t->bos = t->eos = -1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    return t;
}

static void grow_vocab(hr_tokenizer *t, int32_t id) {
    if (id < t->n_vocab) return;
    int n = id + 1;
    t->tok = hr_xrealloc(t->tok, ((size_t)n + 1) * sizeof(char *));
    t->tok_len = hr_xrealloc(t->tok_len, ((size_t)n + 1) * sizeof(uint32_t));
    t->special = hr_xrealloc(t->special, (size_t)n + 1);
    for (int i = t->n_vocab; i <= n; i++) {
        t->tok[i] = NULL;
        t->tok_len[i] = 0;
        t->special[i] = 0;
    }
    t->n_vocab = n;
}

void tok_set_token(hr_tokenizer *t, int32_t id, const char *s, size_t n, bool in_vocab) {
    HR_ASSERT(id >= 0);
    grow_vocab(t, id);
    if (!t->tok[id]) {
        t->tok[id] = hr_xmalloc(n + 1);
        memcpy(t->tok[id], s, n);
        t->tok[id][n] = 0;
        t->tok_len[id] = (uint32_t)n;
    } else if (t->tok_len[id] != n || memcmp(t->tok[id], s, n) != 0)
        return; /* a second spelling of an id: the map must not point at transient memory */
    if (in_vocab) tok_smap_put(&t->vocab, t->tok[id], t->tok_len[id], id);
}

void tok_add_added(hr_tokenizer *t, const tok_added *a) {
    t->added = hr_xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof(tok_added));
    tok_added *d = &t->added[t->n_added++];
    *d = *a;
    d->content = hr_xmalloc(a->len + 1);
    memcpy(d->content, a->content, a->len);
    d->content[a->len] = 0;
    d->pat = d->content;
    d->pat_len = d->len;
    if (a->normalized) t->has_added_normalized = true;
    tok_set_token(t, a->id, a->content, a->len, false);
    if (a->special) t->special[a->id] = 1;
}

/* Grouped by first byte, longest first within a group, so the first hit at
 * a position is the leftmost-longest match. */
static int added_cmp(const void *x, const void *y) {
    const tok_added *a = x, *b = y;
    unsigned ca = a->pat_len ? (unsigned char)a->pat[0] : 0, cb = b->pat_len ? (unsigned char)b->pat[0] : 0;
    if (ca != cb) return ca < cb ? -1 : 1;
    if (a->pat_len != b->pat_len) return a->pat_len < b->pat_len ? 1 : -1;
    return a->id - b->id;
}

void tok_step_free(tok_step *s) {
    if (s->re) pcre2_code_free(s->re);
    free(s->str);
    free(s->str2);
}

/* Rust's regex / fancy-regex and Oniguruma (what tiktoken and HF use) give
 * \s the Unicode White_Space set and \w Alphabetic+M+Nd+Pc+Join_Control;
 * PCRE2's UCP classes differ at the edges (its \s takes U+180E, its \w
 * lacks marks). So \s \S \w \W are spelled out as explicit classes. */
#define WS_CLASS                                                                                                       \
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define WORD_CLASS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"

static void rewrite_classes(const char *pat, size_t len, tok_buf *o) {
    bool in_class = false;
    for (size_t i = 0; i < len;) {
        char c = pat[i];
        if (c == '\\' && i + 1 < len) {
            char n = pat[i + 1];
            const char *inner = n == 's' || n == 'S' ? WS_CLASS : n == 'w' || n == 'W' ? WORD_CLASS : NULL;
            bool neg = n == 'S' || n == 'W';
            if (inner && !(in_class && neg)) { /* a negated set inside a class stays PCRE2's */
                if (!in_class) tok_buf_put(o, neg ? "[^" : "[", neg ? 2 : 1);
                tok_buf_put(o, inner, strlen(inner));
                if (!in_class) tok_buf_putc(o, ']');
            } else
                tok_buf_put(o, pat + i, 2);
            i += 2;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = true;
            tok_buf_putc(o, c);
            i++;
            if (i < len && pat[i] == '^') tok_buf_putc(o, pat[i++]);
            if (i < len && pat[i] == ']') tok_buf_putc(o, pat[i++]); /* a leading ] is literal */
            continue;
        }
        if (c == ']' && in_class) in_class = false;
        tok_buf_putc(o, c);
        i++;
    }
}

pcre2_code *tok_regex_compile(const char *pat, size_t len, hr_err *err) {
    int ec;
    PCRE2_SIZE eo;
    tok_buf rw = {0};
    rewrite_classes(pat, len, &rw);
    tok_buf_put(&rw, "", 0);
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)rw.p, rw.len, PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        hr_err_set(err, HR_EUNSUP, "tokenizer regex /%.*s/ does not compile: %s", (int)HR_MIN(len, 200), pat,
                   (char *)msg);
    } else
        pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is unavailable */
    tok_buf_free(&rw);
    return re;
}

void hr_tokenizer_free(hr_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_vocab; i++) free(t->tok[i]);
    free(t->tok);
    free(t->tok_len);
    free(t->special);
    tok_smap_free(&t->vocab);
    tok_pmap_free(&t->merges);
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].pat != t->added[i].content) free(t->added[i].pat);
        free(t->added[i].content);
    }
    if (t->word_re) pcre2_code_free(t->word_re);
    free(t->added);
    for (int i = 0; i < t->n_norm; i++) tok_step_free(&t->norm[i]);
    for (int i = 0; i < t->n_pre; i++) tok_step_free(&t->pre[i]);
    for (int i = 0; i < t->n_dec; i++) tok_step_free(&t->dec[i]);
    free(t->norm);
    free(t->pre);
    free(t->dec);
    free(t->post);
    free(t->bos_str);
    free(t->eos_str);
    free(t->chat_template);
    free(t);
}

/* ---- regex matching ------------------------------------------------------- */

typedef struct rx_ctx {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} rx_ctx;

static void rx_free(rx_ctx *r) {
    if (r->md) pcre2_match_data_free(r->md);
    if (r->mc) pcre2_match_context_free(r->mc);
    if (r->js) pcre2_jit_stack_free(r->js);
}

/* Next non-empty match of re in s[from..n). Returns false when none. A long
 * whitespace run can exhaust the default 32 KiB JIT stack; we then retry once
 * with a larger private stack. */
static bool rx_next(rx_ctx *r, const pcre2_code *re, const char *s, size_t n, size_t from, size_t *ms, size_t *me) {
    if (!r->md) r->md = pcre2_match_data_create(4, NULL);
    while (from <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, r->md, r->mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !r->js) {
            r->js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
            r->mc = pcre2_match_context_create(NULL);
            pcre2_jit_stack_assign(r->mc, NULL, r->js);
            continue;
        }
        if (rc < 0) return false;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return true;
        }
        /* empty match: step one character */
        from = ov[0] + 1;
        while (from < n && ((unsigned char)s[from] & 0xC0) == 0x80) from++;
    }
    return false;
}

/* ---- splitting with HF's SplitDelimiterBehavior --------------------------- */

typedef struct seg {
    size_t s, e;
    bool m;
} seg;

typedef struct segs {
    seg *p;
    size_t n, cap;
} segs;

static void segs_push(segs *v, size_t s, size_t e, bool m) {
    if (s == e) return;
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 32;
        v->p = hr_xrealloc(v->p, v->cap * sizeof(seg));
    }
    v->p[v->n++] = (seg){s, e, m};
}

/* Applies behavior to a segment list covering a piece (is_match flags) and
 * appends the resulting pieces to out. Mirrors normalizer.rs split(). */
static void emit_split(const char *s, segs *v, tok_split_behavior b, bool invert, tok_pieces *out, bool first_orig,
                       uint8_t *origin_flags) {
    (void)origin_flags;
    (void)first_orig;
    if (invert)
        for (size_t i = 0; i < v->n; i++) v->p[i].m = !v->p[i].m;
    segs r = {0};
    bool prev = false;
    switch (b) {
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < v->n; i++) segs_push(&r, v->p[i].s, v->p[i].e, false);
        break;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < v->n; i++)
            if (!v->p[i].m) segs_push(&r, v->p[i].s, v->p[i].e, false);
        break;
    case TOK_SPLIT_PREV:
        for (size_t i = 0; i < v->n; i++) {
            if (v->p[i].m && !prev && r.n)
                r.p[r.n - 1].e = v->p[i].e;
            else
                segs_push(&r, v->p[i].s, v->p[i].e, false);
            prev = v->p[i].m;
        }
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < v->n; i++) {
            if (v->p[i].m == prev && r.n)
                r.p[r.n - 1].e = v->p[i].e;
            else
                segs_push(&r, v->p[i].s, v->p[i].e, false);
            prev = v->p[i].m;
        }
        break;
    case TOK_SPLIT_NEXT: {
        /* walk backwards: a match is glued to the segment after it */
        for (size_t k = v->n; k-- > 0;) {
            if (v->p[k].m && !prev && r.n)
                r.p[r.n - 1].s = v->p[k].s;
            else
                segs_push(&r, v->p[k].s, v->p[k].e, false);
            prev = v->p[k].m;
        }
        for (size_t i = 0; i < r.n / 2; i++) {
            seg x = r.p[i];
            r.p[i] = r.p[r.n - 1 - i];
            r.p[r.n - 1 - i] = x;
        }
        break;
    }
    }
    for (size_t i = 0; i < r.n; i++) tok_pieces_add(out, s + r.p[i].s, r.p[i].e - r.p[i].s, -1);
    free(r.p);
}

static void split_regex(rx_ctx *rx, const pcre2_code *re, const char *s, size_t n, segs *v) {
    size_t pos = 0, ms, me;
    v->n = 0;
    while (pos < n && rx_next(rx, re, s, n, pos, &ms, &me)) {
        segs_push(v, pos, ms, false);
        segs_push(v, ms, me, true);
        pos = me;
    }
    segs_push(v, pos, n, false);
}

static void split_string(const char *pat, size_t pn, const char *s, size_t n, segs *v) {
    size_t pos = 0;
    v->n = 0;
    if (pn == 0) {
        segs_push(v, 0, n, false);
        return;
    }
    for (size_t i = 0; i + pn <= n;) {
        if (memcmp(s + i, pat, pn) == 0) {
            segs_push(v, pos, i, false);
            segs_push(v, i, i + pn, true);
            i += pn;
            pos = i;
        } else
            i++;
    }
    segs_push(v, pos, n, false);
}

/* ---- normalizers ---------------------------------------------------------- */

static void replace_all(const char *s, size_t n, const char *pat, size_t pn, const char *rep, size_t rn, tok_buf *o) {
    if (pn == 0) {
        tok_buf_put(o, s, n);
        return;
    }
    size_t i = 0, run = 0;
    while (i + pn <= n) {
        if (memcmp(s + i, pat, pn) == 0) {
            tok_buf_put(o, s + run, i - run);
            tok_buf_put(o, rep, rn);
            i += pn;
            run = i;
        } else
            i++;
    }
    tok_buf_put(o, s + run, n - run);
}

/* Runs the normalizer chain over one text piece (HF normalizes each piece
 * between added tokens separately). */
static void normalize(const hr_tokenizer *t, rx_ctx *rx, const char *s, size_t n, tok_buf *out) {
    tok_buf a = {0}, b = {0};
    tok_buf_put(&a, s, n);
    for (int k = 0; k < t->n_norm; k++) {
        const tok_step *st = &t->norm[k];
        b.len = 0;
        tok_buf_put(&b, "", 0);
        switch (st->type) {
        case TOK_N_PREPEND:
            if (a.len) tok_buf_put(&b, st->str, st->str_len);
            tok_buf_put(&b, a.p, a.len);
            break;
        case TOK_N_REPLACE:
            if (st->re) {
                size_t pos = 0, ms, me;
                while (pos < a.len && rx_next(rx, st->re, a.p, a.len, pos, &ms, &me)) {
                    tok_buf_put(&b, a.p + pos, ms - pos);
                    tok_buf_put(&b, st->str2, st->str2_len);
                    pos = me;
                }
                tok_buf_put(&b, a.p + pos, a.len - pos);
            } else
                replace_all(a.p, a.len, st->str, st->str_len, st->str2, st->str2_len, &b);
            break;
        case TOK_N_NFC:
            tok_nfc(a.p, a.len, &b);
            break;
        case TOK_N_STRIP: {
            size_t i = 0, j = a.len;
            uint32_t cp;
            if (st->left)
                while (i < j) {
                    size_t l = tok_utf8_decode(a.p + i, j - i, &cp);
                    if (!tok_is_whitespace(cp)) break;
                    i += l;
                }
            if (st->right)
                while (j > i) {
                    size_t k2 = j - 1;
                    while (k2 > i && ((unsigned char)a.p[k2] & 0xC0) == 0x80) k2--;
                    tok_utf8_decode(a.p + k2, j - k2, &cp);
                    if (!tok_is_whitespace(cp)) break;
                    j = k2;
                }
            tok_buf_put(&b, a.p + i, j - i);
            break;
        }
        default:
            tok_buf_put(&b, a.p, a.len);
            break;
        }
        tok_buf t2 = a;
        a = b;
        b = t2;
    }
    tok_buf_put(out, a.p, a.len);
    tok_buf_free(&a);
    tok_buf_free(&b);
}

/* ---- added tokens --------------------------------------------------------- */

/* HF's single_word test is Rust regex \w against the neighbouring char. */
static bool is_word_char(const hr_tokenizer *t, const char *c, size_t l) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = pcre2_match(t->word_re, (PCRE2_SPTR)c, l, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static bool ends_with_word(const hr_tokenizer *t, const char *s, size_t n) {
    if (!n) return false;
    size_t k = n - 1;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return is_word_char(t, s + k, n - k);
}

static bool starts_with_word(const hr_tokenizer *t, const char *s, size_t n) {
    if (!n) return false;
    uint32_t cp;
    size_t l = tok_utf8_decode(s, n, &cp);
    return is_word_char(t, s, l);
}

/* Cuts s into text pieces and added-token pieces (fixed ids). Only tokens
 * whose `normalized` flag equals want_norm take part (HF matches the
 * non-normalized ones on the raw text, the others after normalization).
 * parse_special=false leaves special tokens as text (tiktoken's ordinary). */
static void split_added(const hr_tokenizer *t, const char *s, size_t n, bool want_norm, bool parse_special, size_t base,
                        tok_pieces *out, size_t *origin0_piece) {
    size_t start_offset = 0, i = 0;
    while (i < n) {
        const tok_added *hit = NULL;
        unsigned c0 = (unsigned char)s[i];
        for (int k = t->added_first[c0]; k < t->added_first[c0 + 1]; k++) {
            const tok_added *a = &t->added[k];
            if (a->normalized != want_norm || a->pat_len == 0 || a->pat_len > n - i) continue;
            if (!parse_special && a->special) continue;
            if (memcmp(s + i, a->pat, a->pat_len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t ms = i, me = i + hit->pat_len;
        i = me;
        if (hit->single_word) {
            bool start_space = ms == 0 || !ends_with_word(t, s, ms);
            bool stop_space = me == n || !starts_with_word(t, s + me, n - me);
            if (!start_space || !stop_space) continue;
        }
        if (hit->lstrip) {
            size_t ns = ms;
            while (ns > start_offset) {
                size_t k2 = ns - 1;
                while (k2 > start_offset && ((unsigned char)s[k2] & 0xC0) == 0x80) k2--;
                uint32_t cp;
                tok_utf8_decode(s + k2, ns - k2, &cp);
                if (!tok_is_whitespace(cp)) break;
                ns = k2;
            }
            ms = ns;
        }
        if (hit->rstrip) {
            while (me < n) {
                uint32_t cp;
                size_t l = tok_utf8_decode(s + me, n - me, &cp);
                if (!tok_is_whitespace(cp)) break;
                me += l;
            }
            i = me;
        }
        if (start_offset < ms) {
            if (base + start_offset == 0 && origin0_piece) *origin0_piece = out->n;
            tok_pieces_add(out, s + start_offset, ms - start_offset, -1);
        }
        tok_pieces_add(out, s + ms, me - ms, hit->id);
        start_offset = me;
    }
    if (start_offset < n) {
        if (base + start_offset == 0 && origin0_piece) *origin0_piece = out->n;
        tok_pieces_add(out, s + start_offset, n - start_offset, -1);
    }
}

/* ---- pre-tokenizers ------------------------------------------------------- */

static void bytelevel_map(const char *s, size_t n, tok_buf *o) {
    for (size_t i = 0; i < n; i++) {
        char u[4];
        size_t l = tok_utf8_encode(tok_byte_to_cp[(unsigned char)s[i]], u);
        tok_buf_put(o, u, l);
    }
}

/* Runs one pre-tokenizer over every text piece of in, writing out. orig0 is
 * the index of the piece that starts at offset 0 of the input (or SIZE_MAX),
 * updated for out. */
static void pretok_step(const hr_tokenizer *t, const tok_step *st, rx_ctx *rx, const tok_pieces *in, tok_pieces *out,
                        size_t *orig0) {
    segs v = {0};
    tok_buf tmp = {0};
    size_t new0 = SIZE_MAX;
    for (size_t i = 0; i < in->n; i++) {
        size_t n;
        const char *s = tok_piece(in, i, &n);
        if (in->flag[i]) {
            tok_pieces_add(out, s, n, in->fixed_id[i]);
            continue;
        }
        if (i == *orig0) new0 = out->n;
        tmp.len = 0;
        tok_buf_put(&tmp, "", 0);
        switch (st->type) {
        case TOK_P_BYTELEVEL: {
            if (st->add_prefix_space && (n == 0 || s[0] != ' ')) tok_buf_putc(&tmp, ' ');
            tok_buf_put(&tmp, s, n);
            if (st->use_regex)
                split_regex(rx, st->re, tmp.p, tmp.len, &v);
            else {
                v.n = 0;
                segs_push(&v, 0, tmp.len, false);
            }
            tok_buf m = {0};
            for (size_t k = 0; k < v.n; k++) {
                m.len = 0;
                bytelevel_map(tmp.p + v.p[k].s, v.p[k].e - v.p[k].s, &m);
                tok_pieces_add(out, m.p, m.len, -1);
            }
            tok_buf_free(&m);
            break;
        }
        case TOK_P_SPLIT:
            if (st->re)
                split_regex(rx, st->re, s, n, &v);
            else
                split_string(st->str, st->str_len, s, n, &v);
            emit_split(s, &v, st->behavior, st->invert, out, false, NULL);
            break;
        case TOK_P_DIGITS:
            split_regex(rx, st->re, s, n, &v);
            emit_split(s, &v, st->individual_digits ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS, false, out, false,
                       NULL);
            break;
        case TOK_P_METASPACE: {
            tok_buf r = {0};
            replace_all(s, n, " ", 1, st->str, st->str_len, &r);
            bool starts = r.len >= st->str_len && memcmp(r.p, st->str, st->str_len) == 0;
            if (!starts && (st->prepend == TOK_PREPEND_ALWAYS || (st->prepend == TOK_PREPEND_FIRST && i == *orig0)))
                tok_buf_put(&tmp, st->str, st->str_len);
            tok_buf_put(&tmp, r.p, r.len);
            tok_buf_free(&r);
            if (st->split) {
                split_string(st->str, st->str_len, tmp.p, tmp.len, &v);
                emit_split(tmp.p, &v, TOK_SPLIT_NEXT, false, out, false, NULL);
            } else
                tok_pieces_add(out, tmp.p, tmp.len, -1);
            break;
        }
        case TOK_P_WHITESPACE_SPLIT: {
            size_t k = 0;
            while (k < n) {
                uint32_t cp;
                size_t l = tok_utf8_decode(s + k, n - k, &cp);
                if (tok_is_whitespace(cp)) {
                    k += l;
                    continue;
                }
                size_t st0 = k;
                while (k < n) {
                    l = tok_utf8_decode(s + k, n - k, &cp);
                    if (tok_is_whitespace(cp)) break;
                    k += l;
                }
                tok_pieces_add(out, s + st0, k - st0, -1);
            }
            break;
        }
        default:
            tok_pieces_add(out, s, n, -1);
            break;
        }
        (void)t;
    }
    *orig0 = new0;
    free(v.p);
    tok_buf_free(&tmp);
}

/* ---- encode --------------------------------------------------------------- */

int hr_tokenizer_encode(const hr_tokenizer *t, const char *text, size_t len, const hr_encode_opts *opts, int32_t **ids,
                        size_t *n_ids, hr_err *err) {
    hr_encode_opts def = {0};
    if (!opts) opts = &def;
    tok_buf clean = {0}, nb = {0};
    tok_pieces a, b;
    tok_ids out = {0};
    rx_ctx rx = {0};
    tok_pieces_init(&a);
    tok_pieces_init(&b);
    *ids = NULL;
    *n_ids = 0;
    (void)err;

    /* Python str in, so bytes are decoded with errors="replace" first. */
    tok_utf8_sanitize(text ? text : "", text ? len : 0, &clean);

    bool parse_special = t->model == TOK_MODEL_TIKTOKEN ? opts->parse_special && !t->no_special_text : true;
    size_t orig0 = SIZE_MAX;
    split_added(t, clean.p, clean.len, false, parse_special, 0, &a, &orig0);

    /* normalize text pieces, then cut normalized added tokens */
    if (t->n_norm || t->has_added_normalized) {
        size_t o0 = SIZE_MAX;
        for (size_t i = 0; i < a.n; i++) {
            size_t n;
            const char *s = tok_piece(&a, i, &n);
            if (a.flag[i]) {
                tok_pieces_add(&b, s, n, a.fixed_id[i]);
                continue;
            }
            nb.len = 0;
            normalize(t, &rx, s, n, &nb);
            size_t mark = SIZE_MAX;
            if (t->has_added_normalized)
                split_added(t, nb.p ? nb.p : "", nb.len, true, parse_special, i == orig0 ? 0 : 1, &b, &mark);
            else {
                if (i == orig0) mark = b.n;
                tok_pieces_add(&b, nb.p ? nb.p : "", nb.len, -1);
            }
            if (i == orig0) o0 = mark;
        }
        orig0 = o0;
        tok_pieces tmp = a;
        a = b;
        b = tmp;
        tok_pieces_clear(&b);
    }

    for (int k = 0; k < t->n_pre; k++) {
        tok_pieces_clear(&b);
        pretok_step(t, &t->pre[k], &rx, &a, &b, &orig0);
        tok_pieces tmp = a;
        a = b;
        b = tmp;
    }

    if (opts->add_special_tokens && t->has_post) {
        for (int k = 0; k < t->n_post && t->post[k] >= 0; k++) tok_ids_push(&out, t->post[k]);
    }
    for (size_t i = 0; i < a.n; i++) {
        size_t n;
        const char *s = tok_piece(&a, i, &n);
        if (a.flag[i])
            tok_ids_push(&out, a.fixed_id[i]);
        else
            tok_bpe_word(t, s, n, &out);
    }
    if (opts->add_special_tokens && t->has_post) {
        int k = 0;
        while (k < t->n_post && t->post[k] >= 0) k++;
        for (k++; k < t->n_post; k++) tok_ids_push(&out, t->post[k]);
    }

    *ids = out.p ? out.p : hr_xmalloc(sizeof(int32_t));
    *n_ids = out.len;
    tok_buf_free(&clean);
    tok_buf_free(&nb);
    tok_pieces_free(&a);
    tok_pieces_free(&b);
    rx_free(&rx);
    return HR_OK;
}

/* ---- decode --------------------------------------------------------------- */

static bool byte_token(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || !isxdigit((unsigned char)s[3]) ||
        !isxdigit((unsigned char)s[4]))
        return false;
    char h[3] = {s[3], s[4], 0};
    *byte = (int)strtol(h, NULL, 16);
    return true;
}

static void dec_step(const tok_step *st, const tok_pieces *in, tok_pieces *out) {
    tok_buf tmp = {0};
    switch (st->type) {
    case TOK_D_BYTELEVEL: {
        /* per token: map chars back to bytes; a token with an unmapped char
         * (an added token) keeps its own bytes (HF byte_level.rs) */
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            size_t mark = tmp.len;
            bool ok = true;
            for (size_t k = 0; k < n;) {
                uint32_t cp;
                k += tok_utf8_decode(s + k, n - k, &cp);
                int by = tok_cp_to_byte(cp);
                if (by < 0) {
                    ok = false;
                    break;
                }
                tok_buf_putc(&tmp, (char)by);
            }
            if (!ok) {
                tmp.len = mark;
                tok_buf_put(&tmp, s, n);
            }
        }
        tok_buf clean = {0};
        tok_utf8_sanitize(tmp.p ? tmp.p : "", tmp.len, &clean);
        tok_pieces_add(out, clean.p, clean.len, -1);
        tok_buf_free(&clean);
        break;
    }
    case TOK_D_BYTEFALLBACK: {
        size_t nbytes = 0;
        for (size_t i = 0; i <= in->n; i++) {
            size_t n = 0;
            const char *s = i < in->n ? tok_piece(in, i, &n) : NULL;
            int by;
            if (s && byte_token(s, n, &by)) {
                tok_buf_putc(&tmp, (char)by);
                nbytes++;
                continue;
            }
            if (nbytes) {
                /* invalid byte runs become one U+FFFD per byte token */
                bool valid = true;
                for (size_t k = 0; k < tmp.len;) {
                    size_t l = tok_utf8_valid_len((const unsigned char *)tmp.p + k, tmp.len - k);
                    if (!l) {
                        valid = false;
                        break;
                    }
                    k += l;
                }
                if (valid)
                    tok_pieces_add(out, tmp.p, tmp.len, -1);
                else {
                    tok_buf r = {0};
                    for (size_t k = 0; k < nbytes; k++) tok_buf_put(&r, "\xEF\xBF\xBD", 3);
                    tok_pieces_add(out, r.p, r.len, -1);
                    tok_buf_free(&r);
                }
                tmp.len = 0;
                nbytes = 0;
            }
            if (s) tok_pieces_add(out, s, n, -1);
        }
        break;
    }
    case TOK_D_FUSE:
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            tok_buf_put(&tmp, s, n);
        }
        tok_pieces_add(out, tmp.p ? tmp.p : "", tmp.len, -1);
        break;
    case TOK_D_REPLACE:
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            tmp.len = 0;
            replace_all(s, n, st->str, st->str_len, st->str2, st->str2_len, &tmp);
            tok_pieces_add(out, tmp.p ? tmp.p : "", tmp.len, -1);
        }
        break;
    case TOK_D_METASPACE:
        /* HF's Metaspace decoder: the replacement becomes a space, except in
         * the first token where (unless prepend_scheme is never) every
         * occurrence is dropped, not just the leading one */
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            tmp.len = 0;
            bool drop = i == 0 && st->prepend != TOK_PREPEND_NEVER;
            replace_all(s, n, st->str, st->str_len, " ", drop ? 0 : 1, &tmp);
            tok_pieces_add(out, tmp.p ? tmp.p : "", tmp.len, -1);
        }
        break;
    case TOK_D_STRIP:
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            /* strip up to start/stop occurrences of the content char */
            size_t a0 = 0, b0 = n;
            for (int k = 0; k < st->start && a0 + st->str_len <= b0 && memcmp(s + a0, st->str, st->str_len) == 0; k++)
                a0 += st->str_len;
            for (int k = 0;
                 k < st->stop && b0 >= a0 + st->str_len && memcmp(s + b0 - st->str_len, st->str, st->str_len) == 0; k++)
                b0 -= st->str_len;
            tok_pieces_add(out, s + a0, b0 - a0, -1);
        }
        break;
    default:
        for (size_t i = 0; i < in->n; i++) {
            size_t n;
            const char *s = tok_piece(in, i, &n);
            tok_pieces_add(out, s, n, -1);
        }
        break;
    }
    tok_buf_free(&tmp);
}

void tok_decode_into(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, tok_buf *out) {
    if (t->model == TOK_MODEL_TIKTOKEN) {
        tok_buf raw = {0};
        for (size_t i = 0; i < n; i++) {
            int32_t id = ids[i];
            if (id < 0 || id >= t->n_vocab || !t->tok[id]) continue;
            if (skip_special && t->special[id]) continue;
            tok_buf_put(&raw, t->tok[id], t->tok_len[id]);
        }
        tok_utf8_sanitize(raw.p ? raw.p : "", raw.len, out);
        tok_buf_free(&raw);
        return;
    }
    tok_pieces a, b;
    tok_pieces_init(&a);
    tok_pieces_init(&b);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->tok[id]) continue;
        if (skip_special && t->special[id]) continue;
        tok_pieces_add(&a, t->tok[id], t->tok_len[id], -1);
    }
    if (t->has_decoder) {
        for (int k = 0; k < t->n_dec; k++) {
            tok_pieces_clear(&b);
            dec_step(&t->dec[k], &a, &b);
            tok_pieces tmp = a;
            a = b;
            b = tmp;
        }
        for (size_t i = 0; i < a.n; i++) {
            size_t l;
            const char *s = tok_piece(&a, i, &l);
            tok_buf_put(out, s, l);
        }
    } else {
        for (size_t i = 0; i < a.n; i++) { /* HF joins with spaces without a decoder */
            size_t l;
            const char *s = tok_piece(&a, i, &l);
            if (i) tok_buf_putc(out, ' ');
            tok_buf_put(out, s, l);
        }
    }
    tok_pieces_free(&a);
    tok_pieces_free(&b);
}

int hr_tokenizer_decode_n(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                          size_t *len, hr_err *err) {
    (void)err;
    tok_buf out = {0};
    tok_decode_into(t, ids, n, skip_special, &out);
    tok_buf_put(&out, "", 0);
    *text = out.p;
    if (len) *len = out.len;
    return HR_OK;
}

int hr_tokenizer_decode(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                        hr_err *err) {
    return hr_tokenizer_decode_n(t, ids, n, skip_special, text, NULL, err);
}

/* ---- accessors ------------------------------------------------------------ */

int hr_tokenizer_vocab_size(const hr_tokenizer *t) { return t->n_vocab; }

const char *hr_tokenizer_token_str(const hr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->tok[id] : NULL;
}

int32_t hr_tokenizer_token_id(const hr_tokenizer *t, const char *s) {
    size_t n = strlen(s);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].content, s, n) == 0) return t->added[i].id;
    return tok_smap_get(&t->vocab, s, n);
}

bool hr_tokenizer_is_special(const hr_tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->special[id]; }

int32_t hr_tokenizer_bos(const hr_tokenizer *t) { return t->bos; }
int32_t hr_tokenizer_eos(const hr_tokenizer *t) { return t->eos; }
const char *hr_tokenizer_chat_template(const hr_tokenizer *t) { return t->chat_template; }
const char *hr_tokenizer_bos_str(const hr_tokenizer *t) { return t->bos_str ? t->bos_str : ""; }
const char *hr_tokenizer_eos_str(const hr_tokenizer *t) { return t->eos_str ? t->eos_str : ""; }

/* ---- finishing a load ---------------------------------------------------- */

int tok_finish(hr_tokenizer *t, hr_err *err) {
    bool single = false;
    /* HF matches normalized added tokens by their normalized content */
    for (int i = 0; i < t->n_added; i++) {
        tok_added *a = &t->added[i];
        single = single || a->single_word;
        if (!a->normalized || !t->n_norm) continue;
        tok_buf nb = {0};
        rx_ctx rx = {0};
        normalize(t, &rx, a->content, a->len, &nb);
        rx_free(&rx);
        tok_buf_put(&nb, "", 0);
        a->pat = nb.p;
        a->pat_len = nb.len;
        /* HF also decodes such a token as its normalized content; ids that
         * are in the model vocab keep their vocab string (the map points
         * into it) */
        if (tok_smap_get(&t->vocab, t->tok[a->id], t->tok_len[a->id]) != a->id) {
            free(t->tok[a->id]);
            t->tok[a->id] = hr_xstrdup(a->pat);
            t->tok_len[a->id] = (uint32_t)a->pat_len;
        }
    }
    if (single) {
        static const char w[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";
        if (!(t->word_re = tok_regex_compile(w, sizeof(w) - 1, err))) return err->code;
    }
    if (t->byte_fallback) {
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof(s), "<0x%02X>", b);
            t->byte_tok[b] = tok_smap_get(&t->vocab, s, 6);
        }
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_smap_get(&t->vocab, &c, 1);
    }
    if (t->n_added) qsort(t->added, (size_t)t->n_added, sizeof(tok_added), added_cmp);
    for (int c = 0; c <= 256; c++) t->added_first[c] = t->n_added;
    for (int i = t->n_added - 1; i >= 0; i--)
        if (t->added[i].pat_len) t->added_first[(unsigned char)t->added[i].pat[0]] = i;
    for (int c = 255; c >= 0; c--)
        if (t->added_first[c] > t->added_first[c + 1]) t->added_first[c] = t->added_first[c + 1];
    return HR_OK;
}

/* ---- loading -------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int hr_tokenizer_load_file(const char *file, const char *encoding, hr_tokenizer **out, hr_err *err) {
    *out = NULL;
    if (!is_file(file)) return hr_err_set(err, HR_ENOTFOUND, "tokenizer file not found: %s", file);
    if (ends_with(file, ".gguf")) return tok_load_gguf(file, out, err);
    if (ends_with(file, ".json")) return tok_load_hf_json(file, out, err);
    return tok_load_tiktoken(file, encoding, out, err);
}

int hr_tokenizer_load_model(const char *path, hr_tokenizer **out, hr_err *err) {
    char p[4096];
    *out = NULL;
    if (is_file(path)) {
        if (ends_with(path, ".gguf")) return tok_load_gguf(path, out, err);
        return hr_tokenizer_load_file(path, NULL, out, err);
    }
    snprintf(p, sizeof(p), "%s/tokenizer.json", path);
    if (is_file(p)) {
        int rc = tok_load_hf_json(p, out, err);
        if (rc == HR_OK) tok_read_config(*out, path);
        return rc;
    }
    snprintf(p, sizeof(p), "%s/tekken.json", path);
    if (is_file(p)) {
        int rc = tok_load_hf_json(p, out, err); /* recognises the tekken layout */
        if (rc == HR_OK) tok_read_config(*out, path);
        return rc;
    }
    static const char *const tk[] = {"o200k_base.tiktoken", "cl100k_base.tiktoken", "tokenizer.model"};
    for (size_t i = 0; i < HR_ARRAY_LEN(tk); i++) {
        snprintf(p, sizeof(p), "%s/%s", path, tk[i]);
        if (is_file(p)) {
            int rc = tok_load_tiktoken(p, NULL, out, err);
            if (rc == HR_OK) tok_read_config(*out, path);
            return rc;
        }
    }
    return hr_err_set(err, HR_ENOTFOUND, "no tokenizer.json, tekken.json, *.tiktoken or tokenizer.model in %s", path);
}
