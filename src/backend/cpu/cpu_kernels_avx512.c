/* AVX-512 kernels (compiled with -mavx512f/bw/vl/dq -mfma -mf16c; only called
 * when the CPU has them). The GEMM tile is CPU_RB weight rows x up to CPU_TB
 * tokens held in 16 zmm accumulators: each 16-wide slice of a weight row is
 * loaded and widened to float32 once and used for every token of the block.
 * K tails use masked loads, so odd K needs no scalar loop. */
#include <immintrin.h>

#include "backend/cpu/cpu.h"

#define AI static inline __attribute__((always_inline))
/* The r/t loops below must unroll completely so the accumulators live in
 * registers (GCC -O2 keeps them in memory otherwise). */

/* 16 weights from k (masked) widened to float32; wt is a constant after inlining. */
AI __m512 load_w(const void *w, hr_dtype wt, int k, __mmask16 m) {
    if (wt == HR_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + k);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + k);
    if (wt == HR_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); /* bf16: high half of f32 */
}

/* out[t * ldo + r] = dot(x[t], wr[r]) for r < nr, t < tb. The rows past nr
 * repeat the last valid row and are discarded. */
AI void tile(float *out, int ldo, const float *x, int ldx, int tb, const void *const wr[CPU_RB], int nr, hr_dtype wt,
             int K) {
    __m512 acc[CPU_RB][CPU_TB];
#pragma GCC unroll 4
    for (int r = 0; r < CPU_RB; r++)
#pragma GCC unroll 4
        for (int t = 0; t < tb; t++) acc[r][t] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[CPU_RB];
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) wv[r] = load_w(wr[r], wt, k, 0xffff);
#pragma GCC unroll 4
        for (int t = 0; t < tb; t++) {
            __m512 xv = _mm512_loadu_ps(x + (size_t)t * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < CPU_RB; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        __m512 wv[CPU_RB];
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) wv[r] = load_w(wr[r], wt, k, m);
#pragma GCC unroll 4
        for (int t = 0; t < tb; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)t * ldx + k);
#pragma GCC unroll 4
            for (int r = 0; r < CPU_RB; r++) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < tb; t++)
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) out[(size_t)t * ldo + r] = _mm512_reduce_add_ps(acc[r][t]);
}

/* Decode (one token): two accumulators per row over a 32-wide step, so 8
 * independent FMA chains keep the loads streaming. */
AI void tile1(float *out, const float *x, const void *const wr[CPU_RB], int nr, hr_dtype wt, int K) {
    __m512 a0[CPU_RB], a1[CPU_RB];
#pragma GCC unroll 4
    for (int r = 0; r < CPU_RB; r++) a0[r] = a1[r] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) {
            a0[r] = _mm512_fmadd_ps(load_w(wr[r], wt, k, 0xffff), x0, a0[r]);
            a1[r] = _mm512_fmadd_ps(load_w(wr[r], wt, k + 16, 0xffff), x1, a1[r]);
        }
    }
    for (; k < K; k += 16) {
        int left = K - k;
        __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) a0[r] = _mm512_fmadd_ps(load_w(wr[r], wt, k, m), xv, a0[r]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r]));
}

AI void gemm_t(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K, int n0, int n1) {
    size_t row_bytes = (size_t)K * hr_dtype_size(wt);
    for (int n = n0; n < n1; n += CPU_RB) {
        int nr = HR_MIN(CPU_RB, n1 - n);
        const void *wr[CPU_RB];
#pragma GCC unroll 4
        for (int r = 0; r < CPU_RB; r++) wr[r] = (const char *)w + (size_t)(n + HR_MIN(r, nr - 1)) * row_bytes;
        if (T == 1) {
            tile1(out + n, x, wr, nr, wt, K);
            continue;
        }
        for (int t0 = 0; t0 < T; t0 += CPU_TB) {
            float *o = out + (size_t)t0 * ldo + n;
            const float *xt = x + (size_t)t0 * ldx;
            switch (HR_MIN(CPU_TB, T - t0)) {
            case 1:
                tile(o, ldo, xt, ldx, 1, wr, nr, wt, K);
                break;
            case 2:
                tile(o, ldo, xt, ldx, 2, wr, nr, wt, K);
                break;
            case 3:
                tile(o, ldo, xt, ldx, 3, wr, nr, wt, K);
                break;
            default:
                tile(o, ldo, xt, ldx, 4, wr, nr, wt, K);
                break;
            }
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

static void gemm_avx512(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K, int n0,
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
        HR_ASSERT_MSG(0, "avx512 gemm: weight dtype not F32/BF16/F16");
    }
}

static inline __mmask16 tail_mask(int left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

/* Partial dot product of q with one key row: a vector whose lanes sum to it. */
AI __m512 dot_partial(const float *q, const float *kr, int d) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 32 <= d; c += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + c), _mm512_loadu_ps(kr + c), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + c + 16), _mm512_loadu_ps(kr + c + 16), s1);
    }
    for (; c < d; c += 16) {
        __mmask16 m = tail_mask(d - c);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + c), _mm512_maskz_loadu_ps(m, kr + c), s0);
    }
    return _mm512_add_ps(s0, s1);
}

/* Lane sums of 16 vectors into one vector (lane j = sum of v[j]) by a
 * transpose-and-add tree: 45 shuffles/adds instead of 16 full reductions. */
AI __m512 sum16(const __m512 v[16]) {
    __m512 a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) /* per 128-bit lane: [v2i, v2i+1, v2i, v2i+1] partials */
        a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) /* per 128-bit lane: partials of v4i .. v4i+3 */
        b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44),
                             _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xee));
    for (int i = 0; i < 2; i++) /* lanes [b01, b23, b'01, b'23]: half the 128-bit lanes summed */
        c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(c[0], c[1], 0x88), _mm512_shuffle_f32x4(c[0], c[1], 0xdd));
}

/* Keys in groups of 16: partial vectors, then one tree reduction per group. */
static void dot_rows_avx512(const float *q, const float *k, size_t stride, int n, int d, float *out) {
    for (int i0 = 0; i0 < n; i0 += 16) {
        int g = HR_MIN(16, n - i0);
        __m512 v[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            v[i] = i < g ? dot_partial(q, k + (size_t)(i0 + i) * stride, d) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(out + i0, tail_mask(g), sum16(v));
    }
}

/* exp(x) for x <= 0 (max-subtracted logits): x = n ln2 + r, |r| <= ln2/2,
 * exp(r) by a degree-6 Taylor/Horner polynomial (relative error < 2e-7),
 * times 2^n with scalef. Below -87 the result is flushed to 0. */
AI __m512 exp_neg(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2_hi = _mm512_set1_ps(0.693359375f),
                 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps((__mmask16)~tiny, _mm512_scalef_ps(p, n));
}

static float exp_sum_avx512(float *x, int n, float m) {
    __m512 mv = _mm512_set1_ps(m), sum = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv));
        e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(x + i, k, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

/* One 16-wide slice of acc stays in a register across all n rows. */
static void axpy_rows_avx512(float *acc, const float *w, const float *v, size_t stride, int n, int d) {
    for (int c = 0; c < d; c += 16) {
        __mmask16 m = tail_mask(d - c);
        __m512 a = _mm512_maskz_loadu_ps(m, acc + c);
        for (int i = 0; i < n; i++)
            a = _mm512_fmadd_ps(_mm512_set1_ps(w[i]), _mm512_maskz_loadu_ps(m, v + (size_t)i * stride + c), a);
        _mm512_mask_storeu_ps(acc + c, m, a);
    }
}

const cpu_kernels cpu_kernels_avx512 = {
    .name = "avx512",
    .gemm = gemm_avx512,
    .dot_rows = dot_rows_avx512,
    .axpy_rows = axpy_rows_avx512,
    .exp_sum = exp_sum_avx512,
};
