/* Every op of the CUDA backend against a float64 host reference of the
 * backend.h contract, on random inputs: ragged batches (decode, fresh and
 * chunked prefill in one step), block tables with holes and shuffled blocks,
 * GQA, sliding window, attention sinks, split-K GEMV, cuBLASLt, FP8 input
 * rounding, MoE with both routings. Inputs are rounded to the device dtype
 * before the reference sees them, so the error measured is the GPU's own.
 * Tolerances: relative L2 <= 1e-2 for BF16 outputs (BF16 keeps 8 bits:
 * one rounding is ~2e-3 relative), exact for pure data movement.
 * Set HEARTH_CUDA_BENCH=1 to also time the GEMV against a device copy.
 * Skips (77) without CUDA or without a device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/common.h"
#include "core/dtype.h"
#include "test.h"

#ifdef HEARTH_HAVE_CUDA

#define TOL_BF16 1e-2

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}
static int irand(int n) { return (int)((frand() + 1.0f) * 0.5f * n) % n; }

static hr_backend *be;

static float round_to(hr_dtype t, float v) {
    if (t == HR_BF16) return hr_bf16_to_f32(hr_f32_to_bf16(v));
    if (t == HR_F16) return hr_f16_to_f32(hr_f32_to_f16(v));
    return v;
}

/* New tensor filled with data (rounded in place to dt, so host == device). */
static hr_tensor *upload(hr_dtype dt, int nd, const int64_t *ne, float *data, const char *name) {
    hr_tensor *t = be->ops->tensor_new(be, dt, nd, ne, name);
    if (!t) {
        fprintf(stderr, "tensor_new: %s\n", be->err.msg);
        abort();
    }
    int64_t n = hr_tensor_nelem(t);
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    for (int64_t i = 0; i < n; i++) {
        data[i] = round_to(dt, data[i]);
        if (dt == HR_BF16) ((uint16_t *)buf)[i] = hr_f32_to_bf16(data[i]);
        else if (dt == HR_F16) ((uint16_t *)buf)[i] = hr_f32_to_f16(data[i]);
        else ((float *)buf)[i] = data[i];
    }
    HR_ASSERT(be->ops->tensor_set(be, t, buf, 0, t->nbytes) == HR_OK);
    free(buf);
    return t;
}

static float *rnd(int64_t n, float scale) {
    float *p = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}

static float *download(const hr_tensor *t) {
    int64_t n = hr_tensor_nelem(t);
    void *buf = malloc(t->nbytes ? t->nbytes : 1);
    float *out = malloc((n ? n : 1) * sizeof(float));
    HR_ASSERT(be->ops->tensor_get(be, t, buf, 0, t->nbytes) == HR_OK);
    hr_convert_to_f32(t->dtype, buf, out, n);
    free(buf);
    return out;
}

/* Poisons a tensor (0xFF bytes: NaN in every float type) so unwritten outputs fail. */
static void poison(hr_tensor *t) {
    void *buf = malloc(t->nbytes);
    memset(buf, 0xff, t->nbytes);
    be->ops->tensor_set(be, t, buf, 0, t->nbytes);
    free(buf);
}

static hr_tensor *out_new(hr_dtype dt, int nd, const int64_t *ne) {
    hr_tensor *t = be->ops->tensor_new(be, dt, nd, ne, "out");
    HR_ASSERT(t);
    poison(t);
    return t;
}

static double rel_l2(const float *got, const double *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define CHECK_REL(got, ref, n, tol, what)                                          \
    do {                                                                           \
        double e_ = rel_l2((got), (ref), (n));                                     \
        CHECK_MSG(e_ <= (tol), "%s: rel L2 %.3g > %.3g", (what), e_, (double)(tol)); \
        if (getenv("HEARTH_TEST_VERBOSE")) printf("  %-40s rel L2 %.3g\n", (what), e_); \
    } while (0)

static void tfree(hr_tensor *t) { be->ops->tensor_free(be, t); }

/* ---- step builder: sequences with (context before, new tokens) ----------- */
typedef struct {
    hr_step s;
    int32_t tokens[512], pos[512], slots[512], qs[17], lens[16], bt[16 * 128], rows[64];
    int n_blocks; /* cache blocks */
} step_buf;

/* Blocks are handed out shuffled; unused table entries are -1 (holes). */
static void make_step(step_buf *b, int n_seqs, const int *ctx_before, const int *n_new, int block_size, int vocab) {
    memset(b, 0, sizeof(*b));
    int mbps = 128, total_blocks = 0;
    for (int s = 0; s < n_seqs; s++) total_blocks += HR_CDIV(ctx_before[s] + n_new[s], block_size);
    b->n_blocks = total_blocks + 7; /* spare blocks never referenced */
    int perm[1024];
    HR_ASSERT(b->n_blocks <= 1024);
    for (int i = 0; i < b->n_blocks; i++) perm[i] = i;
    for (int i = b->n_blocks - 1; i > 0; i--) {
        int j = irand(i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int next = 0, t = 0, nl = 0;
    for (int s = 0; s < n_seqs; s++) {
        int len = ctx_before[s] + n_new[s], nb = HR_CDIV(len, block_size);
        HR_ASSERT(nb <= mbps);
        for (int i = 0; i < mbps; i++) b->bt[s * mbps + i] = i < nb ? perm[next++] : -1;
        b->qs[s] = t;
        for (int j = 0; j < n_new[s]; j++, t++) {
            int p = ctx_before[s] + j;
            b->tokens[t] = irand(vocab);
            b->pos[t] = p;
            b->slots[t] = b->bt[s * mbps + p / block_size] * block_size + p % block_size;
        }
        b->lens[s] = len;
        b->rows[nl++] = t - 1; /* last token of each sequence */
    }
    b->qs[n_seqs] = t;
    b->s = (hr_step){.n_tokens = t, .tokens = b->tokens, .positions = b->pos, .slot_mapping = b->slots,
                     .n_seqs = n_seqs, .query_start = b->qs, .seq_lens = b->lens, .block_tables = b->bt,
                     .max_blocks_per_seq = mbps, .block_size = block_size, .n_logits = nl, .logit_rows = b->rows};
}

/* ---- elementwise ops --------------------------------------------------- */
static void test_embed_get_rows(void) {
    step_buf sb;
    int ctx[3] = {0, 5, 9}, nn[3] = {4, 1, 3};
    make_step(&sb, 3, ctx, nn, 16, 100);
    int64_t ne_t[2] = {100, 96};
    float *tab = rnd(100 * 96, 1.0f);
    hr_tensor *table = upload(HR_F32, 2, ne_t, tab, "table");
    int T = sb.s.n_tokens;
    int64_t ne_o[2] = {T, 96};
    hr_tensor *out = out_new(HR_BF16, 2, ne_o);
    CHECK(be->ops->step_begin(be, &sb.s) == HR_OK);
    CHECK(be->ops->embed(be, out, table, &sb.s) == HR_OK);
    float *got = download(out);
    int bad = 0;
    for (int t = 0; t < T; t++)
        for (int c = 0; c < 96; c++) bad += got[t * 96 + c] != round_to(HR_BF16, tab[sb.tokens[t] * 96 + c]);
    CHECK_EQ_INT(bad, 0);
    /* get_rows to F32 logits */
    int64_t ne_r[2] = {sb.s.n_logits, 96};
    hr_tensor *rows = out_new(HR_F32, 2, ne_r);
    CHECK(be->ops->get_rows(be, rows, out, &sb.s) == HR_OK);
    float *gr = download(rows);
    bad = 0;
    for (int i = 0; i < sb.s.n_logits; i++)
        for (int c = 0; c < 96; c++) bad += gr[i * 96 + c] != got[sb.rows[i] * 96 + c];
    CHECK_EQ_INT(bad, 0);
    CHECK(be->ops->step_end(be) == HR_OK);
    free(gr);
    free(got);
    free(tab);
    tfree(rows);
    tfree(out);
    tfree(table);
}

static void test_norms_add(int rows, int cols, hr_dtype wdt) {
    int64_t ne[2] = {rows, cols}, ne_w[1] = {cols};
    float *x = rnd(rows * cols, 3.0f), *r = rnd(rows * cols, 2.0f), *w = rnd(cols, 1.0f);
    hr_tensor *tx = upload(HR_BF16, 2, ne, x, "x"), *tr = upload(HR_BF16, 2, ne, r, "res"),
              *tw = upload(wdt, 1, ne_w, w, "w");
    hr_tensor *out = out_new(HR_BF16, 2, ne);
    double *ref = malloc(sizeof(double) * rows * cols), *rres = malloc(sizeof(double) * rows * cols);
    const float eps = 1e-5f;
    /* rmsnorm */
    CHECK(be->ops->rmsnorm(be, out, tx, tw, eps) == HR_OK);
    for (int i = 0; i < rows; i++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) ss += (double)x[i * cols + c] * x[i * cols + c];
        double inv = 1.0 / sqrt(ss / cols + eps);
        for (int c = 0; c < cols; c++) ref[i * cols + c] = x[i * cols + c] * inv * w[c];
    }
    float *got = download(out);
    CHECK_REL(got, ref, rows * cols, TOL_BF16, "rmsnorm");
    free(got);
    /* add_rmsnorm: residual += x, out = norm(residual) */
    CHECK(be->ops->add_rmsnorm(be, out, tr, tx, tw, eps) == HR_OK);
    for (int i = 0; i < rows; i++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) {
            rres[i * cols + c] = (double)r[i * cols + c] + x[i * cols + c];
            ss += rres[i * cols + c] * rres[i * cols + c];
        }
        double inv = 1.0 / sqrt(ss / cols + eps);
        for (int c = 0; c < cols; c++) ref[i * cols + c] = rres[i * cols + c] * inv * w[c];
    }
    got = download(out);
    CHECK_REL(got, ref, rows * cols, TOL_BF16, "add_rmsnorm out");
    free(got);
    got = download(tr);
    CHECK_REL(got, rres, rows * cols, TOL_BF16, "add_rmsnorm residual");
    free(got);
    /* add */
    float *rr = rnd(rows * cols, 2.0f);
    hr_tensor *tb = upload(HR_BF16, 2, ne, rr, "b");
    CHECK(be->ops->add(be, out, tx, tb) == HR_OK);
    for (int i = 0; i < rows * cols; i++) ref[i] = (double)x[i] + rr[i];
    got = download(out);
    CHECK_REL(got, ref, rows * cols, TOL_BF16, "add");
    free(got);
    free(rr);
    tfree(tb);
    free(ref);
    free(rres);
    free(x);
    free(r);
    free(w);
    tfree(tx);
    tfree(tr);
    tfree(tw);
    tfree(out);
}

static void test_swiglu(float alpha, float limit, float up_off) {
    int rows = 7, cols = 333;
    int64_t ne[2] = {rows, cols};
    float *g = rnd(rows * cols, 6.0f), *u = rnd(rows * cols, 6.0f);
    hr_tensor *tg = upload(HR_BF16, 2, ne, g, "g"), *tu = upload(HR_BF16, 2, ne, u, "u");
    hr_tensor *out = out_new(HR_BF16, 2, ne);
    hr_act act = {alpha, limit, up_off};
    CHECK(be->ops->swiglu(be, out, tg, tu, &act) == HR_OK);
    double *ref = malloc(sizeof(double) * rows * cols);
    for (int i = 0; i < rows * cols; i++) {
        double gg = g[i], uu = u[i];
        if (limit > 0) {
            gg = fmin(gg, limit);
            uu = fmax(fmin(uu, limit), -limit);
        }
        ref[i] = gg / (1 + exp(-alpha * gg)) * (uu + up_off);
    }
    float *got = download(out);
    CHECK_REL(got, ref, rows * cols, TOL_BF16, limit > 0 ? "swiglu clamped" : "swiglu");
    free(got);
    free(ref);
    free(g);
    free(u);
    tfree(tg);
    tfree(tu);
    tfree(out);
}

/* table: NULL, or a host buffer for the inv_freq values that the caller
 * reuses across calls (the backend must not serve an old table for it) */
static void test_rope_theta(int head_dim, int rot_dim, float mscale, float theta, float *table) {
    step_buf sb;
    int ctx[2] = {4000, 0}, nn[2] = {3, 6};
    make_step(&sb, 2, ctx, nn, 128, 10);
    int T = sb.s.n_tokens, nh = 3, cols = nh * head_dim;
    int64_t ne[2] = {T, cols};
    float *x = rnd(T * cols, 2.0f);
    hr_tensor *tx = upload(HR_BF16, 2, ne, x, "x");
    float *inv = table ? table : malloc(sizeof(float) * rot_dim / 2);
    for (int i = 0; i < rot_dim / 2; i++) inv[i] = powf(theta, -2.0f * i / rot_dim);
    hr_rope r = {head_dim, rot_dim, inv, mscale};
    CHECK(be->ops->step_begin(be, &sb.s) == HR_OK);
    CHECK(be->ops->rope(be, tx, nh, &r, &sb.s) == HR_OK);
    CHECK(be->ops->step_end(be) == HR_OK);
    double *ref = malloc(sizeof(double) * T * cols);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < nh; h++) {
            const float *p = x + t * cols + h * head_dim;
            double *o = ref + t * cols + h * head_dim;
            for (int d = 0; d < head_dim; d++) o[d] = p[d];
            for (int i = 0; i < rot_dim / 2; i++) {
                double a = (double)(float)((float)sb.pos[t] * inv[i]);
                double c = cos(a) * mscale, s = sin(a) * mscale;
                o[i] = p[i] * c - p[i + rot_dim / 2] * s;
                o[i + rot_dim / 2] = p[i + rot_dim / 2] * c + p[i] * s;
            }
        }
    float *got = download(tx);
    char what[64];
    snprintf(what, sizeof what, "rope theta %g%s", theta, table ? " (reused table buffer)" : "");
    CHECK_REL(got, ref, T * cols, TOL_BF16, what);
    free(got);
    free(ref);
    if (!table) free(inv);
    free(x);
    tfree(tx);
}
static void test_rope(int head_dim, int rot_dim, float mscale) { test_rope_theta(head_dim, rot_dim, mscale, 10000.0f, NULL); }

/* A model freed and another loaded can get the same address for a
 * different inv_freq table: the same buffer with new contents must rotate
 * by the new table. */
static void test_rope_table_reuse(void) {
    float *table = malloc(sizeof(float) * 32);
    test_rope_theta(64, 64, 1.0f, 10000.0f, table);
    test_rope_theta(64, 64, 1.0f, 1000000.0f, table);
    test_rope_theta(64, 64, 1.0f, 500.0f, table);
    free(table);
}

/* Fused q|k|v rows -> rotated q, rotated k and v in the cache (one op), and
 * SwiGLU over packed gate|up rows; float64 references. */
static void rope_ref(double *o, const float *p, int head_dim, int rot_dim, const float *inv, float mscale, int pos,
                     bool rotate) {
    for (int d = 0; d < head_dim; d++) o[d] = p[d];
    if (!rotate) return;
    for (int i = 0; i < rot_dim / 2; i++) {
        double a = (double)(float)((float)pos * inv[i]);
        double c = cos(a) * mscale, s = sin(a) * mscale;
        o[i] = p[i] * c - p[i + rot_dim / 2] * s;
        o[i + rot_dim / 2] = p[i + rot_dim / 2] * c + p[i] * s;
    }
}

/* n_mid + 4 tokens in three sequences; the 16-byte kernel takes steps of
 * 64+ tokens with aligned dims, the generic kernel the others */
static void test_qkv_rope_store(int nh, int nkv, int head_dim, int rot_dim, float mscale, int n_mid) {
    step_buf sb;
    int ctx[3] = {300, 0, 41}, nn[3] = {1, n_mid, 3};
    make_step(&sb, 3, ctx, nn, 16, 10);
    int T = sb.s.n_tokens, bs = 16;
    int64_t qd = (int64_t)nh * head_dim, kvd = (int64_t)nkv * head_dim, ld = qd + 2 * kvd;
    int64_t nslots = (int64_t)sb.n_blocks * bs;
    float *x = rnd(T * ld, 2.0f), *kc = rnd(nslots * kvd, 1.0f), *vc = rnd(nslots * kvd, 1.0f);
    int64_t ne_x[2] = {T, ld}, ne_q[2] = {T, qd}, ne_c[4] = {sb.n_blocks, bs, nkv, head_dim};
    hr_tensor *tx = upload(HR_BF16, 2, ne_x, x, "qkv"), *tq = out_new(HR_BF16, 2, ne_q);
    hr_tensor *tk = upload(HR_BF16, 4, ne_c, kc, "k_cache"), *tv = upload(HR_BF16, 4, ne_c, vc, "v_cache");
    float *inv = malloc(sizeof(float) * rot_dim / 2);
    for (int i = 0; i < rot_dim / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / rot_dim);
    hr_rope r = {head_dim, rot_dim, inv, mscale};
    CHECK(be->ops->qkv_rope_store != NULL);
    CHECK(be->ops->step_begin(be, &sb.s) == HR_OK);
    int rc = be->ops->qkv_rope_store(be, tq, tx, tk, tv, nh, nkv, &r, &sb.s);
    CHECK_MSG(rc == HR_OK, "qkv_rope_store: %s", be->err.msg);
    CHECK(be->ops->step_end(be) == HR_OK);
    double *qref = malloc(sizeof(double) * T * qd), *kref = malloc(sizeof(double) * nslots * kvd),
           *vref = malloc(sizeof(double) * nslots * kvd);
    for (int64_t i = 0; i < nslots * kvd; i++) {
        kref[i] = kc[i]; /* upload rounded them to bf16 in place */
        vref[i] = vc[i];
    }
    for (int t = 0; t < T; t++) {
        const float *row = x + t * ld;
        for (int h = 0; h < nh; h++)
            rope_ref(qref + t * qd + h * head_dim, row + h * head_dim, head_dim, rot_dim, inv, mscale, sb.pos[t], true);
        for (int h = 0; h < nkv; h++) {
            int64_t at = (int64_t)sb.slots[t] * kvd + h * head_dim;
            rope_ref(kref + at, row + qd + h * head_dim, head_dim, rot_dim, inv, mscale, sb.pos[t], true);
            rope_ref(vref + at, row + qd + kvd + h * head_dim, head_dim, rot_dim, inv, mscale, sb.pos[t], false);
        }
    }
    float *gq = download(tq), *gk = download(tk), *gv = download(tv);
    char what[96];
    snprintf(what, sizeof what, "qkv_rope_store q (%d/%d heads, hd %d, rot %d, T %d)", nh, nkv, head_dim, rot_dim, T);
    CHECK_REL(gq, qref, T * qd, TOL_BF16, what);
    snprintf(what, sizeof what, "qkv_rope_store k cache (%d/%d heads, hd %d, rot %d)", nh, nkv, head_dim, rot_dim);
    CHECK_REL(gk, kref, nslots * kvd, TOL_BF16, what);
    snprintf(what, sizeof what, "qkv_rope_store v cache (%d/%d heads, hd %d, rot %d)", nh, nkv, head_dim, rot_dim);
    CHECK_REL(gv, vref, nslots * kvd, TOL_BF16, what);
    /* v is copied exactly; slots of other tokens keep their contents */
    int64_t bad = 0;
    for (int64_t i = 0; i < nslots * kvd; i++) bad += (double)gv[i] != vref[i];
    CHECK_MSG(bad == 0, "qkv_rope_store: %lld v cache values differ from the exact copy", (long long)bad);
    free(gq); free(gk); free(gv); free(qref); free(kref); free(vref); free(inv); free(x); free(kc); free(vc);
    tfree(tx); tfree(tq); tfree(tk); tfree(tv);
}

static void test_swiglu_packed(int rows, int F) {
    int64_t ne_in[2] = {rows, 2 * (int64_t)F}, ne_out[2] = {rows, F};
    float *gu = rnd(rows * 2 * F, 6.0f);
    hr_tensor *tg = upload(HR_BF16, 2, ne_in, gu, "gate_up"), *out = out_new(HR_BF16, 2, ne_out);
    hr_act act = {1.0f, 0.0f, 0.0f};
    CHECK(be->ops->swiglu(be, out, tg, NULL, &act) == HR_OK);
    double *ref = malloc(sizeof(double) * rows * F);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < F; c++) {
            double g = gu[(int64_t)r * 2 * F + c], u = gu[(int64_t)r * 2 * F + F + c];
            ref[(int64_t)r * F + c] = g / (1 + exp(-g)) * u;
        }
    float *got = download(out);
    char what[64];
    snprintf(what, sizeof what, "swiglu packed %dx%d", rows, F);
    CHECK_REL(got, ref, rows * F, TOL_BF16, what);
    free(got); free(ref); free(gu);
    tfree(tg); tfree(out);
}

/* ---- kv_store + attention ------------------------------------------------- */
typedef struct {
    int n_seqs, ctx[4], nn[4];
    int nh, nkv, hd, block_size, window;
    bool sinks;
    const char *name;
} attn_case;

/* float64 attention over the host cache image (kc/vc hold every slot). */
static double *attn_ref(const step_buf *b, int n_seqs, const float *q, const float *kc, const float *vc,
                        const float *sinks, int nh, int nkv, int hd, int bs, int window, bool use_sinks, float scale) {
    int T = b->s.n_tokens, mbps = b->s.max_blocks_per_seq;
    int64_t row = (int64_t)nkv * hd;
    double *ref = calloc((size_t)T * nh * hd, sizeof(double));
    double *lg = malloc(sizeof(double) * 4096);
    for (int s = 0; s < n_seqs; s++)
        for (int t = b->qs[s]; t < b->qs[s + 1]; t++) {
            int pos = b->pos[t], hi = HR_MIN(pos + 1, b->lens[s]);
            int lo = window > 0 ? HR_MAX(0, pos - window + 1) : 0;
            for (int h = 0; h < nh; h++) {
                int g = h / (nh / nkv);
                double mx = use_sinks ? sinks[h] : -INFINITY;
                for (int j = lo; j < hi; j++) {
                    int64_t slot = (int64_t)b->bt[s * mbps + j / bs] * bs + j % bs;
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)q[(int64_t)t * nh * hd + h * hd + e] * kc[slot * row + g * hd + e];
                    lg[j - lo] = d * scale;
                    mx = fmax(mx, lg[j - lo]);
                }
                double den = use_sinks ? exp(sinks[h] - mx) : 0;
                double *o = ref + (int64_t)t * nh * hd + h * hd;
                for (int j = lo; j < hi; j++) {
                    int64_t slot = (int64_t)b->bt[s * mbps + j / bs] * bs + j % bs;
                    double w = exp(lg[j - lo] - mx);
                    den += w;
                    for (int e = 0; e < hd; e++) o[e] += w * vc[slot * row + g * hd + e];
                }
                for (int e = 0; e < hd; e++) o[e] /= den;
            }
        }
    free(lg);
    return ref;
}

/* Decode steps of one shape on persistent buffers: the first runs eagerly,
 * the second is captured as a CUDA graph, the rest replay it. Each step has
 * new K/V/Q values and one more context token, and must match the reference. */
static void test_graph_replay(void) {
    const int nh = 8, nkv = 2, hd = 64, bs = 16, n_steps = 6;
    int ctx[2] = {90, 33}, nn[2] = {1, 1};
    step_buf sb;
    make_step(&sb, 2, ctx, nn, bs, 10); /* blocks for the longest step are assigned below */
    int ctx_max[2] = {90 + n_steps, 33 + n_steps};
    step_buf big;
    make_step(&big, 2, ctx_max, nn, bs, 10);
    int64_t row = (int64_t)nkv * hd, nslots = (int64_t)big.n_blocks * bs;
    int64_t ne_c[4] = {big.n_blocks, bs, nkv, hd}, ne_kv[2] = {2, row}, ne_q[2] = {2, (int64_t)nh * hd};
    float *kc = rnd(nslots * row, 1.0f), *vc = rnd(nslots * row, 1.0f);
    hr_tensor *tk = upload(HR_BF16, 4, ne_c, kc, "k_cache"), *tv = upload(HR_BF16, 4, ne_c, vc, "v_cache");
    hr_tensor *tkn = out_new(HR_BF16, 2, ne_kv), *tvn = out_new(HR_BF16, 2, ne_kv), *tq = out_new(HR_BF16, 2, ne_q);
    hr_tensor *out = out_new(HR_BF16, 2, ne_q);
    double worst = 0;
    for (int i = 0; i < n_steps; i++) {
        /* same block tables as `big`, context one longer each step */
        step_buf st = big;
        for (int s = 0; s < 2; s++) {
            int p = ctx[s] + i;
            st.pos[s] = p;
            st.lens[s] = p + 1;
            st.slots[s] = st.bt[s * st.s.max_blocks_per_seq + p / bs] * bs + p % bs;
        }
        st.s.tokens = st.tokens;
        st.s.positions = st.pos;
        st.s.slot_mapping = st.slots;
        st.s.query_start = st.qs;
        st.s.seq_lens = st.lens;
        st.s.block_tables = st.bt;
        st.s.logit_rows = st.rows;
        float *k = rnd(2 * row, 1.0f), *v = rnd(2 * row, 1.0f), *q = rnd(2 * nh * hd, 1.0f);
        hr_tensor *sk = upload(HR_BF16, 2, ne_kv, k, "k"), *sv = upload(HR_BF16, 2, ne_kv, v, "v"),
                  *sq = upload(HR_BF16, 2, ne_q, q, "q");
        CHECK(be->ops->copy(be, tkn, sk) == HR_OK && be->ops->copy(be, tvn, sv) == HR_OK &&
              be->ops->copy(be, tq, sq) == HR_OK);
        hr_attn_params p = {nh, nkv, hd, 1.0f / sqrtf((float)hd), 0, NULL};
        CHECK(be->ops->step_begin(be, &st.s) == HR_OK);
        CHECK(be->ops->kv_store(be, tk, tv, tkn, tvn, &st.s) == HR_OK);
        CHECK(be->ops->attention(be, out, tq, tk, tv, &st.s, &p) == HR_OK);
        CHECK(be->ops->step_end(be) == HR_OK);
        for (int t = 0; t < 2; t++)
            for (int64_t j = 0; j < row; j++) {
                kc[st.slots[t] * row + j] = k[t * row + j];
                vc[st.slots[t] * row + j] = v[t * row + j];
            }
        double *ref = attn_ref(&st, 2, q, kc, vc, NULL, nh, nkv, hd, bs, 0, false, p.scale);
        float *got = download(out);
        double e = rel_l2(got, ref, 2 * nh * hd);
        CHECK_MSG(e <= TOL_BF16, "graph replay step %d: rel L2 %.3g", i, e);
        if (!(e <= worst)) worst = e;
        free(got);
        free(ref);
        free(k);
        free(v);
        free(q);
        tfree(sk);
        tfree(sv);
        tfree(sq);
    }
    if (getenv("HEARTH_TEST_VERBOSE")) printf("  %-40s rel L2 %.3g (worst of %d steps)\n", "graph replay decode", worst, n_steps);
    free(kc);
    free(vc);
    tfree(tk);
    tfree(tv);
    tfree(tkn);
    tfree(tvn);
    tfree(tq);
    tfree(out);
}

static void test_attention(const attn_case *ac) {
    step_buf sb;
    make_step(&sb, ac->n_seqs, ac->ctx, ac->nn, ac->block_size, 10);
    int T = sb.s.n_tokens, nh = ac->nh, nkv = ac->nkv, hd = ac->hd, bs = ac->block_size;
    int64_t row = (int64_t)nkv * hd, nslots = (int64_t)sb.n_blocks * bs;
    int64_t ne_c[4] = {sb.n_blocks, bs, nkv, hd};
    /* caches start with random contents everywhere (also in stale slots) */
    float *kc = rnd(nslots * row, 1.0f), *vc = rnd(nslots * row, 1.0f);
    hr_tensor *tk = upload(HR_BF16, 4, ne_c, kc, "k_cache"), *tv = upload(HR_BF16, 4, ne_c, vc, "v_cache");
    int64_t ne_kv[2] = {T, row}, ne_q[2] = {T, (int64_t)nh * hd};
    float *k = rnd(T * row, 1.0f), *v = rnd(T * row, 1.0f), *q = rnd(T * nh * hd, 1.0f);
    hr_tensor *tkn = upload(HR_BF16, 2, ne_kv, k, "k"), *tvn = upload(HR_BF16, 2, ne_kv, v, "v");
    hr_tensor *tq = upload(HR_BF16, 2, ne_q, q, "q");
    float *sinks = rnd(nh, 2.0f);
    int64_t ne_s[1] = {nh};
    hr_tensor *ts = upload(HR_F32, 1, ne_s, sinks, "sinks");
    hr_tensor *out = out_new(HR_BF16, 2, ne_q);

    CHECK(be->ops->step_begin(be, &sb.s) == HR_OK);
    CHECK(be->ops->kv_store(be, tk, tv, tkn, tvn, &sb.s) == HR_OK);
    hr_attn_params p = {nh, nkv, hd, 1.0f / sqrtf((float)hd), ac->window, ac->sinks ? ts : NULL};
    int rc = be->ops->attention(be, out, tq, tk, tv, &sb.s, &p);
    CHECK_MSG(rc == HR_OK, "%s: %s", ac->name, be->err.msg);
    CHECK(be->ops->step_end(be) == HR_OK);

    /* host cache after the store */
    for (int t = 0; t < T; t++)
        for (int64_t i = 0; i < row; i++) {
            kc[sb.slots[t] * row + i] = k[t * row + i];
            vc[sb.slots[t] * row + i] = v[t * row + i];
        }
    float *gk = download(tk), *gv = download(tv);
    int64_t bad = 0;
    for (int64_t i = 0; i < nslots * row; i++) bad += gk[i] != kc[i] || gv[i] != vc[i];
    CHECK_MSG(bad == 0, "%s: kv_store: %lld cache values differ", ac->name, (long long)bad);

    double *ref = attn_ref(&sb, ac->n_seqs, q, kc, vc, sinks, nh, nkv, hd, bs, ac->window, ac->sinks, p.scale);
    float *got = download(out);
    char what[96];
    snprintf(what, sizeof(what), "attention %s", ac->name);
    CHECK_REL(got, ref, (int64_t)T * nh * hd, TOL_BF16, what);
    free(got);
    free(ref);
    free(gk);
    free(gv);
    free(kc);
    free(vc);
    free(k);
    free(v);
    free(q);
    free(sinks);
    tfree(tk);
    tfree(tv);
    tfree(tkn);
    tfree(tvn);
    tfree(tq);
    tfree(ts);
    tfree(out);
}

/* ---- linear ------------------------------------------------------------------ */
static void ref_linear(double *ref, const float *x, const float *w, const float *bias, int T, int K, int N, float s) {
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double acc = 0;
            for (int k = 0; k < K; k++) {
                float xv = x[(int64_t)t * K + k];
                if (s > 0) xv = hr_e4m3_to_f32(hr_f32_to_e4m3(xv / s)) * s;
                acc += (double)xv * w[(int64_t)n * K + k];
            }
            ref[(int64_t)t * N + n] = acc + (bias ? bias[n] : 0);
        }
}

static void test_linear(int T, int K, int N, hr_dtype wdt, hr_dtype odt, bool with_bias, float input_scale) {
    int64_t ne_x[2] = {T, K}, ne_w[2] = {N, K}, ne_b[1] = {N}, ne_o[2] = {T, N};
    float *x = rnd((int64_t)T * K, 1.0f), *w = rnd((int64_t)N * K, 0.1f), *b = rnd(N, 1.0f);
    hr_tensor *tx = upload(HR_BF16, 2, ne_x, x, "x"), *tw = upload(wdt, 2, ne_w, w, "w"),
              *tb = upload(HR_F32, 1, ne_b, b, "bias");
    hr_tensor *out = out_new(odt, 2, ne_o);
    hr_linear l = {tw, with_bias ? tb : NULL, input_scale};
    int rc = be->ops->linear(be, out, tx, &l);
    CHECK_MSG(rc == HR_OK, "linear: %s", be->err.msg);
    double *ref = malloc(sizeof(double) * T * N);
    ref_linear(ref, x, w, with_bias ? b : NULL, T, K, N, input_scale);
    float *got = download(out);
    char what[128];
    snprintf(what, sizeof(what), "linear T%d K%d N%d w%s o%s%s%s", T, K, N, hr_dtype_name(wdt), hr_dtype_name(odt),
             with_bias ? " bias" : "", input_scale > 0 ? " fp8in" : "");
    /* F32 out: only the accumulation order differs */
    CHECK_REL(got, ref, (int64_t)T * N, odt == HR_F32 ? 1e-4 : TOL_BF16, what);
    free(got);
    free(ref);
    free(x);
    free(w);
    free(b);
    tfree(tx);
    tfree(tw);
    tfree(tb);
    tfree(out);
}

/* ---- moe ---------------------------------------------------------------------- */
/* T > 256 tokens takes the grouped path (pairs sorted by expert, one
 * cuBLASLt GEMM per expert); fewer take the GEMV: its segment mode (pairs
 * sorted by expert on the GPU, chunks of 4 or 16 rows) when the T x K pairs
 * are at least E and 8, else its pair mode (one pair per block column). */
static void test_moe(hr_route route, bool biases, float limit, int T, int E, int K) {
    int H = 128, F = 96;
    int64_t ne_x[2] = {T, H}, ne_r[2] = {E, H}, ne_rb[1] = {E}, ne_g[3] = {E, F, H}, ne_d[3] = {E, H, F},
            ne_gb[2] = {E, F}, ne_db[2] = {E, H};
    float *x = rnd(T * H, 1.0f), *rw = rnd(E * H, 0.3f), *rb = rnd(E, 1.0f), *g = rnd(E * F * H, 0.1f),
          *u = rnd(E * F * H, 0.1f), *d = rnd(E * H * F, 0.1f), *gb = rnd(E * F, 0.5f), *ub = rnd(E * F, 0.5f),
          *db = rnd(E * H, 0.5f);
    hr_tensor *tx = upload(HR_BF16, 2, ne_x, x, "x"), *trw = upload(HR_BF16, 2, ne_r, rw, "router"),
              *trb = upload(HR_F32, 1, ne_rb, rb, "router_b"), *tg = upload(HR_BF16, 3, ne_g, g, "gate"),
              *tu = upload(HR_BF16, 3, ne_g, u, "up"), *td = upload(HR_BF16, 3, ne_d, d, "down"),
              *tgb = upload(HR_F32, 2, ne_gb, gb, "gb"), *tub = upload(HR_F32, 2, ne_gb, ub, "ub"),
              *tdb = upload(HR_F32, 2, ne_db, db, "db");
    hr_tensor *out = out_new(HR_BF16, 2, ne_x);
    hr_moe m = {.n_experts = E, .top_k = K, .route = route, .renormalize = true,
                .router = {trw, biases ? trb : NULL, 0}, .gate = tg, .up = tu, .down = td,
                .gate_bias = biases ? tgb : NULL, .up_bias = biases ? tub : NULL, .down_bias = biases ? tdb : NULL,
                .act = {limit > 0 ? 1.702f : 1.0f, limit, limit > 0 ? 1.0f : 0.0f}};
    int rc = be->ops->moe(be, out, tx, &m);
    CHECK_MSG(rc == HR_OK, "moe: %s", be->err.msg);
    double *ref = calloc((size_t)T * H, sizeof(double));
    for (int t = 0; t < T; t++) {
        double lg[64], wsel[8];
        int sel[8];
        for (int e = 0; e < E; e++) {
            lg[e] = biases ? rb[e] : 0;
            for (int h = 0; h < H; h++) lg[e] += (double)x[t * H + h] * rw[e * H + h];
        }
        bool used[64] = {0};
        for (int j = 0; j < K; j++) {
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!used[e] && (best < 0 || lg[e] > lg[best])) best = e;
            used[best] = true;
            sel[j] = best;
        }
        double sum = 0, mx = -INFINITY, z = 0;
        if (route == HR_ROUTE_SOFTMAX_TOPK) {
            for (int e = 0; e < E; e++) mx = fmax(mx, lg[e]);
            for (int e = 0; e < E; e++) z += exp(lg[e] - mx);
            for (int j = 0; j < K; j++) sum += (wsel[j] = exp(lg[sel[j]] - mx) / z);
        } else {
            for (int j = 0; j < K; j++) sum += (wsel[j] = exp(lg[sel[j]] - lg[sel[0]]));
        }
        for (int j = 0; j < K; j++) {
            int e = sel[j];
            double a[96];
            for (int f = 0; f < F; f++) {
                double gg = biases ? gb[e * F + f] : 0, uu = biases ? ub[e * F + f] : 0;
                for (int h = 0; h < H; h++) {
                    gg += (double)x[t * H + h] * g[((int64_t)e * F + f) * H + h];
                    uu += (double)x[t * H + h] * u[((int64_t)e * F + f) * H + h];
                }
                if (limit > 0) {
                    gg = fmin(gg, limit);
                    uu = fmax(fmin(uu, limit), -limit);
                }
                a[f] = gg / (1 + exp(-m.act.alpha * gg)) * (uu + m.act.up_offset);
            }
            for (int h = 0; h < H; h++) {
                double y = biases ? db[e * H + h] : 0;
                for (int f = 0; f < F; f++) y += a[f] * d[((int64_t)e * H + h) * F + f];
                ref[t * H + h] += wsel[j] / sum * y;
            }
        }
    }
    float *got = download(out);
    char what[80];
    const char *seg = getenv("HEARTH_CUDA_MOE_SEG"), *tc = getenv("HEARTH_CUDA_MOE_TC"),
               *fuse = getenv("HEARTH_CUDA_MOE_FUSE");
    snprintf(what, sizeof what, "moe %s T %d E %d k %d (%s)",
             route == HR_ROUTE_SOFTMAX_TOPK ? "softmax-topk" : "topk-softmax", T, E, K,
             seg && !strcmp(seg, "0")     ? "pairs"
             : tc && !strcmp(tc, "0")     ? "segments, cuda cores"
             : fuse && !strcmp(fuse, "0") ? "gate, up apart"
             : T > 256 && !getenv("HEARTH_CUDA_MOE_GROUPED") ? "grouped"
                                          : "segments");
    CHECK_REL(got, ref, (int64_t)T * H, TOL_BF16, what);
    free(got);
    free(ref);
    float *fs[] = {x, rw, rb, g, u, d, gb, ub, db};
    for (size_t i = 0; i < HR_ARRAY_LEN(fs); i++) free(fs[i]);
    hr_tensor *ts[] = {tx, trw, trb, tg, tu, td, tgb, tub, tdb, out};
    for (size_t i = 0; i < HR_ARRAY_LEN(ts); i++) tfree(ts[i]);
}

/* ---- optional: GEMV bandwidth vs device copy --------------------------------- */
static void bench_gemv(int N, int K, int T) {
    int64_t ne_x[2] = {T, K}, ne_w[2] = {N, K}, ne_o[2] = {T, N};
    /* several weight copies so repeated runs do not hit L2 (50 MB on H100) */
    int NW = (double)N * K * 2 > 256e6 ? 1 : 4;
    hr_tensor *tw[4];
    float *w = rnd((int64_t)N * K, 0.1f), *x = rnd((int64_t)T * K, 1.0f);
    for (int i = 0; i < NW; i++) tw[i] = upload(HR_BF16, 2, ne_w, w, "w");
    hr_tensor *tx = upload(HR_BF16, 2, ne_x, x, "x"), *out = out_new(HR_BF16, 2, ne_o);
    int iters = 200;
    for (int i = 0; i < 10; i++) {
        hr_linear l = {tw[i % NW], NULL, 0};
        be->ops->linear(be, out, tx, &l);
    }
    be->ops->sync(be);
    double t0 = hr_time_now();
    for (int i = 0; i < iters; i++) {
        hr_linear l = {tw[i % NW], NULL, 0};
        be->ops->linear(be, out, tx, &l);
    }
    be->ops->sync(be);
    double dt = (hr_time_now() - t0) / iters;
    double bytes = (double)N * K * 2 + (double)T * K * 2 + (double)T * N * 2;
    const char *mt = getenv("HEARTH_CUDA_GEMV_MAX_T");
    const char *bpsm = getenv("HEARTH_CUDA_GEMV_BPSM");
    if (bpsm) printf("[split-K target %s blocks/SM] ", bpsm);
    printf("BENCH linear%s N=%d K=%d T=%d: %.2f us, %.0f GB/s\n", mt ? (atoi(mt) < T ? " cublasLt" : " gemv") : "",
           N, K, T, dt * 1e6, bytes / dt / 1e9);
    for (int i = 0; i < NW; i++) tfree(tw[i]);
    tfree(tx);
    tfree(out);
    free(w);
    free(x);
}

static void bench_copy(void) {
    int64_t ne[1] = {(int64_t)1 << 29}; /* 1 GiB of bf16 */
    hr_tensor *a = be->ops->tensor_new(be, HR_BF16, 1, ne, "a"), *b = be->ops->tensor_new(be, HR_BF16, 1, ne, "b");
    be->ops->tensor_zero(be, a);
    be->ops->copy(be, b, a);
    be->ops->sync(be);
    int iters = 20;
    double t0 = hr_time_now();
    for (int i = 0; i < iters; i++) be->ops->copy(be, b, a);
    be->ops->sync(be);
    double dt = (hr_time_now() - t0) / iters;
    printf("BENCH copy D2D 1 GiB: %.0f GB/s (read + write)\n", 2.0 * a->nbytes / dt / 1e9);
    tfree(a);
    tfree(b);
}

/* Host reference of the greedy argmax (the sampler's): maximum over the
 * non-NaN values, its first index; 0 for a row of NaN only. */
static int32_t ref_argmax(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && x[i] > m) m = x[i];
    for (int64_t i = 0; i < n; i++)
        if (x[i] == m) return (int32_t)i;
    return 0;
}

/* argmax on random F32 rows and awkward ones: the maximum tied at several
 * places (across warps and within one), a row of -inf, NaN among values,
 * NaN only, values near FLT_MAX, +inf in the last column. rows > 256 makes
 * the id buffers grow after a smaller call. */
static void test_argmax(int rows, int64_t vocab) {
    int64_t n = (int64_t)rows * vocab;
    float *x = rnd(n, 30.0f);
    for (int r = 0; r < rows; r++) {
        float *row = x + (int64_t)r * vocab;
        switch (r % 8) {
        case 1:
            for (int k = 0; k < 4; k++) row[irand((int)vocab)] = 40.0f;
            break;
        case 2: /* a tie inside one warp's stride and far apart */
            row[vocab / 2] = 50.0f, row[vocab / 2 + 1] = 50.0f, row[vocab - 1] = 50.0f;
            break;
        case 3:
            for (int64_t c = 0; c < vocab; c++) row[c] = -INFINITY;
            break;
        case 4:
            for (int64_t c = 0; c < vocab; c += 2) row[c] = NAN;
            break;
        case 5:
            for (int64_t c = 0; c < vocab; c++) row[c] = NAN;
            break;
        case 6:
            row[irand((int)vocab)] = 3.0e38f, row[irand((int)vocab)] = -3.0e38f;
            break;
        case 7:
            row[vocab - 1] = INFINITY;
            break;
        }
    }
    int64_t ne[2] = {rows, vocab};
    hr_tensor *t = upload(HR_F32, 2, ne, x, "logits");
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows);
    for (int r = 0; r < rows; r++) ids[r] = -7;
    CHECK_EQ_INT(be->ops->argmax(be, t, ids), HR_OK);
    int bad = 0, first = -1;
    for (int r = 0; r < rows; r++)
        if (ids[r] != ref_argmax(x + (int64_t)r * vocab, vocab)) {
            if (first < 0) first = r;
            bad++;
        }
    CHECK_MSG(bad == 0, "argmax %d x %lld: %d rows wrong (first row %d: %d vs %d)", rows, (long long)vocab, bad, first,
              first >= 0 ? ids[first] : 0, first >= 0 ? ref_argmax(x + (int64_t)first * vocab, vocab) : 0);
    be->ops->tensor_free(be, t);
    free(x);
    free(ids);
}

/* tensor_new returns zero-filled memory, also when it reuses a freed block
 * that held data (the model relies on it for never-written KV slots). */
static void test_tensor_new_zeroed(void) {
    int64_t ne[1] = {300000};
    hr_tensor *a = be->ops->tensor_new(be, HR_F32, 1, ne, "dirty");
    float *h = (float *)malloc(sizeof(float) * ne[0]);
    for (int64_t i = 0; i < ne[0]; i++) h[i] = 1.0f + (float)i;
    be->ops->tensor_set(be, a, h, 0, a->nbytes);
    be->ops->tensor_free(be, a);
    hr_tensor *b = be->ops->tensor_new(be, HR_F32, 1, ne, "fresh");
    memset(h, 0xff, sizeof(float) * ne[0]);
    be->ops->tensor_get(be, b, h, 0, b->nbytes);
    int64_t nonzero = 0;
    for (int64_t i = 0; i < ne[0]; i++) nonzero += h[i] != 0.0f;
    CHECK_EQ_INT(nonzero, 0);
    be->ops->tensor_free(be, b);
    free(h);
}

int main(void) {
    if (!hr_backend_cuda_available()) TEST_SKIP("no CUDA device");
    hr_err err = {0};
    be = hr_backend_cuda_create(0, &err);
    if (!be) {
        fprintf(stderr, "hr_backend_cuda_create: %s\n", err.msg);
        return 1;
    }
    CHECK(be->act_dtype == HR_BF16 && be->kv_dtype == HR_BF16);
    const char *bench = getenv("HEARTH_CUDA_BENCH");
    if (bench && !strcmp(bench, "only")) goto bench;
    /* The experimental Hopper GEMM (gemm/wgmma.cu), on an sm_90 device, in
     * a run of its own: HEARTH_CUDA_WGMMA=2 HEARTH_CUDA_WGMMA_TEST=1 (and
     * HEARTH_CUDA_WGMMA_CFG=BN,0 per tile width). Mode 2 makes a BF16 linear
     * of 64+ rows fail instead of falling back, so these cases cannot pass
     * on cuBLASLt; the shapes cover row and column tails, the ring wrapping,
     * fewer slices than stages, one and several waves, and split-K (tiles
     * few against the SMs), each case twice: the split-K tile counters must
     * be back at zero after a launch. */
    if (hr_env_on("HEARTH_CUDA_WGMMA_TEST", false)) {
        if (hr_backend_cuda_capability() != 90) {
            be->ops->free(be);
            TEST_SKIP("the Hopper GEMM runs on compute capability 9.0 only (this device: %d)",
                      hr_backend_cuda_capability());
        }
        static const int cases[][5] = {
            /* T, K, N, out F32, bias */
            {64, 512, 384, 0, 1},    {100, 256, 1000, 1, 0},  {128, 576, 512, 0, 0},  {300, 192, 640, 1, 1},
            {256, 128, 8448, 0, 1},  {256, 1024, 1024, 0, 0}, {200, 2048, 576, 1, 1}, {77, 4096, 256, 0, 0},
            {512, 640, 2304, 0, 1},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            for (int rep = 0; rep < 2; rep++)
                test_linear(cases[i][0], cases[i][1], cases[i][2], HR_BF16, cases[i][3] ? HR_F32 : HR_BF16,
                            cases[i][4] != 0, 0);
        goto bench; /* bench is NULL unless HEARTH_CUDA_BENCH: straight to the report */
    }

    test_tensor_new_zeroed();
    CHECK(be->ops->argmax != NULL);
    if (be->ops->argmax) {
        test_argmax(9, 1);
        test_argmax(16, 1000);
        test_argmax(8, 5003);
        test_argmax(300, 128256); /* llama-3 vocabulary; grows the id buffers */
    }
    test_embed_get_rows();
    test_norms_add(5, 4096, HR_F32);
    test_norms_add(3, 130, HR_BF16);
    test_norms_add(2, 12288, HR_F32); /* 16-byte kernel, 2 chunks per thread */
    test_swiglu(1.0f, 0.0f, 0.0f);
    test_swiglu(1.702f, 7.0f, 1.0f);
    test_rope(64, 64, 1.0f);
    test_rope(128, 64, 1.3f);
    test_rope(32, 32, 1.0f);
    test_rope_table_reuse();
    test_qkv_rope_store(32, 8, 128, 128, 1.0f, 69); /* llama-like: 16-byte kernel */
    test_qkv_rope_store(32, 8, 128, 128, 1.0f, 9);  /* the same, 13 tokens: generic kernel */
    test_qkv_rope_store(7, 1, 64, 32, 1.2f, 69);    /* partial rotary, MQA, mscale */
    test_qkv_rope_store(7, 1, 64, 32, 1.2f, 9);
    test_qkv_rope_store(6, 3, 96, 64, 1.1f, 69);    /* 16-byte kernel: 32 dims copied */
    test_qkv_rope_store(8, 2, 80, 48, 1.0f, 69);    /* 16-byte kernel: hd 80 */
    test_qkv_rope_store(4, 2, 72, 72, 1.0f, 69);    /* generic: half of rot_dim not a multiple of 8 */
    test_qkv_rope_store(5, 1, 40, 20, 0.9f, 69);    /* generic: partial rotary of 20 dims */
    test_swiglu_packed(5, 2048);                /* 16-byte vector kernel */
    test_swiglu_packed(3, 333);                 /* odd width: scalar kernel with row strides */

    static const attn_case cases[] = {
        /* decode at 300 + fresh prefill 37 + chunked prefill 5 on 70, GQA 4 */
        {3, {300, 0, 70}, {1, 37, 5}, 8, 2, 64, 16, 0, false, "ragged gqa4 hd64"},
        {3, {300, 0, 70}, {1, 37, 5}, 8, 2, 64, 16, 16, true, "ragged window16 sinks"},
        {2, {2000, 1500}, {1, 1}, 32, 8, 128, 16, 0, false, "decode long hd128 (split-K)"},
        {2, {2000, 9}, {1, 3}, 16, 8, 128, 32, 128, true, "decode window128 sinks"},
        {3, {250, 33, 64}, {1, 1, 1}, 64, 8, 128, 16, 0, false, "decode gqa8 hd128 (8 heads per block)"},
        /* >= 128 (token, KV head) blocks of short query runs: the tensor-core decode kernel */
        {4, {300, 0, 70, 1000}, {7, 7, 5, 7}, 32, 8, 128, 16, 0, false, "tc decode hd128 gqa4 (splits)"},
        {4, {90, 33, 64, 500}, {7, 6, 7, 7}, 64, 8, 64, 16, 24, true, "tc decode hd64 G8 window24 sinks"},
        {4, {129, 17, 2000, 0}, {7, 7, 7, 7}, 128, 8, 128, 24, 0, true, "tc decode G16 block24 sinks"},
        {1, {0}, {40}, 4, 2, 32, 16, 8, true, "prefill hd32 window8 sinks (gpt-oss-like)"},
        {2, {17, 100}, {2, 1}, 12, 1, 256, 16, 0, false, "mqa hd256 G12"},
        {1, {0}, {7}, 4, 4, 80, 8, 0, false, "mha hd80"},
        /* tensor-core prefill path (BF16, head_dim 32/64/128, >= 8 new tokens in a sequence) */
        {3, {0, 100, 5}, {50, 20, 1}, 32, 8, 128, 16, 0, false, "prefill hd128 gqa4 + chunk + decode"},
        {2, {0, 30}, {33, 17}, 16, 4, 128, 16, 24, true, "prefill hd128 window24 sinks"},
        {2, {0, 64}, {70, 9}, 6, 2, 64, 32, 0, true, "prefill hd64 gqa3 sinks"},
        /* many 64-key tiles through the two cp.async stages */
        {2, {0, 200}, {300, 40}, 32, 8, 128, 16, 0, false, "prefill hd128 long (5+ tiles)"},
        {2, {0, 0}, {260, 130}, 8, 8, 64, 16, 100, true, "prefill hd64 mha window100 sinks long"},
        {1, {0}, {200}, 4, 2, 32, 16, 0, false, "prefill hd32 long"},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) test_attention(&cases[i]);
    test_graph_replay();

    test_linear(1, 4096, 512, HR_BF16, HR_BF16, false, 0);    /* GEMV, 1 row per warp + split-K */
    test_linear(1, 2048, 4096, HR_BF16, HR_BF16, true, 0);    /* GEMV, 1 row per warp, no split */
    test_linear(1, 1024, 40000, HR_BF16, HR_F32, false, 0);   /* GEMV, 4 rows per warp (tall) */
    test_linear(3, 1024, 2048, HR_BF16, HR_BF16, true, 0);    /* GEMV NT=4, bias */
    test_linear(16, 512, 1000, HR_BF16, HR_F32, true, 0);     /* GEMV NT=16, F32 logits */
    test_linear(17, 512, 384, HR_BF16, HR_BF16, true, 0);     /* cuBLASLt + bias */
    test_linear(64, 768, 1000, HR_BF16, HR_F32, false, 0);    /* cuBLASLt, F32 out */
    test_linear(5, 256, 300, HR_F32, HR_BF16, true, 0);       /* F32 weights */
    test_linear(33, 256, 100, HR_F16, HR_BF16, false, 0);     /* F16 weights, T > 16 */
    test_linear(4, 100, 50, HR_BF16, HR_BF16, true, 0);       /* K not a multiple of 8: fallback */
    test_linear(2, 512, 256, HR_BF16, HR_BF16, false, 0.02f); /* FP8 W8A8 input rounding */
    test_linear(40, 512, 256, HR_BF16, HR_BF16, true, 0.02f); /* FP8 through cuBLASLt */
    /* the GEMV's MoE modes: segments on tensor cores (default; gate and up
     * in one launch, as the pair mode), segments on CUDA cores, pairs only,
     * and gate and up in two launches */
    static const char *moe_modes[][2] = {
        {NULL, NULL}, {"HEARTH_CUDA_MOE_TC", "0"}, {"HEARTH_CUDA_MOE_SEG", "0"}, {"HEARTH_CUDA_MOE_FUSE", "0"}};
    for (size_t i = 0; i < HR_ARRAY_LEN(moe_modes); i++) {
        if (moe_modes[i][0]) setenv(moe_modes[i][0], moe_modes[i][1], 1);
        test_moe(HR_ROUTE_SOFTMAX_TOPK, false, 0, 5, 4, 2);     /* 10 pairs: one chunk per expert */
        test_moe(HR_ROUTE_TOPK_SOFTMAX, true, 7.0f, 3, 8, 2);   /* pair mode (6 pairs) */
        test_moe(HR_ROUTE_TOPK_SOFTMAX, true, 7.0f, 64, 32, 4); /* gpt-oss-like decode */
        test_moe(HR_ROUTE_SOFTMAX_TOPK, false, 0, 37, 16, 2);   /* ragged chunks */
        test_moe(HR_ROUTE_SOFTMAX_TOPK, true, 0, 200, 4, 2);    /* ~100 pairs per expert: chunks of 64 */
        test_moe(HR_ROUTE_TOPK_SOFTMAX, true, 7.0f, 130, 4, 4); /* k = E: 130 pairs per expert (64 + 64 + 2) */
        test_moe(HR_ROUTE_SOFTMAX_TOPK, false, 0, 256, 8, 2);   /* 64 per expert on average */
        if (moe_modes[i][0]) unsetenv(moe_modes[i][0]);
    }
    /* T > 256: the grouped cuBLASLt path, and (HEARTH_CUDA_MOE_GROUPED=0)
     * the segment mode, whose 32+ pairs per expert take chunks of 64
     * (gemm/moe_gemm.cu) */
    for (int gi = 0; gi < 2; gi++) {
        if (gi) setenv("HEARTH_CUDA_MOE_GROUPED", "0", 1);
        test_moe(HR_ROUTE_SOFTMAX_TOPK, false, 0, 300, 8, 2);   /* grouped path */
        test_moe(HR_ROUTE_TOPK_SOFTMAX, true, 7.0f, 333, 4, 2); /* grouped, biases, gpt-oss clamp */
        if (gi) unsetenv("HEARTH_CUDA_MOE_GROUPED");
    }

bench:
    if (bench) {
        bench_copy();
        static const int shapes[][2] = {{4096, 4096}, {1024, 4096}, {14336, 4096}, {4096, 14336}, {128256, 4096}};
        static const int ts_all[] = {1, 2, 4, 8, 16}, ts_one[] = {1};
        const char *only1 = getenv("HEARTH_CUDA_BENCH_T1");
        const int *ts = only1 ? ts_one : ts_all;
        size_t n_ts = only1 ? 1 : HR_ARRAY_LEN(ts_all);
        for (size_t i = 0; i < HR_ARRAY_LEN(shapes); i++)
            for (size_t j = 0; j < n_ts; j++) bench_gemv(shapes[i][0], shapes[i][1], ts[j]);
    }
    be->ops->free(be); /* not hr_backend_free: keeps backend.c (and the CPU backend) out of this test */
    return test_report("test_cuda_ops");
}

#else
int main(void) {
    fprintf(stderr, "SKIP: no CUDA (built without -DHEARTH_CUDA=ON)\n");
    return 77;
}
#endif
