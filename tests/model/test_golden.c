/* Golden tests of the forward pass on the CPU backend, for every fixture
 * model: logits of each golden prompt run as one prefill step (abs 1e-3: a
 * float32 path vs transformers' float32, see fixtures/README.md), 24 greedy
 * tokens decoded one step at a time through the paged cache (exact ids), the
 * prompt split into 3 chunks, and two prompts batched in one step (both 1e-4
 * against the single-step logits: same math, only the summation order of
 * attention over blocks may differ). Block size 4 with a shuffled block
 * table, so paging is really exercised. */
#include <stdint.h>
#include <string.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test.h"

#define BLOCK    4
#define N_BLOCKS 64
#define MAX_TOK  128
#define MAX_SEQ  2
#define MAX_BPS  32 /* blocks per sequence */
#define N_GREEDY 24

typedef struct seq {
    int32_t bt[MAX_BPS];
    int len; /* tokens already in the cache */
} seq;

typedef struct stepbuf {
    int32_t tokens[MAX_TOK], pos[MAX_TOK], slots[MAX_TOK], qs[MAX_SEQ + 1], lens[MAX_SEQ], bts[MAX_SEQ * MAX_BPS],
        rows[MAX_TOK];
    hr_step st;
} stepbuf;

/* One step feeding ntok[s] new tokens to each sequence; all logit rows when
 * all_rows, else the last row of each sequence. */
static const hr_step *make_step(stepbuf *b, seq **seqs, int n, const int32_t *const *toks, const int *ntok,
                                bool all_rows) {
    int t = 0, nl = 0;
    b->qs[0] = 0;
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < ntok[s]; i++, t++) {
            int p = seqs[s]->len + i;
            b->tokens[t] = toks[s][i];
            b->pos[t] = p;
            b->slots[t] = seqs[s]->bt[p / BLOCK] * BLOCK + p % BLOCK;
            if (all_rows || i == ntok[s] - 1) b->rows[nl++] = t;
        }
        seqs[s]->len += ntok[s];
        b->qs[s + 1] = t;
        b->lens[s] = seqs[s]->len;
        memcpy(b->bts + s * MAX_BPS, seqs[s]->bt, sizeof seqs[s]->bt);
    }
    b->st = (hr_step){.n_tokens = t,
                      .tokens = b->tokens,
                      .positions = b->pos,
                      .slot_mapping = b->slots,
                      .n_seqs = n,
                      .query_start = b->qs,
                      .seq_lens = b->lens,
                      .block_tables = b->bts,
                      .max_blocks_per_seq = MAX_BPS,
                      .block_size = BLOCK,
                      .n_logits = nl,
                      .logit_rows = b->rows};
    return &b->st;
}

static unsigned rng_state = 12345;
static unsigned rnd(void) {
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

/* Disjoint, shuffled block tables for the sequences. */
static void assign_blocks(seq *seqs, int n) {
    int perm[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) perm[i] = i;
    for (int i = N_BLOCKS - 1; i > 0; i--) {
        int j = (int)(rnd() % (unsigned)(i + 1)), tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < MAX_BPS; i++)
            seqs[s].bt[i] = i < N_BLOCKS / MAX_SEQ ? perm[s * (N_BLOCKS / MAX_SEQ) + i] : -1;
        seqs[s].len = 0;
    }
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

/* The golden continuations were generated with EOS suppressed (all 24
 * tokens are generated, as with min_new_tokens = 24): do the same. */
static void mask_eos(const hr_model *m, float *logits) {
    const hr_config *c = hr_model_config(m);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_token_ids[i] >= 0 && c->eos_token_ids[i] < hr_model_vocab_size(m))
            logits[c->eos_token_ids[i]] = -INFINITY;
}

typedef struct golden {
    int n;
    const int32_t *prompt;
    const float *logits;
    const int32_t *greedy;
} golden;

static int get_golden(st_file *f, int i, int vocab, golden *g) {
    char name[32];
    snprintf(name, sizeof name, "prompt_%d", i);
    const st_tensor *p = st_file_find(f, name);
    snprintf(name, sizeof name, "logits_%d", i);
    const st_tensor *l = st_file_find(f, name);
    snprintf(name, sizeof name, "greedy_%d", i);
    const st_tensor *gr = st_file_find(f, name);
    if (!p || !l || !gr || p->dtype != HR_I32 || l->dtype != HR_F32 || gr->dtype != HR_I32) return -1;
    if (l->ndim != 2 || l->shape[0] != p->shape[0] || l->shape[1] != vocab || gr->shape[0] != N_GREEDY) return -1;
    g->n = (int)p->shape[0];
    g->prompt = p->data;
    g->logits = l->data;
    g->greedy = gr->data;
    return 0;
}

static void test_model(hr_backend *be, const char *name) {
    char dir[1024], gpath[1100];
    snprintf(dir, sizeof dir, "%s/models/%s", test_fixtures(), name);
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    hr_err err = {0};
    hr_model *m = NULL;
    st_file *gf = NULL;
    float *single[3] = {0}, *buf = NULL;
    int rc = hr_model_load(dir, be, NULL, &m, &err);
    CHECK_MSG(rc == HR_OK, "%s: load: %s", name, err.msg);
    if (rc != HR_OK) return;
    gf = st_file_open(gpath, &err);
    CHECK_MSG(gf != NULL, "%s: %s", name, err.msg);
    if (!gf) goto done;
    rc = hr_model_kv_alloc(m, N_BLOCKS, BLOCK, &err);
    CHECK_MSG(rc == HR_OK, "%s: kv: %s", name, err.msg);
    if (rc != HR_OK) goto done;
    int V = hr_model_vocab_size(m);
    buf = malloc(sizeof(float) * MAX_TOK * (size_t)V);
    stepbuf sb;
    double worst = 0;
    golden g[3];
    for (int i = 0; i < 3; i++) {
        CHECK_MSG(get_golden(gf, i, V, &g[i]) == 0, "%s: golden %d malformed", name, i);
        if (get_golden(gf, i, V, &g[i])) goto done;
    }

    for (int i = 0; i < 3; i++) {
        /* 1. one prefill step, every row */
        seq s;
        seq *sp = &s;
        assign_blocks(&s, 1);
        single[i] = malloc(sizeof(float) * (size_t)g[i].n * (size_t)V);
        const int32_t *toks[1] = {g[i].prompt};
        int nt[1] = {g[i].n};
        rc = hr_model_forward(m, make_step(&sb, &sp, 1, toks, nt, true), single[i], &err);
        CHECK_MSG(rc == HR_OK, "%s: forward: %s", name, err.msg);
        if (rc != HR_OK) goto done;
        double d = max_abs_diff(single[i], g[i].logits, (size_t)g[i].n * (size_t)V);
        if (!(d <= worst)) worst = d;
        CHECK_MSG(d <= 1e-3, "%s prompt %d: max abs logit error %.3g > 1e-3", name, i, d);

        /* 2. greedy decode through the paged cache, one token per step */
        int32_t ids[N_GREEDY];
        memcpy(buf, single[i] + (size_t)(g[i].n - 1) * (size_t)V, sizeof(float) * (size_t)V);
        mask_eos(m, buf);
        ids[0] = argmax(buf, V);
        for (int k = 1; k < N_GREEDY; k++) {
            const int32_t *dt[1] = {&ids[k - 1]};
            int one[1] = {1};
            rc = hr_model_forward(m, make_step(&sb, &sp, 1, dt, one, false), buf, &err);
            CHECK_MSG(rc == HR_OK, "%s: decode: %s", name, err.msg);
            if (rc != HR_OK) goto done;
            mask_eos(m, buf);
            ids[k] = argmax(buf, V);
        }
        int same = 0;
        while (same < N_GREEDY && ids[same] == g[i].greedy[same]) same++;
        CHECK_MSG(same == N_GREEDY, "%s prompt %d: greedy differs at token %d (%d vs golden %d)", name, i, same,
                  same < N_GREEDY ? ids[same] : -1, same < N_GREEDY ? g[i].greedy[same] : -1);

        /* 3. the same prompt prefilled in 3 chunks */
        assign_blocks(&s, 1);
        int c1 = g[i].n / 3, c2 = 2 * g[i].n / 3, cuts[4] = {0, c1, c2, g[i].n};
        double dc = 0;
        for (int c = 0; c < 3; c++) {
            const int32_t *ct[1] = {g[i].prompt + cuts[c]};
            int cn[1] = {cuts[c + 1] - cuts[c]};
            if (cn[0] == 0) continue;
            rc = hr_model_forward(m, make_step(&sb, &sp, 1, ct, cn, true), buf, &err);
            CHECK_MSG(rc == HR_OK, "%s: chunk: %s", name, err.msg);
            if (rc != HR_OK) goto done;
            double d2 = max_abs_diff(buf, single[i] + (size_t)cuts[c] * (size_t)V, (size_t)cn[0] * (size_t)V);
            if (d2 > dc) dc = d2;
        }
        CHECK_MSG(dc <= 1e-4, "%s prompt %d: chunked prefill differs by %.3g", name, i, dc);
    }

    /* 4. two prompts batched in one step (and their blocks interleaved in the pool) */
    for (int pair = 0; pair < 2; pair++) {
        int a = pair, b = pair + 1;
        seq ss[2];
        seq *sps[2] = {&ss[0], &ss[1]};
        assign_blocks(ss, 2);
        const int32_t *toks[2] = {g[a].prompt, g[b].prompt};
        int nt[2] = {g[a].n, g[b].n};
        rc = hr_model_forward(m, make_step(&sb, sps, 2, toks, nt, true), buf, &err);
        CHECK_MSG(rc == HR_OK, "%s: batched: %s", name, err.msg);
        if (rc != HR_OK) goto done;
        double d1 = max_abs_diff(buf, single[a], (size_t)g[a].n * (size_t)V);
        double d2 = max_abs_diff(buf + (size_t)g[a].n * (size_t)V, single[b], (size_t)g[b].n * (size_t)V);
        CHECK_MSG(d1 <= 1e-4 && d2 <= 1e-4, "%s: batched prompts %d+%d differ by %.3g / %.3g", name, a, b, d1, d2);
    }
    printf("%-18s max abs logit error vs golden: %.3g\n", name, worst);
done:
    for (int i = 0; i < 3; i++) free(single[i]);
    free(buf);
    st_file_close(gf);
    hr_model_free(m);
}

/* Error paths: a missing directory and an unsupported architecture fail
 * with one clear message. */
static void test_errors(hr_backend *be) {
    hr_err err = {0};
    hr_model *m = NULL;
    CHECK(hr_model_load("/nonexistent/model-dir", be, NULL, &m, &err) != HR_OK && m == NULL);
    CHECK(err.msg[0] != 0);
}

int main(void) {
    static const char *models[] = {"tiny-llama",   "tiny-qwen2",     "tiny-mixtral",
                                   "tiny-gpt-oss", "tiny-llama-fp8", "tiny-llama-nvfp4"};
    hr_err err = {0};
    hr_backend *be = hr_backend_cpu_create(2, &err);
    CHECK_MSG(be != NULL, "cpu backend: %s", err.msg);
    if (!be) return test_report("model/golden");
    const char *only = getenv("HEARTH_GOLDEN_ONLY"); /* debugging aid: one model */
    for (size_t i = 0; i < HR_ARRAY_LEN(models); i++)
        if (!only || !strcmp(only, models[i])) test_model(be, models[i]);
    test_errors(be);
    hr_backend_free(be);
    return test_report("model/golden");
}
