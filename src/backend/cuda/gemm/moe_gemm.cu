/* Grouped MoE GEMM on tensor cores for the GEMV's segment mode with chunks
 * of up to 64 pairs (cu_moe_segments with nt = 64): one block computes a
 * 64-pair x 128-weight-row tile of one chunk, so an expert's weight tile is
 * read once per 64 of its pairs, from DRAM or (the chunks of one expert run
 * side by side) from L2. Same contract as the segment mode of gemv.cu
 * (cu_gemv_args: perm / chunks / n_chunks, pair p reads x row p / xrow_div
 * and writes out row p, bias per expert, nseg 2 = gate and up of the same
 * pairs), so it serves captured decode steps and prefill alike: nothing
 * about the routing crosses to the host.
 *
 * Tiles: 4 warps as 2 x 2, each 32 pairs x 64 rows (2 x 8 mma.m16n8k16
 * tiles); K in 32-wide slices through a 3-stage cp.async ring in shared
 * memory (rows padded to 80 bytes: the 8 row addresses of an ldmatrix fall
 * in distinct banks). The x rows of a tile are gathered by perm as they are
 * copied; rows past the chunk repeat its last pair and are never stored. */
#include "backend/cuda/cu_types.cuh"

#define MG_BM 64
#define MG_BN 128
#define MG_BK 32
#define MG_PITCH 40 /* bf16 per shared row: 32 + 8 padding */
#define MG_STAGES 3
#define MG_THREADS 128

__global__ void __launch_bounds__(MG_THREADS) moe_gemm_kernel(cu_gemv_args a) {
    pdl_wait();
    pdl_trigger();
    if ((int)blockIdx.x >= *a.n_chunks) return;
    __shared__ __align__(16) bf16 sa[MG_STAGES][MG_BM][MG_PITCH];
    __shared__ __align__(16) bf16 sb[MG_STAGES][MG_BN][MG_PITCH];
    __shared__ int prow[MG_BM];

    /* which linear (nseg 2: seg[0]'s row tiles, then seg[1]'s) */
    const gv_part pt = gv_part_at(a, blockIdx.y, MG_BN);
    const void *wbase = pt.w;
    void *obase = pt.out;
    const float *bbase = pt.bias;
    const int64_t N = pt.N, ldo = pt.ldo, K = a.K, n0 = pt.bx * MG_BN;
    if (n0 >= N) return;
    const int4 ch = a.chunks[blockIdx.x];
    const int nt = ch.z, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    for (int r = tid; r < MG_BM; r += MG_THREADS) prow[r] = a.perm[ch.y + min(r, nt - 1)];
    __syncthreads();
    const bf16 *x = (const bf16 *)a.x;
    const bf16 *w = (const bf16 *)wbase + (int64_t)ch.x * a.w_stride;

    /* this thread's copies per stage: A 64 rows x 4 16-byte pieces (2 per
     * thread), B 128 rows x 4 (4 per thread) */
    const bf16 *asrc[2];
    const bf16 *bsrc[4];
    int arow[2], apc[2], brow[4], bpc[4];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int c = tid + i * MG_THREADS;
        arow[i] = c >> 2;
        apc[i] = (c & 3) * 8;
        asrc[i] = x + (int64_t)(prow[arow[i]] / a.xrow_div) * a.ldx + apc[i];
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int c = tid + i * MG_THREADS;
        brow[i] = c >> 2;
        bpc[i] = (c & 3) * 8;
        bsrc[i] = w + min(n0 + brow[i], N - 1) * K + bpc[i];
    }
    const int KT = (int)(K / MG_BK);
    auto load = [&](int stage, int kt) {
        const int64_t k = (int64_t)kt * MG_BK;
#pragma unroll
        for (int i = 0; i < 2; i++) cp_async16(&sa[stage][arow[i]][apc[i]], asrc[i] + k);
#pragma unroll
        for (int i = 0; i < 4; i++) cp_async16(&sb[stage][brow[i]][bpc[i]], bsrc[i] + k);
    };

    const int wm = warp >> 1, wn = warp & 1;
    float acc[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;

#pragma unroll
    for (int s = 0; s < MG_STAGES - 1; s++) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<MG_STAGES - 2>();
        __syncthreads(); /* stage kt % S is in; stage (kt - 1) % S is free */
        const int nk = kt + MG_STAGES - 1;
        if (nk < KT) load(nk % MG_STAGES, nk);
        cp_async_commit();
        const int st = kt % MG_STAGES;
#pragma unroll
        for (int kk = 0; kk < MG_BK; kk += 16) {
            uint32_t af[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
                ldmatrix_x4(af[i], &sa[st][wm * 32 + i * 16 + (lane & 15)][kk + (lane >> 4) * 8]);
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                uint32_t bf[4]; /* n tiles j, j + 1: b0 b1 of j, b0 b1 of j + 1 */
                ldmatrix_x4(bf, &sb[st][wn * 64 + j * 8 + (lane >> 4) * 8 + (lane & 7)][kk + ((lane >> 3) & 1) * 8]);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    mma_bf16(acc[i][j], af[i], bf[0], bf[1]);
                    mma_bf16(acc[i][j + 1], af[i], bf[2], bf[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    const int g = lane >> 2, q = lane & 3;
    const float *bias = bbase ? bbase + (int64_t)ch.x * N : nullptr;
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = wm * 32 + i * 16 + g + 8 * h;
            if (r >= nt) continue;
            const int64_t row = prow[r];
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int cc = 0; cc < 2; cc++) {
                    const int64_t n = n0 + wn * 64 + j * 8 + 2 * q + cc;
                    if (n < N)
                        store_dyn(obase, a.to, row * ldo + n,
                                  acc[i][j][2 * h + cc] * a.alpha + (bias ? bias[n] : 0.0f));
                }
        }
}

bool cu_moe_gemm_ok(const cu_gemv_args *a) {
    if (!a->chunks || a->seg_nt != MG_BM || a->tx != HR_BF16 || a->tw != HR_BF16 || a->K % MG_BK || a->ldx % 8 ||
        a->w_stride % 8 || (uintptr_t)a->x % 16 || a->nseg > 2 || !a->perm || !a->n_chunks || a->max_chunks <= 0 ||
        !hr_env_on("HEARTH_CUDA_MOE_TC", true))
        return false;
    return cu_gemv_weights_aligned(a) && cu_gemv_row_blocks(a, MG_BN) <= 65535;
}

cudaError_t cu_moe_gemm(cudaStream_t st, const cu_gemv_args *a) {
    if (!cu_moe_gemm_ok(a)) return cudaErrorNotSupported;
    dim3 grid((unsigned)a->max_chunks, (unsigned)cu_gemv_row_blocks(a, MG_BN));
    cu_launch(moe_gemm_kernel, grid, MG_THREADS, 0, st, *a);
    return cudaGetLastError();
}
