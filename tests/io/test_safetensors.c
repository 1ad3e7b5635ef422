/* Safetensors reader: round trip of files written here (every dtype, scalar and
 * empty tensors, metadata), sharded/indexed and globbed directories, every
 * corruption the validator must reject (with the message naming file and
 * tensor), and every fixture checkpoint. */
#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "test.h"

static char g_dir[256];

static char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", g_dir, name);
    return p;
}

/* Writes a safetensors file from a raw JSON header and data section; the
 * header length written is `hlen_override` when non-zero. */
static void write_raw(const char *path, const char *header, const void *data, size_t data_len, uint64_t hlen_override) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(hlen >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[4];
    size_t esize;
} spec;

/* Writes tensors contiguously with random bytes (returned in *data). */
static void write_file(const char *path, const spec *s, int n, const char *meta, uint8_t **data_out, size_t *len_out) {
    char header[8192];
    size_t off = 0, pos = 0;
    pos += (size_t)snprintf(header + pos, sizeof header - pos, "{");
    if (meta) pos += (size_t)snprintf(header + pos, sizeof header - pos, "\"__metadata__\":%s,", meta);
    for (int i = 0; i < n; i++) {
        size_t ne = 1;
        pos += (size_t)snprintf(header + pos, sizeof header - pos, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                i ? "," : "", s[i].name, s[i].dtype);
        for (int d = 0; d < s[i].ndim; d++) {
            ne *= (size_t)s[i].shape[d];
            pos +=
                (size_t)snprintf(header + pos, sizeof header - pos, "%s%lld", d ? "," : "", (long long)s[i].shape[d]);
        }
        size_t nb = ne * s[i].esize;
        pos += (size_t)snprintf(header + pos, sizeof header - pos, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
        off += nb;
    }
    pos += (size_t)snprintf(header + pos, sizeof header - pos, "}");
    while (pos % 8) header[pos++] = ' '; /* padding as the Python writer does */
    header[pos] = '\0';
    uint8_t *data = malloc(off ? off : 1);
    for (size_t i = 0; i < off; i++) data[i] = (uint8_t)(rand() & 0xff);
    write_raw(path, header, data, off, 0);
    if (data_out)
        *data_out = data;
    else
        free(data);
    if (len_out) *len_out = off;
}

static const spec k_all[] = {
    {"f32", "F32", 2, {3, 5}, 4},      {"f16", "F16", 1, {7}, 2},      {"bf16", "BF16", 3, {2, 3, 4}, 2},
    {"e4m3", "F8_E4M3", 2, {4, 4}, 1}, {"e5m2", "F8_E5M2", 1, {9}, 1}, {"u8", "U8", 2, {2, 8}, 1},
    {"i8", "I8", 1, {5}, 1},           {"i32", "I32", 2, {3, 3}, 4},   {"i64", "I64", 1, {6}, 8},
    {"scalar", "F32", 0, {0}, 4},      {"empty", "F16", 2, {0, 4}, 2}, {"f64", "F64", 1, {2}, 8},
};

static void test_round_trip(void) {
    uint8_t *data;
    size_t len;
    const char *p = tmp_path("all.safetensors");
    write_file(p, k_all, (int)HR_ARRAY_LEN(k_all), "{\"format\":\"pt\",\"who\":\"test\"}", &data, &len);
    hr_err err = {0};
    st_file *f = st_file_open(p, &err);
    CHECK_MSG(f != NULL, "%s", err.msg);
    if (!f) {
        free(data);
        return;
    }
    CHECK_EQ_INT(st_file_count(f), HR_ARRAY_LEN(k_all));
    size_t off = 0;
    for (size_t i = 0; i < HR_ARRAY_LEN(k_all); i++) {
        const st_tensor *t = st_file_find(f, k_all[i].name);
        CHECK_MSG(t != NULL, "tensor %s", k_all[i].name);
        if (!t) continue;
        CHECK_STREQ(hr_dtype_name(t->dtype), k_all[i].dtype);
        CHECK_EQ_INT(t->ndim, k_all[i].ndim);
        size_t ne = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK_EQ_INT(t->shape[d], k_all[i].shape[d]);
            ne *= (size_t)k_all[i].shape[d];
        }
        CHECK_EQ_INT(t->nbytes, ne * k_all[i].esize);
        CHECK(t->nbytes == 0 || memcmp(t->data, data + off, t->nbytes) == 0);
        CHECK_STREQ(t->file, p);
        off += t->nbytes;
    }
    /* tensors are exposed in data-offset order */
    for (int i = 1; i < st_file_count(f); i++)
        CHECK((const uint8_t *)st_file_tensor(f, i)->data >= (const uint8_t *)st_file_tensor(f, i - 1)->data);
    CHECK(st_file_tensor(f, -1) == NULL && st_file_tensor(f, 99) == NULL);
    CHECK(st_file_find(f, "nope") == NULL);
    CHECK(st_file_metadata(f, "who") && strcmp(st_file_metadata(f, "who"), "test") == 0);
    CHECK(st_file_metadata(f, "format") && strcmp(st_file_metadata(f, "format"), "pt") == 0);
    CHECK(st_file_metadata(f, "absent") == NULL);
    st_file_close(f);
    free(data);

    /* header-only file with no tensors is valid */
    write_raw(tmp_path("none.safetensors"), "{}", NULL, 0, 0);
    f = st_file_open(tmp_path("none.safetensors"), &err);
    CHECK_MSG(f && st_file_count(f) == 0, "%s", err.msg);
    st_file_close(f);
}

/* Each corrupted file must be rejected with a message containing `want`. */
static void expect_reject(const char *name, const char *header, size_t data_len, uint64_t hlen, const char *want,
                          int code) {
    static uint8_t zeros[4096];
    const char *p = tmp_path(name);
    write_raw(p, header, zeros, data_len, hlen);
    hr_err err = {0};
    st_file *f = st_file_open(p, &err);
    CHECK_MSG(f == NULL, "%s: accepted", name);
    CHECK_MSG(strstr(err.msg, want) != NULL, "%s: message \"%s\" lacks \"%s\"", name, err.msg, want);
    CHECK_MSG(strstr(err.msg, name) != NULL, "%s: message \"%s\" lacks the file name", name, err.msg);
    CHECK_MSG(err.code == code, "%s: code %d, want %d", name, err.code, code);
    st_file_close(f);
}

static void test_corruption(void) {
    const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    /* truncated: shorter than the 8-byte length */
    FILE *fp = fopen(tmp_path("short.safetensors"), "wb");
    fwrite("\x10\0\0", 1, 3, fp);
    fclose(fp);
    hr_err err = {0};
    CHECK(st_file_open(tmp_path("short.safetensors"), &err) == NULL);
    CHECK_MSG(strstr(err.msg, "truncated") && strstr(err.msg, "short.safetensors"), "%s", err.msg);
    /* empty file */
    fp = fopen(tmp_path("empty.safetensors"), "wb");
    fclose(fp);
    CHECK(st_file_open(tmp_path("empty.safetensors"), &err) == NULL);
    CHECK_MSG(strstr(err.msg, "truncated"), "%s", err.msg);
    /* missing file */
    CHECK(st_file_open(tmp_path("absent.safetensors"), &err) == NULL);
    CHECK_EQ_INT(err.code, HR_ENOTFOUND);

    expect_reject("hlen_beyond.safetensors", ok, 8, 1000, "exceeds file size", HR_EINVAL);
    expect_reject("hlen_huge.safetensors", ok, 8, 200000000ull, "100 MB", HR_EINVAL);
    expect_reject("hlen_max.safetensors", ok, 8, UINT64_MAX, "100 MB", HR_EINVAL);
    expect_reject("trunc_data.safetensors", ok, 4, 0, "data_offsets [0, 8] exceed data size 4", HR_EINVAL);
    expect_reject("bad_json.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0, 0, "not valid JSON", HR_EINVAL);
    expect_reject("not_object.safetensors", "[1,2,3]", 0, 0, "not a JSON object", HR_EINVAL);
    expect_reject("entry_not_object.safetensors", "{\"a\":5}", 0, 0, "tensor 'a': entry is not a JSON object",
                  HR_EINVAL);
    expect_reject("oob.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, 0,
                  "tensor 'w': data_offsets [8, 24] exceed data size 16", HR_EINVAL);
    expect_reject("begin_gt_end.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16, 0,
                  "tensor 'w': data_offsets [8, 4] have begin > end", HR_EINVAL);
    expect_reject("size.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 16, 0,
                  "tensor 'w': data_offsets [0, 8] hold 8 bytes but BF16 x shape needs 12", HR_EINVAL);
    expect_reject("overflow.safetensors",
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 16, 0,
                  "tensor 'w'", HR_EINVAL);
    expect_reject("overlap.safetensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                  16, 0, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]", HR_EINVAL);
    expect_reject("same_range.safetensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
                  16, 0, "overlap", HR_EINVAL);
    expect_reject("dtype.safetensors", "{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 16, 0,
                  "tensor 'w': unknown dtype 'F4'", HR_EUNSUP);
    expect_reject("no_dtype.safetensors", "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 16, 0,
                  "tensor 'w': missing or non-string dtype", HR_EINVAL);
    expect_reject("neg_shape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 16, 0,
                  "tensor 'w': shape[0]", HR_EINVAL);
    expect_reject("bad_offsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 16, 0,
                  "tensor 'w': data_offsets must be", HR_EINVAL);
    expect_reject("dims.safetensors",
                  "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 16, 0,
                  "tensor 'w': 9 dimensions", HR_EUNSUP);
    expect_reject("meta.safetensors", "{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ 'k' is not a string",
                  HR_EINVAL);
    expect_reject("dup.safetensors",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  16, 0, "not valid JSON", HR_EINVAL);
}

static const spec k_shard1[] = {{"x.weight", "F32", 2, {4, 4}, 4}, {"x.bias", "F32", 1, {4}, 4}};
static const spec k_shard2[] = {{"y.weight", "BF16", 2, {8, 2}, 2}, {"unlisted", "U8", 1, {3}, 1}};

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_sharded(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/sharded", g_dir);
    mkdir(dir, 0700);
    char p1[600], p2[600], pi[600];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(pi, sizeof pi, "%s/model.safetensors.index.json", dir);
    uint8_t *d1, *d2;
    write_file(p1, k_shard1, 2, NULL, &d1, NULL);
    write_file(p2, k_shard2, 2, NULL, &d2, NULL);
    write_text(pi, "{\"metadata\":{\"total_size\":100},\"weight_map\":{"
                   "\"x.weight\":\"model-00001-of-00002.safetensors\","
                   "\"y.weight\":\"model-00002-of-00002.safetensors\","
                   "\"x.bias\":\"model-00001-of-00002.safetensors\"}}");
    hr_err err = {0};
    st_set *s = st_set_open_dir(dir, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (s) {
        CHECK_EQ_INT(st_set_count(s), 3); /* exactly the listed tensors */
        const st_tensor *t = st_set_find(s, "y.weight");
        CHECK(t && t->dtype == HR_BF16 && t->shape[0] == 8 && t->shape[1] == 2 && strcmp(t->file, p2) == 0);
        CHECK(t && memcmp(t->data, d2, 32) == 0);
        t = st_set_find(s, "x.bias");
        CHECK(t && memcmp(t->data, d1 + 64, 16) == 0 && strcmp(t->file, p1) == 0);
        const st_tensor *xw = st_set_find(s, "x.weight");
        CHECK(t && xw && t->file == xw->file); /* one shard, opened once */
        CHECK(st_set_find(s, "unlisted") == NULL);
        CHECK(st_set_find(s, "zzz") == NULL);
        int seen = 0;
        for (int i = 0; i < st_set_count(s); i++) seen += st_set_tensor(s, i) != NULL;
        CHECK_EQ_INT(seen, 3);
        st_set_close(s);
    }
    /* index naming a tensor its shard lacks */
    write_text(pi, "{\"weight_map\":{\"x.weight\":\"model-00001-of-00002.safetensors\","
                   "\"ghost\":\"model-00002-of-00002.safetensors\"}}");
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "tensor 'ghost'") && strstr(err.msg, "model-00002-of-00002.safetensors"), "%s", err.msg);
    st_set_close(s);
    /* index naming a missing shard */
    write_text(pi, "{\"weight_map\":{\"x.weight\":\"model-00003-of-00003.safetensors\"}}");
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "model-00003-of-00003.safetensors") && strstr(err.msg, "missing") &&
                  err.code == HR_ENOTFOUND,
              "%s", err.msg);
    /* index escaping the directory */
    write_text(pi, "{\"weight_map\":{\"x.weight\":\"../x.safetensors\"}}");
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "not a file in the directory"), "%s", err.msg);
    /* bad index JSON */
    write_text(pi, "{\"weight_map\": [");
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "model.safetensors.index.json") && strstr(err.msg, "JSON"), "%s", err.msg);
    write_text(pi, "{\"weights\": {}}");
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "weight_map"), "%s", err.msg);
    /* no index: every *.safetensors in the directory, union of names */
    unlink(pi);
    s = st_set_open_dir(dir, &err);
    CHECK_MSG(s != NULL, "%s", err.msg);
    if (s) {
        CHECK_EQ_INT(st_set_count(s), 4);
        CHECK(st_set_find(s, "unlisted") != NULL);
        st_set_close(s);
    }
    /* the same name in two files is ambiguous */
    char p3[600];
    snprintf(p3, sizeof p3, "%s/extra.safetensors", dir);
    write_file(p3, k_shard1, 1, NULL, NULL, NULL);
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "tensor 'x.weight' appears in both"), "%s", err.msg);
    unlink(p3);
    unlink(p1);
    unlink(p2);
    /* nothing at all */
    s = st_set_open_dir(dir, &err);
    CHECK(s == NULL && err.code == HR_ENOTFOUND);
    rmdir(dir);
    free(d1);
    free(d2);
}

static void test_fixture_models(void) {
    static const char *models[] = {"tiny-llama",   "tiny-qwen2",     "tiny-mixtral",
                                   "tiny-gpt-oss", "tiny-llama-fp8", "tiny-llama-nvfp4"};
    for (size_t i = 0; i < HR_ARRAY_LEN(models); i++) {
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/models/%s", test_fixtures(), models[i]);
        hr_err err = {0};
        st_set *s = st_set_open_dir(dir, &err);
        CHECK_MSG(s != NULL, "%s: %s", models[i], err.msg);
        if (!s) continue;
        CHECK(st_set_count(s) > 10);
        const st_tensor *e = st_set_find(s, "model.embed_tokens.weight");
        CHECK_MSG(e && e->dtype == HR_BF16 && e->ndim == 2 && e->shape[0] == 512 && e->shape[1] == 128, "%s",
                  models[i]);
        const st_tensor *n = st_set_find(s, "model.norm.weight");
        CHECK(n && n->ndim == 1 && n->shape[0] == 128);
        st_set_close(s);
        /* golden.safetensors: prompts and logits */
        char gp[1100];
        snprintf(gp, sizeof gp, "%s/golden.safetensors", dir);
        st_file *g = st_file_open(gp, &err);
        CHECK_MSG(g != NULL, "%s", err.msg);
        if (!g) continue;
        const st_tensor *p0 = st_file_find(g, "prompt_0"), *l0 = st_file_find(g, "logits_0");
        CHECK(p0 && p0->dtype == HR_I32 && p0->ndim == 1 && p0->shape[0] == 7);
        CHECK(l0 && l0->dtype == HR_F32 && l0->ndim == 2 && l0->shape[0] == 7 && l0->shape[1] == 512);
        st_file_close(g);
    }
    /* quantized layouts carry their dtypes */
    char p[1024];
    snprintf(p, sizeof p, "%s/models/tiny-llama-nvfp4/model.safetensors", test_fixtures());
    hr_err err = {0};
    st_file *f = st_file_open(p, &err);
    CHECK_MSG(f != NULL, "%s", err.msg);
    if (f) {
        const st_tensor *w = st_file_find(f, "model.layers.0.mlp.down_proj.weight");
        const st_tensor *sc = st_file_find(f, "model.layers.0.mlp.down_proj.weight_scale");
        CHECK(w && w->dtype == HR_U8 && w->shape[0] == 128 && w->shape[1] == 128);
        CHECK(sc && sc->dtype == HR_F8_E4M3 && sc->shape[0] == 128 && sc->shape[1] == 16);
        st_file_close(f);
    }
}

/* Random byte flips in a valid header: never a crash or an out-of-range
 * tensor (ASan checks the reads); most variants are rejected. */
static void test_fuzz(void) {
    static const spec ts[] = {{"a", "F32", 2, {2, 3}, 4}, {"bb", "BF16", 1, {5}, 2}, {"c", "U8", 1, {7}, 1}};
    const char *p = tmp_path("fuzz_src.safetensors");
    write_file(p, ts, 3, "{\"k\":\"v\"}", NULL, NULL);
    FILE *f = fopen(p, "rb");
    uint8_t img[4096];
    size_t n = fread(img, 1, sizeof img, f);
    fclose(f);
    int accepted = 0;
    for (int it = 0; it < 500; it++) {
        uint8_t m[4096];
        memcpy(m, img, n);
        int flips = 1 + rand() % 3;
        for (int k = 0; k < flips; k++) {
            size_t at = 8 + (size_t)rand() % (n - 8 > 200 ? 200 : n - 8);
            m[at] = (uint8_t)(rand() % 3 == 0 ? (unsigned)(uint8_t) "0123456789[]{},:\"e"[rand() % 17]
                                              : (unsigned)(m[at] ^ (1u << (rand() % 8))));
        }
        size_t len = (size_t)rand() % 8 == 0 ? (size_t)rand() % n : n; /* sometimes truncated too */
        FILE *o = fopen(tmp_path("fuzz.safetensors"), "wb");
        fwrite(m, 1, len, o);
        fclose(o);
        hr_err err = {0};
        st_file *sf = st_file_open(tmp_path("fuzz.safetensors"), &err);
        if (!sf) {
            CHECK(err.msg[0] != '\0');
            continue;
        }
        accepted++;
        for (int i = 0; i < st_file_count(sf); i++) {
            const st_tensor *t = st_file_tensor(sf, i);
            volatile uint8_t sink = 0;
            if (t->nbytes) sink ^= ((const uint8_t *)t->data)[t->nbytes - 1];
            (void)sink;
        }
        st_file_close(sf);
    }
    CHECK(accepted < 500);
}

int main(void) {
    srand(1234);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/hr_st_XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_round_trip();
    test_corruption();
    test_sharded();
    test_fixture_models();
    test_fuzz();
    /* remove what we wrote */
    DIR *d = opendir(g_dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') unlink(tmp_path(de->d_name));
    if (d) closedir(d);
    rmdir(g_dir);
    return test_report("io/test_safetensors");
}
