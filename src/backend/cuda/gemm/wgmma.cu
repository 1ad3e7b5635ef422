/* Hopper GEMM for linears with many rows (EXPERIMENTAL, off unless
 * HEARTH_CUDA_WGMMA=1): Y[T, N] = X[T, K] W[N, K]^T with BF16 operands and
 * F32 accumulators on wgmma (sm_90a only; other targets compile it empty and
 * the host never picks it there). Correct on an H100 (the op checks under
 * HEARTH_CUDA_WGMMA=2 for every tile width, split and cluster size), but
 * slower than cuBLASLt on every shape measured (docs/PERF.md, session 11:
 * 85-90 % of its speed at T = 256, ~80 % at T = 8192), so it stays off.
 *
 * Persistent: one CTA per SM at most, each taking every gridDim-th work
 * unit (a 128-row x BN-column tile, BN 64/128/256, over a range of the K
 * slices). Warpgroup 0 is the producer: one thread issues TMA loads of
 * 64-wide K slices of X and W, 128-byte swizzled, into a ring of STAGES
 * stages that runs on across units, signalled through "full" mbarriers.
 * Warpgroups 1 and 2 each own 64 of the rows and issue one wgmma.m64nBNk16
 * per 16 K, both operands read from shared memory through matrix
 * descriptors (K-major, 128B swizzle: 1024-byte 8-row groups; a 16-element
 * K step is a 32-byte advance of the start address), keep one wgmma group
 * in flight and release the previous stage through "empty" mbarriers (one
 * arrive per consumer warp); a unit's last stage goes back before its
 * epilogue, so the next unit's loads overlap it. Rows past T and columns
 * past N come in as zeros (TMA out-of-bounds fill) and are never stored.
 *
 * Split-K (S > 1): the S units of one tile are neighbours in the order;
 * each writes its F32 partial tile (in fragment order, coalesced) to the
 * workspace, and the last of them to arrive on the tile's counter adds the
 * others' partials (from L2), writes the output and resets the counter, so
 * graph replays start from zero.
 *
 * Clusters of 2 (HEARTH_CUDA_WGMMA_CFG=BN,S,2 only): the two CTAs take the
 * two row tiles of one column tile and each loads half of the weight tile,
 * multicast into both; a stage is free once both CTAs' consumers released
 * it (remote mbarrier arrives).
 *
 * Weights do not depend on the previous kernel: the producer issues the
 * first stages' weight loads before griddepcontrol.wait, and the X loads
 * after it. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"

#define WG_BM 128
#define WG_BK 64
#define WG_THREADS 384
#define WG_SMEM_BUDGET (192 * 1024)

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ENABLED 1
#else
#define WG_ENABLED 0
#endif

typedef struct wg_split {
    int S;        /* K splits per tile (1: none) */
    int mg, nt;   /* row groups (CL row tiles each), column tiles */
    float *ws;    /* S > 1: tiles x S partial tiles, 128 x BN floats each */
    int *sem;     /* S > 1: one arrival counter per tile, zero between launches */
} wg_split;

#if WG_ENABLED
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint64_t *b, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(b)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *b, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(b)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *b, int parity) {
    asm volatile("{\n.reg .pred P1;\nWAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@P1 bra.uni DONE_%=;\nbra.uni WAIT_%=;\nDONE_%=:\n}\n" ::"r"(smem_u32(b)),
                 "r"(parity)
                 : "memory");
}
/* TMA: box (64 K elements, rows) at (k, row) of the tensor map into smem */
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int k, int row, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(smem_u32(dst)), "l"((uint64_t)map), "r"(k), "r"(row), "r"(smem_u32(bar))
                 : "memory");
}
/* K-major operand in shared memory, 128-byte swizzle: leading byte offset
 * unused (16), stride 1024 bytes between 8-row groups */
__device__ __forceinline__ uint64_t smem_desc(const void *p) {
    uint64_t a = smem_u32(p);
    return ((a & 0x3FFFF) >> 4) | ((uint64_t)(16 >> 4) << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
/* the 256 consumer threads only (named barrier 1) */
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, 256;" ::: "memory"); }

/* D[64 x N] += A[64 x 16] B[16 x N] (scale_d 0: D = A B). Fragment: warp w
 * of the warpgroup holds rows 16 w + g and 16 w + g + 8, columns 8 i + 2 q
 * (+1) in d[4 i .. 4 i + 3], as mma.m16n8 per 8 columns (g = lane / 4,
 * q = lane % 4). Generated: one output operand per accumulator. */
__device__ __forceinline__ void wgmma_m64n64k16(float *d, uint64_t da, uint64_t db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "%32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wgmma_m64n128k16(float *d, uint64_t da, uint64_t db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wgmma_m64n256k16(float *d, uint64_t da, uint64_t db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
                 "%128, %129, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "l"(da), "l"(db), "r"(scale_d));
}
template <int BN> __device__ __forceinline__ void wgmma_tile(float *d, uint64_t da, uint64_t db) {
    if constexpr (BN == 64) wgmma_m64n64k16(d, da, db, 1);
    else if constexpr (BN == 128) wgmma_m64n128k16(d, da, db, 1);
    else wgmma_m64n256k16(d, da, db, 1);
}
#endif

/* Work unit u (0 .. units-1) -> split z, row group g, column tile n. A row
 * group is CL row tiles, one per CTA of a cluster (CL 2: the pair shares
 * the weight tile through TMA multicast, each CTA loading half of it).
 * Splits are fastest (the S partials of a tile are made together and meet
 * in L2); row groups come in bands of WG_BAND: within a band, the groups of
 * one column tile follow each other (the weight tile is read from memory
 * once, from L2 by the others) and a band's rows of X stay in L2 while its
 * column tiles go by. */
#define WG_BAND 8
__device__ __forceinline__ void wg_unit(int u, const wg_split &sp, int *z, int *g, int *n) {
    *z = u % sp.S;
    const int t = u / sp.S, per_band = WG_BAND * sp.nt, band = t / per_band, r = t % per_band;
    const int rows = min(WG_BAND, sp.mg - band * WG_BAND);
    *n = r / rows;
    *g = band * WG_BAND + r % rows;
}

#if WG_ENABLED
__device__ __forceinline__ uint32_t cluster_rank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;" ::: "memory");
}
/* arrive on the mbarrier at the same shared-memory offset in CTA rank */
__device__ __forceinline__ void mbar_arrive_remote(uint64_t *b, uint32_t rank) {
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_u32(b)), "r"(rank));
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
}
/* TMA into the same offset of every CTA in mask, each CTA's mbarrier at bar's offset */
__device__ __forceinline__ void tma_load_2d_mc(void *dst, const CUtensorMap *map, int k, int row, uint64_t *bar,
                                               uint16_t mask) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster"
                 " [%0], [%1, {%2, %3}], [%4], %5;"
                 ::"r"(smem_u32(dst)), "l"((uint64_t)map), "r"(k), "r"(row), "r"(smem_u32(bar)), "h"(mask)
                 : "memory");
}
#endif

/* LAG 1: one wgmma group kept in flight, a stage released one slice late;
 * LAG 0: each slice's products waited for and its stage released at once
 * (one more stage of loads in flight; for DRAM-bound shapes, untested) */
template <int BN, int STAGES, int CL, int LAG>
__global__ void __launch_bounds__(WG_THREADS, 1)
    wgmma_gemm_kernel(const __grid_constant__ CUtensorMap map_x, const __grid_constant__ CUtensorMap map_w,
                      cu_gemv_args a, wg_split sp) {
#if WG_ENABLED
    constexpr uint32_t X_BYTES = WG_BM * WG_BK * 2, W_BYTES = BN * WG_BK * 2, W_PART = W_BYTES / CL;
    constexpr int NACC = BN / 2;
    extern __shared__ uint8_t wg_smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)wg_smem_raw + 1023) & ~(uintptr_t)1023);
    uint8_t *sx = smem;                    /* [STAGES][128][64] */
    uint8_t *sw = smem + STAGES * X_BYTES; /* [STAGES][BN][64] */
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    __shared__ int last_flag;
    const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
    const int KT = (int)(a.K / WG_BK), units = sp.mg * sp.nt * sp.S;
    const int rank = CL > 1 ? (int)cluster_rank() : 0, cid = blockIdx.x / CL, n_cl = gridDim.x / CL;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 8 * CL); /* one arrive per consumer warp of the cluster */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    if constexpr (CL > 1) cluster_sync(); /* the peer's barriers exist before any multicast */
    else __syncthreads();
    if (wg == 0) {
        if (tid == 0) {
            /* it counts the slices through the ring across this CTA's units */
            int it = 0;
            for (int u = cid; u < units; u += n_cl) {
                int z, gi, ni;
                wg_unit(u, sp, &z, &gi, &ni);
                const int k_lo = (int)((int64_t)z * KT / sp.S), nk = (int)((int64_t)(z + 1) * KT / sp.S) - k_lo;
                const int m0 = (gi * CL + rank) * WG_BM, n0 = ni * BN + rank * (BN / CL);
                int i = 0;
                if (u == cid) {
                    /* the weights do not depend on the previous kernel: the
                     * first stages' weights load while it finishes */
                    const int pre = nk < STAGES ? nk : STAGES;
                    for (; i < pre; i++) {
                        mbar_expect_tx(&full[i], X_BYTES + W_BYTES);
                        uint8_t *dst = sw + (size_t)i * W_BYTES + rank * W_PART;
                        if constexpr (CL > 1) tma_load_2d_mc(dst, &map_w, (k_lo + i) * WG_BK, n0, &full[i], 3);
                        else tma_load_2d(dst, &map_w, (k_lo + i) * WG_BK, n0, &full[i]);
                    }
                    pdl_begin();
                    for (int j = 0; j < pre; j++)
                        tma_load_2d(sx + (size_t)j * X_BYTES, &map_x, (k_lo + j) * WG_BK, m0, &full[j]);
                    it = pre;
                }
                for (; i < nk; i++, it++) {
                    const int s = it % STAGES;
                    /* CL 2: both CTAs' consumers have released the stage */
                    if (it >= STAGES) mbar_wait(&empty[s], ((it / STAGES) + 1) & 1);
                    mbar_expect_tx(&full[s], X_BYTES + W_BYTES);
                    uint8_t *dst = sw + (size_t)s * W_BYTES + rank * W_PART;
                    if constexpr (CL > 1) tma_load_2d_mc(dst, &map_w, (k_lo + i) * WG_BK, n0, &full[s], 3);
                    else tma_load_2d(dst, &map_w, (k_lo + i) * WG_BK, n0, &full[s]);
                    tma_load_2d(sx + (size_t)s * X_BYTES, &map_x, (k_lo + i) * WG_BK, m0, &full[s]);
                }
            }
            if (cid >= units) pdl_begin();
        } else {
            pdl_begin();
        }
    } else {
        pdl_begin();
        const int cw = wg - 1, warp = tid >> 5, lane = tid & 31, ct = cw * 128 + tid;
        int it = 0;
        for (int u = cid; u < units; u += n_cl) {
            int z, gi, ni;
            wg_unit(u, sp, &z, &gi, &ni);
            const int nk = (int)((int64_t)(z + 1) * KT / sp.S) - (int)((int64_t)z * KT / sp.S);
            const int mi = gi * CL + rank, tile = (ni * (sp.mg * CL) + mi), m0 = mi * WG_BM, n0 = ni * BN;
            float acc[NACC];
#pragma unroll
            for (int i = 0; i < NACC; i++) acc[i] = 0.0f;
            for (int i = 0; i < nk; i++, it++) {
                const int s = it % STAGES;
                mbar_wait(&full[s], (it / STAGES) & 1);
                const uint8_t *xs = sx + (size_t)s * X_BYTES + (size_t)cw * 64 * WG_BK * 2;
                const uint8_t *ws = sw + (size_t)s * W_BYTES;
                wgmma_fence();
#pragma unroll
                for (int kk = 0; kk < WG_BK / 16; kk++)
                    wgmma_tile<BN>(acc, smem_desc(xs + kk * 32), smem_desc(ws + kk * 32));
                wgmma_commit();
                if constexpr (LAG == 0) {
                    wgmma_wait<0>();
                    if (lane == 0) {
                        mbar_arrive(&empty[s]);
                        if constexpr (CL > 1) mbar_arrive_remote(&empty[s], rank ^ 1);
                    }
                } else {
                    /* one group in flight: once at most this slice's products
                     * are pending, the previous slice's stage goes back to the
                     * producers (of both CTAs with CL 2: each writes into both) */
                    wgmma_wait<1>();
                    if (i > 0 && lane == 0) {
                        mbar_arrive(&empty[(it - 1) % STAGES]);
                        if constexpr (CL > 1) mbar_arrive_remote(&empty[(it - 1) % STAGES], rank ^ 1);
                    }
                }
            }
            if constexpr (LAG != 0) {
                wgmma_wait<0>();
                /* the unit's last stage goes back before the epilogue: the
                 * producer loads the next unit's first slices meanwhile */
                if (lane == 0) {
                    mbar_arrive(&empty[(it - 1) % STAGES]);
                    if constexpr (CL > 1) mbar_arrive_remote(&empty[(it - 1) % STAGES], rank ^ 1);
                }
            }
            if (m0 >= a.T) continue; /* CL 2: the pair's second row tile lies past T */
            if (sp.S > 1) {
                float *mine = sp.ws + ((size_t)tile * sp.S + z) * NACC * 256;
#pragma unroll
                for (int i = 0; i < NACC; i++) __stcg(mine + (size_t)i * 256 + ct, acc[i]);
                __threadfence();
                consumers_sync();
                if (ct == 0) last_flag = atomicAdd(&sp.sem[tile], 1) == sp.S - 1;
                consumers_sync();
                const bool last = last_flag;
                consumers_sync(); /* every consumer has read the flag before the next unit sets it */
                if (!last) continue;
                __threadfence();
                for (int o = 0; o < sp.S; o++) {
                    if (o == z) continue;
                    const float *p = sp.ws + ((size_t)tile * sp.S + o) * NACC * 256;
#pragma unroll
                    for (int i = 0; i < NACC; i++) acc[i] += __ldcg(p + (size_t)i * 256 + ct);
                }
                if (ct == 0) sp.sem[tile] = 0;
            }
            const int g = lane >> 2, q = lane & 3;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int64_t row = (int64_t)m0 + cw * 64 + warp * 16 + g + 8 * h;
                if (row >= a.T) continue;
#pragma unroll
                for (int i = 0; i < BN / 8; i++) {
                    const int64_t n = (int64_t)n0 + 8 * i + 2 * q, o = row * a.ldo + n;
                    const float v0 = acc[4 * i + 2 * h] * a.alpha + (a.bias && n < a.N ? a.bias[n] : 0.0f);
                    const float v1 =
                        acc[4 * i + 2 * h + 1] * a.alpha + (a.bias && n + 1 < a.N ? a.bias[n + 1] : 0.0f);
                    if (a.to == HR_BF16 && n + 1 < a.N && (o & 1) == 0) {
                        *(__nv_bfloat162 *)((bf16 *)a.out + o) = __floats2bfloat162_rn(v0, v1);
                    } else {
                        if (n < a.N) store_dyn(a.out, a.to, o, v0);
                        if (n + 1 < a.N) store_dyn(a.out, a.to, o + 1, v1);
                    }
                }
            }
        }
    }
    /* CL 2: neither CTA leaves while the peer may still multicast into its
     * shared memory or arrive on its barriers */
    if constexpr (CL > 1) cluster_sync();
#endif
}

/* ---- host ------------------------------------------------------------ */
static PFN_cuTensorMapEncodeTiled_v12000 wg_encode;

static bool wg_encode_fn(void) {
    static int state = -1;
    if (state < 0) {
        void *fn = NULL;
        cudaDriverEntryPointQueryResult q;
        state = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) ==
                        cudaSuccess &&
                    q == cudaDriverEntryPointSuccess && fn;
        wg_encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    return state == 1;
}

/* rows x cols BF16, row stride ld elements; boxes of 64 columns x box_rows */
static bool wg_map(CUtensorMap *m, const void *base, int64_t rows, int64_t cols, int64_t ld, uint32_t box_rows) {
    cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)ld * 2};
    cuuint32_t box[2] = {WG_BK, box_rows}, es[2] = {1, 1};
    return wg_encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, (void *)base, dims, strides, box, es,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* compute capability 9.0 (the kernel is built for sm_90a only) */
static bool wg_device_ok(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess && cu_capability(dev) == 90;
    }
    return ok == 1;
}

/* HEARTH_CUDA_WGMMA: 0 off (default), 1 on for eligible linears of
 * 64..HEARTH_CUDA_WGMMA_MAX_T rows (default 512), 2 (tests) on for every
 * row count and eligible linears that cannot take it fail instead of
 * falling back. HEARTH_CUDA_WGMMA_CFG=BN,S[,CL[,LAG]] forces the tile
 * width, the K splits (0: chosen), the cluster size (1 or 2) and the stage
 * release (LAG 0: at once, single CTAs only; comparisons). Read once per
 * process. */
static struct { int mode, max_t, bn, s, cl, lag; } wg_env = {-1, 512, 0, 0, 0, 1};
static void wg_env_read(void) {
    if (wg_env.mode >= 0) return;
    const int mode = hr_env_int("HEARTH_CUDA_WGMMA", 0);
    wg_env.max_t = HR_MAX(hr_env_int("HEARTH_CUDA_WGMMA_MAX_T", 512), 64);
    const char *e = getenv("HEARTH_CUDA_WGMMA_CFG");
    if (e && sscanf(e, "%d,%d,%d,%d", &wg_env.bn, &wg_env.s, &wg_env.cl, &wg_env.lag) < 2) {
        wg_env.bn = wg_env.s = wg_env.cl = 0;
        wg_env.lag = 1;
    }
    if (wg_env.lag != 0) wg_env.lag = 1;
    if (wg_env.bn != 64 && wg_env.bn != 128 && wg_env.bn != 256) wg_env.bn = 0;
    if (wg_env.cl != 1 && wg_env.cl != 2) wg_env.cl = 0;
    wg_env.s = HR_MIN(HR_MAX(wg_env.s, 0), 16);
    wg_env.mode = HR_MIN(HR_MAX(mode, 0), 2);
}

int cu_wgmma_mode(void) {
    wg_env_read();
    return wg_env.mode;
}

bool cu_wgmma_ok(const cu_gemv_args *a) {
    wg_env_read();
    return wg_env.mode > 0 && (wg_env.mode == 2 || a->T <= wg_env.max_t) && a->tx == HR_BF16 && a->tw == HR_BF16 &&
           !a->expert && !a->chunks && a->nseg <= 1 && a->T >= 64 && a->K % WG_BK == 0 && a->K >= WG_BK &&
           a->ldx % 8 == 0 && a->N >= 64 && a->N <= ((int64_t)1 << 30) && (uintptr_t)a->x % 16 == 0 &&
           (uintptr_t)a->w % 16 == 0 && wg_device_ok() && wg_encode_fn();
}

template <int BN> static constexpr int wg_stages() {
    return HR_MIN(8, WG_SMEM_BUDGET / ((WG_BM + BN) * WG_BK * 2));
}

template <int BN, int CL, int LAG>
static cudaError_t wg_launch(cudaStream_t st, const cu_gemv_args *a, wg_split sp, int n_sm) {
    constexpr int STAGES = wg_stages<BN>();
    const size_t smem = (size_t)STAGES * (WG_BM + BN) * WG_BK * 2 + 1024;
    cudaError_t e = cu_smem_limit<wgmma_gemm_kernel<BN, STAGES, CL, LAG>>(smem);
    if (e != cudaSuccess) return e;
    CUtensorMap mx, mw;
    if (!wg_map(&mx, a->x, a->T, a->K, a->ldx, WG_BM) || !wg_map(&mw, a->w, a->N, a->K, a->K, BN / CL))
        return cudaErrorInvalidValue;
    /* persistent: one CTA per SM at most, each cluster takes every n-th unit */
    const int64_t units = (int64_t)sp.mg * sp.nt * sp.S;
    cu_launch_clusters(wgmma_gemm_kernel<BN, STAGES, CL, LAG>, dim3((unsigned)(CL * HR_MIN(units, (int64_t)(n_sm / CL)))),
                       WG_THREADS, smem, st, CL, mx, mw, *a, sp);
    return cudaGetLastError();
}

/* Tile width and K splits: the fewest estimated slice-times over the waves
 * of work units (one CTA per SM), a slice costing its BN + 32 columns (the
 * row tile's share); each split past the first adds 1.5 slices (the last
 * CTA of a tile reads the others' partials alone). */
static void wg_pick(const cu_gemv_args *a, int n_sm, int cl, size_t ws_bytes, int max_tiles, int *bn_out,
                    int *s_out) {
    const int64_t KT = a->K / WG_BK, mg = HR_CDIV(HR_CDIV((int64_t)a->T, (int64_t)WG_BM), (int64_t)cl);
    double best = 1e300;
    *bn_out = 128;
    *s_out = 1;
    static const int bns[2] = {128, 256};
    for (int b = 0; b < 2; b++) {
        const int bn = wg_env.bn ? wg_env.bn : bns[b];
        const int64_t nt = HR_CDIV(a->N, (int64_t)bn), tiles = mg * cl * nt;
        for (int s = 1; s <= 8; s++) {
            if (wg_env.s && s != wg_env.s) continue;
            if (s > 1 && (KT / s < 4 || tiles > max_tiles || (size_t)tiles * s * WG_BM * bn * 4 > ws_bytes)) continue;
            const double waves = (double)HR_CDIV(mg * nt * s, (int64_t)(n_sm / cl));
            const double est = (waves * (double)HR_CDIV(KT, (int64_t)s) + 1.5 * (s - 1)) * (bn + 32);
            if (est < best) {
                best = est;
                *bn_out = bn;
                *s_out = s;
            }
        }
        if (wg_env.bn) break;
    }
}

cudaError_t cu_wgmma_linear(cudaStream_t st, const cu_gemv_args *a, int n_sm, float *ws, size_t ws_bytes, int *sem,
                            int n_sem) {
    if (!cu_wgmma_ok(a)) return cudaErrorNotSupported;
    const int64_t mt = HR_CDIV((int64_t)a->T, (int64_t)WG_BM);
    /* clusters of 2 (the pair's row tiles share the weight tile by
     * multicast) only when asked: on an H100 (2026-12-06) they ran 1.5-2.7x
     * slower than single CTAs at T = 256 (docs/PERF.md, session 11) */
    const int cl = wg_env.cl == 2 && mt >= 2 ? 2 : 1;
    int bn, s;
    wg_pick(a, n_sm, cl, ws ? ws_bytes : 0, sem ? n_sem : 0, &bn, &s);
    const int64_t mg = HR_CDIV(mt, (int64_t)cl), nt = HR_CDIV(a->N, (int64_t)bn);
    if (mg * nt * s * cl > INT32_MAX / 2) return cudaErrorNotSupported;
    wg_split sp = {s, (int)mg, (int)nt, ws, sem};
    if (cl == 2) {
        if (bn == 64) return wg_launch<64, 2, 1>(st, a, sp, n_sm);
        if (bn == 256) return wg_launch<256, 2, 1>(st, a, sp, n_sm);
        return wg_launch<128, 2, 1>(st, a, sp, n_sm);
    }
    if (wg_env.lag == 0) {
        if (bn == 64) return wg_launch<64, 1, 0>(st, a, sp, n_sm);
        if (bn == 256) return wg_launch<256, 1, 0>(st, a, sp, n_sm);
        return wg_launch<128, 1, 0>(st, a, sp, n_sm);
    }
    if (bn == 64) return wg_launch<64, 1, 1>(st, a, sp, n_sm);
    if (bn == 256) return wg_launch<256, 1, 1>(st, a, sp, n_sm);
    return wg_launch<128, 1, 1>(st, a, sp, n_sm);
}
