/* Mixture-of-experts helpers: routing on the GPU (softmax then top-k, or
 * top-k then softmax over the k) and the weighted combine of the per-pair
 * expert outputs. The expert products themselves are the pair mode of the
 * GEMV kernel (gemm/gemv.cu), so nothing here needs the expert counts on the
 * host and a decode step never syncs. Ties in top-k go to the lower index. */
#include <math.h>

#include "backend/cuda/cu_types.cuh"

#define MOE_MAX_K 32
#define MOE_MAX_E 1024 /* experts the segment sort holds in shared memory */

/* One thread per token: E is at most a few hundred and k a handful. */
__global__ void moe_route_kernel(const float *logits, int T, int E, int k, hr_route route, bool renorm,
                                 int32_t *expert, float *weight) {
    pdl_begin();
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const float *lg = logits + (int64_t)t * E;
    int sel[MOE_MAX_K];
    float val[MOE_MAX_K];
    for (int j = 0; j < k; j++) {
        int best = -1;
        float bv = -INFINITY;
        for (int e = 0; e < E; e++) {
            bool used = false;
            for (int i = 0; i < j; i++) used |= sel[i] == e;
            if (used) continue;
            if (best < 0 || lg[e] > bv) {
                best = e;
                bv = lg[e];
            }
        }
        sel[j] = best;
        val[j] = bv;
    }
    float sum = 0.0f;
    if (route == HR_ROUTE_SOFTMAX_TOPK) {
        float mx = -INFINITY, z = 0.0f;
        for (int e = 0; e < E; e++) mx = fmaxf(mx, lg[e]);
        for (int e = 0; e < E; e++) z += expf(lg[e] - mx);
        for (int j = 0; j < k; j++) {
            val[j] = expf(val[j] - mx) / z;
            sum += val[j];
        }
        if (!renorm) sum = 1.0f;
    } else {
        float mx = val[0]; /* top-1 is the max */
        for (int j = 0; j < k; j++) {
            val[j] = expf(val[j] - mx);
            sum += val[j];
        }
    }
    for (int j = 0; j < k; j++) {
        expert[(int64_t)t * k + j] = sel[j];
        weight[(int64_t)t * k + j] = val[j] / sum;
    }
}

cudaError_t cu_moe_route(cudaStream_t st, const float *logits, int T, int E, int k, hr_route route, bool renorm,
                         int32_t *expert, float *weight) {
    if (T <= 0) return cudaSuccess;
    if (k < 1 || k > MOE_MAX_K || k > E) return cudaErrorInvalidValue;
    cu_launch(moe_route_kernel, cu_blocks(T, 64), 64, 0, st, logits, T, E, k, route, renorm, expert, weight);
    return cudaGetLastError();
}

template <typename TO>
__global__ void moe_combine_kernel(TO *out, int64_t ldo, const float *y, const float *weight, int k, int64_t H) {
    pdl_begin();
    int64_t t = blockIdx.y;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < H; c += (int64_t)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int j = 0; j < k; j++) v += weight[t * k + j] * y[(t * k + j) * H + c];
        out[t * ldo + c] = from_f<TO>(v);
    }
}

cudaError_t cu_moe_combine(cudaStream_t st, void *out, hr_dtype to, int64_t ldo, const float *y, const float *weight,
                           int T, int k, int64_t H) {
    if (T <= 0) return cudaSuccess;
    if (T > 65535) return cudaErrorInvalidValue;
    dim3 grid(HR_MIN(cu_blocks(H, 256), 64u), (unsigned)T);
    CU_DISPATCH_ACT(to, TO, cu_launch(moe_combine_kernel<TO>, grid, 256, 0, st, (TO *)out, ldo, y, weight, k, H));
    return cudaGetLastError();
}

/* Pairs sorted by expert for the GEMV's segment mode: counts per expert,
 * each expert's first sorted position, perm[P] (pair indices grouped by
 * expert; the order inside an expert is whatever the atomics give, which
 * cannot change a result: each pair's products are computed alone), and the
 * work list chunks[] = {expert, first sorted position, rows <= nt, 0} with
 * its length in *n_chunks. One block; the expert ids stay on the device, so
 * a captured decode step can run it. Ids outside [0, E) are skipped (top-k
 * over E logits never writes one). */
__global__ void __launch_bounds__(1024) moe_segments_kernel(const int32_t *expert, int P, int E, int nt, int32_t *perm,
                                                            int4 *chunks, int *n_chunks) {
    pdl_begin();
    __shared__ int cnt[MOE_MAX_E], base[MOE_MAX_E], cbase[MOE_MAX_E];
    for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        int e = expert[p];
        if ((unsigned)e < (unsigned)E) atomicAdd(&cnt[e], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int b = 0, cb = 0;
        for (int e = 0; e < E; e++) {
            base[e] = b;
            cbase[e] = cb;
            b += cnt[e];
            cb += (cnt[e] + nt - 1) / nt;
        }
        *n_chunks = cb;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        for (int j = 0, n = cnt[e]; j * nt < n; j++)
            chunks[cbase[e] + j] = make_int4(e, base[e] + j * nt, min(nt, n - j * nt), 0);
    __syncthreads(); /* base[] becomes the fill cursor below */
    for (int p = threadIdx.x; p < P; p += blockDim.x) {
        int e = expert[p];
        if ((unsigned)e < (unsigned)E) perm[atomicAdd(&base[e], 1)] = p;
    }
}

int cu_moe_max_chunks(int P, int E, int nt) { return (P + nt - 1) / nt + (E < P ? E : P); }

cudaError_t cu_moe_segments(cudaStream_t st, const int32_t *expert, int P, int E, int nt, int32_t *perm, int4 *chunks,
                            int *n_chunks) {
    if (P <= 0 || E <= 0 || E > MOE_MAX_E || nt <= 0) return cudaErrorInvalidValue;
    cu_launch(moe_segments_kernel, 1, 1024, 0, st, expert, P, E, nt, perm, chunks, n_chunks);
    return cudaGetLastError();
}
