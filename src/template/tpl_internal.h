/* Internals of the Jinja subset shared by its files: the value type (Python
 * objects as jinja2 sees them), the token stream, the AST and the render
 * context. Owns nothing outside src/template; only the files of src/template include it.
 * Values are small structs passed by value; heap payloads are refcounted. */
#ifndef HEARTH_TEMPLATE_TPL_INTERNAL_H
#define HEARTH_TEMPLATE_TPL_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "template/template.h"

/* ---------------------------------------------------------------- values */
typedef enum {
    TV_UNDEF, TV_NONE, TV_BOOL, TV_INT, TV_FLOAT, TV_STR,
    TV_LIST,   /* list, tuple, generator, dict view (see tv_list.kind) */
    TV_DICT, TV_NS, TV_LOOP, TV_MACRO, TV_METHOD, TV_FUNC,
} tv_type;

/* Python distinguishes these sequence flavours in ways templates can see:
 * tuples print with parentheses, generators are always truthy, cannot be
 * indexed or measured and are consumed by iteration, views can be measured. */
typedef enum { TL_LIST, TL_TUPLE, TL_GEN, TL_VIEW, TL_RANGE } tl_kind;

typedef struct tv_str tv_str;
typedef struct tv_list tv_list;
typedef struct tv_dict tv_dict;
typedef struct tv_obj tv_obj;

typedef struct tv {
    tv_type t;
    union {
        bool b;
        int64_t i;
        double f;
        tv_str *s;
        tv_list *l;
        tv_dict *d;     /* TV_DICT and TV_NS */
        tv_obj *o;      /* TV_LOOP, TV_MACRO, TV_METHOD */
        const char *name; /* TV_UNDEF: the missing name (static/AST), TV_FUNC: global name */
    } u;
} tv;

struct tv_str { int rc; bool safe; size_t len; char data[]; };
struct tv_list { int rc; tl_kind kind; size_t n, cap, pos; tv *items; };
struct tv_dict { int rc; size_t n, cap; tv *keys, *vals; };

struct tnode;
struct tscope;
/* Loop object, macro, or bound method: one struct with fields per use. */
struct tv_obj {
    int rc;
    /* TV_LOOP */
    tv items;               /* the iterated list */
    size_t index0, length;
    tv changed_last;        /* loop.changed() memory */
    bool changed_set;
    /* TV_MACRO */
    const struct tnode *macro;
    const struct tnode *caller_body;  /* for caller(): the call block */
    struct tscope *caller_scope;
    /* TV_METHOD */
    tv self;
    const char *method;     /* static name */
};

static inline tv tv_undef(const char *name) { tv v; v.t = TV_UNDEF; v.u.name = name; return v; }
static inline tv tv_none(void) { tv v; v.t = TV_NONE; v.u.i = 0; return v; }
static inline tv tv_bool(bool b) { tv v; v.t = TV_BOOL; v.u.i = 0; v.u.b = b; return v; }
static inline tv tv_int(int64_t i) { tv v; v.t = TV_INT; v.u.i = i; return v; }
static inline tv tv_float(double f) { tv v; v.t = TV_FLOAT; v.u.f = f; return v; }

tv tv_ref(tv v);
void tv_unref(tv v);
tv tv_str_new(const char *s, size_t len);
tv tv_str_cstr(const char *s);
tv tv_list_new(tl_kind kind, size_t cap);
void tv_list_push(tv list, tv item);        /* takes ownership of item */
tv tv_dict_new(void);
void tv_dict_set(tv d, tv key, tv val);      /* takes ownership of key and val */
bool tv_dict_get(tv d, tv key, tv *out);     /* borrowed out */
bool tv_dict_get_str(tv d, const char *key, tv *out);
tv tv_obj_new(tv_type t);

bool tv_truthy(tv v);
bool tv_equal(tv a, tv b);
bool tv_is_num(tv v);                        /* int, float or bool */
double tv_num(tv v);
const char *tv_type_name(tv v);              /* Python type name for messages */

/* A growable byte buffer for output and formatting. */
typedef struct tbuf { char *p; size_t n, cap; } tbuf;
void tbuf_put(tbuf *b, const char *s, size_t n);
void tbuf_puts(tbuf *b, const char *s);
void tbuf_putc(tbuf *b, char c);
void tbuf_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
tv tbuf_to_str(tbuf *b);                     /* moves the bytes into a string value */

/* str() and repr() as Python prints them. HR_EUNSUP for objects whose
 * printed form is an address (methods, macros, generators). */
int tv_to_str(tv v, tbuf *b, hr_err *err);
int tv_repr(tv v, tbuf *b, hr_err *err);
void tv_float_repr(double f, tbuf *b);
/* json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent NULL = none. */
int tv_to_json(tv v, tbuf *b, bool ensure_ascii, const char *indent, const char *item_sep,
               const char *key_sep, bool sort_keys, hr_err *err);
tv tv_from_json(json_t *j);

/* UTF-8 helpers (input is trusted to be valid UTF-8 up to replacement). */
size_t tpl_utf8_decode(const char *s, size_t n, uint32_t *cp);  /* bytes used, >= 1 */
void tpl_utf8_encode(uint32_t cp, tbuf *b);
size_t tpl_utf8_len(const char *s, size_t n);                   /* code points */
bool tpl_is_space(uint32_t cp);                                 /* Python str.isspace */

/* ---------------------------------------------------------------- tokens */
typedef enum {
    TK_EOF, TK_TEXT, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP,
} tk_type;

typedef struct ttoken {
    tk_type type;
    int line;
    char *s;        /* TEXT, NAME, STRING (decoded), OP (the operator); malloc'd */
    size_t len;
    int64_t i;
    double f;
} ttoken;

int tpl_lex(const char *src, ttoken **toks, size_t *ntoks, hr_err *err);
void tpl_tokens_free(ttoken *toks, size_t n);

/* ---------------------------------------------------------------- AST */
typedef enum {
    /* statements */
    S_BODY, S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_CALLBLOCK, S_FILTERBLOCK,
    S_BREAK, S_CONTINUE,
    /* expressions */
    E_CONST, E_NAME, E_GETATTR, E_GETITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NEG, E_POS, E_NOT,
    E_BINOP, E_CONCAT, E_COMPARE, E_AND, E_OR, E_COND, E_LIST, E_TUPLE, E_DICT,
} tn_kind;

/* Binary and comparison operators. */
enum {
    OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
};

/* tnode.op flags of filters, tests and bodies. */
enum {
    TN_NEGATED = 1,     /* E_TEST: `is not` */
    TN_UNKNOWN = 2,     /* E_FILTER/E_TEST: not in the subset; an error when evaluated */
    TN_OWN_FRAME = 4,   /* S_BODY: renders as a frame of its own (generation block) */
};

typedef struct tnode {
    tn_kind kind;
    int line;
    int op;                 /* operator, negated test, ... */
    char *name;             /* text / name / attribute / filter / test / macro; malloc'd */
    size_t name_len;
    tv cval;                /* E_CONST */
    struct tnode **kids;    /* children; call args: positional then keyword values */
    int nkids, capkids;
    char **kwnames;         /* keyword names of the last nkw kids (calls, macro params) */
    int nkw;
    int *ops;               /* E_COMPARE operators, one per kid after the first */
    struct tnode *a, *b, *c;
} tnode;

void tpl_node_free(tnode *n);

struct tpl_template {
    tnode *root;
};

int tpl_parse_tokens(ttoken *toks, size_t ntoks, tnode **root, hr_err *err);

/* ---------------------------------------------------------------- render */
typedef struct tscope {
    struct tscope *parent;
    tv vars;                /* TV_DICT */
} tscope;

typedef struct tctx {
    hr_err *err;
    tscope *root;
    tscope *scope;          /* where names resolve now */
    tbuf *out;              /* current output buffer */
    int depth;              /* macro / call nesting */
    uint64_t budget;        /* remaining loop iterations + output work */
    int brk;                /* 1 = break, 2 = continue pending */
    bool folding;           /* evaluating a constant {{ }} (jinja2 folds it) */
} tctx;

/* Call arguments: positional values then keyword values with names. */
typedef struct targs {
    tv *pos; int npos;
    tv *kw; const char **kwn; int nkw;
} targs;

int tpl_eval(tctx *c, const tnode *n, tv *out);
int tpl_call_value(tctx *c, const tnode *at, tv callee, targs *a, tv *out);
int tpl_iterate(tctx *c, const tnode *at, tv v, tv *list_out);  /* list_out: a TL_LIST */
int tpl_compare(tctx *c, const tnode *at, int op, tv a, tv b, bool *res);
int tpl_order(tctx *c, const tnode *at, tv a, tv b, int *res);   /* <0, 0, >0 */
int tpl_binop(tctx *c, const tnode *at, int op, tv a, tv b, tv *out); /* OP_ADD .. OP_POW */
int tpl_getattr(tctx *c, const tnode *at, tv obj, const char *name, tv *out);
int tpl_getitem(tctx *c, const tnode *at, tv obj, tv key, tv *out);

/* builtins.c */
bool tpl_filter_known(const char *name);
bool tpl_test_known(const char *name);
int tpl_filter(tctx *c, const tnode *at, const char *name, tv v, targs *a, tv *out);
int tpl_test(tctx *c, const tnode *at, const char *name, tv v, targs *a, bool *res);
int tpl_method(tctx *c, const tnode *at, tv self, const char *name, targs *a, tv *out);
bool tpl_method_exists(tv self, const char *name, const char **static_name);
bool tpl_global_known(const char *name, const char **static_name);
int tpl_call_global(tctx *c, const tnode *at, const char *name, targs *a, tv *out);

int tpl_fail(tctx *c, const tnode *at, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
