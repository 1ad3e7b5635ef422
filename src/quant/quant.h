/* Quantized checkpoint formats: reference (scalar) dequantization and
 * quantization of ModelOpt FP8 (per-tensor scale), ModelOpt NVFP4 (E2M1
 * values, E4M3 block-16 scales, FP32 global scale) and gpt-oss MXFP4 (E2M1
 * values, E8M0 block-32 scales, OCP MX spec). These are the definitions fast
 * kernels are tested against. Knows nothing of files or models: callers pass
 * raw tensor bytes. */
#ifndef HEARTH_QUANT_QUANT_H
#define HEARTH_QUANT_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define HR_NVFP4_BLOCK 16 /* elements per E4M3 scale */
#define HR_MXFP4_BLOCK 32 /* elements per E8M0 scale */

/* x -> e4m3(x / scale) * scale, saturating at +-448
 * (torch: (x/s).clamp(-448,448).to(float8_e4m3fn).float()*s). */
float hr_fp8_fake_quant(float x, float scale);
/* out[i] = e4m3(w[i]) * scale. */
void hr_dequant_fp8_e4m3(const uint8_t *w, float scale, float *out, size_t n);
/* ModelOpt NVFP4: w [rows, cols/2] (low nibble = even column), scales
 * [rows, cols/16] E4M3, global scale_2: out = e2m1 * (e4m3(scale) * scale_2).
 * cols must be a multiple of 16. */
void hr_dequant_nvfp4(const uint8_t *w, const uint8_t *scales, float scale_2, float *out, int64_t rows, int64_t cols);
/* gpt-oss MXFP4: blocks [rows, cols/32, 16] bytes (low nibble = even element),
 * scales [rows, cols/32] E8M0: out = e2m1 * 2^(scale - 127). cols must be a
 * multiple of 32. Exact in float32. */
void hr_dequant_mxfp4(const uint8_t *blocks, const uint8_t *scales, float *out, int64_t rows, int64_t cols);

/* ---- quantization (the producers' recipes) -------------------------------
 * E2M1 encoding rounds to nearest, ties to even (OCP MX spec; Blackwell's
 * cvt.rn.satfinite), saturates at +-6, and writes +0 (code 0) for anything
 * that rounds to zero, as published checkpoints do. Note: the NVFP4 fixture
 * (ModelOpt) rounds exact ties toward zero instead (0.75 -> 0.5, 1.75 -> 1.5,
 * 3.5 -> 3); off ties the codes are identical. */
uint8_t hr_quant_e2m1(float x);
/* ModelOpt FP8 per tensor: scale = amax / 448 (1 when amax is 0), codes =
 * e4m3(x / scale) RNE. Returns the scale (the checkpoint's weight_scale). */
float hr_quant_fp8_e4m3(const float *x, size_t n, uint8_t *codes);
/* ModelOpt NVFP4: scale_2 = amax(w) / (6 * 448); block scale =
 * e4m3(amax(block) / 6 / scale_2) (1 where that is 0); codes =
 * e2m1(x / (block scale * scale_2)). w [rows, cols], cols % 16 == 0; writes
 * packed [rows, cols/2] and scales [rows, cols/16]; returns scale_2. */
float hr_quant_nvfp4(const float *w, int64_t rows, int64_t cols, uint8_t *packed, uint8_t *scales);
/* OCP MX MXFP4: per 32 elements X = 2^(floor(log2(amax)) - 2) (2 = E2M1's
 * largest exponent), clamped to E8M0's range; codes = e2m1(x / X). w [rows,
 * cols], cols % 32 == 0; writes blocks [rows, cols/32, 16], scales [rows, cols/32]. */
void hr_quant_mxfp4(const float *w, int64_t rows, int64_t cols, uint8_t *blocks, uint8_t *scales);

#endif
