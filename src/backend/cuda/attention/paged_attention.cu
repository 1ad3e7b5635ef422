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
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"

#define AT_HB 8     /* query heads per block (GQA group chunk) */
#define AT_WARPS 4

/* Context indices [j0, j1) that split blockIdx.z of token t reads: the
 * token at position p sees [max(0, p - window + 1), min(p + 1, seq_len)). */
__device__ __forceinline__ void split_range(const cu_attn_args &a, int64_t t, int splits, int *j0, int *j1) {
    const int s = a.step.tok_seq[t], p = a.step.positions[t];
    const int hi = min(p + 1, a.step.seq_lens[s]);
    const int lo = a.window > 0 ? max(0, p - a.window + 1) : 0;
    const int len = max(0, hi - lo), chunk = (len + splits - 1) / splits;
    *j0 = lo + (int)blockIdx.z * chunk;
    *j1 = min(hi, *j0 + chunk);
}

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
    const int s = a.step.tok_seq[t], bsz = a.step.block_size;
    int j0, j1;
    split_range(a, t, splits, &j0, &j1);

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

/* ---- decode kernel for BF16 caches, head_dim 64 / 128 --------------------
 * The split kernel above walks one key per warp and step: a chain of
 * dependent load -> dot -> shuffle -> exp steps with one 2-byte load per lane
 * in flight (ncu, H100, 8B at 256 sequences x ~190 keys: 180 us per layer,
 * 780 GB/s). Here the block takes its keys in tiles of DK_TILE: the K and V
 * rows of tile i + 1 are copied to shared memory with cp.async (16 bytes per
 * thread and copy, whole rows coalesced) while tile i is computed, so DRAM
 * always has the next tile in flight. Computing a tile: a group of D/8 lanes
 * owns one key and reads its row from shared memory (16 bytes per lane),
 * writes the scores of its HB query heads to shared memory, one warp per head
 * turns the tile into probabilities with a running max (online softmax
 * across tiles), then the groups accumulate their V rows the same way. (The
 * previous version loaded K, computed, then loaded V, with the tile's loads
 * in registers: two dependent DRAM round trips per tile and none in flight
 * while computing; ncu, H100, 8B at 256 sequences x 130 keys: 4.0 ms per
 * step, 1.1 TB/s.) With one split the block normalises (sinks included) and
 * writes the output itself, no combine launch. */
#define DK_WARPS 4
#define DK_TILE 32 /* keys per tile: one per lane in the softmax */

/* dynamic shared memory of the decode kernel: two stages of K and V tiles,
 * reused after the loop for the groups' partial accumulators */
static constexpr size_t dk_smem(int D, int HB) {
    size_t tiles = (size_t)2 * 2 * DK_TILE * D * 2;
    size_t red = (size_t)DK_WARPS * (32 / (D / 8)) * HB * D * sizeof(float);
    return tiles > red ? tiles : red;
}

template <typename TQ, int D, int HB>
__global__ void __launch_bounds__(DK_WARPS * 32) attn_decode_kernel(cu_attn_args a, int splits, int n_hc,
                                                                    float *part) {
    pdl_begin();
    constexpr int LPK = D / 8;          /* lanes per key: 8 dims (16 bytes) each */
    constexpr int KPW = 32 / LPK;       /* keys per warp and step */
    constexpr int NG = DK_WARPS * KPW;  /* key groups per block */
    constexpr int PER = DK_TILE / NG;   /* keys per group and tile */
    constexpr int CPR = D / 8;          /* 16-byte chunks per K or V row */
    constexpr int CHUNKS = DK_TILE * CPR;
    constexpr int CPT = CHUNKS / (DK_WARPS * 32); /* chunks per thread and tile, for K and for V */
    static_assert(CPT * DK_WARPS * 32 == CHUNKS && PER * NG == DK_TILE, "decode tile shape");
    __shared__ float s_p[HB][DK_TILE];
    __shared__ float s_m[HB], s_l[HB], s_c[HB];
    extern __shared__ uint4 s_tiles[]; /* [stage][K | V][DK_TILE * CPR]; then [NG][HB][D] floats */
    float *s_red = reinterpret_cast<float *>(s_tiles);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = warp * KPW + lane / LPK, d0 = (lane % LPK) * 8;
    const int G = a.n_heads / a.n_kv_heads;
    const int kvh = blockIdx.x / n_hc, hc = blockIdx.x % n_hc;
    const int h0 = kvh * G + hc * HB, nhb = min(HB, G - hc * HB);
    const int64_t t = blockIdx.y;
    const int s = a.step.tok_seq[t], bsz = a.step.block_size;
    int j0, j1;
    split_range(a, t, splits, &j0, &j1);

    const int64_t row = (int64_t)a.n_kv_heads * D;
    const int32_t *bt = a.step.block_tables + (int64_t)s * a.step.mbps;
    const bf16 *kc = (const bf16 *)a.kc + (int64_t)kvh * D, *vc = (const bf16 *)a.vc + (int64_t)kvh * D;
    /* K and V rows of keys [tb, tb + DK_TILE) -> stage st; keys past j1 or
     * in a hole of the block table read as zeros (their scores are masked) */
    auto issue = [&](int tb, int st) {
        uint4 *ks = s_tiles + (size_t)st * 2 * CHUNKS, *vs = ks + CHUNKS;
#pragma unroll
        for (int r = 0; r < CPT; r++) {
            const int c = threadIdx.x + r * DK_WARPS * 32, j = tb + c / CPR;
            const int blk = j < j1 ? bt[j / bsz] : -1;
            if (blk >= 0) {
                const int64_t off = ((int64_t)blk * bsz + j % bsz) * row + (c % CPR) * 8;
                cp_async16(&ks[c], kc + off);
                cp_async16(&vs[c], vc + off);
            } else {
                ks[c] = make_uint4(0, 0, 0, 0);
                vs[c] = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
    };
    const int ntiles = j1 > j0 ? (j1 - j0 + DK_TILE - 1) / DK_TILE : 0;
    if (ntiles > 0) issue(j0, 0);

    float q[HB][8], acc[HB][8];
    const TQ *qp = (const TQ *)a.q + t * a.ldq;
#pragma unroll
    for (int i = 0; i < HB; i++) {
        int hh = h0 + min(i, nhb - 1);
        if constexpr (sizeof(TQ) == 2) {
            unpack16<TQ>(*reinterpret_cast<const uint4 *>(qp + (int64_t)hh * D + d0), q[i]);
        } else {
            const float4 *f = reinterpret_cast<const float4 *>(qp + (int64_t)hh * D + d0);
            float4 x0 = f[0], x1 = f[1];
            q[i][0] = x0.x; q[i][1] = x0.y; q[i][2] = x0.z; q[i][3] = x0.w;
            q[i][4] = x1.x; q[i][5] = x1.y; q[i][6] = x1.z; q[i][7] = x1.w;
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            q[i][e] *= a.scale;
            acc[i][e] = 0.0f;
        }
    }
    if (threadIdx.x < HB) {
        s_m[threadIdx.x] = -INFINITY;
        s_l[threadIdx.x] = 0.0f;
    }

    for (int it = 0; it < ntiles; it++) {
        const int tb = j0 + it * DK_TILE, st = it & 1;
        if (it + 1 < ntiles) {
            issue(tb + DK_TILE, st ^ 1); /* its stage was last read before the previous tile's final barrier */
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const uint4 *ks = s_tiles + (size_t)st * 2 * CHUNKS, *vs = ks + CHUNKS;
#pragma unroll
        for (int r = 0; r < PER; r++) {
            const int key = r * NG + g, j = tb + key;
            float kf[8];
            unpack16<bf16>(ks[key * CPR + lane % LPK], kf);
            const bool valid = j < j1 && bt[j / bsz] >= 0;
#pragma unroll
            for (int i = 0; i < HB; i++) {
                float dot = 0.0f;
#pragma unroll
                for (int e = 0; e < 8; e++) dot = fmaf(q[i][e], kf[e], dot);
#pragma unroll
                for (int o = LPK / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
                if (lane % LPK == 0) s_p[i][key] = valid ? dot : -INFINITY;
            }
        }
        __syncthreads();
        for (int i = warp; i < HB; i += DK_WARPS) {
            float v = s_p[i][lane];
            float mo = s_m[i], mn = fmaxf(mo, warp_max(v));
            float p = 0.0f, corr = 1.0f;
            if (mn != -INFINITY) {
                p = expf(v - mn); /* exp(-inf) = 0 for masked keys */
                corr = expf(mo - mn);
            }
            s_p[i][lane] = p;
            float sum = warp_sum(p);
            __syncwarp();
            if (lane == 0) {
                s_l[i] = s_l[i] * corr + sum;
                s_m[i] = mn;
                s_c[i] = corr;
            }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < HB; i++) {
            float c = s_c[i];
#pragma unroll
            for (int e = 0; e < 8; e++) acc[i][e] *= c;
        }
#pragma unroll
        for (int r = 0; r < PER; r++) {
            const int key = r * NG + g;
            float vf[8];
            unpack16<bf16>(vs[key * CPR + lane % LPK], vf);
#pragma unroll
            for (int i = 0; i < HB; i++) {
                float pw = s_p[i][key];
#pragma unroll
                for (int e = 0; e < 8; e++) acc[i][e] = fmaf(pw, vf[e], acc[i][e]);
            }
        }
        __syncthreads(); /* s_p, s_c and this stage are rewritten by the next tiles */
    }

    /* sum the groups' partial accumulators */
#pragma unroll
    for (int i = 0; i < HB; i++)
#pragma unroll
        for (int e = 0; e < 8; e++) s_red[((size_t)g * HB + i) * D + d0 + e] = acc[i][e];
    __syncthreads();
    for (int idx = threadIdx.x; idx < nhb * D; idx += blockDim.x) {
        int i = idx / D, d = idx % D;
        float v = 0.0f;
#pragma unroll 4
        for (int k = 0; k < NG; k++) v += s_red[((size_t)k * HB + i) * D + d];
        float m = s_m[i], l = s_l[i];
        if (splits == 1) {
            float M = m, scale = 1.0f;
            if (a.sinks) {
                float sk = a.sinks[h0 + i];
                M = fmaxf(m, sk);
                scale = m == -INFINITY ? 0.0f : expf(m - M);
                l = l * scale + expf(sk - M);
            }
            float o = l > 0.0f ? v * scale / l : 0.0f;
            TQ *out = (TQ *)a.out + t * a.ldo + (int64_t)(h0 + i) * D;
            out[d] = from_f<TQ>(o);
        } else {
            int64_t ph = (t * a.n_heads + h0 + i) * splits + blockIdx.z;
            part[ph * (D + 2) + d] = v;
            if (d == 0) {
                part[ph * (D + 2) + D] = m;
                part[ph * (D + 2) + D + 1] = l;
            }
        }
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

/* The decode kernel: BF16 caches, head_dim 64 or 128, 16-byte aligned q
 * rows (HEARTH_CUDA_ATTN_DECODE=0: the split kernel, for comparisons). */
static bool decode_ok(const cu_attn_args *a) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HEARTH_CUDA_ATTN_DECODE");
        on = !(e && !strcmp(e, "0"));
    }
    return on && a->tkv == HR_BF16 && (a->head_dim == 64 || a->head_dim == 128) &&
           (a->tq == HR_BF16 || a->tq == HR_F32) && (uintptr_t)a->q % 16 == 0 && a->ldq % 8 == 0;
}
/* query heads per decode block: the GQA group, rounded up to 1, 2, 4 or 8 */
static int decode_hb(int G) { return G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8; }
static int heads_per_block(const cu_attn_args *a) {
    int G = a->n_heads / a->n_kv_heads;
    return decode_ok(a) ? decode_hb(G) : AT_HB;
}

int cu_attn_splits(const cu_attn_args *a, int n_sm) {
    int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, heads_per_block(a));
    int64_t blocks = (int64_t)a->step.n_tokens * a->n_kv_heads * n_hc, target = 4 * (int64_t)n_sm;
    int ctx = a->step.ctx_bucket; /* not max_seq_len: a graph captured for this bucket stays valid */
    if (a->window > 0) ctx = HR_MIN(ctx, a->window);
    if (blocks >= target || ctx <= AT_MIN_KEYS) return 1;
    int64_t s = HR_CDIV(target, blocks);
    s = HR_MIN(s, (int64_t)HR_CDIV(ctx, AT_MIN_KEYS));
    return (int)HR_MAX((int64_t)1, HR_MIN(s, (int64_t)64));
}

template <typename TQ, int D>
static cudaError_t launch_decode(cudaStream_t st, const cu_attn_args *a, int splits, float *part) {
    int G = a->n_heads / a->n_kv_heads, hb = decode_hb(G), n_hc = HR_CDIV(G, hb);
    dim3 grid((unsigned)(a->n_kv_heads * n_hc), (unsigned)a->step.n_tokens, (unsigned)splits);
    size_t shm = hb == 1 ? dk_smem(D, 1) : hb == 2 ? dk_smem(D, 2) : hb == 4 ? dk_smem(D, 4) : dk_smem(D, 8);
    switch (hb) {
    case 1: cu_launch(attn_decode_kernel<TQ, D, 1>, grid, DK_WARPS * 32, shm, st, *a, splits, n_hc, part); break;
    case 2: cu_launch(attn_decode_kernel<TQ, D, 2>, grid, DK_WARPS * 32, shm, st, *a, splits, n_hc, part); break;
    case 4: cu_launch(attn_decode_kernel<TQ, D, 4>, grid, DK_WARPS * 32, shm, st, *a, splits, n_hc, part); break;
    default: cu_launch(attn_decode_kernel<TQ, D, 8>, grid, DK_WARPS * 32, shm, st, *a, splits, n_hc, part); break;
    }
    return cudaGetLastError();
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
    cudaError_t e;
    if (decode_ok(a)) {
        if (a->head_dim == 128) {
            CU_DISPATCH_ACT(a->tq, TQ, e = launch_decode<TQ, 128>(st, a, splits, part));
        } else {
            CU_DISPATCH_ACT(a->tq, TQ, e = launch_decode<TQ, 64>(st, a, splits, part));
        }
        if (e != cudaSuccess || splits == 1) return e; /* one split: the kernel wrote the output */
    } else {
        int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, AT_HB);
        size_t shm = (size_t)AT_WARPS * AT_HB * (a->head_dim + 2) * sizeof(float);
        dim3 grid((unsigned)(a->n_kv_heads * n_hc), (unsigned)T, (unsigned)splits);
        CU_DISPATCH_ACT(a->tq, TQ,
                        CU_DISPATCH_ACT(a->tkv, TKV, e = launch_split<TQ, TKV>(st, a, grid, splits, n_hc, shm, part)));
        if (e != cudaSuccess) return e;
    }
    dim3 cg((unsigned)a->n_heads, (unsigned)T);
    int threads = HR_MIN(256, HR_CDIV(a->head_dim, 32) * 32);
    CU_DISPATCH_ACT(a->tq, TQ, cu_launch(attn_combine_kernel<TQ>, cg, threads, 0, st, *a, splits, part));
    return cudaGetLastError();
}
