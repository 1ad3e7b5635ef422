/* Property test of scheduler + block pool with a fake model. Random
 * arrivals, prompt lengths (sharing a few prefixes so the prefix cache
 * hits), output lengths, cancellations, and tiny pools that force
 * preemption. The fake model keeps a fake KV cache (token id and position
 * per slot) written through the step's slot mapping, and "attends" by
 * reading each sampled sequence's whole context back through its block
 * table; the next token is a hash of that context. So any wrong block
 * table, slot, prefix hit or lost KV changes the output, which is compared
 * with the same request run alone. Invariants are checked after every step. */
#include <string.h>

#include "engine/scheduler.h"
#include "test.h"

#define VOCAB    50
#define STOP_TOK 0

static uint64_t rs;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}
static int rnd_in(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }

/* next token from a context: FNV over the ids, never STOP for the first
 * min 2 tokens of output would be a choice of the test; here STOP ends early. */
static int32_t fake_next(const int32_t *ctx, int n) {
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)ctx[i]) * 16777619u;
    h ^= h >> 13;
    return (int32_t)(h % VOCAB);
}

/* Reference: the request alone, no paging. */
static int reference(const int32_t *prompt, int np, int max_new, int32_t *out) {
    int32_t ctx[512];
    memcpy(ctx, prompt, (size_t)np * sizeof *ctx);
    int n = np, g = 0;
    while (g < max_new) {
        int32_t t = fake_next(ctx, n);
        ctx[n++] = t;
        out[g++] = t;
        if (t == STOP_TOK) break;
    }
    return g;
}

typedef struct tcase {
    int32_t prompt[256];
    int np, max_new;
    bool submitted, done, aborted;
    int n_out;
    int32_t out[256];
    sched_req *req;
} tcase;

typedef struct fuzz_cfg {
    int n_blocks, block_size, max_num_seqs, max_batched, max_model_len, n_req;
    bool prefix;
    uint64_t seed;
} fuzz_cfg;

static int total_steps, total_preempt;
static uint64_t total_hits;

static void run_fuzz(const fuzz_cfg *fc) {
    rs = fc->seed;
    kv_cache kv;
    sched s;
    hr_err err;
    CHECK_EQ_INT(kv_cache_init(&kv, fc->n_blocks, fc->block_size, fc->prefix, 77, &err), HR_OK);
    sched_config sc = {.max_num_seqs = fc->max_num_seqs,
                       .max_num_batched_tokens = fc->max_batched,
                       .max_model_len = fc->max_model_len};
    CHECK_EQ_INT(sched_init(&s, &kv, &sc, &err), HR_OK);
    int pool_tokens = fc->n_blocks * fc->block_size;
    int limit = HR_MIN(fc->max_model_len, pool_tokens);

    /* shared prefixes */
    int32_t pre[3][64];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 64; i++) pre[k][i] = 1 + (int32_t)(rnd() % (VOCAB - 1));
    tcase *tc = calloc((size_t)fc->n_req, sizeof *tc);
    for (int i = 0; i < fc->n_req; i++) {
        tcase *t = &tc[i];
        t->np = rnd_in(1, HR_MIN(limit - 1, 200));
        t->max_new = rnd_in(1, HR_MIN(limit - t->np, 40));
        int k = rnd_in(-1, 2), shared = k >= 0 ? rnd_in(0, HR_MIN(t->np, 64)) : 0;
        for (int j = 0; j < t->np; j++) t->prompt[j] = j < shared ? pre[k][j] : 1 + (int32_t)(rnd() % (VOCAB - 1));
        /* a few requests are exact repeats of an earlier one */
        if (i > 0 && rnd() % 8 == 0) {
            tcase *o = &tc[rnd_in(0, i - 1)];
            memcpy(t->prompt, o->prompt, sizeof t->prompt);
            t->np = o->np;
            t->max_new = o->max_new;
        }
    }
    int32_t *fake_tok = malloc((size_t)pool_tokens * sizeof(int32_t));
    int32_t *fake_pos = malloc((size_t)pool_tokens * sizeof(int32_t));
    int32_t *slot_seen = calloc((size_t)pool_tokens, sizeof(int32_t));
    for (int i = 0; i < pool_tokens; i++) fake_tok[i] = fake_pos[i] = -1;

    sched_output out = {0};
    sched_step_buf buf = {0};
    int next_submit = 0, n_done = 0, steps = 0, ctx_errors = 0, bad_steps = 0, idle_steps = 0;
    int32_t sampled[512];
    const char *inv = NULL;
    while (n_done < fc->n_req && steps < 20000) {
        /* arrivals */
        int arrivals = rnd() % 3 == 0 ? rnd_in(0, 3) : 0;
        if (s.running.n == 0 && s.waiting.n == 0) arrivals = HR_MAX(arrivals, 1);
        for (int a = 0; a < arrivals && next_submit < fc->n_req; a++) {
            tcase *t = &tc[next_submit];
            CHECK_EQ_INT(sched_check_fits(&s, t->np, t->max_new, &err), HR_OK);
            t->req = sched_req_new((uint64_t)next_submit, t->prompt, t->np, t->max_new);
            t->req->user = t;
            t->submitted = true;
            sched_add(&s, t->req);
            next_submit++;
        }
        /* cancellations */
        if (next_submit > 0 && rnd() % 10 == 0) {
            tcase *t = &tc[rnd_in(0, next_submit - 1)];
            if (t->submitted && !t->done) {
                sched_finish(&s, t->req);
                sched_req_free(t->req);
                t->req = NULL;
                t->done = t->aborted = true;
                n_done++;
            }
        }
        CHECK_EQ_INT(sched_schedule(&s, &out), HR_OK);
        total_preempt += out.n_preempted;
        hr_step st;
        CHECK_EQ_INT(sched_build_step(&s, &out, &buf, &st), HR_OK);
        steps++;
        if (st.n_tokens == 0) {
            idle_steps++;
            if (s.running.n + s.waiting.n > 0 && idle_steps > 2) {
                CHECK_MSG(0, "no progress with %d running, %d waiting", s.running.n, s.waiting.n);
                break;
            }
            continue;
        }
        idle_steps = 0;
        /* step shape */
        if (st.n_tokens > fc->max_batched || st.n_seqs > fc->max_num_seqs || st.query_start[st.n_seqs] != st.n_tokens)
            bad_steps++;
        for (int i = 0; i < st.n_tokens; i++) {
            if (st.slot_mapping[i] < 0 || st.slot_mapping[i] >= pool_tokens || slot_seen[st.slot_mapping[i]] == steps)
                bad_steps++;
            else
                slot_seen[st.slot_mapping[i]] = steps;
        }
        /* fake kv_store */
        for (int i = 0; i < st.n_tokens; i++) {
            fake_tok[st.slot_mapping[i]] = st.tokens[i];
            fake_pos[st.slot_mapping[i]] = st.positions[i];
        }
        /* fake attention + lm head for sampled sequences */
        int nl = 0;
        for (int q = 0; q < st.n_seqs; q++) {
            int last = st.query_start[q + 1] - 1;
            if (nl >= st.n_logits || st.logit_rows[nl] != last) continue;
            int32_t ctx[512];
            int len = st.seq_lens[q];
            const sched_req *r = out.items[q].req;
            for (int p = 0; p < len; p++) {
                int b = st.block_tables[q * st.max_blocks_per_seq + p / st.block_size];
                int slot = b * st.block_size + p % st.block_size;
                ctx[p] = fake_tok[slot];
                if (b < 0 || fake_pos[slot] != p || fake_tok[slot] != r->tokens[p]) ctx_errors++;
            }
            sampled[nl++] = fake_next(ctx, len);
        }
        if (nl != st.n_logits) bad_steps++;
        sched_update(&s, &out, sampled);
        /* finish checks, as the engine does */
        for (int i = 0; i < out.n_items; i++) {
            if (!out.items[i].sample) continue;
            sched_req *r = out.items[i].req;
            tcase *t = r->user;
            int g = r->n_tokens - r->n_prompt;
            if (r->tokens[r->n_tokens - 1] == STOP_TOK || g >= t->max_new) {
                t->n_out = g;
                memcpy(t->out, r->tokens + r->n_prompt, (size_t)g * sizeof(int32_t));
                sched_finish(&s, r);
                sched_req_free(r);
                t->req = NULL;
                t->done = true;
                n_done++;
            }
        }
        if (!inv) inv = sched_check(&s);
    }
    CHECK_MSG(inv == NULL, "invariant: %s", inv ? inv : "");
    CHECK_EQ_INT(ctx_errors, 0);
    CHECK_EQ_INT(bad_steps, 0);
    CHECK_EQ_INT(n_done, fc->n_req);
    int mism = 0, compared = 0;
    for (int i = 0; i < fc->n_req; i++) {
        if (!tc[i].done || tc[i].aborted) continue;
        int32_t ref[256];
        int n = reference(tc[i].prompt, tc[i].np, tc[i].max_new, ref);
        compared++;
        if (n != tc[i].n_out || memcmp(ref, tc[i].out, (size_t)n * sizeof *ref) != 0) mism++;
    }
    CHECK_EQ_INT(mism, 0);
    CHECK(compared >= fc->n_req / 4); /* cancellations take the rest */
    CHECK_EQ_INT(s.running.n + s.waiting.n, 0);
    CHECK_EQ_INT(kv.n_free, kv.n_blocks);
    CHECK(kv_cache_check(&kv) == NULL);
    for (int b = 0; b < kv.n_blocks; b++) CHECK(kv.blocks[b].ref == 0);
    total_steps += steps;
    total_hits += kv.hits;
    printf("fuzz seed %llu: pool %dx%d prefix %d: %d steps, %d preemptions so far, prefix hits %llu/%llu tokens, "
           "%d compared\n",
           (unsigned long long)fc->seed, fc->n_blocks, fc->block_size, fc->prefix, steps, total_preempt,
           (unsigned long long)kv.hits, (unsigned long long)kv.queries, compared);
    for (int i = 0; i < fc->n_req; i++)
        if (tc[i].req) {
            sched_finish(&s, tc[i].req);
            sched_req_free(tc[i].req);
        }
    free(tc);
    free(fake_tok);
    free(fake_pos);
    free(slot_seen);
    sched_output_free(&out);
    sched_step_buf_free(&buf);
    sched_destroy(&s);
    kv_cache_destroy(&kv);
}

/* Exact behaviour on a small scene: chunked prefill, budget, FCFS admission,
 * preemption of the newest and its return to the queue front. */
static void test_basic(void) {
    kv_cache kv;
    sched s;
    hr_err err;
    kv_cache_init(&kv, 8, 4, true, 1, &err);
    sched_config sc = {.max_num_seqs = 4, .max_num_batched_tokens = 10, .max_model_len = 32};
    sched_init(&s, &kv, &sc, &err);
    int32_t p[32];
    for (int i = 0; i < 32; i++) p[i] = i + 1;
    CHECK_EQ_INT(sched_check_fits(&s, 30, 3, &err), HR_EINVAL); /* > max_model_len */
    kv_cache kv_small;
    kv_cache_init(&kv_small, 2, 4, true, 1, &err);
    sched s_small;
    sched_init(&s_small, &kv_small, &sc, &err);
    CHECK_EQ_INT(sched_check_fits(&s_small, 8, 1, &err), HR_EINVAL); /* > whole pool */
    CHECK_EQ_INT(sched_check_fits(&s_small, 7, 1, &err), HR_OK);
    sched_destroy(&s_small);
    kv_cache_destroy(&kv_small);

    sched_req *a = sched_req_new(1, p, 14, 10), *b = sched_req_new(2, p + 14, 5, 8);
    sched_add(&s, a);
    sched_add(&s, b);
    sched_output out = {0};
    sched_step_buf buf = {0};
    hr_step st;
    /* step 1: a gets 10 of 14 prompt tokens (chunk), no sample; b waits (budget) */
    sched_schedule(&s, &out);
    CHECK_EQ_INT(out.n_items, 1);
    CHECK_EQ_INT(out.items[0].n_new, 10);
    CHECK(!out.items[0].sample);
    sched_build_step(&s, &out, &buf, &st);
    CHECK_EQ_INT(st.n_logits, 0);
    CHECK_EQ_INT(st.positions[9], 9);
    CHECK_EQ_INT(st.seq_lens[0], 10);
    sched_update(&s, &out, NULL);
    /* step 2: a's last 4 (samples), b's 5 prompt tokens fit in 10 */
    sched_schedule(&s, &out);
    CHECK_EQ_INT(out.n_items, 2);
    CHECK_EQ_INT(out.items[0].n_new, 4);
    CHECK(out.items[0].sample);
    CHECK_EQ_INT(out.items[1].n_new, 5);
    sched_build_step(&s, &out, &buf, &st);
    CHECK_EQ_INT(st.n_tokens, 9);
    CHECK_EQ_INT(st.n_logits, 2);
    CHECK_EQ_INT(st.logit_rows[0], 3);
    CHECK_EQ_INT(st.logit_rows[1], 8);
    CHECK_EQ_INT(st.query_start[1], 4);
    CHECK_EQ_INT(st.positions[4], 0);
    CHECK_EQ_INT(st.block_tables[st.max_blocks_per_seq + 2], -1);
    int32_t samp[2] = {40, 41};
    sched_update(&s, &out, samp);
    CHECK_EQ_INT(a->n_tokens, 15);
    CHECK_EQ_INT(a->tokens[14], 40);
    CHECK_EQ_INT(kv.n_free, 8 - 4 - 2);
    /* grow a and b by decoding until the pool runs out: b (newest) is preempted */
    int preempted = 0;
    for (int k = 0; k < 12 && !preempted; k++) {
        sched_schedule(&s, &out);
        preempted = out.n_preempted;
        sched_update(&s, &out, samp);
        CHECK(sched_check(&s) == NULL);
    }
    CHECK(preempted);
    CHECK(s.waiting.head == b);
    CHECK_EQ_INT(b->n_computed, 0);
    CHECK_EQ_INT(b->kv.n_blocks, 0);
    CHECK_EQ_INT(s.num_preemptions, 1);
    sched_finish(&s, a);
    sched_finish(&s, b);
    sched_req_free(a);
    sched_req_free(b);
    CHECK_EQ_INT(kv.n_free, 8);
    sched_output_free(&out);
    sched_step_buf_free(&buf);
    sched_destroy(&s);
    kv_cache_destroy(&kv);
}

/* Same prompt twice, one after the other: the second is served from whole
 * cached blocks (all but the block holding the last token). */
static void test_prefix_hit_via_scheduler(void) {
    kv_cache kv;
    sched s;
    hr_err err;
    kv_cache_init(&kv, 16, 4, true, 1, &err);
    sched_config sc = {.max_num_seqs = 4, .max_num_batched_tokens = 64, .max_model_len = 64};
    sched_init(&s, &kv, &sc, &err);
    int32_t p[18];
    for (int i = 0; i < 18; i++) p[i] = 3 * i + 1;
    sched_output out = {0};
    int32_t samp[4] = {5, 5, 5, 5};
    for (int round = 0; round < 2; round++) {
        sched_req *r = sched_req_new(round, p, 17, 1);
        sched_add(&s, r);
        sched_schedule(&s, &out);
        CHECK_EQ_INT(out.n_items, 1);
        CHECK_EQ_INT(r->n_cached_prompt, round == 0 ? 0 : 16);
        CHECK_EQ_INT(out.items[0].n_new, round == 0 ? 17 : 1);
        sched_update(&s, &out, samp);
        sched_finish(&s, r);
        sched_req_free(r);
    }
    CHECK_EQ_INT(kv.queries, 34);
    CHECK_EQ_INT(kv.hits, 16);
    /* two new identical prompts in one step: the second shares the blocks
     * the first computes in that same step (registered at schedule time) */
    int32_t q[18];
    for (int i = 0; i < 18; i++) q[i] = 5 * i + 2;
    sched_req *x = sched_req_new(10, q, 18, 1), *y = sched_req_new(11, q, 18, 1);
    sched_add(&s, x);
    sched_add(&s, y);
    sched_schedule(&s, &out);
    CHECK_EQ_INT(out.n_items, 2);
    CHECK_EQ_INT(y->n_cached_prompt, 16);
    CHECK_EQ_INT(out.items[1].n_new, 2);
    CHECK_EQ_INT(x->kv.blocks[0], y->kv.blocks[0]);
    /* if that step fails, the hashes go */
    sched_step_failed(&s, &out);
    int32_t pb[8];
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, q, 18, pb, 8), 0);
    sched_finish(&s, x);
    sched_finish(&s, y);
    sched_req_free(x);
    sched_req_free(y);
    CHECK(kv_cache_check(&kv) == NULL);
    CHECK_EQ_INT(kv.n_free, 16);
    sched_output_free(&out);
    sched_destroy(&s);
    kv_cache_destroy(&kv);
}

int main(void) {
    test_basic();
    test_prefix_hit_via_scheduler();
    fuzz_cfg cfgs[] = {
        /* blocks bs seqs budget mlen nreq prefix seed */
        {24, 4, 6, 16, 64, 150, true, 1},    {24, 4, 6, 16, 64, 150, false, 2},
        {12, 8, 8, 7, 96, 120, true, 3}, /* budget smaller than block: deep chunking */
        {64, 16, 16, 64, 256, 150, true, 4}, {10, 2, 3, 5, 20, 150, true, 5}, /* tiny everything */
        {40, 4, 32, 128, 160, 200, true, 6},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cfgs); i++) run_fuzz(&cfgs[i]);
    /* and random shapes */
    for (uint64_t seed = 100; seed < 124; seed++) {
        rs = seed * 0x9e3779b97f4a7c15ULL;
        fuzz_cfg c = {.block_size = 1 << rnd_in(0, 4),
                      .max_num_seqs = rnd_in(1, 40),
                      .max_batched = rnd_in(1, 96),
                      .n_req = rnd_in(20, 120),
                      .prefix = rnd() % 4 != 0,
                      .seed = seed};
        c.max_model_len = rnd_in(8, 256);
        c.n_blocks = HR_CDIV(c.max_model_len, c.block_size) + rnd_in(0, 40);
        run_fuzz(&c);
    }
    printf("total: %d steps, %d preemptions, %llu prefix-hit tokens\n", total_steps, total_preempt,
           (unsigned long long)total_hits);
    CHECK(total_preempt > 0);
    CHECK(total_hits > 0);
    return test_report("engine/test_scheduler");
}
