/* The linear op's dispatch: out[T, N] = x[T, K] @ w[N, K]^T (+ bias).
 *   T = 1 (decode; up to 4 for lm_head-sized weights), or weights that are not
 *     BF16: the weight-streaming GEMV (gemm/gemv.cu), split over K when its
 *     grid is too small;
 *   larger T with BF16 weights and activations: cuBLASLt (tensor cores), bias
 *     in a small kernel after it;
 *   anything else: the scalar fallback.
 * W8A8 FP8 (input_scale > 0): x is first rounded to e4m3(x/s) (exact in BF16)
 * and the product is scaled by s, which equals rounding x to e4m3(x/s)*s. */
#include "backend/cuda/cu_types.cuh"

#include <stdlib.h>

/* Largest token count that takes the GEMV for BF16 weights. Measured on H100
 * (docs/CUDA.md): the FP32-FMA GEMV streams weights at 88-100% of the copy
 * bandwidth at T = 1 but turns FMA-bound from T = 4; cuBLASLt (tensor cores)
 * stays flat in T. So: T = 1, and up to 4 for very tall weights (lm_head),
 * where the GEMV still wins. HEARTH_CUDA_GEMV_MAX_T overrides (benchmarks). */
static int gemv_max_t(int64_t N) {
    static int v = -2;
    if (v == -2) {
        const char *e = getenv("HEARTH_CUDA_GEMV_MAX_T");
        v = e ? HR_MAX(atoi(e), 0) : -1;
    }
    if (v >= 0) return v;
    return N >= 32768 ? 4 : 1;
}

static bool use_lt(const cu_gemv_args *a) {
    return a->T > gemv_max_t(a->N) && a->tw == HR_BF16 && a->tx == HR_BF16 && !a->expert &&
           (a->to == HR_BF16 || a->to == HR_F32);
}

size_t cu_linear_scratch(const cu_backend *c, const cu_gemv_args *a, float input_scale) {
    size_t need = 0;
    if (input_scale > 0) need += HR_CDIV((size_t)a->T * a->K * 2, 256) * 256;
    if (!use_lt(a) || input_scale > 0) {
        cu_gemv_args b = *a;
        if (input_scale > 0) {
            b.tx = HR_BF16;
            b.ldx = b.K;
        }
        int s = cu_gemv_splits(&b, c->n_sm);
        if (s > 1) need += HR_CDIV((size_t)s * a->T * a->N * 4, 256) * 256;
    }
    return need + 512;
}

/* cuBLASLt, column-major view: D[N, T] = W^T[N, K] . X[K, T] where the
 * row-major W[N, K] is a column-major K x N matrix (so op A = T). */
static cublasStatus_t lt_matmul(cu_backend *c, const cu_gemv_args *a) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    float beta = 0.0f;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType_t dt = a->to == HR_F32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasStatus_t s = cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) goto fail;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if ((s = cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, a->K, a->N, a->K)) != CUBLAS_STATUS_SUCCESS) goto fail;
    if ((s = cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, a->K, a->T, a->ldx)) != CUBLAS_STATUS_SUCCESS) goto fail;
    if ((s = cublasLtMatrixLayoutCreate(&ld, dt, a->N, a->T, a->ldo)) != CUBLAS_STATUS_SUCCESS) goto fail;
    if ((s = cublasLtMatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) goto fail;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_size,
                                         sizeof(c->lt_ws_size));
    s = cublasLtMatmulAlgoGetHeuristic(c->lt, op, la, lb, ld, ld, pref, 1, &res, &nres);
    if (s != CUBLAS_STATUS_SUCCESS) goto fail;
    if (nres < 1) {
        s = CUBLAS_STATUS_NOT_SUPPORTED;
        goto fail;
    }
    s = cublasLtMatmul(c->lt, op, &a->alpha, a->w, la, a->x, lb, &beta, a->out, ld, a->out, ld, &res.algo, c->lt_ws,
                       c->lt_ws_size, c->stream);
fail:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return s;
}

int cu_linear_raw(cu_backend *c, cu_gemv_args a, float input_scale) {
    size_t mark = c->scratch_top;
    int rc = HR_OK;
    cudaError_t e;
    if (input_scale > 0) {
        bf16 *q = (bf16 *)cu_scratch_push(c, (size_t)a.T * a.K * 2);
        if (!q) {
            rc = hr_err_set(&c->base.err, HR_ENOMEM, "cuda linear: scratch too small for FP8 input rounding");
            goto out;
        }
        if ((e = cu_fp8_round(c->stream, q, a.x, a.tx, a.ldx, a.T, a.K, 1.0f / input_scale)) != cudaSuccess) {
            rc = cu_fail(c, e, "fp8 input rounding");
            goto out;
        }
        a.x = q;
        a.tx = HR_BF16;
        a.ldx = a.K;
        a.alpha *= input_scale;
    }
    if (use_lt(&a) && (uintptr_t)a.w % 16 == 0 && (uintptr_t)a.x % 16 == 0 && a.ldx % 8 == 0) {
        cublasStatus_t s = lt_matmul(c, &a);
        if (s == CUBLAS_STATUS_SUCCESS) {
            if (a.bias && (e = cu_bias_add(c->stream, a.out, a.to, a.ldo, a.bias, a.T, a.N)) != cudaSuccess)
                rc = cu_fail(c, e, "bias add");
            goto out;
        }
        if (s != CUBLAS_STATUS_NOT_SUPPORTED) {
            rc = hr_err_set(&c->base.err, HR_EIO, "cuda linear: cuBLASLt failed (status %d)", (int)s);
            goto out;
        }
        /* no algorithm for this shape: fall through to the kernels below */
    }
    if (cu_gemv_ok(&a)) {
        int splits = cu_gemv_splits(&a, c->n_sm);
        float *part = NULL;
        if (splits > 1 && !(part = (float *)cu_scratch_push(c, (size_t)splits * a.T * a.N * 4))) splits = 1;
        e = cu_gemv(c->stream, &a, splits, part);
        if (e != cudaSuccess) rc = cu_fail(c, e, "gemv");
    } else {
        e = cu_gemm_tiled(c->stream, &a);
        if (e != cudaSuccess) rc = cu_fail(c, e, "gemm (fallback)");
    }
out:
    c->scratch_top = mark;
    return rc;
}
