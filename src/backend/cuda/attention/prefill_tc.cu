/* Prefill attention on tensor cores (FlashAttention-2 style, Dao 2023):
 * a block owns one 16-token query tile of one sequence and up to
 * FA_WARPS query heads of one KV head (one head per warp, GQA: the K/V tile
 * in shared memory serves all of them). Per 64-key tile: S = Q K^T with
 * mma.sync m16n8k16 (BF16 in, F32 accumulate), mask by position (causal,
 * sliding window, context length), online softmax in registers, P re-used
 * from the S accumulators as the A operand of O += P V. Sinks join the
 * softmax denominator at the end. BF16 q/cache, head_dim 32, 64 or 128. */
#include <math.h>

#include "backend/cuda/cu_types.cuh"

#define FA_BK 64
#define FA_WARPS 4

template <int HD>
__global__ void __launch_bounds__(FA_WARPS * 32) attn_prefill_tc_kernel(cu_attn_args a, int n_hc) {
    pdl_begin();
    __shared__ __align__(16) bf16 Ks[FA_BK][HD + 8];
    __shared__ __align__(16) bf16 Vs[FA_BK][HD + 8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int kvh = blockIdx.y / n_hc, hc = blockIdx.y % n_hc;
    const int G = a.n_heads / a.n_kv_heads, hl = hc * FA_WARPS + warp, h = kvh * G + hl;
    const bool active = hl < G;
    const int s = a.step.tiles[2 * blockIdx.x], t0 = a.step.tiles[2 * blockIdx.x + 1];
    const int nrow = min(CU_QTILE, a.step.query_start[s + 1] - t0);
    const int seq_len = a.step.seq_lens[s], window = a.window;

    /* key range of the whole tile, and the positions of this thread's two rows */
    int lo = 0x7fffffff, hi = 0, prow[2];
    for (int i = 0; i < nrow; i++) {
        int p = a.step.positions[t0 + i], e = min(p + 1, seq_len), b = window > 0 ? max(0, p - window + 1) : 0;
        if (e > b) {
            lo = min(lo, b);
            hi = max(hi, e);
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) prow[r] = g + 8 * r < nrow ? a.step.positions[t0 + g + 8 * r] : -1;

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

    const int bsz = a.step.block_size;
    const int32_t *bt = a.step.block_tables + (int64_t)s * a.step.mbps;
    const int64_t row_stride = (int64_t)a.n_kv_heads * HD;
    const bf16 *kc = (const bf16 *)a.kc, *vc = (const bf16 *)a.vc;

    for (int k0 = lo; k0 < hi; k0 += FA_BK) {
        __syncthreads(); /* the previous tile is consumed */
        for (int i = threadIdx.x; i < FA_BK * (HD / 8); i += blockDim.x) {
            int kr = i / (HD / 8), c = (i % (HD / 8)) * 8, j = k0 + kr;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0); /* zeros: 0 * masked never makes NaN */
            if (j < hi) {
                int blk = bt[j / bsz];
                if (blk >= 0) {
                    int64_t off = ((int64_t)blk * bsz + j % bsz) * row_stride + (int64_t)kvh * HD + c;
                    kv = *reinterpret_cast<const uint4 *>(kc + off);
                    vv = *reinterpret_cast<const uint4 *>(vc + off);
                }
            }
            *reinterpret_cast<uint4 *>(&Ks[kr][c]) = kv;
            *reinterpret_cast<uint4 *>(&Vs[kr][c]) = vv;
        }
        __syncthreads();
        if (!active) continue;

        float sc[FA_BK / 8][4];
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(&Ks[nt * 8 + g][kk * 16 + tq * 2]);
                uint32_t b1 = *reinterpret_cast<const uint32_t *>(&Ks[nt * 8 + g][kk * 16 + 8 + tq * 2]);
                mma_bf16(sc[nt], qa[kk], b0, b1);
            }
        }
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < FA_BK / 8; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int r = i >> 1, j = k0 + nt * 8 + tq * 2 + (i & 1), p = prow[r];
                bool ok = p >= 0 && j <= p && j < seq_len && (window <= 0 || j > p - window);
                float v = ok ? sc[nt][i] * a.scale : -INFINITY;
                sc[nt][i] = v;
                mx[r] = fmaxf(mx[r], v);
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float mn = fmaxf(m[r], mx[r]), corr = expf(m[r] - mn);
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
                float pv = expf(sc[nt][i] - m[i >> 1]);
                sc[nt][i] = pv;
                l[i >> 1] += pv;
            }
#pragma unroll
        for (int j = 0; j < FA_BK / 16; j++) {
            uint32_t pa[4] = {pack_bf16(sc[2 * j][0], sc[2 * j][1]), pack_bf16(sc[2 * j][2], sc[2 * j][3]),
                              pack_bf16(sc[2 * j + 1][0], sc[2 * j + 1][1]),
                              pack_bf16(sc[2 * j + 1][2], sc[2 * j + 1][3])};
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                int d = dn * 8 + g, kb = j * 16 + tq * 2;
                uint32_t b0 = pack_raw(Vs[kb][d], Vs[kb + 1][d]);
                uint32_t b1 = pack_raw(Vs[kb + 8][d], Vs[kb + 9][d]);
                mma_bf16(o[dn], pa, b0, b1);
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        float c = 1.0f;
        if (a.sinks) {
            float sk = a.sinks[h], mn = fmaxf(m[r], sk);
            c = expf(m[r] - mn);
            l[r] = l[r] * c + expf(sk - mn);
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
    switch (a->head_dim) {
    case 32: cu_launch(attn_prefill_tc_kernel<32>, grid, FA_WARPS * 32, 0, st, *a, n_hc); break;
    case 64: cu_launch(attn_prefill_tc_kernel<64>, grid, FA_WARPS * 32, 0, st, *a, n_hc); break;
    default: cu_launch(attn_prefill_tc_kernel<128>, grid, FA_WARPS * 32, 0, st, *a, n_hc); break;
    }
    return cudaGetLastError();
}
