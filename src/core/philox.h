/* Philox4x32-10, the counter-based RNG of Salmon et al., "Parallel random
 * numbers: as easy as 1, 2, 3" (SC'11), as in Random123. Stateless: the
 * output is a pure function of (counter, key), so the host sampler and a GPU
 * kernel draw the same number for the same (seed, step) without sharing any
 * state. Header-only; compiles as C11 and as CUDA (__host__ __device__).
 * Owns nothing; knows nothing of sampling beyond the uniform below. */
#ifndef HEARTH_CORE_PHILOX_H
#define HEARTH_CORE_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define HR_PHILOX_FN static inline __host__ __device__
#else
#define HR_PHILOX_FN static inline
#endif

#define HR_PHILOX_M0 0xD2511F53u
#define HR_PHILOX_M1 0xCD9E8D57u
#define HR_PHILOX_W0 0x9E3779B9u /* golden ratio */
#define HR_PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

/* One Philox4x32 round: two 32x32->64 multiplies, xor with the key. */
HR_PHILOX_FN void hr_philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)HR_PHILOX_M0 * c[0], p1 = (uint64_t)HR_PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0], n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

/* out = Philox4x32-10(ctr, key): the Random123 philox4x32 with 10 rounds. */
HR_PHILOX_FN void hr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += HR_PHILOX_W0;
            k[1] += HR_PHILOX_W1;
        }
        hr_philox_round(c, k);
    }
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
}

/* The sampler's uniform in [0, 1) with 53 random bits: key = the request's
 * 64-bit seed, counter = (64-bit step, 0, 0), i.e. the number of tokens the
 * request generated before this draw. The first two output words give the
 * bits (out[0] high). Identical on host and device (integer math only, then
 * an exact conversion). */
HR_PHILOX_FN double hr_philox_uniform(uint64_t seed, uint64_t step) {
    uint32_t ctr[4] = {(uint32_t)step, (uint32_t)(step >> 32), 0u, 0u};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t o[4];
    hr_philox4x32_10(ctr, key, o);
    uint64_t bits = (((uint64_t)o[0] << 32) | o[1]) >> 11;
    return (double)bits * 0x1.0p-53;
}

#endif
