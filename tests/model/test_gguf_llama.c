/* GGUF loading without a download: the test converts tiny-llama (arch
 * llama) and tiny-qwen2 (arch qwen2: q/k/v biases, tied embeddings) to GGUF
 * files the way llama.cpp's convert_hf_to_gguf does (llama.cpp tensor names,
 * ggml dimension order, llama's Q/K rows permuted for interleaved RoPE;
 * weights F32 except a few F16), loads them, and requires the golden logits
 * of the safetensors checkpoints (1e-3 absolute, as test_golden) and their
 * greedy continuations. A wrong Q/K un-permutation or name mapping moves
 * logits by O(1). A rope_freqs divisor tensor (llama.cpp's form of Llama 3
 * scaling) makes the frequencies the bf16-rounded ones transformers used for
 * the golden (see hr_model_finish). */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/rope.h"
#include "test.h"

#define GGUF_ALIGN 32

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s) {
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}
static void kv_u32(FILE *f, const char *k, uint32_t v) {
    w_str(f, k);
    w_u32(f, 4); /* GGUF_TYPE_UINT32 */
    w_u32(f, v);
}
static void kv_f32(FILE *f, const char *k, float v) {
    w_str(f, k);
    w_u32(f, 6); /* GGUF_TYPE_FLOAT32 */
    fwrite(&v, 4, 1, f);
}
static void kv_s(FILE *f, const char *k, const char *v) {
    w_str(f, k);
    w_u32(f, 8); /* GGUF_TYPE_STRING */
    w_str(f, v);
}

typedef struct gt {
    char name[96];
    int ndim;
    int64_t rows, cols; /* numpy order; 1-D: rows = 1 */
    float *data;        /* F32 values */
    bool f16;           /* store as GGML F16 */
} gt;

static size_t gt_bytes(const gt *t) { return (size_t)(t->rows * t->cols) * (t->f16 ? 2 : 4); }

static int write_gguf(const char *path, const char *arch, const hr_config *c, gt *ts, int n) {
    char k[96];
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, (uint64_t)n);
    w_u64(f, 10);
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    kv_s(f, "general.architecture", arch);
    kv_u32(f, KEY("block_count"), (uint32_t)c->num_hidden_layers);
    kv_u32(f, KEY("context_length"), (uint32_t)c->max_position_embeddings);
    kv_u32(f, KEY("embedding_length"), (uint32_t)c->hidden_size);
    kv_u32(f, KEY("feed_forward_length"), (uint32_t)c->intermediate_size);
    kv_u32(f, KEY("attention.head_count"), (uint32_t)c->num_attention_heads);
    kv_u32(f, KEY("attention.head_count_kv"), (uint32_t)c->num_key_value_heads);
    kv_f32(f, KEY("rope.freq_base"), c->rope_theta);
    kv_f32(f, KEY("attention.layer_norm_rms_epsilon"), c->rms_norm_eps);
#undef KEY
    kv_u32(f, "tokenizer.ggml.eos_token_id", 2);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        w_str(f, ts[i].name);
        w_u32(f, (uint32_t)ts[i].ndim);
        if (ts[i].ndim == 2) {
            w_u64(f, (uint64_t)ts[i].cols); /* ggml order: contiguous dimension first */
            w_u64(f, (uint64_t)ts[i].rows);
        } else {
            w_u64(f, (uint64_t)ts[i].cols);
        }
        w_u32(f, ts[i].f16 ? 1 : 0);
        w_u64(f, off);
        off += (gt_bytes(&ts[i]) + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
    }
    static const char zeros[GGUF_ALIGN];
    long pos = ftell(f);
    fwrite(zeros, 1, (size_t)((GGUF_ALIGN - pos % GGUF_ALIGN) % GGUF_ALIGN), f);
    for (int i = 0; i < n; i++) {
        size_t nb = gt_bytes(&ts[i]), ne = (size_t)(ts[i].rows * ts[i].cols);
        if (ts[i].f16)
            for (size_t k = 0; k < ne; k++) {
                uint16_t h = hr_f32_to_f16(ts[i].data[k]);
                fwrite(&h, 2, 1, f);
            }
        else
            fwrite(ts[i].data, 4, ne, f);
        fwrite(zeros, 1, (GGUF_ALIGN - nb % GGUF_ALIGN) % GGUF_ALIGN, f);
    }
    return fclose(f);
}

/* HF tensor -> float32 (rows, cols). */
static float *st_f32(const st_file *sf, const char *name, int64_t *rows, int64_t *cols) {
    const st_tensor *t = st_file_find(sf, name);
    if (!t) return NULL;
    *rows = t->ndim == 2 ? t->shape[0] : 1;
    *cols = t->shape[t->ndim - 1];
    float *d = malloc(sizeof(float) * (size_t)(*rows * *cols));
    hr_convert_to_f32(t->dtype, t->data, d, (size_t)(*rows * *cols));
    return d;
}

/* llama.cpp convert_hf_to_gguf's permute(): per head, HF row i*half + j goes to 2j + i. */
static void permute_rows(float *w, int64_t rows, int64_t cols, int n_heads) {
    int64_t hd = rows / n_heads, half = hd / 2;
    float *tmp = malloc(sizeof(float) * (size_t)(rows * cols));
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < 2; i++)
            for (int64_t j = 0; j < half; j++)
                memcpy(tmp + (h * hd + 2 * j + i) * cols, w + (h * hd + i * half + j) * cols,
                       sizeof(float) * (size_t)cols);
    memcpy(w, tmp, sizeof(float) * (size_t)(rows * cols));
    free(tmp);
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Converts fixture `model` to a GGUF of architecture `arch` (Q/K permuted
 * for llama, as llama.cpp does) and checks it against the golden. */
static void check_model(const char *model, const char *arch, bool permute, bool by_dir) {
    char dir[1024], path[1100], gpath[1100];
    snprintf(dir, sizeof dir, "%s/models/%s", test_fixtures(), model);
    hr_err err = {0};
    hr_config c;
    CHECK_MSG(hr_config_load(dir, &c, &err) == HR_OK, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file *sf = st_file_open(path, &err);
    CHECK_MSG(sf != NULL, "%s", err.msg);
    if (!sf) return;

    gt ts[96];
    int n = 0;
    static const struct {
        const char *hf, *gg;
        int permute;
        bool f16;
    } map[] = {
        {"model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight", 0, false},
        {"model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight", 0, false},
        {"model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", 1, false},
        {"model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", 2, true},
        {"model.layers.%d.self_attn.q_proj.bias", "blk.%d.attn_q.bias", 0, false},
        {"model.layers.%d.self_attn.k_proj.bias", "blk.%d.attn_k.bias", 0, false},
        {"model.layers.%d.self_attn.v_proj.bias", "blk.%d.attn_v.bias", 0, false},
        {"model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", 0, false},
        {"model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight", 0, false},
        {"model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight", 0, true},
        {"model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight", 0, false},
        {"model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight", 0, false},
    };
    static const struct {
        const char *hf, *gg;
    } globals[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(globals); i++) {
        if (!st_file_find(sf, globals[i].hf)) continue; /* tied lm_head: no "output" */
        gt *t = &ts[n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", globals[i].gg);
        t->data = st_f32(sf, globals[i].hf, &t->rows, &t->cols);
        t->ndim = t->rows > 1 ? 2 : 1;
    }
    for (int l = 0; l < c.num_hidden_layers; l++)
        for (size_t i = 0; i < HR_ARRAY_LEN(map); i++) {
            char hf[128];
            snprintf(hf, sizeof hf, map[i].hf, l);
            if (!st_file_find(sf, hf) && strstr(hf, ".bias")) continue; /* biases: qwen2 only */
            gt *t = &ts[n++];
            memset(t, 0, sizeof *t);
            snprintf(t->name, sizeof t->name, map[i].gg, l);
            t->data = st_f32(sf, hf, &t->rows, &t->cols);
            t->ndim = t->rows > 1 ? 2 : 1;
            t->f16 = map[i].f16;
            if (t->data && map[i].permute && permute)
                permute_rows(t->data, t->rows, t->cols,
                             map[i].permute == 1 ? c.num_attention_heads : c.num_key_value_heads);
        }
    bool all = true;
    for (int i = 0; i < n; i++) all &= ts[i].data != NULL;
    CHECK(all);
    /* (the F16-stored tensors round a few tiny values of the bf16 fixture:
     * far below the 1e-3 logit tolerance) */

    /* Llama 3 scaling as llama.cpp stores it: inv_freq = base^(-2i/d) / factor[i] */
    int half = hr_rope_rot_dim(&c, c.head_dim) / 2;
    float want[256], ms;
    CHECK(hr_rope_compute(&c, c.head_dim, want, &ms, &err) == HR_OK);
    gt *rf = &ts[n++];
    memset(rf, 0, sizeof *rf);
    snprintf(rf->name, sizeof rf->name, "rope_freqs.weight");
    rf->ndim = 1;
    rf->rows = 1;
    rf->cols = half;
    rf->data = malloc(sizeof(float) * (size_t)half);
    for (int i = 0; i < half; i++) {
        double base = 1.0 / pow(c.rope_theta, 2.0 * i / (2.0 * half));
        rf->data[i] = (float)(base / hr_bf16_to_f32(hr_f32_to_bf16(want[i])));
    }

    char tmpd[] = "/tmp/hearth_gguf_XXXXXX";
    CHECK(mkdtemp(tmpd) != NULL);
    snprintf(path, sizeof path, "%s/%s.gguf", tmpd, model);
    CHECK(write_gguf(path, arch, &c, ts, n) == 0);

    hr_backend *be = hr_backend_cpu_create(2, &err);
    hr_model *m = NULL;
    /* by_dir: a folder holding just one .gguf (and no config.json) means it */
    int rc = hr_model_load(by_dir ? tmpd : path, be, NULL, &m, &err);
    CHECK_MSG(rc == HR_OK, "load gguf: %s", err.msg);
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    st_file *gf = st_file_open(gpath, &err);
    if (rc == HR_OK && gf) {
        CHECK(hr_model_is_gguf(m));
        CHECK(hr_model_kv_alloc(m, 32, 4, &err) == HR_OK);
        int V = hr_model_vocab_size(m);
        CHECK_EQ_INT(V, c.vocab_size);
        double worst = 0;
        for (int p = 0; p < 3; p++) {
            char nm[32];
            snprintf(nm, sizeof nm, "prompt_%d", p);
            const st_tensor *pt = st_file_find(gf, nm);
            snprintf(nm, sizeof nm, "logits_%d", p);
            const st_tensor *lt = st_file_find(gf, nm);
            snprintf(nm, sizeof nm, "greedy_%d", p);
            const st_tensor *gr = st_file_find(gf, nm);
            int L = (int)pt->shape[0];
            int32_t pos[64], slot[64], rows[64], qs[2] = {0, L}, len = L, bt[32];
            for (int i = 0; i < 32; i++) bt[i] = 31 - i;
            for (int i = 0; i < L; i++) {
                pos[i] = i;
                slot[i] = bt[i / 4] * 4 + i % 4;
                rows[i] = i;
            }
            hr_step st = {.n_tokens = L,
                          .tokens = pt->data,
                          .positions = pos,
                          .slot_mapping = slot,
                          .n_seqs = 1,
                          .query_start = qs,
                          .seq_lens = &len,
                          .block_tables = bt,
                          .max_blocks_per_seq = 32,
                          .block_size = 4,
                          .n_logits = L,
                          .logit_rows = rows};
            float *lg = malloc(sizeof(float) * (size_t)L * (size_t)V);
            CHECK(hr_model_forward(m, &st, lg, &err) == HR_OK);
            const float *g = lt->data;
            double d = 0;
            for (size_t i = 0; i < (size_t)L * (size_t)V; i++) d = fmax(d, fabs((double)lg[i] - g[i]));
            worst = fmax(worst, d);
            CHECK_MSG(d <= 1e-3, "prompt %d: max abs logit error %.3g", p, d);
            /* greedy, EOS masked as the golden was generated */
            int32_t tok = 0;
            const int32_t *gi = gr->data;
            int same = 0;
            float *row = lg + (size_t)(L - 1) * (size_t)V;
            for (int k = 0; k < 24; k++) {
                row[2] = -INFINITY;
                tok = argmax(row, V);
                if (tok != gi[k]) break;
                same++;
                int32_t ps = L + k, sl = bt[ps / 4] * 4 + ps % 4, ln = ps + 1, r0 = 0;
                hr_step ds = {.n_tokens = 1,
                              .tokens = &tok,
                              .positions = &ps,
                              .slot_mapping = &sl,
                              .n_seqs = 1,
                              .query_start = (int32_t[]){0, 1},
                              .seq_lens = &ln,
                              .block_tables = bt,
                              .max_blocks_per_seq = 32,
                              .block_size = 4,
                              .n_logits = 1,
                              .logit_rows = &r0};
                if (hr_model_forward(m, &ds, lg, &err) != HR_OK) break;
                row = lg;
            }
            CHECK_MSG(same == 24, "prompt %d: greedy differs at token %d", p, same);
            free(lg);
        }
        printf("%s via GGUF (%s): max abs logit error vs golden %.3g\n", model, arch, worst);
    }
    st_file_close(gf);
    hr_model_free(m);
    hr_backend_free(be);
    unlink(path);
    rmdir(tmpd);
    for (int i = 0; i < n; i++) free(ts[i].data);
    st_file_close(sf);
}

int main(void) {
    check_model("tiny-llama", "llama", true, false);
    check_model("tiny-qwen2", "qwen2", false, true); /* q/k/v biases, tied embeddings */
    return test_report("model/gguf_llama");
}
