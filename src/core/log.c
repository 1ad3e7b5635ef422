#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static int level_from_env(void) {
    const char *e = getenv("HEARTH_LOG");
    if (!e) return HR_LOG_INFO;
    if (!strcmp(e, "debug")) return HR_LOG_DEBUG;
    if (!strcmp(e, "warn")) return HR_LOG_WARN;
    if (!strcmp(e, "error")) return HR_LOG_ERROR;
    if (!strcmp(e, "off")) return HR_LOG_OFF;
    return HR_LOG_INFO;
}

void hr_log_set_level(hr_log_level level) { g_level = (int)level; }

hr_log_level hr_log_get_level(void) {
    if (g_level < 0) g_level = level_from_env();
    return (hr_log_level)g_level;
}

void hr_log(hr_log_level level, const char *fmt, ...) {
    if ((int)level < (int)hr_log_get_level()) return;
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%m-%d %H:%M:%S", &tm);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "%s %s%s ", names[level], ts, level == HR_LOG_INFO ? " " : "");
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}
