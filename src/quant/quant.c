#include "quant/quant.h"

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
static void dequant_fp4_blocks(const uint8_t *packed, const float *block_scale, float *out, int64_t n_blocks,
                               int bs) {
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
