/* Sampler against brute-force references: exact checks for greedy, logit
 * bias, min_tokens masking, penalties, raw logprobs and seed reproducibility;
 * distribution checks (chi-square over many draws) for temperature, top-k,
 * top-p and min-p, including a vocabulary big enough for the partial-select
 * top-p path. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "engine/sampler.h"
#include "test.h"

static uint64_t rs = 88172645463325252ULL;
static double urand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * 0x1.0p-53;
}
static void rand_logits(float *x, int n, float scale) {
    for (int i = 0; i < n; i++) x[i] = (float)((urand() * 2 - 1) * scale);
}

static void test_greedy(void) {
    enum { V = 1000 };
    float x[V];
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 0;
    for (int it = 0; it < 20; it++) {
        rand_logits(x, V, 5);
        int ref = 0;
        for (int i = 1; i < V; i++)
            if (x[i] > x[ref]) ref = i;
        hr_sampler *s = hr_sampler_new(&p, V, NULL, 0);
        hr_sample_result r;
        CHECK_EQ_INT(hr_sampler_sample(s, x, 0, NULL, 0, &r), HR_OK);
        CHECK_EQ_INT(r.id, ref);
        hr_sampler_free(s);
    }
    /* ties: lowest index */
    for (int i = 0; i < V; i++) x[i] = 0;
    x[17] = x[400] = x[999] = 3;
    hr_sampler *s = hr_sampler_new(&p, V, NULL, 0);
    hr_sample_result r;
    hr_sampler_sample(s, x, 0, NULL, 0, &r);
    CHECK_EQ_INT(r.id, 17);
    /* below 1e-5 is greedy too */
    p.temperature = 1e-6f;
    hr_sampler_free(s);
    s = hr_sampler_new(&p, V, NULL, 0);
    for (int i = 0; i < V; i++) x[i] = 0;
    x[5] = 0.001f;
    hr_sampler_sample(s, x, 0, NULL, 0, &r);
    CHECK_EQ_INT(r.id, 5);
    hr_sampler_free(s);
}

static void test_bias_and_min_tokens(void) {
    enum { V = 64 };
    float x[V], y[V];
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 0;
    rand_logits(x, V, 1);
    x[3] = 10; /* clear winner */
    p.n_logit_bias = 2;
    p.logit_bias_ids[0] = 40;
    p.logit_bias_vals[0] = 20;
    p.logit_bias_ids[1] = 9999; /* out of range: ignored */
    p.logit_bias_vals[1] = 100;
    hr_sampler *s = hr_sampler_new(&p, V, NULL, 0);
    memcpy(y, x, sizeof x);
    hr_sample_result r;
    hr_sampler_sample(s, y, 0, NULL, 0, &r);
    CHECK_EQ_INT(r.id, 40);
    CHECK_NEAR(y[40], x[40] + 20, 1e-6);
    for (int i = 0; i < V; i++)
        if (i != 40) CHECK(y[i] == x[i]);
    hr_sampler_free(s);

    /* min_tokens: the stop ids are masked until n_generated >= min_tokens */
    hr_sampling_params_default(&p);
    p.temperature = 0;
    p.min_tokens = 2;
    int32_t stops[2] = {3, 7};
    x[7] = 9;
    s = hr_sampler_new(&p, V, NULL, 0);
    for (int g = 0; g < 3; g++) {
        memcpy(y, x, sizeof x);
        hr_sampler_sample(s, y, g, stops, 2, &r);
        if (g < 2) {
            CHECK(r.id != 3 && r.id != 7);
            CHECK(isinf(y[3]) && isinf(y[7]));
        } else {
            CHECK_EQ_INT(r.id, 3);
        }
    }
    hr_sampler_free(s);
}

/* Penalties: the logits after the call must equal the reference exactly
 * (greedy: no temperature scaling afterwards). */
static void test_penalties(void) {
    enum { V = 50, NP = 6, STEPS = 12 };
    int32_t prompt[NP] = {1, 4, 4, 9, 20, 49};
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 0;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    hr_sampler *s = hr_sampler_new(&p, V, prompt, NP);
    int counts[V] = {0};
    bool inp[V] = {false};
    for (int i = 0; i < NP; i++) inp[prompt[i]] = true;
    int bad = 0;
    for (int st = 0; st < STEPS; st++) {
        float x[V], y[V], ref[V];
        rand_logits(x, V, 3);
        /* make repeats likely: favour a few ids */
        x[4] += 2;
        x[(st * 7) % V] += 3;
        memcpy(y, x, sizeof x);
        for (int i = 0; i < V; i++) {
            float l = x[i];
            if (inp[i] || counts[i] > 0) l = l > 0 ? l / 1.3f : l * 1.3f;
            if (counts[i] > 0) l -= 0.25f * (float)counts[i] + 0.5f;
            ref[i] = l;
        }
        hr_sample_result r;
        hr_sampler_sample(s, y, st, NULL, 0, &r);
        for (int i = 0; i < V; i++)
            if (fabsf(y[i] - ref[i]) > 1e-6f) bad++;
        int am = 0;
        for (int i = 1; i < V; i++)
            if (ref[i] > ref[am]) am = i;
        CHECK_EQ_INT(r.id, am);
        counts[r.id]++;
    }
    CHECK_EQ_INT(bad, 0);
    hr_sampler_free(s);
}

static void test_logprobs(void) {
    enum { V = 300 };
    float x[V], y[V];
    rand_logits(x, V, 4);
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 0.8f;
    p.logprobs = 5;
    p.repetition_penalty = 2.0f; /* must not change the raw logprobs */
    p.n_logit_bias = 1;
    p.logit_bias_ids[0] = 11;
    p.logit_bias_vals[0] = 50;
    int32_t prompt[3] = {11, 12, 13};
    hr_sampler *s = hr_sampler_new(&p, V, prompt, 3);
    memcpy(y, x, sizeof x);
    hr_sample_result r;
    hr_sampler_sample(s, y, 0, NULL, 0, &r);
    double m = -1e30, sum = 0;
    for (int i = 0; i < V; i++) m = fmax(m, x[i]);
    for (int i = 0; i < V; i++) sum += exp(x[i] - m);
    double lse = m + log(sum);
    CHECK_EQ_INT(r.id, 11); /* bias dominates */
    CHECK_NEAR(r.logprob, x[11] - lse, 1e-5);
    CHECK_EQ_INT(r.n_top, 5);
    bool used[V] = {false};
    for (int k = 0; k < 5; k++) {
        int best = -1;
        for (int i = 0; i < V; i++)
            if (!used[i] && (best < 0 || x[i] > x[best])) best = i;
        used[best] = true;
        CHECK_EQ_INT(r.top_ids[k], best);
        CHECK_NEAR(r.top_logprobs[k], x[best] - lse, 1e-5);
    }
    hr_sampler_free(s);
}

static void test_seed(void) {
    enum { V = 200, N = 50 };
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 1.5f;
    p.top_p = 0.95f;
    p.has_seed = true;
    p.seed = 1234;
    float base[V];
    rand_logits(base, V, 2);
    int a[N], b[N], c[N];
    hr_sampler *s1 = hr_sampler_new(&p, V, NULL, 0);
    hr_sampler *s2 = hr_sampler_new(&p, V, NULL, 0);
    hr_sampling_params q = p;
    q.seed = 1235;
    hr_sampler *s3 = hr_sampler_new(&q, V, NULL, 0);
    hr_sampling_params u = p;
    u.has_seed = false;
    hr_sampler *noise = hr_sampler_new(&u, V, NULL, 0);
    for (int i = 0; i < N; i++) {
        float x[V];
        hr_sample_result r;
        memcpy(x, base, sizeof x);
        hr_sampler_sample(s1, x, i, NULL, 0, &r);
        a[i] = r.id;
        /* other sequences sampling in between (a different batch) must not matter */
        for (int k = 0; k < i % 3; k++) {
            memcpy(x, base, sizeof x);
            hr_sampler_sample(noise, x, i, NULL, 0, &r);
        }
        memcpy(x, base, sizeof x);
        hr_sampler_sample(s2, x, i, NULL, 0, &r);
        b[i] = r.id;
        memcpy(x, base, sizeof x);
        hr_sampler_sample(s3, x, i, NULL, 0, &r);
        c[i] = r.id;
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    hr_sampler_free(s1);
    hr_sampler_free(s2);
    hr_sampler_free(s3);
    hr_sampler_free(noise);
}

static const double *sort_vals;
static int by_value_desc(const void *a, const void *b) {
    double x = sort_vals[*(const int *)a], y = sort_vals[*(const int *)b];
    return (x < y) - (x > y);
}

/* Brute force: softmax(x/T), min-p, top-k (ties kept), top-p, renormalise. */
static void reference_probs(const float *x, int V, const hr_sampling_params *p, double *prob) {
    double *l = malloc(sizeof(double) * V);
    int *ord = malloc(sizeof(int) * V);
    double m = -1e300;
    for (int i = 0; i < V; i++) {
        l[i] = (double)(x[i] * (1.0f / p->temperature));
        m = fmax(m, l[i]);
    }
    bool *keep = malloc(V);
    for (int i = 0; i < V; i++) keep[i] = !(p->min_p > 0) || exp(l[i] - m) >= p->min_p;
    for (int i = 0; i < V; i++) ord[i] = i;
    sort_vals = l;
    qsort(ord, (size_t)V, sizeof *ord, by_value_desc);
    if (p->top_k > 0) {
        int seen = 0;
        double kth = 0;
        for (int r = 0; r < V; r++) {
            int i = ord[r];
            if (!keep[i]) continue;
            if (++seen == p->top_k) {
                kth = l[i];
                break;
            }
        }
        if (seen == p->top_k)
            for (int i = 0; i < V; i++)
                if (l[i] < kth) keep[i] = false;
    }
    if (p->top_p < 1) {
        double tot = 0, cum = 0;
        for (int i = 0; i < V; i++)
            if (keep[i]) tot += exp(l[i] - m);
        for (int r = 0; r < V; r++) {
            int i = ord[r];
            if (!keep[i]) continue;
            if (cum >= p->top_p * tot)
                keep[i] = false;
            else
                cum += exp(l[i] - m);
        }
    }
    double tot = 0;
    for (int i = 0; i < V; i++) tot += keep[i] ? exp(l[i] - m) : 0;
    for (int i = 0; i < V; i++) prob[i] = keep[i] ? exp(l[i] - m) / tot : 0;
    free(l);
    free(ord);
    free(keep);
}

/* Draws n tokens and compares with the reference: no draw outside the
 * support, and a chi-square over bins with expected count >= 5 (the rest
 * pooled) below df + 6 sqrt(2 df) + 10 -- a false alarm is ~1e-6 likely,
 * while a wrong temperature or cut moves the statistic by thousands. */
static void check_distribution(const char *name, int V, float scale, const hr_sampling_params *p, int n) {
    float *x = malloc(sizeof(float) * V), *y = malloc(sizeof(float) * V);
    double *prob = malloc(sizeof(double) * V);
    long *cnt = calloc(V, sizeof(long));
    rand_logits(x, V, scale);
    reference_probs(x, V, p, prob);
    hr_sampler *s = hr_sampler_new(p, V, NULL, 0);
    long outside = 0;
    for (int i = 0; i < n; i++) {
        memcpy(y, x, sizeof(float) * V);
        hr_sample_result r;
        hr_sampler_sample(s, y, i, NULL, 0, &r); /* counter i: a fresh Philox draw */
        cnt[r.id]++;
        if (prob[r.id] == 0) outside++;
    }
    int bins, support;
    double bound, chi = test_chi2(cnt, prob, V, n, &bound, &support, &bins);
    printf("%s: V=%d support=%d bins=%d chi2=%.1f bound=%.1f outside=%ld\n", name, V, support, bins, chi, bound,
           outside);
    CHECK_MSG(outside == 0, "%s: %ld draws outside the support", name, outside);
    CHECK_MSG(chi < bound, "%s: chi2 %.1f >= %.1f", name, chi, bound);
    hr_sampler_free(s);
    free(x);
    free(y);
    free(prob);
    free(cnt);
}

static void test_distributions(void) {
    hr_sampling_params p;
    hr_sampling_params_default(&p);
    p.temperature = 0.7f;
    p.has_seed = true;
    p.seed = 7;
    check_distribution("temperature", 40, 2, &p, 25000);
    p.top_k = 8;
    check_distribution("top_k", 40, 2, &p, 25000);
    p.top_k = 0;
    p.top_p = 0.8f;
    check_distribution("top_p", 60, 2, &p, 25000);
    p.top_p = 1;
    p.min_p = 0.1f;
    check_distribution("min_p", 60, 2, &p, 25000);
    p.top_k = 20;
    p.top_p = 0.9f;
    p.min_p = 0.02f;
    p.temperature = 1.3f;
    check_distribution("all", 80, 3, &p, 25000);
    /* large vocabulary: top-p over > 1024 candidates goes through partial selection */
    hr_sampling_params_default(&p);
    p.has_seed = true;
    p.seed = 99;
    p.top_p = 0.7f;
    check_distribution("top_p_large", 8000, 5, &p, 8000);
    p.top_p = 1;
    p.top_k = 50;
    check_distribution("top_k_large", 8000, 4, &p, 8000);
}

int main(void) {
    test_greedy();
    test_bias_and_min_tokens();
    test_penalties();
    test_logprobs();
    test_seed();
    test_distributions();
    return test_report("engine/test_sampler");
}
