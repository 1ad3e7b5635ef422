/* The OpenAI-compatible HTTP front end (`hearth serve`): routes on
 * libmicrohttpd (one thread per connection), OpenAI/vLLM request parsing and
 * validation, response and SSE chunk JSON, stop strings over detokenized text,
 * Prometheus metrics. Owns per-request state (one pool per request) and the
 * HTTP daemon. Talks to the engine only through engine.h (submit / abort /
 * events / stats): it never touches the KV cache or the scheduler. */
#ifndef HEARTH_SERVER_H
#define HEARTH_SERVER_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"
#include "engine/engine.h"
#include "io/config.h"
#include "tokenizer/tokenizer.h"

/* ======================================================================
 * Small building blocks (pool.c, buf.c)
 * ====================================================================== */

/* One arena per request: everything parsed from a body lives here and is
 * freed in one go with the request. Allocation failure -> NULL. */
typedef struct srv_pool srv_pool;
srv_pool *srv_pool_new(void);
void srv_pool_free(srv_pool *p);
void *srv_pool_alloc(srv_pool *p, size_t n);
char *srv_pool_strndup(srv_pool *p, const char *s, size_t n);

/* Growable byte string, always NUL-terminated once anything was appended. */
typedef struct srv_buf {
    char *p;
    size_t len, cap;
} srv_buf;
void srv_buf_append(srv_buf *b, const void *s, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with every byte that is not part of a valid UTF-8 sequence
 * (RFC 3629: no overlongs, surrogates or code points past U+10FFFF)
 * replaced by U+FFFD, so it can go into JSON. */
void srv_buf_append_utf8(srv_buf *b, const char *s, size_t n);
/* Removes the first n bytes. */
void srv_buf_consume(srv_buf *b, size_t n);
void srv_buf_free(srv_buf *b);

/* ======================================================================
 * Errors (errors.c): OpenAI error objects
 *   {"error": {"message", "type", "param", "code"}}
 * ====================================================================== */
typedef struct srv_error {
    int status;       /* HTTP status; 0 = no error */
    const char *type; /* "invalid_request_error", ... (static string) */
    const char *code; /* static string or NULL */
    char param[64];   /* offending field, "" = null */
    char message[512];
} srv_error;

/* Fills e; type follows the status (400/404/405/413 invalid_request_error,
 * 401 authentication_error, 429 rate_limit_error, 503 service_unavailable,
 * 5xx server_error). Returns -1 so parsers can `return srv_error_set(...)`. */
int srv_error_set(srv_error *e, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The JSON body (malloc'd). */
char *srv_error_json(const srv_error *e);

/* ======================================================================
 * Server-Sent Events (sse.c)
 * ====================================================================== */
/* Appends "data: <json>\n\n". json must not contain a raw newline (compact
 * JSON never does). */
void srv_sse_data(srv_buf *b, const char *json);
void srv_sse_done(srv_buf *b); /* "data: [DONE]\n\n" */

/* ======================================================================
 * Stop strings (stop.c): matched on the detokenized text across token
 * boundaries. Text that could still be the start of a stop string is held
 * back; the stop string and everything after it are never emitted.
 * ====================================================================== */
typedef struct srv_stop {
    const char *const *stops; /* borrowed; empty strings are ignored */
    int n_stops;
    srv_buf pending; /* held-back text */
    bool stopped;
    int which; /* index of the matched stop string */
} srv_stop;

void srv_stop_init(srv_stop *m, const char *const *stops, int n_stops);
void srv_stop_free(srv_stop *m);
/* Feeds newly final text; appends what is safe to emit to out. Returns true
 * once a stop string matched (then nothing more is emitted). */
bool srv_stop_feed(srv_stop *m, const char *text, size_t len, srv_buf *out);
/* End of generation without a match: emits the held-back text. */
void srv_stop_flush(srv_stop *m, srv_buf *out);

/* ======================================================================
 * Metrics (metrics.c): Prometheus text exposition, vLLM names + "hearth:".
 * Histograms are observed by the server; gauges and token counters come
 * from the engine's stats at scrape time.
 * ====================================================================== */
typedef struct srv_histogram {
    const double *bounds; /* ascending upper bounds (le), +Inf implied */
    int n_bounds;
    uint64_t counts[64]; /* per bucket (not cumulative); [n_bounds] = +Inf */
    uint64_t count;
    double sum;
} srv_histogram;

enum { SRV_FINISH_STOP = 0, SRV_FINISH_LENGTH, SRV_FINISH_ABORT, SRV_FINISH_N };

typedef struct srv_metrics {
    pthread_mutex_t mu;
    srv_histogram ttft, itl, e2e, queue;
    uint64_t success[SRV_FINISH_N];
} srv_metrics;

void srv_histogram_init(srv_histogram *h, const double *bounds, int n_bounds);
void srv_histogram_observe(srv_histogram *h, double v);
void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);
/* Thread-safe observations. */
void srv_metrics_observe(srv_metrics *m, srv_histogram *h, double v);
void srv_metrics_finished(srv_metrics *m, int srv_finish);
/* Appends the whole exposition; st may be NULL (gauges then read 0). */
void srv_metrics_render(srv_metrics *m, const hr_engine_stats *st, const char *model_name, srv_buf *out);

/* ======================================================================
 * Requests (request.c): JSON body -> validated generation request.
 * ====================================================================== */
typedef enum { SRV_API_CHAT = 0, SRV_API_COMPLETIONS } srv_api;

/* One prompt of /v1/completions: either text or token ids. */
typedef struct srv_prompt {
    const char *text; /* NULL when ids were given */
    int32_t *ids;
    int n_ids;
} srv_prompt;

typedef struct srv_gen_req {
    srv_api api;
    const char *model;   /* NULL when absent */
    json_t *messages;    /* chat: normalized copy (content as strings), owned */
    json_t *tools;       /* chat: borrowed from the body, or NULL */
    srv_prompt *prompts; /* completions */
    int n_prompts;
    hr_sampling_params sp;
    int max_tokens;      /* -1 = up to the context limit */
    bool max_tokens_set; /* from the request (else a default: clamped to the context, never an error) */
    int n;
    bool stream, include_usage, echo;
    bool logprobs; /* chat: logprobs=true; completions: logprobs given */
    int top_logprobs;
    const char **stops;
    int n_stops;
    int32_t *stop_ids;
    int n_stop_ids;
    json_t *body_; /* the parsed body the fields above point into */
} srv_gen_req;

/* Parses and validates body (len bytes) for api. vocab_size bounds token ids
 * (<= 0: unchecked); cfg (may be NULL) supplies generation_config defaults as
 * vLLM applies them. Everything is allocated in pool, messages excepted
 * (srv_gen_req_free). On error fills e (status 400) and returns -1. */
int srv_parse_gen_request(srv_api api, const char *body, size_t len, int vocab_size, const hr_config *cfg,
                          srv_pool *pool, srv_gen_req *out, srv_error *e);
void srv_gen_req_free(srv_gen_req *r);

/* Messages normalized for a chat template: each content that is a list of
 * {"type":"text","text":...} parts becomes their concatenation ("\n"-joined,
 * as vLLM does). New reference or NULL + e. */
json_t *srv_normalize_messages(json_t *messages, srv_error *e);

/* ======================================================================
 * The server (http.c, routes.c, generate.c)
 * ====================================================================== */
typedef struct hr_server_opts {
    const char *host;              /* default "0.0.0.0" */
    int port;                      /* default 8000 */
    const char *model_path;        /* as given on the command line */
    const char *served_model_name; /* NULL = model_path */
    const char *api_key;           /* NULL/"" = no auth */
    size_t max_request_bytes;      /* default 16 MiB */
    const char *chat_template;     /* template source (NULL = the tokenizer's) */
    const char *version;
    int timeout_s;   /* idle connection timeout (default 60) */
    bool access_log; /* one uvicorn-style line per request (default true) */
} hr_server_opts;

void hr_server_opts_default(hr_server_opts *o);

typedef struct hr_server hr_server;

/* Starts listening. engine, tok and cfg must outlive the server. */
int hr_server_start(hr_engine *engine, const hr_tokenizer *tok, const hr_config *cfg, const hr_server_opts *o,
                    hr_server **out, hr_err *err);
/* The port actually bound (useful with port 0). */
int hr_server_port(const hr_server *s);
/* Stops accepting connections and refuses new generations (503); requests in
 * flight continue. */
void hr_server_quiesce(hr_server *s);
/* Generations in flight. */
int hr_server_in_flight(hr_server *s);
/* Stops the daemon (closes connections) and frees. Call after the engine has
 * finished or aborted everything (hr_engine_shutdown). */
void hr_server_free(hr_server *s);

#endif
