#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} k_dtypes[HR_DTYPE_COUNT] = {
    [HR_F32] = {"F32", 4},         [HR_F16] = {"F16", 2},  [HR_BF16] = {"BF16", 2},
    [HR_F8_E4M3] = {"F8_E4M3", 1}, [HR_F8_E5M2] = {"F8_E5M2", 1},
    [HR_U8] = {"U8", 1},           [HR_I8] = {"I8", 1},    [HR_I32] = {"I32", 4},
    [HR_I64] = {"I64", 8},         [HR_F64] = {"F64", 8},  [HR_I16] = {"I16", 2},
    [HR_U16] = {"U16", 2},         [HR_U32] = {"U32", 4},  [HR_U64] = {"U64", 8},
    [HR_BOOL] = {"BOOL", 1},       [HR_F8_E8M0] = {"F8_E8M0", 1},
};

size_t hr_dtype_size(hr_dtype t) { return (unsigned)t < HR_DTYPE_COUNT ? k_dtypes[t].size : 0; }

const char *hr_dtype_name(hr_dtype t) { return (unsigned)t < HR_DTYPE_COUNT ? k_dtypes[t].name : "?"; }

int hr_dtype_from_name(const char *name, hr_dtype *out) {
    for (int i = 0; i < HR_DTYPE_COUNT; i++) {
        if (k_dtypes[i].name && strcmp(k_dtypes[i].name, name) == 0) {
            *out = (hr_dtype)i;
            return 0;
        }
    }
    return -1;
}

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float hr_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t hr_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float hr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

/* Generic RNE encoder for small IEEE-like formats: ebits exponent bits,
 * mbits mantissa bits, bias, max finite value, whether it has inf. */
static uint32_t encode_small(float f, int ebits, int mbits, int bias, int has_inf, float maxv, int *is_nan) {
    (void)ebits;
    *is_nan = 0;
    uint32_t sign = f2u(f) >> 31;
    float a = fabsf(f);
    if (isnan(f)) { *is_nan = 1; return 0; }
    uint32_t code;
    if (a > maxv || isinf(a)) {
        (void)has_inf;
        return (sign << 31) | 0xffffffffu >> 1; /* caller handles overflow */
    }
    int min_exp = 1 - bias; /* exponent of smallest normal */
    int e;
    frexpf(a, &e);          /* a = m * 2^e, m in [0.5,1) -> a = 1.x * 2^(e-1) */
    e -= 1;
    if (a == 0.0f) return sign << 31;
    if (e < min_exp) e = min_exp; /* subnormal range: fixed quantum */
    float quantum = ldexpf(1.0f, e - mbits);
    float q = a / quantum;         /* exact scaling by power of two */
    float r = nearbyintf(q);       /* RNE under default rounding mode */
    float val = r * quantum;
    /* encode val */
    if (val == 0.0f) return sign << 31;
    int ve;
    frexpf(val, &ve);
    ve -= 1;
    if (ve < min_exp) { /* subnormal */
        code = (uint32_t)(val / ldexpf(1.0f, min_exp - mbits));
    } else {
        uint32_t m = (uint32_t)((val / ldexpf(1.0f, ve) - 1.0f) * (float)(1 << mbits) + 0.5f);
        code = ((uint32_t)(ve + bias) << mbits) | m;
    }
    return (sign << 31) | code;
}

uint16_t hr_f32_to_f16(float f) {
    if (isnan(f)) return 0x7e00;
    uint32_t sign = (f2u(f) >> 16) & 0x8000u;
    if (fabsf(f) >= 65520.0f) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    int nan;
    uint32_t c = encode_small(f, 5, 10, 15, 1, 65504.0f, &nan);
    return (uint16_t)(sign | (c & 0x7fffu));
}

float hr_e4m3_to_f32(uint8_t v) {
    uint32_t sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 0xf && man == 7) return NAN;
    if (exp == 0) r = ldexpf((float)man, -9);
    else r = ldexpf(1.0f + (float)man / 8.0f, (int)exp - 7);
    return sign ? -r : r;
}

uint8_t hr_f32_to_e4m3(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = (f2u(f) >> 31) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 448.0f) return sign | 0x7e; /* saturate */
    int nan;
    uint32_t c = encode_small(a, 4, 3, 7, 0, 448.0f, &nan);
    return sign | (uint8_t)(c & 0x7f);
}

float hr_e5m2_to_f32(uint8_t v) { return hr_f16_to_f32((uint16_t)v << 8); }

uint8_t hr_f32_to_e5m2(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = (f2u(f) >> 31) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= 61440.0f) return sign | 0x7c; /* rounds to inf */
    int nan;
    uint32_t c = encode_small(a, 5, 2, 15, 1, 57344.0f, &nan);
    return sign | (uint8_t)(c & 0x7f);
}

float hr_e2m1_to_f32(uint8_t nibble) {
    static const float lut[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = lut[nibble & 7];
    return (nibble & 8) ? -v : v;
}

float hr_e8m0_to_f32(uint8_t v) {
    if (v == 0xff) return NAN;
    return ldexpf(1.0f, (int)v - 127);
}

void hr_convert_to_f32(hr_dtype t, const void *src, float *dst, size_t n) {
    switch (t) {
    case HR_F32: memcpy(dst, src, n * 4); break;
    case HR_F16: for (size_t i = 0; i < n; i++) dst[i] = hr_f16_to_f32(((const uint16_t *)src)[i]); break;
    case HR_BF16: for (size_t i = 0; i < n; i++) dst[i] = hr_bf16_to_f32(((const uint16_t *)src)[i]); break;
    case HR_F8_E4M3: for (size_t i = 0; i < n; i++) dst[i] = hr_e4m3_to_f32(((const uint8_t *)src)[i]); break;
    case HR_F8_E5M2: for (size_t i = 0; i < n; i++) dst[i] = hr_e5m2_to_f32(((const uint8_t *)src)[i]); break;
    case HR_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)((const double *)src)[i]; break;
    case HR_F8_E8M0: for (size_t i = 0; i < n; i++) dst[i] = hr_e8m0_to_f32(((const uint8_t *)src)[i]); break;
    case HR_U8: for (size_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)src)[i]; break;
    case HR_I8: for (size_t i = 0; i < n; i++) dst[i] = ((const int8_t *)src)[i]; break;
    case HR_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; break;
    case HR_I64: for (size_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)src)[i]; break;
    default:
        for (size_t i = 0; i < n; i++) dst[i] = NAN;
        break;
    }
}
