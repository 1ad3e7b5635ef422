/* Unit tests of the Jinja subset (no Python): core constructs compared with
 * outputs jinja2 3.1 produces under Hugging Face's environment, error paths,
 * and the ChatML fixture golden.
 * With `--batch CASES.json` it instead renders each {template, context} and
 * prints a JSON array of {"out": ...} / {"error": ...}: test_diff.py uses
 * that mode to compare with Python's jinja2. `--bench CASES.json N` times the
 * first case. */
#include <jansson.h>
#include <pthread.h>
#include <string.h>

#include "template/template.h"
#include "test.h"

static int batch(const char *path) {
    json_error_t je;
    json_t *cases = json_load_file(path, 0, &je);
    if (!json_is_array(cases)) {
        fprintf(stderr, "bad cases file %s: %s\n", path, je.text);
        return 2;
    }
    json_t *res = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *src = json_string_value(json_object_get(c, "template"));
        json_t *ctx = json_object_get(c, "context");
        hr_err err = {0};
        json_t *r = json_object();
        tpl_template *t = tpl_parse(src ? src : "", &err);
        char *out = NULL;
        if (t && tpl_render(t, ctx, &out, &err) == HR_OK) {
            json_t *js = json_stringn(out, strlen(out));
            if (js) json_object_set_new(r, "out", js);
            else json_object_set_new(r, "error", json_string("output is not valid UTF-8"));
        } else {
            json_t *em = json_string(err.msg);
            json_object_set_new(r, "error", em ? em : json_string("(error message is not UTF-8)"));
            json_object_set_new(r, "unsupported", json_boolean(err.code == HR_EUNSUP));
        }
        free(out);
        tpl_free(t);
        json_array_append_new(res, r);
    }
    json_dumpf(res, stdout, JSON_COMPACT);
    json_decref(res);
    json_decref(cases);
    return 0;
}

/* --bench CASES.json N: parse + render the first case N times, print ms each. */
static int bench(const char *path, int n) {
    json_t *cases = json_load_file(path, 0, NULL);
    json_t *c = json_array_get(cases, 0);
    const char *src = json_string_value(json_object_get(c, "template"));
    if (!src) { fprintf(stderr, "bad cases file %s\n", path); json_decref(cases); return 2; }
    hr_err err = {0};
    double t0 = hr_time_now(), parse_s = 0;
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        double p0 = hr_time_now();
        tpl_template *t = tpl_parse(src, &err);
        parse_s += hr_time_now() - p0;
        char *out = NULL;
        if (!t || tpl_render(t, json_object_get(c, "context"), &out, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
        bytes = strlen(out);
        free(out);
        tpl_free(t);
    }
    double dt = (hr_time_now() - t0) / n;
    printf("%zu bytes out: %.3f ms per parse+render (parse %.3f ms)\n", bytes, dt * 1e3, parse_s / n * 1e3);
    json_decref(cases);
    return 0;
}

/* Renders src with the JSON context ctx; returns malloc'd output or NULL. */
static char *render(const char *src, const char *ctx_json, hr_err *err) {
    json_t *ctx = ctx_json ? json_loads(ctx_json, 0, NULL) : json_object();
    if (!ctx) { fprintf(stderr, "bad test context %s\n", ctx_json); return NULL; }
    char *out = NULL;
    tpl_template *t = tpl_parse(src, err);
    if (t && tpl_render(t, ctx, &out, err) != HR_OK) out = NULL;
    tpl_free(t);
    json_decref(ctx);
    return out;
}

#define EXPECT(src, ctx, want)                                                          \
    do {                                                                                \
        hr_err e_ = {0};                                                                \
        char *o_ = render((src), (ctx), &e_);                                           \
        CHECK_MSG(o_ && strcmp(o_, (want)) == 0, "%s\n  got  [%s]\n  want [%s]", (src), \
                  o_ ? o_ : e_.msg, (want));                                            \
        free(o_);                                                                       \
    } while (0)

#define EXPECT_ERR(src, ctx, want_code, needle)                                                    \
    do {                                                                                      \
        hr_err e_ = {0};                                                                      \
        char *o_ = render((src), (ctx), &e_);                                                 \
        CHECK_MSG(!o_ && e_.code == (want_code) && strstr(e_.msg, (needle)), "%s\n  got [%s] %d", \
                  (src), o_ ? o_ : e_.msg, e_.code);                                          \
        free(o_);                                                                             \
    } while (0)

static void test_expressions(void) {
    EXPECT("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}", NULL,
           "7|9|3|-4|1|2");
    EXPECT("{{ 1 / 2 }}|{{ 4 / 2 }}|{{ 2 ** 10 }}|{{ 2 ** 3 ** 2 }}|{{ 2 ** -1 }}", NULL, "0.5|2.0|1024|64|0.5");
    EXPECT("{{ 1e20 }}|{{ 1/3 }}|{{ 1e-5 }}|{{ 0.1 + 0.2 }}|{{ 1e16 }}|{{ 123456789012345.0 }}", NULL,
           "1e+20|0.3333333333333333|1e-05|0.30000000000000004|1e+16|123456789012345.0");
    EXPECT("{{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}|{{ 'x' + 'y' }}", NULL,
           "a1NoneTrue|ababab|[1, 2]|xy");
    EXPECT("{{ [1, 'a', none, true, 1.5, (1,), {'k': [2]}] }}", NULL,
           "[1, 'a', None, True, 1.5, (1,), {'k': [2]}]");
    EXPECT("{{ \"it's\" }}|{{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}", NULL,
           "it's|[\"it's\", 'say \"hi\"', 'both \\' \"']");
    EXPECT("{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 'a' in 'cat' }}|{{ 2 not in [1, 2] }}|{{ 'k' in {'k': 1} }}", NULL,
           "True|False|True|False|True");
    EXPECT("{{ x and y }}|{{ x or y }}|{{ not x }}|{{ none or 'd' }}", "{\"x\": 0, \"y\": \"yy\"}", "0|yy|True|d");
    EXPECT("{{ 'y' if x else 'n' }}|{{ 'y' if x }}|", "{\"x\": false}", "n||");
    EXPECT("{{ s[0] }}{{ s[-1] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ l[1:] }}|{{ l[::2] }}|{{ s[10] }}|",
           "{\"s\": \"h\u00e9llo\", \"l\": [1, 2, 3]}", "ho|\u00e9l|oll\u00e9h|[2, 3]|[1, 3]||");
    EXPECT("{{ m.role }}|{{ m['role'] }}|{{ m.missing }}|{{ m.items() | list }}", "{\"m\": {\"role\": \"user\"}}",
           "user|user||[('role', 'user')]");
    EXPECT("{{ undefined_var }}|{{ undefined_var is defined }}|{{ undefined_var | length }}", NULL, "|False|0");
    EXPECT_ERR("{{ undefined_var.attr }}", NULL, HR_EINVAL, "'undefined_var' is undefined");
    EXPECT_ERR("{{ 1 + 'a' }}", NULL, HR_EINVAL, "unsupported operand");
    EXPECT_ERR("{{ 1 / 0 }}", NULL, HR_EINVAL, "division by zero");
}

static void test_statements(void) {
    EXPECT("{% for x in l %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", "{\"l\": [\"a\",\"b\",\"c\"]}",
           "1a,2b,3c");
    EXPECT("{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty");
    EXPECT("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "{\"d\": {\"a\": 1, \"b\": [2]}}", "a=1;b=[2];");
    EXPECT("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
           NULL, "0134");
    EXPECT("{% for x in range(4) if x is odd %}{{ loop.index }}:{{ x }} {% endfor %}", NULL, "1:1 2:3 ");
    EXPECT("{% for x in 'ab' %}{{ loop.cycle('o', 'e') }}{{ loop.revindex }}{{ loop.previtem }}|{% endfor %}", NULL, "o2|e1a|");
    /* a for-loop iteration is a scope; namespaces carry state out */
    EXPECT("{% set c = 0 %}{% set ns = namespace(c=0) %}{% for i in range(3) %}{% set c = c + 1 %}{% set ns.c = ns.c + 1 %}{% endfor %}{{ c }}{{ ns.c }}",
           NULL, "03");
    EXPECT("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}x{{ a }}{% endset %}[{{ t }}]", NULL, "12[x1]");
    EXPECT("{% macro m(a, b='d') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(1, b=2) }}", NULL, "<1d><12>");
    EXPECT("{% if x %}a{% elif y %}b{% else %}c{% endif %}", "{\"x\": 0, \"y\": 1}", "b");
    EXPECT("{% raw %}{{ not parsed }}{% endraw %}", NULL, "{{ not parsed }}");
    EXPECT("{% filter upper %}abc{% endfilter %}", NULL, "ABC");
    EXPECT("{% generation %}gen{% endgeneration %}", NULL, "gen");
    EXPECT("{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}in{% endcall %}", NULL, "[in]");
    /* a caller kept past its call block must not reach the freed loop scope */
    EXPECT_ERR("{% set ns = namespace() %}{% macro k() %}{% set ns.c = caller %}{% endmacro %}"
               "{% for i in range(2) %}{% call k() %}{{ i }}{% endcall %}{% endfor %}{{ ns.c() }}",
               NULL, HR_EUNSUP, "after its call block");
}

static void test_whitespace(void) {
    /* trim_blocks drops the newline after a block tag; lstrip_blocks the
     * indentation before it; the final newline of the template is dropped. */
    EXPECT("{% if true %}\n  yes\n{% endif %}\n", NULL, "  yes\n");
    EXPECT("    {% if true %}\nA\n    {% endif %}\nB", NULL, "A\nB");
    EXPECT("a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc");
    EXPECT("a {{- 'x' -}} \n b", NULL, "axb");
    EXPECT("x {# comment #}\ny", NULL, "x y");
    EXPECT("  {{ 'v' }}  ", NULL, "  v  ");
    EXPECT("a\r\nb\rc\n\n", NULL, "a\nb\nc\n");
    EXPECT("  {%+ if true %}x{% endif %}", NULL, "  x");
}

static void test_filters(void) {
    EXPECT("{{ '  hi  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}", NULL,
           "hi|hi|Hello World|Hello");
    EXPECT("{{ [3, 1, 2] | sort | join(',') }}|{{ ['b', 'A', 'a'] | sort }}|{{ [1, 2] | first }}{{ [1, 2] | last }}", NULL,
           "1,2,3|['A', 'a', 'b']|12");
    EXPECT("{{ l | selectattr('r', 'equalto', 'u') | map(attribute='c') | join('+') }}",
           "{\"l\": [{\"r\": \"u\", \"c\": \"1\"}, {\"r\": \"a\", \"c\": \"2\"}, {\"r\": \"u\", \"c\": \"3\"}]}", "1+3");
    EXPECT("{{ l | rejectattr('r') | list | length }}", "{\"l\": [{\"r\": 1}, {}, {\"r\": 0}]}", "2");
    EXPECT("{{ x | default('d') }}|{{ '' | default('d', true) }}|{{ none | d('n') }}", NULL, "d|d|None");
    EXPECT("{{ d | tojson }}|{{ d | tojson(indent=2) }}", "{\"d\": {\"a\": [1, 2.5, \"\u00e9\\n\"], \"b\": null}}",
           "{\"a\": [1, 2.5, \"\u00e9\\n\"], \"b\": null}|{\n  \"a\": [\n    1,\n    2.5,\n    \"\u00e9\\n\"\n  ],\n  \"b\": null\n}");
    EXPECT("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'x\\ny' | indent(2, true) }}", NULL, "a\n  b\n\n  c|  x\n  y");
    EXPECT("{{ 3.14159 | round(2) }}|{{ 2.5 | round }}|{{ 2.7 | round(0, 'floor') }}|{{ -3 | abs }}", NULL, "3.14|2.0|2.0|3");
    EXPECT("{{ '42' | int + 1 }}|{{ '4.7' | int }}|{{ 'x' | int }}|{{ '1.5' | float }}|{{ 3 | string ~ 'x' }}", NULL,
           "43|4|0|1.5|3x");
    EXPECT("{{ [1, 2, 1, 3] | unique | list }}|{{ [1, 2] | reverse | list }}|{{ 'abc' | reverse }}|{{ 'a b  c' | wordcount }}", NULL,
           "[1, 2, 3]|[2, 1]|cba|3");
    EXPECT("{{ {'b': 1, 'a': 2} | dictsort }}|{{ {'a': 1} | items | list }}|{{ 'aXa' | replace('a', 'b') }}", NULL,
           "[('a', 2), ('b', 1)]|[('a', 1)]|bXb");
    EXPECT("{{ '<&>' | e }}|{{ [1, 5, 2] | max }}{{ [4, 2] | min }}{{ [1, 2] | sum }}", NULL, "&lt;&amp;&gt;|523");
}

static void test_methods(void) {
    EXPECT("{{ s.startswith('ab') }}{{ s.endswith(('x', 'cd')) }}|{{ s.upper() }}|{{ ' a '.strip() }}|{{ 'xax'.rstrip('x') }}",
           "{\"s\": \"abcd\"}", "TrueTrue|ABCD|a|xa");
    EXPECT("{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a.b.c'.rsplit('.', 1) }}", NULL,
           "['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a.b', 'c']");
    EXPECT("{{ d.get('a') }}|{{ d.get('z', 'def') }}|{{ d.keys() | list }}|{{ d.values() | list }}", "{\"d\": {\"a\": 1}}",
           "1|def|['a']|[1]");
    EXPECT("{{ 'hello world'.title() }}|{{ 'x'.join(['a', 'b']) }}|{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}", NULL,
           "Hello World|axb|13");
}

static void test_errors(void) {
    EXPECT_ERR("{{ raise_exception('bad role') }}", NULL, HR_EINVAL, "bad role");
    EXPECT_ERR("{% include 'x' %}", NULL, HR_EUNSUP, "line 1: unsupported tag 'include'");
    EXPECT_ERR("\n\n{{ x | nosuchfilter }}", NULL, HR_EUNSUP, "line 3: unsupported filter 'nosuchfilter'");
    EXPECT_ERR("{{ x is nosuchtest }}", NULL, HR_EUNSUP, "unsupported test 'nosuchtest'");
    EXPECT_ERR("{% if x %}", NULL, HR_EINVAL, "expected 'elif'");
    EXPECT_ERR("{{ 'abc }}", NULL, HR_EINVAL, "unterminated string");
    EXPECT_ERR("{{ (1 }}", NULL, HR_EINVAL, "line 1");
    EXPECT_ERR("{% endfor %}", NULL, HR_EINVAL, "unknown tag 'endfor'");
    EXPECT_ERR("{% break %}", NULL, HR_EINVAL, "outside of a loop");
    EXPECT_ERR("{{ x.items }}", "{\"x\": {}}", HR_EUNSUP, "unsupported");
    EXPECT_ERR("{{ '%s' % 1 }}", NULL, HR_EUNSUP, "unsupported");
    EXPECT_ERR("{% set x.y = 1 %}", "{\"x\": {}}", HR_EINVAL, "non-namespace");
    EXPECT_ERR("{{ range(1000000) | length }}", NULL, HR_EINVAL, "Range too big");
}

static void test_chat_golden(void) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/tokenizers/tiny-bpe/tokenizer_config.json", test_fixtures());
    json_t *cfg = json_load_file(path, 0, NULL);
    snprintf(path, sizeof(path), "%s/tokenizers/tiny-bpe/chat_golden.json", test_fixtures());
    json_t *golden = json_load_file(path, 0, NULL);
    if (!cfg || !golden) {
        fprintf(stderr, "chat golden fixtures missing under %s\n", test_fixtures());
        test_failed_++;
        json_decref(cfg);
        json_decref(golden);
        return;
    }
    const char *src = json_string_value(json_object_get(cfg, "chat_template"));
    size_t i;
    json_t *c;
    int n = 0;
    json_array_foreach(json_object_get(golden, "cases"), i, c) {
        char *out = NULL;
        hr_err err = {0};
        int rc = tpl_render_chat(src, json_object_get(c, "messages"), NULL,
                                 json_is_true(json_object_get(c, "add_generation_prompt")), NULL, NULL, NULL, &out, &err);
        const char *want = json_string_value(json_object_get(c, "rendered"));
        CHECK_MSG(rc == HR_OK && out && strcmp(out, want) == 0, "chat golden case %zu: %s", i, out ? out : err.msg);
        free(out);
        n++;
    }
    CHECK(n >= 6);
    json_decref(cfg);
    json_decref(golden);
}

/* tpl_render_chat builds transformers' context: tools/documents defined as
 * None, bos/eos, extra keys, reasoning aliased to thinking/reasoning_content. */
static void test_render_chat(void) {
    json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"q\"},"
                              " {\"role\": \"assistant\", \"content\": \"a\", \"reasoning_content\": \"r\"}]", 0, NULL);
    json_t *extra = json_loads("{\"reasoning_effort\": \"high\"}", 0, NULL);
    const char *src = "{{ bos_token }}{{ tools is defined }}{{ tools is none }}{{ documents is none }}{{ reasoning_effort }}"
                      "{% for m in messages %}[{{ m.thinking }}{{ m.reasoning_content }}]{{ m | tojson }}{% endfor %}"
                      "{{ add_generation_prompt }}{{ eos_token is defined }}";
    char *out = NULL;
    hr_err err = {0};
    int rc = tpl_render_chat(src, msgs, NULL, true, "<s>", NULL, extra, &out, &err);
    CHECK_MSG(rc == HR_OK && out &&
                  strcmp(out, "<s>TrueTrueTruehigh[]{\"role\": \"user\", \"content\": \"q\"}[rr]{\"thinking\": \"r\", "
                              "\"role\": \"assistant\", \"content\": \"a\", \"reasoning_content\": \"r\"}TrueFalse") == 0,
              "%s", out ? out : err.msg);
    free(out);
    rc = tpl_render_chat("{{ raise_exception('no system role') }}", msgs, NULL, false, NULL, NULL, NULL, &out, &err);
    CHECK(rc == HR_EINVAL && out == NULL && strstr(err.msg, "no system role"));
    json_decref(msgs);
    json_decref(extra);
}

/* One parsed template rendered on several threads at once. */
typedef struct thr_arg { const tpl_template *t; json_t *ctx; int bad; } thr_arg;

static void *thr_main(void *p) {
    thr_arg *a = p;
    for (int i = 0; i < 300; i++) {
        char *out = NULL;
        hr_err err = {0};
        if (tpl_render(a->t, a->ctx, &out, &err) != HR_OK || strcmp(out, "ab|A-B|x=1;") != 0) a->bad++;
        free(out);
    }
    return NULL;
}

static void test_threads(void) {
    hr_err err = {0};
    tpl_template *t = tpl_parse("{% set ns = namespace(s='') %}{% for x in l %}{% set ns.s = ns.s ~ x %}{% endfor %}"
                                "{{ ns.s }}|{{ l | map('upper') | join('-') }}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
                                &err);
    CHECK(t != NULL);
    json_t *ctx = json_loads("{\"l\": [\"a\", \"b\"], \"d\": {\"x\": 1}}", 0, NULL);
    pthread_t th[4];
    thr_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thr_arg){t, ctx, 0};
        pthread_create(&th[i], NULL, thr_main, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].bad, 0);
    }
    json_decref(ctx);
    tpl_free(t);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--batch") == 0) return batch(argv[2]);
    if (argc == 4 && strcmp(argv[1], "--bench") == 0) return bench(argv[2], atoi(argv[3]));
    test_expressions();
    test_statements();
    test_whitespace();
    test_filters();
    test_methods();
    test_errors();
    test_chat_golden();
    test_render_chat();
    test_threads();
    return test_report("template/test_render");
}
