/* Tree-walking evaluator: expressions with Python semantics (truthiness,
 * numeric tower of bool/int/float, str/list operators, jinja2's Undefined),
 * and statements with jinja2's scoping (a for-loop iteration is a scope of
 * its own; if blocks are not; macros see the template's top level). */
#include <math.h>
#include <string.h>

#include "template/tpl_internal.h"

#define MAX_CALL_DEPTH 64
#define MAX_OUTPUT ((size_t)256 << 20)

int tpl_fail(tctx *c, const tnode *at, int code, const char *fmt, ...) {
    char msg[HR_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return hr_err_set(c->err, code, "line %d: %s", at ? at->line : 0, msg);
}

static int undefined_error(tctx *c, const tnode *at, tv v) {
    return tpl_fail(c, at, HR_EINVAL, "'%s' is undefined", v.u.name ? v.u.name : "value");
}

/* ------------------------------------------------------------ scopes */
static bool scope_lookup(tscope *s, const char *name, tv *out) {
    for (; s; s = s->parent)
        if (tv_dict_get_str(s->vars, name, out)) return true;
    return false;
}

static void scope_set(tscope *s, const char *name, tv v) { tv_dict_set(s->vars, tv_str_cstr(name), v); }

static void scope_init(tscope *s, tscope *parent) {
    s->parent = parent;
    s->vars = tv_dict_new();
}

/* ------------------------------------------------------------ attributes */
static int loop_attr(tctx *c, const tnode *at, tv loop, const char *name, tv *out) {
    tv_obj *o = loop.u.o;
    size_t i = o->index0, n = o->length;
    if (!strcmp(name, "index")) *out = tv_int((int64_t)i + 1);
    else if (!strcmp(name, "index0")) *out = tv_int((int64_t)i);
    else if (!strcmp(name, "revindex")) *out = tv_int((int64_t)(n - i));
    else if (!strcmp(name, "revindex0")) *out = tv_int((int64_t)(n - i - 1));
    else if (!strcmp(name, "first")) *out = tv_bool(i == 0);
    else if (!strcmp(name, "last")) *out = tv_bool(i + 1 == n);
    else if (!strcmp(name, "length")) *out = tv_int((int64_t)n);
    else if (!strcmp(name, "depth")) *out = tv_int(1);
    else if (!strcmp(name, "depth0")) *out = tv_int(0);
    else if (!strcmp(name, "previtem"))
        *out = i > 0 ? tv_ref(o->items.u.l->items[i - 1]) : tv_undef("there is no previous item");
    else if (!strcmp(name, "nextitem"))
        *out = i + 1 < n ? tv_ref(o->items.u.l->items[i + 1]) : tv_undef("there is no next item");
    else if (!strcmp(name, "cycle") || !strcmp(name, "changed")) {
        tv m = tv_obj_new(TV_METHOD);
        m.u.o->self = tv_ref(loop);
        m.u.o->method = name[1] == 'y' ? "cycle" : "changed";
        *out = m;
    } else {
        (void)c; (void)at;
        *out = tv_undef(NULL);
    }
    return HR_OK;
}

int tpl_getattr(tctx *c, const tnode *at, tv obj, const char *name, tv *out) {
    if (obj.t == TV_UNDEF) return undefined_error(c, at, obj);
    if (name[0] == '_') { *out = tv_undef(NULL); return HR_OK; } /* sandbox: unsafe */
    if (obj.t == TV_LOOP) return loop_attr(c, at, obj, name, out);
    const char *mname;
    if (tpl_method_exists(obj, name, &mname)) {
        tv m = tv_obj_new(TV_METHOD);
        m.u.o->self = tv_ref(obj);
        m.u.o->method = mname;
        *out = m;
        return HR_OK;
    }
    tv v;
    if ((obj.t == TV_DICT || obj.t == TV_NS) && tv_dict_get_str(obj, name, &v)) {
        *out = tv_ref(v);
        return HR_OK;
    }
    *out = tv_undef(NULL);
    return HR_OK;
}

/* Python's sequence index normalisation; false when out of range. */
static bool seq_index(tv key, size_t n, size_t *idx) {
    if (key.t != TV_INT && key.t != TV_BOOL) return false;
    int64_t i = key.t == TV_BOOL ? key.u.b : key.u.i;
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return false;
    *idx = (size_t)i;
    return true;
}

/* Byte offsets of each code point of s (n+1 entries). */
static size_t *utf8_offsets(const tv_str *s, size_t *count) {
    size_t n = tpl_utf8_len(s->data, s->len);
    size_t *o = hr_xmalloc((n + 1) * sizeof(size_t));
    size_t k = 0;
    for (size_t i = 0; i < s->len;) {
        uint32_t cp;
        o[k++] = i;
        i += tpl_utf8_decode(s->data + i, s->len - i, &cp);
    }
    o[k] = s->len;
    *count = n;
    return o;
}

int tpl_getitem(tctx *c, const tnode *at, tv obj, tv key, tv *out) {
    if (obj.t == TV_UNDEF) return undefined_error(c, at, obj);
    size_t idx;
    tv v;
    switch (obj.t) {
    case TV_DICT:
        if (tv_dict_get(obj, key, &v)) { *out = tv_ref(v); return HR_OK; }
        break;
    case TV_LIST:
        if ((obj.u.l->kind == TL_LIST || obj.u.l->kind == TL_TUPLE || obj.u.l->kind == TL_RANGE) && seq_index(key, obj.u.l->n, &idx)) {
            *out = tv_ref(obj.u.l->items[idx]);
            return HR_OK;
        }
        break;
    case TV_STR: {
        size_t n;
        size_t *o = utf8_offsets(obj.u.s, &n);
        if (seq_index(key, n, &idx)) {
            *out = tv_str_new(obj.u.s->data + o[idx], o[idx + 1] - o[idx]);
            free(o);
            return HR_OK;
        }
        free(o);
        break;
    }
    default: break;
    }
    /* jinja2 falls back to getattr for string keys (methods, namespace attributes). */
    if (key.t == TV_STR) return tpl_getattr(c, at, obj, key.u.s->data, out);
    *out = tv_undef(NULL);
    return HR_OK;
}

static int slice_arg(tv v, bool *present, int64_t *out) {
    if (v.t == TV_NONE) { *present = false; return HR_OK; }
    if (v.t == TV_INT || v.t == TV_BOOL) { *present = true; *out = v.t == TV_BOOL ? v.u.b : v.u.i; return HR_OK; }
    return HR_EINVAL;
}

/* Whether jinja2's optimizer folds the expression at compile time
 * (literals and operators over literals). */
static bool is_const(const tnode *n) {
    if (!n) return true;
    switch (n->kind) {
    case E_CONST: return true;
    case E_LIST: case E_TUPLE: case E_DICT: case E_CONCAT: case E_COMPARE:
        for (int i = 0; i < n->nkids; i++)
            if (!is_const(n->kids[i])) return false;
        return true;
    case E_NEG: case E_POS: case E_NOT: case E_BINOP: case E_AND: case E_OR: case E_COND: case E_SLICE:
    case E_GETITEM: case E_GETATTR:
        return is_const(n->a) && is_const(n->b) && is_const(n->c);
    case E_FILTER: case E_TEST: {
        /* filters taking the template context are never folded */
        static const char *const ctx_filters[] = {"map", "select", "reject", "selectattr", "rejectattr"};
        for (size_t i = 0; i < HR_ARRAY_LEN(ctx_filters); i++)
            if (n->kind == E_FILTER && !strcmp(n->name, ctx_filters[i])) return false;
        if (n->op & TN_UNKNOWN) return false;
        for (int i = 0; i < n->nkids; i++)
            if (!is_const(n->kids[i])) return false;
        return n->a && is_const(n->a);
    }
    default: return false;
    }
}

/* obj[start:stop:step] with Python's index adjustment. jinja2 compiles a
 * slice to a plain Python subscript, so a failure is an error; but a
 * constant {{ expression }} is evaluated when compiling, through getitem,
 * where a failure gives Undefined (`{{ none[1:] }}` prints nothing). */
static int do_slice(tctx *c, const tnode *at, tv obj, tv sv[3], tv *out) {
    bool folded = c->folding;
    if (obj.t == TV_UNDEF) return undefined_error(c, at, obj);
    bool has[3];
    int64_t a[3] = {0, 0, 1};
    bool is_str = obj.t == TV_STR;
    if (!is_str && !(obj.t == TV_LIST && (obj.u.l->kind == TL_LIST || obj.u.l->kind == TL_TUPLE || obj.u.l->kind == TL_RANGE))) {
        if (folded) { *out = tv_undef(NULL); return HR_OK; }
        return tpl_fail(c, at, HR_EINVAL, "'%s' object is not subscriptable with a slice", tv_type_name(obj));
    }
    for (int i = 0; i < 3; i++) {
        if (!slice_arg(sv[i], &has[i], &a[i])) continue;
        if (folded) { *out = tv_undef(NULL); return HR_OK; }
        return tpl_fail(c, at, HR_EINVAL, "slice indices must be integers or None or have an __index__ method");
    }

    if (!has[2]) a[2] = 1;
    if (a[2] == 0) return tpl_fail(c, at, HR_EINVAL, "slice step cannot be zero");
    size_t *offs = NULL;
    size_t n;
    if (is_str) offs = utf8_offsets(obj.u.s, &n);
    else n = obj.u.l->n;
    int64_t len = (int64_t)n, step = a[2], start, stop;
    if (step > 0) {
        start = has[0] ? a[0] : 0;
        stop = has[1] ? a[1] : len;
        if (start < 0) { start += len; if (start < 0) start = 0; } else if (start > len) start = len;
        if (stop < 0) { stop += len; if (stop < 0) stop = 0; } else if (stop > len) stop = len;
    } else {
        start = has[0] ? a[0] : len - 1;
        stop = has[1] ? a[1] : -1 - len;
        if (start < 0) { start += len; if (start < 0) start = -1; } else if (start >= len) start = len - 1;
        if (stop < 0) { stop += len; if (stop < 0) stop = -1; } else if (stop >= len) stop = len - 1;
    }
    tbuf b = {0};
    tv res = is_str ? tv_none() : tv_list_new(obj.u.l->kind, 0);
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (is_str) tbuf_put(&b, obj.u.s->data + offs[i], offs[i + 1] - offs[i]);
        else tv_list_push(res, tv_ref(obj.u.l->items[i]));
    }
    if (is_str) {
        tbuf_put(&b, "", 0);
        res = tbuf_to_str(&b);
        free(offs);
    }
    *out = res;
    return HR_OK;
}

/* ------------------------------------------------------------ iteration */
int tpl_iterate(tctx *c, const tnode *at, tv v, tv *list_out) {
    tv l;
    switch (v.t) {
    case TV_UNDEF: *list_out = tv_list_new(TL_LIST, 0); return HR_OK;
    case TV_LIST: {
        tv_list *s = v.u.l;
        size_t from = s->kind == TL_GEN ? s->pos : 0;
        l = tv_list_new(TL_LIST, s->n - from);
        for (size_t i = from; i < s->n; i++) tv_list_push(l, tv_ref(s->items[i]));
        if (s->kind == TL_GEN) s->pos = s->n; /* a generator is consumed */
        break;
    }
    case TV_DICT:
        l = tv_list_new(TL_LIST, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) tv_list_push(l, tv_ref(v.u.d->keys[i]));
        break;
    case TV_STR: {
        l = tv_list_new(TL_LIST, v.u.s->len);
        for (size_t i = 0; i < v.u.s->len;) {
            uint32_t cp;
            size_t k = tpl_utf8_decode(v.u.s->data + i, v.u.s->len - i, &cp);
            tv_list_push(l, tv_str_new(v.u.s->data + i, k));
            i += k;
        }
        break;
    }
    default:
        return tpl_fail(c, at, HR_EINVAL, "'%s' object is not iterable", tv_type_name(v));
    }
    *list_out = l;
    return HR_OK;
}

/* ------------------------------------------------------------ operators */
static int type_error(tctx *c, const tnode *at, const char *op, tv a, tv b) {
    if (a.t == TV_UNDEF) return undefined_error(c, at, a);
    if (b.t == TV_UNDEF) return undefined_error(c, at, b);
    return tpl_fail(c, at, HR_EINVAL, "unsupported operand type(s) for %s: '%s' and '%s'", op, tv_type_name(a),
                    tv_type_name(b));
}

static int64_t ival(tv v) { return v.t == TV_BOOL ? v.u.b : v.u.i; }

static int str_cmp(tv a, tv b) {
    size_t n = HR_MIN(a.u.s->len, b.u.s->len);
    int r = memcmp(a.u.s->data, b.u.s->data, n);
    if (r) return r < 0 ? -1 : 1;
    return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
}

/* Three-way ordering for <, <=, >, >= and sorting; HR_EINVAL when the
 * types cannot be ordered in Python. */
static int order(tctx *c, const tnode *at, tv a, tv b, int *res) {
    if (tv_is_num(a) && tv_is_num(b)) {
        if (a.t != TV_FLOAT && b.t != TV_FLOAT) *res = ival(a) < ival(b) ? -1 : ival(a) > ival(b);
        else {
            double x = tv_num(a), y = tv_num(b);
            *res = x < y ? -1 : x > y ? 1 : 0;
        }
        return HR_OK;
    }
    if (a.t == TV_STR && b.t == TV_STR) { *res = str_cmp(a, b); return HR_OK; }
    if (a.t == TV_LIST && b.t == TV_LIST && a.u.l->kind == b.u.l->kind &&
        (a.u.l->kind == TL_LIST || a.u.l->kind == TL_TUPLE)) {
        for (size_t i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
            if (tv_equal(a.u.l->items[i], b.u.l->items[i])) continue;
            return order(c, at, a.u.l->items[i], b.u.l->items[i], res);
        }
        *res = a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
        return HR_OK;
    }
    if (a.t == TV_UNDEF) return undefined_error(c, at, a);
    if (b.t == TV_UNDEF) return undefined_error(c, at, b);
    return tpl_fail(c, at, HR_EINVAL, "'<' not supported between instances of '%s' and '%s'", tv_type_name(a),
                    tv_type_name(b));
}

int tpl_order(tctx *c, const tnode *at, tv a, tv b, int *res) { return order(c, at, a, b, res); }

static bool str_contains(tv hay, tv needle) {
    if (needle.u.s->len == 0) return true;
    return memmem(hay.u.s->data, hay.u.s->len, needle.u.s->data, needle.u.s->len) != NULL;
}

int tpl_compare(tctx *c, const tnode *at, int op, tv a, tv b, bool *res) {
    int o;
    switch (op) {
    case OP_EQ: *res = tv_equal(a, b); return HR_OK;
    case OP_NE: *res = !tv_equal(a, b); return HR_OK;
    case OP_LT: case OP_LE: case OP_GT: case OP_GE: {
        int rc = order(c, at, a, b, &o);
        if (rc) return rc;
        *res = op == OP_LT ? o < 0 : op == OP_LE ? o <= 0 : op == OP_GT ? o > 0 : o >= 0;
        return HR_OK;
    }
    case OP_IN: case OP_NOTIN: {
        bool found = false;
        if (b.t == TV_STR) {
            if (a.t != TV_STR)
                return tpl_fail(c, at, HR_EINVAL, "'in <string>' requires string as left operand, not %s", tv_type_name(a));
            found = str_contains(b, a);
        } else if (b.t == TV_LIST) {
            tv_list *l = b.u.l;
            for (size_t i = l->kind == TL_GEN ? l->pos : 0; i < l->n && !found; i++) found = tv_equal(l->items[i], a);
        } else if (b.t == TV_DICT) {
            tv tmp;
            found = tv_dict_get(b, a, &tmp);
        } else if (b.t != TV_UNDEF) {
            return tpl_fail(c, at, HR_EINVAL, "argument of type '%s' is not iterable", tv_type_name(b));
        }
        *res = op == OP_IN ? found : !found;
        return HR_OK;
    }
    }
    return tpl_fail(c, at, HR_EINVAL, "bad comparison");
}

static int ovf(tctx *c, const tnode *at) {
    return tpl_fail(c, at, HR_EUNSUP, "unsupported: integer result beyond 64 bits");
}

static void escape_into(tv s, tbuf *b) {
    for (size_t i = 0; i < s.u.s->len; i++) {
        char ch = s.u.s->data[i];
        switch (ch) {
        case '&': tbuf_puts(b, "&amp;"); break;
        case '<': tbuf_puts(b, "&lt;"); break;
        case '>': tbuf_puts(b, "&gt;"); break;
        case '"': tbuf_puts(b, "&#34;"); break;
        case '\'': tbuf_puts(b, "&#39;"); break;
        default: tbuf_putc(b, ch);
        }
    }
}

static tv str_concat(tv a, tv b) {
    /* Markup + str escapes the plain side (markupsafe). */
    bool safe = a.u.s->safe || b.u.s->safe;
    tbuf o = {0};
    tbuf_put(&o, "", 0);
    if (safe && !a.u.s->safe) escape_into(a, &o);
    else tbuf_put(&o, a.u.s->data, a.u.s->len);
    if (safe && !b.u.s->safe) escape_into(b, &o);
    else tbuf_put(&o, b.u.s->data, b.u.s->len);
    tv r = tbuf_to_str(&o);
    r.u.s->safe = safe;
    return r;
}

static int repeat(tctx *c, const tnode *at, tv seq, int64_t k, tv *out) {
    if (k < 0) k = 0;
    if (seq.t == TV_STR) {
        if (seq.u.s->len && (uint64_t)k > MAX_OUTPUT / seq.u.s->len) return tpl_fail(c, at, HR_EUNSUP, "unsupported: string too large");
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        for (int64_t i = 0; i < k; i++) tbuf_put(&b, seq.u.s->data, seq.u.s->len);
        *out = tbuf_to_str(&b);
        return HR_OK;
    }
    if (seq.u.l->n && (uint64_t)k > (MAX_OUTPUT / 16) / seq.u.l->n) return tpl_fail(c, at, HR_EUNSUP, "unsupported: list too large");
    tv l = tv_list_new(seq.u.l->kind, 0);
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq.u.l->n; j++) tv_list_push(l, tv_ref(seq.u.l->items[j]));
    *out = l;
    return HR_OK;
}

static bool is_seq(tv v) { return v.t == TV_LIST && (v.u.l->kind == TL_LIST || v.u.l->kind == TL_TUPLE); }

/* Python's float floor division and modulo (float_divmod). */
static void float_divmod(double x, double y, double *div, double *mod) {
    double m = fmod(x, y);
    double d = (x - m) / y;
    if (m != 0.0) {
        if ((y < 0) != (m < 0)) { m += y; d -= 1.0; }
    } else {
        m = copysign(0.0, y);
    }
    double fd;
    if (d != 0.0) {
        fd = floor(d);
        if (d - fd > 0.5) fd += 1.0;
    } else {
        fd = copysign(0.0, x / y);
    }
    *div = fd;
    *mod = m;
}

int tpl_binop(tctx *c, const tnode *at, int op, tv a, tv b, tv *out) {
    static const char *const names[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    const char *on = names[op];
    bool num = tv_is_num(a) && tv_is_num(b);
    bool ints = num && a.t != TV_FLOAT && b.t != TV_FLOAT;
    int64_t x = ints ? ival(a) : 0, y = ints ? ival(b) : 0, r;
    switch (op) {
    case OP_ADD:
        if (ints) { if (__builtin_add_overflow(x, y, &r)) return ovf(c, at); *out = tv_int(r); return HR_OK; }
        if (num) { *out = tv_float(tv_num(a) + tv_num(b)); return HR_OK; }
        if (a.t == TV_STR && b.t == TV_STR) { *out = str_concat(a, b); return HR_OK; }
        if (is_seq(a) && is_seq(b) && a.u.l->kind == b.u.l->kind) {
            tv l = tv_list_new(a.u.l->kind, a.u.l->n + b.u.l->n);
            for (size_t i = 0; i < a.u.l->n; i++) tv_list_push(l, tv_ref(a.u.l->items[i]));
            for (size_t i = 0; i < b.u.l->n; i++) tv_list_push(l, tv_ref(b.u.l->items[i]));
            *out = l;
            return HR_OK;
        }
        break;
    case OP_SUB:
        if (ints) { if (__builtin_sub_overflow(x, y, &r)) return ovf(c, at); *out = tv_int(r); return HR_OK; }
        if (num) { *out = tv_float(tv_num(a) - tv_num(b)); return HR_OK; }
        break;
    case OP_MUL:
        if (ints) { if (__builtin_mul_overflow(x, y, &r)) return ovf(c, at); *out = tv_int(r); return HR_OK; }
        if (num) { *out = tv_float(tv_num(a) * tv_num(b)); return HR_OK; }
        if ((a.t == TV_STR || is_seq(a)) && (b.t == TV_INT || b.t == TV_BOOL)) return repeat(c, at, a, ival(b), out);
        if ((b.t == TV_STR || is_seq(b)) && (a.t == TV_INT || a.t == TV_BOOL)) return repeat(c, at, b, ival(a), out);
        break;
    case OP_DIV:
        if (num) {
            if (tv_num(b) == 0.0) return tpl_fail(c, at, HR_EINVAL, "division by zero");
            *out = tv_float(ints ? (double)x / (double)y : tv_num(a) / tv_num(b));
            return HR_OK;
        }
        break;
    case OP_FLOORDIV: case OP_MOD:
        if (num) {
            if (tv_num(b) == 0.0) return tpl_fail(c, at, HR_EINVAL, "integer division or modulo by zero");
            if (ints) {
                if (x == INT64_MIN && y == -1) return ovf(c, at);
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) { q -= 1; m += y; }
                *out = tv_int(op == OP_FLOORDIV ? q : m);
            } else {
                double d, m;
                float_divmod(tv_num(a), tv_num(b), &d, &m);
                *out = tv_float(op == OP_FLOORDIV ? d : m);
            }
            return HR_OK;
        }
        if (op == OP_MOD && a.t == TV_STR) return tpl_fail(c, at, HR_EUNSUP, "unsupported: '%%' string formatting");
        break;
    case OP_POW:
        if (ints && y >= 0) {
            int64_t acc = 1, base = x, e = y;
            while (e) {
                if (e & 1) { if (__builtin_mul_overflow(acc, base, &acc)) return ovf(c, at); }
                e >>= 1;
                if (e && __builtin_mul_overflow(base, base, &base)) return ovf(c, at);
            }
            *out = tv_int(acc);
            return HR_OK;
        }
        if (num) {
            double p = pow(tv_num(a), tv_num(b));
            if (tv_num(a) == 0.0 && tv_num(b) < 0) return tpl_fail(c, at, HR_EINVAL, "0.0 cannot be raised to a negative power");
            if (isnan(p) && !isnan(tv_num(a)) && !isnan(tv_num(b))) return tpl_fail(c, at, HR_EUNSUP, "unsupported: complex result");
            if (isinf(p) && isfinite(tv_num(a)) && isfinite(tv_num(b)))
                return tpl_fail(c, at, HR_EINVAL, "OverflowError: numerical result out of range");
            *out = tv_float(p);
            return HR_OK;
        }
        break;
    }
    return type_error(c, at, on, a, b);
}

/* ------------------------------------------------------------ evaluation */
static int eval_args(tctx *c, const tnode *n, targs *a) {
    int np = n->nkids - n->nkw;
    memset(a, 0, sizeof(*a));
    a->pos = hr_xcalloc((size_t)n->nkids + 1, sizeof(tv));
    a->kw = a->pos + np;
    a->kwn = (const char **)n->kwnames;
    for (int i = 0; i < n->nkids; i++) {
        int rc = tpl_eval(c, n->kids[i], &a->pos[i]);
        if (rc) {
            for (int j = 0; j < i; j++) tv_unref(a->pos[j]);
            free(a->pos);
            a->pos = NULL;
            return rc;
        }
    }
    a->npos = np;
    a->nkw = n->nkw;
    return HR_OK;
}

static void free_args(targs *a) {
    if (!a->pos) return;
    for (int i = 0; i < a->npos + a->nkw; i++) tv_unref(a->pos[i]);
    free(a->pos);
}

static int render_body(tctx *c, const tnode *body, tscope *s);

static int call_macro(tctx *c, const tnode *at, tv m, targs *a, tv caller, tv *out) {
    const tnode *def = m.u.o->macro;
    const tnode *params = def;
    tscope *parent = c->root;
    const tnode *body = def ? def->a : NULL;
    if (!def) { /* caller() of a call block */
        params = m.u.o->caller_body;
        parent = m.u.o->caller_scope;
        body = params->b;
        if (!parent) return tpl_fail(c, at, HR_EUNSUP, "unsupported: caller() used after its call block ended");
    }
    if (c->depth >= MAX_CALL_DEPTH) return tpl_fail(c, at, HR_EUNSUP, "unsupported: macro recursion deeper than %d", MAX_CALL_DEPTH);
    if (a->npos > params->nkw)
        return tpl_fail(c, at, HR_EUNSUP, "unsupported: macro '%s' takes not more than %d argument(s)",
                        def ? def->name : "caller", params->nkw);
    tscope s;
    scope_init(&s, parent);
    int rc = HR_OK;
    for (int k = 0; k < a->nkw; k++) {
        bool ok = false;
        for (int p = 0; p < params->nkw; p++) ok |= !strcmp(params->kwnames[p], a->kwn[k]);
        if (!ok) {
            rc = tpl_fail(c, at, HR_EUNSUP, "unsupported: macro '%s' has no argument '%s'", def ? def->name : "caller", a->kwn[k]);
            goto done;
        }
    }
    for (int p = 0; p < params->nkw; p++) {
        tv v = tv_undef(params->kwnames[p]);
        bool set = false;
        if (p < a->npos) { v = tv_ref(a->pos[p]); set = true; }
        for (int k = 0; k < a->nkw && !set; k++)
            if (!strcmp(params->kwnames[p], a->kwn[k])) { v = tv_ref(a->kw[k]); set = true; }
        if (!set && params->kids[p]) {
            /* Defaults are evaluated at call time in the macro's own scope. */
            tscope *saved = c->scope;
            c->scope = &s;
            c->depth++;
            rc = tpl_eval(c, params->kids[p], &v);
            c->depth--;
            c->scope = saved;
            if (rc) goto done;
        }
        scope_set(&s, params->kwnames[p], v);
    }
    if (caller.t != TV_NONE) scope_set(&s, "caller", tv_ref(caller));
    tbuf buf = {0};
    tbuf_put(&buf, "", 0);
    tbuf *saved_out = c->out;
    c->out = &buf;
    c->depth++;
    rc = render_body(c, body, &s);
    c->depth--;
    c->out = saved_out;
    if (rc) { free(buf.p); goto done; }
    *out = tbuf_to_str(&buf);
done:
    tv_unref(s.vars);
    return rc;
}

int tpl_call_value(tctx *c, const tnode *at, tv callee, targs *a, tv *out) {
    switch (callee.t) {
    case TV_MACRO: return call_macro(c, at, callee, a, tv_none(), out);
    case TV_METHOD: return tpl_method(c, at, callee.u.o->self, callee.u.o->method, a, out);
    case TV_FUNC: return tpl_call_global(c, at, callee.u.name, a, out);
    case TV_UNDEF: return undefined_error(c, at, callee);
    default: return tpl_fail(c, at, HR_EINVAL, "'%s' object is not callable", tv_type_name(callee));
    }
}

static int eval_call(tctx *c, const tnode *n, tv caller, tv *out) {
    tv callee;
    int rc = tpl_eval(c, n->a, &callee);
    if (rc) return rc;
    targs a;
    rc = eval_args(c, n, &a);
    if (rc) { tv_unref(callee); return rc; }
    if (caller.t != TV_NONE) {
        if (callee.t != TV_MACRO) rc = tpl_fail(c, n, HR_EUNSUP, "unsupported: call block on a %s", tv_type_name(callee));
        else if (!callee.u.o->macro || !callee.u.o->macro->op)
            rc = tpl_fail(c, n, HR_EINVAL, "macro was invoked with two values for the special caller argument");
        else rc = call_macro(c, n, callee, &a, caller, out);
    } else {
        rc = tpl_call_value(c, n, callee, &a, out);
    }
    free_args(&a);
    tv_unref(callee);
    return rc;
}

static int eval_name(tctx *c, const tnode *n, tscope *s, tv *out) {
    tv v;
    if (scope_lookup(s, n->name, &v)) { *out = tv_ref(v); return HR_OK; }
    const char *gname;
    if (tpl_global_known(n->name, &gname)) {
        out->t = TV_FUNC;
        out->u.name = gname;
        return HR_OK;
    }
    (void)c;
    *out = tv_undef(n->name);
    return HR_OK;
}

/* has_safe_repr() of jinja2's optimizer: what a folded constant may hold. */
static bool safe_repr(tv v) {
    switch (v.t) {
    case TV_NONE: case TV_BOOL: case TV_INT: case TV_FLOAT: case TV_STR: return true;
    case TV_LIST:
        if (v.u.l->kind == TL_GEN || v.u.l->kind == TL_VIEW) return false;
        for (size_t i = 0; i < v.u.l->n; i++)
            if (!safe_repr(v.u.l->items[i])) return false;
        return true;
    case TV_DICT:
        for (size_t i = 0; i < v.u.d->n; i++)
            if (!safe_repr(v.u.d->keys[i]) || !safe_repr(v.u.d->vals[i])) return false;
        return true;
    default: return false;
    }
}

static int eval_node(tctx *c, const tnode *n, tv *out);

/* jinja2's optimizer folds a constant subexpression when compiling if that
 * succeeds and gives a plain value; otherwise it runs as ordinary code. The
 * two differ only for slices (folding goes through getitem), so constant
 * subtrees are tried in folding mode first. */
int tpl_eval(tctx *c, const tnode *n, tv *out) {
    if (n->kind != E_CONST && !c->folding && is_const(n)) {
        c->folding = true;
        int rc = eval_node(c, n, out);
        c->folding = false;
        if (rc == HR_OK) {
            if (safe_repr(*out)) return HR_OK;
            tv_unref(*out);
        }
    }
    return eval_node(c, n, out);
}

/* A whole constant {{ expression }} is rendered when compiling, whatever
 * its value (an Undefined prints nothing); on failure it runs normally. */
static int eval_output(tctx *c, const tnode *n, tv *out) {
    if (is_const(n)) {
        c->folding = true;
        int rc = eval_node(c, n, out);
        c->folding = false;
        if (rc == HR_OK) return HR_OK;
    }
    return tpl_eval(c, n, out);
}

static int eval_node(tctx *c, const tnode *n, tv *out) {
    tv a = tv_none(), b = tv_none();
    int rc = HR_OK;
    switch (n->kind) {
    case E_CONST:
        /* Copy heap constants instead of counting references on the shared
         * AST, so one parsed template can render on several threads. */
        *out = n->cval.t == TV_STR ? tv_str_new(n->cval.u.s->data, n->cval.u.s->len) : n->cval;
        return HR_OK;
    case E_NAME: return eval_name(c, n, c->scope, out);
    case E_GETATTR:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        rc = tpl_getattr(c, n, a, n->name, out);
        break;
    case E_GETITEM:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        if (n->b->kind == E_SLICE) {
            tv sv[3] = {tv_none(), tv_none(), tv_none()};
            const tnode *parts[3] = {n->b->a, n->b->b, n->b->c};
            for (int i = 0; i < 3 && !rc; i++)
                if (parts[i]) rc = tpl_eval(c, parts[i], &sv[i]);
            if (!rc) rc = do_slice(c, n, a, sv, out);
            for (int i = 0; i < 3; i++) tv_unref(sv[i]);
            break;
        }
        if ((rc = tpl_eval(c, n->b, &b))) break;
        rc = tpl_getitem(c, n, a, b, out);
        break;
    case E_SLICE: return tpl_fail(c, n, HR_EINVAL, "slice outside of a subscript");
    case E_CALL: return eval_call(c, n, tv_none(), out);
    case E_FILTER: {
        if (n->op & TN_UNKNOWN) return tpl_fail(c, n, HR_EUNSUP, "unsupported filter '%s'", n->name);
        if (!n->a) return tpl_fail(c, n, HR_EINVAL, "filter without operand");
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        targs args;
        if ((rc = eval_args(c, n, &args))) break;
        rc = tpl_filter(c, n, n->name, a, &args, out);
        free_args(&args);
        break;
    }
    case E_TEST: {
        if (n->op & TN_UNKNOWN) return tpl_fail(c, n, HR_EUNSUP, "unsupported test '%s'", n->name);
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        targs args;
        if ((rc = eval_args(c, n, &args))) break;
        bool r = false;
        rc = tpl_test(c, n, n->name, a, &args, &r);
        free_args(&args);
        if (!rc) *out = tv_bool((n->op & TN_NEGATED) ? !r : r);
        break;
    }
    case E_NEG: case E_POS:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        if (a.t == TV_INT || a.t == TV_BOOL) {
            int64_t x = ival(a);
            if (n->kind == E_NEG && x == INT64_MIN) rc = ovf(c, n);
            else *out = tv_int(n->kind == E_NEG ? -x : x);
        } else if (a.t == TV_FLOAT) {
            *out = tv_float(n->kind == E_NEG ? -a.u.f : a.u.f);
        } else if (a.t == TV_UNDEF) {
            rc = undefined_error(c, n, a);
        } else {
            rc = tpl_fail(c, n, HR_EINVAL, "bad operand type for unary %c: '%s'", n->kind == E_NEG ? '-' : '+', tv_type_name(a));
        }
        break;
    case E_NOT:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        *out = tv_bool(!tv_truthy(a));
        break;
    case E_BINOP:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        if ((rc = tpl_eval(c, n->b, &b))) break;
        rc = tpl_binop(c, n, n->op, a, b, out);
        break;
    case E_CONCAT: {
        tbuf buf = {0};
        tbuf_put(&buf, "", 0);
        for (int i = 0; i < n->nkids && !rc; i++) {
            tv v;
            if ((rc = tpl_eval(c, n->kids[i], &v))) break;
            rc = tv_to_str(v, &buf, c->err);
            if (rc) tpl_fail(c, n, rc, "%s", c->err->msg);
            tv_unref(v);
        }
        if (rc) { free(buf.p); return rc; }
        *out = tbuf_to_str(&buf);
        return HR_OK;
    }
    case E_COMPARE: {
        if ((rc = tpl_eval(c, n->kids[0], &a))) return rc;
        bool res = true;
        for (int i = 1; i < n->nkids && res; i++) {
            if ((rc = tpl_eval(c, n->kids[i], &b))) break;
            rc = tpl_compare(c, n, n->ops[i - 1], a, b, &res);
            tv_unref(a);
            a = b;
            b = tv_none();
            if (rc) break;
        }
        if (!rc) *out = tv_bool(res);
        break;
    }
    case E_AND: case E_OR:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        if (tv_truthy(a) == (n->kind == E_OR)) { *out = a; return HR_OK; }
        tv_unref(a);
        return tpl_eval(c, n->b, out);
    case E_COND:
        if ((rc = tpl_eval(c, n->a, &a))) return rc;
        if (tv_truthy(a)) rc = tpl_eval(c, n->b, out);
        else if (n->c) rc = tpl_eval(c, n->c, out);
        else *out = tv_undef("the inline if-expression evaluated to false and no else section was defined");
        break;
    case E_LIST: case E_TUPLE: {
        tv l = tv_list_new(n->kind == E_LIST ? TL_LIST : TL_TUPLE, (size_t)n->nkids);
        for (int i = 0; i < n->nkids; i++) {
            tv v;
            if ((rc = tpl_eval(c, n->kids[i], &v))) { tv_unref(l); return rc; }
            tv_list_push(l, v);
        }
        *out = l;
        return HR_OK;
    }
    case E_DICT: {
        tv d = tv_dict_new();
        for (int i = 0; i + 1 < n->nkids; i += 2) {
            tv k, v;
            if ((rc = tpl_eval(c, n->kids[i], &k))) { tv_unref(d); return rc; }
            if (k.t == TV_LIST && k.u.l->kind != TL_TUPLE) rc = tpl_fail(c, n, HR_EINVAL, "unhashable type: 'list'");
            else if (k.t == TV_DICT) rc = tpl_fail(c, n, HR_EINVAL, "unhashable type: 'dict'");
            if (rc || (rc = tpl_eval(c, n->kids[i + 1], &v))) { tv_unref(k); tv_unref(d); return rc; }
            tv_dict_set(d, k, v);
        }
        *out = d;
        return HR_OK;
    }
    default:
        return tpl_fail(c, n, HR_EINVAL, "not an expression");
    }
    tv_unref(a);
    tv_unref(b);
    return rc;
}

/* ------------------------------------------------------------ statements */
static int emit(tctx *c, const tnode *at, const char *s, size_t n) {
    if (c->out->n + n > MAX_OUTPUT) return tpl_fail(c, at, HR_EUNSUP, "unsupported: output larger than %zu bytes", MAX_OUTPUT);
    tbuf_put(c->out, s, n);
    return HR_OK;
}

static int assign(tctx *c, const tnode *target, tscope *s, tv v) {
    if (target->kind == E_NAME) {
        scope_set(s, target->name, v);
        return HR_OK;
    }
    if (target->kind == E_GETATTR) {
        tv ns;
        if (!scope_lookup(s, target->a->name, &ns) || ns.t != TV_NS) {
            tv_unref(v);
            return tpl_fail(c, target, HR_EINVAL, "cannot assign attribute on non-namespace object");
        }
        if (target->name[0] == '_') {
            tv_unref(v);
            return tpl_fail(c, target, HR_EINVAL, "Chat templates cannot store underscore-prefixed attributes on a namespace");
        }
        tv_dict_set(ns, tv_str_cstr(target->name), v);
        return HR_OK;
    }
    /* tuple unpacking */
    tv l;
    int rc = tpl_iterate(c, target, v, &l);
    tv_unref(v);
    if (rc) return rc;
    if ((int)l.u.l->n != target->nkids) {
        rc = tpl_fail(c, target, HR_EINVAL, "%s values to unpack (expected %d, got %zu)",
                      (int)l.u.l->n > target->nkids ? "too many" : "not enough", target->nkids, l.u.l->n);
    } else {
        for (int i = 0; i < target->nkids && !rc; i++) rc = assign(c, target->kids[i], s, tv_ref(l.u.l->items[i]));
    }
    tv_unref(l);
    return rc;
}

/* Applies a filter chain whose innermost operand is the placeholder (NULL).
 * Takes ownership of `in`. */
static int apply_chain(tctx *c, const tnode *f, tv in, tv *out) {
    if (!f) { *out = in; return HR_OK; }
    tv v;
    int rc = apply_chain(c, f->a, in, &v);
    if (rc) return rc;
    targs args;
    rc = eval_args(c, f, &args);
    if (!rc) {
        rc = tpl_filter(c, f, f->name, v, &args, out);
        free_args(&args);
    }
    tv_unref(v);
    return rc;
}

static int render_to_str(tctx *c, const tnode *body, tscope *s, tv *out) {
    tbuf buf = {0};
    tbuf_put(&buf, "", 0);
    tbuf *saved = c->out;
    c->out = &buf;
    int rc = render_body(c, body, s);
    c->out = saved;
    if (rc) { free(buf.p); return rc; }
    *out = tbuf_to_str(&buf);
    return HR_OK;
}

static int render_for(tctx *c, const tnode *n, tscope *s) {
    const tnode *target = n->kids[0], *filt = n->kids[2];
    tv it, items;
    int rc = tpl_eval(c, n->kids[1], &it);
    if (rc) return rc;
    rc = tpl_iterate(c, n, it, &items);
    tv_unref(it);
    if (rc) return rc;
    if (filt) { /* {% for x in xs if cond %}: loop.* counts the kept items */
        tv kept = tv_list_new(TL_LIST, items.u.l->n);
        for (size_t i = 0; i < items.u.l->n && !rc; i++) {
            tscope fs;
            scope_init(&fs, s);
            rc = assign(c, target, &fs, tv_ref(items.u.l->items[i]));
            tv r = tv_none();
            tscope *saved = c->scope;
            c->scope = &fs;
            if (!rc) rc = tpl_eval(c, filt, &r);
            c->scope = saved;
            if (!rc && tv_truthy(r)) tv_list_push(kept, tv_ref(items.u.l->items[i]));
            tv_unref(r);
            tv_unref(fs.vars);
        }
        tv_unref(items);
        items = kept;
        if (rc) { tv_unref(items); return rc; }
    }
    size_t len = items.u.l->n;
    tv loop = tv_obj_new(TV_LOOP);
    loop.u.o->items = items;
    loop.u.o->length = len;
    for (size_t i = 0; i < len; i++) {
        if (c->budget == 0) { rc = tpl_fail(c, n, HR_EUNSUP, "unsupported: render exceeded its iteration budget"); break; }
        c->budget--;
        loop.u.o->index0 = i;
        tscope is;
        scope_init(&is, s);
        rc = assign(c, target, &is, tv_ref(items.u.l->items[i]));
        if (!rc) {
            scope_set(&is, "loop", tv_ref(loop));
            rc = render_body(c, n->a, &is);
        }
        tv_unref(is.vars);
        if (rc) break;
        if (c->brk == 1) { c->brk = 0; break; }
        c->brk = 0;
    }
    tv_unref(loop);
    if (!rc && len == 0 && n->b) {
        tscope es;
        scope_init(&es, s);
        rc = render_body(c, n->b, &es);
        tv_unref(es.vars);
    }
    return rc;
}

static int render_node(tctx *c, const tnode *n, tscope *s) {
    tv v = tv_none();
    int rc = HR_OK;
    tscope *saved = c->scope;
    c->scope = s;
    switch (n->kind) {
    case S_BODY: rc = render_body(c, n, s); break;
    case S_TEXT: rc = emit(c, n, n->name, n->name_len); break;
    case S_OUT: {
        if ((rc = eval_output(c, n->a, &v))) break;
        tbuf b = {0};
        rc = tv_to_str(v, &b, c->err);
        if (rc) tpl_fail(c, n, rc, "%s", c->err->msg);
        else rc = emit(c, n, b.p ? b.p : "", b.n);
        free(b.p);
        break;
    }
    case S_IF:
        if ((rc = tpl_eval(c, n->a, &v))) break;
        if (tv_truthy(v)) rc = render_body(c, n->b, s);
        else if (n->c) rc = n->c->kind == S_IF ? render_node(c, n->c, s) : render_body(c, n->c, s);
        break;
    case S_FOR: rc = render_for(c, n, s); break;
    case S_SET:
        if ((rc = tpl_eval(c, n->b, &v))) break;
        rc = assign(c, n->a, s, v);
        v = tv_none();
        break;
    case S_SETBLOCK: {
        /* the block body renders in the current scope */
        if ((rc = render_to_str(c, n->b, s, &v))) break;
        tv r;
        rc = apply_chain(c, n->c, v, &r); /* consumes v */
        v = tv_none();
        if (rc) break;
        rc = assign(c, n->a, s, r);
        break;
    }
    case S_MACRO: {
        tv m = tv_obj_new(TV_MACRO);
        m.u.o->macro = n;
        scope_set(s, n->name, m);
        break;
    }
    case S_CALLBLOCK: {
        tv caller = tv_obj_new(TV_MACRO);
        caller.u.o->caller_body = n;
        caller.u.o->caller_scope = s;
        rc = eval_call(c, n->a, caller, &v);
        /* The caller may have been stored somewhere (a namespace); its scope
         * ends here, so later calls must fail instead of reading it. */
        caller.u.o->caller_scope = NULL;
        tv_unref(caller);
        if (!rc) {
            tbuf b = {0};
            rc = tv_to_str(v, &b, c->err);
            if (!rc) rc = emit(c, n, b.p ? b.p : "", b.n);
            free(b.p);
        }
        break;
    }
    case S_FILTERBLOCK: {
        if ((rc = render_to_str(c, n->b, s, &v))) break;
        tv r;
        rc = apply_chain(c, n->a, v, &r); /* consumes v */
        v = tv_none();
        if (rc) break;
        v = r;
        tbuf b = {0};
        rc = tv_to_str(r, &b, c->err);
        if (!rc) rc = emit(c, n, b.p ? b.p : "", b.n);
        free(b.p);
        break;
    }
    case S_BREAK: c->brk = 1; break;
    case S_CONTINUE: c->brk = 2; break;
    default: rc = tpl_fail(c, n, HR_EINVAL, "not a statement"); break;
    }
    tv_unref(v);
    c->scope = saved;
    return rc;
}

static int render_body(tctx *c, const tnode *body, tscope *s) {
    if (!body) return HR_OK;
    for (int i = 0; i < body->nkids; i++) {
        int rc = render_node(c, body->kids[i], s);
        if (rc) return rc;
        if (c->brk) break;
    }
    return HR_OK;
}

tpl_template *tpl_parse(const char *source, hr_err *err) {
    ttoken *toks = NULL;
    size_t nt = 0;
    if (tpl_lex(source, &toks, &nt, err)) return NULL;
    tnode *root = NULL;
    int rc = tpl_parse_tokens(toks, nt, &root, err);
    tpl_tokens_free(toks, nt);
    if (rc) return NULL;
    tpl_template *t = hr_xcalloc(1, sizeof(*t));
    t->root = root;
    return t;
}

void tpl_free(tpl_template *t) {
    if (!t) return;
    tpl_node_free(t->root);
    free(t);
}

int tpl_render(const tpl_template *t, json_t *context, char **out, hr_err *err) {
    *out = NULL;
    if (context && !json_is_object(context)) return hr_err_set(err, HR_EINVAL, "template context must be an object");
    tbuf buf = {0};
    tbuf_put(&buf, "", 0);
    tscope root;
    root.parent = NULL;
    root.vars = context ? tv_from_json(context) : tv_dict_new();
    hr_err local;
    tctx c = {.err = err ? err : &local, .root = &root, .out = &buf, .budget = 10000000};
    c.scope = &root;
    int rc = render_body(&c, t->root, &root);
    tv_unref(root.vars);
    if (rc) { free(buf.p); return rc; }
    if (memchr(buf.p, 0, buf.n)) {
        free(buf.p);
        return hr_err_set(err, HR_EUNSUP, "unsupported: output contains a NUL character");
    }
    *out = buf.p;
    return HR_OK;
}
