/* A fixed pool of worker threads for data-parallel loops (one pool per
 * backend, created once; never a thread per op). The calling thread takes
 * part in the work. Not re-entrant: one parallel_for at a time per pool. */
#ifndef HEARTH_CORE_THREADPOOL_H
#define HEARTH_CORE_THREADPOOL_H

typedef struct hr_threadpool hr_threadpool;

/* fn is called with disjoint [begin, end) ranges covering [0, n); tid in [0, n_threads). */
typedef void (*hr_parallel_fn)(void *ctx, int begin, int end, int tid);

/* n_threads <= 0 means "number of online CPUs". Returns NULL on failure. */
hr_threadpool *hr_threadpool_create(int n_threads);
void hr_threadpool_free(hr_threadpool *pool);
int hr_threadpool_size(const hr_threadpool *pool);

/* Splits [0, n) into chunks of at least `grain` items and runs them on the
 * pool; returns when all are done. pool may be NULL (runs inline). */
void hr_parallel_for(hr_threadpool *pool, int n, int grain, hr_parallel_fn fn, void *ctx);

#endif
