/* Process-wide logger (the one allowed global): leveled lines to stderr with a
 * timestamp. Level from hr_log_set_level() or $HEARTH_LOG (debug|info|warn|error). */
#ifndef HEARTH_CORE_LOG_H
#define HEARTH_CORE_LOG_H

typedef enum { HR_LOG_DEBUG = 0, HR_LOG_INFO, HR_LOG_WARN, HR_LOG_ERROR, HR_LOG_OFF } hr_log_level;

void hr_log_set_level(hr_log_level level);
hr_log_level hr_log_get_level(void);
void hr_log(hr_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define HR_LOGD(...) hr_log(HR_LOG_DEBUG, __VA_ARGS__)
#define HR_LOGI(...) hr_log(HR_LOG_INFO, __VA_ARGS__)
#define HR_LOGW(...) hr_log(HR_LOG_WARN, __VA_ARGS__)
#define HR_LOGE(...) hr_log(HR_LOG_ERROR, __VA_ARGS__)

#endif
