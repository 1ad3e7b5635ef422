/* Reference dequantization of ggml block formats to float32, following the
 * block layouts of ggml-common.h and the arithmetic (including the order of
 * float operations) of ggml-quants.c's dequantize_row_*, so results match
 * llama.cpp bit for bit. Blocks are read byte-wise: in a GGUF mapping they
 * carry no alignment guarantee beyond the tensor start. */
#include <string.h>

#include "core/dtype.h"
#include "io/gguf.h"

#define QK4_0        32
#define QK4_1        32
#define QK5_0        32
#define QK5_1        32
#define QK8_0        32
#define QK_K         256
#define K_SCALE_SIZE 12

static inline float half(const uint8_t *p) { return hr_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static inline uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* block_q4_0 { half d; u8 qs[16]; }: x = (nibble - 8) * d, low nibbles first. */
static void deq_q4_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 18, y += QK4_0) {
        float d = half(b);
        const uint8_t *qs = b + 2;
        for (int j = 0; j < QK4_0 / 2; j++) {
            y[j] = (float)((qs[j] & 0x0f) - 8) * d;
            y[j + QK4_0 / 2] = (float)((qs[j] >> 4) - 8) * d;
        }
    }
}

/* block_q4_1 { half d, m; u8 qs[16]; }: x = nibble * d + m. */
static void deq_q4_1(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 20, y += QK4_1) {
        float d = half(b), m = half(b + 2);
        const uint8_t *qs = b + 4;
        for (int j = 0; j < QK4_1 / 2; j++) {
            y[j] = (float)(qs[j] & 0x0f) * d + m;
            y[j + QK4_1 / 2] = (float)(qs[j] >> 4) * d + m;
        }
    }
}

/* block_q5_0 { half d; u8 qh[4]; u8 qs[16]; }: 5th bit of element j in qh bit j. */
static void deq_q5_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 22, y += QK5_0) {
        float d = half(b);
        uint32_t qh = le32(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < QK5_0 / 2; j++) {
            uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            uint8_t xh1 = (uint8_t)(((qh >> (j + 12))) & 0x10);
            int32_t x0 = ((qs[j] & 0x0f) | xh0) - 16;
            int32_t x1 = ((qs[j] >> 4) | xh1) - 16;
            y[j] = (float)x0 * d;
            y[j + QK5_0 / 2] = (float)x1 * d;
        }
    }
}

/* block_q5_1 { half d, m; u8 qh[4]; u8 qs[16]; } */
static void deq_q5_1(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 24, y += QK5_1) {
        float d = half(b), m = half(b + 2);
        uint32_t qh = le32(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < QK5_1 / 2; j++) {
            uint8_t xh0 = (uint8_t)(((qh >> (j + 0)) << 4) & 0x10);
            uint8_t xh1 = (uint8_t)(((qh >> (j + 12))) & 0x10);
            int32_t x0 = (qs[j] & 0x0f) | xh0;
            int32_t x1 = (qs[j] >> 4) | xh1;
            y[j] = (float)x0 * d + m;
            y[j + QK5_1 / 2] = (float)x1 * d + m;
        }
    }
}

/* block_q8_0 { half d; i8 qs[32]; } */
static void deq_q8_0(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 34, y += QK8_0) {
        float d = half(b);
        for (int j = 0; j < QK8_0; j++) y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* block_q2_K { u8 scales[16]; u8 qs[64]; half d, dmin; }: 16 sub-blocks of 16,
 * 4-bit scale and 4-bit min each, 2-bit values. */
static void deq_q2_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 84) {
        const uint8_t *sc = b, *q = b + 16;
        float d = half(b + 80), min = half(b + 82);
        int is = 0;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                uint8_t s = sc[is++];
                float dl = d * (float)(s & 0xf), ml = min * (float)(s >> 4);
                for (int l = 0; l < 16; ++l) *y++ = dl * (float)((int8_t)((q[l] >> shift) & 3)) - ml;
                s = sc[is++];
                dl = d * (float)(s & 0xf);
                ml = min * (float)(s >> 4);
                for (int l = 0; l < 16; ++l) *y++ = dl * (float)((int8_t)((q[l + 16] >> shift) & 3)) - ml;
                shift += 2;
            }
            q += 32;
        }
    }
}

/* block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d; }: 6-bit signed
 * scales packed in 12 bytes, 2 low bits in qs, the high bit in hmask. */
static void deq_q3_k(const uint8_t *b, float *y, int64_t nb) {
    const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
    for (int64_t i = 0; i < nb; i++, b += 110) {
        const uint8_t *hm = b, *q = b + 32;
        float d_all = half(b + 108);
        uint32_t aux[4];
        memcpy(aux, b + 96, 12);
        uint32_t tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
        aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
        aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
        aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
        int8_t scales[16];
        memcpy(scales, aux, 16); /* little-endian host: byte k of aux is scale k */
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < QK_K; n += 128) {
            int shift = 0;
            for (int j = 0; j < 4; ++j) {
                float dl = d_all * (float)(scales[is++] - 32);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * (float)((int8_t)((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
                dl = d_all * (float)(scales[is++] - 32);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * (float)((int8_t)((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
                shift += 2;
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
    }
}

/* The 12-byte scales of Q4_K/Q5_K: 8 pairs of 6-bit (scale, min). */
static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* block_q4_K { half d, dmin; u8 scales[12]; u8 qs[128]; } */
static void deq_q4_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 144) {
        float d = half(b), min = half(b + 2);
        const uint8_t *scales = b + 4, *q = b + 16;
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64) {
            scale_min_k4(is + 0, scales, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, scales, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)(q[l] & 0xf) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
    }
}

/* block_q5_K { half d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } */
static void deq_q5_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 176) {
        float d = half(b), min = half(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
        int is = 0;
        uint8_t sc, m, u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            scale_min_k4(is + 0, scales, &sc, &m);
            float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, scales, &sc, &m);
            float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; ++l) *y++ = d1 * (float)((ql[l] & 0xf) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; ++l) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

/* block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; } */
static void deq_q6_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = half(b + 208);
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                int is = l / 16;
                int8_t q1 = (int8_t)((ql[l + 0] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int8_t q2 = (int8_t)((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * (float)sc[is + 0] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

/* block_q8_K { float d; i8 qs[256]; i16 bsums[16]; } */
static void deq_q8_k(const uint8_t *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, b += 292, y += QK_K) {
        uint32_t u = le32(b);
        float d;
        memcpy(&d, &u, 4);
        for (int j = 0; j < QK_K; j++) y[j] = d * (float)(int8_t)b[4 + j];
    }
}

int ggml_dequantize_row(ggml_type type, const void *src, float *dst, int64_t n) {
    const uint8_t *b = src;
    int blck = ggml_blck_size(type);
    if (n < 0 || !blck) return HR_EUNSUP;
    if (n % blck != 0) return HR_EINVAL;
    int64_t nb = n / blck;
    switch (type) {
    case GGML_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = half(b + 2 * i);
        break;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = hr_bf16_to_f32((uint16_t)(b[2 * i] | (b[2 * i + 1] << 8)));
        break;
    case GGML_Q4_0:
        deq_q4_0(b, dst, nb);
        break;
    case GGML_Q4_1:
        deq_q4_1(b, dst, nb);
        break;
    case GGML_Q5_0:
        deq_q5_0(b, dst, nb);
        break;
    case GGML_Q5_1:
        deq_q5_1(b, dst, nb);
        break;
    case GGML_Q8_0:
        deq_q8_0(b, dst, nb);
        break;
    case GGML_Q2_K:
        deq_q2_k(b, dst, nb);
        break;
    case GGML_Q3_K:
        deq_q3_k(b, dst, nb);
        break;
    case GGML_Q4_K:
        deq_q4_k(b, dst, nb);
        break;
    case GGML_Q5_K:
        deq_q5_k(b, dst, nb);
        break;
    case GGML_Q6_K:
        deq_q6_k(b, dst, nb);
        break;
    case GGML_Q8_K:
        deq_q8_k(b, dst, nb);
        break;
    default:
        return HR_EUNSUP;
    }
    return HR_OK;
}
