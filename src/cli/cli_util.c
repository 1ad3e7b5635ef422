/* CLI flag helpers (see cli_util.h). */
#include "cli/cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool cli_flag(int argc, char **argv, int *i, const char *flag, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(flag);
    if (strncmp(a, flag, n)) return false;
    if (a[n] == '=') {
        *val = a + n + 1;
        return true;
    }
    if (a[n]) return false;
    if (*i + 1 >= argc) {
        fprintf(stderr, "hearth: %s needs a value\n", flag);
        *val = NULL;
        return true;
    }
    *val = argv[++*i];
    return true;
}

bool cli_int(const char *cmd, const char *flag, const char *s, long min, long max, int *out) {
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < min || v > max) {
        fprintf(stderr, "hearth %s: bad value for %s: '%s' (expected an integer in [%ld, %ld])\n", cmd, flag,
                s ? s : "", min, max);
        return false;
    }
    *out = (int)v;
    return true;
}

bool cli_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = s && *s != '-' ? strtoull(s, &end, 10) : 0;
    if (!s || !*s || *s == '-' || *end || errno) {
        fprintf(stderr, "hearth %s: bad value for %s: '%s' (expected a non-negative integer)\n", cmd, flag, s ? s : "");
        return false;
    }
    *out = v;
    return true;
}

bool cli_float(const char *cmd, const char *flag, const char *s, double min, double max, float *out) {
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno || !isfinite(v) || v < min || v > max) {
        fprintf(stderr, "hearth %s: bad value for %s: '%s' (expected a number in [%g, %g])\n", cmd, flag, s ? s : "",
                min, max);
        return false;
    }
    *out = (float)v;
    return true;
}

bool cli_ids(const char *cmd, const char *flag, const char *s, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!s || !*s) goto bad;
    int cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',';
    *ids = malloc((size_t)cap * sizeof **ids);
    if (!*ids) goto bad;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) goto bad;
        (*ids)[(*n)++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) goto bad;
    }
    return true;
bad:
    fprintf(stderr, "hearth %s: bad value for %s: '%s' (expected comma-separated token ids, e.g. 1,2,3)\n", cmd, flag,
            s ? s : "");
    free(*ids);
    *ids = NULL;
    *n = 0;
    return false;
}
