/* Safetensors reader. Format (huggingface/safetensors): 8-byte little-endian
 * header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets":
 * [begin, end]}, "__metadata__": {str: str}}, then the data section; offsets
 * are relative to the data section. Everything is validated before any tensor
 * is exposed, so callers may trust data/nbytes. */
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "io/mapped.h"

/* A header larger than this is not a checkpoint we want to parse (the Rust
 * reference uses the same 100 MB limit). */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)

struct st_file {
    char *path;
    io_mapped map;
    const uint8_t *data; /* start of the data section */
    size_t data_size;
    int n;
    st_tensor *tensors;        /* sorted by data offset */
    const st_tensor **by_name; /* sorted by name, for bsearch */
    int n_meta;
    char **meta_keys, **meta_vals;
};

struct st_set {
    int n_files;
    st_file **files;
    int n;
    const st_tensor **tensors; /* in set order (shard order, then offset) */
    const st_tensor **by_name;
};

/* ---- helpers ------------------------------------------------------------ */

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_key_name(const void *key, const void *elem) {
    return strcmp((const char *)key, (*(const st_tensor *const *)elem)->name);
}

typedef struct {
    uint64_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* JSON integer >= 0 as uint64 (jansson stores json_int_t = long long). */
static int json_u64(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0) return -1;
    *out = (uint64_t)x;
    return 0;
}

/* Parses one tensor entry into t (name already set). Sets *begin and *end. */
static int parse_entry(const char *path, const char *name, json_t *obj, st_tensor *t, uint64_t data_size,
                       uint64_t *begin, uint64_t *end, hr_err *err) {
    if (!json_is_object(obj))
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': entry is not a JSON object", path, name);
    json_t *jd = json_object_get(obj, "dtype");
    json_t *js = json_object_get(obj, "shape");
    json_t *jo = json_object_get(obj, "data_offsets");
    if (!json_is_string(jd))
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': missing or non-string dtype", path, name);
    if (hr_dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return hr_err_set(err, HR_EUNSUP, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(jd));
    if (!json_is_array(js))
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': missing or non-array shape", path, name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return hr_err_set(err, HR_EUNSUP, "%s: tensor '%s': %zu dimensions (max %d)", path, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t nelem = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (json_u64(json_array_get(js, i), &d) != 0 || d > (uint64_t)INT64_MAX)
            return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': shape[%zu] is not a non-negative integer", path, name,
                              i);
        t->shape[i] = (int64_t)d;
        if (d && nelem > UINT64_MAX / d) overflow = 1;
        nelem *= d;
    }
    for (int i = t->ndim; i < ST_MAX_DIMS; i++) t->shape[i] = 0;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), begin) != 0 ||
        json_u64(json_array_get(jo, 1), end) != 0)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': data_offsets must be [begin, end] non-negative integers",
                          path, name);
    if (*begin > *end)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu] have begin > end", path, name,
                          (unsigned long long)*begin, (unsigned long long)*end);
    if (*end > data_size)
        return hr_err_set(err, HR_EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu] exceed data size %llu", path,
                          name, (unsigned long long)*begin, (unsigned long long)*end, (unsigned long long)data_size);
    uint64_t es = hr_dtype_size(t->dtype);
    if (overflow || (nelem && es > UINT64_MAX / nelem) || nelem * es != *end - *begin)
        return hr_err_set(err, HR_EINVAL,
                          "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s x shape needs %s%llu",
                          path, name, (unsigned long long)*begin, (unsigned long long)*end,
                          (unsigned long long)(*end - *begin), hr_dtype_name(t->dtype), overflow ? "more than " : "",
                          overflow ? (unsigned long long)UINT64_MAX : (unsigned long long)(nelem * es));
    t->nbytes = (size_t)(*end - *begin);
    return HR_OK;
}

static int parse_metadata(st_file *f, json_t *meta, hr_err *err) {
    if (!json_is_object(meta)) return hr_err_set(err, HR_EINVAL, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = json_object_size(meta);
    f->meta_keys = hr_xcalloc(n, sizeof(char *));
    f->meta_vals = hr_xcalloc(n, sizeof(char *));
    const char *k;
    json_t *v;
    json_object_foreach(meta, k, v) {
        if (!json_is_string(v)) return hr_err_set(err, HR_EINVAL, "%s: __metadata__ '%s' is not a string", f->path, k);
        f->meta_keys[f->n_meta] = hr_xstrdup(k);
        f->meta_vals[f->n_meta] = hr_xstrdup(json_string_value(v));
        f->n_meta++;
    }
    return HR_OK;
}

/* ---- one file ----------------------------------------------------------- */

static int parse_header(st_file *f, hr_err *err) {
    const char *path = f->path;
    if (f->map.size < 8)
        return hr_err_set(err, HR_EINVAL, "%s: truncated file (%zu bytes, need at least 8)", path, f->map.size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map.base[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return hr_err_set(err, HR_EINVAL, "%s: header length %llu exceeds the 100 MB limit", path,
                          (unsigned long long)hlen);
    if (hlen > f->map.size - 8)
        return hr_err_set(err, HR_EINVAL, "%s: header length %llu exceeds file size %zu (truncated file?)", path,
                          (unsigned long long)hlen, f->map.size);
    if (hlen < 2) return hr_err_set(err, HR_EINVAL, "%s: header length %llu too small", path, (unsigned long long)hlen);
    f->data = f->map.base + 8 + hlen;
    f->data_size = f->map.size - 8 - (size_t)hlen;

    int rc = HR_OK;
    json_error_t jerr;
    span *spans = NULL;
    json_t *root = json_loadb((const char *)f->map.base + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc =
            hr_err_set(err, HR_EINVAL, "%s: header is not valid JSON: %s (at byte %d)", path, jerr.text, jerr.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = hr_err_set(err, HR_EINVAL, "%s: header is not a JSON object", path);
        goto fail;
    }
    size_t cap = json_object_size(root);
    f->tensors = hr_xcalloc(cap, sizeof(st_tensor));
    spans = hr_xcalloc(cap, sizeof(span));
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(f, val, err)) != HR_OK) goto fail;
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        t->name = hr_xstrdup(key);
        t->file = f->path;
        f->n++;
        uint64_t b = 0, e = 0;
        if ((rc = parse_entry(path, key, val, t, f->data_size, &b, &e, err)) != HR_OK) goto fail;
        spans[f->n - 1] = (span){b, e, f->n - 1};
    }
    /* Overlap check: sort by begin; each non-empty range must start at or
     * after the previous non-empty range's end. */
    qsort(spans, (size_t)f->n, sizeof(span), cmp_span);
    uint64_t prev_end = 0;
    int prev = -1;
    for (int i = 0; i < f->n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (prev >= 0 && spans[i].begin < prev_end) {
            rc = hr_err_set(
                err, HR_EINVAL, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' [%llu, %llu]", path,
                f->tensors[spans[i].idx].name, (unsigned long long)spans[i].begin, (unsigned long long)spans[i].end,
                f->tensors[spans[prev].idx].name, (unsigned long long)spans[prev].begin, (unsigned long long)prev_end);
            goto fail;
        }
        prev = i;
        prev_end = spans[i].end;
    }
    /* Reorder tensors by offset (file order) and point them into the data. */
    st_tensor *sorted = hr_xcalloc(cap, sizeof(st_tensor));
    for (int i = 0; i < f->n; i++) {
        sorted[i] = f->tensors[spans[i].idx];
        sorted[i].data = f->data + spans[i].begin;
    }
    free(f->tensors);
    f->tensors = sorted;
    f->by_name = hr_xcalloc((size_t)f->n, sizeof(st_tensor *));
    for (int i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n, sizeof(st_tensor *), cmp_tensor_name);
fail:
    free(spans);
    json_decref(root);
    return rc;
}

st_file *st_file_open(const char *path, hr_err *err) {
    st_file *f = hr_xcalloc(1, sizeof *f);
    f->path = hr_xstrdup(path);
    if (io_map_file(path, &f->map, err) != HR_OK) goto fail;
    if (parse_header(f, err) != HR_OK) goto fail;
    return f;
fail:
    st_file_close(f);
    return NULL;
}

void st_file_close(st_file *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free((char *)f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->tensors);
    free(f->by_name);
    io_unmap(&f->map);
    free(f->path);
    free(f);
}

int st_file_count(const st_file *f) { return f->n; }

const st_tensor *st_file_tensor(const st_file *f, int i) { return i >= 0 && i < f->n ? &f->tensors[i] : NULL; }

const st_tensor *st_file_find(const st_file *f, const char *name) {
    const st_tensor **p = bsearch(name, f->by_name, (size_t)f->n, sizeof(st_tensor *), cmp_key_name);
    return p ? *p : NULL;
}

const char *st_file_metadata(const st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

/* ---- a checkpoint directory --------------------------------------------- */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = hr_xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    fclose(fp);
    return 1;
}

static void set_add_file(st_set *s, st_file *f) {
    s->files = hr_xrealloc(s->files, (size_t)(s->n_files + 1) * sizeof(st_file *));
    s->files[s->n_files++] = f;
}

/* Builds the name index and rejects a name present twice. */
static int set_finish(st_set *s, const char *dir, hr_err *err) {
    s->by_name = hr_xcalloc((size_t)s->n, sizeof(st_tensor *));
    memcpy(s->by_name, s->tensors, (size_t)s->n * sizeof(st_tensor *));
    qsort(s->by_name, (size_t)s->n, sizeof(st_tensor *), cmp_tensor_name);
    for (int i = 1; i < s->n; i++)
        if (strcmp(s->by_name[i - 1]->name, s->by_name[i]->name) == 0)
            return hr_err_set(err, HR_EINVAL, "%s: tensor '%s' appears in both %s and %s", dir, s->by_name[i]->name,
                              s->by_name[i - 1]->file, s->by_name[i]->file);
    return HR_OK;
}

/* Opens the shards named by a model.safetensors.index.json weight_map. The set
 * holds exactly the listed tensors; each shard is opened once. */
static int open_index(st_set *s, const char *dir, const char *index_path, hr_err *err) {
    int rc = HR_OK;
    char *text = NULL;
    json_t *root = NULL;
    if ((rc = hr_read_file(index_path, &text, NULL, err)) != HR_OK) goto fail;
    json_error_t jerr;
    root = json_loads(text, 0, &jerr);
    if (!root) {
        rc = hr_err_set(err, HR_EINVAL, "%s: not valid JSON: %s (line %d)", index_path, jerr.text, jerr.line);
        goto fail;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = hr_err_set(err, HR_EINVAL, "%s: missing \"weight_map\" object", index_path);
        goto fail;
    }
    s->tensors = hr_xcalloc(json_object_size(wm), sizeof(st_tensor *));
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        if (!json_is_string(v)) {
            rc = hr_err_set(err, HR_EINVAL, "%s: weight_map['%s'] is not a string", index_path, name);
            goto fail;
        }
        const char *shard = json_string_value(v);
        if (shard[0] == '/' || strstr(shard, "..") || shard[0] == '\0') {
            rc = hr_err_set(err, HR_EINVAL, "%s: weight_map['%s']: shard name '%s' is not a file in the directory",
                            index_path, name, shard);
            goto fail;
        }
        char *spath = path_join(dir, shard);
        st_file *f = NULL;
        for (int i = 0; i < s->n_files; i++)
            if (strcmp(s->files[i]->path, spath) == 0) f = s->files[i];
        if (!f) {
            f = st_file_open(spath, err);
            if (!f) {
                if (err && err->code == HR_ENOTFOUND)
                    hr_err_set(err, HR_ENOTFOUND, "%s: shard '%s' (holding tensor '%s') is missing", index_path, shard,
                               name);
                rc = err ? err->code : HR_EINVAL;
                free(spath);
                goto fail;
            }
            set_add_file(s, f);
        }
        free(spath);
        const st_tensor *t = st_file_find(f, name);
        if (!t) {
            rc = hr_err_set(err, HR_ENOTFOUND, "%s: tensor '%s' listed in weight_map is missing from shard %s",
                            index_path, name, f->path);
            goto fail;
        }
        s->tensors[s->n++] = t;
    }
    rc = set_finish(s, dir, err);
fail:
    json_decref(root);
    free(text);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Adds every tensor of every file in the set (no index). */
static void set_collect_all(st_set *s) {
    int total = 0;
    for (int i = 0; i < s->n_files; i++) total += s->files[i]->n;
    s->tensors = hr_xcalloc((size_t)total, sizeof(st_tensor *));
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i]->n; j++) s->tensors[s->n++] = &s->files[i]->tensors[j];
}

static int open_glob(st_set *s, const char *dir, hr_err *err) {
    DIR *d = opendir(dir);
    if (!d) return hr_err_set(err, errno == ENOENT ? HR_ENOTFOUND : HR_EIO, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, rc = HR_OK;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 12 && strcmp(de->d_name + l - 12, ".safetensors") == 0 && de->d_name[0] != '.') {
            names = hr_xrealloc(names, (size_t)(n + 1) * sizeof(char *));
            names[n++] = hr_xstrdup(de->d_name);
        }
    }
    closedir(d);
    if (n == 0) {
        rc = hr_err_set(err, HR_ENOTFOUND,
                        "%s: no model.safetensors.index.json, model.safetensors or *.safetensors file", dir);
        goto fail;
    }
    qsort(names, (size_t)n, sizeof(char *), cmp_str); /* deterministic order */
    for (int i = 0; i < n; i++) {
        char *p = path_join(dir, names[i]);
        st_file *f = st_file_open(p, err);
        free(p);
        if (!f) {
            rc = err ? err->code : HR_EINVAL;
            goto fail;
        }
        set_add_file(s, f);
    }
    set_collect_all(s);
    rc = set_finish(s, dir, err);
fail:
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

st_set *st_set_open_dir(const char *dir, hr_err *err) {
    st_set *s = hr_xcalloc(1, sizeof *s);
    char *index = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    int rc;
    if (file_exists(index)) {
        rc = open_index(s, dir, index, err);
    } else if (file_exists(single)) {
        st_file *f = st_file_open(single, err);
        rc = f ? HR_OK : (err ? err->code : HR_EINVAL);
        if (f) {
            set_add_file(s, f);
            set_collect_all(s);
            rc = set_finish(s, dir, err);
        }
    } else {
        rc = open_glob(s, dir, err);
    }
    free(index);
    free(single);
    if (rc != HR_OK) goto fail;
    return s;
fail:
    st_set_close(s);
    return NULL;
}

void st_set_close(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) st_file_close(s->files[i]);
    free(s->files);
    free(s->tensors);
    free(s->by_name);
    free(s);
}

int st_set_count(const st_set *s) { return s->n; }

const st_tensor *st_set_tensor(const st_set *s, int i) { return i >= 0 && i < s->n ? s->tensors[i] : NULL; }

const st_tensor *st_set_find(const st_set *s, const char *name) {
    if (!s->by_name) return NULL;
    const st_tensor **p = bsearch(name, s->by_name, (size_t)s->n, sizeof(st_tensor *), cmp_key_name);
    return p ? *p : NULL;
}
