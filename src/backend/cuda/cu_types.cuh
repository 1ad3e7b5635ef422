/* Device-side element helpers shared by the kernel files: float conversion of
 * the storage types (F32, BF16, F16), reductions, and the dtype dispatch
 * macros that turn an hr_dtype into a template argument.
 * Conversions to BF16/F16 round to nearest even, as core/dtype.c does. */
#ifndef HEARTH_BACKEND_CUDA_TYPES_CUH
#define HEARTH_BACKEND_CUDA_TYPES_CUH

#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

/* Writes v into an output of run-time dtype (epilogues that may emit F32 logits). */
__device__ __forceinline__ void store_dyn(void *out, hr_dtype t, int64_t i, float v) {
    if (t == HR_F32) ((float *)out)[i] = v;
    else if (t == HR_BF16) ((bf16 *)out)[i] = __float2bfloat16_rn(v);
    else ((__half *)out)[i] = __float2half_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* 16 bytes read once (weights, KV cache): the non-coherent path, no L1 allocation */
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* The same load, kept in program order with the other volatile asm: issued
 * before griddepcontrol.wait, it streams data the previous kernel does not
 * write (weights) while that kernel finishes. */
__device__ __forceinline__ uint4 ld_stream_early(const void *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* 16 bytes of F32 / BF16 / F16 -> 4 or 8 floats */
template <typename TW> __device__ __forceinline__ void unpack16(uint4 u, float *f);
template <> __device__ __forceinline__ void unpack16<bf16>(uint4 u, float *f) {
    uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(v[i] << 16);
        f[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
    }
}
template <> __device__ __forceinline__ void unpack16<__half>(uint4 u, float *f) {
    uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h = *reinterpret_cast<__half2 *>(&v[i]);
        float2 ff = __half22float2(h);
        f[2 * i] = ff.x;
        f[2 * i + 1] = ff.y;
    }
}
template <> __device__ __forceinline__ void unpack16<float>(uint4 u, float *f) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}

/* 8 floats -> 16 bytes of BF16 (round to nearest even) */
__device__ __forceinline__ uint4 pack16_bf16(const float *f) {
    uint4 u;
    uint32_t *v = reinterpret_cast<uint32_t *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
        v[i] = *reinterpret_cast<uint32_t *>(&h);
    }
    return u;
}

/* Sum over the block; every thread gets the result. sh: >= 32 floats. */
__device__ __forceinline__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

/* Activation dtypes: F32 or BF16. Expands BODY with ACT_T bound. */
#define CU_DISPATCH_ACT(dt, ACT_T, ...)                                    \
    do {                                                                   \
        if ((dt) == HR_BF16) { typedef bf16 ACT_T; __VA_ARGS__; }          \
        else if ((dt) == HR_F32) { typedef float ACT_T; __VA_ARGS__; }     \
        else return cudaErrorNotSupported;                                 \
    } while (0)

/* Asynchronous 16-byte global -> shared copies (sm_80+), cached in L2 only:
 * issue, commit a group, wait until at most N groups are still in flight. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* Tensor cores: D += A B, m16n8k16, BF16 inputs, F32 accumulators (the
 * PTX ISA's fragment layouts: lane = 4 g + tq holds rows g and g + 8). */
__device__ __forceinline__ void mma_bf16(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}

/* Two 8x8 BF16 matrices from shared memory, transposed: lanes 0-7 give the
 * row addresses of the first, 8-15 of the second (16 bytes each); each lane
 * gets the B fragment (k = 2 tq, 2 tq + 1; n = g) of a row-major [k][n] tile. */
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t &b0, uint32_t &b1, const void *smem_row) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];" : "=r"(b0), "=r"(b1) : "r"(s));
}

/* Four 8x8 BF16 matrices from shared memory: lanes 8 m .. 8 m + 7 give the
 * row addresses of matrix m (16 bytes each); lane 4 g + tq gets row g,
 * elements 2 tq and 2 tq + 1 of each, i.e. the B fragments of n-major
 * (key-major K) tiles. The _trans form gets rows 2 tq, 2 tq + 1 of column
 * g: the B fragments of k-major tiles (V, keys as rows). */
__device__ __forceinline__ void ldmatrix_x4(uint32_t *r, const void *smem_row) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t *r, const void *smem_row) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem_row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

/* The linear a block row computes in a GEMV-style launch: the only one, or
 * (fused launch, nseg > 1) the linear whose row blocks of rows_per_block
 * rows block bx falls in, with its block index inside that linear. */
struct gv_part {
    const void *w;
    const float *bias;
    void *out;
    int64_t N, ldo, bx;
};
__device__ __forceinline__ gv_part gv_part_at(const cu_gemv_args &a, int64_t bx, int64_t rows_per_block) {
    gv_part p = {a.w, a.bias, a.out, a.N, a.ldo, bx};
    if (a.nseg > 1) {
        int si = 0;
        for (; si < a.nseg - 1; si++) {
            int64_t nb = (a.seg[si].N + rows_per_block - 1) / rows_per_block;
            if (p.bx < nb) break;
            p.bx -= nb;
        }
        p = {a.seg[si].w, a.seg[si].bias, a.seg[si].out, a.seg[si].N, a.seg[si].ldo, p.bx};
    }
    return p;
}

/* Storage dtypes for weights/tables: F32, BF16, F16. */
#define CU_DISPATCH_W(dt, W_T, ...)                                        \
    do {                                                                   \
        if ((dt) == HR_BF16) { typedef bf16 W_T; __VA_ARGS__; }            \
        else if ((dt) == HR_F32) { typedef float W_T; __VA_ARGS__; }       \
        else if ((dt) == HR_F16) { typedef __half W_T; __VA_ARGS__; }      \
        else return cudaErrorNotSupported;                                 \
    } while (0)

/* Programmatic dependent launch (Hopper+): every kernel is launched with
 * programmatic stream serialization and starts with pdl_begin(), which waits
 * for the previous kernel to finish and flush (so no read can see stale data)
 * and then lets the next kernel's launch proceed, hiding launch latency
 * behind this kernel's tail. HEARTH_CUDA_PDL=0 launches plainly. */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ __forceinline__ void pdl_begin() {
    pdl_wait();
    pdl_trigger();
}

static inline bool cu_pdl_on() {
    static int v = -1;
    if (v < 0) v = hr_env_on("HEARTH_CUDA_PDL", true);
    return v != 0;
}

/* cu_launch with thread-block clusters of cluster CTAs along x (1: none). */
template <typename... KArgs, typename... Args>
static inline void cu_launch_clusters(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                      unsigned cluster, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute attr[2];
    int n = 0;
    if (cluster > 1) {
        attr[n].id = cudaLaunchAttributeClusterDimension;
        attr[n].val.clusterDim.x = cluster;
        attr[n].val.clusterDim.y = 1;
        attr[n].val.clusterDim.z = 1;
        n++;
    }
    if (cu_pdl_on()) {
        attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[n].val.programmaticStreamSerializationAllowed = 1;
        n++;
    }
    cfg.attrs = attr;
    cfg.numAttrs = n;
    cudaLaunchKernelEx(&cfg, kernel, ((KArgs)args)...);
}

template <typename... KArgs, typename... Args>
static inline void cu_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                             Args... args) {
    cu_launch_clusters(kernel, grid, block, smem, st, 1u, args...);
}

/* Dynamic shared memory up to bytes for kernel K (past the 48 KB default),
 * set at its first launch, which runs eagerly, never inside a graph capture;
 * tried again after a failure. */
template <auto K> static inline cudaError_t cu_smem_limit(size_t bytes) {
    static bool done = false;
    if (done) return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(K, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    done = e == cudaSuccess;
    return e;
}

static inline unsigned cu_blocks(int64_t n, int threads) { return (unsigned)((n + threads - 1) / threads); }

#endif
