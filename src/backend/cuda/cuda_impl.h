/* Private header of the CUDA backend: the backend state (stream, cuBLASLt
 * handle, caching allocator, op scratch stack, the step's device arrays) and
 * the launchers each kernel file exports to backend_cuda.cu.
 * Owns nothing outside src/backend/cuda. Must not know models, requests or
 * the scheduler: every launcher takes raw device pointers and sizes.
 * Included from .cu files only (C++); the C interface is backend/backend.h. */
#ifndef HEARTH_BACKEND_CUDA_IMPL_H
#define HEARTH_BACKEND_CUDA_IMPL_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "backend/backend.h"
}

#define CU_QTILE 16 /* query tokens per tile of the tensor-core prefill attention */

/* ---- device step arrays (uploaded once per step by step_begin) ---------- */
typedef struct cu_step {
    const hr_step *host;   /* identity of the uploaded step (pointer + counts) */
    int n_tokens, n_seqs, mbps, block_size, n_logits;
    int max_seq_len;       /* host-side maxima: launch shapes without a sync */
    int ctx_bucket;        /* power of two >= max_seq_len (>= 64): attention splits depend on it only */
    int max_q_len;         /* most new tokens of one sequence (prefill when large) */
    int n_tiles;           /* 16-token query tiles, none crossing a sequence */
    int32_t *tiles;        /* [n_tiles][2]: sequence, first token */
    int32_t *tokens, *positions, *slots, *query_start, *seq_lens, *block_tables, *logit_rows;
    int32_t *tok_seq;      /* [n_tokens] sequence index of each token (host-computed) */
} cu_step;

/* ---- decode-step CUDA graphs (step_graph.cu) ------------------------------
 * Between step_begin and step_end every op is also logged by value. A step
 * shape seen before is captured into a graph on its second sighting and
 * replayed from the third: in replay the ops only log, and step_end launches
 * the graph if the log equals the captured one (same buffers and params),
 * else runs the logged ops eagerly and drops the graph. */
typedef enum { CU_OP_EMBED, CU_OP_RMSNORM, CU_OP_ADD_RMSNORM, CU_OP_ADD, CU_OP_LINEAR, CU_OP_ROPE, CU_OP_KV_STORE,
               CU_OP_ATTENTION, CU_OP_SWIGLU, CU_OP_MOE, CU_OP_GET_ROWS, CU_OP_QKV_ROPE_STORE } cu_op_kind;

typedef struct cu_op {
    cu_op_kind kind;
    int n_t;
    hr_tensor t[4];        /* copies: the forward pass passes stack views; a NULL tensor argument is all zeros */
    union {
        hr_linear lin;
        hr_rope rope;
        hr_attn_params attn;
        hr_act act;
        hr_moe moe;
        float eps;
    } p;
    int i0, i1;            /* rope: n_heads; qkv_rope_store: n_heads, n_kv_heads */
    const float *tab;      /* rope, qkv_rope_store: the device table whose contents equal
                              p.rope.inv_freq's when logged (NULL: none yet), so a replay
                              never reads a table the host buffer no longer holds */
} cu_op;

typedef enum { CU_EAGER = 0, CU_CAPTURE, CU_REPLAY } cu_mode;

typedef struct cu_graph {
    int key[8];
    int seen;
    bool failed;
    uint64_t last_use;
    cudaGraphExec_t exec;
    cu_op *log;
    int n_log;
} cu_graph;

#define CU_MAX_GRAPHS 48

/* pinned staging ring of the weight uploads (upload.cu); opaque */
typedef struct cu_upload cu_upload;

typedef struct cu_free_block {
    void *p;
    size_t size;
} cu_free_block;

typedef struct cu_backend {
    hr_backend base;
    int device;
    int n_sm;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_size;
    void *lt_cache;        /* cuBLASLt plans and tuned algorithms (gemm/linear.cu) */
    int *wg_sem;           /* CU_WGMMA_SEMS zeroed split-K tile counters of the Hopper GEMM, or NULL */
    float *wg_ws;          /* its split-K partials, CU_WGMMA_WS bytes */

    /* caching allocator: freed tensor memory is kept for reuse by size, so a
     * steady-state decode step never calls cudaMalloc */
    cu_free_block *free_list;
    int n_free, cap_free;
    size_t in_use, peak;

    /* op scratch: a stack (mark/release) inside one device buffer; grown only
     * when empty (between ops), after a stream sync */
    char *scratch;
    size_t scratch_cap, scratch_top;

    /* step arrays: pinned staging + one device buffer, one memcpy per step */
    int32_t *stage_host, *stage_dev;
    size_t stage_cap;      /* in int32 elements */
    cudaEvent_t stage_done;
    bool stage_pending;
    cu_step step;

    bool use_tc_attn;      /* tensor-core prefill attention (HEARTH_CUDA_ATTN_TC=0: off) */

    /* capture only: linears of one token that share x, held back to be
     * launched as one fused GEMV (q/k/v, gate/up) */
    struct { hr_tensor out, x; hr_linear l; } pend[3];
    int n_pend;
    bool fuse_linears;     /* HEARTH_CUDA_FUSE=0: off */

    /* graphs: the current step's mode, op log and cache entry */
    bool graphs_on;
    bool buckets_on;       /* pad decode batches to size buckets (HEARTH_CUDA_BUCKETS=0: off) */
    cu_mode mode;
    cu_op *log;
    int n_log, cap_log;
    int cur;               /* index into graphs, -1 = none */
    cu_graph graphs[CU_MAX_GRAPHS];
    uint64_t use_clock;

    /* inv_freq tables uploaded once per distinct content (rope_table) */
    struct { const float *host; int n; float *dev; float *copy; } rope_tabs[16]; /* copy: the uploaded values */
    int n_rope_tabs;
    /* argmax ids: device buffer + pinned host copy, grown on demand */
    int32_t *ids_dev, *ids_host;
    int64_t ids_cap;
    /* argmax / sample with ids_host NULL: the pinned buffer the ids are
     * copied into, and how many, until ids_wait */
    const int32_t *ids_pending;
    int ids_pending_n;
    int32_t *moe_host; /* pinned: the grouped MoE path's expert ids and row maps */
    int64_t moe_host_cap;
    cu_upload *upload;     /* tensor_set staging ring, NULL until the first large upload */
    struct cu_sample_bufs *sample; /* the sample op's parameter buffers (sample.cu) */
} cu_backend;

static inline cu_backend *cu_of(hr_backend *be) { return (cu_backend *)be; }

/* ---- launchers (return cudaError_t of the launch) ----------------------- */
/* dtypes are hr_dtype values; each launcher supports F32/BF16 activations
 * (and F16 where noted) and returns cudaErrorNotSupported otherwise. */
cudaError_t cu_embed(cudaStream_t st, void *out, hr_dtype to, const void *table, hr_dtype tt, int64_t vocab,
                     int64_t hidden, const int32_t *tokens, int n_tokens);
cudaError_t cu_rmsnorm(cudaStream_t st, void *out, hr_dtype to, void *residual, const void *x, hr_dtype tx,
                       const void *w, hr_dtype tw, int64_t rows, int64_t cols, float eps);
cudaError_t cu_add(cudaStream_t st, void *out, const void *a, const void *b, hr_dtype t, int64_t n);
cudaError_t cu_get_rows(cudaStream_t st, void *out, hr_dtype to, const void *x, hr_dtype tx, int64_t cols,
                        const int32_t *rows, int n_rows);
cudaError_t cu_swiglu(cudaStream_t st, void *out, const void *gate, const void *up, hr_dtype t, int64_t rows,
                      int64_t cols, int64_t ld_gate, int64_t ld_up, hr_act act);
cudaError_t cu_rope(cudaStream_t st, void *x, hr_dtype t, int n_tokens, int64_t ld, int n_heads, int head_dim,
                    int rot_dim, const float *inv_freq, float mscale, const int32_t *positions);
/* q_out[t] = rope(q heads of qkv[t]); caches[slot[t]] = rope(k heads), v heads (ld: qkv row stride). */
cudaError_t cu_qkv_rope_store(cudaStream_t st, void *q_out, const void *qkv, hr_dtype tx, int64_t ld, void *kc, void *vc,
                              hr_dtype tkv, int n_tokens, int n_heads, int n_kv, int head_dim, int rot_dim,
                              const float *inv_freq, float mscale, const int32_t *positions, const int32_t *slots,
                              int64_t n_slots);
cudaError_t cu_kv_store(cudaStream_t st, void *kc, void *vc, hr_dtype tkv, const void *k, const void *v, hr_dtype tx,
                        int64_t ldk, int64_t ldv, int n_tokens, int64_t row, const int32_t *slots,
                        int64_t n_slots);
cudaError_t cu_bias_add(cudaStream_t st, void *out, hr_dtype to, int64_t ldo, const float *bias, int64_t T,
                        int64_t N);
cudaError_t cu_fp8_round(cudaStream_t st, __nv_bfloat16 *out, const void *x, hr_dtype tx, int64_t ldx, int64_t T,
                         int64_t K, float inv_scale);

/* Weight-streaming GEMV/skinny GEMM: out[t, n] = alpha * sum_k x[t,k] w[n,k] (+ bias[n]).
 * Pair mode (expert != NULL, for MoE): blockIdx.y is a pair p; x row = p / xrow_div,
 * weight = w + expert[p] * w_stride, bias + expert[p] * N, out row p. */
typedef struct cu_gemv_args {
    const void *x; hr_dtype tx; int64_t ldx;
    const void *w; hr_dtype tw;
    int64_t K, N;
    int T;                    /* tokens (plain) or pairs (pair mode) */
    const float *bias;
    float alpha;
    void *out; hr_dtype to; int64_t ldo;
    const int32_t *expert; int xrow_div; int64_t w_stride;
    int rows;                 /* output rows per warp; 0 = by token count (cu_gemv_splits sets it) */
    /* nseg > 1: several linears of the same x fused into one launch (q/k/v,
     * gate/up); their row blocks follow each other in the grid, no split-K.
     * w, bias, out, N, ldo above are then unused. */
    int nseg;
    struct { const void *w; const float *bias; void *out; int64_t N, ldo; } seg[3];
    /* segment mode (chunks != NULL, with expert == NULL): MoE pairs sorted by
     * expert (cu_moe_segments). Block column c takes chunks[c] = {expert,
     * first sorted position, rows, 0} if c < *n_chunks: rows <= seg_nt pairs
     * perm[first..] of one expert, so the expert's weights stream once per
     * chunk instead of once per pair. Pair p reads x row p / xrow_div and
     * writes out row p; T is the pair count, max_chunks the grid's bound. */
    const int32_t *perm; const int4 *chunks; const int *n_chunks;
    int max_chunks, seg_nt;
} cu_gemv_args;
/* Experimental Hopper GEMM (gemm/wgmma.cu; HEARTH_CUDA_WGMMA=1, sm_90 only):
 * BF16 x and weights, T >= 64, K % 64 == 0. ws (ws_bytes) holds split-K
 * partials, sem n_sem zeroed tile counters (NULL: no split-K). */
int cu_wgmma_mode(void);
/* Compute capability of device dev as major * 10 + minor, 0 on an error. */
int cu_capability(int dev);
bool cu_wgmma_ok(const cu_gemv_args *a);
cudaError_t cu_wgmma_linear(cudaStream_t st, const cu_gemv_args *a, int n_sm, float *ws, size_t ws_bytes, int *sem,
                            int n_sem);
#define CU_WGMMA_SEMS 16384
#define CU_WGMMA_WS ((size_t)64 << 20)
/* Segment mode with chunks of 64 pairs (gemm/moe_gemm.cu): a grouped GEMM
 * on tensor cores with shared-memory tiles, BF16 x and weights, K % 32 == 0. */
bool cu_moe_gemm_ok(const cu_gemv_args *a);
cudaError_t cu_moe_gemm(cudaStream_t st, const cu_gemv_args *a);
/* Row blocks of rows_per_block output rows over the linear, or over each
 * linear of a fused launch (nseg > 1) in turn; whether its weights (or
 * every fused linear's) are 16-byte aligned. */
int64_t cu_gemv_row_blocks(const cu_gemv_args *a, int64_t rows_per_block);
bool cu_gemv_weights_aligned(const cu_gemv_args *a);
/* true when the GEMV kernel handles this shape (K vector-aligned, dtypes known). */
bool cu_gemv_ok(const cu_gemv_args *a);
/* part: scratch of splits * T * N floats when splits > 1 (pair mode: splits must be 1). */
cudaError_t cu_gemv(cudaStream_t st, const cu_gemv_args *a, int splits, float *part);
/* Plans the launch for n_sm SMs: rows per warp (a->rows) and the number of K
 * splits (returned; 1 when the grid is already large enough). */
int cu_gemv_splits(cu_gemv_args *a, int n_sm);
/* Generic tiled GEMM for any dtype mix (F32/F16 weights, odd K): correctness path. */
cudaError_t cu_gemm_tiled(cudaStream_t st, const cu_gemv_args *a);

/* Paged attention (flash-decoding split over the context). part: T*nh*splits*(hd+2) floats. */
typedef struct cu_attn_args {
    void *out; int64_t ldo;
    const void *q; int64_t ldq;
    hr_dtype tq;              /* q and out */
    const void *kc, *vc; hr_dtype tkv;
    cu_step step;             /* by value: its arrays are device pointers */
    int n_heads, n_kv_heads, head_dim, window;
    float scale;
    const float *sinks;       /* [n_heads] device F32 or NULL */
} cu_attn_args;
int cu_attn_splits(const cu_attn_args *a, int n_sm);
/* Tensor-core prefill path (attention/prefill_tc.cu): BF16, head_dim 32/64/128. */
#define CU_TC_MIN_Q 8 /* a step whose longest query run reaches this takes the prefill kernel */
bool cu_attn_prefill_ok(const cu_attn_args *a);
cudaError_t cu_attention_prefill(cudaStream_t st, const cu_attn_args *a);
cudaError_t cu_attention(cudaStream_t st, const cu_attn_args *a, int splits, float *part);

/* MoE routing: logits [T, E] F32 -> expert [T*k], weight [T*k]. */
cudaError_t cu_moe_route(cudaStream_t st, const float *logits, int T, int E, int k, hr_route route, bool renorm,
                         int32_t *expert, float *weight);
/* out[t, c] = sum_j weight[t*k+j] * y[t*k+j, c] */
/* Sorts the P pairs' expert ids into perm / chunks / *n_chunks for the
 * GEMV's segment mode (chunks of at most nt rows); E <= 1024. chunks needs
 * cu_moe_max_chunks(P, E, nt) entries. */
int cu_moe_max_chunks(int P, int E, int nt);
cudaError_t cu_moe_segments(cudaStream_t st, const int32_t *expert, int P, int E, int nt, int32_t *perm, int4 *chunks,
                            int *n_chunks);
cudaError_t cu_moe_combine(cudaStream_t st, void *out, hr_dtype to, int64_t ldo, const float *y, const float *weight,
                           int T, int k, int64_t H);

/* ids[r] = argmax of row r of logits [rows, vocab] (ties: lowest index; NaN never). */
cudaError_t cu_argmax(cudaStream_t st, int32_t *ids, const float *logits, int64_t rows, int64_t vocab);
/* the `sample` op (sample.cu) and the release of its buffers */
int cu_sample_op(hr_backend *be, const hr_tensor *logits, const hr_sample_row *rows, int n_rows, int32_t *ids_host);
void cu_sample_free(cu_backend *c);
/* ---- backend internals shared by the op files -------------------------- */
/* Grows the scratch buffer to at least bytes; only between ops (stack empty). */
int cu_scratch_reserve(cu_backend *c, size_t bytes);
/* Bump allocation on the scratch stack (256-byte aligned); NULL if it does not fit. */
void *cu_scratch_push(cu_backend *c, size_t bytes);
/* Scratch bytes cu_linear_raw needs for this product. */
size_t cu_linear_scratch(const cu_backend *c, const cu_gemv_args *a, float input_scale);
/* out = x @ w^T (+ bias), choosing GEMV, cuBLASLt or the scalar path. Uses scratch
 * above the current top and releases it before returning. */
int cu_linear_raw(cu_backend *c, cu_gemv_args a, float input_scale);
/* Frees the cuBLASLt plan cache (before the handle is destroyed). */
void cu_lt_cache_free(cu_backend *c);
/* Graph cache (step_graph.cu). */
void cu_graphs_init(cu_backend *c);
void cu_graphs_free(cu_backend *c);
void cu_graphs_invalidate(cu_backend *c);   /* buffers moved: every graph is stale */
void cu_graph_abort(cu_backend *c);         /* a step left unfinished (op error): drop capture/log */
void cu_graph_flush(cu_backend *c);         /* a sync mid-step: run what was logged, eagerly */
/* An op that must do something a capture forbids (allocate, upload, sync):
 * ends the capture and runs the ops before it eagerly; the caller goes on eagerly. */
void cu_graph_demote(cu_backend *c);
int cu_graph_step_begin(cu_backend *c);     /* after the step upload: choose eager/capture/replay */
int cu_batch_bucket(cu_backend *c, int n_seqs); /* the padded decode batch size (backend.h batch_bucket) */
int cu_graph_step_end(cu_backend *c);       /* launch, or finish capture, or run the log */
cu_op *cu_graph_log(cu_backend *c, cu_op_kind kind); /* NULL when eager */
/* Runs one logged op eagerly (backend_cuda.cu). */
int cu_exec_op(cu_backend *c, const cu_op *o);
/* Launches the held-back linears (backend_cuda.cu); called before any other op. */
int cu_pend_flush(cu_backend *c);

/* Host -> device copy for tensor_set (upload.cu): from CU_UPLOAD_MIN bytes on
 * (and for every size once the ring exists) through the pinned staging ring
 * on the copy stream, returning once host may be reused, with the compute
 * stream made to wait for the copies; smaller ones as one copy + stream sync. */
#define CU_UPLOAD_MIN ((size_t)1 << 20)
int cu_upload_h2d(cu_backend *c, void *dst, const void *host, size_t n);
void cu_upload_free(cu_backend *c); /* after the stream is idle */

/* A failed CUDA call: sets be->err and returns HR_EIO (or HR_EUNSUP / HR_ENOMEM). */
int cu_fail(cu_backend *c, cudaError_t e, const char *what);

#endif
