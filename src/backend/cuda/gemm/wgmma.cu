/* Hopper GEMM for linears with many rows (EXPERIMENTAL, off unless
 * HEARTH_CUDA_WGMMA=1; not yet run on a GPU): Y[T, N] = X[T, K] W[N, K]^T
 * with BF16 operands and F32 accumulators on wgmma (sm_90a only).
 *
 * One CTA computes a 128-row x (64 * NB)-column tile: warpgroup 0 is the
 * producer (one thread issues TMA loads of 64-wide K slices of X and W into
 * a 4-stage ring, 128-byte swizzled, signalled through "full" mbarriers);
 * warpgroups 1 and 2 each own 64 of the rows and issue
 * wgmma.m64n64k16 per 64 columns, with both operands read from shared
 * memory through matrix descriptors (K-major, 128B swizzle: 1024-byte
 * 8-row groups, a 16-element K step is a 32-byte advance of the start
 * address), then release the stage through "empty" mbarriers (one arrive
 * per consumer warp). Rows past T and columns past N come in as zeros
 * (TMA out-of-bounds fill) and are never stored.
 *
 * What it is for: the 256-sequence decode step spends two thirds of its
 * time in cuBLASLt GEMMs at M = 256 (docs/PERF.md); this is the base for a
 * persistent / stream-K version with fused epilogues. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <string.h>

#include "backend/cuda/cu_types.cuh"

#define WG_BM 128
#define WG_BK 64
#define WG_STAGES 4
#define WG_THREADS 384

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_ENABLED 1
#else
#define WG_ENABLED 0
#endif

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
/* D[64 x 64] (+)= A[64 x 16] B[16 x 64]; scale_d 0 overwrites. Fragment:
 * warp w of the warpgroup holds rows 16 w + g and 16 w + g + 8, columns
 * 8 i + 2 q (+1) in d[4 i .. 4 i + 3], as mma.m16n8 per 8 columns. */
__device__ __forceinline__ void wgmma_m64n64k16(float *d, uint64_t da, uint64_t db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(scale_d));
}
#endif

template <int NB>
__global__ void __launch_bounds__(WG_THREADS) wgmma_gemm_kernel(const __grid_constant__ CUtensorMap map_x,
                                                                 const __grid_constant__ CUtensorMap map_w,
                                                                 cu_gemv_args a) {
#if WG_ENABLED
    constexpr int BN = 64 * NB;
    constexpr uint32_t STAGE_BYTES = (WG_BM + BN) * WG_BK * 2;
    extern __shared__ uint8_t wg_smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)wg_smem_raw + 1023) & ~(uintptr_t)1023);
    bf16 *sx = (bf16 *)smem;                               /* [STAGES][128][64] */
    bf16 *sw = (bf16 *)(smem + WG_STAGES * WG_BM * WG_BK * 2); /* [STAGES][BN][64] */
    __shared__ __align__(8) uint64_t full[WG_STAGES], empty[WG_STAGES];
    const int wg = threadIdx.x >> 7, tid = threadIdx.x & 127;
    /* the row tiles of one column tile are neighbours in the grid: they run
     * together and the second reads the weight tile from L2 */
    const int m0 = blockIdx.x * WG_BM, n0 = blockIdx.y * BN, KT = (int)(a.K / WG_BK);
    if (threadIdx.x == 0) {
        for (int s = 0; s < WG_STAGES; s++) {
            mbar_init(&full[s], 1);
            mbar_init(&empty[s], 8); /* one arrive per consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    pdl_wait();
    pdl_trigger();
    if (wg == 0) {
        if (tid != 0) return;
        for (int kt = 0; kt < KT; kt++) {
            const int s = kt % WG_STAGES;
            if (kt >= WG_STAGES) mbar_wait(&empty[s], ((kt / WG_STAGES) + 1) & 1);
            mbar_expect_tx(&full[s], STAGE_BYTES);
            tma_load_2d(sx + (size_t)s * WG_BM * WG_BK, &map_x, kt * WG_BK, m0, &full[s]);
            tma_load_2d(sw + (size_t)s * BN * WG_BK, &map_w, kt * WG_BK, n0, &full[s]);
        }
        return;
    }
    const int cw = wg - 1, warp = tid >> 5, lane = tid & 31;
    float acc[NB][32];
#pragma unroll
    for (int j = 0; j < NB; j++)
#pragma unroll
        for (int i = 0; i < 32; i++) acc[j][i] = 0.0f;
    for (int kt = 0; kt < KT; kt++) {
        const int s = kt % WG_STAGES;
        mbar_wait(&full[s], (kt / WG_STAGES) & 1);
        const bf16 *xs = sx + (size_t)s * WG_BM * WG_BK + (size_t)cw * 64 * WG_BK;
        const bf16 *ws = sw + (size_t)s * BN * WG_BK;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < WG_BK / 16; kk++) {
            const uint64_t da = smem_desc(xs + kk * 16);
#pragma unroll
            for (int j = 0; j < NB; j++) wgmma_m64n64k16(acc[j], da, smem_desc(ws + (size_t)j * 64 * WG_BK + kk * 16), 1);
        }
        wgmma_commit();
        /* keep one group in flight: the previous slice's products are done
         * once at most this one is pending, so its stage goes back */
        wgmma_wait<1>();
        if (kt > 0 && lane == 0) mbar_arrive(&empty[(kt - 1) % WG_STAGES]);
    }
    wgmma_wait<0>();
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t row = (int64_t)m0 + cw * 64 + warp * 16 + g + 8 * h;
        if (row >= a.T) continue;
#pragma unroll
        for (int j = 0; j < NB; j++)
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int cc = 0; cc < 2; cc++) {
                    const int64_t n = (int64_t)n0 + 64 * j + 8 * i + 2 * q + cc;
                    if (n < a.N)
                        store_dyn(a.out, a.to, row * a.ldo + n,
                                  acc[j][4 * i + 2 * h + cc] * a.alpha + (a.bias ? a.bias[n] : 0.0f));
                }
    }
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
        int dev = 0, major = 0, minor = 0;
        ok = cudaGetDevice(&dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
             cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
             minor == 0;
    }
    return ok == 1;
}

bool cu_wgmma_ok(const cu_gemv_args *a) {
    return hr_env_on("HEARTH_CUDA_WGMMA", false) && a->tx == HR_BF16 && a->tw == HR_BF16 && !a->expert &&
           !a->chunks && a->nseg <= 1 && a->T >= 64 && a->K % WG_BK == 0 && a->ldx % 8 == 0 &&
           HR_CDIV(a->N, (int64_t)64) <= 65535 &&
           (uintptr_t)a->x % 16 == 0 && (uintptr_t)a->w % 16 == 0 && a->N >= 64 && wg_device_ok() && wg_encode_fn();
}

template <int NB> static cudaError_t wg_launch(cudaStream_t st, const cu_gemv_args *a) {
    const size_t smem = (size_t)WG_STAGES * (WG_BM + 64 * NB) * WG_BK * 2 + 1024;
    static bool attr = false;
    if (!attr) {
        cudaError_t e = cudaFuncSetAttribute(wgmma_gemm_kernel<NB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
        attr = true;
    }
    CUtensorMap mx, mw;
    if (!wg_map(&mx, a->x, a->T, a->K, a->ldx, WG_BM) || !wg_map(&mw, a->w, a->N, a->K, a->K, 64 * NB))
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)HR_CDIV((int64_t)a->T, (int64_t)WG_BM), (unsigned)HR_CDIV(a->N, (int64_t)64 * NB));
    cu_launch(wgmma_gemm_kernel<NB>, grid, WG_THREADS, smem, st, mx, mw, *a);
    return cudaGetLastError();
}

/* 128-column tiles when they alone fill the GPU, else 64 */
cudaError_t cu_wgmma_linear(cudaStream_t st, const cu_gemv_args *a, int n_sm) {
    if (!cu_wgmma_ok(a)) return cudaErrorNotSupported;
    const int64_t tiles128 = HR_CDIV(a->N, (int64_t)128) * HR_CDIV((int64_t)a->T, (int64_t)WG_BM);
    return tiles128 >= n_sm ? wg_launch<2>(st, a) : wg_launch<1>(st, a);
}
