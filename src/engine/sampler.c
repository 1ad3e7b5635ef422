/* Per-sequence token sampler (see sampler.h for the order of operations).
 * Cost per token is O(V) passes over the logits plus, for filtered random
 * sampling, a quickselect and a sort of the surviving candidates only, so a
 * 150k vocabulary stays cheap. Penalty counts live in a small hash of the
 * tokens actually seen, not in a vocab-sized array per request. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define GREEDY_EPS    1e-5f
#define TOPK_HEAP_MAX 1024 /* larger top_k goes through quickselect */

/* Penalty bookkeeping: token -> (generated count, seen in prompt). */
typedef struct pen_slot {
    int32_t tok; /* -1 = empty */
    int32_t count;
    bool in_prompt;
} pen_slot;

struct hr_sampler {
    hr_sampling_params p;
    int vocab;
    uint64_t rng[4];
    bool track;      /* any penalty active */
    pen_slot *slots; /* open addressing, capacity power of two */
    int cap, used;
};

typedef struct cand {
    float v;
    int32_t id;
    float w; /* exp(v - max), filled by top_p_cut */
} cand;

#define SWAP_CAND(a, b)                                                                                                \
    do {                                                                                                               \
        cand t_ = (a);                                                                                                 \
        (a) = (b);                                                                                                     \
        (b) = t_;                                                                                                      \
    } while (0)

void hr_sampling_params_default(hr_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->logprobs = -1;
}

/* ---- RNG: xoshiro256** (Blackman & Vigna 2018), seeded by splitmix64 ---- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ---- penalty hash ---- */
static uint32_t tok_hash(int32_t t) { return (uint32_t)t * 0x9e3779b1u; }

static pen_slot *pen_find(hr_sampler *s, int32_t tok, bool insert) {
    if (insert && (s->used + 1) * 2 > s->cap) {
        int ncap = s->cap ? s->cap * 2 : 64;
        pen_slot *ns = malloc((size_t)ncap * sizeof *ns);
        if (!ns) return NULL;
        for (int i = 0; i < ncap; i++) ns[i].tok = -1;
        for (int i = 0; i < s->cap; i++) {
            if (s->slots[i].tok < 0) continue;
            uint32_t h = tok_hash(s->slots[i].tok) & (uint32_t)(ncap - 1);
            while (ns[h].tok >= 0) h = (h + 1) & (uint32_t)(ncap - 1);
            ns[h] = s->slots[i];
        }
        free(s->slots);
        s->slots = ns;
        s->cap = ncap;
    }
    if (!s->cap) return NULL;
    uint32_t h = tok_hash(tok) & (uint32_t)(s->cap - 1);
    while (s->slots[h].tok >= 0) {
        if (s->slots[h].tok == tok) return &s->slots[h];
        h = (h + 1) & (uint32_t)(s->cap - 1);
    }
    if (!insert) return NULL;
    s->slots[h] = (pen_slot){.tok = tok, .count = 0, .in_prompt = false};
    s->used++;
    return &s->slots[h];
}

hr_sampler *hr_sampler_new(const hr_sampling_params *p, int vocab_size, const int32_t *prompt, int n_prompt) {
    if (vocab_size <= 0) return NULL;
    hr_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    uint64_t seed = p->seed;
    if (!p->has_seed) {
        /* Unseeded requests still need independent streams. */
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)s;
        }
    }
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
    s->track = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    /* The prompt only matters to the repetition penalty. */
    if (s->track && p->repetition_penalty != 1.0f) {
        for (int i = 0; i < n_prompt; i++) {
            if (prompt[i] < 0 || prompt[i] >= vocab_size) continue;
            pen_slot *e = pen_find(s, prompt[i], true);
            if (!e) goto fail;
            e->in_prompt = true;
        }
    }
    return s;
fail:
    hr_sampler_free(s);
    return NULL;
}

void hr_sampler_free(hr_sampler *s) {
    if (!s) return;
    free(s->slots);
    free(s);
}

/* ---- helpers over one logits row ---- */
/* Eight independent lanes so the loop is not one long dependency chain. */
static float row_max(const float *x, int n) {
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) m[0] = x[i] > m[0] ? x[i] : m[0];
    for (int j = 1; j < 8; j++) m[0] = m[j] > m[0] ? m[j] : m[0];
    return m[0];
}

/* Lowest index holding the maximum (ties: lowest id, as torch.argmax). */
static int argmax(const float *x, int n) {
    float m = row_max(x, n);
    for (int i = 0; i < n; i++)
        if (x[i] == m) return i;
    return 0; /* all NaN */
}

/* k-th largest of the values >= floor (k <= TOPK_HEAP_MAX), via a min-heap
 * of the k best so far: one compare for most elements. -INFINITY when fewer
 * than k qualify. */
static float kth_largest(const float *x, int n, int k, float floor, float *heap) {
    int h = 0;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        if (!(v >= floor) || v == -INFINITY) continue;
        if (h == k && !(v > heap[0])) continue;
        int j;
        if (h < k) { /* sift up */
            j = h++;
            while (j > 0 && heap[(j - 1) / 2] > v) {
                heap[j] = heap[(j - 1) / 2];
                j = (j - 1) / 2;
            }
        } else { /* replace the root, sift down */
            j = 0;
            for (;;) {
                int c = 2 * j + 1;
                if (c >= k) break;
                if (c + 1 < k && heap[c + 1] < heap[c]) c++;
                if (!(heap[c] < v)) break;
                heap[j] = heap[c];
                j = c;
            }
        }
        heap[j] = v;
    }
    return h == k ? heap[0] : -INFINITY;
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

static void apply_penalties(hr_sampler *s, float *logits) {
    const hr_sampling_params *p = &s->p;
    for (int i = 0; i < s->cap; i++) {
        pen_slot *e = &s->slots[i];
        if (e->tok < 0) continue;
        float *l = &logits[e->tok];
        if (p->repetition_penalty != 1.0f && (e->in_prompt || e->count > 0))
            *l = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
        if (e->count > 0) *l -= p->frequency_penalty * (float)e->count + p->presence_penalty;
    }
}

/* Descending by value, then ascending id, so results do not depend on the sort. */
static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Quickselect: reorders c[0..n) so that c[0..k) are the k largest (any order)
 * and c[k-1] is the k-th largest. Median-of-three pivot, Hoare-style partition. */
static void select_top(cand *c, int n, int k) {
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cand_cmp(&c[mid], &c[lo]) < 0) SWAP_CAND(c[mid], c[lo]);
        if (cand_cmp(&c[hi], &c[lo]) < 0) SWAP_CAND(c[hi], c[lo]);
        if (cand_cmp(&c[hi], &c[mid]) < 0) SWAP_CAND(c[hi], c[mid]);
        cand piv = c[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_cmp(&c[i], &piv) < 0) i++;
            while (cand_cmp(&c[j], &piv) > 0) j--;
            if (i <= j) {
                SWAP_CAND(c[i], c[j]);
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return;
    }
}

/* Keeps the shortest descending prefix whose mass reaches top_p (vLLM: a
 * token is dropped when the tokens above it already hold >= p of the mass).
 * A weighted quickselect (expected O(n), no full sort): partition around a
 * pivot; if the larger side already holds the missing mass the cut lies in
 * it, else keep that side whole and continue in the smaller side. Returns
 * the kept count; c[0..kept) are the kept candidates in no particular order. */
static int top_p_cut(cand *c, int n, float m, float top_p, double total) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        c[i].w = expf(c[i].v - m);
        sum += c[i].w;
    }
    if (total <= 0) total = sum; /* else: the caller dropped a tail it knows cannot be kept */
    double target = top_p * total, acc = 0;
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        /* Lomuto partition, median-of-three pivot moved to hi-1. */
        int mid = lo + (hi - lo) / 2, last = hi - 1;
        if (cand_cmp(&c[mid], &c[lo]) < 0) SWAP_CAND(c[mid], c[lo]);
        if (cand_cmp(&c[last], &c[lo]) < 0) SWAP_CAND(c[last], c[lo]);
        if (cand_cmp(&c[last], &c[mid]) < 0) SWAP_CAND(c[last], c[mid]);
        SWAP_CAND(c[mid], c[last]);
        cand piv = c[last];
        int store = lo;
        double upper = 0;
        for (int i = lo; i < last; i++)
            if (cand_cmp(&c[i], &piv) < 0) {
                upper += c[i].w;
                SWAP_CAND(c[i], c[store]);
                store++;
            }
        SWAP_CAND(c[store], c[last]); /* pivot at its sorted place */
        if (acc + upper >= target) {
            hi = store; /* the pivot's predecessors already hold p: cut inside */
        } else if (acc + upper + piv.w >= target) {
            return store + 1; /* the pivot is the last kept token */
        } else {
            acc += upper + piv.w;
            lo = store + 1;
        }
    }
    /* One element left in [lo, hi): kept iff the mass above it is < target. */
    if (hi > lo && acc < target) return hi;
    return lo > 0 ? lo : 1;
}

/* Random draw over logits already divided by the temperature. Returns the id. */
static int sample_random(hr_sampler *s, const float *x, int V, int *err) {
    const hr_sampling_params *p = &s->p;
    float m = row_max(x, V);
    if (m == -INFINITY) return 0;
    bool filt = (p->top_k > 0 && p->top_k < V) || p->top_p < 1.0f || p->min_p > 0.0f;
    double u = rng_uniform(s->rng);
    if (!filt) {
        double total = 0;
        for (int i = 0; i < V; i++) total += expf(x[i] - m);
        double r = u * total, cum = 0;
        int last = 0;
        for (int i = 0; i < V; i++) {
            if (x[i] == -INFINITY) continue;
            last = i;
            cum += expf(x[i] - m);
            if (r < cum) return i;
        }
        return last; /* rounding: r landed at the very top */
    }
    cand *c = malloc((size_t)V * sizeof *c);
    if (!c) {
        *err = HR_ENOMEM;
        return argmax(x, V);
    }
    /* min-p: p_i >= min_p * p_max  <=>  x_i >= m + log(min_p) */
    float thr = p->min_p > 0.0f ? m + logf(p->min_p) : -INFINITY;
    /* small top-k: find the k-th value first, so only ~k candidates are built */
    bool k_done = false;
    if (p->top_k > 0 && p->top_k <= TOPK_HEAP_MAX && p->top_k < V) {
        float heap[TOPK_HEAP_MAX];
        float kth = kth_largest(x, V, p->top_k, thr, heap);
        if (kth > thr) thr = kth;
        k_done = true; /* ties with the k-th value are kept, as vLLM's mask does */
    }
    /* top-p without a later top-k select: drop the tail that can never be
     * kept. With Z the mass of the N eligible tokens, the tokens of weight
     * below eps = 0.99 (1 - p) Z / N hold less than (1 - p) Z together, so
     * the rest holds more than p Z and the cut lies inside the rest. */
    double p_total = 0;
    if (p->top_p < 1.0f && (k_done || p->top_k <= 0 || p->top_k >= V)) {
        int cnt = 0;
        for (int i = 0; i < V; i++)
            if (x[i] != -INFINITY && x[i] >= thr) {
                p_total += expf(x[i] - m);
                cnt++;
            }
        float tail = m + logf(0.99f * (1.0f - p->top_p) * (float)(p_total / cnt));
        if (tail > thr) thr = tail;
    }
    int n = 0;
    for (int i = 0; i < V; i++)
        if (x[i] != -INFINITY && x[i] >= thr) c[n++] = (cand){x[i], i, 0};
    if (!k_done && p->top_k > 0 && p->top_k < n) {
        /* Keep ties with the k-th value, as vLLM's mask `logits < kth` does. */
        select_top(c, n, p->top_k);
        float kth = c[p->top_k - 1].v;
        int k = p->top_k;
        for (int i = k; i < n; i++)
            if (c[i].v >= kth) c[k++] = c[i];
        n = k;
    }
    if (p->top_p < 1.0f)
        n = top_p_cut(c, n, m, p->top_p, p_total);
    else
        for (int i = 0; i < n; i++) c[i].w = expf(c[i].v - m);
    double total = 0;
    for (int i = 0; i < n; i++) total += c[i].w;
    double r = u * total, cum = 0;
    int id = c[n - 1].id;
    for (int i = 0; i < n; i++) {
        cum += c[i].w;
        if (r < cum) {
            id = c[i].id;
            break;
        }
    }
    free(c);
    return id;
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
    /* 2. logit_bias (ids outside the vocabulary are ignored: validated upstream). */
    for (int i = 0; i < p->n_logit_bias && i < HR_MAX_LOGIT_BIAS; i++) {
        int32_t t = p->logit_bias_ids[i];
        if (t >= 0 && t < V) logits[t] += p->logit_bias_vals[i];
    }
    /* 3. min_tokens: the request may not end before min_tokens are generated. */
    if (n_generated < p->min_tokens)
        for (int i = 0; i < n_stop; i++)
            if (stop_ids[i] >= 0 && stop_ids[i] < V) logits[stop_ids[i]] = -INFINITY;
    /* 4. penalties */
    if (s->track) apply_penalties(s, logits);

    int id;
    if (p->temperature < GREEDY_EPS) {
        id = argmax(logits, V);
    } else {
        if (p->temperature != 1.0f) {
            float inv = 1.0f / p->temperature;
            for (int i = 0; i < V; i++) logits[i] *= inv;
        }
        id = sample_random(s, logits, V, &rc);
    }
    out->id = id;
    out->logprob = raw ? (float)(raw[id] - lse) : 0.0f;
    free(raw);

    if (s->track) {
        pen_slot *e = pen_find(s, id, true);
        if (!e) return HR_ENOMEM;
        e->count++;
    }
    return rc;
}
