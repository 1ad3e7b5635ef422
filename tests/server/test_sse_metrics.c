/* SSE framing (data: lines, blank-line separators, [DONE]) and the Prometheus
 * exposition: HELP/TYPE for every metric, cumulative histogram buckets with
 * inclusive upper bounds, _count/_sum, label escaping, engine gauges. */
#include <string.h>

#include "server/server.h"
#include "test.h"

static void test_sse(void) {
    srv_buf b = {0};
    srv_sse_data(&b, "{\"a\":1}");
    srv_sse_data(&b, "{\"b\":\"x y\"}");
    srv_sse_done(&b);
    CHECK_STREQ(b.p, "data: {\"a\":1}\n\ndata: {\"b\":\"x y\"}\n\ndata: [DONE]\n\n");
    /* a client splits events on blank lines and strips "data: " */
    int events = 0;
    for (char *p = b.p, *e; (e = strstr(p, "\n\n")); p = e + 2, events++) CHECK(!strncmp(p, "data: ", 6));
    CHECK_EQ_INT(events, 3);
    srv_buf_free(&b);
}

/* Value of the sample line that starts with `prefix` (exact up to the value). */
static double value_of(const char *text, const char *prefix) {
    const char *p = text;
    size_t n = strlen(prefix);
    while ((p = strstr(p, prefix))) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ') return strtod(p + n + 1, NULL);
        p += n;
    }
    return -1;
}

static void test_utf8(void) {
    struct {
        const char *in, *out;
    } cases[] = {
        {"plain", "plain"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"a\xff" "b", "a\xef\xbf\xbd"
                   "b"},
        {"\xc3", "\xef\xbf\xbd"},                                 /* truncated */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong '/' */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xf4\x90\x80\x80x", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                              "x"}, /* > U+10FFFF */
        {"", ""},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        srv_buf b = {0};
        srv_buf_append_utf8(&b, cases[i].in, strlen(cases[i].in));
        CHECK_MSG(b.p && !strcmp(b.p, cases[i].out), "case %zu", i);
        json_t *j = json_string(b.p ? b.p : ""); /* jansson accepts the result */
        CHECK(j != NULL);
        json_decref(j);
        srv_buf_free(&b);
    }
}

static void test_histogram(void) {
    static const double bounds[] = {0.1, 0.5, 1.0};
    srv_histogram h;
    srv_histogram_init(&h, bounds, 3);
    double vals[] = {0.05, 0.1, 0.3, 0.5, 0.7, 2.0, 9.0};
    for (size_t i = 0; i < HR_ARRAY_LEN(vals); i++) srv_histogram_observe(&h, vals[i]);
    CHECK_EQ_INT(h.counts[0], 2); /* 0.05 and 0.1 (le is inclusive) */
    CHECK_EQ_INT(h.counts[1], 2);
    CHECK_EQ_INT(h.counts[2], 1);
    CHECK_EQ_INT(h.counts[3], 2);
    CHECK_EQ_INT(h.count, 7);
    CHECK_NEAR(h.sum, 12.65, 1e-9);
}

static void test_render(void) {
    srv_metrics m;
    srv_metrics_init(&m);
    srv_metrics_observe(&m, &m.ttft, 0.003);
    srv_metrics_observe(&m, &m.ttft, 0.2);
    srv_metrics_observe(&m, &m.ttft, 5000);
    srv_metrics_observe(&m, &m.itl, 0.02);
    srv_metrics_observe(&m, &m.e2e, 1.0);
    srv_metrics_observe(&m, &m.queue, 0.0);
    srv_metrics_finished(&m, SRV_FINISH_STOP);
    srv_metrics_finished(&m, SRV_FINISH_STOP);
    srv_metrics_finished(&m, SRV_FINISH_ABORT);
    hr_engine_stats st = {.num_running = 3,
                          .num_waiting = 7,
                          .kv_usage = 0.25,
                          .prompt_tokens_total = 1234,
                          .generation_tokens_total = 99,
                          .prefix_queries_total = 64,
                          .prefix_hits_total = 32,
                          .num_preemptions_total = 5};
    srv_buf b = {0};
    srv_metrics_render(&m, &st, "my \"model\"\\x", &b);
    const char *t = b.p;
    const char *names[] = {"time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                           "request_queue_time_seconds"};
    char line[256];
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        snprintf(line, sizeof line, "# TYPE hearth:%s histogram\n", names[i]);
        CHECK_MSG(strstr(t, line), "%s", line);
        snprintf(line, sizeof line, "# HELP hearth:%s ", names[i]);
        CHECK_MSG(strstr(t, line), "%s", line);
    }
    const char *gauges[] = {"num_requests_running", "num_requests_waiting", "kv_cache_usage_perc"};
    for (size_t i = 0; i < HR_ARRAY_LEN(gauges); i++) {
        snprintf(line, sizeof line, "# TYPE hearth:%s gauge\n", gauges[i]);
        CHECK_MSG(strstr(t, line), "%s", line);
    }
    const char *counters[] = {"prompt_tokens_total",     "generation_tokens_total", "prefix_cache_queries_total",
                              "prefix_cache_hits_total", "num_preemptions_total",   "request_success_total"};
    for (size_t i = 0; i < HR_ARRAY_LEN(counters); i++) {
        snprintf(line, sizeof line, "# TYPE hearth:%s counter\n", counters[i]);
        CHECK_MSG(strstr(t, line), "%s", line);
    }
#define L "model_name=\"my \\\"model\\\"\\\\x\"}"
    CHECK_NEAR(value_of(t, "hearth:num_requests_running{" L), 3, 0);
    CHECK_NEAR(value_of(t, "hearth:num_requests_waiting{" L), 7, 0);
    CHECK_NEAR(value_of(t, "hearth:kv_cache_usage_perc{" L), 0.25, 1e-12);
    CHECK_NEAR(value_of(t, "hearth:prompt_tokens_total{" L), 1234, 0);
    CHECK_NEAR(value_of(t, "hearth:num_preemptions_total{" L), 5, 0);
    CHECK_NEAR(value_of(t, "hearth:request_success_total{finished_reason=\"stop\"," L), 2, 0);
    CHECK_NEAR(value_of(t, "hearth:request_success_total{finished_reason=\"length\"," L), 0, 0);
    CHECK_NEAR(value_of(t, "hearth:request_success_total{finished_reason=\"abort\"," L), 1, 0);
    /* cumulative buckets */
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_bucket{le=\"0.001\"," L), 0, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_bucket{le=\"0.005\"," L), 1, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_bucket{le=\"0.25\"," L), 2, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_bucket{le=\"2560\"," L), 2, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_bucket{le=\"+Inf\"," L), 3, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_count{" L), 3, 0);
    CHECK_NEAR(value_of(t, "hearth:time_to_first_token_seconds_sum{" L), 5000.203, 1e-9);
    CHECK_NEAR(value_of(t, "hearth:request_queue_time_seconds_bucket{le=\"0.001\"," L), 1, 0);
    CHECK_NEAR(value_of(t, "hearth:inter_token_latency_seconds_bucket{le=\"0.01\"," L), 0, 0);
    CHECK_NEAR(value_of(t, "hearth:inter_token_latency_seconds_bucket{le=\"0.025\"," L), 1, 0);
    /* every line is a comment or "name{labels} value" */
    int lines = 0;
    for (const char *p = t; *p; lines++) {
        const char *e = strchr(p, '\n');
        CHECK(e != NULL);
        if (!e) break;
        if (*p != '#') CHECK(memchr(p, '{', (size_t)(e - p)) && memchr(p, ' ', (size_t)(e - p)));
        p = e + 1;
    }
    CHECK(lines > 100);
    srv_buf_free(&b);
    srv_metrics_destroy(&m);
}

int main(void) {
    test_sse();
    test_utf8();
    test_histogram();
    test_render();
    return test_report("server/test_sse_metrics");
}
