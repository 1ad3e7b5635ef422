/* dtype conversions against brute-force references: exhaustive over every
 * 8-bit / 16-bit code, random floats for the encoders (exact: 0 tolerance). */
#include "core/dtype.h"
#include "test.h"

#include <float.h>
#include <stdint.h>

static uint32_t rng = 12345u;
static uint32_t xr(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return rng; }

/* nearest representable among all codes, ties to even code (even mantissa) */
static uint8_t nearest8(float (*dec)(uint8_t), float f, uint8_t maxcode_mag) {
    uint8_t best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) > maxcode_mag) continue;
        float v = dec((uint8_t)c);
        if (isnan(v) || isinf(v)) continue;
        double d = fabs((double)v - (double)f);
        if (d < bd || (d == bd && (c & 1) == 0 && ((best & 0x80) == (c & 0x80)))) {
            if (d == bd && (best & 1) == 0) continue;
            bd = d;
            best = (uint8_t)c;
        }
    }
    return best;
}

int main(void) {
    /* bf16 / f16 round trips are exact for every code */
    int bad = 0;
    for (uint32_t c = 0; c < 65536; c++) {
        float f = hr_bf16_to_f32((uint16_t)c);
        if (!isnan(f) && hr_f32_to_bf16(f) != c) bad++;
        float h = hr_f16_to_f32((uint16_t)c);
        if (!isnan(h) && hr_f32_to_f16(h) != c) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_NEAR(hr_f16_to_f32(0x3c00), 1.0, 0);
    CHECK_NEAR(hr_f16_to_f32(0x0001), 5.960464477539063e-08, 0);
    CHECK_NEAR(hr_bf16_to_f32(hr_f32_to_bf16(1.00390625f)), 1.0, 0);      /* tie -> even */
    CHECK_NEAR(hr_bf16_to_f32(hr_f32_to_bf16(1.01171875f)), 1.015625, 0); /* tie -> even (up) */

    /* e4m3 / e5m2: round trip of every finite code */
    bad = 0;
    for (int c = 0; c < 256; c++) {
        float v = hr_e4m3_to_f32((uint8_t)c);
        if (!isnan(v) && hr_f32_to_e4m3(v) != c && !(v == 0 && c == 0x80)) bad++;
        float w = hr_e5m2_to_f32((uint8_t)c);
        if (!isnan(w) && !isinf(w) && hr_f32_to_e5m2(w) != c) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_NEAR(hr_e4m3_to_f32(0x7e), 448.0, 0);
    CHECK_NEAR(hr_e4m3_to_f32(0x01), 0.001953125, 0);
    CHECK(isnan(hr_e4m3_to_f32(0x7f)));
    CHECK_EQ_INT(hr_f32_to_e4m3(1000.0f), 0x7e);
    CHECK_EQ_INT(hr_f32_to_e4m3(-1000.0f), 0xfe);

    /* encoders equal the nearest representable value on random inputs */
    bad = 0;
    for (int i = 0; i < 20000; i++) {
        float f = ldexpf((float)(xr() % 100000) / 100000.0f, (int)(xr() % 24) - 12);
        if (xr() & 1) f = -f;
        float got = hr_e4m3_to_f32(hr_f32_to_e4m3(f));
        float want = hr_e4m3_to_f32(nearest8(hr_e4m3_to_f32, f, 0x7e));
        if (fabsf(f) <= 448.0f && got != want) {
            if (bad < 5) fprintf(stderr, "e4m3(%.9g): got %.9g want %.9g\n", f, got, want);
            bad++;
        }
        float got5 = hr_e5m2_to_f32(hr_f32_to_e5m2(f));
        float want5 = hr_e5m2_to_f32(nearest8(hr_e5m2_to_f32, f, 0x7b));
        if (got5 != want5) {
            if (bad < 5) fprintf(stderr, "e5m2(%.9g): got %.9g want %.9g\n", f, got5, want5);
            bad++;
        }
        float gb = hr_bf16_to_f32(hr_f32_to_bf16(f));
        if (fabsf(gb - f) > fabsf(f) * (1.0f / 256.0f)) bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* e2m1 and e8m0 tables */
    CHECK_NEAR(hr_e2m1_to_f32(0x7), 6.0, 0);
    CHECK_NEAR(hr_e2m1_to_f32(0xB), -1.5, 0);
    CHECK_NEAR(hr_e8m0_to_f32(127), 1.0, 0);
    CHECK_NEAR(hr_e8m0_to_f32(120), 1.0 / 128, 0);

    hr_dtype d;
    CHECK(hr_dtype_from_name("F8_E4M3", &d) == 0 && d == HR_F8_E4M3);
    CHECK(hr_dtype_from_name("Q9", &d) != 0);
    CHECK_EQ_INT(hr_dtype_size(HR_BF16), 2);
    return test_report("dtype");
}
