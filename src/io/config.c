/* config.json reader. Defaults follow the transformers configuration classes
 * (LlamaConfig, MistralConfig, Qwen2Config, MixtralConfig, GptOssConfig) so a
 * config that omits a field means what it means to transformers. */
#include "io/config.h"

#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

/* Per-model-type defaults that differ between the transformers classes. */
typedef struct {
    const char *type;
    int max_pos;
    float rms_eps;
    float rope_theta;
    bool attention_bias;
    int num_experts, experts_per_tok, sliding_window;
} type_defaults;

/* clang-format off */
static const type_defaults k_types[] = {
    /* type       max_pos  eps    theta     bias   E    k  window */
    {"llama",     2048,    1e-6f, 10000.0f,  false, 0,   0, 0},
    {"mistral",   131072,  1e-6f, 10000.0f,  false, 0,   0, 4096},
    {"qwen2",     32768,   1e-6f, 10000.0f,  true,  0,   0, 4096},
    {"mixtral",   131072,  1e-5f, 1e6f,      false, 8,   2, 0},
    {"gpt_oss",   131072,  1e-5f, 150000.0f, true,  128, 4, 128},
};
/* clang-format on */
#define SUPPORTED_TYPES "llama, mistral, qwen2, mixtral, gpt_oss"

/* ---- small JSON accessors (absent or null -> default) ------------------- */

static bool jhas(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return v && !json_is_null(v);
}

static int jint(const json_t *o, const char *k, int def) {
    const json_t *v = json_object_get(o, k);
    if (json_is_integer(v)) return (int)json_integer_value(v);
    if (json_is_real(v)) return (int)json_real_value(v);
    return def;
}

static float jfloat(const json_t *o, const char *k, float def) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? (float)json_number_value(v) : def;
}

static bool jbool(const json_t *o, const char *k, bool def) {
    const json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static const char *jstr(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- pieces ------------------------------------------------------------- */

static int parse_dtype(const char *s, hr_dtype *out, hr_err *err) {
    static const struct {
        const char *name;
        hr_dtype t;
    } k[] = {
        {"bfloat16", HR_BF16}, {"float16", HR_F16}, {"half", HR_F16}, {"float32", HR_F32},
        {"float", HR_F32},     {"bf16", HR_BF16},   {"fp16", HR_F16}, {"fp32", HR_F32},
    };
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    for (size_t i = 0; i < HR_ARRAY_LEN(k); i++)
        if (strcmp(s, k[i].name) == 0) {
            *out = k[i].t;
            return HR_OK;
        }
    return hr_err_set(err, HR_EUNSUP, "config.json: unsupported dtype '%s'", s);
}

/* rope_scaling (classic) or rope_parameters (transformers >= 5, which may also
 * carry rope_theta, or one dict per layer type). */
static int parse_rope(const json_t *root, hr_config *c, hr_err *err) {
    const json_t *rp = json_object_get(root, "rope_parameters");
    const json_t *rs = json_object_get(root, "rope_scaling");
    const json_t *r = json_is_object(rs) ? rs : json_is_object(rp) ? rp : NULL;
    if (r && !jhas(r, "rope_type") && !jhas(r, "type") && !jhas(r, "rope_theta") &&
        json_is_object(json_object_get(r, "full_attention")))
        r = json_object_get(r, "full_attention");
    if (jhas(root, "rope_theta"))
        c->rope_theta = jfloat(root, "rope_theta", c->rope_theta);
    else if (r && jhas(r, "rope_theta"))
        c->rope_theta = jfloat(r, "rope_theta", c->rope_theta);
    c->partial_rotary_factor = jfloat(root, "partial_rotary_factor", 1.0f);
    if (r && jhas(r, "partial_rotary_factor")) c->partial_rotary_factor = jfloat(r, "partial_rotary_factor", 1.0f);
    c->rope_type = HR_ROPE_DEFAULT;
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_pos = c->max_position_embeddings;
    c->rope_beta_fast = 32.0f;
    c->rope_beta_slow = 1.0f;
    c->rope_truncate = true;
    c->rope_attention_factor = 0.0f;
    if (!r) return HR_OK;
    const char *type = jstr(r, "rope_type");
    if (!type) type = jstr(r, "type");
    if (!type || strcmp(type, "default") == 0)
        c->rope_type = HR_ROPE_DEFAULT;
    else if (strcmp(type, "llama3") == 0)
        c->rope_type = HR_ROPE_LLAMA3;
    else if (strcmp(type, "yarn") == 0)
        c->rope_type = HR_ROPE_YARN;
    else if (strcmp(type, "linear") == 0)
        c->rope_type = HR_ROPE_LINEAR;
    else
        return hr_err_set(err, HR_EUNSUP,
                          "config.json: unsupported rope type '%s' (supported: default, llama3, yarn, linear)", type);
    c->rope_factor = jfloat(r, "factor", 1.0f);
    c->rope_low_freq_factor = jfloat(r, "low_freq_factor", c->rope_low_freq_factor);
    c->rope_high_freq_factor = jfloat(r, "high_freq_factor", c->rope_high_freq_factor);
    c->rope_original_max_pos = jint(r, "original_max_position_embeddings", c->rope_original_max_pos);
    c->rope_beta_fast = jfloat(r, "beta_fast", c->rope_beta_fast);
    c->rope_beta_slow = jfloat(r, "beta_slow", c->rope_beta_slow);
    c->rope_truncate = jbool(r, "truncate", c->rope_truncate);
    c->rope_attention_factor = jfloat(r, "attention_factor", 0.0f);
    if (c->rope_type != HR_ROPE_DEFAULT && !(c->rope_factor > 0.0f))
        return hr_err_set(err, HR_EINVAL, "config.json: rope factor must be > 0");
    return HR_OK;
}

/* Which layers use a sliding window. Convention for users of hr_config: layer
 * i is windowed iff layer_is_sliding[i] && sliding_window > 0. */
static int parse_layers(const json_t *root, const type_defaults *td, hr_config *c, hr_err *err) {
    const char *t = c->model_type;
    /* absent: the class default; null: no window */
    c->sliding_window = json_object_get(root, "sliding_window") ? jint(root, "sliding_window", 0) : td->sliding_window;
    c->use_sliding_window = jbool(root, "use_sliding_window", false);
    c->max_window_layers = jint(root, "max_window_layers", 28);
    if (c->num_hidden_layers > (int)HR_ARRAY_LEN(c->layer_is_sliding))
        return hr_err_set(err, HR_EUNSUP, "config.json: %d layers (at most %d supported)", c->num_hidden_layers,
                          (int)HR_ARRAY_LEN(c->layer_is_sliding));
    c->n_layer_types = c->num_hidden_layers;
    const json_t *lt = json_object_get(root, "layer_types");
    if (strcmp(t, "qwen2") == 0 && !c->use_sliding_window) c->sliding_window = 0;
    if (strcmp(t, "llama") == 0) c->sliding_window = 0;
    if (json_is_array(lt)) {
        if ((int)json_array_size(lt) != c->num_hidden_layers)
            return hr_err_set(err, HR_EINVAL, "config.json: layer_types has %zu entries for %d layers",
                              json_array_size(lt), c->num_hidden_layers);
        for (int i = 0; i < c->num_hidden_layers; i++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)i));
            if (s && strcmp(s, "sliding_attention") == 0)
                c->layer_is_sliding[i] = true;
            else if (s && strcmp(s, "full_attention") == 0)
                c->layer_is_sliding[i] = false;
            else
                return hr_err_set(err, HR_EUNSUP, "config.json: layer_types[%d] '%s' unsupported", i,
                                  s ? s : "(non-string)");
        }
        return HR_OK;
    }
    for (int i = 0; i < c->num_hidden_layers; i++) {
        if (strcmp(t, "gpt_oss") == 0)
            c->layer_is_sliding[i] = (i % 2) == 0;
        else if (strcmp(t, "qwen2") == 0)
            c->layer_is_sliding[i] = c->use_sliding_window && i >= c->max_window_layers;
        else
            c->layer_is_sliding[i] = c->sliding_window > 0; /* mistral, mixtral: every layer */
    }
    return HR_OK;
}

static int add_eos(hr_config *c, const json_t *v, hr_err *err) {
    if (json_is_integer(v)) {
        int id = (int)json_integer_value(v);
        for (int i = 0; i < c->n_eos; i++)
            if (c->eos_token_ids[i] == id) return HR_OK;
        if (c->n_eos >= (int)HR_ARRAY_LEN(c->eos_token_ids))
            return hr_err_set(err, HR_EUNSUP, "config: more than %d eos_token_id values",
                              (int)HR_ARRAY_LEN(c->eos_token_ids));
        c->eos_token_ids[c->n_eos++] = id;
        return HR_OK;
    }
    if (json_is_array(v)) {
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x) {
            int rc = add_eos(c, x, err);
            if (rc != HR_OK) return rc;
        }
    }
    return HR_OK;
}

static int add_excludes(hr_config *c, const json_t *arr, const char *what, hr_err *err) {
    if (!json_is_array(arr)) return HR_OK;
    size_t i;
    const json_t *x;
    json_array_foreach(arr, i, x) {
        const char *s = json_string_value(x);
        if (!s) continue;
        if (c->n_quant_exclude >= (int)HR_ARRAY_LEN(c->quant_exclude) || strlen(s) >= sizeof c->quant_exclude[0])
            return hr_err_set(err, HR_EUNSUP, "%s: too many or too long exclusion patterns (at most %d of %zu chars)",
                              what, (int)HR_ARRAY_LEN(c->quant_exclude), sizeof c->quant_exclude[0] - 1);
        strcpy(c->quant_exclude[c->n_quant_exclude++], s);
    }
    return HR_OK;
}

/* ModelOpt "quantization" object (hf_quant_config.json, or config.json
 * quantization_config with quant_method "modelopt"). */
static int parse_modelopt(hr_config *c, const json_t *q, const char *what, hr_err *err) {
    const char *algo = jstr(q, "quant_algo");
    if (!algo) return hr_err_set(err, HR_EINVAL, "%s: ModelOpt quantization without quant_algo", what);
    if (strcmp(algo, "FP8") == 0)
        c->quant = HR_QUANT_FP8;
    else if (strcmp(algo, "NVFP4") == 0)
        c->quant = HR_QUANT_NVFP4;
    else
        return hr_err_set(err, HR_EUNSUP, "%s: unsupported ModelOpt quant_algo '%s' (supported: FP8, NVFP4)", what,
                          algo);
    c->quant_group_size = jint(q, "group_size", c->quant == HR_QUANT_NVFP4 ? 16 : 0);
    c->n_quant_exclude = 0;
    return add_excludes(c, json_object_get(q, "exclude_modules"), what, err);
}

static int parse_quant(const json_t *root, hr_config *c, hr_err *err) {
    const json_t *q = json_object_get(root, "quantization_config");
    if (!json_is_object(q)) return HR_OK;
    const char *m = jstr(q, "quant_method");
    if (!m) return hr_err_set(err, HR_EINVAL, "config.json: quantization_config without quant_method");
    if (strcmp(m, "mxfp4") == 0) {
        c->quant = HR_QUANT_MXFP4;
        c->quant_group_size = 32;
        return add_excludes(c, json_object_get(q, "modules_to_not_convert"), "config.json", err);
    }
    if (strcmp(m, "modelopt") == 0) return parse_modelopt(c, q, "config.json", err);
    return hr_err_set(err, HR_EUNSUP, "config.json: unsupported quantization method '%s' (supported: mxfp4, modelopt)",
                      m);
}

static int parse_root(const json_t *root, hr_config *c, hr_err *err) {
    memset(c, 0, sizeof *c);
    c->gen_temperature = c->gen_top_p = c->gen_min_p = c->gen_repetition_penalty = NAN;
    c->gen_top_k = -1;
    c->gen_max_new_tokens = -1;
    if (!json_is_object(root)) return hr_err_set(err, HR_EINVAL, "config.json: not a JSON object");
    const char *mt = jstr(root, "model_type");
    if (!mt) return hr_err_set(err, HR_EINVAL, "config.json: missing model_type");
    const type_defaults *td = NULL;
    for (size_t i = 0; i < HR_ARRAY_LEN(k_types); i++)
        if (strcmp(mt, k_types[i].type) == 0) td = &k_types[i];
    if (!td) return hr_err_set(err, HR_EUNSUP, "unsupported model_type '%s' (supported: " SUPPORTED_TYPES ")", mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const json_t *arch = json_array_get(json_object_get(root, "architectures"), 0);
    if (json_is_string(arch)) snprintf(c->architecture, sizeof c->architecture, "%s", json_string_value(arch));

    c->vocab_size = jint(root, "vocab_size", 0);
    c->hidden_size = jint(root, "hidden_size", 0);
    c->intermediate_size = jint(root, "intermediate_size", 0);
    c->num_hidden_layers = jint(root, "num_hidden_layers", 0);
    c->num_attention_heads = jint(root, "num_attention_heads", 0);
    static const char *required[] = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads"};
    const int vals[] = {c->vocab_size, c->hidden_size, c->intermediate_size, c->num_hidden_layers,
                        c->num_attention_heads};
    for (size_t i = 0; i < HR_ARRAY_LEN(required); i++)
        if (vals[i] <= 0) return hr_err_set(err, HR_EINVAL, "config.json: %s missing or not positive", required[i]);
    c->num_key_value_heads = jint(root, "num_key_value_heads", c->num_attention_heads);
    if (c->num_key_value_heads <= 0 || c->num_attention_heads % c->num_key_value_heads != 0)
        return hr_err_set(err, HR_EINVAL, "config.json: num_key_value_heads %d does not divide num_attention_heads %d",
                          c->num_key_value_heads, c->num_attention_heads);
    c->head_dim = jint(root, "head_dim", c->hidden_size / c->num_attention_heads);
    if (c->head_dim <= 0) return hr_err_set(err, HR_EINVAL, "config.json: head_dim %d not positive", c->head_dim);
    c->max_position_embeddings = jint(root, "max_position_embeddings", td->max_pos);
    c->rms_norm_eps = jfloat(root, "rms_norm_eps", td->rms_eps);
    c->tie_word_embeddings = jbool(root, "tie_word_embeddings", false);
    /* Qwen2 hard-codes q/k/v biases; the others read attention_bias. */
    c->attention_bias = strcmp(mt, "qwen2") == 0 ? true : jbool(root, "attention_bias", td->attention_bias);
    c->mlp_bias = jbool(root, "mlp_bias", false);
    c->dtype = HR_F32; /* transformers' default when the config names none */
    const char *dt = jstr(root, "torch_dtype");
    if (!dt) dt = jstr(root, "dtype");
    if (dt) {
        int rc = parse_dtype(dt, &c->dtype, err);
        if (rc != HR_OK) return rc;
    }
    c->rope_theta = td->rope_theta;
    int rc = parse_rope(root, c, err);
    if (rc == HR_OK) rc = parse_layers(root, td, c, err);
    if (rc != HR_OK) return rc;

    c->num_experts = jint(root, "num_local_experts", td->num_experts);
    c->num_experts_per_tok = jint(root, "num_experts_per_tok", jint(root, "experts_per_token", td->experts_per_tok));
    if (c->num_experts > 0 && (c->num_experts_per_tok <= 0 || c->num_experts_per_tok > c->num_experts))
        return hr_err_set(err, HR_EINVAL, "config.json: num_experts_per_tok %d out of range for %d experts",
                          c->num_experts_per_tok, c->num_experts);
    c->swiglu_limit = jfloat(root, "swiglu_limit", strcmp(mt, "gpt_oss") == 0 ? 7.0f : 0.0f);
    c->router_aux_loss_coef_set = jhas(root, "router_aux_loss_coef");

    c->bos_token_id = jint(root, "bos_token_id", -1);
    c->pad_token_id = jint(root, "pad_token_id", -1);
    if ((rc = add_eos(c, json_object_get(root, "eos_token_id"), err)) != HR_OK) return rc;
    return parse_quant(root, c, err);
}

int hr_config_parse(const char *json_text, hr_config *cfg, hr_err *err) {
    json_error_t jerr;
    json_t *root = json_loads(json_text, 0, &jerr);
    if (!root) {
        memset(cfg, 0, sizeof *cfg);
        return hr_err_set(err, HR_EINVAL, "config.json: not valid JSON: %s (line %d)", jerr.text, jerr.line);
    }
    int rc = parse_root(root, cfg, err);
    json_decref(root);
    return rc;
}

/* Loads an optional JSON file: *out = NULL when it does not exist. */
static int load_optional(const char *dir, const char *name, json_t **out, hr_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return HR_OK;
    fclose(fp);
    json_error_t jerr;
    *out = json_load_file(path, 0, &jerr);
    if (!*out) return hr_err_set(err, HR_EINVAL, "%s: not valid JSON: %s (line %d)", path, jerr.text, jerr.line);
    return HR_OK;
}

static int apply_generation(hr_config *c, const json_t *g, hr_err *err) {
    if (!json_is_object(g)) return hr_err_set(err, HR_EINVAL, "generation_config.json: not a JSON object");
    c->gen_temperature = jfloat(g, "temperature", NAN);
    c->gen_top_p = jfloat(g, "top_p", NAN);
    c->gen_min_p = jfloat(g, "min_p", NAN);
    c->gen_repetition_penalty = jfloat(g, "repetition_penalty", NAN);
    c->gen_top_k = jint(g, "top_k", -1);
    c->gen_max_new_tokens = jint(g, "max_new_tokens", -1);
    /* generate() stops on generation_config's eos ids; keep the union so a
     * model whose config.json names another eos still stops on both. */
    return add_eos(c, json_object_get(g, "eos_token_id"), err);
}

int hr_config_load(const char *dir, hr_config *cfg, hr_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = NULL;
    json_t *gen = NULL, *hq = NULL;
    int rc = hr_read_file(path, &text, NULL, err);
    if (rc != HR_OK) {
        memset(cfg, 0, sizeof *cfg);
        goto fail;
    }
    if ((rc = hr_config_parse(text, cfg, err)) != HR_OK) {
        hr_err_prefix(err, "%s", dir);
        goto fail;
    }
    if ((rc = load_optional(dir, "generation_config.json", &gen, err)) != HR_OK) goto fail;
    if (gen && (rc = apply_generation(cfg, gen, err)) != HR_OK) goto fail;
    if ((rc = load_optional(dir, "hf_quant_config.json", &hq, err)) != HR_OK) goto fail;
    if (hq) {
        const json_t *q = json_object_get(hq, "quantization");
        if (!json_is_object(q)) {
            rc = hr_err_set(err, HR_EINVAL, "%s/hf_quant_config.json: missing \"quantization\" object", dir);
            goto fail;
        }
        if ((rc = parse_modelopt(cfg, q, "hf_quant_config.json", err)) != HR_OK) {
            hr_err_prefix(err, "%s", dir);
            goto fail;
        }
    }
fail:
    json_decref(gen);
    json_decref(hq);
    free(text);
    return rc;
}

/* Module-name patterns are shell globs ("model.layers.*.self_attn"); a pattern
 * naming a module also covers everything under it. */
bool hr_config_quant_excluded(const hr_config *cfg, const char *name) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", name);
    for (;;) {
        for (int i = 0; i < cfg->n_quant_exclude; i++)
            if (fnmatch(cfg->quant_exclude[i], buf, 0) == 0) return true;
        char *dot = strrchr(buf, '.');
        if (!dot) return false;
        *dot = '\0';
    }
}
