/* The CUDA backend object: device, one stream, the cuBLASLt handle, a caching
 * allocator for tensors, the op scratch stack, the step arrays (one pinned ->
 * device copy per step), and the op table that validates shapes and calls the
 * launchers of the kernel files. Activations and the KV cache are BF16.
 * Must not know models or the scheduler; synchronises only in tensor_get,
 * sync, and when a buffer must grow (first steps only). */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"

#define CU_SCRATCH_MIN ((size_t)32 << 20)
#define CU_LT_WS ((size_t)32 << 20)

int cu_fail(cu_backend *c, cudaError_t e, const char *what) {
    int code = e == cudaErrorNotSupported ? HR_EUNSUP : e == cudaErrorMemoryAllocation ? HR_ENOMEM : HR_EIO;
    cudaGetLastError(); /* clear a sticky launch error so the next op reports its own */
    return hr_err_set(&c->base.err, code, "cuda: %s: %s", what, cudaGetErrorString(e));
}

#define CU_TRY(c, call, what)                                         \
    do {                                                              \
        cudaError_t e_ = (call);                                      \
        if (e_ != cudaSuccess) return cu_fail((c), e_, (what));       \
    } while (0)

/* ---- device memory: caching allocator --------------------------------- */
static size_t round_alloc(size_t n) {
    size_t g = n < ((size_t)1 << 20) ? 256 : ((size_t)64 << 10);
    return (n + g - 1) / g * g;
}

static void *dev_alloc(cu_backend *c, size_t n) {
    n = round_alloc(n);
    for (int i = 0; i < c->n_free; i++) {
        if (c->free_list[i].size == n) {
            void *p = c->free_list[i].p;
            c->free_list[i] = c->free_list[--c->n_free];
            c->in_use += n;
            c->peak = HR_MAX(c->peak, c->in_use);
            return p;
        }
    }
    void *p = NULL;
    if (cudaMalloc(&p, n) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    c->in_use += n;
    c->peak = HR_MAX(c->peak, c->in_use);
    return p;
}

static void dev_release(cu_backend *c, void *p, size_t n) {
    if (!p) return;
    n = round_alloc(n);
    if (c->n_free == c->cap_free) {
        c->cap_free = c->cap_free ? 2 * c->cap_free : 64;
        c->free_list = (cu_free_block *)hr_xrealloc(c->free_list, c->cap_free * sizeof(cu_free_block));
    }
    c->free_list[c->n_free].p = p;
    c->free_list[c->n_free].size = n;
    c->n_free++;
    c->in_use -= n;
}

/* ---- scratch stack -------------------------------------------------------- */
int cu_scratch_reserve(cu_backend *c, size_t bytes) {
    if (bytes <= c->scratch_cap) return HR_OK;
    if (c->scratch_top != 0)
        return hr_err_set(&c->base.err, HR_ENOMEM, "cuda: scratch cannot grow while in use (%zu > %zu bytes)", bytes,
                          c->scratch_cap);
    cu_graph_demote(c);
    size_t cap = HR_MAX(bytes + bytes / 4, CU_SCRATCH_MIN);
    CU_TRY(c, cudaStreamSynchronize(c->stream), "scratch grow sync");
    cu_graphs_invalidate(c); /* graphs hold the old scratch pointer */
    if (c->scratch) {
        cudaFree(c->scratch);
        c->in_use -= c->scratch_cap;
    }
    c->scratch = NULL;
    c->scratch_cap = 0;
    CU_TRY(c, cudaMalloc((void **)&c->scratch, cap), "scratch alloc");
    c->scratch_cap = cap;
    c->in_use += cap;
    c->peak = HR_MAX(c->peak, c->in_use);
    return HR_OK;
}

void *cu_scratch_push(cu_backend *c, size_t bytes) {
    size_t top = (c->scratch_top + 255) / 256 * 256;
    if (top + bytes > c->scratch_cap) return NULL;
    c->scratch_top = top + bytes;
    return c->scratch + top;
}

/* ---- tensors ------------------------------------------------------------- */
static hr_tensor *cu_tensor_new(hr_backend *be, hr_dtype dtype, int ndim, const int64_t *ne, const char *name) {
    cu_backend *c = cu_of(be);
    if (ndim < 1 || ndim > HR_MAX_DIMS || dtype >= HR_DTYPE_COUNT) {
        hr_err_set(&be->err, HR_EINVAL, "cuda tensor_new: bad ndim %d or dtype", ndim);
        return NULL;
    }
    hr_tensor *t = (hr_tensor *)hr_xcalloc(1, sizeof(hr_tensor));
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0) {
            free(t);
            hr_err_set(&be->err, HR_EINVAL, "cuda tensor_new: negative dim");
            return NULL;
        }
        t->ne[i] = ne[i];
    }
    t->nbytes = (size_t)hr_tensor_nelem(t) * hr_dtype_size(dtype);
    t->be = be;
    if (name) snprintf(t->name, sizeof(t->name), "%s", name);
    if (t->nbytes) {
        cu_graph_flush(c); /* no cudaMalloc inside a capture */
        cudaSetDevice(c->device);
        t->data = dev_alloc(c, t->nbytes);
        if (!t->data) {
            hr_err_set(&be->err, HR_ENOMEM, "cuda: out of device memory for tensor '%s' (%zu bytes)", t->name,
                       t->nbytes);
            free(t);
            return NULL;
        }
        /* the interface promises zero-filled memory (a reused block holds old data) */
        if (cudaMemsetAsync(t->data, 0, t->nbytes, c->stream) != cudaSuccess) {
            hr_err_set(&be->err, HR_EIO, "cuda: zeroing tensor '%s' failed", t->name);
            dev_release(c, t->data, t->nbytes);
            free(t);
            return NULL;
        }
    }
    return t;
}

static void cu_tensor_free(hr_backend *be, hr_tensor *t) {
    if (!t) return;
    /* the memory goes back to the cache, not the device: work still queued on
     * the stream may use it, and the next tensor_new of this size reuses it in
     * stream order */
    dev_release(cu_of(be), t->data, t->nbytes);
    free(t);
}

static int cu_tensor_set(hr_backend *be, hr_tensor *t, const void *host, size_t offset, size_t nbytes) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (offset + nbytes > t->nbytes)
        return hr_err_set(&be->err, HR_EINVAL, "cuda tensor_set: range past the end of '%s'", t->name);
    /* returns when host may be freed or reused; the stream sees the data
     * (large sets: pinned staging ring, overlapped with the caller's next work) */
    return cu_upload_h2d(c, (char *)t->data + offset, host, nbytes);
}

static int cu_tensor_get(hr_backend *be, const hr_tensor *t, void *host, size_t offset, size_t nbytes) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (offset + nbytes > t->nbytes)
        return hr_err_set(&be->err, HR_EINVAL, "cuda tensor_get: range past the end of '%s'", t->name);
    if (!nbytes) return HR_OK;
    CU_TRY(c, cudaMemcpyAsync(host, (const char *)t->data + offset, nbytes, cudaMemcpyDeviceToHost, c->stream),
           "tensor_get");
    CU_TRY(c, cudaStreamSynchronize(c->stream), "tensor_get sync");
    return HR_OK;
}

static int cu_tensor_zero(hr_backend *be, hr_tensor *t) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (t->nbytes) CU_TRY(c, cudaMemsetAsync(t->data, 0, t->nbytes, c->stream), "tensor_zero");
    return HR_OK;
}

static bool cu_supports_weight(hr_backend *be, hr_dtype dtype) {
    (void)be;
    return dtype == HR_F32 || dtype == HR_BF16 || dtype == HR_F16;
}

/* ---- step arrays -------------------------------------------------------- */
static size_t al4(size_t n) { return (n + 3) / 4 * 4; }

static void fill(int32_t *dst, const int32_t *src, size_t n, int32_t dflt) {
    if (src) memcpy(dst, src, n * sizeof(int32_t));
    else
        for (size_t i = 0; i < n; i++) dst[i] = dflt;
}

/* Copies the step's arrays to the device with one async memcpy from pinned
 * staging. The staging buffer is rewritten only after the previous copy has
 * completed (event), so the host never races the DMA. */
static int upload_step(cu_backend *c, const hr_step *s) {
    if (s->n_tokens < 0 || s->n_seqs < 0 || s->n_logits < 0 || s->max_blocks_per_seq < 0)
        return hr_err_set(&c->base.err, HR_EINVAL, "cuda step: negative count");
    if (s->n_seqs > 0 && s->block_size <= 0 && s->block_tables)
        return hr_err_set(&c->base.err, HR_EINVAL, "cuda step: block_size must be positive");
    size_t nt = s->n_tokens, ns = s->n_seqs, nb = (size_t)s->n_seqs * s->max_blocks_per_seq, nl = s->n_logits;
    size_t o_tok = 0, o_pos = o_tok + al4(nt), o_slot = o_pos + al4(nt), o_ts = o_slot + al4(nt),
           o_qs = o_ts + al4(nt), o_sl = o_qs + al4(ns + 1), o_bt = o_sl + al4(ns), o_lr = o_bt + al4(nb),
           o_tl = o_lr + al4(nl), total = o_tl + al4(2 * (nt / CU_QTILE + ns + 1)) + 4;
    if (c->stage_pending) {
        CU_TRY(c, cudaEventSynchronize(c->stage_done), "step staging wait");
        c->stage_pending = false;
    }
    if (total > c->stage_cap) {
        size_t cap = HR_MAX(total + total / 2, (size_t)1 << 16);
        CU_TRY(c, cudaStreamSynchronize(c->stream), "step grow sync");
        cu_graphs_invalidate(c); /* graphs hold the old step arrays */
        if (c->stage_host) cudaFreeHost(c->stage_host);
        if (c->stage_dev) cudaFree(c->stage_dev);
        c->stage_host = NULL;
        c->stage_dev = NULL;
        c->stage_cap = 0;
        CU_TRY(c, cudaMallocHost((void **)&c->stage_host, cap * 4), "step staging alloc");
        CU_TRY(c, cudaMalloc((void **)&c->stage_dev, cap * 4), "step device alloc");
        c->stage_cap = cap;
    }
    int32_t *h = c->stage_host;
    fill(h + o_tok, s->tokens, nt, 0);
    fill(h + o_pos, s->positions, nt, 0);
    fill(h + o_slot, s->slot_mapping, nt, -1);
    fill(h + o_qs, s->query_start, ns + 1, 0);
    fill(h + o_sl, s->seq_lens, ns, 0);
    fill(h + o_bt, s->block_tables, nb, -1);
    fill(h + o_lr, s->logit_rows, nl, 0);
    int max_len = 0, max_q = 0, n_tiles = 0;
    for (size_t i = 0; i < nt; i++) h[o_ts + i] = 0;
    for (size_t q = 0; q < ns; q++) {
        max_len = HR_MAX(max_len, h[o_sl + q]);
        int a = h[o_qs + q], b = h[o_qs + q + 1];
        if (a < 0 || b < a || (size_t)b > nt)
            return hr_err_set(&c->base.err, HR_EINVAL, "cuda step: query_start[%zu..] = %d, %d out of range", q, a, b);
        for (int t = a; t < b; t++) h[o_ts + t] = (int32_t)q;
        max_q = HR_MAX(max_q, b - a);
        for (int t = a; t < b; t += CU_QTILE, n_tiles++) {
            h[o_tl + 2 * n_tiles] = (int32_t)q;
            h[o_tl + 2 * n_tiles + 1] = t;
        }
    }
    for (size_t i = 0; i < nl; i++)
        if (h[o_lr + i] < 0 || (size_t)h[o_lr + i] >= nt)
            return hr_err_set(&c->base.err, HR_EINVAL, "cuda step: logit row %d out of range", h[o_lr + i]);
    CU_TRY(c, cudaMemcpyAsync(c->stage_dev, h, total * 4, cudaMemcpyHostToDevice, c->stream), "step upload");
    CU_TRY(c, cudaEventRecord(c->stage_done, c->stream), "step event");
    c->stage_pending = true;

    cu_step *d = &c->step;
    int32_t *base = c->stage_dev;
    d->host = s;
    d->n_tokens = s->n_tokens;
    d->n_seqs = s->n_seqs;
    d->mbps = s->max_blocks_per_seq;
    d->block_size = s->block_size;
    d->n_logits = s->n_logits;
    d->max_seq_len = max_len;
    d->max_q_len = max_q;
    d->n_tiles = n_tiles;
    d->tiles = base + o_tl;
    d->ctx_bucket = 64;
    while (d->ctx_bucket < max_len) d->ctx_bucket *= 2;
    d->tokens = base + o_tok;
    d->positions = base + o_pos;
    d->slots = base + o_slot;
    d->tok_seq = base + o_ts;
    d->query_start = base + o_qs;
    d->seq_lens = base + o_sl;
    d->block_tables = base + o_bt;
    d->logit_rows = base + o_lr;
    return HR_OK;
}

/* Ops take the step again; its arrays are the ones step_begin uploaded. A
 * different step object (a caller that skipped step_begin) is uploaded here. */
static int want_step(cu_backend *c, const hr_step *s) {
    if (!s) return hr_err_set(&c->base.err, HR_EINVAL, "cuda: op needs the step");
    if (c->step.host == s && c->step.n_tokens == s->n_tokens && c->step.n_seqs == s->n_seqs &&
        c->step.n_logits == s->n_logits)
        return HR_OK;
    cu_graph_demote(c);
    return upload_step(c, s);
}

static int cu_step_begin(hr_backend *be, const hr_step *step) {
    cu_backend *c = cu_of(be);
    cu_graph_abort(c); /* the previous step failed before step_end */
    cudaSetDevice(c->device);
    int rc = upload_step(c, step);
    if (rc) return rc;
    return cu_graph_step_begin(c);
}

static int cu_step_end(hr_backend *be) {
    cu_backend *c = cu_of(be);
    int rc = cu_graph_step_end(c);
    c->step.host = NULL; /* the caller may reuse the step struct for the next step */
    if (rc) return rc;
    CU_TRY(c, cudaGetLastError(), "step");
    return HR_OK;
}

static int cu_sync(hr_backend *be) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    CU_TRY(c, cudaStreamSynchronize(c->stream), "sync");
    return HR_OK;
}

/* ---- ops ------------------------------------------------------------------ */
static bool is_act(hr_dtype t) { return t == HR_BF16 || t == HR_F32; }

static int cu_embed_op(hr_backend *be, hr_tensor *out, const hr_tensor *table, const hr_step *step) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    int64_t hidden = hr_tensor_cols(table);
    if (hr_tensor_cols(out) != hidden || hr_tensor_rows(out) < step->n_tokens)
        return hr_err_set(&be->err, HR_EINVAL, "cuda embed: out [%lld rows, %lld] vs table cols %lld",
                          (long long)hr_tensor_rows(out), (long long)hr_tensor_cols(out), (long long)hidden);
    CU_TRY(c, cu_embed(c->stream, out->data, out->dtype, table->data, table->dtype, hr_tensor_rows(table), hidden,
                       c->step.tokens, step->n_tokens),
           "embed");
    return HR_OK;
}

static int norm_common(hr_backend *be, hr_tensor *out, hr_tensor *res, const hr_tensor *x, const hr_tensor *w,
                       float eps) {
    cu_backend *c = cu_of(be);
    int64_t cols = hr_tensor_cols(x), rows = hr_tensor_rows(x);
    if (hr_tensor_nelem(w) != cols || hr_tensor_nelem(out) != rows * cols ||
        (res && (hr_tensor_nelem(res) != rows * cols || res->dtype != x->dtype)) || out->dtype != x->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cuda rmsnorm: shape/dtype mismatch ('%s')", x->name);
    CU_TRY(c, cu_rmsnorm(c->stream, out->data, out->dtype, res ? res->data : NULL, x->data, x->dtype, w->data,
                         w->dtype, rows, cols, eps),
           "rmsnorm");
    return HR_OK;
}

static int cu_rmsnorm_op(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_tensor *w, float eps) {
    return norm_common(be, out, NULL, x, w, eps);
}

static int cu_add_rmsnorm_op(hr_backend *be, hr_tensor *out, hr_tensor *residual, const hr_tensor *x,
                             const hr_tensor *w, float eps) {
    return norm_common(be, out, residual, x, w, eps);
}

static int cu_add_op(hr_backend *be, hr_tensor *out, const hr_tensor *a, const hr_tensor *b) {
    cu_backend *c = cu_of(be);
    int64_t n = hr_tensor_nelem(a);
    if (hr_tensor_nelem(b) != n || hr_tensor_nelem(out) != n || a->dtype != b->dtype || out->dtype != a->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cuda add: shape/dtype mismatch");
    CU_TRY(c, cu_add(c->stream, out->data, a->data, b->data, a->dtype, n), "add");
    return HR_OK;
}

static int linear_check(hr_backend *be, const hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    const hr_tensor *w = l->w;
    if (w->ndim != 2 || w->ne[1] != hr_tensor_cols(x) || hr_tensor_cols(out) != w->ne[0] ||
        hr_tensor_rows(out) != hr_tensor_rows(x))
        return hr_err_set(&be->err, HR_EINVAL, "cuda linear: x [%lld, %lld] w '%s' [%lld, %lld] out [%lld, %lld]",
                          (long long)hr_tensor_rows(x), (long long)hr_tensor_cols(x), w->name, (long long)w->ne[0],
                          (long long)w->ne[1], (long long)hr_tensor_rows(out), (long long)hr_tensor_cols(out));
    if (l->bias && (l->bias->dtype != HR_F32 || hr_tensor_nelem(l->bias) != w->ne[0]))
        return hr_err_set(&be->err, HR_EINVAL, "cuda linear: bias must be F32 [%lld]", (long long)w->ne[0]);
    if (!is_act(x->dtype) || !(is_act(out->dtype) || out->dtype == HR_F16) || !cu_supports_weight(be, w->dtype))
        return hr_err_set(&be->err, HR_EUNSUP, "cuda linear: dtypes x %s w %s out %s", hr_dtype_name(x->dtype),
                          hr_dtype_name(w->dtype), hr_dtype_name(out->dtype));
    if (hr_tensor_rows(x) > INT32_MAX) return hr_err_set(&be->err, HR_EINVAL, "cuda linear: too many rows");
    return HR_OK;
}

static int cu_linear_op(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    cu_backend *c = cu_of(be);
    const hr_tensor *w = l->w;
    int rc0 = linear_check(be, out, x, l);
    if (rc0) return rc0;
    cu_gemv_args a;
    memset(&a, 0, sizeof(a));
    a.x = x->data;
    a.tx = x->dtype;
    a.ldx = hr_tensor_cols(x);
    a.w = w->data;
    a.tw = w->dtype;
    a.K = w->ne[1];
    a.N = w->ne[0];
    a.T = (int)hr_tensor_rows(x);
    a.bias = l->bias ? (const float *)l->bias->data : NULL;
    a.alpha = 1.0f;
    a.out = out->data;
    a.to = out->dtype;
    a.ldo = a.N;
    int rc = cu_scratch_reserve(c, cu_linear_scratch(c, &a, l->input_scale));
    if (rc) return rc;
    return cu_linear_raw(c, a, l->input_scale);
}

/* The device copy of a RoPE inv_freq table. Cached by content, not by the
 * host pointer alone: a model freed and another loaded can get the same
 * address for a different table (that returned a stale table once, seen as
 * a flaky padded-vs-unpadded mismatch of the later MoE fixtures). */
/* The device table that holds r's values now, or NULL (no upload). */
static const float *rope_table_cached(const cu_backend *c, const hr_rope *r) {
    int n = r->rot_dim / 2;
    for (int i = 0; i < c->n_rope_tabs; i++)
        if (c->rope_tabs[i].n == n && c->rope_tabs[i].copy &&
            !memcmp(c->rope_tabs[i].copy, r->inv_freq, (size_t)n * sizeof(float)))
            return c->rope_tabs[i].dev;
    return NULL;
}

static const float *rope_table(cu_backend *c, const hr_rope *r, int *rc) {
    int n = r->rot_dim / 2;
    size_t bytes = (size_t)HR_MAX(n, 1) * sizeof(float);
    const float *hit = rope_table_cached(c, r);
    if (hit) return hit;
    int slot = -1;
    for (int i = 0; i < c->n_rope_tabs; i++)
        if (c->rope_tabs[i].n == n && c->rope_tabs[i].copy && c->rope_tabs[i].host == r->inv_freq)
            slot = i; /* same address, new contents: refresh it */
    cu_graph_demote(c); /* the upload below is synchronous */
    if (slot < 0) slot = c->n_rope_tabs < (int)HR_ARRAY_LEN(c->rope_tabs) ? c->n_rope_tabs++ : 0;
    float *d = c->rope_tabs[slot].dev;
    if (d) cu_graphs_invalidate(c); /* a captured graph may read this slot's old table */
    if (d && c->rope_tabs[slot].n < n) {
        cudaStreamSynchronize(c->stream);
        cudaFree(d);
        d = NULL;
    }
    free(c->rope_tabs[slot].copy);
    c->rope_tabs[slot].copy = NULL; /* no match until the upload below succeeded */
    c->rope_tabs[slot].host = NULL;
    if (!d) {
        cudaError_t e = cudaMalloc((void **)&d, bytes);
        if (e != cudaSuccess) d = NULL;
        c->rope_tabs[slot].dev = d;
        if (!d) {
            *rc = cu_fail(c, e, "rope table alloc");
            return NULL;
        }
    }
    c->rope_tabs[slot].n = n;
    /* on the backend's stream, then waited for: cudaMemcpy from pageable
     * memory runs on the legacy stream, which the non-blocking compute
     * stream does not wait for, and may return before the DMA lands (the
     * next kernel read the slot's old table) */
    cudaError_t e = cudaMemcpyAsync(d, r->inv_freq, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        *rc = cu_fail(c, e, "rope table upload");
        return NULL;
    }
    c->rope_tabs[slot].copy = (float *)hr_xmalloc(bytes);
    memcpy(c->rope_tabs[slot].copy, r->inv_freq, (size_t)n * sizeof(float));
    c->rope_tabs[slot].host = r->inv_freq;
    return d;
}

static int cu_rope_op(hr_backend *be, hr_tensor *x, int n_heads, const hr_rope *r, const hr_step *step) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    if (r->rot_dim < 2 || r->rot_dim > r->head_dim || r->rot_dim % 2 || (int64_t)n_heads * r->head_dim > hr_tensor_cols(x) ||
        hr_tensor_rows(x) < step->n_tokens)
        return hr_err_set(&be->err, HR_EINVAL, "cuda rope: rot_dim %d head_dim %d heads %d vs x cols %lld", r->rot_dim,
                          r->head_dim, n_heads, (long long)hr_tensor_cols(x));
    const float *tab = rope_table(c, r, &rc);
    if (!tab) return rc;
    CU_TRY(c, cu_rope(c->stream, x->data, x->dtype, step->n_tokens, hr_tensor_cols(x), n_heads, r->head_dim,
                      r->rot_dim, tab, r->mscale, c->step.positions),
           "rope");
    return HR_OK;
}

static int cu_kv_store_op(hr_backend *be, hr_tensor *kc, hr_tensor *vc, const hr_tensor *k, const hr_tensor *v,
                          const hr_step *step) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    int64_t row = hr_tensor_cols(k);
    if (hr_tensor_cols(v) != row || kc->ndim != 4 || kc->ne[2] * kc->ne[3] != row || kc->dtype != vc->dtype ||
        kc->nbytes != vc->nbytes)
        return hr_err_set(&be->err, HR_EINVAL, "cuda kv_store: k cols %lld vs cache [.., .., %lld, %lld]",
                          (long long)row, (long long)kc->ne[2], (long long)kc->ne[3]);
    CU_TRY(c, cu_kv_store(c->stream, kc->data, vc->data, kc->dtype, k->data, v->data, k->dtype, row,
                          hr_tensor_cols(v), step->n_tokens, row, c->step.slots, kc->ne[0] * kc->ne[1]),
           "kv_store");
    return HR_OK;
}

static int cu_attention_op(hr_backend *be, hr_tensor *out, const hr_tensor *q, const hr_tensor *kc,
                           const hr_tensor *vc, const hr_step *step, const hr_attn_params *p) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    if (p->n_kv_heads <= 0 || p->n_heads % p->n_kv_heads || kc->ndim != 4 || kc->ne[2] != p->n_kv_heads ||
        kc->ne[3] != p->head_dim || kc->ne[1] != step->block_size ||
        hr_tensor_cols(q) < (int64_t)p->n_heads * p->head_dim || hr_tensor_cols(out) < (int64_t)p->n_heads * p->head_dim ||
        out->dtype != q->dtype || (p->sinks && (p->sinks->dtype != HR_F32 || hr_tensor_nelem(p->sinks) < p->n_heads)))
        return hr_err_set(&be->err, HR_EINVAL, "cuda attention: heads %d/%d dim %d vs cache [%lld, %lld, %lld, %lld]",
                          p->n_heads, p->n_kv_heads, p->head_dim, (long long)kc->ne[0], (long long)kc->ne[1],
                          (long long)kc->ne[2], (long long)kc->ne[3]);
    cu_attn_args a;
    memset(&a, 0, sizeof(a));
    a.out = out->data;
    a.ldo = hr_tensor_cols(out);
    a.q = q->data;
    a.ldq = hr_tensor_cols(q);
    a.tq = q->dtype;
    a.kc = kc->data;
    a.vc = vc->data;
    a.tkv = kc->dtype;
    a.step = c->step;
    a.n_heads = p->n_heads;
    a.n_kv_heads = p->n_kv_heads;
    a.head_dim = p->head_dim;
    a.window = p->window;
    a.scale = p->scale;
    a.sinks = p->sinks ? (const float *)p->sinks->data : NULL;
    if (c->use_tc_attn && c->step.max_q_len >= CU_TC_MIN_Q && cu_attn_prefill_ok(&a)) {
        CU_TRY(c, cu_attention_prefill(c->stream, &a), "attention (prefill)");
        return HR_OK;
    }
    int splits = cu_attn_splits(&a, c->n_sm);
    size_t need = (size_t)step->n_tokens * p->n_heads * splits * (p->head_dim + 2) * sizeof(float);
    if ((rc = cu_scratch_reserve(c, need + 256))) return rc;
    float *part = (float *)cu_scratch_push(c, need);
    cudaError_t e = cu_attention(c->stream, &a, splits, part);
    c->scratch_top = 0;
    if (e != cudaSuccess) return cu_fail(c, e, "attention");
    return HR_OK;
}

static int cu_swiglu_op(hr_backend *be, hr_tensor *out, const hr_tensor *gate, const hr_tensor *up, const hr_act *act) {
    cu_backend *c = cu_of(be);
    int64_t rows = hr_tensor_rows(gate), cols = hr_tensor_cols(gate), ldg = cols, ldu = cols;
    const char *upp;
    if (!up) { /* packed: [rows, 2F], gate half then up half */
        if (cols % 2) return hr_err_set(&be->err, HR_EINVAL, "cuda swiglu: packed gate|up has odd width %lld", (long long)cols);
        cols /= 2;
        upp = (const char *)gate->data + (size_t)cols * hr_dtype_size(gate->dtype);
    } else {
        if (hr_tensor_nelem(up) != rows * cols || gate->dtype != up->dtype)
            return hr_err_set(&be->err, HR_EINVAL, "cuda swiglu: gate/up shape or dtype mismatch");
        upp = (const char *)up->data;
    }
    if (hr_tensor_nelem(out) != rows * cols || out->dtype != gate->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cuda swiglu: out shape/dtype mismatch");
    CU_TRY(c, cu_swiglu(c->stream, out->data, gate->data, upp, out->dtype, rows, cols, ldg, ldu, *act), "swiglu");
    return HR_OK;
}

static int cu_qkv_rope_store_op(hr_backend *be, hr_tensor *q_out, const hr_tensor *qkv, hr_tensor *kc, hr_tensor *vc,
                                int n_heads, int n_kv, const hr_rope *r, const hr_step *step) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    int hd = r->head_dim;
    int64_t qd = (int64_t)n_heads * hd, kvd = (int64_t)n_kv * hd;
    if (r->rot_dim < 2 || r->rot_dim > hd || r->rot_dim % 2 || n_heads <= 0 || n_kv <= 0 ||
        hr_tensor_cols(qkv) < qd + 2 * kvd || hr_tensor_rows(qkv) < step->n_tokens || hr_tensor_cols(q_out) != qd ||
        hr_tensor_rows(q_out) < step->n_tokens || q_out->dtype != qkv->dtype || kc->ndim != 4 ||
        kc->ne[2] * kc->ne[3] != kvd || kc->ne[3] != hd || kc->dtype != vc->dtype || kc->nbytes != vc->nbytes ||
        q_out->data == qkv->data)
        return hr_err_set(&be->err, HR_EINVAL,
                          "cuda qkv_rope_store: heads %d/%d dim %d rot %d vs qkv cols %lld, q cols %lld, cache [.., .., %lld, %lld]",
                          n_heads, n_kv, hd, r->rot_dim, (long long)hr_tensor_cols(qkv), (long long)hr_tensor_cols(q_out),
                          (long long)kc->ne[2], (long long)kc->ne[3]);
    const float *tab = rope_table(c, r, &rc);
    if (!tab) return rc;
    CU_TRY(c, cu_qkv_rope_store(c->stream, q_out->data, qkv->data, qkv->dtype, hr_tensor_cols(qkv), kc->data, vc->data,
                                kc->dtype, step->n_tokens, n_heads, n_kv, hd, r->rot_dim, tab, r->mscale,
                                c->step.positions, c->step.slots, kc->ne[0] * kc->ne[1]),
           "qkv_rope_store");
    return HR_OK;
}

/* Expert segments of the grouped path are padded to multiples of this many
 * rows: aligned operands for cuBLASLt, and fewer distinct plan shapes. */
#define MOE_PAD 16
#define MOE_GROUPED_MIN_T 257 /* above CU_GRAPH_MAX_TOKENS: never inside a graph capture */

static int64_t moe_pad_rows(int64_t n) { return HR_CDIV(n, (int64_t)MOE_PAD) * MOE_PAD; }

/* Scratch bytes of the grouped path per padded row (maps, gathered x,
 * gate|up, SwiGLU output, down output) */
static size_t moe_grouped_row_bytes(int64_t H, int64_t F) { return 8 + (size_t)H * 2 + (size_t)F * 6 + (size_t)H * 4; }

/* Whether a step of T tokens takes the grouped path: prefill-sized steps
 * (never captured; the path reads the routing on the host), BF16 experts
 * (cuBLASLt), not while a capture runs. HEARTH_CUDA_MOE_GROUPED=0: off. */
static bool moe_grouped_ok(cu_backend *c, const hr_tensor *x, const hr_moe *m, int64_t T) {
    if (!hr_env_on("HEARTH_CUDA_MOE_GROUPED", true) || T < MOE_GROUPED_MIN_T || x->dtype != HR_BF16 ||
        m->gate->dtype != HR_BF16)
        return false;
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(c->stream, &cap) == cudaSuccess && cap == cudaStreamCaptureStatusNone;
}

/* One expert's linear in the grouped path: n sorted BF16 rows x [n, K]
 * (stride K) times expert ei's [N, K] slice of w plus its bias row, into
 * out [n, N] of type to with row stride ldo. */
static int moe_expert_linear(cu_backend *c, const bf16 *x, int64_t n, int64_t K, const hr_tensor *w,
                             const hr_tensor *bias, int ei, int64_t N, hr_dtype to, void *out, int64_t ldo) {
    cu_gemv_args g;
    memset(&g, 0, sizeof(g));
    g.x = x;
    g.tx = HR_BF16;
    g.ldx = K;
    g.tw = w->dtype;
    g.K = K;
    g.N = N;
    g.T = (int)n;
    g.alpha = 1.0f;
    g.to = to;
    g.ldo = ldo;
    g.w = (const char *)w->data + (size_t)ei * N * K * hr_dtype_size(w->dtype);
    g.bias = bias ? (const float *)bias->data + (size_t)ei * N : NULL;
    g.out = out;
    return cu_linear_raw(c, g, 0.0f);
}

/* The grouped path for one chunk of tc tokens whose routing (ex, wt: P =
 * tc x k pairs) is on the device: the expert ids come to the host, pairs
 * are sorted by expert (counting sort, each expert's rows padded to
 * moe_pad_rows), the token rows are gathered in that order, and each expert
 * runs gate, up and down as cuBLASLt GEMMs over its rows (its weights read
 * once per chunk, not once per pair); SwiGLU runs over all rows; the down
 * outputs go back to pair order for the weighted combine. */
static int moe_grouped_chunk(cu_backend *c, const hr_moe *m, const char *xc, int tc, int64_t H, int64_t F,
                             const int32_t *ex, float *y, char *scratch_base, size_t scratch_left) {
    hr_backend *be = &c->base;
    const int E = m->n_experts, k = m->top_k, P = tc * k;
    /* host: expert ids -> per-expert counts -> padded offsets -> row maps */
    int64_t need_h = 3 * (int64_t)P + (int64_t)E * MOE_PAD;
    if (need_h > c->moe_host_cap) {
        if (c->moe_host) cudaFreeHost(c->moe_host);
        c->moe_host = NULL;
        c->moe_host_cap = 0;
        int64_t cap = HR_MAX(need_h, (int64_t)1 << 16);
        CU_TRY(c, cudaMallocHost((void **)&c->moe_host, (size_t)cap * sizeof(int32_t)), "moe pinned alloc");
        c->moe_host_cap = cap;
    }
    int32_t *h_ex = c->moe_host;
    CU_TRY(c, cudaMemcpyAsync(h_ex, ex, (size_t)P * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream), "moe ids");
    CU_TRY(c, cudaStreamSynchronize(c->stream), "moe ids");
    int64_t *off = (int64_t *)calloc((size_t)E + 1, sizeof(int64_t));
    int64_t *fill = (int64_t *)calloc((size_t)E, sizeof(int64_t));
    if (!off || !fill) {
        free(off);
        free(fill);
        return hr_err_set(&be->err, HR_ENOMEM, "cuda moe: out of host memory");
    }
    for (int p = 0; p < P; p++) {
        int e = h_ex[p];
        if (e < 0 || e >= E) {
            free(off);
            free(fill);
            return hr_err_set(&be->err, HR_EIO, "cuda moe: routing produced expert %d of %d", e, E);
        }
        off[e + 1]++;
    }
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + moe_pad_rows(off[e + 1]);
    const int64_t R = off[E]; /* padded rows */
    int32_t *h_rows = h_ex + P;   /* [R]: token row (chunk-relative) of each sorted row; padding reads row 0 */
    int32_t *h_inv = h_rows + R;  /* [P]: sorted row of each pair */
    for (int64_t i = 0; i < R; i++) h_rows[i] = 0;
    for (int p = 0; p < P; p++) {
        int e = h_ex[p];
        int64_t r = off[e] + fill[e]++;
        h_rows[r] = p / k;
        h_inv[p] = (int32_t)r;
    }
    /* device: [R + P] int32 maps, xs [R, H] bf16, hg|hu [R, 2F] bf16, act [R, F] bf16, ys [R, H] f32 */
    size_t b_maps = HR_CDIV((size_t)(R + P) * 4, 256) * 256, b_xs = HR_CDIV((size_t)R * H * 2, 256) * 256,
           b_gu = HR_CDIV((size_t)R * 2 * F * 2, 256) * 256, b_act = HR_CDIV((size_t)R * F * 2, 256) * 256,
           b_ys = HR_CDIV((size_t)R * H * 4, 256) * 256;
    int rc = HR_OK;
    if (b_maps + b_xs + b_gu + b_act + b_ys > scratch_left) {
        rc = hr_err_set(&be->err, HR_ENOMEM, "cuda moe: scratch too small for %lld grouped rows", (long long)R);
        goto done;
    }
    {
        char *sp = scratch_base;
        int32_t *d_rows = (int32_t *)sp, *d_inv = d_rows + R;
        sp += b_maps;
        bf16 *xs = (bf16 *)sp;
        sp += b_xs;
        bf16 *gu = (bf16 *)sp;
        sp += b_gu;
        bf16 *act = (bf16 *)sp;
        sp += b_act;
        float *ys = (float *)sp;
        cudaError_t e;
        if ((e = cudaMemcpyAsync(d_rows, h_rows, (size_t)(R + P) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                 c->stream)) != cudaSuccess ||
            (e = cu_get_rows(c->stream, xs, HR_BF16, xc, HR_BF16, H, d_rows, (int)R)) != cudaSuccess) {
            rc = cu_fail(c, e, "moe gather");
            goto done;
        }
        for (int ei = 0; ei < E && rc == HR_OK; ei++) {
            int64_t n = off[ei + 1] - off[ei];
            if (n == 0) continue;
            const bf16 *xe = xs + off[ei] * H;
            bf16 *ge = gu + off[ei] * 2 * F;
            if ((rc = moe_expert_linear(c, xe, n, H, m->gate, m->gate_bias, ei, F, HR_BF16, ge, 2 * F)) == HR_OK)
                rc = moe_expert_linear(c, xe, n, H, m->up, m->up_bias, ei, F, HR_BF16, ge + F, 2 * F);
        }
        if (rc) goto done;
        if ((e = cu_swiglu(c->stream, act, gu, gu + F, HR_BF16, R, F, 2 * F, 2 * F, m->act)) != cudaSuccess) {
            rc = cu_fail(c, e, "moe swiglu");
            goto done;
        }
        for (int ei = 0; ei < E && rc == HR_OK; ei++) {
            int64_t n = off[ei + 1] - off[ei];
            if (n > 0) rc = moe_expert_linear(c, act + off[ei] * F, n, F, m->down, m->down_bias, ei, H, HR_F32,
                                              ys + off[ei] * H, H);
        }
        if (rc) goto done;
        if ((e = cu_get_rows(c->stream, y, HR_F32, ys, HR_F32, H, d_inv, P)) != cudaSuccess)
            rc = cu_fail(c, e, "moe scatter");
    }
done:
    free(off);
    free(fill);
    return rc;
}

/* Whether a chunk of P pairs over E experts takes the GEMV's segment mode
 * (pairs sorted by expert on the GPU, each expert's weights streamed once
 * per chunk of up to 16 of its pairs) rather than its pair mode (weights
 * streamed once per pair): when experts repeat, i.e. P >= E.
 * HEARTH_CUDA_MOE_SEG=0: always the pair mode. */
static bool moe_seg_ok(int P, int E) {
    return hr_env_on("HEARTH_CUDA_MOE_SEG", true) && E <= 1024 && P >= E && P >= 8;
}

/* Whether a segment-mode step with BF16 operands takes chunks of 64 pairs
 * (the grouped tensor-core GEMM of gemm/moe_gemm.cu) instead of 16: when
 * experts average 32 pairs or more. HEARTH_CUDA_MOE_GEMM=0: never. */
static bool moe_gemm_on(int P, int E) {
    return hr_env_on("HEARTH_CUDA_MOE_GEMM", true) && hr_env_on("HEARTH_CUDA_MOE_TC", true) && P >= 32 * E;
}

/* The GEMV path for one chunk of tc tokens whose routing (ex: P = tc x k
 * pairs) is on the device: gate and up -> SwiGLU -> down into y [P, H]
 * F32. The segment mode when experts repeat (moe_seg_ok), else the pair
 * mode. hg, hu: [P, F] F32 scratch each (the segment mode's BF16
 * intermediates use their bytes). */
static int moe_gemv_chunk(cu_backend *c, const hr_moe *m, hr_dtype tx, const char *xc, int tc, int64_t H, int64_t F,
                          const int32_t *ex, float *hg, float *hu, float *y) {
    hr_backend *be = &c->base;
    const int E = m->n_experts, k = m->top_k, P = tc * k;
    cudaError_t e;
    cu_gemv_args g;
    memset(&g, 0, sizeof(g));
    /* segment mode with BF16 x and experts: gate|up in BF16 [P, 2F]
     * (hg's bytes), SwiGLU to BF16 [P, F] (hu's), chunks of 16 for the
     * tensor-core kernel, as the dense MLP rounds its intermediates */
    const bool seg = moe_seg_ok(P, E), seg16 = seg && tx == HR_BF16 && m->gate->dtype == HR_BF16;
    if (seg) {
        /* both kinds of GEMV input (bf16 x, f32 SwiGLU) take 4 and 16 rows */
        g.seg_nt = seg16 && moe_gemm_on(P, E) ? 64 : seg16 || P >= 8 * E ? 16 : 4;
        g.max_chunks = cu_moe_max_chunks(P, E, g.seg_nt);
        int32_t *perm = (int32_t *)cu_scratch_push(c, (size_t)P * 4);
        int4 *chunks = (int4 *)cu_scratch_push(c, (size_t)g.max_chunks * sizeof(int4));
        int *n_chunks = (int *)cu_scratch_push(c, sizeof(int));
        if (!n_chunks) return hr_err_set(&be->err, HR_ENOMEM, "cuda moe: scratch too small");
        if ((e = cu_moe_segments(c->stream, ex, P, E, g.seg_nt, perm, chunks, n_chunks)) != cudaSuccess)
            return cu_fail(c, e, "moe segments");
        g.perm = perm;
        g.chunks = chunks;
        g.n_chunks = n_chunks;
    }
    g.x = xc;
    g.tx = tx;
    g.ldx = H;
    g.tw = m->gate->dtype;
    g.K = H;
    g.N = F;
    g.T = P;
    g.alpha = 1.0f;
    g.to = HR_F32;
    g.ldo = F;
    g.expert = g.chunks ? NULL : ex;
    g.xrow_div = k;
    g.w_stride = F * H;
    cu_gemv_args passes[3] = {g, g, g};
    passes[0].w = m->gate->data;
    passes[0].bias = m->gate_bias ? (const float *)m->gate_bias->data : NULL;
    passes[0].out = hg;
    passes[1].w = m->up->data;
    passes[1].bias = m->up_bias ? (const float *)m->up_bias->data : NULL;
    passes[1].out = hu;
    /* down: input is the SwiGLU output (in hg), one row per pair */
    passes[2].x = hg;
    passes[2].tx = HR_F32;
    passes[2].ldx = F;
    passes[2].w = m->down->data;
    passes[2].K = F;
    passes[2].N = H;
    passes[2].ldo = H;
    passes[2].xrow_div = 1;
    passes[2].w_stride = H * F;
    passes[2].bias = m->down_bias ? (const float *)m->down_bias->data : NULL;
    passes[2].out = y;
    bf16 *gu = (bf16 *)hg, *act = (bf16 *)hu;
    if (seg16) {
        passes[0].to = passes[1].to = HR_BF16;
        passes[0].ldo = passes[1].ldo = 2 * F;
        passes[0].out = gu;
        passes[1].out = gu + F;
        passes[2].x = act;
        passes[2].tx = HR_BF16;
    }
    /* gate and up in one launch where the GEMV takes two linears of the
     * same pairs (pair mode, tensor-core segments); HEARTH_CUDA_MOE_FUSE=0:
     * two launches */
    int first = 0;
    cu_gemv_args fused = passes[0];
    fused.nseg = 2;
    for (int i = 0; i < 2; i++) {
        fused.seg[i].w = passes[i].w;
        fused.seg[i].bias = passes[i].bias;
        fused.seg[i].out = passes[i].out;
        fused.seg[i].N = F;
        fused.seg[i].ldo = passes[i].ldo;
    }
    if (hr_env_on("HEARTH_CUDA_MOE_FUSE", true) && cu_gemv_ok(&fused)) {
        if ((e = cu_gemv(c->stream, &fused, 1, NULL)) != cudaSuccess) return cu_fail(c, e, "moe expert gemv");
        first = 2;
    }
    for (int i = first; i < 3; i++) {
        if (i == 2 && (e = seg16 ? cu_swiglu(c->stream, act, gu, gu + F, HR_BF16, P, F, 2 * F, 2 * F, m->act)
                                 : cu_swiglu(c->stream, hg, hg, hu, HR_F32, P, F, F, F, m->act)) != cudaSuccess)
            return cu_fail(c, e, "moe swiglu");
        if (passes[i].chunks && !cu_gemv_ok(&passes[i])) { /* shape the segment mode cannot take: pair mode */
            passes[i].chunks = NULL;
            passes[i].expert = ex;
        }
        e = cu_gemv_ok(&passes[i]) ? cu_gemv(c->stream, &passes[i], 1, NULL) : cu_gemm_tiled(c->stream, &passes[i]);
        if (e != cudaSuccess) return cu_fail(c, e, "moe expert gemv");
    }
    return HR_OK;
}

/* Experts run per (token, chosen expert) pair through the GEMV: route on
 * the GPU, gate/up -> SwiGLU -> down in float scratch, weighted sum. The
 * GEMV takes the pairs sorted by expert (segment mode) once experts repeat
 * in a step, else one pair per block column (pair mode); neither needs the
 * routing on the host, so captured decode steps run either. Tokens go in
 * chunks so the float intermediates fit the scratch budget. Prefill-sized
 * steps take the grouped path (moe_grouped_chunk) instead. */
static int cu_moe_op(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_moe *m) {
    cu_backend *c = cu_of(be);
    int64_t T = hr_tensor_rows(x), H = hr_tensor_cols(x);
    int E = m->n_experts, k = m->top_k;
    if (!m->gate || !m->up || !m->down || m->gate->ndim != 3 || m->gate->ne[0] != E || m->gate->ne[2] != H ||
        m->down->ndim != 3 || m->down->ne[1] != H || m->down->ne[2] != m->gate->ne[1] ||
        m->router.w->ne[0] != E || m->router.w->ne[1] != H || k < 1 || k > E || hr_tensor_nelem(out) != T * H ||
        m->gate->dtype != m->up->dtype || m->gate->dtype != m->down->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cuda moe: shape mismatch (E %d k %d H %lld)", E, k, (long long)H);
    if (T <= 0) return HR_OK;
    int64_t F = m->gate->ne[1];
    size_t budget = HR_MAX(c->scratch_cap, (size_t)256 << 20);
    const size_t row_b = moe_grouped_row_bytes(H, F), fixed_g = (size_t)E * MOE_PAD * row_b + 16 * 256;
    bool grouped = moe_grouped_ok(c, x, m, T) && budget > 2 * fixed_g;
    size_t per_tok = grouped ? (size_t)E * 4 + (size_t)k * (8 + H * 4) + (size_t)k * row_b + 8 * 256
                             : (size_t)E * 4 + (size_t)k * 8 + (size_t)k * (2 * F + H) * 4 + 8 * 256 +
                                   (size_t)k * 20; /* segment mode: perm + chunks */
    int64_t Tc = HR_MAX((int64_t)1, HR_MIN(T, (int64_t)((budget - (grouped ? fixed_g : 0)) / per_tok)));
    Tc = HR_MIN(Tc, (int64_t)(65535 / k));

    cu_gemv_args r;
    memset(&r, 0, sizeof(r));
    r.tx = x->dtype;
    r.ldx = H;
    r.w = m->router.w->data;
    r.tw = m->router.w->dtype;
    r.K = H;
    r.N = E;
    r.T = (int)Tc;
    r.bias = m->router.bias ? (const float *)m->router.bias->data : NULL;
    r.alpha = 1.0f;
    r.to = HR_F32;
    r.ldo = E;
    size_t rneed = cu_linear_scratch(c, &r, m->router.input_scale);
    int rc = cu_scratch_reserve(c, Tc * per_tok + (grouped ? fixed_g : (size_t)E * 16 + 3 * 256) + rneed + 4096);
    if (rc) return rc;
    size_t xs = hr_dtype_size(x->dtype), os = hr_dtype_size(out->dtype);
    for (int64_t t0 = 0; t0 < T && rc == HR_OK; t0 += Tc) {
        int tc = (int)HR_MIN(Tc, T - t0), P = tc * k;
        c->scratch_top = 0;
        float *logits = (float *)cu_scratch_push(c, (size_t)tc * E * 4);
        int32_t *ex = (int32_t *)cu_scratch_push(c, (size_t)P * 4);
        float *wt = (float *)cu_scratch_push(c, (size_t)P * 4);
        float *y = (float *)cu_scratch_push(c, (size_t)P * H * 4);
        float *hg = NULL, *hu = NULL;
        char *region = NULL;
        size_t region_b = (size_t)(P + (int64_t)E * MOE_PAD) * row_b + 8 * 256;
        if (grouped) {
            region = (char *)cu_scratch_push(c, region_b);
        } else {
            hg = (float *)cu_scratch_push(c, (size_t)P * F * 4);
            hu = (float *)cu_scratch_push(c, (size_t)P * F * 4);
        }
        if (!y || (grouped ? !region : !hu)) {
            rc = hr_err_set(&be->err, HR_ENOMEM, "cuda moe: scratch too small");
            break;
        }
        const char *xc = (const char *)x->data + (size_t)t0 * H * xs;
        r.x = xc;
        r.T = tc;
        r.out = logits;
        if ((rc = cu_linear_raw(c, r, m->router.input_scale))) break;
        cudaError_t e = cu_moe_route(c->stream, logits, tc, E, k, m->route, m->renormalize, ex, wt);
        if (e != cudaSuccess) {
            rc = cu_fail(c, e, "moe route");
            break;
        }
        rc = grouped ? moe_grouped_chunk(c, m, xc, tc, H, F, ex, y, region, region_b)
                     : moe_gemv_chunk(c, m, x->dtype, xc, tc, H, F, ex, hg, hu, y);
        if (rc) break;
        e = cu_moe_combine(c->stream, (char *)out->data + (size_t)t0 * H * os, out->dtype, H, y, wt, tc, k, H);
        if (e != cudaSuccess) rc = cu_fail(c, e, "moe combine");
    }
    c->scratch_top = 0;
    return rc;
}

static int cu_get_rows_op(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_step *step) {
    cu_backend *c = cu_of(be);
    int rc = want_step(c, step);
    if (rc) return rc;
    int64_t cols = hr_tensor_cols(x);
    if (hr_tensor_cols(out) != cols || hr_tensor_rows(out) < step->n_logits)
        return hr_err_set(&be->err, HR_EINVAL, "cuda get_rows: out shape mismatch");
    CU_TRY(c, cu_get_rows(c->stream, out->data, out->dtype, x->data, x->dtype, cols, c->step.logit_rows,
                          step->n_logits),
           "get_rows");
    return HR_OK;
}

/* ---- fused linears during a capture ----------------------------------- */
/* A linear can join a fused GEMV: one token, BF16 x and weights, no FP8 input. */
static bool fusable(const hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    return hr_tensor_rows(x) == 1 && x->dtype == HR_BF16 && l->w->dtype == HR_BF16 && l->input_scale <= 0 &&
           (out->dtype == HR_BF16 || out->dtype == HR_F32);
}

int cu_pend_flush(cu_backend *c) {
    int n = c->n_pend;
    c->n_pend = 0;
    if (n == 0) return HR_OK;
    if (n == 1) return cu_linear_op(&c->base, &c->pend[0].out, &c->pend[0].x, &c->pend[0].l);
    cu_gemv_args a;
    memset(&a, 0, sizeof(a));
    a.x = c->pend[0].x.data;
    a.tx = HR_BF16;
    a.ldx = hr_tensor_cols(&c->pend[0].x);
    a.tw = HR_BF16;
    a.K = a.ldx;
    a.T = 1;
    a.alpha = 1.0f;
    a.to = c->pend[0].out.dtype;
    a.nseg = n;
    for (int i = 0; i < n; i++) {
        const hr_linear *l = &c->pend[i].l;
        a.seg[i].w = l->w->data;
        a.seg[i].bias = l->bias ? (const float *)l->bias->data : NULL;
        a.seg[i].out = c->pend[i].out.data;
        a.seg[i].N = l->w->ne[0];
        a.seg[i].ldo = l->w->ne[0];
    }
    cu_gemv_splits(&a, c->n_sm); /* rows per warp; fused launches never split */
    if (!cu_gemv_ok(&a)) { /* alignment: launch them one by one */
        for (int i = 0; i < n; i++) {
            int rc = cu_linear_op(&c->base, &c->pend[i].out, &c->pend[i].x, &c->pend[i].l);
            if (rc) return rc;
        }
        return HR_OK;
    }
    CU_TRY(c, cu_gemv(c->stream, &a, 1, NULL), "fused gemv");
    return HR_OK;
}

/* Holds a capture-mode linear back when it can fuse with the held ones;
 * returns 1 when held, 0 when the caller must run it now, < 0 on error. */
static int pend_linear(cu_backend *c, hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    int rc = linear_check(&c->base, out, x, l);
    if (rc) return rc;
    /* fused linears all read x before any writes: none may write into x */
    bool ok = fusable(out, x, l) && out->data != x->data;
    if (c->n_pend > 0) {
        const hr_tensor *px = &c->pend[0].x;
        bool joins = ok && c->n_pend < 3 && px->data == x->data && hr_tensor_cols(px) == hr_tensor_cols(x) &&
                     c->pend[0].out.dtype == out->dtype;
        for (int i = 0; i < c->n_pend; i++) joins = joins && c->pend[i].out.data != out->data;
        if (!joins && (rc = cu_pend_flush(c))) return rc;
    }
    if (!ok) return 0;
    c->pend[c->n_pend].out = *out;
    c->pend[c->n_pend].x = *x;
    c->pend[c->n_pend].l = *l;
    c->n_pend++;
    return 1;
}

/* ---- logging wrappers (the op table): eager ops run at once; in a graph
 * capture they also log; in a replay they only log (step_graph.cu) ----- */
static int w_embed(hr_backend *be, hr_tensor *out, const hr_tensor *table, const hr_step *step) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_EMBED);
    if (o) {
        o->n_t = 2;
        o->t[0] = *out;
        o->t[1] = *table;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_embed_op(be, out, table, step);
}

static int w_rmsnorm(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_tensor *w, float eps) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_RMSNORM);
    if (o) {
        o->n_t = 3;
        o->t[0] = *out;
        o->t[1] = *x;
        o->t[2] = *w;
        o->p.eps = eps;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_rmsnorm_op(be, out, x, w, eps);
}

static int w_add_rmsnorm(hr_backend *be, hr_tensor *out, hr_tensor *res, const hr_tensor *x, const hr_tensor *w,
                         float eps) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_ADD_RMSNORM);
    if (o) {
        o->n_t = 4;
        o->t[0] = *out;
        o->t[1] = *res;
        o->t[2] = *x;
        o->t[3] = *w;
        o->p.eps = eps;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_add_rmsnorm_op(be, out, res, x, w, eps);
}

static int w_add(hr_backend *be, hr_tensor *out, const hr_tensor *a, const hr_tensor *b) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_ADD);
    if (o) {
        o->n_t = 3;
        o->t[0] = *out;
        o->t[1] = *a;
        o->t[2] = *b;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_add_op(be, out, a, b);
}

static int w_linear(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_LINEAR);
    if (o) {
        o->n_t = 2;
        o->t[0] = *out;
        o->t[1] = *x;
        o->p.lin = *l;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        if (cu_of(be)->fuse_linears) {
            int held = pend_linear(cu_of(be), out, x, l);
            if (held) return held < 0 ? held : HR_OK;
        }
    }
    return cu_linear_op(be, out, x, l);
}

static int w_rope(hr_backend *be, hr_tensor *x, int n_heads, const hr_rope *r, const hr_step *step) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_ROPE);
    if (o) {
        o->n_t = 1;
        o->t[0] = *x;
        o->i0 = n_heads;
        o->p.rope = *r;
        o->tab = rope_table_cached(cu_of(be), r); /* new contents: no replay (same_op) */
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_rope_op(be, x, n_heads, r, step);
}

static int w_kv_store(hr_backend *be, hr_tensor *kc, hr_tensor *vc, const hr_tensor *k, const hr_tensor *v,
                      const hr_step *step) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_KV_STORE);
    if (o) {
        o->n_t = 4;
        o->t[0] = *kc;
        o->t[1] = *vc;
        o->t[2] = *k;
        o->t[3] = *v;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_kv_store_op(be, kc, vc, k, v, step);
}

static int w_attention(hr_backend *be, hr_tensor *out, const hr_tensor *q, const hr_tensor *kc, const hr_tensor *vc,
                       const hr_step *step, const hr_attn_params *p) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_ATTENTION);
    if (o) {
        o->n_t = 4;
        o->t[0] = *out;
        o->t[1] = *q;
        o->t[2] = *kc;
        o->t[3] = *vc;
        o->p.attn = *p;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_attention_op(be, out, q, kc, vc, step, p);
}

static int w_swiglu(hr_backend *be, hr_tensor *out, const hr_tensor *gate, const hr_tensor *up, const hr_act *act) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_SWIGLU);
    if (o) {
        o->n_t = up ? 3 : 2;
        o->t[0] = *out;
        o->t[1] = *gate;
        if (up) o->t[2] = *up;
        o->p.act = *act;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_swiglu_op(be, out, gate, up, act);
}

static int w_qkv_rope_store(hr_backend *be, hr_tensor *q_out, const hr_tensor *qkv, hr_tensor *kc, hr_tensor *vc,
                            int n_heads, int n_kv, const hr_rope *r, const hr_step *step) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_QKV_ROPE_STORE);
    if (o) {
        o->n_t = 4;
        o->t[0] = *q_out;
        o->t[1] = *qkv;
        o->t[2] = *kc;
        o->t[3] = *vc;
        o->i0 = n_heads;
        o->i1 = n_kv;
        o->p.rope = *r;
        o->tab = rope_table_cached(cu_of(be), r);
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_qkv_rope_store_op(be, q_out, qkv, kc, vc, n_heads, n_kv, r, step);
}

static int w_moe(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_moe *m) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_MOE);
    if (o) {
        o->n_t = 2;
        o->t[0] = *out;
        o->t[1] = *x;
        o->p.moe = *m;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_moe_op(be, out, x, m);
}

static int w_get_rows(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_step *step) {
    cu_op *o = cu_graph_log(cu_of(be), CU_OP_GET_ROWS);
    if (o) {
        o->n_t = 2;
        o->t[0] = *out;
        o->t[1] = *x;
        if (cu_of(be)->mode == CU_REPLAY) return HR_OK;
        int prc = cu_pend_flush(cu_of(be));
        if (prc) return prc;
    }
    return cu_get_rows_op(be, out, x, step);
}

/* The logged step is the current one (step_begin uploaded it; step_end has
 * not yet cleared it). */
int cu_exec_op(cu_backend *c, const cu_op *o) {
    hr_backend *be = &c->base;
    const hr_step *st = c->step.host;
    hr_tensor t[4];
    memcpy(t, o->t, sizeof(t));
    switch (o->kind) {
    case CU_OP_EMBED: return cu_embed_op(be, &t[0], &t[1], st);
    case CU_OP_RMSNORM: return cu_rmsnorm_op(be, &t[0], &t[1], &t[2], o->p.eps);
    case CU_OP_ADD_RMSNORM: return cu_add_rmsnorm_op(be, &t[0], &t[1], &t[2], &t[3], o->p.eps);
    case CU_OP_ADD: return cu_add_op(be, &t[0], &t[1], &t[2]);
    case CU_OP_LINEAR: return cu_linear_op(be, &t[0], &t[1], &o->p.lin);
    case CU_OP_ROPE: return cu_rope_op(be, &t[0], o->i0, &o->p.rope, st);
    case CU_OP_KV_STORE: return cu_kv_store_op(be, &t[0], &t[1], &t[2], &t[3], st);
    case CU_OP_ATTENTION: return cu_attention_op(be, &t[0], &t[1], &t[2], &t[3], st, &o->p.attn);
    case CU_OP_SWIGLU: return cu_swiglu_op(be, &t[0], &t[1], o->n_t == 3 ? &t[2] : NULL, &o->p.act);
    case CU_OP_QKV_ROPE_STORE:
        return cu_qkv_rope_store_op(be, &t[0], &t[1], &t[2], &t[3], o->i0, o->i1, &o->p.rope, st);
    case CU_OP_MOE: return cu_moe_op(be, &t[0], &t[1], &o->p.moe);
    case CU_OP_GET_ROWS: return cu_get_rows_op(be, &t[0], &t[1], st);
    }
    return hr_err_set(&be->err, HR_EINVAL, "cuda: unknown logged op %d", (int)o->kind);
}

static int cu_copy_op(hr_backend *be, hr_tensor *dst, const hr_tensor *src) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (dst->nbytes != src->nbytes || dst->dtype != src->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cuda copy: size/dtype mismatch");
    CU_TRY(c, cudaMemcpyAsync(dst->data, src->data, src->nbytes, cudaMemcpyDeviceToDevice, c->stream), "copy");
    return HR_OK;
}

/* Greedy decoding: the argmax ids, not the logits, cross to the host (rows x
 * 4 bytes into a pinned buffer instead of rows x vocab x 4 into pageable). */
static int cu_argmax_op(hr_backend *be, const hr_tensor *logits, int32_t *ids_host) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (logits->dtype != HR_F32 || logits->ndim < 1)
        return hr_err_set(&be->err, HR_EINVAL, "cuda argmax: '%s' is not an F32 matrix", logits->name);
    int64_t rows = hr_tensor_rows(logits), vocab = hr_tensor_cols(logits);
    if (rows <= 0) {
        if (!ids_host) { /* nothing on the way, but a wait of 0 ids must find it */
            c->ids_pending = c->ids_host ? c->ids_host : (const int32_t *)&c->ids_pending_n;
            c->ids_pending_n = 0;
        }
        return HR_OK;
    }
    if (vocab <= 0 || vocab > INT32_MAX)
        return hr_err_set(&be->err, HR_EINVAL, "cuda argmax: %lld columns", (long long)vocab);
    if (rows > c->ids_cap) {
        /* grows only on a larger batch than ever seen: the stream is idle after the sync */
        CU_TRY(c, cudaStreamSynchronize(c->stream), "argmax sync");
        if (c->ids_dev) cudaFree(c->ids_dev);
        if (c->ids_host) cudaFreeHost(c->ids_host);
        c->ids_dev = NULL;
        c->ids_host = NULL;
        c->ids_cap = 0;
        int64_t cap = rows < 256 ? 256 : rows;
        CU_TRY(c, cudaMalloc((void **)&c->ids_dev, (size_t)cap * sizeof(int32_t)), "argmax alloc");
        CU_TRY(c, cudaMallocHost((void **)&c->ids_host, (size_t)cap * sizeof(int32_t)), "argmax pinned alloc");
        c->ids_cap = cap;
    }
    CU_TRY(c, cu_argmax(c->stream, c->ids_dev, (const float *)logits->data, rows, vocab), "argmax");
    CU_TRY(c, cudaMemcpyAsync(c->ids_host, c->ids_dev, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost,
                              c->stream),
           "argmax copy");
    if (!ids_host) { /* left on the way: ids_wait */
        c->ids_pending = c->ids_host;
        c->ids_pending_n = (int)rows;
        return HR_OK;
    }
    CU_TRY(c, cudaStreamSynchronize(c->stream), "argmax sync");
    memcpy(ids_host, c->ids_host, (size_t)rows * sizeof(int32_t));
    return HR_OK;
}

/* The ids of the last argmax / sample called without a host buffer. */
static int cu_ids_wait_op(hr_backend *be, int32_t *ids_host, int n) {
    cu_backend *c = cu_of(be);
    const int32_t *src = c->ids_pending;
    int have = c->ids_pending_n;
    c->ids_pending = NULL;
    c->ids_pending_n = 0;
    if (!src || n != have || !ids_host)
        return hr_err_set(&be->err, HR_EINVAL, "cuda ids_wait: %d ids asked, %d pending", n, src ? have : 0);
    CU_TRY(c, cudaStreamSynchronize(c->stream), "ids sync");
    memcpy(ids_host, src, (size_t)n * sizeof(int32_t));
    return HR_OK;
}

static int cu_batch_bucket_op(hr_backend *be, int n_seqs) { return cu_batch_bucket(cu_of(be), n_seqs); }

static int cu_mem_info(hr_backend *be, size_t *in_use, size_t *peak, size_t *total) {
    cu_backend *c = cu_of(be);
    size_t fr = 0, tot = 0;
    CU_TRY(c, cudaMemGetInfo(&fr, &tot), "mem_info");
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
    if (total) *total = tot;
    return HR_OK;
}

static void cu_free_backend(hr_backend *be) {
    cu_backend *c = cu_of(be);
    if (!c) return;
    cu_graphs_free(c);
    if (c->stream) cudaStreamSynchronize(c->stream);
    cu_upload_free(c); /* waits for its copy stream */
    for (int i = 0; i < c->n_free; i++) cudaFree(c->free_list[i].p);
    free(c->free_list);
    for (int i = 0; i < c->n_rope_tabs; i++) {
        cudaFree(c->rope_tabs[i].dev);
        free(c->rope_tabs[i].copy);
    }
    if (c->scratch) cudaFree(c->scratch);
    if (c->stage_host) cudaFreeHost(c->stage_host);
    if (c->stage_dev) cudaFree(c->stage_dev);
    if (c->ids_host) cudaFreeHost(c->ids_host);
    if (c->moe_host) cudaFreeHost(c->moe_host);
    if (c->ids_dev) cudaFree(c->ids_dev);
    cu_sample_free(c);
    if (c->stage_done) cudaEventDestroy(c->stage_done);
    cu_lt_cache_free(c);
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->wg_sem) cudaFree(c->wg_sem);
    if (c->wg_ws) cudaFree(c->wg_ws);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static hr_backend_ops make_ops(void) {
    hr_backend_ops o;
    memset(&o, 0, sizeof(o));
    o.name = "cuda";
    o.free = cu_free_backend;
    o.tensor_new = cu_tensor_new;
    o.tensor_free = cu_tensor_free;
    o.tensor_set = cu_tensor_set;
    o.tensor_get = cu_tensor_get;
    o.tensor_zero = cu_tensor_zero;
    o.supports_weight = cu_supports_weight;
    o.step_begin = cu_step_begin;
    o.step_end = cu_step_end;
    o.sync = cu_sync;
    o.embed = w_embed;
    o.rmsnorm = w_rmsnorm;
    o.add_rmsnorm = w_add_rmsnorm;
    o.add = w_add;
    o.linear = w_linear;
    o.rope = w_rope;
    o.kv_store = w_kv_store;
    o.attention = w_attention;
    o.swiglu = w_swiglu;
    o.qkv_rope_store = w_qkv_rope_store;
    o.moe = w_moe;
    o.get_rows = w_get_rows;
    o.copy = cu_copy_op;
    o.mem_info = cu_mem_info;
    o.argmax = cu_argmax_op;
    o.batch_bucket = cu_batch_bucket_op;
    o.sample = cu_sample_op;
    o.ids_wait = cu_ids_wait_op;
    return o;
}
static const hr_backend_ops cu_ops = make_ops();

extern "C" int hr_backend_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0;
}

int cu_capability(int dev) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major * 10 + minor;
}

extern "C" int hr_backend_cuda_capability(void) { return hr_backend_cuda_available() ? cu_capability(0) : 0; }

extern "C" hr_backend *hr_backend_cuda_create(int device_index, hr_err *err) {
    cu_backend *c = (cu_backend *)hr_xcalloc(1, sizeof(cu_backend));
    cudaError_t e;
    cublasStatus_t s;
    c->base.ops = &cu_ops;
    c->base.act_dtype = HR_BF16;
    c->base.kv_dtype = HR_BF16;
    c->base.host_memory = false;
    c->base.impl = c;
    c->device = device_index;
    cu_graphs_init(c);
    c->fuse_linears = hr_env_on("HEARTH_CUDA_FUSE", true);   /* 0: no fused linears in graphs (comparisons) */
    c->use_tc_attn = hr_env_on("HEARTH_CUDA_ATTN_TC", true); /* 0: the split kernel for prefill too (comparisons) */
    if ((e = cudaSetDevice(device_index)) != cudaSuccess) goto cuda_fail;
    if ((e = cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, device_index)) != cudaSuccess)
        goto cuda_fail;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) goto cuda_fail;
    if ((e = cudaEventCreateWithFlags(&c->stage_done, cudaEventDisableTiming)) != cudaSuccess) goto cuda_fail;
    c->lt_ws_size = CU_LT_WS;
    if ((e = cudaMalloc(&c->lt_ws, c->lt_ws_size)) != cudaSuccess) goto cuda_fail;
    if (cu_wgmma_mode() > 0) {
        if ((e = cudaMalloc((void **)&c->wg_sem, CU_WGMMA_SEMS * sizeof(int))) != cudaSuccess) goto cuda_fail;
        if ((e = cudaMemset(c->wg_sem, 0, CU_WGMMA_SEMS * sizeof(int))) != cudaSuccess) goto cuda_fail;
        if ((e = cudaMalloc((void **)&c->wg_ws, CU_WGMMA_WS)) != cudaSuccess) goto cuda_fail;
    }
    if ((s = cublasLtCreate(&c->lt)) != CUBLAS_STATUS_SUCCESS) {
        hr_err_set(err, HR_EIO, "cuda: cublasLtCreate failed (status %d)", (int)s);
        goto fail;
    }
    if (cu_scratch_reserve(c, CU_SCRATCH_MIN) != HR_OK) {
        if (err) *err = c->base.err;
        goto fail;
    }
    return &c->base;
cuda_fail:
    hr_err_set(err, e == cudaErrorNoDevice || e == cudaErrorInvalidDevice ? HR_ENOTFOUND : HR_EIO,
               "cuda: device %d: %s", device_index, cudaGetErrorString(e));
    cudaGetLastError();
fail:
    cu_free_backend(&c->base);
    return NULL;
}
