/* The exponential the `sample` op weighs tokens with, bit-identical on the
 * host (cpu/cpu_sample.c) and the device (cuda/sample.cu): glibc's expf and
 * CUDA's expf may differ by an ulp or two, which would move top-p cuts and
 * draws near a boundary apart on the two; this one uses only correctly
 * rounded single operations (no FMA: __fmul_rn/__fadd_rn on the device; the
 * host C is compiled as ISO C11, where GCC does not contract) and floorf.
 * Cephes expf: Cody-Waite reduction by ln 2, degree-6 polynomial, exact
 * scaling by 2^n; relative error ~1e-7. Header-only. */
#ifndef HEARTH_BACKEND_SAMPLE_EXP_H
#define HEARTH_BACKEND_SAMPLE_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define HR_SEXP_FN static inline __host__ __device__
#else
#define HR_SEXP_FN static inline
#endif

#if defined(__CUDA_ARCH__)
#define HR_SEXP_MUL(a, b) __fmul_rn((a), (b))
#define HR_SEXP_ADD(a, b) __fadd_rn((a), (b))
#else
#define HR_SEXP_MUL(a, b) ((a) * (b))
#define HR_SEXP_ADD(a, b) ((a) + (b))
#endif

/* e^x for x <= 88; 0 below -87 (and for NaN: callers never pass one). */
HR_SEXP_FN float hr_sample_exp(float x) {
    if (!(x > -87.0f)) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    float n = floorf(HR_SEXP_ADD(HR_SEXP_MUL(x, 1.44269504088896341f), 0.5f));
    /* r = x - n ln2 in two parts; n * 0.693359375 is exact (9 + 8 bits) */
    float r = HR_SEXP_ADD(x, HR_SEXP_MUL(n, -0.693359375f));
    r = HR_SEXP_ADD(r, HR_SEXP_MUL(n, 2.12194440e-4f));
    float z = HR_SEXP_MUL(r, r);
    float p = 1.9875691500e-4f;
    p = HR_SEXP_ADD(HR_SEXP_MUL(p, r), 1.3981999507e-3f);
    p = HR_SEXP_ADD(HR_SEXP_MUL(p, r), 8.3334519073e-3f);
    p = HR_SEXP_ADD(HR_SEXP_MUL(p, r), 4.1665795894e-2f);
    p = HR_SEXP_ADD(HR_SEXP_MUL(p, r), 1.6666665459e-1f);
    p = HR_SEXP_ADD(HR_SEXP_MUL(p, r), 5.0000001201e-1f);
    float y = HR_SEXP_ADD(HR_SEXP_ADD(HR_SEXP_MUL(p, z), r), 1.0f);
    /* 2^n: n in [-125, 127], a normal float */
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return HR_SEXP_MUL(y, scale);
}

#endif
