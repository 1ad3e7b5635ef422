/* Portable kernels: the fallback when neither AVX2 nor AVX-512 is usable (or
 * $HEARTH_CPU_ISA=scalar). Same blocking as the SIMD versions: weights are
 * converted to float32 in short chunks and each chunk is used for a block of
 * CPU_TB tokens. */
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

static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

const cpu_kernels cpu_kernels_scalar = {
    .name = "scalar",
    .gemm = gemm_scalar,
    .dot = dot_scalar,
    .axpy = axpy_scalar,
};
