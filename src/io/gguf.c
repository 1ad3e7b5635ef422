/* GGUF reader (llama.cpp's docs/gguf.md): little-endian header "GGUF", version,
 * tensor count, KV count (u64 since v2), the KV pairs, the tensor infos, then
 * padding to general.alignment and the data section. Every length and offset is
 * checked against the mapped file before anything is exposed. */
#include "io/gguf.h"

#include <string.h>

#include "io/mapped.h"

#define GGUF_MAGIC             0x46554747u /* "GGUF" read as little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4
#define GGUF_MAX_ARRAY_DEPTH   2 /* an array of arrays, no deeper */

struct gguf_file {
    char *path;
    io_mapped map;
    uint32_t version;
    uint32_t alignment;
    size_t data_offset;
    int n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    int *kv_sorted, *t_sorted; /* indices sorted by key / name, for bsearch */
};

/* ---- a bounds-checked cursor over the mapping --------------------------- */

typedef struct {
    const uint8_t *p;
    size_t pos, size;
    int bad; /* set once any read ran past the end */
} cursor;

static int need(cursor *c, uint64_t n) {
    if (c->bad || n > c->size - c->pos) {
        c->bad = 1;
        return 0;
    }
    return 1;
}

static uint64_t rd_le(cursor *c, int n) {
    if (!need(c, (uint64_t)n)) return 0;
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | c->p[c->pos + (size_t)i];
    c->pos += (size_t)n;
    return v;
}

static uint32_t rd_u32(cursor *c) { return (uint32_t)rd_le(c, 4); }
static uint64_t rd_u64(cursor *c) { return rd_le(c, 8); }

static gguf_str rd_str(cursor *c) {
    gguf_str s = {0, NULL};
    uint64_t len = rd_u64(c);
    if (!need(c, len)) return s;
    s.len = len;
    s.ptr = (const char *)c->p + c->pos;
    c->pos += (size_t)len;
    return s;
}

static size_t scalar_size(gguf_type t) {
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Reads one scalar into kv->v (unsigned -> u64, signed -> i64, floats -> f64). */
static void rd_scalar(cursor *c, gguf_type t, gguf_kv *kv) {
    uint64_t raw = rd_le(c, (int)scalar_size(t));
    switch (t) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_UINT64:
        kv->v.u64 = raw;
        break;
    case GGUF_TYPE_INT8:
        kv->v.i64 = (int8_t)raw;
        break;
    case GGUF_TYPE_INT16:
        kv->v.i64 = (int16_t)raw;
        break;
    case GGUF_TYPE_INT32:
        kv->v.i64 = (int32_t)raw;
        break;
    case GGUF_TYPE_INT64:
        kv->v.i64 = (int64_t)raw;
        break;
    case GGUF_TYPE_BOOL:
        kv->v.b = raw != 0;
        break;
    case GGUF_TYPE_FLOAT32: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        kv->v.f64 = f;
        break;
    }
    case GGUF_TYPE_FLOAT64:
        memcpy(&kv->v.f64, &raw, 8);
        break;
    default:
        break;
    }
}

/* Skips an array body of `count` elements of type t; depth counts nesting. */
static int skip_array(cursor *c, gguf_type t, uint64_t count, int depth, const char *path, const char *key,
                      hr_err *err) {
    if (t == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < count && !c->bad; i++) rd_str(c);
    } else if (t == GGUF_TYPE_ARRAY) {
        if (depth >= GGUF_MAX_ARRAY_DEPTH)
            return hr_err_set(err, HR_EUNSUP, "%s: key '%s': arrays nested deeper than %d", path, key,
                              GGUF_MAX_ARRAY_DEPTH);
        for (uint64_t i = 0; i < count && !c->bad; i++) {
            gguf_type it = (gguf_type)rd_u32(c);
            uint64_t n = rd_u64(c);
            int rc = skip_array(c, it, n, depth + 1, path, key, err);
            if (rc != HR_OK) return rc;
        }
    } else {
        size_t es = scalar_size(t);
        if (!es)
            return hr_err_set(err, HR_EINVAL, "%s: key '%s': unknown array element type %u", path, key, (unsigned)t);
        if (count > (c->size - c->pos) / es)
            c->bad = 1;
        else
            c->pos += (size_t)(count * es);
    }
    return HR_OK;
}

/* ---- ggml type table ---------------------------------------------------- */

typedef struct {
    const char *name;
    int blck;      /* elements per block */
    int type_size; /* bytes per block */
} type_info;

/* Block sizes as in ggml's type_traits; only types whose layout we know. */
/* clang-format off */
static const type_info k_types[] = {
    [GGML_F32] = {"F32", 1, 4},        [GGML_F16] = {"F16", 1, 2},      [GGML_Q4_0] = {"Q4_0", 32, 18},
    [GGML_Q4_1] = {"Q4_1", 32, 20},    [GGML_Q5_0] = {"Q5_0", 32, 22},  [GGML_Q5_1] = {"Q5_1", 32, 24},
    [GGML_Q8_0] = {"Q8_0", 32, 34},    [GGML_Q8_1] = {"Q8_1", 32, 36},  [GGML_Q2_K] = {"Q2_K", 256, 84},
    [GGML_Q3_K] = {"Q3_K", 256, 110},  [GGML_Q4_K] = {"Q4_K", 256, 144}, [GGML_Q5_K] = {"Q5_K", 256, 176},
    [GGML_Q6_K] = {"Q6_K", 256, 210},  [GGML_Q8_K] = {"Q8_K", 256, 292}, [20] = {"IQ4_NL", 32, 18},
    [23] = {"IQ4_XS", 256, 136},       [24] = {"I8", 1, 1},             [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},              [27] = {"I64", 1, 8},            [28] = {"F64", 1, 8},
    [GGML_BF16] = {"BF16", 1, 2},      [39] = {"MXFP4", 32, 17},
};
/* clang-format on */

static const type_info *type_get(uint32_t t) {
    return t < HR_ARRAY_LEN(k_types) && k_types[t].name ? &k_types[t] : NULL;
}

int ggml_blck_size(ggml_type type) {
    const type_info *ti = type_get((uint32_t)type);
    return ti ? ti->blck : 0;
}

size_t ggml_type_size(ggml_type type) {
    const type_info *ti = type_get((uint32_t)type);
    return ti ? (size_t)ti->type_size : 0;
}

const char *ggml_type_name(ggml_type type) {
    const type_info *ti = type_get((uint32_t)type);
    return ti ? ti->name : "?";
}

/* ---- parsing ------------------------------------------------------------ */

static int cmp_kv_idx(const void *a, const void *b, void *ctx) {
    const gguf_file *f = ctx;
    return strcmp(f->kv[*(const int *)a].key, f->kv[*(const int *)b].key);
}

static int cmp_t_idx(const void *a, const void *b, void *ctx) {
    const gguf_file *f = ctx;
    return strcmp(f->tensors[*(const int *)a].name, f->tensors[*(const int *)b].name);
}

static char *str_dup(gguf_str s) {
    char *p = hr_xmalloc((size_t)s.len + 1);
    if (s.len) memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = '\0';
    return p;
}

/* Builds a sorted index (into sorted) and reports the first duplicate name. */
static const char *build_index(gguf_file *f, int n, int **sorted, int (*cmp)(const void *, const void *, void *),
                               const char *(*name_of)(const gguf_file *, int)) {
    *sorted = hr_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) (*sorted)[i] = i;
    qsort_r(*sorted, (size_t)n, sizeof(int), cmp, f);
    for (int i = 1; i < n; i++)
        if (strcmp(name_of(f, (*sorted)[i - 1]), name_of(f, (*sorted)[i])) == 0) return name_of(f, (*sorted)[i]);
    return NULL;
}

static const char *kv_name(const gguf_file *f, int i) { return f->kv[i].key; }
static const char *t_name(const gguf_file *f, int i) { return f->tensors[i].name; }

static int parse_kv(gguf_file *f, cursor *c, gguf_kv *kv, hr_err *err) {
    gguf_str k = rd_str(c);
    if (c->bad) return hr_err_set(err, HR_EINVAL, "%s: truncated in the metadata", f->path);
    kv->key = str_dup(k);
    kv->type = (gguf_type)rd_u32(c);
    if (kv->type == GGUF_TYPE_STRING) {
        kv->v.str = rd_str(c);
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        kv->arr_type = (gguf_type)rd_u32(c);
        kv->arr_len = rd_u64(c);
        kv->arr_data = c->p + c->pos;
        if (kv->arr_type == GGUF_TYPE_STRING && !c->bad) {
            /* index the strings once, so gguf_get_arr_str is O(1) */
            if (kv->arr_len > (c->size - c->pos) / 8)
                return hr_err_set(err, HR_EINVAL, "%s: key '%s': string array of %llu entries exceeds the file",
                                  f->path, kv->key, (unsigned long long)kv->arr_len);
            gguf_str *strs = hr_xmalloc((size_t)(kv->arr_len ? kv->arr_len : 1) * sizeof(gguf_str));
            for (uint64_t i = 0; i < kv->arr_len && !c->bad; i++) strs[i] = rd_str(c);
            kv->arr_strs = strs;
        } else {
            int rc = skip_array(c, kv->arr_type, kv->arr_len, 1, f->path, kv->key, err);
            if (rc != HR_OK) return rc;
        }
    } else if (scalar_size(kv->type)) {
        rd_scalar(c, kv->type, kv);
    } else {
        return hr_err_set(err, HR_EINVAL, "%s: key '%s': unknown value type %u", f->path, kv->key, (unsigned)kv->type);
    }
    if (c->bad)
        return hr_err_set(err, HR_EINVAL, "%s: key '%s': value runs past the end of the file", f->path, kv->key);
    return HR_OK;
}

static int parse_tensor_info(gguf_file *f, cursor *c, gguf_tensor *t, hr_err *err) {
    gguf_str nm = rd_str(c);
    if (c->bad) return hr_err_set(err, HR_EINVAL, "%s: truncated in the tensor infos", f->path);
    t->name = str_dup(nm);
    uint32_t nd = rd_u32(c);
    if (nd > GGUF_MAX_DIMS)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': %u dimensions (max %d)", f->path, t->name, nd,
                          GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t d = rd_u64(c);
        if (d > (uint64_t)INT64_MAX)
            return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': dimension %u too large", f->path, t->name, i);
        t->ne[i] = (int64_t)d;
    }
    uint32_t type = rd_u32(c);
    t->offset = rd_u64(c);
    if (c->bad)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': info runs past the end of the file", f->path, t->name);
    t->type = (ggml_type)type;
    const type_info *ti = type_get(type);
    if (!ti) return hr_err_set(err, HR_EUNSUP, "%s: tensor '%s': unknown ggml type %u", f->path, t->name, type);
    if (t->ne[0] % ti->blck != 0)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': ne[0] = %lld is not a multiple of the %s block size %d",
                          f->path, t->name, (long long)t->ne[0], ti->name, ti->blck);
    /* bytes = ne0/blck * type_size * ne1 * ne2 * ne3, with overflow checks */
    uint64_t bytes = (uint64_t)(t->ne[0] / ti->blck) * (uint64_t)ti->type_size;
    for (int i = 1; i < GGUF_MAX_DIMS; i++) {
        uint64_t d = (uint64_t)t->ne[i];
        if (d && bytes > UINT64_MAX / d)
            return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': size overflows", f->path, t->name);
        bytes *= d;
    }
    if (bytes > SIZE_MAX) return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': size overflows", f->path, t->name);
    t->nbytes = (size_t)bytes;
    return HR_OK;
}

/* Checks each tensor's offset (aligned, inside the data section) and
 * overlaps, then points it into the mapping. */
static int place_tensors(gguf_file *f, hr_err *err) {
    size_t data_size = f->map.size - f->data_offset;
    for (int i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset % f->alignment != 0)
            return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': offset %llu is not a multiple of the alignment %u",
                              f->path, t->name, (unsigned long long)t->offset, f->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return hr_err_set(
                err, HR_EINVAL,
                "%s: tensor '%s': data [%llu, %llu) exceeds the data section (%zu bytes; truncated file?)", f->path,
                t->name, (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes), data_size);
        t->data = f->map.base + f->data_offset + t->offset;
    }
    /* overlap: sort by offset */
    int *ord = hr_xmalloc((size_t)(f->n_tensors ? f->n_tensors : 1) * sizeof(int));
    for (int i = 0; i < f->n_tensors; i++) ord[i] = i;
    for (int i = 1; i < f->n_tensors; i++) { /* insertion sort: infos are nearly always already in order */
        int x = ord[i], j = i - 1;
        while (j >= 0 && f->tensors[ord[j]].offset > f->tensors[x].offset) {
            ord[j + 1] = ord[j];
            j--;
        }
        ord[j + 1] = x;
    }
    int rc = HR_OK;
    for (int i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *a = &f->tensors[ord[i - 1]], *b = &f->tensors[ord[i]];
        if (a->nbytes && b->nbytes && b->offset < a->offset + a->nbytes) {
            rc = hr_err_set(err, HR_EINVAL, "%s: tensor '%s' overlaps tensor '%s'", f->path, b->name, a->name);
            break;
        }
    }
    free(ord);
    return rc;
}

static int parse(gguf_file *f, hr_err *err) {
    cursor c = {f->map.base, 0, f->map.size, 0};
    if (f->map.size < 4 || rd_u32(&c) != GGUF_MAGIC)
        return hr_err_set(err, HR_EINVAL, "%s: not a GGUF file (bad magic)", f->path);
    f->version = rd_u32(&c);
    if (c.bad) return hr_err_set(err, HR_EINVAL, "%s: truncated header", f->path);
    if (f->version == 1)
        return hr_err_set(err, HR_EUNSUP, "%s: GGUF v1 is not supported (v2 and v3 are); re-convert the model",
                          f->path);
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffff) == 0)
            return hr_err_set(err, HR_EUNSUP, "%s: big-endian GGUF is not supported", f->path);
        return hr_err_set(err, HR_EUNSUP, "%s: unsupported GGUF version %u (supported: 2, 3)", f->path, f->version);
    }
    uint64_t n_tensors = rd_u64(&c), n_kv = rd_u64(&c);
    if (c.bad) return hr_err_set(err, HR_EINVAL, "%s: truncated header", f->path);
    /* Each KV takes at least 12 bytes and each tensor info at least 24: a count
     * the rest of the file cannot hold is corrupt (and must not size a malloc). */
    size_t rest = f->map.size - c.pos;
    if (n_kv > rest / 12 || n_tensors > rest / 24 || n_kv > INT32_MAX || n_tensors > INT32_MAX)
        return hr_err_set(err, HR_EINVAL,
                          "%s: header claims %llu tensors and %llu metadata keys, more than the file holds", f->path,
                          (unsigned long long)n_tensors, (unsigned long long)n_kv);
    f->kv = hr_xcalloc((size_t)(n_kv ? n_kv : 1), sizeof(gguf_kv));
    for (uint64_t i = 0; i < n_kv; i++) {
        f->n_kv++;
        int rc = parse_kv(f, &c, &f->kv[i], err);
        if (rc != HR_OK) return rc;
    }
    const char *dup = build_index(f, f->n_kv, &f->kv_sorted, cmp_kv_idx, kv_name);
    if (dup) return hr_err_set(err, HR_EINVAL, "%s: duplicate metadata key '%s'", f->path, dup);
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_TYPE_UINT32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)) != 0)
            return hr_err_set(err, HR_EINVAL, "%s: general.alignment must be a power-of-two uint32", f->path);
        f->alignment = (uint32_t)al->v.u64;
    }
    f->tensors = hr_xcalloc((size_t)(n_tensors ? n_tensors : 1), sizeof(gguf_tensor));
    for (uint64_t i = 0; i < n_tensors; i++) {
        f->n_tensors++;
        int rc = parse_tensor_info(f, &c, &f->tensors[i], err);
        if (rc != HR_OK) return rc;
    }
    dup = build_index(f, f->n_tensors, &f->t_sorted, cmp_t_idx, t_name);
    if (dup) return hr_err_set(err, HR_EINVAL, "%s: duplicate tensor name '%s'", f->path, dup);
    f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->data_offset > f->map.size) {
        if (f->n_tensors == 0)
            f->data_offset = f->map.size; /* metadata-only file without padding */
        else
            return hr_err_set(err, HR_EINVAL, "%s: truncated before the data section", f->path);
    }
    return place_tensors(f, err);
}

gguf_file *gguf_open(const char *path, hr_err *err) {
    gguf_file *f = hr_xcalloc(1, sizeof *f);
    f->path = hr_xstrdup(path);
    if (io_map_file(path, &f->map, err) != HR_OK) goto fail;
    if (parse(f, err) != HR_OK) goto fail;
    return f;
fail:
    gguf_close(f);
    return NULL;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free((void *)f->kv[i].arr_strs);
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    free(f->kv_sorted);
    free(f->t_sorted);
    io_unmap(&f->map);
    free(f->path);
    free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
size_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }
int gguf_n_kv(const gguf_file *f) { return f->n_kv; }
const gguf_kv *gguf_kv_at(const gguf_file *f, int i) { return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL; }
int gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i) {
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    int lo = 0, hi = f->n_kv - 1;
    while (f->kv_sorted && lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(key, f->kv[f->kv_sorted[mid]].key);
        if (c == 0) return &f->kv[f->kv_sorted[mid]];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors - 1;
    while (f->t_sorted && lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, f->tensors[f->t_sorted[mid]].name);
        if (c == 0) return &f->tensors[f->t_sorted[mid]];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

static int is_unsigned(gguf_type t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 || t == GGUF_TYPE_UINT64;
}
static int is_signed(gguf_type t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64;
}

int64_t gguf_get_int(const gguf_file *f, const char *key, int64_t def) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return def;
    if (is_unsigned(kv->type)) return (int64_t)kv->v.u64;
    if (is_signed(kv->type)) return kv->v.i64;
    if (kv->type == GGUF_TYPE_BOOL) return kv->v.b;
    return def;
}

double gguf_get_float(const gguf_file *f, const char *key, double def) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return def;
    if (kv->type == GGUF_TYPE_FLOAT32 || kv->type == GGUF_TYPE_FLOAT64) return kv->v.f64;
    if (is_unsigned(kv->type)) return (double)kv->v.u64;
    if (is_signed(kv->type)) return (double)kv->v.i64;
    return def;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool def) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_TYPE_BOOL ? kv->v.b : def;
}

char *gguf_get_str(const gguf_file *f, const char *key) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    return kv && kv->type == GGUF_TYPE_STRING ? str_dup(kv->v.str) : NULL;
}

gguf_str gguf_get_arr_str(const gguf_kv *kv, uint64_t i) {
    gguf_str none = {0, NULL};
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING || i >= kv->arr_len) return none;
    return kv->arr_strs[i];
}

/* Array elements may be unaligned in the mapping: read them bytewise. */
static uint64_t arr_raw(const gguf_kv *kv, uint64_t i, size_t es) {
    uint64_t v = 0;
    const uint8_t *p = (const uint8_t *)kv->arr_data + i * es;
    for (int b = (int)es - 1; b >= 0; b--) v = (v << 8) | p[b];
    return v;
}

int64_t gguf_get_arr_int(const gguf_kv *kv, uint64_t i, int64_t def) {
    if (kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_len) return def;
    size_t es = scalar_size(kv->arr_type);
    if (!es || kv->arr_type == GGUF_TYPE_FLOAT32 || kv->arr_type == GGUF_TYPE_FLOAT64) return def;
    uint64_t raw = arr_raw(kv, i, es);
    switch (kv->arr_type) {
    case GGUF_TYPE_INT8:
        return (int8_t)raw;
    case GGUF_TYPE_INT16:
        return (int16_t)raw;
    case GGUF_TYPE_INT32:
        return (int32_t)raw;
    case GGUF_TYPE_BOOL:
        return raw != 0;
    default:
        return (int64_t)raw;
    }
}

double gguf_get_arr_float(const gguf_kv *kv, uint64_t i, double def) {
    if (kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_len) return def;
    if (kv->arr_type == GGUF_TYPE_FLOAT32) {
        uint32_t u = (uint32_t)arr_raw(kv, i, 4);
        float x;
        memcpy(&x, &u, 4);
        return x;
    }
    if (kv->arr_type == GGUF_TYPE_FLOAT64) {
        uint64_t u = arr_raw(kv, i, 8);
        double x;
        memcpy(&x, &u, 8);
        return x;
    }
    if (kv->arr_type == GGUF_TYPE_STRING || kv->arr_type == GGUF_TYPE_ARRAY) return def;
    return (double)gguf_get_arr_int(kv, i, 0);
}

int64_t gguf_tensor_nelem(const gguf_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }

int gguf_dequantize(const gguf_tensor *t, float *dst, hr_err *err) {
    int rc = ggml_dequantize_row(t->type, t->data, dst, gguf_tensor_nelem(t));
    if (rc != HR_OK)
        return hr_err_set(err, rc, "tensor '%s': cannot dequantize ggml type %s", t->name, ggml_type_name(t->type));
    return HR_OK;
}
