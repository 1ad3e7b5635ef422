/* Loading weights into the backend from a Hugging Face directory
 * (safetensors + config.json) or a GGUF file. Quantized checkpoints are
 * dequantized here (FP8 / NVFP4 linears, gpt-oss MXFP4 experts, GGUF blocks);
 * the tensor names and layout quirks come from the architecture traits. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/model_impl.h"
#include "model/rope.h"
#include "quant/quant.h"

/* ---- a tensor from either source, in numpy order ------------------------ */
typedef struct wsrc {
    st_set *st;
    gguf_file *gg;
    bool synthetic; /* no file: every tensor is random (synthetic:NAME) */
    uint64_t rng;
} wsrc;

typedef struct wtensor {
    int ndim;
    int64_t shape[4];
    hr_dtype dtype; /* safetensors dtype (unused for GGUF) */
    const void *data;
    size_t nbytes;
    const gguf_tensor *gt; /* non-NULL for GGUF */
} wtensor;

/* A converted noise chunk of synthetic weights, reused by every tensor of the
 * same (dtype, scale, kind, size): generating 4M values per tensor on one
 * core made synthetic:llama-3.1-8b load in 4.9 s on the H100 machine; with
 * the chunks reused, 1.5 s (the uploads). */
typedef struct synth_chunk {
    hr_dtype dt;
    float scale;
    bool constant;
    int64_t n;
    void *data;
} synth_chunk;
#define SYNTH_CACHE 16

/* Slots of reusable float32 buffers: 0 and 1 for load_plain / load_linear /
 * load_group, LBUF_MOE.. for the MoE loaders (which may call those in between). */
#define LBUF_SLOTS 10
#define LBUF_MOE   2

typedef struct loader {
    hr_model *m;
    wsrc src;
    hr_dtype wdt; /* matrices that are bf16/f16/f32 in the checkpoint */
    hr_dtype qdt; /* matrices dequantized from FP8 / NVFP4 / MXFP4 / GGUF blocks */
    synth_chunk cache[SYNTH_CACHE];
    int n_cache;
    /* reused across tensors (grow-only, freed by loader_done): float32
     * staging of converted/dequantized tensors (slot 0 matrices, slot 1
     * biases) and the 16-bit conversion chunk of upload_f32 */
    float *fbuf[LBUF_SLOTS];
    int64_t fcap[LBUF_SLOTS];
    uint16_t *cvt;
} loader;

/* Elements upload_f32 converts per tensor_set: 8 MB of BF16/F16, so the
 * conversion of one chunk overlaps the (asynchronous) upload of the last. */
#define CVT_CHUNK ((int64_t)1 << 22)

static bool wfind(const wsrc *s, const char *name, wtensor *w) {
    memset(w, 0, sizeof *w);
    if (s->synthetic) return false;
    if (s->st) {
        const st_tensor *t = st_set_find(s->st, name);
        if (!t || t->ndim > 4) return false;
        w->ndim = t->ndim;
        for (int i = 0; i < t->ndim; i++) w->shape[i] = t->shape[i];
        w->dtype = t->dtype;
        w->data = t->data;
        w->nbytes = t->nbytes;
        return true;
    }
    const gguf_tensor *t = gguf_find_tensor(s->gg, name);
    if (!t) return false;
    w->ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) w->shape[i] = t->ne[t->ndim - 1 - i];
    w->dtype = HR_DTYPE_COUNT;
    w->data = t->data;
    w->nbytes = t->nbytes;
    w->gt = t;
    return true;
}

static int64_t wnelem(const wtensor *w) {
    int64_t n = 1;
    for (int i = 0; i < w->ndim; i++) n *= w->shape[i];
    return n;
}

static void shape_str(char *buf, size_t len, int ndim, const int64_t *s) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

static int check_shape(const char *name, const wtensor *w, int ndim, const int64_t *want, hr_err *err) {
    bool ok = w->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = w->shape[i] == want[i];
    if (ok) return HR_OK;
    char a[96], b[96];
    shape_str(a, sizeof a, w->ndim, w->shape);
    shape_str(b, sizeof b, ndim, want);
    return hr_err_set(err, HR_EINVAL, "tensor %s has shape %s, expected %s", name, a, b);
}

static int need(const wsrc *s, const char *name, wtensor *w, hr_err *err) {
    if (!wfind(s, name, w)) return hr_err_set(err, HR_ENOTFOUND, "missing tensor %s", name);
    return HR_OK;
}

/* Whole tensor to float32 (plain dtypes and GGUF blocks). */
static int wto_f32(const char *name, const wtensor *w, float *dst, hr_err *err) {
    if (w->gt) {
        int rc = gguf_dequantize(w->gt, dst, err);
        if (rc != HR_OK) hr_err_prefix(err, "%s", name);
        return rc;
    }
    if (w->dtype != HR_F32 && w->dtype != HR_F16 && w->dtype != HR_BF16)
        return hr_err_set(err, HR_EUNSUP, "tensor %s: unsupported dtype %s here", name, hr_dtype_name(w->dtype));
    hr_convert_to_f32(w->dtype, w->data, dst, (size_t)wnelem(w));
    return HR_OK;
}

static int read_scalar(const wsrc *s, const char *name, float *out, hr_err *err) {
    wtensor w;
    int rc = need(s, name, &w, err);
    if (rc != HR_OK) return rc;
    if (wnelem(&w) != 1) return hr_err_set(err, HR_EINVAL, "tensor %s: expected a scalar", name);
    return wto_f32(name, &w, out, err);
}

/* ---- upload ------------------------------------------------------------- */
static float *falloc(int64_t n, hr_err *err) {
    float *p = malloc((size_t)n * sizeof(float));
    if (!p) hr_err_set(err, HR_ENOMEM, "out of memory (%lld floats)", (long long)n);
    return p;
}

/* The loader's reusable float32 buffer `slot` with room for n values (grown,
 * never shrunk): no fresh allocation (and page faults) per tensor. */
static float *lbuf(loader *L, int slot, int64_t n, hr_err *err) {
    if (n < 1) n = 1;
    if (n > L->fcap[slot]) {
        free(L->fbuf[slot]);
        L->fcap[slot] = 0;
        if (!(L->fbuf[slot] = falloc(n, err))) return NULL;
        L->fcap[slot] = n;
    }
    return L->fbuf[slot];
}

static void loader_done(loader *L) {
    for (int i = 0; i < LBUF_SLOTS; i++) free(L->fbuf[i]);
    free(L->cvt);
    for (int i = 0; i < L->n_cache; i++) free(L->cache[i].data);
}

/* Uploads host float32 data as dtype dt (F32, BF16 or F16). 16-bit types are
 * converted chunk by chunk into the loader's conversion buffer, each chunk
 * handed to tensor_set (which may return before the device has it: the CUDA
 * backend stages it, so converting the next chunk overlaps its copy). */
static hr_tensor *upload_f32(loader *L, const float *data, int ndim, const int64_t *ne, hr_dtype dt, const char *name,
                             hr_err *err) {
    hr_model *m = L->m;
    if (dt != HR_F32 && dt != HR_BF16 && dt != HR_F16) {
        hr_err_set(err, HR_EUNSUP, "%s: cannot store weights as %s", name, hr_dtype_name(dt));
        return NULL;
    }
    hr_tensor *t = hr_model_tensor_new(m, dt, ndim, ne, name, err);
    if (!t) return NULL;
    int64_t n = hr_tensor_nelem(t);
    int rc = HR_OK;
    if (dt == HR_F32) {
        rc = m->be->ops->tensor_set(m->be, t, data, 0, t->nbytes);
    } else {
        if (!L->cvt && n > 0 && !(L->cvt = malloc((size_t)CVT_CHUNK * 2))) {
            hr_err_set(err, HR_ENOMEM, "out of memory converting %s", name);
            return NULL;
        }
        for (int64_t i0 = 0; rc == HR_OK && i0 < n; i0 += CVT_CHUNK) {
            int64_t c = HR_MIN(CVT_CHUNK, n - i0);
            for (int64_t i = 0; i < c; i++)
                L->cvt[i] = dt == HR_BF16 ? hr_f32_to_bf16(data[i0 + i]) : hr_f32_to_f16(data[i0 + i]);
            rc = m->be->ops->tensor_set(m->be, t, L->cvt, (size_t)i0 * 2, (size_t)c * 2);
        }
    }
    if (rc != HR_OK) {
        hr_err_set(err, rc, "uploading %s: %s", name, m->be->err.msg);
        return NULL;
    }
    m->weight_bytes += t->nbytes;
    return t;
}

/* Synthetic weights: uniform in [-scale, scale) (xorshift64*), or all
 * `scale` when constant. */
static void synth_fill(wsrc *s, float *dst, int64_t n, float scale, bool constant) {
    for (int64_t i = 0; i < n; i++) {
        if (constant) {
            dst[i] = scale;
            continue;
        }
        s->rng ^= s->rng >> 12;
        s->rng ^= s->rng << 25;
        s->rng ^= s->rng >> 27;
        uint64_t r = s->rng * 2685821657736338717ull;
        dst[i] = ((float)(r >> 40) / (float)(1 << 24) * 2 - 1) * scale;
    }
}

/* A synthetic tensor: one chunk of noise (uniform in [-scale, scale), or
 * all `scale` when constant) converted once to dt and uploaded repeatedly
 * across the tensor, so an 8B model loads at upload speed. Repeating noise
 * is fine: the output is meaningless by design. */
#define SYNTH_CHUNK ((int64_t)1 << 22)
static hr_tensor *synth_tensor(loader *L, const char *name, int ndim, const int64_t *shape, hr_dtype dt, float scale,
                               bool constant, hr_err *err) {
    hr_tensor *t = hr_model_tensor_new(L->m, dt, ndim, shape, name, err);
    if (!t) return NULL;
    int64_t n = hr_tensor_nelem(t), c = n < SYNTH_CHUNK ? n : SYNTH_CHUNK;
    size_t es = hr_dtype_size(dt);
    synth_chunk *hit = NULL;
    for (int i = 0; i < L->n_cache && !hit; i++) {
        synth_chunk *k = &L->cache[i];
        if (k->dt == dt && k->scale == scale && k->constant == constant && k->n == c) hit = k;
    }
    float *f = NULL;
    void *chunk = hit ? hit->data : NULL;
    if (!hit) {
        f = falloc(c, err);
        chunk = f && dt != HR_F32 ? malloc((size_t)c * es) : f;
        if (!f || !chunk) {
            free(f);
            hr_err_set(err, HR_ENOMEM, "out of memory for %s", name);
            return NULL;
        }
        synth_fill(&L->src, f, c, scale, constant);
        for (int64_t i = 0; dt != HR_F32 && i < c; i++)
            ((uint16_t *)chunk)[i] = dt == HR_BF16 ? hr_f32_to_bf16(f[i]) : hr_f32_to_f16(f[i]);
    }
    int rc = hr_tensor_set_repeated(L->m->be, t, chunk, (size_t)c * es);
    if (!hit && L->n_cache < SYNTH_CACHE) {
        L->cache[L->n_cache++] = (synth_chunk){dt, scale, constant, c, chunk};
        if (chunk != f) free(f);
    } else if (!hit) {
        if (chunk != f) free(chunk);
        free(f);
    }
    if (rc != HR_OK) {
        hr_err_set(err, rc, "uploading %s: %s", name, L->m->be->err.msg);
        return NULL;
    }
    L->m->weight_bytes += t->nbytes;
    return t;
}

static hr_tensor *synth_plain(loader *L, const char *name, int ndim, const int64_t *shape, hr_dtype dt, hr_err *err) {
    bool norm = ndim == 1 && strstr(name, "norm") != NULL;
    float scale = norm ? 1.0f : ndim == 1 ? 0.02f : 1.0f / sqrtf((float)shape[ndim - 1]);
    return synth_tensor(L, name, ndim, shape, dt, scale, norm, err);
}

/* A plain (unquantized) tensor of the given shape, stored as dt. */
static hr_tensor *load_plain(loader *L, const char *name, int ndim, const int64_t *shape, hr_dtype dt, hr_err *err) {
    wtensor w;
    if (L->src.synthetic) return synth_plain(L, name, ndim, shape, dt, err);
    if (need(&L->src, name, &w, err) != HR_OK || check_shape(name, &w, ndim, shape, err) != HR_OK) return NULL;
    if (!w.gt && w.dtype == dt) { /* same type: straight from the mapping */
        hr_tensor *t = hr_model_tensor_new(L->m, dt, ndim, shape, name, err);
        if (!t) return NULL;
        if (L->m->be->ops->tensor_set(L->m->be, t, w.data, 0, t->nbytes) != HR_OK) {
            hr_err_set(err, HR_EIO, "uploading %s: %s", name, L->m->be->err.msg);
            return NULL;
        }
        L->m->weight_bytes += t->nbytes;
        return t;
    }
    float *buf = lbuf(L, 0, wnelem(&w), err);
    if (!buf) return NULL;
    hr_tensor *t = NULL;
    if (wto_f32(name, &w, buf, err) == HR_OK) t = upload_f32(L, buf, ndim, shape, dt, name, err);
    return t;
}

/* Reads weight prefix.weight [rows, cols] into dst as float32, dequantizing
 * ModelOpt FP8 (weight_scale, and input_scale for W8A8) and NVFP4
 * (weight_scale block scales x weight_scale_2; weight-only, input_scale
 * ignored). *quantized tells whether it was. */
static int read_matrix(loader *L, const char *prefix, int64_t rows, int64_t cols, float *dst, float *input_scale,
                       bool *quantized, hr_err *err) {
    char name[256], sname[256];
    wtensor w;
    int rc;
    *quantized = false;
    if (input_scale) *input_scale = 0;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if ((rc = need(&L->src, name, &w, err)) != HR_OK) return rc;
    if (!w.gt && w.dtype == HR_F8_E4M3) {
        int64_t want[2] = {rows, cols};
        float ws, is = 0;
        if ((rc = check_shape(name, &w, 2, want, err)) != HR_OK) return rc;
        snprintf(sname, sizeof sname, "%s.weight_scale", prefix);
        if ((rc = read_scalar(&L->src, sname, &ws, err)) != HR_OK) return rc;
        snprintf(sname, sizeof sname, "%s.input_scale", prefix);
        wtensor tmp;
        if (wfind(&L->src, sname, &tmp) && (rc = read_scalar(&L->src, sname, &is, err)) != HR_OK) return rc;
        hr_dequant_fp8_e4m3(w.data, ws, dst, (size_t)(rows * cols));
        if (input_scale) *input_scale = is;
        *quantized = true;
        return HR_OK;
    }
    if (!w.gt && w.dtype == HR_U8) { /* NVFP4: two E2M1 codes per byte */
        int64_t want[2] = {rows, cols / 2}, swant[2] = {rows, cols / HR_NVFP4_BLOCK};
        wtensor sc;
        float s2;
        if (cols % HR_NVFP4_BLOCK) return hr_err_set(err, HR_EINVAL, "%s: NVFP4 needs in %% 16 == 0", name);
        if ((rc = check_shape(name, &w, 2, want, err)) != HR_OK) return rc;
        snprintf(sname, sizeof sname, "%s.weight_scale", prefix);
        if ((rc = need(&L->src, sname, &sc, err)) != HR_OK || (rc = check_shape(sname, &sc, 2, swant, err)) != HR_OK)
            return rc;
        if (sc.dtype != HR_F8_E4M3) return hr_err_set(err, HR_EUNSUP, "%s: expected F8_E4M3 block scales", sname);
        snprintf(sname, sizeof sname, "%s.weight_scale_2", prefix);
        if ((rc = read_scalar(&L->src, sname, &s2, err)) != HR_OK) return rc;
        hr_dequant_nvfp4(w.data, sc.data, s2, dst, rows, cols);
        *quantized = true;
        return HR_OK;
    }
    int64_t want[2] = {rows, cols};
    if ((rc = check_shape(name, &w, 2, want, err)) != HR_OK) return rc;
    *quantized = w.gt != NULL && w.gt->type != GGML_F32 && w.gt->type != GGML_F16 && w.gt->type != GGML_BF16;
    return wto_f32(name, &w, dst, err);
}

/* llama.cpp's convert script reorders each head's rows from HF's
 * rotate_half layout [first half | second half] to interleaved pairs
 * (row 2j+i holds HF row i*half+j); undo it so the NeoX-style RoPE applies. */
static int unpermute_heads(float *w, int64_t rows, int64_t cols, int n_heads, hr_err *err) {
    int64_t hd = rows / n_heads, half = hd / 2;
    float *tmp = falloc(hd * cols, err);
    if (!tmp) return HR_ENOMEM;
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (int64_t)h * hd * cols;
        for (int64_t j = 0; j < half; j++)
            for (int i = 0; i < 2; i++)
                memcpy(tmp + (i * half + j) * cols, head + (2 * j + i) * cols, (size_t)cols * sizeof(float));
        memcpy(head, tmp, (size_t)(hd * cols) * sizeof(float));
    }
    free(tmp);
    return HR_OK;
}

/* A linear layer: prefix.weight [out, in] (+ prefix.bias [out] when
 * with_bias). permute_heads > 0: undo GGUF's Q/K row permutation. */
static int load_linear(loader *L, const char *prefix, int64_t out, int64_t in, bool with_bias, int permute_heads,
                       hr_linear *l, hr_err *err) {
    char name[256];
    int rc = HR_OK;
    bool quantized;
    memset(l, 0, sizeof *l);
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (L->src.synthetic) {
        int64_t ws[2] = {out, in}, bs[1] = {out};
        if (!(l->w = synth_plain(L, name, 2, ws, L->wdt, err))) return err->code;
        snprintf(name, sizeof name, "%s.bias", prefix);
        if (with_bias && !(l->bias = synth_plain(L, name, 1, bs, HR_F32, err))) return err->code;
        return HR_OK;
    }
    wtensor w;
    if (!permute_heads && wfind(&L->src, name, &w) && !w.gt && w.dtype == L->wdt) {
        int64_t shape[2] = {out, in};
        if (!(l->w = load_plain(L, name, 2, shape, L->wdt, err))) return err->code ? err->code : HR_EINVAL;
    } else {
        float *buf = lbuf(L, 0, out * in, err);
        if (!buf) return HR_ENOMEM;
        rc = read_matrix(L, prefix, out, in, buf, &l->input_scale, &quantized, err);
        if (rc == HR_OK && permute_heads) rc = unpermute_heads(buf, out, in, permute_heads, err);
        if (rc == HR_OK) {
            int64_t shape[2] = {out, in};
            l->w = upload_f32(L, buf, 2, shape, quantized ? L->qdt : L->wdt, name, err);
            if (!l->w) rc = err->code ? err->code : HR_EIO;
        }
        if (rc != HR_OK) return rc;
    }
    if (with_bias) {
        int64_t shape[1] = {out};
        snprintf(name, sizeof name, "%s.bias", prefix);
        if (!(l->bias = load_plain(L, name, 1, shape, HR_F32, err))) return err->code ? err->code : HR_EINVAL;
    }
    return HR_OK;
}

/* A view of rows [r0, r0 + rows) of a 2-D (or 1-D) tensor. */
static hr_tensor row_view(const hr_tensor *t, int64_t r0, int64_t rows) {
    hr_tensor v = *t;
    int64_t cols = t->ndim == 2 ? t->ne[1] : 1;
    size_t es = hr_dtype_size(t->dtype);
    v.ne[0] = rows;
    v.data = (char *)t->data + (size_t)(r0 * cols) * es;
    v.nbytes = (size_t)(rows * cols) * es;
    return v;
}

static int read_vec(loader *L, const char *name, int64_t n, float *dst, hr_err *err) {
    wtensor w;
    int64_t shape[1] = {n};
    int rc;
    if ((rc = need(&L->src, name, &w, err)) != HR_OK || (rc = check_shape(name, &w, 1, shape, err)) != HR_OK) return rc;
    return wto_f32(name, &w, dst, err);
}

/* Every part of a group stored in the checkpoint exactly as it will be on the
 * device (same plain dtype, right shape, no GGUF row permutation): the fused
 * weight can be filled straight from the mapping, part by part. */
static bool group_direct(loader *L, int n, const char *const *prefix, const int64_t *out, int64_t in,
                         const int *permute) {
    char name[300];
    wtensor w;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.weight", prefix[i]);
        if (permute[i] || !wfind(&L->src, name, &w) || w.gt || w.dtype != L->wdt || w.ndim != 2 ||
            w.shape[0] != out[i] || w.shape[1] != in || w.nbytes != (size_t)(out[i] * in) * hr_dtype_size(L->wdt))
            return false;
    }
    return true;
}

/* The fused weight of a group_direct() group: each part's bytes go from the
 * mapping to their rows of the device tensor (no host copy or conversion;
 * bit-identical to the float32 round trip, which is exact for bf16/f16/f32);
 * biases (small) still go through float32. */
static int upload_group_direct(loader *L, int n, const char *const *prefix, const int64_t *out, const int64_t *off,
                               int64_t in, bool with_bias, hr_fused *fz, hr_err *err) {
    hr_model *m = L->m;
    char name[300];
    int64_t total = off[n - 1] + out[n - 1], ws[2] = {total, in}, bs[1] = {total};
    size_t es = hr_dtype_size(L->wdt);
    snprintf(name, sizeof name, "%s+.weight", prefix[0]);
    if (!(fz->lin.w = hr_model_tensor_new(m, L->wdt, 2, ws, name, err))) return err->code;
    for (int i = 0; i < n; i++) {
        wtensor w;
        snprintf(name, sizeof name, "%s.weight", prefix[i]);
        bool found = wfind(&L->src, name, &w); /* group_direct() found it */
        HR_ASSERT(found);
        int rc = m->be->ops->tensor_set(m->be, fz->lin.w, w.data, (size_t)(off[i] * in) * es, w.nbytes);
        if (rc != HR_OK) return hr_err_set(err, rc, "uploading %s: %s", name, m->be->err.msg);
    }
    m->weight_bytes += fz->lin.w->nbytes;
    if (!with_bias) return HR_OK;
    float *bias = lbuf(L, 1, total, err);
    if (!bias) return HR_ENOMEM;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.bias", prefix[i]);
        int rc = read_vec(L, name, out[i], bias + off[i], err);
        if (rc != HR_OK) return rc;
    }
    snprintf(name, sizeof name, "%s+.bias", prefix[0]);
    if (!(fz->lin.bias = upload_f32(L, bias, 1, bs, HR_F32, name, err))) return err->code;
    return HR_OK;
}

/* n linears reading the same input (q/k/v or gate/up): loaded as one
 * concatenated weight with the parts as row views when they share storage
 * type and input scale; otherwise each on its own. */
static int load_group(loader *L, int n, const char *const *prefix, const int64_t *out, int64_t in, bool with_bias,
                      const int *permute, hr_linear **parts, hr_fused *fz, hr_err *err) {
    int64_t total = 0, off[4];
    char name[300];
    for (int i = 0; i < n; i++) {
        off[i] = total;
        total += out[i];
    }
    int64_t ws[2] = {total, in}, bs[1] = {total};
    memset(fz, 0, sizeof *fz);
    fz->n = n;
    if (L->src.synthetic) {
        snprintf(name, sizeof name, "%s+.weight", prefix[0]);
        if (!(fz->lin.w = synth_plain(L, name, 2, ws, L->wdt, err))) return err->code;
        snprintf(name, sizeof name, "%s+.bias", prefix[0]);
        if (with_bias && !(fz->lin.bias = synth_plain(L, name, 1, bs, HR_F32, err))) return err->code;
    } else if (group_direct(L, n, prefix, out, in, permute)) {
        int rc = upload_group_direct(L, n, prefix, out, off, in, with_bias, fz, err);
        if (rc != HR_OK) return rc;
    } else {
        float *buf = lbuf(L, 0, total * in, err), *bias = with_bias ? lbuf(L, 1, total, err) : NULL, scale[4];
        bool quant[4], fusable = true;
        int rc = buf && (bias || !with_bias) ? HR_OK : HR_ENOMEM;
        for (int i = 0; rc == HR_OK && i < n; i++) {
            float *dst = buf + off[i] * in;
            rc = read_matrix(L, prefix[i], out[i], in, dst, &scale[i], &quant[i], err);
            if (rc == HR_OK && permute[i]) rc = unpermute_heads(dst, out[i], in, permute[i], err);
            if (rc == HR_OK && with_bias) {
                snprintf(name, sizeof name, "%s.bias", prefix[i]);
                rc = read_vec(L, name, out[i], bias + off[i], err);
            }
            fusable &= quant[i] == quant[0] && scale[i] == scale[0];
        }
        for (int i = 0; rc == HR_OK && i < n; i++) { /* not fusable: upload the parts on their own */
            if (fusable) break;
            int64_t ps[2] = {out[i], in}, pb[1] = {out[i]};
            memset(parts[i], 0, sizeof *parts[i]);
            parts[i]->input_scale = scale[i];
            snprintf(name, sizeof name, "%s.weight", prefix[i]);
            if (!(parts[i]->w = upload_f32(L, buf + off[i] * in, 2, ps, quant[i] ? L->qdt : L->wdt, name, err)))
                rc = err->code;
            snprintf(name, sizeof name, "%s.bias", prefix[i]);
            if (rc == HR_OK && with_bias && !(parts[i]->bias = upload_f32(L, bias + off[i], 1, pb, HR_F32, name, err)))
                rc = err->code;
        }
        if (rc == HR_OK && fusable) {
            snprintf(name, sizeof name, "%s+.weight", prefix[0]);
            fz->lin.input_scale = scale[0];
            if (!(fz->lin.w = upload_f32(L, buf, 2, ws, quant[0] ? L->qdt : L->wdt, name, err))) rc = err->code;
            snprintf(name, sizeof name, "%s+.bias", prefix[0]);
            if (rc == HR_OK && with_bias && !(fz->lin.bias = upload_f32(L, bias, 1, bs, HR_F32, name, err)))
                rc = err->code;
        }
        if (rc != HR_OK || !fusable) return rc;
    }
    for (int i = 0; i < n; i++) {
        fz->wv[i] = row_view(fz->lin.w, off[i], out[i]);
        snprintf(fz->wv[i].name, sizeof fz->wv[i].name, "%.50s.weight", prefix[i]);
        memset(parts[i], 0, sizeof *parts[i]);
        parts[i]->w = &fz->wv[i];
        parts[i]->input_scale = fz->lin.input_scale;
        if (with_bias) {
            fz->bv[i] = row_view(fz->lin.bias, off[i], out[i]);
            parts[i]->bias = &fz->bv[i];
        }
    }
    return HR_OK;
}

static bool bias_on(hr_bias_rule r, const hr_config *c) {
    return r == HR_BIAS_ALWAYS || (r == HR_BIAS_CONFIG && c->attention_bias);
}

/* ---- MoE ------------------------------------------------------------------ */
/* Mixtral: experts.N.{w1,w3,w2} stacked into [E, ffn, hidden] / [E, hidden, ffn]. */
/* Synthetic experts (and expert biases when the architecture has them). */
static int synth_moe(loader *L, int li, hr_moe *moe, hr_err *err) {
    hr_model *m = L->m;
    int64_t E = moe->n_experts, F = m->ffn, H = m->hidden;
    int64_t gs[3] = {E, F, H}, ds[3] = {E, H, F}, gb[2] = {E, F}, db[2] = {E, H};
    char name[96];
    snprintf(name, sizeof name, "layer %d experts gate", li);
    if (!(moe->gate = synth_plain(L, name, 3, gs, L->wdt, err))) return err->code;
    snprintf(name, sizeof name, "layer %d experts up", li);
    if (!(moe->up = synth_plain(L, name, 3, gs, L->wdt, err))) return err->code;
    snprintf(name, sizeof name, "layer %d experts down", li);
    if (!(moe->down = synth_plain(L, name, 3, ds, L->wdt, err))) return err->code;
    if (!m->arch->expert_bias) return HR_OK;
    if (!(moe->gate_bias = synth_tensor(L, "expert gate bias", 2, gb, HR_F32, 0.02f, false, err)) ||
        !(moe->up_bias = synth_tensor(L, "expert up bias", 2, gb, HR_F32, 0.02f, false, err)) ||
        !(moe->down_bias = synth_tensor(L, "expert down bias", 2, db, HR_F32, 0.02f, false, err)))
        return err->code;
    return HR_OK;
}

/* Mixtral experts stored exactly as on the device (plain dtype == the storage
 * type, right shapes): each expert's matrix goes from the mapping straight to
 * its slice of the stacked tensor. Returns 1 when done this way, 0 when the
 * checkpoint needs the float32 path, < 0 on error. */
static int load_moe_split_direct(loader *L, int li, hr_moe *moe, hr_err *err) {
    hr_model *m = L->m;
    const hr_arch_names *n = &m->arch->names;
    int E = moe->n_experts;
    int64_t F = m->ffn, H = m->hidden, gs[3] = {E, F, H}, ds[3] = {E, H, F};
    const char *fmt[3] = {n->expert_gate, n->expert_up, n->expert_down};
    char name[300], prefix[256];
    wtensor w;
    for (int e = 0; e < E; e++)
        for (int k = 0; k < 3; k++) {
            snprintf(prefix, sizeof prefix, fmt[k], li, e);
            snprintf(name, sizeof name, "%s.weight", prefix);
            int64_t r = k == 2 ? H : F, c = k == 2 ? F : H;
            if (!wfind(&L->src, name, &w) || w.gt || w.dtype != L->wdt || w.ndim != 2 || w.shape[0] != r ||
                w.shape[1] != c || w.nbytes != (size_t)(r * c) * hr_dtype_size(L->wdt))
                return 0;
        }
    static const char *what[3] = {"gate", "up", "down"};
    hr_tensor **dst[3] = {&moe->gate, &moe->up, &moe->down};
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "layer %d experts %s", li, what[k]);
        if (!(*dst[k] = hr_model_tensor_new(m, L->wdt, 3, k == 2 ? ds : gs, name, err))) return err->code;
        for (int e = 0; e < E; e++) {
            snprintf(prefix, sizeof prefix, fmt[k], li, e);
            snprintf(name, sizeof name, "%s.weight", prefix);
            if (!wfind(&L->src, name, &w)) return hr_err_set(err, HR_ENOTFOUND, "missing tensor %s", name);
            int rc = m->be->ops->tensor_set(m->be, *dst[k], w.data, (size_t)e * w.nbytes, w.nbytes);
            if (rc != HR_OK) return hr_err_set(err, rc, "uploading %s: %s", name, m->be->err.msg);
        }
        m->weight_bytes += (*dst[k])->nbytes;
    }
    return 1;
}

static int load_moe_split(loader *L, int li, hr_moe *moe, hr_err *err) {
    hr_model *m = L->m;
    const hr_arch_names *n = &L->m->arch->names;
    int E = moe->n_experts;
    int64_t F = m->ffn, H = m->hidden;
    int rc = load_moe_split_direct(L, li, moe, err);
    if (rc != 0) return rc < 0 ? rc : HR_OK;
    float *g = lbuf(L, LBUF_MOE, E * F * H, err), *u = lbuf(L, LBUF_MOE + 1, E * F * H, err),
          *d = lbuf(L, LBUF_MOE + 2, E * F * H, err);
    char prefix[256];
    rc = HR_ENOMEM;
    bool q[3] = {0};
    if (!g || !u || !d) goto fail;
    for (int e = 0; e < E; e++) {
        snprintf(prefix, sizeof prefix, n->expert_gate, li, e);
        if ((rc = read_matrix(L, prefix, F, H, g + e * F * H, NULL, &q[0], err)) != HR_OK) goto fail;
        snprintf(prefix, sizeof prefix, n->expert_up, li, e);
        if ((rc = read_matrix(L, prefix, F, H, u + e * F * H, NULL, &q[1], err)) != HR_OK) goto fail;
        snprintf(prefix, sizeof prefix, n->expert_down, li, e);
        if ((rc = read_matrix(L, prefix, H, F, d + e * F * H, NULL, &q[2], err)) != HR_OK) goto fail;
    }
    int64_t gs[3] = {E, F, H}, ds[3] = {E, H, F};
    hr_dtype dt = q[0] ? L->qdt : L->wdt;
    rc = HR_EIO;
    snprintf(prefix, sizeof prefix, "layer %d experts gate", li);
    if (!(moe->gate = upload_f32(L, g, 3, gs, dt, prefix, err))) goto fail;
    snprintf(prefix, sizeof prefix, "layer %d experts up", li);
    if (!(moe->up = upload_f32(L, u, 3, gs, dt, prefix, err))) goto fail;
    snprintf(prefix, sizeof prefix, "layer %d experts down", li);
    if (!(moe->down = upload_f32(L, d, 3, ds, dt, prefix, err))) goto fail;
    rc = HR_OK;
fail:
    return rc;
}

/* gpt-oss: experts.gate_up_proj [E, 2*ffn rows, hidden] with gate/up rows
 * interleaved (even = gate, odd = up), down_proj [E, hidden, ffn]; MXFP4
 * (*_blocks + *_scales) as published, or plain tensors stored transposed
 * ([E, in, out], as transformers keeps them after dequantization). */
static int read_fused_experts(loader *L, const char *prefix, const char *what, int64_t E, int64_t rows, int64_t cols,
                              float *dst, bool *quantized, hr_err *err) {
    char name[256], sname[256];
    wtensor b, s;
    int rc;
    *quantized = false;
    snprintf(name, sizeof name, "%s%s_blocks", prefix, what);
    if (wfind(&L->src, name, &b)) {
        int64_t bw[4] = {E, rows, cols / HR_MXFP4_BLOCK, 16}, sw[3] = {E, rows, cols / HR_MXFP4_BLOCK};
        if (cols % HR_MXFP4_BLOCK) return hr_err_set(err, HR_EINVAL, "%s: MXFP4 needs in %% 32 == 0", name);
        if ((rc = check_shape(name, &b, 4, bw, err)) != HR_OK) return rc;
        snprintf(sname, sizeof sname, "%s%s_scales", prefix, what);
        if ((rc = need(&L->src, sname, &s, err)) != HR_OK || (rc = check_shape(sname, &s, 3, sw, err)) != HR_OK)
            return rc;
        if (b.dtype != HR_U8 || s.dtype != HR_U8)
            return hr_err_set(err, HR_EUNSUP, "%s: expected U8 blocks and scales", name);
        hr_dequant_mxfp4(b.data, s.data, dst, E * rows, cols);
        *quantized = true;
        return HR_OK;
    }
    snprintf(name, sizeof name, "%s%s", prefix, what);
    wtensor w;
    int64_t want[3] = {E, cols, rows};
    if ((rc = need(&L->src, name, &w, err)) != HR_OK || (rc = check_shape(name, &w, 3, want, err)) != HR_OK) return rc;
    float *tmp = falloc(E * rows * cols, err);
    if (!tmp) return HR_ENOMEM;
    if ((rc = wto_f32(name, &w, tmp, err)) == HR_OK)
        for (int64_t e = 0; e < E; e++)
            for (int64_t i = 0; i < cols; i++)
                for (int64_t o = 0; o < rows; o++) dst[(e * rows + o) * cols + i] = tmp[(e * cols + i) * rows + o];
    free(tmp);
    *quantized = false;
    return rc;
}

static int load_moe_fused(loader *L, int li, hr_moe *moe, hr_err *err) {
    hr_model *m = L->m;
    int64_t E = moe->n_experts, F = m->ffn, H = m->hidden;
    char prefix[256], name[300];
    float *gu = lbuf(L, LBUF_MOE, E * 2 * F * H, err), *g = lbuf(L, LBUF_MOE + 1, E * F * H, err),
          *u = lbuf(L, LBUF_MOE + 2, E * F * H, err), *d = lbuf(L, LBUF_MOE + 3, E * F * H, err),
          *bias = lbuf(L, LBUF_MOE + 4, E * 2 * F, err), *gb = lbuf(L, LBUF_MOE + 5, E * F, err),
          *ub = lbuf(L, LBUF_MOE + 6, E * F, err);
    int rc = HR_ENOMEM;
    bool q1 = false, q2 = false;
    if (!gu || !g || !u || !d || !bias || !gb || !ub) goto fail;
    snprintf(prefix, sizeof prefix, m->arch->names.experts, li);
    if ((rc = read_fused_experts(L, prefix, "gate_up_proj", E, 2 * F, H, gu, &q1, err)) != HR_OK) goto fail;
    if ((rc = read_fused_experts(L, prefix, "down_proj", E, H, F, d, &q2, err)) != HR_OK) goto fail;
    for (int64_t e = 0; e < E; e++)
        for (int64_t f = 0; f < F; f++) {
            memcpy(g + (e * F + f) * H, gu + (e * 2 * F + 2 * f) * H, (size_t)H * sizeof(float));
            memcpy(u + (e * F + f) * H, gu + (e * 2 * F + 2 * f + 1) * H, (size_t)H * sizeof(float));
        }
    int64_t gs[3] = {E, F, H}, ds[3] = {E, H, F}, bs2[2] = {E, F};
    rc = HR_EIO;
    snprintf(name, sizeof name, "%sgate", prefix);
    if (!(moe->gate = upload_f32(L, g, 3, gs, q1 ? L->qdt : L->wdt, name, err))) goto fail;
    snprintf(name, sizeof name, "%sup", prefix);
    if (!(moe->up = upload_f32(L, u, 3, gs, q1 ? L->qdt : L->wdt, name, err))) goto fail;
    snprintf(name, sizeof name, "%sdown", prefix);
    if (!(moe->down = upload_f32(L, d, 3, ds, q2 ? L->qdt : L->wdt, name, err))) goto fail;
    if (m->arch->expert_bias) {
        wtensor w;
        int64_t want[2] = {E, 2 * F}, wantd[2] = {E, H};
        snprintf(name, sizeof name, "%sgate_up_proj_bias", prefix);
        if ((rc = need(&L->src, name, &w, err)) != HR_OK || (rc = check_shape(name, &w, 2, want, err)) != HR_OK ||
            (rc = wto_f32(name, &w, bias, err)) != HR_OK)
            goto fail;
        for (int64_t i = 0; i < E * F; i++) {
            gb[i] = bias[2 * i];
            ub[i] = bias[2 * i + 1];
        }
        rc = HR_EIO;
        if (!(moe->gate_bias = upload_f32(L, gb, 2, bs2, HR_F32, name, err))) goto fail;
        if (!(moe->up_bias = upload_f32(L, ub, 2, bs2, HR_F32, name, err))) goto fail;
        snprintf(name, sizeof name, "%sdown_proj_bias", prefix);
        if (!(moe->down_bias = load_plain(L, name, 2, wantd, HR_F32, err))) goto fail;
    }
    rc = HR_OK;
fail: /* the buffers are the loader's (loader_done) */
    return rc;
}

/* ---- the whole model ------------------------------------------------------- */
static int load_layers(loader *L, hr_err *err) {
    hr_model *m = L->m;
    const hr_arch *a = m->arch;
    const hr_arch_names *n = &a->names;
    const hr_config *c = &m->cfg;
    int64_t H = m->hidden, qd = (int64_t)m->n_heads * m->head_dim, kvd = (int64_t)m->n_kv_heads * m->head_dim;
    int64_t hs[1] = {H};
    char name[256], pfx[256];
    int rc;
    bool qkvb = bias_on(a->qkv_bias, c), ob = bias_on(a->o_bias, c);
    int pq = a->permuted_qk ? m->n_heads : 0, pk = a->permuted_qk ? m->n_kv_heads : 0;

    m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
    if (!m->layers) return hr_err_set(err, HR_ENOMEM, "out of memory");
    for (int li = 0; li < m->n_layers; li++) {
        hr_layer *l = &m->layers[li];
        snprintf(pfx, sizeof pfx, n->attn_norm, li);
        snprintf(name, sizeof name, "%s.weight", pfx);
        if (!(l->attn_norm = load_plain(L, name, 1, hs, HR_F32, err))) return err->code;
        snprintf(pfx, sizeof pfx, n->ffn_norm, li);
        snprintf(name, sizeof name, "%s.weight", pfx);
        if (!(l->ffn_norm = load_plain(L, name, 1, hs, HR_F32, err))) return err->code;

        {
            char pq_[256], pk_[256], pv_[256];
            snprintf(pq_, sizeof pq_, n->q, li);
            snprintf(pk_, sizeof pk_, n->k, li);
            snprintf(pv_, sizeof pv_, n->v, li);
            const char *pf[3] = {pq_, pk_, pv_};
            int64_t outs[3] = {qd, kvd, kvd};
            int perm[3] = {pq, pk, 0};
            hr_linear *parts[3] = {&l->q, &l->k, &l->v};
            if ((rc = load_group(L, 3, pf, outs, H, qkvb, perm, parts, &l->qkv, err)) != HR_OK) return rc;
        }
        snprintf(pfx, sizeof pfx, n->o, li);
        if ((rc = load_linear(L, pfx, H, qd, ob, 0, &l->o, err)) != HR_OK) return rc;
        if (a->sinks) {
            int64_t s[1] = {m->n_heads};
            snprintf(name, sizeof name, n->sinks, li);
            if (!(l->sinks = load_plain(L, name, 1, s, HR_F32, err))) return err->code;
        }

        if (a->ffn == HR_FFN_DENSE) {
            char pg_[256], pu_[256];
            snprintf(pg_, sizeof pg_, n->gate, li);
            snprintf(pu_, sizeof pu_, n->up, li);
            const char *pf[2] = {pg_, pu_};
            int64_t outs[2] = {m->ffn, m->ffn};
            int perm[2] = {0, 0};
            hr_linear *parts[2] = {&l->gate, &l->up};
            if ((rc = load_group(L, 2, pf, outs, H, c->mlp_bias, perm, parts, &l->gate_up, err)) != HR_OK) return rc;
            snprintf(pfx, sizeof pfx, n->down, li);
            if ((rc = load_linear(L, pfx, H, m->ffn, c->mlp_bias, 0, &l->down, err)) != HR_OK) return rc;
            continue;
        }
        hr_moe *moe = &l->moe;
        l->is_moe = true;
        moe->n_experts = c->num_experts;
        moe->top_k = c->num_experts_per_tok;
        moe->route = a->route;
        moe->renormalize = a->renormalize;
        if (moe->n_experts <= 0 || moe->top_k <= 0 || moe->top_k > moe->n_experts)
            return hr_err_set(err, HR_EINVAL, "MoE config: %d experts, %d per token", moe->n_experts, moe->top_k);
        moe->act = (hr_act){.alpha = 1, .limit = 0, .up_offset = 0};
        if (a->clamped_swiglu)
            moe->act = (hr_act){.alpha = HR_GPT_OSS_SWIGLU_ALPHA,
                                .limit = c->swiglu_limit > 0 ? c->swiglu_limit : HR_GPT_OSS_SWIGLU_LIMIT,
                                .up_offset = 1};
        /* the router stays F32: routing decisions are sensitive to rounding */
        hr_dtype keep = L->wdt;
        L->wdt = HR_F32;
        snprintf(pfx, sizeof pfx, n->router, li);
        rc = load_linear(L, pfx, moe->n_experts, H, a->router_bias, 0, &moe->router, err);
        L->wdt = keep;
        if (rc != HR_OK) return rc;
        rc = L->src.synthetic             ? synth_moe(L, li, moe, err)
             : a->ffn == HR_FFN_MOE_SPLIT ? load_moe_split(L, li, moe, err)
                                          : load_moe_fused(L, li, moe, err);
        if (rc != HR_OK) return rc;
    }
    return HR_OK;
}

static int load_globals(loader *L, hr_err *err) {
    hr_model *m = L->m;
    const hr_arch_names *n = &m->arch->names;
    char name[256];
    int64_t es[2] = {m->vocab, m->hidden}, hs[1] = {m->hidden};
    wtensor w;
    snprintf(name, sizeof name, "%s.weight", n->embed);
    if (!wfind(&L->src, name, &w) && !L->src.synthetic) return hr_err_set(err, HR_ENOTFOUND, "missing tensor %s", name);
    /* GGUF token tables are usually block-quantized: keep them in the
     * dequantized storage type, like every other GGUF matrix */
    if (!(m->embed = load_plain(L, name, 2, es, w.gt ? L->qdt : L->wdt, err))) return err->code;
    snprintf(name, sizeof name, "%s.weight", n->final_norm);
    if (!(m->final_norm = load_plain(L, name, 1, hs, HR_F32, err))) return err->code;
    snprintf(name, sizeof name, "%s.weight", n->lm_head);
    bool have = L->src.synthetic ? !m->cfg.tie_word_embeddings : wfind(&L->src, name, &w);
    bool tied = m->cfg.tie_word_embeddings || (!have && m->arch->tied_default);
    if (tied) {
        memset(&m->lm_head, 0, sizeof m->lm_head);
        m->lm_head.w = m->embed;
        return HR_OK;
    }
    return load_linear(L, n->lm_head, m->vocab, m->hidden, false, 0, &m->lm_head, err);
}

/* Fills the derived sizes from the config and checks them. */
static int model_dims(hr_model *m, hr_err *err) {
    const hr_config *c = &m->cfg;
    m->n_layers = c->num_hidden_layers;
    m->hidden = c->hidden_size;
    m->n_heads = c->num_attention_heads;
    m->n_kv_heads = c->num_key_value_heads > 0 ? c->num_key_value_heads : c->num_attention_heads;
    m->head_dim = c->head_dim > 0 ? c->head_dim : (m->n_heads > 0 ? c->hidden_size / m->n_heads : 0);
    m->ffn = c->intermediate_size;
    m->vocab = c->vocab_size;
    m->eps = c->rms_norm_eps > 0 ? c->rms_norm_eps : 1e-5f;
    if (m->n_layers <= 0 || m->hidden <= 0 || m->n_heads <= 0 || m->head_dim <= 0 || m->ffn <= 0 || m->vocab <= 0 ||
        m->n_heads % m->n_kv_heads)
        return hr_err_set(err, HR_EINVAL,
                          "bad model dimensions: layers %d hidden %d heads %d/%d head_dim %d ffn %d vocab %d",
                          m->n_layers, m->hidden, m->n_heads, m->n_kv_heads, m->head_dim, m->ffn, m->vocab);
    return HR_OK;
}

static bool be_supports(hr_backend *be, hr_dtype dt) {
    return !be->ops->supports_weight || be->ops->supports_weight(be, dt);
}

/* Storage types: the checkpoint's own (bf16/f16) unless opts asks otherwise;
 * dequantized weights in F32 so the quantized goldens' tolerance holds, or in
 * the first type the backend takes (F32, BF16). */
static void pick_dtypes(loader *L, const hr_model_opts *opts, hr_dtype ckpt) {
    hr_backend *be = L->m->be;
    bool explicit_dt = opts && opts->weight_dtype != HR_DTYPE_COUNT;
    hr_dtype want = explicit_dt ? opts->weight_dtype : ckpt;
    if (want != HR_BF16 && want != HR_F16) want = HR_F32;
    if (!be_supports(be, want)) want = be_supports(be, HR_F32) ? HR_F32 : HR_BF16;
    L->wdt = want;
    L->qdt = explicit_dt || !be_supports(be, HR_F32) ? want : HR_F32;
}

int hr_model_load_hf(hr_model *m, const char *dir, const hr_model_opts *opts, hr_err *err) {
    loader L = {.m = m};
    int rc = hr_config_load(dir, &m->cfg, err);
    if (rc != HR_OK) return rc;
    m->arch = hr_arch_find(m->cfg.model_type);
    if (!m->arch)
        return hr_err_set(err, HR_EUNSUP, "unsupported architecture '%s' (supported: %s)", m->cfg.model_type,
                          hr_arch_supported());
    if ((rc = model_dims(m, err)) != HR_OK) return rc;
    if (!(L.src.st = st_set_open_dir(dir, err))) return err->code ? err->code : HR_EIO;
    pick_dtypes(&L, opts, m->cfg.dtype);
    if ((rc = load_globals(&L, err)) == HR_OK) rc = load_layers(&L, err);
    loader_done(&L);
    st_set_close(L.src.st);
    return rc;
}

/* ---- GGUF ---------------------------------------------------------------- */
static int gguf_config(gguf_file *g, hr_config *c, hr_err *err) {
    char *arch = gguf_get_str(g, "general.architecture");
    char key[128];
    memset(c, 0, sizeof *c);
    if (!arch) return hr_err_set(err, HR_EINVAL, "GGUF file has no general.architecture");
    if (strcmp(arch, "llama") && strcmp(arch, "qwen2")) {
        hr_err_set(err, HR_EUNSUP, "unsupported GGUF architecture '%s' (supported: llama, qwen2)", arch);
        free(arch);
        return HR_EUNSUP;
    }
    snprintf(c->model_type, sizeof c->model_type, "gguf:%s", arch);
    snprintf(c->architecture, sizeof c->architecture, "%s", arch);
#define K(s) (snprintf(key, sizeof key, "%s." s, arch), key)
    c->max_position_embeddings = (int)gguf_get_int(g, K("context_length"), 2048);
    c->hidden_size = (int)gguf_get_int(g, K("embedding_length"), 0);
    c->num_hidden_layers = (int)gguf_get_int(g, K("block_count"), 0);
    c->intermediate_size = (int)gguf_get_int(g, K("feed_forward_length"), 0);
    c->num_attention_heads = (int)gguf_get_int(g, K("attention.head_count"), 0);
    c->num_key_value_heads = (int)gguf_get_int(g, K("attention.head_count_kv"), c->num_attention_heads);
    c->rope_theta = (float)gguf_get_float(g, K("rope.freq_base"), 10000.0);
    c->rms_norm_eps = (float)gguf_get_float(g, K("attention.layer_norm_rms_epsilon"), 1e-5);
    int rot = (int)gguf_get_int(g, K("rope.dimension_count"), 0);
    c->head_dim = c->num_attention_heads > 0 ? c->hidden_size / c->num_attention_heads : 0;
    c->partial_rotary_factor = rot > 0 && c->head_dim > 0 ? (float)rot / (float)c->head_dim : 1.0f;
    char *st = gguf_get_str(g, K("rope.scaling.type"));
    if (st && !strcmp(st, "linear")) {
        c->rope_type = HR_ROPE_LINEAR;
        c->rope_factor = (float)gguf_get_float(g, K("rope.scaling.factor"), 1.0);
    }
    free(st);
    c->vocab_size = (int)gguf_get_int(g, K("vocab_size"), 0);
#undef K
    free(arch);
    if (c->vocab_size <= 0) {
        const gguf_kv *toks = gguf_find_kv(g, "tokenizer.ggml.tokens");
        const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
        if (toks && toks->type == GGUF_TYPE_ARRAY)
            c->vocab_size = (int)toks->arr_len;
        else if (emb && emb->ndim == 2)
            c->vocab_size = (int)emb->ne[1];
    }
    c->partial_rotary_factor = c->partial_rotary_factor > 0 ? c->partial_rotary_factor : 1.0f;
    c->bos_token_id = (int)gguf_get_int(g, "tokenizer.ggml.bos_token_id", -1);
    int eos = (int)gguf_get_int(g, "tokenizer.ggml.eos_token_id", -1);
    if (eos >= 0) c->eos_token_ids[c->n_eos++] = eos;
    int eot = (int)gguf_get_int(g, "tokenizer.ggml.eot_token_id", -1);
    if (eot >= 0 && eot != eos) c->eos_token_ids[c->n_eos++] = eot;
    c->pad_token_id = (int)gguf_get_int(g, "tokenizer.ggml.padding_token_id", -1);
    c->dtype = HR_F32;
    c->tie_word_embeddings = gguf_find_tensor(g, "output.weight") == NULL;
    c->gen_temperature = c->gen_top_p = c->gen_min_p = c->gen_repetition_penalty = NAN;
    c->gen_top_k = -1;
    c->gen_max_new_tokens = -1;
    return HR_OK;
}

int hr_model_load_gguf(hr_model *m, const char *file, const hr_model_opts *opts, hr_err *err) {
    loader L = {.m = m};
    int rc;
    if (!(L.src.gg = gguf_open(file, err))) return err->code ? err->code : HR_EIO;
    if ((rc = gguf_config(L.src.gg, &m->cfg, err)) != HR_OK) goto done;
    m->arch = hr_arch_find(m->cfg.model_type);
    HR_ASSERT(m->arch);
    if ((rc = model_dims(m, err)) != HR_OK) goto done;
    /* GGUF blocks (Q4/Q8...) are far coarser than bf16: storing them as bf16
     * loses nothing measurable and halves the bytes each decode step streams */
    pick_dtypes(&L, opts, HR_BF16);
    L.qdt = L.wdt;
    if ((rc = load_globals(&L, err)) == HR_OK) rc = load_layers(&L, err);
    /* llama.cpp writes Llama 3 RoPE scaling as per-dimension divisors */
    wtensor rf;
    if (rc == HR_OK && wfind(&L.src, "rope_freqs.weight", &rf)) {
        int half = hr_rope_rot_dim(&m->cfg, m->head_dim) / 2;
        if (wnelem(&rf) != half) {
            rc = hr_err_set(err, HR_EINVAL, "rope_freqs.weight has %lld elements, expected %d", (long long)wnelem(&rf),
                            half);
            goto done;
        }
        if (!(m->rope_factors = falloc(half, err))) {
            rc = HR_ENOMEM;
            goto done;
        }
        rc = wto_f32("rope_freqs.weight", &rf, m->rope_factors, err);
    }
done:
    loader_done(&L);
    gguf_close(L.src.gg);
    return rc;
}

/* ---- after the weights: RoPE and per-layer attention windows ---------------- */
int hr_model_finish(hr_model *m, hr_err *err) {
    const hr_config *c = &m->cfg;
    int rot = hr_rope_rot_dim(c, m->head_dim);
    if (rot <= 0 || rot > m->head_dim) return hr_err_set(err, HR_EINVAL, "bad rotary dim %d", rot);
    m->inv_freq = calloc((size_t)rot / 2, sizeof(float));
    if (!m->inv_freq) return hr_err_set(err, HR_ENOMEM, "out of memory");
    int rc = hr_rope_compute(c, m->head_dim, m->inv_freq, &m->rope.mscale, err);
    if (rc != HR_OK) return rc;
    for (int i = 0; m->rope_factors && i < rot / 2; i++) m->inv_freq[i] /= m->rope_factors[i];
    /* transformers keeps inv_freq as a buffer in the model's dtype: running
     * an unquantized bf16/fp16 checkpoint, the frequencies it rotates by are
     * the rounded ones (the reference logits of such checkpoints differ by
     * ~5e-3 otherwise). Quantized checkpoints are run in float32 there. */
    if (c->quant == HR_QUANT_NONE && !m->gguf && (c->dtype == HR_BF16 || c->dtype == HR_F16))
        for (int i = 0; i < rot / 2; i++)
            m->inv_freq[i] = c->dtype == HR_BF16 ? hr_bf16_to_f32(hr_f32_to_bf16(m->inv_freq[i]))
                                                 : hr_f16_to_f32(hr_f32_to_f16(m->inv_freq[i]));
    m->rope.head_dim = m->head_dim;
    m->rope.rot_dim = rot;
    m->rope.inv_freq = m->inv_freq;
    for (int li = 0; li < m->n_layers; li++) {
        bool sliding = false;
        switch (m->arch->window) {
        case HR_WINDOW_NONE:
            break;
        case HR_WINDOW_ALL_LAYERS:
            sliding = c->sliding_window > 0;
            break;
        case HR_WINDOW_LAYER_TYPES:
            sliding = c->n_layer_types > li ? c->layer_is_sliding[li] : c->sliding_window > 0;
            break;
        case HR_WINDOW_QWEN2:
            if (c->n_layer_types > li)
                sliding = c->layer_is_sliding[li];
            else
                sliding = c->use_sliding_window && li >= c->max_window_layers;
            break;
        }
        m->layers[li].window = sliding && c->sliding_window > 0 ? c->sliding_window : 0;
    }
    return HR_OK;
}

/* ---- synthetic:NAME -------------------------------------------------------- */
int hr_model_load_synthetic(hr_model *m, const char *name, const hr_model_opts *opts, hr_err *err) {
    loader L = {.m = m, .src = {.synthetic = true, .rng = 0x9E3779B97F4A7C15ull}};
    int rc = hr_model_synthetic_config(name, &m->cfg, err);
    if (rc != HR_OK) return rc;
    m->arch = hr_arch_find(m->cfg.model_type);
    HR_ASSERT(m->arch);
    if ((rc = model_dims(m, err)) != HR_OK) return rc;
    pick_dtypes(&L, opts, m->cfg.dtype);
    L.qdt = L.wdt; /* nothing was quantized: store everything as published (bf16) */
    if ((rc = load_globals(&L, err)) == HR_OK) rc = load_layers(&L, err);
    loader_done(&L);
    return rc;
}
