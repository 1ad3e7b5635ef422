/* Helpers shared by the engine tests: collecting a request's events into a
 * result (tokens, finish reason, cached prompt tokens) and waiting for it.
 * Compiled into every tests/engine executable (CMakeLists.txt adds
 * each tests/<module>/NAME_test_util.c to that module's tests). */
#ifndef HEARTH_TESTS_ENGINE_TEST_UTIL_H
#define HEARTH_TESTS_ENGINE_TEST_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"

#define RESULT_MAX_TOKENS 512

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int32_t toks[RESULT_MAX_TOKENS];
    int n;
    hr_finish_reason fin;
    bool done;
    int n_cached;          /* n_cached_tokens of the final event */
    int events_after_done; /* events received after the final one (must stay 0) */
} result;

/* The hr_event_cb: user is a result *. */
void on_event(void *user, const hr_event *ev);
void result_init(result *r);
void result_wait(result *r);
void result_destroy(result *r);
/* Same tokens and the same finish reason. */
bool result_same(const result *a, const result *b);

#endif
