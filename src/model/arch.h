/* Architecture traits as data: for each supported model_type, the handful of
 * ways it differs from plain Llama (biases, tied embeddings, RoPE source,
 * sliding-window source, sinks, MoE routing and expert layout, activation
 * clamp) and the names of its tensors. The loader and the one forward pass
 * read these; nothing else in the model knows architectures by name.
 * Must not know: backends, requests, files. */
#ifndef HEARTH_MODEL_ARCH_H
#define HEARTH_MODEL_ARCH_H

#include <stdbool.h>

#include "backend/backend.h"

/* When a projection carries a bias. */
typedef enum {
    HR_BIAS_NEVER = 0,
    HR_BIAS_ALWAYS, /* qwen2 q/k/v */
    HR_BIAS_CONFIG, /* config.attention_bias (llama, gpt-oss) */
} hr_bias_rule;

/* Where a layer's sliding window comes from. */
typedef enum {
    HR_WINDOW_NONE = 0,
    HR_WINDOW_ALL_LAYERS,  /* mistral/mixtral: config.sliding_window on every layer (null = none) */
    HR_WINDOW_LAYER_TYPES, /* layer_types[i] == "sliding_attention" (gpt-oss), else as qwen2 */
    HR_WINDOW_QWEN2,       /* use_sliding_window && layer >= max_window_layers, or layer_types */
} hr_window_rule;

/* How the feed-forward weights are laid out. */
typedef enum {
    HR_FFN_DENSE = 0, /* mlp.{gate,up,down}_proj */
    HR_FFN_MOE_SPLIT, /* Mixtral: block_sparse_moe.gate + experts.N.{w1,w3,w2} */
    HR_FFN_MOE_FUSED, /* gpt-oss: mlp.router + experts.{gate_up,down}_proj(_blocks/_scales/_bias),
                         gate/up rows interleaved (even = gate, odd = up) */
} hr_ffn_kind;

/* Tensor names: printf formats taking the layer index (and the expert index
 * for expert_*). Linear names are prefixes; ".weight"/".bias" (and the
 * quantization suffixes) are appended. NULL = the architecture has none. */
typedef struct hr_arch_names {
    const char *embed, *final_norm, *lm_head;
    const char *attn_norm, *ffn_norm;
    const char *q, *k, *v, *o;
    const char *sinks;
    const char *gate, *up, *down;                      /* HR_FFN_DENSE */
    const char *router;                                /* MoE */
    const char *expert_gate, *expert_up, *expert_down; /* HR_FFN_MOE_SPLIT: "%d" layer, "%d" expert */
    const char *experts;                               /* HR_FFN_MOE_FUSED: prefix of the fused tensors */
} hr_arch_names;

typedef struct hr_arch {
    const char *model_type; /* config.json model_type, or "gguf:llama" */
    hr_bias_rule qkv_bias, o_bias;
    bool tied_default; /* lm_head = embed_tokens when config says nothing */
    hr_window_rule window;
    bool sinks; /* per-head attention-sink logits (gpt-oss) */
    hr_ffn_kind ffn;
    hr_route route;   /* MoE routing */
    bool renormalize; /* SOFTMAX_TOPK: renormalise the top-k weights */
    bool router_bias;
    bool expert_bias;
    bool clamped_swiglu; /* gpt-oss: alpha 1.702, limit = config swiglu_limit, up + 1 */
    bool permuted_qk;    /* GGUF llama: Q/K rows permuted for interleaved RoPE; undo on load */
    hr_arch_names names;
} hr_arch;

/* gpt-oss clamped SwiGLU constants (transformers GptOssExperts). */
#define HR_GPT_OSS_SWIGLU_ALPHA 1.702f
#define HR_GPT_OSS_SWIGLU_LIMIT 7.0f

/* Traits for a config.json model_type ("llama", "mistral", "qwen2",
 * "mixtral", "gpt_oss") or a GGUF general.architecture prefixed "gguf:".
 * NULL when unsupported. */
const hr_arch *hr_arch_find(const char *model_type);
/* Comma-separated list of supported model types, for error messages. */
const char *hr_arch_supported(void);

#endif
