/* Paged attention over the block-table KV cache, for decode and (this
 * version) prefill alike: flash-decoding (Dao et al., "Flash-Decoding for
 * long-context inference", 2023) splits each token's context over blockIdx.z;
 * a block owns one (token, KV head, group of up to AT_HB query heads), so each
 * K/V row is read once for all the query heads that share it (GQA). Each warp
 * walks keys with an online softmax (FlashAttention-2 style running max and
 * sum); warps then merge in shared memory and write one (max, sum, acc)
 * partial per split; a combine kernel merges splits and adds attention sinks.
 * Masking is by position: a token at position p sees context indices
 * [max(0, p - window + 1), min(p + 1, seq_len)). */
#include <math.h>

#include "backend/cuda/cu_types.cuh"

#define AT_HB 8     /* query heads per block (GQA group chunk) */
#define AT_WARPS 4

template <typename TQ, typename TKV, int E>
__global__ void __launch_bounds__(AT_WARPS * 32) attn_split_kernel(cu_attn_args a, int splits, int n_hc,
                                                                   float *part) {
    pdl_begin();
    extern __shared__ float smem[]; /* [AT_WARPS][AT_HB][hd + 2] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int hd = a.head_dim, G = a.n_heads / a.n_kv_heads;
    const int kvh = blockIdx.x / n_hc, hc = blockIdx.x % n_hc;
    const int h0 = kvh * G + hc * AT_HB, nhb = min(AT_HB, G - hc * AT_HB);
    const int64_t t = blockIdx.y;
    const int z = blockIdx.z;
    const int s = a.step.tok_seq[t], p = a.step.positions[t];
    const int bsz = a.step.block_size;
    int hi = min(p + 1, a.step.seq_lens[s]);
    int lo = a.window > 0 ? max(0, p - a.window + 1) : 0;
    int len = max(0, hi - lo), chunk = (len + splits - 1) / splits;
    int j0 = lo + z * chunk, j1 = min(hi, j0 + chunk);

    float q[AT_HB][E], acc[AT_HB][E], m[AT_HB], l[AT_HB];
    const TQ *qp = (const TQ *)a.q + t * a.ldq;
#pragma unroll
    for (int i = 0; i < AT_HB; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane + 32 * e;
            q[i][e] = (i < nhb && d < hd) ? to_f(qp[(int64_t)(h0 + i) * hd + d]) * a.scale : 0.0f;
            acc[i][e] = 0.0f;
        }
    }

    const int64_t row = (int64_t)a.n_kv_heads * hd;
    const int32_t *bt = a.step.block_tables + (int64_t)s * a.step.mbps;
    const TKV *kc = (const TKV *)a.kc, *vc = (const TKV *)a.vc;
    for (int j = j0 + warp; j < j1; j += AT_WARPS) {
        int blk = bt[j / bsz];
        if (blk < 0) continue; /* a hole inside the context would be a caller bug; never read through it */
        int64_t off = ((int64_t)blk * bsz + j % bsz) * row + (int64_t)kvh * hd;
        float kv[E], vv[E];
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane + 32 * e;
            kv[e] = d < hd ? to_f(kc[off + d]) : 0.0f;
            vv[e] = d < hd ? to_f(vc[off + d]) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < AT_HB; i++) {
            if (i >= nhb) break;
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < E; e++) dot = fmaf(q[i][e], kv[e], dot);
            dot = warp_sum(dot);
            float mn = fmaxf(m[i], dot);
            float corr = expf(m[i] - mn); /* m = -inf first: exp(-inf) = 0 */
            float pw = expf(dot - mn);
            l[i] = l[i] * corr + pw;
#pragma unroll
            for (int e = 0; e < E; e++) acc[i][e] = acc[i][e] * corr + pw * vv[e];
            m[i] = mn;
        }
    }

    /* merge the warps */
    const int stride = hd + 2;
    float *mine = smem + (size_t)warp * AT_HB * stride;
#pragma unroll
    for (int i = 0; i < AT_HB; i++) {
        if (i >= nhb) break;
#pragma unroll
        for (int e = 0; e < E; e++) {
            int d = lane + 32 * e;
            if (d < hd) mine[i * stride + d] = acc[i][e];
        }
        if (lane == 0) {
            mine[i * stride + hd] = m[i];
            mine[i * stride + hd + 1] = l[i];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < nhb * (hd + 2); idx += blockDim.x) {
        int i = idx / (hd + 2), d = idx % (hd + 2);
        float M = -INFINITY;
        for (int w = 0; w < AT_WARPS; w++) M = fmaxf(M, smem[((size_t)w * AT_HB + i) * stride + hd]);
        float v = 0.0f;
        if (d == hd) {
            v = M;
        } else {
            int src = d == hd + 1 ? hd + 1 : d; /* sum or acc column */
            if (M != -INFINITY)
                for (int w = 0; w < AT_WARPS; w++) {
                    const float *ws = smem + ((size_t)w * AT_HB + i) * stride;
                    if (ws[hd] != -INFINITY) v += ws[src] * expf(ws[hd] - M);
                }
        }
        int64_t ph = (t * a.n_heads + h0 + i) * splits + z;
        part[ph * stride + d] = v;
    }
}

/* Merges the splits of one (token, head): the split weights exp(m_z - M) are
 * computed once into shared memory, then each thread sums its dims. */
template <typename TQ>
__global__ void attn_combine_kernel(cu_attn_args a, int splits, const float *part) {
    pdl_begin();
    __shared__ float wz[64], red[2];
    const int64_t t = blockIdx.y;
    const int h = blockIdx.x, hd = a.head_dim, stride = hd + 2;
    const float *ph = part + (t * a.n_heads + h) * (int64_t)splits * stride;
    if (threadIdx.x < 32) {
        float M = a.sinks ? a.sinks[h] : -INFINITY;
        for (int z = threadIdx.x; z < splits; z += 32) M = fmaxf(M, ph[z * stride + hd]);
        M = warp_max(M);
        float L = 0.0f;
        for (int z = threadIdx.x; z < splits; z += 32) {
            float mz = ph[z * stride + hd];
            float w = (M != -INFINITY && mz != -INFINITY) ? expf(mz - M) : 0.0f;
            wz[z] = w;
            L += w * ph[z * stride + hd + 1];
        }
        L = warp_sum(L);
        if (threadIdx.x == 0) {
            if (a.sinks && M != -INFINITY) L += expf(a.sinks[h] - M);
            red[0] = L;
        }
    }
    __syncthreads();
    const float L = red[0];
    TQ *out = (TQ *)a.out + t * a.ldo + (int64_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        if (L > 0.0f) {
            for (int z = 0; z < splits; z++) v += ph[z * stride + d] * wz[z];
            v /= L;
        }
        out[d] = from_f<TQ>(v);
    }
}

/* Splits of the context so that the grid has ~4 blocks per SM, each with at
 * least AT_MIN_KEYS keys: a decode block's time is a chain of dependent
 * per-key steps (load, dot, warp reduce, exp), so short chains in many
 * blocks beat long chains in few (ncu, H100, 8B decode at ~300 tokens:
 * 64 keys/split took 24 us per layer). */
#define AT_MIN_KEYS 16
int cu_attn_splits(const cu_attn_args *a, int n_sm) {
    int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, AT_HB);
    int64_t blocks = (int64_t)a->step.n_tokens * a->n_kv_heads * n_hc, target = 4 * (int64_t)n_sm;
    int ctx = a->step.ctx_bucket; /* not max_seq_len: a graph captured for this bucket stays valid */
    if (a->window > 0) ctx = HR_MIN(ctx, a->window);
    if (blocks >= target || ctx <= AT_MIN_KEYS) return 1;
    int64_t s = HR_CDIV(target, blocks);
    s = HR_MIN(s, (int64_t)HR_CDIV(ctx, AT_MIN_KEYS));
    return (int)HR_MAX((int64_t)1, HR_MIN(s, (int64_t)64));
}

template <typename TQ, typename TKV>
static cudaError_t launch_split(cudaStream_t st, const cu_attn_args *a, dim3 grid, int splits, int n_hc, size_t shm,
                                float *part) {
    int E = HR_CDIV(a->head_dim, 32);
    if (E <= 1) cu_launch(attn_split_kernel<TQ, TKV, 1>, grid, AT_WARPS * 32, shm, st, *a, splits, n_hc, part);
    else if (E <= 2) cu_launch(attn_split_kernel<TQ, TKV, 2>, grid, AT_WARPS * 32, shm, st, *a, splits, n_hc, part);
    else if (E <= 4) cu_launch(attn_split_kernel<TQ, TKV, 4>, grid, AT_WARPS * 32, shm, st, *a, splits, n_hc, part);
    else if (E <= 8) cu_launch(attn_split_kernel<TQ, TKV, 8>, grid, AT_WARPS * 32, shm, st, *a, splits, n_hc, part);
    else return cudaErrorNotSupported;
    return cudaGetLastError();
}

cudaError_t cu_attention(cudaStream_t st, const cu_attn_args *a, int splits, float *part) {
    int T = a->step.n_tokens;
    if (T <= 0) return cudaSuccess;
    if (a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->head_dim > 256 || T > 65535 || splits < 1 || splits > 64)
        return cudaErrorNotSupported;
    int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, AT_HB);
    size_t shm = (size_t)AT_WARPS * AT_HB * (a->head_dim + 2) * sizeof(float);
    dim3 grid((unsigned)(a->n_kv_heads * n_hc), (unsigned)T, (unsigned)splits);
    cudaError_t e;
    CU_DISPATCH_ACT(a->tq, TQ, CU_DISPATCH_ACT(a->tkv, TKV, e = launch_split<TQ, TKV>(st, a, grid, splits, n_hc, shm, part)));
    if (e != cudaSuccess) return e;
    dim3 cg((unsigned)a->n_heads, (unsigned)T);
    int threads = HR_MIN(256, HR_CDIV(a->head_dim, 32) * 32);
    CU_DISPATCH_ACT(a->tq, TQ, cu_launch(attn_combine_kernel<TQ>, cg, threads, 0, st, *a, splits, part));
    return cudaGetLastError();
}
