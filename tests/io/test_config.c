/* config.json reader: every fixture config (values checked field by field),
 * hand-written configs for the other spellings (rope_parameters, dtype,
 * yarn/linear, eos lists, quantization_config), transformers defaults, and
 * the errors (unknown model_type, rope type, quant method). */
#include <sys/stat.h>
#include <unistd.h>

#include "io/config.h"
#include "test.h"

static int load_fixture(const char *name, hr_config *c) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/models/%s", test_fixtures(), name);
    hr_err err = {0};
    int rc = hr_config_load(dir, c, &err);
    CHECK_MSG(rc == HR_OK, "%s: %s", name, err.msg);
    return rc;
}

static void check_tiny_common(const hr_config *c) {
    CHECK_EQ_INT(c->vocab_size, 512);
    CHECK_EQ_INT(c->hidden_size, 128);
    CHECK_EQ_INT(c->num_hidden_layers, 2);
    CHECK_EQ_INT(c->num_attention_heads, 4);
    CHECK_EQ_INT(c->num_key_value_heads, 2);
    CHECK_EQ_INT(c->head_dim, 32);
    CHECK_EQ_INT(c->max_position_embeddings, 4096);
    CHECK_EQ_INT(c->dtype, HR_BF16);
    CHECK_EQ_INT(c->bos_token_id, 1);
    CHECK_EQ_INT(c->n_eos, 1);
    CHECK_EQ_INT(c->eos_token_ids[0], 2);
    CHECK_EQ_INT(c->pad_token_id, -1);
    CHECK_EQ_INT(c->n_layer_types, 2);
}

static void test_fixture_configs(void) {
    hr_config c;
    if (load_fixture("tiny-llama", &c) == HR_OK) {
        check_tiny_common(&c);
        CHECK_STREQ(c.model_type, "llama");
        CHECK_STREQ(c.architecture, "LlamaForCausalLM");
        CHECK_EQ_INT(c.intermediate_size, 256);
        CHECK_NEAR(c.rms_norm_eps, 1e-5, 1e-12);
        CHECK(!c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
        CHECK_NEAR(c.rope_theta, 500000.0, 0);
        CHECK_EQ_INT(c.rope_type, HR_ROPE_LLAMA3);
        CHECK_NEAR(c.rope_factor, 8.0, 0);
        CHECK_NEAR(c.rope_low_freq_factor, 1.0, 0);
        CHECK_NEAR(c.rope_high_freq_factor, 4.0, 0);
        CHECK_EQ_INT(c.rope_original_max_pos, 512);
        CHECK_NEAR(c.partial_rotary_factor, 1.0, 0);
        CHECK_EQ_INT(c.sliding_window, 0);
        CHECK(!c.layer_is_sliding[0] && !c.layer_is_sliding[1]);
        CHECK_EQ_INT(c.num_experts, 0);
        CHECK_EQ_INT(c.quant, HR_QUANT_NONE);
        /* generation_config.json present but sets no sampling defaults */
        CHECK(isnan(c.gen_temperature) && isnan(c.gen_top_p) && c.gen_top_k == -1 && c.gen_max_new_tokens == -1);
    }
    if (load_fixture("tiny-qwen2", &c) == HR_OK) {
        check_tiny_common(&c);
        CHECK_STREQ(c.model_type, "qwen2");
        CHECK(c.tie_word_embeddings);
        CHECK(c.attention_bias);
        CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
        CHECK_NEAR(c.rope_theta, 1e6, 0);
        CHECK_EQ_INT(c.rope_type, HR_ROPE_DEFAULT);
        CHECK(!c.use_sliding_window);
        CHECK_EQ_INT(c.sliding_window, 0);
        CHECK_EQ_INT(c.max_window_layers, 28);
        CHECK(!c.layer_is_sliding[0] && !c.layer_is_sliding[1]);
    }
    if (load_fixture("tiny-mixtral", &c) == HR_OK) {
        check_tiny_common(&c); /* head_dim: null -> hidden / heads = 32 */
        CHECK_STREQ(c.model_type, "mixtral");
        CHECK_EQ_INT(c.intermediate_size, 192);
        CHECK_EQ_INT(c.num_experts, 4);
        CHECK_EQ_INT(c.num_experts_per_tok, 2);
        CHECK_EQ_INT(c.sliding_window, 0);
        CHECK_NEAR(c.rope_theta, 1e6, 0);
        CHECK(!c.attention_bias);
        CHECK(c.router_aux_loss_coef_set);
    }
    if (load_fixture("tiny-gpt-oss", &c) == HR_OK) {
        check_tiny_common(&c);
        CHECK_STREQ(c.model_type, "gpt_oss");
        CHECK_STREQ(c.architecture, "GptOssForCausalLM");
        CHECK_EQ_INT(c.intermediate_size, 96);
        CHECK_EQ_INT(c.num_experts, 4);
        CHECK_EQ_INT(c.num_experts_per_tok, 2);
        CHECK_EQ_INT(c.sliding_window, 8);
        CHECK(c.layer_is_sliding[0] && !c.layer_is_sliding[1]);
        CHECK(c.attention_bias);
        CHECK_NEAR(c.swiglu_limit, 7.0, 0);
        CHECK_NEAR(c.rope_theta, 150000.0, 0);
        CHECK_EQ_INT(c.rope_type, HR_ROPE_YARN);
        CHECK_NEAR(c.rope_factor, 32.0, 0);
        CHECK_NEAR(c.rope_beta_fast, 32.0, 0);
        CHECK_NEAR(c.rope_beta_slow, 1.0, 0);
        CHECK(!c.rope_truncate);
        CHECK_NEAR(c.rope_attention_factor, 0.0, 0);
        CHECK_EQ_INT(c.rope_original_max_pos, 128);
        CHECK_EQ_INT(c.quant, HR_QUANT_MXFP4);
        CHECK_EQ_INT(c.quant_group_size, 32);
        CHECK_EQ_INT(c.n_quant_exclude, 4);
        CHECK(hr_config_quant_excluded(&c, "model.layers.1.self_attn.q_proj.weight"));
        CHECK(hr_config_quant_excluded(&c, "model.layers.0.mlp.router.weight"));
        CHECK(hr_config_quant_excluded(&c, "lm_head.weight"));
        CHECK(hr_config_quant_excluded(&c, "model.embed_tokens"));
        CHECK(!hr_config_quant_excluded(&c, "model.layers.0.mlp.experts.gate_up_proj_blocks"));
    }
    if (load_fixture("tiny-llama-fp8", &c) == HR_OK) {
        check_tiny_common(&c);
        CHECK_EQ_INT(c.quant, HR_QUANT_FP8);
        CHECK_EQ_INT(c.n_quant_exclude, 1);
        CHECK_STREQ(c.quant_exclude[0], "lm_head");
        CHECK(hr_config_quant_excluded(&c, "lm_head"));
        CHECK(!hr_config_quant_excluded(&c, "model.layers.0.mlp.down_proj"));
        CHECK(!hr_config_quant_excluded(&c, "lm_head_extra"));
    }
    if (load_fixture("tiny-llama-nvfp4", &c) == HR_OK) {
        check_tiny_common(&c);
        CHECK_EQ_INT(c.quant, HR_QUANT_NVFP4);
        CHECK_EQ_INT(c.quant_group_size, 16);
        CHECK_EQ_INT(c.n_quant_exclude, 1);
        CHECK(hr_config_quant_excluded(&c, "lm_head.weight"));
    }
}

static int parse(const char *json, hr_config *c, hr_err *err) { return hr_config_parse(json, c, err); }

#define BASE                                                                                                           \
    "\"vocab_size\":1000,\"hidden_size\":256,\"intermediate_size\":512,\"num_hidden_layers\":4,"                       \
    "\"num_attention_heads\":8"

static void test_spellings(void) {
    hr_config c;
    hr_err err = {0};
    /* minimal llama: transformers defaults */
    CHECK_EQ_INT(parse("{\"model_type\":\"llama\"," BASE "}", &c, &err), HR_OK);
    CHECK_EQ_INT(c.num_key_value_heads, 8);
    CHECK_EQ_INT(c.head_dim, 32);
    CHECK_NEAR(c.rope_theta, 10000.0, 0);
    CHECK_EQ_INT(c.rope_type, HR_ROPE_DEFAULT);
    CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);
    CHECK_EQ_INT(c.max_position_embeddings, 2048);
    CHECK(!c.tie_word_embeddings);
    CHECK_EQ_INT(c.dtype, HR_F32);
    CHECK_EQ_INT(c.n_eos, 0);
    CHECK_EQ_INT(c.bos_token_id, -1);
    CHECK_EQ_INT(c.n_layer_types, 4);

    /* newer spelling: dtype + rope_parameters carrying rope_theta, llama3 */
    CHECK_EQ_INT(parse("{\"model_type\":\"llama\"," BASE ",\"dtype\":\"float16\",\"head_dim\":64,"
                       "\"rope_parameters\":{\"rope_type\":\"llama3\",\"rope_theta\":500000.0,\"factor\":32.0,"
                       "\"low_freq_factor\":2.0,\"high_freq_factor\":8.0,\"original_max_position_embeddings\":8192},"
                       "\"eos_token_id\":[128001,128008,128009]}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.dtype, HR_F16);
    CHECK_EQ_INT(c.head_dim, 64);
    CHECK_EQ_INT(c.rope_type, HR_ROPE_LLAMA3);
    CHECK_NEAR(c.rope_theta, 500000.0, 0);
    CHECK_NEAR(c.rope_factor, 32.0, 0);
    CHECK_NEAR(c.rope_low_freq_factor, 2.0, 0);
    CHECK_NEAR(c.rope_high_freq_factor, 8.0, 0);
    CHECK_EQ_INT(c.rope_original_max_pos, 8192);
    CHECK_EQ_INT(c.n_eos, 3);
    CHECK(c.eos_token_ids[0] == 128001 && c.eos_token_ids[2] == 128009);

    /* rope_parameters with "type" spelling, default -> nothing; rope_theta top-level wins */
    CHECK_EQ_INT(parse("{\"model_type\":\"mistral\"," BASE ",\"torch_dtype\":\"bfloat16\",\"rope_theta\":1e6,"
                       "\"rope_parameters\":{\"type\":\"default\",\"rope_theta\":5.0},\"sliding_window\":4096}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.dtype, HR_BF16);
    CHECK_NEAR(c.rope_theta, 1e6, 0);
    CHECK_EQ_INT(c.rope_type, HR_ROPE_DEFAULT);
    CHECK_EQ_INT(c.sliding_window, 4096);
    CHECK(c.layer_is_sliding[0] && c.layer_is_sliding[3]);
    CHECK_EQ_INT(c.max_position_embeddings, 131072); /* MistralConfig: 4096 * 32 */
    CHECK_NEAR(c.rms_norm_eps, 1e-6, 1e-12);

    /* per-layer-type rope_parameters (transformers 5) */
    CHECK_EQ_INT(parse("{\"model_type\":\"llama\"," BASE ",\"rope_parameters\":{\"full_attention\":"
                       "{\"rope_type\":\"linear\",\"factor\":4.0,\"rope_theta\":20000.0}}}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.rope_type, HR_ROPE_LINEAR);
    CHECK_NEAR(c.rope_factor, 4.0, 0);
    CHECK_NEAR(c.rope_theta, 20000.0, 0);

    /* yarn with attention_factor and truncate default; gpt_oss defaults */
    CHECK_EQ_INT(parse("{\"model_type\":\"gpt_oss\"," BASE ",\"experts_per_token\":3,"
                       "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,\"attention_factor\":1.25,"
                       "\"beta_fast\":16}}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.rope_type, HR_ROPE_YARN);
    CHECK_NEAR(c.rope_attention_factor, 1.25, 0);
    CHECK_NEAR(c.rope_beta_fast, 16.0, 0);
    CHECK_NEAR(c.rope_beta_slow, 1.0, 0);
    CHECK(c.rope_truncate);
    CHECK_EQ_INT(c.rope_original_max_pos, 131072); /* falls back to max_position_embeddings */
    CHECK_NEAR(c.rope_theta, 150000.0, 0);
    CHECK_EQ_INT(c.num_experts, 128);
    CHECK_EQ_INT(c.num_experts_per_tok, 3);
    CHECK_EQ_INT(c.sliding_window, 128);
    CHECK(c.layer_is_sliding[0] && !c.layer_is_sliding[1] && c.layer_is_sliding[2] && !c.layer_is_sliding[3]);
    CHECK(c.attention_bias);
    CHECK_NEAR(c.swiglu_limit, 7.0, 0);

    /* qwen2 sliding window on the layers from max_window_layers on */
    CHECK_EQ_INT(parse("{\"model_type\":\"qwen2\"," BASE ",\"use_sliding_window\":true,\"sliding_window\":64,"
                       "\"max_window_layers\":2}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.sliding_window, 64);
    CHECK_EQ_INT(c.max_position_embeddings, 32768);
    CHECK(!c.layer_is_sliding[0] && !c.layer_is_sliding[1] && c.layer_is_sliding[2] && c.layer_is_sliding[3]);

    /* modelopt in config.json */
    CHECK_EQ_INT(parse("{\"model_type\":\"llama\"," BASE ",\"quantization_config\":{\"quant_method\":\"modelopt\","
                       "\"quant_algo\":\"NVFP4\",\"exclude_modules\":[\"lm_head\",\"model.layers.*.mlp.gate\"]}}",
                       &c, &err),
                 HR_OK);
    CHECK_EQ_INT(c.quant, HR_QUANT_NVFP4);
    CHECK_EQ_INT(c.quant_group_size, 16);
    CHECK(hr_config_quant_excluded(&c, "model.layers.17.mlp.gate.weight"));
    CHECK(!hr_config_quant_excluded(&c, "model.layers.17.mlp.gate_proj.weight"));
}

static void expect_error(const char *json, int code, const char *want) {
    hr_config c;
    hr_err err = {0};
    int rc = hr_config_parse(json, &c, &err);
    CHECK_MSG(rc == code, "rc %d want %d for %s", rc, code, json);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
}

static void test_errors(void) {
    expect_error("{\"model_type\":\"bert\"," BASE "}", HR_EUNSUP,
                 "unsupported model_type 'bert' (supported: llama, mistral, qwen2, mixtral, gpt_oss)");
    expect_error("{" BASE "}", HR_EINVAL, "missing model_type");
    expect_error("[1]", HR_EINVAL, "not a JSON object");
    expect_error("{\"model_type\":", HR_EINVAL, "not valid JSON");
    expect_error("{\"model_type\":\"llama\",\"vocab_size\":10}", HR_EINVAL, "hidden_size missing");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"num_key_value_heads\":3}", HR_EINVAL, "num_key_value_heads 3");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"rope_scaling\":{\"rope_type\":\"longrope\"}}", HR_EUNSUP,
                 "unsupported rope type 'longrope'");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"torch_dtype\":\"float8\"}", HR_EUNSUP,
                 "unsupported dtype 'float8'");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"quantization_config\":{\"quant_method\":\"gptq\"}}", HR_EUNSUP,
                 "unsupported quantization method 'gptq'");
    expect_error("{\"model_type\":\"llama\"," BASE ",\"quantization_config\":{\"quant_method\":\"modelopt\","
                 "\"quant_algo\":\"W4A8_AWQ\"}}",
                 HR_EUNSUP, "unsupported ModelOpt quant_algo 'W4A8_AWQ'");
    expect_error("{\"model_type\":\"gpt_oss\"," BASE ",\"layer_types\":[\"full_attention\"]}", HR_EINVAL,
                 "layer_types has 1 entries for 4 layers");
    expect_error("{\"model_type\":\"mixtral\"," BASE ",\"num_local_experts\":4,\"num_experts_per_tok\":5}", HR_EINVAL,
                 "num_experts_per_tok 5");
}

/* hr_config_load on a directory written here: generation_config and
 * hf_quant_config merge, errors name the directory. */
static void test_load_dir(void) {
    char dir[256], p[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/hr_cfg_XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) return;
    hr_config c;
    hr_err err = {0};
    CHECK_EQ_INT(hr_config_load(dir, &c, &err), HR_ENOTFOUND);
    CHECK_MSG(strstr(err.msg, "config.json"), "%s", err.msg);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"model_type\":\"llama\"," BASE ",\"eos_token_id\":2}", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/generation_config.json", dir);
    f = fopen(p, "w");
    fputs("{\"temperature\":0.6,\"top_p\":0.9,\"top_k\":20,\"min_p\":0.05,\"repetition_penalty\":1.1,"
          "\"max_new_tokens\":77,\"eos_token_id\":[2,7]}",
          f);
    fclose(f);
    char hq[512];
    snprintf(hq, sizeof hq, "%s/hf_quant_config.json", dir);
    f = fopen(hq, "w");
    fputs("{\"producer\":{\"name\":\"modelopt\"},\"quantization\":{\"quant_algo\":\"FP8\",\"exclude_modules\":[\"lm_"
          "head\"]}}",
          f);
    fclose(f);
    CHECK_MSG(hr_config_load(dir, &c, &err) == HR_OK, "%s", err.msg);
    CHECK_NEAR(c.gen_temperature, 0.6, 1e-6);
    CHECK_NEAR(c.gen_top_p, 0.9, 1e-6);
    CHECK_NEAR(c.gen_min_p, 0.05, 1e-6);
    CHECK_NEAR(c.gen_repetition_penalty, 1.1, 1e-6);
    CHECK_EQ_INT(c.gen_top_k, 20);
    CHECK_EQ_INT(c.gen_max_new_tokens, 77);
    CHECK_EQ_INT(c.n_eos, 2); /* union of {2} and {2, 7} */
    CHECK(c.eos_token_ids[0] == 2 && c.eos_token_ids[1] == 7);
    CHECK_EQ_INT(c.quant, HR_QUANT_FP8);
    CHECK(hr_config_quant_excluded(&c, "lm_head"));
    f = fopen(hq, "w");
    fputs("{\"quantization\":{\"quant_algo\":\"INT4_AWQ\"}}", f);
    fclose(f);
    CHECK_EQ_INT(hr_config_load(dir, &c, &err), HR_EUNSUP);
    CHECK_MSG(strstr(err.msg, dir) && strstr(err.msg, "INT4_AWQ"), "%s", err.msg);
    f = fopen(hq, "w");
    fputs("{\"quantization\": [", f);
    fclose(f);
    CHECK_EQ_INT(hr_config_load(dir, &c, &err), HR_EINVAL);
    CHECK_MSG(strstr(err.msg, "hf_quant_config.json"), "%s", err.msg);
    unlink(hq);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    f = fopen(p, "w");
    fputs("{\"model_type\":\"phi3\"," BASE "}", f);
    fclose(f);
    CHECK_EQ_INT(hr_config_load(dir, &c, &err), HR_EUNSUP);
    CHECK_MSG(strstr(err.msg, dir) && strstr(err.msg, "unsupported model_type 'phi3'"), "%s", err.msg);
    unlink(p);
    rmdir(dir);
}

int main(void) {
    test_fixture_configs();
    test_spellings();
    test_errors();
    test_load_dir();
    return test_report("io/test_config");
}
