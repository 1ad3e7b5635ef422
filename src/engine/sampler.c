/* Per-sequence token sampler (see sampler.h for the order of operations).
 * The per-row math (bias, mask, penalties, temperature, min-p, top-k, top-p,
 * the Philox draw) is hr_sample_row_ref in the backend library, the same code
 * as the CPU backend's `sample` op and the reference of the CUDA one; this
 * file keeps the per-request state: the seed, the penalty counts (a small
 * hash of the tokens actually seen, not a vocab-sized array per request) and
 * the logprobs, which only the host computes. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

struct hr_sampler {
    hr_sampling_params p;
    int vocab;
    uint64_t seed;      /* Philox key: the request's seed, or a random one */
    bool track;         /* any penalty active */
    hr_sample_pen *pen; /* the tokens penalties apply to, dense (what the row points at) */
    int n_pen, cap_pen;
    int32_t *idx; /* open addressing over pen: index or -1, capacity a power of two */
    int hcap;
};

void hr_sampling_params_default(hr_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
}

/* ---- penalty table ---- */
static uint32_t tok_hash(int32_t t) { return (uint32_t)t * 0x9e3779b1u; }

static hr_sample_pen *pen_find(hr_sampler *s, int32_t tok, bool insert) {
    if (insert && (s->n_pen + 1) * 2 > s->hcap) {
        int ncap = s->hcap ? s->hcap * 2 : 64;
        int32_t *ni = malloc((size_t)ncap * sizeof *ni);
        hr_sample_pen *np = realloc(s->pen, (size_t)(ncap / 2) * sizeof *np);
        if (np) s->pen = np;
        if (!ni || !np) {
            free(ni);
            return NULL;
        }
        s->cap_pen = ncap / 2;
        for (int i = 0; i < ncap; i++) ni[i] = -1;
        for (int i = 0; i < s->n_pen; i++) {
            uint32_t h = tok_hash(s->pen[i].id) & (uint32_t)(ncap - 1);
            while (ni[h] >= 0) h = (h + 1) & (uint32_t)(ncap - 1);
            ni[h] = i;
        }
        free(s->idx);
        s->idx = ni;
        s->hcap = ncap;
    }
    if (!s->hcap) return NULL;
    uint32_t h = tok_hash(tok) & (uint32_t)(s->hcap - 1);
    while (s->idx[h] >= 0) {
        if (s->pen[s->idx[h]].id == tok) return &s->pen[s->idx[h]];
        h = (h + 1) & (uint32_t)(s->hcap - 1);
    }
    if (!insert) return NULL;
    s->idx[h] = s->n_pen;
    s->pen[s->n_pen] = (hr_sample_pen){.id = tok, .count = 0, .in_prompt = 0};
    return &s->pen[s->n_pen++];
}

hr_sampler *hr_sampler_new(const hr_sampling_params *p, int vocab_size, const int32_t *prompt, int n_prompt) {
    if (vocab_size <= 0) return NULL;
    hr_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    s->seed = p->seed;
    if (!p->has_seed) {
        /* Unseeded requests still need independent streams. */
        if (getrandom(&s->seed, sizeof s->seed, GRND_NONBLOCK) != (ssize_t)sizeof s->seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            s->seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)s;
        }
    }
    s->track = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    /* The prompt only matters to the repetition penalty. */
    if (s->track && p->repetition_penalty != 1.0f) {
        for (int i = 0; i < n_prompt; i++) {
            if (prompt[i] < 0 || prompt[i] >= vocab_size) continue;
            hr_sample_pen *e = pen_find(s, prompt[i], true);
            if (!e) goto fail;
            e->in_prompt = 1;
        }
    }
    return s;
fail:
    hr_sampler_free(s);
    return NULL;
}

void hr_sampler_free(hr_sampler *s) {
    if (!s) return;
    free(s->pen);
    free(s->idx);
    free(s);
}

void hr_sampler_row(const hr_sampler *s, int n_generated, const int32_t *stop_ids, int n_stop, hr_sample_row *row) {
    const hr_sampling_params *p = &s->p;
    bool masked = n_generated < p->min_tokens;
    *row = (hr_sample_row){
        .temperature = p->temperature,
        .top_k = p->top_k,
        .top_p = p->top_p,
        .min_p = p->min_p,
        .seed = s->seed,
        .counter = (uint64_t)(n_generated > 0 ? n_generated : 0),
        .presence_penalty = s->track ? p->presence_penalty : 0.0f,
        .frequency_penalty = s->track ? p->frequency_penalty : 0.0f,
        .repetition_penalty = s->track ? p->repetition_penalty : 1.0f,
        .n_pen = s->track ? s->n_pen : 0,
        .pen = s->pen,
        .n_mask = masked ? n_stop : 0,
        .mask_ids = stop_ids,
        .n_bias = HR_MAX(0, HR_MIN(p->n_logit_bias, HR_MAX_LOGIT_BIAS)),
        .bias_ids = p->logit_bias_ids,
        .bias_vals = p->logit_bias_vals,
    };
}

int hr_sampler_accept(hr_sampler *s, int32_t id) {
    if (!s->track || id < 0 || id >= s->vocab) return HR_OK;
    hr_sample_pen *e = pen_find(s, id, true);
    if (!e) return HR_ENOMEM;
    e->count++;
    return HR_OK;
}

bool hr_sampler_wants_host(const hr_sampler *s) { return s->p.logprobs >= 0; }

static float row_max(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static double logsumexp(const float *x, int n) {
    float m = row_max(x, n);
    if (m == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = 0; i < n; i++) s += expf(x[i] - m);
    return m + log(s);
}

/* The n largest of x (n <= HR_MAX_TOP_LOGPROBS), descending, lower id first on ties. */
static int top_n(const float *x, int V, int n, int32_t *ids, float *vals) {
    int k = 0;
    for (int i = 0; i < V; i++) {
        if (k == n && !(x[i] > vals[k - 1])) continue;
        int j = k < n ? k++ : n - 1;
        while (j > 0 && x[i] > vals[j - 1]) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = x[i];
        ids[j] = i;
    }
    return k;
}

int hr_sampler_sample(hr_sampler *s, float *logits, int n_generated, const int32_t *stop_ids, int n_stop,
                      hr_sample_result *out) {
    const hr_sampling_params *p = &s->p;
    const int V = s->vocab;
    int rc = HR_OK;
    float *raw = NULL;
    double lse = 0;
    memset(out, 0, sizeof *out);

    /* 1. Raw logprobs: log_softmax of the model's own logits (vLLM default). */
    if (p->logprobs >= 0) {
        raw = malloc((size_t)V * sizeof *raw);
        if (!raw) return HR_ENOMEM;
        memcpy(raw, logits, (size_t)V * sizeof *raw);
        lse = logsumexp(raw, V);
        int n = HR_MIN(p->logprobs, HR_MAX_TOP_LOGPROBS);
        if (n > 0) {
            out->n_top = top_n(raw, V, n, out->top_ids, out->top_logprobs);
            for (int i = 0; i < out->n_top; i++) out->top_logprobs[i] = (float)(out->top_logprobs[i] - lse);
        }
    }
    /* 2-6. bias, min_tokens mask, penalties, temperature, filters, draw */
    hr_sample_row row;
    hr_sampler_row(s, n_generated, stop_ids, n_stop, &row);
    int32_t id = 0;
    rc = hr_sample_row_ref(&row, logits, V, &id);
    out->id = id;
    out->logprob = raw ? (float)(raw[id] - lse) : 0.0f;
    free(raw);
    if (rc != HR_OK) return rc;
    return hr_sampler_accept(s, id);
}
