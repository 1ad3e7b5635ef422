/* Request validation table: every malformed body maps to status 400 (type
 * invalid_request_error) and names the offending field; valid bodies parse to
 * the expected sampling parameters, with generation_config defaults applied. */
#include <math.h>
#include <string.h>

#include "server/server.h"
#include "test.h"

#define VOCAB 512

typedef struct {
    srv_api api;
    const char *body;
    const char *param; /* expected param ("" = null) */
} bad_case;

static const bad_case k_bad[] = {
    {SRV_API_CHAT, "not json", ""},
    {SRV_API_CHAT, "{\"messages\": [", ""},
    {SRV_API_CHAT, "[1, 2]", ""},
    {SRV_API_CHAT, "{\"a\": 1, \"a\": 2}", ""},
    {SRV_API_CHAT, "{}", "messages"},
    {SRV_API_CHAT, "{\"messages\": \"hi\"}", "messages"},
    {SRV_API_CHAT, "{\"messages\": []}", "messages"},
    {SRV_API_CHAT, "{\"messages\": [5]}", "messages"},
    {SRV_API_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", "messages"},
    {SRV_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages"},
    {SRV_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages"},
    {SRV_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": 3}]}]}",
     "messages"},
#define M "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]"
    {SRV_API_CHAT, "{" M ", \"model\": 5}", "model"},
    {SRV_API_CHAT, "{" M ", \"temperature\": -1}", "temperature"},
    {SRV_API_CHAT, "{" M ", \"temperature\": \"hot\"}", "temperature"},
    {SRV_API_CHAT, "{" M ", \"top_p\": 0}", "top_p"},
    {SRV_API_CHAT, "{" M ", \"top_p\": 1.5}", "top_p"},
    {SRV_API_CHAT, "{" M ", \"top_k\": -2}", "top_k"},
    {SRV_API_CHAT, "{" M ", \"top_k\": 2.5}", "top_k"},
    {SRV_API_CHAT, "{" M ", \"min_p\": 2}", "min_p"},
    {SRV_API_CHAT, "{" M ", \"presence_penalty\": 3}", "presence_penalty"},
    {SRV_API_CHAT, "{" M ", \"frequency_penalty\": -2.5}", "frequency_penalty"},
    {SRV_API_CHAT, "{" M ", \"repetition_penalty\": 0}", "repetition_penalty"},
    {SRV_API_CHAT, "{" M ", \"n\": 0}", "n"},
    {SRV_API_CHAT, "{" M ", \"n\": 100000}", "n"},
    {SRV_API_CHAT, "{" M ", \"n\": \"2\"}", "n"},
    {SRV_API_CHAT, "{" M ", \"max_tokens\": 0}", "max_tokens"},
    {SRV_API_CHAT, "{" M ", \"max_tokens\": -5}", "max_tokens"},
    {SRV_API_CHAT, "{" M ", \"max_tokens\": \"10\"}", "max_tokens"},
    {SRV_API_CHAT, "{" M ", \"max_completion_tokens\": 0}", "max_completion_tokens"},
    {SRV_API_CHAT, "{" M ", \"max_tokens\": 4, \"min_tokens\": 8}", "min_tokens"},
    {SRV_API_CHAT, "{" M ", \"min_tokens\": -1}", "min_tokens"},
    {SRV_API_CHAT, "{" M ", \"seed\": \"x\"}", "seed"},
    {SRV_API_CHAT, "{" M ", \"logit_bias\": [1]}", "logit_bias"},
    {SRV_API_CHAT, "{" M ", \"logit_bias\": {\"abc\": 1}}", "logit_bias"},
    {SRV_API_CHAT, "{" M ", \"logit_bias\": {\"5\": 200}}", "logit_bias"},
    {SRV_API_CHAT, "{" M ", \"logit_bias\": {\"512\": 1}}", "logit_bias"},
    {SRV_API_CHAT, "{" M ", \"logit_bias\": {\"5\": \"x\"}}", "logit_bias"},
    {SRV_API_CHAT, "{" M ", \"stop\": 5}", "stop"},
    {SRV_API_CHAT, "{" M ", \"stop\": [\"a\", 1]}", "stop"},
    {SRV_API_CHAT,
     "{" M ", \"stop\": [\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\","
     "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]}",
     "stop"},
    {SRV_API_CHAT, "{" M ", \"stop_token_ids\": \"x\"}", "stop_token_ids"},
    {SRV_API_CHAT, "{" M ", \"stop_token_ids\": [9999]}", "stop_token_ids"},
    {SRV_API_CHAT, "{" M ", \"logprobs\": 1}", "logprobs"},
    {SRV_API_CHAT, "{" M ", \"logprobs\": true, \"top_logprobs\": 21}", "top_logprobs"},
    {SRV_API_CHAT, "{" M ", \"top_logprobs\": 2}", "top_logprobs"},
    {SRV_API_CHAT, "{" M ", \"stream\": \"yes\"}", "stream"},
    {SRV_API_CHAT, "{" M ", \"stream_options\": {\"include_usage\": true}}", "stream_options"},
    {SRV_API_CHAT, "{" M ", \"stream\": true, \"stream_options\": 3}", "stream_options"},
    {SRV_API_CHAT, "{" M ", \"stream\": true, \"stream_options\": {\"include_usage\": 1}}", "stream_options"},
    {SRV_API_CHAT, "{" M ", \"ignore_eos\": 1}", "ignore_eos"},
    {SRV_API_CHAT, "{" M ", \"tools\": {}}", "tools"},
    {SRV_API_CHAT, "{" M ", \"response_format\": {\"type\": \"json_object\"}}", "response_format"},
    {SRV_API_CHAT, "{" M ", \"response_format\": \"json\"}", "response_format"},
    {SRV_API_COMPLETIONS, "{}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": 5}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": []}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [1, \"a\"]}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [\"a\", [1]]}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [[1, 2], []]}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [600]}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [-1]}", "prompt"},
    {SRV_API_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": 21}", "logprobs"},
    {SRV_API_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": true}", "logprobs"},
    {SRV_API_COMPLETIONS, "{\"prompt\": \"x\", \"suffix\": \"y\"}", "suffix"},
    {SRV_API_COMPLETIONS, "{\"prompt\": \"x\", \"echo\": \"y\"}", "echo"},
    {SRV_API_COMPLETIONS, "{\"prompt\": [\"a\", \"b\", \"c\"], \"n\": 60}", "n"},
};

/* A stop string over the length limit (built at run time: 600 bytes). */
static void test_long_stop(void) {
    char body[1024];
    int n = snprintf(body, sizeof body, "{\"prompt\": \"a\", \"stop\": \"");
    memset(body + n, 'x', 600);
    snprintf(body + n + 600, sizeof body - (size_t)n - 600, "\"}");
    srv_pool *pool = srv_pool_new();
    srv_gen_req r;
    srv_error e = {0};
    CHECK(srv_parse_gen_request(SRV_API_COMPLETIONS, body, strlen(body), VOCAB, NULL, pool, &r, &e) == -1);
    CHECK_STREQ(e.param, "stop");
    srv_gen_req_free(&r);
    srv_pool_free(pool);
}

static void test_bad(void) {
    for (size_t i = 0; i < HR_ARRAY_LEN(k_bad); i++) {
        srv_pool *pool = srv_pool_new();
        srv_gen_req r;
        srv_error e = {0};
        int rc = srv_parse_gen_request(k_bad[i].api, k_bad[i].body, strlen(k_bad[i].body), VOCAB, NULL, pool, &r, &e);
        CHECK_MSG(rc == -1, "case %zu accepted: %s", i, k_bad[i].body);
        CHECK_MSG(e.status == 400, "case %zu: status %d", i, e.status);
        CHECK_MSG(e.type && !strcmp(e.type, "invalid_request_error"), "case %zu: type %s", i, e.type);
        CHECK_MSG(!strcmp(e.param, k_bad[i].param), "case %zu (%s): param '%s' != '%s' (%s)", i, k_bad[i].body, e.param,
                  k_bad[i].param, e.message);
        CHECK_MSG(e.message[0], "case %zu: empty message", i);
        srv_gen_req_free(&r);
        srv_pool_free(pool);
    }
}

static void test_chat_ok(void) {
    const char *body =
        "{\"model\": \"m\", \"messages\": [{\"role\": \"system\", \"content\": \"s\"},"
        " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\", \"text\": "
        "\"b\"}]}],"
        " \"temperature\": 0, \"top_p\": 0.5, \"top_k\": 7, \"min_p\": 0.1, \"seed\": -3, \"n\": 2,"
        " \"max_completion_tokens\": 9, \"stop\": [\"x\", \"\", \"yz\"], \"stop_token_ids\": [4, 5],"
        " \"logprobs\": true, \"top_logprobs\": 3, \"logit_bias\": {\"7\": -100, \"9\": 2.5},"
        " \"stream\": true, \"stream_options\": {\"include_usage\": true}, \"ignore_eos\": true, \"min_tokens\": 2,"
        " \"unknown_field\": {\"ignored\": 1}}";
    srv_pool *pool = srv_pool_new();
    srv_gen_req r;
    srv_error e = {0};
    int rc = srv_parse_gen_request(SRV_API_CHAT, body, strlen(body), VOCAB, NULL, pool, &r, &e);
    CHECK_MSG(rc == 0, "%s", e.message);
    if (rc == 0) {
        CHECK_STREQ(r.model, "m");
        CHECK_EQ_INT(json_array_size(r.messages), 2);
        CHECK_STREQ(json_string_value(json_object_get(json_array_get(r.messages, 1), "content")), "a\nb");
        CHECK_STREQ(json_string_value(json_object_get(json_array_get(r.messages, 0), "role")), "system");
        CHECK(r.sp.temperature == 0.0f);
        CHECK_NEAR(r.sp.top_p, 0.5, 1e-7);
        CHECK_EQ_INT(r.sp.top_k, 7);
        CHECK_NEAR(r.sp.min_p, 0.1, 1e-7);
        CHECK(r.sp.has_seed && r.sp.seed == (uint64_t)-3);
        CHECK_EQ_INT(r.n, 2);
        CHECK_EQ_INT(r.max_tokens, 9);
        CHECK(r.max_tokens_set);
        CHECK_EQ_INT(r.n_stops, 2);
        CHECK_STREQ(r.stops[0], "x");
        CHECK_STREQ(r.stops[1], "yz");
        CHECK_EQ_INT(r.n_stop_ids, 2);
        CHECK_EQ_INT(r.stop_ids[1], 5);
        CHECK(r.logprobs);
        CHECK_EQ_INT(r.top_logprobs, 3);
        CHECK_EQ_INT(r.sp.logprobs, 3);
        CHECK_EQ_INT(r.sp.n_logit_bias, 2);
        CHECK(r.stream && r.include_usage && r.sp.ignore_eos);
        CHECK_EQ_INT(r.sp.min_tokens, 2);
    }
    srv_gen_req_free(&r);
    srv_pool_free(pool);
}

static void test_defaults(void) {
    hr_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gen_temperature = 0.6f;
    cfg.gen_top_p = 0.9f;
    cfg.gen_top_k = 20;
    cfg.gen_min_p = NAN;
    cfg.gen_repetition_penalty = 1.1f;
    cfg.gen_max_new_tokens = -1;
    const char *body = "{\"prompt\": \"hello\", \"top_p\": 0.7}";
    srv_pool *pool = srv_pool_new();
    srv_gen_req r;
    srv_error e = {0};
    int rc = srv_parse_gen_request(SRV_API_COMPLETIONS, body, strlen(body), VOCAB, &cfg, pool, &r, &e);
    CHECK_MSG(rc == 0, "%s", e.message);
    if (rc == 0) {
        CHECK_NEAR(r.sp.temperature, 0.6, 1e-6); /* generation_config */
        CHECK_NEAR(r.sp.top_p, 0.7, 1e-6);       /* request wins */
        CHECK_EQ_INT(r.sp.top_k, 20);
        CHECK(r.sp.min_p == 0.0f); /* unset in both: neutral */
        CHECK_NEAR(r.sp.repetition_penalty, 1.1, 1e-6);
        CHECK_EQ_INT(r.max_tokens, -1);
        CHECK(!r.max_tokens_set);
        CHECK_EQ_INT(r.n, 1);
        CHECK(!r.stream && !r.logprobs && r.sp.logprobs == -1);
        CHECK_EQ_INT(r.n_prompts, 1);
        CHECK_STREQ(r.prompts[0].text, "hello");
    }
    srv_gen_req_free(&r);
    srv_pool_free(pool);

    /* generation_config max_new_tokens is a default, not a request */
    cfg.gen_max_new_tokens = 100;
    pool = srv_pool_new();
    rc = srv_parse_gen_request(SRV_API_COMPLETIONS, body, strlen(body), VOCAB, &cfg, pool, &r, &e);
    CHECK(rc == 0 && r.max_tokens == 100 && !r.max_tokens_set);
    srv_gen_req_free(&r);
    srv_pool_free(pool);

    /* neutral defaults without a config */
    pool = srv_pool_new();
    rc = srv_parse_gen_request(SRV_API_COMPLETIONS, body, strlen(body), VOCAB, NULL, pool, &r, &e);
    CHECK(rc == 0 && r.sp.temperature == 1.0f && r.sp.top_k == 0 && r.sp.repetition_penalty == 1.0f);
    srv_gen_req_free(&r);
    srv_pool_free(pool);
}

static void test_prompt_shapes(void) {
    struct {
        const char *body;
        int n_prompts, first_len;
        bool text;
    } cases[] = {
        {"{\"prompt\": \"abc\"}", 1, 0, true},
        {"{\"prompt\": [\"a\", \"b\", \"c\"]}", 3, 0, true},
        {"{\"prompt\": [1, 2, 3]}", 1, 3, false},
        {"{\"prompt\": [[1, 2], [3], [4, 5, 6]], \"logprobs\": 2, \"echo\": true}", 3, 2, false},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        srv_pool *pool = srv_pool_new();
        srv_gen_req r;
        srv_error e = {0};
        int rc =
            srv_parse_gen_request(SRV_API_COMPLETIONS, cases[i].body, strlen(cases[i].body), VOCAB, NULL, pool, &r, &e);
        CHECK_MSG(rc == 0, "case %zu: %s", i, e.message);
        if (rc == 0) {
            CHECK_EQ_INT(r.n_prompts, cases[i].n_prompts);
            CHECK_EQ_INT(r.prompts[0].text != NULL, cases[i].text);
            if (!cases[i].text) CHECK_EQ_INT(r.prompts[0].n_ids, cases[i].first_len);
        }
        if (i == 3 && rc == 0) {
            CHECK_EQ_INT(r.prompts[2].ids[2], 6);
            CHECK(r.echo && r.logprobs && r.top_logprobs == 2);
        }
        srv_gen_req_free(&r);
        srv_pool_free(pool);
    }
}

/* Random mutations of a valid body must never crash or leak (ASan run). */
static void test_fuzz(void) {
    const char *seed_body =
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}]}],"
        " \"n\": 2, \"stop\": [\"x\"], \"logit_bias\": {\"3\": 1}, \"stream\": true}";
    size_t len = strlen(seed_body);
    char buf[512];
    uint64_t x = 0x1234567u;
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, seed_body, len + 1);
        int muts = 1 + (int)(x % 4);
        for (int m = 0; m < muts; m++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[x % len] = "{}[]\",:0123456789-.eatrufnl \\"[(x >> 20) % 30];
        }
        srv_pool *pool = srv_pool_new();
        srv_gen_req r;
        srv_error e = {0};
        if (srv_parse_gen_request(SRV_API_CHAT, buf, len, VOCAB, NULL, pool, &r, &e) == 0)
            ok++;
        else
            CHECK_MSG(e.status == 400 && e.message[0], "status %d", e.status);
        srv_gen_req_free(&r);
        srv_pool_free(pool);
    }
    CHECK(ok > 0); /* some mutations stay valid (e.g. inside strings) */
}

static void test_error_json(void) {
    srv_error e;
    srv_error_set(&e, 404, "model_not_found", "model", "The model `%s` does not exist.", "x");
    char *s = srv_error_json(&e);
    json_t *j = json_loads(s, 0, NULL);
    json_t *o = json_object_get(j, "error");
    CHECK(json_is_object(o));
    CHECK_STREQ(json_string_value(json_object_get(o, "message")), "The model `x` does not exist.");
    CHECK_STREQ(json_string_value(json_object_get(o, "type")), "invalid_request_error");
    CHECK_STREQ(json_string_value(json_object_get(o, "param")), "model");
    CHECK_STREQ(json_string_value(json_object_get(o, "code")), "model_not_found");
    json_decref(j);
    free(s);
    srv_error_set(&e, 401, NULL, NULL, "bad key \xff");
    s = srv_error_json(&e);
    j = json_loads(s, 0, NULL);
    o = json_object_get(j, "error");
    CHECK_STREQ(json_string_value(json_object_get(o, "type")), "authentication_error");
    CHECK(json_is_null(json_object_get(o, "param")) && json_is_null(json_object_get(o, "code")));
    CHECK(json_is_string(json_object_get(o, "message")));
    json_decref(j);
    free(s);
    srv_error_set(&e, 429, "queue_full", NULL, "busy");
    CHECK_STREQ(e.type, "rate_limit_error");
}

int main(void) {
    test_bad();
    test_long_stop();
    test_chat_ok();
    test_defaults();
    test_prompt_shapes();
    test_fuzz();
    test_error_json();
    return test_report("server/test_request");
}
