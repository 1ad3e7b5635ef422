/* The architecture table. Adding an architecture means adding a row here (and
 * a trait the forward pass reads, if it truly differs), never a new forward. */
#include "model/arch.h"

#include <string.h>

#define HF_LAYER "model.layers.%d."

/* Hugging Face names shared by the Llama family. */
#define HF_COMMON_NAMES                                                                                                \
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",                                   \
    .attn_norm = HF_LAYER "input_layernorm", .ffn_norm = HF_LAYER "post_attention_layernorm",                          \
    .q = HF_LAYER "self_attn.q_proj", .k = HF_LAYER "self_attn.k_proj", .v = HF_LAYER "self_attn.v_proj",              \
    .o = HF_LAYER "self_attn.o_proj"

#define HF_DENSE_MLP .gate = HF_LAYER "mlp.gate_proj", .up = HF_LAYER "mlp.up_proj", .down = HF_LAYER "mlp.down_proj"

static const hr_arch k_archs[] = {
    {
        .model_type = "llama",
        .qkv_bias = HR_BIAS_CONFIG,
        .o_bias = HR_BIAS_CONFIG,
        .window = HR_WINDOW_NONE,
        .ffn = HR_FFN_DENSE,
        .names = {HF_COMMON_NAMES, HF_DENSE_MLP},
    },
    {
        .model_type = "mistral",
        .window = HR_WINDOW_ALL_LAYERS,
        .ffn = HR_FFN_DENSE,
        .names = {HF_COMMON_NAMES, HF_DENSE_MLP},
    },
    {
        .model_type = "qwen2",
        .qkv_bias = HR_BIAS_ALWAYS,
        .tied_default = true,
        .window = HR_WINDOW_QWEN2,
        .ffn = HR_FFN_DENSE,
        .names = {HF_COMMON_NAMES, HF_DENSE_MLP},
    },
    {
        .model_type = "mixtral",
        .window = HR_WINDOW_ALL_LAYERS,
        .ffn = HR_FFN_MOE_SPLIT,
        .route = HR_ROUTE_SOFTMAX_TOPK,
        .renormalize = true,
        .names = {HF_COMMON_NAMES, .router = HF_LAYER "block_sparse_moe.gate",
                  .expert_gate = HF_LAYER "block_sparse_moe.experts.%d.w1",
                  .expert_up = HF_LAYER "block_sparse_moe.experts.%d.w3",
                  .expert_down = HF_LAYER "block_sparse_moe.experts.%d.w2"},
    },
    {
        .model_type = "gpt_oss",
        .qkv_bias = HR_BIAS_CONFIG,
        .o_bias = HR_BIAS_CONFIG,
        .window = HR_WINDOW_LAYER_TYPES,
        .sinks = true,
        .ffn = HR_FFN_MOE_FUSED,
        .route = HR_ROUTE_TOPK_SOFTMAX,
        .router_bias = true,
        .expert_bias = true,
        .clamped_swiglu = true,
        .names = {HF_COMMON_NAMES, .sinks = HF_LAYER "self_attn.sinks", .router = HF_LAYER "mlp.router",
                  .experts = HF_LAYER "mlp.experts."},
    },
    {
        /* llama.cpp's names for the llama architecture (also used by Mistral
         * and SmolLM GGUFs); convert_hf_to_gguf permutes Q/K rows. */
        .model_type = "gguf:llama",
        .window = HR_WINDOW_NONE,
        .ffn = HR_FFN_DENSE,
        .permuted_qk = true,
        .tied_default = true, /* "output" absent = tied */
        .names = {.embed = "token_embd",
                  .final_norm = "output_norm",
                  .lm_head = "output",
                  .attn_norm = "blk.%d.attn_norm",
                  .ffn_norm = "blk.%d.ffn_norm",
                  .q = "blk.%d.attn_q",
                  .k = "blk.%d.attn_k",
                  .v = "blk.%d.attn_v",
                  .o = "blk.%d.attn_output",
                  .gate = "blk.%d.ffn_gate",
                  .up = "blk.%d.ffn_up",
                  .down = "blk.%d.ffn_down"},
    },
    {
        /* llama.cpp's qwen2: llama names plus q/k/v biases; not permuted */
        .model_type = "gguf:qwen2",
        .qkv_bias = HR_BIAS_ALWAYS,
        .window = HR_WINDOW_NONE,
        .ffn = HR_FFN_DENSE,
        .tied_default = true,
        .names = {.embed = "token_embd",
                  .final_norm = "output_norm",
                  .lm_head = "output",
                  .attn_norm = "blk.%d.attn_norm",
                  .ffn_norm = "blk.%d.ffn_norm",
                  .q = "blk.%d.attn_q",
                  .k = "blk.%d.attn_k",
                  .v = "blk.%d.attn_v",
                  .o = "blk.%d.attn_output",
                  .gate = "blk.%d.ffn_gate",
                  .up = "blk.%d.ffn_up",
                  .down = "blk.%d.ffn_down"},
    },
};

const hr_arch *hr_arch_find(const char *model_type) {
    if (!model_type) return NULL;
    for (size_t i = 0; i < HR_ARRAY_LEN(k_archs); i++)
        if (!strcmp(k_archs[i].model_type, model_type)) return &k_archs[i];
    return NULL;
}

const char *hr_arch_supported(void) {
    return "llama, mistral, qwen2, mixtral, gpt_oss (safetensors); llama, qwen2 (GGUF)";
}
