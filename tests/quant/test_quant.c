/* Reference dequantization: FP8 fake-quant against a brute-force nearest
 * search over all E4M3 values, FP8/NVFP4/MXFP4 dequant against an
 * independent decoding written here from the format definitions (OCP MX spec
 * for E2M1/E8M0, OCP FP8 for E4M3), on random inputs and hand-made cases.
 *
 * Helper mode for tests/quant/test_quant_ref.py (numpy + ml_dtypes over the
 * fixture checkpoints): raw little-endian files in, float32 file out.
 *   quant_test_quant --fp8 W.u8 SCALE N OUT.f32
 *   quant_test_quant --fake IN.f32 SCALE N OUT.f32
 *   quant_test_quant --nvfp4 W.u8 SCALES.u8 SCALE_2 ROWS COLS OUT.f32
 *   quant_test_quant --mxfp4 BLOCKS.u8 SCALES.u8 ROWS COLS OUT.f32
 *   quant_test_quant --quant-fp8 IN.f32 N CODES.u8 SCALE.f32
 *   quant_test_quant --quant-nvfp4 IN.f32 ROWS COLS PACKED.u8 SCALES.u8 SCALE_2.f32
 *   quant_test_quant --quant-mxfp4 IN.f32 ROWS COLS BLOCKS.u8 SCALES.u8 */
#include <stdint.h>

#include "quant/quant.h"
#include "test.h"

/* E4M3 (fn) decoded from its definition: bias 7, 3 mantissa bits, subnormals,
 * S.1111.111 NaN, no infinities. */
static double e4m3_def(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    if (e == 15 && m == 7) return NAN;
    double x = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
    return s ? -x : x;
}

/* E2M1: bias 1, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6. */
static double e2m1_def(uint8_t nib) {
    int s = (nib >> 3) & 1, e = (nib >> 1) & 3, m = nib & 1;
    double x = e == 0 ? m * 0.5 : ldexp(1.0 + m / 2.0, e - 1);
    return s ? -x : x;
}

static uint32_t g_rng = 99;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777215.0f; }

/* Nearest E4M3 value to q (ties to the even code), saturating at 448. */
static double nearest_e4m3(double q) {
    if (q > 448) q = 448;
    if (q < -448) q = -448;
    double best = 0, bd = INFINITY;
    int bcode = 0;
    for (int c = 0; c < 256; c++) {
        double v = e4m3_def((uint8_t)c);
        if (isnan(v)) continue;
        double d = fabs(v - q);
        if (d < bd || (d == bd && (c & 1) == 0 && (bcode & 1))) {
            bd = d;
            best = v;
            bcode = c;
        }
    }
    return best;
}

static void test_fake_quant(void) {
    CHECK_NEAR(hr_fp8_fake_quant(1.0f, 1.0f), 1.0, 0);
    CHECK_NEAR(hr_fp8_fake_quant(0.3f, 1.0f), 0.3125, 0);
    CHECK_NEAR(hr_fp8_fake_quant(1000.0f, 1.0f), 448.0, 0);
    CHECK_NEAR(hr_fp8_fake_quant(-1000.0f, 0.5f), -224.0, 0);
    CHECK_NEAR(hr_fp8_fake_quant(3.0f, 2.0f), 3.0, 0);
    CHECK_NEAR(hr_fp8_fake_quant(1.0625f, 1.0f), 1.0, 0);  /* tie -> even mantissa */
    CHECK_NEAR(hr_fp8_fake_quant(1.1875f, 1.0f), 1.25, 0); /* tie -> even mantissa */
    CHECK_NEAR(hr_fp8_fake_quant(0.0f, 3.0f), 0.0, 0);
    CHECK_NEAR(hr_fp8_fake_quant(1e-6f, 1.0f), 0.0, 0); /* below half the smallest subnormal 2^-9 */
    /* every representable value (times a scale) is a fixed point */
    int fixed = 0;
    for (int c = 0; c < 256; c++) {
        double v = e4m3_def((uint8_t)c);
        if (isnan(v)) continue;
        fixed += hr_fp8_fake_quant((float)(v * 0.25), 0.25f) == (float)(v * 0.25);
    }
    CHECK_EQ_INT(fixed, 254);
    /* random inputs across the range: the nearest representable value */
    int ok = 0, n = 20000;
    for (int i = 0; i < n; i++) {
        float s = frand(0.001f, 0.1f);
        float x = frand(-1.2f, 1.2f) * 448.0f * s * (i % 3 == 0 ? 0.01f : 1.0f);
        double want = nearest_e4m3((double)(x / s)) * s;
        ok += fabs(hr_fp8_fake_quant(x, s) - want) <= 1e-6 * fabs(want);
    }
    CHECK_EQ_INT(ok, n);
}

static void test_fp8(void) {
    uint8_t w[256];
    float out[256];
    for (int i = 0; i < 256; i++) w[i] = (uint8_t)i;
    hr_dequant_fp8_e4m3(w, 0.75f, out, 256);
    int ok = 0;
    for (int i = 0; i < 256; i++) {
        double want = e4m3_def((uint8_t)i) * 0.75;
        ok += isnan(want) ? isnan(out[i]) : out[i] == (float)want;
    }
    CHECK_EQ_INT(ok, 256);
}

static void test_nvfp4(void) {
    enum { R = 3, C = 64 };
    uint8_t w[R * C / 2], sc[R * C / 16];
    float out[R * C];
    for (size_t i = 0; i < sizeof w; i++) w[i] = (uint8_t)rnd();
    for (size_t i = 0; i < sizeof sc; i++) sc[i] = (uint8_t)(rnd() % 0x7f); /* positive, non-NaN */
    const float s2 = 0.0123f;
    hr_dequant_nvfp4(w, sc, s2, out, R, C);
    int ok = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            uint8_t byte = w[r * C / 2 + c / 2];
            uint8_t nib = c % 2 ? byte >> 4 : byte & 15;
            float scale = (float)e4m3_def(sc[r * C / 16 + c / 16]) * s2;
            ok += out[r * C + c] == (float)e2m1_def(nib) * scale;
        }
    CHECK_EQ_INT(ok, R * C);
    /* by hand: byte 0x2F = codes (0xF: -6, 0x2: 1.0), scale 1.0 (0x38), scale_2 0.5 */
    uint8_t w1[8] = {0x2f}, s1[1] = {0x38};
    float o1[16];
    hr_dequant_nvfp4(w1, s1, 0.5f, o1, 1, 16);
    CHECK_NEAR(o1[0], -3.0, 0);
    CHECK_NEAR(o1[1], 0.5, 0);
    CHECK_NEAR(o1[2], 0.0, 0);
}

static void test_mxfp4(void) {
    enum { R = 4, C = 96 };
    uint8_t blocks[R * C / 2], sc[R * C / 32];
    float out[R * C];
    for (size_t i = 0; i < sizeof blocks; i++) blocks[i] = (uint8_t)rnd();
    for (size_t i = 0; i < sizeof sc; i++) sc[i] = (uint8_t)(117 + rnd() % 20);
    hr_dequant_mxfp4(blocks, sc, out, R, C);
    int ok = 0;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            uint8_t byte = blocks[(r * (C / 32) + c / 32) * 16 + (c % 32) / 2];
            uint8_t nib = c % 2 ? byte >> 4 : byte & 15;
            double want = e2m1_def(nib) * ldexp(1.0, sc[r * C / 32 + c / 32] - 127);
            ok += out[r * C + c] == (float)want;
        }
    CHECK_EQ_INT(ok, R * C);
    uint8_t b1[16] = {0x71}, s1[1] = {128}; /* codes 1 (0.5) and 7 (6.0), scale 2 */
    float o1[32];
    hr_dequant_mxfp4(b1, s1, o1, 1, 32);
    CHECK_NEAR(o1[0], 1.0, 0);
    CHECK_NEAR(o1[1], 12.0, 0);
}

/* E2M1 encoding: nearest of the 8 magnitudes, ties to the even code,
 * saturating, +0 for zero results, sign kept otherwise. */
static void test_e2m1_encode(void) {
    int ok = 0, n = 0;
    for (int i = -3000; i <= 3000; i++) {
        float x = (float)i / 400.0f; /* step 1/400 hits every midpoint exactly */
        double best = INFINITY;
        int bc = 0;
        for (int c = 0; c < 8; c++) {
            double d = fabs(e2m1_def((uint8_t)c) - fabs((double)x));
            if (d < best || (d == best && c % 2 == 0)) {
                best = d;
                bc = c;
            }
        }
        uint8_t want = (uint8_t)(bc == 0 ? 0 : (x < 0 ? bc | 8 : bc));
        ok += hr_quant_e2m1(x) == want;
        n++;
    }
    CHECK_EQ_INT(ok, n);
    CHECK_EQ_INT(hr_quant_e2m1(-0.0f), 0);
    CHECK_EQ_INT(hr_quant_e2m1(-0.2f), 0);
    CHECK_EQ_INT(hr_quant_e2m1(0.75f), 2);
    CHECK_EQ_INT(hr_quant_e2m1(-3.5f), 14);
    CHECK_EQ_INT(hr_quant_e2m1(1e9f), 7);
    CHECK_EQ_INT(hr_quant_e2m1(-1e9f), 15);
}

/* Quantize -> dequantize: every element within half a quantization step of
 * its block (the step at the element's magnitude, saturation excluded by the
 * recipes' scale choice); MXFP4 is idempotent. */
static void test_quant_round_trip(void) {
    enum { R = 8, C = 128 };
    static float w[R * C], back[R * C];
    static uint8_t packed[R * C / 2], sc16[R * C / 16], sc32[R * C / 32], codes[R * C];
    for (int i = 0; i < R * C; i++) w[i] = frand(-1, 1) * (i % 37 == 0 ? 8.0f : 1.0f) * (i < C ? 1e-3f : 1.0f);
    /* FP8: relative error <= 2^-4 (3 mantissa bits) above the subnormal range */
    float s8 = hr_quant_fp8_e4m3(w, R * C, codes);
    hr_dequant_fp8_e4m3(codes, s8, back, R * C);
    int ok = 0;
    for (int i = 0; i < R * C; i++) ok += fabsf(back[i] - w[i]) <= fmaxf(fabsf(w[i]) / 16.0f, s8 * 0x1p-10f);
    CHECK_EQ_INT(ok, R * C);
    /* NVFP4: |err| <= half the largest gap (2 at the top of E2M1) times the block scale */
    float s2 = hr_quant_nvfp4(w, R, C, packed, sc16);
    hr_dequant_nvfp4(packed, sc16, s2, back, R, C);
    ok = 0;
    for (int i = 0; i < R * C; i++) {
        float bs = (float)e4m3_def(sc16[i / 16]) * s2;
        float amax = 0;
        for (int j = i / 16 * 16; j < i / 16 * 16 + 16; j++) amax = fmaxf(amax, fabsf(w[j]));
        /* the E4M3 rounding of the block scale can push amax/bs slightly past 6 */
        ok += fabsf(back[i] - w[i]) <= 1.0f * bs + fmaxf(0.0f, amax - 6.0f * bs) + 1e-12f;
    }
    CHECK_EQ_INT(ok, R * C);
    /* MXFP4 */
    hr_quant_mxfp4(w, R, C, packed, sc32);
    hr_dequant_mxfp4(packed, sc32, back, R, C);
    ok = 0;
    for (int i = 0; i < R * C; i++) {
        /* OCP recipe: amax / X lands in [4, 8), so the top of a block saturates at 6X */
        float X = (float)ldexp(1.0, sc32[i / 32] - 127), amax = 0;
        for (int j = i / 32 * 32; j < i / 32 * 32 + 32; j++) amax = fmaxf(amax, fabsf(w[j]));
        ok += fabsf(back[i] - w[i]) <= X + fmaxf(0.0f, amax - 6.0f * X) + 1e-12f;
    }
    CHECK_EQ_INT(ok, R * C);
    static uint8_t p2[R * C / 2], s2b[R * C / 32];
    hr_quant_mxfp4(back, R, C, p2, s2b);
    CHECK(memcmp(p2, packed, sizeof p2) == 0 && memcmp(s2b, sc32, sizeof s2b) == 0);
    /* an all-zero block */
    float z[32] = {0};
    uint8_t zb[16], zs[1];
    hr_quant_mxfp4(z, 1, 32, zb, zs);
    CHECK(zs[0] == 0 && zb[0] == 0 && zb[15] == 0);
    uint8_t zp[16], zsc[2];
    CHECK_NEAR(hr_quant_nvfp4(z, 1, 32, zp, zsc), 1.0, 0);
    CHECK(zp[0] == 0 && e4m3_def(zsc[0]) == 1.0);
}

/* ---- helper mode -------------------------------------------------------- */

static void *slurp(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *p = malloc(want ? want : 1);
    size_t got = fread(p, 1, want, f);
    fclose(f);
    if (got != want) {
        free(p);
        return NULL;
    }
    return p;
}

static int spit(const char *path, const float *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t w = fwrite(x, sizeof(float), n, f);
    fclose(f);
    return w != n;
}

static int spit_bytes(const char *path, const void *x, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 1;
    size_t w = fwrite(x, 1, n, f);
    fclose(f);
    return w != n;
}

static int helper(int argc, char **argv) {
    const char *mode = argv[1];
    int rc = 2;
    void *a = NULL, *b = NULL;
    float *out = NULL;
    if (strcmp(mode, "--fp8") == 0 && argc == 6) {
        size_t n = strtoull(argv[4], NULL, 10);
        if (!(a = slurp(argv[2], n))) goto fail;
        out = malloc(n * sizeof(float) + 1);
        hr_dequant_fp8_e4m3(a, strtof(argv[3], NULL), out, n);
        rc = spit(argv[5], out, n);
    } else if (strcmp(mode, "--fake") == 0 && argc == 6) {
        size_t n = strtoull(argv[4], NULL, 10);
        float s = strtof(argv[3], NULL);
        if (!(a = slurp(argv[2], n * sizeof(float)))) goto fail;
        out = malloc(n * sizeof(float) + 1);
        for (size_t i = 0; i < n; i++) out[i] = hr_fp8_fake_quant(((float *)a)[i], s);
        rc = spit(argv[5], out, n);
    } else if (strcmp(mode, "--nvfp4") == 0 && argc == 8) {
        int64_t rows = strtoll(argv[5], NULL, 10), cols = strtoll(argv[6], NULL, 10);
        if (!(a = slurp(argv[2], (size_t)(rows * cols / 2))) || !(b = slurp(argv[3], (size_t)(rows * cols / 16))))
            goto fail;
        out = malloc((size_t)(rows * cols) * sizeof(float) + 1);
        hr_dequant_nvfp4(a, b, strtof(argv[4], NULL), out, rows, cols);
        rc = spit(argv[7], out, (size_t)(rows * cols));
    } else if (strcmp(mode, "--mxfp4") == 0 && argc == 7) {
        int64_t rows = strtoll(argv[4], NULL, 10), cols = strtoll(argv[5], NULL, 10);
        if (!(a = slurp(argv[2], (size_t)(rows * cols / 2))) || !(b = slurp(argv[3], (size_t)(rows * cols / 32))))
            goto fail;
        out = malloc((size_t)(rows * cols) * sizeof(float) + 1);
        hr_dequant_mxfp4(a, b, out, rows, cols);
        rc = spit(argv[6], out, (size_t)(rows * cols));
    } else if (strcmp(mode, "--quant-fp8") == 0 && argc == 6) {
        size_t n = strtoull(argv[3], NULL, 10);
        if (!(a = slurp(argv[2], n * sizeof(float)))) goto fail;
        b = malloc(n + 1);
        float s = hr_quant_fp8_e4m3(a, n, b);
        rc = spit_bytes(argv[4], b, n) || spit(argv[5], &s, 1);
    } else if (strcmp(mode, "--quant-nvfp4") == 0 && argc == 8) {
        int64_t rows = strtoll(argv[3], NULL, 10), cols = strtoll(argv[4], NULL, 10);
        if (!(a = slurp(argv[2], (size_t)(rows * cols) * sizeof(float)))) goto fail;
        uint8_t *sc = malloc((size_t)(rows * cols / 16) + 1);
        b = malloc((size_t)(rows * cols / 2) + 1);
        float s2 = hr_quant_nvfp4(a, rows, cols, b, sc);
        rc = spit_bytes(argv[5], b, (size_t)(rows * cols / 2)) || spit_bytes(argv[6], sc, (size_t)(rows * cols / 16)) ||
             spit(argv[7], &s2, 1);
        free(sc);
    } else if (strcmp(mode, "--quant-mxfp4") == 0 && argc == 7) {
        int64_t rows = strtoll(argv[3], NULL, 10), cols = strtoll(argv[4], NULL, 10);
        if (!(a = slurp(argv[2], (size_t)(rows * cols) * sizeof(float)))) goto fail;
        uint8_t *sc = malloc((size_t)(rows * cols / 32) + 1);
        b = malloc((size_t)(rows * cols / 2) + 1);
        hr_quant_mxfp4(a, rows, cols, b, sc);
        rc = spit_bytes(argv[5], b, (size_t)(rows * cols / 2)) || spit_bytes(argv[6], sc, (size_t)(rows * cols / 32));
        free(sc);
    } else {
        fprintf(stderr, "bad helper arguments\n");
    }
fail:
    if (rc == 2) fprintf(stderr, "helper %s failed (inputs missing or short?)\n", mode);
    free(a);
    free(b);
    free(out);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1) return helper(argc, argv);
    test_fake_quant();
    test_fp8();
    test_nvfp4();
    test_mxfp4();
    test_e2m1_encode();
    test_quant_round_trip();
    return test_report("quant/test_quant");
}
