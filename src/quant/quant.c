#include "quant/quant.h"

#include <math.h>

#include "core/common.h"
#include "core/dtype.h"

#define FP8_E4M3_MAX 448.0f

float hr_fp8_fake_quant(float x, float scale) {
    float q = x / scale; /* float32 division, as torch does for float32 inputs */
    if (q > FP8_E4M3_MAX) q = FP8_E4M3_MAX;
    if (q < -FP8_E4M3_MAX) q = -FP8_E4M3_MAX;
    return hr_e4m3_to_f32(hr_f32_to_e4m3(q)) * scale;
}

void hr_dequant_fp8_e4m3(const uint8_t *w, float scale, float *out, size_t n) {
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = hr_e4m3_to_f32((uint8_t)i);
    for (size_t i = 0; i < n; i++) out[i] = lut[w[i]] * scale;
}

/* Both FP4 layouts store two E2M1 codes per byte, the even element in the low
 * nibble; a block of `bs` elements shares one scale. */
static void dequant_fp4_blocks(const uint8_t *packed, const float *block_scale, float *out, int64_t n_blocks, int bs) {
    float lut[16];
    for (int i = 0; i < 16; i++) lut[i] = hr_e2m1_to_f32((uint8_t)i);
    for (int64_t b = 0; b < n_blocks; b++) {
        const uint8_t *p = packed + b * (bs / 2);
        float s = block_scale[b];
        float *o = out + b * bs;
        for (int j = 0; j < bs / 2; j++) {
            o[2 * j] = lut[p[j] & 0x0f] * s;
            o[2 * j + 1] = lut[p[j] >> 4] * s;
        }
    }
}

void hr_dequant_nvfp4(const uint8_t *w, const uint8_t *scales, float scale_2, float *out, int64_t rows, int64_t cols) {
    HR_ASSERT(cols % HR_NVFP4_BLOCK == 0);
    /* One row of block scales at a time keeps the scratch small. */
    int64_t per_row = cols / HR_NVFP4_BLOCK;
    float *s = hr_xmalloc((size_t)(per_row ? per_row : 1) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < per_row; b++) s[b] = hr_e4m3_to_f32(scales[r * per_row + b]) * scale_2;
        dequant_fp4_blocks(w + r * (cols / 2), s, out + r * cols, per_row, HR_NVFP4_BLOCK);
    }
    free(s);
}

void hr_dequant_mxfp4(const uint8_t *blocks, const uint8_t *scales, float *out, int64_t rows, int64_t cols) {
    HR_ASSERT(cols % HR_MXFP4_BLOCK == 0);
    int64_t per_row = cols / HR_MXFP4_BLOCK;
    float *s = hr_xmalloc((size_t)(per_row ? per_row : 1) * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < per_row; b++) s[b] = hr_e8m0_to_f32(scales[r * per_row + b]);
        dequant_fp4_blocks(blocks + r * (cols / 2), s, out + r * cols, per_row, HR_MXFP4_BLOCK);
    }
    free(s);
}

/* ---- quantization ------------------------------------------------------- */

#define E2M1_MAX  6.0f
#define E2M1_EMAX 2 /* largest exponent of E2M1: 6 = 1.5 * 2^2 */

uint8_t hr_quant_e2m1(float x) {
    /* Decision points between neighbours {0, .5, 1, 1.5, 2, 3, 4, 6}; at a
     * midpoint the even code wins, hence <= for even-code left neighbours. */
    float a = fabsf(x);
    uint8_t c;
    if (a <= 0.25f)
        return 0; /* +0, never -0 */
    else if (a < 0.75f)
        c = 1;
    else if (a <= 1.25f)
        c = 2;
    else if (a < 1.75f)
        c = 3;
    else if (a <= 2.5f)
        c = 4;
    else if (a < 3.5f)
        c = 5;
    else if (a <= 5.0f)
        c = 6;
    else
        c = 7; /* saturates (and NaN) */
    return (uint8_t)(signbit(x) ? c | 8 : c);
}

static float amax_of(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

float hr_quant_fp8_e4m3(const float *x, size_t n, uint8_t *codes) {
    float amax = amax_of(x, (int64_t)n);
    float scale = amax > 0.0f ? amax / FP8_E4M3_MAX : 1.0f;
    for (size_t i = 0; i < n; i++) codes[i] = hr_f32_to_e4m3(x[i] / scale);
    return scale;
}

/* Packs two codes per byte, the even element in the low nibble. */
static void pack_pair(uint8_t *dst, int64_t j, uint8_t code) {
    if (j % 2 == 0)
        dst[j / 2] = code;
    else
        dst[j / 2] |= (uint8_t)(code << 4);
}

float hr_quant_nvfp4(const float *w, int64_t rows, int64_t cols, uint8_t *packed, uint8_t *scales) {
    HR_ASSERT(cols % HR_NVFP4_BLOCK == 0);
    float amax = amax_of(w, rows * cols);
    float scale_2 = amax > 0.0f ? amax / (E2M1_MAX * FP8_E4M3_MAX) : 1.0f;
    int64_t nb = rows * cols / HR_NVFP4_BLOCK;
    for (int64_t b = 0; b < nb; b++) {
        const float *x = w + b * HR_NVFP4_BLOCK;
        uint8_t sc = hr_f32_to_e4m3(amax_of(x, HR_NVFP4_BLOCK) / E2M1_MAX / scale_2);
        float s = hr_e4m3_to_f32(sc);
        if (s == 0.0f) {
            sc = hr_f32_to_e4m3(1.0f);
            s = 1.0f;
        }
        scales[b] = sc;
        float div = s * scale_2;
        for (int j = 0; j < HR_NVFP4_BLOCK; j++)
            pack_pair(packed + b * (HR_NVFP4_BLOCK / 2), j, hr_quant_e2m1(x[j] / div));
    }
    return scale_2;
}

void hr_quant_mxfp4(const float *w, int64_t rows, int64_t cols, uint8_t *blocks, uint8_t *scales) {
    HR_ASSERT(cols % HR_MXFP4_BLOCK == 0);
    int64_t nb = rows * cols / HR_MXFP4_BLOCK;
    for (int64_t b = 0; b < nb; b++) {
        const float *x = w + b * HR_MXFP4_BLOCK;
        float amax = amax_of(x, HR_MXFP4_BLOCK);
        int e = -127; /* all-zero block: smallest scale, zero codes */
        if (amax > 0.0f && isfinite(amax)) {
            int ex;
            frexpf(amax, &ex); /* amax = m * 2^ex, m in [0.5, 1): floor(log2(amax)) = ex - 1 */
            e = ex - 1 - E2M1_EMAX;
        }
        if (e < -127) e = -127;
        if (e > 127) e = 127;
        scales[b] = (uint8_t)(e + 127);
        float inv = ldexpf(1.0f, -e);
        for (int j = 0; j < HR_MXFP4_BLOCK; j++)
            pack_pair(blocks + b * (HR_MXFP4_BLOCK / 2), j, hr_quant_e2m1(x[j] * inv));
    }
}
