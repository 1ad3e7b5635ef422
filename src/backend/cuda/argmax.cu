/* Row argmax of F32 logits on the device (greedy decoding): one block per
 * row, each thread scans a strided slice keeping (value, index), then a
 * warp-shuffle and a shared-memory round reduce the pairs. Ties go to the
 * lowest index and NaN is never chosen (comparisons with NaN are false), so
 * the result is exactly the host sampler's argmax; a row of NaN only gives 0. */
#include <stdint.h>

#include "backend/cuda/cu_types.cuh"

#define ARGMAX_THREADS 1024

/* (v, i) beats (bv, bi): larger value, or the same value at a lower index. */
__device__ __forceinline__ void argmax_take(float &bv, int &bi, float v, int i) {
    if (v > bv || (v == bv && i < bi)) {
        bv = v;
        bi = i;
    }
}

__global__ void argmax_kernel(int32_t *ids, const float *logits, int64_t vocab) {
    pdl_begin();
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *row = logits + (int64_t)blockIdx.x * vocab;
    /* -inf with an index past every column: a row of -inf still yields its
     * first column (equal value, lower index), a row of NaN none. */
    float bv = -INFINITY;
    int bi = INT32_MAX;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) argmax_take(bv, bi, row[c], (int)c);
    for (int o = 16; o > 0; o >>= 1) {
        float v = __shfl_xor_sync(0xffffffffu, bv, o);
        int i = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_take(bv, bi, v, i);
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) {
        sv[warp] = bv;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : INT32_MAX;
        for (int o = 16; o > 0; o >>= 1) {
            float v = __shfl_xor_sync(0xffffffffu, bv, o);
            int i = __shfl_xor_sync(0xffffffffu, bi, o);
            argmax_take(bv, bi, v, i);
        }
        if (lane == 0) ids[blockIdx.x] = bi == INT32_MAX ? 0 : bi;
    }
}

cudaError_t cu_argmax(cudaStream_t st, int32_t *ids, const float *logits, int64_t rows, int64_t vocab) {
    if (rows <= 0) return cudaSuccess;
    int threads = vocab >= 8192 ? ARGMAX_THREADS : vocab >= 1024 ? 256 : 32;
    cu_launch(argmax_kernel, (unsigned)rows, threads, 0, st, ids, logits, vocab);
    return cudaGetLastError();
}
