/* Quantized checkpoint formats: reference (scalar) dequantization of ModelOpt
 * FP8 (per-tensor scale), ModelOpt NVFP4 (E2M1 values, E4M3 block-16 scales,
 * FP32 global scale) and gpt-oss MXFP4 (E2M1 values, E8M0 block-32 scales, OCP
 * MX spec). These are the definitions fast kernels are tested against. Knows
 * nothing of files or models: callers pass raw tensor bytes. */
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

#endif
