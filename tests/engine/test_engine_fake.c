/* The engine thread end to end over a fake model: this file defines the
 * hr_model_* functions the engine calls, so no real model (or backend) is
 * linked. The fake keeps token ids per KV slot, reads each sampled
 * sequence's context back through its block table and puts a peak of
 * logits at hash(context), plus a hash-derived spread so seeded sampling is
 * exercised. Checks: concurrent requests through a tiny pool (preemption)
 * and a small token budget (chunked prefill) give exactly the tokens each
 * request gives alone, with prefix caching on and off; seeded sampling is
 * batch-independent; stop ids, EOS, ignore_eos, min_tokens, max_tokens,
 * aborts, queue limit, validation and shutdown; the pool is free at the end. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "test.h"

#define VOCAB  64
#define EOS_ID 2

struct hr_model {
    hr_config cfg;
    int n_blocks, bs;
    int32_t *kv_tok, *kv_pos;
    int forwards;
    bool pending; /* a step begun, its ids not yet waited for */
    int32_t *pending_ids;
    int pending_n;
};

const hr_config *hr_model_config(const hr_model *m) { return &m->cfg; }
int hr_model_vocab_size(const hr_model *m) { return m->cfg.vocab_size; }
const char *hr_model_source(const hr_model *m) {
    (void)m;
    return "fake";
}
size_t hr_model_kv_block_bytes(const hr_model *m, int block_size) {
    (void)m;
    return (size_t)block_size * 1024;
}
size_t hr_model_activation_bytes(const hr_model *m, int n_tokens, int n_logits) {
    (void)m;
    return (size_t)(n_tokens + n_logits) * 64;
}
int hr_model_kv_alloc(hr_model *m, int n_blocks, int block_size, hr_err *err) {
    (void)err;
    free(m->kv_tok);
    free(m->kv_pos);
    m->n_blocks = n_blocks;
    m->bs = block_size;
    m->kv_tok = malloc(sizeof(int32_t) * n_blocks * block_size);
    m->kv_pos = malloc(sizeof(int32_t) * n_blocks * block_size);
    for (int i = 0; i < n_blocks * block_size; i++) m->kv_tok[i] = m->kv_pos[i] = -1;
    return HR_OK;
}

static uint32_t ctx_hash(const int32_t *ctx, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)ctx[i]) * 16777619u;
    return h ^ (h >> 15);
}

static int ctx_errors;
static int fake_delay_us; /* makes steps take time, so aborts land mid-flight */

int hr_model_forward(hr_model *m, const hr_step *st, float *logits, hr_err *err) {
    (void)err;
    m->forwards++;
    if (fake_delay_us) usleep((useconds_t)fake_delay_us);
    for (int i = 0; i < st->n_tokens; i++) {
        m->kv_tok[st->slot_mapping[i]] = st->tokens[i];
        m->kv_pos[st->slot_mapping[i]] = st->positions[i];
    }
    int nl = 0;
    for (int q = 0; q < st->n_seqs && nl < st->n_logits; q++) {
        int last = st->query_start[q + 1] - 1;
        if (st->logit_rows[nl] != last) continue;
        int len = st->seq_lens[q];
        int32_t *ctx = malloc(sizeof(int32_t) * len);
        for (int p = 0; p < len; p++) {
            int b = st->block_tables[q * st->max_blocks_per_seq + p / st->block_size];
            int slot = b * st->block_size + p % st->block_size;
            if (b < 0 || m->kv_pos[slot] != p) ctx_errors++;
            ctx[p] = m->kv_tok[slot];
        }
        if (ctx[len - 1] != st->tokens[last]) ctx_errors++;
        uint32_t h = ctx_hash(ctx, len);
        float *row = logits + (size_t)nl * VOCAB;
        for (int v = 0; v < VOCAB; v++) row[v] = (float)((h >> (v % 13)) & 7) * 0.3f;
        row[h % VOCAB] += 4.0f;
        free(ctx);
        nl++;
    }
    return HR_OK;
}

/* The device entries, in halves as the engine calls them: _begin computes
 * the step's ids (greedy: the fake logits' argmax, lowest id on ties, as the
 * sampler's greedy path; sampled: row by row with the backend's reference,
 * what the CPU backend's sample op runs) and keeps them until
 * hr_model_ids_wait. A second _begin before the wait, or a wait with
 * nothing begun, counts as an error. */
static int fake_sample_calls, fake_protocol_errors;
static int fake_ids_begin(hr_model *m, const hr_step *st, const hr_sample_row *rows, hr_err *err) {
    if (m->pending) fake_protocol_errors++;
    float *lg = malloc(sizeof(float) * (size_t)(st->n_logits > 0 ? st->n_logits : 1) * VOCAB);
    int rc = hr_model_forward(m, st, lg, err);
    free(m->pending_ids);
    m->pending_ids = malloc(sizeof(int32_t) * (size_t)(st->n_logits > 0 ? st->n_logits : 1));
    for (int r = 0; rc == HR_OK && r < st->n_logits; r++) {
        float *x = lg + (size_t)r * VOCAB; /* the reference may modify the row */
        if (rows) {
            rc = hr_sample_row_ref(&rows[r], x, VOCAB, &m->pending_ids[r]);
            continue;
        }
        int best = 0;
        for (int c = 1; c < VOCAB; c++)
            if (x[c] > x[best]) best = c;
        m->pending_ids[r] = best;
    }
    free(lg);
    if (rc == HR_OK) {
        m->pending = true;
        m->pending_n = st->n_logits;
    }
    return rc;
}
int hr_model_forward_greedy_begin(hr_model *m, const hr_step *st, hr_err *err) {
    return fake_ids_begin(m, st, NULL, err);
}
int hr_model_forward_sample_begin(hr_model *m, const hr_step *st, const hr_sample_row *rows, hr_err *err) {
    fake_sample_calls++;
    return fake_ids_begin(m, st, rows, err);
}
int hr_model_ids_wait(hr_model *m, int32_t *ids, hr_err *err) {
    (void)err;
    if (!m->pending) {
        fake_protocol_errors++;
        return HR_EINVAL;
    }
    memcpy(ids, m->pending_ids, sizeof(int32_t) * (size_t)m->pending_n);
    m->pending = false;
    return HR_OK;
}

static void fake_init(hr_model *m) {
    memset(m, 0, sizeof *m);
    m->cfg.vocab_size = VOCAB;
    m->cfg.hidden_size = 8;
    m->cfg.num_hidden_layers = 1;
    m->cfg.max_position_embeddings = 256;
    m->cfg.n_eos = 1;
    m->cfg.eos_token_ids[0] = EOS_ID;
}
static void fake_free(hr_model *m) {
    free(m->kv_tok);
    free(m->kv_pos);
    free(m->pending_ids);
}

#define NREQ 24
typedef struct job {
    int32_t prompt[200];
    int np, max_tokens;
    hr_sampling_params sp;
} job;

static void make_jobs(job *jobs) {
    uint32_t s = 12345;
    int32_t shared[48];
    for (int i = 0; i < 48; i++) shared[i] = 3 + (int32_t)((s = s * 1103515245u + 12345u) >> 16) % (VOCAB - 3);
    for (int k = 0; k < NREQ; k++) {
        job *j = &jobs[k];
        s = s * 1103515245u + 12345u;
        j->np = 1 + (int)((s >> 16) % 120);
        s = s * 1103515245u + 12345u;
        j->max_tokens = 1 + (int)((s >> 16) % 30);
        int sh = k % 3 == 0 ? HR_MIN(j->np, 48) : 0;
        for (int i = 0; i < j->np; i++) {
            s = s * 1103515245u + 12345u;
            j->prompt[i] = i < sh ? shared[i] : 3 + (int32_t)((s >> 16) % (VOCAB - 3));
        }
        hr_sampling_params_default(&j->sp);
        if (k % 2 == 0)
            j->sp.temperature = 0;
        else {
            j->sp.temperature = 0.9f;
            j->sp.top_p = 0.9f;
            j->sp.has_seed = true;
            j->sp.seed = (uint64_t)k * 7;
        }
        j->sp.ignore_eos = k % 4 == 1;
    }
}

/* Runs jobs [0, n) through an engine; concurrently when `together`. */
static void run_jobs(const job *jobs, int n, const hr_engine_opts *o, bool together, result *res,
                     hr_engine_stats *st_out) {
    hr_model m;
    fake_init(&m);
    hr_engine *e = NULL;
    hr_err err = {0};
    CHECK_EQ_INT(hr_engine_create(&m, o, &e, &err), HR_OK);
    for (int k = 0; k < n; k++) {
        result_init(&res[k]);
        hr_request rq = {
            .prompt = jobs[k].prompt, .n_prompt = jobs[k].np, .sampling = jobs[k].sp, .max_tokens = jobs[k].max_tokens};
        uint64_t id;
        CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &res[k], &id, &err), HR_OK);
        if (!together) result_wait(&res[k]);
    }
    for (int k = 0; k < n; k++) result_wait(&res[k]);
    hr_engine_shutdown(e, 1.0);
    hr_engine_get_stats(e, st_out);
    CHECK_EQ_INT(st_out->kv_blocks_free, st_out->kv_blocks_total);
    hr_engine_free(e);
    fake_free(&m);
}

static void test_batching_invariance(void) {
    static job jobs[NREQ];
    make_jobs(jobs);
    static result alone[NREQ], together[NREQ], noprefix[NREQ], host[NREQ];
    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 160;
    o.kv_cache_memory = 4 * 1024 * 256; /* 256 blocks: plenty */
    hr_engine_stats st;
    run_jobs(jobs, NREQ, &o, false, alone, &st);
    /* tiny pool + small budget: preemption and chunked prefill */
    o.kv_cache_memory = 4 * 1024 * 48; /* 48 blocks = 192 tokens */
    o.max_num_batched_tokens = 24;
    o.max_num_seqs = 8;
    o.n_sampler_threads = 3; /* rows sampled in parallel: results must not change */
    run_jobs(jobs, NREQ, &o, true, together, &st);
    printf("together: %llu preemptions, prefix hits %llu / %llu tokens\n", (unsigned long long)st.num_preemptions_total,
           (unsigned long long)st.prefix_hits_total, (unsigned long long)st.prefix_queries_total);
    CHECK(st.num_preemptions_total > 0);
    CHECK(st.prefix_hits_total > 0);
    o.enable_prefix_caching = false;
    run_jobs(jobs, NREQ, &o, true, noprefix, &st);
    CHECK_EQ_INT(st.prefix_hits_total, 0);
    /* the host sampler (logits copied) gives what the device-sampling entry gave */
    CHECK(fake_sample_calls > 0);
    fake_sample_calls = 0;
    o.host_sampling = true;
    run_jobs(jobs, NREQ, &o, true, host, &st);
    CHECK_EQ_INT(fake_sample_calls, 0);
    int mism = 0, mism2 = 0, mism3 = 0;
    for (int k = 0; k < NREQ; k++) {
        if (alone[k].n != together[k].n || memcmp(alone[k].toks, together[k].toks, sizeof(int32_t) * alone[k].n))
            mism++;
        if (alone[k].n != noprefix[k].n || memcmp(alone[k].toks, noprefix[k].toks, sizeof(int32_t) * alone[k].n))
            mism2++;
        if (!result_same(&alone[k], &host[k])) mism3++;
        CHECK(alone[k].fin == together[k].fin);
        CHECK_EQ_INT(alone[k].events_after_done + together[k].events_after_done, 0);
        /* finish reasons follow the rules */
        int32_t last = alone[k].toks[alone[k].n - 1];
        if (alone[k].fin == HR_FINISH_STOP)
            CHECK(last == EOS_ID && !jobs[k].sp.ignore_eos);
        else
            CHECK(alone[k].fin == HR_FINISH_LENGTH && alone[k].n == jobs[k].max_tokens);
        for (int i = 0; i + 1 < alone[k].n; i++)
            if (!jobs[k].sp.ignore_eos) CHECK(alone[k].toks[i] != EOS_ID);
    }
    CHECK_EQ_INT(mism, 0);
    CHECK_EQ_INT(mism2, 0);
    CHECK_EQ_INT(mism3, 0);
    CHECK_EQ_INT(ctx_errors, 0);
    CHECK_EQ_INT(fake_protocol_errors, 0);
    for (int k = 0; k < NREQ; k++) {
        result_destroy(&alone[k]);
        result_destroy(&together[k]);
        result_destroy(&noprefix[k]);
        result_destroy(&host[k]);
    }
}

/* stop ids, min_tokens, validation, queue limit, abort, shutdown with work left */
static void test_controls(void) {
    hr_model m;
    fake_init(&m);
    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 64;
    o.kv_cache_memory = 4 * 1024 * 64;
    o.max_waiting_requests = 1000;
    hr_engine *e;
    hr_err err = {0};
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_OK);
    int32_t prompt[8] = {5, 6, 7, 8, 9, 10, 11, 12};
    uint64_t id;
    /* reference run: greedy, ignore_eos, 20 tokens */
    result ref;
    result_init(&ref);
    hr_request rq = {.prompt = prompt, .n_prompt = 8, .max_tokens = 20};
    hr_sampling_params_default(&rq.sampling);
    rq.sampling.temperature = 0;
    rq.sampling.ignore_eos = true;
    CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &ref, &id, &err), HR_OK);
    result_wait(&ref);
    CHECK_EQ_INT(ref.n, 20);
    CHECK(ref.fin == HR_FINISH_LENGTH);
    /* a stop id equal to the 5th token ends there, the token included */
    result r1;
    result_init(&r1);
    int32_t stop = ref.toks[4];
    int first = 0;
    while (ref.toks[first] != stop) first++;
    rq.n_stop_ids = 1;
    rq.stop_ids = &stop;
    CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &r1, &id, &err), HR_OK);
    result_wait(&r1);
    CHECK(r1.fin == HR_FINISH_STOP);
    CHECK_EQ_INT(r1.n, first + 1);
    /* min_tokens masks the stop id: never generated before min_tokens */
    result r2;
    result_init(&r2);
    rq.sampling.min_tokens = 10;
    CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &r2, &id, &err), HR_OK);
    result_wait(&r2);
    for (int i = 0; i < HR_MIN(r2.n, 9); i++) CHECK(r2.toks[i] != stop);
    CHECK(r2.n >= 10);
    rq.sampling.min_tokens = 0;
    rq.n_stop_ids = 0;
    /* validation */
    int32_t badp[2] = {1, VOCAB};
    hr_request bad = rq;
    bad.prompt = badp;
    bad.n_prompt = 2;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad = rq;
    bad.max_tokens = 60; /* 8 + 60 > 64 */
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad.n_prompt = 0;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad = rq;
    bad.sampling.top_p = 0;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad = rq;
    bad.sampling.temperature = NAN;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad = rq;
    bad.sampling.n_logit_bias = 1;
    bad.sampling.logit_bias_ids[0] = VOCAB;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    bad = rq;
    bad.sampling.logprobs = 21;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r2, &id, &err), HR_EINVAL);
    /* max_tokens <= 0: up to the context limit */
    result r3;
    result_init(&r3);
    bad = rq;
    bad.max_tokens = 0;
    CHECK_EQ_INT(hr_engine_submit(e, &bad, on_event, &r3, &id, &err), HR_OK);
    result_wait(&r3);
    CHECK_EQ_INT(r3.n, 64 - 8);
    CHECK(r3.fin == HR_FINISH_LENGTH);
    /* abort: many long requests, abort them all, each gets one final ABORT */
    enum { NA = 12 };
    static result ra[NA];
    uint64_t ids[NA];
    rq.max_tokens = 50;
    for (int k = 0; k < NA; k++) {
        result_init(&ra[k]);
        CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &ra[k], &ids[k], &err), HR_OK);
    }
    for (int k = 0; k < NA; k++) hr_engine_abort(e, ids[k]);
    hr_engine_abort(e, 999999); /* unknown: no-op */
    int aborted = 0;
    for (int k = 0; k < NA; k++) {
        result_wait(&ra[k]);
        aborted += ra[k].fin == HR_FINISH_ABORT;
    }
    CHECK(aborted > 0);
    /* blocks are back once the aborts were handled: wait for the idle snapshot */
    hr_engine_stats st;
    for (int i = 0; i < 200; i++) {
        hr_engine_get_stats(e, &st);
        if (st.num_running + st.num_waiting == 0 && st.kv_blocks_free == st.kv_blocks_total) break;
        usleep(5000);
    }
    CHECK_EQ_INT(st.kv_blocks_free, st.kv_blocks_total);
    CHECK_EQ_INT(st.max_model_len, 64);
    /* shutdown with requests in flight and no grace: all get a final event */
    static result rs[NA];
    for (int k = 0; k < NA; k++) {
        result_init(&rs[k]);
        CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &rs[k], &ids[k], &err), HR_OK);
    }
    hr_engine_shutdown(e, 0);
    for (int k = 0; k < NA; k++) {
        CHECK(rs[k].done);
        CHECK_EQ_INT(rs[k].events_after_done, 0);
    }
    CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &r2, &id, &err), HR_EFULL);
    hr_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv_blocks_free, st.kv_blocks_total);
    hr_engine_free(e);
    for (int k = 0; k < NA; k++) {
        result_destroy(&ra[k]);
        result_destroy(&rs[k]);
    }
    result_destroy(&ref);
    result_destroy(&r1);
    result_destroy(&r2);
    result_destroy(&r3);
    fake_free(&m);
}

/* queue limit: a blocked engine (no steps yet) rejects the overflow */
static void test_queue_limit(void) {
    hr_model m;
    fake_init(&m);
    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 64;
    o.kv_cache_memory = 4 * 1024 * 16;
    o.max_waiting_requests = 3;
    o.max_num_seqs = 1;
    hr_engine *e;
    hr_err err = {0};
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_OK);
    int32_t prompt[4] = {5, 6, 7, 8};
    hr_request rq = {.prompt = prompt, .n_prompt = 4, .max_tokens = 40};
    hr_sampling_params_default(&rq.sampling);
    rq.sampling.ignore_eos = true;
    static result r[20];
    int full = 0, ok = 0;
    uint64_t id;
    for (int k = 0; k < 20; k++) {
        result_init(&r[k]);
        int rc = hr_engine_submit(e, &rq, on_event, &r[k], &id, &err);
        if (rc == HR_EFULL)
            full++, r[k].done = true;
        else
            ok += rc == HR_OK;
    }
    CHECK(full > 0);
    CHECK(ok >= 3);
    for (int k = 0; k < 20; k++) result_wait(&r[k]);
    hr_engine_free(e);
    for (int k = 0; k < 20; k++) result_destroy(&r[k]);
    fake_free(&m);
}

/* Device sizing: fraction x device total minus what the backend holds at peak. */
static int fake_mem_info(hr_backend *be, size_t *in_use, size_t *peak, size_t *total) {
    (void)be;
    *in_use = 50000;
    *peak = 100000;
    *total = 1000000;
    return HR_OK;
}

static void test_gpu_sizing(void) {
    hr_model m;
    fake_init(&m);
    static const hr_backend_ops ops = {.name = "fakegpu", .mem_info = fake_mem_info};
    hr_backend be = {.ops = &ops};
    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4; /* 4096 bytes per block in the fake */
    o.max_model_len = 64;
    o.backend = &be;
    o.kv_memory_fraction = 0.5f;
    o.max_num_batched_tokens = 64;
    o.max_num_seqs = 16;
    hr_engine *e;
    hr_err err = {0};
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_OK);
    hr_engine_stats st;
    hr_engine_get_stats(e, &st);
    /* half the device, minus the peak held (weights), the largest step's
     * activations (the fake: 64 B per row) and the backend scratch reserve
     * (5 % of this small device) */
    CHECK_EQ_INT(st.kv_blocks_total, (500000 - 100000 - (64 + 16) * 64 - 50000) / 4096);
    hr_engine_free(e);
    /* a fraction too small for the max_model_len asked for: the pool still holds one full sequence */
    o.kv_memory_fraction = 0.1f;
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_OK); /* explicit max_model_len is honoured */
    hr_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv_blocks_total, 16);
    hr_engine_free(e);
    o.kv_cache_memory = 4096 * 8; /* explicit memory too small for max_model_len 64 */
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_EINVAL);
    o.max_model_len = 0; /* automatic: capped by memory */
    CHECK_EQ_INT(hr_engine_create(&m, &o, &e, &err), HR_OK);
    hr_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.max_model_len, 32);
    hr_engine_free(e);
    fake_free(&m);
}

/* Stress: many requests through a tiny pool while another thread aborts
 * random ones mid-flight. Every request gets exactly one final event, the
 * survivors' outputs equal their solo outputs, and the pool ends free. */
#define NS 120
typedef struct stress {
    hr_engine *e;
    uint64_t ids[NS];
    int n_submitted;
    pthread_mutex_t mu;
} stress;

static void *aborter(void *arg) {
    stress *st = arg;
    uint32_t s = 7;
    for (int i = 0; i < 400; i++) {
        pthread_mutex_lock(&st->mu);
        int n = st->n_submitted;
        s = s * 1103515245u + 12345u;
        uint64_t id = n ? st->ids[(s >> 16) % (uint32_t)n] : 0;
        pthread_mutex_unlock(&st->mu);
        if (n && (s >> 8) % 4 == 0) hr_engine_abort(st->e, id);
        usleep(200);
    }
    return NULL;
}

static void test_abort_stress(void) {
    static job jobs[NS];
    static result solo[NS], res[NS];
    uint32_t s = 4242;
    for (int k = 0; k < NS; k++) {
        job *j = &jobs[k];
        s = s * 1103515245u + 12345u;
        j->np = 1 + (int)((s >> 16) % 60);
        j->max_tokens = 1 + (int)((s >> 20) % 40);
        for (int i = 0; i < j->np; i++) j->prompt[i] = 3 + (int32_t)(((s = s * 1103515245u + 12345u) >> 16) % 20);
        hr_sampling_params_default(&j->sp);
        j->sp.temperature = 0;
        j->sp.ignore_eos = true;
    }
    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 128;
    o.kv_cache_memory = 4 * 1024 * 512;
    hr_engine_stats st;
    run_jobs(jobs, NS, &o, true, solo, &st);

    hr_model m;
    fake_init(&m);
    o.kv_cache_memory = 4 * 1024 * 40; /* 160 tokens */
    o.max_num_batched_tokens = 20;
    o.max_num_seqs = 16;
    o.n_sampler_threads = 2;
    stress sx = {0};
    pthread_mutex_init(&sx.mu, NULL);
    hr_err err = {0};
    CHECK_EQ_INT(hr_engine_create(&m, &o, &sx.e, &err), HR_OK);
    pthread_t th;
    fake_delay_us = 300;
    pthread_create(&th, NULL, aborter, &sx);
    for (int k = 0; k < NS; k++) {
        result_init(&res[k]);
        hr_request rq = {
            .prompt = jobs[k].prompt, .n_prompt = jobs[k].np, .sampling = jobs[k].sp, .max_tokens = jobs[k].max_tokens};
        uint64_t id;
        CHECK_EQ_INT(hr_engine_submit(sx.e, &rq, on_event, &res[k], &id, &err), HR_OK);
        pthread_mutex_lock(&sx.mu);
        sx.ids[sx.n_submitted++] = id;
        pthread_mutex_unlock(&sx.mu);
        if (k % 10 == 0) usleep(500);
    }
    pthread_join(th, NULL);
    int aborted = 0, mism = 0, after = 0;
    for (int k = 0; k < NS; k++) {
        result_wait(&res[k]);
        after += res[k].events_after_done;
        if (res[k].fin == HR_FINISH_ABORT) {
            aborted++;
            /* what it produced before the abort is a prefix of its solo output */
            if (res[k].n > solo[k].n || memcmp(res[k].toks, solo[k].toks, sizeof(int32_t) * (size_t)res[k].n)) mism++;
        } else if (res[k].n != solo[k].n || memcmp(res[k].toks, solo[k].toks, sizeof(int32_t) * (size_t)res[k].n)) {
            mism++;
        }
    }
    fake_delay_us = 0;
    hr_engine_shutdown(sx.e, 1.0);
    hr_engine_get_stats(sx.e, &st);
    printf("abort stress: %d of %d aborted, %llu preemptions\n", aborted, NS,
           (unsigned long long)st.num_preemptions_total);
    CHECK(aborted > 0 && aborted < NS);
    CHECK_EQ_INT(mism, 0);
    CHECK_EQ_INT(after, 0);
    CHECK_EQ_INT(st.kv_blocks_free, st.kv_blocks_total);
    CHECK_EQ_INT(ctx_errors, 0);
    CHECK_EQ_INT(fake_protocol_errors, 0);
    hr_engine_free(sx.e);
    for (int k = 0; k < NS; k++) {
        result_destroy(&solo[k]);
        result_destroy(&res[k]);
    }
    pthread_mutex_destroy(&sx.mu);
    fake_free(&m);
}

int main(void) {
    test_abort_stress();
    test_gpu_sizing();
    test_batching_invariance();
    test_controls();
    test_queue_limit();
    return test_report("engine/test_engine_fake");
}
