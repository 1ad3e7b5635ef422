/* AVX2 + FMA + F16C kernels (compiled with those flags; only called when the
 * CPU has them). Same tiling as the AVX-512 file but with 16 ymm registers the
 * tile is CPU_RB weight rows x 2 tokens (8 accumulators). AVX2 has no masked
 * 16-bit loads, so the K tail (< 8) is finished in scalar code. */
#include <immintrin.h>
#include <math.h>

#include "backend/cpu/cpu.h"

#define AI static inline __attribute__((always_inline))
/* The r/t loops below must unroll completely so the accumulators live in
 * registers (GCC -O2 keeps them in memory otherwise). */
#define TB2 2

AI __m256 load_w(const void *w, hr_dtype wt, int k) {
    if (wt == HR_F32) return _mm256_loadu_ps((const float *)w + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + k));
    if (wt == HR_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float load_w1(const void *w, hr_dtype wt, int k) {
    if (wt == HR_F32) return ((const float *)w)[k];
    uint16_t h = ((const uint16_t *)w)[k];
    return wt == HR_F16 ? _cvtsh_ss(h) : hr_bf16_to_f32(h);
}

AI float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI void tile(float *out, int ldo, const float *x, int ldx, int tb, const void *const wr[CPU_RB], int nr, hr_dtype wt,
             int K) {
    __m256 acc[CPU_RB][TB2];
#pragma GCC unroll 4
    for (int r = 0; r < CPU_RB; r++)
#pragma GCC unroll 4
        for (int t = 0; t < tb; t++) acc[r][t] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[CPU_RB];
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) wv[r] = load_w(wr[r], wt, k);
#pragma GCC unroll 4
        for (int t = 0; t < tb; t++) {
            __m256 xv = _mm256_loadu_ps(x + (size_t)t * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < CPU_RB; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < tb; t++)
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            float s = hsum(acc[r][t]);
            for (int kk = k; kk < K; kk++) s += load_w1(wr[r], wt, kk) * x[(size_t)t * ldx + kk];
            out[(size_t)t * ldo + r] = s;
        }
}

AI void gemm_t(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K, int n0, int n1) {
    size_t row_bytes = (size_t)K * hr_dtype_size(wt);
    for (int n = n0; n < n1; n += CPU_RB) {
        int nr = HR_MIN(CPU_RB, n1 - n);
        const void *wr[CPU_RB];
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) wr[r] = (const char *)w + (size_t)(n + HR_MIN(r, nr - 1)) * row_bytes;
        for (int t0 = 0; t0 < T; t0 += TB2) {
            float *o = out + (size_t)t0 * ldo + n;
            const float *xt = x + (size_t)t0 * ldx;
            if (T - t0 >= 2)
                tile(o, ldo, xt, ldx, 2, wr, nr, wt, K);
            else
                tile(o, ldo, xt, ldx, 1, wr, nr, wt, K);
        }
    }
}

static void gemm_f32(float *out, int ldo, const float *x, int ldx, int T, const void *w, int K, int n0, int n1) {
    gemm_t(out, ldo, x, ldx, T, w, HR_F32, K, n0, n1);
}
static void gemm_bf16(float *out, int ldo, const float *x, int ldx, int T, const void *w, int K, int n0, int n1) {
    gemm_t(out, ldo, x, ldx, T, w, HR_BF16, K, n0, n1);
}
static void gemm_f16(float *out, int ldo, const float *x, int ldx, int T, const void *w, int K, int n0, int n1) {
    gemm_t(out, ldo, x, ldx, T, w, HR_F16, K, n0, n1);
}

static void gemm_avx2(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K, int n0,
                      int n1) {
    switch (wt) {
    case HR_F32:
        gemm_f32(out, ldo, x, ldx, T, w, K, n0, n1);
        break;
    case HR_BF16:
        gemm_bf16(out, ldo, x, ldx, T, w, K, n0, n1);
        break;
    case HR_F16:
        gemm_f16(out, ldo, x, ldx, T, w, K, n0, n1);
        break;
    default:
        HR_ASSERT_MSG(0, "avx2 gemm: weight dtype not F32/BF16/F16");
    }
}

static void dot_rows_avx2(const float *q, const float *k, size_t stride, int n, int d, float *out) {
    for (int i = 0; i < n; i++) {
        const float *kr = k + (size_t)i * stride;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int c = 0;
        for (; c + 16 <= d; c += 16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kr + c), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c + 8), _mm256_loadu_ps(kr + c + 8), s1);
        }
        for (; c + 8 <= d; c += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kr + c), s0);
        float s = hsum(_mm256_add_ps(s0, s1));
        for (; c < d; c++) s += q[c] * kr[c];
        out[i] = s;
    }
}

/* One 8-wide slice of acc stays in a register across all n rows. */
static void axpy_rows_avx2(float *acc, const float *w, const float *v, size_t stride, int n, int d) {
    int c = 0;
    for (; c + 8 <= d; c += 8) {
        __m256 a = _mm256_loadu_ps(acc + c);
        for (int i = 0; i < n; i++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(w[i]), _mm256_loadu_ps(v + (size_t)i * stride + c), a);
        _mm256_storeu_ps(acc + c, a);
    }
    for (; c < d; c++)
        for (int i = 0; i < n; i++) acc[c] += w[i] * v[(size_t)i * stride + c];
}

/* exp(x) for x <= 0, as the AVX-512 version; 2^n built in the exponent bits
 * (n >= -126 after the clamp, so no denormals are needed). */
AI __m256 exp_neg(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

static float exp_sum_avx2(float *x, int n, float m) {
    __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float s = hsum(sum);
    for (; i < n; i++) s += x[i] = expf(x[i] - m);
    return s;
}

const cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2",
    .gemm = gemm_avx2,
    .dot_rows = dot_rows_avx2,
    .axpy_rows = axpy_rows_avx2,
    .exp_sum = exp_sum_avx2,
};
