/* Prometheus text exposition (format 0.0.4) with vLLM's metric names under a
 * "hearth:" prefix. Histogram buckets follow vLLM's (vllm/v1/metrics/loggers.py)
 * with finer sub-10 ms steps, since a CPU server on a tiny model lives there. */
#include <math.h>
#include <string.h>

#include "server/server.h"

static const double k_ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
                                       1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
static const double k_itl_bounds[] = {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2, 0.3,
                                      0.4,   0.5,    0.75,  1.0,    2.5,  5.0,   7.5,  10.0,  20.0, 40.0, 80.0};
static const double k_latency_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05,  0.1,   0.3,   0.5,    0.8,
                                          1.0,   1.5,   2.0,  2.5,   5.0,   10.0,  15.0,  20.0,   30.0,
                                          40.0,  50.0,  60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

void srv_histogram_init(srv_histogram *h, const double *bounds, int n_bounds) {
    HR_ASSERT(n_bounds < (int)HR_ARRAY_LEN(h->counts));
    *h = (srv_histogram){.bounds = bounds, .n_bounds = n_bounds};
}

void srv_histogram_observe(srv_histogram *h, double v) {
    if (isnan(v)) return;
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i]) i++; /* le: v <= bound counts in the bucket */
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    srv_histogram_init(&m->ttft, k_ttft_bounds, (int)HR_ARRAY_LEN(k_ttft_bounds));
    srv_histogram_init(&m->itl, k_itl_bounds, (int)HR_ARRAY_LEN(k_itl_bounds));
    srv_histogram_init(&m->e2e, k_latency_bounds, (int)HR_ARRAY_LEN(k_latency_bounds));
    srv_histogram_init(&m->queue, k_latency_bounds, (int)HR_ARRAY_LEN(k_latency_bounds));
}

void srv_metrics_destroy(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_metrics_observe(srv_metrics *m, srv_histogram *h, double v) {
    pthread_mutex_lock(&m->mu);
    srv_histogram_observe(h, v);
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_finished(srv_metrics *m, int srv_finish) {
    if (srv_finish < 0 || srv_finish >= SRV_FINISH_N) return;
    pthread_mutex_lock(&m->mu);
    m->success[srv_finish]++;
    pthread_mutex_unlock(&m->mu);
}

/* Label values escape backslash, double quote and newline (exposition format). */
static void put_label(srv_buf *b, const char *v) {
    for (; *v; v++) {
        if (*v == '\\')
            srv_buf_puts(b, "\\\\");
        else if (*v == '"')
            srv_buf_puts(b, "\\\"");
        else if (*v == '\n')
            srv_buf_puts(b, "\\n");
        else
            srv_buf_append(b, v, 1);
    }
}

static void header(srv_buf *b, const char *name, const char *type, const char *help) {
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(srv_buf *b, const char *name, const char *extra_label, const char *model, double v) {
    srv_buf_printf(b, "%s{%s%smodel_name=\"", name, extra_label ? extra_label : "", extra_label ? "," : "");
    put_label(b, model);
    if (v == floor(v) && fabs(v) < 1e15)
        srv_buf_printf(b, "\"} %.1f\n", v);
    else
        srv_buf_printf(b, "\"} %.9g\n", v);
}

static void histogram(srv_buf *b, const char *name, const char *help, const srv_histogram *h, const char *model) {
    header(b, name, "histogram", help);
    char bucket[160], le[64];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            snprintf(le, sizeof le, "le=\"%g\"", h->bounds[i]);
        else
            snprintf(le, sizeof le, "le=\"+Inf\"");
        sample(b, bucket, le, model, (double)cum);
    }
    char n[160];
    snprintf(n, sizeof n, "%s_count", name);
    sample(b, n, NULL, model, (double)h->count);
    snprintf(n, sizeof n, "%s_sum", name);
    sample(b, n, NULL, model, h->sum);
}

void srv_metrics_render(srv_metrics *m, const hr_engine_stats *st, const char *model, srv_buf *b) {
    hr_engine_stats z = {0};
    if (!st) st = &z;
    header(b, "hearth:num_requests_running", "gauge", "Number of requests in model execution batches.");
    sample(b, "hearth:num_requests_running", NULL, model, st->num_running);
    header(b, "hearth:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    sample(b, "hearth:num_requests_waiting", NULL, model, st->num_waiting);
    header(b, "hearth:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.");
    sample(b, "hearth:kv_cache_usage_perc", NULL, model, st->kv_usage);
    header(b, "hearth:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
    sample(b, "hearth:prompt_tokens_total", NULL, model, (double)st->prompt_tokens_total);
    header(b, "hearth:generation_tokens_total", "counter", "Number of generation tokens processed.");
    sample(b, "hearth:generation_tokens_total", NULL, model, (double)st->generation_tokens_total);
    header(b, "hearth:prefix_cache_queries_total", "counter",
           "Prefix cache queries, in terms of number of queried tokens.");
    sample(b, "hearth:prefix_cache_queries_total", NULL, model, (double)st->prefix_queries_total);
    header(b, "hearth:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached tokens.");
    sample(b, "hearth:prefix_cache_hits_total", NULL, model, (double)st->prefix_hits_total);
    header(b, "hearth:num_preemptions_total", "counter", "Cumulative number of preemptions from the engine.");
    sample(b, "hearth:num_preemptions_total", NULL, model, (double)st->num_preemptions_total);

    pthread_mutex_lock(&m->mu);
    header(b, "hearth:request_success_total", "counter", "Count of successfully processed requests.");
    static const char *const reasons[SRV_FINISH_N] = {"stop", "length", "abort"};
    for (int i = 0; i < SRV_FINISH_N; i++) {
        char l[64];
        snprintf(l, sizeof l, "finished_reason=\"%s\"", reasons[i]);
        sample(b, "hearth:request_success_total", l, model, (double)m->success[i]);
    }
    histogram(b, "hearth:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &m->ttft, model);
    histogram(b, "hearth:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", &m->itl, model);
    histogram(b, "hearth:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", &m->e2e, model);
    histogram(b, "hearth:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.",
              &m->queue, model);
    pthread_mutex_unlock(&m->mu);
}
