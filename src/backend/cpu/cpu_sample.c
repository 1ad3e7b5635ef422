/* Sampling one logits row (hr_sample_row_ref, the reference of the `sample`
 * op and the engine's host sampler) and the CPU backend's `sample` op.
 * Cost per row is a few O(V) passes; the thresholds of top-k and top-p are
 * found over a candidate list (heap or quickselect, weighted quickselect)
 * instead of a full sort; the final draw walks the kept tokens in id order,
 * so the result does not depend on how the candidates were ordered and the
 * GPU (cuda/sample.cu, a threshold search over the float bits) can match it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/sample_exp.h"
#include "core/philox.h"

#define GREEDY_EPS    1e-5f
#define TOPK_HEAP_MAX 1024 /* larger top_k goes through quickselect */

typedef struct cand {
    float v;
    int32_t id;
    float w; /* hr_sample_exp(v - max), filled by top_p_cut */
} cand;

#define SWAP_CAND(a, b)                                                                                                \
    do {                                                                                                               \
        cand t_ = (a);                                                                                                 \
        (a) = (b);                                                                                                     \
        (b) = t_;                                                                                                      \
    } while (0)

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

static void apply_penalties(const hr_sample_row *r, float *logits, int V) {
    for (int i = 0; i < r->n_pen; i++) {
        const hr_sample_pen *e = &r->pen[i];
        if (e->id < 0 || e->id >= V) continue;
        float *l = &logits[e->id];
        if (r->repetition_penalty != 1.0f && (e->in_prompt || e->count > 0))
            *l = *l > 0 ? *l / r->repetition_penalty : *l * r->repetition_penalty;
        if (e->count > 0) *l -= r->frequency_penalty * (float)e->count + r->presence_penalty;
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

/* The shortest descending prefix whose mass reaches top_p of total (vLLM: a
 * token is dropped when the tokens above it already hold >= p of the mass),
 * by a weighted quickselect (expected O(n), no full sort): partition around
 * a pivot; if the larger side already holds the missing mass the cut lies in
 * it, else keep that side whole and continue in the smaller side. Returns the
 * smallest kept value; the caller keeps every candidate >= it, so tokens tied
 * with the last kept one are kept too (a threshold, as the GPU finds it). */
static float top_p_cut(cand *c, int n, float m, float top_p, double total) {
    double sum = 0;
    for (int i = 0; i < n; i++) {
        c[i].w = hr_sample_exp(c[i].v - m);
        sum += c[i].w;
    }
    if (total <= 0) total = sum; /* else: the caller dropped a tail it knows cannot be kept */
    double target = top_p * total, acc = 0;
    int lo = 0, hi = n, kept = -1;
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
            kept = store + 1; /* the pivot is the last kept token */
            break;
        } else {
            acc += upper + piv.w;
            lo = store + 1;
        }
    }
    if (kept < 0) kept = (hi > lo && acc < target) ? hi : (lo > 0 ? lo : 1);
    float t = INFINITY;
    for (int i = 0; i < kept; i++) t = c[i].v < t ? c[i].v : t;
    return t;
}

/* Random draw over logits already divided by the temperature: the kept
 * threshold, then the draw in id order. Returns the id. */
static int sample_random(const hr_sample_row *r, const float *x, int V, int *err) {
    float m = row_max(x, V);
    if (m == -INFINITY) return 0;
    bool topk = r->top_k > 0 && r->top_k < V;
    bool filt = topk || r->top_p < 1.0f || r->min_p > 0.0f;
    double u = hr_philox_uniform(r->seed, r->counter);
    /* min-p: p_i >= min_p * p_max  <=>  x_i >= m + log(min_p) */
    float thr = r->min_p > 0.0f ? m + (float)log((double)r->min_p) : -INFINITY;
    if (filt) {
        cand *c = malloc((size_t)V * sizeof *c);
        if (!c) {
            *err = HR_ENOMEM;
            return argmax(x, V);
        }
        /* small top-k: find the k-th value first, so only ~k candidates are built */
        bool k_done = false;
        if (topk && r->top_k <= TOPK_HEAP_MAX) {
            float heap[TOPK_HEAP_MAX];
            float kth = kth_largest(x, V, r->top_k, thr, heap);
            if (kth > thr) thr = kth;
            k_done = true; /* ties with the k-th value are kept, as vLLM's mask does */
        }
        /* top-p without a later top-k select: drop the tail that can never be
         * kept. With Z the mass of the N eligible tokens, the tokens of weight
         * below eps = 0.99 (1 - p) Z / N hold less than (1 - p) Z together, so
         * the rest holds more than p Z and the cut lies inside the rest. */
        double p_total = 0;
        if (r->top_p < 1.0f && (k_done || !topk)) {
            int cnt = 0;
            for (int i = 0; i < V; i++)
                if (x[i] != -INFINITY && x[i] >= thr) {
                    p_total += hr_sample_exp(x[i] - m);
                    cnt++;
                }
            float tail = m + logf(0.99f * (1.0f - r->top_p) * (float)(p_total / cnt));
            if (tail > thr) thr = tail;
        }
        int n = 0;
        for (int i = 0; i < V; i++)
            if (x[i] != -INFINITY && x[i] >= thr) c[n++] = (cand){x[i], i, 0};
        if (!k_done && topk && r->top_k < n) {
            /* Keep ties with the k-th value, as vLLM's mask `logits < kth` does. */
            select_top(c, n, r->top_k);
            float kth = c[r->top_k - 1].v;
            if (kth > thr) thr = kth;
            int k = r->top_k;
            for (int i = k; i < n; i++)
                if (c[i].v >= kth) c[k++] = c[i];
            n = k;
        }
        if (r->top_p < 1.0f && n > 0) {
            float t = top_p_cut(c, n, m, r->top_p, p_total);
            if (t > thr) thr = t;
        }
        free(c);
    }
    /* the draw, in id order over the kept tokens */
    double total = 0;
    for (int i = 0; i < V; i++)
        if (x[i] != -INFINITY && x[i] >= thr) total += hr_sample_exp(x[i] - m);
    double target = u * total, cum = 0;
    int last = 0;
    for (int i = 0; i < V; i++) {
        if (x[i] == -INFINITY || !(x[i] >= thr)) continue;
        last = i;
        cum += hr_sample_exp(x[i] - m);
        if (target < cum) return i;
    }
    return last; /* rounding: the target landed at the very top */
}

int hr_sample_row_ref(const hr_sample_row *r, float *logits, int V, int32_t *id) {
    int rc = HR_OK;
    /* 1. logit_bias */
    for (int i = 0; i < r->n_bias; i++) {
        int32_t t = r->bias_ids[i];
        if (t >= 0 && t < V) logits[t] += r->bias_vals[i];
    }
    /* 2. min_tokens mask (the caller passes the ids only while it applies) */
    for (int i = 0; i < r->n_mask; i++)
        if (r->mask_ids[i] >= 0 && r->mask_ids[i] < V) logits[r->mask_ids[i]] = -INFINITY;
    /* 3. penalties */
    apply_penalties(r, logits, V);
    if (r->temperature < GREEDY_EPS) {
        *id = argmax(logits, V);
        return HR_OK;
    }
    if (r->temperature != 1.0f) {
        float inv = 1.0f / r->temperature;
        for (int i = 0; i < V; i++) logits[i] *= inv;
    }
    *id = sample_random(r, logits, V, &rc);
    return rc;
}

typedef struct sample_job {
    float *x;
    int64_t vocab;
    const hr_sample_row *rows;
    int32_t *ids;
    int *rc;
} sample_job;

/* hr_parallel_for body: rows [begin, end); rows are independent (each draws
 * from its own Philox stream), so the split never changes the result. */
static void sample_range(void *ctx, int begin, int end, int tid) {
    (void)tid;
    sample_job *j = ctx;
    for (int i = begin; i < end; i++)
        if (hr_sample_row_ref(&j->rows[i], j->x + (size_t)i * (size_t)j->vocab, (int)j->vocab, &j->ids[i]) != HR_OK)
            j->rc[i] = HR_ENOMEM;
}

int cpu_sample(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n_rows, int32_t *ids_host) {
    if (logits->dtype != HR_F32 || logits->ndim < 1)
        return hr_err_set(&be->err, HR_EINVAL, "cpu sample: '%s' is not an F32 matrix", logits->name);
    int64_t nr = hr_tensor_rows(logits), vocab = hr_tensor_cols(logits);
    if (n_rows != nr)
        return hr_err_set(&be->err, HR_EINVAL, "cpu sample: %d parameter rows for %lld logit rows", n_rows,
                          (long long)nr);
    if (n_rows <= 0) return HR_OK;
    if (vocab <= 0 || vocab > INT32_MAX)
        return hr_err_set(&be->err, HR_EINVAL, "cpu sample: %lld columns", (long long)vocab);
    if (!rows || !ids_host) return hr_err_set(&be->err, HR_EINVAL, "cpu sample: no rows or ids");
    int *rc = calloc((size_t)n_rows, sizeof *rc);
    if (!rc) return hr_err_set(&be->err, HR_ENOMEM, "cpu sample: out of memory");
    sample_job j = {.x = logits->data, .vocab = vocab, .rows = rows, .ids = ids_host, .rc = rc};
    /* a row costs a few passes over vocab floats: one task per ~64k of them */
    int grain = (int)HR_MAX(1, 65536 / vocab);
    hr_parallel_for(n_rows > 1 ? cpu_of(be)->pool : NULL, n_rows, grain, sample_range, &j);
    int bad = 0;
    for (int i = 0; i < n_rows; i++) bad |= rc[i] != HR_OK;
    free(rc);
    if (bad) return hr_err_set(&be->err, HR_ENOMEM, "cpu sample: out of memory");
    return HR_OK;
}
