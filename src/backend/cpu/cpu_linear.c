/* linear(): out[T, N] = x[T, K] @ W[N, K]^T + bias, float32 accumulation.
 * Work is split over (token block, weight-row tile) items: with one token
 * (decode) that is a split over N, each thread streaming its own slice of the
 * weights; with many tokens each item multiplies a tile of CPU_RB rows by a
 * block of CPU_LIN_TOKENS tokens, whose activations stay in L2 while the ISA
 * kernel reuses every loaded weight slice for CPU_TB tokens at a time. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

#define CPU_LIN_TOKENS        64 /* tokens per work item (x block ~ 64 * K * 4 bytes) */
#define CPU_LIN_FMAS_PER_ITEM 32768

#define E4M3_MAX             448.0f
#define E4M3_MIN_NORMAL      0.015625f /* 2^-6 */
#define E4M3_SUBNORMAL_STEPS 512.0f    /* 1 / 2^-9, the subnormal quantum */

/* Same value as hr_e4m3_to_f32(hr_f32_to_e4m3(x / s)) * s (the test checks it
 * bit for bit), without the generic encoder's frexp/ldexp: round the float32
 * mantissa to 3 bits, ties to even, in the integer domain. */
float cpu_fp8_round(float x, float s) {
    float v = x / s, a = fabsf(v);
    if (isnan(v)) return v;
    if (a >= E4M3_MAX) return copysignf(E4M3_MAX, v) * s;
    float r;
    if (a < E4M3_MIN_NORMAL) {
        r = nearbyintf(a * E4M3_SUBNORMAL_STEPS) / E4M3_SUBNORMAL_STEPS; /* exact scaling by powers of two */
    } else {
        uint32_t u;
        memcpy(&u, &a, 4);
        u += 0x7ffffu + ((u >> 20) & 1u); /* RNE at mantissa bit 20 */
        u &= ~0xfffffu;
        memcpy(&r, &u, 4);
    }
    return copysignf(r, v) * s;
}

typedef struct {
    const cpu_kernels *k;
    float *out;
    int ldo;
    const float *x;
    int T, K, N, n_tiles;
    const void *w;
    hr_dtype wt;
    const float *bias;
} lin_job;

static void lin_items(void *ctx, int b, int e, int tid) {
    (void)tid;
    const lin_job *j = ctx;
    for (int i = b; i < e;) {
        int tb = i / j->n_tiles;
        int tile0 = i % j->n_tiles;
        int tile1 = HR_MIN(j->n_tiles, tile0 + (e - i)); /* stay within this token block */
        int t0 = tb * CPU_LIN_TOKENS, tc = HR_MIN(CPU_LIN_TOKENS, j->T - t0);
        int n0 = tile0 * CPU_RB, n1 = HR_MIN(j->N, tile1 * CPU_RB);
        float *o = j->out + (size_t)t0 * j->ldo;
        j->k->gemm(o, j->ldo, j->x + (size_t)t0 * j->K, j->K, tc, j->w, j->wt, j->K, n0, n1);
        if (j->bias)
            for (int t = 0; t < tc; t++)
                for (int n = n0; n < n1; n++) o[(size_t)t * j->ldo + n] += j->bias[n];
        i += tile1 - tile0;
    }
}

int cpu_linear_raw(hr_backend *be, float *out, int ldo, const float *x, int T, int K, const void *w, hr_dtype wt, int N,
                   const float *bias, float input_scale) {
    cpu_backend *c = cpu_of(be);
    if (T <= 0 || N <= 0) return HR_OK;
    if (input_scale > 0) {
        /* W8A8: the activations the reference saw were E4M3 values */
        float *xq = cpu_shared(be, CPU_SLOT_FP8, (size_t)T * K * sizeof(float));
        if (!xq) return be->err.code;
        for (size_t i = 0; i < (size_t)T * K; i++) xq[i] = cpu_fp8_round(x[i], input_scale);
        x = xq;
    }
    lin_job j = {c->k, out, ldo, x, T, K, N, HR_CDIV(N, CPU_RB), w, wt, bias};
    int n_tb = HR_CDIV(T, CPU_LIN_TOKENS);
    int64_t fmas_per_item = (int64_t)CPU_RB * K * HR_MIN(T, CPU_LIN_TOKENS);
    int grain = (int)HR_MAX(1, CPU_LIN_FMAS_PER_ITEM / HR_MAX(1, fmas_per_item));
    hr_parallel_for(c->pool, n_tb * j.n_tiles, grain, lin_items, &j);
    return HR_OK;
}

int cpu_op_linear(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_linear *l) {
    int rc = cpu_check(be, "linear", x, "x", HR_F32, 1);
    if (rc) return rc;
    const hr_tensor *w = l->w;
    if (!w || !w->data || w->ndim != 2)
        return hr_err_set(&be->err, HR_EINVAL, "cpu linear: weight must be a 2-D tensor");
    if (w->dtype != HR_F32 && w->dtype != HR_BF16 && w->dtype != HR_F16)
        return hr_err_set(&be->err, HR_EUNSUP, "cpu linear: weight '%s' is %s; F32/BF16/F16 supported", w->name,
                          hr_dtype_name(w->dtype));
    int64_t K = hr_tensor_cols(x), T = hr_tensor_rows(x), N = w->ne[0];
    if (w->ne[1] != K)
        return hr_err_set(&be->err, HR_EINVAL, "cpu linear: '%s' is [%lld, %lld] but the input has %lld columns",
                          w->name, (long long)w->ne[0], (long long)w->ne[1], (long long)K);
    if ((rc = cpu_check(be, "linear", out, "out", HR_F32, T * N))) return rc;
    if (hr_tensor_cols(out) != N)
        return hr_err_set(&be->err, HR_EINVAL, "cpu linear: out '%s' has %lld columns, '%s' gives %lld", out->name,
                          (long long)hr_tensor_cols(out), w->name, (long long)N);
    const float *bias = NULL;
    if (l->bias && !(bias = cpu_vec_f32(be, "linear", l->bias, N, CPU_SLOT_VEC))) return be->err.code;
    return cpu_linear_raw(be, out->data, (int)N, x->data, (int)T, (int)K, w->data, w->dtype, (int)N, bias,
                          l->input_scale);
}
