#include "core/common.h"

#include <errno.h>
#include <string.h>
#include <time.h>

int hr_err_set(hr_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void hr_err_prefix(hr_err *err, const char *fmt, ...) {
    if (!err) return;
    char pre[HR_ERR_LEN], old[HR_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", pre, old);
}

void hr_assert_fail(const char *expr, const char *file, int line, const char *msg) {
    fprintf(stderr, "hearth: assertion failed at %s:%d: %s%s%s\n", file, line, expr, msg ? ": " : "", msg ? msg : "");
    abort();
}

void *hr_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) hr_assert_fail("malloc", __FILE__, __LINE__, "out of memory");
    return p;
}

void *hr_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) hr_assert_fail("calloc", __FILE__, __LINE__, "out of memory");
    return p;
}

void *hr_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) hr_assert_fail("realloc", __FILE__, __LINE__, "out of memory");
    return q;
}

char *hr_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = hr_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

bool hr_env_on(const char *name, bool dflt) {
    const char *e = getenv(name);
    return e ? strcmp(e, "0") != 0 : dflt;
}

int hr_env_int(const char *name, int dflt) {
    const char *e = getenv(name);
    return e ? atoi(e) : dflt;
}

double hr_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int hr_read_file(const char *path, char **out, size_t *len, hr_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return hr_err_set(err, errno == ENOENT ? HR_ENOTFOUND : HR_EIO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return hr_err_set(err, HR_ENOMEM, "%s: out of memory", path);
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return hr_err_set(err, HR_EIO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return HR_OK;
}
