/* Portable kernels: the fallback when neither AVX2 nor AVX-512 is usable (or
 * $HEARTH_CPU_ISA=scalar). Same blocking as the SIMD versions: weights are
 * converted to float32 in short chunks and each chunk is used for a block of
 * CPU_TB tokens. */
#include <math.h>

#include "backend/cpu/cpu.h"

#define KCHUNK 256

static void gemm_scalar(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K, int n0,
                        int n1) {
    float wbuf[KCHUNK];
    size_t esz = hr_dtype_size(wt);
    for (int n = n0; n < n1; n++) {
        const char *wr = (const char *)w + (size_t)n * K * esz;
        for (int t0 = 0; t0 < T; t0 += CPU_TB) {
            int tb = HR_MIN(CPU_TB, T - t0);
            float acc[CPU_TB] = {0};
            for (int k0 = 0; k0 < K; k0 += KCHUNK) {
                int kb = HR_MIN(KCHUNK, K - k0);
                hr_convert_to_f32(wt, wr + (size_t)k0 * esz, wbuf, (size_t)kb);
                for (int t = 0; t < tb; t++) {
                    const float *xr = x + (size_t)(t0 + t) * ldx + k0;
                    float a = 0;
                    for (int k = 0; k < kb; k++) a += wbuf[k] * xr[k];
                    acc[t] += a;
                }
            }
            for (int t = 0; t < tb; t++) out[(size_t)(t0 + t) * ldo + n] = acc[t];
        }
    }
}

static void dot_rows_scalar(const float *q, const float *k, size_t stride, int n, int d, float *out) {
    for (int i = 0; i < n; i++) {
        const float *kr = k + (size_t)i * stride;
        float s = 0;
        for (int c = 0; c < d; c++) s += q[c] * kr[c];
        out[i] = s;
    }
}

static void axpy_rows_scalar(float *acc, const float *w, const float *v, size_t stride, int n, int d) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++) acc[c] += w[i] * v[(size_t)i * stride + c];
}

static float exp_sum_scalar(float *x, int n, float m) {
    float s = 0;
    for (int i = 0; i < n; i++) s += x[i] = expf(x[i] - m);
    return s;
}

const cpu_kernels cpu_kernels_scalar = {
    .name = "scalar",
    .gemm = gemm_scalar,
    .dot_rows = dot_rows_scalar,
    .axpy_rows = axpy_rows_scalar,
    .exp_sum = exp_sum_scalar,
};
