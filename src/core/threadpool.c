/* Persistent worker pool for hr_parallel_for.
 *
 * A job is published by bumping the generation in `state`. Workers spin
 * briefly on it (a decode step issues ~10 parallel loops per layer, so most
 * wake-ups arrive within microseconds) and only then sleep on a condition
 * variable. Work is handed out in chunks through an atomic cursor. A worker
 * must *join* a job (count itself in `state`) before touching it; once the
 * caller has claimed the last chunk it closes the job and waits only for the
 * workers that joined. So a worker that the OS has descheduled (the machine
 * is shared) costs nothing unless it holds a chunk, and a late worker never
 * sees a half-written next job. */
#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/common.h"

/* Spin iterations before a worker sleeps / the caller blocks. A pause is
 * ~10-140 cycles depending on the core, so this is tens of microseconds:
 * long enough to bridge the gap between two ops, short enough not to burn a
 * core while the engine is idle. */
#define TP_SPIN_WORKER 4000
#define TP_SPIN_CALLER 4000
/* Chunks per thread when splitting: > 1 so uneven chunks balance out. */
#define TP_CHUNKS_PER_THREAD 4

/* state = generation << 32 | CLOSED | number of workers inside the job */
#define TP_CLOSED      ((uint64_t)1 << 31)
#define TP_ACTIVE_MASK (TP_CLOSED - 1)

struct hr_threadpool {
    int n_threads; /* including the caller */
    pthread_t *threads;
    struct worker_arg *args;

    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers wait here for a new generation */
    pthread_cond_t done; /* the caller waits here for the joined workers */
    _Atomic uint64_t state;
    atomic_int stop;
    atomic_int cursor; /* next unclaimed item */

    /* the current job; written by the caller while no worker is inside */
    hr_parallel_fn fn;
    void *ctx;
    int n, chunk;
};

struct worker_arg {
    hr_threadpool *pool;
    int tid;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The pool and tid of the job this thread is running: a parallel_for on the
 * same pool called from inside a job runs inline under the same tid (its
 * per-thread scratch stays valid) instead of deadlocking on the busy pool. */
static _Thread_local hr_threadpool *tp_current_pool;
static _Thread_local int tp_current_tid;

/* Claims chunks until the range is exhausted. */
static void run_chunks(hr_threadpool *p, int tid) {
    hr_threadpool *outer_pool = tp_current_pool;
    int outer_tid = tp_current_tid;
    tp_current_pool = p;
    tp_current_tid = tid;
    for (;;) {
        int b = atomic_fetch_add_explicit(&p->cursor, p->chunk, memory_order_relaxed);
        if (b >= p->n) break;
        int e = b + p->chunk < p->n ? b + p->chunk : p->n;
        p->fn(p->ctx, b, e, tid);
    }
    tp_current_pool = outer_pool;
    tp_current_tid = outer_tid;
}

static inline uint32_t gen_of(uint64_t st) { return (uint32_t)(st >> 32); }

/* Joins job `g` unless it is closed or already replaced. */
static bool join_job(hr_threadpool *p, uint32_t g) {
    uint64_t st = atomic_load_explicit(&p->state, memory_order_acquire);
    while (gen_of(st) == g && !(st & TP_CLOSED))
        if (atomic_compare_exchange_weak_explicit(&p->state, &st, st + 1, memory_order_acq_rel, memory_order_acquire))
            return true;
    return false;
}

static void *worker_main(void *arg) {
    struct worker_arg *wa = arg;
    hr_threadpool *p = wa->pool;
    /* The generation is 0 before any worker starts; reading it here instead
     * could miss a job published before this thread got scheduled. */
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = seen;
        for (int i = 0; i < TP_SPIN_WORKER; i++) {
            g = gen_of(atomic_load_explicit(&p->state, memory_order_acquire));
            if (g != seen || atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
            cpu_relax();
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = gen_of(atomic_load_explicit(&p->state, memory_order_acquire))) == seen &&
                   !atomic_load_explicit(&p->stop, memory_order_relaxed))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) break;
        seen = g;
        if (!join_job(p, g)) continue; /* late: the caller already finished it */
        run_chunks(p, wa->tid);
        uint64_t st = atomic_fetch_sub_explicit(&p->state, 1, memory_order_acq_rel);
        if ((st & TP_ACTIVE_MASK) == 1 && (st & TP_CLOSED)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

hr_threadpool *hr_threadpool_create(int n_threads) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    hr_threadpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->state, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->cursor, 0);
    int nw = n_threads - 1;
    if (nw > 0) {
        p->threads = calloc((size_t)nw, sizeof *p->threads);
        p->args = calloc((size_t)nw, sizeof *p->args);
        if (!p->threads || !p->args) goto fail;
        for (int i = 0; i < nw; i++) {
            p->args[i].pool = p;
            p->args[i].tid = i + 1;
            if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
                p->n_threads = i + 1; /* join the ones that started */
                goto fail;
            }
        }
    }
    return p;
fail:
    hr_threadpool_free(p);
    return NULL;
}

void hr_threadpool_free(hr_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    if (p->threads)
        for (int i = 0; i < p->n_threads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->args);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int hr_threadpool_size(const hr_threadpool *p) { return p ? p->n_threads : 1; }

void hr_parallel_for(hr_threadpool *p, int n, int grain, hr_parallel_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int nt = p ? p->n_threads : 1;
    if (p && p == tp_current_pool) { /* nested inside one of this pool's jobs */
        fn(ctx, 0, n, tp_current_tid);
        return;
    }
    if (nt == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    int chunk = HR_CDIV(n, nt * TP_CHUNKS_PER_THREAD);
    if (chunk < grain) chunk = grain;

    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    atomic_store_explicit(&p->cursor, 0, memory_order_relaxed);
    /* New generation, open, nobody inside. Publishing under the mutex pairs
     * with the sleepers' re-check. */
    pthread_mutex_lock(&p->mu);
    uint32_t g = gen_of(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1;
    atomic_store_explicit(&p->state, (uint64_t)g << 32, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    run_chunks(p, 0);

    /* Every chunk is claimed; close the job and wait for the workers inside. */
    uint64_t st = atomic_fetch_or_explicit(&p->state, TP_CLOSED, memory_order_acq_rel);
    if ((st & TP_ACTIVE_MASK) == 0) return;
    for (int i = 0; i < TP_SPIN_CALLER; i++) {
        if ((atomic_load_explicit(&p->state, memory_order_acquire) & TP_ACTIVE_MASK) == 0) return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->state, memory_order_acquire) & TP_ACTIVE_MASK) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
