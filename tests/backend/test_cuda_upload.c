/* tensor_set on the CUDA backend: the direct path (small sets before the
 * pinned staging ring exists) and the ring (src/backend/cuda/upload.cu).
 * Every check is byte for byte (tensor_get of the whole tensor: the set range
 * holds the pattern, the rest the zeros tensor_new promises):
 *   - sizes 1 B .. 300 MB at odd offsets, around the 1 MB threshold and the
 *     32 MB chunk size;
 *   - 200 tensors in a row, the host buffer scribbled over right after each
 *     tensor_set returns (the contract: host may be reused on return);
 *   - one tensor filled piece by piece (as the loader's chunked conversion);
 *   - a set immediately followed by ops that read the tensor (copy, add);
 *   - a set into a block the caching allocator hands out again (tensor_new's
 *     zero-fill must land before the copy, not after);
 *   - a set into a tensor that a queued op still reads (write after read);
 *   - an out-of-range set fails with a message.
 * Then (informational) the upload rate of 512 MB from pageable memory through
 * the ring and directly (HEARTH_CUDA_UPLOAD_RING=0 on a second backend).
 * Skips (77) without CUDA or without a device. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/common.h"
#include "core/dtype.h"
#include "test.h"

#ifdef HEARTH_HAVE_CUDA

#define MB ((size_t)1 << 20)

static hr_backend *be;

/* Deterministic bytes: pattern(seed) at position i, so a buffer can be
 * regenerated for the comparison after the original was overwritten. */
static void fill_pattern(uint8_t *p, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    for (; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 32);
    }
}

static hr_tensor *new_u8(size_t n, const char *name) {
    int64_t ne[1] = {(int64_t)n};
    return be->ops->tensor_new(be, HR_U8, 1, ne, name);
}

/* The tensor holds zeros, then want[0..len) at off, then zeros. */
static int check_tensor(const hr_tensor *t, size_t off, const uint8_t *want, size_t len, const char *what) {
    uint8_t *got = malloc(t->nbytes ? t->nbytes : 1);
    if (!got) {
        CHECK_MSG(0, "%s: out of host memory", what);
        return 1;
    }
    int rc = be->ops->tensor_get(be, t, got, 0, t->nbytes);
    CHECK_MSG(rc == HR_OK, "%s: tensor_get: %s", what, be->err.msg);
    size_t bad = t->nbytes, i;
    for (i = 0; rc == HR_OK && i < t->nbytes; i++) {
        uint8_t w = i >= off && i < off + len ? want[i - off] : 0;
        if (got[i] != w) {
            bad = i;
            break;
        }
    }
    CHECK_MSG(rc == HR_OK && bad == t->nbytes, "%s: first wrong byte at %zu of %zu (set [%zu, %zu))", what, bad,
              t->nbytes, off, off + len);
    free(got);
    return bad != t->nbytes;
}

/* One tensor of off + len + tail bytes; bytes [off, off + len) set at once. */
static void test_one(size_t len, size_t off, size_t tail, uint64_t seed) {
    char what[96];
    snprintf(what, sizeof what, "set %zu B at offset %zu", len, off);
    uint8_t *src = malloc(len ? len : 1);
    hr_tensor *t = new_u8(off + len + tail, "upload");
    CHECK_MSG(src && t, "%s: allocation", what);
    if (src && t) {
        fill_pattern(src, len, seed);
        int rc = be->ops->tensor_set(be, t, src, off, len);
        CHECK_MSG(rc == HR_OK, "%s: %s", what, be->err.msg);
        if (rc == HR_OK) check_tensor(t, off, src, len, what);
    }
    if (t) be->ops->tensor_free(be, t);
    free(src);
}

/* 200 tensors, the host buffer overwritten right after each set; read back at the end. */
static void test_many(void) {
    enum { N = 200 };
    hr_tensor *t[N];
    size_t len[N];
    uint8_t *host = malloc(3 * MB + N); /* the largest set is 3 MB + i bytes */
    if (!host) return;
    for (int i = 0; i < N; i++) {
        len[i] = i % 7 == 0 ? 3 * MB + (size_t)i : i % 3 == 0 ? MB + (size_t)i * 13 : (size_t)i * 977 + 1;
        t[i] = new_u8(len[i] + 3, "many");
        CHECK(t[i] != NULL);
        if (!t[i]) continue;
        fill_pattern(host, len[i], 1000 + (uint64_t)i);
        CHECK_MSG(be->ops->tensor_set(be, t[i], host, 3, len[i]) == HR_OK, "many %d: %s", i, be->err.msg);
        memset(host, 0xA5, len[i]); /* the caller may reuse host at once */
    }
    int fails = 0;
    for (int i = 0; i < N; i++) {
        if (!t[i]) continue;
        fill_pattern(host, len[i], 1000 + (uint64_t)i);
        char what[64];
        snprintf(what, sizeof what, "many: tensor %d (%zu B)", i, len[i]);
        fails += check_tensor(t[i], 3, host, len[i], what);
        be->ops->tensor_free(be, t[i]);
    }
    CHECK_EQ_INT(fails, 0);
    free(host);
}

/* One 70 MB tensor filled in pieces of odd sizes from one reused buffer. */
static void test_pieces(void) {
    size_t n = 70 * MB + 5;
    uint8_t *all = malloc(n), *piece = malloc(9 * MB);
    hr_tensor *t = new_u8(n, "pieces");
    if (!all || !piece || !t) {
        CHECK_MSG(0, "pieces: allocation");
    } else {
        fill_pattern(all, n, 77);
        size_t off = 0, k = 0;
        while (off < n) {
            size_t len = HR_MIN(n - off, (size_t)(k % 3 == 0 ? 9 * MB : k % 3 == 1 ? 1 : 5 * MB + 3));
            memcpy(piece, all + off, len);
            CHECK(be->ops->tensor_set(be, t, piece, off, len) == HR_OK);
            memset(piece, 0x5A, len);
            off += len;
            k++;
        }
        check_tensor(t, 0, all, n, "pieces");
    }
    if (t) be->ops->tensor_free(be, t);
    free(all);
    free(piece);
}

/* A set, then at once ops on the stream that read it. */
static void test_set_then_ops(void) {
    int64_t n = 24 * (int64_t)MB + 3; /* floats: ~96 MB, through the ring */
    int64_t ne[1] = {n};
    hr_tensor *a = be->ops->tensor_new(be, HR_F32, 1, ne, "a"), *b = be->ops->tensor_new(be, HR_F32, 1, ne, "b");
    hr_tensor *c = be->ops->tensor_new(be, HR_F32, 1, ne, "c"), *d = be->ops->tensor_new(be, HR_F32, 1, ne, "d");
    float *ha = malloc((size_t)n * 4), *hb = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    if (!a || !b || !c || !d || !ha || !hb || !got) {
        CHECK_MSG(0, "set_then_ops: allocation");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        ha[i] = (float)(i % 1000) * 0.25f - 100.0f;
        hb[i] = (float)(i % 777) * 0.5f + 1.0f;
    }
    CHECK(be->ops->tensor_set(be, a, ha, 0, a->nbytes) == HR_OK);
    CHECK(be->ops->copy(be, c, a) == HR_OK); /* reads a right after its set */
    CHECK(be->ops->tensor_set(be, b, hb, 0, b->nbytes) == HR_OK);
    CHECK(be->ops->add(be, d, a, b) == HR_OK);
    CHECK(be->ops->tensor_get(be, c, got, 0, c->nbytes) == HR_OK);
    CHECK_MSG(!memcmp(got, ha, (size_t)n * 4), "copy of a freshly set tensor differs");
    CHECK(be->ops->tensor_get(be, d, got, 0, d->nbytes) == HR_OK);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (got[i] != ha[i] + hb[i]) bad = i;
    CHECK_MSG(bad < 0, "add of freshly set tensors wrong at %lld", (long long)bad);
done:
    if (a) be->ops->tensor_free(be, a);
    if (b) be->ops->tensor_free(be, b);
    if (c) be->ops->tensor_free(be, c);
    if (d) be->ops->tensor_free(be, d);
    free(ha);
    free(hb);
    free(got);
}

/* Queues ~20 ms of device copies on the compute stream, so that anything the
 * copy stream did without waiting for it would land first. */
static void keep_busy(hr_tensor *x, hr_tensor *y) {
    for (int i = 0; i < 128; i++) CHECK(be->ops->copy(be, (i & 1) ? x : y, (i & 1) ? y : x) == HR_OK);
}

/* The caching allocator hands a freed block out again: tensor_new zero-fills
 * it on the compute stream (queued behind busy work here), and the set (copy
 * stream) must land after that zero-fill, not before it. */
static void test_reuse(void) {
    size_t n = 48 * MB + 17;
    uint8_t *src = malloc(n);
    hr_tensor *x = new_u8(256 * MB, "busy x"), *y = new_u8(256 * MB, "busy y");
    for (int round = 0; src && x && y && round < 3; round++) {
        keep_busy(x, y);
        hr_tensor *t = new_u8(n, "reuse");
        CHECK(t != NULL);
        if (!t) break;
        fill_pattern(src, n, 500 + (uint64_t)round);
        CHECK(be->ops->tensor_set(be, t, src, 0, n) == HR_OK);
        check_tensor(t, 0, src, n, "set into a reused block");
        be->ops->tensor_free(be, t); /* the next round gets this block back */
    }
    if (x) be->ops->tensor_free(be, x);
    if (y) be->ops->tensor_free(be, y);
    free(src);
}

/* Write after read: a queued copy reads x; a set overwrites x right after. */
static void test_war(void) {
    size_t n = 256 * MB;
    uint8_t *p1 = malloc(n), *p2 = malloc(n);
    hr_tensor *x = new_u8(n, "x"), *y = new_u8(n, "y");
    if (!p1 || !p2 || !x || !y) {
        CHECK_MSG(0, "war: allocation");
    } else {
        fill_pattern(p1, n, 11);
        fill_pattern(p2, n, 12);
        CHECK(be->ops->tensor_set(be, x, p1, 0, n) == HR_OK);
        for (int i = 0; i < 128; i++) CHECK(be->ops->copy(be, y, x) == HR_OK); /* ~20 ms reading x */
        CHECK(be->ops->tensor_set(be, x, p2, 0, n) == HR_OK);
        check_tensor(y, 0, p1, n, "war: the copy queued before the set");
        check_tensor(x, 0, p2, n, "war: the set");
    }
    if (x) be->ops->tensor_free(be, x);
    if (y) be->ops->tensor_free(be, y);
    free(p1);
    free(p2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 512 MB from pageable memory, on backend b (timed to the data being there). */
static double upload_rate(hr_backend *b, const uint8_t *src, size_t n) {
    int64_t ne[1] = {(int64_t)n};
    hr_tensor *t = b->ops->tensor_new(b, HR_U8, 1, ne, "rate");
    if (!t) return 0;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        b->ops->sync(b);
        double t0 = now_s();
        int rc = b->ops->tensor_set(b, t, src, 0, n);
        b->ops->sync(b);
        double dt = now_s() - t0;
        if (rc == HR_OK && n / dt / 1e9 > best) best = n / dt / 1e9;
    }
    b->ops->tensor_free(b, t);
    return best;
}

static void bench(void) {
    size_t n = 512 * MB;
    uint8_t *src = malloc(n);
    if (!src) return;
    fill_pattern(src, n, 3);
    double ring = upload_rate(be, src, n);
    setenv("HEARTH_CUDA_UPLOAD_RING", "0", 1);
    hr_err err = {0};
    hr_backend *plain = hr_backend_cuda_create(0, &err);
    unsetenv("HEARTH_CUDA_UPLOAD_RING");
    double direct = plain ? upload_rate(plain, src, n) : 0;
    if (plain) hr_backend_free(plain);
    printf("upload 512 MB from pageable memory: ring %.1f GB/s, direct %.1f GB/s\n", ring, direct);
    free(src);
}

int main(void) {
    if (!hr_backend_cuda_available()) TEST_SKIP("no CUDA device");
    hr_err err = {0};
    be = hr_backend_cuda_create(0, &err);
    if (!be) {
        fprintf(stderr, "hr_backend_cuda_create: %s\n", err.msg);
        return 1;
    }
    /* below the threshold first: the direct path (the ring does not exist yet) */
    static const size_t small[] = {1, 2, 3, 255, 4097, MB - 1};
    for (size_t i = 0; i < HR_ARRAY_LEN(small); i++) test_one(small[i], i * 7 + 1, i * 3, i);
    /* from 1 MB on: the ring (then every size takes it) */
    static const size_t sizes[] = {MB,       MB + 7, 32 * MB - 1, 32 * MB, 32 * MB + 1,     64 * MB + 3, 100 * MB + 13,
                                   300 * MB, 1,      3,           4097,    128 * MB + 4093, 5 * MB + 1};
    for (size_t i = 0; i < HR_ARRAY_LEN(sizes); i++) test_one(sizes[i], (i * 131) % 4099, (i * 17) % 5, 100 + i);
    test_many();
    test_pieces();
    test_set_then_ops();
    test_reuse();
    test_war();
    {
        hr_tensor *t = new_u8(16, "small");
        uint8_t b[32] = {0};
        CHECK(t && be->ops->tensor_set(be, t, b, 8, 9) == HR_EINVAL && strstr(be->err.msg, "past the end"));
        if (t) be->ops->tensor_free(be, t);
    }
    bench();
    hr_backend_free(be);
    return test_report("backend/test_cuda_upload");
}

#else
int main(void) {
    fprintf(stderr, "SKIP: no CUDA (built without -DHEARTH_CUDA=ON)\n");
    return 77;
}
#endif
