/* Shared by test_batch_bucket.c (CPU) and test_cuda_buckets.c (GPU): the
 * decode batch-size buckets (hr_backend_ops.batch_bucket, forward.c
 * pad_decode_step) must be invisible to the caller. Two copies of a fixture
 * model on one backend run the same steps: one with the backend's bucket
 * function, one with batch_bucket = NULL (the backend's op table is swapped
 * for a copy around each forward call). 24 sequences are prefilled in one
 * step, then decode steps run with the first b of them active, b following a
 * schedule whose sizes share buckets (3,4 -> 4; 5..8 -> 8; 17..24 -> 24 on
 * CUDA), so a captured graph is replayed for steps of different real sizes.
 * Tokens are teacher-forced (a fixed formula), so both models see the same
 * inputs; every third step asks for the logits of even sequences only.
 * Compared: the logits of every real row (max abs diff, and relative L2 per
 * row), and on the last step the device-greedy ids against the host argmax
 * of the same step's logits (the step is re-run: a decode step is idempotent,
 * it rewrites the same cache slots). */
#ifndef HEARTH_TEST_BUCKET_CHECK_H
#define HEARTH_TEST_BUCKET_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model.h"
#include "test.h"

#define BK_SEQS   24
#define BK_BLOCK  4
#define BK_BPS    16 /* blocks per sequence: a power of two, as the scheduler's tables */
#define BK_BLOCKS (BK_SEQS * BK_BPS)
#define BK_MAXTOK 256

typedef struct bk_run {
    hr_model *m;
    int len[BK_SEQS];
    int32_t tokens[BK_MAXTOK], pos[BK_MAXTOK], slots[BK_MAXTOK], qs[BK_SEQS + 1], lens[BK_SEQS], bts[BK_SEQS * BK_BPS],
        rows[BK_MAXTOK];
    hr_step st;
} bk_run;

/* Block b of sequence s: a fixed shuffle, disjoint across sequences. */
static inline int32_t bk_block(int s, int b) { return (int32_t)(((s * BK_BPS + b) * 37) % BK_BLOCKS); }

/* A step feeding n_new[s] tokens to each of the first n sequences. logit_mode:
 * 0 = the last token of each sequence, 1 = only of even sequences. */
static inline const hr_step *bk_step(bk_run *r, int n, const int *n_new, int step_no, int logit_mode, int vocab) {
    int t = 0, nl = 0;
    r->qs[0] = 0;
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < n_new[s]; i++, t++) {
            int p = r->len[s] + i;
            r->tokens[t] = (int32_t)((s * 31 + p * 17 + step_no * 13 + 5) % vocab);
            r->pos[t] = p;
            r->slots[t] = bk_block(s, p / BK_BLOCK) * BK_BLOCK + p % BK_BLOCK;
        }
        if (logit_mode == 0 || s % 2 == 0) r->rows[nl++] = t - 1;
        r->len[s] += n_new[s];
        r->qs[s + 1] = t;
        r->lens[s] = r->len[s];
        for (int b = 0; b < BK_BPS; b++) r->bts[s * BK_BPS + b] = b * BK_BLOCK < r->len[s] ? bk_block(s, b) : -1;
    }
    r->st = (hr_step){.n_tokens = t,
                      .tokens = r->tokens,
                      .positions = r->pos,
                      .slot_mapping = r->slots,
                      .n_seqs = n,
                      .query_start = r->qs,
                      .seq_lens = r->lens,
                      .block_tables = r->bts,
                      .max_blocks_per_seq = BK_BPS,
                      .block_size = BK_BLOCK,
                      .n_logits = nl,
                      .logit_rows = r->rows};
    return &r->st;
}

static inline double bk_row_rel_l2(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Runs the schedule on model r with the backend's op table set to ops for
 * each forward call; appends every step's logits to out (rows x vocab). */
static inline int bk_run_all(bk_run *r, hr_backend *be, const hr_backend_ops *ops, const int *sched, int n_sched,
                             float *out, int *n_rows_out, hr_err *err) {
    int vocab = hr_model_vocab_size(r->m), n_new[BK_SEQS], rows = 0, rc;
    const hr_backend_ops *keep = be->ops;
    memset(r->len, 0, sizeof r->len);
    for (int s = 0; s < BK_SEQS; s++) n_new[s] = 3 + (s * 5) % 7; /* prefill: 3..9 tokens each */
    const hr_step *st = bk_step(r, BK_SEQS, n_new, 0, 0, vocab);
    be->ops = ops;
    rc = hr_model_forward(r->m, st, out, err);
    be->ops = keep;
    if (rc != HR_OK) return rc;
    rows += st->n_logits;
    for (int s = 0; s < BK_SEQS; s++) n_new[s] = 1;
    for (int k = 0; k < n_sched; k++) {
        st = bk_step(r, sched[k], n_new, k + 1, k % 3 == 2, vocab);
        be->ops = ops;
        rc = hr_model_forward(r->m, st, out + (size_t)rows * (size_t)vocab, err);
        be->ops = keep;
        if (rc != HR_OK) return rc;
        rows += st->n_logits;
    }
    *n_rows_out = rows;
    return HR_OK;
}

/* The whole check for one fixture model on be. bucket_ops: be's table with
 * the bucket function to test (NULL: be's own); the reference runs with a
 * copy whose batch_bucket is NULL. max_abs / max_rel: the tolerances (abs
 * on every logit, relative L2 per row). Returns the worst diffs seen. */
static inline void bk_check_model(hr_backend *be, const hr_backend_ops *bucket_ops, const char *name, const int *sched,
                                  int n_sched, double max_abs, double max_rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", test_fixtures(), name);
    hr_model *mp = NULL, *mr = NULL;
    hr_err err = {0};
    hr_model_opts opts = {.weight_dtype = HR_DTYPE_COUNT};
    if (hr_model_load(path, be, &opts, &mp, &err) != HR_OK || hr_model_load(path, be, &opts, &mr, &err) != HR_OK) {
        CHECK_MSG(0, "%s: load: %s", name, err.msg);
        hr_model_free(mp);
        return;
    }
    CHECK(hr_model_kv_alloc(mp, BK_BLOCKS, BK_BLOCK, &err) == HR_OK);
    CHECK(hr_model_kv_alloc(mr, BK_BLOCKS, BK_BLOCK, &err) == HR_OK);
    hr_backend_ops ref_ops = *be->ops, pad_ops = bucket_ops ? *bucket_ops : *be->ops;
    ref_ops.batch_bucket = NULL;
    int vocab = hr_model_vocab_size(mp), total = BK_SEQS;
    for (int k = 0; k < n_sched; k++) total += sched[k];
    float *lp = calloc((size_t)total * (size_t)vocab, sizeof(float)),
          *lr = calloc((size_t)total * (size_t)vocab, sizeof(float));
    bk_run *rp = calloc(1, sizeof *rp), *rr = calloc(1, sizeof *rr);
    int np = 0, nr = 0;
    rp->m = mp;
    rr->m = mr;
    int rc = bk_run_all(rp, be, &pad_ops, sched, n_sched, lp, &np, &err);
    CHECK_MSG(rc == HR_OK, "%s padded: %s", name, err.msg);
    if (rc == HR_OK) {
        rc = bk_run_all(rr, be, &ref_ops, sched, n_sched, lr, &nr, &err);
        CHECK_MSG(rc == HR_OK, "%s reference: %s", name, err.msg);
    }
    if (rc == HR_OK) {
        CHECK_EQ_INT(np, nr);
        double worst_abs = 0, worst_rel = 0;
        int finite = 1;
        for (int r = 0; r < np && r < nr; r++) {
            const float *a = lp + (size_t)r * vocab, *b = lr + (size_t)r * vocab;
            for (int c = 0; c < vocab; c++) {
                double d = fabs((double)a[c] - (double)b[c]);
                if (!isfinite(a[c])) finite = 0;
                if (!(d <= worst_abs)) worst_abs = d;
            }
            double rel = bk_row_rel_l2(a, b, vocab);
            if (!(rel <= worst_rel)) worst_rel = rel;
        }
        CHECK_MSG(finite, "%s: non-finite padded logits", name);
        CHECK_MSG(worst_abs <= max_abs, "%s: padded vs unpadded max abs diff %.3g > %.3g", name, worst_abs, max_abs);
        CHECK_MSG(worst_rel <= max_rel, "%s: padded vs unpadded rel L2 %.3g > %.3g", name, worst_rel, max_rel);
        printf("%s: %d logit rows, padded vs unpadded: max abs %.3g, worst row rel L2 %.3g\n", name, np, worst_abs,
               worst_rel);

        /* greedy ids of the last step (re-run; idempotent) vs the host argmax of its logits */
        const hr_backend_ops *keep = be->ops;
        int32_t ids[BK_SEQS];
        float *lg = calloc((size_t)BK_SEQS * (size_t)vocab, sizeof(float));
        be->ops = &pad_ops;
        rc = hr_model_forward(mp, &rp->st, lg, &err);
        if (rc == HR_OK) rc = hr_model_forward_greedy(mp, &rp->st, ids, &err);
        be->ops = keep;
        CHECK_MSG(rc == HR_OK, "%s greedy: %s", name, err.msg);
        for (int r = 0; rc == HR_OK && r < rp->st.n_logits; r++) {
            const float *x = lg + (size_t)r * vocab;
            int bi = 0;
            for (int c = 1; c < vocab; c++)
                if (x[c] > x[bi]) bi = c;
            CHECK_MSG(ids[r] == bi, "%s: greedy row %d: id %d, host argmax %d", name, r, ids[r], bi);
        }
        free(lg);
    }
    free(lp);
    free(lr);
    free(rp);
    free(rr);
    hr_model_free(mp);
    hr_model_free(mr);
}

#endif
