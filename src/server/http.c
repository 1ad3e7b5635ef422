/* The HTTP layer on libmicrohttpd: the daemon (one thread per connection, so
 * a handler may block on its own generation), the route table, bearer-token
 * auth, request bodies bounded by --max-request-bytes (413 from the
 * Content-Length header, before the body is read), and the small routes
 * (/health, /version, /v1/models, /metrics). Generation routes live in
 * generate.c, the chat page (GET /) in ui_route.c. */
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "server/internal.h"
#include "server/ui.h"

enum { R_HEALTH, R_VERSION, R_MODELS, R_METRICS, R_CHAT, R_COMPLETIONS, R_TOKENIZE, R_DETOKENIZE, R_UI, R_UI_INDEX };

static const struct {
    const char *path;
    const char *method;
} k_routes[] = {
    [R_HEALTH] = {"/health", "GET"},
    [R_VERSION] = {"/version", "GET"},
    [R_MODELS] = {"/v1/models", "GET"},
    [R_METRICS] = {"/metrics", "GET"},
    [R_CHAT] = {"/v1/chat/completions", "POST"},
    [R_COMPLETIONS] = {"/v1/completions", "POST"},
    [R_TOKENIZE] = {"/tokenize", "POST"},
    [R_DETOKENIZE] = {"/detokenize", "POST"},
    [R_UI] = {"/", "GET"},
    [R_UI_INDEX] = {"/index.html", "GET"},
};

void hr_server_opts_default(hr_server_opts *o) {
    *o = (hr_server_opts){
        .host = "0.0.0.0",
        .port = 8000,
        .max_request_bytes = 16u << 20,
        .version = "0.0.0",
        .timeout_s = 60,
        .access_log = true,
    };
}

void srv_new_id(hr_server *s, const char *prefix, char *out, size_t n) {
    unsigned long long c = atomic_fetch_add(&s->id_counter, 1);
    /* splitmix64 of salt + counter: unique in the process, unguessable enough */
    uint64_t z = s->id_salt + c * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(out, n, "%s%016llx%08llx", prefix, (unsigned long long)z, c & 0xffffffffull);
}

/* ---------------------------------------------------------------- replies */

/* One connection is served by one thread (thread-per-connection), so the
 * status of the response queued last on this thread is this request's. */
static _Thread_local int tl_status;

void srv_note_status(int status) { tl_status = status; }

/* Browser clients (web UIs calling the API directly) need CORS; like vLLM's
 * default (--allowed-origins '*'), any origin may call, auth still applies. */
void srv_add_common_headers(struct MHD_Response *r) { MHD_add_response_header(r, "Access-Control-Allow-Origin", "*"); }

static enum MHD_Result reply_preflight(struct MHD_Connection *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    srv_add_common_headers(r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    tl_status = 204;
    enum MHD_Result ret = MHD_queue_response(c, 204, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_reply_buf(struct MHD_Connection *c, int status, const char *ctype, char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(r, "Content-Type", ctype);
    srv_add_common_headers(r);
    tl_status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_reply_json(struct MHD_Connection *c, int status, json_t *obj) {
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s) return MHD_NO;
    return srv_reply_buf(c, status, "application/json", s, strlen(s));
}

enum MHD_Result srv_reply_error(struct MHD_Connection *c, const srv_error *e) {
    char *s = srv_error_json(e);
    if (!s) return MHD_NO;
    HR_LOGD("server: %d %s", e->status, e->message);
    return srv_reply_buf(c, e->status, "application/json", s, strlen(s));
}

static enum MHD_Result reply_405(struct MHD_Connection *c, const char *allow) {
    srv_error e;
    srv_error_set(&e, 405, "method_not_allowed", NULL, "Method Not Allowed (use %s)", allow);
    char *s = srv_error_json(&e);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Allow", allow);
    srv_add_common_headers(r);
    tl_status = 405;
    enum MHD_Result ret = MHD_queue_response(c, 405, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---------------------------------------------------------------- routes */

static enum MHD_Result route_health(srv_conn *cn) {
    hr_server *s = cn->s;
    int status = 200;
    pthread_rwlock_rdlock(&s->submit_lock);
    if (s->quiesced) status = 503;
    pthread_rwlock_unlock(&s->submit_lock);
    return srv_reply_buf(cn->c, status, NULL, hr_xstrdup(""), 0);
}

static enum MHD_Result route_version(srv_conn *cn) {
    return srv_reply_json(cn->c, 200, json_pack("{s:s}", "version", cn->s->version));
}

static enum MHD_Result route_models(srv_conn *cn) {
    hr_server *s = cn->s;
    json_t *m = json_pack("{s:s,s:s,s:I,s:s,s:s,s:n,s:i,s:[{s:s,s:s,s:I,s:b,s:b,s:b,s:b,s:b,s:b,s:s,s:n,s:b}]}", "id",
                          s->model_name, "object", "model", "created", (json_int_t)s->created, "owned_by", "hearth",
                          "root", s->model_path, "parent", "max_model_len", s->max_model_len, "permission", "id",
                          "modelperm-hearth", "object", "model_permission", "created", (json_int_t)s->created,
                          "allow_create_engine", 0, "allow_sampling", 1, "allow_logprobs", 1, "allow_search_indices", 0,
                          "allow_view", 1, "allow_fine_tuning", 0, "organization", "*", "group", "is_blocking", 0);
    return srv_reply_json(cn->c, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

static enum MHD_Result route_metrics(srv_conn *cn) {
    hr_server *s = cn->s;
    hr_engine_stats st = {0};
    hr_engine_get_stats(s->engine, &st);
    srv_buf b = {0};
    srv_metrics_render(&s->metrics, &st, s->model_name, &b);
    return srv_reply_buf(cn->c, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len);
}

static enum MHD_Result dispatch(srv_conn *cn) {
    switch (cn->route) {
    case R_HEALTH:
        return route_health(cn);
    case R_VERSION:
        return route_version(cn);
    case R_MODELS:
        return route_models(cn);
    case R_METRICS:
        return route_metrics(cn);
    case R_CHAT:
        return srv_route_chat(cn);
    case R_COMPLETIONS:
        return srv_route_completions(cn);
    case R_TOKENIZE:
        return srv_route_tokenize(cn);
    case R_DETOKENIZE:
        return srv_route_detokenize(cn);
    case R_UI:
    case R_UI_INDEX:
        return srv_route_ui(cn);
    }
    return MHD_NO;
}

/* -------------------------------------------------------------- requests */

/* Constant-time comparison, so the key cannot be guessed byte by byte. */
static bool key_equal(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static bool authorized(hr_server *s, struct MHD_Connection *c) {
    if (!s->api_key || !s->api_key[0]) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return false;
    h += 7;
    while (*h == ' ') h++;
    return key_equal(h, s->api_key);
}

/* The chat page may also be opened with Basic credentials (ui.h says why). */
static bool ui_authorized(hr_server *s, struct MHD_Connection *c) {
    char pw[256];
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    bool ok = srv_ui_basic_password(h, pw, sizeof pw) && key_equal(pw, s->api_key);
    explicit_bzero(pw, sizeof pw);
    return ok;
}

static int find_route(const char *url, const char *method, bool *method_ok) {
    for (int i = 0; i < (int)HR_ARRAY_LEN(k_routes); i++)
        if (!strcmp(url, k_routes[i].path)) {
            *method_ok =
                !strcmp(method, k_routes[i].method) || (!strcmp(method, "HEAD") && !strcmp(k_routes[i].method, "GET"));
            return i;
        }
    return -1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    (void)version;
    hr_server *s = cls;
    srv_conn *cn = *con_cls;
    srv_error e = {0};
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn) return MHD_NO;
        cn->s = s;
        cn->c = c;
        cn->pool = srv_pool_new();
        cn->t_start = hr_time_now();
        snprintf(cn->method, sizeof cn->method, "%s", method);
        snprintf(cn->path, sizeof cn->path, "%s", url);
        tl_status = 0;
        *con_cls = cn;
        if (!cn->pool) return MHD_NO;
        bool method_ok = false;
        int r = find_route(url, method, &method_ok);
        if (r >= 0 && !strcmp(method, "OPTIONS")) return reply_preflight(c); /* carries no credentials */
        bool ui = r == R_UI || r == R_UI_INDEX;
        if (ui && !authorized(s, c) && !ui_authorized(s, c)) return srv_ui_reply_unauthorized(c);
        if (r != R_HEALTH && !ui && !authorized(s, c)) {
            srv_error_set(&e, 401, "invalid_api_key", NULL, "Incorrect or missing API key (Authorization: Bearer ...)");
            return srv_reply_error(c, &e);
        }
        if (r < 0) {
            srv_error_set(&e, 404, "not_found", NULL, "Not Found: %.200s %.200s", method, url);
            return srv_reply_error(c, &e);
        }
        if (!method_ok) return reply_405(c, k_routes[r].method);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > s->max_request_bytes) {
            srv_error_set(&e, 413, "request_too_large", NULL,
                          "Request body of %.30s bytes exceeds the limit of %zu bytes", cl, s->max_request_bytes);
            return srv_reply_error(c, &e);
        }
        cn->route = r;
        cn->started = true;
        return MHD_YES;
    }
    if (!cn->started) return MHD_NO; /* a response was already queued */
    if (*upload_size) {
        /* chunked bodies carry no Content-Length: count as they come */
        if (!cn->too_large && cn->body.len + *upload_size > s->max_request_bytes) {
            cn->too_large = true;
            srv_buf_free(&cn->body);
        }
        if (!cn->too_large) srv_buf_append(&cn->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    cn->started = false;
    if (cn->too_large) {
        srv_error_set(&e, 413, "request_too_large", NULL, "Request body exceeds the limit of %zu bytes",
                      s->max_request_bytes);
        return srv_reply_error(c, &e);
    }
    if (cn->route == R_CHAT || cn->route == R_COMPLETIONS)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u); /* generations may take long */
    return dispatch(cn);
}

/* uvicorn's access line, plus the time the request took. */
static void access_log(hr_server *s, struct MHD_Connection *c, const srv_conn *cn,
                       enum MHD_RequestTerminationCode toe) {
    if (!s->access_log) return;
    char host[INET6_ADDRSTRLEN + 8] = "?";
    int port = 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (sa->sa_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
        }
    }
    const char *how = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)";
    fprintf(stderr, "INFO:     %s:%d - \"%s %s HTTP/1.1\" %d %.1f ms%s\n", host, port, cn->method, cn->path, tl_status,
            (hr_time_now() - cn->t_start) * 1e3, how);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    hr_server *s = cls;
    srv_conn *cn = *con_cls;
    if (!cn) return;
    access_log(s, c, cn, toe);
    if (cn->route == R_CHAT || cn->route == R_COMPLETIONS)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->timeout_s);
    srv_buf_free(&cn->body);
    srv_pool_free(cn->pool);
    free(cn);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n') line[--n] = 0;
    HR_LOGD("http: %s", line);
}

/* ---------------------------------------------------------------- daemon */

static char *dup_or_null(const char *s) { return s ? hr_xstrdup(s) : NULL; }

int hr_server_start(hr_engine *engine, const hr_tokenizer *tok, const hr_config *cfg, const hr_server_opts *o,
                    hr_server **out, hr_err *err) {
    *out = NULL;
    struct addrinfo *ai = NULL;
    hr_server *s = hr_xcalloc(1, sizeof *s);
    s->listen_fd = -1;
    s->engine = engine;
    s->tok = tok;
    s->cfg = cfg;
    s->host = hr_xstrdup(o->host ? o->host : "0.0.0.0");
    s->model_path = hr_xstrdup(o->model_path ? o->model_path : "model");
    s->model_name = hr_xstrdup(o->served_model_name && o->served_model_name[0] ? o->served_model_name : s->model_path);
    s->api_key = dup_or_null(o->api_key);
    s->chat_template = dup_or_null(o->chat_template);
    s->version = hr_xstrdup(o->version ? o->version : "0.0.0");
    s->max_request_bytes = o->max_request_bytes ? o->max_request_bytes : 16u << 20;
    s->timeout_s = o->timeout_s > 0 ? o->timeout_s : 60;
    s->access_log = o->access_log;
    s->vocab_size = cfg && cfg->vocab_size > 0 ? cfg->vocab_size : hr_tokenizer_vocab_size(tok);
    hr_engine_stats st = {0};
    hr_engine_get_stats(engine, &st);
    s->max_model_len = st.max_model_len;
    s->created = time(NULL);
    s->id_salt = (uint64_t)s->created * 0x2545F4914F6CDD1Dull ^ (uint64_t)(uintptr_t)s;
    srv_metrics_init(&s->metrics);
    pthread_rwlock_init(&s->submit_lock, NULL);

    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    int gai = getaddrinfo(s->host, port, &hints, &ai);
    if (gai != 0) {
        hr_err_set(err, HR_EINVAL, "cannot resolve --host %s: %s", s->host, gai_strerror(gai));
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon =
        MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->timeout_s, MHD_OPTION_CONNECTION_LIMIT, 4096u,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!s->daemon) {
        hr_err_set(err, HR_EIO, "cannot listen on %s:%d (port in use?)", s->host, o->port);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : o->port;
    freeaddrinfo(ai);
    *out = s;
    return HR_OK;
fail:
    if (ai) freeaddrinfo(ai);
    hr_server_free(s);
    return err ? err->code : HR_EIO;
}

int hr_server_port(const hr_server *s) { return s->port; }

void hr_server_quiesce(hr_server *s) {
    pthread_rwlock_wrlock(&s->submit_lock);
    s->quiesced = true;
    pthread_rwlock_unlock(&s->submit_lock);
    if (s->daemon) {
        /* the listening socket may only be closed after MHD_stop_daemon */
        MHD_socket fd = MHD_quiesce_daemon(s->daemon);
        s->listen_fd = fd;
        /* without this the kernel keeps completing handshakes into the
         * backlog that nobody will serve; shut down, it refuses them */
        if (fd >= 0) shutdown(fd, SHUT_RDWR);
    }
}

int hr_server_in_flight(hr_server *s) { return atomic_load(&s->in_flight); }

void hr_server_free(hr_server *s) {
    if (!s) return;
    if (s->daemon) MHD_stop_daemon(s->daemon);
    if (s->listen_fd >= 0) close(s->listen_fd);
    srv_metrics_destroy(&s->metrics);
    pthread_rwlock_destroy(&s->submit_lock);
    free(s->host);
    free(s->model_path);
    free(s->model_name);
    free(s->api_key);
    free(s->chat_template);
    free(s->version);
    free(s);
}
