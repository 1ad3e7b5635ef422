/* Private to src/model: the layout of a loaded model (weights per layer,
 * RoPE tables, KV caches, activation buffers) shared by the loader and the
 * forward pass. Nothing outside src/model includes this. */
#ifndef HEARTH_MODEL_IMPL_H
#define HEARTH_MODEL_IMPL_H

#include <limits.h>

#include "model/arch.h"
#include "model/model.h"

/* Projections that read the same input, stored as one concatenated weight
 * (q|k|v, gate|up) so a decode step runs one linear instead of several; the
 * parts are row views into it. lin.w == NULL when the parts could not be
 * fused (different storage types or FP8 input scales). */
typedef struct hr_fused {
    hr_linear lin;
    int n;
    hr_tensor wv[3], bv[3];
} hr_fused;

typedef struct hr_layer {
    hr_tensor *attn_norm, *ffn_norm;
    hr_linear q, k, v, o;
    hr_tensor *sinks;         /* [n_heads] F32 or NULL */
    int window;               /* sliding window (0 = full attention) */
    hr_linear gate, up, down; /* dense FFN */
    bool is_moe;
    hr_moe moe;
    hr_tensor *k_cache, *v_cache;
    hr_fused qkv, gate_up;
} hr_layer;

/* Activation buffers sized for cap tokens, and logits for logits_cap rows
 * (rows wanted per step: at most one per sequence, far fewer than a long
 * prefill's tokens; F32 x vocab per row); grown (never shrunk) when a larger
 * step arrives. */
typedef struct hr_acts {
    int cap, logits_cap;
    hr_tensor *x, *h, *q, *k, *v, *att, *o, *gate, *up, *ffn_out, *sel, *logits;
    hr_tensor *qkv, *gu; /* fused q|k|v and gate|up outputs; NULL when no layer has the fused weight */
} hr_acts;

struct hr_model {
    hr_backend *be;
    hr_config cfg;
    const hr_arch *arch;
    char source[PATH_MAX];
    bool gguf;

    int n_layers, hidden, n_heads, n_kv_heads, head_dim, ffn, vocab;
    float eps;

    hr_tensor *embed, *final_norm;
    hr_linear lm_head;
    hr_layer *layers;

    float *inv_freq;     /* [rot_dim / 2] */
    float *rope_factors; /* GGUF rope_freqs.weight (llama3 scaling as data): inv_freq /= factor, or NULL */
    hr_rope rope;

    int kv_blocks, kv_block_size;
    hr_acts acts;
    /* forward.c: a pure-decode step padded to the backend's batch bucket
     * (hr_backend_ops.batch_bucket); its arrays live in buf, grown only */
    struct {
        hr_step step;
        int32_t *buf;
        size_t cap; /* int32 elements */
    } pad;

    /* forward.c: a greedy / sampled step begun and not yet waited for.
     * state 1: its ids are in buf (the step ran to the end), 2: they are on
     * their way in the backend (ids_wait); n ids. */
    struct {
        int state, n;
        int32_t *buf;
        int cap;
    } ids;

    /* every tensor this model created, freed together */
    hr_tensor **owned;
    int n_owned, cap_owned;
    size_t weight_bytes;
};

/* Creates a backend tensor owned by m (freed by hr_model_free). */
hr_tensor *hr_model_tensor_new(hr_model *m, hr_dtype dt, int ndim, const int64_t *ne, const char *name, hr_err *err);
/* Frees one owned tensor early (activation regrowth, KV reallocation). */
void hr_model_tensor_drop(hr_model *m, hr_tensor *t);

/* loader.c */
int hr_model_load_hf(hr_model *m, const char *dir, const hr_model_opts *opts, hr_err *err);
int hr_model_load_gguf(hr_model *m, const char *file, const hr_model_opts *opts, hr_err *err);
/* synthetic:NAME - random weights; NAME from the preset table in synthetic.c */
int hr_model_load_synthetic(hr_model *m, const char *name, const hr_model_opts *opts, hr_err *err);
int hr_model_synthetic_config(const char *name, hr_config *c, hr_err *err);
/* Derived sizes, RoPE, per-layer windows; called after weights are in. */
int hr_model_finish(hr_model *m, hr_err *err);

#endif
