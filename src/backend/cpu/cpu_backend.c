/* CPU backend: construction, ISA selection, host tensors, scratch memory and
 * the element-wise ops (embed, rmsnorm, add_rmsnorm, add, get_rows, swiglu).
 * The heavier ops live in cpu_linear.c, cpu_attention.c and cpu_moe.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/cpu/cpu.h"
#include "core/log.h"

#define CPU_ALIGN 64
/* Rows below this many elements per chunk are not worth a thread hand-off. */
#define CPU_ELEMS_PER_TASK 16384

/* ---------------------------------------------------------------- helpers */

int cpu_check(hr_backend *be, const char *op, const hr_tensor *t, const char *what, hr_dtype dt, int64_t min_elems) {
    if (!t || !t->data) return hr_err_set(&be->err, HR_EINVAL, "cpu %s: %s is missing", op, what);
    if (t->dtype != dt)
        return hr_err_set(&be->err, HR_EUNSUP, "cpu %s: %s '%s' is %s, expected %s", op, what, t->name,
                          hr_dtype_name(t->dtype), hr_dtype_name(dt));
    if (hr_tensor_nelem(t) < min_elems)
        return hr_err_set(&be->err, HR_EINVAL, "cpu %s: %s '%s' has %lld elements, needs %lld", op, what, t->name,
                          (long long)hr_tensor_nelem(t), (long long)min_elems);
    return HR_OK;
}

static int rows_grain(int64_t cols) {
    int64_t g = CPU_ELEMS_PER_TASK / (cols > 0 ? cols : 1);
    return g < 1 ? 1 : (int)g;
}

int cpu_scratch_reserve(hr_backend *be, size_t n) {
    cpu_backend *c = cpu_of(be);
    for (int i = 0; i < c->n_threads; i++) {
        if (c->scratch_len[i] >= n) continue;
        free(c->scratch[i]);
        c->scratch[i] = aligned_alloc(CPU_ALIGN, HR_CDIV(n * sizeof(float), CPU_ALIGN) * CPU_ALIGN);
        c->scratch_len[i] = c->scratch[i] ? n : 0;
        if (!c->scratch[i]) return hr_err_set(&be->err, HR_ENOMEM, "cpu: out of memory for %zu scratch floats", n);
    }
    return HR_OK;
}

void *cpu_shared(hr_backend *be, int slot, size_t nbytes) {
    cpu_backend *c = cpu_of(be);
    if (c->shared_len[slot] >= nbytes && c->shared[slot]) return c->shared[slot];
    free(c->shared[slot]);
    c->shared[slot] = aligned_alloc(CPU_ALIGN, HR_CDIV(nbytes ? nbytes : 1, CPU_ALIGN) * CPU_ALIGN);
    c->shared_len[slot] = c->shared[slot] ? nbytes : 0;
    if (!c->shared[slot]) hr_err_set(&be->err, HR_ENOMEM, "cpu: out of memory for %zu bytes of scratch", nbytes);
    return c->shared[slot];
}

/* Converts n elements of an F32/BF16/F16 vector to float32. */
static void to_f32(hr_dtype dt, const void *src, float *dst, size_t n) { hr_convert_to_f32(dt, src, dst, n); }

static bool is_float_weight(hr_dtype dt) { return dt == HR_F32 || dt == HR_BF16 || dt == HR_F16; }

const float *cpu_vec_f32(hr_backend *be, const char *op, const hr_tensor *w, int64_t n, int slot) {
    if (!w || !w->data || hr_tensor_nelem(w) < n || !is_float_weight(w->dtype)) {
        hr_err_set(&be->err, HR_EINVAL, "cpu %s: weight '%s' must be F32/BF16/F16 with %lld elements", op,
                   w ? w->name : "(null)", (long long)n);
        return NULL;
    }
    if (w->dtype == HR_F32) return w->data;
    float *f = cpu_shared(be, slot, (size_t)n * sizeof(float));
    if (f) to_f32(w->dtype, w->data, f, (size_t)n);
    return f;
}

/* ---------------------------------------------------------------- tensors */

/* Tensors of at least CPU_HUGE bytes (weights, KV caches) are mapped
 * directly, 2 MiB aligned and advised as transparent huge pages: decode
 * streams every weight once per token, and 4 KiB pages would cost a TLB miss
 * every 4 KiB. Fresh anonymous pages are already zero. The size decides the
 * path at free time too, so nothing else needs recording. */
#define CPU_HUGE ((size_t)2 << 20)

static size_t alloc_size(size_t nbytes) {
    size_t a = HR_CDIV(nbytes ? nbytes : 1, CPU_ALIGN) * CPU_ALIGN;
    return a >= CPU_HUGE ? HR_CDIV(a, CPU_HUGE) * CPU_HUGE : a;
}

static void *host_alloc(size_t size) {
    if (size < CPU_HUGE) {
        void *p = aligned_alloc(CPU_ALIGN, size);
        if (p) memset(p, 0, size);
        return p;
    }
    /* over-map by one huge page, then trim to a 2 MiB aligned window */
    size_t span = size + CPU_HUGE;
    char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *p = (char *)(((uintptr_t)raw + CPU_HUGE - 1) & ~(uintptr_t)(CPU_HUGE - 1));
    if (p > raw) munmap(raw, (size_t)(p - raw));
    if (raw + span > p + size) munmap(p + size, (size_t)(raw + span - (p + size)));
#ifdef MADV_HUGEPAGE
    madvise(p, size, MADV_HUGEPAGE); /* advisory: failure only costs speed */
#endif
    return p;
}

static void host_free(void *p, size_t size) {
    if (!p) return;
    if (size < CPU_HUGE)
        free(p);
    else
        munmap(p, size);
}

static hr_tensor *cpu_tensor_new(hr_backend *be, hr_dtype dtype, int ndim, const int64_t *ne, const char *name) {
    if (ndim < 1 || ndim > HR_MAX_DIMS || hr_dtype_size(dtype) == 0) {
        hr_err_set(&be->err, HR_EINVAL, "cpu: bad tensor '%s' (ndim %d, dtype %d)", name ? name : "", ndim, dtype);
        return NULL;
    }
    hr_tensor *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->dtype = dtype;
    t->ndim = ndim;
    t->be = be;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0) {
            free(t);
            hr_err_set(&be->err, HR_EINVAL, "cpu: tensor '%s' has negative dim", name ? name : "");
            return NULL;
        }
        t->ne[i] = ne[i];
    }
    if (name) snprintf(t->name, sizeof t->name, "%s", name);
    t->nbytes = (size_t)hr_tensor_nelem(t) * hr_dtype_size(dtype);
    size_t alloc = alloc_size(t->nbytes);
    t->data = host_alloc(alloc);
    if (!t->data) goto oom;
    cpu_backend *c = cpu_of(be);
    size_t now = __atomic_add_fetch(&c->mem_in_use, alloc, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&c->mem_peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&c->mem_peak, &peak, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return t;
oom:
    free(t);
    hr_err_set(&be->err, HR_ENOMEM, "cpu: out of memory allocating tensor '%s'", name ? name : "");
    return NULL;
}

static void cpu_tensor_free(hr_backend *be, hr_tensor *t) {
    if (!t) return;
    size_t alloc = alloc_size(t->nbytes);
    __atomic_sub_fetch(&cpu_of(be)->mem_in_use, alloc, __ATOMIC_RELAXED);
    host_free(t->data, alloc);
    free(t);
}

static int cpu_tensor_set(hr_backend *be, hr_tensor *t, const void *host, size_t offset, size_t nbytes) {
    if (offset > t->nbytes || nbytes > t->nbytes - offset)
        return hr_err_set(&be->err, HR_EINVAL, "cpu: tensor_set of %zu bytes at %zu past the end of '%s' (%zu bytes)",
                          nbytes, offset, t->name, t->nbytes);
    if (nbytes) memcpy((char *)t->data + offset, host, nbytes);
    return HR_OK;
}

static int cpu_tensor_get(hr_backend *be, const hr_tensor *t, void *host, size_t offset, size_t nbytes) {
    if (offset > t->nbytes || nbytes > t->nbytes - offset)
        return hr_err_set(&be->err, HR_EINVAL, "cpu: tensor_get of %zu bytes at %zu past the end of '%s' (%zu bytes)",
                          nbytes, offset, t->name, t->nbytes);
    if (nbytes) memcpy(host, (const char *)t->data + offset, nbytes);
    return HR_OK;
}

static int cpu_tensor_zero(hr_backend *be, hr_tensor *t) {
    (void)be;
    if (t->nbytes) memset(t->data, 0, t->nbytes);
    return HR_OK;
}

static bool cpu_supports_weight(hr_backend *be, hr_dtype dtype) {
    (void)be;
    return is_float_weight(dtype);
}

static int cpu_copy(hr_backend *be, hr_tensor *dst, const hr_tensor *src) {
    if (dst->nbytes != src->nbytes || dst->dtype != src->dtype)
        return hr_err_set(&be->err, HR_EINVAL, "cpu copy: '%s' and '%s' differ in dtype or size", dst->name, src->name);
    if (src->nbytes) memcpy(dst->data, src->data, src->nbytes);
    return HR_OK;
}

/* Reference argmax: lowest index on ties; NaN is never greater nor equal, so
 * never chosen; a row without any non-NaN value gives 0. */
static int cpu_argmax(hr_backend *be, const hr_tensor *logits, int32_t *ids_host) {
    if (logits->dtype != HR_F32 || logits->ndim < 1)
        return hr_err_set(&be->err, HR_EINVAL, "cpu argmax: '%s' is not an F32 matrix", logits->name);
    int64_t rows = hr_tensor_rows(logits), vocab = hr_tensor_cols(logits);
    if (vocab > INT32_MAX) return hr_err_set(&be->err, HR_EINVAL, "cpu argmax: %lld columns", (long long)vocab);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = (const float *)logits->data + r * vocab;
        float bv = -INFINITY;
        int64_t bi = -1;
        for (int64_t c = 0; c < vocab; c++)
            if (x[c] > bv || (bi < 0 && x[c] == bv)) {
                bv = x[c];
                bi = c;
            }
        ids_host[r] = bi < 0 ? 0 : (int32_t)bi;
    }
    return HR_OK;
}

static int cpu_mem_info(hr_backend *be, size_t *in_use, size_t *peak, size_t *total) {
    cpu_backend *c = cpu_of(be);
    if (in_use) *in_use = __atomic_load_n(&c->mem_in_use, __ATOMIC_RELAXED);
    if (peak) *peak = __atomic_load_n(&c->mem_peak, __ATOMIC_RELAXED);
    if (total) {
        long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
        *total = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : 0;
    }
    return HR_OK;
}

/* ---------------------------------------------------------------- step bracket */

static int cpu_nop_step_begin(hr_backend *be, const hr_step *step) {
    (void)be;
    (void)step;
    return HR_OK;
}
static int cpu_nop(hr_backend *be) {
    (void)be;
    return HR_OK;
}

/* ---------------------------------------------------------------- embed */

static int cpu_embed(hr_backend *be, hr_tensor *out, const hr_tensor *table, const hr_step *step) {
    if (!table || table->ndim != 2 || !is_float_weight(table->dtype))
        return hr_err_set(&be->err, HR_EUNSUP, "cpu embed: table must be a 2-D F32/BF16/F16 tensor");
    int64_t vocab = table->ne[0], dim = table->ne[1];
    int T = step->n_tokens;
    int rc = cpu_check(be, "embed", out, "out", HR_F32, (int64_t)T * dim);
    if (rc) return rc;
    if (hr_tensor_cols(out) != dim)
        return hr_err_set(&be->err, HR_EINVAL, "cpu embed: out has %lld columns, table %lld",
                          (long long)hr_tensor_cols(out), (long long)dim);
    size_t esz = hr_dtype_size(table->dtype);
    for (int t = 0; t < T; t++) {
        int32_t id = step->tokens[t];
        if (id < 0 || id >= vocab)
            return hr_err_set(&be->err, HR_EINVAL, "cpu embed: token %d of %d is %d, outside the vocabulary [0, %lld)",
                              t, T, id, (long long)vocab);
        to_f32(table->dtype, (const char *)table->data + (size_t)id * dim * esz, (float *)out->data + (size_t)t * dim,
               (size_t)dim);
    }
    return HR_OK;
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct {
    float *out, *residual;
    const float *x, *w;
    int64_t cols;
    float eps;
} norm_job;

/* HF LlamaRMSNorm in float32: x * rsqrt(mean(x^2) + eps) * w. The mean is
 * accumulated in double so the result does not depend on the thread split. */
static void norm_rows(void *ctx, int b, int e, int tid) {
    (void)tid;
    const norm_job *j = ctx;
    int64_t n = j->cols;
    for (int r = b; r < e; r++) {
        float *o = j->out + (size_t)r * n;
        const float *x = j->x + (size_t)r * n;
        if (j->residual) { /* residual += x; normalise the sum */
            float *res = j->residual + (size_t)r * n;
            for (int64_t i = 0; i < n; i++) res[i] += x[i];
            x = res;
        }
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        float inv = 1.0f / sqrtf((float)(ss / (double)n) + j->eps);
        for (int64_t i = 0; i < n; i++) o[i] = (x[i] * inv) * j->w[i];
    }
}

static int norm_common(hr_backend *be, const char *op, hr_tensor *out, hr_tensor *residual, const hr_tensor *x,
                       const hr_tensor *w, float eps) {
    int rc = cpu_check(be, op, x, "x", HR_F32, 1);
    if (rc) return rc;
    int64_t cols = hr_tensor_cols(x), rows = hr_tensor_rows(x);
    if ((rc = cpu_check(be, op, out, "out", HR_F32, rows * cols))) return rc;
    if (residual && (rc = cpu_check(be, op, residual, "residual", HR_F32, rows * cols))) return rc;
    const float *wf = cpu_vec_f32(be, op, w, cols, CPU_SLOT_VEC);
    if (!wf) return be->err.code;
    norm_job j = {out->data, residual ? residual->data : NULL, x->data, wf, cols, eps};
    hr_parallel_for(cpu_of(be)->pool, (int)rows, rows_grain(cols), norm_rows, &j);
    return HR_OK;
}

static int cpu_rmsnorm(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_tensor *w, float eps) {
    return norm_common(be, "rmsnorm", out, NULL, x, w, eps);
}

static int cpu_add_rmsnorm(hr_backend *be, hr_tensor *out, hr_tensor *residual, const hr_tensor *x, const hr_tensor *w,
                           float eps) {
    return norm_common(be, "add_rmsnorm", out, residual, x, w, eps);
}

/* ---------------------------------------------------------------- add */

typedef struct {
    float *out;
    const float *a, *b;
    int64_t n;
} add_job;

#define ADD_BLOCK 4096

static void add_range(void *ctx, int b, int e, int tid) {
    (void)tid;
    const add_job *j = ctx;
    int64_t i1 = HR_MIN(j->n, (int64_t)e * ADD_BLOCK);
    for (int64_t i = (int64_t)b * ADD_BLOCK; i < i1; i++) j->out[i] = j->a[i] + j->b[i];
}

static int cpu_add(hr_backend *be, hr_tensor *out, const hr_tensor *a, const hr_tensor *b) {
    int rc = cpu_check(be, "add", a, "a", HR_F32, 1);
    if (rc) return rc;
    int64_t n = hr_tensor_nelem(a);
    if ((rc = cpu_check(be, "add", b, "b", HR_F32, n)) || (rc = cpu_check(be, "add", out, "out", HR_F32, n))) return rc;
    add_job j = {out->data, a->data, b->data, n};
    hr_parallel_for(cpu_of(be)->pool, (int)HR_CDIV(n, ADD_BLOCK), CPU_ELEMS_PER_TASK / ADD_BLOCK, add_range, &j);
    return HR_OK;
}

/* ---------------------------------------------------------------- get_rows */

static int cpu_get_rows(hr_backend *be, hr_tensor *out, const hr_tensor *x, const hr_step *step) {
    int rc = cpu_check(be, "get_rows", x, "x", HR_F32, 1);
    if (rc) return rc;
    int64_t cols = hr_tensor_cols(x), rows = hr_tensor_rows(x);
    if ((rc = cpu_check(be, "get_rows", out, "out", HR_F32, (int64_t)step->n_logits * cols))) return rc;
    for (int i = 0; i < step->n_logits; i++) {
        int32_t r = step->logit_rows[i];
        if (r < 0 || r >= rows)
            return hr_err_set(&be->err, HR_EINVAL, "cpu get_rows: row %d outside [0, %lld)", r, (long long)rows);
        memcpy((float *)out->data + (size_t)i * cols, (const float *)x->data + (size_t)r * cols,
               (size_t)cols * sizeof(float));
    }
    return HR_OK;
}

/* ---------------------------------------------------------------- swiglu */

void cpu_swiglu_rows(float *out, const float *gate, const float *up, size_t n, const hr_act *act) {
    float alpha = act->alpha, limit = act->limit, off = act->up_offset;
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], u = up[i];
        if (limit > 0) {
            g = fminf(g, limit);
            u = fminf(fmaxf(u, -limit), limit);
        }
        out[i] = g / (1.0f + expf(-alpha * g)) * (u + off);
    }
}

typedef struct {
    float *out;
    const float *gate, *up;
    const hr_act *act;
} swiglu_job;

static void swiglu_range(void *ctx, int b, int e, int tid) {
    (void)tid;
    const swiglu_job *j = ctx;
    size_t s = (size_t)b * 1024, n = (size_t)(e - b) * 1024;
    cpu_swiglu_rows(j->out + s, j->gate + s, j->up + s, n, j->act);
}

int cpu_op_swiglu(hr_backend *be, hr_tensor *out, const hr_tensor *gate, const hr_tensor *up, const hr_act *act) {
    int rc = cpu_check(be, "swiglu", gate, "gate", HR_F32, 1);
    if (rc) return rc;
    if (!up) { /* packed [T, 2F]: gate half, then up half of each row */
        int64_t rows = hr_tensor_rows(gate), F = hr_tensor_cols(gate) / 2;
        if (hr_tensor_cols(gate) % 2)
            return hr_err_set(&be->err, HR_EINVAL, "cpu swiglu: packed gate|up '%s' has an odd width", gate->name);
        if ((rc = cpu_check(be, "swiglu", out, "out", HR_F32, rows * F))) return rc;
        const float *g = gate->data;
        for (int64_t r = 0; r < rows; r++)
            cpu_swiglu_rows((float *)out->data + r * F, g + r * 2 * F, g + r * 2 * F + F, (size_t)F, act);
        return HR_OK;
    }
    int64_t n = hr_tensor_nelem(gate);
    if ((rc = cpu_check(be, "swiglu", up, "up", HR_F32, n)) || (rc = cpu_check(be, "swiglu", out, "out", HR_F32, n)))
        return rc;
    /* blocks of 1024 elements; the tail block is done inline */
    int blocks = (int)(n / 1024);
    swiglu_job j = {out->data, gate->data, up->data, act};
    hr_parallel_for(cpu_of(be)->pool, blocks, 16, swiglu_range, &j);
    size_t done = (size_t)blocks * 1024;
    cpu_swiglu_rows(j.out + done, j.gate + done, j.up + done, (size_t)n - done, act);
    return HR_OK;
}

/* ---------------------------------------------------------------- lifetime */

static void cpu_free(hr_backend *be) {
    if (!be) return;
    cpu_backend *c = cpu_of(be);
    if (c) {
        hr_threadpool_free(c->pool);
        if (c->scratch)
            for (int i = 0; i < c->n_threads; i++) free(c->scratch[i]);
        free(c->scratch);
        free(c->scratch_len);
        for (int i = 0; i < 4; i++) free(c->shared[i]);
        free(c);
    }
    free(be);
}

static const hr_backend_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .tensor_new = cpu_tensor_new,
    .tensor_free = cpu_tensor_free,
    .tensor_set = cpu_tensor_set,
    .tensor_get = cpu_tensor_get,
    .tensor_zero = cpu_tensor_zero,
    .supports_weight = cpu_supports_weight,
    .step_begin = cpu_nop_step_begin,
    .step_end = cpu_nop,
    .sync = cpu_nop,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .add_rmsnorm = cpu_add_rmsnorm,
    .add = cpu_add,
    .linear = cpu_op_linear,
    .rope = cpu_op_rope,
    .kv_store = cpu_op_kv_store,
    .qkv_rope_store = cpu_op_qkv_rope_store,
    .attention = cpu_op_attention,
    .swiglu = cpu_op_swiglu,
    .moe = cpu_op_moe,
    .get_rows = cpu_get_rows,
    .copy = cpu_copy,
    .mem_info = cpu_mem_info,
    .argmax = cpu_argmax,
    .sample = cpu_sample,
};

/* Best kernel table for this machine, or the one $HEARTH_CPU_ISA names. */
static const cpu_kernels *pick_kernels(void) {
    const char *want = getenv("HEARTH_CPU_ISA");
#ifdef CPU_HAVE_X86
    __builtin_cpu_init();
    bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (want && *want) {
        if (!strcmp(want, "scalar")) return &cpu_kernels_scalar;
        if (!strcmp(want, "avx2") && has2) return &cpu_kernels_avx2;
        if (!strcmp(want, "avx512") && has512) return &cpu_kernels_avx512;
        HR_LOGW("HEARTH_CPU_ISA=%s is unknown or unsupported here; using scalar kernels", want);
        return &cpu_kernels_scalar;
    }
    if (has512) return &cpu_kernels_avx512;
    if (has2) return &cpu_kernels_avx2;
#else
    if (want && *want && strcmp(want, "scalar"))
        HR_LOGW("HEARTH_CPU_ISA=%s is not available on this architecture; using scalar kernels", want);
#endif
    return &cpu_kernels_scalar;
}

const char *hr_backend_cpu_isa(hr_backend *be) { return cpu_of(be)->k->name; }

hr_backend *hr_backend_cpu_create(int n_threads, hr_err *err) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    hr_backend *be = calloc(1, sizeof *be);
    cpu_backend *c = calloc(1, sizeof *c);
    if (!be || !c) goto oom;
    be->ops = &cpu_ops;
    be->act_dtype = HR_F32;
    be->kv_dtype = HR_F32;
    be->host_memory = true;
    be->impl = c;
    c->n_threads = n_threads;
    c->k = pick_kernels();
    c->scratch = calloc((size_t)n_threads, sizeof *c->scratch);
    c->scratch_len = calloc((size_t)n_threads, sizeof *c->scratch_len);
    if (!c->scratch || !c->scratch_len) goto oom;
    c->pool = hr_threadpool_create(n_threads);
    if (!c->pool) {
        hr_err_set(err, HR_ENOMEM, "cpu backend: could not start %d threads", n_threads);
        goto fail;
    }
    HR_LOGD("cpu backend: %d threads, %s kernels", n_threads, c->k->name);
    return be;
oom:
    hr_err_set(err, HR_ENOMEM, "cpu backend: out of memory");
fail:
    if (!be) {
        free(c);
        return NULL;
    }
    be->impl = c;
    cpu_free(be);
    return NULL;
}
