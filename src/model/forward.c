/* The one forward pass. Every architecture runs through here; where they
 * differ, the loaded layer says so (biases present, sinks, window, MoE) and
 * the architecture traits were already applied by the loader.
 *
 *   x = embed(tokens)
 *   per layer:  h = rmsnorm(x)            (x += previous FFN output first)
 *               q, k, v = h Wq, h Wk, h Wv;  rope(q, k);  cache <- k, v
 *               x += attention(q, cache) Wo;  h = rmsnorm(x)
 *               f = swiglu(h Wgate, h Wup) Wdown   or   moe(h)
 *   logits = rmsnorm(x + f)[logit rows] Wlm_head
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_impl.h"

/* A view of the first rows of a [cap, cols] buffer; shares the storage. */
static hr_tensor rows_view(const hr_tensor *t, int rows) {
    hr_tensor v = *t;
    v.ne[0] = rows;
    v.nbytes = (size_t)rows * (size_t)t->ne[1] * hr_dtype_size(t->dtype);
    return v;
}

/* A [rows, cols] view starting off elements into t's storage (which must
 * hold off + rows * cols elements): the fused projections' outputs. */
static hr_tensor flat_view(const hr_tensor *t, int64_t off, int rows, int64_t cols) {
    hr_tensor v = *t;
    size_t es = hr_dtype_size(t->dtype);
    HR_ASSERT((size_t)(off + rows * cols) * es <= t->nbytes);
    v.ne[0] = rows;
    v.ne[1] = cols;
    v.data = (char *)t->data + (size_t)off * es;
    v.nbytes = (size_t)(rows * cols) * es;
    return v;
}

static void free_acts(hr_model *m) {
    hr_acts *a = &m->acts;
    hr_tensor **all[] = {&a->x, &a->h,    &a->q,  &a->k,       &a->v,   &a->att,    &a->o,
                         &a->gate, &a->up, &a->ffn_out, &a->sel, &a->logits, &a->qkv, &a->gu};
    for (size_t i = 0; i < HR_ARRAY_LEN(all); i++) {
        hr_model_tensor_drop(m, *all[i]);
        *all[i] = NULL;
    }
    a->cap = a->logits_cap = 0;
}

/* Which path a layer takes (forward_run), so that only the activation
 * buffers some layer uses are allocated: q|k|v as one linear + the fused
 * rope/store op, and gate|up as one linear over packed SwiGLU rows. */
static bool fused_qkv(const hr_model *m, const hr_layer *l) { return l->qkv.lin.w && m->be->ops->qkv_rope_store; }
static bool fused_gate_up(const hr_layer *l) { return !l->is_moe && l->gate_up.lin.w; }

static int logits_rows(int n_logits) {
    int cap = 16;
    while (cap < n_logits) cap *= 2;
    return cap;
}

/* Logits for n_logits rows: grown to the next power of two (decode steps
 * are padded to size buckets, so a server settles after a few steps). Not
 * sized by the step's tokens: 8192 prefill tokens x 128k vocab x F32 would
 * be 4.2 GB that the KV pool, sized before the first step, does not leave. */
static int ensure_logits(hr_model *m, int n_logits, hr_err *err) {
    hr_acts *a = &m->acts;
    if (a->logits && n_logits <= a->logits_cap) return HR_OK;
    int cap = logits_rows(n_logits);
    hr_model_tensor_drop(m, a->logits);
    a->logits = NULL;
    a->logits_cap = 0;
    int64_t ne[2] = {cap, m->vocab};
    if (!(a->logits = hr_model_tensor_new(m, HR_F32, 2, ne, "act.logits", err))) return err->code;
    a->logits_cap = cap;
    return HR_OK;
}

/* The activation buffers of ensure_acts: one row of cols per token, need =
 * some layer uses it (the others stay NULL). */
typedef struct act_spec {
    hr_tensor **t;
    int64_t cols;
    const char *name;
    bool need;
} act_spec;
#define ACT_SPECS_MAX 16

static int act_specs(const hr_model *m, hr_acts *a, act_spec *spec) {
    int64_t H = m->hidden, qd = (int64_t)m->n_heads * m->head_dim, kvd = (int64_t)m->n_kv_heads * m->head_dim;
    bool fqkv = false, split_qkv = false, fgu = false, split_gu = false, dense = false;
    for (int li = 0; li < m->n_layers; li++) {
        const hr_layer *l = &m->layers[li];
        fqkv = fqkv || fused_qkv(m, l);
        split_qkv = split_qkv || !fused_qkv(m, l);
        fgu = fgu || fused_gate_up(l);
        split_gu = split_gu || (!l->is_moe && !fused_gate_up(l));
        dense = dense || !l->is_moe;
    }
    const act_spec all[] = {
        {&a->x, H, "act.x", true},
        {&a->h, H, "act.h", true},
        {&a->q, qd, "act.q", true},
        {&a->k, kvd, "act.k", split_qkv},
        {&a->v, kvd, "act.v", split_qkv},
        {&a->qkv, qd + 2 * kvd, "act.qkv", fqkv},
        {&a->att, qd, "act.att", true},
        {&a->o, H, "act.o", true},
        {&a->gate, m->ffn, "act.gate", dense},
        {&a->up, m->ffn, "act.up", split_gu},
        {&a->gu, 2 * (int64_t)m->ffn, "act.gate_up", fgu},
        {&a->ffn_out, H, "act.ffn", true},
        {&a->sel, H, "act.sel", true},
    };
    _Static_assert(sizeof all / sizeof all[0] <= ACT_SPECS_MAX, "act_specs: ACT_SPECS_MAX too small");
    memcpy(spec, all, sizeof all);
    return (int)HR_ARRAY_LEN(all);
}

size_t hr_model_activation_bytes(const hr_model *m, int n_tokens, int n_logits) {
    /* an upper bound: every buffer ensure_acts may allocate, needed or not */
    act_spec spec[ACT_SPECS_MAX];
    int n = act_specs(m, (hr_acts *)&m->acts, spec);
    int64_t cols = 0;
    for (int i = 0; i < n; i++) cols += spec[i].cols;
    size_t rows = (size_t)HR_MAX(n_tokens, 16);
    return rows * (size_t)cols * hr_dtype_size(m->be->act_dtype) +
           (size_t)logits_rows(n_logits) * (size_t)m->vocab * sizeof(float);
}

/* Activation buffers for n tokens, allocated once and regrown only when a
 * larger step arrives (no allocation in steady state). */
static int ensure_acts(hr_model *m, int n, int n_logits, hr_err *err) {
    hr_acts *a = &m->acts;
    if (n <= a->cap) return ensure_logits(m, n_logits, err);
    free_acts(m);
    int cap = n < 16 ? 16 : n;
    act_spec spec[ACT_SPECS_MAX];
    int ns = act_specs(m, a, spec);
    for (int i = 0; i < ns; i++) {
        int64_t ne[2] = {cap, spec[i].cols};
        if (spec[i].need && !(*spec[i].t = hr_model_tensor_new(m, m->be->act_dtype, 2, ne, spec[i].name, err))) {
            free_acts(m);
            return err->code;
        }
    }
    a->cap = cap;
    return ensure_logits(m, n_logits, err);
}

static int check_step(const hr_model *m, const hr_step *s, hr_err *err) {
    if (s->n_tokens <= 0 || s->n_seqs <= 0 || !s->tokens || !s->positions || !s->slot_mapping || !s->query_start ||
        !s->seq_lens || !s->block_tables)
        return hr_err_set(err, HR_EINVAL, "forward: empty or incomplete step");
    if (m->kv_blocks <= 0) return hr_err_set(err, HR_EINVAL, "forward: no KV cache (call hr_model_kv_alloc)");
    if (s->block_size != m->kv_block_size)
        return hr_err_set(err, HR_EINVAL, "forward: step block_size %d != cache block_size %d", s->block_size,
                          m->kv_block_size);
    if (s->query_start[0] != 0 || s->query_start[s->n_seqs] != s->n_tokens)
        return hr_err_set(err, HR_EINVAL, "forward: query_start does not cover the %d tokens", s->n_tokens);
    for (int q = 0; q < s->n_seqs; q++)
        if (s->query_start[q + 1] < s->query_start[q])
            return hr_err_set(err, HR_EINVAL, "forward: query_start is not ascending at sequence %d", q);
    for (int i = 0; i < s->n_tokens; i++) {
        if (s->tokens[i] < 0 || s->tokens[i] >= m->vocab)
            return hr_err_set(err, HR_EINVAL, "forward: token id %d out of range [0, %d)", s->tokens[i], m->vocab);
        if (s->slot_mapping[i] < 0 || s->slot_mapping[i] >= m->kv_blocks * m->kv_block_size)
            return hr_err_set(err, HR_EINVAL, "forward: slot %d out of range", s->slot_mapping[i]);
    }
    /* every block a sequence reads must exist: the backend trusts the tables */
    for (int q = 0; q < s->n_seqs; q++) {
        int len = s->seq_lens[q], nb = (len + s->block_size - 1) / s->block_size;
        if (len < s->query_start[q + 1] - s->query_start[q] || nb > s->max_blocks_per_seq)
            return hr_err_set(err, HR_EINVAL, "forward: sequence %d: %d tokens do not fit its %d-block table", q, len,
                              s->max_blocks_per_seq);
        for (int b = 0; b < nb; b++) {
            int32_t blk = s->block_tables[(size_t)q * (size_t)s->max_blocks_per_seq + (size_t)b];
            if (blk < 0 || blk >= m->kv_blocks)
                return hr_err_set(err, HR_EINVAL, "forward: sequence %d: block %d of its table is %d (cache has %d)", q,
                                  b, blk, m->kv_blocks);
        }
        for (int t = s->query_start[q]; t < s->query_start[q + 1]; t++)
            if (s->positions[t] < 0 || s->positions[t] >= len)
                return hr_err_set(err, HR_EINVAL, "forward: token %d: position %d outside its sequence of %d", t,
                                  s->positions[t], len);
    }
    for (int i = 0; i < s->n_logits; i++)
        if (!s->logit_rows || s->logit_rows[i] < 0 || s->logit_rows[i] >= s->n_tokens)
            return hr_err_set(err, HR_EINVAL, "forward: logit row %d out of range",
                              s->logit_rows ? s->logit_rows[i] : -1);
    return HR_OK;
}

#define OP(call)                                                                                                       \
    do {                                                                                                               \
        if ((rc = (call)) != HR_OK) {                                                                                  \
            hr_err_set(err, rc, "forward: %s: %s", #call, be->err.msg);                                                \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

/* Batch-size buckets: a pure-decode step (every sequence brings exactly one
 * new token) of B sequences becomes, when the backend asks for it
 * (ops->batch_bucket), a step of B' >= B sequences, so that the CUDA graph
 * captured for B' serves every batch size of its bucket. The B' - B dummy
 * sequences follow the real ones: token 0 at position 0, slot -1 (kv_store
 * and qkv_rope_store skip it on every backend), seq_len 1, a block table
 * whose first entry is real sequence 0's first block (read only: the CPU
 * attention rejects -1 entries inside a context) and -1 after it. Logit rows
 * are padded to B' too (n_logits is part of the graph key): the real ones
 * first, then dummy (or repeated last) rows, so rows [0, n_logits) of the
 * output are exactly the caller's and the callers read only those. Every op
 * treats tokens independently, so the real rows equal the unpadded step's.
 * *out = the padded step in m->pad (arrays grown only, never per step), or
 * step itself. Call after check_step (the dummies would not pass it). */
static int pad_decode_step(hr_model *m, const hr_step *s, const hr_step **out, hr_err *err) {
    hr_backend *be = m->be;
    *out = s;
    if (!be->ops->batch_bucket || s->n_tokens != s->n_seqs) return HR_OK;
    for (int q = 0; q < s->n_seqs; q++)
        if (s->query_start[q + 1] - s->query_start[q] != 1) return HR_OK;
    int B = s->n_seqs, P = be->ops->batch_bucket(be, B), mb = s->max_blocks_per_seq;
    if (P <= B) return HR_OK;
    int nl = s->n_logits > 0 ? P : 0;
    size_t need = 5 * (size_t)P + 1 + (size_t)P * (size_t)mb + (size_t)nl;
    if (need > m->pad.cap) {
        int32_t *p = realloc(m->pad.buf, need * sizeof(int32_t));
        if (!p) return hr_err_set(err, HR_ENOMEM, "forward: out of memory padding a step to %d sequences", P);
        m->pad.buf = p;
        m->pad.cap = need;
    }
    int32_t *tok = m->pad.buf, *pos = tok + P, *slot = pos + P, *qs = slot + P, *len = qs + P + 1, *bt = len + P,
            *rows = bt + (size_t)P * (size_t)mb;
    size_t b4 = (size_t)B * sizeof(int32_t);
    memcpy(tok, s->tokens, b4);
    memcpy(pos, s->positions, b4);
    memcpy(slot, s->slot_mapping, b4);
    memcpy(qs, s->query_start, b4 + sizeof(int32_t));
    memcpy(len, s->seq_lens, b4);
    memcpy(bt, s->block_tables, b4 * (size_t)mb);
    for (int i = B; i < P; i++) {
        tok[i] = 0;
        pos[i] = 0;
        slot[i] = -1;
        qs[i + 1] = i + 1;
        len[i] = 1;
        int32_t *row = bt + (size_t)i * (size_t)mb;
        row[0] = s->block_tables[0];
        for (int j = 1; j < mb; j++) row[j] = -1;
    }
    if (nl > 0) {
        memcpy(rows, s->logit_rows, (size_t)s->n_logits * sizeof(int32_t));
        for (int i = s->n_logits; i < nl; i++) rows[i] = HR_MIN(P - 1, B + (i - s->n_logits));
    }
    m->pad.step = *s;
    m->pad.step.n_tokens = m->pad.step.n_seqs = P;
    m->pad.step.tokens = tok;
    m->pad.step.positions = pos;
    m->pad.step.slot_mapping = slot;
    m->pad.step.query_start = qs;
    m->pad.step.seq_lens = len;
    m->pad.step.block_tables = bt;
    m->pad.step.n_logits = nl;
    m->pad.step.logit_rows = nl > 0 ? rows : NULL;
    *out = &m->pad.step;
    return HR_OK;
}

/* The pass itself, up to the logits of step->n_logits rows left in
 * m->acts.logits (backend memory); the callers decide what crosses to the host.
 * A padded decode step (pad_decode_step) leaves the caller's rows first. */
static int forward_run(hr_model *m, const hr_step *step, hr_err *err) {
    hr_backend *be = m->be;
    const hr_backend_ops *ops = be->ops;
    int rc = check_step(m, step, err);
    if (rc != HR_OK) return rc;
    if ((rc = pad_decode_step(m, step, &step, err)) != HR_OK) return rc;
    if ((rc = ensure_acts(m, step->n_tokens, step->n_logits, err)) != HR_OK) return rc;
    int T = step->n_tokens;
    hr_acts *a = &m->acts;
    hr_tensor x = rows_view(a->x, T), h = rows_view(a->h, T), q, k, v, gate, up;
    hr_tensor att = rows_view(a->att, T), o = rows_view(a->o, T), f = rows_view(a->ffn_out, T);
    hr_tensor sel = rows_view(a->sel, step->n_logits), lg = rows_view(a->logits, step->n_logits);
    hr_attn_params ap = {.n_heads = m->n_heads,
                         .n_kv_heads = m->n_kv_heads,
                         .head_dim = m->head_dim,
                         .scale = 1.0f / sqrtf((float)m->head_dim)};
    static const hr_act plain = {.alpha = 1, .limit = 0, .up_offset = 0};

    OP(ops->step_begin ? ops->step_begin(be, step) : HR_OK);
    OP(ops->embed(be, &x, m->embed, step));
    for (int li = 0; li < m->n_layers; li++) {
        hr_layer *l = &m->layers[li];
        if (li == 0)
            OP(ops->rmsnorm(be, &h, &x, l->attn_norm, m->eps));
        else
            OP(ops->add_rmsnorm(be, &h, &x, &f, l->attn_norm, m->eps));
        if (fused_qkv(m, l)) { /* q|k|v in one linear, then rope(q), rope(k) and the cache store in one op */
            int64_t qd = (int64_t)m->n_heads * m->head_dim, kvd = (int64_t)m->n_kv_heads * m->head_dim;
            hr_tensor all = flat_view(a->qkv, 0, T, qd + 2 * kvd);
            q = rows_view(a->q, T);
            OP(ops->linear(be, &all, &h, &l->qkv.lin));
            OP(ops->qkv_rope_store(be, &q, &all, l->k_cache, l->v_cache, m->n_heads, m->n_kv_heads, &m->rope,
                                   step));
        } else {
            if (T == 1 && l->qkv.lin.w) { /* decode: q|k|v in one linear, its output row split by views */
                int64_t qd = (int64_t)m->n_heads * m->head_dim, kvd = (int64_t)m->n_kv_heads * m->head_dim;
                hr_tensor all = flat_view(a->q, 0, 1, qd + 2 * kvd);
                OP(ops->linear(be, &all, &h, &l->qkv.lin));
                q = flat_view(a->q, 0, 1, qd);
                k = flat_view(a->q, qd, 1, kvd);
                v = flat_view(a->q, qd + kvd, 1, kvd);
            } else {
                q = rows_view(a->q, T);
                k = rows_view(a->k, T);
                v = rows_view(a->v, T);
                OP(ops->linear(be, &q, &h, &l->q));
                OP(ops->linear(be, &k, &h, &l->k));
                OP(ops->linear(be, &v, &h, &l->v));
            }
            OP(ops->rope(be, &q, m->n_heads, &m->rope, step));
            OP(ops->rope(be, &k, m->n_kv_heads, &m->rope, step));
            OP(ops->kv_store(be, l->k_cache, l->v_cache, &k, &v, step));
        }
        ap.window = l->window;
        ap.sinks = l->sinks;
        OP(ops->attention(be, &att, &q, l->k_cache, l->v_cache, step, &ap));
        OP(ops->linear(be, &o, &att, &l->o));
        OP(ops->add_rmsnorm(be, &h, &x, &o, l->ffn_norm, m->eps));
        if (l->is_moe) {
            OP(ops->moe(be, &f, &h, &l->moe));
        } else {
            if (fused_gate_up(l)) { /* gate|up in one linear; SwiGLU reads both halves of its rows */
                hr_tensor all = flat_view(a->gu, 0, T, 2 * (int64_t)m->ffn);
                gate = rows_view(a->gate, T);
                OP(ops->linear(be, &all, &h, &l->gate_up.lin));
                OP(ops->swiglu(be, &gate, &all, NULL, &plain));
            } else {
                gate = rows_view(a->gate, T);
                up = rows_view(a->up, T);
                OP(ops->linear(be, &gate, &h, &l->gate));
                OP(ops->linear(be, &up, &h, &l->up));
                OP(ops->swiglu(be, &gate, &gate, &up, &plain));
            }
            OP(ops->linear(be, &f, &gate, &l->down));
        }
    }
    OP(ops->add_rmsnorm(be, &h, &x, &f, m->final_norm, m->eps));
    if (step->n_logits > 0) {
        OP(ops->get_rows(be, &sel, &h, step));
        OP(ops->linear(be, &lg, &sel, &m->lm_head));
    }
    OP(ops->step_end ? ops->step_end(be) : HR_OK);
    return HR_OK;
fail:
    return rc;
}

int hr_model_forward(hr_model *m, const hr_step *step, float *logits, hr_err *err) {
    hr_err local = {0};
    if (!err) err = &local;
    hr_backend *be = m->be;
    int rc = forward_run(m, step, err);
    if (rc != HR_OK || step->n_logits <= 0) return rc;
    hr_tensor lg = rows_view(m->acts.logits, step->n_logits);
    OP(be->ops->tensor_get(be, &lg, logits, 0, lg.nbytes));
    return HR_OK;
fail:
    return rc;
}

/* Without the device op: the step's logit rows copied to a fresh host buffer
 * (the caller frees it), for the same pick on the host. */
static float *logits_to_host(hr_model *m, const hr_tensor *lg, int rows, hr_err *err) {
    hr_backend *be = m->be;
    float *host = malloc(lg->nbytes);
    if (!host) {
        hr_err_set(err, HR_ENOMEM, "forward: out of memory for %d logit rows", rows);
        return NULL;
    }
    int rc = be->ops->tensor_get(be, lg, host, 0, lg->nbytes);
    if (rc != HR_OK) {
        hr_err_set(err, rc, "forward: reading the logits: %s", be->err.msg);
        free(host);
        return NULL;
    }
    return host;
}

/* The ids of a step that runs to its end here: m->ids.buf, grown only. */
static int32_t *ids_buf(hr_model *m, int n, hr_err *err) {
    if (n > m->ids.cap) {
        int cap = n < 256 ? 256 : n;
        int32_t *b = realloc(m->ids.buf, sizeof(int32_t) * (size_t)cap);
        if (!b) {
            hr_err_set(err, HR_ENOMEM, "forward: out of memory for %d ids", n);
            return NULL;
        }
        m->ids.buf = b;
        m->ids.cap = cap;
    }
    return m->ids.buf;
}

/* Row argmax of host logits, lowest id on ties, as the sampler. */
static void host_argmax(const float *host, int rows, int vocab, int32_t *ids) {
    for (int r = 0; r < rows; r++) {
        const float *x = host + (size_t)r * (size_t)vocab;
        float bv = -INFINITY;
        int bi = -1;
        for (int c = 0; c < vocab; c++)
            if (x[c] > bv || (bi < 0 && x[c] == bv)) {
                bv = x[c];
                bi = c;
            }
        ids[r] = bi < 0 ? 0 : bi;
    }
}

/* Runs the step; rows == NULL: greedy ids, else sampled with rows. */
static int forward_ids_begin(hr_model *m, const hr_step *step, const hr_sample_row *rows, hr_err *err) {
    hr_backend *be = m->be;
    if (m->ids.state)
        return hr_err_set(err, HR_EINVAL, "forward: a step begun before was not waited for (hr_model_ids_wait)");
    int rc = forward_run(m, step, err);
    if (rc != HR_OK) return rc;
    const int n = HR_MAX(step->n_logits, 0);
    hr_tensor lg = rows_view(m->acts.logits, n);
    const bool dev = rows ? be->ops->sample != NULL : be->ops->argmax != NULL;
    if (n > 0 && dev && be->ops->ids_wait) {
        /* the ids stay on their way: the caller works while the device computes */
        OP(rows ? be->ops->sample(be, &lg, rows, n, NULL) : be->ops->argmax(be, &lg, NULL));
        m->ids.state = 2;
        m->ids.n = n;
        return HR_OK;
    }
    int32_t *ids = ids_buf(m, n, err);
    if (!ids) return err->code;
    if (n > 0 && dev) {
        OP(rows ? be->ops->sample(be, &lg, rows, n, ids) : be->ops->argmax(be, &lg, ids));
    } else if (n > 0) {
        /* no device op: the logits cross and the same pick runs here */
        float *host = logits_to_host(m, &lg, n, err);
        if (!host) return err->code;
        if (!rows) host_argmax(host, n, m->vocab, ids);
        for (int r = 0; rows && r < n && rc == HR_OK; r++)
            if (hr_sample_row_ref(&rows[r], host + (size_t)r * (size_t)m->vocab, m->vocab, &ids[r]) != HR_OK)
                rc = hr_err_set(err, HR_ENOMEM, "forward: out of memory sampling");
        free(host);
        if (rc != HR_OK) return rc;
    }
    m->ids.state = 1;
    m->ids.n = n;
    return HR_OK;
fail:
    return rc;
}

int hr_model_forward_greedy_begin(hr_model *m, const hr_step *step, hr_err *err) {
    hr_err local = {0};
    return forward_ids_begin(m, step, NULL, err ? err : &local);
}

int hr_model_forward_sample_begin(hr_model *m, const hr_step *step, const hr_sample_row *rows, hr_err *err) {
    hr_err local = {0};
    if (!rows && step->n_logits > 0) return hr_err_set(err ? err : &local, HR_EINVAL, "forward: no sampling rows");
    return forward_ids_begin(m, step, rows, err ? err : &local);
}

int hr_model_ids_wait(hr_model *m, int32_t *ids, hr_err *err) {
    hr_err local = {0};
    if (!err) err = &local;
    const int state = m->ids.state, n = m->ids.n;
    m->ids.state = 0;
    m->ids.n = 0;
    if (state == 2) {
        hr_backend *be = m->be;
        if (be->ops->ids_wait(be, ids, n) != HR_OK)
            return hr_err_set(err, be->err.code ? be->err.code : HR_EIO, "%s", be->err.msg);
        return HR_OK;
    }
    if (state == 1) {
        if (n > 0) memcpy(ids, m->ids.buf, sizeof(int32_t) * (size_t)n);
        return HR_OK;
    }
    return hr_err_set(err, HR_EINVAL, "forward: no step begun to wait for");
}

int hr_model_forward_greedy(hr_model *m, const hr_step *step, int32_t *ids, hr_err *err) {
    int rc = hr_model_forward_greedy_begin(m, step, err);
    return rc != HR_OK ? rc : hr_model_ids_wait(m, ids, err);
}

int hr_model_forward_sample(hr_model *m, const hr_step *step, const hr_sample_row *rows, int32_t *ids, hr_err *err) {
    int rc = hr_model_forward_sample_begin(m, step, rows, err);
    return rc != HR_OK ? rc : hr_model_ids_wait(m, ids, err);
}
