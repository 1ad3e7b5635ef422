/* config.json (+ generation_config.json, hf_quant_config.json) of a Hugging
 * Face checkpoint, parsed into plain fields. Accepts rope_scaling and the newer
 * rope_parameters spelling, torch_dtype or dtype. Knows nothing of weights. */
#ifndef HEARTH_IO_CONFIG_H
#define HEARTH_IO_CONFIG_H

#include <stdbool.h>

#include "core/common.h"
#include "core/dtype.h"

typedef enum { HR_ROPE_DEFAULT = 0, HR_ROPE_LLAMA3, HR_ROPE_YARN, HR_ROPE_LINEAR } hr_rope_type;

typedef enum {
    HR_QUANT_NONE = 0,
    HR_QUANT_FP8,    /* ModelOpt FP8 (per-tensor weight_scale, static input_scale) */
    HR_QUANT_NVFP4,  /* ModelOpt NVFP4 (e4m3 block-16 scales + global scale) */
    HR_QUANT_MXFP4,  /* gpt-oss MXFP4 experts (*_blocks + *_scales) */
} hr_quant_method;

typedef struct hr_config {
    char model_type[32];         /* "llama", "mistral", "qwen2", "mixtral", "gpt_oss" */
    char architecture[64];       /* architectures[0] */
    int vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int num_attention_heads, num_key_value_heads, head_dim;
    int max_position_embeddings;
    float rms_norm_eps;
    bool tie_word_embeddings;
    bool attention_bias;         /* q/k/v bias (qwen2: true) */
    bool mlp_bias;
    hr_dtype dtype;              /* torch_dtype / dtype */
    /* rope */
    float rope_theta;
    hr_rope_type rope_type;
    float rope_factor;           /* scaling factor */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_original_max_pos;   /* llama3 / yarn original_max_position_embeddings */
    float rope_beta_fast, rope_beta_slow; /* yarn */
    bool rope_truncate;          /* yarn "truncate" (gpt-oss: false) */
    float rope_attention_factor; /* yarn attention_factor, 0 = default */
    float partial_rotary_factor; /* 1.0 default */
    /* sliding window / layer types */
    int sliding_window;          /* 0 = none; layer i is windowed iff layer_is_sliding[i] && sliding_window > 0 */
    bool use_sliding_window;     /* qwen2 flag */
    int max_window_layers;       /* qwen2 */
    int n_layer_types;
    bool layer_is_sliding[256];  /* from layer_types ("sliding_attention") */
    /* MoE */
    int num_experts;             /* num_local_experts */
    int num_experts_per_tok;
    float swiglu_limit;          /* gpt-oss 7.0 */
    bool router_aux_loss_coef_set;
    /* special tokens */
    int bos_token_id;
    int n_eos;
    int eos_token_ids[8];
    int pad_token_id;
    /* quantization */
    hr_quant_method quant;
    char quant_exclude[64][128]; /* module name patterns left unquantized */
    int n_quant_exclude;
    int quant_group_size;
    /* generation_config.json defaults (NaN/negative = unset) */
    float gen_temperature, gen_top_p, gen_min_p, gen_repetition_penalty;
    int gen_top_k;
    int gen_max_new_tokens;
} hr_config;

/* Reads dir/config.json (required), dir/generation_config.json and
 * dir/hf_quant_config.json (optional). Unknown model_type -> HR_EUNSUP naming it. */
int hr_config_load(const char *dir, hr_config *cfg, hr_err *err);
/* Parses a config.json text (for tests). */
int hr_config_parse(const char *json_text, hr_config *cfg, hr_err *err);
/* True when module or tensor `name` (e.g. "lm_head", "model.layers.0.self_attn.q_proj.weight")
 * matches one of cfg->quant_exclude (shell globs; a pattern also covers names below it). */
bool hr_config_quant_excluded(const hr_config *cfg, const char *name);

#endif
