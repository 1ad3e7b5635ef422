/* Template lexer: splits the source into text and tag tokens the way
 * jinja2's Lexer does with trim_blocks=True, lstrip_blocks=True and
 * keep_trailing_newline=False (Hugging Face's chat-template environment):
 * newline normalisation, {%- -%} stripping, the first newline after a block
 * or comment tag dropped, indentation before a block tag on its own line
 * dropped, raw blocks and comments. */
#include <errno.h>
#include <string.h>

#include "template/tpl_internal.h"

typedef struct lexer {
    const char *s;
    size_t n, pos;
    int line;
    size_t line_pos;        /* position up to which newlines are counted */
    ttoken *toks;
    size_t nt, cap;
    hr_err *err;
} lexer;

static int line_at(lexer *L, size_t pos) {
    for (; L->line_pos < pos && L->line_pos < L->n; L->line_pos++)
        if (L->s[L->line_pos] == '\n') L->line++;
    return L->line;
}

static ttoken *push(lexer *L, tk_type t, size_t at) {
    if (L->nt == L->cap) {
        L->cap = L->cap ? L->cap * 2 : 64;
        L->toks = hr_xrealloc(L->toks, L->cap * sizeof(ttoken));
    }
    ttoken *k = &L->toks[L->nt++];
    memset(k, 0, sizeof(*k));
    k->type = t;
    k->line = line_at(L, at);
    return k;
}

static void push_text(lexer *L, size_t a, size_t b) {
    if (b <= a) return;
    ttoken *k = push(L, TK_TEXT, a);
    k->len = b - a;
    k->s = hr_xmalloc(k->len + 1);
    memcpy(k->s, L->s + a, k->len);
    k->s[k->len] = 0;
}

static int lex_fail(lexer *L, size_t at, const char *msg) {
    return hr_err_set(L->err, HR_EINVAL, "line %d: %s", line_at(L, at), msg);
}

/* Length of the Python-\s whitespace character at p, 0 if none. */
static size_t space_at(const char *s, size_t n, size_t p) {
    if (p >= n) return 0;
    uint32_t cp;
    size_t k = tpl_utf8_decode(s + p, n - p, &cp);
    return tpl_is_space(cp) ? k : 0;
}

static size_t skip_spaces(const char *s, size_t n, size_t p) {
    size_t k;
    while ((k = space_at(s, n, p)) > 0) p += k;
    return p;
}

/* Start of the trailing whitespace run of s[a, b). */
static size_t rstrip_pos(const char *s, size_t a, size_t b) {
    while (b > a) {
        size_t q = b - 1;
        while (q > a && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
        uint32_t cp;
        tpl_utf8_decode(s + q, b - q, &cp);
        if (!tpl_is_space(cp)) break;
        b = q;
    }
    return b;
}

/* The end of the text before a tag after applying its whitespace control:
 * '-' strips all whitespace; otherwise lstrip_blocks drops spaces between
 * the line start and a block or comment tag. */
static size_t text_end(lexer *L, size_t a, size_t b, char sign, bool lstrip_ok, bool line_starting) {
    if (sign == '-') return rstrip_pos(L->s, a, b);
    if (sign == '+' || !lstrip_ok) return b;
    size_t l = b;
    while (l > a && L->s[l - 1] != '\n') l--;
    if (l == b) return b;                           /* nothing between the newline and the tag */
    if (l == a && !line_starting) return b;
    if (rstrip_pos(L->s, l, b) != l) return b;      /* not only whitespace */
    return l;
}

/* Decodes a string literal body as Python's unicode-escape does. */
static char *decode_string(const char *s, size_t n, size_t *out_len) {
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c != '\\' || i + 1 >= n) { tbuf_putc(&b, c); continue; }
        char e = s[++i];
        int hex = 0;
        switch (e) {
        case 'n': tbuf_putc(&b, '\n'); break;
        case 't': tbuf_putc(&b, '\t'); break;
        case 'r': tbuf_putc(&b, '\r'); break;
        case 'a': tbuf_putc(&b, '\a'); break;
        case 'b': tbuf_putc(&b, '\b'); break;
        case 'f': tbuf_putc(&b, '\f'); break;
        case 'v': tbuf_putc(&b, '\v'); break;
        case '\\': tbuf_putc(&b, '\\'); break;
        case '\'': tbuf_putc(&b, '\''); break;
        case '"': tbuf_putc(&b, '"'); break;
        case '\n': break; /* line continuation */
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                uint32_t v = 0;
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') { v = v * 8 + (uint32_t)(s[i] - '0'); i++; k++; }
                i--;
                tpl_utf8_encode(v, &b);
            } else {
                tbuf_putc(&b, '\\');
                tbuf_putc(&b, e);
            }
        }
        if (hex) {
            uint32_t v = 0;
            int k = 0;
            for (; k < hex && i + 1 < n; k++) {
                char h = s[i + 1];
                int d = (h >= '0' && h <= '9') ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                        : (h >= 'A' && h <= 'F') ? h - 'A' + 10 : -1;
                if (d < 0) break;
                v = v * 16 + (uint32_t)d;
                i++;
            }
            /* lone surrogates cannot be carried in UTF-8 output */
            if (k < hex || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { free(b.p); return NULL; }
            tpl_utf8_encode(v, &b);
        }
    }
    *out_len = b.n;
    return b.p;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

/* Digits with single underscores between them ((\d+_)*\d+); returns end. */
static size_t scan_digits(const char *s, size_t n, size_t p) {
    if (p >= n || !is_digit(s[p])) return p;
    while (p < n && is_digit(s[p])) {
        p++;
        if (p + 1 < n && s[p] == '_' && is_digit(s[p + 1])) p++;
    }
    return p;
}

static const char *const OPS[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]",
                                  "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};

/* Lexes the inside of a {{ }} or {% %} tag starting at L->pos; on return
 * L->pos is after the closing delimiter (and what it strips). */
static int lex_tag(lexer *L, bool block, bool *line_starting) {
    const char *s = L->s;
    size_t n = L->n;
    char stack[64];
    int depth = 0;
    for (;;) {
        size_t p = L->pos;
        while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r' || s[p] == '\f' || s[p] == '\v'))
            p++;
        L->pos = p;
        if (p >= n) return lex_fail(L, p, block ? "unexpected end of template, expected '%}'" : "unexpected end of template, expected '}}'");
        char e1 = block ? '%' : '}';
        if (depth == 0) {
            if (s[p] == '-' && p + 2 < n && s[p + 1] == e1 && s[p + 2] == '}') {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, p);
                size_t q = skip_spaces(s, n, p + 3);
                *line_starting = q > p + 3 ? s[q - 1] == '\n' : false;
                L->pos = q;
                return HR_OK;
            }
            if (block && s[p] == '+' && p + 2 < n && s[p + 1] == '%' && s[p + 2] == '}') {
                push(L, TK_BLOCK_END, p);
                L->pos = p + 3;
                *line_starting = false;
                return HR_OK;
            }
            if (s[p] == e1 && p + 1 < n && s[p + 1] == '}') {
                push(L, block ? TK_BLOCK_END : TK_VAR_END, p);
                L->pos = p + 2;
                *line_starting = false;
                if (block && L->pos < n && s[L->pos] == '\n') { L->pos++; *line_starting = true; }
                return HR_OK;
            }
        }
        char c = s[p];
        if (is_digit(c)) {
            size_t q = scan_digits(s, n, p);
            bool is_float = false;
            bool after_dot = p > 0 && s[p - 1] == '.';
            if (!after_dot) {
                size_t r = q;
                if (r + 1 < n && s[r] == '.' && is_digit(s[r + 1])) { r = scan_digits(s, n, r + 1); is_float = true; }
                if (r < n && (s[r] == 'e' || s[r] == 'E')) {
                    size_t t = r + 1;
                    if (t < n && (s[t] == '+' || s[t] == '-')) t++;
                    size_t u = scan_digits(s, n, t);
                    if (u > t) { r = u; is_float = true; }
                }
                if (is_float) q = r;
            }
            if (!is_float && c == '0') {
                /* jinja2's integer_re: 0b/0o/0x literals, and a decimal may not
                 * start with 0 (so "01" is the two tokens 0 and 1). */
                int base = 0;
                char x = p + 1 < n ? (char)(s[p + 1] | 0x20) : 0;
                if (x == 'b') base = 2;
                else if (x == 'o') base = 8;
                else if (x == 'x') base = 16;
                if (base) {
                    size_t r = p + 2;
                    uint64_t v = 0;
                    bool any = false, ovf = false;
                    for (;;) {
                        size_t t = r;
                        if (t < n && s[t] == '_') t++;
                        int d = -1;
                        if (t < n) {
                            char h = (char)(s[t] | 0x20);
                            d = (h >= '0' && h <= '9') ? h - '0' : (h >= 'a' && h <= 'f') ? h - 'a' + 10 : -1;
                        }
                        if (d < 0 || d >= base) break;
                        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) ovf = true;
                        v = v * (uint64_t)base + (uint64_t)d;
                        any = true;
                        r = t + 1;
                    }
                    if (any) {
                        if (ovf || v > INT64_MAX) return lex_fail(L, p, "unsupported: integer literal too large");
                        ttoken *t = push(L, TK_INT, p);
                        t->i = (int64_t)v;
                        L->pos = r;
                        continue;
                    }
                }
                /* 0(_?0)* */
                q = p + 1;
                while (q < n && (s[q] == '0' || (s[q] == '_' && q + 1 < n && s[q + 1] == '0'))) q += s[q] == '_' ? 2 : 1;
            }
            char num[128];
            size_t k = 0;
            for (size_t i = p; i < q && k + 1 < sizeof(num); i++)
                if (s[i] != '_') num[k++] = s[i];
            num[k] = 0;
            ttoken *t = push(L, is_float ? TK_FLOAT : TK_INT, p);
            if (is_float) t->f = strtod(num, NULL);
            else {
                errno = 0;
                unsigned long long v = strtoull(num, NULL, 10);
                if (errno || v > INT64_MAX) return lex_fail(L, p, "unsupported: integer literal too large");
                t->i = (int64_t)v;
            }
            L->pos = q;
            continue;
        }
        if (is_name_start(c)) {
            size_t q = p;
            while (q < n && is_name_char(s[q])) q++;
            ttoken *t = push(L, TK_NAME, p);
            t->len = q - p;
            t->s = hr_xmalloc(t->len + 1);
            memcpy(t->s, s + p, t->len);
            t->s[t->len] = 0;
            L->pos = q;
            continue;
        }
        if (c == '\'' || c == '"') {
            size_t q = p + 1;
            while (q < n && s[q] != c) q += (s[q] == '\\' && q + 1 < n) ? 2 : 1;
            if (q >= n) return lex_fail(L, p, "unterminated string literal");
            ttoken *t = push(L, TK_STRING, p);
            t->s = decode_string(s + p + 1, q - p - 1, &t->len);
            if (!t->s) return hr_err_set(L->err, HR_EUNSUP, "line %d: unsupported escape in string literal (truncated, out of range or a surrogate)", line_at(L, p));
            L->pos = q + 1;
            continue;
        }
        const char *op = NULL;
        for (size_t i = 0; i < HR_ARRAY_LEN(OPS); i++) {
            size_t ol = strlen(OPS[i]);
            if (p + ol <= n && memcmp(s + p, OPS[i], ol) == 0) { op = OPS[i]; break; }
        }
        if (!op) {
            uint32_t cp;
            size_t k = tpl_utf8_decode(s + p, n - p, &cp);
            if (cp == 0xFFFD) k = 0; /* not valid UTF-8: do not echo it */
            return hr_err_set(L->err, HR_EINVAL, "line %d: unexpected character '%.*s' (U+%04X)", line_at(L, p), (int)k,
                              s + p, cp);
        }
        if (op[0] == '(' || op[0] == '[' || op[0] == '{') {
            if (depth == (int)sizeof(stack)) return lex_fail(L, p, "unsupported: brackets nested too deeply");
            stack[depth++] = op[0] == '(' ? ')' : op[0] == '[' ? ']' : '}';
        } else if (op[0] == ')' || op[0] == ']' || op[0] == '}') {
            if (depth == 0 || stack[depth - 1] != op[0]) {
                return hr_err_set(L->err, HR_EINVAL, "line %d: unexpected '%c'", line_at(L, p), op[0]);
            }
            depth--;
        }
        ttoken *t = push(L, TK_OP, p);
        t->len = strlen(op);
        t->s = hr_xstrdup(op);
        L->pos = p + t->len;
    }
}

/* Matches `{%[-+]?\s*WORD\s*` at p; returns the position after it or 0. */
static size_t match_word_tag(const char *s, size_t n, size_t p, const char *word, char *sign) {
    if (p + 2 > n || s[p] != '{' || s[p + 1] != '%') return 0;
    size_t q = p + 2;
    *sign = 0;
    if (q < n && (s[q] == '-' || s[q] == '+')) *sign = s[q++];
    q = skip_spaces(s, n, q);
    size_t wl = strlen(word);
    if (q + wl > n || memcmp(s + q, word, wl) != 0) return 0;
    q = skip_spaces(s, n, q + wl);
    return q;
}

static int lex_raw(lexer *L, size_t start, bool *line_starting) {
    const char *s = L->s;
    size_t n = L->n;
    for (size_t k = start; k + 1 < n; k++) {
        if (s[k] != '{' || s[k + 1] != '%') continue;
        char sign;
        size_t q = match_word_tag(s, n, k, "endraw", &sign);
        if (!q) continue;
        size_t end;
        if (q + 2 < n && (s[q] == '+' || s[q] == '-') && s[q + 1] == '%' && s[q + 2] == '}') {
            end = q + 3;
            if (s[q] == '-') end = skip_spaces(s, n, end);
        } else if (q + 1 < n && s[q] == '%' && s[q + 1] == '}') {
            end = q + 2;
            if (end < n && s[end] == '\n') end++;
        } else {
            continue;
        }
        push_text(L, start, text_end(L, start, k, sign, true, *line_starting));
        *line_starting = s[end - 1] == '\n';
        L->pos = end;
        return HR_OK;
    }
    return lex_fail(L, start, "missing end of raw directive");
}

static int lex_root(lexer *L) {
    const char *s = L->s;
    size_t n = L->n;
    bool line_starting = true;
    while (L->pos < n) {
        size_t k = L->pos;
        while (k + 1 < n && !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#'))) k++;
        if (k + 1 >= n) { push_text(L, L->pos, n); break; }
        char kind = s[k + 1];
        char sign = (k + 2 < n && (s[k + 2] == '-' || s[k + 2] == '+')) ? s[k + 2] : 0;
        /* {% raw %} is recognised before ordinary block tags. */
        size_t raw_end = 0;
        if (kind == '%') {
            char rs;
            size_t q = match_word_tag(s, n, k, "raw", &rs);
            if (q) {
                if (q + 2 < n && s[q] == '-' && s[q + 1] == '%' && s[q + 2] == '}') raw_end = skip_spaces(s, n, q + 3);
                else if (q + 1 < n && s[q] == '%' && s[q + 1] == '}') raw_end = q + 2;
            }
        }
        push_text(L, L->pos, text_end(L, L->pos, k, sign, kind != '{', line_starting));
        size_t after = k + 2 + (sign ? 1 : 0);
        if (raw_end) {
            line_starting = s[raw_end - 1] == '\n';
            int rc = lex_raw(L, raw_end, &line_starting);
            if (rc) return rc;
            continue;
        }
        if (kind == '#') {
            size_t q = after;
            while (q + 1 < n && !(s[q] == '#' && s[q + 1] == '}')) q++;
            if (q + 1 >= n) return lex_fail(L, k, "missing end of comment tag");
            size_t end = q + 2;
            if (q > after && s[q - 1] == '-') end = skip_spaces(s, n, end);
            else if (!(q > after && s[q - 1] == '+') && end < n && s[end] == '\n') end++;
            line_starting = s[end - 1] == '\n';
            L->pos = end;
            continue;
        }
        push(L, kind == '{' ? TK_VAR_BEGIN : TK_BLOCK_BEGIN, k);
        L->pos = after;
        int rc = lex_tag(L, kind == '%', &line_starting);
        if (rc) return rc;
    }
    push(L, TK_EOF, n);
    return HR_OK;
}

int tpl_lex(const char *src, ttoken **toks, size_t *ntoks, hr_err *err) {
    /* jinja2 splits on \r\n, \r and \n, rejoins with \n and drops one
     * trailing newline (keep_trailing_newline=False). */
    size_t n = strlen(src);
    char *s = hr_xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[m++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            s[m++] = src[i];
        }
    }
    if (m > 0 && s[m - 1] == '\n') m--;
    s[m] = 0;
    lexer L = {.s = s, .n = m, .line = 1, .err = err};
    int rc = lex_root(&L);
    free(s);
    if (rc) {
        tpl_tokens_free(L.toks, L.nt);
        return rc;
    }
    *toks = L.toks;
    *ntoks = L.nt;
    return HR_OK;
}

void tpl_tokens_free(ttoken *toks, size_t n) {
    for (size_t i = 0; i < n; i++) free(toks[i].s);
    free(toks);
}
