/* The compute backend interface: device buffers (tensors), weight upload and
 * the handful of fused ops the forward pass calls. The CPU backend is the
 * reference implementation of every op; the CUDA backend must match it within
 * each op's stated tolerance (tests/backend/).
 * Must not know: models by name, requests, the scheduler, HTTP.
 * All ops are asynchronous on the backend's stream; only tensor_get (and
 * sync) wait. Ops return HR_OK or a negative code with a message in be->err. */
#ifndef HEARTH_BACKEND_H
#define HEARTH_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "core/dtype.h"

#define HR_MAX_DIMS 4

typedef struct hr_backend hr_backend;

/* A tensor in backend memory. Row-major; ne[ndim-1] is the contiguous
 * dimension (numpy order). data is a host pointer on the CPU backend and a
 * device pointer on CUDA. The backend that allocated it frees it. */
typedef struct hr_tensor {
    hr_dtype dtype;
    int ndim;
    int64_t ne[HR_MAX_DIMS];
    void *data;
    size_t nbytes;
    hr_backend *be;
    char name[64]; /* for messages; may be empty */
} hr_tensor;

static inline int64_t hr_tensor_nelem(const hr_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}
/* Rows = product of all but the last dim; cols = last dim. */
static inline int64_t hr_tensor_cols(const hr_tensor *t) { return t->ne[t->ndim - 1]; }
static inline int64_t hr_tensor_rows(const hr_tensor *t) { return hr_tensor_nelem(t) / t->ne[t->ndim - 1]; }

/* ---- one step of the model: a plain, printable batch description -------- */
/* Ragged batch of n_seqs sequences; sequence s owns tokens
 * [query_start[s], query_start[s+1]) of the flat token arrays. Each token's
 * K/V goes to slot slot_mapping[t] = block * block_size + offset of the paged
 * cache; sequence s reads its context (seq_lens[s] tokens, the new ones
 * included) through block_tables[s * max_blocks_per_seq + i]. All arrays are
 * host memory owned by the caller; the backend copies what it needs. */
typedef struct hr_step {
    int n_tokens;
    const int32_t *tokens;       /* [n_tokens] */
    const int32_t *positions;    /* [n_tokens] position within its sequence */
    const int32_t *slot_mapping; /* [n_tokens] */
    int n_seqs;
    const int32_t *query_start;  /* [n_seqs + 1] */
    const int32_t *seq_lens;     /* [n_seqs] context length after this step */
    const int32_t *block_tables; /* [n_seqs * max_blocks_per_seq], -1 = unused */
    int max_blocks_per_seq;
    int block_size;
    int n_logits;                /* number of rows whose logits are wanted */
    const int32_t *logit_rows;   /* [n_logits] token indices, ascending */
} hr_step;

/* ---- op parameters -------------------------------------------------------- */
typedef struct hr_linear {
    hr_tensor *w;       /* [out, in]: F32, BF16 or F16 (backend may support more) */
    hr_tensor *bias;    /* [out] F32, or NULL */
    float input_scale;  /* > 0: W8A8 FP8 - each input is rounded through E4M3 at
                           this static scale (x -> e4m3(x/s)*s, saturating) */
} hr_linear;

/* Rotary embedding: the model computes inv_freq for its RoPE variant (default,
 * llama3, YaRN); the backend rotates pairs (i, i + rot_dim/2) of the first
 * rot_dim dims of each head (HF "rotate_half" / NeoX style) by pos * inv_freq[i],
 * and multiplies cos and sin by mscale (YaRN attention factor, else 1). */
typedef struct hr_rope {
    int head_dim;
    int rot_dim;          /* rotated dims (== head_dim unless partial) */
    const float *inv_freq;/* [rot_dim / 2], host memory owned by the model */
    float mscale;
} hr_rope;

typedef struct hr_attn_params {
    int n_heads, n_kv_heads, head_dim;
    float scale;             /* usually 1/sqrt(head_dim) */
    int window;              /* > 0: a query at position p sees keys at positions > p - window */
    const hr_tensor *sinks;  /* [n_heads] F32 attention-sink logits (gpt-oss), or NULL */
} hr_attn_params;

/* SwiGLU and its clamped variant (gpt-oss):
 *   g = limit > 0 ? min(gate, limit) : gate
 *   u = limit > 0 ? clamp(up, -limit, limit) : up
 *   out = g * sigmoid(alpha * g) * (u + up_offset)
 * Plain SwiGLU is alpha = 1, limit = 0, up_offset = 0. */
typedef struct hr_act {
    float alpha, limit, up_offset;
} hr_act;

typedef enum {
    HR_ROUTE_SOFTMAX_TOPK = 0, /* Mixtral: softmax over all experts, top-k, renormalise */
    HR_ROUTE_TOPK_SOFTMAX = 1, /* gpt-oss: top-k of (logits + bias), softmax over the k */
} hr_route;

/* Mixture of experts feed-forward. Expert weights are stacked 3-D tensors. */
typedef struct hr_moe {
    int n_experts, top_k;
    hr_route route;
    bool renormalize;        /* SOFTMAX_TOPK: divide the k weights by their sum */
    hr_linear router;        /* [n_experts, hidden] + optional bias */
    hr_tensor *gate, *up;    /* [E, ffn, hidden] */
    hr_tensor *down;         /* [E, hidden, ffn] */
    hr_tensor *gate_bias, *up_bias; /* [E, ffn] F32 or NULL */
    hr_tensor *down_bias;    /* [E, hidden] F32 or NULL */
    hr_act act;
} hr_moe;

/* ---- sampling (the `sample` op) ------------------------------------------- */
/* A token the row's penalties apply to: generated `count` times so far and/or
 * present in the prompt (repetition penalty only). Each id appears once. */
typedef struct hr_sample_pen {
    int32_t id;
    int32_t count;
    int32_t in_prompt;
} hr_sample_pen;

/* One logits row's sampling parameters. Arrays are host memory owned by the
 * caller, valid during the call. Order of operations (vLLM v1, the engine's
 * sampler): logit_bias; mask_ids set to -inf (the caller passes them only
 * while min_tokens is in force); penalties (repetition: x / rp if x > 0 else
 * x * rp, for ids in the prompt or generated; then x -= count * frequency +
 * presence for generated ids); then greedy (temperature < 1e-5: lowest id of
 * the maximum, NaN never chosen) or x /= temperature (multiply by
 * 1.0f / temperature), min-p (keep x >= max + log(min_p)), top-k (keep x >=
 * the k-th largest value: ties with it are kept), top-p (with w = expf(x -
 * max), keep a token when the tokens of strictly larger value hold < top_p
 * of the remaining mass: ties are kept or dropped together); finally
 * u = hr_philox_uniform(seed, counter), r = u * (sum of kept w) and the
 * result is the first kept id, in ascending id order, at which the running
 * sum of w exceeds r (the last kept id if rounding leaves r on top). Sums are
 * double. A row of -inf/NaN only gives 0. */
typedef struct hr_sample_row {
    float temperature;  /* < 1e-5: greedy */
    int top_k;          /* <= 0 or >= vocab: off */
    float top_p;        /* >= 1: off */
    float min_p;        /* <= 0: off */
    uint64_t seed;      /* Philox key */
    uint64_t counter;   /* Philox counter: tokens the request generated so far */
    float presence_penalty, frequency_penalty, repetition_penalty; /* 0, 0, 1 = off */
    int n_pen;
    const hr_sample_pen *pen;
    int n_mask;
    const int32_t *mask_ids;   /* ids outside [0, vocab) are ignored */
    int n_bias;
    const int32_t *bias_ids;   /* ids outside [0, vocab) are ignored */
    const float *bias_vals;
} hr_sample_row;

/* The reference of the `sample` op for one row (cpu/cpu_sample.c; the engine's
 * host sampler calls it too): writes the sampled id to *id, modifies logits
 * [vocab] in place. HR_OK, or HR_ENOMEM (then *id is the row's argmax). */
int hr_sample_row_ref(const hr_sample_row *row, float *logits, int vocab, int32_t *id);

/* ---- the interface -------------------------------------------------------- */
typedef struct hr_backend_ops {
    const char *name;
    void (*free)(hr_backend *be);

    /* buffers; tensor_new returns zero-filled memory on every backend */
    hr_tensor *(*tensor_new)(hr_backend *be, hr_dtype dtype, int ndim, const int64_t *ne, const char *name);
    void (*tensor_free)(hr_backend *be, hr_tensor *t);
    /* host may be freed or reused once tensor_set returns; every later op and
     * tensor_get sees the data (CUDA: large sets go through pinned staging and
     * may still be in DMA on return, ordered before the stream's later work) */
    int (*tensor_set)(hr_backend *be, hr_tensor *t, const void *host, size_t offset, size_t nbytes);
    int (*tensor_get)(hr_backend *be, const hr_tensor *t, void *host, size_t offset, size_t nbytes); /* waits */
    int (*tensor_zero)(hr_backend *be, hr_tensor *t);
    bool (*supports_weight)(hr_backend *be, hr_dtype dtype);

    /* step bracket: the CUDA backend may capture/replay the ops in between as a graph */
    int (*step_begin)(hr_backend *be, const hr_step *step);
    int (*step_end)(hr_backend *be);
    int (*sync)(hr_backend *be);

    /* ops; activations are in be->act_dtype, except that linear() may write an
     * F32 output (logits) and every op accepts F32 weights/norm vectors */
    int (*embed)(hr_backend *be, hr_tensor *out, const hr_tensor *table, const hr_step *step);
    int (*rmsnorm)(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_tensor *w, float eps);
    /* residual += x; out = rmsnorm(residual) * w */
    int (*add_rmsnorm)(hr_backend *be, hr_tensor *out, hr_tensor *residual, const hr_tensor *x,
                       const hr_tensor *w, float eps);
    int (*add)(hr_backend *be, hr_tensor *out, const hr_tensor *a, const hr_tensor *b);
    /* out[T, out] = x[T, in] @ w^T + bias */
    int (*linear)(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_linear *l);
    /* in place on x[T, n_heads * head_dim], positions from step */
    int (*rope)(hr_backend *be, hr_tensor *x, int n_heads, const hr_rope *rope, const hr_step *step);
    /* writes k, v [T, n_kv * head_dim] into the caches [n_blocks, block_size, n_kv, head_dim] */
    int (*kv_store)(hr_backend *be, hr_tensor *k_cache, hr_tensor *v_cache, const hr_tensor *k,
                    const hr_tensor *v, const hr_step *step);
    /* out[T, n_heads * head_dim]: causal (by position) attention of each token over its sequence's cache */
    int (*attention)(hr_backend *be, hr_tensor *out, const hr_tensor *q, const hr_tensor *k_cache,
                     const hr_tensor *v_cache, const hr_step *step, const hr_attn_params *p);
    /* out[T, F] = act(gate, up); up == NULL: gate is [T, 2F], each row the gate
     * half then the up half (the fused gate|up projection's output) */
    int (*swiglu)(hr_backend *be, hr_tensor *out, const hr_tensor *gate, const hr_tensor *up, const hr_act *act);
    int (*moe)(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_moe *moe);
    /* out[n_logits, cols] = x[step->logit_rows[i], :] */
    int (*get_rows)(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_step *step);

    /* optional (NULL = unsupported) */
    /* The attention input of the fused q|k|v projection in one op: qkv [T, (n_heads + 2 n_kv) * head_dim]
     * holds each token's q heads, then k heads, then v heads; q_out [T, n_heads * head_dim] receives q
     * rotated, k rotated and v go to the caches at the step's slots: rope(q), rope(k), kv_store at once. */
    int (*qkv_rope_store)(hr_backend *be, hr_tensor *q_out, const hr_tensor *qkv, hr_tensor *k_cache,
                          hr_tensor *v_cache, int n_heads, int n_kv_heads, const hr_rope *rope, const hr_step *step);
    /* dst = src, same dtype and byte size (device-to-device on CUDA); used by `hearth bench copy` */
    int (*copy)(hr_backend *be, hr_tensor *dst, const hr_tensor *src);
    /* memory the backend holds now / at peak, and the device total (CPU: RSS-like, may be 0) */
    int (*mem_info)(hr_backend *be, size_t *in_use, size_t *peak, size_t *total);
    /* ids_host[r] = index of the largest value of row r of logits [rows, vocab] F32,
     * the lowest index on ties, NaN never chosen (0 for a row of NaN only), as
     * the sampler's greedy argmax; host memory; waits. Greedy decoding then
     * moves rows x 4 bytes to the host instead of rows x vocab x 4. */
    int (*argmax)(hr_backend *be, const hr_tensor *logits, int32_t *ids_host);
    /* The batch size a pure-decode step of n_seqs sequences (one new token
     * each) should be padded to, >= n_seqs (n_seqs itself: no padding), so
     * that steps of nearby sizes share one captured CUDA graph. The model pads
     * with dummy sequences (slot -1, nothing stored, logits dropped); the
     * caller sees no difference. NULL: never pad. */
    int (*batch_bucket)(hr_backend *be, int n_seqs);
    /* ids_host[r] = the token sampled from row r of logits [rows, vocab] F32 with
     * rows[r] (n_rows == rows), exactly as hr_sample_row_ref; only the ids cross
     * to the host; the logits may be modified in place; waits. Ids equal the
     * reference's except where a choice rests on an exact tie of probability
     * mass or a rounding-level difference of a sum (see hr_sample_row). */
    int (*sample)(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n_rows, int32_t *ids_host);
    /* With ids_wait, argmax and sample also take ids_host == NULL: the ids
     * are left on their way to the host and the op returns once the work is
     * queued, so the caller can do host work while the device computes;
     * ids_wait(n) then waits and writes the n ids of that op to ids_host.
     * One op may be pending at a time; no other op may run before its wait.
     * NULL: argmax and sample always wait. */
    int (*ids_wait)(hr_backend *be, int32_t *ids_host, int n);
} hr_backend_ops;

struct hr_backend {
    const hr_backend_ops *ops;
    hr_dtype act_dtype; /* activations the model allocates (CPU: F32; CUDA: BF16) */
    hr_dtype kv_dtype;  /* KV cache element type (CPU: F32; CUDA: BF16) */
    bool host_memory;   /* buffers live in host RAM: size the KV cache from system memory */
    hr_err err;         /* last error */
    void *impl;         /* backend-private state */
};

typedef struct hr_backend_opts {
    const char *device;  /* "cpu", "cuda", or NULL/"auto" (cuda when a GPU is present) */
    int n_threads;       /* CPU: worker threads (<= 0: all cores) */
    int device_index;    /* CUDA device ordinal */
} hr_backend_opts;

/* Creates the backend named by opts->device. Returns NULL with err set. */
hr_backend *hr_backend_create(const hr_backend_opts *opts, hr_err *err);
void hr_backend_free(hr_backend *be);

/* Constructors of the implementations (cpu/ and cuda/). */
hr_backend *hr_backend_cpu_create(int n_threads, hr_err *err);
#ifdef HEARTH_HAVE_CUDA
hr_backend *hr_backend_cuda_create(int device_index, hr_err *err);
int hr_backend_cuda_available(void);
/* Compute capability of device 0 as major * 10 + minor (90: H100/H200), 0 without one. */
int hr_backend_cuda_capability(void);
#endif

/* Convenience: host float32 upload/download of a whole F32 tensor. */
hr_tensor *hr_tensor_from_f32(hr_backend *be, int ndim, const int64_t *ne, const float *data, const char *name);
/* Fills t with chunk (chunk_bytes, whole elements of t's dtype) repeated
 * from its start, the last copy cut short: synthetic weights and benchmark
 * operands from one chunk of noise. HR_OK or the tensor_set error. */
int hr_tensor_set_repeated(hr_backend *be, hr_tensor *t, const void *chunk, size_t chunk_bytes);

#endif
