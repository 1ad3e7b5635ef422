/* Published architectures with random weights ("synthetic:NAME"), so speed
 * can be measured without downloading a checkpoint. The configs are the
 * published config.json values; the weights are uniform noise scaled by
 * 1/sqrt(fan_in) (norms 1), so activations stay finite. Output is
 * meaningless by construction. */
#include <math.h>
#include <string.h>

#include "model/model_impl.h"

typedef struct synth_preset {
    const char *name, *model_type;
    int hidden, ffn, layers, heads, kv_heads, head_dim, vocab, experts, top_k;
    float theta, eps;
    bool tied, bias;
    hr_rope_type rope;
    float factor, lo, hi;
    int orig, window;
} synth_preset;

/* clang-format off */
static const synth_preset k_presets[] = {
    /* name            type       hidden   ffn  layers heads kv  hd   vocab  E   k  theta    eps    tied  bias  rope            factor lo hi orig window */
    {"llama-3.1-8b",   "llama",   4096, 14336, 32, 32,  8, 128, 128256,  0, 0, 500000, 1e-5f, false, false, HR_ROPE_LLAMA3, 8,  1, 4, 8192,   0},
    {"llama-3.1-70b",  "llama",   8192, 28672, 80, 64,  8, 128, 128256,  0, 0, 500000, 1e-5f, false, false, HR_ROPE_LLAMA3, 8,  1, 4, 8192,   0},
    {"qwen2.5-7b",     "qwen2",   3584, 18944, 28, 28,  4, 128, 152064,  0, 0, 1e6f,   1e-6f, false, true,  HR_ROPE_DEFAULT, 0, 0, 0, 0,      0},
    {"mixtral-8x7b",   "mixtral", 4096, 14336, 32, 32,  8, 128,  32000,  8, 2, 1e6f,   1e-5f, false, false, HR_ROPE_DEFAULT, 0, 0, 0, 0,      0},
    {"gpt-oss-20b",    "gpt_oss", 2880,  2880, 24, 64,  8,  64, 201088, 32, 4, 150000, 1e-5f, false, true,  HR_ROPE_YARN,   32, 0, 0, 4096, 128},
    {"gpt-oss-120b",   "gpt_oss", 2880,  2880, 36, 64,  8,  64, 201088, 128, 4, 150000, 1e-5f, false, true, HR_ROPE_YARN,   32, 0, 0, 4096, 128},
    /* small, for tests and quick runs */
    {"tiny-llama",     "llama",    128,   256,  2,  4,  2,  32,    512,  0, 0, 500000, 1e-5f, false, false, HR_ROPE_LLAMA3, 8,  1, 4, 512,    0},
    {"tiny-mixtral",   "mixtral",  128,   192,  2,  4,  2,  32,    512,  4, 2, 1e6f,   1e-5f, false, false, HR_ROPE_DEFAULT, 0, 0, 0, 0,      0},
    {"tiny-gpt-oss",   "gpt_oss",  128,    96,  2,  4,  2,  32,    512,  4, 2, 150000, 1e-5f, false, true,  HR_ROPE_YARN,   32, 0, 0, 128,    8},
};
/* clang-format on */

int hr_model_synthetic_config(const char *name, hr_config *c, hr_err *err) {
    const synth_preset *p = NULL;
    for (size_t i = 0; i < HR_ARRAY_LEN(k_presets); i++)
        if (!strcmp(k_presets[i].name, name)) p = &k_presets[i];
    if (!p) {
        char list[512];
        size_t o = 0;
        for (size_t i = 0; i < HR_ARRAY_LEN(k_presets) && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", k_presets[i].name);
        return hr_err_set(err, HR_EUNSUP, "unknown synthetic model '%s' (known: %s)", name, list);
    }
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "%s", p->model_type);
    snprintf(c->architecture, sizeof c->architecture, "synthetic:%s", p->name);
    c->hidden_size = p->hidden;
    c->intermediate_size = p->ffn;
    c->num_hidden_layers = p->layers;
    c->num_attention_heads = p->heads;
    c->num_key_value_heads = p->kv_heads;
    c->head_dim = p->head_dim;
    c->vocab_size = p->vocab;
    c->num_experts = p->experts;
    c->num_experts_per_tok = p->top_k;
    c->rope_theta = p->theta;
    c->rms_norm_eps = p->eps;
    c->tie_word_embeddings = p->tied;
    c->attention_bias = p->bias;
    c->rope_type = p->rope;
    c->rope_factor = p->factor;
    c->rope_low_freq_factor = p->lo;
    c->rope_high_freq_factor = p->hi;
    c->rope_original_max_pos = p->orig;
    c->rope_beta_fast = 32;
    c->rope_beta_slow = 1;
    c->partial_rotary_factor = 1;
    c->max_position_embeddings = 131072;
    c->dtype = HR_BF16;
    c->swiglu_limit = HR_GPT_OSS_SWIGLU_LIMIT;
    if (p->window > 0) { /* gpt-oss: sliding / full attention alternate, sliding first */
        c->sliding_window = p->window;
        c->n_layer_types = p->layers;
        for (int i = 0; i < p->layers && i < 256; i++) c->layer_is_sliding[i] = i % 2 == 0;
    }
    c->bos_token_id = -1;
    c->pad_token_id = -1;
    c->gen_temperature = c->gen_top_p = c->gen_min_p = c->gen_repetition_penalty = NAN;
    c->gen_top_k = -1;
    c->gen_max_new_tokens = -1;
    return HR_OK;
}
