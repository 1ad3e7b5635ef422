/* Values of the Jinja subset: refcounting, containers, truthiness, equality,
 * and the Python spellings of values (str(), repr(), json.dumps) that chat
 * templates print byte-for-byte. */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "template/tpl_internal.h"

/* ------------------------------------------------------------ buffers */
static void tbuf_grow(tbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    b->p = hr_xrealloc(b->p, cap);
    b->cap = cap;
}

void tbuf_put(tbuf *b, const char *s, size_t n) {
    tbuf_grow(b, n);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void tbuf_puts(tbuf *b, const char *s) { tbuf_put(b, s, strlen(s)); }
void tbuf_putc(tbuf *b, char c) { tbuf_put(b, &c, 1); }

void tbuf_printf(tbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof(tmp)) { tbuf_put(b, tmp, (size_t)n); return; }
    tbuf_grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

tv tbuf_to_str(tbuf *b) {
    tv v = tv_str_new(b->p ? b->p : "", b->n);
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    return v;
}

/* ------------------------------------------------------------ UTF-8 */
size_t tpl_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    if (n == 0) { *cp = 0; return 1; }
    unsigned c = u[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) { *cp = 0xFFFD; return 1; }
    uint32_t v = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) { *cp = 0xFFFD; return 1; }
        v = (v << 6) | (u[i] & 0x3F);
    }
    *cp = v;
    return len;
}

void tpl_utf8_encode(uint32_t cp, tbuf *b) {
    char o[4];
    size_t n;
    if (cp < 0x80) { o[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    tbuf_put(b, o, n);
}

size_t tpl_utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += tpl_utf8_decode(s + i, n - i, &cp);
        k++;
    }
    return k;
}

bool tpl_is_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* ------------------------------------------------------------ lifetime */
tv tv_ref(tv v) {
    switch (v.t) {
    case TV_STR: v.u.s->rc++; break;
    case TV_LIST: v.u.l->rc++; break;
    case TV_DICT: case TV_NS: v.u.d->rc++; break;
    case TV_LOOP: case TV_MACRO: case TV_METHOD: v.u.o->rc++; break;
    default: break;
    }
    return v;
}

void tv_unref(tv v) {
    switch (v.t) {
    case TV_STR:
        if (--v.u.s->rc == 0) free(v.u.s);
        break;
    case TV_LIST:
        if (--v.u.l->rc == 0) {
            for (size_t i = 0; i < v.u.l->n; i++) tv_unref(v.u.l->items[i]);
            free(v.u.l->items);
            free(v.u.l);
        }
        break;
    case TV_DICT: case TV_NS:
        if (--v.u.d->rc == 0) {
            for (size_t i = 0; i < v.u.d->n; i++) { tv_unref(v.u.d->keys[i]); tv_unref(v.u.d->vals[i]); }
            free(v.u.d->keys);
            free(v.u.d->vals);
            free(v.u.d);
        }
        break;
    case TV_LOOP: case TV_MACRO: case TV_METHOD:
        if (--v.u.o->rc == 0) {
            tv_unref(v.u.o->items);
            tv_unref(v.u.o->changed_last);
            tv_unref(v.u.o->self);
            free(v.u.o);
        }
        break;
    default: break;
    }
}

tv tv_str_new(const char *s, size_t len) {
    tv v;
    v.t = TV_STR;
    v.u.s = hr_xmalloc(sizeof(tv_str) + len + 1);
    v.u.s->rc = 1;
    v.u.s->safe = false;
    v.u.s->len = len;
    if (len) memcpy(v.u.s->data, s, len);
    v.u.s->data[len] = 0;
    return v;
}

tv tv_str_cstr(const char *s) { return tv_str_new(s, strlen(s)); }

tv tv_list_new(tl_kind kind, size_t cap) {
    tv v;
    v.t = TV_LIST;
    v.u.l = hr_xcalloc(1, sizeof(tv_list));
    v.u.l->rc = 1;
    v.u.l->kind = kind;
    if (cap) {
        v.u.l->items = hr_xmalloc(cap * sizeof(tv));
        v.u.l->cap = cap;
    }
    return v;
}

void tv_list_push(tv list, tv item) {
    tv_list *l = list.u.l;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 4;
        l->items = hr_xrealloc(l->items, l->cap * sizeof(tv));
    }
    l->items[l->n++] = item;
}

tv tv_dict_new(void) {
    tv v;
    v.t = TV_DICT;
    v.u.d = hr_xcalloc(1, sizeof(tv_dict));
    v.u.d->rc = 1;
    return v;
}

static long dict_find(const tv_dict *d, tv key) {
    for (size_t i = 0; i < d->n; i++)
        if (tv_equal(d->keys[i], key)) return (long)i;
    return -1;
}

void tv_dict_set(tv dv, tv key, tv val) {
    tv_dict *d = dv.u.d;
    long i = dict_find(d, key);
    if (i >= 0) {
        /* Python keeps the first key object and replaces the value. */
        tv_unref(key);
        tv_unref(d->vals[i]);
        d->vals[i] = val;
        return;
    }
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 4;
        d->keys = hr_xrealloc(d->keys, d->cap * sizeof(tv));
        d->vals = hr_xrealloc(d->vals, d->cap * sizeof(tv));
    }
    d->keys[d->n] = key;
    d->vals[d->n] = val;
    d->n++;
}

bool tv_dict_get(tv dv, tv key, tv *out) {
    long i = dict_find(dv.u.d, key);
    if (i < 0) return false;
    *out = dv.u.d->vals[i];
    return true;
}

bool tv_dict_get_str(tv dv, const char *key, tv *out) {
    size_t kl = strlen(key);
    tv_dict *d = dv.u.d;
    for (size_t i = 0; i < d->n; i++) {
        if (d->keys[i].t == TV_STR && d->keys[i].u.s->len == kl && memcmp(d->keys[i].u.s->data, key, kl) == 0) {
            *out = d->vals[i];
            return true;
        }
    }
    return false;
}

tv tv_obj_new(tv_type t) {
    tv v;
    v.t = t;
    v.u.o = hr_xcalloc(1, sizeof(tv_obj));
    v.u.o->rc = 1;
    v.u.o->items = tv_none();
    v.u.o->changed_last = tv_none();
    v.u.o->self = tv_none();
    return v;
}

/* ------------------------------------------------------------ semantics */
bool tv_truthy(tv v) {
    switch (v.t) {
    case TV_UNDEF: case TV_NONE: return false;
    case TV_BOOL: return v.u.b;
    case TV_INT: return v.u.i != 0;
    case TV_FLOAT: return v.u.f != 0.0;
    case TV_STR: return v.u.s->len != 0;
    case TV_LIST: return v.u.l->kind == TL_GEN ? true : v.u.l->n != 0;
    case TV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

bool tv_is_num(tv v) { return v.t == TV_INT || v.t == TV_FLOAT || v.t == TV_BOOL; }

double tv_num(tv v) {
    return v.t == TV_FLOAT ? v.u.f : v.t == TV_BOOL ? (double)v.u.b : (double)v.u.i;
}

static int64_t tv_intval(tv v) { return v.t == TV_BOOL ? (int64_t)v.u.b : v.u.i; }

bool tv_equal(tv a, tv b) {
    if (tv_is_num(a) && tv_is_num(b)) {
        if (a.t != TV_FLOAT && b.t != TV_FLOAT) return tv_intval(a) == tv_intval(b);
        return tv_num(a) == tv_num(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case TV_UNDEF: case TV_NONE: return true;
    case TV_STR: return a.u.s->len == b.u.s->len && memcmp(a.u.s->data, b.u.s->data, a.u.s->len) == 0;
    case TV_LIST: {
        tv_list *x = a.u.l, *y = b.u.l;
        if (x == y) return true;
        /* list == tuple is False in Python; generators compare by identity. */
        if (x->kind != y->kind || x->kind == TL_GEN || x->n != y->n) return false;
        for (size_t i = 0; i < x->n; i++)
            if (!tv_equal(x->items[i], y->items[i])) return false;
        return true;
    }
    case TV_DICT: {
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            tv o;
            if (!tv_dict_get(b, a.u.d->keys[i], &o) || !tv_equal(a.u.d->vals[i], o)) return false;
        }
        return true;
    }
    case TV_NS: return a.u.d == b.u.d;
    case TV_FUNC: return a.u.name == b.u.name;
    default: return a.u.o == b.u.o;
    }
}

const char *tv_type_name(tv v) {
    switch (v.t) {
    case TV_UNDEF: return "Undefined";
    case TV_NONE: return "NoneType";
    case TV_BOOL: return "bool";
    case TV_INT: return "int";
    case TV_FLOAT: return "float";
    case TV_STR: return "str";
    case TV_LIST:
        return v.u.l->kind == TL_TUPLE ? "tuple" : v.u.l->kind == TL_GEN ? "generator"
               : v.u.l->kind == TL_VIEW ? "dict view" : v.u.l->kind == TL_RANGE ? "range" : "list";
    case TV_DICT: return "dict";
    case TV_NS: return "Namespace";
    case TV_LOOP: return "LoopContext";
    case TV_MACRO: return "Macro";
    case TV_METHOD: return "builtin_function_or_method";
    case TV_FUNC: return "function";
    }
    return "object";
}

/* ------------------------------------------------------------ printing */
/* repr(float): the shortest digits that round-trip, fixed notation when the
 * decimal exponent is in [-4, 16), as CPython's float_repr does. */
void tv_float_repr(double f, tbuf *b) {
    if (isnan(f)) { tbuf_puts(b, "nan"); return; }
    if (isinf(f)) { tbuf_puts(b, f < 0 ? "-inf" : "inf"); return; }
    char tmp[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof(tmp), "%.*e", p - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    if (p > 17) p = 17;
    snprintf(tmp, sizeof(tmp), "%.*e", p - 1, f);
    /* tmp = [-]d[.ddd]e[+-]xx */
    const char *s = tmp;
    bool neg = false;
    if (*s == '-') { neg = true; s++; }
    char digits[32];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    int e = atoi(s + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = e + 1;
    if (neg) tbuf_putc(b, '-');
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            tbuf_puts(b, "0.");
            for (int i = 0; i < -decpt; i++) tbuf_putc(b, '0');
            tbuf_put(b, digits, (size_t)nd);
        } else if (decpt >= nd) {
            tbuf_put(b, digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) tbuf_putc(b, '0');
            tbuf_puts(b, ".0");
        } else {
            tbuf_put(b, digits, (size_t)decpt);
            tbuf_putc(b, '.');
            tbuf_put(b, digits + decpt, (size_t)(nd - decpt));
        }
    } else {
        tbuf_putc(b, digits[0]);
        if (nd > 1) {
            tbuf_putc(b, '.');
            tbuf_put(b, digits + 1, (size_t)(nd - 1));
        }
        tbuf_printf(b, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
}

/* str.isprintable() approximated without Unicode tables: controls, the
 * non-ASCII spaces, format characters and private use are not printable. */
static bool is_printable(uint32_t c) {
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x7F) return true;
    if (c <= 0xA0 || c == 0xAD) return false;
    if (c == 0x1680 || (c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) ||
        (c >= 0x205F && c <= 0x206F) || c == 0x3000 || c == 0xFEFF || (c >= 0xD800 && c <= 0xF8FF) ||
        (c >= 0xFFF0 && c <= 0xFFFB) || c >= 0xF0000 || c == 0x061C || c == 0x180E)
        return false;
    return true;
}

static void repr_str(const char *s, size_t n, tbuf *b) {
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    tbuf_putc(b, q);
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = tpl_utf8_decode(s + i, n - i, &c);
        if (c == (uint32_t)q || c == '\\') { tbuf_putc(b, '\\'); tbuf_putc(b, (char)c); }
        else if (c == '\t') tbuf_puts(b, "\\t");
        else if (c == '\n') tbuf_puts(b, "\\n");
        else if (c == '\r') tbuf_puts(b, "\\r");
        else if (is_printable(c)) tbuf_put(b, s + i, k);
        else if (c <= 0xFF) tbuf_printf(b, "\\x%02x", c);
        else if (c <= 0xFFFF) tbuf_printf(b, "\\u%04x", c);
        else tbuf_printf(b, "\\U%08x", c);
        i += k;
    }
    tbuf_putc(b, q);
}

static int unprintable(tv v, hr_err *err) {
    return hr_err_set(err, HR_EUNSUP, "unsupported: printing a %s object (Python prints its address)",
                      tv_type_name(v));
}

int tv_repr(tv v, tbuf *b, hr_err *err) {
    switch (v.t) {
    case TV_UNDEF: tbuf_puts(b, "Undefined"); return HR_OK; /* repr(Undefined()) */
    case TV_STR: repr_str(v.u.s->data, v.u.s->len, b); return HR_OK;
    case TV_LIST: {
        tv_list *l = v.u.l;
        if (l->kind == TL_GEN || l->kind == TL_VIEW || l->kind == TL_RANGE) return unprintable(v, err);
        tbuf_putc(b, l->kind == TL_TUPLE ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) tbuf_puts(b, ", ");
            int rc = tv_repr(l->items[i], b, err);
            if (rc) return rc;
        }
        if (l->kind == TL_TUPLE && l->n == 1) tbuf_putc(b, ',');
        tbuf_putc(b, l->kind == TL_TUPLE ? ')' : ']');
        return HR_OK;
    }
    case TV_DICT: {
        tbuf_putc(b, '{');
        for (size_t i = 0; i < v.u.d->n; i++) {
            if (i) tbuf_puts(b, ", ");
            int rc = tv_repr(v.u.d->keys[i], b, err);
            if (rc) return rc;
            tbuf_puts(b, ": ");
            rc = tv_repr(v.u.d->vals[i], b, err);
            if (rc) return rc;
        }
        tbuf_putc(b, '}');
        return HR_OK;
    }
    case TV_NS: { /* jinja2.utils.Namespace.__repr__ */
        tbuf_puts(b, "<Namespace ");
        tv d = v;
        d.t = TV_DICT;
        int rc = tv_repr(d, b, err);
        if (rc) return rc;
        tbuf_putc(b, '>');
        return HR_OK;
    }
    default: return tv_to_str(v, b, err);
    }
}

int tv_to_str(tv v, tbuf *b, hr_err *err) {
    switch (v.t) {
    case TV_UNDEF: return HR_OK;
    case TV_NONE: tbuf_puts(b, "None"); return HR_OK;
    case TV_BOOL: tbuf_puts(b, v.u.b ? "True" : "False"); return HR_OK;
    case TV_INT: tbuf_printf(b, "%lld", (long long)v.u.i); return HR_OK;
    case TV_FLOAT: tv_float_repr(v.u.f, b); return HR_OK;
    case TV_STR: tbuf_put(b, v.u.s->data, v.u.s->len); return HR_OK;
    case TV_LIST: case TV_DICT: case TV_NS: return tv_repr(v, b, err);
    default: return unprintable(v, err);
    }
}

/* ------------------------------------------------------------ JSON */
static void json_str(const char *s, size_t n, bool ascii, tbuf *b) {
    tbuf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        uint32_t c;
        size_t k = tpl_utf8_decode(s + i, n - i, &c);
        switch (c) {
        case '"': tbuf_puts(b, "\\\""); break;
        case '\\': tbuf_puts(b, "\\\\"); break;
        case '\n': tbuf_puts(b, "\\n"); break;
        case '\r': tbuf_puts(b, "\\r"); break;
        case '\t': tbuf_puts(b, "\\t"); break;
        case '\b': tbuf_puts(b, "\\b"); break;
        case '\f': tbuf_puts(b, "\\f"); break;
        default:
            if (c < 0x20 || (ascii && c > 0x7E)) {
                if (c > 0xFFFF) {
                    uint32_t x = c - 0x10000;
                    tbuf_printf(b, "\\u%04x\\u%04x", 0xD800 + (x >> 10), 0xDC00 + (x & 0x3FF));
                } else {
                    tbuf_printf(b, "\\u%04x", c);
                }
            } else {
                tbuf_put(b, s + i, k);
            }
        }
        i += k;
    }
    tbuf_putc(b, '"');
}

static void json_float(double f, tbuf *b) {
    if (isnan(f)) tbuf_puts(b, "NaN");
    else if (isinf(f)) tbuf_puts(b, f < 0 ? "-Infinity" : "Infinity");
    else tv_float_repr(f, b);
}

typedef struct jopts {
    bool ascii, sort;
    const char *indent, *item_sep, *key_sep;
} jopts;

static void json_newline(const jopts *o, int level, tbuf *b) {
    tbuf_putc(b, '\n');
    for (int i = 0; i < level; i++) tbuf_puts(b, o->indent);
}

/* Sort items for sort_keys: json.dumps sorts the original keys, so numbers
 * sort numerically; keys[3i] is the key as text, keys[3i+1] the value, the original key is kept in
 * a third slot (see json_dump). */
static int json_cmp_num(const void *x, const void *y) {
    double a = tv_num(((const tv *)x)[2]), c = tv_num(((const tv *)y)[2]);
    return a < c ? -1 : a > c;
}

static int json_cmp_keys(const void *x, const void *y) {
    const tv *a = x, *c = y;
    size_t n = HR_MIN(a->u.s->len, c->u.s->len);
    int r = memcmp(a->u.s->data, c->u.s->data, n);
    if (r) return r;
    return a->u.s->len < c->u.s->len ? -1 : a->u.s->len > c->u.s->len;
}

static int json_dump(tv v, const jopts *o, int level, tbuf *b, hr_err *err) {
    switch (v.t) {
    case TV_NONE: tbuf_puts(b, "null"); return HR_OK;
    case TV_BOOL: tbuf_puts(b, v.u.b ? "true" : "false"); return HR_OK;
    case TV_INT: tbuf_printf(b, "%lld", (long long)v.u.i); return HR_OK;
    case TV_FLOAT: json_float(v.u.f, b); return HR_OK;
    case TV_STR: json_str(v.u.s->data, v.u.s->len, o->ascii, b); return HR_OK;
    case TV_LIST: {
        tv_list *l = v.u.l;
        if (l->kind == TL_GEN || l->kind == TL_VIEW || l->kind == TL_RANGE) break;
        if (l->n == 0) { tbuf_puts(b, "[]"); return HR_OK; }
        tbuf_putc(b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) tbuf_puts(b, o->item_sep);
            if (o->indent) json_newline(o, level + 1, b);
            int rc = json_dump(l->items[i], o, level + 1, b, err);
            if (rc) return rc;
        }
        if (o->indent) json_newline(o, level, b);
        tbuf_putc(b, ']');
        return HR_OK;
    }
    case TV_DICT: {
        tv_dict *d = v.u.d;
        if (d->n == 0) { tbuf_puts(b, "{}"); return HR_OK; }
        /* Keys become strings as json.dumps converts them. */
        tv *keys = hr_xmalloc(d->n * sizeof(tv) * 3);
        int rc = HR_OK;
        size_t nk = 0;
        for (size_t i = 0; i < d->n; i++) {
            tv k = d->keys[i];
            tbuf kb = {0};
            if (k.t == TV_STR) tbuf_put(&kb, k.u.s->data, k.u.s->len);
            else if (k.t == TV_INT) tbuf_printf(&kb, "%lld", (long long)k.u.i);
            else if (k.t == TV_FLOAT) json_float(k.u.f, &kb);
            else if (k.t == TV_BOOL) tbuf_puts(&kb, k.u.b ? "true" : "false");
            else if (k.t == TV_NONE) tbuf_puts(&kb, "null");
            else {
                rc = hr_err_set(err, HR_EINVAL, "keys must be str, int, float, bool or None, not %s",
                                tv_type_name(k));
                break;
            }
            keys[3 * nk] = tbuf_to_str(&kb);
            keys[3 * nk + 1] = d->vals[i];
            keys[3 * nk + 2] = k;
            nk++;
        }
        if (rc == HR_OK && o->sort && nk > 1) {
            /* Python sorts the original keys: all str, or all numbers; a mix cannot be ordered. */
            bool all_str = true, all_num = true;
            for (size_t i = 0; i < nk; i++) {
                all_str &= keys[3 * i + 2].t == TV_STR;
                all_num &= tv_is_num(keys[3 * i + 2]);
            }
            if (all_str) qsort(keys, nk, 3 * sizeof(tv), json_cmp_keys);
            else if (all_num) qsort(keys, nk, 3 * sizeof(tv), json_cmp_num);
            else rc = hr_err_set(err, HR_EINVAL, "'<' not supported between the key types of this dict");
        }
        if (rc == HR_OK) {
            tbuf_putc(b, '{');
            for (size_t i = 0; i < nk && rc == HR_OK; i++) {
                if (i) tbuf_puts(b, o->item_sep);
                if (o->indent) json_newline(o, level + 1, b);
                json_str(keys[3 * i].u.s->data, keys[3 * i].u.s->len, o->ascii, b);
                tbuf_puts(b, o->key_sep);
                rc = json_dump(keys[3 * i + 1], o, level + 1, b, err);
            }
            if (rc == HR_OK) {
                if (o->indent) json_newline(o, level, b);
                tbuf_putc(b, '}');
            }
        }
        for (size_t i = 0; i < nk; i++) tv_unref(keys[3 * i]);
        free(keys);
        return rc;
    }
    default: break;
    }
    return hr_err_set(err, HR_EINVAL, "Object of type %s is not JSON serializable", tv_type_name(v));
}

int tv_to_json(tv v, tbuf *b, bool ensure_ascii, const char *indent, const char *item_sep,
               const char *key_sep, bool sort_keys, hr_err *err) {
    jopts o = {ensure_ascii, sort_keys, indent, item_sep, key_sep};
    if (!o.item_sep) o.item_sep = indent ? "," : ", ";
    if (!o.key_sep) o.key_sep = ": ";
    return json_dump(v, &o, 0, b, err);
}

tv tv_from_json(json_t *j) {
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        tv d = tv_dict_new();
        const char *k;
        json_t *x;
        json_object_foreach(j, k, x) tv_dict_set(d, tv_str_cstr(k), tv_from_json(x));
        return d;
    }
    case JSON_ARRAY: {
        tv l = tv_list_new(TL_LIST, json_array_size(j));
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) tv_list_push(l, tv_from_json(x));
        return l;
    }
    case JSON_STRING: return tv_str_new(json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return tv_int((int64_t)json_integer_value(j));
    case JSON_REAL: return tv_float(json_real_value(j));
    case JSON_TRUE: return tv_bool(true);
    case JSON_FALSE: return tv_bool(false);
    default: return tv_none();
    }
}
