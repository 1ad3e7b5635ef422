/* Sampling on the device (the `sample` op): one block per logits row runs the
 * contract of hr_sample_row (backend.h) whose reference is
 * hr_sample_row_ref (cpu/cpu_sample.c), so only the ids cross to the host.
 *
 * Per row: logit_bias (one thread, in list order, so repeated ids add as on
 * the host), the min_tokens mask and the penalties (parallel: each id once),
 * then greedy argmax, or temperature (in place) and the row maximum; min-p
 * is a threshold; top-k is a radix select of the k-th largest value over the
 * order-preserving integer keys of the floats (4 passes of 8 bits, integer
 * histograms, so exact); top-p is a binary search over the same keys for the
 * smallest value whose strictly-larger mass is below top_p of the total
 * (double sums, 32 passes at most); the draw walks the kept tokens in id
 * order with a block scan. When the tokens that can still be kept fit in
 * shared memory (SAMPLE_CAP) they are compacted there in id order first and
 * the top-p passes and the draw read shared memory only; else they read the
 * row (the tail that top-p can never keep is cut first, as on the host).
 *
 * Equal to the host except where a decision rests on a rounding-level
 * difference: every weight is the same float on both (hr_sample_exp,
 * backend/sample_exp.h; no FMA contraction in the penalties or the
 * temperature), but the double sums are added in another order, so a draw
 * landing within ~1e-15 (relative) of a boundary between two tokens'
 * cumulative mass, or a top-p target that close to a cut, can choose the
 * neighbour; exact ties in value are handled identically (ties at the top-k
 * or top-p threshold are kept together, greedy takes the lowest id).
 * Not captured in CUDA graphs: it runs after step_end and waits for the ids. */
#include <math.h>
#include <stdint.h>

#include "backend/cuda/cu_types.cuh"
#include "backend/sample_exp.h"
#include "core/philox.h"

#define SAMPLE_THREADS       1024
#define SAMPLE_THREADS_SMALL 256 /* vocabularies under SAMPLE_SMALL_V */
#define SAMPLE_SMALL_V       16384
#define SAMPLE_CAP           8192 /* candidates compacted into shared memory (value + id: 64 KiB) */
#define SAMPLE_GREEDY_EPS    1e-5f

/* One row's parameters on the device; the arrays follow the rows in one buffer. */
typedef struct dev_row {
    float temperature, top_p, min_p;
    int top_k;
    unsigned long long seed, counter;
    float presence, frequency, repetition;
    int n_pen, n_mask, n_bias;
    long long pen_off, mask_off, bias_off; /* in 4-byte words from the start of the arrays */
} dev_row;

typedef struct cu_sample_bufs {
    char *host, *dev; /* pinned staging and its device copy: rows, then arrays */
    size_t cap;
    int32_t *ids_dev, *ids_host;
    int ids_cap;
} cu_sample_bufs;

/* ---- order-preserving keys of floats (-0 and +0 share one) -------------- */
__device__ __forceinline__ uint32_t fkey(float f) {
    uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float kfloat(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ bool eligible(float x, float thr) { return x >= thr && x != -INFINITY; }

/* ---- block reductions (blockDim a multiple of 32; every thread gets the result) */
struct sample_smem {
    double d[32];
    float f[32];
    int i[32];
    unsigned hist[256];
    int bcast_i, bcast_j;
    float bcast_f;
    uint32_t bcast_u;
};

__device__ double block_sum_d(double v, sample_smem &s) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) s.d[wid] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < nw; w++) t += s.d[w]; /* the same order in every thread */
    return t;
}

__device__ float block_max_f(float v, sample_smem &s) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u > v ? u : v;
    }
    __syncthreads();
    if (lane == 0) s.f[wid] = v;
    __syncthreads();
    float m = -INFINITY;
    for (int w = 0; w < nw; w++) m = s.f[w] > m ? s.f[w] : m;
    return m;
}

__device__ int block_sum_i(int v, sample_smem &s) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) s.i[wid] = v;
    __syncthreads();
    int t = 0;
    for (int w = 0; w < nw; w++) t += s.i[w];
    return t;
}

/* Inclusive scan of v over the block in thread order; *total = the block sum. */
__device__ double block_scan_d(double v, double *total, sample_smem &s) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
    }
    __syncthreads();
    if (lane == 31) s.d[wid] = v;
    __syncthreads();
    double before = 0, t = 0;
    for (int w = 0; w < nw; w++) {
        if (w < wid) before += s.d[w];
        t += s.d[w];
    }
    *total = t;
    return before + v;
}

/* ---- candidate sources: the row itself, or the compacted shared copy ---- */
struct row_src {
    const float *x;
    int n;
    __device__ float val(int i) const { return x[i]; }
    __device__ int id(int i) const { return i; }
};
struct smem_src {
    const float *v;
    const int *ids;
    int n;
    __device__ float val(int i) const { return v[i]; }
    __device__ int id(int i) const { return ids[i]; }
};

/* Mass of the eligible values with key > k (k = 0: all eligible). */
template <typename Src> __device__ double mass_above(const Src &src, float thr, float m, uint32_t k, sample_smem &s) {
    double acc = 0;
    for (int i = threadIdx.x; i < src.n; i += blockDim.x) {
        float x = src.val(i);
        if (eligible(x, thr) && fkey(x) > k) acc += (double)hr_sample_exp(x - m);
    }
    return block_sum_d(acc, s);
}

/* top-p: the smallest key K in [lo, hi] whose strictly-larger mass is below
 * target (keys of eligible values only change the mass, so K is lo or an
 * eligible value's key). Returns the value of K. */
template <typename Src>
__device__ float top_p_threshold(const Src &src, float thr, float m, double target, uint32_t lo, uint32_t hi,
                                 sample_smem &s) {
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (mass_above(src, thr, m, mid, s) < target)
            hi = mid;
        else
            lo = mid + 1;
    }
    return kfloat(lo);
}

/* The draw: the first eligible token, in source (= id) order, at which the
 * running mass exceeds u * total; the last eligible one if rounding leaves
 * the target on top. Tiles of blockDim in order, a block scan per tile. */
template <typename Src> __device__ int draw(const Src &src, float thr, float m, double u, sample_smem &s) {
    double total = 0;
    int last = -1;
    for (int i = threadIdx.x; i < src.n; i += blockDim.x) {
        float x = src.val(i);
        if (eligible(x, thr)) {
            total += (double)hr_sample_exp(x - m);
            last = i; /* source order: the largest index is the last id */
        }
    }
    total = block_sum_d(total, s);
    /* the last eligible index: a max over the block */
    {
        int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
        __syncthreads();
        if (lane == 0) s.i[wid] = last;
        __syncthreads();
        last = -1;
        for (int w = 0; w < nw; w++) last = max(last, s.i[w]);
    }
    if (last < 0) return 0;
    double target = u * total, base = 0;
    for (int t0 = 0; t0 < src.n; t0 += blockDim.x) {
        int i = t0 + threadIdx.x;
        float x = i < src.n ? src.val(i) : -INFINITY;
        double w = eligible(x, thr) ? (double)hr_sample_exp(x - m) : 0.0;
        double tile;
        double incl = block_scan_d(w, &tile, s);
        if (target < base + tile) { /* the crossing is in this tile (every thread agrees) */
            __syncthreads();
            if (threadIdx.x == 0) {
                s.bcast_i = INT32_MAX;
                s.bcast_j = -1;
            }
            __syncthreads();
            if (w > 0) {
                if (target < base + incl) atomicMin(&s.bcast_i, i);
                atomicMax(&s.bcast_j, i);
            }
            __syncthreads();
            /* none: the scan's rounding left the target above the last partial
             * sum, so the tile's last kept token (tile > 0: there is one) */
            int hit = s.bcast_i != INT32_MAX ? s.bcast_i : s.bcast_j;
            return src.id(hit >= 0 ? hit : last);
        }
        base += tile;
    }
    return src.id(last);
}

/* ids[b] = the token sampled from row b. The row is modified in place. */
__global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_kernel(int32_t *ids, float *logits, int64_t vocab, const dev_row *rows, const int32_t *arrays) {
    pdl_begin();
    extern __shared__ float dyn[]; /* SAMPLE_CAP values, then SAMPLE_CAP ids */
    __shared__ sample_smem s;
    const int V = (int)vocab;
    float *row = logits + (int64_t)blockIdx.x * vocab;
    const dev_row R = rows[blockIdx.x];

    /* 1. logit_bias, in list order */
    if (threadIdx.x == 0) {
        const int32_t *bid = arrays + R.bias_off;
        const float *bval = (const float *)(arrays + R.bias_off + R.n_bias);
        for (int i = 0; i < R.n_bias; i++)
            if (bid[i] >= 0 && bid[i] < V) row[bid[i]] += bval[i];
    }
    __syncthreads();
    /* 2. min_tokens mask */
    for (int i = threadIdx.x; i < R.n_mask; i += blockDim.x) {
        int t = arrays[R.mask_off + i];
        if (t >= 0 && t < V) row[t] = -INFINITY;
    }
    __syncthreads();
    /* 3. penalties (each id once) */
    const hr_sample_pen *pen = (const hr_sample_pen *)(arrays + R.pen_off);
    for (int i = threadIdx.x; i < R.n_pen; i += blockDim.x) {
        hr_sample_pen e = pen[i];
        if (e.id < 0 || e.id >= V) continue;
        float l = row[e.id];
        if (R.repetition != 1.0f && (e.in_prompt || e.count > 0)) l = l > 0 ? l / R.repetition : l * R.repetition;
        /* no FMA contraction: the host rounds the product, the sum and the difference */
        if (e.count > 0) l = __fsub_rn(l, __fadd_rn(__fmul_rn(R.frequency, (float)e.count), R.presence));
        row[e.id] = l;
    }
    __syncthreads();

    /* 4. greedy: lowest id of the maximum, NaN never */
    if (R.temperature < SAMPLE_GREEDY_EPS) {
        float bv = -INFINITY;
        int bi = INT32_MAX;
        for (int c = threadIdx.x; c < V; c += blockDim.x) {
            float v = row[c];
            if (v > bv || (v == bv && c < bi)) {
                bv = v;
                bi = c;
            }
        }
        float m = block_max_f(bv, s);
        if (bv != m) bi = INT32_MAX;
        if (threadIdx.x == 0) s.bcast_i = INT32_MAX;
        __syncthreads();
        if (bi != INT32_MAX) atomicMin(&s.bcast_i, bi);
        __syncthreads();
        if (threadIdx.x == 0) ids[blockIdx.x] = s.bcast_i == INT32_MAX ? 0 : s.bcast_i;
        return;
    }

    /* 5. temperature (in place, as the host: x *= 1 / T) and the maximum */
    const float inv = 1.0f / R.temperature;
    const bool scale = R.temperature != 1.0f;
    float mx = -INFINITY;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
        float v = row[c];
        if (scale) {
            v = __fmul_rn(v, inv);
            row[c] = v;
        }
        mx = v > mx ? v : mx;
    }
    const float m = block_max_f(mx, s); /* its syncs also publish the scaled row */
    if (m == -INFINITY) {
        if (threadIdx.x == 0) ids[blockIdx.x] = 0;
        return;
    }
    const double u = hr_philox_uniform(R.seed, R.counter);
    const bool topk = R.top_k > 0 && R.top_k < V;
    const bool topp = R.top_p < 1.0f;

    /* 6. min-p */
    float thr = R.min_p > 0.0f ? m + (float)log((double)R.min_p) : -INFINITY;

    /* 7. top-k: the k-th largest eligible value, by radix select over the keys */
    if (topk) {
        uint32_t prefix = 0, mask = 0;
        int want = R.top_k;
        bool enough = true;
        for (int shift = 24; shift >= 0 && enough; shift -= 8) {
            for (int i = threadIdx.x; i < 256; i += blockDim.x) s.hist[i] = 0;
            __syncthreads();
            for (int c = threadIdx.x; c < V; c += blockDim.x) {
                float x = row[c];
                if (!eligible(x, thr)) continue;
                uint32_t k = fkey(x);
                if ((k & mask) == prefix) atomicAdd(&s.hist[(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (threadIdx.x == 0) {
                int above = 0, d = 255;
                for (; d >= 0; d--) {
                    if (above + (int)s.hist[d] >= want) break;
                    above += (int)s.hist[d];
                }
                s.bcast_i = d < 0 ? -1 : want - above; /* d < 0: fewer than k eligible (first pass only) */
                s.bcast_u = d < 0 ? 0u : (uint32_t)d;
            }
            __syncthreads();
            if (s.bcast_i < 0) {
                enough = false;
            } else {
                want = s.bcast_i;
                prefix |= s.bcast_u << shift;
                mask |= 255u << shift;
            }
            __syncthreads();
        }
        if (enough) {
            float kth = kfloat(prefix);
            if (kth > thr) thr = kth;
        }
    }

    /* 8. top-p: the total mass (before the tail cut), then the tail that can
     * never be kept: tokens of weight below 0.99 (1 - p) Z / N hold less than
     * (1 - p) Z together (the host cuts the same way) */
    double target = 0;
    if (topp) {
        double z = 0;
        int cnt = 0;
        for (int c = threadIdx.x; c < V; c += blockDim.x) {
            float x = row[c];
            if (eligible(x, thr)) {
                z += (double)hr_sample_exp(x - m);
                cnt++;
            }
        }
        z = block_sum_d(z, s);
        cnt = block_sum_i(cnt, s);
        target = (double)R.top_p * z;
        float tail = m + logf(0.99f * (1.0f - R.top_p) * (float)(z / cnt));
        if (tail > thr) thr = tail;
    }

    /* 9. compaction into shared memory, in id order, when the candidates fit */
    int n_cand = 0;
    for (int c = threadIdx.x; c < V; c += blockDim.x) n_cand += eligible(row[c], thr);
    n_cand = block_sum_i(n_cand, s);
    int id;
    if (n_cand <= SAMPLE_CAP) {
        float *sv = dyn;
        int *si = (int *)(dyn + SAMPLE_CAP);
        int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
        int off = 0;
        for (int t0 = 0; t0 < V; t0 += blockDim.x) {
            int c = t0 + threadIdx.x;
            float x = c < V ? row[c] : -INFINITY;
            bool keep = eligible(x, thr);
            unsigned bal = __ballot_sync(0xffffffffu, keep);
            __syncthreads();
            if (lane == 0) s.i[wid] = __popc(bal);
            __syncthreads();
            int before = off, tile = 0;
            for (int w = 0; w < nw; w++) {
                if (w < wid) before += s.i[w];
                tile += s.i[w];
            }
            if (keep) {
                int at = before + __popc(bal & ((1u << lane) - 1u));
                sv[at] = x;
                si[at] = c;
            }
            off += tile;
        }
        __syncthreads();
        smem_src src = {sv, si, n_cand};
        if (topp) {
            float t = top_p_threshold(src, thr, m, target, fkey(thr), fkey(m), s);
            if (t > thr) thr = t;
        }
        id = draw(src, thr, m, u, s);
    } else {
        row_src src = {row, V};
        if (topp) {
            float t = top_p_threshold(src, thr, m, target, fkey(thr), fkey(m), s);
            if (t > thr) thr = t;
        }
        id = draw(src, thr, m, u, s);
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = id;
}

/* ---- the op ---------------------------------------------------------------- */
#define SAMPLE_TRY(c, call, what)                                                                                      \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) return cu_fail((c), e_, (what));                                                        \
    } while (0)

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

void cu_sample_free(cu_backend *c) {
    cu_sample_bufs *b = c->sample;
    if (!b) return;
    if (b->host) cudaFreeHost(b->host);
    if (b->dev) cudaFree(b->dev);
    if (b->ids_host) cudaFreeHost(b->ids_host);
    if (b->ids_dev) cudaFree(b->ids_dev);
    free(b);
    c->sample = NULL;
}

int cu_sample_op(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n_rows, int32_t *ids_host) {
    cu_backend *c = cu_of(be);
    cu_graph_flush(c);
    if (logits->dtype != HR_F32 || logits->ndim < 1)
        return hr_err_set(&be->err, HR_EINVAL, "cuda sample: '%s' is not an F32 matrix", logits->name);
    int64_t nr = hr_tensor_rows(logits), vocab = hr_tensor_cols(logits);
    if (nr != n_rows)
        return hr_err_set(&be->err, HR_EINVAL, "cuda sample: %d parameter rows for %lld logit rows", n_rows,
                          (long long)nr);
    if (n_rows <= 0) {
        if (!ids_host) { /* nothing on the way, but a wait of 0 ids must find it */
            c->ids_pending = (const int32_t *)&c->ids_pending_n;
            c->ids_pending_n = 0;
        }
        return HR_OK;
    }
    if (vocab <= 0 || vocab > INT32_MAX)
        return hr_err_set(&be->err, HR_EINVAL, "cuda sample: %lld columns", (long long)vocab);
    if (!rows) return hr_err_set(&be->err, HR_EINVAL, "cuda sample: no rows");
    /* sizes: the rows, then each row's penalties, mask ids, bias ids + values (4-byte words) */
    size_t words = 0;
    for (int r = 0; r < n_rows; r++) {
        const hr_sample_row *w = &rows[r];
        if (w->n_pen < 0 || w->n_mask < 0 || w->n_bias < 0 || (w->n_pen && !w->pen) || (w->n_mask && !w->mask_ids) ||
            (w->n_bias && (!w->bias_ids || !w->bias_vals)))
            return hr_err_set(&be->err, HR_EINVAL, "cuda sample: row %d has a bad penalty, mask or bias list", r);
        words += (size_t)w->n_pen * 3 + (size_t)w->n_mask + (size_t)w->n_bias * 2;
    }
    size_t rows_bytes = align8((size_t)n_rows * sizeof(dev_row)), need = rows_bytes + words * 4;
    if (!c->sample) {
        c->sample = (cu_sample_bufs *)calloc(1, sizeof(cu_sample_bufs));
        if (!c->sample) return hr_err_set(&be->err, HR_ENOMEM, "cuda sample: out of memory");
    }
    cu_sample_bufs *b = c->sample;
    SAMPLE_TRY(c, cu_smem_limit<sample_kernel>(SAMPLE_CAP * (sizeof(float) + sizeof(int))), "sample smem attribute");
    /* grown only on a larger batch / longer lists than ever seen; the stream
     * is idle then (every call ends with a sync, or with ids_wait's) */
    if (need > b->cap) {
        SAMPLE_TRY(c, cudaStreamSynchronize(c->stream), "sample sync");
        if (b->host) cudaFreeHost(b->host);
        if (b->dev) cudaFree(b->dev);
        b->host = b->dev = NULL;
        b->cap = 0;
        size_t cap = need < ((size_t)64 << 10) ? ((size_t)64 << 10) : need + need / 2;
        SAMPLE_TRY(c, cudaMallocHost((void **)&b->host, cap), "sample pinned alloc");
        SAMPLE_TRY(c, cudaMalloc((void **)&b->dev, cap), "sample alloc");
        b->cap = cap;
    }
    if (n_rows > b->ids_cap) {
        SAMPLE_TRY(c, cudaStreamSynchronize(c->stream), "sample sync");
        if (b->ids_host) cudaFreeHost(b->ids_host);
        if (b->ids_dev) cudaFree(b->ids_dev);
        b->ids_host = b->ids_dev = NULL;
        b->ids_cap = 0;
        int cap = n_rows < 256 ? 256 : n_rows;
        SAMPLE_TRY(c, cudaMallocHost((void **)&b->ids_host, (size_t)cap * sizeof(int32_t)), "sample pinned alloc");
        SAMPLE_TRY(c, cudaMalloc((void **)&b->ids_dev, (size_t)cap * sizeof(int32_t)), "sample alloc");
        b->ids_cap = cap;
    }
    /* pack */
    dev_row *dr = (dev_row *)b->host;
    int32_t *arr = (int32_t *)(b->host + rows_bytes);
    long long at = 0;
    for (int r = 0; r < n_rows; r++) {
        const hr_sample_row *w = &rows[r];
        dev_row d;
        d.temperature = w->temperature;
        d.top_p = w->top_p;
        d.min_p = w->min_p;
        d.top_k = w->top_k;
        d.seed = w->seed;
        d.counter = w->counter;
        d.presence = w->presence_penalty;
        d.frequency = w->frequency_penalty;
        d.repetition = w->repetition_penalty;
        d.n_pen = w->n_pen;
        d.n_mask = w->n_mask;
        d.n_bias = w->n_bias;
        d.pen_off = at;
        if (w->n_pen) memcpy(arr + at, w->pen, (size_t)w->n_pen * sizeof(hr_sample_pen));
        at += (long long)w->n_pen * 3;
        d.mask_off = at;
        if (w->n_mask) memcpy(arr + at, w->mask_ids, (size_t)w->n_mask * sizeof(int32_t));
        at += w->n_mask;
        d.bias_off = at;
        if (w->n_bias) {
            memcpy(arr + at, w->bias_ids, (size_t)w->n_bias * sizeof(int32_t));
            memcpy(arr + at + w->n_bias, w->bias_vals, (size_t)w->n_bias * sizeof(float));
        }
        at += (long long)w->n_bias * 2;
        dr[r] = d;
    }
    SAMPLE_TRY(c, cudaMemcpyAsync(b->dev, b->host, need, cudaMemcpyHostToDevice, c->stream), "sample upload");
    int threads = vocab >= SAMPLE_SMALL_V ? SAMPLE_THREADS : SAMPLE_THREADS_SMALL;
    size_t smem = SAMPLE_CAP * (sizeof(float) + sizeof(int));
    cu_launch(sample_kernel, (unsigned)n_rows, threads, smem, c->stream, b->ids_dev, (float *)logits->data, vocab,
              (const dev_row *)b->dev, (const int32_t *)(b->dev + rows_bytes));
    SAMPLE_TRY(c, cudaGetLastError(), "sample launch");
    SAMPLE_TRY(
        c,
        cudaMemcpyAsync(b->ids_host, b->ids_dev, (size_t)n_rows * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream),
        "sample copy");
    if (!ids_host) { /* left on the way: ids_wait */
        c->ids_pending = b->ids_host;
        c->ids_pending_n = n_rows;
        return HR_OK;
    }
    SAMPLE_TRY(c, cudaStreamSynchronize(c->stream), "sample sync");
    memcpy(ids_host, b->ids_host, (size_t)n_rows * sizeof(int32_t));
    return HR_OK;
}
