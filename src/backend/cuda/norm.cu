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

/* BF16 rows with cols % 8 == 0 (up to 8 x 1024 x RV_MAX): each thread keeps
 * its PER 16-byte chunks of the row in registers between the sum of squares
 * and the scaling, so the row is read once and written once, in 16-byte
 * accesses (the kernel above: 585 GB/s at 256 x 4096 on H100). */
#define RV_MAX 4
template <int PER>
__global__ void rmsnorm_vec_kernel(bf16 *out, bf16 *residual, const bf16 *x, const float *w, int64_t cols, float eps) {
    /* the norm weights never depend on earlier kernels: read before the wait */
    float wv[PER][8];
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int64_t c = ((int64_t)p * blockDim.x + threadIdx.x) * 8;
        if (c < cols) {
            const float4 *w4 = reinterpret_cast<const float4 *>(w + c);
            float4 a = w4[0], b = w4[1];
            wv[p][0] = a.x; wv[p][1] = a.y; wv[p][2] = a.z; wv[p][3] = a.w;
            wv[p][4] = b.x; wv[p][5] = b.y; wv[p][6] = b.z; wv[p][7] = b.w;
        }
    }
    pdl_begin();
    __shared__ float sh[32];
    const int64_t r = blockIdx.x;
    float v[PER][8];
    float ss = 0.0f;
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int64_t c = ((int64_t)p * blockDim.x + threadIdx.x) * 8;
        if (c >= cols) continue;
        unpack16<bf16>(*reinterpret_cast<const uint4 *>(x + r * cols + c), v[p]);
        if (residual) {
            float rv[8];
            unpack16<bf16>(*reinterpret_cast<const uint4 *>(residual + r * cols + c), rv);
#pragma unroll
            for (int e = 0; e < 8; e++) rv[e] += v[p][e];
            uint4 s = pack16_bf16(rv); /* stored rounded: the norm reads back what was stored */
            *reinterpret_cast<uint4 *>(residual + r * cols + c) = s;
            unpack16<bf16>(s, v[p]);
        }
#pragma unroll
        for (int e = 0; e < 8; e++) ss += v[p][e] * v[p][e];
    }
    ss = block_sum(ss, sh);
    const float inv = rsqrtf(ss / (float)cols + eps);
#pragma unroll
    for (int p = 0; p < PER; p++) {
        int64_t c = ((int64_t)p * blockDim.x + threadIdx.x) * 8;
        if (c >= cols) continue;
        float o[8];
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = v[p][e] * inv * wv[p][e];
        *reinterpret_cast<uint4 *>(out + r * cols + c) = pack16_bf16(o);
    }
}

cudaError_t cu_rmsnorm(cudaStream_t st, void *out, hr_dtype to, void *residual, const void *x, hr_dtype tx,
                       const void *w, hr_dtype tw, int64_t rows, int64_t cols, float eps) {
    if (rows <= 0) return cudaSuccess;
    if (to != tx) return cudaErrorNotSupported;
    if (to == HR_BF16 && tw == HR_F32 && cols % 8 == 0 && cols <= 8 * 1024 * RV_MAX && (uintptr_t)out % 16 == 0 &&
        (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)residual % 16 == 0) {
        int64_t vecs = cols / 8;
        int per = (int)HR_CDIV(vecs, (int64_t)1024);
        int threads = (int)HR_CDIV(HR_CDIV(vecs, (int64_t)per), (int64_t)32) * 32;
        bf16 *o = (bf16 *)out, *res = (bf16 *)residual;
        const bf16 *xx = (const bf16 *)x;
        const float *ww = (const float *)w;
        switch (per) {
        case 1: cu_launch(rmsnorm_vec_kernel<1>, (unsigned)rows, threads, 0, st, o, res, xx, ww, cols, eps); break;
        case 2: cu_launch(rmsnorm_vec_kernel<2>, (unsigned)rows, threads, 0, st, o, res, xx, ww, cols, eps); break;
        default: cu_launch(rmsnorm_vec_kernel<RV_MAX>, (unsigned)rows, threads, 0, st, o, res, xx, ww, cols, eps); break;
        }
        return cudaGetLastError();
    }
    int threads = cols >= 4096 ? 1024 : cols >= 1024 ? 512 : 128;
    CU_DISPATCH_ACT(to, TA, CU_DISPATCH_W(tw, TW,
        cu_launch(rmsnorm_kernel<TA, TW>, (unsigned)rows, threads, 0, st, (TA *)out, (TA *)residual, (const TA *)x,
                                                                   (const TW *)w, cols, eps)));
    return cudaGetLastError();
}
