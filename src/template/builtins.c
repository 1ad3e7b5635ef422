/* Built-in filters, tests, methods and globals of the subset: jinja2 3.1's
 * filters and tests as Hugging Face's environment configures them (its own
 * tojson, raise_exception, strftime_now, namespace, dict), the Python str /
 * dict / list methods templates call, and the loop object's cycle/changed.
 * Each mirrors the Python implementation's edge cases (Undefined, types). */
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <wctype.h>

#include "template/tpl_internal.h"

#define MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

/* ------------------------------------------------------------ helpers */
static bool arg_get(targs *a, int idx, const char *name, tv *out) {
    if (idx >= 0 && idx < a->npos) { *out = a->pos[idx]; return true; }
    for (int i = 0; i < a->nkw; i++)
        if (!strcmp(a->kwn[i], name)) { *out = a->kw[i]; return true; }
    return false;
}

static tv arg_or(targs *a, int idx, const char *name, tv def) {
    tv v;
    return arg_get(a, idx, name, &v) ? v : def;
}

static int too_many(tctx *c, const tnode *at, targs *a, int maxpos, const char *what) {
    if (a->npos > maxpos) return tpl_fail(c, at, HR_EINVAL, "%s takes at most %d positional argument(s)", what, maxpos);
    return HR_OK;
}

static int to_str(tctx *c, const tnode *at, tv v, tbuf *b) {
    int rc = tv_to_str(v, b, c->err);
    if (rc) return tpl_fail(c, at, rc, "%s", c->err->msg);
    return HR_OK;
}

/* str(v) as a new string value. */
static int str_of(tctx *c, const tnode *at, tv v, tv *out) {
    if (v.t == TV_STR) { *out = tv_ref(v); return HR_OK; }
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    int rc = to_str(c, at, v, &b);
    if (rc) { free(b.p); return rc; }
    *out = tbuf_to_str(&b);
    return HR_OK;
}

static pthread_once_t loc_once = PTHREAD_ONCE_INIT;
static locale_t loc_utf8;
static void loc_init(void) { loc_utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0); }

static uint32_t cp_upper(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
    pthread_once(&loc_once, loc_init);
    return loc_utf8 ? (uint32_t)towupper_l((wint_t)c, loc_utf8) : c;
}
static uint32_t cp_lower(uint32_t c) {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    pthread_once(&loc_once, loc_init);
    return loc_utf8 ? (uint32_t)towlower_l((wint_t)c, loc_utf8) : c;
}
static bool cp_is_upper(uint32_t c) { return cp_lower(c) != c; }
static bool cp_is_lower(uint32_t c) { return cp_upper(c) != c; }
static bool cp_is_cased(uint32_t c) { return cp_is_upper(c) || cp_is_lower(c); }
static bool cp_is_alpha(uint32_t c) {
    if (c < 0x80) return (c | 32) >= 'a' && (c | 32) <= 'z';
    pthread_once(&loc_once, loc_init);
    return loc_utf8 ? iswalpha_l((wint_t)c, loc_utf8) : false;
}
static bool cp_is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static bool cp_is_alnum(uint32_t c) {
    if (c < 0x80) return cp_is_alpha(c) || cp_is_digit(c);
    pthread_once(&loc_once, loc_init);
    return loc_utf8 ? iswalnum_l((wint_t)c, loc_utf8) : false;
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE_METHOD, CASE_CAPITALIZE, CASE_TITLE_FILTER };

/* Unconditional special casings of Python's str.upper()/lower() that towupper
 * cannot express (one code point becomes several). */
static const char *upper_special(uint32_t c) {
    switch (c) {
    case 0xDF: return "SS";
    case 0x149: return "\xCA\xBCN";
    case 0xFB00: return "FF";
    case 0xFB01: return "FI";
    case 0xFB02: return "FL";
    case 0xFB03: return "FFI";
    case 0xFB04: return "FFL";
    case 0xFB05: case 0xFB06: return "ST";
    default: return NULL;
    }
}

/* Python's final-sigma rule in lower(): Σ preceded by a cased letter and
 * not followed by one becomes ς. */
static bool final_sigma(const char *p, size_t n, size_t at, size_t len) {
    bool before = false, after = false;
    for (size_t q = at; q > 0;) {
        size_t r = q - 1;
        while (r > 0 && ((unsigned char)p[r] & 0xC0) == 0x80) r--;
        uint32_t cp;
        tpl_utf8_decode(p + r, q - r, &cp);
        if (cp == '\'' || cp == 0xAD || cp == 0x2019 || (cp >= 0x300 && cp <= 0x36F)) { q = r; continue; } /* case-ignorable */
        before = cp_is_cased(cp);
        break;
    }
    for (size_t q = at + len; q < n;) {
        uint32_t cp;
        size_t k = tpl_utf8_decode(p + q, n - q, &cp);
        if (cp == '\'' || cp == 0xAD || cp == 0x2019 || (cp >= 0x300 && cp <= 0x36F)) { q += k; continue; }
        after = cp_is_cased(cp);
        break;
    }
    return before && !after;
}

static tv case_map(tv s, int mode) {
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    bool prev_cased = false, first = true, word_start = true;
    for (size_t i = 0; i < s.u.s->len;) {
        uint32_t cp;
        size_t k = tpl_utf8_decode(s.u.s->data + i, s.u.s->len - i, &cp);
        uint32_t o = cp;
        const char *sp;
        switch (mode) {
        case CASE_UPPER:
            if ((sp = upper_special(cp)) != NULL) {
                tbuf_puts(&b, sp);
                i += k;
                continue;
            }
            o = cp_upper(cp);
            break;
        case CASE_LOWER:
            if (cp == 0x130) { tbuf_puts(&b, "i\xCC\x87"); i += k; continue; } /* İ -> i + combining dot */
            o = cp == 0x3A3 && final_sigma(s.u.s->data, s.u.s->len, i, k) ? 0x3C2 : cp_lower(cp);
            break;
        case CASE_TITLE_METHOD:
            o = prev_cased ? cp_lower(cp) : cp_upper(cp);
            prev_cased = cp_is_cased(cp);
            break;
        case CASE_CAPITALIZE: o = first ? cp_upper(cp) : cp_lower(cp); break;
        case CASE_TITLE_FILTER: {
            /* jinja2 do_title: words split on runs of [-\s({[<]; first char
             * upper, the rest lower. */
            bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || tpl_is_space(cp);
            if (sep) { o = cp; word_start = true; }
            else { o = word_start ? cp_upper(cp) : cp_lower(cp); word_start = false; }
            break;
        }
        }
        first = false;
        if (o == cp) tbuf_put(&b, s.u.s->data + i, k);
        else tpl_utf8_encode(o, &b);
        i += k;
    }
    return tbuf_to_str(&b);
}

/* Python str.strip family; chars NULL = whitespace. */
static tv strip(tv s, const tv *chars, bool left, bool right) {
    const char *p = s.u.s->data;
    size_t a = 0, b = s.u.s->len;
    while (a < b) {
        uint32_t cp;
        size_t k = tpl_utf8_decode(p + a, b - a, &cp);
        if (!left) break;
        bool hit;
        if (chars) {
            hit = false;
            for (size_t j = 0; j < chars->u.s->len;) {
                uint32_t d;
                j += tpl_utf8_decode(chars->u.s->data + j, chars->u.s->len - j, &d);
                if (d == cp) { hit = true; break; }
            }
        } else {
            hit = tpl_is_space(cp);
        }
        if (!hit) break;
        a += k;
    }
    while (right && b > a) {
        size_t q = b - 1;
        while (q > a && ((unsigned char)p[q] & 0xC0) == 0x80) q--;
        uint32_t cp;
        tpl_utf8_decode(p + q, b - q, &cp);
        bool hit;
        if (chars) {
            hit = false;
            for (size_t j = 0; j < chars->u.s->len;) {
                uint32_t d;
                j += tpl_utf8_decode(chars->u.s->data + j, chars->u.s->len - j, &d);
                if (d == cp) { hit = true; break; }
            }
        } else {
            hit = tpl_is_space(cp);
        }
        if (!hit) break;
        b = q;
    }
    return tv_str_new(p + a, b - a);
}

static tv str_replace(tv s, tv old, tv nw, int64_t count) {
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    const char *p = s.u.s->data;
    size_t n = s.u.s->len, ol = old.u.s->len;
    if (ol == 0) {
        /* Python inserts the replacement around every character. */
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            if (count >= 0 && done >= count) { tbuf_put(&b, p + i, n - i); break; }
            tbuf_put(&b, nw.u.s->data, nw.u.s->len);
            done++;
            if (i >= n) break;
            uint32_t cp;
            size_t k = tpl_utf8_decode(p + i, n - i, &cp);
            tbuf_put(&b, p + i, k);
            i += k;
        }
        return tbuf_to_str(&b);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i < n) {
        const char *hit = (count < 0 || done < count) ? memmem(p + i, n - i, old.u.s->data, ol) : NULL;
        if (!hit) { tbuf_put(&b, p + i, n - i); break; }
        tbuf_put(&b, p + i, (size_t)(hit - (p + i)));
        tbuf_put(&b, nw.u.s->data, nw.u.s->len);
        i = (size_t)(hit - p) + ol;
        done++;
    }
    return tbuf_to_str(&b);
}

/* Python str.split / rsplit. sep NULL = runs of whitespace. */
static tv str_split(tv s, const tv *sep, int64_t maxsplit, bool from_right) {
    tv out = tv_list_new(TL_LIST, 0);
    const char *p = s.u.s->data;
    size_t n = s.u.s->len;
    if (sep) {
        size_t sl = sep->u.s->len;
        if (!from_right) {
            size_t i = 0;
            int64_t k = 0;
            for (;;) {
                const char *hit = (maxsplit < 0 || k < maxsplit) ? memmem(p + i, n - i, sep->u.s->data, sl) : NULL;
                if (!hit) { tv_list_push(out, tv_str_new(p + i, n - i)); break; }
                tv_list_push(out, tv_str_new(p + i, (size_t)(hit - (p + i))));
                i = (size_t)(hit - p) + sl;
                k++;
            }
        } else {
            size_t end = n;
            int64_t k = 0;
            tv rev = tv_list_new(TL_LIST, 0);
            for (;;) {
                const char *hit = NULL;
                if ((maxsplit < 0 || k < maxsplit) && end >= sl) {
                    for (size_t q = end - sl + 1; q-- > 0;)
                        if (memcmp(p + q, sep->u.s->data, sl) == 0) { hit = p + q; break; }
                }
                if (!hit) { tv_list_push(rev, tv_str_new(p, end)); break; }
                tv_list_push(rev, tv_str_new(hit + sl, end - (size_t)(hit - p) - sl));
                end = (size_t)(hit - p);
                k++;
            }
            for (size_t i = rev.u.l->n; i-- > 0;) tv_list_push(out, tv_ref(rev.u.l->items[i]));
            tv_unref(rev);
        }
        return out;
    }
    /* whitespace split */
    typedef struct { size_t a, b; } span;
    span *sp = NULL;
    size_t ns = 0, cap = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = tpl_utf8_decode(p + i, n - i, &cp);
        if (tpl_is_space(cp)) { i += k; continue; }
        size_t a = i;
        while (i < n) {
            k = tpl_utf8_decode(p + i, n - i, &cp);
            if (tpl_is_space(cp)) break;
            i += k;
        }
        if (ns == cap) { cap = cap ? cap * 2 : 8; sp = hr_xrealloc(sp, cap * sizeof(span)); }
        sp[ns].a = a;
        sp[ns].b = i;
        ns++;
    }
    if (maxsplit < 0 || (size_t)maxsplit >= ns || ns == 0) {
        for (size_t j = 0; j < ns; j++) tv_list_push(out, tv_str_new(p + sp[j].a, sp[j].b - sp[j].a));
    } else if (!from_right) {
        for (int64_t j = 0; j < maxsplit; j++) tv_list_push(out, tv_str_new(p + sp[j].a, sp[j].b - sp[j].a));
        /* the remainder starts at its first non-space and keeps the rest */
        size_t a = sp[maxsplit].a;
        tv_list_push(out, tv_str_new(p + a, n - a));
    } else {
        size_t first = ns - (size_t)maxsplit;
        size_t b = sp[first - 1].b;
        tv_list_push(out, tv_str_new(p, b));
        for (size_t j = first; j < ns; j++) tv_list_push(out, tv_str_new(p + sp[j].a, sp[j].b - sp[j].a));
    }
    free(sp);
    return out;
}

static tv make_list(tv src_list, tl_kind kind) {
    tv l = tv_list_new(kind, src_list.u.l->n);
    for (size_t i = 0; i < src_list.u.l->n; i++) tv_list_push(l, tv_ref(src_list.u.l->items[i]));
    return l;
}

static int length_of(tctx *c, const tnode *at, tv v, int64_t *n) {
    switch (v.t) {
    case TV_UNDEF: *n = 0; return HR_OK;
    case TV_STR: *n = (int64_t)tpl_utf8_len(v.u.s->data, v.u.s->len); return HR_OK;
    case TV_LIST:
        if (v.u.l->kind == TL_GEN) break;
        *n = (int64_t)v.u.l->n;
        return HR_OK;
    case TV_DICT: *n = (int64_t)v.u.d->n; return HR_OK;
    default: break;
    }
    return tpl_fail(c, at, HR_EINVAL, "object of type '%s' has no len()", tv_type_name(v));
}

/* Attribute path lookup used by map/sort/selectattr... ("a.b", "0"). */
static int attr_path(tctx *c, const tnode *at, tv item, tv attr, tv *out) {
    if (attr.t != TV_STR) return tpl_getitem(c, at, item, attr, out);
    tv cur = tv_ref(item);
    const char *p = attr.u.s->data;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t l = dot ? (size_t)(dot - p) : strlen(p);
        bool digits = l > 0;
        for (size_t i = 0; i < l; i++) digits &= p[i] >= '0' && p[i] <= '9';
        tv key = digits ? tv_int(strtoll(p, NULL, 10)) : tv_str_new(p, l);
        tv nx;
        int rc = tpl_getitem(c, at, cur, key, &nx);
        tv_unref(key);
        tv_unref(cur);
        if (rc) return rc;
        cur = nx;
        if (!dot) break;
        p = dot + 1;
    }
    *out = cur;
    return HR_OK;
}

/* Sort key: the attribute value, lower-cased when strings are compared
 * case-insensitively (jinja2's ignore_case). */
static int sort_key(tctx *c, const tnode *at, tv item, tv attr, bool case_sensitive, tv *out) {
    tv v;
    if (attr.t != TV_NONE) {
        int rc = attr_path(c, at, item, attr, &v);
        if (rc) return rc;
    } else {
        v = tv_ref(item);
    }
    if (!case_sensitive && v.t == TV_STR) {
        tv l = case_map(v, CASE_LOWER);
        tv_unref(v);
        v = l;
    }
    *out = v;
    return HR_OK;
}

typedef struct sort_item { tv key, val; } sort_item;

/* Stable merge sort with Python ordering; reverse keeps equal items in
 * their original order, as sorted(reverse=True) does. */
static int merge_sort(tctx *c, const tnode *at, sort_item *a, size_t n, bool reverse) {
    if (n < 2) return HR_OK;
    size_t h = n / 2;
    int rc = merge_sort(c, at, a, h, reverse);
    if (!rc) rc = merge_sort(c, at, a + h, n - h, reverse);
    if (rc) return rc;
    sort_item *tmp = hr_xmalloc(n * sizeof(sort_item));
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int o;
        rc = tpl_order(c, at, a[j].key, a[i].key, &o);
        if (rc) break;
        if (reverse) o = -o;
        /* take from the right only when strictly before the left item */
        if (o < 0) tmp[k++] = a[j++];
        else tmp[k++] = a[i++];
    }
    if (!rc) {
        while (i < h) tmp[k++] = a[i++];
        while (j < n) tmp[k++] = a[j++];
        memcpy(a, tmp, n * sizeof(sort_item));
    }
    free(tmp);
    return rc;
}

static int as_list(tctx *c, const tnode *at, tv v, tv *out) { return tpl_iterate(c, at, v, out); }

static bool is_int(tv v) { return v.t == TV_INT || v.t == TV_BOOL; }
static int64_t ival(tv v) { return v.t == TV_BOOL ? v.u.b : v.u.i; }

/* Python int(str): optional sign, digits with single underscores, spaces. */
static bool parse_int_str(tv s, int base, int64_t *out) {
    if (base != 10) return false;
    tv t = strip(s, NULL, true, true);
    const char *p = t.u.s->data;
    bool neg = false, ok = true;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (!*p) ok = false;
    uint64_t v = 0;
    bool prev_digit = false;
    for (; *p && ok; p++) {
        if (*p >= '0' && *p <= '9') {
            if (v > (uint64_t)INT64_MAX / 10) ok = false;
            v = v * 10 + (uint64_t)(*p - '0');
            prev_digit = true;
        } else if (*p == '_' && prev_digit && p[1] >= '0' && p[1] <= '9') {
            prev_digit = false;
        } else {
            ok = false;
        }
    }
    tv_unref(t);
    if (!ok || v > (uint64_t)INT64_MAX) return false;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static bool parse_float_str(tv s, double *out) {
    tv t = strip(s, NULL, true, true);
    char buf[128];
    size_t k = 0;
    const char *p = t.u.s->data;
    bool ok = t.u.s->len > 0 && t.u.s->len < sizeof(buf);
    for (size_t i = 0; ok && i < t.u.s->len; i++) {
        char ch = p[i];
        if (ch == '_') {
            ok = i > 0 && i + 1 < t.u.s->len && p[i - 1] >= '0' && p[i - 1] <= '9' && p[i + 1] >= '0' && p[i + 1] <= '9';
            continue;
        }
        if (!((ch >= '0' && ch <= '9') || ch == '.' || ch == 'e' || ch == 'E' || ch == '+' || ch == '-' ||
              strchr("infatyINFATY", ch)))
            ok = false;
        buf[k++] = ch;
    }
    buf[k] = 0;
    tv_unref(t);
    if (!ok) return false;
    /* strtod also accepts hex and "nan(...)", Python does not. */
    if (strchr(buf, 'x') || strchr(buf, 'X') || strchr(buf, '(')) return false;
    char *end;
    double v = strtod(buf, &end);
    if (*end || end == buf) return false;
    const char *w = buf + (buf[0] == '+' || buf[0] == '-');
    if ((w[0] == 'i' || w[0] == 'I') && strcasecmp(w, "inf") != 0 && strcasecmp(w, "infinity") != 0) return false;
    *out = v;
    return true;
}

/* Parameter names of each filter after the value, as jinja2 3.1 (and HF's
 * tojson) declare them; extra or unknown arguments are a TypeError there. */
static const struct { const char *name; const char *params[4]; } FILTER_PARAMS[] = {
    {"abs", {0}}, {"attr", {"name"}}, {"batch", {"linecount", "fill_with"}}, {"capitalize", {0}},
    {"center", {"width"}}, {"count", {0}}, {"length", {0}}, {"d", {"default_value", "boolean"}},
    {"default", {"default_value", "boolean"}}, {"dictsort", {"case_sensitive", "by", "reverse"}},
    {"e", {0}}, {"escape", {0}}, {"forceescape", {0}}, {"first", {0}}, {"last", {0}}, {"float", {"default"}},
    {"indent", {"width", "first", "blank"}}, {"int", {"default", "base"}}, {"items", {0}},
    {"join", {"d", "attribute"}}, {"list", {0}}, {"lower", {0}}, {"upper", {0}}, {"title", {0}},
    {"string", {0}}, {"safe", {0}}, {"wordcount", {0}}, {"max", {"case_sensitive", "attribute"}},
    {"min", {"case_sensitive", "attribute"}}, {"replace", {"old", "new", "count"}}, {"reverse", {0}},
    {"round", {"precision", "method"}}, {"sort", {"reverse", "case_sensitive", "attribute"}},
    {"sum", {"attribute", "start"}}, {"tojson", {"ensure_ascii", "indent", "separators", "sort_keys"}},
    {"trim", {"chars"}}, {"unique", {"case_sensitive", "attribute"}},
};

static int check_params(tctx *c, const tnode *at, const char *what, const char *const *params, int np, targs *a) {
    if (a->npos > np) return tpl_fail(c, at, HR_EINVAL, "%s() takes %d argument(s) but %d were given", what, np, a->npos);
    for (int k = 0; k < a->nkw; k++) {
        int i = 0;
        while (i < np && strcmp(params[i], a->kwn[k])) i++;
        if (i == np) return tpl_fail(c, at, HR_EINVAL, "%s() got an unexpected keyword argument '%s'", what, a->kwn[k]);
        if (i < a->npos) return tpl_fail(c, at, HR_EINVAL, "%s() got multiple values for argument '%s'", what, a->kwn[k]);
    }
    return HR_OK;
}

/* ------------------------------------------------------------ tests */
static const char *const TESTS[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
    "mapping", "iterable", "sequence", "callable", "odd", "even", "divisibleby", "eq", "equalto", "==",
    "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas",
    "lower", "upper", "escaped", "filter", "test",
};

bool tpl_test_known(const char *name) {
    for (size_t i = 0; i < HR_ARRAY_LEN(TESTS); i++)
        if (!strcmp(TESTS[i], name)) return true;
    return false;
}

static int cmp_test(const char *name) {
    static const struct { const char *n; int op; } m[] = {
        {"eq", OP_EQ}, {"equalto", OP_EQ}, {"==", OP_EQ}, {"ne", OP_NE}, {"!=", OP_NE}, {"lt", OP_LT},
        {"lessthan", OP_LT}, {"<", OP_LT}, {"le", OP_LE}, {"<=", OP_LE}, {"gt", OP_GT},
        {"greaterthan", OP_GT}, {">", OP_GT}, {"ge", OP_GE}, {">=", OP_GE}, {"in", OP_IN},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(m); i++)
        if (!strcmp(m[i].n, name)) return m[i].op;
    return 0;
}

int tpl_test(tctx *c, const tnode *at, const char *name, tv v, targs *a, bool *res) {
    tv x;
    int op = cmp_test(name);
    /* Arity as jinja2's test functions declare it. */
    static const char *const one_arg[] = {"num", "other", "seq"};
    bool takes_one = op || !strcmp(name, "divisibleby") || !strcmp(name, "sameas");
    const char *pn = !strcmp(name, "divisibleby") ? one_arg[0] : !strcmp(name, "sameas") ? one_arg[1]
                     : op == OP_IN ? one_arg[2] : "b";
    int rc = check_params(c, at, name, &pn, takes_one ? 1 : 0, a);
    if (rc) return rc;
    if (op) {
        if (!arg_get(a, 0, "b", &x) && !arg_get(a, 0, "other", &x) && !arg_get(a, 0, "seq", &x))
            return tpl_fail(c, at, HR_EINVAL, "test '%s' needs an argument", name);
        return tpl_compare(c, at, op, v, x, res);
    }
    if (!strcmp(name, "defined")) *res = v.t != TV_UNDEF;
    else if (!strcmp(name, "undefined")) *res = v.t == TV_UNDEF;
    else if (!strcmp(name, "none")) *res = v.t == TV_NONE;
    else if (!strcmp(name, "boolean")) *res = v.t == TV_BOOL;
    else if (!strcmp(name, "false")) *res = v.t == TV_BOOL && !v.u.b;
    else if (!strcmp(name, "true")) *res = v.t == TV_BOOL && v.u.b;
    else if (!strcmp(name, "integer")) *res = v.t == TV_INT;
    else if (!strcmp(name, "float")) *res = v.t == TV_FLOAT;
    else if (!strcmp(name, "number")) *res = tv_is_num(v);
    else if (!strcmp(name, "string")) *res = v.t == TV_STR;
    else if (!strcmp(name, "mapping")) *res = v.t == TV_DICT;
    else if (!strcmp(name, "iterable"))
        *res = v.t == TV_UNDEF || v.t == TV_STR || v.t == TV_LIST || v.t == TV_DICT || v.t == TV_LOOP;
    else if (!strcmp(name, "sequence"))
        *res = v.t == TV_UNDEF || v.t == TV_STR || v.t == TV_DICT ||
               (v.t == TV_LIST && v.u.l->kind != TL_GEN && v.u.l->kind != TL_VIEW);
    else if (!strcmp(name, "callable"))
        *res = v.t == TV_UNDEF || v.t == TV_MACRO || v.t == TV_METHOD || v.t == TV_FUNC || v.t == TV_LOOP;
    else if (!strcmp(name, "odd") || !strcmp(name, "even") || !strcmp(name, "divisibleby")) {
        tv d = tv_int(2);
        if (name[0] == 'd' && !arg_get(a, 0, "num", &d)) return tpl_fail(c, at, HR_EINVAL, "divisibleby needs an argument");
        if (!tv_is_num(v) || !tv_is_num(d)) {
            if (v.t == TV_UNDEF) return tpl_fail(c, at, HR_EINVAL, "'%s' is undefined", v.u.name ? v.u.name : "value");
            return tpl_fail(c, at, HR_EINVAL, "unsupported operand type(s) for %%: '%s' and '%s'", tv_type_name(v), tv_type_name(d));
        }
        if (tv_num(d) == 0) return tpl_fail(c, at, HR_EINVAL, "integer division or modulo by zero");
        double m;
        if (is_int(v) && is_int(d)) {
            int64_t r = ival(v) % ival(d);
            if (r != 0 && ((r < 0) != (ival(d) < 0))) r += ival(d);
            m = (double)r;
        } else {
            m = fmod(tv_num(v), tv_num(d));
            if (m != 0 && ((m < 0) != (tv_num(d) < 0))) m += tv_num(d);
        }
        *res = name[0] == 'o' ? m == 1 : m == 0;
    } else if (!strcmp(name, "sameas")) {
        if (!arg_get(a, 0, "other", &x)) return tpl_fail(c, at, HR_EINVAL, "sameas needs an argument");
        if (v.t != x.t) *res = false;
        else if (v.t == TV_NONE || v.t == TV_BOOL) *res = tv_equal(v, x);
        else if (v.t == TV_INT) *res = v.u.i == x.u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython small ints */
        else if (v.t == TV_STR) *res = v.u.s == x.u.s;
        else if (v.t == TV_LIST) *res = v.u.l == x.u.l;
        else if (v.t == TV_DICT || v.t == TV_NS) *res = v.u.d == x.u.d;
        else if (v.t == TV_FUNC) *res = v.u.name == x.u.name;
        else if (v.t == TV_UNDEF || v.t == TV_FLOAT) *res = false;
        else *res = v.u.o == x.u.o;
    } else if (!strcmp(name, "lower") || !strcmp(name, "upper")) {
        tv s;
        int rc = str_of(c, at, v, &s);
        if (rc) return rc;
        bool any_cased = false, ok = true;
        for (size_t i = 0; i < s.u.s->len;) {
            uint32_t cp;
            i += tpl_utf8_decode(s.u.s->data + i, s.u.s->len - i, &cp);
            if (cp_is_upper(cp)) { any_cased = true; if (name[0] == 'l') ok = false; }
            else if (cp_is_lower(cp)) { any_cased = true; if (name[0] == 'u') ok = false; }
        }
        tv_unref(s);
        *res = ok && any_cased;
    } else if (!strcmp(name, "escaped")) *res = v.t == TV_STR && v.u.s->safe;
    else if (!strcmp(name, "filter")) *res = v.t == TV_STR && tpl_filter_known(v.u.s->data);
    else if (!strcmp(name, "test")) *res = v.t == TV_STR && tpl_test_known(v.u.s->data);
    else return tpl_fail(c, at, HR_EUNSUP, "unsupported test '%s'", name);
    return HR_OK;
}

/* ------------------------------------------------------------ filters */
static const char *const FILTERS[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "first", "float", "forceescape", "indent", "int", "items", "join", "last", "length", "list", "lower",
    "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select",
    "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount",
};

bool tpl_filter_known(const char *name) {
    for (size_t i = 0; i < HR_ARRAY_LEN(FILTERS); i++)
        if (!strcmp(FILTERS[i], name)) return true;
    return false;
}

static tv escape_str(tv s) {
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    for (size_t i = 0; i < s.u.s->len; i++) {
        char ch = s.u.s->data[i];
        switch (ch) {
        case '&': tbuf_puts(&b, "&amp;"); break;
        case '<': tbuf_puts(&b, "&lt;"); break;
        case '>': tbuf_puts(&b, "&gt;"); break;
        case '"': tbuf_puts(&b, "&#34;"); break;
        case '\'': tbuf_puts(&b, "&#39;"); break;
        default: tbuf_putc(&b, ch);
        }
    }
    tv r = tbuf_to_str(&b);
    r.u.s->safe = true;
    return r;
}

/* Python str.splitlines() line boundaries. */
static size_t line_break_at(const char *p, size_t n, size_t i, size_t *brk_len) {
    uint32_t cp;
    size_t k = tpl_utf8_decode(p + i, n - i, &cp);
    if (cp == '\r' && i + 1 < n && p[i + 1] == '\n') { *brk_len = 2; return 1; }
    if (cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D || cp == 0x1E ||
        cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
        *brk_len = k;
        return 1;
    }
    *brk_len = k;
    return 0;
}

static tv splitlines(tv s, bool keepends) {
    tv out = tv_list_new(TL_LIST, 0);
    const char *p = s.u.s->data;
    size_t n = s.u.s->len, start = 0, i = 0;
    while (i < n) {
        size_t bl;
        if (line_break_at(p, n, i, &bl)) {
            tv_list_push(out, tv_str_new(p + start, (keepends ? i + bl : i) - start));
            i += bl;
            start = i;
        } else {
            i += bl;
        }
    }
    if (start < n) tv_list_push(out, tv_str_new(p + start, n - start));
    return out;
}

static int f_indent(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    tv s;
    int rc = str_of(c, at, v, &s);
    if (rc) return rc;
    tv w = arg_or(a, 0, "width", tv_int(4));
    bool first = tv_truthy(arg_or(a, 1, "first", tv_bool(false)));
    bool blank = tv_truthy(arg_or(a, 2, "blank", tv_bool(false)));
    tbuf ind = {0};
    tbuf_put(&ind, "", 0);
    if (w.t == TV_STR) tbuf_put(&ind, w.u.s->data, w.u.s->len);
    else if (is_int(w)) for (int64_t i = 0; i < ival(w) && i < 4096; i++) tbuf_putc(&ind, ' ');
    else { tv_unref(s); free(ind.p); return tpl_fail(c, at, HR_EINVAL, "indent width must be int or str"); }
    /* s += "\n" then splitlines: a quirk jinja2 relies on */
    tbuf sb = {0};
    tbuf_put(&sb, s.u.s->data, s.u.s->len);
    tbuf_putc(&sb, '\n');
    tv s2 = tbuf_to_str(&sb);
    tv lines = splitlines(s2, false);
    tbuf o = {0};
    tbuf_put(&o, "", 0);
    tv_list *L = lines.u.l;
    if (blank) {
        for (size_t i = 0; i < L->n; i++) {
            if (i) { tbuf_putc(&o, '\n'); tbuf_put(&o, ind.p, ind.n); }
            tbuf_put(&o, L->items[i].u.s->data, L->items[i].u.s->len);
        }
    } else {
        for (size_t i = 0; i < L->n; i++) {
            if (i) {
                tbuf_putc(&o, '\n');
                if (L->items[i].u.s->len) tbuf_put(&o, ind.p, ind.n);
            }
            tbuf_put(&o, L->items[i].u.s->data, L->items[i].u.s->len);
        }
    }
    tv r;
    if (first) {
        tbuf f = {0};
        tbuf_put(&f, ind.p, ind.n);
        tbuf_put(&f, o.p, o.n);
        r = tbuf_to_str(&f);
        free(o.p);
    } else {
        r = tbuf_to_str(&o);
    }
    free(ind.p);
    tv_unref(lines);
    tv_unref(s2);
    tv_unref(s);
    *out = r;
    return HR_OK;
}

static int f_tojson(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    bool ascii = tv_truthy(arg_or(a, 0, "ensure_ascii", tv_bool(false)));
    tv ind = arg_or(a, 1, "indent", tv_none());
    tv seps = arg_or(a, 2, "separators", tv_none());
    bool sort = tv_truthy(arg_or(a, 3, "sort_keys", tv_bool(false)));
    tbuf ib = {0};
    const char *indent = NULL;
    if (is_int(ind)) {
        tbuf_put(&ib, "", 0);
        for (int64_t i = 0; i < ival(ind) && i < 4096; i++) tbuf_putc(&ib, ' ');
        indent = ib.p;
    } else if (ind.t == TV_STR) {
        tbuf_put(&ib, ind.u.s->data, ind.u.s->len);
        indent = ib.p;
    } else if (ind.t != TV_NONE) {
        return tpl_fail(c, at, HR_EUNSUP, "unsupported: tojson indent of type %s", tv_type_name(ind));
    }
    const char *isep = NULL, *ksep = NULL;
    if (seps.t != TV_NONE) {
        if (seps.t != TV_LIST || seps.u.l->n != 2 || seps.u.l->items[0].t != TV_STR || seps.u.l->items[1].t != TV_STR) {
            free(ib.p);
            return tpl_fail(c, at, HR_EINVAL, "tojson separators must be a pair of strings");
        }
        isep = seps.u.l->items[0].u.s->data;
        ksep = seps.u.l->items[1].u.s->data;
    }
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    int rc = tv_to_json(v, &b, ascii, indent, isep, ksep, sort, c->err);
    free(ib.p);
    if (rc) {
        free(b.p);
        return tpl_fail(c, at, rc, "%s", c->err->msg);
    }
    *out = tbuf_to_str(&b);
    return HR_OK;
}

/* select/reject/selectattr/rejectattr: test name + args from position off. */
/* jinja2's select/map family are generators: their errors surface only when
 * the result is consumed, so an error here may not be one in jinja2 (say,
 * when the generator is just printed). Report it as unsupported. */
static int lazy_error(tctx *c, const tnode *at, int rc) {
    (void)rc; /* the message in c->err says what failed */
    char msg[HR_ERR_LEN];
    snprintf(msg, sizeof(msg), "%s", c->err->msg);
    return tpl_fail(c, at, HR_EUNSUP, "unsupported: error inside a lazy filter (%s)", msg);
}

static int f_select(tctx *c, const tnode *at, tv v, targs *a, bool use_attr, bool want, tv *out) {
    tv items;
    /* jinja2's select_or_reject starts with `if value:`: falsy input (None
     * included) gives an empty generator instead of an error. */
    if (!tv_truthy(v)) { *out = tv_list_new(TL_GEN, 0); return HR_OK; }
    int rc = as_list(c, at, v, &items);
    if (rc) return rc;
    int off = 0;
    tv attr = tv_none();
    if (use_attr) { /* the attribute is positional only (*args in jinja2) */
        if (a->npos < 1) { tv_unref(items); return lazy_error(c, at, tpl_fail(c, at, HR_EINVAL, "Missing parameter for attribute name")); }
        attr = a->pos[0];
        off = 1;
    }
    tv tname = tv_none();
    bool has_test = a->npos > off;
    if (has_test) tname = a->pos[off];
    if (has_test && (tname.t != TV_STR || !tpl_test_known(tname.u.s->data))) {
        tv_unref(items);
        return lazy_error(c, at, tpl_fail(c, at, HR_EUNSUP, "unknown test in select"));
    }
    targs ta = {0};
    if (has_test) { /* remaining positional and all keyword arguments go to the test */
        ta.pos = a->pos + off + 1;
        ta.npos = a->npos - off - 1;
        ta.kw = a->kw;
        ta.kwn = a->kwn;
        ta.nkw = a->nkw;
    } /* without a test jinja2 uses bool() and ignores keyword arguments */
    tv res = tv_list_new(TL_GEN, 0);
    for (size_t i = 0; i < items.u.l->n && !rc; i++) {
        tv it = items.u.l->items[i], x;
        if (use_attr) rc = attr_path(c, at, it, attr, &x);
        else x = tv_ref(it);
        if (rc) break;
        bool r;
        if (has_test) rc = tpl_test(c, at, tname.u.s->data, x, &ta, &r);
        else r = tv_truthy(x);
        tv_unref(x);
        if (!rc && r == want) tv_list_push(res, tv_ref(it));
    }
    tv_unref(items);
    if (rc) { tv_unref(res); return lazy_error(c, at, rc); }
    *out = res;
    return HR_OK;
}

static int f_map(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    tv items;
    if (!tv_truthy(v)) { *out = tv_list_new(TL_GEN, 0); return HR_OK; } /* do_map: `if value:` */
    int rc = as_list(c, at, v, &items);
    if (rc) return rc;
    tv attr, def = tv_none();
    /* jinja2's prepare_map: map(attribute=..., default=...) only without
     * positional arguments; otherwise the first positional names a filter. */
    bool by_attr = a->npos == 0 && arg_get(a, -1, "attribute", &attr);
    if (by_attr) {
        arg_get(a, -1, "default", &def);
        for (int k = 0; k < a->nkw; k++)
            if (strcmp(a->kwn[k], "attribute") && strcmp(a->kwn[k], "default")) {
                tv_unref(items);
                return lazy_error(c, at, tpl_fail(c, at, HR_EINVAL, "Unexpected keyword argument '%s'", a->kwn[k]));
            }
    }
    tv res = tv_list_new(TL_GEN, 0);
    if (by_attr) {
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            tv x;
            rc = attr_path(c, at, items.u.l->items[i], attr, &x);
            if (rc) break;
            if (x.t == TV_UNDEF && def.t != TV_NONE) { x = tv_ref(def); }
            tv_list_push(res, x);
        }
    } else {
        if (a->npos < 1 || a->pos[0].t != TV_STR || !tpl_filter_known(a->pos[0].u.s->data)) {
            rc = tpl_fail(c, at, a->npos < 1 ? HR_EINVAL : HR_EUNSUP, "map needs a known filter name or attribute=");
        } else {
            targs fa = {.pos = a->pos + 1, .npos = a->npos - 1, .kw = a->kw, .kwn = a->kwn, .nkw = a->nkw};
            for (size_t i = 0; i < items.u.l->n && !rc; i++) {
                tv x;
                rc = tpl_filter(c, at, a->pos[0].u.s->data, items.u.l->items[i], &fa, &x);
                if (!rc) tv_list_push(res, x);
            }
        }
    }
    tv_unref(items);
    if (rc) { tv_unref(res); return lazy_error(c, at, rc); }
    *out = res;
    return HR_OK;
}

/* sorted(reverse=x) takes only an int (bool included). */
static int int_flag(tctx *c, const tnode *at, tv x, bool *out) {
    if (!is_int(x)) return tpl_fail(c, at, HR_EINVAL, "'%s' object cannot be interpreted as an integer", tv_type_name(x));
    *out = ival(x) != 0;
    return HR_OK;
}

static int f_sort(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    bool reverse;
    if (int_flag(c, at, arg_or(a, 0, "reverse", tv_bool(false)), &reverse)) return c->err->code;
    bool cs = tv_truthy(arg_or(a, 1, "case_sensitive", tv_bool(false)));
    tv attr = arg_or(a, 2, "attribute", tv_none());
    tv items;
    int rc = as_list(c, at, v, &items);
    if (rc) return rc;
    /* attribute="a,b": jinja2's make_multi_attrgetter sorts by a list of keys */
    tv parts = tv_none();
    if (attr.t == TV_STR && strchr(attr.u.s->data, ',')) {
        tv sep = tv_str_cstr(",");
        parts = str_split(attr, &sep, -1, false);
        tv_unref(sep);
    }
    size_t n = items.u.l->n;
    sort_item *si = hr_xcalloc(n + 1, sizeof(sort_item));
    size_t k = 0;
    for (; k < n && !rc; k++) {
        si[k].val = items.u.l->items[k];
        if (parts.t == TV_NONE) {
            rc = sort_key(c, at, si[k].val, attr, cs, &si[k].key);
        } else {
            si[k].key = tv_list_new(TL_LIST, parts.u.l->n);
            for (size_t j = 0; j < parts.u.l->n && !rc; j++) {
                tv kj;
                rc = sort_key(c, at, si[k].val, parts.u.l->items[j], cs, &kj);
                if (!rc) tv_list_push(si[k].key, kj);
            }
        }
        if (rc) { k++; break; }
    }
    tv_unref(parts);
    if (!rc) rc = merge_sort(c, at, si, n, reverse);
    if (!rc) {
        tv res = tv_list_new(TL_LIST, n);
        for (size_t i = 0; i < n; i++) tv_list_push(res, tv_ref(si[i].val));
        *out = res;
    }
    for (size_t i = 0; i < k && i < n; i++) tv_unref(si[i].key);
    free(si);
    tv_unref(items);
    return rc;
}

static int f_dictsort(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    bool cs = tv_truthy(arg_or(a, 0, "case_sensitive", tv_bool(false)));
    tv by = arg_or(a, 1, "by", tv_none());
    bool reverse;
    if (int_flag(c, at, arg_or(a, 2, "reverse", tv_bool(false)), &reverse)) return c->err->code;
    if (v.t != TV_DICT) return tpl_fail(c, at, HR_EINVAL, "dictsort needs a mapping");
    int pos = 0;
    if (by.t == TV_STR) {
        if (!strcmp(by.u.s->data, "value")) pos = 1;
        else if (strcmp(by.u.s->data, "key")) return tpl_fail(c, at, HR_EINVAL, "You can only sort by either \"key\" or \"value\"");
    }
    size_t n = v.u.d->n;
    sort_item *si = hr_xcalloc(n + 1, sizeof(sort_item));
    int rc = HR_OK;
    for (size_t i = 0; i < n; i++) {
        tv pair = tv_list_new(TL_TUPLE, 2);
        tv_list_push(pair, tv_ref(v.u.d->keys[i]));
        tv_list_push(pair, tv_ref(v.u.d->vals[i]));
        si[i].val = pair;
        tv k = pair.u.l->items[pos];
        si[i].key = (!cs && k.t == TV_STR) ? case_map(k, CASE_LOWER) : tv_ref(k);
    }
    rc = merge_sort(c, at, si, n, reverse);
    tv res = tv_list_new(TL_LIST, n);
    for (size_t i = 0; i < n; i++) {
        tv_list_push(res, si[i].val);
        tv_unref(si[i].key);
    }
    free(si);
    if (rc) { tv_unref(res); return rc; }
    *out = res;
    return HR_OK;
}

static int f_unique(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    bool cs = tv_truthy(arg_or(a, 0, "case_sensitive", tv_bool(false)));
    tv attr = arg_or(a, 1, "attribute", tv_none());
    tv items;
    int rc = as_list(c, at, v, &items);
    if (rc) return rc;
    tv seen = tv_list_new(TL_LIST, 0), res = tv_list_new(TL_GEN, 0);
    for (size_t i = 0; i < items.u.l->n && !rc; i++) {
        tv k;
        rc = sort_key(c, at, items.u.l->items[i], attr, cs, &k);
        if (rc) break;
        bool dup = false;
        for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = tv_equal(seen.u.l->items[j], k);
        if (dup) tv_unref(k);
        else {
            tv_list_push(seen, k);
            tv_list_push(res, tv_ref(items.u.l->items[i]));
        }
    }
    tv_unref(seen);
    tv_unref(items);
    if (rc) { tv_unref(res); return rc; }
    *out = res;
    return HR_OK;
}

static int f_minmax(tctx *c, const tnode *at, tv v, targs *a, bool want_max, tv *out) {
    bool cs = tv_truthy(arg_or(a, 0, "case_sensitive", tv_bool(false)));
    tv attr = arg_or(a, 1, "attribute", tv_none());
    tv items;
    int rc = as_list(c, at, v, &items);
    if (rc) return rc;
    tv best = tv_none(), bestk = tv_none();
    bool have = false;
    for (size_t i = 0; i < items.u.l->n && !rc; i++) {
        tv k;
        rc = sort_key(c, at, items.u.l->items[i], attr, cs, &k);
        if (rc) break;
        int o = 0;
        if (have) rc = tpl_order(c, at, k, bestk, &o);
        if (!rc && (!have || (want_max ? o > 0 : o < 0))) {
            tv_unref(bestk);
            bestk = k;
            best = items.u.l->items[i];
            have = true;
        } else {
            tv_unref(k);
        }
    }
    tv_unref(bestk);
    if (!rc) *out = have ? tv_ref(best) : tv_undef("No aggregated item, sequence was empty.");
    tv_unref(items);
    return rc;
}

static int f_round(tctx *c, const tnode *at, tv v, targs *a, tv *out) {
    tv prec = arg_or(a, 0, "precision", tv_int(0));
    tv method = arg_or(a, 1, "method", tv_none());
    const char *m = method.t == TV_STR ? method.u.s->data : "common";
    if (strcmp(m, "common") && strcmp(m, "ceil") && strcmp(m, "floor"))
        return tpl_fail(c, at, HR_EINVAL, "method must be common, ceil or floor");
    if (!tv_is_num(v) || !is_int(prec)) return tpl_fail(c, at, HR_EINVAL, "round needs a number");
    int64_t p = ival(prec);
    if (!strcmp(m, "common")) {
        if (is_int(v) && p >= 0) { *out = tv_int(ival(v)); return HR_OK; }
        if (is_int(v)) { /* round half to even at 10**-p */
            if (p < -18) { *out = tv_int(0); return HR_OK; }
            int64_t m = 1;
            for (int64_t i = 0; i < -p; i++) m *= 10;
            int64_t x = ival(v), q = x / m, r = x % m;
            if (r < 0) { q -= 1; r += m; }
            if (2 * r > m || (2 * r == m && (q & 1))) q += 1;
            int64_t res;
            if (__builtin_mul_overflow(q, m, &res)) return tpl_fail(c, at, HR_EUNSUP, "unsupported: integer beyond 64 bits");
            *out = tv_int(res);
            return HR_OK;
        }
        if (!isfinite(v.u.f)) { *out = tv_float(v.u.f); return HR_OK; }
        if (p < 0) {
            if (p < -308) { *out = tv_float(copysign(0.0, v.u.f)); return HR_OK; }
            double scale = pow(10.0, (double)-p);
            *out = tv_float(nearbyint(v.u.f / scale) * scale);
            return HR_OK;
        }
        if (p > 30) { *out = tv_float(v.u.f); return HR_OK; }
        /* glibc printf rounds the exact binary value half-to-even, as
         * CPython's round() does through its correctly rounded dtoa. */
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*f", (int)p, v.u.f);
        *out = tv_float(strtod(buf, NULL));
        return HR_OK;
    }
    double scale = pow(10.0, (double)p);
    double x = tv_num(v) * scale;
    x = m[0] == 'c' ? ceil(x) : floor(x);
    *out = tv_float(x / scale);
    return HR_OK;
}

int tpl_filter(tctx *c, const tnode *at, const char *name, tv v, targs *a, tv *out) {
    tv s, x;
    int rc;
    for (size_t i = 0; i < HR_ARRAY_LEN(FILTER_PARAMS); i++) {
        if (strcmp(FILTER_PARAMS[i].name, name)) continue;
        int np = 0;
        while (np < 4 && FILTER_PARAMS[i].params[np]) np++;
        if ((rc = check_params(c, at, name, FILTER_PARAMS[i].params, np, a))) return rc;
        break;
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        tv def = arg_or(a, 0, "default_value", tv_none());
        bool has_def = arg_get(a, 0, "default_value", &x);
        bool boolean = tv_truthy(arg_or(a, 1, "boolean", tv_bool(false)));
        if (v.t == TV_UNDEF || (boolean && !tv_truthy(v))) *out = has_def ? tv_ref(def) : tv_str_cstr("");
        else *out = tv_ref(v);
        return HR_OK;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        int64_t n = 0;
        if ((rc = length_of(c, at, v, &n))) return rc;
        *out = tv_int(n);
        return HR_OK;
    }
    if (!strcmp(name, "trim")) {
        if ((rc = str_of(c, at, v, &s))) return rc;
        tv chars = arg_or(a, 0, "chars", tv_none());
        if (chars.t != TV_NONE && chars.t != TV_STR) { tv_unref(s); return tpl_fail(c, at, HR_EINVAL, "strip arg must be None or str"); }
        *out = strip(s, chars.t == TV_STR ? &chars : NULL, true, true);
        tv_unref(s);
        return HR_OK;
    }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        if ((rc = str_of(c, at, v, &s))) return rc;
        int mode = name[0] == 'u' ? CASE_UPPER : name[0] == 'l' ? CASE_LOWER : name[0] == 'c' ? CASE_CAPITALIZE : CASE_TITLE_FILTER;
        *out = case_map(s, mode);
        tv_unref(s);
        return HR_OK;
    }
    if (!strcmp(name, "string")) return str_of(c, at, v, out);
    if (!strcmp(name, "safe")) {
        if ((rc = str_of(c, at, v, &s))) return rc;
        *out = tv_str_new(s.u.s->data, s.u.s->len);
        out->u.s->safe = true;
        tv_unref(s);
        return HR_OK;
    }
    if (!strcmp(name, "e") || !strcmp(name, "escape") || !strcmp(name, "forceescape")) {
        if (v.t == TV_STR && v.u.s->safe && name[0] != 'f') { *out = tv_ref(v); return HR_OK; }
        if ((rc = str_of(c, at, v, &s))) return rc;
        *out = escape_str(s);
        tv_unref(s);
        return HR_OK;
    }
    if (!strcmp(name, "tojson")) return f_tojson(c, at, v, a, out);
    if (!strcmp(name, "items")) {
        if (v.t == TV_UNDEF) { *out = tv_list_new(TL_GEN, 0); return HR_OK; }
        if (v.t != TV_DICT) return tpl_fail(c, at, HR_EINVAL, "Can only get item pairs from a mapping.");
        tv res = tv_list_new(TL_GEN, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) {
            tv pair = tv_list_new(TL_TUPLE, 2);
            tv_list_push(pair, tv_ref(v.u.d->keys[i]));
            tv_list_push(pair, tv_ref(v.u.d->vals[i]));
            tv_list_push(res, pair);
        }
        *out = res;
        return HR_OK;
    }
    if (!strcmp(name, "join")) {
        tv d = arg_or(a, 0, "d", tv_none());
        tv attr = arg_or(a, 1, "attribute", tv_none());
        tv items;
        if ((rc = as_list(c, at, v, &items))) return rc;
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        tv sep = tv_none();
        if (d.t != TV_NONE) rc = str_of(c, at, d, &sep);
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            if (i && sep.t == TV_STR) tbuf_put(&b, sep.u.s->data, sep.u.s->len);
            tv it = items.u.l->items[i];
            if (attr.t != TV_NONE) {
                if ((rc = attr_path(c, at, it, attr, &x))) break;
                rc = to_str(c, at, x, &b);
                tv_unref(x);
            } else {
                rc = to_str(c, at, it, &b);
            }
        }
        tv_unref(sep);
        tv_unref(items);
        if (rc) { free(b.p); return rc; }
        *out = tbuf_to_str(&b);
        return HR_OK;
    }
    if (!strcmp(name, "first")) {
        tv items;
        if ((rc = as_list(c, at, v, &items))) return rc;
        *out = items.u.l->n ? tv_ref(items.u.l->items[0]) : tv_undef("No first item, sequence was empty.");
        if (v.t == TV_LIST && v.u.l->kind == TL_GEN) {
            /* next(iter(gen)) consumes just one item */
            v.u.l->pos = v.u.l->n - (items.u.l->n ? items.u.l->n - 1 : 0);
        }
        tv_unref(items);
        return HR_OK;
    }
    if (!strcmp(name, "last")) {
        if (v.t == TV_LIST && v.u.l->kind == TL_GEN) return tpl_fail(c, at, HR_EINVAL, "'generator' object is not reversible");
        tv items;
        if ((rc = as_list(c, at, v, &items))) return rc;
        *out = items.u.l->n ? tv_ref(items.u.l->items[items.u.l->n - 1]) : tv_undef("No last item, sequence was empty.");
        tv_unref(items);
        return HR_OK;
    }
    if (!strcmp(name, "list")) return as_list(c, at, v, out);
    if (!strcmp(name, "reverse")) {
        if (v.t == TV_STR) {
            tv items;
            if ((rc = as_list(c, at, v, &items))) return rc;
            tbuf b = {0};
            tbuf_put(&b, "", 0);
            for (size_t i = items.u.l->n; i-- > 0;) tbuf_put(&b, items.u.l->items[i].u.s->data, items.u.l->items[i].u.s->len);
            tv_unref(items);
            *out = tbuf_to_str(&b);
            return HR_OK;
        }
        bool gen = v.t == TV_LIST && v.u.l->kind == TL_GEN;
        tv items;
        if ((rc = as_list(c, at, v, &items))) return rc;
        tv res = tv_list_new(gen ? TL_LIST : TL_GEN, items.u.l->n);
        for (size_t i = items.u.l->n; i-- > 0;) tv_list_push(res, tv_ref(items.u.l->items[i]));
        tv_unref(items);
        *out = res;
        return HR_OK;
    }
    if (!strcmp(name, "replace")) {
        tv old, nw;
        if (!arg_get(a, 0, "old", &old) || !arg_get(a, 1, "new", &nw)) return tpl_fail(c, at, HR_EINVAL, "replace needs old and new");
        tv cnt = arg_or(a, 2, "count", tv_none());
        if (cnt.t != TV_NONE && !is_int(cnt)) return tpl_fail(c, at, HR_EINVAL, "replace count must be an int");
        tv so, sn;
        if ((rc = str_of(c, at, v, &s))) return rc;
        if ((rc = str_of(c, at, old, &so))) { tv_unref(s); return rc; }
        if ((rc = str_of(c, at, nw, &sn))) { tv_unref(s); tv_unref(so); return rc; }
        *out = str_replace(s, so, sn, cnt.t == TV_NONE ? -1 : ival(cnt));
        tv_unref(s); tv_unref(so); tv_unref(sn);
        return HR_OK;
    }
    if ((!strcmp(name, "int") || !strcmp(name, "float")) && v.t == TV_UNDEF) /* Undefined.__int__ raises */
        return tpl_fail(c, at, HR_EINVAL, "'%s' is undefined", v.u.name ? v.u.name : "value");
    if (!strcmp(name, "int")) {
        tv def = arg_or(a, 0, "default", tv_int(0));
        tv base = arg_or(a, 1, "base", tv_int(10));
        int64_t iv;
        double fv;
        if (is_int(v)) { *out = tv_int(ival(v)); return HR_OK; }
        if (v.t == TV_FLOAT && isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) { *out = tv_int((int64_t)v.u.f); return HR_OK; }
        if (v.t == TV_STR) {
            if (parse_int_str(v, is_int(base) ? (int)ival(base) : 10, &iv)) { *out = tv_int(iv); return HR_OK; }
            if (is_int(base) && ival(base) != 10) return tpl_fail(c, at, HR_EUNSUP, "unsupported: int filter base");
            if (parse_float_str(v, &fv) && isfinite(fv) && fabs(fv) < 9.2e18) { *out = tv_int((int64_t)fv); return HR_OK; }
        }
        *out = tv_ref(def);
        return HR_OK;
    }
    if (!strcmp(name, "float")) {
        tv def = arg_or(a, 0, "default", tv_float(0.0));
        double fv;
        if (tv_is_num(v)) { *out = tv_float(tv_num(v)); return HR_OK; }
        if (v.t == TV_STR && parse_float_str(v, &fv)) { *out = tv_float(fv); return HR_OK; }
        *out = tv_ref(def);
        return HR_OK;
    }
    if (!strcmp(name, "abs")) {
        if (is_int(v)) {
            if (ival(v) == INT64_MIN) return tpl_fail(c, at, HR_EUNSUP, "unsupported: integer beyond 64 bits");
            *out = tv_int(ival(v) < 0 ? -ival(v) : ival(v));
        } else if (v.t == TV_FLOAT) *out = tv_float(fabs(v.u.f));
        else return tpl_fail(c, at, HR_EINVAL, "bad operand type for abs(): '%s'", tv_type_name(v));
        return HR_OK;
    }
    if (!strcmp(name, "round")) return f_round(c, at, v, a, out);
    if (!strcmp(name, "wordcount")) {
        if ((rc = str_of(c, at, v, &s))) return rc;
        int64_t n = 0;
        bool in = false;
        for (size_t i = 0; i < s.u.s->len;) {
            uint32_t cp;
            i += tpl_utf8_decode(s.u.s->data + i, s.u.s->len - i, &cp);
            bool w = cp == '_' || cp_is_alnum(cp);
            if (w && !in) n++;
            in = w;
        }
        tv_unref(s);
        *out = tv_int(n);
        return HR_OK;
    }
    if (!strcmp(name, "indent")) return f_indent(c, at, v, a, out);
    if (!strcmp(name, "center")) {
        tv w = arg_or(a, 0, "width", tv_int(80));
        if (!is_int(w)) return tpl_fail(c, at, HR_EINVAL, "center width must be an int");
        if ((rc = str_of(c, at, v, &s))) return rc;
        int64_t len = (int64_t)tpl_utf8_len(s.u.s->data, s.u.s->len), width = ival(w);
        if (width > 1 << 20) width = 1 << 20;
        if (width <= len) { *out = s; return HR_OK; }
        int64_t marg = width - len, left = marg / 2 + (marg & width & 1);
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        for (int64_t i = 0; i < left; i++) tbuf_putc(&b, ' ');
        tbuf_put(&b, s.u.s->data, s.u.s->len);
        for (int64_t i = 0; i < marg - left; i++) tbuf_putc(&b, ' ');
        tv_unref(s);
        *out = tbuf_to_str(&b);
        return HR_OK;
    }
    if (!strcmp(name, "select")) return f_select(c, at, v, a, false, true, out);
    if (!strcmp(name, "reject")) return f_select(c, at, v, a, false, false, out);
    if (!strcmp(name, "selectattr")) return f_select(c, at, v, a, true, true, out);
    if (!strcmp(name, "rejectattr")) return f_select(c, at, v, a, true, false, out);
    if (!strcmp(name, "map")) return f_map(c, at, v, a, out);
    if (!strcmp(name, "sort")) return f_sort(c, at, v, a, out);
    if (!strcmp(name, "dictsort")) return f_dictsort(c, at, v, a, out);
    if (!strcmp(name, "unique")) return f_unique(c, at, v, a, out);
    if (!strcmp(name, "min")) return f_minmax(c, at, v, a, false, out);
    if (!strcmp(name, "max")) return f_minmax(c, at, v, a, true, out);
    if (!strcmp(name, "sum")) {
        tv attr = arg_or(a, 0, "attribute", tv_none());
        tv acc = tv_ref(arg_or(a, 1, "start", tv_int(0)));
        tv items;
        if ((rc = as_list(c, at, v, &items))) { tv_unref(acc); return rc; }
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            tv it;
            if (attr.t != TV_NONE) rc = attr_path(c, at, items.u.l->items[i], attr, &it);
            else it = tv_ref(items.u.l->items[i]);
            if (rc) break;
            if (acc.t == TV_STR) rc = tpl_fail(c, at, HR_EINVAL, "sum() can't sum strings [use ''.join(seq) instead]");
            else {
                tv r;
                rc = tpl_binop(c, at, OP_ADD, acc, it, &r);
                if (!rc) { tv_unref(acc); acc = r; }
            }
            tv_unref(it);
        }
        tv_unref(items);
        if (rc) { tv_unref(acc); return rc; }
        *out = acc;
        return HR_OK;
    }
    if (!strcmp(name, "batch")) {
        tv cnt;
        if (!arg_get(a, 0, "linecount", &cnt) || !is_int(cnt) || ival(cnt) <= 0) return tpl_fail(c, at, HR_EINVAL, "batch needs a positive linecount");
        tv fill = tv_none();
        bool has_fill = arg_get(a, 1, "fill_with", &fill) && fill.t != TV_NONE;
        tv items;
        if ((rc = as_list(c, at, v, &items))) return rc;
        tv res = tv_list_new(TL_GEN, 0), cur = tv_none();
        size_t k = (size_t)ival(cnt);
        for (size_t i = 0; i < items.u.l->n; i++) {
            if (cur.t == TV_NONE) cur = tv_list_new(TL_LIST, k);
            tv_list_push(cur, tv_ref(items.u.l->items[i]));
            if (cur.u.l->n == k) { tv_list_push(res, cur); cur = tv_none(); }
        }
        if (cur.t != TV_NONE) {
            while (has_fill && cur.u.l->n < k) tv_list_push(cur, tv_ref(fill));
            tv_list_push(res, cur);
        }
        tv_unref(items);
        *out = res;
        return HR_OK;
    }
    if (!strcmp(name, "attr")) {
        tv nm;
        if (!arg_get(a, 0, "name", &nm) || nm.t != TV_STR) return tpl_fail(c, at, HR_EINVAL, "attr needs a name");
        if (v.t == TV_DICT) { *out = tv_undef(NULL); return HR_OK; } /* attributes, not keys */
        return tpl_getattr(c, at, v, nm.u.s->data, out);
    }
    (void)too_many;
    return tpl_fail(c, at, HR_EUNSUP, "unsupported filter '%s'", name);
}

/* ------------------------------------------------------------ methods */
static const char *const STR_METHODS[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
    "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier",
    "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
    "lstrip", "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex",
    "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase",
    "title", "translate", "upper", "zfill",
};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", "fromkeys"};
static const char *const LIST_METHODS[] = {"index", "count", "copy"};

static bool find_name(const char *const *tab, size_t n, const char *name, const char **st) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(tab[i], name)) { *st = tab[i]; return true; }
    return false;
}

bool tpl_method_exists(tv self, const char *name, const char **st) {
    switch (self.t) {
    case TV_STR: return find_name(STR_METHODS, HR_ARRAY_LEN(STR_METHODS), name, st);
    case TV_DICT: return find_name(DICT_METHODS, HR_ARRAY_LEN(DICT_METHODS), name, st);
    case TV_LIST:
        if (self.u.l->kind == TL_LIST || self.u.l->kind == TL_TUPLE)
            return find_name(LIST_METHODS, HR_ARRAY_LEN(LIST_METHODS), name, st);
        return false;
    default: return false;
    }
}

/* startswith/endswith with a str or a tuple of str. */
static int affix(tctx *c, const tnode *at, tv s, tv arg, bool end, bool *res) {
    if (arg.t == TV_STR) {
        size_t l = arg.u.s->len;
        *res = l <= s.u.s->len && memcmp(end ? s.u.s->data + s.u.s->len - l : s.u.s->data, arg.u.s->data, l) == 0;
        return HR_OK;
    }
    if (arg.t == TV_LIST && arg.u.l->kind == TL_TUPLE) {
        *res = false;
        for (size_t i = 0; i < arg.u.l->n && !*res; i++) {
            int rc = affix(c, at, s, arg.u.l->items[i], end, res);
            if (rc) return rc;
        }
        return HR_OK;
    }
    return tpl_fail(c, at, HR_EINVAL, "%s first arg must be str or a tuple of str, not %s",
                    end ? "endswith" : "startswith", tv_type_name(arg));
}

/* str.format with plain replacement fields: {}, {0}, {name}, {{ and }}, and
 * the !s / !r conversions. Format specs (":>8") are outside the subset. */
static int str_format(tctx *c, const tnode *at, tv s, targs *a, tv *out) {
    const char *p = s.u.s->data;
    size_t n = s.u.s->len;
    tbuf b = {0};
    tbuf_put(&b, "", 0);
    int auto_idx = 0, rc = HR_OK;
    bool manual = false;
    for (size_t i = 0; i < n && !rc; i++) {
        if (p[i] == '}') {
            if (i + 1 < n && p[i + 1] == '}') { tbuf_putc(&b, '}'); i++; continue; }
            rc = tpl_fail(c, at, HR_EINVAL, "Single '}' encountered in format string");
            break;
        }
        if (p[i] != '{') { tbuf_putc(&b, p[i]); continue; }
        if (i + 1 < n && p[i + 1] == '{') { tbuf_putc(&b, '{'); i++; continue; }
        const char *close = memchr(p + i, '}', n - i);
        if (!close) { rc = tpl_fail(c, at, HR_EINVAL, "Single '{' encountered in format string"); break; }
        size_t fl = (size_t)(close - (p + i + 1));
        char field[128];
        if (fl >= sizeof(field)) { rc = tpl_fail(c, at, HR_EUNSUP, "unsupported: long format field"); break; }
        memcpy(field, p + i + 1, fl);
        field[fl] = 0;
        char conv = 0;
        char *bang = strchr(field, '!');
        if (strchr(field, ':') || strchr(field, '[') || strchr(field, '.') || strchr(field, '{')) {
            rc = tpl_fail(c, at, HR_EUNSUP, "unsupported: format field '{%s}'", field);
            break;
        }
        if (bang) {
            if (bang[1] != 's' && bang[1] != 'r') { rc = tpl_fail(c, at, HR_EUNSUP, "unsupported: format conversion '{%s}'", field); break; }
            conv = bang[1];
            *bang = 0;
        }
        tv v = tv_none();
        bool found = false;
        if (!field[0]) {
            if (manual) { rc = tpl_fail(c, at, HR_EINVAL, "cannot switch from manual field specification to automatic field numbering"); break; }
            if (auto_idx < a->npos) { v = a->pos[auto_idx]; found = true; }
            auto_idx++;
        } else if (field[0] >= '0' && field[0] <= '9') {
            if (auto_idx) { rc = tpl_fail(c, at, HR_EINVAL, "cannot switch from automatic field numbering to manual field specification"); break; }
            manual = true;
            long k = strtol(field, NULL, 10);
            if (k < a->npos) { v = a->pos[k]; found = true; }
        } else {
            for (int j = 0; j < a->nkw && !found; j++)
                if (!strcmp(a->kwn[j], field)) { v = a->kw[j]; found = true; }
        }
        if (!found) { rc = tpl_fail(c, at, HR_EINVAL, "Replacement index %s out of range for positional args tuple", field); break; }
        if (v.t == TV_UNDEF && conv != 'r') { rc = tpl_fail(c, at, HR_EUNSUP, "unsupported: formatting an undefined value"); break; }
        rc = conv == 'r' ? tv_repr(v, &b, c->err) : tv_to_str(v, &b, c->err);
        if (rc) rc = tpl_fail(c, at, rc, "%s", c->err->msg);
        i = (size_t)(close - p);
    }
    if (rc) { free(b.p); return rc; }
    *out = tbuf_to_str(&b);
    return HR_OK;
}

static int str_method(tctx *c, const tnode *at, tv s, const char *m, targs *a, tv *out) {
    tv x;
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        if (!arg_get(a, 0, "prefix", &x)) return tpl_fail(c, at, HR_EINVAL, "%s needs an argument", m);
        if (a->npos > 1) return tpl_fail(c, at, HR_EUNSUP, "unsupported: %s with start/end", m);
        bool r;
        int rc = affix(c, at, s, x, m[0] == 'e', &r);
        if (!rc) *out = tv_bool(r);
        return rc;
    }
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        tv ch = arg_or(a, 0, "chars", tv_none());
        if (ch.t != TV_NONE && ch.t != TV_STR) return tpl_fail(c, at, HR_EINVAL, "%s arg must be None or str", m);
        *out = strip(s, ch.t == TV_STR ? &ch : NULL, m[0] != 'r', m[0] != 'l');
        return HR_OK;
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        tv sep = arg_or(a, 0, "sep", tv_none());
        tv ms = arg_or(a, 1, "maxsplit", tv_int(-1));
        if ((sep.t != TV_NONE && sep.t != TV_STR) || !is_int(ms)) return tpl_fail(c, at, HR_EINVAL, "bad arguments to %s", m);
        if (sep.t == TV_STR && sep.u.s->len == 0) return tpl_fail(c, at, HR_EINVAL, "empty separator");
        *out = str_split(s, sep.t == TV_STR ? &sep : NULL, ival(ms), m[0] == 'r');
        return HR_OK;
    }
    if (!strcmp(m, "upper")) { *out = case_map(s, CASE_UPPER); return HR_OK; }
    if (!strcmp(m, "lower") || !strcmp(m, "casefold")) { *out = case_map(s, CASE_LOWER); return HR_OK; }
    if (!strcmp(m, "title")) { *out = case_map(s, CASE_TITLE_METHOD); return HR_OK; }
    if (!strcmp(m, "capitalize")) { *out = case_map(s, CASE_CAPITALIZE); return HR_OK; }
    if (!strcmp(m, "replace")) {
        tv old, nw;
        if (!arg_get(a, 0, "old", &old) || !arg_get(a, 1, "new", &nw) || old.t != TV_STR || nw.t != TV_STR)
            return tpl_fail(c, at, HR_EINVAL, "replace needs two strings");
        tv cnt = arg_or(a, 2, "count", tv_int(-1));
        if (!is_int(cnt)) return tpl_fail(c, at, HR_EINVAL, "replace count must be an int");
        *out = str_replace(s, old, nw, ival(cnt));
        return HR_OK;
    }
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "rindex") || !strcmp(m, "count")) {
        if (!arg_get(a, 0, "sub", &x) || x.t != TV_STR) return tpl_fail(c, at, HR_EINVAL, "%s needs a string", m);
        if (a->npos > 1) return tpl_fail(c, at, HR_EUNSUP, "unsupported: %s with start/end", m);
        const char *p = s.u.s->data;
        size_t n = s.u.s->len, l = x.u.s->len;
        if (!strcmp(m, "count")) {
            int64_t k = 0;
            if (l == 0) k = (int64_t)tpl_utf8_len(p, n) + 1;
            else for (const char *h = p; (h = memmem(h, n - (size_t)(h - p), x.u.s->data, l)) != NULL; h += l) k++;
            *out = tv_int(k);
            return HR_OK;
        }
        long pos = -1;
        if (m[0] != 'r') {
            const char *h = memmem(p, n, x.u.s->data, l);
            if (h) pos = (long)(h - p);
        } else if (l <= n) {
            for (size_t q = n - l + 1; q-- > 0;)
                if (memcmp(p + q, x.u.s->data, l) == 0) { pos = (long)q; break; }
        }
        if (pos < 0 && strstr(m, "index")) return tpl_fail(c, at, HR_EINVAL, "substring not found");
        *out = tv_int(pos < 0 ? -1 : (int64_t)tpl_utf8_len(p, (size_t)pos));
        return HR_OK;
    }
    if (!strcmp(m, "join")) {
        if (!arg_get(a, 0, "iterable", &x)) return tpl_fail(c, at, HR_EINVAL, "join needs an argument");
        tv items;
        int rc = tpl_iterate(c, at, x, &items);
        if (rc) return rc;
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            tv it = items.u.l->items[i];
            if (it.t != TV_STR) { rc = tpl_fail(c, at, HR_EINVAL, "sequence item %zu: expected str instance, %s found", i, tv_type_name(it)); break; }
            if (i) tbuf_put(&b, s.u.s->data, s.u.s->len);
            tbuf_put(&b, it.u.s->data, it.u.s->len);
        }
        tv_unref(items);
        if (rc) { free(b.p); return rc; }
        *out = tbuf_to_str(&b);
        return HR_OK;
    }
    if (!strcmp(m, "splitlines")) {
        bool keep;
        if (int_flag(c, at, arg_or(a, 0, "keepends", tv_bool(false)), &keep)) return c->err->code;
        *out = splitlines(s, keep);
        return HR_OK;
    }
    if (!strncmp(m, "is", 2) && strcmp(m, "isidentifier") && strcmp(m, "istitle") && strcmp(m, "isprintable")) {
        bool all = s.u.s->len > 0, any_cased = false;
        bool lower = !strcmp(m, "islower"), upper = !strcmp(m, "isupper");
        for (size_t i = 0; i < s.u.s->len;) {
            uint32_t cp;
            i += tpl_utf8_decode(s.u.s->data + i, s.u.s->len - i, &cp);
            if (lower || upper) {
                if (cp_is_upper(cp)) { any_cased = true; if (lower) all = false; }
                else if (cp_is_lower(cp)) { any_cased = true; if (upper) all = false; }
                continue;
            }
            bool ok = !strcmp(m, "isspace") ? tpl_is_space(cp)
                      : !strcmp(m, "isalpha") ? cp_is_alpha(cp)
                      : !strcmp(m, "isalnum") ? cp_is_alnum(cp)
                      : !strcmp(m, "isascii") ? cp < 0x80
                      : cp_is_digit(cp); /* isdigit/isdecimal/isnumeric: ASCII digits */
            if (!ok) all = false;
        }
        if (!strcmp(m, "isascii") && s.u.s->len == 0) all = true;
        *out = tv_bool((lower || upper) ? all && any_cased : all);
        return HR_OK;
    }
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        if (!arg_get(a, 0, "prefix", &x) || x.t != TV_STR) return tpl_fail(c, at, HR_EINVAL, "%s needs a string", m);
        bool r;
        affix(c, at, s, x, m[6] == 's', &r);
        if (!r) *out = tv_ref(s);
        else if (m[6] == 's') *out = tv_str_new(s.u.s->data, s.u.s->len - x.u.s->len);
        else *out = tv_str_new(s.u.s->data + x.u.s->len, s.u.s->len - x.u.s->len);
        return HR_OK;
    }
    if (!strcmp(m, "format")) return str_format(c, at, s, a, out);
    return tpl_fail(c, at, HR_EUNSUP, "unsupported method str.%s", m);
}

/* How many positional arguments each method takes and which keywords
 * (CPython's signatures; most str methods are positional-only). */
static const struct { tv_type t; const char *name; int maxpos; const char *kw[2]; } METHOD_ARGS[] = {
    {TV_STR, "startswith", 3, {0}}, {TV_STR, "endswith", 3, {0}}, {TV_STR, "strip", 1, {0}},
    {TV_STR, "lstrip", 1, {0}}, {TV_STR, "rstrip", 1, {0}}, {TV_STR, "split", 2, {"sep", "maxsplit"}},
    {TV_STR, "rsplit", 2, {"sep", "maxsplit"}}, {TV_STR, "upper", 0, {0}}, {TV_STR, "lower", 0, {0}},
    {TV_STR, "casefold", 0, {0}}, {TV_STR, "title", 0, {0}}, {TV_STR, "capitalize", 0, {0}},
    {TV_STR, "replace", 3, {0}}, {TV_STR, "find", 3, {0}}, {TV_STR, "rfind", 3, {0}}, {TV_STR, "index", 3, {0}},
    {TV_STR, "rindex", 3, {0}}, {TV_STR, "count", 3, {0}}, {TV_STR, "join", 1, {0}},
    {TV_STR, "splitlines", 1, {"keepends"}}, {TV_STR, "removeprefix", 1, {0}}, {TV_STR, "removesuffix", 1, {0}},
    {TV_STR, "isalnum", 0, {0}}, {TV_STR, "isalpha", 0, {0}}, {TV_STR, "isascii", 0, {0}}, {TV_STR, "isdecimal", 0, {0}},
    {TV_STR, "isdigit", 0, {0}}, {TV_STR, "islower", 0, {0}}, {TV_STR, "isnumeric", 0, {0}}, {TV_STR, "isspace", 0, {0}},
    {TV_STR, "isupper", 0, {0}},
    {TV_DICT, "items", 0, {0}}, {TV_DICT, "keys", 0, {0}}, {TV_DICT, "values", 0, {0}}, {TV_DICT, "get", 2, {0}},
    {TV_DICT, "copy", 0, {0}}, {TV_LIST, "index", 3, {0}}, {TV_LIST, "count", 1, {0}}, {TV_LIST, "copy", 0, {0}},
};

int tpl_method(tctx *c, const tnode *at, tv self, const char *m, targs *a, tv *out) {
    tv x;
    for (size_t i = 0; i < HR_ARRAY_LEN(METHOD_ARGS); i++) {
        if (METHOD_ARGS[i].t != self.t || strcmp(METHOD_ARGS[i].name, m)) continue;
        if (a->npos > METHOD_ARGS[i].maxpos)
            return tpl_fail(c, at, HR_EINVAL, "%s() takes at most %d argument(s) (%d given)", m, METHOD_ARGS[i].maxpos, a->npos);
        for (int k = 0; k < a->nkw; k++) {
            bool ok = false;
            for (int j = 0; j < 2 && METHOD_ARGS[i].kw[j]; j++) ok |= !strcmp(METHOD_ARGS[i].kw[j], a->kwn[k]);
            if (!ok) return tpl_fail(c, at, HR_EINVAL, "%s() takes no keyword argument '%s'", m, a->kwn[k]);
        }
        break;
    }
    if (self.t == TV_STR) return str_method(c, at, self, m, a, out);
    if (self.t == TV_DICT) {
        if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            tv res = tv_list_new(TL_VIEW, self.u.d->n);
            for (size_t i = 0; i < self.u.d->n; i++) {
                if (m[0] == 'i') {
                    tv pair = tv_list_new(TL_TUPLE, 2);
                    tv_list_push(pair, tv_ref(self.u.d->keys[i]));
                    tv_list_push(pair, tv_ref(self.u.d->vals[i]));
                    tv_list_push(res, pair);
                } else {
                    tv_list_push(res, tv_ref(m[0] == 'k' ? self.u.d->keys[i] : self.u.d->vals[i]));
                }
            }
            *out = res;
            return HR_OK;
        }
        if (!strcmp(m, "get")) {
            if (!arg_get(a, 0, "key", &x)) return tpl_fail(c, at, HR_EINVAL, "get expected at least 1 argument");
            tv v;
            if (tv_dict_get(self, x, &v)) *out = tv_ref(v);
            else *out = tv_ref(arg_or(a, 1, "default", tv_none()));
            return HR_OK;
        }
        if (!strcmp(m, "copy")) {
            tv d = tv_dict_new();
            for (size_t i = 0; i < self.u.d->n; i++) tv_dict_set(d, tv_ref(self.u.d->keys[i]), tv_ref(self.u.d->vals[i]));
            *out = d;
            return HR_OK;
        }
    }
    if (self.t == TV_LIST) {
        if (!strcmp(m, "copy")) { *out = make_list(self, TL_LIST); return HR_OK; }
        if (!arg_get(a, 0, "value", &x)) return tpl_fail(c, at, HR_EINVAL, "%s needs an argument", m);
        if (a->npos > 1) return tpl_fail(c, at, HR_EUNSUP, "unsupported: list.%s with start/stop", m);
        int64_t k = 0, pos = -1;
        for (size_t i = 0; i < self.u.l->n; i++)
            if (tv_equal(self.u.l->items[i], x)) { k++; if (pos < 0) pos = (int64_t)i; }
        if (!strcmp(m, "count")) { *out = tv_int(k); return HR_OK; }
        if (pos < 0) return tpl_fail(c, at, HR_EINVAL, "value is not in list");
        *out = tv_int(pos);
        return HR_OK;
    }
    if (self.t == TV_LOOP) {
        tv_obj *o = self.u.o;
        if (!strcmp(m, "cycle")) {
            if (a->npos == 0) return tpl_fail(c, at, HR_EINVAL, "no items for cycling given");
            *out = tv_ref(a->pos[o->index0 % (size_t)a->npos]);
            return HR_OK;
        }
        if (!strcmp(m, "changed")) {
            tv cur = a->npos == 1 ? tv_ref(a->pos[0]) : tv_list_new(TL_LIST, 0);
            if (a->npos != 1) for (int i = 0; i < a->npos; i++) tv_list_push(cur, tv_ref(a->pos[i]));
            bool changed = !o->changed_set || !tv_equal(cur, o->changed_last);
            if (changed) {
                tv_unref(o->changed_last);
                o->changed_last = cur;
                o->changed_set = true;
            } else {
                tv_unref(cur);
            }
            *out = tv_bool(changed);
            return HR_OK;
        }
    }
    return tpl_fail(c, at, HR_EUNSUP, "unsupported method %s.%s", tv_type_name(self), m);
}

/* ------------------------------------------------------------ globals */
static const char *const GLOBALS[] = {"range", "namespace", "dict", "raise_exception", "strftime_now"};

bool tpl_global_known(const char *name, const char **st) {
    return find_name(GLOBALS, HR_ARRAY_LEN(GLOBALS), name, st);
}

int tpl_call_global(tctx *c, const tnode *at, const char *name, targs *a, tv *out) {
    if (!strcmp(name, "raise_exception")) {
        tv msg = a->npos ? a->pos[0] : tv_str_cstr("");
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        tv_to_str(msg, &b, c->err);
        if (!a->npos) tv_unref(msg);
        hr_err_set(c->err, HR_EINVAL, "%s", b.p);
        free(b.p);
        return HR_EINVAL;
    }
    if (!strcmp(name, "strftime_now")) {
        tv f;
        if (!arg_get(a, 0, "format", &f) || f.t != TV_STR) return tpl_fail(c, at, HR_EINVAL, "strftime_now needs a format string");
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        char buf[512];
        size_t n = strftime(buf, sizeof(buf), f.u.s->data, &tmv);
        if (n == 0 && f.u.s->len) return tpl_fail(c, at, HR_EUNSUP, "unsupported strftime format");
        *out = tv_str_new(buf, n);
        return HR_OK;
    }
    if (!strcmp(name, "range")) {
        int64_t r[3] = {0, 0, 1};
        if (a->npos < 1 || a->npos > 3 || a->nkw) return tpl_fail(c, at, HR_EINVAL, "range expected 1 to 3 arguments");
        for (int i = 0; i < a->npos; i++)
            if (!is_int(a->pos[i])) return tpl_fail(c, at, HR_EINVAL, "'%s' object cannot be interpreted as an integer", tv_type_name(a->pos[i]));
        if (a->npos == 1) r[1] = ival(a->pos[0]);
        else { r[0] = ival(a->pos[0]); r[1] = ival(a->pos[1]); if (a->npos == 3) r[2] = ival(a->pos[2]); }
        if (r[2] == 0) return tpl_fail(c, at, HR_EINVAL, "range() arg 3 must not be zero");
        double cnt = r[2] > 0 ? ceil(((double)r[1] - (double)r[0]) / (double)r[2]) : ceil(((double)r[0] - (double)r[1]) / (double)-r[2]);
        if (cnt > MAX_RANGE) return tpl_fail(c, at, HR_EINVAL, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).", MAX_RANGE);
        tv l = tv_list_new(TL_RANGE, cnt > 0 ? (size_t)cnt : 0);
        for (int64_t i = r[0]; r[2] > 0 ? i < r[1] : i > r[1]; i += r[2]) tv_list_push(l, tv_int(i));
        *out = l;
        return HR_OK;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        tv d = tv_dict_new();
        if (a->npos > 1) { tv_unref(d); return tpl_fail(c, at, HR_EINVAL, "%s expected at most 1 positional argument", name); }
        if (a->npos == 1) {
            tv src = a->pos[0];
            if (src.t == TV_UNDEF) { tv_unref(d); return tpl_fail(c, at, HR_EINVAL, "'%s' is undefined", src.u.name ? src.u.name : "value"); }
            if (src.t == TV_DICT || src.t == TV_NS) {
                for (size_t i = 0; i < src.u.d->n; i++) tv_dict_set(d, tv_ref(src.u.d->keys[i]), tv_ref(src.u.d->vals[i]));
            } else {
                tv items;
                int rc = tpl_iterate(c, at, src, &items);
                if (rc) { tv_unref(d); return rc; }
                for (size_t i = 0; i < items.u.l->n && !rc; i++) {
                    tv p = items.u.l->items[i];
                    if (p.t != TV_LIST || p.u.l->n != 2 || p.u.l->kind == TL_GEN) rc = tpl_fail(c, at, HR_EINVAL, "dictionary update sequence element has wrong length");
                    else tv_dict_set(d, tv_ref(p.u.l->items[0]), tv_ref(p.u.l->items[1]));
                }
                tv_unref(items);
                if (rc) { tv_unref(d); return rc; }
            }
        }
        for (int i = 0; i < a->nkw; i++) tv_dict_set(d, tv_str_cstr(a->kwn[i]), tv_ref(a->kw[i]));
        if (name[0] == 'n') {
            for (size_t i = 0; i < d.u.d->n; i++)
                if (d.u.d->keys[i].t == TV_STR && d.u.d->keys[i].u.s->data[0] == '_') {
                    tv_unref(d);
                    return tpl_fail(c, at, HR_EINVAL, "Chat templates cannot store underscore-prefixed attributes on a namespace");
                }
            d.t = TV_NS;
        }
        *out = d;
        return HR_OK;
    }
    return tpl_fail(c, at, HR_EUNSUP, "unsupported function '%s'", name);
}
