/* core/philox.h: Philox4x32-10 against the published Random123 known-answer
 * vectors (kat_vectors, "philox4x32 10" lines: counter[4] key[2] -> out[4]),
 * and the sampler's uniform: in [0, 1), a pure function of (seed, step),
 * different for neighbouring steps and seeds, mean and variance of 1e6 draws
 * within 6 sigma of 1/2 and 1/12. */
#include <stdint.h>

#include "core/philox.h"
#include "test.h"

static void test_kat(void) {
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
        {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
         {0xffffffffu, 0xffffffffu},
         {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
        {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
         {0xa4093822u, 0x299f31d0u},
         {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        uint32_t o[4];
        hr_philox4x32_10(kat[k].ctr, kat[k].key, o);
        for (int i = 0; i < 4; i++)
            CHECK_MSG(o[i] == kat[k].out[i], "vector %zu word %d: %08x != %08x", k, i, o[i], kat[k].out[i]);
    }
}

static void test_uniform(void) {
    /* the uniform is built from the first two words of the block */
    uint32_t ctr[4] = {5, 0, 0, 0}, key[2] = {0x89abcdefu, 0x01234567u}, o[4];
    hr_philox4x32_10(ctr, key, o);
    double want = (double)((((uint64_t)o[0] << 32) | o[1]) >> 11) * 0x1.0p-53;
    CHECK(hr_philox_uniform(0x0123456789abcdefULL, 5) == want);
    CHECK(hr_philox_uniform(42, 7) == hr_philox_uniform(42, 7));
    CHECK(hr_philox_uniform(42, 7) != hr_philox_uniform(42, 8));
    CHECK(hr_philox_uniform(42, 7) != hr_philox_uniform(43, 7));
    CHECK(hr_philox_uniform(42, 1ULL << 32) != hr_philox_uniform(42, 0)); /* the counter's high word counts */
    const int n = 1000000;
    double s = 0, s2 = 0;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        double u = hr_philox_uniform((uint64_t)i * 0x9e3779b97f4a7c15ULL, (uint64_t)i % 97);
        if (!(u >= 0 && u < 1)) bad++;
        s += u;
        s2 += u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    CHECK_EQ_INT(bad, 0);
    /* sd of the mean: sqrt(1/12 / n) = 2.9e-4; of the variance: ~sqrt(1/180 / n) = 7.5e-5 */
    CHECK_NEAR(mean, 0.5, 6 * 2.9e-4);
    CHECK_NEAR(var, 1.0 / 12, 6 * 7.5e-5);
}

int main(void) {
    test_kat();
    test_uniform();
    return test_report("core/test_philox");
}
