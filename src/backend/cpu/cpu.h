/* CPU backend internals: the reference implementation of every backend op, in
 * float32, multi-threaded through one hr_threadpool per backend.
 * Owns: host tensors (64-byte aligned; >= 2 MiB ones on transparent huge
 * pages), per-thread and per-op scratch, the ISA kernel table.
 * Must not know: models, requests, the scheduler.
 *
 * What is vectorised. Only the loops that dominate time are ISA-specific,
 * gathered in one table (cpu_kernels):
 *   gemm       the linear/MoE tile: CPU_RB weight rows x up to CPU_TB tokens in
 *              registers, weights F32/BF16/F16 widened to float32 on load,
 *              float32 FMA accumulation (AVX-512 has a separate 8-chain
 *              loop for T = 1, decode, to keep the weight stream at memory
 *              speed);
 *   dot_rows   attention scores for a run of keys of one cache block (AVX-512:
 *              16 keys at a time, transpose-add reduction);
 *   axpy_rows  the probability-weighted sum of values;
 *   exp_sum    the softmax numerator (polynomial exp, rel. error < 3e-7).
 * Norms, rope, routing, swiglu and the fp8 input rounding are plain C.
 *
 * Dispatch. cpu_kernels_avx512.c (AVX-512F/BW/VL/DQ, masked tails) and
 * cpu_kernels_avx2.c (AVX2+FMA+F16C) are compiled with those flags (CMake,
 * by file name); cpu_kernels_scalar.c is plain C. hr_backend_cpu_create picks
 * the best table __builtin_cpu_supports allows, unless $HEARTH_CPU_ISA
 * (scalar|avx2|avx512) names one; a name the machine cannot run falls back to
 * scalar with a warning. hr_backend_cpu_isa() says which one is in use. */
#ifndef HEARTH_BACKEND_CPU_H
#define HEARTH_BACKEND_CPU_H

#include "backend/backend.h"
#include "core/threadpool.h"

/* out[t * ldo + n] = sum_k x[t * ldx + k] * w[n][k] for n in [n0, n1), t in
 * [0, T). w is row-major [N, K] of dtype wt (F32, BF16 or F16). Weight rows are
 * read once per block of up to CPU_TB tokens. No bias. */
typedef void (*cpu_gemm_fn)(float *out, int ldo, const float *x, int ldx, int T, const void *w, hr_dtype wt, int K,
                            int n0, int n1);

typedef struct cpu_kernels {
    const char *name; /* "scalar", "avx2", "avx512" */
    cpu_gemm_fn gemm;
    /* attention over one block of keys/values, rows `stride` floats apart:
     * out[i] = dot(q, k + i * stride) for i < n (vectors of d floats) */
    void (*dot_rows)(const float *q, const float *k, size_t stride, int n, int d, float *out);
    /* acc[0..d) += sum_i w[i] * v[i * stride + 0..d) */
    void (*axpy_rows)(float *acc, const float *w, const float *v, size_t stride, int n, int d);
    /* softmax numerator: x[i] = exp(x[i] - m) for x[i] <= m; returns the sum */
    float (*exp_sum)(float *x, int n, float m);
} cpu_kernels;

#define CPU_TB 4 /* tokens per register block in the GEMM tile */
#define CPU_RB 4 /* weight rows per register block */

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;
#define CPU_HAVE_X86 1
#endif

typedef struct cpu_backend {
    hr_threadpool *pool;
    int n_threads;
    const cpu_kernels *k;
    /* one growable scratch buffer per thread (tid of hr_parallel_for) and one
     * shared buffer for op-level temporaries; reused across ops */
    float **scratch;
    size_t *scratch_len;
    void *shared[4]; /* CPU_SLOT_* */
    size_t shared_len[4];
    size_t mem_in_use, mem_peak; /* tensor bytes; ops are serial, no atomics needed */
} cpu_backend;

static inline cpu_backend *cpu_of(hr_backend *be) { return (cpu_backend *)be->impl; }

/* Name of the ISA the backend dispatches to ("scalar", "avx2", "avx512"). */
const char *hr_backend_cpu_isa(hr_backend *be);

/* Makes sure every thread's scratch holds n floats. HR_OK or HR_ENOMEM. */
int cpu_scratch_reserve(hr_backend *be, size_t n);
/* Op-level scratch buffers, one per purpose so that an op can call another
 * (moe -> linear) without clobbering its own temporaries. */
enum { CPU_SLOT_VEC = 0, CPU_SLOT_FP8 = 1, CPU_SLOT_MOE = 2, CPU_SLOT_ATTN = 3 };
/* Slot's buffer grown to nbytes (64-byte aligned, contents not kept), or NULL with be->err set. */
void *cpu_shared(hr_backend *be, int slot, size_t nbytes);
/* An F32/BF16/F16 vector of n elements as float32: t->data when F32, else a
 * converted copy in `slot`. NULL with be->err set on a bad tensor. */
const float *cpu_vec_f32(hr_backend *be, const char *op, const hr_tensor *t, int64_t n, int slot);

/* Multi-threaded GEMM with optional bias and FP8 input rounding; the engine
 * room of linear() and moe(). x is [T, K] float32, out [T, ldo]. */
int cpu_linear_raw(hr_backend *be, float *out, int ldo, const float *x, int T, int K, const void *w, hr_dtype wt, int N,
                   const float *bias, float input_scale);

/* x -> e4m3(x / s) * s, saturating at +-448 (W8A8 static input quantization). */
float cpu_fp8_round(float x, float s);

/* ops implemented in the other files */
int cpu_op_linear(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_linear *l);
int cpu_op_rope(hr_backend *be, hr_tensor *x, int n_heads, const hr_rope *rope, const hr_step *step);
/* rope(q) into q_out, rope(k) and v into the caches, from the fused q|k|v rows (the reference of
 * the CUDA op): copies the parts out, then runs cpu_op_rope and cpu_op_kv_store. */
int cpu_op_qkv_rope_store(hr_backend *be, hr_tensor *q_out, const hr_tensor *qkv, hr_tensor *k_cache,
                          hr_tensor *v_cache, int n_heads, int n_kv_heads, const hr_rope *rope, const hr_step *step);
int cpu_op_kv_store(hr_backend *be, hr_tensor *k_cache, hr_tensor *v_cache, const hr_tensor *k, const hr_tensor *v,
                    const hr_step *step);
int cpu_op_attention(hr_backend *be, hr_tensor *out, const hr_tensor *q, const hr_tensor *k_cache,
                     const hr_tensor *v_cache, const hr_step *step, const hr_attn_params *p);
int cpu_op_moe(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_moe *moe);
int cpu_op_swiglu(hr_backend *be, hr_tensor *out, const hr_tensor *gate, const hr_tensor *up, const hr_act *act);
/* the `sample` op: hr_sample_row_ref on each row (cpu_sample.c) */
int cpu_sample(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n_rows, int32_t *ids_host);

/* swiglu on raw rows (used by moe as well) */
void cpu_swiglu_rows(float *out, const float *gate, const float *up, size_t n, const hr_act *act);

/* Checks a tensor's dtype and minimum element count; sets be->err. */
int cpu_check(hr_backend *be, const char *op, const hr_tensor *t, const char *what, hr_dtype dt, int64_t min_elems);

#endif
