/* Shared basics: error reporting, assertions, small helpers.
 * Errors: a function that can fail returns HR_OK (0) or a negative HR_E* code
 * and writes one human-readable line into the caller-owned hr_err.
 * Assertions (HR_ASSERT) guard invariants, stay on in every build, and abort. */
#ifndef HEARTH_CORE_COMMON_H
#define HEARTH_CORE_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define HR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define HR_MAX(a, b) ((a) > (b) ? (a) : (b))
#define HR_CDIV(a, b) (((a) + (b) - 1) / (b))

enum {
    HR_OK = 0,
    HR_EINVAL = -1,   /* bad argument or malformed input */
    HR_EIO = -2,      /* file system / OS error */
    HR_ENOMEM = -3,   /* allocation failed */
    HR_EUNSUP = -4,   /* valid but unsupported (architecture, dtype, construct) */
    HR_ENOTFOUND = -5,/* missing file, tensor, key */
    HR_EFULL = -6,    /* capacity exhausted (KV blocks, queue) */
};

#define HR_ERR_LEN 512
typedef struct hr_err {
    int code;
    char msg[HR_ERR_LEN];
} hr_err;

/* Sets err (may be NULL) and returns code, so callers can `return hr_err_set(...)`. */
int hr_err_set(hr_err *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefixes the message already in err with "prefix: ". */
void hr_err_prefix(hr_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void hr_assert_fail(const char *expr, const char *file, int line, const char *msg) __attribute__((noreturn));
#define HR_ASSERT(cond) ((cond) ? (void)0 : hr_assert_fail(#cond, __FILE__, __LINE__, NULL))
#define HR_ASSERT_MSG(cond, msg) ((cond) ? (void)0 : hr_assert_fail(#cond, __FILE__, __LINE__, (msg)))

/* Allocation that aborts on failure: for small bookkeeping only. Large or
 * client-controlled sizes must use plain malloc and report HR_ENOMEM. */
void *hr_xmalloc(size_t n);
void *hr_xcalloc(size_t n, size_t size);
void *hr_xrealloc(void *p, size_t n);
char *hr_xstrdup(const char *s);

/* An on/off switch from the environment: dflt when name is unset, else on
 * unless its value is "0". Not cached: callers on hot paths keep the result. */
bool hr_env_on(const char *name, bool dflt);
/* An integer setting from the environment: atoi of its value, dflt when
 * unset. Not cached either; callers check the range they accept. */
int hr_env_int(const char *name, int dflt);

/* Monotonic clock in seconds. */
double hr_time_now(void);

/* Reads a whole file into a NUL-terminated buffer (caller frees). */
int hr_read_file(const char *path, char **out, size_t *len, hr_err *err);

#endif
