/* The engine's device sampling paths (hr_model_forward_greedy + the backend's
 * argmax; hr_model_forward_sample + the backend's sample op) against the
 * logits + host sampler path, on the fixture tiny-llama (CPU backend): the
 * same concurrent requests give the same tokens with host_sampling on and
 * off, and with the backend's argmax / sample ops removed (the model's host
 * fallbacks). The requests mix plain greedy ones (argmax), ones whose
 * min_tokens mask is active for their first tokens (sample op, then argmax),
 * one stopping on EOS, one asking for logprobs (its steps stay on the host),
 * and seeded sampled ones with temperature, top-k, top-p, min-p, penalties
 * and logit_bias (sample op). Counting wrappers of the two ops check which
 * path ran. Skips (77) when the fixture or the CPU backend is missing. */
#include <pthread.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "test.h"

/* the backend's ops with argmax counted (or removed) */
static hr_backend_ops wrapped;
static const hr_backend_ops *orig;
static int n_argmax; /* engine thread only; read after it has joined */
static int n_sample;
static int counting_argmax(hr_backend *be, const hr_tensor *logits, int32_t *ids) {
    n_argmax++;
    return orig->argmax(be, logits, ids);
}
static int counting_sample(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n, int32_t *ids) {
    n_sample++;
    return orig->sample(be, logits, rows, n, ids);
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
        result_init(&res[k]);
        hr_request rq = {
            .prompt = jobs[k].prompt, .n_prompt = jobs[k].np, .sampling = jobs[k].sp, .max_tokens = jobs[k].max_tokens};
        uint64_t id;
        CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &res[k], &id, &err), HR_OK);
    }
    for (int k = 0; k < NJ; k++) result_wait(&res[k]);
    hr_engine_shutdown(e, 1.0);
    hr_engine_free(e);
    for (int k = 0; k < NJ; k++) result_destroy(&res[k]);
    return 0;
}

static void compare(const result *a, const result *b, const char *what) {
    for (int k = 0; k < NJ; k++) {
        CHECK_MSG(result_same(&a[k], &b[k]), "job %d: %s: %d tokens (finish %d) vs %d (finish %d)", k, what, a[k].n, (int)a[k].fin, b[k].n,
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
    jobs[4].sp.logprobs = 2;        /* logprobs: its steps take the host sampler */
    jobs[4].max_tokens = 3;         /* (briefly, so most steps stay on the device) */
    jobs[5].sp.temperature = 0.7f;  /* sampled, seeded: the steps it is in take the sample op */
    jobs[5].sp.has_seed = true;
    jobs[5].sp.seed = 11;
    jobs[6].sp.temperature = 1.3f;  /* every filter and penalty at once */
    jobs[6].sp.top_k = 12;
    jobs[6].sp.top_p = 0.85f;
    jobs[6].sp.min_p = 0.02f;
    jobs[6].sp.presence_penalty = 0.4f;
    jobs[6].sp.frequency_penalty = 0.3f;
    jobs[6].sp.repetition_penalty = 1.3f;
    jobs[6].sp.has_seed = true;
    jobs[6].sp.seed = 0x123456789abcULL;
    jobs[7].sp.temperature = 1.0f; /* top-p alone, logit_bias, min_tokens with EOS masked */
    jobs[7].sp.top_p = 0.6f;
    jobs[7].sp.ignore_eos = false;
    jobs[7].sp.min_tokens = 4;
    jobs[7].sp.n_logit_bias = 2;
    jobs[7].sp.logit_bias_ids[0] = jobs[7].prompt[0];
    jobs[7].sp.logit_bias_vals[0] = 3.0f;
    jobs[7].sp.logit_bias_ids[1] = 5;
    jobs[7].sp.logit_bias_vals[1] = -100.0f;
    jobs[7].sp.has_seed = true;
    jobs[7].sp.seed = 3;
    for (int k = 5; k < NJ; k++) jobs[k].max_tokens = 10; /* the plain greedy ones outlast them */

    orig = be->ops;
    wrapped = *orig;
    wrapped.argmax = counting_argmax;
    wrapped.sample = counting_sample;
    be->ops = &wrapped;

    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 96;
    o.kv_cache_memory = hr_model_kv_block_bytes(m, o.block_size) * 256;
    o.max_num_batched_tokens = 32; /* chunked prefill: steps without a sampled row */
    static result slow[NJ], fast[NJ], fallback[NJ], alone_fast[NJ];

    o.host_sampling = true;
    n_argmax = n_sample = 0;
    if (run(m, &o, jobs, slow)) goto done;
    CHECK_EQ_INT(n_argmax, 0);
    CHECK_EQ_INT(n_sample, 0);

    o.host_sampling = false;
    n_argmax = n_sample = 0;
    if (run(m, &o, jobs, fast)) goto done;
    printf("device sampling: %d argmax steps, %d sample steps\n", n_argmax, n_sample);
    CHECK(n_argmax > 0);
    CHECK(n_sample > 0);
    compare(slow, fast, "device sampling vs host sampler");

    /* no argmax / sample op: the model copies the logits and runs the same reference itself */
    wrapped.argmax = NULL;
    wrapped.sample = NULL;
    if (run(m, &o, jobs, fallback)) goto done;
    compare(slow, fallback, "host fallback vs sampler");
    wrapped.argmax = counting_argmax;
    wrapped.sample = counting_sample;

    /* only plain greedy requests: every step with a sampled row is a fast one */
    static job plain[NJ];
    for (int k = 0; k < NJ; k++) {
        plain[k] = jobs[k];
        hr_sampling_params_default(&plain[k].sp);
        plain[k].sp.temperature = 0;
        plain[k].sp.ignore_eos = true;
    }
    o.host_sampling = true;
    if (run(m, &o, plain, slow)) goto done;
    o.host_sampling = false;
    n_argmax = n_sample = 0;
    if (run(m, &o, plain, alone_fast)) goto done;
    CHECK(n_argmax > 0);
    CHECK_EQ_INT(n_sample, 0);
    compare(slow, alone_fast, "all plain greedy");
    for (int k = 0; k < NJ; k++) CHECK_EQ_INT(alone_fast[k].n, plain[k].max_tokens);

done:
    be->ops = orig;
    hr_model_free(m);
    hr_backend_free(be);
    return test_report("engine/test_engine_greedy");
}
