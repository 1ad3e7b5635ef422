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
 * 780 GB/s). Here the block takes its keys in tiles of TILE keys: the K and V
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

/* dynamic shared memory of the decode kernel: STAGES K and V tiles, reused
 * after the loop for the groups' partial accumulators */
static constexpr size_t dk_smem(int D, int HB, int TILE, int STAGES) {
    size_t tiles = (size_t)STAGES * 2 * TILE * D * 2;
    size_t red = (size_t)DK_WARPS * (32 / (D / 8)) * HB * D * sizeof(float);
    return tiles > red ? tiles : red;
}

/* TILE keys per tile (a multiple of 32: TILE / 32 per lane in the softmax),
 * STAGES tiles in shared memory (STAGES - 1 in flight while one is computed) */
template <typename TQ, int D, int HB, int TILE, int STAGES>
__global__ void __launch_bounds__(DK_WARPS * 32) attn_decode_kernel(cu_attn_args a, int splits, int n_hc,
                                                                    float *part) {
    pdl_begin();
    constexpr int LPK = D / 8;          /* lanes per key: 8 dims (16 bytes) each */
    constexpr int KPW = 32 / LPK;       /* keys per warp and step */
    constexpr int NG = DK_WARPS * KPW;  /* key groups per block */
    constexpr int PER = TILE / NG;      /* keys per group and tile */
    constexpr int SPL = TILE / 32;      /* scores per lane in the softmax */
    constexpr int CPR = D / 8;          /* 16-byte chunks per K or V row */
    constexpr int CHUNKS = TILE * CPR;
    constexpr int CPT = CHUNKS / (DK_WARPS * 32); /* chunks per thread and tile, for K and for V */
    static_assert(CPT * DK_WARPS * 32 == CHUNKS && PER * NG == TILE && SPL * 32 == TILE && STAGES >= 2,
                  "decode tile shape");
    __shared__ float s_p[HB][TILE];
    __shared__ float s_m[HB], s_l[HB], s_c[HB];
    extern __shared__ uint4 s_tiles[]; /* [stage][K | V][TILE * CPR]; then [NG][HB][D] floats */
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
    /* K and V rows of keys [tb, tb + TILE) -> stage st; keys past j1 or
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
    const int ntiles = j1 > j0 ? (j1 - j0 + TILE - 1) / TILE : 0;
    /* the first STAGES - 1 tiles; empty groups past the end keep the group
     * count uniform for cp_async_wait */
#pragma unroll
    for (int p = 0; p < STAGES - 1; p++) {
        if (p < ntiles) issue(j0 + p * TILE, p);
        else cp_async_commit();
    }

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
        const int tb = j0 + it * TILE, st = it % STAGES, nx = it + STAGES - 1;
        /* tile nx's stage was last read by tile it - 1, before its final barrier */
        if (nx < ntiles) issue(j0 + nx * TILE, nx % STAGES);
        else cp_async_commit();
        cp_async_wait<STAGES - 1>(); /* tile it has landed */
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
            float v[SPL], vm = -INFINITY;
#pragma unroll
            for (int k = 0; k < SPL; k++) {
                v[k] = s_p[i][k * 32 + lane];
                vm = fmaxf(vm, v[k]);
            }
            float mo = s_m[i], mn = fmaxf(mo, warp_max(vm));
            float ps = 0.0f, corr = 1.0f;
            if (mn != -INFINITY) corr = expf(mo - mn);
#pragma unroll
            for (int k = 0; k < SPL; k++) {
                float p = mn != -INFINITY ? expf(v[k] - mn) : 0.0f; /* exp(-inf) = 0 for masked keys */
                s_p[i][k * 32 + lane] = p;
                ps += p;
            }
            float sum = warp_sum(ps);
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

/* ---- decode on tensor cores: BF16 q and caches, head_dim 64 / 128 --------
 * For batched decode the kernel above is bound by instruction issue, not by
 * DRAM (ncu, H100, 8B at 256 sequences x 130 keys: 2.9 ms per step, 1.5
 * TB/s: per 16-byte K or V load a lane spends ~20 instructions on dots,
 * shuffles and the online softmax). Here one block owns one (token, KV
 * head, split) and all G <= 16 query heads of the group as the 16 rows of
 * an mma.sync m16n8k16 A operand (rows past G are zeros): S = Q K^T and
 * O += P V run on tensor cores, FlashAttention-2 style. Per tile of TD_TILE
 * keys each of the TD_WARPS warps owns 16 keys with its own running max and
 * sum; the K/V tiles stream through TD_STAGES shared-memory stages with
 * cp.async (the next tile in flight while one is computed), and the warps'
 * partial (m, l, O) are merged through shared memory at the end. */
#define TD_KW 16                     /* keys per warp and tile */

/* TD_WARPS warps per block (a template parameter: 2, the default, or 4:
 * HEARTH_CUDA_ATTN_TC_WARPS; H100, 8B per step: 2 warps 10.52 / 10.75 /
 * 9.82 / 9.54 ms vs 4 warps 11.13 / 11.02 / 9.98 / 9.82 at 256 x 128, 256 x
 * 192, 128 x 512 and 64 x 1024 sequences x keys; bounding 2 warps to 168
 * registers for 6 blocks per SM instead of 4 was slower still) and
 * TD_STAGES tile stages (2, or 3 / 4 for more loads in flight per block;
 * HEARTH_CUDA_ATTN_TC_STAGES) */
static constexpr size_t td_tiles(int HD, int W, int S) { return (size_t)S * 2 * W * TD_KW * (HD + 8) * 2; }
static constexpr size_t td_smem(int HD, int W, int S) {
    /* the K/V stages, then one validity byte per key and stage (the mask);
     * the warps' merge reuses the stages (at most 8 query rows at a time) */
    size_t tiles = td_tiles(HD, W, S) + (size_t)S * W * TD_KW;
    size_t merge = (size_t)W * 8 * (HD + 8) * sizeof(float) + (size_t)W * 16 * 2 * sizeof(float);
    return tiles > merge ? tiles : merge;
}

template <int HD, int TD_WARPS, int TD_STAGES>
__global__ void __launch_bounds__(TD_WARPS * 32) attn_decode_tc_kernel(cu_attn_args a, int splits, float *part) {
    constexpr int TD_TILE = TD_WARPS * TD_KW; /* keys per tile */
    pdl_begin();
    constexpr int LD = HD + 8;       /* padded smem row (bf16): conflict-free fragment loads, 16-byte aligned */
    constexpr int CPR = HD / 8;      /* 16-byte chunks per row */
    constexpr int CPT = TD_TILE * CPR / (TD_WARPS * 32);
    extern __shared__ __align__(16) unsigned char td_raw[];
    bf16 *sm = reinterpret_cast<bf16 *>(td_raw);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.x, G = a.n_heads / a.n_kv_heads, h0 = kvh * G;
    const int64_t t = blockIdx.y;
    const int s = a.step.tok_seq[t], bsz = a.step.block_size;
    const bool pow2 = (bsz & (bsz - 1)) == 0;
    const int bsh = __ffs(bsz) - 1;
    int j0, j1;
    split_range(a, t, splits, &j0, &j1);
    const int64_t row = (int64_t)a.n_kv_heads * HD;
    const int32_t *bt = a.step.block_tables + (int64_t)s * a.step.mbps;
    const bf16 *kc = (const bf16 *)a.kc + (int64_t)kvh * HD, *vc = (const bf16 *)a.vc + (int64_t)kvh * HD;
    /* cache row of context index j, or -1 (past j1, or a hole in the block table) */
    auto slot_of = [&](int j) -> int64_t {
        if (j >= j1) return -1;
        const int bi = pow2 ? j >> bsh : j / bsz, bo = pow2 ? j & (bsz - 1) : j % bsz;
        const int blk = bt[bi];
        return blk >= 0 ? (int64_t)blk * bsz + bo : -1;
    };
    /* per stage, one byte per key: 1 when loaded (in range, not a hole) */
    unsigned char *kvalid = td_raw + td_tiles(HD, TD_WARPS, TD_STAGES);
    auto issue = [&](int tb, int st) {
        bf16 *ks = sm + (size_t)st * 2 * TD_TILE * LD, *vs = ks + TD_TILE * LD;
#pragma unroll
        for (int r = 0; r < CPT; r++) {
            const int c = threadIdx.x + r * TD_WARPS * 32, key = c / CPR, col = (c % CPR) * 8;
            const int64_t sl = slot_of(tb + key);
            if (col == 0) kvalid[st * TD_TILE + key] = sl >= 0;
            if (sl >= 0) {
                cp_async16(ks + key * LD + col, kc + sl * row + col);
                cp_async16(vs + key * LD + col, vc + sl * row + col);
            } else { /* zeros: 0 x a masked probability never makes NaN */
                *reinterpret_cast<uint4 *>(ks + key * LD + col) = make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4 *>(vs + key * LD + col) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
    };
    const int ntiles = j1 > j0 ? (j1 - j0 + TD_TILE - 1) / TD_TILE : 0;
#pragma unroll
    for (int p = 0; p < TD_STAGES - 1; p++) {
        if (p < ntiles) issue(j0 + p * TD_TILE, p);
        else cp_async_commit();
    }

    /* the group's query heads as A fragments (rows g and g + 8), scale folded in later */
    const bf16 *qp = (const bf16 *)a.q + t * a.ldq + (int64_t)h0 * HD;
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int hr = g + ((r & 1) ? 8 : 0), col = kk * 16 + tq * 2 + ((r & 2) ? 8 : 0);
            qa[kk][r] = hr < G ? *reinterpret_cast<const uint32_t *>(qp + (int64_t)hr * HD + col) : 0u;
        }
    float o[HD / 8][4], m[2] = {-1e30f, -1e30f}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;

    for (int it = 0; it < ntiles; it++) {
        const int st = it % TD_STAGES, nx = it + TD_STAGES - 1;
        if (nx < ntiles) issue(j0 + nx * TD_TILE, nx % TD_STAGES); /* its stage was freed by tile it - 1's barrier */
        else cp_async_commit();
        cp_async_wait<TD_STAGES - 1>();
        __syncthreads();
        const bf16 *ks = sm + (size_t)st * 2 * TD_TILE * LD + warp * TD_KW * LD, *vs = ks + TD_TILE * LD;
        const unsigned char *kv_ok = kvalid + st * TD_TILE + warp * TD_KW; /* this warp's keys */
        float sc[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
            /* keys nt*8..+7; matrix m of the x4 holds dims 8 m .. 8 m + 7 of a 32-dim slice */
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, ks + (nt * 8 + (lane & 7)) * LD + kk * 16 + (lane >> 3) * 8);
                mma_bf16(sc[nt], qa[kk], b[0], b[1]);
                mma_bf16(sc[nt], qa[kk + 1], b[2], b[3]);
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int c = 0; c < 2; c++) {
                const bool ok = kv_ok[nt * 8 + tq * 2 + c] != 0; /* same for both rows: one token */
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float v = ok ? sc[nt][2 * r + c] * a.scale : -INFINITY;
                    sc[nt][2 * r + c] = v;
                    mx[r] = fmaxf(mx[r], v);
                }
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m[r], mx[r]), corr = expf(m[r] - mn);
            m[r] = mn;
            l[r] *= corr;
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                o[dn][2 * r] *= corr;
                o[dn][2 * r + 1] *= corr;
            }
        }
#pragma unroll
        for (int nt = 0; nt < 2; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float pv = expf(sc[nt][i] - m[i >> 1]); /* masked: exp(-inf) = 0 */
                sc[nt][i] = pv;
                l[i >> 1] += pv;
            }
        const uint32_t pa[4] = {pack_bf16(sc[0][0], sc[0][1]), pack_bf16(sc[0][2], sc[0][3]),
                                pack_bf16(sc[1][0], sc[1][1]), pack_bf16(sc[1][2], sc[1][3])};
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            uint32_t b0, b1;
            ldmatrix_x2_trans(b0, b1, vs + (lane & 15) * LD + dn * 8);
            mma_bf16(o[dn], pa, b0, b1);
        }
        __syncthreads(); /* this stage is refilled by a later tile */
    }
    cp_async_wait<0>();

    /* merge the warps: per row (query head) M = max m_w, L = sum l_w e^(m_w - M), O likewise */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    __syncthreads(); /* the stages are reused below */
    /* Only the group's query rows are merged: rows g (r = 0) below G, and
     * rows 8 + g (r = 1) when G > 8, in passes of 8 rows. Rows are HD + 8
     * floats apart: in each half-warp's 8-byte stores lane (g, tq) takes
     * banks 8 (g % 4) + 2 tq and the next, all distinct. */
    float *so = reinterpret_cast<float *>(td_raw);     /* [TD_WARPS][8][HD + 8]: O */
    float *sml = so + (size_t)TD_WARPS * 8 * (HD + 8); /* [TD_WARPS][16][2]: m, l */
    if (tq == 0) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sml[(warp * 16 + g + 8 * r) * 2] = m[r];
            sml[(warp * 16 + g + 8 * r) * 2 + 1] = l[r];
        }
    }
    for (int pass = 0; pass * 8 < G; pass++) {
        if (pass) __syncthreads(); /* the previous pass's rows were read */
        if (g + 8 * pass < G) {
            float *rw = so + ((size_t)warp * 8 + g) * (HD + 8);
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++)
                *reinterpret_cast<float2 *>(rw + dn * 8 + tq * 2) =
                    pass ? make_float2(o[dn][2], o[dn][3]) : make_float2(o[dn][0], o[dn][1]);
        }
        __syncthreads();
        for (int idx = threadIdx.x; idx < min(8, G - 8 * pass) * HD; idx += blockDim.x) {
            const int hl = idx / HD, hr = 8 * pass + hl, d = idx % HD;
            float M = -INFINITY;
#pragma unroll
            for (int w = 0; w < TD_WARPS; w++) {
                const float *ml = sml + (w * 16 + hr) * 2;
                if (ml[1] > 0.0f) M = fmaxf(M, ml[0]);
            }
            float L = 0.0f, v = 0.0f;
            if (M != -INFINITY) {
#pragma unroll
                for (int w = 0; w < TD_WARPS; w++) {
                    const float *ml = sml + (w * 16 + hr) * 2;
                    if (ml[1] > 0.0f) {
                        const float e = expf(ml[0] - M);
                        L += ml[1] * e;
                        v += so[((size_t)w * 8 + hl) * (HD + 8) + d] * e;
                    }
                }
            }
            const int h = h0 + hr;
            if (splits == 1) {
                float scale = 1.0f;
                if (a.sinks) {
                    const float sk = a.sinks[h], Ms = fmaxf(M, sk);
                    scale = M == -INFINITY ? 0.0f : expf(M - Ms);
                    L = L * scale + expf(sk - Ms);
                }
                bf16 *out = (bf16 *)a.out + t * a.ldo + (int64_t)h * HD;
                out[d] = __float2bfloat16(L > 0.0f ? v * scale / L : 0.0f);
            } else {
                const int64_t ph = (t * a.n_heads + h) * splits + blockIdx.z;
                part[ph * (HD + 2) + d] = v;
                if (d == 0) {
                    part[ph * (HD + 2) + HD] = M;
                    part[ph * (HD + 2) + HD + 1] = L;
                }
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
    if (on < 0) on = hr_env_on("HEARTH_CUDA_ATTN_DECODE", true);
    return on && a->tkv == HR_BF16 && (a->head_dim == 64 || a->head_dim == 128) &&
           (a->tq == HR_BF16 || a->tq == HR_F32) && (uintptr_t)a->q % 16 == 0 && a->ldq % 8 == 0;
}
/* query heads per decode block: the GQA group, rounded up to 1, 2, 4 or 8 */
static int decode_hb(int G) { return G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8; }

/* The tensor-core decode kernel: BF16 q, output and caches, head_dim 64 or
 * 128, groups of up to 16 query heads, and enough (token, KV head) blocks
 * to fill the GPU without splitting much (batched decode; one sequence
 * takes the kernel above, whose short splits spread better).
 * HEARTH_CUDA_ATTN_DECODE_TC=0 turns it off. */
#define TD_MIN_BLOCKS 128
static bool decode_tc_ok(const cu_attn_args *a) {
    static int on = -1;
    if (on < 0) on = hr_env_on("HEARTH_CUDA_ATTN_DECODE_TC", true);
    int G = a->n_heads / a->n_kv_heads;
    return on && decode_ok(a) && a->tq == HR_BF16 && G <= 16 && a->ldo % 2 == 0 &&
           (int64_t)a->step.n_tokens * a->n_kv_heads >= TD_MIN_BLOCKS;
}
static int heads_per_block(const cu_attn_args *a) {
    int G = a->n_heads / a->n_kv_heads;
    return decode_tc_ok(a) ? G : decode_ok(a) ? decode_hb(G) : AT_HB;
}

int cu_attn_splits(const cu_attn_args *a, int n_sm) {
    int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, heads_per_block(a));
    int64_t blocks = (int64_t)a->step.n_tokens * a->n_kv_heads * n_hc, target = 4 * (int64_t)n_sm;
    int ctx = a->step.ctx_bucket; /* not max_seq_len: a graph captured for this bucket stays valid */
    if (a->window > 0) ctx = HR_MIN(ctx, a->window);
    int min_keys = decode_tc_ok(a) ? 4 * TD_KW : AT_MIN_KEYS; /* a split below one tile idles warps */
    if (blocks >= target || ctx <= min_keys) return 1;
    int64_t s = HR_CDIV(target, blocks);
    s = HR_MIN(s, (int64_t)HR_CDIV(ctx, min_keys));
    return (int)HR_MAX((int64_t)1, HR_MIN(s, (int64_t)64));
}

/* Tile of the decode kernel: 32 keys, or HEARTH_CUDA_ATTN_TILE=64 (measured
 * slower on the H100: 11.77 vs 11.13 ms per 256-sequence step; three stages
 * of 32 keys need more than 48 KB of shared memory with head_dim 128). */
static int decode_tile(void) {
    static int t = -1;
    if (t < 0) t = hr_env_int("HEARTH_CUDA_ATTN_TILE", 32) == 64 ? 64 : 32;
    return t;
}

template <typename TQ, int D, int HB, int TILE, int STAGES>
static void launch_decode_k(cudaStream_t st, const cu_attn_args *a, dim3 grid, int splits, int n_hc, float *part) {
    constexpr size_t shm = dk_smem(D, HB, TILE, STAGES);
    /* a failure surfaces as the launch's error */
    if (shm > 48 * 1024) cu_smem_limit<attn_decode_kernel<TQ, D, HB, TILE, STAGES>>(shm);
    cu_launch(attn_decode_kernel<TQ, D, HB, TILE, STAGES>, grid, DK_WARPS * 32, shm, st, *a, splits, n_hc, part);
}

template <typename TQ, int D, int TILE, int STAGES>
static void launch_decode_hb(cudaStream_t st, const cu_attn_args *a, dim3 grid, int hb, int splits, int n_hc,
                             float *part) {
    switch (hb) {
    case 1: launch_decode_k<TQ, D, 1, TILE, STAGES>(st, a, grid, splits, n_hc, part); break;
    case 2: launch_decode_k<TQ, D, 2, TILE, STAGES>(st, a, grid, splits, n_hc, part); break;
    case 4: launch_decode_k<TQ, D, 4, TILE, STAGES>(st, a, grid, splits, n_hc, part); break;
    default: launch_decode_k<TQ, D, 8, TILE, STAGES>(st, a, grid, splits, n_hc, part); break;
    }
}

template <typename TQ, int D>
static cudaError_t launch_decode(cudaStream_t st, const cu_attn_args *a, int splits, float *part) {
    int G = a->n_heads / a->n_kv_heads, hb = decode_hb(G), n_hc = HR_CDIV(G, hb);
    dim3 grid((unsigned)(a->n_kv_heads * n_hc), (unsigned)a->step.n_tokens, (unsigned)splits);
    if (decode_tile() == 64) launch_decode_hb<TQ, D, 64, 2>(st, a, grid, hb, splits, n_hc, part);
    else launch_decode_hb<TQ, D, 32, 2>(st, a, grid, hb, splits, n_hc, part);
    return cudaGetLastError();
}

template <int HD, int W, int S>
static void launch_decode_tc_w(cudaStream_t st, const cu_attn_args *a, dim3 grid, int splits, float *part) {
    constexpr size_t shm = td_smem(HD, W, S);
    cu_smem_limit<attn_decode_tc_kernel<HD, W, S>>(shm); /* a failure surfaces as the launch's error */
    cu_launch(attn_decode_tc_kernel<HD, W, S>, grid, W * 32, shm, st, *a, splits, part);
}

template <int HD, int W>
static void launch_decode_tc_s(cudaStream_t st, const cu_attn_args *a, dim3 grid, int splits, float *part) {
    static int s = -1;
    if (s < 0) s = HR_MIN(HR_MAX(hr_env_int("HEARTH_CUDA_ATTN_TC_STAGES", 2), 2), 4);
    if (s == 4) launch_decode_tc_w<HD, W, 4>(st, a, grid, splits, part);
    else if (s == 3) launch_decode_tc_w<HD, W, 3>(st, a, grid, splits, part);
    else launch_decode_tc_w<HD, W, 2>(st, a, grid, splits, part);
}

template <int HD>
static void launch_decode_tc(cudaStream_t st, const cu_attn_args *a, dim3 grid, int splits, float *part) {
    static int w = -1;
    if (w < 0) w = hr_env_int("HEARTH_CUDA_ATTN_TC_WARPS", 2) == 4 ? 4 : 2;
    if (w == 2) launch_decode_tc_s<HD, 2>(st, a, grid, splits, part);
    else launch_decode_tc_s<HD, 4>(st, a, grid, splits, part);
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
    if (decode_tc_ok(a)) {
        dim3 grid((unsigned)a->n_kv_heads, (unsigned)T, (unsigned)splits);
        if (a->head_dim == 128) launch_decode_tc<128>(st, a, grid, splits, part);
        else launch_decode_tc<64>(st, a, grid, splits, part);
        e = cudaGetLastError();
        if (e != cudaSuccess || splits == 1) return e;
    } else if (decode_ok(a)) {
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
