/* The generation routes: /v1/chat/completions and /v1/completions.
 *
 * A generation is a session of n x prompts engine requests ("choices"). The
 * engine calls on_event on its own thread: it only copies the tokens into
 * the session's queue, records timings/metrics and signals an eventfd. The
 * HTTP thread of the connection drains the queue, detokenizes incrementally,
 * applies stop strings and builds JSON: for a streamed response that is the
 * body generator MHD pulls only when the socket can take more (blocking in
 * poll() is allowed in MHD's thread-per-connection mode; a slow client delays
 * only its own chunks, its tokens wait in the session queue), and a
 * client that goes away (POLLRDHUP on its socket) aborts the engine requests
 * at once. The session is reference counted: one reference for the HTTP side
 * plus one per engine request that has not delivered its final event. */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"
#include "server/internal.h"

/* ---------------------------------------------------------------- session */

typedef struct gen_item {
    int choice;
    bool has_token;
    hr_sample_result tok;
    bool last_of_event;      /* the final token of an event carrying finish */
    hr_finish_reason finish; /* != NONE: the choice's end (after its token) */
} gen_item;

typedef struct gen_session gen_session;

typedef struct gen_choice {
    gen_session *s;
    int index, prompt_idx;
    /* written on the engine thread, read under s->mu */
    int n_prompt_tokens, n_cached_tokens;
    double t_arrival, t_scheduled, t_first, t_last;
    bool got_first, engine_done;
    bool stop_by_string; /* set by the HTTP side before it aborts */
    /* HTTP side only */
    uint64_t engine_id;
    bool submitted, finished;
    const char *finish_reason;
    int n_tokens;
    hr_detok *detok;
    srv_stop stop;
    srv_buf text;                                            /* stream: not yet sent; otherwise everything */
    json_t *lp;                                              /* logprobs entries not yet sent (chat: content array) */
    json_t *lp_tokens, *lp_token_lps, *lp_tops, *lp_offsets; /* completions format */
    int text_offset;
    bool echoed, finish_sent;
} gen_choice;

struct gen_session {
    pthread_mutex_t mu;
    int efd;
    int refs;
    bool wake_listed; /* on the waker's list (holding a reference); under mu */
    gen_session *wake_next;
    gen_item *q;
    int qn, qcap;
    srv_metrics *metrics;
    int n_choices;
    gen_choice choices[];
};

static void session_free_core(gen_session *s) {
    pthread_mutex_destroy(&s->mu);
    if (s->efd >= 0) close(s->efd);
    free(s->q);
    free(s);
}

static gen_session *session_new(int n_choices, srv_metrics *m) {
    gen_session *s = calloc(1, sizeof(gen_session) + (size_t)n_choices * sizeof(gen_choice));
    if (!s) return NULL;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->refs = 1;
    s->metrics = m;
    s->n_choices = n_choices;
    for (int i = 0; i < n_choices; i++) s->choices[i] = (gen_choice){.s = s, .index = i};
    return s;
}

static void push_item(gen_session *s, const gen_item *it) {
    if (s->qn == s->qcap) {
        s->qcap = s->qcap ? s->qcap * 2 : 64;
        s->q = hr_xrealloc(s->q, (size_t)s->qcap * sizeof(gen_item));
    }
    s->q[s->qn++] = *it;
}

static int srv_reason(const gen_choice *ch, hr_finish_reason f) {
    if (ch->stop_by_string || f == HR_FINISH_STOP) return SRV_FINISH_STOP;
    if (f == HR_FINISH_LENGTH) return SRV_FINISH_LENGTH;
    return SRV_FINISH_ABORT;
}

/* ------------------------------------------------------------------ waker */
/* The eventfd writes that wake the HTTP threads are done by one waker
 * thread, not by the engine thread: with 256 streams a step would otherwise
 * cost the engine thread 256 write() syscalls, and each woken HTTP thread
 * tends to preempt it on the spot (measured on the CPU: ~5.5 ms of a 16 ms
 * step went to delivering the events). A listed session holds a reference,
 * so it outlives its stay on the list; a session is listed at most once.
 * Lock order: a session's mu, then the waker's mu. The thread is started on
 * first use and lives as long as the process. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    gen_session *head, *tail;
    bool ok; /* the thread runs; otherwise on_event writes itself */
} gen_waker = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
static pthread_once_t gen_waker_once = PTHREAD_ONCE_INIT;

static void *waker_main(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&gen_waker.mu);
        while (!gen_waker.head) pthread_cond_wait(&gen_waker.cv, &gen_waker.mu);
        gen_session *list = gen_waker.head;
        gen_waker.head = gen_waker.tail = NULL;
        pthread_mutex_unlock(&gen_waker.mu);
        for (gen_session *s = list, *nx; s; s = nx) {
            pthread_mutex_lock(&s->mu);
            nx = s->wake_next;
            s->wake_next = NULL;
            s->wake_listed = false;
            bool last = --s->refs == 0;
            uint64_t one = 1;
            if (!last && write(s->efd, &one, sizeof one) < 0 && errno != EAGAIN)
                HR_LOGW("server: eventfd write failed");
            pthread_mutex_unlock(&s->mu);
            if (last) session_free_core(s);
        }
    }
    return NULL;
}

static void waker_start(void) {
    pthread_t t;
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0) return;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    gen_waker.ok = pthread_create(&t, &a, waker_main, NULL) == 0;
    pthread_attr_destroy(&a);
    if (!gen_waker.ok) HR_LOGW("server: no waker thread; the engine thread signals the streams itself");
}

/* s->mu held: the HTTP side of s will be woken soon. */
static void wake_session(gen_session *s) {
    pthread_once(&gen_waker_once, waker_start);
    if (!gen_waker.ok) {
        uint64_t one = 1;
        if (write(s->efd, &one, sizeof one) < 0 && errno != EAGAIN) HR_LOGW("server: eventfd write failed");
        return;
    }
    if (s->wake_listed) return;
    s->wake_listed = true;
    s->refs++;
    pthread_mutex_lock(&gen_waker.mu);
    bool was_empty = !gen_waker.head;
    if (gen_waker.tail)
        gen_waker.tail->wake_next = s;
    else
        gen_waker.head = s;
    gen_waker.tail = s;
    if (was_empty) pthread_cond_signal(&gen_waker.cv);
    pthread_mutex_unlock(&gen_waker.mu);
}

/* Engine thread: copy, account, signal. Never blocks on the HTTP side. */
static void on_event(void *user, const hr_event *ev) {
    gen_choice *ch = user;
    gen_session *s = ch->s;
    pthread_mutex_lock(&s->mu);
    ch->n_prompt_tokens = ev->n_prompt_tokens;
    ch->n_cached_tokens = ev->n_cached_tokens;
    ch->t_arrival = ev->t_arrival;
    ch->t_scheduled = ev->t_scheduled;
    if (ev->n_tokens > 0) {
        if (!ch->got_first) {
            ch->got_first = true;
            ch->t_first = ev->t_first_token > 0 ? ev->t_first_token : ev->t_now;
            srv_metrics_observe(s->metrics, &s->metrics->ttft, ch->t_first - ev->t_arrival);
            srv_metrics_observe(s->metrics, &s->metrics->queue, HR_MAX(0.0, ev->t_scheduled - ev->t_arrival));
        } else {
            srv_metrics_observe(s->metrics, &s->metrics->itl, ev->t_now - ch->t_last);
        }
        ch->t_last = ev->t_now;
    }
    for (int i = 0; i < ev->n_tokens; i++) {
        gen_item it = {.choice = ch->index, .has_token = true, .tok = ev->tokens[i]};
        it.last_of_event = i == ev->n_tokens - 1 && ev->finish != HR_FINISH_NONE;
        if (it.last_of_event) it.finish = ev->finish;
        push_item(s, &it);
    }
    bool last = false;
    if (ev->finish != HR_FINISH_NONE) {
        if (ev->n_tokens == 0) push_item(s, &(gen_item){.choice = ch->index, .finish = ev->finish});
        if (!ch->t_last) ch->t_last = ev->t_now;
        ch->engine_done = true;
        srv_metrics_observe(s->metrics, &s->metrics->e2e, ev->t_now - ev->t_arrival);
        srv_metrics_finished(s->metrics, srv_reason(ch, ev->finish));
        last = --s->refs == 0;
    }
    if (!last) wake_session(s);
    pthread_mutex_unlock(&s->mu);
    if (last) session_free_core(s);
}

/* ------------------------------------------------------------- generation */

typedef struct gen_ctx {
    hr_server *srv;
    srv_pool *pool; /* the request's pool, taken over from the connection:
                       a stream outlives the access handler */
    srv_gen_req req;
    int32_t **prompt_ids; /* per prompt, in the pool */
    int *prompt_lens;
    const char **prompt_texts; /* for echo */
    gen_session *s;
    char id[64];
    long created;
    int conn_fd;
    bool done_sent;
    srv_buf out; /* stream bytes not yet handed to MHD */
    /* the queue buffer drained last time, handed back to the session at the
     * next drain: the engine thread then pushes without a malloc per event */
    gen_item *spare;
    int spare_cap;
} gen_ctx;

static void abort_choice(gen_ctx *g, gen_choice *ch) {
    if (!ch->submitted) return;
    pthread_mutex_lock(&g->s->mu);
    bool done = ch->engine_done;
    pthread_mutex_unlock(&g->s->mu);
    if (!done) hr_engine_abort(g->srv->engine, ch->engine_id);
}

/* The HTTP side lets go: aborts what still runs, frees its own state and
 * drops its reference. */
static void gen_release(gen_ctx *g) {
    if (g->s) {
        gen_session *s = g->s;
        for (int i = 0; i < s->n_choices; i++) {
            gen_choice *ch = &s->choices[i];
            abort_choice(g, ch);
            if (ch->detok) hr_detok_free(ch->detok);
            srv_stop_free(&ch->stop);
            srv_buf_free(&ch->text);
            json_decref(ch->lp);
            json_decref(ch->lp_tokens);
            json_decref(ch->lp_token_lps);
            json_decref(ch->lp_tops);
            json_decref(ch->lp_offsets);
        }
        pthread_mutex_lock(&s->mu);
        bool last = --s->refs == 0;
        pthread_mutex_unlock(&s->mu);
        if (last) session_free_core(s);
        g->s = NULL;
        atomic_fetch_sub(&g->srv->in_flight, 1);
    }
    srv_buf_free(&g->out);
    free(g->spare);
    g->spare = NULL;
    g->spare_cap = 0;
    srv_gen_req_free(&g->req);
    srv_pool_free(g->pool);
    g->pool = NULL;
}

static char *token_text(const hr_tokenizer *tok, int32_t id) {
    char *t = NULL;
    hr_err err;
    if (hr_tokenizer_decode(tok, &id, 1, false, &t, &err) != HR_OK) return hr_xstrdup("");
    return t;
}

static json_t *bytes_of(const char *t) {
    json_t *a = json_array();
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) json_array_append_new(a, json_integer(*p));
    return a;
}

static void add_logprobs(gen_ctx *g, gen_choice *ch, const hr_sample_result *r) {
    const hr_tokenizer *tok = g->srv->tok;
    char *t = token_text(tok, r->id);
    int ntop = HR_MIN(r->n_top, g->req.top_logprobs);
    if (g->req.api == SRV_API_CHAT) {
        if (!ch->lp) ch->lp = json_array();
        json_t *tops = json_array();
        for (int k = 0; k < ntop; k++) {
            char *tt = token_text(tok, r->top_ids[k]);
            json_array_append_new(tops, json_pack("{s:o,s:f,s:o}", "token", srv_json_str(tt), "logprob",
                                                  (double)HR_MAX(r->top_logprobs[k], -9999.0f), "bytes", bytes_of(tt)));
            free(tt);
        }
        json_array_append_new(ch->lp, json_pack("{s:o,s:f,s:o,s:o}", "token", srv_json_str(t), "logprob",
                                                (double)HR_MAX(r->logprob, -9999.0f), "bytes", bytes_of(t),
                                                "top_logprobs", tops));
    } else {
        if (!ch->lp_tokens) {
            ch->lp_tokens = json_array();
            ch->lp_token_lps = json_array();
            ch->lp_tops = json_array();
            ch->lp_offsets = json_array();
        }
        json_array_append_new(ch->lp_tokens, srv_json_str(t));
        json_array_append_new(ch->lp_token_lps, json_real(HR_MAX(r->logprob, -9999.0f)));
        json_t *top = json_object();
        for (int k = 0; k < ntop; k++) {
            char *tt = token_text(tok, r->top_ids[k]);
            json_t *key = srv_json_str(tt);
            json_object_set_new(top, json_string_value(key), json_real(HR_MAX(r->top_logprobs[k], -9999.0f)));
            json_decref(key);
            free(tt);
        }
        json_array_append_new(ch->lp_tops, top);
        json_array_append_new(ch->lp_offsets, json_integer(ch->text_offset));
        ch->text_offset += (int)strlen(t);
    }
    free(t);
}

static void finish_choice(gen_ctx *g, gen_choice *ch, const char *reason) {
    (void)g;
    if (ch->finished) return;
    if (ch->detok) {
        const char *d;
        size_t n = hr_detok_flush(ch->detok, &d);
        if (n && !ch->stop.stopped) srv_stop_feed(&ch->stop, d, n, &ch->text);
    }
    srv_stop_flush(&ch->stop, &ch->text);
    ch->finished = true;
    ch->finish_reason = reason;
}

static const char *reason_str(hr_finish_reason f) {
    switch (f) {
    case HR_FINISH_STOP:
        return "stop";
    case HR_FINISH_LENGTH:
        return "length";
    case HR_FINISH_ERROR:
        return "error";
    default:
        return "abort";
    }
}

/* Moves queued engine output into the choices' text. Returns the number of
 * items handled. */
static int drain(gen_ctx *g) {
    gen_session *s = g->s;
    pthread_mutex_lock(&s->mu);
    int n = s->qn, cap = 0;
    gen_item *items = NULL;
    if (n) {
        items = s->q;
        cap = s->qcap;
        s->q = g->spare;
        s->qcap = g->spare_cap;
        s->qn = 0;
        g->spare = NULL;
        g->spare_cap = 0;
    }
    uint64_t v;
    if (read(s->efd, &v, sizeof v) < 0 && errno != EAGAIN) HR_LOGW("server: eventfd read failed");
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) {
        gen_item *it = &items[i];
        gen_choice *ch = &s->choices[it->choice];
        if (ch->finished) continue;
        if (it->has_token) {
            ch->n_tokens++;
            /* the EOS / stop_token_ids token that ended the choice is
             * counted but not shown (vLLM, include_stop_str_in_output=false) */
            bool is_stop_tok = it->last_of_event && it->finish == HR_FINISH_STOP;
            if (!is_stop_tok) {
                if (g->req.logprobs) add_logprobs(g, ch, &it->tok);
                const char *d;
                size_t dn = hr_detok_push(ch->detok, it->tok.id, &d);
                if (srv_stop_feed(&ch->stop, d, dn, &ch->text)) {
                    pthread_mutex_lock(&s->mu);
                    ch->stop_by_string = true;
                    pthread_mutex_unlock(&s->mu);
                    abort_choice(g, ch);
                    finish_choice(g, ch, "stop");
                    continue;
                }
            }
        }
        if (it->finish != HR_FINISH_NONE) finish_choice(g, ch, reason_str(it->finish));
    }
    if (items) {
        g->spare = items;
        g->spare_cap = cap;
    }
    return n;
}

static bool all_finished(const gen_ctx *g) {
    for (int i = 0; i < g->s->n_choices; i++)
        if (!g->s->choices[i].finished) return false;
    return true;
}

/* Waits for engine output. 1: something to drain, 0: timeout, -1: the
 * client closed its connection. */
static int wait_events(gen_ctx *g, int timeout_ms) {
    struct pollfd p[2] = {{.fd = g->s->efd, .events = POLLIN}, {.fd = g->conn_fd, .events = POLLRDHUP}};
    int np = g->conn_fd >= 0 ? 2 : 1;
    int r = poll(p, (nfds_t)np, timeout_ms);
    if (r < 0) return errno == EINTR ? 0 : -1;
    if (np == 2 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) return -1;
    return r > 0;
}

/* ------------------------------------------------------------- responses */

static json_t *usage_json(gen_ctx *g) {
    int prompt = 0, completion = 0, cached = 0;
    for (int p = 0; p < g->req.n_prompts; p++) prompt += g->prompt_lens[p];
    pthread_mutex_lock(&g->s->mu);
    for (int i = 0; i < g->s->n_choices; i++) {
        const gen_choice *ch = &g->s->choices[i];
        completion += ch->n_tokens;
        if (i % g->req.n == 0) cached += ch->n_cached_tokens; /* once per prompt */
    }
    pthread_mutex_unlock(&g->s->mu);
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", prompt, "completion_tokens", completion, "total_tokens",
                     prompt + completion, "prompt_tokens_details", "cached_tokens", cached);
}

/* llama-server style speed figures: prompt_ms is prefill (scheduled -> first
 * token), predicted_* cover decoding after the first token, over all choices. */
static json_t *timings_json(gen_ctx *g) {
    int prompt = 0, predicted = 0;
    for (int p = 0; p < g->req.n_prompts; p++) prompt += g->prompt_lens[p];
    double t_arr = INFINITY, t_sched = INFINITY, t_first = INFINITY, t_last = 0;
    pthread_mutex_lock(&g->s->mu);
    for (int i = 0; i < g->s->n_choices; i++) {
        const gen_choice *ch = &g->s->choices[i];
        predicted += ch->n_tokens;
        if (ch->t_arrival > 0) t_arr = HR_MIN(t_arr, ch->t_arrival);
        if (ch->t_scheduled > 0) t_sched = HR_MIN(t_sched, ch->t_scheduled);
        if (ch->got_first) t_first = HR_MIN(t_first, ch->t_first);
        t_last = HR_MAX(t_last, ch->t_last);
    }
    pthread_mutex_unlock(&g->s->mu);
    double prompt_ms = isfinite(t_first) && isfinite(t_sched) ? (t_first - t_sched) * 1e3 : 0;
    double ttft_ms = isfinite(t_first) && isfinite(t_arr) ? (t_first - t_arr) * 1e3 : 0;
    double pred_ms = isfinite(t_first) && t_last > t_first ? (t_last - t_first) * 1e3 : 0;
    double pps = pred_ms > 0 ? (predicted - g->s->n_choices) / (pred_ms / 1e3) : 0;
    return json_pack("{s:i,s:f,s:f,s:i,s:f,s:f}", "prompt_n", prompt, "prompt_ms", prompt_ms, "ttft_ms", ttft_ms,
                     "predicted_n", predicted, "predicted_ms", pred_ms, "predicted_per_second", HR_MAX(pps, 0.0));
}

static json_t *take_logprobs(gen_ctx *g, gen_choice *ch) {
    if (!g->req.logprobs) return json_null();
    json_t *r;
    if (g->req.api == SRV_API_CHAT) {
        r = json_pack("{s:o}", "content", ch->lp ? ch->lp : json_array());
        ch->lp = NULL;
    } else {
        r = json_pack("{s:o,s:o,s:o,s:o}", "tokens", ch->lp_tokens ? ch->lp_tokens : json_array(), "token_logprobs",
                      ch->lp_token_lps ? ch->lp_token_lps : json_array(), "top_logprobs",
                      ch->lp_tops ? ch->lp_tops : json_array(), "text_offset",
                      ch->lp_offsets ? ch->lp_offsets : json_array());
        ch->lp_tokens = ch->lp_token_lps = ch->lp_tops = ch->lp_offsets = NULL;
    }
    return r;
}

static json_t *text_json(srv_buf *b) {
    json_t *j = json_stringn(b->p ? b->p : "", b->len);
    if (j) return j;
    /* the detokenizer emits whole UTF-8 characters; should a stray byte get
     * through anyway, it becomes U+FFFD rather than invalid JSON */
    srv_buf clean = {0};
    srv_buf_append_utf8(&clean, b->p ? b->p : "", b->len);
    j = json_stringn(clean.p ? clean.p : "", clean.len);
    srv_buf_free(&clean);
    return j ? j : json_string("");
}

static json_t *envelope(gen_ctx *g, const char *object) {
    json_t *o = json_pack("{s:s,s:s,s:I,s:s}", "id", g->id, "object", object, "created", (json_int_t)g->created,
                          "model", g->srv->model_name);
    if (g->req.api == SRV_API_CHAT) json_object_set_new(o, "system_fingerprint", json_null());
    return o;
}

static void prepend_echo(gen_ctx *g, gen_choice *ch) {
    if (!g->req.echo || ch->echoed) return;
    ch->echoed = true;
    const char *t = g->prompt_texts[ch->prompt_idx];
    srv_buf b = {0};
    srv_buf_puts(&b, t ? t : "");
    srv_buf_append(&b, ch->text.p ? ch->text.p : "", ch->text.len);
    srv_buf_free(&ch->text);
    ch->text = b;
}

static json_t *full_response(gen_ctx *g) {
    bool chat = g->req.api == SRV_API_CHAT;
    json_t *o = envelope(g, chat ? "chat.completion" : "text_completion");
    json_t *choices = json_array();
    for (int i = 0; i < g->s->n_choices; i++) {
        gen_choice *ch = &g->s->choices[i];
        if (!chat) prepend_echo(g, ch);
        json_t *c = json_pack("{s:i}", "index", i);
        if (chat)
            json_object_set_new(c, "message",
                                json_pack("{s:s,s:o}", "role", "assistant", "content", text_json(&ch->text)));
        else
            json_object_set_new(c, "text", text_json(&ch->text));
        json_object_set_new(c, "logprobs", take_logprobs(g, ch));
        json_object_set_new(c, "finish_reason", json_string(ch->finish_reason ? ch->finish_reason : "abort"));
        json_array_append_new(choices, c);
    }
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", usage_json(g));
    json_object_set_new(o, "timings", timings_json(g));
    return o;
}

static void emit(gen_ctx *g, json_t *chunk) {
    char *s = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (s) srv_sse_data(&g->out, s);
    free(s);
}

static json_t *chunk_for(gen_ctx *g, gen_choice *ch, json_t *delta_or_text) {
    bool chat = g->req.api == SRV_API_CHAT;
    json_t *o = envelope(g, chat ? "chat.completion.chunk" : "text_completion");
    json_t *c = json_pack("{s:i}", "index", ch->index);
    json_object_set_new(c, chat ? "delta" : "text", delta_or_text);
    json_object_set_new(c, "logprobs", take_logprobs(g, ch));
    json_object_set_new(c, "finish_reason", ch->finished ? json_string(ch->finish_reason) : json_null());
    json_object_set_new(o, "choices", json_pack("[o]", c));
    if (g->req.include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

/* Turns new text into SSE chunks; at the end the usage chunk and [DONE]. */
static void stream_step(gen_ctx *g) {
    bool chat = g->req.api == SRV_API_CHAT;
    json_t *pending = NULL; /* held back one chunk so the last can carry timings */
    bool done = all_finished(g);
    for (int i = 0; i < g->s->n_choices; i++) {
        gen_choice *ch = &g->s->choices[i];
        if (!chat) prepend_echo(g, ch);
        bool has_lp = ch->lp || ch->lp_tokens;
        bool report_finish = ch->finished && ch->finish_reason && !ch->finish_sent;
        if (!ch->text.len && !has_lp && !report_finish) continue;
        json_t *payload;
        if (chat)
            payload =
                ch->text.len || !ch->finished ? json_pack("{s:o}", "content", text_json(&ch->text)) : json_object();
        else
            payload = text_json(&ch->text);
        srv_buf_consume(&ch->text, ch->text.len);
        if (report_finish) ch->finish_sent = true;
        if (pending) emit(g, pending);
        pending = chunk_for(g, ch, payload);
    }
    if (done && g->req.include_usage) {
        if (pending) emit(g, pending);
        pending = envelope(g, chat ? "chat.completion.chunk" : "text_completion");
        json_object_set_new(pending, "choices", json_array());
        json_object_set_new(pending, "usage", usage_json(g));
    }
    if (pending) {
        if (done) json_object_set_new(pending, "timings", timings_json(g));
        emit(g, pending);
    }
    if (done) {
        srv_sse_done(&g->out);
        g->done_sent = true;
    }
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    gen_ctx *g = cls;
    for (;;) {
        if (g->out.len) {
            size_t n = HR_MIN(max, g->out.len);
            memcpy(buf, g->out.p, n);
            srv_buf_consume(&g->out, n);
            return (ssize_t)n;
        }
        if (g->done_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        int got = drain(g);
        if (got || all_finished(g)) {
            stream_step(g);
            if (g->out.len || g->done_sent) continue;
        }
        if (wait_events(g, 1000) < 0) {
            HR_LOGD("server: client went away mid-stream, aborting %s", g->id);
            for (int i = 0; i < g->s->n_choices; i++) abort_choice(g, &g->s->choices[i]);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void gen_ctx_free(gen_ctx *g) {
    if (!g) return;
    gen_release(g);
    free(g);
}

static void stream_free(void *cls) { gen_ctx_free(cls); }

/* Builds prompt token ids for every prompt of the request. */
static int build_prompts(gen_ctx *g, json_t *body, srv_error *e) {
    hr_server *s = g->srv;
    srv_pool *pool = g->pool;
    int np = g->req.api == SRV_API_CHAT ? 1 : g->req.n_prompts;
    if (g->req.api == SRV_API_CHAT) g->req.n_prompts = 1;
    g->prompt_ids = srv_pool_alloc(pool, (size_t)np * sizeof(int32_t *));
    g->prompt_lens = srv_pool_alloc(pool, (size_t)np * sizeof(int));
    g->prompt_texts = srv_pool_alloc(pool, (size_t)np * sizeof(char *));
    if (!g->prompt_ids || !g->prompt_lens || !g->prompt_texts)
        return srv_error_set(e, 500, NULL, NULL, "out of memory");
    if (g->req.api == SRV_API_CHAT) {
        json_t *agp = json_object_get(body, "add_generation_prompt");
        json_t *kw = json_object_get(body, "chat_template_kwargs");
        char *text = NULL;
        if (srv_render_chat(s, g->req.messages, g->req.tools, !json_is_false(agp), json_is_object(kw) ? kw : NULL,
                            &text, e))
            return -1;
        /* the template already wrote BOS and friends: HF apply_chat_template
         * tokenizes with add_special_tokens=False, and vLLM does the same */
        int rc = srv_encode(s, pool, text, false, true, &g->prompt_ids[0], &g->prompt_lens[0], e);
        free(text);
        g->prompt_texts[0] = NULL;
        if (rc) return -1;
    } else {
        for (int p = 0; p < np; p++) {
            srv_prompt *pr = &g->req.prompts[p];
            if (pr->text) {
                if (srv_encode(s, pool, pr->text, true, false, &g->prompt_ids[p], &g->prompt_lens[p], e)) return -1;
                g->prompt_texts[p] = pr->text;
            } else {
                g->prompt_ids[p] = pr->ids;
                g->prompt_lens[p] = pr->n_ids;
                char *t = NULL;
                hr_err err;
                if (g->req.echo && hr_tokenizer_decode(s->tok, pr->ids, (size_t)pr->n_ids, false, &t, &err) == HR_OK) {
                    g->prompt_texts[p] = srv_pool_strndup(pool, t, strlen(t));
                    free(t);
                } else {
                    g->prompt_texts[p] = NULL;
                }
            }
        }
    }
    for (int p = 0; p < np; p++)
        if (srv_context_check(s, g->prompt_lens[p], g->req.max_tokens_set ? g->req.max_tokens : 0, e)) return -1;
    return 0;
}

/* Submits every choice. On failure aborts those already queued. */
static int submit_all(gen_ctx *g, srv_error *e) {
    hr_server *s = g->srv;
    int n_choices = g->req.n_prompts * g->req.n;
    g->s = session_new(n_choices, &s->metrics);
    if (!g->s) return srv_error_set(e, 500, NULL, NULL, "out of memory");
    atomic_fetch_add(&s->in_flight, 1);
    for (int i = 0; i < n_choices; i++) {
        gen_choice *ch = &g->s->choices[i];
        ch->prompt_idx = i / g->req.n;
        /* completions logprobs text_offset counts from the start of the
         * returned text, which begins with the prompt when echoed */
        if (g->req.echo && g->prompt_texts[ch->prompt_idx])
            ch->text_offset = (int)strlen(g->prompt_texts[ch->prompt_idx]);
        ch->detok = hr_detok_new(s->tok, true);
        srv_stop_init(&ch->stop, g->req.stops, g->req.n_stops);
    }
    int rc = 0;
    hr_err err = {0};
    pthread_rwlock_rdlock(&s->submit_lock);
    if (s->quiesced) {
        pthread_rwlock_unlock(&s->submit_lock);
        return srv_error_set(e, 503, "shutting_down", NULL, "The server is shutting down");
    }
    for (int i = 0; i < n_choices; i++) {
        gen_choice *ch = &g->s->choices[i];
        hr_request rq = {.prompt = g->prompt_ids[ch->prompt_idx],
                         .n_prompt = g->prompt_lens[ch->prompt_idx],
                         .sampling = g->req.sp,
                         .max_tokens = g->req.max_tokens > 0 ? g->req.max_tokens : 0,
                         .n_stop_ids = g->req.n_stop_ids,
                         .stop_ids = g->req.stop_ids};
        /* n > 1 with a seed: choice j samples with seed + j, as vLLM's
         * parallel sampling does, so the choices differ but reproduce */
        if (rq.sampling.has_seed) rq.sampling.seed += (uint64_t)(i % g->req.n);
        /* generation_config's max_new_tokens is a default: like vLLM, cap it
         * to what the context leaves instead of rejecting the request */
        if (!g->req.max_tokens_set && rq.max_tokens > 0 && s->max_model_len > 0)
            rq.max_tokens = HR_MIN(rq.max_tokens, s->max_model_len - rq.n_prompt);
        pthread_mutex_lock(&g->s->mu);
        g->s->refs++; /* the engine's reference, dropped by its final event */
        pthread_mutex_unlock(&g->s->mu);
        rc = hr_engine_submit(s->engine, &rq, on_event, ch, &ch->engine_id, &err);
        if (rc != HR_OK) {
            pthread_mutex_lock(&g->s->mu);
            g->s->refs--;
            pthread_mutex_unlock(&g->s->mu);
            break;
        }
        ch->submitted = true;
    }
    pthread_rwlock_unlock(&s->submit_lock);
    if (rc == HR_OK) return 0;
    if (rc == HR_EFULL) return srv_error_set(e, 429, "queue_full", NULL, "The server is busy: %s", err.msg);
    if (rc == HR_EINVAL) return srv_error_set(e, 400, NULL, NULL, "%s", err.msg);
    return srv_error_set(e, 500, NULL, NULL, "engine error: %s", err.msg);
}

static enum MHD_Result route_generate(srv_conn *cn, srv_api api) {
    hr_server *s = cn->s;
    srv_error e = {0};
    gen_ctx *g = calloc(1, sizeof *g);
    if (!g) return MHD_NO;
    g->srv = s;
    g->pool = cn->pool;
    cn->pool = NULL;
    g->created = (long)time(NULL);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(cn->c, MHD_CONNECTION_INFO_CONNECTION_FD);
    g->conn_fd = ci ? ci->connect_fd : -1;
    srv_new_id(s, api == SRV_API_CHAT ? "chatcmpl-" : "cmpl-", g->id, sizeof g->id);

    if (srv_parse_gen_request(api, cn->body.p ? cn->body.p : "", cn->body.len, s->vocab_size, s->cfg, g->pool, &g->req,
                              &e))
        goto fail;
    if (!srv_model_ok(s, g->req.model)) {
        srv_error_set(&e, 404, "model_not_found", "model", "The model `%.200s` does not exist.", g->req.model);
        goto fail;
    }
    if (build_prompts(g, g->req.body_, &e)) goto fail;
    if (submit_all(g, &e)) goto fail;

    if (g->req.stream) {
        if (api == SRV_API_CHAT) /* the role chunk opens each choice, as OpenAI's stream does */
            for (int i = 0; i < g->s->n_choices; i++) {
                json_t *o = envelope(g, "chat.completion.chunk");
                json_t *c = json_pack("{s:i,s:{s:s,s:s},s:n,s:n}", "index", i, "delta", "role", "assistant", "content",
                                      "", "logprobs", "finish_reason");
                json_object_set_new(o, "choices", json_pack("[o]", c));
                if (g->req.include_usage) json_object_set_new(o, "usage", json_null());
                emit(g, o);
            }
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, g, stream_free);
        if (!r) {
            gen_ctx_free(g);
            return MHD_NO;
        }
        MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        srv_add_common_headers(r);
        srv_note_status(MHD_HTTP_OK);
        enum MHD_Result ret = MHD_queue_response(cn->c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }

    /* non-streamed: this connection's thread waits for every choice */
    for (;;) {
        drain(g);
        if (all_finished(g)) break;
        if (wait_events(g, 1000) < 0) {
            HR_LOGD("server: client went away, aborting %s", g->id);
            gen_ctx_free(g);
            return MHD_NO;
        }
    }
    for (int i = 0; i < g->s->n_choices; i++)
        if (g->s->choices[i].finish_reason && !strcmp(g->s->choices[i].finish_reason, "error")) {
            srv_error_set(&e, 500, NULL, NULL, "The engine failed while generating (see the server log)");
            goto fail;
        }
    json_t *resp = full_response(g);
    gen_ctx_free(g);
    return srv_reply_json(cn->c, MHD_HTTP_OK, resp);
fail:
    gen_ctx_free(g);
    return srv_reply_error(cn->c, &e);
}

enum MHD_Result srv_route_chat(srv_conn *cn) { return route_generate(cn, SRV_API_CHAT); }
enum MHD_Result srv_route_completions(srv_conn *cn) { return route_generate(cn, SRV_API_COMPLETIONS); }
