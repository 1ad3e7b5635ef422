/* Thread pool: every index in [0, n) is visited exactly once, ranges respect
 * the grain, tids stay in range; many back-to-back calls (the decode pattern)
 * with 1, 2 and 5 threads, plus a NULL pool. Exact integer checks. */
#include "core/threadpool.h"
#include "test.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct {
    int n, grain, n_threads;
    atomic_int *hits;     /* per index */
    atomic_llong sum;     /* sum of visited indices */
    atomic_int bad_range; /* ranges smaller than grain (except the last) or out of bounds */
    atomic_int bad_tid;
} job;

static void visit(void *ctx, int b, int e, int tid) {
    job *j = ctx;
    if (b < 0 || e > j->n || b >= e) atomic_fetch_add(&j->bad_range, 1);
    if (e - b < j->grain && e != j->n) atomic_fetch_add(&j->bad_range, 1);
    if (tid < 0 || tid >= j->n_threads) atomic_fetch_add(&j->bad_tid, 1);
    long long s = 0;
    for (int i = b; i < e; i++) {
        atomic_fetch_add(&j->hits[i], 1);
        s += i;
    }
    atomic_fetch_add(&j->sum, s);
}

static void run_pool(hr_threadpool *pool, int n_threads) {
    static atomic_int hits[5000];
    uint32_t r = 7;
    int calls = 2000, bad = 0;
    for (int c = 0; c < calls; c++) {
        r = r * 1103515245u + 12345u;
        int n = (int)(r >> 8) % 5000;
        int grain = 1 + (int)(r >> 4) % 64;
        job j = {.n = n, .grain = grain, .n_threads = n_threads, .hits = hits};
        for (int i = 0; i < n; i++) atomic_store(&hits[i], 0);
        atomic_init(&j.sum, 0);
        atomic_init(&j.bad_range, 0);
        atomic_init(&j.bad_tid, 0);
        hr_parallel_for(pool, n, grain, visit, &j);
        long long want = (long long)n * (n - 1) / 2;
        int once = 1;
        for (int i = 0; i < n; i++) once &= atomic_load(&hits[i]) == 1;
        if (!once || atomic_load(&j.sum) != want || atomic_load(&j.bad_range) || atomic_load(&j.bad_tid)) bad++;
    }
    CHECK_MSG(bad == 0, "%d of %d calls wrong with %d threads", bad, calls, n_threads);
}

/* Uses the tid to index per-thread partial sums, as the backend does with its scratch. */
typedef struct {
    double partial[8][8]; /* padded against false sharing */
    const float *v;
} red;

static void reduce(void *ctx, int b, int e, int tid) {
    red *r = ctx;
    for (int i = b; i < e; i++) r->partial[tid][0] += r->v[i];
}

/* A parallel_for inside a job on the same pool runs inline with the outer tid. */
typedef struct {
    hr_threadpool *pool;
    atomic_int inner_items, bad_tid;
} nest;

static void inner(void *ctx, int b, int e, int tid) {
    nest *n = ctx;
    atomic_fetch_add(&n->inner_items, e - b);
    (void)tid;
}

static void outer(void *ctx, int b, int e, int tid) {
    nest *n = ctx;
    for (int i = b; i < e; i++) {
        hr_parallel_for(n->pool, 10, 1, inner, n);
        if (tid < 0 || tid >= hr_threadpool_size(n->pool)) atomic_fetch_add(&n->bad_tid, 1);
    }
}

int main(void) {
    int sizes[] = {1, 2, 5};
    for (unsigned k = 0; k < (sizeof sizes / sizeof sizes[0]); k++) {
        hr_threadpool *pool = hr_threadpool_create(sizes[k]);
        CHECK(pool != NULL);
        if (!pool) continue;
        CHECK_EQ_INT(hr_threadpool_size(pool), sizes[k]);
        run_pool(pool, sizes[k]);
        nest ns = {.pool = pool};
        atomic_init(&ns.inner_items, 0);
        atomic_init(&ns.bad_tid, 0);
        hr_parallel_for(pool, 100, 1, outer, &ns);
        CHECK_EQ_INT(atomic_load(&ns.inner_items), 1000);
        CHECK_EQ_INT(atomic_load(&ns.bad_tid), 0);

        static float v[100000];
        for (int i = 0; i < 100000; i++) v[i] = (float)(i % 97) - 40.0f;
        red r = {.v = v};
        for (int rep = 0; rep < 50; rep++) hr_parallel_for(pool, 100000, 1000, reduce, &r);
        double s = 0, want = 0;
        for (int t = 0; t < 8; t++) s += r.partial[t][0];
        for (int i = 0; i < 100000; i++) want += v[i];
        CHECK_NEAR(s, 50 * want, 0); /* integers: exact */
        hr_threadpool_free(pool);
    }
    run_pool(NULL, 1);
    hr_threadpool *def = hr_threadpool_create(0);
    CHECK(def != NULL && hr_threadpool_size(def) >= 1);
    hr_threadpool_free(def);
    return test_report("threadpool");
}
