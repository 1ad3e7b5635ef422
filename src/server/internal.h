/* Private to src/server: the server context shared by the HTTP layer
 * (http.c: daemon, routing, auth, bodies, small routes) and the generation
 * routes (generate.c: engine bridge, response JSON, SSE). Nothing outside
 * src/server includes this. */
#ifndef HEARTH_SERVER_INTERNAL_H
#define HEARTH_SERVER_INTERNAL_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <time.h>

#include "server/server.h"

struct hr_server {
    struct MHD_Daemon *daemon;
    int listen_fd; /* from MHD_quiesce_daemon, closed after MHD_stop_daemon */
    int port;
    hr_engine *engine;
    const hr_tokenizer *tok;
    const hr_config *cfg;
    char *host, *model_path, *model_name, *api_key, *chat_template, *version;
    size_t max_request_bytes;
    int timeout_s;
    bool access_log;
    int vocab_size, max_model_len;
    srv_metrics metrics;
    /* submissions hold the read side; quiesce takes the write side, so no
     * request reaches the engine after it began shutting down */
    pthread_rwlock_t submit_lock;
    bool quiesced;
    atomic_int in_flight;
    atomic_ullong id_counter;
    uint64_t id_salt;
    time_t created;
};

/* One HTTP request (MHD's con_cls): route, body accumulated up to the limit,
 * and the request's memory pool. */
typedef struct srv_conn {
    hr_server *s;
    struct MHD_Connection *c;
    int route;
    bool started, too_large;
    srv_buf body;
    srv_pool *pool;
    char method[16], path[160]; /* for the access log */
    double t_start;
} srv_conn;

/* Responses. body/obj ownership passes to the function. */
enum MHD_Result srv_reply_json(struct MHD_Connection *c, int status, json_t *obj);
enum MHD_Result srv_reply_error(struct MHD_Connection *c, const srv_error *e);
void srv_add_common_headers(struct MHD_Response *r); /* CORS */
/* Records the status queued on this connection's thread (access log). */
void srv_note_status(int status);
enum MHD_Result srv_reply_buf(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len);

/* prompt.c: shared by the generation and tokenizer routes. *ids live in pool. */
int srv_encode(hr_server *s, srv_pool *pool, const char *text, bool add_special, bool parse_special, int32_t **ids,
               int *n, srv_error *e);
/* Renders messages with the chat template; the caller frees *out. */
int srv_render_chat(hr_server *s, json_t *messages, json_t *tools, bool add_gen, json_t *extra, char **out,
                    srv_error *e);
/* 400 when n_prompt (+ max_tokens, if > 0) does not fit the context. */
int srv_context_check(hr_server *s, int n_prompt, int max_tokens, srv_error *e);
bool srv_model_ok(hr_server *s, const char *model);
json_t *srv_json_str(const char *t);

/* generate.c, tokenize.c */
enum MHD_Result srv_route_chat(srv_conn *cn);
enum MHD_Result srv_route_completions(srv_conn *cn);
enum MHD_Result srv_route_tokenize(srv_conn *cn);
enum MHD_Result srv_route_detokenize(srv_conn *cn);

/* "chatcmpl-<hex>" style ids: unique per process and run. */
void srv_new_id(hr_server *s, const char *prefix, char *out, size_t n);

#endif
