/* Weight-streaming GEMV / skinny GEMM for decode (T <= 16 tokens) and the
 * (token, expert) products of MoE (pair mode: one pair per block column;
 * segment mode: the pairs sorted by expert, one chunk of up to 16 pairs of
 * one expert per block column): each warp owns GV_ROWS output rows and
 * streams their weights with 16-byte non-allocating loads (several rows in
 * flight per lane), the few activation rows stay in L1/L2. When the grid would
 * not fill the GPU, K is split across blockIdx.z and a second kernel reduces
 * the float partials and applies bias. Plus a scalar fallback for shapes the
 * vector path cannot take (K not a multiple of the vector, odd dtypes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"

#define GV_WARPS 8
/* rows per warp: fewer when many tokens share the weights, so the
 * accumulators (rows x tokens) stay in registers */
#define GV_ROWS(nt) ((nt) >= 8 ? 2 : 4)

/* VEC activations starting at p (aligned to VEC elements) -> floats */
template <typename TX, int VEC> __device__ __forceinline__ void load_x(const TX *p, float *f) {
    if constexpr (sizeof(TX) == 2 && VEC == 8) {
        unpack16<TX>(*reinterpret_cast<const uint4 *>(p), f);
    } else if constexpr (sizeof(TX) == 2 && VEC == 4) {
        uint2 u = *reinterpret_cast<const uint2 *>(p);
        uint4 w = make_uint4(u.x, u.y, 0, 0);
        float g[8];
        unpack16<TX>(w, g);
#pragma unroll
        for (int i = 0; i < 4; i++) f[i] = g[i];
    } else if constexpr (sizeof(TX) == 4 && VEC == 8) {
        unpack16<float>(reinterpret_cast<const uint4 *>(p)[0], f);
        unpack16<float>(reinterpret_cast<const uint4 *>(p)[1], f + 4);
    } else {
        static_assert(sizeof(TX) == 4 && VEC == 4, "unsupported activation vector");
        unpack16<float>(*reinterpret_cast<const uint4 *>(p), f);
    }
}

/* PF > 0: the first PF iterations' weight loads (PF x U x ROWS 16-byte
 * loads per lane) are issued before griddepcontrol.wait: weights are never
 * written by the previous kernel, so while it finishes (a norm, attention:
 * small grids that leave DRAM idle) the resident blocks already stream. Not
 * in pair mode, whose weights depend on the routing the previous kernel
 * wrote. */
template <typename TX, typename TW, int NT, int ROWS, int PF, bool SEG>
__global__ void __launch_bounds__(GV_WARPS * 32) gemv_kernel(cu_gemv_args a, int64_t klen, float *part) {
    static_assert(!SEG || PF == 0, "segment mode reads the routing: no early loads");
    if constexpr (PF == 0) pdl_wait();
    constexpr int VEC = 16 / sizeof(TW);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const gv_part pt = gv_part_at(a, blockIdx.x, GV_WARPS * ROWS);
    const void *wbase = pt.w;
    const float *bias = pt.bias;
    void *out = pt.out;
    /* segment mode: blockIdx.x is the chunk (the chunks of one expert run
     * side by side and share its weight rows in L2), blockIdx.y the rows */
    const int64_t bx = SEG ? (int64_t)blockIdx.y : pt.bx;
    const int64_t N = pt.N, ldo = pt.ldo, n0 = (bx * GV_WARPS + warp) * ROWS;
    if (n0 >= N) return; /* no block-level barrier below */
    const int64_t k0 = (int64_t)blockIdx.z * klen, k1 = min(a.K, k0 + klen);

    const TW *w = (const TW *)wbase;
    const TX *x = (const TX *)a.x;
    int64_t t0;
    int nt;
    int xrow[SEG ? NT : 1], orow[SEG ? NT : 1]; /* segment mode: x row and out row of each chunk row */
    if constexpr (SEG) {
        if ((int)blockIdx.x >= *a.n_chunks) return;
        const int4 ch = a.chunks[blockIdx.x];
        w += (int64_t)ch.x * a.w_stride;
        if (bias) bias += (int64_t)ch.x * N;
        t0 = 0;
        nt = ch.z;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            int p = a.perm[ch.y + (t < nt ? t : 0)];
            xrow[t] = p / a.xrow_div;
            orow[t] = p;
        }
    } else if (a.expert) {
        int64_t p = blockIdx.y;
        int64_t e = a.expert[p];
        w += e * a.w_stride;
        if (bias) bias += e * N;
        x += (p / a.xrow_div) * a.ldx;
        t0 = p;
        nt = 1;
    } else {
        t0 = (int64_t)blockIdx.y * NT;
        x += t0 * a.ldx;
        nt = (int)min((int64_t)NT, (int64_t)a.T - t0);
    }

    const TW *wr[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) wr[r] = w + min(n0 + r, N - 1) * a.K; /* clamp: tail rows recompute row N-1, never stored */

    float acc[ROWS][NT];
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0.0f;

    /* U warp-wide K steps per iteration: U x ROWS 16-byte loads in flight per
     * lane. U = 8 for one row per warp measured slower than 2 (H100: 4096 x
     * 4096 14.6 vs 13.3 us, 4096 x 14336 44.3 vs 41.2 us), so 2 everywhere. */
    constexpr int U = 2;
    constexpr int64_t STEP = U * 32 * VEC;
    auto fma_step = [&](const uint4 (&wv)[U][ROWS], int64_t k) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t ku = k + u * 32 * VEC;
            if (u > 0 && ku >= k1) break;
            float wf[ROWS][VEC];
#pragma unroll
            for (int r = 0; r < ROWS; r++) unpack16<TW>(wv[u][r], wf[r]);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                if (t < nt) {
                    float xv[VEC];
                    load_x<TX, VEC>(x + (SEG ? (int64_t)xrow[t] : (int64_t)t) * a.ldx + ku, xv);
#pragma unroll
                    for (int r = 0; r < ROWS; r++)
#pragma unroll
                        for (int v = 0; v < VEC; v++) acc[r][t] = fmaf(wf[r][v], xv[v], acc[r][t]);
                }
            }
        }
    };
    int64_t k = k0 + (int64_t)lane * VEC;
    if constexpr (PF > 0) {
        uint4 pre[PF][U][ROWS];
#pragma unroll
        for (int i = 0; i < PF; i++)
#pragma unroll
            for (int u = 0; u < U; u++)
                if (k + i * STEP + u * 32 * VEC < k1) {
#pragma unroll
                    for (int r = 0; r < ROWS; r++) pre[i][u][r] = ld_stream_early(wr[r] + k + i * STEP + u * 32 * VEC);
                }
        pdl_wait();
        pdl_trigger();
#pragma unroll
        for (int i = 0; i < PF; i++)
            if (k + i * STEP < k1) fma_step(pre[i], k + i * STEP);
        k += PF * STEP;
    } else {
        pdl_trigger();
    }
    for (; k < k1; k += STEP) {
        uint4 wv[U][ROWS];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (u == 0 || k + u * 32 * VEC < k1) {
#pragma unroll
                for (int r = 0; r < ROWS; r++) wv[u][r] = ld_stream(wr[r] + k + u * 32 * VEC);
            }
        fma_step(wv, k);
    }

#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = warp_sum(acc[r][t]);

    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
        int64_t n = n0 + r;
        if (n >= N) break;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t >= nt) break;
            float v = acc[r][t] * a.alpha;
            if (part) {
                part[((int64_t)blockIdx.z * a.T + t0 + t) * N + n] = v;
            } else {
                if (bias) v += bias[n];
                store_dyn(out, a.to, (SEG ? (int64_t)orow[t] : t0 + t) * ldo + n, v);
            }
        }
    }
}

/* Segment mode on tensor cores (BF16 x and weights, chunks of <= 16 pairs):
 * a warp computes one chunk's pairs x 8 * NJ weight rows with
 * mma.m16n8k16, the pairs as the A rows (unused rows repeat a real pair and
 * are never stored). No shared memory: inside every 32-wide slice of K both
 * operands use the same permuted K order, so that a lane's 16-byte loads
 * are its fragments as they arrive: lane (g, q) loads k = 8q .. 8q + 7 of x
 * rows g and g + 8 and of weight row g; the first mma takes k 8q .. 8q + 3
 * of them, the second 8q + 4 .. 8q + 7. U slices are loaded before the
 * first mma (U x NJ weight loads in flight per lane). */
#define SM_WARPS 8
template <int NJ, int U> __global__ void __launch_bounds__(SM_WARPS * 32) seg_mma_kernel(cu_gemv_args a) {
    pdl_wait();
    pdl_trigger();
    if ((int)blockIdx.x >= *a.n_chunks) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    /* nseg == 2 (gate and up of the same pairs): the row blocks of seg[0],
     * then those of seg[1] */
    const gv_part pt = gv_part_at(a, blockIdx.y, SM_WARPS * 8 * NJ);
    const void *wbase = pt.w;
    void *obase = pt.out;
    const float *bbase = pt.bias;
    const int64_t N = pt.N, ldo = pt.ldo, K = a.K, n0 = (pt.bx * SM_WARPS + warp) * 8 * NJ;
    if (n0 >= N) return;
    const int4 ch = a.chunks[blockIdx.x];
    const int nt = ch.z;
    const int p0 = a.perm[ch.y + min(g, nt - 1)], p1 = a.perm[ch.y + min(g + 8, nt - 1)];
    const bf16 *x0 = (const bf16 *)a.x + (int64_t)(p0 / a.xrow_div) * a.ldx,
               *x1 = (const bf16 *)a.x + (int64_t)(p1 / a.xrow_div) * a.ldx;
    const bf16 *w = (const bf16 *)wbase + (int64_t)ch.x * a.w_stride;
    const bf16 *wr[NJ];
#pragma unroll
    for (int j = 0; j < NJ; j++) wr[j] = w + min(n0 + 8 * j + g, N - 1) * K; /* tail rows: never stored */
    float acc[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    const uint4 z = make_uint4(0, 0, 0, 0);
    for (int64_t k0 = 0; k0 < K; k0 += 32 * U) {
        uint4 wv[U][NJ], xa[U], xb[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t k = k0 + 32 * u + 8 * q;
            const bool ok = k < K; /* K % 8 == 0: a vector is whole or absent */
#pragma unroll
            for (int j = 0; j < NJ; j++) wv[u][j] = ok ? ld_stream(wr[j] + k) : z;
            xa[u] = ok ? *reinterpret_cast<const uint4 *>(x0 + k) : z;
            xb[u] = ok ? *reinterpret_cast<const uint4 *>(x1 + k) : z;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const uint32_t a1[4] = {xa[u].x, xb[u].x, xa[u].y, xb[u].y}, a2[4] = {xa[u].z, xb[u].z, xa[u].w, xb[u].w};
#pragma unroll
            for (int j = 0; j < NJ; j++) {
                mma_bf16(acc[j], a1, wv[u][j].x, wv[u][j].y);
                mma_bf16(acc[j], a2, wv[u][j].z, wv[u][j].w);
            }
        }
    }
    const float *bias = bbase ? bbase + (int64_t)ch.x * N : nullptr;
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (g + 8 * h >= nt) continue;
            const int64_t row = h ? p1 : p0;
#pragma unroll
            for (int cc = 0; cc < 2; cc++) {
                const int64_t n = n0 + 8 * j + 2 * q + cc;
                if (n < N)
                    store_dyn(obase, a.to, row * ldo + n, acc[j][2 * h + cc] * a.alpha + (bias ? bias[n] : 0.0f));
            }
        }
}

/* weight rows per warp (8 * NJ) and K slices in flight (U):
 * HEARTH_CUDA_MOE_TC_CFG = "NJ,U" picks one of the instantiated pairs for
 * comparisons: 4,2 (default), 2,4, 8,1, 4,4, 8,2. H100, gpt-oss-20b decode
 * at batch 8 / 64 / 256: 2,4 576 / 2876 / 9292 tok/s; 4,2 682 / 3313 /
 * 10073 (fewer x loads per weight load); 8,1 523 / 2680 / 8447; 4,4 549 /
 * 2655 / 8839; 8,2 605 / 2876 / 8194 (fewer blocks, more registers); two
 * shapes since dropped, 1,8 511 / 2835 / 8877 and 2,8 556 / 2770 / 9032.
 * Read once per process. */
static const int seg_cfgs[][2] = {{4, 2}, {2, 4}, {8, 1}, {4, 4}, {8, 2}};
static int seg_mma_cfg(void) {
    static int v = -1;
    if (v >= 0) return v;
    v = 0;
    const char *e = getenv("HEARTH_CUDA_MOE_TC_CFG");
    for (int i = 0; e && i < (int)HR_ARRAY_LEN(seg_cfgs); i++) {
        char b[16];
        snprintf(b, sizeof b, "%d,%d", seg_cfgs[i][0], seg_cfgs[i][1]);
        if (!strcmp(e, b)) v = i;
    }
    return v;
}
static int seg_mma_rows(int cfg) { return 8 * seg_cfgs[cfg][0]; }

/* whether the segment-mode launch a takes the tensor-core kernel
 * (HEARTH_CUDA_MOE_TC=0: never, the CUDA-core segment kernel instead) */
static bool seg_mma_ok(const cu_gemv_args *a) {
    if (!a->chunks || a->tx != HR_BF16 || a->tw != HR_BF16 || a->seg_nt != 16 || a->K % 8 || a->ldx % 8 ||
        a->w_stride % 8 || (uintptr_t)a->x % 16 || a->nseg > 2 || !hr_env_on("HEARTH_CUDA_MOE_TC", true))
        return false;
    return cu_gemv_weights_aligned(a) && cu_gemv_row_blocks(a, (int64_t)SM_WARPS * 8) <= 65535;
}

__global__ void splitk_reduce_kernel(cu_gemv_args a, int splits, const float *part) {
    pdl_begin();
    int64_t t = blockIdx.y;
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < a.N; n += (int64_t)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; z++) v += part[((int64_t)z * a.T + t) * a.N + n];
        if (a.bias) v += a.bias[n];
        store_dyn(a.out, a.to, t * a.ldo + n, v);
    }
}

static int vec_of(hr_dtype tw) { return tw == HR_F32 ? 4 : 8; }

static int pick_nt(int T, hr_dtype tx);

bool cu_gemv_ok(const cu_gemv_args *a) {
    if (a->tw != HR_BF16 && a->tw != HR_F32 && a->tw != HR_F16) return false;
    if (a->tx != HR_BF16 && a->tx != HR_F32) return false;
    int vec = vec_of(a->tw);
    size_t xs = hr_dtype_size(a->tx), xalign = HR_MIN((size_t)16, vec * xs);
    if (a->K % vec || a->ldx % vec) return false;
    if ((uintptr_t)a->w % 16 || (uintptr_t)a->x % xalign) return false;
    if ((a->expert || a->chunks) && (a->w_stride % vec)) return false;
    if (a->chunks) {
        if (a->seg_nt == 64) return cu_moe_gemm_ok(a); /* moe_gemm.cu */
        bool nt_ok = a->seg_nt == 4 || a->seg_nt == 16 || (a->tx == HR_BF16 && (a->seg_nt == 2 || a->seg_nt == 8));
        if (a->expert || !nt_ok || !a->perm || !a->n_chunks || a->max_chunks <= 0) return false;
    }
    if (a->nseg > 1) {
        /* fused launches: plain one-token GEMVs (up to 3 linears), pair mode
         * (gate and up: 2), segment mode on tensor cores (2) */
        if (a->chunks) return a->nseg == 2 && seg_mma_ok(a);
        if (a->nseg > (a->expert ? 2 : 3) || (!a->expert && pick_nt(a->T, a->tx) != 1)) return false;
        if (!cu_gemv_weights_aligned(a)) return false;
    }
    return true;
}

static int pick_nt(int T, hr_dtype tx) {
    if (T <= 1) return 1;
    if (tx == HR_F32) return T <= 4 ? 4 : 16;
    return T <= 2 ? 2 : T <= 4 ? 4 : T <= 8 ? 8 : 16;
}

static int rows_of(const cu_gemv_args *a) {
    int nt = a->chunks ? a->seg_nt : a->expert ? 1 : pick_nt(a->T, a->tx);
    return nt == 1 && a->rows == 1 ? 1 : GV_ROWS(nt);
}

int64_t cu_gemv_row_blocks(const cu_gemv_args *a, int64_t rows_per_block) {
    if (a->nseg <= 1) return HR_CDIV(a->N, rows_per_block);
    int64_t b = 0;
    for (int i = 0; i < a->nseg; i++) b += HR_CDIV(a->seg[i].N, rows_per_block);
    return b;
}

bool cu_gemv_weights_aligned(const cu_gemv_args *a) {
    if (a->nseg <= 1) return (uintptr_t)a->w % 16 == 0;
    for (int i = 0; i < a->nseg; i++)
        if ((uintptr_t)a->seg[i].w % 16) return false;
    return true;
}

static int64_t grid_rows(const cu_gemv_args *a) { return cu_gemv_row_blocks(a, (int64_t)GV_WARPS * rows_of(a)); }
static int64_t grid_t(const cu_gemv_args *a) { return a->expert ? a->T : HR_CDIV(a->T, pick_nt(a->T, a->tx)); }

/* Blocks per SM the split-K aims for; HEARTH_CUDA_GEMV_BPSM overrides (0 = never split). */
static int blocks_per_sm(void) {
    static int v = -1;
    if (v < 0) v = HR_MAX(hr_env_int("HEARTH_CUDA_GEMV_BPSM", 2), 0);
    return v;
}

int cu_gemv_splits(cu_gemv_args *a, int n_sm) {
    a->rows = 0;
    if (a->expert || a->chunks) return 1;
    if (a->nseg > 1) { /* fused: never split; one row per warp when that fills the GPU better */
        if (grid_rows(a) < (int64_t)blocks_per_sm() * n_sm) a->rows = 1;
        return 1;
    }
    int64_t blocks = grid_rows(a) * grid_t(a), target = (int64_t)blocks_per_sm() * n_sm;
    if (blocks >= target) return 1;
    if (grid_t(a) == 1 && pick_nt(a->T, a->tx) == 1) {
        /* one token: one row per warp gives 4x the blocks, often enough to
         * skip split-K and its reduce kernel (one launch less per linear) */
        a->rows = 1;
        blocks = grid_rows(a);
        if (blocks >= target) return 1;
    }
    int64_t iters = a->K / (32 * vec_of(a->tw)); /* warp-wide vector steps over K */
    int64_t s = HR_CDIV(target, blocks);
    s = HR_MIN(s, HR_MAX((int64_t)1, iters / 2));
    return (int)HR_MIN(s, (int64_t)64);
}

/* Iterations loaded before the PDL wait (gemv_kernel's PF) for one row per
 * warp and for 4 rows per warp: HEARTH_CUDA_GEMV_PREFETCH=N or N,M (0 =
 * none); default 2 for both (H100, 8B batch 1: 0 -> 177, 1 -> 179.3,
 * 2 -> 179.6, 4/2 -> 175.0 tok/s). */
static int prefetch_depth(int rows) {
    static int v[2] = {-1, -1};
    if (v[0] < 0) {
        const char *e = getenv("HEARTH_CUDA_GEMV_PREFETCH");
        v[0] = v[1] = 2;
        if (e) {
            v[0] = v[1] = HR_MAX(atoi(e), 0);
            const char *c = strchr(e, ',');
            if (c) v[1] = HR_MAX(atoi(c + 1), 0);
        }
    }
    return v[rows == 1 ? 0 : 1];
}

#define GV_LAUNCH(NT_, ROWS_, PF_) \
    cu_launch(gemv_kernel<TX, TW, NT_, ROWS_, PF_, false>, grid, GV_WARPS * 32, 0, st, *a, klen, part)
#define GV_LAUNCH_SEG(NT_) \
    cu_launch(gemv_kernel<TX, TW, NT_, GV_ROWS(NT_), 0, true>, grid, GV_WARPS * 32, 0, st, *a, klen, nullptr)

template <typename TX, typename TW>
static cudaError_t launch_tw(cudaStream_t st, const cu_gemv_args *a, dim3 grid, int64_t klen, float *part) {
    if (a->chunks) {
        if (a->seg_nt == 16) GV_LAUNCH_SEG(16);
        else if (a->seg_nt == 4) GV_LAUNCH_SEG(4);
        else if constexpr (sizeof(TX) == 2) {
            if (a->seg_nt == 8) GV_LAUNCH_SEG(8);
            else GV_LAUNCH_SEG(2);
        } else {
            return cudaErrorNotSupported;
        }
        return cudaGetLastError();
    }
    int nt = a->expert ? 1 : pick_nt(a->T, a->tx);
    /* pair mode reads expert ids the previous kernel wrote: no early loads */
    const int pf = a->expert ? 0 : prefetch_depth(nt == 1 ? rows_of(a) : GV_ROWS(nt));
    switch (nt) {
    case 1:
        if (rows_of(a) == 1) { /* 2 x 16-byte loads per lane and iteration: up to 4 iterations early */
            if (pf >= 4) GV_LAUNCH(1, 1, 4);
            else if (pf == 3) GV_LAUNCH(1, 1, 3);
            else if (pf == 2) GV_LAUNCH(1, 1, 2);
            else if (pf == 1) GV_LAUNCH(1, 1, 1);
            else GV_LAUNCH(1, 1, 0);
        } else { /* 8 loads per lane and iteration: up to 2 */
            if (pf >= 2) GV_LAUNCH(1, GV_ROWS(1), 2);
            else if (pf == 1) GV_LAUNCH(1, GV_ROWS(1), 1);
            else GV_LAUNCH(1, GV_ROWS(1), 0);
        }
        break;
    case 4:
        if (pf) GV_LAUNCH(4, GV_ROWS(4), 1);
        else GV_LAUNCH(4, GV_ROWS(4), 0);
        break;
    case 16:
        if (pf) GV_LAUNCH(16, GV_ROWS(16), 1);
        else GV_LAUNCH(16, GV_ROWS(16), 0);
        break;
    default:
        if constexpr (sizeof(TX) == 2) {
            if (nt == 2) {
                if (pf) GV_LAUNCH(2, GV_ROWS(2), 1);
                else GV_LAUNCH(2, GV_ROWS(2), 0);
            } else {
                if (pf) GV_LAUNCH(8, GV_ROWS(8), 1);
                else GV_LAUNCH(8, GV_ROWS(8), 0);
            }
        } else {
            return cudaErrorNotSupported;
        }
    }
    return cudaGetLastError();
}
#undef GV_LAUNCH
#undef GV_LAUNCH_SEG

cudaError_t cu_gemv(cudaStream_t st, const cu_gemv_args *a, int splits, float *part) {
    if (a->T <= 0 || a->N <= 0) return cudaSuccess;
    if (!cu_gemv_ok(a)) return cudaErrorNotSupported;
    if (a->chunks && a->seg_nt == 64) return cu_moe_gemm(st, a);
    if (seg_mma_ok(a)) {
        const int cfg = seg_mma_cfg();
        dim3 grid((unsigned)a->max_chunks, (unsigned)cu_gemv_row_blocks(a, (int64_t)SM_WARPS * seg_mma_rows(cfg)));
        switch (cfg) {
        case 1: cu_launch(seg_mma_kernel<2, 4>, grid, SM_WARPS * 32, 0, st, *a); break;
        case 2: cu_launch(seg_mma_kernel<8, 1>, grid, SM_WARPS * 32, 0, st, *a); break;
        case 3: cu_launch(seg_mma_kernel<4, 4>, grid, SM_WARPS * 32, 0, st, *a); break;
        case 4: cu_launch(seg_mma_kernel<8, 2>, grid, SM_WARPS * 32, 0, st, *a); break;
        default: cu_launch(seg_mma_kernel<4, 2>, grid, SM_WARPS * 32, 0, st, *a);
        }
        return cudaGetLastError();
    }
    if (a->expert || a->chunks || a->nseg > 1) splits = 1;
    int64_t step = 32 * (int64_t)vec_of(a->tw);
    int64_t klen = HR_CDIV(HR_CDIV(a->K, (int64_t)HR_MAX(splits, 1)), step) * step;
    if (klen <= 0) klen = step;
    int64_t s = HR_MAX((int64_t)1, HR_CDIV(a->K, klen));
    if (a->chunks ? grid_rows(a) > 65535 : grid_t(a) > 65535) return cudaErrorInvalidValue;
    dim3 grid = a->chunks ? dim3((unsigned)a->max_chunks, (unsigned)grid_rows(a), 1)
                          : dim3((unsigned)grid_rows(a), (unsigned)grid_t(a), (unsigned)s);
    float *p = s > 1 ? part : nullptr;
    if (s > 1 && !part) return cudaErrorInvalidValue;
    cudaError_t e;
    if (a->tx == HR_BF16) {
        CU_DISPATCH_W(a->tw, TW, e = launch_tw<bf16, TW>(st, a, grid, klen, p));
    } else {
        CU_DISPATCH_W(a->tw, TW, e = launch_tw<float, TW>(st, a, grid, klen, p));
    }
    if (e != cudaSuccess || s == 1) return e;
    dim3 rg(HR_MIN(cu_blocks(a->N, 256), 128u), (unsigned)a->T);
    cu_launch(splitk_reduce_kernel, rg, 256, 0, st, *a, (int)s, part);
    return cudaGetLastError();
}

/* ---- fallback: one warp per output, scalar loads, any K ----------------- */
template <typename TX, typename TW> __global__ void gemm_scalar_kernel(cu_gemv_args a) {
    pdl_begin();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t n = (int64_t)blockIdx.x * 8 + warp, t = blockIdx.y;
    if (n >= a.N) return;
    const TW *w = (const TW *)a.w;
    const TX *x = (const TX *)a.x;
    const float *bias = a.bias;
    if (a.expert) {
        int64_t e = a.expert[t];
        w += e * a.w_stride;
        if (bias) bias += e * a.N;
        x += (t / a.xrow_div) * a.ldx;
    } else {
        x += t * a.ldx;
    }
    w += n * a.K;
    float acc = 0.0f;
    for (int64_t k = lane; k < a.K; k += 32) acc = fmaf(to_f(w[k]), to_f(x[k]), acc);
    acc = warp_sum(acc);
    if (lane == 0) store_dyn(a.out, a.to, t * a.ldo + n, acc * a.alpha + (bias ? bias[n] : 0.0f));
}

cudaError_t cu_gemm_tiled(cudaStream_t st, const cu_gemv_args *a) {
    if (a->T <= 0 || a->N <= 0) return cudaSuccess;
    if (a->T > 65535) return cudaErrorInvalidValue;
    dim3 grid((unsigned)HR_CDIV(a->N, 8), (unsigned)a->T);
    if (a->tx == HR_BF16) {
        CU_DISPATCH_W(a->tw, TW, cu_launch(gemm_scalar_kernel<bf16, TW>, grid, 256, 0, st, *a));
    } else if (a->tx == HR_F32) {
        CU_DISPATCH_W(a->tw, TW, cu_launch(gemm_scalar_kernel<float, TW>, grid, 256, 0, st, *a));
    } else {
        return cudaErrorNotSupported;
    }
    return cudaGetLastError();
}
