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
extern "C" {
#include "core/log.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- cuBLASLt plans ---------------------------------------------------
 * A plan is everything one product shape needs (descriptors + algorithm),
 * kept per exact shape so an eager step does not rebuild descriptors or ask
 * the heuristic again for every linear. The algorithm is tuned once per
 * shape class (same N, K, strides, output type; T rounded up to a power of
 * two): the heuristic's top candidates are each timed on the real operands
 * and the fastest kept. Only outside a graph capture, only when out does not
 * alias x. HEARTH_CUDA_LT_TUNE=0 keeps the heuristic's first choice
 * (comparisons); =2 also prints each choice to stderr. */
#define LT_PLANS 512
#define LT_CANDIDATES 8

typedef struct lt_key {
    int64_t T, N, K, ldx, ldo;
    int to;
    int align; /* lt_align_key: the operands' alignments, part of the key */
} lt_key;

typedef struct lt_plan {
    bool used;
    lt_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct lt_class {
    bool used;
    lt_key key; /* T = power-of-two bucket */
    cublasLtMatmulAlgo_t algo;
} lt_class;

typedef struct lt_cache {
    lt_plan plans[LT_PLANS];
    lt_class classes[LT_PLANS];
    cudaEvent_t ev[2];
    bool ev_ok;
} lt_cache;

/* HEARTH_CUDA_LT_TUNE=1 times the heuristic's candidates once per shape
 * class and keeps the fastest (=2 also prints). Off by default: the pick
 * depends on timings, so two runs of the same model could use different
 * algorithms, for at most ~1 % (H100, 2026-12-06: 256-sequence decode step
 * 11.97 ms tuned vs 12.09 ms untuned). */
static int lt_tune_mode(void) {
    static int v = -1;
    if (v < 0) v = HR_MAX(hr_env_int("HEARTH_CUDA_LT_TUNE", 0), 0);
    return v;
}

/* HEARTH_CUDA_LT_LOG=1: one line per new plan (shape, rows, the time its
 * heuristic query took), to see what a step of new row count costs */
static bool lt_log_on(void) {
    static int v = -1;
    if (v < 0) v = hr_env_on("HEARTH_CUDA_LT_LOG", false);
    return v != 0;
}

static uint64_t lt_hash(const lt_key *k) {
    uint64_t h = 1469598103934665603ull;
    const int64_t v[7] = {k->T, k->N, k->K, k->ldx, k->ldo, k->to, k->align};
    for (int i = 0; i < 7; i++) h = (h ^ (uint64_t)v[i]) * 1099511628211ull;
    return h;
}
static bool lt_key_eq(const lt_key *a, const lt_key *b) {
    return a->T == b->T && a->N == b->N && a->K == b->K && a->ldx == b->ldx && a->ldo == b->ldo && a->to == b->to &&
           a->align == b->align;
}

/* The alignment (bytes, a power of two up to 256) that every row of an
 * operand keeps: its base address and its row stride in bytes. */
static uint32_t row_align(const void *p, int64_t ld_bytes) {
    uintptr_t v = (uintptr_t)p | (uintptr_t)ld_bytes | (uintptr_t)256;
    return (uint32_t)(v & (~v + 1));
}
/* cuBLASLt's heuristic assumes 256-byte aligned operands unless told
 * otherwise, and an algorithm picked for aligned buffers may read a view at
 * a row offset wrongly: the alignments of W, X and the output are part of
 * the plan key and go to the heuristic as minimum alignments. */
static void lt_aligns(const cu_gemv_args *a, uint32_t al[3]) {
    al[0] = row_align(a->w, a->K * 2);
    al[1] = row_align(a->x, a->ldx * 2);
    al[2] = row_align(a->out, a->ldo * (a->to == HR_F32 ? 4 : 2));
}
static int lt_align_key(const cu_gemv_args *a) {
    uint32_t al[3];
    lt_aligns(a, al);
    return (int)(al[0] | (al[1] << 9) | (al[2] << 18));
}

static void plan_destroy(lt_plan *p) {
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    memset(p, 0, sizeof(*p));
}

void cu_lt_cache_free(cu_backend *c) {
    lt_cache *lc = (lt_cache *)c->lt_cache;
    if (!lc) return;
    for (int i = 0; i < LT_PLANS; i++)
        if (lc->plans[i].used) plan_destroy(&lc->plans[i]);
    if (lc->ev_ok) {
        cudaEventDestroy(lc->ev[0]);
        cudaEventDestroy(lc->ev[1]);
    }
    free(lc);
    c->lt_cache = NULL;
}

/* The slot for key in an open-addressing table: its entry, or an empty slot
 * (a full table is emptied with clear first). */
template <typename E, typename F> static E *table_slot(E *tab, const lt_key *k, F clear) {
    uint64_t h = lt_hash(k);
    for (int probe = 0; probe < 2; probe++) {
        for (int i = 0; i < LT_PLANS; i++) {
            E *p = &tab[(h + (uint64_t)i) % LT_PLANS];
            if (!p->used || lt_key_eq(&p->key, k)) return p;
        }
        clear();
    }
    return &tab[h % LT_PLANS];
}
static lt_plan *plan_slot(lt_cache *lc, const lt_key *k) {
    return table_slot(lc->plans, k, [lc] {
        for (int i = 0; i < LT_PLANS; i++) plan_destroy(&lc->plans[i]);
    });
}
static lt_class *class_slot(lt_cache *lc, const lt_key *k) {
    return table_slot(lc->classes, k, [lc] { memset(lc->classes, 0, sizeof(lc->classes)); });
}

static cublasStatus_t plan_build(const cu_gemv_args *a, lt_plan *p) {
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cudaDataType_t dt = a->to == HR_F32 ? CUDA_R_32F : CUDA_R_16BF;
    cublasStatus_t s = cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if ((s = cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, a->K, a->N, a->K)) != CUBLAS_STATUS_SUCCESS) return s;
    if ((s = cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, a->K, a->T, a->ldx)) != CUBLAS_STATUS_SUCCESS) return s;
    return cublasLtMatrixLayoutCreate(&p->ld, dt, a->N, a->T, a->ldo);
}

static cublasStatus_t plan_run(cu_backend *c, const cu_gemv_args *a, const lt_plan *p, const cublasLtMatmulAlgo_t *algo) {
    float beta = 0.0f;
    return cublasLtMatmul(c->lt, p->op, &a->alpha, a->w, p->la, a->x, p->lb, &beta, a->out, p->ld, a->out, p->ld,
                          algo, c->lt_ws, c->lt_ws_size, c->stream);
}

/* Times the heuristic's candidates on the real operands; returns the index
 * of the fastest (0, the heuristic's first choice, when none could be timed). */
static int plan_tune(cu_backend *c, lt_cache *lc, const cu_gemv_args *a, const lt_plan *p,
                     const cublasLtMatmulHeuristicResult_t *res, int nres) {
    int ran = 0, best = 0;
    float best_us = 0;
    for (int i = 0; i < nres; i++) {
        if (plan_run(c, a, p, &res[i].algo) != CUBLAS_STATUS_SUCCESS) continue; /* warm-up */
        float ms = 0;
        cudaEventRecord(lc->ev[0], c->stream);
        for (int r = 0; r < 3; r++) plan_run(c, a, p, &res[i].algo);
        cudaEventRecord(lc->ev[1], c->stream);
        if (cudaEventSynchronize(lc->ev[1]) != cudaSuccess || cudaEventElapsedTime(&ms, lc->ev[0], lc->ev[1]) != cudaSuccess)
            continue;
        float us = ms * 1000.0f / 3.0f;
        if (lt_tune_mode() >= 2)
            fprintf(stderr, "[cuda] lt tune T=%lld N=%lld K=%lld: candidate %d %.1f us (waves %.2f)\n",
                    (long long)a->T, (long long)a->N, (long long)a->K, i, us, res[i].wavesCount);
        if (ran == 0 || us < best_us) {
            best = i;
            best_us = us;
        }
        ran++;
    }
    return best;
}

/* cuBLASLt, column-major view: D[N, T] = W^T[N, K] . X[K, T] where the
 * row-major W[N, K] is a column-major K x N matrix (so op A = T). */
static cublasStatus_t lt_matmul(cu_backend *c, const cu_gemv_args *a) {
    if (!c->lt_cache) {
        lt_cache *lc = (lt_cache *)calloc(1, sizeof(lt_cache));
        if (!lc) return CUBLAS_STATUS_ALLOC_FAILED;
        lc->ev_ok = cudaEventCreate(&lc->ev[0]) == cudaSuccess && cudaEventCreate(&lc->ev[1]) == cudaSuccess;
        c->lt_cache = lc;
    }
    lt_cache *lc = (lt_cache *)c->lt_cache;
    lt_key key = {a->T, a->N, a->K, a->ldx, a->ldo, (int)a->to, lt_align_key(a)};
    lt_plan *p = plan_slot(lc, &key);
    if (p->used) return plan_run(c, a, p, &p->algo);

    cublasStatus_t s = plan_build(a, p);
    if (s != CUBLAS_STATUS_SUCCESS) {
        plan_destroy(p);
        return s;
    }
    const double t_plan = lt_log_on() ? hr_time_now() : 0;
    lt_key ck = key;
    ck.T = 1;
    while (ck.T < a->T) ck.T *= 2;
    lt_class *cl = class_slot(lc, &ck);
    cublasLtMatmulHeuristicResult_t chk;
    if (cl->used && cublasLtMatmulAlgoCheck(c->lt, p->op, p->la, p->lb, p->ld, p->ld, &cl->algo, &chk) ==
                        CUBLAS_STATUS_SUCCESS && chk.workspaceSize <= c->lt_ws_size) {
        p->algo = cl->algo;
    } else {
        cublasLtMatmulPreference_t pref = NULL;
        cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
        int nres = 0;
        cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
        cudaStreamIsCapturing(c->stream, &cap);
        size_t xb = (size_t)a->T * a->ldx * 2, ob = (size_t)a->T * a->ldo * (a->to == HR_F32 ? 4 : 2);
        bool alias = (const char *)a->out < (const char *)a->x + xb && (const char *)a->x < (const char *)a->out + ob;
        bool tune = lt_tune_mode() > 0 && lc->ev_ok && cap == cudaStreamCaptureStatusNone && !alias;
        if ((s = cublasLtMatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) {
            plan_destroy(p);
            return s;
        }
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_size,
                                             sizeof(c->lt_ws_size));
        uint32_t al[3];
        lt_aligns(a, al);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0], sizeof(al[0]));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1], sizeof(al[1]));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2], sizeof(al[2]));
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2], sizeof(al[2]));
        s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->ld, p->ld, pref, tune ? LT_CANDIDATES : 1,
                                           res, &nres);
        cublasLtMatmulPreferenceDestroy(pref);
        if (s == CUBLAS_STATUS_SUCCESS && nres < 1) s = CUBLAS_STATUS_NOT_SUPPORTED;
        if (s != CUBLAS_STATUS_SUCCESS) {
            plan_destroy(p);
            return s;
        }
        int best = tune && nres > 1 ? plan_tune(c, lc, a, p, res, nres) : 0;
        if (lt_tune_mode() >= 2)
            fprintf(stderr, "[cuda] lt plan T=%lld N=%lld K=%lld: candidate %d of %d%s\n", (long long)a->T,
                    (long long)a->N, (long long)a->K, best, nres, tune ? " (tuned)" : "");
        p->algo = res[best].algo;
        if (tune) {
            cl->used = true;
            cl->key = ck;
            cl->algo = p->algo;
        }
    }
    p->used = true;
    p->key = key;
    if (lt_log_on())
        hr_log(HR_LOG_INFO, "cuda lt: new plan T %lld N %lld K %lld: %.0f us", (long long)a->T, (long long)a->N,
               (long long)a->K, 1e6 * (hr_time_now() - t_plan));
    return plan_run(c, a, p, &p->algo);
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
    if (cu_wgmma_ok(&a)) {
        if ((e = cu_wgmma_linear(c->stream, &a, c->n_sm, c->wg_ws, c->wg_ws ? CU_WGMMA_WS : 0, c->wg_sem,
                                 c->wg_sem ? CU_WGMMA_SEMS : 0)) != cudaSuccess)
            rc = cu_fail(c, e, "wgmma gemm");
        goto out;
    }
    if (cu_wgmma_mode() == 2 && a.tx == HR_BF16 && a.tw == HR_BF16 && a.T >= 64 && !a.expert && !a.chunks &&
        a.nseg <= 1) {
        /* HEARTH_CUDA_WGMMA=2 (tests): such a linear must take the Hopper GEMM */
        rc = hr_err_set(&c->base.err, HR_EUNSUP, "cuda linear: HEARTH_CUDA_WGMMA=2 but T %d K %lld N %lld cannot take it",
                        a.T, (long long)a.K, (long long)a.N);
        goto out;
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
