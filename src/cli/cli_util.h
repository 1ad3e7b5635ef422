/* Small helpers shared by the CLI commands: "--flag value" / "--flag=value"
 * matching and strict number / id-list parsing that prints one clear error
 * line. CLI only: library code never prints. */
#ifndef HEARTH_CLI_UTIL_H
#define HEARTH_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>

/* If argv[*i] is `flag` (then the value is argv[*i + 1]; *i advances) or
 * `flag=value`, sets *val and returns true. A missing value prints an error
 * and sets *val to NULL (still returns true). */
bool cli_flag(int argc, char **argv, int *i, const char *flag, const char **val);

/* Parse a whole string as a number in [min, max]; on failure print
 * "hearth CMD: bad value for FLAG: ..." and return false. */
bool cli_int(const char *cmd, const char *flag, const char *s, long min, long max, int *out);
bool cli_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
bool cli_float(const char *cmd, const char *flag, const char *s, double min, double max, float *out);
/* "1,2,3" -> malloc'd ids (caller frees). */
bool cli_ids(const char *cmd, const char *flag, const char *s, int32_t **ids, int *n);

#endif
