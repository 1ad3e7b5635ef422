/* The `sample` op (backend.h, hr_sample_row) on the CPU backend and, when a
 * GPU is present, the CUDA backend:
 * 1. Equality with the engine's host sampler (hr_sampler_sample, sampler.c):
 *    random logits (several scales, some with exact ties) for vocabularies
 *    of 50, 32000 and 128256 and 1..300 rows per call, every row with its own
 *    seeded sampler whose parameters cycle through greedy, temperature only,
 *    top-k (small and > 1024), top-p, min-p, penalties (with a prompt and a
 *    generated history), logit_bias, an active min_tokens mask and
 *    combinations; the rows the op gets come from hr_sampler_row. The CPU op
 *    must give exactly the sampler's ids (it runs the same reference). The
 *    CUDA op must give the CPU's ids: the contract allows a different id only
 *    when a draw lands within a rounding error (~1e-15 relative) of a
 *    boundary, which these ~3000 random rows are not expected to hit, so the
 *    check is exact equality.
 * 2. Distribution: fixed logits (vocab 200), 40000 rows differing only in the
 *    Philox key; the counts of each id match softmax(logits / T) restricted by
 *    top-k / top-p / min-p computed here independently in double (sorted,
 *    ties kept): no draw outside the support and a chi-square over bins with
 *    expected count >= 5 below df + 6 sqrt(2 df) + 10 (a false alarm is
 *    ~1e-6 likely; a wrong temperature or cut moves it by thousands).
 * 3. Greedy ties (lowest id), a row of -inf only (id 0), argument errors.
 * 4. hr_sample_exp (the weights both sides use) against exp() in double:
 *    relative error <= 4e-7 (a few float ulps) on (-87, 10], 0 at and below -87.
 * HEARTH_TEST_QUICK=1: vocabularies 50 and 32000 at 1 and 37 rows, no
 * distributions (for compute-sanitizer racecheck / memcheck on the GPU). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/sample_exp.h"
#include "engine/sampler.h"
#include "test.h"

static uint64_t rs = 0x853c49e6748fea9bULL;
static uint32_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}
static float frand(void) { return (float)(rnd() & 0xffffff) / (float)0x1000000; }

#define N_VARIANTS 12
#define N_STOP     3

/* Parameters of variant v (p starts from the defaults). */
static void variant(int v, hr_sampling_params *p) {
    hr_sampling_params_default(p);
    p->has_seed = true;
    p->seed = ((uint64_t)rnd() << 32) | rnd();
    switch (v) {
    case 0:
        p->temperature = 0;
        break;
    case 1:
        p->temperature = 0.7f;
        break;
    case 2:
        p->top_k = 40;
        break;
    case 3:
        p->temperature = 0.9f;
        p->top_p = 0.9f;
        break;
    case 4:
        p->min_p = 0.05f;
        break;
    case 5:
        p->presence_penalty = 0.5f;
        p->frequency_penalty = 0.3f;
        p->repetition_penalty = 1.2f;
        break;
    case 6:
        p->temperature = 0.8f;
        p->top_k = 50;
        p->top_p = 0.95f;
        p->min_p = 0.02f;
        p->presence_penalty = -0.2f;
        p->frequency_penalty = 0.1f;
        p->repetition_penalty = 0.9f;
        break;
    case 7:
        p->temperature = 1.2f;
        p->top_k = 2000;
        p->top_p = 0.8f;
        break;
    case 8:
        p->min_tokens = 1000; /* the stop ids stay masked */
        p->n_logit_bias = 3;
        p->logit_bias_ids[0] = 1;
        p->logit_bias_vals[0] = 5.0f;
        p->logit_bias_ids[1] = 1;
        p->logit_bias_vals[1] = -1.5f; /* the same id twice: both apply, in order */
        p->logit_bias_ids[2] = 7;
        p->logit_bias_vals[2] = -100.0f;
        break;
    case 9:
        p->temperature = 2.0f;
        p->top_p = 0.99f;
        break; /* flat: many candidates */
    case 10:
        p->temperature = 0;
        p->repetition_penalty = 1.5f;
        p->min_tokens = 1000;
        break; /* greedy after penalties */
    case 11:
        p->temperature = 1.5f;
        p->min_p = 0.001f;
        p->top_k = 1;
        break;
    }
}

typedef struct batch {
    int V, rows;
    float *logits;
    hr_sampler **s;
    int *n_gen;
    int32_t stops[N_STOP];
    hr_sample_row *row;
    int32_t *ids_cpu, *ids_gpu;
} batch;

static void batch_free(batch *b) {
    for (int r = 0; b->s && r < b->rows; r++) hr_sampler_free(b->s[r]);
    free(b->s);
    free(b->logits);
    free(b->n_gen);
    free(b->row);
    free(b->ids_cpu);
    free(b->ids_gpu);
}

/* Random logits, samplers with histories, and their rows. ties: values on a coarse grid. */
static int batch_make(batch *b, int V, int rows, float scale, bool ties, int v0) {
    memset(b, 0, sizeof *b);
    b->V = V;
    b->rows = rows;
    b->logits = malloc(sizeof(float) * (size_t)V * rows);
    b->s = calloc((size_t)rows, sizeof *b->s);
    b->n_gen = calloc((size_t)rows, sizeof *b->n_gen);
    b->row = calloc((size_t)rows, sizeof *b->row);
    b->ids_cpu = calloc((size_t)rows, sizeof *b->ids_cpu);
    b->ids_gpu = calloc((size_t)rows, sizeof *b->ids_gpu);
    if (!b->logits || !b->s || !b->n_gen || !b->row || !b->ids_cpu || !b->ids_gpu) return -1;
    for (size_t i = 0; i < (size_t)V * rows; i++) {
        float x = (2 * frand() - 1) * scale;
        b->logits[i] = ties ? roundf(x * 2) / 2 : x;
    }
    for (int i = 0; i < N_STOP; i++) b->stops[i] = (int32_t)(rnd() % (uint32_t)V);
    for (int r = 0; r < rows; r++) {
        hr_sampling_params p;
        variant((v0 + r) % N_VARIANTS, &p);
        int32_t prompt[24];
        for (int i = 0; i < 24; i++) prompt[i] = (int32_t)(rnd() % (uint32_t)HR_MIN(V, 64)); /* repeats */
        b->s[r] = hr_sampler_new(&p, V, prompt, 24);
        if (!b->s[r]) return -1;
        b->n_gen[r] = (int)(rnd() % 12);
        for (int g = 0; g < b->n_gen[r]; g++) hr_sampler_accept(b->s[r], (int32_t)(rnd() % (uint32_t)HR_MIN(V, 40)));
        /* favour the penalised ids so the penalties matter */
        for (int i = 0; i < 5; i++) b->logits[(size_t)r * V + prompt[i]] += scale;
        hr_sampler_row(b->s[r], b->n_gen[r], b->stops, N_STOP, &b->row[r]);
    }
    return 0;
}

static int op_sample(hr_backend *be, const batch *b, int32_t *ids) {
    int64_t ne[2] = {b->rows, b->V};
    hr_tensor *t = hr_tensor_from_f32(be, 2, ne, b->logits, "logits");
    if (!t) return -1;
    int rc = be->ops->sample(be, t, b->row, b->rows, ids);
    if (rc != HR_OK) fprintf(stderr, "%s sample: %s\n", be->ops->name, be->err.msg);
    be->ops->tensor_free(be, t);
    return rc;
}

/* 1. equality: CPU op == host sampler; CUDA op == CPU op */
static void compare_case(hr_backend *cpu, hr_backend *gpu, int V, int rows, float scale, bool ties, int v0) {
    batch b;
    if (batch_make(&b, V, rows, scale, ties, v0)) {
        CHECK_MSG(0, "out of memory for V=%d rows=%d", V, rows);
        batch_free(&b);
        return;
    }
    CHECK_EQ_INT(op_sample(cpu, &b, b.ids_cpu), HR_OK);
    if (gpu) CHECK_EQ_INT(op_sample(gpu, &b, b.ids_gpu), HR_OK);
    /* the host sampler last: it records the token and may move the arrays the rows point at */
    float *x = malloc(sizeof(float) * V);
    int bad_host = 0, bad_gpu = 0;
    for (int r = 0; r < rows; r++) {
        memcpy(x, b.logits + (size_t)r * V, sizeof(float) * V);
        hr_sample_result res;
        CHECK_EQ_INT(hr_sampler_sample(b.s[r], x, b.n_gen[r], b.stops, N_STOP, &res), HR_OK);
        if (res.id != b.ids_cpu[r] && bad_host++ < 5)
            fprintf(stderr, "V=%d row %d variant %d: cpu op %d, sampler %d\n", V, r, (v0 + r) % N_VARIANTS,
                    b.ids_cpu[r], res.id);
        if (gpu && b.ids_gpu[r] != b.ids_cpu[r] && bad_gpu++ < 5)
            fprintf(stderr, "V=%d row %d variant %d: cuda %d, cpu %d\n", V, r, (v0 + r) % N_VARIANTS, b.ids_gpu[r],
                    b.ids_cpu[r]);
    }
    CHECK_MSG(bad_host == 0, "V=%d rows=%d scale %g: %d rows differ between the CPU op and the sampler", V, rows,
              (double)scale, bad_host);
    if (gpu)
        CHECK_MSG(bad_gpu == 0, "V=%d rows=%d scale %g: %d rows differ between CUDA and CPU", V, rows, (double)scale,
                  bad_gpu);
    free(x);
    batch_free(&b);
}

/* 2. distribution ---------------------------------------------------------- */
static const double *sort_vals;
static int by_value_desc(const void *a, const void *b) {
    double x = sort_vals[*(const int *)a], y = sort_vals[*(const int *)b];
    return (x < y) - (x > y);
}

/* softmax(l / T) restricted as the contract says, in double. */
static void reference_probs(const float *x, int V, const hr_sample_row *p, double *prob) {
    double *l = malloc(sizeof(double) * V);
    int *ord = malloc(sizeof(int) * V);
    bool *keep = malloc(sizeof(bool) * V);
    double m = -INFINITY;
    for (int i = 0; i < V; i++) {
        l[i] = (double)x[i] / p->temperature;
        m = l[i] > m ? l[i] : m;
        ord[i] = i;
        keep[i] = true;
    }
    sort_vals = l;
    qsort(ord, V, sizeof(int), by_value_desc);
    if (p->min_p > 0)
        for (int i = 0; i < V; i++) keep[i] = exp(l[i] - m) >= p->min_p;
    if (p->top_k > 0 && p->top_k < V) {
        double kth = l[ord[p->top_k - 1]];
        for (int i = 0; i < V; i++) keep[i] = keep[i] && l[i] >= kth;
    }
    if (p->top_p < 1) {
        double tot = 0, above = 0;
        for (int i = 0; i < V; i++) tot += keep[i] ? exp(l[i] - m) : 0;
        for (int r = 0; r < V;) { /* a run of equal values is kept or dropped together */
            int e = r;
            double run = 0;
            while (e < V && l[ord[e]] == l[ord[r]]) {
                if (keep[ord[e]]) run += exp(l[ord[e]] - m);
                e++;
            }
            if (above >= p->top_p * tot)
                for (int q = r; q < e; q++) keep[ord[q]] = false;
            above += run;
            r = e;
        }
    }
    double tot = 0;
    for (int i = 0; i < V; i++) tot += keep[i] ? exp(l[i] - m) : 0;
    for (int i = 0; i < V; i++) prob[i] = keep[i] ? exp(l[i] - m) / tot : 0;
    free(l);
    free(ord);
    free(keep);
}

static void check_distribution(hr_backend *be, const char *name, float temperature, int top_k, float top_p,
                               float min_p) {
    enum { V = 200, N = 40000 };
    float *x = malloc(sizeof(float) * V), *all = malloc(sizeof(float) * V * (size_t)N);
    double *prob = malloc(sizeof(double) * V);
    long *cnt = calloc(V, sizeof(long));
    hr_sample_row *rows = calloc(N, sizeof *rows);
    int32_t *ids = calloc(N, sizeof *ids);
    for (int i = 0; i < V; i++) x[i] = (2 * frand() - 1) * 3;
    for (int r = 0; r < N; r++) {
        memcpy(all + (size_t)r * V, x, sizeof(float) * V);
        rows[r] = (hr_sample_row){.temperature = temperature,
                                  .top_k = top_k,
                                  .top_p = top_p,
                                  .min_p = min_p,
                                  .seed = 0x5eed0000ULL + (uint64_t)r * 7919,
                                  .counter = 3,
                                  .repetition_penalty = 1.0f};
    }
    reference_probs(x, V, &rows[0], prob);
    int64_t ne[2] = {N, V};
    hr_tensor *t = hr_tensor_from_f32(be, 2, ne, all, "logits");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(be->ops->sample(be, t, rows, N, ids), HR_OK);
        be->ops->tensor_free(be, t);
    }
    long outside = 0;
    for (int r = 0; r < N; r++) {
        if (ids[r] < 0 || ids[r] >= V) {
            outside++;
            continue;
        }
        cnt[ids[r]]++;
        if (prob[ids[r]] == 0) outside++;
    }
    int bins, support;
    double bound, chi = test_chi2(cnt, prob, V, N, &bound, &support, &bins);
    printf("%s %s: support=%d bins=%d chi2=%.1f bound=%.1f outside=%ld\n", be->ops->name, name, support, bins, chi,
           bound, outside);
    CHECK_MSG(outside == 0, "%s %s: %ld draws outside the support", be->ops->name, name, outside);
    CHECK_MSG(chi < bound, "%s %s: chi2 %.1f >= %.1f", be->ops->name, name, chi, bound);
    free(x);
    free(all);
    free(prob);
    free(cnt);
    free(rows);
    free(ids);
}

static void distributions(hr_backend *be) {
    check_distribution(be, "temperature", 0.8f, 0, 1.0f, 0.0f);
    check_distribution(be, "top_k", 1.0f, 10, 1.0f, 0.0f);
    check_distribution(be, "top_p", 1.0f, 0, 0.7f, 0.0f);
    check_distribution(be, "min_p", 1.0f, 0, 1.0f, 0.1f);
    check_distribution(be, "all", 1.3f, 60, 0.8f, 0.02f);
}

/* 3. small cases and errors ------------------------------------------------ */
static void edge_cases(hr_backend *be) {
    enum { V = 1000 };
    static float x[2 * V];
    for (int i = 0; i < 2 * V; i++) x[i] = 0;
    x[17] = x[400] = x[999] = 3;                      /* row 0: greedy ties -> 17 */
    for (int i = V; i < 2 * V; i++) x[i] = -INFINITY; /* row 1: nothing sampleable -> 0 */
    hr_sample_row rows[2] = {{.temperature = 0, .repetition_penalty = 1},
                             {.temperature = 1, .top_p = 0.5f, .repetition_penalty = 1, .seed = 9}};
    int64_t ne[2] = {2, V};
    hr_tensor *t = hr_tensor_from_f32(be, 2, ne, x, "edge");
    int32_t ids[2] = {-1, -1};
    CHECK_EQ_INT(be->ops->sample(be, t, rows, 2, ids), HR_OK);
    CHECK_EQ_INT(ids[0], 17);
    CHECK_EQ_INT(ids[1], 0);
    /* a parameter row count that does not match the logits */
    CHECK_EQ_INT(be->ops->sample(be, t, rows, 1, ids), HR_EINVAL);
    CHECK(strstr(be->err.msg, "rows") != NULL);
    be->ops->tensor_free(be, t);
}

static bool quick;

static void exp_accuracy(void) {
    double worst = 0;
    for (int i = 1; i <= 2000000; i++) { /* (-87, 10]: e^x is 0 at and below -87 */
        float x = -87.0f + 97.0f * (float)i / 2000000.0f;
        double want = exp((double)x), got = hr_sample_exp(x);
        double rel = fabs(got - want) / want;
        worst = rel > worst ? rel : worst;
    }
    printf("hr_sample_exp: worst relative error %.3g on (-87, 10]\n", worst);
    CHECK_MSG(worst <= 4e-7, "hr_sample_exp: relative error %.3g", worst);
    CHECK(hr_sample_exp(-INFINITY) == 0.0f);
    CHECK(hr_sample_exp(-100.0f) == 0.0f);
    CHECK(hr_sample_exp(0.0f) == 1.0f);
}

static void run_all(hr_backend *cpu, hr_backend *gpu) {
    static const int vocabs[3] = {50, 32000, 128256};
    static const int rows_for[3][3] = {{1, 37, 300}, {1, 12, 300}, {1, 5, 24}};
    static const float scales[3] = {1.0f, 6.0f, 20.0f};
    for (int vi = 0; vi < (quick ? 2 : 3); vi++)
        for (int ri = 0; ri < (quick ? 2 : 3); ri++)
            for (int si = 0; si < 3; si++) {
                int rows = rows_for[vi][ri];
                for (int v0 = 0; v0 < (rows < N_VARIANTS ? N_VARIANTS : 1); v0 += (rows < 4 ? 1 : 5))
                    compare_case(cpu, gpu, vocabs[vi], rows, scales[si], false, v0);
            }
    /* exact ties everywhere (values on a 0.5 grid) */
    if (quick) return;
    compare_case(cpu, gpu, 50, 300, 4.0f, true, 0);
    compare_case(cpu, gpu, 32000, 48, 4.0f, true, 3);
}

int main(void) {
    hr_err err = {0};
    const char *q = getenv("HEARTH_TEST_QUICK");
    quick = q && !strcmp(q, "1");
    hr_backend *cpu = hr_backend_cpu_create(2, &err);
    if (!cpu) TEST_SKIP("no CPU backend: %s", err.msg);
    CHECK(cpu->ops->sample != NULL);
    CHECK(cpu->host_memory);
    hr_backend *gpu = NULL;
#ifdef HEARTH_HAVE_CUDA
    if (hr_backend_cuda_available()) {
        gpu = hr_backend_cuda_create(0, &err);
        CHECK_MSG(gpu != NULL, "cuda backend: %s", err.msg);
        if (gpu) {
            CHECK(gpu->ops->sample != NULL);
            CHECK(!gpu->host_memory);
        }
    }
#endif
    if (!gpu) printf("no CUDA device: the CUDA part is skipped\n");
    exp_accuracy();
    run_all(cpu, gpu);
    if (!quick) distributions(cpu);
    edge_cases(cpu);
    if (gpu) {
        if (!quick) distributions(gpu);
        edge_cases(gpu);
        hr_backend_free(gpu);
    }
    hr_backend_free(cpu);
    return test_report("backend/test_sample");
}
