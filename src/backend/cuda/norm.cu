/* RMSNorm and RMSNorm fused with the residual add (one block per row):
 *   rmsnorm:      out = x * rsqrt(mean(x^2) + eps) * w
 *   add_rmsnorm:  residual += x (stored in the residual's dtype), then the
 *                 norm of the stored residual, so the next layer sees exactly
 *                 the values that were normalised. Statistics in float. */
#include "backend/cuda/cu_types.cuh"

template <typename TA, typename TW>
__global__ void rmsnorm_kernel(TA *out, TA *residual, const TA *x, const TW *w, int64_t cols, float eps) {
    pdl_begin();
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const TA *xr = x + r * cols;
    TA *rr = residual ? residual + r * cols : nullptr;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = to_f(xr[c]);
        if (rr) {
            TA s = from_f<TA>(to_f(rr[c]) + v);
            rr[c] = s;
            v = to_f(s);
        }
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float inv = rsqrtf(ss / (float)cols + eps);
    const TA *src = rr ? rr : xr; /* each thread re-reads only what it wrote */
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        out[r * cols + c] = from_f<TA>(to_f(src[c]) * inv * to_f(w[c]));
}

cudaError_t cu_rmsnorm(cudaStream_t st, void *out, hr_dtype to, void *residual, const void *x, hr_dtype tx,
                       const void *w, hr_dtype tw, int64_t rows, int64_t cols, float eps) {
    if (rows <= 0) return cudaSuccess;
    if (to != tx) return cudaErrorNotSupported;
    int threads = cols >= 4096 ? 1024 : cols >= 1024 ? 512 : 128;
    CU_DISPATCH_ACT(to, TA, CU_DISPATCH_W(tw, TW,
        cu_launch(rmsnorm_kernel<TA, TW>, (unsigned)rows, threads, 0, st, (TA *)out, (TA *)residual, (const TA *)x,
                                                                   (const TW *)w, cols, eps)));
    return cudaGetLastError();
}
