/* The engine thread: inbox -> scheduler -> hr_model_forward -> samplers ->
 * events (vLLM v1 EngineCore: schedule, execute_model, update_from_output).
 * Only the engine thread touches the scheduler, the pool and the requests;
 * other threads talk to it through the mutex-protected inbox (submissions,
 * aborts, shutdown) and read a stats snapshot. Callbacks run on the engine
 * thread without the engine lock held, so they may call hr_engine_abort. */
#include "engine/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/threadpool.h"
#include "engine/kv_cache.h"
#include "engine/scheduler.h"

/* Rows x vocab from which a step's sampling is spread over threads. */
#define ENG_PARALLEL_SAMPLE_MIN (1 << 17)
#define ENG_MAX_SAMPLER_THREADS 16
#define ENG_LOG_INTERVAL_S      5.0 /* HEARTH_LOG_STATS_INTERVAL overrides (seconds, as VLLM_LOG_STATS_INTERVAL) */
#define ENG_DEFAULT_MODEL_LEN   4096 /* when the config has no max_position_embeddings */
#define ENG_CPU_KV_FRACTION     0.25f
/* vLLM's CPU default KV space (VLLM_CPU_KVCACHE_SPACE) is 4 GiB: a fraction of a
 * big host's memory would be far more than a CPU can fill at useful speed. */
#define ENG_CPU_KV_MAX_BYTES    ((size_t)4 << 30)
#define ENG_GPU_KV_FRACTION     0.9f
/* Backend scratch the first big steps grow into besides the model's
 * activations (MoE chunks of up to 256 MiB, attention partials, cuBLASLt
 * workspace): left out of the GPU KV pool, at most 5 % of the device. */
#define ENG_GPU_SCRATCH_RESERVE ((double)(512u << 20))
#define ENG_GPU_SCRATCH_FRAC    0.05
/* Default token budget per step. On a GPU bigger prefill chunks use the
 * tensor cores better and interrupt the running decodes less often (H100,
 * 8B, 256 concurrent requests of 128/128 through hearth serve: 13,445 output
 * tok/s at 2048, 13,776 at 4096, 14,058 at 8192); on the CPU a step of 8192
 * tokens would stall every stream for seconds. */
#define ENG_GPU_BATCHED_TOKENS  8192
#define ENG_CPU_BATCHED_TOKENS  2048

/* Per-request engine state; sched_req.user points here. */
typedef struct eng_req {
    uint64_t id;
    sched_req *sr;
    hr_sampler *sampler;
    hr_sampling_params sp;
    hr_event_cb cb;
    void *user;
    int32_t *mask_ids; /* ids masked during min_tokens: stop_token_ids + EOS unless ignore_eos */
    int n_mask;
    int n_user_stops; /* the first n_user_stops of mask_ids are stop_token_ids */
    double t_arrival, t_scheduled, t_first;
    struct eng_req *next; /* inbox link */
} eng_req;

typedef struct eng_event {
    eng_req *r;
    hr_sample_result res;
    hr_finish_reason fin; /* != NONE: r is finished in the scheduler and freed after the event */
} eng_event;

typedef struct abort_list {
    uint64_t *ids;
    int n, cap;
} abort_list;

struct hr_engine {
    hr_model *model;
    hr_engine_opts opts;
    int vocab, max_model_len;
    int eos[8], n_eos;
    kv_cache kv;
    sched sched;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* protected by mu */
    eng_req *inbox_head, *inbox_tail;
    int n_inbox;
    abort_list aborts;
    bool stopping, stopped;
    double deadline;
    uint64_t next_id;
    hr_engine_stats stats;

    /* engine thread only */
    sched_output out;
    sched_step_buf buf;
    float *logits;
    size_t logits_cap;
    int32_t *sampled;
    hr_sample_row *rows; /* device sampling: each logits row's parameters */
    hr_sample_result *results;
    /* The last step's token events, emitted while the device computes the
     * next step (flush_events); a finished request's is its last, and the
     * request is freed after it. */
    struct eng_event *events;
    int n_events;
    bool overlap_events; /* HEARTH_ENGINE_OVERLAP=0: events go out before the next step starts (comparisons) */
    eng_req **sample_reqs; /* request of each logits row */
    int *sample_rc;
    int sampled_cap;
    hr_threadpool *pool; /* sampling rows in parallel (the backend's pool is idle then) */
    uint64_t prompt_total, gen_total;
    double log_t0;
    uint64_t log_prompt0, log_gen0, log_q0, log_h0;
    /* engine-thread time per phase since the last log line (host overhead vs forward) */
    uint64_t log_steps, log_tokens, log_decode_steps;
    double log_t_sched, log_t_fwd, log_t_post, log_t_fwd_decode;
};

void hr_engine_opts_default(hr_engine_opts *o) {
    memset(o, 0, sizeof *o);
    o->max_num_seqs = 256;
    o->max_model_len = 0;
    o->max_num_batched_tokens = 0; /* hr_engine_create: ENG_GPU_BATCHED_TOKENS / ENG_CPU_BATCHED_TOKENS */
    o->block_size = 16;
    o->kv_cache_memory = 0;
    o->kv_memory_fraction = 0; /* 0 = backend default: 0.9 GPU, 0.25 CPU */
    o->enable_prefix_caching = true;
    o->max_waiting_requests = 0;
}

/* ---- sizing ---- */
static size_t cpu_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

/* Model salt for prefix hashes: blocks computed by another model (or block
 * size) must never match. */
static uint64_t model_salt(const hr_model *m, int block_size) {
    const hr_config *c = hr_model_config(m);
    uint64_t h = 0xcbf29ce484222325ULL;
    const char *src = hr_model_source(m);
    for (const char *p = src ? src : ""; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ULL;
    int32_t v[6] = {c->vocab_size,          c->hidden_size, c->num_hidden_layers,
                    c->num_key_value_heads, c->head_dim,    block_size};
    return kv_block_hash(h, v, 6);
}

static int size_pool(hr_engine *e, hr_err *err) {
    const hr_engine_opts *o = &e->opts;
    const hr_config *c = hr_model_config(e->model);
    int bs = o->block_size;
    size_t block_bytes = hr_model_kv_block_bytes(e->model, bs);
    if (block_bytes == 0) return hr_err_set(err, HR_EINVAL, "engine: model reports 0 bytes per KV block");
    int mml = o->max_model_len > 0
                  ? o->max_model_len
                  : (c->max_position_embeddings > 0 ? c->max_position_embeddings : ENG_DEFAULT_MODEL_LEN);
    long n;
    if (o->kv_cache_memory > 0) {
        n = (long)(o->kv_cache_memory / block_bytes);
    } else {
        double avail;
        float frac = o->kv_memory_fraction;
        size_t in_use = 0, peak = 0, total = 0;
        hr_backend *be = o->backend;
        if (be && be->ops && !be->host_memory && be->ops->mem_info &&
            be->ops->mem_info(be, &in_use, &peak, &total) == HR_OK && total > 0) {
            /* vLLM: utilization x device total, minus what this process holds (weights, workspace)
             * and the activations of the largest step, which are allocated later (vLLM's profiling
             * run measures them) */
            if (frac <= 0) frac = ENG_GPU_KV_FRACTION;
            avail = (double)total * frac - (double)HR_MAX(in_use, peak) -
                    (double)hr_model_activation_bytes(e->model, o->max_num_batched_tokens, o->max_num_seqs) -
                    HR_MIN(ENG_GPU_SCRATCH_RESERVE, ENG_GPU_SCRATCH_FRAC * (double)total);
        } else {
            if (frac <= 0) {
                frac = ENG_CPU_KV_FRACTION;
                avail = HR_MIN((double)cpu_mem_available() * frac, (double)ENG_CPU_KV_MAX_BYTES);
            } else {
                avail = (double)cpu_mem_available() * frac; /* an explicit fraction is honoured */
            }
        }
        n = avail > 0 ? (long)(avail / (double)block_bytes) : 0;
        /* an explicit max_model_len is honoured even above the fraction */
        if (o->max_model_len > 0) n = HR_MAX(n, HR_CDIV(mml, bs));
    }
    if (n < 1)
        return hr_err_set(err, HR_EINVAL, "engine: the KV memory budget holds no block of %zu bytes", block_bytes);
    if ((long)HR_CDIV(mml, bs) > n) {
        if (o->max_model_len > 0)
            return hr_err_set(err, HR_EINVAL,
                              "engine: max_model_len %d needs %d KV blocks but the KV memory holds only %ld", mml,
                              HR_CDIV(mml, bs), n);
        mml = (int)(n * bs); /* automatic context length: capped by memory */
    }
    /* more than every sequence at full length is never used */
    long useful = (long)o->max_num_seqs * HR_CDIV(mml, bs);
    if (n > useful) n = useful;
    if (n > INT32_MAX / bs) n = INT32_MAX / bs;
    e->max_model_len = mml;
    return (int)n;
}

/* ---- inbox helpers (mu held) ---- */
static void abort_push(abort_list *a, uint64_t id) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->ids = hr_xrealloc(a->ids, (size_t)a->cap * sizeof *a->ids);
    }
    a->ids[a->n++] = id;
}

static void req_free(eng_req *r) {
    if (!r) return;
    sched_req_free(r->sr);
    hr_sampler_free(r->sampler);
    free(r->mask_ids);
    free(r);
}

static void emit(hr_engine *e, eng_req *r, const hr_sample_result *tok, hr_finish_reason fin) {
    (void)e;
    hr_event ev = {
        .id = r->id,
        .n_tokens = tok ? 1 : 0,
        .tokens = tok,
        .finish = fin,
        .n_prompt_tokens = r->sr->n_prompt,
        .n_cached_tokens = r->sr->n_cached_prompt,
        .t_arrival = r->t_arrival,
        .t_scheduled = r->t_scheduled,
        .t_first_token = r->t_first,
        .t_now = hr_time_now(),
    };
    r->cb(r->user, &ev);
}

/* Emits the queued events of the last step, in order (engine thread). Runs
 * before anything else emits or frees a request: an abort, a failed step,
 * idling, shutdown. */
static void flush_events(hr_engine *e) {
    for (int i = 0; i < e->n_events; i++) {
        eng_event *ev = &e->events[i];
        emit(e, ev->r, &ev->res, ev->fin);
        if (ev->fin != HR_FINISH_NONE) req_free(ev->r);
    }
    e->n_events = 0;
}

/* Ends a request known to the scheduler: blocks back at once, final event, free. */
static void finish_req(hr_engine *e, eng_req *r, const hr_sample_result *tok, hr_finish_reason fin) {
    flush_events(e);
    sched_finish(&e->sched, r->sr);
    emit(e, r, tok, fin);
    req_free(r);
}

static eng_req *find_active(hr_engine *e, uint64_t id) {
    for (sched_req *s = e->sched.running.head; s; s = s->next)
        if (s->id == id) return s->user;
    for (sched_req *s = e->sched.waiting.head; s; s = s->next)
        if (s->id == id) return s->user;
    return NULL;
}

/* Takes the inbox and the abort list (engine thread). */
static void drain_inbox(hr_engine *e) {
    pthread_mutex_lock(&e->mu);
    eng_req *in = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->n_inbox = 0;
    abort_list ab = e->aborts;
    e->aborts = (abort_list){0};
    pthread_mutex_unlock(&e->mu);
    for (eng_req *r = in, *nx; r; r = nx) {
        nx = r->next;
        r->next = NULL;
        sched_add(&e->sched, r->sr);
    }
    if (ab.n) flush_events(e); /* an aborted request may have an event queued */
    for (int i = 0; i < ab.n; i++) {
        eng_req *r = find_active(e, ab.ids[i]);
        if (r) finish_req(e, r, NULL, HR_FINISH_ABORT);
    }
    free(ab.ids);
}

static void abort_all(hr_engine *e, hr_finish_reason why) {
    flush_events(e);
    sched_req *s;
    while ((s = e->sched.running.head)) finish_req(e, s->user, NULL, why);
    while ((s = e->sched.waiting.head)) finish_req(e, s->user, NULL, why);
}

static void publish_stats(hr_engine *e) {
    pthread_mutex_lock(&e->mu);
    hr_engine_stats *s = &e->stats;
    s->num_running = e->sched.running.n;
    s->num_waiting = e->sched.waiting.n;
    s->kv_usage = kv_cache_usage(&e->kv);
    s->prompt_tokens_total = e->prompt_total;
    s->generation_tokens_total = e->gen_total;
    s->prefix_queries_total = e->kv.queries;
    s->prefix_hits_total = e->kv.hits;
    s->num_preemptions_total = e->sched.num_preemptions;
    s->kv_blocks_total = e->kv.n_blocks;
    s->kv_blocks_free = e->kv.n_free;
    s->max_model_len = e->max_model_len;
    pthread_mutex_unlock(&e->mu);
}

static void log_times_reset(hr_engine *e) {
    e->log_steps = e->log_tokens = e->log_decode_steps = 0;
    e->log_t_sched = e->log_t_fwd = e->log_t_post = e->log_t_fwd_decode = 0;
}

/* Where the engine thread's time went per step (forward vs the host work
 * around it), then the counters start over. */
static void log_step_times(hr_engine *e) {
    if (e->log_steps > 0) {
        double ns = (double)e->log_steps;
        hr_log(HR_LOG_INFO,
               "engine: %llu steps, %.1f tokens per step, per step %.2f ms: schedule+build %.3f, forward %.2f, "
               "sample+events %.3f; %llu decode-only steps, forward %.2f ms each",
               (unsigned long long)e->log_steps, (double)e->log_tokens / ns,
               1e3 * (e->log_t_sched + e->log_t_fwd + e->log_t_post) / ns, 1e3 * e->log_t_sched / ns,
               1e3 * e->log_t_fwd / ns, 1e3 * e->log_t_post / ns, (unsigned long long)e->log_decode_steps,
               e->log_decode_steps ? 1e3 * e->log_t_fwd_decode / (double)e->log_decode_steps : 0.0);
    }
    log_times_reset(e);
}

/* HEARTH_LOG_STEPS=1: one line per step (tokens, sequences, prompt tokens,
 * forward and host time), to see where a serving run's time goes. */
static bool log_steps_on(void) {
    static int v = -1;
    if (v < 0) v = hr_env_on("HEARTH_LOG_STEPS", false);
    return v != 0;
}

/* Seconds between progress lines: HEARTH_LOG_STATS_INTERVAL, else 5. */
static double log_interval(void) {
    static double v = -1;
    if (v < 0) {
        const char *s = getenv("HEARTH_LOG_STATS_INTERVAL");
        char *end = NULL;
        double d = s ? strtod(s, &end) : 0;
        v = s && end != s && d > 0 ? d : ENG_LOG_INTERVAL_S;
    }
    return v;
}

static void log_progress(hr_engine *e, double now) {
    if (e->log_t0 == 0) {
        e->log_t0 = now;
        e->log_prompt0 = e->prompt_total;
        e->log_gen0 = e->gen_total;
        e->log_q0 = e->kv.queries;
        e->log_h0 = e->kv.hits;
        return;
    }
    double dt = now - e->log_t0;
    if (dt < log_interval()) return;
    uint64_t q = e->kv.queries - e->log_q0, h = e->kv.hits - e->log_h0;
    hr_log(HR_LOG_INFO,
           "engine: prompt %.1f tok/s, generation %.1f tok/s, running %d, waiting %d, KV usage %.1f%%, prefix cache "
           "hit rate %.1f%%",
           (double)(e->prompt_total - e->log_prompt0) / dt, (double)(e->gen_total - e->log_gen0) / dt,
           e->sched.running.n, e->sched.waiting.n, 100.0 * kv_cache_usage(&e->kv), q ? 100.0 * (double)h / q : 0.0);
    log_step_times(e);
    e->log_t0 = 0;
    log_progress(e, now);
}

static bool is_eos(const hr_engine *e, int32_t t) {
    for (int i = 0; i < e->n_eos; i++)
        if (e->eos[i] == t) return true;
    return false;
}

static hr_finish_reason check_finish(const hr_engine *e, const eng_req *r, int32_t tok) {
    const sched_req *s = r->sr;
    for (int i = 0; i < r->n_user_stops; i++)
        if (r->mask_ids[i] == tok) return HR_FINISH_STOP;
    if (!r->sp.ignore_eos && is_eos(e, tok)) return HR_FINISH_STOP;
    if (s->n_tokens >= s->cap) return HR_FINISH_LENGTH; /* max_tokens or the context limit */
    return HR_FINISH_NONE;
}

static int ensure_step_buffers(hr_engine *e, int n_logits) {
    size_t need = (size_t)n_logits * (size_t)e->vocab;
    if (need > e->logits_cap) {
        float *l = realloc(e->logits, need * sizeof *l);
        if (!l) return HR_ENOMEM;
        e->logits = l;
        e->logits_cap = need;
    }
    if (n_logits > e->sampled_cap) {
        int32_t *s = realloc(e->sampled, (size_t)n_logits * sizeof *s);
        if (s) e->sampled = s;
        hr_sample_result *r = realloc(e->results, (size_t)n_logits * sizeof *r);
        if (r) e->results = r;
        eng_req **q = realloc(e->sample_reqs, (size_t)n_logits * sizeof *q);
        if (q) e->sample_reqs = q;
        eng_event *ev = realloc(e->events, (size_t)n_logits * sizeof *ev); /* keeps the queued ones */
        if (ev) e->events = ev;
        int *c = realloc(e->sample_rc, (size_t)n_logits * sizeof *c);
        if (c) e->sample_rc = c;
        hr_sample_row *w = realloc(e->rows, (size_t)n_logits * sizeof *w);
        if (w) e->rows = w;
        if (!s || !r || !q || !c || !w || !ev) return HR_ENOMEM;
        e->sampled_cap = n_logits;
    }
    return HR_OK;
}

/* hr_parallel_for body: samples rows [begin, end) of this step's logits. */
static void sample_rows(void *ctx, int begin, int end, int tid) {
    (void)tid;
    hr_engine *e = ctx;
    for (int k = begin; k < end; k++) {
        eng_req *r = e->sample_reqs[k];
        const sched_req *s = r->sr;
        e->sample_rc[k] = hr_sampler_sample(r->sampler, e->logits + (size_t)k * e->vocab, s->n_tokens - s->n_prompt,
                                            r->mask_ids, r->n_mask, &e->results[k]);
    }
}

/* Whether r's next token is the plain argmax of the model's logits, i.e.
 * hr_sampler_sample would change nothing before its greedy argmax and keep
 * no state: greedy temperature, no logprobs, no logit_bias, no penalties
 * (the sampler tracks no counts then) and no min_tokens mask in force. */
static bool plain_greedy(const eng_req *r) {
    const hr_sampling_params *p = &r->sp;
    const sched_req *s = r->sr;
    return p->temperature < 1e-5f && p->logprobs < 0 && p->n_logit_bias == 0 && p->presence_penalty == 0.0f &&
           p->frequency_penalty == 0.0f && p->repetition_penalty == 1.0f &&
           !(r->n_mask > 0 && s->n_tokens - s->n_prompt < p->min_tokens);
}

/* One engine step. Returns false when nothing could be scheduled. */
static bool engine_step(hr_engine *e) {
    hr_err err = {0};
    double t_step0 = hr_time_now();
    int rc = sched_schedule(&e->sched, &e->out);
    if (rc == HR_OK && e->out.n_items == 0) return false;
    hr_step st;
    if (rc == HR_OK) rc = sched_build_step(&e->sched, &e->out, &e->buf, &st);
    if (rc == HR_OK) rc = ensure_step_buffers(e, HR_MAX(st.n_logits, 1));
    if (rc != HR_OK) hr_err_set(&err, rc, "engine: out of memory building a step");
    double now = hr_time_now();
    for (int i = 0; rc == HR_OK && i < e->out.n_items; i++) {
        eng_req *r = e->out.items[i].req->user;
        if (r->t_scheduled == 0) r->t_scheduled = now;
    }
    /* Device sampling: when every row sampled this step is plain greedy the
     * backend takes the argmax, else (unless a row wants logprobs, which only
     * the host computes) it samples each row with the parameters of its
     * request's sampler; either way only the ids cross, not rows x vocab F32. */
    bool greedy = rc == HR_OK && !e->opts.host_sampling && st.n_logits > 0, device = greedy;
    for (int i = 0; device && i < e->out.n_items; i++) {
        const eng_req *r = e->out.items[i].req->user;
        if (!e->out.items[i].sample) continue;
        if (!plain_greedy(r)) greedy = false;
        if (hr_sampler_wants_host(r->sampler)) device = false;
    }
    if (device && !greedy) {
        int k = 0;
        for (int i = 0; i < e->out.n_items; i++) {
            if (!e->out.items[i].sample) continue;
            const eng_req *r = e->out.items[i].req->user;
            hr_sampler_row(r->sampler, r->sr->n_tokens - r->sr->n_prompt, r->mask_ids, r->n_mask, &e->rows[k++]);
        }
    }
    double t_fwd0 = hr_time_now();
    /* The last step's events go out while the device computes this one
     * (the ids come back through hr_model_ids_wait): host work off the
     * critical path, as vLLM's async scheduling. A step with prompt tokens
     * may block in _begin (MoE prefill syncs), so the events go first. */
    if (rc != HR_OK || st.n_tokens != st.n_seqs || !(greedy || device) || !e->overlap_events) flush_events(e);
    if (rc == HR_OK) {
        if (greedy || device) {
            rc = greedy ? hr_model_forward_greedy_begin(e->model, &st, &err)
                        : hr_model_forward_sample_begin(e->model, &st, e->rows, &err);
            flush_events(e);
            if (rc == HR_OK) rc = hr_model_ids_wait(e->model, e->sampled, &err);
        } else {
            rc = hr_model_forward(e->model, &st, e->logits, &err);
        }
    }
    double t_fwd1 = hr_time_now();
    int j = 0, step_prompt = 0;
    for (int i = 0; rc == HR_OK && i < e->out.n_items; i++) {
        const sched_item *it = &e->out.items[i];
        sched_req *s = it->req;
        /* prompt tokens computed this step (recomputed ones after preemption count again, as in vLLM) */
        int prompt_part = HR_MAX(0, HR_MIN(s->n_computed + it->n_new, s->n_prompt) - s->n_computed);
        e->prompt_total += (uint64_t)prompt_part;
        step_prompt += prompt_part;
        if (it->sample) e->sample_reqs[j++] = s->user;
    }
    if (rc == HR_OK && log_steps_on())
        hr_log(HR_LOG_INFO, "engine: step tokens %d seqs %d prompt %d logits %d: forward %.2f ms, schedule+build %.3f ms",
               st.n_tokens, st.n_seqs, step_prompt, st.n_logits, 1e3 * (t_fwd1 - t_fwd0), 1e3 * (t_fwd0 - t_step0));
    if (rc == HR_OK && j > 0 && device) {
        /* what the host sampler returns for these rows (no logprob asked);
         * sampled rows record their token for later penalties */
        for (int k = 0; k < j; k++) {
            memset(&e->results[k], 0, sizeof e->results[k]);
            e->results[k].id = e->sampled[k];
            if (!greedy && rc == HR_OK && hr_sampler_accept(e->sample_reqs[k]->sampler, e->sampled[k]) != HR_OK)
                rc = hr_err_set(&err, HR_ENOMEM, "engine: sampler out of memory");
        }
    } else if (rc == HR_OK && j > 0) {
        /* Rows are independent (each request owns its sampler and RNG), so
         * they are sampled in parallel when there is enough work. */
        bool par = j > 1 && (e->opts.n_sampler_threads > 0 || (size_t)j * (size_t)e->vocab >= ENG_PARALLEL_SAMPLE_MIN);
        hr_parallel_for(par ? e->pool : NULL, j, 1, sample_rows, e);
        for (int k = 0; k < j; k++) {
            e->sampled[k] = e->results[k].id;
            if (e->sample_rc[k] != HR_OK) rc = hr_err_set(&err, e->sample_rc[k], "engine: sampler out of memory");
        }
    }
    if (rc != HR_OK) {
        /* The step's requests cannot continue; the others are unaffected. */
        HR_LOGE("engine: step failed: %s", err.msg);
        sched_step_failed(&e->sched, &e->out);
        for (int i = 0; i < e->out.n_items; i++) finish_req(e, e->out.items[i].req->user, NULL, HR_FINISH_ERROR);
        return true;
    }
    sched_update(&e->sched, &e->out, e->sampled);
    now = hr_time_now();
    j = 0;
    for (int i = 0; i < e->out.n_items; i++) {
        const sched_item *it = &e->out.items[i];
        if (!it->sample) continue;
        eng_req *r = it->req->user;
        const hr_sample_result *res = &e->results[j++];
        e->gen_total++;
        if (r->t_first == 0) r->t_first = now;
        hr_finish_reason fin = check_finish(e, r, res->id);
        /* a finished request leaves the scheduler now (its blocks are free
         * for the next step); its event and the request itself go with the
         * next flush */
        if (fin != HR_FINISH_NONE) sched_finish(&e->sched, r->sr);
        e->events[e->n_events++] = (eng_event){.r = r, .res = *res, .fin = fin};
    }
    e->log_steps++;
    e->log_tokens += (uint64_t)st.n_tokens;
    if (st.n_tokens == st.n_seqs) { /* one token per sequence: a decode-only step */
        e->log_decode_steps++;
        e->log_t_fwd_decode += t_fwd1 - t_fwd0;
    }
    e->log_t_sched += t_fwd0 - t_step0;
    e->log_t_fwd += t_fwd1 - t_fwd0;
    e->log_t_post += hr_time_now() - t_fwd1;
    return true;
}

static void *engine_main(void *arg) {
    hr_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        bool stopping = e->stopping, past = stopping && hr_time_now() >= e->deadline;
        pthread_mutex_unlock(&e->mu);
        /* after reading `stopping`: once it is set no submission can follow,
         * so nothing is left behind in the inbox when the loop ends */
        drain_inbox(e);
        int active = e->sched.running.n + e->sched.waiting.n;
        if (stopping && (active == 0 || past)) {
            abort_all(e, HR_FINISH_ABORT);
            break;
        }
        if (active == 0) {
            flush_events(e);
            publish_stats(e);
            log_step_times(e);
            e->log_t0 = 0;
            pthread_mutex_lock(&e->mu);
            while (!e->inbox_head && !e->aborts.n && !e->stopping) pthread_cond_wait(&e->cv, &e->mu);
            pthread_mutex_unlock(&e->mu);
            continue;
        }
        if (!engine_step(e)) {
            /* Cannot happen while submit rejects what never fits; fail loudly
             * rather than spin. */
            HR_LOGE("engine: nothing schedulable with %d waiting; failing them", e->sched.waiting.n);
            abort_all(e, HR_FINISH_ERROR);
        }
        publish_stats(e);
        log_progress(e, hr_time_now());
    }
    publish_stats(e);
    pthread_mutex_lock(&e->mu);
    e->stopped = true;
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* ---- warm-up ----
 * The first step of a fresh process pays one-time costs that a client
 * should never see: on the H100 the first 128-token prompt took 131-181 ms
 * instead of ~10 (lazily loaded kernel modules, cuBLASLt's first plans and
 * heuristics), and the first steps of each new decode shape a few ms more;
 * a 512-request serving run lost ~3 % of its throughput to them. So
 * hr_engine_create runs a few requests through the ordinary step path (on
 * the calling thread, before the engine thread exists), in shapes that take
 * each kind of kernel: one long prompt (tensor-core prefill attention,
 * cuBLASLt) decoded alone (GEMVs, split decode attention), then a batch of
 * short prompts (one multi-sequence prefill step) decoded together
 * (batched decode, device sampling with greedy and sampled rows, a CUDA
 * graph capture). Then the counters and the prefix cache start from zero,
 * so /metrics and cache hits only ever count client requests. */
#define ENG_WARM_LONG  192 /* tokens of the long prompt (>= 64: the vectorised RoPE and prefill kernels) */
#define ENG_WARM_SHORT 32
#define ENG_WARM_BATCH 64
#define ENG_WARM_NEW   4 /* generated tokens per request: decode steps run eagerly, are captured, replayed */

typedef struct warm_count {
    int done, failed;
} warm_count;

static void warm_cb(void *user, const hr_event *ev) {
    warm_count *w = user;
    if (ev->finish == HR_FINISH_NONE) return;
    w->done++;
    if (ev->finish == HR_FINISH_ERROR || ev->finish == HR_FINISH_ABORT) w->failed++;
}

/* Submits n requests of len tokens and steps the engine until they end.
 * Token ids differ per request and position (no prefix is shared) and avoid
 * the special ids at the top of most vocabularies. */
static int warm_round(hr_engine *e, int n, int len, hr_err *err) {
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    if (!ids) return hr_err_set(err, HR_ENOMEM, "engine warm-up: out of memory");
    warm_count w = {0};
    int span = HR_MAX(e->vocab - 256, HR_MIN(e->vocab, 2)), rc = HR_OK;
    for (int r = 0; r < n && rc == HR_OK; r++) {
        uint32_t x = 2654435761u * (uint32_t)(r + 1);
        for (int i = 0; i < len; i++) {
            x = x * 1664525u + 1013904223u;
            ids[i] = (int32_t)((x >> 8) % (uint32_t)span);
        }
        hr_request rq = {.prompt = ids, .n_prompt = len, .max_tokens = ENG_WARM_NEW};
        hr_sampling_params_default(&rq.sampling);
        rq.sampling.ignore_eos = true;
        if (r % 2) { /* half the batch sampled on the device, half greedy */
            rq.sampling.temperature = 0.8f;
            rq.sampling.top_p = 0.9f;
            rq.sampling.has_seed = true;
            rq.sampling.seed = (uint64_t)r;
        } else {
            rq.sampling.temperature = 0.0f;
        }
        rc = hr_engine_submit(e, &rq, warm_cb, &w, NULL, err);
    }
    free(ids);
    drain_inbox(e);
    while (e->sched.running.n + e->sched.waiting.n > 0)
        if (!engine_step(e)) {
            abort_all(e, HR_FINISH_ERROR);
            break;
        }
    flush_events(e);
    if (rc == HR_OK && (w.failed || w.done != n))
        rc = hr_err_set(err, HR_EIO, "engine warm-up: %d of %d requests failed (see the log above)",
                        w.failed + (n - w.done), n);
    return rc;
}

static int engine_warmup(hr_engine *e, hr_err *err) {
    double t0 = hr_time_now();
    int room = e->max_model_len - ENG_WARM_NEW - 1;
    int long_len = HR_MIN(ENG_WARM_LONG, room), short_len = HR_MIN(ENG_WARM_SHORT, room);
    /* the batch fits the sequence limit and a quarter of the pool */
    int per = HR_CDIV(short_len + ENG_WARM_NEW, e->opts.block_size);
    int batch = HR_MIN(HR_MIN(ENG_WARM_BATCH, e->opts.max_num_seqs), e->kv.n_blocks / (4 * HR_MAX(per, 1)));
    if (e->opts.max_waiting_requests > 0) batch = HR_MIN(batch, e->opts.max_waiting_requests);
    uint64_t steps0 = e->log_steps;
    int rc = HR_OK;
    if (long_len >= 1) rc = warm_round(e, 1, long_len, err);
    if (rc == HR_OK && short_len >= 1 && batch >= 2) rc = warm_round(e, batch, short_len, err);
    if (rc != HR_OK) return rc;
    HR_LOGI("engine: warm-up: %llu steps (a %d-token prompt, then %d of %d tokens, %d new tokens each) in %.0f ms",
            (unsigned long long)(e->log_steps - steps0), long_len, batch, short_len, ENG_WARM_NEW,
            1e3 * (hr_time_now() - t0));
    /* client-facing state from zero */
    kv_cache_reset_prefix(&e->kv);
    e->kv.queries = e->kv.hits = 0;
    e->sched.num_preemptions = 0;
    e->prompt_total = e->gen_total = 0;
    e->log_t0 = 0;
    log_times_reset(e);
    return HR_OK;
}

int hr_engine_create(hr_model *model, const hr_engine_opts *opts, hr_engine **out, hr_err *err) {
    *out = NULL;
    hr_engine_opts o;
    if (opts)
        o = *opts;
    else
        hr_engine_opts_default(&o);
    if (o.block_size <= 0) o.block_size = 16;
    if (o.max_num_seqs <= 0) o.max_num_seqs = 256;
    if (o.max_num_batched_tokens <= 0)
        o.max_num_batched_tokens =
            o.backend && !o.backend->host_memory ? ENG_GPU_BATCHED_TOKENS : ENG_CPU_BATCHED_TOKENS;
    hr_engine *e = calloc(1, sizeof *e);
    if (!e) return hr_err_set(err, HR_ENOMEM, "engine: out of memory");
    e->model = model;
    e->opts = o;
    e->overlap_events = hr_env_on("HEARTH_ENGINE_OVERLAP", true);
    e->vocab = hr_model_vocab_size(model);
    const hr_config *c = hr_model_config(model);
    e->n_eos = HR_MIN(c->n_eos, (int)HR_ARRAY_LEN(e->eos));
    for (int i = 0; i < e->n_eos; i++) e->eos[i] = c->eos_token_ids[i];
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    int rc;
    int n_blocks = size_pool(e, err);
    if (n_blocks < 0) {
        rc = n_blocks;
        goto fail;
    }
    {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int nt = o.n_sampler_threads > 0 ? o.n_sampler_threads : (int)HR_MIN(HR_MAX(ncpu, 1), ENG_MAX_SAMPLER_THREADS);
        if (nt > 1 && !(e->pool = hr_threadpool_create(nt))) HR_LOGW("engine: no sampler thread pool; sampling inline");
    }
    rc = hr_model_kv_alloc(model, n_blocks, o.block_size, err);
    if (rc != HR_OK) goto fail;
    rc = kv_cache_init(&e->kv, n_blocks, o.block_size, o.enable_prefix_caching, model_salt(model, o.block_size), err);
    if (rc != HR_OK) goto fail;
    sched_config sc = {.max_num_seqs = o.max_num_seqs,
                       .max_num_batched_tokens = o.max_num_batched_tokens,
                       .max_model_len = e->max_model_len};
    rc = sched_init(&e->sched, &e->kv, &sc, err);
    if (rc != HR_OK) goto fail;
    HR_LOGI("engine: %d KV blocks x %d tokens (%.1f MiB), max_model_len %d, max_num_seqs %d, "
            "max_num_batched_tokens %d, prefix caching %s",
            n_blocks, o.block_size, (double)n_blocks * (double)hr_model_kv_block_bytes(model, o.block_size) / 1048576.0,
            e->max_model_len, o.max_num_seqs, o.max_num_batched_tokens, o.enable_prefix_caching ? "on" : "off");
    if (o.warmup > 0 || (o.warmup == 0 && o.backend && !o.backend->host_memory)) {
        rc = engine_warmup(e, err);
        if (rc != HR_OK) goto fail;
    }
    publish_stats(e);
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        rc = hr_err_set(err, HR_EIO, "engine: cannot start its thread");
        goto fail;
    }
    e->thread_started = true;
    *out = e;
    return HR_OK;
fail:
    hr_engine_free(e);
    return rc;
}

void hr_engine_shutdown(hr_engine *e, double grace_s) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    if (!e->stopping) {
        e->stopping = true;
        e->deadline = hr_time_now() + (grace_s > 0 ? grace_s : 0);
    } else if (hr_time_now() + grace_s < e->deadline) {
        e->deadline = hr_time_now() + (grace_s > 0 ? grace_s : 0);
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}

void hr_engine_free(hr_engine *e) {
    if (!e) return;
    if (e->thread_started) hr_engine_shutdown(e, 0);
    /* Anything submitted after the thread ended never started: drop it. */
    for (eng_req *r = e->inbox_head, *nx; r; r = nx) {
        nx = r->next;
        req_free(r);
    }
    free(e->aborts.ids);
    sched_output_free(&e->out);
    sched_step_buf_free(&e->buf);
    free(e->logits);
    free(e->sampled);
    free(e->results);
    free(e->sample_reqs);
    free(e->events);
    free(e->sample_rc);
    free(e->rows);
    hr_threadpool_free(e->pool);
    if (e->sched.prefix_buf) sched_destroy(&e->sched);
    if (e->kv.blocks) kv_cache_destroy(&e->kv);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

/* The front end validates for its users; this guards the engine itself
 * against values that would break sampling (NaN, out-of-range ids). */
static int check_sampling(const hr_sampling_params *p, int vocab, hr_err *err) {
    if (!(p->temperature >= 0) || !isfinite(p->temperature))
        return hr_err_set(err, HR_EINVAL, "temperature must be a finite number >= 0");
    if (!(p->top_p > 0 && p->top_p <= 1)) return hr_err_set(err, HR_EINVAL, "top_p must be in (0, 1]");
    if (!(p->min_p >= 0 && p->min_p <= 1)) return hr_err_set(err, HR_EINVAL, "min_p must be in [0, 1]");
    if (!(p->repetition_penalty > 0) || !isfinite(p->repetition_penalty))
        return hr_err_set(err, HR_EINVAL, "repetition_penalty must be > 0");
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return hr_err_set(err, HR_EINVAL, "presence/frequency penalties must be finite");
    if (p->min_tokens < 0) return hr_err_set(err, HR_EINVAL, "min_tokens must be >= 0");
    if (p->logprobs > HR_MAX_TOP_LOGPROBS)
        return hr_err_set(err, HR_EINVAL, "logprobs must be at most %d", HR_MAX_TOP_LOGPROBS);
    if (p->n_logit_bias < 0 || p->n_logit_bias > HR_MAX_LOGIT_BIAS)
        return hr_err_set(err, HR_EINVAL, "at most %d logit_bias entries", HR_MAX_LOGIT_BIAS);
    for (int i = 0; i < p->n_logit_bias; i++)
        if (p->logit_bias_ids[i] < 0 || p->logit_bias_ids[i] >= vocab || isnan(p->logit_bias_vals[i]))
            return hr_err_set(err, HR_EINVAL, "logit_bias token id %d is outside the vocabulary", p->logit_bias_ids[i]);
    return HR_OK;
}

int hr_engine_submit(hr_engine *e, const hr_request *req, hr_event_cb cb, void *user, uint64_t *id, hr_err *err) {
    if (!req || !cb || !req->prompt || req->n_prompt <= 0) return hr_err_set(err, HR_EINVAL, "empty prompt");
    for (int i = 0; i < req->n_prompt; i++)
        if (req->prompt[i] < 0 || req->prompt[i] >= e->vocab)
            return hr_err_set(err, HR_EINVAL, "prompt token id %d at position %d is outside the vocabulary (%d)",
                              req->prompt[i], i, e->vocab);
    if (req->n_prompt >= e->max_model_len)
        return hr_err_set(err, HR_EINVAL,
                          "This model's maximum context length is %d tokens. However, your request has %d input "
                          "tokens. Please reduce the length of the input messages.",
                          e->max_model_len, req->n_prompt);
    int max_new = req->max_tokens > 0 ? req->max_tokens : e->max_model_len - req->n_prompt;
    if (req->max_tokens > 0 && (long)req->n_prompt + req->max_tokens > e->max_model_len)
        return hr_err_set(err, HR_EINVAL,
                          "'max_tokens' is too large: %d. This model's maximum context length is %d tokens and your "
                          "request has %d input tokens (%d > %d - %d).",
                          req->max_tokens, e->max_model_len, req->n_prompt, req->max_tokens, e->max_model_len,
                          req->n_prompt);
    int rc = sched_check_fits(&e->sched, req->n_prompt, max_new, err);
    if (rc != HR_OK) return rc;
    if (req->n_stop_ids < 0 || (req->n_stop_ids > 0 && !req->stop_ids))
        return hr_err_set(err, HR_EINVAL, "bad stop_token_ids");
    rc = check_sampling(&req->sampling, e->vocab, err);
    if (rc != HR_OK) return rc;

    eng_req *r = calloc(1, sizeof *r);
    if (!r) return hr_err_set(err, HR_ENOMEM, "out of memory");
    r->sp = req->sampling;
    r->cb = cb;
    r->user = user;
    r->t_arrival = hr_time_now();
    int n_eos = r->sp.ignore_eos ? 0 : e->n_eos;
    r->n_user_stops = req->n_stop_ids;
    r->n_mask = req->n_stop_ids + n_eos;
    r->mask_ids = malloc((size_t)HR_MAX(r->n_mask, 1) * sizeof *r->mask_ids);
    r->sampler = hr_sampler_new(&r->sp, e->vocab, req->prompt, req->n_prompt);
    if (!r->mask_ids || !r->sampler) {
        rc = hr_err_set(err, HR_ENOMEM, "out of memory");
        goto fail;
    }
    if (req->n_stop_ids) memcpy(r->mask_ids, req->stop_ids, (size_t)req->n_stop_ids * sizeof *r->mask_ids);
    for (int i = 0; i < n_eos; i++) r->mask_ids[req->n_stop_ids + i] = e->eos[i];

    pthread_mutex_lock(&e->mu);
    if (e->stopping || e->stopped) {
        pthread_mutex_unlock(&e->mu);
        rc = hr_err_set(err, HR_EFULL, "the engine is shutting down");
        goto fail;
    }
    if (e->opts.max_waiting_requests > 0 && e->stats.num_waiting + e->n_inbox >= e->opts.max_waiting_requests) {
        pthread_mutex_unlock(&e->mu);
        rc = hr_err_set(err, HR_EFULL, "%d requests are already waiting", e->opts.max_waiting_requests);
        goto fail;
    }
    r->id = ++e->next_id;
    r->sr = sched_req_new(r->id, req->prompt, req->n_prompt, max_new);
    if (!r->sr) {
        pthread_mutex_unlock(&e->mu);
        rc = hr_err_set(err, HR_ENOMEM, "out of memory");
        goto fail;
    }
    r->sr->user = r;
    if (e->inbox_tail)
        e->inbox_tail->next = r;
    else
        e->inbox_head = r;
    e->inbox_tail = r;
    e->n_inbox++;
    if (id) *id = r->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return HR_OK;
fail:
    req_free(r);
    return rc;
}

void hr_engine_abort(hr_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    if (!e->stopped) {
        abort_push(&e->aborts, id);
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
}

void hr_engine_get_stats(hr_engine *e, hr_engine_stats *s) {
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    s->num_waiting += e->n_inbox;
    pthread_mutex_unlock(&e->mu);
}
