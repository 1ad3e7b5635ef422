/* Every CPU backend op against a plain double-precision reference written
 * here, on random non-zero inputs, for each kernel table the machine has
 * (HEARTH_CPU_ISA=scalar, avx2, avx512) and with 1 and 3 threads.
 * Tolerances (float32 compute vs double reference):
 *   linear / moe / attention dot products: 1e-5 * sum|terms| + 1e-6 absolute
 *     (float32 accumulation in a different order; K up to 4100);
 *   rmsnorm, rope, swiglu, softmax outputs: 2e-6 relative + 1e-6 absolute;
 *   embed, add, get_rows, kv_store: exact. */
#include <stdint.h>

#include "backend/backend.h"
#include "backend/cpu/cpu.h"
#include "test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / (double)(1ull << 52) - 1.0;
}
static float nz(void) { /* random, never zero */
    float v = (float)urand();
    return v == 0 ? 0.5f : v;
}
static int irand(int n) { return (int)((urand() + 1.0) * 0.5 * n) % n; }

static hr_backend *be;
static const char *isa_now;

static hr_tensor *mk(hr_dtype dt, int ndim, const int64_t *ne, const void *data) {
    hr_tensor *t = be->ops->tensor_new(be, dt, ndim, ne, "t");
    if (t && data) be->ops->tensor_set(be, t, data, 0, t->nbytes);
    return t;
}
static void rm(hr_tensor *t) { be->ops->tensor_free(be, t); }

/* Random weights stored as dt; ref receives the values the codes decode to. */
static void *rand_weights(hr_dtype dt, size_t n, double *ref, double amp) {
    void *w = malloc(n * hr_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = nz() * (float)amp;
        if (dt == HR_F32)
            ((float *)w)[i] = v, ref[i] = v;
        else if (dt == HR_BF16)
            ((uint16_t *)w)[i] = hr_f32_to_bf16(v), ref[i] = hr_bf16_to_f32(((uint16_t *)w)[i]);
        else
            ((uint16_t *)w)[i] = hr_f32_to_f16(v), ref[i] = hr_f16_to_f32(((uint16_t *)w)[i]);
    }
    return w;
}

static float *rand_f32(size_t n, double amp) {
    float *v = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) v[i] = nz() * (float)amp;
    return v;
}

static int worst_fail; /* one message per failing op is enough */
#define CHECK_CLOSE(got, want, tol, what)                                                                              \
    do {                                                                                                               \
        double g_ = (got), w_ = (want), t_ = (tol);                                                                    \
        if (!(fabs(g_ - w_) <= t_)) {                                                                                  \
            if (worst_fail++ < 20)                                                                                     \
                fprintf(stderr, "[%s] %s: got %.9g want %.9g (tol %.3g)\n", isa_now, what, g_, w_, t_);                \
            bad++;                                                                                                     \
        }                                                                                                              \
    } while (0)

/* ------------------------------------------------------------------ linear */
static void test_linear(int T, int K, int N, hr_dtype wt, bool bias, float input_scale) {
    int bad = 0;
    double *wref = malloc(sizeof(double) * N * K);
    void *w = rand_weights(wt, (size_t)N * K, wref, 0.5);
    float *x = rand_f32((size_t)T * K, input_scale > 0 ? 3.0 : 1.0);
    float *b = rand_f32((size_t)N, 1.0);
    int64_t new[2] = {N, K}, nex[2] = {T, K}, neo[2] = {T, N}, neb[1] = {N};
    hr_tensor *tw = mk(wt, 2, new, w), *tx = mk(HR_F32, 2, nex, x), *to = mk(HR_F32, 2, neo, NULL);
    hr_tensor *tb = bias ? mk(HR_F32, 1, neb, b) : NULL;
    hr_linear l = {.w = tw, .bias = tb, .input_scale = input_scale};
    CHECK_EQ_INT(be->ops->linear(be, to, tx, &l), HR_OK);
    float *o = malloc(sizeof(float) * T * N);
    be->ops->tensor_get(be, to, o, 0, to->nbytes);
    for (int t = 0; t < T; t++)
        for (int n = 0; n < N; n++) {
            double s = bias ? b[n] : 0, mag = fabs(s);
            for (int k = 0; k < K; k++) {
                double xv = x[(size_t)t * K + k];
                if (input_scale > 0)
                    xv = (double)hr_e4m3_to_f32(hr_f32_to_e4m3(x[(size_t)t * K + k] / input_scale)) * input_scale;
                s += xv * wref[(size_t)n * K + k];
                mag += fabs(xv * wref[(size_t)n * K + k]);
            }
            CHECK_CLOSE(o[(size_t)t * N + n], s, 1e-5 * mag + 1e-6, "linear");
        }
    CHECK_MSG(bad == 0, "[%s] linear T=%d K=%d N=%d %s bias=%d fp8=%g: %d wrong", isa_now, T, K, N, hr_dtype_name(wt),
              bias, input_scale, bad);
    rm(tw), rm(tx), rm(to);
    if (tb) rm(tb);
    free(wref), free(w), free(x), free(b), free(o);
}

static void test_linear_all(void) {
    static const int shapes[][3] = {{1, 1, 1},   {1, 17, 5}, {1, 64, 8},    {2, 33, 7},  {3, 100, 13}, {4, 16, 4},
                                    {5, 129, 9}, {7, 15, 3}, {1, 4100, 11}, {70, 37, 6}, {130, 48, 5}};
    hr_dtype dts[] = {HR_F32, HR_BF16, HR_F16};
    for (size_t s = 0; s < HR_ARRAY_LEN(shapes); s++)
        for (int d = 0; d < 3; d++) test_linear(shapes[s][0], shapes[s][1], shapes[s][2], dts[d], (s + d) % 2, 0);
    /* W8A8: inputs up to 3 at scale 0.01 saturate (3/0.01 > 448) and cover subnormals */
    test_linear(3, 40, 6, HR_BF16, true, 0.01f);
    test_linear(1, 257, 5, HR_F16, false, 0.0037f);
    test_linear(66, 19, 3, HR_F32, false, 0.02f);
}

/* The fast FP8 input rounding equals the core encoder/decoder bit for bit,
 * over random magnitudes 2^-14..2^10, exact code midpoints and saturation. */
static void test_fp8_round(void) {
    int bad = 0;
    float scales[] = {1.0f, 0.0123f, 3.7f};
    for (int si = 0; si < 3; si++) {
        float s = scales[si];
        for (int i = 0; i < 200000; i++) {
            float v;
            if (i < 256 * 2) {       /* midpoints between neighbouring codes (ties) and the codes themselves */
                int c = i / 2 % 126; /* 0x7f is NaN */
                float lo = hr_e4m3_to_f32((uint8_t)c), hi = hr_e4m3_to_f32((uint8_t)(c + 1));
                v = i % 2 ? lo : (lo + hi) / 2;
                if (i >= 256) v = -v;
            } else {
                v = (float)(urand() * ldexp(1.0, irand(25) - 14));
            }
            float x = v * s;
            float want = hr_e4m3_to_f32(hr_f32_to_e4m3(x / s)) * s, got = cpu_fp8_round(x, s);
            if (memcmp(&want, &got, 4) && !(want == 0 && got == 0)) {
                if (bad++ < 5) fprintf(stderr, "fp8 round %.9g at scale %g: got %.9g want %.9g\n", x, s, got, want);
            }
        }
    }
    float big = cpu_fp8_round(1e6f, 1.0f), nbig = cpu_fp8_round(-500.0f, 1.0f);
    CHECK(big == 448.0f && nbig == -448.0f);
    CHECK_MSG(bad == 0, "fp8 rounding: %d values differ from the core conversion", bad);
}

/* ------------------------------------------------------------------ norms */
static void test_norm(int rows, int cols, hr_dtype wt, bool with_residual) {
    int bad = 0;
    float eps = 1e-5f;
    double *wref = malloc(sizeof(double) * cols);
    void *w = rand_weights(wt, (size_t)cols, wref, 1.0);
    float *x = rand_f32((size_t)rows * cols, 2.0), *res = rand_f32((size_t)rows * cols, 2.0);
    int64_t ne[2] = {rows, cols}, new[1] = {cols};
    hr_tensor *tx = mk(HR_F32, 2, ne, x), *tr = mk(HR_F32, 2, ne, res), *to = mk(HR_F32, 2, ne, NULL);
    hr_tensor *tw = mk(wt, 1, new, w);
    int rc = with_residual ? be->ops->add_rmsnorm(be, to, tr, tx, tw, eps) : be->ops->rmsnorm(be, to, tx, tw, eps);
    CHECK_EQ_INT(rc, HR_OK);
    float *o = malloc(sizeof(float) * rows * cols), *r2 = malloc(sizeof(float) * rows * cols);
    be->ops->tensor_get(be, to, o, 0, to->nbytes);
    be->ops->tensor_get(be, tr, r2, 0, tr->nbytes);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * cols + c;
            double v = with_residual ? (double)(res[i] + x[i]) : x[i]; /* the stored residual is a float sum */
            if (with_residual && r2[i] != res[i] + x[i]) bad++;
            ss += v * v;
        }
        double inv = 1.0 / sqrt(ss / cols + eps);
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * cols + c;
            double v = with_residual ? (double)(res[i] + x[i]) : x[i];
            double want = v * inv * wref[c];
            CHECK_CLOSE(o[i], want, 2e-6 * fabs(want) + 1e-6, with_residual ? "add_rmsnorm" : "rmsnorm");
        }
    }
    CHECK_MSG(bad == 0, "[%s] rmsnorm rows=%d cols=%d res=%d: %d wrong", isa_now, rows, cols, with_residual, bad);
    rm(tx), rm(tr), rm(to), rm(tw);
    free(wref), free(w), free(x), free(res), free(o), free(r2);
}

/* ------------------------------------------------------------------ embed, add, get_rows */
static void test_embed_add_rows(hr_dtype dt) {
    int bad = 0, V = 37, D = 19, T = 6;
    double *ref = malloc(sizeof(double) * V * D);
    void *tab = rand_weights(dt, (size_t)V * D, ref, 1.0);
    int32_t toks[6] = {0, 36, 5, 5, 17, 2};
    int64_t net[2] = {V, D}, neo[2] = {T, D};
    hr_tensor *tt = mk(dt, 2, net, tab), *to = mk(HR_F32, 2, neo, NULL), *ta = mk(HR_F32, 2, neo, NULL);
    hr_step st = {.n_tokens = T, .tokens = toks};
    CHECK_EQ_INT(be->ops->embed(be, to, tt, &st), HR_OK);
    float o[6 * 19];
    be->ops->tensor_get(be, to, o, 0, sizeof o);
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) CHECK_CLOSE(o[t * D + d], ref[toks[t] * D + d], 0, "embed");
    /* add: out = a + b (exactly the float sum) */
    float *b = rand_f32((size_t)T * D, 1.0);
    be->ops->tensor_set(be, ta, b, 0, ta->nbytes);
    CHECK_EQ_INT(be->ops->add(be, ta, to, ta), HR_OK); /* in place on b */
    float s[6 * 19];
    be->ops->tensor_get(be, ta, s, 0, sizeof s);
    for (int i = 0; i < T * D; i++) CHECK_CLOSE(s[i], o[i] + b[i], 0, "add");
    /* get_rows */
    int32_t rows[2] = {1, 5};
    st.n_logits = 2, st.logit_rows = rows;
    int64_t neg[2] = {2, D};
    hr_tensor *tg = mk(HR_F32, 2, neg, NULL);
    CHECK_EQ_INT(be->ops->get_rows(be, tg, ta, &st), HR_OK);
    float g[2 * 19];
    be->ops->tensor_get(be, tg, g, 0, sizeof g);
    for (int i = 0; i < 2; i++)
        for (int d = 0; d < D; d++) CHECK_CLOSE(g[i * D + d], s[rows[i] * D + d], 0, "get_rows");
    /* a token outside the vocabulary is an error, not a read past the table */
    int32_t badtok[1] = {V};
    hr_step sb = {.n_tokens = 1, .tokens = badtok};
    CHECK_EQ_INT(be->ops->embed(be, to, tt, &sb), HR_EINVAL);
    CHECK_MSG(bad == 0, "[%s] embed/add/get_rows %s: %d wrong", isa_now, hr_dtype_name(dt), bad);
    rm(tt), rm(to), rm(ta), rm(tg);
    free(ref), free(tab), free(b);
}

/* ------------------------------------------------------------------ swiglu */
static void test_swiglu(hr_act act, int n) {
    int bad = 0;
    float *g = rand_f32((size_t)n, 10.0), *u = rand_f32((size_t)n, 10.0);
    int64_t ne[2] = {1, n};
    hr_tensor *tg = mk(HR_F32, 2, ne, g), *tu = mk(HR_F32, 2, ne, u), *to = mk(HR_F32, 2, ne, NULL);
    CHECK_EQ_INT(be->ops->swiglu(be, to, tg, tu, &act), HR_OK);
    float *o = malloc(sizeof(float) * n);
    be->ops->tensor_get(be, to, o, 0, to->nbytes);
    for (int i = 0; i < n; i++) {
        double gv = g[i], uv = u[i];
        if (act.limit > 0) {
            gv = fmin(gv, act.limit);
            uv = fmax(fmin(uv, act.limit), -act.limit);
        }
        double want = gv / (1 + exp(-act.alpha * gv)) * (uv + act.up_offset);
        CHECK_CLOSE(o[i], want, 2e-6 * fabs(want) + 1e-6, "swiglu");
    }
    CHECK_MSG(bad == 0, "[%s] swiglu alpha=%g limit=%g n=%d: %d wrong", isa_now, act.alpha, act.limit, n, bad);
    rm(tg), rm(tu), rm(to);
    free(g), free(u), free(o);
}

/* ------------------------------------------------------------------ rope */
static void test_rope(int n_heads, int head_dim, int rot_dim, float mscale) {
    int bad = 0, T = 5;
    int32_t pos[5] = {0, 1, 17, 4095, 131000};
    float inv[64];
    for (int i = 0; i < rot_dim / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / rot_dim);
    int W = n_heads * head_dim;
    float *x = rand_f32((size_t)T * W, 1.0), *o = malloc(sizeof(float) * T * W);
    int64_t ne[2] = {T, W};
    hr_tensor *tx = mk(HR_F32, 2, ne, x);
    hr_rope rp = {.head_dim = head_dim, .rot_dim = rot_dim, .inv_freq = inv, .mscale = mscale};
    hr_step st = {.n_tokens = T, .positions = pos};
    CHECK_EQ_INT(be->ops->rope(be, tx, n_heads, &rp, &st), HR_OK);
    be->ops->tensor_get(be, tx, o, 0, tx->nbytes);
    int half = rot_dim / 2;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < n_heads; h++) {
            const float *v = x + (size_t)t * W + h * head_dim;
            const float *r = o + (size_t)t * W + h * head_dim;
            for (int i = 0; i < head_dim; i++) {
                double want = v[i];
                if (i < rot_dim) {
                    int j = i % half;
                    double a = (double)((float)pos[t] * inv[j]); /* HF: the angle is a float32 product */
                    double c = cos(a) * mscale, s = sin(a) * mscale;
                    want = i < half ? v[i] * c - v[i + half] * s : v[i] * c + v[i - half] * s;
                }
                double partner = i < half ? v[i + half] : i < rot_dim ? v[i - half] : 0;
                CHECK_CLOSE(r[i], want, 2e-6 * (fabs(v[i]) + fabs(partner)) * mscale + 1e-6, "rope");
            }
        }
    CHECK_MSG(bad == 0, "[%s] rope heads=%d hd=%d rot=%d: %d wrong", isa_now, n_heads, head_dim, rot_dim, bad);
    rm(tx);
    free(x), free(o);
}

/* ------------------------------------------------------------------ fused q|k|v, packed gate|up */
/* qkv_rope_store on the fused rows equals rope(q), rope(k), kv_store on the
 * split parts exactly (same arithmetic); packed SwiGLU equals the split one. */
static void test_fused_parts(int nh, int nkv, int hd, int rot) {
    int bad = 0, T = 4, bs = 4, nblk = 6;
    int32_t pos[4] = {0, 7, 8, 3}, slots[4] = {5, 21, 2, 14};
    float inv[64];
    for (int i = 0; i < rot / 2; i++) inv[i] = powf(10000.0f, -2.0f * i / rot);
    hr_rope rp = {.head_dim = hd, .rot_dim = rot, .inv_freq = inv, .mscale = 1.1f};
    hr_step st = {.n_tokens = T, .positions = pos, .slot_mapping = slots, .block_size = bs};
    int64_t qd = (int64_t)nh * hd, kvd = (int64_t)nkv * hd, ld = qd + 2 * kvd, n = (int64_t)nblk * bs * kvd;
    float *x = rand_f32((size_t)(T * ld), 1.0), *q = malloc(sizeof(float) * T * qd), *k = malloc(sizeof(float) * T * kvd),
          *v = malloc(sizeof(float) * T * kvd);
    for (int t = 0; t < T; t++) {
        memcpy(q + t * qd, x + t * ld, sizeof(float) * qd);
        memcpy(k + t * kvd, x + t * ld + qd, sizeof(float) * kvd);
        memcpy(v + t * kvd, x + t * ld + qd + kvd, sizeof(float) * kvd);
    }
    int64_t ne_x[2] = {T, ld}, ne_q[2] = {T, qd}, ne_kv[2] = {T, kvd}, ne_c[4] = {nblk, bs, nkv, hd};
    float *c0 = rand_f32((size_t)n, 1.0);
    hr_tensor *tx = mk(HR_F32, 2, ne_x, x), *tq = mk(HR_F32, 2, ne_q, NULL), *tq2 = mk(HR_F32, 2, ne_q, q);
    hr_tensor *tk = mk(HR_F32, 2, ne_kv, k), *tv = mk(HR_F32, 2, ne_kv, v);
    hr_tensor *kc = mk(HR_F32, 4, ne_c, c0), *vc = mk(HR_F32, 4, ne_c, c0), *kc2 = mk(HR_F32, 4, ne_c, c0),
              *vc2 = mk(HR_F32, 4, ne_c, c0);
    CHECK_EQ_INT(be->ops->qkv_rope_store(be, tq, tx, kc, vc, nh, nkv, &rp, &st), HR_OK);
    CHECK_EQ_INT(be->ops->rope(be, tq2, nh, &rp, &st), HR_OK);
    CHECK_EQ_INT(be->ops->rope(be, tk, nkv, &rp, &st), HR_OK);
    CHECK_EQ_INT(be->ops->kv_store(be, kc2, vc2, tk, tv, &st), HR_OK);
    float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
    hr_tensor *pairs[3][2] = {{tq, tq2}, {kc, kc2}, {vc, vc2}};
    for (int i = 0; i < 3; i++) {
        be->ops->tensor_get(be, pairs[i][0], a, 0, pairs[i][0]->nbytes);
        be->ops->tensor_get(be, pairs[i][1], b, 0, pairs[i][1]->nbytes);
        bad += memcmp(a, b, pairs[i][0]->nbytes) != 0;
    }
    CHECK_MSG(bad == 0, "[%s] qkv_rope_store %d/%d hd %d rot %d differs from rope + kv_store", isa_now, nh, nkv, hd, rot);
    /* a narrower q_out than n_heads * head_dim is refused */
    int64_t ne_bad[2] = {T, qd - hd};
    hr_tensor *tbad = mk(HR_F32, 2, ne_bad, NULL);
    CHECK(be->ops->qkv_rope_store(be, tbad, tx, kc, vc, nh, nkv, &rp, &st) == HR_EINVAL);
    rm(tbad);

    /* packed SwiGLU */
    int F = 37;
    int64_t ne_gu[2] = {T, 2 * F}, ne_f[2] = {T, F};
    float *gu = rand_f32((size_t)(T * 2 * F), 6.0), *g = malloc(sizeof(float) * T * F), *u = malloc(sizeof(float) * T * F);
    for (int t = 0; t < T; t++) {
        memcpy(g + t * F, gu + t * 2 * F, sizeof(float) * F);
        memcpy(u + t * F, gu + t * 2 * F + F, sizeof(float) * F);
    }
    hr_tensor *tgu = mk(HR_F32, 2, ne_gu, gu), *tg = mk(HR_F32, 2, ne_f, g), *tu = mk(HR_F32, 2, ne_f, u);
    hr_tensor *o1 = mk(HR_F32, 2, ne_f, NULL), *o2 = mk(HR_F32, 2, ne_f, NULL);
    hr_act act = {1.0f, 0, 0};
    CHECK_EQ_INT(be->ops->swiglu(be, o1, tgu, NULL, &act), HR_OK);
    CHECK_EQ_INT(be->ops->swiglu(be, o2, tg, tu, &act), HR_OK);
    be->ops->tensor_get(be, o1, a, 0, o1->nbytes);
    be->ops->tensor_get(be, o2, b, 0, o2->nbytes);
    CHECK_MSG(memcmp(a, b, o1->nbytes) == 0, "[%s] packed swiglu differs from split swiglu", isa_now);
    rm(tgu), rm(tg), rm(tu), rm(o1), rm(o2);
    free(gu), free(g), free(u);
    rm(tx), rm(tq), rm(tq2), rm(tk), rm(tv), rm(kc), rm(vc), rm(kc2), rm(vc2);
    free(x), free(q), free(k), free(v), free(c0), free(a), free(b);
}

/* ------------------------------------------------------------------ kv_store + attention */
typedef struct {
    int ctx, q; /* context after the step, new tokens in it */
} seq_spec;

/* n_seqs sequences with the given contexts; the cache holds the older keys,
 * kv_store writes the new ones; block tables are a random permutation with
 * -1 holes where no key is read (below the sliding window and past the end). */
static void test_attention(const seq_spec *ss, int n_seqs, int n_heads, int n_kv, int hd, int window, bool sinks,
                           int bs) {
    int bad = 0;
    int mbps = 0, T = 0, total_blocks = 0;
    for (int s = 0; s < n_seqs; s++) {
        mbps = HR_MAX(mbps, HR_CDIV(ss[s].ctx, bs) + 1);
        T += ss[s].q;
        total_blocks += HR_CDIV(ss[s].ctx, bs);
    }
    int n_blocks = total_blocks + 3, row = n_kv * hd, W = n_heads * hd;
    int32_t *perm = malloc(sizeof(int32_t) * n_blocks);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = irand(i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *bt = malloc(sizeof(int32_t) * n_seqs * mbps), *qs = malloc(sizeof(int32_t) * (n_seqs + 1));
    int32_t *lens = malloc(sizeof(int32_t) * n_seqs), *pos = malloc(sizeof(int32_t) * T);
    int32_t *slots = malloc(sizeof(int32_t) * T), *tseq = malloc(sizeof(int32_t) * T);
    /* logical K/V per sequence: [s][pos][row] */
    float **K = malloc(sizeof(float *) * n_seqs), **V = malloc(sizeof(float *) * n_seqs);
    size_t cache_n = (size_t)n_blocks * bs * row;
    float *kc = rand_f32(cache_n, 1.0), *vc = rand_f32(cache_n, 1.0); /* garbage where nothing is stored */
    float *knew = malloc(sizeof(float) * T * row), *vnew = malloc(sizeof(float) * T * row);
    int used = 0, t = 0;
    qs[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        int nb = HR_CDIV(ss[s].ctx, bs);
        for (int b = 0; b < mbps; b++) bt[s * mbps + b] = b < nb ? perm[used + b] : -1;
        used += nb;
        lens[s] = ss[s].ctx;
        qs[s + 1] = qs[s] + ss[s].q;
        K[s] = rand_f32((size_t)ss[s].ctx * row, 1.0);
        V[s] = rand_f32((size_t)ss[s].ctx * row, 1.0);
        for (int p = 0; p < ss[s].ctx; p++) {
            int slot = bt[s * mbps + p / bs] * bs + p % bs;
            if (p < ss[s].ctx - ss[s].q) { /* old key: already in the cache */
                memcpy(kc + (size_t)slot * row, K[s] + (size_t)p * row, sizeof(float) * row);
                memcpy(vc + (size_t)slot * row, V[s] + (size_t)p * row, sizeof(float) * row);
            } else { /* new token of this step */
                pos[t] = p, slots[t] = slot, tseq[t] = s;
                memcpy(knew + (size_t)t * row, K[s] + (size_t)p * row, sizeof(float) * row);
                memcpy(vnew + (size_t)t * row, V[s] + (size_t)p * row, sizeof(float) * row);
                t++;
            }
        }
        if (window > 0) { /* blocks wholly below every query's window are freed: holes */
            int first_q = ss[s].ctx - ss[s].q, lo = HR_MAX(0, first_q - window + 1);
            for (int b = 0; b < lo / bs; b++) bt[s * mbps + b] = -1;
        }
    }
    float *sink = rand_f32((size_t)n_heads, 2.0);
    float *q = rand_f32((size_t)T * W, 1.0);
    int64_t nec[4] = {n_blocks, bs, n_kv, hd}, nekv[2] = {T, row}, neq[2] = {T, W}, nes[1] = {n_heads};
    hr_tensor *tkc = mk(HR_F32, 4, nec, kc), *tvc = mk(HR_F32, 4, nec, vc);
    hr_tensor *tk = mk(HR_F32, 2, nekv, knew), *tv = mk(HR_F32, 2, nekv, vnew);
    hr_tensor *tq = mk(HR_F32, 2, neq, q), *to = mk(HR_F32, 2, neq, NULL), *tsink = mk(HR_F32, 1, nes, sink);
    hr_step st = {.n_tokens = T,
                  .positions = pos,
                  .slot_mapping = slots,
                  .n_seqs = n_seqs,
                  .query_start = qs,
                  .seq_lens = lens,
                  .block_tables = bt,
                  .max_blocks_per_seq = mbps,
                  .block_size = bs};
    hr_attn_params ap = {.n_heads = n_heads,
                         .n_kv_heads = n_kv,
                         .head_dim = hd,
                         .scale = 1.0f / sqrtf((float)hd),
                         .window = window,
                         .sinks = sinks ? tsink : NULL};
    CHECK_EQ_INT(be->ops->kv_store(be, tkc, tvc, tk, tv, &st), HR_OK);
    /* kv_store placed each new key at its slot, exactly */
    float *kc2 = malloc(sizeof(float) * cache_n);
    be->ops->tensor_get(be, tkc, kc2, 0, tkc->nbytes);
    for (int i = 0; i < T; i++)
        for (int c = 0; c < row; c++)
            CHECK_CLOSE(kc2[(size_t)slots[i] * row + c], knew[(size_t)i * row + c], 0, "kv_store");
    CHECK_EQ_INT(be->ops->attention(be, to, tq, tkc, tvc, &st, &ap), HR_OK);
    float *o = malloc(sizeof(float) * T * W);
    be->ops->tensor_get(be, to, o, 0, to->nbytes);
    double *sc = malloc(sizeof(double) * (mbps * bs + 1));
    for (int i = 0; i < T; i++) {
        int s = tseq[i], p = pos[i];
        for (int h = 0; h < n_heads; h++) {
            int kvh = h / (n_heads / n_kv);
            const float *qv = q + (size_t)i * W + h * hd;
            int lo = window > 0 ? HR_MAX(0, p - window + 1) : 0;
            double m = sinks ? sink[h] : -INFINITY, den = 0, mag = 0;
            for (int j = lo; j <= p; j++) {
                double d = 0;
                for (int c = 0; c < hd; c++) d += (double)qv[c] * K[s][(size_t)j * row + kvh * hd + c];
                sc[j - lo] = d / sqrt((double)hd);
                m = fmax(m, sc[j - lo]);
            }
            for (int j = lo; j <= p; j++) den += sc[j - lo] = exp(sc[j - lo] - m);
            if (sinks) den += exp(sink[h] - m);
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                mag = 0;
                for (int j = lo; j <= p; j++) {
                    acc += sc[j - lo] * V[s][(size_t)j * row + kvh * hd + c];
                    mag += sc[j - lo] * fabs(V[s][(size_t)j * row + kvh * hd + c]);
                }
                CHECK_CLOSE(o[(size_t)i * W + h * hd + c], acc / den, 1e-5 * mag / den + 1e-6, "attention");
            }
        }
    }
    CHECK_MSG(bad == 0, "[%s] attention heads=%d kv=%d hd=%d window=%d sinks=%d bs=%d: %d wrong", isa_now, n_heads,
              n_kv, hd, window, sinks, bs, bad);

    /* a token whose keys sit in a hole is refused, not read */
    int hole_s = n_seqs - 1;
    int32_t keep = bt[hole_s * mbps];
    if (window == 0 && keep >= 0) {
        bt[hole_s * mbps] = -1;
        CHECK_EQ_INT(be->ops->attention(be, to, tq, tkc, tvc, &st, &ap), HR_EINVAL);
        bt[hole_s * mbps] = keep;
    }
    for (int s = 0; s < n_seqs; s++) free(K[s]), free(V[s]);
    free(K), free(V), free(perm), free(bt), free(qs), free(lens), free(pos), free(slots), free(tseq);
    free(kc), free(vc), free(kc2), free(knew), free(vnew), free(sink), free(q), free(o), free(sc);
    rm(tkc), rm(tvc), rm(tk), rm(tv), rm(tq), rm(to), rm(tsink);
}

static void test_attention_all(void) {
    /* ragged: decode, prefill from zero, chunked prefill, a 1-token sequence */
    seq_spec ragged[] = {{13, 1}, {9, 9}, {30, 5}, {1, 1}};
    int ratios[][2] = {{4, 4}, {4, 2}, {8, 2}};
    for (int r = 0; r < 3; r++) {
        test_attention(ragged, 4, ratios[r][0], ratios[r][1], 16, 0, false, 4);
        test_attention(ragged, 4, ratios[r][0], ratios[r][1], 20, 5, r != 1, 4);
        test_attention(ragged, 4, ratios[r][0], ratios[r][1], 36, 0, true, 16);
    }
    /* long context decode and a sliding window over it */
    seq_spec longc[] = {{3000, 1}, {700, 3}};
    test_attention(longc, 2, 4, 2, 64, 0, false, 16);
    test_attention(longc, 2, 4, 1, 64, 128, true, 16);
}

/* ------------------------------------------------------------------ moe */
static void test_moe(int T, int E, int k, hr_route route, bool renorm, bool biases, hr_act act, hr_dtype wt,
                     bool ties) {
    int bad = 0, H = 24, F = 20;
    double *rref = malloc(sizeof(double) * E * H), *gref = malloc(sizeof(double) * E * F * H);
    double *uref = malloc(sizeof(double) * E * F * H), *dref = malloc(sizeof(double) * E * H * F);
    void *rw = rand_weights(HR_F32, (size_t)E * H, rref, 0.5);
    if (ties) { /* experts 1 and 2 get identical router rows: equal logits, lower index must win */
        memcpy((float *)rw + 2 * H, (float *)rw + 1 * H, sizeof(float) * H);
        memcpy(rref + 2 * H, rref + 1 * H, sizeof(double) * H);
    }
    void *gw = rand_weights(wt, (size_t)E * F * H, gref, 0.5), *uw = rand_weights(wt, (size_t)E * F * H, uref, 0.5);
    void *dw = rand_weights(wt, (size_t)E * H * F, dref, 0.5);
    float *rb = rand_f32((size_t)E, 1.0), *gb = rand_f32((size_t)E * F, 0.5), *ub = rand_f32((size_t)E * F, 0.5);
    float *db = rand_f32((size_t)E * H, 0.5), *x = rand_f32((size_t)T * H, 1.0);
    if (ties) rb[2] = rb[1];
    int64_t ner[2] = {E, H}, neg[3] = {E, F, H}, ned[3] = {E, H, F}, nerb[1] = {E}, negb[2] = {E, F}, nedb[2] = {E, H},
            nex[2] = {T, H};
    hr_tensor *trw = mk(HR_F32, 2, ner, rw), *tg = mk(wt, 3, neg, gw), *tu = mk(wt, 3, neg, uw),
              *td = mk(wt, 3, ned, dw), *trb = mk(HR_F32, 1, nerb, rb), *tgb = mk(HR_F32, 2, negb, gb),
              *tub = mk(HR_F32, 2, negb, ub), *tdb = mk(HR_F32, 2, nedb, db), *tx = mk(HR_F32, 2, nex, x),
              *to = mk(HR_F32, 2, nex, NULL);
    hr_moe m = {.n_experts = E,
                .top_k = k,
                .route = route,
                .renormalize = renorm,
                .router = {.w = trw, .bias = biases ? trb : NULL},
                .gate = tg,
                .up = tu,
                .down = td,
                .gate_bias = biases ? tgb : NULL,
                .up_bias = biases ? tub : NULL,
                .down_bias = biases ? tdb : NULL,
                .act = act};
    CHECK_EQ_INT(be->ops->moe(be, to, tx, &m), HR_OK);
    float *o = malloc(sizeof(float) * T * H);
    be->ops->tensor_get(be, to, o, 0, to->nbytes);
    double lg[16], pr[16], a[64], ym[64];
    for (int t = 0; t < T; t++) {
        const float *xv = x + (size_t)t * H;
        for (int e = 0; e < E; e++) {
            lg[e] = biases ? rb[e] : 0;
            for (int h = 0; h < H; h++) lg[e] += rref[e * H + h] * xv[h];
        }
        const double *key = lg;
        if (route == HR_ROUTE_SOFTMAX_TOPK) {
            double mx = -INFINITY, s = 0;
            for (int e = 0; e < E; e++) mx = fmax(mx, lg[e]);
            for (int e = 0; e < E; e++) s += pr[e] = exp(lg[e] - mx);
            for (int e = 0; e < E; e++) pr[e] /= s;
            key = pr;
        }
        int ids[8];
        double w[8], ws = 0;
        for (int i = 0; i < k; i++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < i; j++) taken |= ids[j] == e;
                if (!taken && (best < 0 || key[e] > key[best])) best = e;
            }
            ids[i] = best;
        }
        if (ties) CHECK_MSG(!(ids[0] == 2 && key[1] == key[2]), "tie went to the higher index");
        if (route == HR_ROUTE_TOPK_SOFTMAX) {
            for (int i = 0; i < k; i++) ws += w[i] = exp(lg[ids[i]] - lg[ids[0]]);
            for (int i = 0; i < k; i++) w[i] /= ws;
        } else {
            for (int i = 0; i < k; i++) ws += w[i] = pr[ids[i]];
            if (renorm)
                for (int i = 0; i < k; i++) w[i] /= ws;
        }
        double want[64] = {0}, mag[64] = {0};
        for (int i = 0; i < k; i++) {
            int e = ids[i];
            for (int f = 0; f < F; f++) {
                double g = biases ? gb[e * F + f] : 0, u = biases ? ub[e * F + f] : 0;
                for (int h = 0; h < H; h++) {
                    g += gref[((size_t)e * F + f) * H + h] * xv[h];
                    u += uref[((size_t)e * F + f) * H + h] * xv[h];
                }
                if (act.limit > 0) g = fmin(g, act.limit), u = fmax(fmin(u, act.limit), -act.limit);
                a[f] = g / (1 + exp(-act.alpha * g)) * (u + act.up_offset);
            }
            for (int h = 0; h < H; h++) {
                double y = biases ? db[e * H + h] : 0, ym_ = fabs(y);
                for (int f = 0; f < F; f++) {
                    y += dref[((size_t)e * H + h) * F + f] * a[f];
                    ym_ += fabs(dref[((size_t)e * H + h) * F + f] * a[f]);
                }
                ym[h] = ym_;
                want[h] += w[i] * y;
                mag[h] += w[i] * ym[h];
            }
        }
        for (int h = 0; h < H; h++) CHECK_CLOSE(o[(size_t)t * H + h], want[h], 1e-5 * mag[h] + 1e-5, "moe");
    }
    CHECK_MSG(bad == 0, "[%s] moe T=%d E=%d k=%d route=%d %s: %d wrong", isa_now, T, E, k, route, hr_dtype_name(wt),
              bad);
    rm(trw), rm(tg), rm(tu), rm(td), rm(trb), rm(tgb), rm(tub), rm(tdb), rm(tx), rm(to);
    free(rref), free(gref), free(uref), free(dref), free(rw), free(gw), free(uw), free(dw);
    free(rb), free(gb), free(ub), free(db), free(x), free(o);
}

static void test_moe_all(void) {
    hr_act plain = {1.0f, 0, 0}, oss = {1.702f, 7.0f, 1.0f};
    test_moe(1, 4, 2, HR_ROUTE_SOFTMAX_TOPK, true, false, plain, HR_BF16, false);
    test_moe(7, 4, 2, HR_ROUTE_SOFTMAX_TOPK, true, false, plain, HR_BF16, false);
    test_moe(9, 8, 3, HR_ROUTE_SOFTMAX_TOPK, false, false, plain, HR_F16, false);
    test_moe(1, 5, 3, HR_ROUTE_TOPK_SOFTMAX, false, true, oss, HR_F32, false);
    test_moe(11, 6, 2, HR_ROUTE_TOPK_SOFTMAX, false, true, oss, HR_BF16, false);
    test_moe(6, 4, 1, HR_ROUTE_SOFTMAX_TOPK, true, false, plain, HR_F32, true);
    test_moe(6, 4, 1, HR_ROUTE_TOPK_SOFTMAX, false, true, oss, HR_F32, true);
}

/* ------------------------------------------------------------------ errors */
static void test_errors(void) {
    int64_t nw[2] = {4, 8}, nx[2] = {2, 9}, no[2] = {2, 4};
    hr_tensor *w = mk(HR_F32, 2, nw, NULL), *x = mk(HR_F32, 2, nx, NULL), *o = mk(HR_F32, 2, no, NULL);
    hr_linear l = {.w = w};
    CHECK_EQ_INT(be->ops->linear(be, o, x, &l), HR_EINVAL); /* K mismatch */
    CHECK(strstr(be->err.msg, "linear") != NULL);
    hr_tensor *wi = mk(HR_I8, 2, nw, NULL);
    hr_linear li = {.w = wi};
    int64_t nx8[2] = {2, 8};
    hr_tensor *x8 = mk(HR_F32, 2, nx8, NULL);
    CHECK_EQ_INT(be->ops->linear(be, o, x8, &li), HR_EUNSUP);
    CHECK(be->ops->supports_weight(be, HR_BF16) && be->ops->supports_weight(be, HR_F16) &&
          !be->ops->supports_weight(be, HR_I8));
    float buf[4];
    CHECK_EQ_INT(be->ops->tensor_get(be, o, buf, o->nbytes - 4, 8), HR_EINVAL);
    CHECK_EQ_INT(be->ops->step_begin(be, NULL), HR_OK);
    CHECK_EQ_INT(be->ops->step_end(be), HR_OK);
    CHECK_EQ_INT(be->ops->sync(be), HR_OK);
    rm(w), rm(x), rm(o), rm(wi), rm(x8);
}

/* Tensors small and large (the mapped huge-page path): zeroed, 64-byte
 * aligned, set/get round trip, counted by mem_info. */
static void test_tensors(void) {
    int64_t sizes[] = {1, 1000, (3 << 20) / 4 + 5};
    for (int i = 0; i < 3; i++) {
        size_t before = 0, after = 0, peak = 0, total = 0;
        be->ops->mem_info(be, &before, NULL, NULL);
        int64_t ne[1] = {sizes[i]};
        hr_tensor *t = mk(HR_F32, 1, ne, NULL);
        CHECK(t != NULL);
        if (!t) continue;
        be->ops->mem_info(be, &after, &peak, &total);
        CHECK(after >= before + t->nbytes && peak >= after && total > 0);
        CHECK(((uintptr_t)t->data & 63) == 0);
        float *h = malloc(t->nbytes);
        be->ops->tensor_get(be, t, h, 0, t->nbytes);
        int nonzero = 0;
        for (int64_t k = 0; k < sizes[i]; k++) nonzero += h[k] != 0;
        CHECK_EQ_INT(nonzero, 0);
        for (int64_t k = 0; k < sizes[i]; k++) h[k] = (float)k;
        be->ops->tensor_set(be, t, h, 0, t->nbytes);
        float last = 0;
        be->ops->tensor_get(be, t, &last, t->nbytes - 4, 4);
        CHECK_EQ_INT((int64_t)last, sizes[i] - 1);
        CHECK_EQ_INT(be->ops->tensor_zero(be, t), HR_OK);
        be->ops->tensor_get(be, t, &last, t->nbytes - 4, 4);
        CHECK(last == 0);
        rm(t);
        be->ops->mem_info(be, &after, NULL, NULL);
        CHECK_EQ_INT(after, before);
        free(h);
    }
}

/* add over several parallel blocks (n not a multiple of the block), in place */
static void test_add_big(void) {
    int bad = 0, n = 70001;
    float *a = rand_f32((size_t)n, 1.0), *b = rand_f32((size_t)n, 1.0), *o = malloc(sizeof(float) * n);
    int64_t ne[1] = {n};
    hr_tensor *ta = mk(HR_F32, 1, ne, a), *tb = mk(HR_F32, 1, ne, b);
    CHECK_EQ_INT(be->ops->add(be, ta, ta, tb), HR_OK);
    be->ops->tensor_get(be, ta, o, 0, ta->nbytes);
    for (int i = 0; i < n; i++) CHECK_CLOSE(o[i], a[i] + b[i], 0, "add");
    CHECK_MSG(bad == 0, "[%s] add n=%d: %d wrong", isa_now, n, bad);
    rm(ta), rm(tb);
    free(a), free(b), free(o);
}

/* The attention kernels of the active table, directly: exp_sum over the whole
 * range softmax feeds it (relative 1e-6; values below e^-87 may flush to 0),
 * dot_rows / axpy_rows for every run length 1..40 and odd widths. */
static void test_attn_kernels(void) {
    const cpu_kernels *k = cpu_of(be)->k;
    int bad = 0;
    float x[300];
    double want[300], wsum = 0;
    for (int i = 0; i < 300; i++) {
        x[i] = i < 3 ? (float)-i : (float)(urand() * 50.0 - 50.0); /* (-100, 0] */
        if (i == 5) x[i] = -86.9f;
        if (i == 6) x[i] = -200.0f;
        want[i] = exp((double)(x[i] - 0.25f)); /* the subtraction is float32, as in the op */
        wsum += want[i];
    }
    float got = k->exp_sum(x, 300, 0.25f);
    CHECK_CLOSE(got, wsum, 1e-6 * wsum, "exp_sum total");
    for (int i = 0; i < 300; i++) CHECK_CLOSE(x[i], want[i], 1e-6 * want[i] + 1e-37, "exp_sum");
    int dims[] = {1, 5, 16, 20, 64, 80, 128};
    for (int di = 0; di < 7; di++) {
        int d = dims[di], stride = d + 3;
        float *q = rand_f32((size_t)d, 1.0), *kv = rand_f32((size_t)40 * stride, 1.0), out[40], w[40], acc[128];
        for (int n = 1; n <= 40; n++) {
            k->dot_rows(q, kv, (size_t)stride, n, d, out);
            for (int i = 0; i < n; i++) {
                double s = 0, mag = 0;
                for (int c = 0; c < d; c++)
                    s += (double)q[c] * kv[i * stride + c], mag += fabs(q[c] * kv[i * stride + c]);
                CHECK_CLOSE(out[i], s, 1e-6 * mag + 1e-7, "dot_rows");
                w[i] = (float)urand();
            }
            for (int c = 0; c < d; c++) acc[c] = 1.0f;
            k->axpy_rows(acc, w, kv, (size_t)stride, n, d);
            for (int c = 0; c < d; c++) {
                double s = 1.0, mag = 1.0;
                for (int i = 0; i < n; i++)
                    s += (double)w[i] * kv[i * stride + c], mag += fabs(w[i] * kv[i * stride + c]);
                CHECK_CLOSE(acc[c], s, 1e-6 * mag, "axpy_rows");
            }
        }
        free(q), free(kv);
    }
    CHECK_MSG(bad == 0, "[%s] attention kernels: %d wrong", isa_now, bad);
}

/* Reference greedy argmax: the maximum over the non-NaN values, then its
 * first index (0 when the row holds only NaN). */
static int32_t ref_argmax(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(x[i]) && x[i] > m) m = x[i];
    for (int64_t i = 0; i < n; i++)
        if (x[i] == m) return (int32_t)i;
    return 0;
}

/* argmax on random rows and the awkward ones: ties (the maximum repeated at
 * several places, lowest wins), a row of -inf, NaN among values, NaN only,
 * FLT_MAX / +inf, and a single column. */
static void test_argmax(int rows, int64_t vocab) {
    float *x = rand_f32((size_t)rows * (size_t)vocab, 10.0);
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * (size_t)vocab;
        switch (r % 7) {
        case 1: /* a tie of the maximum at three places */
            for (int k = 0; k < 3; k++) row[irand((int)vocab)] = 20.0f;
            break;
        case 2:
            for (int64_t c = 0; c < vocab; c++) row[c] = -INFINITY;
            break;
        case 3:
            for (int64_t c = 0; c < vocab; c += 3) row[c] = NAN;
            break;
        case 4:
            for (int64_t c = 0; c < vocab; c++) row[c] = NAN;
            break;
        case 5:
            row[irand((int)vocab)] = 3.0e38f, row[irand((int)vocab)] = 3.0e38f;
            break;
        case 6:
            row[vocab - 1] = INFINITY;
            break;
        }
    }
    int64_t ne[2] = {rows, vocab};
    hr_tensor *t = mk(HR_F32, 2, ne, x);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)rows);
    CHECK_EQ_INT(be->ops->argmax(be, t, ids), HR_OK);
    int bad = 0;
    for (int r = 0; r < rows; r++)
        if (ids[r] != ref_argmax(x + (size_t)r * (size_t)vocab, vocab)) bad++;
    CHECK_MSG(bad == 0, "[%s] argmax %d x %lld: %d rows wrong", isa_now, rows, (long long)vocab, bad);
    rm(t);
    free(x), free(ids);
}

static void run_all(void) {
    CHECK(be->ops->argmax != NULL);
    if (be->ops->argmax) {
        test_argmax(7, 1);
        test_argmax(14, 33);
        test_argmax(9, 50257);
    }
    test_attn_kernels();
    test_tensors();
    test_add_big();
    test_linear_all();
    if (!strcmp(isa_now, "scalar")) test_fp8_round(); /* ISA-independent */
    test_norm(3, 1, HR_F32, false);
    test_norm(5, 7, HR_BF16, true);
    test_norm(2, 1000, HR_F16, true);
    test_norm(33, 64, HR_F32, false);
    test_embed_add_rows(HR_F32);
    test_embed_add_rows(HR_BF16);
    test_embed_add_rows(HR_F16);
    test_swiglu((hr_act){1.0f, 0, 0}, 3001);
    test_swiglu((hr_act){1.702f, 7.0f, 1.0f}, 2047);
    test_rope(3, 64, 64, 1.0f);
    test_rope(2, 48, 32, 1.2f);
    test_fused_parts(4, 2, 16, 16);
    test_fused_parts(3, 1, 24, 8);
    test_attention_all();
    test_moe_all();
    test_errors();
}

int main(void) {
    const char *isas[] = {"scalar", "avx2", "avx512"};
    int threads[] = {1, 3};
    for (int i = 0; i < 3; i++)
        for (int n = 0; n < 2; n++) {
            setenv("HEARTH_CPU_ISA", isas[i], 1);
            hr_err err = {0};
            be = hr_backend_cpu_create(threads[n], &err);
            CHECK_MSG(be != NULL, "%s", err.msg);
            if (!be) continue;
            isa_now = hr_backend_cpu_isa(be);
            if (strcmp(isa_now, isas[i])) { /* the machine lacks this ISA: covered by the scalar run */
                printf("ISA %s not available here, skipped\n", isas[i]);
                hr_backend_free(be);
                continue;
            }
            worst_fail = 0;
            run_all();
            hr_backend_free(be);
        }
    unsetenv("HEARTH_CPU_ISA");
    return test_report("cpu_ops");
}
