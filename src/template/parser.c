/* Template parser: tokens -> AST, following jinja2's Parser grammar and
 * precedence (condexpr < or < and < not < compare < +,- < ~ < *,/,//,% <
 * ** < unary < postfix/filters). Statements: if/elif/else, for (with else
 * and an if filter), set (plain, tuple, namespace attribute, block),
 * macro, call, filter, generation, break, continue. Anything else fails
 * with "line N: unsupported ..." so a template never renders wrongly. */
#include <string.h>

#include "template/tpl_internal.h"

#define MAX_DEPTH 200

typedef struct parser {
    ttoken *t;
    size_t n, i;
    int depth;
    int loops;              /* enclosing for loops (break/continue allowed) */
    int masked_loops;       /* loops hidden by an enclosing filter/set block */
    hr_err *err;
} parser;

static ttoken *cur(parser *P) { return &P->t[P->i]; }
static ttoken *peek(parser *P, size_t k) { return &P->t[P->i + k < P->n ? P->i + k : P->n - 1]; }
static void adv(parser *P) { if (P->i + 1 < P->n) P->i++; }

static bool is_op(ttoken *k, const char *op) { return k->type == TK_OP && strcmp(k->s, op) == 0; }
static bool is_name(ttoken *k, const char *nm) { return k->type == TK_NAME && strcmp(k->s, nm) == 0; }

static const char *tok_desc(ttoken *k) {
    switch (k->type) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "template data";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "'}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "'%}'";
    case TK_STRING: return "string";
    case TK_INT: return "integer";
    case TK_FLOAT: return "float";
    default: return k->s;
    }
}

static int pfail(parser *P, int code, const char *fmt, const char *arg) {
    hr_err_set(P->err, code, "line %d: ", cur(P)->line);
    size_t l = strlen(P->err ? P->err->msg : "");
    if (P->err) snprintf(P->err->msg + l, sizeof(P->err->msg) - l, fmt, arg);
    return code;
}

static int unexpected(parser *P) { return pfail(P, HR_EINVAL, "unexpected %s", tok_desc(cur(P))); }

static int expect_op(parser *P, const char *op) {
    if (!is_op(cur(P), op)) {
        hr_err_set(P->err, HR_EINVAL, "line %d: expected '%s', got %s", cur(P)->line, op, tok_desc(cur(P)));
        return HR_EINVAL;
    }
    adv(P);
    return HR_OK;
}

static int expect_type(parser *P, tk_type t, const char *what) {
    if (cur(P)->type != t) {
        hr_err_set(P->err, HR_EINVAL, "line %d: expected %s, got %s", cur(P)->line, what, tok_desc(cur(P)));
        return HR_EINVAL;
    }
    adv(P);
    return HR_OK;
}

static tnode *node(tn_kind k, int line) {
    tnode *n = hr_xcalloc(1, sizeof(tnode));
    n->kind = k;
    n->line = line;
    n->cval = tv_none();
    return n;
}

static void add_kid(tnode *n, tnode *kid) {
    if (n->nkids == n->capkids) {
        n->capkids = n->capkids ? n->capkids * 2 : 4;
        n->kids = hr_xrealloc(n->kids, (size_t)n->capkids * sizeof(tnode *));
    }
    n->kids[n->nkids++] = kid;
}

static void add_kw(tnode *n, const char *name) {
    n->kwnames = hr_xrealloc(n->kwnames, (size_t)(n->nkw + 1) * sizeof(char *));
    n->kwnames[n->nkw++] = hr_xstrdup(name);
}

void tpl_node_free(tnode *n) {
    if (!n) return;
    for (int i = 0; i < n->nkids; i++) tpl_node_free(n->kids[i]);
    free(n->kids);
    for (int i = 0; i < n->nkw; i++) free(n->kwnames[i]);
    free(n->kwnames);
    free(n->ops);
    free(n->name);
    tv_unref(n->cval);
    tpl_node_free(n->a);
    tpl_node_free(n->b);
    tpl_node_free(n->c);
    free(n);
}

static void set_name(tnode *n, const char *s, size_t len) {
    n->name = hr_xmalloc(len + 1);
    memcpy(n->name, s, len);
    n->name[len] = 0;
    n->name_len = len;
}

/* ------------------------------------------------------------ expressions */
static int parse_expression(parser *P, bool with_condexpr, tnode **out);
static int parse_tuple(parser *P, bool with_condexpr, const char *extra_end, bool explicit_parens, tnode **out);
static int parse_unary(parser *P, bool with_filter, tnode **out);
static int parse_primary(parser *P, tnode **out);
static int parse_postfix(parser *P, tnode *n, tnode **out);
static int parse_filter_expr(parser *P, tnode *n, tnode **out);

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)
#define TRYF(x, n) do { int rc_ = (x); if (rc_) { tpl_node_free(n); return rc_; } } while (0)

static int enter(parser *P) {
    if (++P->depth > MAX_DEPTH) return pfail(P, HR_EUNSUP, "unsupported: expression nested too deeply%s", "");
    return HR_OK;
}

/* Arguments of a call, filter or test: (a, b, key=c). Star-args are
 * outside the subset. Positional kids first, keyword kids after. */
static int parse_call_args(parser *P, tnode *n) {
    TRY(expect_op(P, "("));
    bool need_comma = false;
    while (!is_op(cur(P), ")")) {
        if (need_comma) {
            TRY(expect_op(P, ","));
            if (is_op(cur(P), ")")) break;
        }
        if (is_op(cur(P), "*") || is_op(cur(P), "**"))
            return pfail(P, HR_EUNSUP, "unsupported: %s arguments in a call", cur(P)->s);
        tnode *v = NULL;
        if (cur(P)->type == TK_NAME && is_op(peek(P, 1), "=")) {
            char *key = hr_xstrdup(cur(P)->s);
            adv(P);
            adv(P);
            int rc = parse_expression(P, true, &v);
            if (rc) { free(key); return rc; }
            add_kid(n, v);
            add_kw(n, key);
            free(key);
        } else {
            if (n->nkw) return pfail(P, HR_EINVAL, "positional argument after keyword argument%s", "");
            TRY(parse_expression(P, true, &v));
            add_kid(n, v);
        }
        need_comma = true;
    }
    adv(P);
    return HR_OK;
}

static int parse_dotted_name(parser *P, tnode *n) {
    if (cur(P)->type != TK_NAME) return expect_type(P, TK_NAME, "name");
    tbuf b = {0};
    tbuf_puts(&b, cur(P)->s);
    adv(P);
    while (is_op(cur(P), ".")) {
        adv(P);
        if (cur(P)->type != TK_NAME) { free(b.p); return expect_type(P, TK_NAME, "name"); }
        tbuf_putc(&b, '.');
        tbuf_puts(&b, cur(P)->s);
        adv(P);
    }
    n->name = b.p;
    n->name_len = b.n;
    return HR_OK;
}

static int parse_filter(parser *P, tnode *operand, tnode **out) {
    int line = cur(P)->line;
    adv(P); /* | */
    tnode *f = node(E_FILTER, line);
    f->a = operand;
    TRYF(parse_dotted_name(P, f), f);
    if (!tpl_filter_known(f->name)) f->op |= TN_UNKNOWN; /* judged by check_unknown() */
    if (is_op(cur(P), "(")) TRYF(parse_call_args(P, f), f);
    *out = f;
    return HR_OK;
}

static int parse_test(parser *P, tnode *operand, tnode **out) {
    int line = cur(P)->line;
    adv(P); /* is */
    tnode *t = node(E_TEST, line);
    t->a = operand;
    if (is_name(cur(P), "not")) { t->op = TN_NEGATED; adv(P); }
    TRYF(parse_dotted_name(P, t), t);
    if (!tpl_test_known(t->name)) t->op |= TN_UNKNOWN;
    ttoken *k = cur(P);
    if (is_op(k, "(")) {
        TRYF(parse_call_args(P, t), t);
    } else if ((k->type == TK_NAME || k->type == TK_STRING || k->type == TK_INT || k->type == TK_FLOAT ||
                is_op(k, "[") || is_op(k, "{")) &&
               !is_name(k, "else") && !is_name(k, "or") && !is_name(k, "and")) {
        if (is_name(k, "is")) { tpl_node_free(t); return pfail(P, HR_EINVAL, "You cannot chain multiple tests with is%s", ""); }
        tnode *arg = NULL;
        TRYF(parse_primary(P, &arg), t);
        tnode *arg2 = NULL;
        int rc = parse_postfix(P, arg, &arg2);
        if (rc) { tpl_node_free(t); return rc; }
        add_kid(t, arg2);
    }
    *out = t;
    return HR_OK;
}

static int parse_filter_expr(parser *P, tnode *n, tnode **out) {
    for (;;) {
        if (is_op(cur(P), "|")) {
            TRY(parse_filter(P, n, &n)); /* consumes n on failure */
        } else if (is_name(cur(P), "is")) {
            TRY(parse_test(P, n, &n));
        } else if (is_op(cur(P), "(")) {
            tnode *c = node(E_CALL, cur(P)->line);
            c->a = n;
            TRYF(parse_call_args(P, c), c);
            n = c;
        } else {
            break;
        }
    }
    *out = n;
    return HR_OK;
}

static int parse_subscribed(parser *P, tnode **out) {
    int line = cur(P)->line;
    tnode *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    if (is_op(cur(P), ":")) {
        adv(P);
        parts[np++] = NULL;
    } else {
        tnode *e = NULL;
        TRY(parse_expression(P, true, &e));
        if (!is_op(cur(P), ":")) { *out = e; return HR_OK; }
        adv(P);
        parts[np++] = e;
    }
    tnode *s = node(E_SLICE, line);
    s->a = parts[0];
    if (is_op(cur(P), ":")) {
        /* [a::c] */
    } else if (!is_op(cur(P), "]") && !is_op(cur(P), ",")) {
        TRYF(parse_expression(P, true, &s->b), s);
    }
    if (is_op(cur(P), ":")) {
        adv(P);
        if (!is_op(cur(P), "]") && !is_op(cur(P), ",")) TRYF(parse_expression(P, true, &s->c), s);
    }
    *out = s;
    return HR_OK;
}

static int parse_subscript(parser *P, tnode *n, tnode **out) {
    int line = cur(P)->line;
    if (is_op(cur(P), ".")) {
        adv(P);
        ttoken *k = cur(P);
        if (k->type == TK_NAME) {
            tnode *g = node(E_GETATTR, line);
            g->a = n;
            set_name(g, k->s, k->len);
            adv(P);
            *out = g;
            return HR_OK;
        }
        if (k->type == TK_INT) {
            tnode *g = node(E_GETITEM, line);
            g->a = n;
            g->b = node(E_CONST, line);
            g->b->cval = tv_int(k->i);
            adv(P);
            *out = g;
            return HR_OK;
        }
        tpl_node_free(n);
        return pfail(P, HR_EINVAL, "expected name or number after '.', got %s", tok_desc(k));
    }
    /* [ ... ]: one subscript, or several making a tuple key */
    adv(P);
    tnode *g = node(E_GETITEM, line);
    g->a = n;
    tnode *tup = node(E_TUPLE, line);
    int rc = HR_OK;
    while (!rc && !is_op(cur(P), "]")) {
        if (tup->nkids && (rc = expect_op(P, ",")) != HR_OK) break;
        tnode *s = NULL;
        rc = parse_subscribed(P, &s);
        if (!rc) add_kid(tup, s);
    }
    /* x[] is x[()] in jinja2 */
    if (rc) { tpl_node_free(tup); tpl_node_free(g); return rc; }
    adv(P);
    if (tup->nkids == 1) {
        g->b = tup->kids[0];
        tup->nkids = 0;
        tpl_node_free(tup);
    } else {
        g->b = tup;
    }
    *out = g;
    return HR_OK;
}

static int parse_postfix(parser *P, tnode *n, tnode **out) {
    for (;;) {
        if (is_op(cur(P), ".") || is_op(cur(P), "[")) {
            TRY(parse_subscript(P, n, &n));
        } else if (is_op(cur(P), "(")) {
            tnode *c = node(E_CALL, cur(P)->line);
            c->a = n;
            TRYF(parse_call_args(P, c), c);
            n = c;
        } else {
            break;
        }
    }
    *out = n;
    return HR_OK;
}

static int parse_primary(parser *P, tnode **out) {
    TRY(enter(P));
    ttoken *k = cur(P);
    int line = k->line;
    tnode *n = NULL;
    int rc = HR_OK;
    if (k->type == TK_NAME) {
        if (!strcmp(k->s, "true") || !strcmp(k->s, "True") || !strcmp(k->s, "false") || !strcmp(k->s, "False")) {
            n = node(E_CONST, line);
            n->cval = tv_bool(k->s[0] == 't' || k->s[0] == 'T');
        } else if (!strcmp(k->s, "none") || !strcmp(k->s, "None")) {
            n = node(E_CONST, line);
        } else {
            n = node(E_NAME, line);
            set_name(n, k->s, k->len);
        }
        adv(P);
    } else if (k->type == TK_STRING) {
        /* Adjacent string literals concatenate, as in Python. */
        tbuf b = {0};
        tbuf_put(&b, "", 0);
        while (cur(P)->type == TK_STRING) {
            tbuf_put(&b, cur(P)->s, cur(P)->len);
            adv(P);
        }
        n = node(E_CONST, line);
        n->cval = tbuf_to_str(&b);
    } else if (k->type == TK_INT || k->type == TK_FLOAT) {
        n = node(E_CONST, line);
        n->cval = k->type == TK_INT ? tv_int(k->i) : tv_float(k->f);
        adv(P);
    } else if (is_op(k, "(")) {
        adv(P);
        rc = parse_tuple(P, true, NULL, true, &n);
        if (!rc) rc = expect_op(P, ")");
    } else if (is_op(k, "[")) {
        adv(P);
        n = node(E_LIST, line);
        while (!rc && !is_op(cur(P), "]")) {
            if (n->nkids) {
                rc = expect_op(P, ",");
                if (rc || is_op(cur(P), "]")) break;
            }
            tnode *e = NULL;
            rc = parse_expression(P, true, &e);
            if (!rc) add_kid(n, e);
        }
        if (!rc) adv(P);
    } else if (is_op(k, "{")) {
        adv(P);
        n = node(E_DICT, line);
        while (!rc && !is_op(cur(P), "}")) {
            if (n->nkids) {
                rc = expect_op(P, ",");
                if (rc || is_op(cur(P), "}")) break;
            }
            tnode *key = NULL, *val = NULL;
            rc = parse_expression(P, true, &key);
            if (rc) break;
            add_kid(n, key);
            rc = expect_op(P, ":");
            if (rc) break;
            rc = parse_expression(P, true, &val);
            if (!rc) add_kid(n, val);
        }
        if (!rc) adv(P);
    } else {
        rc = unexpected(P);
    }
    P->depth--;
    if (rc) { tpl_node_free(n); return rc; }
    *out = n;
    return HR_OK;
}

static int parse_unary(parser *P, bool with_filter, tnode **out) {
    TRY(enter(P));
    tnode *n = NULL;
    int rc;
    int line = cur(P)->line;
    if (is_op(cur(P), "-") || is_op(cur(P), "+")) {
        tn_kind k = cur(P)->s[0] == '-' ? E_NEG : E_POS;
        adv(P);
        tnode *x = NULL;
        rc = parse_unary(P, false, &x);
        if (!rc) { n = node(k, line); n->a = x; }
    } else {
        rc = parse_primary(P, &n);
    }
    if (!rc) rc = parse_postfix(P, n, &n);
    else n = NULL;
    if (!rc && with_filter) rc = parse_filter_expr(P, n, &n);
    P->depth--;
    if (rc) return rc;
    *out = n;
    return HR_OK;
}

static tnode *binop(int op, tnode *a, tnode *b, int line) {
    tnode *n = node(E_BINOP, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static int parse_pow(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_unary(P, true, &l));
    while (is_op(cur(P), "**")) {
        int line = cur(P)->line;
        adv(P);
        tnode *r = NULL;
        TRYF(parse_unary(P, true, &r), l);
        l = binop(OP_POW, l, r, line);
    }
    *out = l;
    return HR_OK;
}

static int parse_math2(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_pow(P, &l));
    for (;;) {
        int op = is_op(cur(P), "*") ? OP_MUL : is_op(cur(P), "/") ? OP_DIV : is_op(cur(P), "//") ? OP_FLOORDIV
                 : is_op(cur(P), "%") ? OP_MOD : 0;
        if (!op) break;
        int line = cur(P)->line;
        adv(P);
        tnode *r = NULL;
        TRYF(parse_pow(P, &r), l);
        l = binop(op, l, r, line);
    }
    *out = l;
    return HR_OK;
}

static int parse_concat(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_math2(P, &l));
    if (!is_op(cur(P), "~")) { *out = l; return HR_OK; }
    tnode *c = node(E_CONCAT, cur(P)->line);
    add_kid(c, l);
    while (is_op(cur(P), "~")) {
        adv(P);
        tnode *r = NULL;
        TRYF(parse_math2(P, &r), c);
        add_kid(c, r);
    }
    *out = c;
    return HR_OK;
}

static int parse_math1(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_concat(P, &l));
    for (;;) {
        int op = is_op(cur(P), "+") ? OP_ADD : is_op(cur(P), "-") ? OP_SUB : 0;
        if (!op) break;
        int line = cur(P)->line;
        adv(P);
        tnode *r = NULL;
        TRYF(parse_concat(P, &r), l);
        l = binop(op, l, r, line);
    }
    *out = l;
    return HR_OK;
}

static int parse_compare(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_math1(P, &l));
    tnode *c = NULL;
    for (;;) {
        ttoken *k = cur(P);
        int op = 0;
        if (is_op(k, "==")) op = OP_EQ;
        else if (is_op(k, "!=")) op = OP_NE;
        else if (is_op(k, "<")) op = OP_LT;
        else if (is_op(k, "<=")) op = OP_LE;
        else if (is_op(k, ">")) op = OP_GT;
        else if (is_op(k, ">=")) op = OP_GE;
        else if (is_name(k, "in")) op = OP_IN;
        else if (is_name(k, "not") && is_name(peek(P, 1), "in")) { op = OP_NOTIN; adv(P); }
        if (!op) break;
        if (!c) {
            c = node(E_COMPARE, k->line);
            add_kid(c, l);
        }
        adv(P);
        tnode *r = NULL;
        TRYF(parse_math1(P, &r), c);
        add_kid(c, r);
        c->ops = hr_xrealloc(c->ops, (size_t)c->nkids * sizeof(int));
        c->ops[c->nkids - 2] = op;
    }
    *out = c ? c : l;
    return HR_OK;
}

static int parse_not(parser *P, tnode **out) {
    if (is_name(cur(P), "not")) {
        int line = cur(P)->line;
        adv(P);
        TRY(enter(P));
        tnode *x = NULL;
        int rc = parse_not(P, &x);
        P->depth--;
        if (rc) return rc;
        tnode *n = node(E_NOT, line);
        n->a = x;
        *out = n;
        return HR_OK;
    }
    return parse_compare(P, out);
}

static int parse_and(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_not(P, &l));
    while (is_name(cur(P), "and")) {
        tnode *n = node(E_AND, cur(P)->line);
        adv(P);
        n->a = l;
        TRYF(parse_not(P, &n->b), n);
        l = n;
    }
    *out = l;
    return HR_OK;
}

static int parse_or(parser *P, tnode **out) {
    tnode *l = NULL;
    TRY(parse_and(P, &l));
    while (is_name(cur(P), "or")) {
        tnode *n = node(E_OR, cur(P)->line);
        adv(P);
        n->a = l;
        TRYF(parse_and(P, &n->b), n);
        l = n;
    }
    *out = l;
    return HR_OK;
}

static int parse_condexpr(parser *P, tnode **out) {
    tnode *e1 = NULL;
    TRY(parse_or(P, &e1));
    while (is_name(cur(P), "if")) {
        tnode *n = node(E_COND, cur(P)->line);
        adv(P);
        n->b = e1;
        TRYF(parse_or(P, &n->a), n);
        if (is_name(cur(P), "else")) {
            adv(P);
            TRY(enter(P));
            int rc = parse_condexpr(P, &n->c);
            P->depth--;
            if (rc) { tpl_node_free(n); return rc; }
        }
        e1 = n;
    }
    *out = e1;
    return HR_OK;
}

static int parse_expression(parser *P, bool with_condexpr, tnode **out) {
    TRY(enter(P));
    int rc = with_condexpr ? parse_condexpr(P, out) : parse_or(P, out);
    P->depth--;
    return rc;
}

static bool tuple_end(parser *P, const char *extra_end) {
    ttoken *k = cur(P);
    if (k->type == TK_VAR_END || k->type == TK_BLOCK_END || k->type == TK_EOF || is_op(k, ")")) return true;
    return extra_end && is_name(k, extra_end);
}

static int parse_tuple(parser *P, bool with_condexpr, const char *extra_end, bool explicit_parens, tnode **out) {
    int line = cur(P)->line;
    tnode *t = node(E_TUPLE, line);
    bool is_tuple = false;
    for (;;) {
        if (t->nkids) TRYF(expect_op(P, ","), t);
        if (tuple_end(P, extra_end)) break;
        tnode *e = NULL;
        TRYF(parse_expression(P, with_condexpr, &e), t);
        add_kid(t, e);
        if (is_op(cur(P), ",")) is_tuple = true;
        else break;
    }
    if (!is_tuple) {
        if (t->nkids) {
            *out = t->kids[0];
            t->nkids = 0;
            tpl_node_free(t);
            return HR_OK;
        }
        if (!explicit_parens) {
            tpl_node_free(t);
            return pfail(P, HR_EINVAL, "expected an expression, got %s", tok_desc(cur(P)));
        }
    }
    *out = t;
    return HR_OK;
}

/* for/set targets: a name, name.attr (set only), or a tuple of names. */
static int parse_assign_target(parser *P, bool with_ns, const char *extra_end, tnode **out) {
    int line = cur(P)->line;
    if (with_ns && cur(P)->type == TK_NAME && is_op(peek(P, 1), ".") && peek(P, 2)->type == TK_NAME) {
        tnode *g = node(E_GETATTR, line);
        g->a = node(E_NAME, line);
        set_name(g->a, cur(P)->s, cur(P)->len);
        set_name(g, peek(P, 2)->s, peek(P, 2)->len);
        adv(P); adv(P); adv(P);
        *out = g;
        return HR_OK;
    }
    tnode *t = node(E_TUPLE, line);
    bool is_tuple = false, paren = false;
    if (is_op(cur(P), "(")) { paren = true; adv(P); }
    for (;;) {
        if (t->nkids) TRYF(expect_op(P, ","), t);
        /* jinja2 accepts a trailing comma only inside parentheses */
        if ((paren || t->nkids == 0) && (tuple_end(P, extra_end) || is_op(cur(P), "=") || is_op(cur(P), "|"))) break;
        if (cur(P)->type != TK_NAME) { tpl_node_free(t); return pfail(P, HR_EUNSUP, "unsupported assignment target %s", tok_desc(cur(P))); }
        tnode *nm = node(E_NAME, cur(P)->line);
        set_name(nm, cur(P)->s, cur(P)->len);
        add_kid(t, nm);
        adv(P);
        if (is_op(cur(P), ",")) is_tuple = true;
        else break;
    }
    if (paren) TRYF(expect_op(P, ")"), t);
    if (t->nkids == 0) { tpl_node_free(t); return pfail(P, HR_EINVAL, "expected assignment target, got %s", tok_desc(cur(P))); }
    if (!is_tuple && !paren) {
        *out = t->kids[0];
        t->nkids = 0;
        tpl_node_free(t);
        return HR_OK;
    }
    if (!is_tuple) { /* (x) is just x */
        *out = t->kids[0];
        t->nkids = 0;
        tpl_node_free(t);
        return HR_OK;
    }
    *out = t;
    return HR_OK;
}

/* ------------------------------------------------------------ statements */
static int parse_body(parser *P, const char *const *ends, tnode **out);

static int block_end(parser *P) { return expect_type(P, TK_BLOCK_END, "'%}'"); }

/* Consumes `{% endname %}` after parse_body stopped at it. */
static int end_tag(parser *P) {
    adv(P); /* the end name */
    return block_end(P);
}

static int parse_if(parser *P, tnode **out) {
    tnode *n = node(S_IF, cur(P)->line);
    adv(P); /* if / elif */
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    TRYF(parse_tuple(P, false, NULL, false, &n->a), n); /* jinja2: an if test has no inline if */
    TRYF(block_end(P), n);
    TRYF(parse_body(P, ends, &n->b), n);
    if (is_name(cur(P), "elif")) {
        TRYF(parse_if(P, &n->c), n);
        *out = n;
        return HR_OK;  /* the nested if consumed endif */
    }
    if (is_name(cur(P), "else")) {
        adv(P);
        TRYF(block_end(P), n);
        static const char *const ends2[] = {"endif", NULL};
        TRYF(parse_body(P, ends2, &n->c), n);
    }
    TRYF(end_tag(P), n);
    *out = n;
    return HR_OK;
}

static int parse_for(parser *P, tnode **out) {
    tnode *n = node(S_FOR, cur(P)->line);
    adv(P);
    tnode *target = NULL, *iter = NULL, *filt = NULL;
    TRYF(parse_assign_target(P, false, "in", &target), n);
    add_kid(n, target);
    if (!is_name(cur(P), "in")) { tpl_node_free(n); return pfail(P, HR_EINVAL, "expected 'in', got %s", tok_desc(cur(P))); }
    adv(P);
    TRYF(parse_tuple(P, false, "recursive", false, &iter), n);
    add_kid(n, iter);
    if (is_name(cur(P), "if")) {
        adv(P);
        TRYF(parse_expression(P, true, &filt), n);
    }
    add_kid(n, filt);
    if (is_name(cur(P), "recursive")) { tpl_node_free(n); return pfail(P, HR_EUNSUP, "unsupported: recursive for loops%s", ""); }
    TRYF(block_end(P), n);
    static const char *const ends[] = {"endfor", "else", NULL};
    P->loops++;
    int rc = parse_body(P, ends, &n->a);
    P->loops--;
    if (rc) { tpl_node_free(n); return rc; }
    if (is_name(cur(P), "else")) {
        adv(P);
        TRYF(block_end(P), n);
        static const char *const ends2[] = {"endfor", NULL};
        int saved = P->loops;
        P->loops = 0;
        rc = parse_body(P, ends2, &n->b);
        P->loops = saved;
        if (rc) { tpl_node_free(n); return rc; }
    }
    TRYF(end_tag(P), n);
    *out = n;
    return HR_OK;
}

/* A chain of filters applied to a placeholder (NULL operand): set blocks and
 * filter blocks feed their rendered body into it. */
static int parse_filter_chain(parser *P, bool leading_pipe, tnode **out) {
    tnode *chain = NULL;
    bool first = true;
    while (is_op(cur(P), "|") || (first && !leading_pipe)) {
        if (first && !leading_pipe) {
            /* `{% filter name(args) %}`: synthesize the pipe. */
            tnode *f = node(E_FILTER, cur(P)->line);
            f->a = chain;
            TRYF(parse_dotted_name(P, f), f);
            if (!tpl_filter_known(f->name)) f->op |= TN_UNKNOWN;
            if (is_op(cur(P), "(")) TRYF(parse_call_args(P, f), f);
            chain = f;
        } else {
            TRYF(parse_filter(P, chain, &chain), chain);
        }
        first = false;
    }
    *out = chain;
    return HR_OK;
}

static int parse_set(parser *P, tnode **out) {
    int line = cur(P)->line;
    adv(P);
    tnode *target = NULL;
    TRY(parse_assign_target(P, true, NULL, &target));
    if (is_op(cur(P), "=")) {
        adv(P);
        tnode *n = node(S_SET, line);
        n->a = target;
        TRYF(parse_tuple(P, true, NULL, false, &n->b), n);
        TRYF(block_end(P), n);
        *out = n;
        return HR_OK;
    }
    tnode *n = node(S_SETBLOCK, line);
    n->a = target;
    if (target->kind == E_TUPLE) { tpl_node_free(n); return pfail(P, HR_EINVAL, "block set needs a single name%s", ""); }
    TRYF(parse_filter_chain(P, true, &n->c), n);
    TRYF(block_end(P), n);
    static const char *const ends[] = {"endset", NULL};
    int saved = P->loops, saved_m = P->masked_loops;
    P->masked_loops += P->loops;
    P->loops = 0;
    int rc = parse_body(P, ends, &n->b);
    P->loops = saved;
    P->masked_loops = saved_m;
    if (rc) { tpl_node_free(n); return rc; }
    TRYF(end_tag(P), n);
    *out = n;
    return HR_OK;
}

/* Macro and call-block parameters: (a, b=default, ...). Kids hold the
 * defaults (NULL when none), kwnames the names. */
static int parse_params(parser *P, tnode *n) {
    TRY(expect_op(P, "("));
    while (!is_op(cur(P), ")")) {
        if (n->nkw) TRY(expect_op(P, ","));
        if (is_op(cur(P), ")")) break;
        if (cur(P)->type != TK_NAME) return expect_type(P, TK_NAME, "parameter name");
        add_kw(n, cur(P)->s);
        adv(P);
        tnode *def = NULL;
        if (is_op(cur(P), "=")) {
            adv(P);
            TRY(parse_expression(P, true, &def));
        } else {
            for (int i = 0; i < n->nkids; i++)
                if (n->kids[i]) { add_kid(n, NULL); return pfail(P, HR_EINVAL, "non-default argument follows default argument%s", ""); }
        }
        add_kid(n, def);
    }
    adv(P);
    return HR_OK;
}

static bool mentions_name(const tnode *n, const char *name) {
    if (!n) return false;
    if (n->kind == E_NAME && !strcmp(n->name, name)) return true;
    for (int i = 0; i < n->nkids; i++)
        if (mentions_name(n->kids[i], name)) return true;
    return mentions_name(n->a, name) || mentions_name(n->b, name) || mentions_name(n->c, name);
}

static int parse_macro(parser *P, tnode **out) {
    tnode *n = node(S_MACRO, cur(P)->line);
    adv(P);
    if (cur(P)->type != TK_NAME) { tpl_node_free(n); return expect_type(P, TK_NAME, "macro name"); }
    set_name(n, cur(P)->s, cur(P)->len);
    adv(P);
    TRYF(parse_params(P, n), n);
    TRYF(block_end(P), n);
    static const char *const ends[] = {"endmacro", NULL};
    int saved = P->loops, saved_m = P->masked_loops;
    P->loops = P->masked_loops = 0;
    int rc = parse_body(P, ends, &n->a);
    P->loops = saved;
    P->masked_loops = saved_m;
    if (rc) { tpl_node_free(n); return rc; }
    TRYF(end_tag(P), n);
    /* jinja2 lets a call block pass `caller` only to a macro whose body
     * mentions it (or that declares it as a parameter). */
    bool has_param = false;
    for (int i = 0; i < n->nkw; i++) has_param |= !strcmp(n->kwnames[i], "caller");
    n->op = has_param || mentions_name(n->a, "caller");
    *out = n;
    return HR_OK;
}

static int parse_call_block(parser *P, tnode **out) {
    tnode *n = node(S_CALLBLOCK, cur(P)->line);
    adv(P);
    if (is_op(cur(P), "(")) TRYF(parse_params(P, n), n);
    TRYF(parse_expression(P, true, &n->a), n);
    if (n->a->kind != E_CALL) { tpl_node_free(n); return pfail(P, HR_EINVAL, "expected call%s", ""); }
    TRYF(block_end(P), n);
    static const char *const ends[] = {"endcall", NULL};
    int saved = P->loops, saved_m = P->masked_loops;
    P->loops = P->masked_loops = 0;
    int rc = parse_body(P, ends, &n->b);
    P->loops = saved;
    P->masked_loops = saved_m;
    if (rc) { tpl_node_free(n); return rc; }
    TRYF(end_tag(P), n);
    *out = n;
    return HR_OK;
}

static int parse_filter_block(parser *P, tnode **out) {
    tnode *n = node(S_FILTERBLOCK, cur(P)->line);
    adv(P);
    TRYF(parse_filter_chain(P, false, &n->a), n);
    TRYF(block_end(P), n);
    static const char *const ends[] = {"endfilter", NULL};
    /* break/continue in a filter block would skip its output in jinja2;
     * refuse them rather than render differently */
    int saved = P->loops, saved_m = P->masked_loops;
    P->masked_loops += P->loops;
    P->loops = 0;
    int rc = parse_body(P, ends, &n->b);
    P->loops = saved;
    P->masked_loops = saved_m;
    if (rc) { tpl_node_free(n); return rc; }
    TRYF(end_tag(P), n);
    *out = n;
    return HR_OK;
}

static int parse_statement(parser *P, tnode **out) {
    ttoken *k = cur(P);
    if (k->type != TK_NAME) return pfail(P, HR_EINVAL, "tag name expected, got %s", tok_desc(k));
    const char *nm = k->s;
    if (!strcmp(nm, "if")) return parse_if(P, out);
    if (!strcmp(nm, "for")) return parse_for(P, out);
    if (!strcmp(nm, "set")) return parse_set(P, out);
    if (!strcmp(nm, "macro")) return parse_macro(P, out);
    if (!strcmp(nm, "call")) return parse_call_block(P, out);
    if (!strcmp(nm, "filter")) return parse_filter_block(P, out);
    if (!strcmp(nm, "generation")) {
        /* AssistantTracker: renders its body unchanged. */
        adv(P);
        TRY(block_end(P));
        static const char *const ends[] = {"endgeneration", NULL};
        tnode *body = NULL;
        TRY(parse_body(P, ends, &body));
        TRYF(end_tag(P), body);
        body->op = TN_OWN_FRAME; /* a CallBlock in jinja2: its body is a frame of its own */
        *out = body;
        return HR_OK;
    }
    if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        if (P->loops == 0 && P->masked_loops > 0)
            return pfail(P, HR_EUNSUP, "unsupported: '%s' inside a filter or set block", nm);
        if (P->loops == 0) return pfail(P, HR_EINVAL, "'%s' outside of a loop", nm);
        tnode *n = node(nm[0] == 'b' ? S_BREAK : S_CONTINUE, k->line);
        adv(P);
        TRYF(block_end(P), n);
        *out = n;
        return HR_OK;
    }
    static const char *const known[] = {"block", "extends", "include", "import", "from", "with", "autoescape",
                                        "do", "trans", "print", "raw"};
    for (size_t i = 0; i < HR_ARRAY_LEN(known); i++)
        if (!strcmp(nm, known[i])) return pfail(P, HR_EUNSUP, "unsupported tag '%s'", nm);
    return pfail(P, HR_EINVAL, "unknown tag '%s'", nm);
}

static bool is_end(parser *P, const char *const *ends) {
    if (!ends || cur(P)->type != TK_NAME) return false;
    for (; *ends; ends++)
        if (!strcmp(cur(P)->s, *ends)) return true;
    return false;
}

/* Parses nodes until `{% <one of ends>` (left at the end name) or EOF. */
static int parse_body(parser *P, const char *const *ends, tnode **out) {
    TRY(enter(P));
    tnode *body = node(S_BODY, cur(P)->line);
    int rc = HR_OK;
    for (;;) {
        ttoken *k = cur(P);
        if (k->type == TK_EOF) {
            if (ends) {
                hr_err_set(P->err, HR_EINVAL, "line %d: unexpected end of template, expected '%s'", k->line, ends[0]);
                rc = HR_EINVAL;
            }
            break;
        }
        if (k->type == TK_TEXT) {
            tnode *t = node(S_TEXT, k->line);
            set_name(t, k->s, k->len);
            add_kid(body, t);
            adv(P);
        } else if (k->type == TK_VAR_BEGIN) {
            adv(P);
            tnode *o = node(S_OUT, k->line);
            add_kid(body, o);
            rc = parse_tuple(P, true, NULL, false, &o->a);
            if (!rc) rc = expect_type(P, TK_VAR_END, "'}}'");
            if (rc) break;
        } else if (k->type == TK_BLOCK_BEGIN) {
            adv(P);
            if (is_end(P, ends)) break;
            tnode *s = NULL;
            rc = parse_statement(P, &s);
            if (rc) break;
            add_kid(body, s);
        } else {
            rc = unexpected(P);
            break;
        }
    }
    P->depth--;
    if (rc) { tpl_node_free(body); return rc; }
    *out = body;
    return HR_OK;
}

/* jinja2 rejects an unknown filter or test when compiling, except inside an
 * if statement or an inline if (a "soft" frame), where it fails only when
 * evaluated (jinja2 3.x compiler._filter_test_common). Frames of their own
 * (loop bodies, macros, call/filter/set blocks) are not soft again. */
static int check_unknown(const tnode *n, bool soft, hr_err *err) {
    if (!n) return HR_OK;
    int rc;
#define CHK(x, s) do { if ((rc = check_unknown((x), (s), err)) != HR_OK) return rc; } while (0)
    switch (n->kind) {
    case S_IF: case E_COND:
        CHK(n->a, true); CHK(n->b, true); CHK(n->c, true);
        return HR_OK;
    case S_FOR:
        CHK(n->kids[1], soft); CHK(n->kids[2], false); CHK(n->a, false); CHK(n->b, false);
        return HR_OK;
    case S_MACRO: case S_FILTERBLOCK: case S_SETBLOCK:
        for (int i = 0; i < n->nkids; i++) CHK(n->kids[i], false);
        CHK(n->a, false); CHK(n->b, false); CHK(n->c, false);
        return HR_OK;
    case S_CALLBLOCK:
        for (int i = 0; i < n->nkids; i++) CHK(n->kids[i], false);
        CHK(n->a, soft); CHK(n->b, false);
        return HR_OK;
    case S_BODY:
        if (n->op & TN_OWN_FRAME) soft = false;
        break;
    case E_FILTER: case E_TEST:
        if ((n->op & TN_UNKNOWN) && !soft)
            return hr_err_set(err, HR_EUNSUP, "line %d: unsupported %s '%s'", n->line,
                              n->kind == E_FILTER ? "filter" : "test", n->name);
        break;
    default: break;
    }
    for (int i = 0; i < n->nkids; i++) CHK(n->kids[i], soft);
    CHK(n->a, soft); CHK(n->b, soft); CHK(n->c, soft);
#undef CHK
    return HR_OK;
}

int tpl_parse_tokens(ttoken *toks, size_t ntoks, tnode **root, hr_err *err) {
    parser P = {.t = toks, .n = ntoks, .err = err};
    int rc = parse_body(&P, NULL, root);
    if (rc == HR_OK && (rc = check_unknown(*root, false, err)) != HR_OK) {
        tpl_node_free(*root);
        *root = NULL;
    }
    return rc;
}
