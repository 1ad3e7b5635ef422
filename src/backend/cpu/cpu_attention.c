/* Rotary embedding, paged KV-cache writes and paged attention on the CPU.
 * Cache layout [n_blocks, block_size, n_kv_heads, head_dim] F32; a sequence's
 * key at position j lives in block block_tables[s * max_blocks + j / bs] at
 * offset j % bs. Attention is two-pass per (token, head): scores, then a
 * max-subtracted float32 softmax (optionally with a sink logit in the
 * denominator, as gpt-oss) and the weighted sum of values. Work items are
 * (token, head) pairs, so decode with many heads and prefill both spread. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"

/* ---------------------------------------------------------------- rope */

typedef struct {
    float *x;
    int64_t ld;
    int n_heads, head_dim, half;
    const float *cs; /* [T][half][2] cos, sin (already times mscale) */
} rope_job;

static void rope_tokens(void *ctx, int b, int e, int tid) {
    (void)tid;
    const rope_job *j = ctx;
    for (int t = b; t < e; t++) {
        const float *cs = j->cs + (size_t)t * j->half * 2;
        for (int h = 0; h < j->n_heads; h++) {
            float *v = j->x + (size_t)t * j->ld + (size_t)h * j->head_dim;
            for (int i = 0; i < j->half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                float x0 = v[i], x1 = v[i + j->half];
                v[i] = x0 * c - x1 * s;
                v[i + j->half] = x1 * c + x0 * s;
            }
        }
    }
}

int cpu_op_rope(hr_backend *be, hr_tensor *x, int n_heads, const hr_rope *rope, const hr_step *step) {
    int T = step->n_tokens;
    int rc = cpu_check(be, "rope", x, "x", HR_F32, (int64_t)T * n_heads * rope->head_dim);
    if (rc) return rc;
    if (rope->rot_dim <= 0 || rope->rot_dim > rope->head_dim || rope->rot_dim % 2)
        return hr_err_set(&be->err, HR_EINVAL, "cpu rope: rot_dim %d invalid for head_dim %d", rope->rot_dim,
                          rope->head_dim);
    int64_t ld = hr_tensor_cols(x);
    if (ld < (int64_t)n_heads * rope->head_dim)
        return hr_err_set(&be->err, HR_EINVAL, "cpu rope: '%s' has %lld columns < %d heads x %d", x->name,
                          (long long)ld, n_heads, rope->head_dim);
    int half = rope->rot_dim / 2;
    float *cs = cpu_shared(be, CPU_SLOT_ATTN, (size_t)T * half * 2 * sizeof(float));
    if (!cs) return be->err.code;
    /* As HF: angle = float32(pos) * inv_freq in float32, cos/sin of that, times the attention scaling. */
    for (int t = 0; t < T; t++) {
        float pos = (float)step->positions[t];
        for (int i = 0; i < half; i++) {
            float a = pos * rope->inv_freq[i];
            cs[((size_t)t * half + i) * 2] = cosf(a) * rope->mscale;
            cs[((size_t)t * half + i) * 2 + 1] = sinf(a) * rope->mscale;
        }
    }
    rope_job j = {x->data, ld, n_heads, rope->head_dim, half, cs};
    int grain = HR_MAX(1, 8192 / HR_MAX(1, n_heads * rope->rot_dim));
    hr_parallel_for(cpu_of(be)->pool, T, grain, rope_tokens, &j);
    return HR_OK;
}

/* ---------------------------------------------------------------- kv_store */

/* Checks a cache tensor's shape against the step; returns row (n_kv * head_dim) or a negative code. */
static int check_cache(hr_backend *be, const char *op, const hr_tensor *c, const hr_step *step) {
    int rc = cpu_check(be, op, c, "cache", HR_F32, 1);
    if (rc) return rc;
    if (c->ndim != 4 || c->ne[1] != step->block_size)
        return hr_err_set(&be->err, HR_EINVAL, "cpu %s: cache '%s' must be [n_blocks, %d, n_kv, head_dim]", op, c->name,
                          step->block_size);
    return HR_OK;
}

int cpu_op_kv_store(hr_backend *be, hr_tensor *k_cache, hr_tensor *v_cache, const hr_tensor *k, const hr_tensor *v,
                    const hr_step *step) {
    int rc;
    if ((rc = check_cache(be, "kv_store", k_cache, step)) || (rc = check_cache(be, "kv_store", v_cache, step)))
        return rc;
    int64_t row = k_cache->ne[2] * k_cache->ne[3];
    int64_t n_slots = k_cache->ne[0] * k_cache->ne[1];
    int T = step->n_tokens;
    if (v_cache->ne[0] != k_cache->ne[0] || v_cache->ne[2] * v_cache->ne[3] != row)
        return hr_err_set(&be->err, HR_EINVAL, "cpu kv_store: k and v caches differ in shape");
    if ((rc = cpu_check(be, "kv_store", k, "k", HR_F32, (int64_t)T * row)) ||
        (rc = cpu_check(be, "kv_store", v, "v", HR_F32, (int64_t)T * row)))
        return rc;
    int64_t ldk = hr_tensor_cols(k), ldv = hr_tensor_cols(v);
    if (ldk < row || ldv < row)
        return hr_err_set(&be->err, HR_EINVAL, "cpu kv_store: k/v rows narrower than n_kv * head_dim = %lld",
                          (long long)row);
    for (int t = 0; t < T; t++) {
        int64_t slot = step->slot_mapping[t];
        if (slot < 0) continue; /* padding token: nothing to store (as vLLM's -1 slots) */
        if (slot >= n_slots)
            return hr_err_set(&be->err, HR_EINVAL, "cpu kv_store: slot %lld of token %d outside the cache (%lld slots)",
                              (long long)slot, t, (long long)n_slots);
        memcpy((float *)k_cache->data + slot * row, (const float *)k->data + t * ldk, (size_t)row * sizeof(float));
        memcpy((float *)v_cache->data + slot * row, (const float *)v->data + t * ldv, (size_t)row * sizeof(float));
    }
    return HR_OK;
}

/* ---------------------------------------------------------------- fused q|k|v */
int cpu_op_qkv_rope_store(hr_backend *be, hr_tensor *q_out, const hr_tensor *qkv, hr_tensor *k_cache,
                          hr_tensor *v_cache, int n_heads, int n_kv_heads, const hr_rope *rope, const hr_step *step) {
    int T = step->n_tokens, hd = rope->head_dim;
    int64_t qd = (int64_t)n_heads * hd, kvd = (int64_t)n_kv_heads * hd, ld = hr_tensor_cols(qkv);
    if (n_heads <= 0 || n_kv_heads <= 0 || ld < qd + 2 * kvd || hr_tensor_cols(q_out) != qd)
        return hr_err_set(&be->err, HR_EINVAL, "cpu qkv_rope_store: qkv has %lld columns, q_out %lld, for %d/%d heads x %d",
                          (long long)ld, (long long)hr_tensor_cols(q_out), n_heads, n_kv_heads, hd);
    int rc;
    if ((rc = cpu_check(be, "qkv_rope_store", qkv, "qkv", HR_F32, (int64_t)T * ld)) ||
        (rc = cpu_check(be, "qkv_rope_store", q_out, "q_out", HR_F32, (int64_t)T * qd)))
        return rc;
    /* k and v parts in the backend's reused scratch (the MoE slot: neither
     * rope nor kv_store touches it); a fresh malloc of this size per layer
     * and step would be an mmap + page faults each time */
    float *kv = cpu_shared(be, CPU_SLOT_MOE, sizeof(float) * (size_t)T * (size_t)kvd * 2);
    if (!kv) return be->err.code;
    const float *src = qkv->data;
    for (int t = 0; t < T; t++) {
        memcpy((float *)q_out->data + t * qd, src + t * ld, sizeof(float) * (size_t)qd);
        memcpy(kv + (size_t)t * kvd, src + t * ld + qd, sizeof(float) * (size_t)kvd);
        memcpy(kv + ((size_t)T + t) * kvd, src + t * ld + qd + kvd, sizeof(float) * (size_t)kvd);
    }
    hr_tensor k = {.dtype = HR_F32, .ndim = 2, .ne = {T, kvd}, .data = kv, .nbytes = sizeof(float) * (size_t)T * kvd, .be = be};
    hr_tensor v = k;
    v.data = kv + (size_t)T * kvd;
    rc = cpu_op_rope(be, q_out, n_heads, rope, step);
    if (rc == HR_OK) rc = cpu_op_rope(be, &k, n_kv_heads, rope, step);
    if (rc == HR_OK) rc = cpu_op_kv_store(be, k_cache, v_cache, &k, &v, step);
    return rc;
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    const cpu_kernels *k;
    cpu_backend *c;
    float *out;
    const float *q, *kc, *vc;
    int64_t ldq, ldo;
    const hr_step *step;
    const int32_t *tok_seq; /* sequence of each token */
    int n_heads, n_kv, hd, group, window, bs;
    float scale;
    const float *sinks;
} attn_job;

static inline int window_lo(int p, int window) { return window > 0 ? HR_MAX(0, p - window + 1) : 0; }

/* Positions pos.. that share pos's cache block, up to last: returns how many
 * and sets *slot to pos's slot. Keys of one block are rows n_kv * hd apart. */
static inline int block_run(const attn_job *j, const int32_t *bt, int pos, int last, size_t *slot) {
    int off = pos % j->bs;
    *slot = (size_t)bt[pos / j->bs] * j->bs + off;
    return HR_MIN(j->bs - off, last - pos + 1);
}

static void attn_items(void *ctx, int b, int e, int tid) {
    const attn_job *j = ctx;
    float *scores = j->c->scratch[tid];
    size_t stride = (size_t)j->n_kv * j->hd;
    for (int it = b; it < e; it++) {
        int t = it / j->n_heads, h = it % j->n_heads;
        int s = j->tok_seq[t], p = j->step->positions[t];
        int kvh = h / j->group, hd = j->hd;
        const int32_t *bt = j->step->block_tables + (size_t)s * j->step->max_blocks_per_seq;
        const float *q = j->q + t * j->ldq + (size_t)h * hd;
        int lo = window_lo(p, j->window), span = p - lo + 1;
        float *acc = scores + span;

        size_t slot;
        for (int pos = lo, n; pos <= p; pos += n) {
            n = block_run(j, bt, pos, p, &slot);
            j->k->dot_rows(q, j->kc + (slot * j->n_kv + kvh) * hd, stride, n, hd, scores + (pos - lo));
        }
        float m = -INFINITY;
        for (int i = 0; i < span; i++) {
            float sc = scores[i] *= j->scale;
            m = sc > m ? sc : m;
        }
        if (j->sinks && j->sinks[h] > m) m = j->sinks[h]; /* the sink joins the max, contributes no value */
        double denom = j->k->exp_sum(scores, span, m);
        if (j->sinks) denom += exp((double)(j->sinks[h] - m));
        memset(acc, 0, (size_t)hd * sizeof(float));
        for (int pos = lo, n; pos <= p; pos += n) {
            n = block_run(j, bt, pos, p, &slot);
            j->k->axpy_rows(acc, scores + (pos - lo), j->vc + (slot * j->n_kv + kvh) * hd, stride, n, hd);
        }
        float inv = (float)(1.0 / denom);
        float *o = j->out + t * j->ldo + (size_t)h * hd;
        for (int d = 0; d < hd; d++) o[d] = acc[d] * inv;
    }
}

/* Validates the ragged batch against the cache before any thread reads it:
 * every key a token will read must sit in a valid block. Fills tok_seq and
 * returns the longest span of keys any token reads. */
static int check_batch(hr_backend *be, const hr_step *step, int window, int64_t n_blocks, int32_t *tok_seq,
                       int *max_span) {
    int T = step->n_tokens, bs = step->block_size;
    if (step->n_seqs < 0 || step->query_start[0] != 0 || step->query_start[step->n_seqs] != T || bs <= 0)
        return hr_err_set(&be->err, HR_EINVAL, "cpu attention: query_start does not cover the %d tokens", T);
    *max_span = 1;
    for (int s = 0; s < step->n_seqs; s++) {
        int q0 = step->query_start[s], q1 = step->query_start[s + 1];
        if (q1 < q0) return hr_err_set(&be->err, HR_EINVAL, "cpu attention: query_start not ascending at %d", s);
        const int32_t *bt = step->block_tables + (size_t)s * step->max_blocks_per_seq;
        for (int t = q0; t < q1; t++) {
            int p = step->positions[t];
            tok_seq[t] = s;
            if (p < 0 || p >= step->seq_lens[s])
                return hr_err_set(&be->err, HR_EINVAL, "cpu attention: token %d at position %d, sequence %d has %d", t,
                                  p, s, step->seq_lens[s]);
            int lo = window_lo(p, window);
            if (p / bs >= step->max_blocks_per_seq)
                return hr_err_set(&be->err, HR_EINVAL, "cpu attention: position %d needs block %d > max %d", p, p / bs,
                                  step->max_blocks_per_seq);
            for (int blk = lo / bs; blk <= p / bs; blk++)
                if (bt[blk] < 0 || bt[blk] >= n_blocks)
                    return hr_err_set(&be->err, HR_EINVAL,
                                      "cpu attention: sequence %d block %d is %d (cache has %lld blocks)", s, blk,
                                      bt[blk], (long long)n_blocks);
            *max_span = HR_MAX(*max_span, p - lo + 1);
        }
    }
    return HR_OK;
}

int cpu_op_attention(hr_backend *be, hr_tensor *out, const hr_tensor *q, const hr_tensor *k_cache,
                     const hr_tensor *v_cache, const hr_step *step, const hr_attn_params *p) {
    int rc;
    int T = step->n_tokens, hd = p->head_dim;
    if ((rc = check_cache(be, "attention", k_cache, step)) || (rc = check_cache(be, "attention", v_cache, step)))
        return rc;
    if (p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads || k_cache->ne[2] != p->n_kv_heads || k_cache->ne[3] != hd ||
        v_cache->ne[2] != p->n_kv_heads || v_cache->ne[3] != hd || v_cache->ne[0] != k_cache->ne[0])
        return hr_err_set(&be->err, HR_EINVAL,
                          "cpu attention: %d heads / %d kv heads of dim %d do not match the caches", p->n_heads,
                          p->n_kv_heads, hd);
    int64_t width = (int64_t)p->n_heads * hd;
    if ((rc = cpu_check(be, "attention", q, "q", HR_F32, T * width)) ||
        (rc = cpu_check(be, "attention", out, "out", HR_F32, T * width)))
        return rc;
    if (hr_tensor_cols(q) < width || hr_tensor_cols(out) < width)
        return hr_err_set(&be->err, HR_EINVAL, "cpu attention: q/out narrower than %d heads x %d", p->n_heads, hd);
    if (p->sinks && (rc = cpu_check(be, "attention", p->sinks, "sinks", HR_F32, p->n_heads))) return rc;

    int32_t *tok_seq = cpu_shared(be, CPU_SLOT_ATTN, (size_t)HR_MAX(T, 1) * sizeof(int32_t));
    if (!tok_seq) return be->err.code;
    int max_span = 1;
    if ((rc = check_batch(be, step, p->window, k_cache->ne[0], tok_seq, &max_span))) return rc;
    if ((rc = cpu_scratch_reserve(be, (size_t)max_span + hd))) return rc;

    cpu_backend *c = cpu_of(be);
    attn_job j = {
        .k = c->k,
        .c = c,
        .out = out->data,
        .q = q->data,
        .kc = k_cache->data,
        .vc = v_cache->data,
        .ldq = hr_tensor_cols(q),
        .ldo = hr_tensor_cols(out),
        .step = step,
        .tok_seq = tok_seq,
        .n_heads = p->n_heads,
        .n_kv = p->n_kv_heads,
        .hd = hd,
        .group = p->n_heads / p->n_kv_heads,
        .window = p->window,
        .bs = step->block_size,
        .scale = p->scale,
        .sinks = p->sinks ? p->sinks->data : NULL,
    };
    int grain = HR_MAX(1, 8192 / HR_MAX(1, max_span * hd));
    hr_parallel_for(c->pool, T * p->n_heads, grain, attn_items, &j);
    return HR_OK;
}
