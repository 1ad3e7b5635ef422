/* The HTTP server end to end over loopback with a scripted engine, so the
 * routes, SSE streaming, stop strings, n > 1, errors, auth, body limits,
 * disconnect aborts and quiesce run under ASan without a model. The fake
 * engine below replaces hr_engine_submit/abort/get_stats at link time (the
 * real engine's object is then never pulled from the archive); it emits one
 * deterministic token per request every millisecond from its own thread,
 * like the real engine's callbacks. The tokenizer is the real one (fixture
 * tiny-llama). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "server/server.h"
#include "template/template.h"
#include "test.h"

/* ------------------------------------------------------------ fake engine */

#define FAKE_MAX 512

typedef struct fake_req {
    uint64_t id;
    int32_t first;
    int max_tokens, generated;
    int32_t stop_ids[8];
    int n_stop;
    bool aborted, live;
    hr_event_cb cb;
    void *user;
} fake_req;

struct hr_engine {
    pthread_mutex_t mu;
    pthread_t th;
    bool stop;
    fake_req reqs[FAKE_MAX];
    uint64_t next_id;
    int max_live;
    int n_aborts, n_submits;
};

/* The scripted token stream: token k of a request whose prompt starts with p. */
static int32_t fake_token(int32_t p, int k) { return 3 + (int32_t)((p * 31 + k * 7) % 300); }

static void *fake_loop(void *arg) {
    hr_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        for (int i = 0; i < FAKE_MAX; i++) {
            fake_req *r = &e->reqs[i];
            if (!r->live) continue;
            double now = hr_time_now();
            hr_event ev = {.id = r->id,
                           .n_prompt_tokens = 4,
                           .n_cached_tokens = 0,
                           .t_arrival = now - 0.01,
                           .t_scheduled = now - 0.005,
                           .t_first_token = now,
                           .t_now = now};
            hr_sample_result res = {0};
            if (r->aborted) {
                ev.finish = HR_FINISH_ABORT;
            } else {
                res.id = fake_token(r->first, r->generated++);
                res.logprob = -0.5f;
                res.n_top = 2;
                res.top_ids[0] = res.id;
                res.top_logprobs[0] = -0.5f;
                res.top_ids[1] = 5;
                res.top_logprobs[1] = -1.5f;
                ev.n_tokens = 1;
                ev.tokens = &res;
                for (int s = 0; s < r->n_stop; s++)
                    if (r->stop_ids[s] == res.id) ev.finish = HR_FINISH_STOP;
                if (!ev.finish && r->max_tokens > 0 && r->generated >= r->max_tokens) ev.finish = HR_FINISH_LENGTH;
                /* without max_tokens: run until aborted (bounded, as a safety net) */
                if (!ev.finish && r->generated >= 100000) ev.finish = HR_FINISH_LENGTH;
            }
            if (ev.finish) r->live = false;
            r->cb(r->user, &ev);
        }
        pthread_mutex_unlock(&e->mu);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

int hr_engine_submit(hr_engine *e, const hr_request *req, hr_event_cb cb, void *user, uint64_t *id, hr_err *err) {
    pthread_mutex_lock(&e->mu);
    int live = 0, slot = -1;
    for (int i = 0; i < FAKE_MAX; i++) {
        if (e->reqs[i].live)
            live++;
        else if (slot < 0)
            slot = i;
    }
    if (live >= e->max_live || slot < 0) {
        pthread_mutex_unlock(&e->mu);
        return hr_err_set(err, HR_EFULL, "too many requests waiting (%d)", live);
    }
    fake_req *r = &e->reqs[slot];
    *r = (fake_req){.id = ++e->next_id,
                    .first = req->prompt[0],
                    .max_tokens = req->max_tokens,
                    .live = true,
                    .cb = cb,
                    .user = user};
    r->n_stop = HR_MIN(req->n_stop_ids, 8);
    if (r->n_stop) memcpy(r->stop_ids, req->stop_ids, (size_t)r->n_stop * sizeof(int32_t));
    *id = r->id;
    e->n_submits++;
    pthread_mutex_unlock(&e->mu);
    return HR_OK;
}

void hr_engine_abort(hr_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < FAKE_MAX; i++)
        if (e->reqs[i].live && e->reqs[i].id == id && !e->reqs[i].aborted) {
            e->reqs[i].aborted = true;
            e->n_aborts++;
        }
    pthread_mutex_unlock(&e->mu);
}

void hr_engine_get_stats(hr_engine *e, hr_engine_stats *s) {
    memset(s, 0, sizeof *s);
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < FAKE_MAX; i++) s->num_running += e->reqs[i].live;
    pthread_mutex_unlock(&e->mu);
    s->max_model_len = 64;
    s->kv_blocks_total = 16;
}

static int aborts(hr_engine *e) {
    pthread_mutex_lock(&e->mu);
    int n = e->n_aborts;
    pthread_mutex_unlock(&e->mu);
    return n;
}

static int live_requests(hr_engine *e) {
    hr_engine_stats st;
    hr_engine_get_stats(e, &st);
    return st.num_running;
}

/* A ChatML stand-in for the template module: this test is about HTTP. */
int tpl_render_chat(const char *source, json_t *messages, json_t *tools, bool add_generation_prompt,
                    const char *bos_token, const char *eos_token, json_t *extra, char **out, hr_err *err) {
    (void)source, (void)tools, (void)bos_token, (void)eos_token, (void)extra, (void)err;
    srv_buf b = {0};
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        const char *c = json_string_value(json_object_get(m, "content"));
        srv_buf_printf(&b, "<|im_start|>%s\n%s<|im_end|>\n", json_string_value(json_object_get(m, "role")), c ? c : "");
    }
    if (add_generation_prompt) srv_buf_puts(&b, "<|im_start|>assistant\n");
    *out = b.p ? b.p : hr_xstrdup("");
    return HR_OK;
}

/* ------------------------------------------------------------ HTTP client */

typedef struct http_resp {
    int status;
    char *headers;
    srv_buf body; /* de-chunked */
} http_resp;

static int port_g;

static int connect_srv(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_g)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static void dechunk(const char *p, size_t n, srv_buf *out) {
    const char *end = p + n;
    while (p < end) {
        char *e;
        unsigned long len = strtoul(p, &e, 16);
        const char *nl = strstr(p, "\r\n");
        if (!nl || len == 0) return;
        p = nl + 2;
        if ((size_t)(end - p) < len) len = (unsigned long)(end - p);
        srv_buf_append(out, p, len);
        p += len + 2;
    }
}

/* One request on a fresh connection (Connection: close); reads to EOF. */
static http_resp request(const char *method, const char *path, const char *body, const char *extra_headers) {
    http_resp r = {0};
    int fd = connect_srv();
    if (fd < 0) return r;
    srv_buf q = {0};
    srv_buf_printf(&q, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, path,
                   extra_headers ? extra_headers : "");
    if (body)
        srv_buf_printf(&q, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        srv_buf_puts(&q, "\r\n");
    send_all(fd, q.p, q.len);
    srv_buf_free(&q);
    srv_buf raw = {0};
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        srv_buf_append(&raw, buf, (size_t)n);
    }
    close(fd);
    if (!raw.p) return r;
    sscanf(raw.p, "HTTP/1.1 %d", &r.status);
    char *he = strstr(raw.p, "\r\n\r\n");
    if (he) {
        r.headers = strndup(raw.p, (size_t)(he - raw.p));
        const char *b = he + 4;
        size_t bn = raw.len - (size_t)(b - raw.p);
        if (strcasestr(r.headers, "transfer-encoding: chunked"))
            dechunk(b, bn, &r.body);
        else
            srv_buf_append(&r.body, b, bn);
    }
    if (!r.body.p) srv_buf_puts(&r.body, "");
    srv_buf_free(&raw);
    return r;
}

static void resp_free(http_resp *r) {
    free(r->headers);
    srv_buf_free(&r->body);
}

static json_t *body_json(const http_resp *r) { return json_loads(r->body.p ? r->body.p : "", 0, NULL); }

static const char *err_type(json_t *j) {
    return json_string_value(json_object_get(json_object_get(j, "error"), "type"));
}

/* Splits an SSE body into its JSON events; returns count, *done = saw [DONE] last. */
static int sse_events(const char *body, json_t **ev, int max, bool *done) {
    int n = 0;
    *done = false;
    const char *p = body;
    while (*p) {
        const char *e = strstr(p, "\n\n");
        if (!e) break;
        if (strncmp(p, "data: ", 6) != 0) break;
        if (!strncmp(p + 6, "[DONE]", 6)) {
            *done = e[2] == 0;
            break;
        }
        if (n < max) ev[n++] = json_loadb(p + 6, (size_t)(e - p - 6), 0, NULL);
        p = e + 2;
    }
    return n;
}

/* ---------------------------------------------------------------- tests */

static hr_engine fake;
static hr_tokenizer *tok_g;

/* noinline: gcc 12 otherwise sees a dangling pointer that is not there */
__attribute__((noinline)) static char *expected_text(int32_t first, int n) {
    int32_t ids[128];
    for (int k = 0; k < n; k++) ids[k] = fake_token(first, k);
    char *t = NULL;
    hr_err err;
    hr_tokenizer_decode(tok_g, ids, (size_t)n, true, &t, &err);
    return t;
}

static void test_small_routes(void) {
    http_resp r = request("GET", "/health", NULL, NULL);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    r = request("GET", "/version", NULL, "Authorization: Bearer sekret\r\n");
    CHECK_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    CHECK_STREQ(json_string_value(json_object_get(j, "version")) ?: "", "9.9.9");
    json_decref(j);
    resp_free(&r);
    r = request("GET", "/v1/models", NULL, "Authorization: Bearer sekret\r\n");
    j = body_json(&r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_STREQ(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")) ?: "", "tiny");
    json_decref(j);
    resp_free(&r);
    r = request("OPTIONS", "/v1/chat/completions", NULL, "Origin: http://ui\r\n"); /* CORS preflight, no key */
    CHECK_EQ_INT(r.status, 204);
    CHECK(r.headers && strcasestr(r.headers, "access-control-allow-origin: *"));
    CHECK(r.headers && strcasestr(r.headers, "access-control-allow-headers: authorization"));
    resp_free(&r);
    r = request("GET", "/metrics", NULL, "Authorization: Bearer sekret\r\n");
    CHECK(r.headers && strcasestr(r.headers, "access-control-allow-origin: *"));
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.p, "# TYPE hearth:time_to_first_token_seconds histogram") != NULL);
    resp_free(&r);
}

static void test_errors(void) {
    const char *auth = "Authorization: Bearer sekret\r\n";
    struct {
        const char *method, *path, *body, *headers;
        int status;
        const char *type;
    } cases[] = {
        {"GET", "/v1/models", NULL, NULL, 401, "authentication_error"},
        {"GET", "/metrics", NULL, "Authorization: Bearer wrong\r\n", 401, "authentication_error"},
        {"POST", "/v1/completions", "{\"prompt\": \"a\"}", "Authorization: Basic sekret\r\n", 401,
         "authentication_error"},
        {"GET", "/nope", NULL, NULL, 401, "authentication_error"}, /* auth before routing */
        {"GET", "/nope", NULL, auth, 404, "invalid_request_error"},
        {"GET", "/v1/completions", NULL, auth, 405, "invalid_request_error"},
        {"POST", "/v1/models", "{}", auth, 405, "invalid_request_error"},
        {"POST", "/v1/completions", "{bad json", auth, 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"prompt\": \"a\", \"temperature\": -1}", auth, 400, "invalid_request_error"},
        {"POST", "/v1/completions", "{\"prompt\": \"a\", \"model\": \"other\"}", auth, 404, "invalid_request_error"},
        {"POST", "/v1/chat/completions", "{\"messages\": 3}", auth, 400, "invalid_request_error"},
        {"POST", "/v1/completions",
         "{\"prompt\": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, "
         "21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, "
         "42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, "
         "63, 64, 65]}",
         auth, 400, "invalid_request_error"}, /* > max_model_len 64 */
        {"POST", "/v1/completions", "{\"prompt\": [1, 2], \"max_tokens\": 63}", auth, 400, "invalid_request_error"},
        {"POST", "/tokenize", "{\"prompt\": 5}", auth, 400, "invalid_request_error"},
        {"POST", "/detokenize", "{\"tokens\": [99999]}", auth, 400, "invalid_request_error"},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        http_resp r = request(cases[i].method, cases[i].path, cases[i].body, cases[i].headers);
        json_t *j = body_json(&r);
        CHECK_MSG(r.status == cases[i].status, "case %zu %s %s: %d (%s)", i, cases[i].method, cases[i].path, r.status,
                  r.body.p);
        CHECK_MSG(j && err_type(j) && !strcmp(err_type(j), cases[i].type), "case %zu: %s", i, r.body.p);
        json_decref(j);
        resp_free(&r);
    }
    /* 413 from Content-Length alone: the body is never sent */
    int fd = connect_srv();
    const char *hdr = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n";
    send_all(fd, hdr, strlen(hdr));
    char buf[4096] = {0};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 5000) == 1);
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    CHECK(n > 0 && strstr(buf, "HTTP/1.1 413") == buf);
    close(fd);
    /* a body over the limit that is sent anyway */
    srv_buf big = {0};
    srv_buf_puts(&big, "{\"prompt\": \"");
    for (int i = 0; i < 5000; i++) srv_buf_puts(&big, "x");
    srv_buf_puts(&big, "\"}");
    http_resp r = request("POST", "/v1/completions", big.p, auth);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    srv_buf_free(&big);
}

static void test_completion(void) {
    const char *auth = "Authorization: Bearer sekret\r\n";
    http_resp r = request("POST", "/v1/completions",
                          "{\"model\": \"tiny\", \"prompt\": [40, 41], \"max_tokens\": 6, \"logprobs\": 1}", auth);
    CHECK_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    char *want = expected_text(40, 6);
    CHECK_STREQ(json_string_value(json_object_get(c0, "text")) ?: "", want);
    CHECK_STREQ(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "length");
    CHECK_EQ_INT(json_array_size(json_object_get(json_object_get(c0, "logprobs"), "tokens")), 6);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(json_object_get(c0, "logprobs"), "text_offset"), 0)),
                 0);
    json_t *u = json_object_get(j, "usage");
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 6);
    CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 2);
    CHECK(json_is_object(json_object_get(u, "prompt_tokens_details")));
    CHECK(json_is_object(json_object_get(j, "timings")));
    CHECK(!strncmp(json_string_value(json_object_get(j, "id")) ?: "", "cmpl-", 5));
    free(want);
    json_decref(j);
    resp_free(&r);

    /* stop string spanning token boundaries: cut before it, finish "stop", engine aborted */
    int32_t first = 3; /* a prompt whose scripted text is ASCII, so any cut is valid JSON */
    for (;; first++) {
        want = expected_text(first, 12);
        bool ascii = strlen(want) >= 8;
        for (const char *p = want; *p; p++) ascii &= (unsigned char)*p < 0x80 && *p != '"' && *p != '\\';
        if (ascii || first > 300) break;
        free(want);
    }
    size_t wl = strlen(want);
    char stop[16] = {0};
    if (wl >= 8) memcpy(stop, want + wl / 2, 4);
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\": [%d], \"max_tokens\": 40, \"stop\": [\"zzzz\", \"%s\"]}", first, stop);
    int n_ab = aborts(&fake);
    r = request("POST", "/v1/completions", body, auth);
    j = body_json(&r);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    const char *text = json_string_value(json_object_get(c0, "text")) ?: "";
    const char *at = strstr(want, stop);
    size_t cutpos = at ? strlen(want) - strlen(at) : 0;
    CHECK_MSG(at && strlen(text) == cutpos && !strncmp(text, want, strlen(text)), "'%s' vs '%s' stop '%s'", text, want,
              stop);
    CHECK_STREQ(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "stop");
    CHECK(aborts(&fake) > n_ab);
    json_decref(j);
    resp_free(&r);
    free(want);

    /* stop_token_ids: the stop token ends the choice and is not shown */
    int32_t t3 = fake_token(60, 3);
    snprintf(body, sizeof body, "{\"prompt\": [60], \"max_tokens\": 40, \"stop_token_ids\": [%d]}", t3);
    r = request("POST", "/v1/completions", body, auth);
    j = body_json(&r);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    want = expected_text(60, 3);
    CHECK_STREQ(json_string_value(json_object_get(c0, "text")) ?: "", want);
    CHECK_STREQ(json_string_value(json_object_get(c0, "finish_reason")) ?: "", "stop");
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 4);
    free(want);
    json_decref(j);
    resp_free(&r);

    /* echo: the prompt text leads, logprob offsets count from it */
    r = request("POST", "/v1/completions",
                "{\"prompt\": \"hello\", \"max_tokens\": 2, \"echo\": true, \"logprobs\": 0}", auth);
    j = body_json(&r);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(!strncmp(json_string_value(json_object_get(c0, "text")) ?: "", "hello", 5));
    CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(json_object_get(c0, "logprobs"), "text_offset"), 0)),
                 5);
    json_decref(j);
    resp_free(&r);

    /* n = 3 over 2 prompts -> 6 choices in order */
    r = request("POST", "/v1/completions", "{\"prompt\": [[70], [71]], \"n\": 3, \"max_tokens\": 3}", auth);
    j = body_json(&r);
    json_t *ch = json_object_get(j, "choices");
    CHECK_EQ_INT(json_array_size(ch), 6);
    want = expected_text(71, 3);
    CHECK_STREQ(json_string_value(json_object_get(json_array_get(ch, 4), "text")) ?: "", want);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(ch, 5), "index")), 5);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 18);
    free(want);
    json_decref(j);
    resp_free(&r);
}

static void test_stream(void) {
    const char *auth = "Authorization: Bearer sekret\r\n";
    http_resp r =
        request("POST", "/v1/chat/completions",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 5, \"stream\": true,"
                " \"stream_options\": {\"include_usage\": true}, \"n\": 2, \"logprobs\": true,"
                " \"top_logprobs\": 1}",
                auth);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.headers && strcasestr(r.headers, "content-type: text/event-stream"));
    json_t *ev[256];
    bool done;
    int n = sse_events(r.body.p, ev, 256, &done);
    CHECK(done);
    CHECK(n >= 4);
    srv_buf text[2] = {{0}};
    int finishes = 0, role = 0, lps = 0;
    for (int i = 0; i < n; i++) {
        CHECK(ev[i] != NULL);
        if (!ev[i]) continue;
        CHECK_STREQ(json_string_value(json_object_get(ev[i], "object")) ?: "", "chat.completion.chunk");
        json_t *chs = json_object_get(ev[i], "choices");
        if (i < n - 1) CHECK(json_is_null(json_object_get(ev[i], "usage")));
        for (size_t k = 0; k < json_array_size(chs); k++) {
            json_t *c = json_array_get(chs, k);
            int idx = (int)json_integer_value(json_object_get(c, "index"));
            json_t *d = json_object_get(c, "delta");
            if (json_object_get(d, "role")) role++;
            const char *s = json_string_value(json_object_get(d, "content"));
            if (s && idx >= 0 && idx < 2) srv_buf_puts(&text[idx], s);
            if (json_is_string(json_object_get(c, "finish_reason"))) finishes++;
            lps += (int)json_array_size(json_object_get(json_object_get(c, "logprobs"), "content"));
        }
    }
    CHECK_EQ_INT(role, 2);
    CHECK_EQ_INT(finishes, 2);
    CHECK_EQ_INT(lps, 10);
    /* the prompt starts with <|im_start|> (id 1) whatever the chat text */
    char *want = expected_text(1, 5);
    CHECK_STREQ(text[0].p ?: "", want);
    CHECK_STREQ(text[1].p ?: "", want);
    free(want);
    json_t *last = ev[n - 1];
    CHECK_EQ_INT(json_array_size(json_object_get(last, "choices")), 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(last, "usage"), "completion_tokens")), 10);
    CHECK(json_is_object(json_object_get(last, "timings")));
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    srv_buf_free(&text[0]);
    srv_buf_free(&text[1]);
    resp_free(&r);

    /* completions stream without usage: timings ride on the last chunk */
    r = request("POST", "/v1/completions", "{\"prompt\": [80], \"max_tokens\": 4, \"stream\": true}", auth);
    n = sse_events(r.body.p, ev, 256, &done);
    CHECK(done && n >= 1);
    srv_buf t = {0};
    for (int i = 0; i < n; i++) {
        json_t *c = json_array_get(json_object_get(ev[i], "choices"), 0);
        srv_buf_puts(&t, json_string_value(json_object_get(c, "text")) ?: "");
        CHECK(json_object_get(ev[i], "usage") == NULL);
    }
    want = expected_text(80, 4);
    CHECK_STREQ(t.p ?: "", want);
    CHECK(n > 0 && json_is_object(json_object_get(ev[n - 1], "timings")));
    CHECK(n > 0 && !strcmp(json_string_value(json_object_get(json_array_get(json_object_get(ev[n - 1], "choices"), 0),
                                                             "finish_reason"))
                               ?: "",
                           "length"));
    for (int i = 0; i < n; i++) json_decref(ev[i]);
    free(want);
    srv_buf_free(&t);
    resp_free(&r);
}

static void wait_idle(void) {
    for (int i = 0; i < 10000 && live_requests(&fake) > 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static void test_disconnect_and_full(hr_server *srv) {
    /* a client that leaves mid-stream: its request is aborted at once */
    wait_idle();
    int n_ab = aborts(&fake);
    int fd = connect_srv();
    const char *b = "{\"prompt\": [90], \"stream\": true}"; /* endless until aborted */
    char req[512];
    snprintf(
        req, sizeof req,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sekret\r\nContent-Length: %zu\r\n\r\n%s",
        strlen(b), b);
    send_all(fd, req, strlen(req));
    char buf[512];
    CHECK(recv(fd, buf, sizeof buf, 0) > 0);
    close(fd);
    for (int i = 0; i < 10000 && aborts(&fake) == n_ab; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK_MSG(aborts(&fake) > n_ab, "no abort after disconnect");
    wait_idle();
    CHECK_EQ_INT(hr_server_in_flight(srv), 0);

    /* queue full -> 429 */
    pthread_mutex_lock(&fake.mu);
    fake.max_live = 0;
    pthread_mutex_unlock(&fake.mu);
    http_resp r = request("POST", "/v1/completions", "{\"prompt\": [1], \"n\": 2}", "Authorization: Bearer sekret\r\n");
    CHECK_EQ_INT(r.status, 429);
    json_t *j = body_json(&r);
    CHECK(j && err_type(j) && !strcmp(err_type(j), "rate_limit_error"));
    json_decref(j);
    resp_free(&r);
    pthread_mutex_lock(&fake.mu);
    fake.max_live = FAKE_MAX;
    pthread_mutex_unlock(&fake.mu);
}

static void test_tokenize(void) {
    const char *auth = "Authorization: Bearer sekret\r\n";
    http_resp r = request("POST", "/tokenize", "{\"prompt\": \"hello world\", \"return_token_strs\": true}", auth);
    CHECK_EQ_INT(r.status, 200);
    json_t *j = body_json(&r);
    json_t *toks = json_object_get(j, "tokens");
    CHECK(json_array_size(toks) > 0);
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "count")), json_array_size(toks));
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "max_model_len")), 64);
    CHECK_EQ_INT(json_array_size(json_object_get(j, "token_strs")), json_array_size(toks));
    char *dreq = NULL;
    json_t *d = json_pack("{s:O}", "tokens", toks);
    dreq = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    json_decref(j);
    resp_free(&r);
    r = request("POST", "/detokenize", dreq, auth);
    j = body_json(&r);
    CHECK_STREQ(json_string_value(json_object_get(j, "prompt")) ?: "", "hello world");
    json_decref(j);
    resp_free(&r);
    free(dreq);
    r = request("POST", "/tokenize", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", auth);
    j = body_json(&r);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(j, "tokens"), 0)), 1); /* <|im_start|> */
    json_decref(j);
    resp_free(&r);
}

static void test_quiesce(hr_server *srv) {
    hr_server_quiesce(srv);
    /* new connections are refused once the listener is closed; none accepted */
    int fd = connect_srv();
    CHECK(fd < 0);
    if (fd >= 0) close(fd);
}

int main(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/tiny-llama", test_fixtures());
    hr_err err = {0};
    if (hr_tokenizer_load_model(dir, &tok_g, &err) != HR_OK) TEST_SKIP("tokenizer: %s", err.msg);
    pthread_mutex_init(&fake.mu, NULL);
    fake.max_live = FAKE_MAX;
    pthread_create(&fake.th, NULL, fake_loop, &fake);

    hr_server_opts o;
    hr_server_opts_default(&o);
    o.host = "127.0.0.1";
    o.port = 0;
    o.model_path = dir;
    o.served_model_name = "tiny";
    o.api_key = "sekret";
    o.version = "9.9.9";
    o.max_request_bytes = 4096;
    hr_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 512;
    cfg.gen_temperature = cfg.gen_top_p = cfg.gen_min_p = cfg.gen_repetition_penalty = -1;
    cfg.gen_top_k = cfg.gen_max_new_tokens = -1;
    hr_server *srv = NULL;
    int rc = hr_server_start(&fake, tok_g, &cfg, &o, &srv, &err);
    CHECK_MSG(rc == HR_OK, "%s", err.msg);
    if (rc == HR_OK) {
        port_g = hr_server_port(srv);
        test_small_routes();
        test_errors();
        test_completion();
        test_stream();
        test_tokenize();
        test_disconnect_and_full(srv);
        wait_idle();
        test_quiesce(srv);
        hr_server_free(srv);
    }
    pthread_mutex_lock(&fake.mu);
    fake.stop = true;
    pthread_mutex_unlock(&fake.mu);
    pthread_join(fake.th, NULL);
    pthread_mutex_destroy(&fake.mu);
    hr_tokenizer_free(tok_g);
    return test_report("server/test_http");
}
