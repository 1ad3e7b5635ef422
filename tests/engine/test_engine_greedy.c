/* The engine's device-greedy fast path (hr_model_forward_greedy + the
 * backend's argmax) against the logits + sampler path, on the fixture
 * tiny-llama (CPU backend): the same concurrent greedy requests give the same
 * tokens with disable_device_greedy on and off, and with the backend's argmax
 * op removed (the model's host fallback). The requests mix plain greedy ones
 * (fast), ones whose min_tokens mask is active for their first tokens (slow
 * steps, then fast), one stopping on EOS, and a seeded sampled one (its steps
 * take the sampler). A counting wrapper of the argmax op checks which path ran.
 * Skips (77) when the fixture or the CPU backend is missing. */
#include <pthread.h>
#include <string.h>

#include "engine/engine.h"
#include "test.h"

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t toks[128];
    int n;
    hr_finish_reason fin;
    bool done;
} result;

static void on_event(void *user, const hr_event *ev) {
    result *r = user;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < ev->n_tokens && r->n < 128; i++) r->toks[r->n++] = ev->tokens[i].id;
    if (ev->finish != HR_FINISH_NONE) {
        r->fin = ev->finish;
        r->done = true;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

/* the backend's ops with argmax counted (or removed) */
static hr_backend_ops wrapped;
static const hr_backend_ops *orig;
static int n_argmax; /* engine thread only; read after it has joined */
static int counting_argmax(hr_backend *be, const hr_tensor *logits, int32_t *ids) {
    n_argmax++;
    return orig->argmax(be, logits, ids);
}

#define NJ 8
typedef struct job {
    int32_t prompt[48];
    int np, max_tokens;
    hr_sampling_params sp;
} job;

static int run(hr_model *m, const hr_engine_opts *o, const job *jobs, result *res) {
    hr_engine *e = NULL;
    hr_err err = {0};
    if (hr_engine_create(m, o, &e, &err) != HR_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        return -1;
    }
    for (int k = 0; k < NJ; k++) {
        memset(&res[k], 0, sizeof res[k]);
        pthread_mutex_init(&res[k].mu, NULL);
        pthread_cond_init(&res[k].cv, NULL);
        hr_request rq = {
            .prompt = jobs[k].prompt, .n_prompt = jobs[k].np, .sampling = jobs[k].sp, .max_tokens = jobs[k].max_tokens};
        uint64_t id;
        CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &res[k], &id, &err), HR_OK);
    }
    for (int k = 0; k < NJ; k++) {
        pthread_mutex_lock(&res[k].mu);
        while (!res[k].done) pthread_cond_wait(&res[k].cv, &res[k].mu);
        pthread_mutex_unlock(&res[k].mu);
    }
    hr_engine_shutdown(e, 1.0);
    hr_engine_free(e);
    for (int k = 0; k < NJ; k++) {
        pthread_mutex_destroy(&res[k].mu);
        pthread_cond_destroy(&res[k].cv);
    }
    return 0;
}

static void compare(const result *a, const result *b, const char *what) {
    for (int k = 0; k < NJ; k++) {
        bool same = a[k].n == b[k].n && a[k].fin == b[k].fin &&
                    memcmp(a[k].toks, b[k].toks, sizeof(int32_t) * (size_t)a[k].n) == 0;
        CHECK_MSG(same, "job %d: %s: %d tokens (finish %d) vs %d (finish %d)", k, what, a[k].n, (int)a[k].fin, b[k].n,
                  (int)b[k].fin);
    }
}

int main(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/tiny-llama", test_fixtures());
    hr_err err = {0};
    hr_backend_opts bo = {.device = "cpu", .n_threads = 2};
    hr_backend *be = hr_backend_create(&bo, &err);
    if (!be) TEST_SKIP("no CPU backend: %s", err.msg);
    hr_model *m = NULL;
    hr_model_opts mo = {.weight_dtype = HR_DTYPE_COUNT};
    if (hr_model_load(dir, be, &mo, &m, &err) != HR_OK) {
        hr_backend_free(be);
        TEST_SKIP("no fixture %s: %s", dir, err.msg);
    }
    int V = hr_model_vocab_size(m);
    static job jobs[NJ];
    uint32_t s = 7;
    for (int k = 0; k < NJ; k++) {
        job *j = &jobs[k];
        hr_sampling_params_default(&j->sp);
        j->sp.temperature = 0;
        j->sp.ignore_eos = true; /* full length, no mask: the fast path */
        j->np = 3 + (k * 11) % 40;
        for (int i = 0; i < j->np; i++) j->prompt[i] = (int32_t)(((s = s * 1103515245u + 12345u) >> 16) % (uint32_t)V);
        if (k >= 2) memcpy(j->prompt, jobs[0].prompt, sizeof(int32_t) * 3); /* shared prefix */
        j->max_tokens = 12 + (k * 5) % 17;
    }
    jobs[2].sp.ignore_eos = false; /* EOS masked for 5 tokens: sampler steps first */
    jobs[2].sp.min_tokens = 5;
    jobs[3].sp.ignore_eos = false;  /* stops on EOS if the model says so */
    jobs[4].sp.temperature = 1e-6f; /* below the sampler's greedy threshold: still greedy */
    jobs[5].sp.temperature = 0.7f;  /* sampled, seeded: the steps it is in take the sampler */
    jobs[5].sp.has_seed = true;
    jobs[5].sp.seed = 11;

    orig = be->ops;
    wrapped = *orig;
    wrapped.argmax = counting_argmax;
    be->ops = &wrapped;

    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 96;
    o.kv_cache_memory = hr_model_kv_block_bytes(m, o.block_size) * 256;
    o.max_num_batched_tokens = 32; /* chunked prefill: steps without a sampled row */
    static result slow[NJ], fast[NJ], fallback[NJ], alone_fast[NJ];

    o.disable_device_greedy = true;
    n_argmax = 0;
    if (run(m, &o, jobs, slow)) goto done;
    CHECK_EQ_INT(n_argmax, 0);

    o.disable_device_greedy = false;
    n_argmax = 0;
    if (run(m, &o, jobs, fast)) goto done;
    printf("device greedy: %d argmax steps\n", n_argmax);
    CHECK(n_argmax > 0);
    compare(slow, fast, "device greedy vs sampler");

    /* no argmax op: hr_model_forward_greedy copies the logits and reduces them itself */
    wrapped.argmax = NULL;
    if (run(m, &o, jobs, fallback)) goto done;
    compare(slow, fallback, "host fallback vs sampler");
    wrapped.argmax = counting_argmax;

    /* only plain greedy requests: every step with a sampled row is a fast one */
    static job plain[NJ];
    for (int k = 0; k < NJ; k++) {
        plain[k] = jobs[k];
        hr_sampling_params_default(&plain[k].sp);
        plain[k].sp.temperature = 0;
        plain[k].sp.ignore_eos = true;
    }
    o.disable_device_greedy = true;
    if (run(m, &o, plain, slow)) goto done;
    o.disable_device_greedy = false;
    n_argmax = 0;
    if (run(m, &o, plain, alone_fast)) goto done;
    CHECK(n_argmax > 0);
    compare(slow, alone_fast, "all plain greedy");
    for (int k = 0; k < NJ; k++) CHECK_EQ_INT(alone_fast[k].n, plain[k].max_tokens);

done:
    be->ops = orig;
    hr_model_free(m);
    hr_backend_free(be);
    return test_report("engine/test_engine_greedy");
}
