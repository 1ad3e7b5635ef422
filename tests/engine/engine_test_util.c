/* See engine_test_util.h. */
#include "engine_test_util.h"

#include <string.h>

void on_event(void *user, const hr_event *ev) {
    result *r = user;
    pthread_mutex_lock(&r->mu);
    if (r->done) r->events_after_done++;
    for (int i = 0; i < ev->n_tokens && r->n < RESULT_MAX_TOKENS; i++) r->toks[r->n++] = ev->tokens[i].id;
    if (ev->finish != HR_FINISH_NONE) {
        r->fin = ev->finish;
        r->done = true;
        r->n_cached = ev->n_cached_tokens;
        pthread_cond_broadcast(&r->cv);
    }
    pthread_mutex_unlock(&r->mu);
}

void result_init(result *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

void result_wait(result *r) {
    pthread_mutex_lock(&r->mu);
    while (!r->done) pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

void result_destroy(result *r) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

bool result_same(const result *a, const result *b) {
    return a->n == b->n && a->fin == b->fin && memcmp(a->toks, b->toks, sizeof(int32_t) * (size_t)a->n) == 0;
}
