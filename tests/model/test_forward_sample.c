/* hr_model_forward_sample (the forward pass, then the backend's `sample` op)
 * against hr_model_forward (logits to the host) + hr_sample_row_ref on those
 * logits, for the same step run twice on the fixture tiny-llama: the CPU
 * backend always, the CUDA backend when a GPU is present (graphs off, so the
 * two runs take the same kernels and give the same logits). A prefill step of
 * six sequences (block size 4, disjoint block tables), last row of each
 * sampled, with every row's parameters cycling through greedy, temperature,
 * top-k, top-p, min-p, penalties over the prompt, a mask and logit_bias.
 * Ids must be equal (the CUDA op matches the reference except for a draw
 * within ~1e-15 of a boundary, not expected in these few rows); greedy steps
 * through hr_model_forward_greedy too, and both again through the
 * _begin / hr_model_ids_wait halves (with the protocol's errors). Also the
 * host fallback (a backend without the op). Skips (77) without the fixture. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "test.h"

#define BLOCK   4
#define NBLOCKS 64
#define NSEQ    6
#define BPS     8 /* blocks per sequence: up to 32 tokens */
#define NSETS   8

static unsigned rng = 4242;
static unsigned rnd(void) {
    rng = rng * 1103515245u + 12345u;
    return rng >> 8;
}

typedef struct stepbuf {
    int32_t tokens[NSEQ * BPS * BLOCK], pos[NSEQ * BPS * BLOCK], slots[NSEQ * BPS * BLOCK], qs[NSEQ + 1], lens[NSEQ],
        bts[NSEQ * BPS], rows[NSEQ];
    hr_step st;
} stepbuf;

static void make_step(stepbuf *b, int V) {
    int t = 0;
    b->qs[0] = 0;
    for (int s = 0; s < NSEQ; s++) {
        int n = 3 + (int)(rnd() % 20);
        for (int i = 0; i < BPS; i++) b->bts[s * BPS + i] = (NSEQ - 1 - s) * BPS + i; /* disjoint, reversed */
        for (int i = 0; i < n; i++, t++) {
            b->tokens[t] = (int32_t)(rnd() % (unsigned)V);
            b->pos[t] = i;
            b->slots[t] = b->bts[s * BPS + i / BLOCK] * BLOCK + i % BLOCK;
        }
        b->qs[s + 1] = t;
        b->lens[s] = n;
        b->rows[s] = t - 1;
    }
    b->st = (hr_step){.n_tokens = t,
                      .tokens = b->tokens,
                      .positions = b->pos,
                      .slot_mapping = b->slots,
                      .n_seqs = NSEQ,
                      .query_start = b->qs,
                      .seq_lens = b->lens,
                      .block_tables = b->bts,
                      .max_blocks_per_seq = BPS,
                      .block_size = BLOCK,
                      .n_logits = NSEQ,
                      .logit_rows = b->rows};
}

/* Row parameters of set k, row s; pen/mask/bias storage is per row. */
typedef struct row_store {
    hr_sample_pen pen[32];
    int32_t mask[2], bias_ids[2];
    float bias_vals[2];
} row_store;

static void make_row(hr_sample_row *r, row_store *st, const stepbuf *b, int s, int k, int V) {
    int v = (k + s) % 8;
    *r = (hr_sample_row){.temperature = 1.0f,
                         .top_p = 1.0f,
                         .repetition_penalty = 1.0f,
                         .seed = 0xabcdef00ULL + (uint64_t)(k * NSEQ + s),
                         .counter = (uint64_t)k};
    switch (v) {
    case 0:
        r->temperature = 0;
        break;
    case 1:
        r->temperature = 0.6f;
        break;
    case 2:
        r->top_k = 5;
        break;
    case 3:
        r->top_p = 0.8f;
        r->temperature = 1.2f;
        break;
    case 4:
        r->min_p = 0.1f;
        break;
    case 5:
        r->top_k = 20;
        r->top_p = 0.9f;
        r->min_p = 0.01f;
        r->temperature = 0.9f;
        break;
    default:
        break;
    }
    if (v >= 6) { /* penalties over the prompt, a mask, a bias */
        int n = 0;
        for (int i = b->qs[s]; i < b->qs[s + 1] && n < 32; i++) {
            bool dup = false;
            for (int j = 0; j < n; j++) dup |= st->pen[j].id == b->tokens[i];
            if (!dup) st->pen[n++] = (hr_sample_pen){.id = b->tokens[i], .count = i % 3, .in_prompt = 1};
        }
        r->n_pen = n;
        r->pen = st->pen;
        r->repetition_penalty = 1.4f;
        r->presence_penalty = 0.3f;
        r->frequency_penalty = 0.2f;
        st->mask[0] = 0;
        st->mask[1] = V - 1;
        r->n_mask = 2;
        r->mask_ids = st->mask;
        st->bias_ids[0] = st->bias_ids[1] = 1;
        st->bias_vals[0] = 2.0f;
        st->bias_vals[1] = 0.5f;
        r->n_bias = 2;
        r->bias_ids = st->bias_ids;
        r->bias_vals = st->bias_vals;
        if (v == 7) r->temperature = 0; /* greedy after the penalties */
    }
}

static void check_backend(hr_backend *be, const char *dir, bool drop_op) {
    hr_err err = {0};
    hr_model *m = NULL;
    if (hr_model_load(dir, be, NULL, &m, &err) != HR_OK) {
        CHECK_MSG(0, "%s: load: %s", be->ops->name, err.msg);
        return;
    }
    CHECK_EQ_INT(hr_model_kv_alloc(m, NBLOCKS, BLOCK, &err), HR_OK);
    const hr_backend_ops *orig = be->ops;
    hr_backend_ops no_sample;
    if (drop_op) { /* the model's host fallback */
        no_sample = *orig;
        no_sample.sample = NULL;
        be->ops = &no_sample;
    }
    int V = hr_model_vocab_size(m);
    float *logits = malloc(sizeof(float) * (size_t)V * NSEQ), *x = malloc(sizeof(float) * (size_t)V);
    static stepbuf b;
    static row_store store[NSEQ];
    hr_sample_row rows[NSEQ];
    int bad = 0, greedy_bad = 0;
    for (int k = 0; k < NSETS; k++) {
        make_step(&b, V);
        for (int s = 0; s < NSEQ; s++) make_row(&rows[s], &store[s], &b, s, k, V);
        int32_t ref[NSEQ], got[NSEQ], greedy[NSEQ];
        CHECK_EQ_INT(hr_model_forward(m, &b.st, logits, &err), HR_OK);
        for (int s = 0; s < NSEQ; s++) {
            memcpy(x, logits + (size_t)s * V, sizeof(float) * V);
            CHECK_EQ_INT(hr_sample_row_ref(&rows[s], x, V, &ref[s]), HR_OK);
        }
        CHECK_EQ_INT(hr_model_forward_sample(m, &b.st, rows, got, &err), HR_OK);
        CHECK_EQ_INT(hr_model_forward_greedy(m, &b.st, greedy, &err), HR_OK);
        /* the same through the halves the engine calls (the ids on their way
         * while the host works); a second begin before the wait and a wait
         * with nothing begun are errors */
        int32_t halves[NSEQ], greedy2[NSEQ];
        CHECK_EQ_INT(hr_model_forward_sample_begin(m, &b.st, rows, &err), HR_OK);
        CHECK(hr_model_forward_greedy_begin(m, &b.st, &err) != HR_OK);
        CHECK_EQ_INT(hr_model_ids_wait(m, halves, &err), HR_OK);
        CHECK(hr_model_ids_wait(m, greedy2, &err) != HR_OK);
        CHECK_EQ_INT(hr_model_forward_greedy_begin(m, &b.st, &err), HR_OK);
        CHECK_EQ_INT(hr_model_ids_wait(m, greedy2, &err), HR_OK);
        for (int s = 0; s < NSEQ; s++) {
            bad += halves[s] != got[s];
            greedy_bad += greedy2[s] != greedy[s];
        }
        for (int s = 0; s < NSEQ; s++) {
            if (got[s] != ref[s] && bad++ < 5)
                fprintf(stderr, "%s set %d row %d: forward_sample %d, reference %d\n", be->ops->name, k, s, got[s],
                        ref[s]);
            const float *l = logits + (size_t)s * V;
            int am = 0;
            for (int c = 1; c < V; c++)
                if (l[c] > l[am]) am = c;
            greedy_bad += greedy[s] != am;
        }
    }
    printf("%s%s: %d sets x %d rows, vocab %d\n", be->ops->name, drop_op ? " (host fallback)" : "", NSETS, NSEQ, V);
    CHECK_MSG(bad == 0, "%s: %d rows differ", be->ops->name, bad);
    CHECK_EQ_INT(greedy_bad, 0);
    be->ops = orig;
    free(logits);
    free(x);
    hr_model_free(m);
}

int main(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/tiny-llama", test_fixtures());
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/config.json", dir);
    test_need_fixture(probe);
    setenv("HEARTH_CUDA_GRAPHS", "0", 1); /* both runs of a step through the same (eager) kernels */
    hr_err err = {0};
    hr_backend *cpu = hr_backend_cpu_create(2, &err);
    if (!cpu) TEST_SKIP("no CPU backend: %s", err.msg);
    check_backend(cpu, dir, false);
    check_backend(cpu, dir, true);
    hr_backend_free(cpu);
#ifdef HEARTH_HAVE_CUDA
    if (hr_backend_cuda_available()) {
        hr_backend *gpu = hr_backend_cuda_create(0, &err);
        CHECK_MSG(gpu != NULL, "cuda backend: %s", err.msg);
        if (gpu) {
            check_backend(gpu, dir, false);
            hr_backend_free(gpu);
        }
    } else {
        printf("no CUDA device: the CUDA part is skipped\n");
    }
#endif
    return test_report("model/test_forward_sample");
}
