/* Loader error paths on checkpoints the test writes itself (a 1-layer Llama
 * with random float32 weights): a complete one loads and runs; a missing
 * tensor is named; a wrong shape names the tensor and both shapes; an
 * unsupported model_type is named. */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/model.h"
#include "test.h"

typedef struct spec {
    const char *name;
    int ndim;
    int64_t shape[2];
} spec;

static const spec k_tensors[] = {
    {"model.embed_tokens.weight", 2, {10, 8}},
    {"model.norm.weight", 1, {8}},
    {"model.layers.0.input_layernorm.weight", 1, {8}},
    {"model.layers.0.post_attention_layernorm.weight", 1, {8}},
    {"model.layers.0.self_attn.q_proj.weight", 2, {8, 8}},
    {"model.layers.0.self_attn.k_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.v_proj.weight", 2, {4, 8}},
    {"model.layers.0.self_attn.o_proj.weight", 2, {8, 8}},
    {"model.layers.0.mlp.gate_proj.weight", 2, {16, 8}},
    {"model.layers.0.mlp.up_proj.weight", 2, {16, 8}},
    {"model.layers.0.mlp.down_proj.weight", 2, {8, 16}},
};

/* Writes dir/config.json and dir/model.safetensors; `skip` omits a tensor,
 * `bad` gets its first dimension + 1. */
static void write_ckpt(const char *dir, const char *model_type, const char *skip, const char *bad) {
    char path[512], hdr[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fprintf(f,
            "{\"model_type\": \"%s\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, "
            "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
            "\"num_key_value_heads\": 1, \"head_dim\": 4, \"vocab_size\": 10, \"rms_norm_eps\": 1e-5, "
            "\"rope_theta\": 10000.0, \"torch_dtype\": \"float32\", \"tie_word_embeddings\": true, "
            "\"max_position_embeddings\": 64}",
            model_type);
    fclose(f);
    size_t off = 0, o = (size_t)snprintf(hdr, sizeof hdr, "{");
    for (size_t i = 0; i < HR_ARRAY_LEN(k_tensors); i++) {
        const spec *s = &k_tensors[i];
        if (skip && !strcmp(s->name, skip)) continue;
        int64_t d0 = s->shape[0] + (bad && !strcmp(s->name, bad));
        size_t n = (size_t)d0 * (s->ndim == 2 ? (size_t)s->shape[1] : 1) * 4;
        if (s->ndim == 2)
            o += (size_t)snprintf(hdr + o, sizeof hdr - o,
                                  "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[%zu,%zu]}",
                                  o > 1 ? "," : "", s->name, (long long)d0, (long long)s->shape[1], off, off + n);
        else
            o += (size_t)snprintf(hdr + o, sizeof hdr - o,
                                  "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld],\"data_offsets\":[%zu,%zu]}",
                                  o > 1 ? "," : "", s->name, (long long)d0, off, off + n);
        off += n;
    }
    o += (size_t)snprintf(hdr + o, sizeof hdr - o, "}");
    while (o % 8) hdr[o++] = ' ';
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "wb");
    uint64_t hl = o;
    fwrite(&hl, 8, 1, f);
    fwrite(hdr, 1, o, f);
    unsigned seed = 1;
    for (size_t i = 0; i < off / 4; i++) {
        seed = seed * 1103515245u + 12345u;
        float v = ((float)(seed >> 9) / (float)(1u << 23)) * 0.2f - 0.1f;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

static int try_load(hr_backend *be, const char *dir, hr_err *err, hr_model **out) {
    memset(err, 0, sizeof *err);
    *out = NULL;
    return hr_model_load(dir, be, NULL, out, err);
}

int main(void) {
    hr_err err = {0};
    hr_backend *be = hr_backend_cpu_create(1, &err);
    CHECK_MSG(be != NULL, "%s", err.msg);
    if (!be) return test_report("model/loader");
    char dir[] = "/tmp/hearth_loader_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    hr_model *m;

    write_ckpt(dir, "llama", NULL, NULL);
    int rc = try_load(be, dir, &err, &m);
    CHECK_MSG(rc == HR_OK, "complete checkpoint: %s", err.msg);
    if (rc == HR_OK) {
        CHECK_EQ_INT(hr_model_vocab_size(m), 10);
        CHECK_EQ_INT(hr_model_n_layers(m), 1);
        CHECK(hr_model_kv_alloc(m, 4, 4, &err) == HR_OK);
        int32_t tok[3] = {1, 5, 9}, pos[3] = {0, 1, 2}, slot[3] = {4, 5, 6}, qs[2] = {0, 3}, len = 3,
                bt[4] = {1, 0, -1, -1}, rows[3] = {0, 1, 2};
        hr_step st = {.n_tokens = 3,
                      .tokens = tok,
                      .positions = pos,
                      .slot_mapping = slot,
                      .n_seqs = 1,
                      .query_start = qs,
                      .seq_lens = &len,
                      .block_tables = bt,
                      .max_blocks_per_seq = 4,
                      .block_size = 4,
                      .n_logits = 3,
                      .logit_rows = rows};
        float lg[30];
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_OK);
        bool finite = true, varied = false;
        for (int i = 0; i < 30; i++) {
            finite &= isfinite(lg[i]);
            varied |= lg[i] != lg[0];
        }
        CHECK(finite && varied);
        /* a token outside the vocabulary is refused, not read out of bounds */
        tok[1] = 10;
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_EINVAL && strstr(err.msg, "10"));
        tok[1] = 5;
        /* a block outside the cache, or a context longer than the table, is refused */
        bt[0] = 4;
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_EINVAL && strstr(err.msg, "block"));
        bt[0] = 1;
        len = 17;
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_EINVAL);
        len = 3;
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_OK);
        hr_model_free(m);
    }

    write_ckpt(dir, "llama", "model.layers.0.mlp.up_proj.weight", NULL);
    rc = try_load(be, dir, &err, &m);
    CHECK(rc == HR_ENOTFOUND && m == NULL);
    CHECK_MSG(strstr(err.msg, "model.layers.0.mlp.up_proj.weight") != NULL, "message: %s", err.msg);

    write_ckpt(dir, "llama", NULL, "model.layers.0.self_attn.k_proj.weight");
    rc = try_load(be, dir, &err, &m);
    CHECK(rc == HR_EINVAL && m == NULL);
    CHECK_MSG(strstr(err.msg, "k_proj") && strstr(err.msg, "[5, 8]") && strstr(err.msg, "[4, 8]"), "message: %s",
              err.msg);

    write_ckpt(dir, "falcon", NULL, NULL);
    rc = try_load(be, dir, &err, &m);
    CHECK(rc == HR_EUNSUP && m == NULL);
    CHECK_MSG(strstr(err.msg, "falcon") != NULL, "message: %s", err.msg);

    /* synthetic:NAME builds the architecture with random weights and runs */
    static const char *synth[] = {"synthetic:tiny-llama", "synthetic:tiny-mixtral", "synthetic:tiny-gpt-oss"};
    for (size_t i = 0; i < HR_ARRAY_LEN(synth); i++) {
        rc = try_load(be, synth[i], &err, &m);
        CHECK_MSG(rc == HR_OK, "%s: %s", synth[i], err.msg);
        if (rc != HR_OK) continue;
        CHECK_EQ_INT(hr_model_vocab_size(m), 512);
        CHECK(hr_model_kv_alloc(m, 4, 4, &err) == HR_OK);
        int32_t tok[3] = {1, 5, 9}, pos[3] = {0, 1, 2}, slot[3] = {4, 5, 6}, qs[2] = {0, 3}, len = 3,
                bt[4] = {1, 0, -1, -1}, row = 2;
        hr_step st = {.n_tokens = 3,
                      .tokens = tok,
                      .positions = pos,
                      .slot_mapping = slot,
                      .n_seqs = 1,
                      .query_start = qs,
                      .seq_lens = &len,
                      .block_tables = bt,
                      .max_blocks_per_seq = 4,
                      .block_size = 4,
                      .n_logits = 1,
                      .logit_rows = &row};
        float lg[512];
        CHECK(hr_model_forward(m, &st, lg, &err) == HR_OK);
        bool finite = true, varied = false;
        for (int k = 0; k < 512; k++) {
            finite &= isfinite(lg[k]);
            varied |= lg[k] != lg[0];
        }
        CHECK_MSG(finite && varied, "%s: logits not finite/varied", synth[i]);
        hr_model_free(m);
    }
    rc = try_load(be, "synthetic:nope", &err, &m);
    CHECK(rc == HR_EUNSUP && strstr(err.msg, "nope") && strstr(err.msg, "llama-3.1-8b"));

    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
    hr_backend_free(be);
    return test_report("model/loader");
}
