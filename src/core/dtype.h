/* Element types and scalar conversions (bf16, fp16, fp8 e4m3/e5m2, fp4 e2m1,
 * e8m0 scales). Conversions are exact where the target can represent the
 * value and round-to-nearest-even otherwise; they are the reference every
 * vectorised or CUDA conversion is tested against. */
#ifndef HEARTH_CORE_DTYPE_H
#define HEARTH_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum hr_dtype {
    HR_F32 = 0,
    HR_F16,
    HR_BF16,
    HR_F8_E4M3,
    HR_F8_E5M2,
    HR_U8,
    HR_I8,
    HR_I32,
    HR_I64,
    HR_F64,
    HR_I16,
    HR_U16,
    HR_U32,
    HR_U64,
    HR_BOOL,
    HR_F8_E8M0,   /* MX block scales: 2^(v-127) */
    HR_DTYPE_COUNT
} hr_dtype;

/* Bytes per element. */
size_t hr_dtype_size(hr_dtype t);
/* Safetensors spelling ("F32", "BF16", "F8_E4M3" ...). */
const char *hr_dtype_name(hr_dtype t);
/* Parses a safetensors dtype name; returns 0 and sets *out, or -1 if unknown. */
int hr_dtype_from_name(const char *name, hr_dtype *out);

float hr_bf16_to_f32(uint16_t h);
uint16_t hr_f32_to_bf16(float f);           /* round to nearest even, NaN kept */
float hr_f16_to_f32(uint16_t h);
uint16_t hr_f32_to_f16(float f);            /* round to nearest even, overflow -> inf */
float hr_e4m3_to_f32(uint8_t v);            /* OCP FP8 E4M3 (fn): no inf, 0x7f/0xff NaN, max 448 */
uint8_t hr_f32_to_e4m3(float f);            /* RNE, saturates to +-448 (as torch's cast after clamp) */
float hr_e5m2_to_f32(uint8_t v);
uint8_t hr_f32_to_e5m2(float f);            /* RNE */
float hr_e2m1_to_f32(uint8_t nibble);       /* FP4 E2M1: {0,.5,1,1.5,2,3,4,6} with sign bit 3 */
float hr_e8m0_to_f32(uint8_t v);            /* 2^(v-127); 0xff NaN */

/* Bulk: converts n elements of src (type t) to float32. */
void hr_convert_to_f32(hr_dtype t, const void *src, float *dst, size_t n);

#endif
