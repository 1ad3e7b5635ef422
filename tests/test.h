/* Minimal test harness: CHECK macros that count and report, and a closing
 * line "N passed, N failed" that CI reads. Each test executable returns
 * non-zero when any check failed; 77 means skipped. */
#ifndef HEARTH_TEST_H
#define HEARTH_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_, test_failed_;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) test_passed_++;                                                \
        else {                                                                   \
            test_failed_++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (cond) test_passed_++;                                                \
        else {                                                                   \
            test_failed_++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fputc('\n', stderr);                                                 \
        }                                                                        \
    } while (0)

#define CHECK_EQ_INT(a, b) CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))
#define CHECK_STREQ(a, b)  CHECK_MSG(strcmp((a), (b)) == 0, "\"%s\" != \"%s\"", (a), (b))
#define CHECK_NEAR(a, b, tol) \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %g)", (double)(a), (double)(b), (double)(tol))

/* Fixture root: $HEARTH_FIXTURES, else ../shared/fixtures relative to the source tree. */
static inline const char *test_fixtures(void) {
    const char *f = getenv("HEARTH_FIXTURES");
    return f ? f : "../shared/fixtures";
}

#define TEST_SKIP(...) do { fprintf(stderr, "SKIP: " __VA_ARGS__); fputc('\n', stderr); exit(77); } while (0)

/* Skips the test (77) when a fixture file it needs cannot be read. */
static inline void test_need_fixture(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) TEST_SKIP("no fixture %s", path);
    fclose(f);
}

static inline int test_report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

/* Pearson's chi-square of n draws (cnt[i] of token i) against probabilities
 * prob[0..V): cells expected below 5 draws are pooled into one. Returns the
 * statistic; *bound is a pass bound (df + 6 sd + 10: ~1e-8 false alarms, while
 * a wrong temperature or cut moves the statistic by thousands); *support the
 * tokens of non-zero probability, *bins the cells used. */
static inline double test_chi2(const long *cnt, const double *prob, int V, double n, double *bound, int *support,
                               int *bins) {
    double chi = 0, pool_e = 0, pool_o = 0;
    *bins = *support = 0;
    for (int i = 0; i < V; i++) {
        if (prob[i] > 0) (*support)++;
        double e = prob[i] * n;
        if (e >= 5) {
            chi += (cnt[i] - e) * (cnt[i] - e) / e;
            (*bins)++;
        } else if (prob[i] > 0) {
            pool_e += e;
            pool_o += (double)cnt[i];
        }
    }
    if (pool_e >= 5) {
        chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        (*bins)++;
    }
    double df = *bins > 1 ? *bins - 1 : 1;
    *bound = df + 6 * sqrt(2 * df) + 10;
    return chi;
}

#endif
