/* Prefill attention on tensor cores (FlashAttention-2 style, Dao 2023):
 * a block owns one 16-token query tile of one sequence and up to
 * FA_WARPS query heads of one KV head (one head per warp, GQA: the K/V tile
 * in shared memory serves all of them). 64-key K/V tiles come through two
 * shared-memory stages by cp.async (tile i + 1 in flight while tile i is
 * computed; keys past the range or in block-table holes are zero-filled).
 * Per tile: S = Q K^T with mma.sync m16n8k16 (BF16 in, F32 accumulate; K
 * fragments by ldmatrix), mask by position (causal, sliding window, context
 * length; tiles below every row's position skip it), online softmax in
 * registers (log2 units, exp2), P re-used from the S accumulators
 * as the A operand of O += P V (V fragments by ldmatrix.trans). Sinks join
 * the softmax denominator at the end. BF16 q/cache, head_dim 32, 64 or 128. */
#include <math.h>

#include "backend/cuda/cu_types.cuh"

#define FA_BK 64
#define FA_WARPS 4

/* padded rows (16 bytes): ldmatrix's 8 row addresses fall in distinct banks */
#define FA_LD(HD) ((HD) + 8)
template <int HD> static constexpr size_t fa_smem() { return (size_t)2 * 2 * FA_BK * FA_LD(HD) * sizeof(bf16); }

template <int HD, int MINB>
__global__ void __launch_bounds__(FA_WARPS * 32, MINB) attn_prefill_tc_kernel(cu_attn_args a, int n_hc) {
    pdl_begin();
    constexpr int LD = FA_LD(HD);
    extern __shared__ __align__(16) uint8_t fa_smem_raw[];
    bf16 *sm = (bf16 *)fa_smem_raw; /* [2 stages][K, V][FA_BK][LD] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.y / n_hc, hc = blockIdx.y % n_hc;
    const int G = a.n_heads / a.n_kv_heads, hl = hc * FA_WARPS + warp, h = kvh * G + hl;
    const bool active = hl < G;
    /* the step's tiles in reverse: a sequence's last query tiles see the
     * most keys, and starting them first keeps them out of the final wave */
    const int tile = gridDim.x - 1 - blockIdx.x;
    const int s = a.step.tiles[2 * tile], t0 = a.step.tiles[2 * tile + 1];
    const int nrow = min(CU_QTILE, a.step.query_start[s + 1] - t0);
    const int seq_len = a.step.seq_lens[s], window = a.window;

    /* key range of the whole tile, and the positions of this thread's two rows */
    int lo = 0x7fffffff, hi = 0, pmin = 0x7fffffff, prow[2];
    for (int i = 0; i < nrow; i++) {
        int p = a.step.positions[t0 + i], e = min(p + 1, seq_len), b = window > 0 ? max(0, p - window + 1) : 0;
        pmin = min(pmin, p);
        if (e > b) {
            lo = min(lo, b);
            hi = max(hi, e);
        }
    }
    /* scores in log2 units: exp2 instead of exp */
    const float scale2 = a.scale * 1.4426950408889634f;
#pragma unroll
    for (int r = 0; r < 2; r++) prow[r] = g + 8 * r < nrow ? a.step.positions[t0 + g + 8 * r] : -1;

    const int bsz = a.step.block_size;
    const int32_t *bt = a.step.block_tables + (int64_t)s * a.step.mbps;
    const int64_t row_stride = (int64_t)a.n_kv_heads * HD;
    const bf16 *kc = (const bf16 *)a.kc + (int64_t)kvh * HD, *vc = (const bf16 *)a.vc + (int64_t)kvh * HD;
    /* tile at key k0 into stage st: 16-byte cp.async per row chunk, zeros past hi and in holes */
    auto issue = [&](int k0, int st) {
        bf16 *ks = sm + (size_t)st * 2 * FA_BK * LD, *vs = ks + FA_BK * LD;
        for (int i = threadIdx.x; i < FA_BK * (HD / 8); i += blockDim.x) {
            const int kr = i / (HD / 8), c = (i % (HD / 8)) * 8, j = k0 + kr;
            const int blk = j < hi ? bt[j / bsz] : -1;
            if (blk >= 0) {
                const int64_t off = ((int64_t)blk * bsz + j % bsz) * row_stride + c;
                cp_async16(ks + kr * LD + c, kc + off);
                cp_async16(vs + kr * LD + c, vc + off);
            } else { /* zeros: 0 * masked never makes NaN */
                *reinterpret_cast<uint4 *>(ks + kr * LD + c) = make_uint4(0, 0, 0, 0);
                *reinterpret_cast<uint4 *>(vs + kr * LD + c) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_async_commit();
    };
    if (lo < hi) issue(lo, 0);

    const bf16 *q = (const bf16 *)a.q;
    uint32_t qa[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            int row = g + ((r & 1) ? 8 : 0), col = kk * 16 + tq * 2 + ((r & 2) ? 8 : 0);
            qa[kk][r] = active && row < nrow
                            ? *reinterpret_cast<const uint32_t *>(q + (int64_t)(t0 + row) * a.ldq + (int64_t)h * HD + col)
                            : 0u;
        }

    float o[HD / 8][4], m[2] = {-1e30f, -1e30f}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;

    int st = 0;
    for (int k0 = lo; k0 < hi; k0 += FA_BK, st ^= 1) {
        /* the next tile goes to the other stage (consumed before the last
         * iteration's closing barrier) while this one lands */
        if (k0 + FA_BK < hi) {
            issue(k0 + FA_BK, st ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Ks = sm + (size_t)st * 2 * FA_BK * LD, *Vs = Ks + FA_BK * LD;
        if (!active) {
            __syncthreads();
            continue;
        }

        float sc[FA_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
            /* keys nt*8..+7; matrix m of the x4 holds dims 8 m .. 8 m + 7 of a 32-dim slice */
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk += 2) {
                uint32_t b[4];
                ldmatrix_x4(b, Ks + (nt * 8 + (lane & 7)) * LD + kk * 16 + (lane >> 3) * 8);
                mma_bf16(sc[nt], qa[kk], b[0], b[1]);
                mma_bf16(sc[nt], qa[kk + 1], b[2], b[3]);
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
        /* a tile whose keys every row of the query tile sees (no window,
         * below the smallest position: the causal limit and the context
         * length lie past it) needs no mask; rows past nrow have zero
         * queries there, finite scores, and are never stored */
        if (window <= 0 && k0 + FA_BK - 1 <= pmin) {
#pragma unroll
            for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float v = sc[nt][i] * scale2;
                    sc[nt][i] = v;
                    mx[i >> 1] = fmaxf(mx[i >> 1], v);
                }
        } else {
#pragma unroll
            for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    int r = i >> 1, j = k0 + nt * 8 + tq * 2 + (i & 1), p = prow[r];
                    bool ok = p >= 0 && j <= p && j < seq_len && (window <= 0 || j > p - window);
                    float v = ok ? sc[nt][i] * scale2 : -INFINITY;
                    sc[nt][i] = v;
                    mx[r] = fmaxf(mx[r], v);
                }
        }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float mn = fmaxf(m[r], mx[r]), corr = exp2f(m[r] - mn);
            m[r] = mn;
            l[r] *= corr;
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                o[dn][2 * r] *= corr;
                o[dn][2 * r + 1] *= corr;
            }
        }
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float pv = exp2f(sc[nt][i] - m[i >> 1]);
                sc[nt][i] = pv;
                l[i >> 1] += pv;
            }
#pragma unroll
        for (int j = 0; j < FA_BK / 16; j++) {
            uint32_t pa[4] = {pack_bf16(sc[2 * j][0], sc[2 * j][1]), pack_bf16(sc[2 * j][2], sc[2 * j][3]),
                              pack_bf16(sc[2 * j + 1][0], sc[2 * j + 1][1]),
                              pack_bf16(sc[2 * j + 1][2], sc[2 * j + 1][3])};
            /* keys j*16..+15 x dims dn*8..+15: matrices (keys +0/+8) x (dims +0/+8), transposed */
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn += 2) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, Vs + (j * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (dn + (lane >> 4)) * 8);
                mma_bf16(o[dn], pa, b[0], b[1]);
                mma_bf16(o[dn + 1], pa, b[2], b[3]);
            }
        }
        __syncthreads(); /* this stage is consumed: the next iteration's issue may overwrite it */
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        float c = 1.0f;
        if (a.sinks) {
            float sk = a.sinks[h] * 1.4426950408889634f, mn = fmaxf(m[r], sk); /* log2 units, as m */
            c = exp2f(m[r] - mn);
            l[r] = l[r] * c + exp2f(sk - mn);
        }
        float inv = l[r] > 0.0f ? c / l[r] : 0.0f;
        int row = g + 8 * r;
        if (row >= nrow) continue;
        bf16 *out = (bf16 *)a.out + (int64_t)(t0 + row) * a.ldo + (int64_t)h * HD;
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++)
            *reinterpret_cast<__nv_bfloat162 *>(out + dn * 8 + tq * 2) =
                __floats2bfloat162_rn(o[dn][2 * r] * inv, o[dn][2 * r + 1] * inv);
    }
}

template <int HD, int MINB> static cudaError_t fa_launch(cudaStream_t st, dim3 grid, const cu_attn_args *a, int n_hc) {
    /* head_dim 128: 68 KB, past the 48 KB default */
    cudaError_t e = cu_smem_limit<attn_prefill_tc_kernel<HD, MINB>>(fa_smem<HD>());
    if (e != cudaSuccess) return e;
    cu_launch(attn_prefill_tc_kernel<HD, MINB>, grid, FA_WARPS * 32, fa_smem<HD>(), st, *a, n_hc);
    return cudaGetLastError();
}

/* HEARTH_CUDA_FA_MINB=3: registers capped for 3 blocks per SM (spills a
 * little at head_dim 128) instead of 2 (comparisons) */
static int fa_minb(void) {
    static int v = -1;
    if (v < 0) v = hr_env_int("HEARTH_CUDA_FA_MINB", 2) == 3 ? 3 : 2;
    return v;
}

bool cu_attn_prefill_ok(const cu_attn_args *a) {
    return a->tq == HR_BF16 && a->tkv == HR_BF16 && (a->head_dim == 32 || a->head_dim == 64 || a->head_dim == 128) &&
           a->ldq % 8 == 0 && a->ldo % 2 == 0 && (uintptr_t)a->q % 16 == 0 && (uintptr_t)a->kc % 16 == 0 &&
           (uintptr_t)a->vc % 16 == 0 && a->step.n_tiles > 0;
}

cudaError_t cu_attention_prefill(cudaStream_t st, const cu_attn_args *a) {
    if (!cu_attn_prefill_ok(a)) return cudaErrorNotSupported;
    int G = a->n_heads / a->n_kv_heads, n_hc = HR_CDIV(G, FA_WARPS);
    if ((int64_t)a->n_kv_heads * n_hc > 65535) return cudaErrorNotSupported;
    dim3 grid((unsigned)a->step.n_tiles, (unsigned)(a->n_kv_heads * n_hc));
    const bool three = fa_minb() == 3;
    switch (a->head_dim) {
    case 32: return three ? fa_launch<32, 3>(st, grid, a, n_hc) : fa_launch<32, 2>(st, grid, a, n_hc);
    case 64: return three ? fa_launch<64, 3>(st, grid, a, n_hc) : fa_launch<64, 2>(st, grid, a, n_hc);
    default: return three ? fa_launch<128, 3>(st, grid, a, n_hc) : fa_launch<128, 2>(st, grid, a, n_hc);
    }
}
