/* Growable byte strings for response bodies and SSE output. Small and
 * bounded by what one response holds, so allocation failure aborts. */
#include <stdarg.h>
#include <string.h>

#include "server/server.h"

static void reserve(srv_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->p = hr_xrealloc(b->p, cap);
    b->cap = cap;
}

void srv_buf_append(srv_buf *b, const void *s, size_t n) {
    reserve(b, n);
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s) { srv_buf_append(b, s, strlen(s)); }

void srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void srv_buf_consume(srv_buf *b, size_t n) {
    if (n >= b->len) {
        b->len = 0;
        if (b->p) b->p[0] = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
    b->p[b->len] = 0;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    *b = (srv_buf){0};
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 if invalid. */
static int utf8_len(const unsigned char *p, size_t n) {
    int len = p[0] < 0x80                   ? 1
              : p[0] >= 0xC2 && p[0] < 0xE0 ? 2
              : p[0] >= 0xE0 && p[0] < 0xF0 ? 3
              : p[0] >= 0xF0 && p[0] < 0xF5 ? 4
                                            : 0;
    if (!len || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    /* overlong forms, UTF-16 surrogates, beyond U+10FFFF (RFC 3629) */
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) || (p[0] == 0xF0 && p[1] < 0x90) ||
        (p[0] == 0xF4 && p[1] >= 0x90))
        return 0;
    return len;
}

void srv_buf_append_utf8(srv_buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int l = utf8_len(p + i, n - i);
        if (l)
            srv_buf_append(b, p + i, (size_t)l);
        else
            srv_buf_puts(b, "\xef\xbf\xbd");
        i += l ? (size_t)l : 1;
    }
    if (!b->p) srv_buf_append(b, "", 0);
}
