/* Robustness of the template engine on arbitrary input: a bounded,
 * seeded mutation fuzzer (byte flips, deletions, duplicated spans, inserted
 * Jinja tokens, pure random bytes) over a corpus of real template shapes,
 * each result parsed and rendered with a chat context. It must never crash
 * or leak (run it under ASan/UBSan/LSan); errors are fine but must carry a
 * message. The work is bounded by iterations and by HEARTH_FUZZ_SECONDS.
 *
 * The same entry point builds as a libFuzzer target for longer runs (from
 * the repository root; TPL_SRCS = every .c file of src/template):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DTPL_LIBFUZZER -D_GNU_SOURCE \
 *     -Isrc -Itests tests/template/test_fuzz.c $TPL_SRCS src/core/common.c -ljansson -lm -lpthread
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "core/common.h"
#include "template/template.h"
#include "test.h"

static json_t *fuzz_context(void) {
    return json_pack("{s:[{s:s,s:s},{s:s,s:s},{s:s,s:s,s:[{s:s,s:{s:s,s:{s:s}}}]},{s:s,s:[{s:s,s:s}]}],"
                     "s:[{s:s,s:{s:s,s:s,s:{}}}],s:b,s:s,s:s,s:i,s:[i,i,i],s:{s:i,s:n}}",
                     "messages", "role", "system", "content", "sys", "role", "user", "content", "hi \xc3\xa9",
                     "role", "assistant", "content", "", "tool_calls", "type", "function", "function", "name", "f",
                     "arguments", "x", "1", "role", "user", "content", "type", "text", "text", "part",
                     "tools", "type", "function", "function", "name", "f", "description", "d", "parameters",
                     "add_generation_prompt", 1, "bos_token", "<s>", "eos_token", "</s>", "n", 3, "lst", 1, 2, 3,
                     "d", "a", 1, "b");
}

static const char *const SEEDS[] = {
    "{%- if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim"
    " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}",
    "{{- bos_token }}{%- if tools is not none %}{%- set ns = namespace(t=[]) %}{%- for t in tools %}"
    "{%- set ns.t = ns.t + [t.function.name] %}{%- endfor %}{{ ns.t | join(', ') }}\n{%- endif %}"
    "{%- for m in messages %}{%- if m.tool_calls is defined %}{%- for tc in m.tool_calls %}"
    "{{ tc.function.name }}({{ tc.function.arguments | tojson(indent=2) }}){% endfor %}{%- else %}"
    "<|{{ m.role }}|>{{ m.content if m.content is string else m.content | map(attribute='text') | join }}"
    "{%- endif %}{%- endfor %}",
    "{% macro r(x, y='d') %}{{ x ~ y }}{% endmacro %}{% for k, v in d.items() %}{{ r(k) }}{{ loop.index }}"
    "{% if loop.last %}{% break %}{% endif %}{% endfor %}{% set b %}{{ lst | sort | reverse | list }}{% endset %}"
    "{{ b | upper }}{% raw %}{{ x }}{% endraw %}{# c #}{{ 'abc'[::-1] }}{{ n is odd }}{{ 2 ** 8 // 3 % 5 }}",
    "{% for m in messages | selectattr('role', 'equalto', 'user') %}{{ m.content.strip().split(' ') }}"
    "{% else %}none{% endfor %}{{ messages | length > 2 and 'x' in 'xyz' or none }}{{ {'a': [1, (2,)]} | tojson }}"
    "{% filter lower %}ABC{% endfilter %}{% call r(1) %}c{% endcall %}{{ raise_exception('x') if n > 10 }}",
};

static const char *const PIECES[] = {
    "{{", "}}", "{%", "%}", "{%-", "-%}", "{#", "#}", "(", ")", "[", "]", "{", "}", "|", "'", "\"", " if ",
    " else ", " in ", " for ", " endfor ", " endif ", " set ", "loop.", ".", ",", "~", "**", "//", "not ",
    " is ", "none", "0", "-1", "1e308", "9223372036854775807", "\\", "\n", "\xff", "\xc3", "range(99999)",
    "{% for i in range(1000) %}{% for j in range(1000) %}", "* 100000", "messages", "caller()", "raw",
};

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static char *mutate(const char *src) {
    size_t n = strlen(src), cap = n * 2 + 256;
    char *s = hr_xmalloc(cap);
    memcpy(s, src, n + 1);
    int rounds = 1 + (int)(rnd() % 4);
    for (int r = 0; r < rounds; r++) {
        size_t i = n ? rnd() % (n + 1) : 0;
        switch (rnd() % 4) {
        case 0: /* delete */
            if (n) {
                size_t want = 1 + rnd() % 6; /* HR_MIN evaluates its arguments twice */
                size_t k = HR_MIN(n - i, want);
                memmove(s + i, s + i + k, n - i - k + 1);
                n -= k;
            }
            break;
        case 1: { /* insert a token */
            const char *p = PIECES[rnd() % HR_ARRAY_LEN(PIECES)];
            size_t k = strlen(p);
            if (n + k + 1 > cap) break;
            memmove(s + i + k, s + i, n - i + 1);
            memcpy(s + i, p, k);
            n += k;
            break;
        }
        case 2: { /* duplicate a span */
            size_t j = n ? rnd() % n : 0, want = 1 + rnd() % 16, k = HR_MIN(want, n - j);
            if (n + k + 1 > cap || !n) break;
            char tmp[16];
            memcpy(tmp, s + j, k);
            memmove(s + i + k, s + i, n - i + 1);
            memcpy(s + i, tmp, k);
            n += k;
            break;
        }
        default: /* flip a byte (never to NUL: the API takes C strings) */
            if (n && i < n) {
                char c = (char)(s[i] ^ (1 << (rnd() % 8)));
                s[i] = c ? c : 'x';
            }
        }
    }
    return s;
}

/* Parses and renders one source; checks the error contract. */
static void run_one(const char *src, json_t *ctx) {
    hr_err err = {0};
    tpl_template *t = tpl_parse(src, &err);
    if (!t) {
        CHECK_MSG(err.code < 0 && err.msg[0], "parse error without message for %s", src);
        return;
    }
    char *out = NULL;
    memset(&err, 0, sizeof(err));
    int rc = tpl_render(t, ctx, &out, &err);
    if (rc) CHECK_MSG(!out && err.code == rc && err.msg[0], "render error without message for %s", src);
    else CHECK(out != NULL);
    free(out);
    tpl_free(t);
}

#ifdef TPL_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static json_t *ctx;
    if (!ctx) ctx = fuzz_context();
    char *s = hr_xmalloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    run_one(s, ctx);
    free(s);
    return 0;
}
#else
int main(void) {
    json_t *ctx = fuzz_context();
    CHECK(ctx != NULL);
    const char *secs = getenv("HEARTH_FUZZ_SECONDS");
    double limit = secs ? atof(secs) : 10.0;
    rng_state = 0x9E3779B97F4A7C15ull;
    double t0 = hr_time_now();
    int iters = 0;
    for (; iters < 20000 && hr_time_now() - t0 < limit; iters++) {
        if (iters % 10 == 9) { /* pure random bytes */
            size_t n = rnd() % 200;
            char *s = hr_xmalloc(n + 1);
            for (size_t i = 0; i < n; i++) {
                char c = (char)(rnd() % 256);
                s[i] = c ? c : '{';
            }
            s[n] = 0;
            run_one(s, ctx);
            free(s);
            continue;
        }
        const char *seed = SEEDS[rnd() % HR_ARRAY_LEN(SEEDS)];
        char *m = mutate(seed);
        if (rnd() % 3 == 0) { /* mutate again: deeper changes */
            char *m2 = mutate(m);
            free(m);
            m = m2;
        }
        run_one(m, ctx);
        free(m);
    }
    /* Deep nesting must fail cleanly, not overflow the stack. */
    size_t depth = 100000;
    char *deep = hr_xmalloc(depth * 2 + 16);
    memcpy(deep, "{{ ", 3);
    memset(deep + 3, '(', depth);
    strcpy(deep + 3 + depth, " }}");
    run_one(deep, ctx);
    char *deep2 = hr_xmalloc(depth * 12 + 16);
    deep2[0] = 0;
    char *p = deep2;
    for (size_t i = 0; i < depth / 10; i++) p = stpcpy(p, "{% if 1 %}");
    run_one(deep2, ctx);
    free(deep);
    free(deep2);
    printf("fuzz: %d inputs in %.1f s\n", iters, hr_time_now() - t0);
    json_decref(ctx);
    return test_report("template/test_fuzz");
}
#endif
