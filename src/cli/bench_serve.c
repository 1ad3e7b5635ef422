/* `hearth bench serve`: a load generator for any OpenAI-compatible server,
 * measured like `vllm bench serve`: request throughput, output tok/s, TTFT,
 * TPOT (time per output token after the first), ITL (gaps between streamed
 * chunks) with mean/median/p95/p99. Requests stream (SSE) with
 * stream_options.include_usage so output token counts come from the server.
 * Datasets: random token-id prompts (exact input length), fixed text, or a
 * ShareGPT-style JSON file. Arrivals: all at once or Poisson at --request-rate,
 * capped by --max-concurrency. Talks to loopback or any URL the user names. */
#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/common.h"

typedef struct {
    const char *base_url, *endpoint, *model, *dataset, *dataset_path, *result_file, *api_key, *fixed_prompt;
    int num_prompts, concurrency, input_len, output_len, vocab, save, ignore_eos, quiet;
    double rate, range_ratio;
    unsigned seed;
} serve_opts;

typedef struct {
    char *body;          /* request JSON */
    int expect_out;
    double arrival;      /* seconds from start */
    /* results */
    int ok, out_tokens, prompt_tokens, n_chunks;
    double t_start, t_first, t_end;
    double *itl;
    int n_itl, cap_itl;
    char err[160];
} req_t;

typedef struct {
    serve_opts *o;
    req_t *reqs;
    int next;
    int done;
    pthread_mutex_t mu;
    double t0;
} run_t;

/* ---- SSE parsing --------------------------------------------------------- */
typedef struct {
    req_t *r;
    char *buf;
    size_t len, cap;
    double last;
} stream_t;

static void handle_event(stream_t *s, const char *data) {
    req_t *r = s->r;
    if (!strcmp(data, "[DONE]")) return;
    json_error_t je;
    json_t *j = json_loads(data, 0, &je);
    if (!j) return;
    json_t *usage = json_object_get(j, "usage");
    if (json_is_object(usage)) {
        json_t *ct = json_object_get(usage, "completion_tokens"), *pt = json_object_get(usage, "prompt_tokens");
        if (json_is_integer(ct)) r->out_tokens = (int)json_integer_value(ct);
        if (json_is_integer(pt)) r->prompt_tokens = (int)json_integer_value(pt);
    }
    json_t *err = json_object_get(j, "error");
    if (err) {
        json_t *m = json_object_get(err, "message");
        snprintf(r->err, sizeof r->err, "%s", json_is_string(m) ? json_string_value(m) : "server error");
    }
    json_t *choices = json_object_get(j, "choices");
    int has_text = 0;
    size_t i;
    json_t *c;
    json_array_foreach(choices, i, c) {
        json_t *t = json_object_get(c, "text");
        json_t *d = json_object_get(c, "delta");
        if (!t && d) t = json_object_get(d, "content");
        if (!t && d) t = json_object_get(d, "reasoning_content");
        if (json_is_string(t) && json_string_length(t) > 0) has_text = 1;
    }
    if (has_text) {
        double now = hr_time_now();
        if (r->n_chunks == 0) r->t_first = now;
        else {
            if (r->n_itl == r->cap_itl) {
                r->cap_itl = r->cap_itl ? r->cap_itl * 2 : 64;
                r->itl = hr_xrealloc(r->itl, sizeof(double) * r->cap_itl);
            }
            r->itl[r->n_itl++] = now - s->last;
        }
        s->last = now;
        r->n_chunks++;
    }
    json_decref(j);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *user) {
    stream_t *s = user;
    size_t n = size * nmemb;
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->buf = hr_xrealloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = 0;
    /* consume complete lines */
    char *start = s->buf, *nl;
    while ((nl = strchr(start, '\n'))) {
        *nl = 0;
        if (nl > start && nl[-1] == '\r') nl[-1] = 0;
        if (!strncmp(start, "data:", 5)) {
            const char *d = start + 5;
            while (*d == ' ') d++;
            handle_event(s, d);
        } else if (start[0] == '{') {
            handle_event(s, start); /* non-streamed error body */
        }
        start = nl + 1;
    }
    size_t rest = s->len - (size_t)(start - s->buf);
    memmove(s->buf, start, rest);
    s->len = rest;
    s->buf[rest] = 0;
    return n;
}

static void do_request(serve_opts *o, req_t *r, CURL *curl) {
    char url[1024];
    snprintf(url, sizeof url, "%s%s", o->base_url, o->endpoint);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[512];
    if (o->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->api_key);
        h = curl_slist_append(h, auth);
    }
    stream_t s = {.r = r};
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 3600L);
    r->t_start = hr_time_now();
    s.last = r->t_start;
    CURLcode rc = curl_easy_perform(curl);
    r->t_end = hr_time_now();
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) snprintf(r->err, sizeof r->err, "%s", curl_easy_strerror(rc));
    else if (status != 200 && !r->err[0]) snprintf(r->err, sizeof r->err, "HTTP %ld", status);
    r->ok = rc == CURLE_OK && status == 200 && !r->err[0] && r->n_chunks > 0;
    if (r->ok && r->out_tokens == 0) r->out_tokens = r->n_chunks; /* server gave no usage */
    curl_slist_free_all(h);
    free(s.buf);
}

static void *worker(void *arg) {
    run_t *run = arg;
    CURL *curl = curl_easy_init();
    for (;;) {
        pthread_mutex_lock(&run->mu);
        int i = run->next < run->o->num_prompts ? run->next++ : -1;
        pthread_mutex_unlock(&run->mu);
        if (i < 0) break;
        req_t *r = &run->reqs[i];
        double wait = run->t0 + r->arrival - hr_time_now();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&ts, NULL);
        }
        do_request(run->o, r, curl);
        pthread_mutex_lock(&run->mu);
        run->done++;
        int d = run->done;
        pthread_mutex_unlock(&run->mu);
        if (!run->o->quiet && isatty(2) && (d % 8 == 0 || d == run->o->num_prompts)) {
            int w = 30, f = d * w / run->o->num_prompts;
            fprintf(stderr, "\rrequests [");
            for (int k = 0; k < w; k++) fputc(k < f ? '#' : '.', stderr);
            fprintf(stderr, "] %d/%d", d, run->o->num_prompts);
            if (d == run->o->num_prompts) fputc('\n', stderr);
        }
    }
    curl_easy_cleanup(curl);
    return NULL;
}

/* ---- datasets ------------------------------------------------------------ */
static uint64_t rng_state;
static uint64_t rnd(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rnd01(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static int scaled_len(int base, double ratio) {
    if (ratio <= 0) return base;
    int lo = (int)(base * (1 - ratio)), hi = (int)(base * (1 + ratio));
    if (lo < 1) lo = 1;
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

static char *make_body(serve_opts *o, json_t *prompt, int max_tokens) {
    int chat = strstr(o->endpoint, "chat") != NULL;
    json_t *b = json_object();
    json_object_set_new(b, "model", json_string(o->model));
    if (chat) {
        json_t *msgs = json_array(), *m = json_object();
        if (json_is_array(prompt)) { /* chat cannot take ids: fall back to a text rendering */
            json_t *s = json_string("Hello");
            json_decref(prompt);
            prompt = s;
        }
        json_object_set_new(m, "role", json_string("user"));
        json_object_set_new(m, "content", prompt);
        json_array_append_new(msgs, m);
        json_object_set_new(b, "messages", msgs);
        json_object_set_new(b, "max_completion_tokens", json_integer(max_tokens));
    } else {
        json_object_set_new(b, "prompt", prompt);
        json_object_set_new(b, "max_tokens", json_integer(max_tokens));
    }
    json_object_set_new(b, "temperature", json_real(0.0));
    json_object_set_new(b, "stream", json_true());
    json_t *so = json_object();
    json_object_set_new(so, "include_usage", json_true());
    json_object_set_new(b, "stream_options", so);
    if (o->ignore_eos) json_object_set_new(b, "ignore_eos", json_true());
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    return s;
}

static int build_dataset(serve_opts *o, req_t *reqs) {
    rng_state = o->seed;
    json_t *sharegpt = NULL;
    if (!strcmp(o->dataset, "sharegpt")) {
        json_error_t je;
        sharegpt = json_load_file(o->dataset_path, 0, &je);
        if (!json_is_array(sharegpt) || json_array_size(sharegpt) == 0) {
            fprintf(stderr, "hearth bench serve: %s: not a ShareGPT JSON array (%s)\n", o->dataset_path,
                    sharegpt ? "empty or not an array" : je.text);
            json_decref(sharegpt);
            return -1;
        }
    }
    double t = 0;
    for (int i = 0; i < o->num_prompts; i++) {
        json_t *prompt = NULL;
        int out = scaled_len(o->output_len, o->range_ratio);
        if (!strcmp(o->dataset, "random")) {
            int in = scaled_len(o->input_len, o->range_ratio);
            prompt = json_array();
            for (int k = 0; k < in; k++) json_array_append_new(prompt, json_integer(10 + (int)(rnd() % (uint64_t)(o->vocab - 10))));
        } else if (!strcmp(o->dataset, "fixed")) {
            prompt = json_string(o->fixed_prompt);
        } else {
            /* ShareGPT: [{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}] */
            json_t *e = json_array_get(sharegpt, (size_t)i % json_array_size(sharegpt));
            json_t *conv = json_object_get(e, "conversations");
            if (!conv) conv = json_object_get(e, "conversation");
            json_t *first = json_array_get(conv, 0);
            json_t *v = json_object_get(first, "value");
            if (!v) v = json_object_get(first, "content");
            if (!json_is_string(v)) {
                fprintf(stderr, "hearth bench serve: %s: entry %d has no conversations[0].value string\n",
                        o->dataset_path, i);
                json_decref(sharegpt);
                return -1;
            }
            prompt = json_string(json_string_value(v));
            json_t *ans = json_object_get(json_array_get(conv, 1), "value");
            if (json_is_string(ans) && o->output_len <= 0) out = HR_MAX(1, (int)(json_string_length(ans) / 4));
        }
        if (out < 1) out = 1;
        reqs[i].body = make_body(o, prompt, out);
        reqs[i].expect_out = out;
        reqs[i].arrival = t;
        if (o->rate > 0 && isfinite(o->rate)) t += -log(1.0 - rnd01()) / o->rate;
    }
    json_decref(sharegpt);
    return 0;
}

/* ---- statistics ---------------------------------------------------------- */
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
typedef struct { double mean, median, p95, p99; } summary;
static summary summarize(double *v, int n) {
    summary s = {0};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmpd);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    s.mean = sum / n;
#define PCT(p) (v[(int)floor((p) / 100.0 * (n - 1))] + (v[(int)ceil((p) / 100.0 * (n - 1))] - v[(int)floor((p) / 100.0 * (n - 1))]) * ((p) / 100.0 * (n - 1) - floor((p) / 100.0 * (n - 1))))
    s.median = PCT(50);
    s.p95 = PCT(95);
    s.p99 = PCT(99);
#undef PCT
    return s;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: hearth bench serve [options]\n"
            "  --base-url URL            server (default http://127.0.0.1:8000)\n"
            "  --endpoint PATH           /v1/completions (default) or /v1/chat/completions\n"
            "  --model NAME              model field (default: first of GET /v1/models)\n"
            "  --dataset-name random|fixed|sharegpt   (default random)\n"
            "  --dataset-path FILE       ShareGPT-style JSON (for sharegpt)\n"
            "  --prompt TEXT             the prompt of the fixed dataset\n"
            "  --random-input-len N      prompt tokens (random: token ids, exact) (default 128)\n"
            "  --random-output-len N     max tokens per request (default 128)\n"
            "  --random-range-ratio R    lengths uniform in [N(1-R), N(1+R)] (default 0)\n"
            "  --vocab-size N            random token ids are drawn from [10, N) (default 500)\n"
            "  --num-prompts N           requests (default 100)\n"
            "  --max-concurrency N       requests in flight at most (default: all)\n"
            "  --request-rate R          Poisson arrivals per second (default inf: all at once)\n"
            "  --ignore-eos              ask the server to ignore EOS (fixed output lengths)\n"
            "  --seed N                  dataset and arrival seed (default 0)\n"
            "  --api-key KEY             bearer token (default $OPENAI_API_KEY)\n"
            "  --save-result             write the results as JSON\n"
            "  --result-filename FILE    where (default hearth-bench-serve.json)\n"
            "  --quiet                   no progress bar\n"
            "Reports request throughput, output tok/s, TTFT / TPOT / ITL mean, median, p95, p99 (ms).\n");
}

static char *discover_model(serve_opts *o) {
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s/v1/models", o->base_url);
    struct { char *p; size_t n; } buf = {0};
    struct curl_slist *h = NULL;
    char auth[512];
    if (o->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->api_key);
        h = curl_slist_append(h, auth);
    }
    FILE *mem = open_memstream(&buf.p, &buf.n);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    CURLcode rc = curl_easy_perform(c);
    fclose(mem);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    char *name = NULL;
    if (rc == CURLE_OK) {
        json_t *j = json_loads(buf.p ? buf.p : "", 0, NULL);
        json_t *id = json_object_get(json_array_get(json_object_get(j, "data"), 0), "id");
        if (json_is_string(id)) name = hr_xstrdup(json_string_value(id));
        json_decref(j);
    } else {
        fprintf(stderr, "hearth bench serve: %s: %s\n", url, curl_easy_strerror(rc));
    }
    free(buf.p);
    return name;
}

int cmd_bench_serve(int argc, char **argv) {
    serve_opts o = {.base_url = "http://127.0.0.1:8000", .endpoint = "/v1/completions", .dataset = "random",
                    .num_prompts = 100, .input_len = 128, .output_len = 128, .vocab = 500, .rate = INFINITY,
                    .result_file = "hearth-bench-serve.json", .fixed_prompt = "Tell me a story about a lighthouse."};
    o.api_key = getenv("OPENAI_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--save-result")) { o.save = 1; continue; }
        if (!strcmp(a, "--ignore-eos")) { o.ignore_eos = 1; continue; }
        if (!strcmp(a, "--quiet")) { o.quiet = 1; continue; }
        if (!v) { fprintf(stderr, "hearth bench serve: unknown option or missing value '%s'\n", a); return 2; }
        char *end = NULL;
        if (!strcmp(a, "--base-url")) o.base_url = v;
        else if (!strcmp(a, "--endpoint")) o.endpoint = v;
        else if (!strcmp(a, "--model")) o.model = v;
        else if (!strcmp(a, "--dataset-name")) o.dataset = v;
        else if (!strcmp(a, "--dataset-path")) o.dataset_path = v;
        else if (!strcmp(a, "--prompt")) o.fixed_prompt = v;
        else if (!strcmp(a, "--result-filename")) o.result_file = v;
        else if (!strcmp(a, "--api-key")) o.api_key = v;
        else if (!strcmp(a, "--random-input-len")) o.input_len = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--random-output-len")) o.output_len = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--vocab-size")) o.vocab = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--num-prompts")) o.num_prompts = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--max-concurrency")) o.concurrency = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--seed")) o.seed = (unsigned)strtoul(v, &end, 10);
        else if (!strcmp(a, "--request-rate")) o.rate = strcmp(v, "inf") ? strtod(v, &end) : INFINITY;
        else if (!strcmp(a, "--random-range-ratio")) o.range_ratio = strtod(v, &end);
        else { fprintf(stderr, "hearth bench serve: unknown option '%s'\n", a); return 2; }
        if (end && *end) { fprintf(stderr, "hearth bench serve: %s: not a number: '%s'\n", a, v); return 2; }
        i++;
    }
    if (o.num_prompts < 1 || o.input_len < 1 || o.output_len < 1 || o.vocab < 11 || o.concurrency < 0 ||
        !(o.rate > 0) || o.range_ratio < 0 || o.range_ratio >= 1) {
        fprintf(stderr, "hearth bench serve: lengths, --num-prompts and --request-rate must be positive, "
                        "--vocab-size > 10, --random-range-ratio in [0, 1)\n");
        return 2;
    }
    if (strcmp(o.dataset, "random") && strcmp(o.dataset, "fixed") && strcmp(o.dataset, "sharegpt")) {
        fprintf(stderr, "hearth bench serve: unknown dataset '%s' (random, fixed, sharegpt)\n", o.dataset);
        return 2;
    }
    if (!strcmp(o.dataset, "sharegpt") && !o.dataset_path) {
        fprintf(stderr, "hearth bench serve: --dataset-name sharegpt needs --dataset-path\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 1;
    char *model_owned = NULL;
    req_t *reqs = NULL;
    if (!o.model) {
        o.model = model_owned = discover_model(&o);
        if (!o.model) {
            fprintf(stderr, "hearth bench serve: could not list models at %s/v1/models; pass --model\n", o.base_url);
            goto out;
        }
    }
    reqs = hr_xcalloc((size_t)o.num_prompts, sizeof *reqs);
    if (build_dataset(&o, reqs)) goto out;
    int nthreads = o.concurrency > 0 ? o.concurrency : o.num_prompts;
    if (nthreads > o.num_prompts) nthreads = o.num_prompts;
    if (nthreads > 1024) nthreads = 1024;
    run_t run = {.o = &o, .reqs = reqs};
    pthread_mutex_init(&run.mu, NULL);
    pthread_t *th = hr_xcalloc((size_t)nthreads, sizeof *th);
    run.t0 = hr_time_now();
    for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, &run);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    double dur = hr_time_now() - run.t0;
    free(th);
    pthread_mutex_destroy(&run.mu);

    int ok = 0, n_itl = 0;
    long out_tok = 0, in_tok = 0;
    for (int i = 0; i < o.num_prompts; i++) {
        if (!reqs[i].ok) continue;
        ok++;
        out_tok += reqs[i].out_tokens;
        in_tok += reqs[i].prompt_tokens;
        n_itl += reqs[i].n_itl;
    }
    double *ttft = hr_xcalloc((size_t)ok + 1, sizeof(double)), *tpot = hr_xcalloc((size_t)ok + 1, sizeof(double)),
           *e2e = hr_xcalloc((size_t)ok + 1, sizeof(double)), *itl = hr_xcalloc((size_t)n_itl + 1, sizeof(double));
    int k = 0, kt = 0, ki = 0;
    const char *first_err = NULL;
    for (int i = 0; i < o.num_prompts; i++) {
        req_t *r = &reqs[i];
        if (!r->ok) {
            if (!first_err) first_err = r->err[0] ? r->err : "no tokens streamed";
            continue;
        }
        ttft[k] = (r->t_first - r->t_start) * 1e3;
        e2e[k++] = (r->t_end - r->t_start) * 1e3;
        if (r->out_tokens > 1) tpot[kt++] = (r->t_end - r->t_first) * 1e3 / (r->out_tokens - 1);
        for (int j = 0; j < r->n_itl; j++) itl[ki++] = r->itl[j] * 1e3;
    }
    summary sttft = summarize(ttft, k), stpot = summarize(tpot, kt), sitl = summarize(itl, ki), se2e = summarize(e2e, k);
    printf("============ Serving Benchmark Result ============\n");
    printf("%-40s %d\n", "Successful requests:", ok);
    printf("%-40s %d\n", "Failed requests:", o.num_prompts - ok);
    if (first_err) printf("%-40s %s\n", "First error:", first_err);
    if (o.concurrency > 0) printf("%-40s %d\n", "Max concurrency:", o.concurrency);
    else printf("%-40s %s\n", "Max concurrency:", "unlimited");
    if (isfinite(o.rate)) printf("%-40s %.2f\n", "Request rate (req/s):", o.rate);
    else printf("%-40s %s\n", "Request rate (req/s):", "inf");
    printf("%-40s %.2f\n", "Benchmark duration (s):", dur);
    printf("%-40s %ld\n", "Total input tokens:", in_tok);
    printf("%-40s %ld\n", "Total generated tokens:", out_tok);
    printf("%-40s %.2f\n", "Request throughput (req/s):", ok / dur);
    printf("%-40s %.2f\n", "Output token throughput (tok/s):", out_tok / dur);
    printf("%-40s %.2f\n", "Total token throughput (tok/s):", (in_tok + out_tok) / dur);
#define ROW(name, s)                                                                              \
    printf("%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n%-40s %.2f\n", "Mean " name " (ms):", s.mean,   \
           "Median " name " (ms):", s.median, "P95 " name " (ms):", s.p95, "P99 " name " (ms):", s.p99)
    printf("---------------Time to First Token----------------\n");
    ROW("TTFT", sttft);
    printf("-----Time per Output Token (excl. 1st token)------\n");
    ROW("TPOT", stpot);
    printf("---------------Inter-token Latency----------------\n");
    ROW("ITL", sitl);
    printf("----------------End-to-end Latency----------------\n");
    ROW("E2EL", se2e);
    printf("==================================================\n");
#undef ROW
    if (o.save) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:f, s:i, s:i, s:f, s:f, s:f}", "base_url", o.base_url,
                              "model", o.model, "dataset", o.dataset, "num_prompts", o.num_prompts, "completed", ok,
                              "max_concurrency", o.concurrency, "duration", dur, "total_input_tokens", (int)in_tok,
                              "total_output_tokens", (int)out_tok, "request_throughput", ok / dur,
                              "output_throughput", out_tok / dur, "total_token_throughput", (in_tok + out_tok) / dur);
#define PUT(name, s)                                                      \
    json_object_set_new(j, "mean_" name "_ms", json_real(s.mean));      \
    json_object_set_new(j, "median_" name "_ms", json_real(s.median));  \
    json_object_set_new(j, "p95_" name "_ms", json_real(s.p95));        \
    json_object_set_new(j, "p99_" name "_ms", json_real(s.p99))
        PUT("ttft", sttft);
        PUT("tpot", stpot);
        PUT("itl", sitl);
        PUT("e2el", se2e);
#undef PUT
        json_object_set_new(j, "request_rate", isfinite(o.rate) ? json_real(o.rate) : json_string("inf"));
        if (json_dump_file(j, o.result_file, JSON_INDENT(2)) != 0)
            fprintf(stderr, "hearth bench serve: cannot write %s\n", o.result_file);
        else fprintf(stderr, "results saved to %s\n", o.result_file);
        json_decref(j);
    }
    free(ttft); free(tpot); free(e2e); free(itl);
    rc = ok == o.num_prompts ? 0 : 1;
out:
    if (reqs)
        for (int i = 0; i < o.num_prompts; i++) {
            free(reqs[i].body);
            free(reqs[i].itl);
        }
    free(reqs);
    free(model_owned);
    curl_global_cleanup();
    return rc;
}
