/* The engine on a real model: the fixture tiny-llama on the CPU backend.
 * 1. Each golden prompt alone (greedy, EOS masked by min_tokens, 24 tokens)
 *    gives the golden continuation from transformers.
 * 2. Many concurrent greedy requests with different prompts (sharing
 *    prefixes) through a tiny KV pool (forces preemption) and a small token
 *    budget (chunked prefill) give exactly the tokens each gives alone; and
 *    the same with prefix caching off, and with a big pool where requests
 *    share prefix blocks computed in the same step.
 * 3. A seeded sampled request gives the same tokens alone and in a batch.
 * 4. With the start-up warm-up on, stats start from zero, the warm-up's
 *    blocks are not matchable, and outputs are unchanged.
 * Skips (77) when the fixture or the CPU backend is missing. */
#include <jansson.h>
#include <pthread.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "test.h"

#define NJ 10
typedef struct job {
    int32_t prompt[128];
    int np, max_tokens;
    hr_sampling_params sp;
} job;

static void j_min_tokens(job *j) { j->sp.min_tokens = j->max_tokens; }

static int run(hr_model *m, const hr_engine_opts *o, const job *jobs, int n, bool together, result *res,
               hr_engine_stats *st) {
    hr_engine *e = NULL;
    hr_err err = {0};
    if (hr_engine_create(m, o, &e, &err) != HR_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        return -1;
    }
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
    hr_engine_get_stats(e, st);
    CHECK_EQ_INT(st->kv_blocks_free, st->kv_blocks_total);
    hr_engine_free(e);
    return 0;
}

static int same(const result *a, const result *b) {
    return a->n == b->n && memcmp(a->toks, b->toks, sizeof(int32_t) * (size_t)a->n) == 0;
}

int main(void) {
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/models/tiny-llama", test_fixtures());
    snprintf(path, sizeof path, "%s/golden.json", dir);
    json_error_t jerr;
    json_t *g = json_load_file(path, 0, &jerr);
    if (!g) TEST_SKIP("no fixture %s", path);
    hr_err err = {0};
    hr_backend_opts bo = {.device = "cpu", .n_threads = 2};
    hr_backend *be = hr_backend_create(&bo, &err);
    if (!be) {
        json_decref(g);
        TEST_SKIP("no CPU backend: %s", err.msg);
    }
    hr_model *m = NULL;
    hr_model_opts mo = {.weight_dtype = HR_DTYPE_COUNT};
    if (hr_model_load(dir, be, &mo, &m, &err) != HR_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        CHECK(0);
        goto done;
    }

    static job jobs[NJ];
    json_t *prompts = json_object_get(g, "prompts"), *greedy = json_object_get(g, "greedy");
    int ng = (int)json_array_size(prompts);
    uint32_t s = 99;
    for (int k = 0; k < NJ; k++) {
        job *j = &jobs[k];
        hr_sampling_params_default(&j->sp);
        j->sp.temperature = 0;
        if (k < ng) {
            json_t *p = json_array_get(prompts, (size_t)k);
            j->np = (int)json_array_size(p);
            for (int i = 0; i < j->np; i++) j->prompt[i] = (int32_t)json_integer_value(json_array_get(p, (size_t)i));
            j->max_tokens = 24;
        } else {
            /* golden prompt 2 as a shared prefix, then a private tail */
            const job *base = &jobs[k % ng];
            int keep = HR_MIN(base->np, 5 + 4 * (k % 5));
            memcpy(j->prompt, base->prompt, sizeof(int32_t) * (size_t)keep);
            j->np = keep + 3 + (k * 7) % 40;
            for (int i = keep; i < j->np; i++) j->prompt[i] = (int32_t)((s = s * 1103515245u + 12345u) >> 16) % 512;
            j->max_tokens = 8 + (k * 5) % 20;
        }
    }
    /* the golden continuations were decoded with EOS suppressed: min_tokens
     * masks it (EOS is a stop id as long as ignore_eos is off) */
    for (int k = 0; k < NJ; k++) j_min_tokens(&jobs[k]);
    /* the last job samples with a seed */
    jobs[NJ - 1].sp.temperature = 0.8f;
    jobs[NJ - 1].sp.top_k = 40;
    jobs[NJ - 1].sp.has_seed = true;
    jobs[NJ - 1].sp.seed = 5;

    hr_engine_opts o;
    hr_engine_opts_default(&o);
    o.block_size = 4;
    o.max_model_len = 128;
    o.kv_cache_memory = hr_model_kv_block_bytes(m, o.block_size) * 256;
    static result alone[NJ], together[NJ], noprefix[NJ], samestep[NJ], warmed[3];
    hr_engine_stats st;
    if (run(m, &o, jobs, NJ, false, alone, &st)) goto done;
    /* 1. golden */
    for (int k = 0; k < ng && k < NJ; k++) {
        json_t *gr = json_array_get(greedy, (size_t)k);
        int bad = alone[k].n != (int)json_array_size(gr);
        for (int i = 0; !bad && i < alone[k].n; i++)
            bad = alone[k].toks[i] != json_integer_value(json_array_get(gr, (size_t)i));
        CHECK_MSG(!bad, "golden prompt %d: greedy continuation differs", k);
    }
    /* 2. tiny pool (32 blocks = 128 tokens, one full-length request) and a
     * 16-token budget: preemption and chunked prefill */
    o.kv_cache_memory = hr_model_kv_block_bytes(m, o.block_size) * 32;
    o.max_num_batched_tokens = 16;
    o.n_sampler_threads = 2;
    if (run(m, &o, jobs, NJ, true, together, &st)) goto done;
    printf("together: %llu preemptions, prefix cache hits %llu / %llu tokens\n",
           (unsigned long long)st.num_preemptions_total, (unsigned long long)st.prefix_hits_total,
           (unsigned long long)st.prefix_queries_total);
    CHECK(st.num_preemptions_total > 0);
    CHECK(st.prefix_hits_total > 0);
    /* a big pool: everything is admitted at once, so requests share prefix
     * blocks that another computes in the same step */
    hr_engine_opts big = o;
    big.kv_cache_memory = hr_model_kv_block_bytes(m, o.block_size) * 512;
    big.max_num_batched_tokens = 2048;
    if (run(m, &big, jobs, NJ, true, samestep, &st)) goto done;
    printf("same step: prefix cache hits %llu / %llu tokens\n", (unsigned long long)st.prefix_hits_total,
           (unsigned long long)st.prefix_queries_total);
    CHECK(st.prefix_hits_total > 0);
    /* 4. warm-up on (a GPU backend's default; off on the CPU): hr_engine_create
     * runs its own requests first, then everything a client sees starts from
     * zero and the warm-up leaves nothing in the prefix cache */
    {
        hr_engine_opts w = big;
        w.warmup = 1;
        w.max_waiting_requests = 3; /* the warm-up stays under the queue limit */
        hr_engine *e = NULL;
        CHECK_EQ_INT(hr_engine_create(m, &w, &e, &err), HR_OK);
        if (e) {
            hr_engine_get_stats(e, &st);
            CHECK(st.prompt_tokens_total == 0 && st.generation_tokens_total == 0);
            CHECK(st.prefix_queries_total == 0 && st.prefix_hits_total == 0 && st.num_preemptions_total == 0);
            CHECK_EQ_INT(st.kv_blocks_free, st.kv_blocks_total);
            uint64_t want_prompt = 0;
            for (int k = 0; k < 3; k++) {
                result_init(&warmed[k]);
                hr_request rq = {.prompt = jobs[k].prompt, .n_prompt = jobs[k].np, .sampling = jobs[k].sp,
                                 .max_tokens = jobs[k].max_tokens};
                CHECK_EQ_INT(hr_engine_submit(e, &rq, on_event, &warmed[k], NULL, &err), HR_OK);
                want_prompt += (uint64_t)jobs[k].np;
            }
            for (int k = 0; k < 3; k++) result_wait(&warmed[k]);
            hr_engine_shutdown(e, 1.0);
            hr_engine_get_stats(e, &st);
            /* the golden prompts share no block: no hit unless the warm-up's blocks stayed matchable */
            CHECK(st.prompt_tokens_total == want_prompt && st.prefix_queries_total == want_prompt);
            CHECK(st.prefix_hits_total == 0);
            for (int k = 0; k < 3; k++) {
                CHECK_MSG(same(&alone[k], &warmed[k]), "job %d: output after the warm-up differs", k);
                result_destroy(&warmed[k]);
            }
            hr_engine_free(e);
        }
    }
    o.enable_prefix_caching = false;
    if (run(m, &o, jobs, NJ, true, noprefix, &st)) goto done;
    for (int k = 0; k < NJ; k++) {
        CHECK_MSG(same(&alone[k], &together[k]), "job %d: batched output differs from alone", k);
        CHECK_MSG(same(&alone[k], &noprefix[k]), "job %d: output without prefix caching differs", k);
        CHECK_MSG(same(&alone[k], &samestep[k]), "job %d: output with same-step prefix sharing differs", k);
        CHECK_EQ_INT(alone[k].n, jobs[k].max_tokens);
        CHECK(alone[k].fin == HR_FINISH_LENGTH);
    }
    for (int k = 0; k < NJ; k++) {
        result_destroy(&alone[k]);
        result_destroy(&together[k]);
        result_destroy(&noprefix[k]);
        result_destroy(&samestep[k]);
    }
done:
    hr_model_free(m);
    hr_backend_free(be);
    json_decref(g);
    return test_report("engine/test_engine");
}
