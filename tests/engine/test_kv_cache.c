/* Block pool + prefix cache: allocation/free accounting, "no space" leaves
 * everything unchanged, prefix hits in whole blocks (never the whole prompt),
 * salt separation, duplicates, and the LRU eviction order of cached blocks. */
#include <string.h>

#include "engine/kv_cache.h"
#include "test.h"

static void fill(int32_t *t, int n, int32_t base) {
    for (int i = 0; i < n; i++) t[i] = base + i * 7 % 13;
}

static void test_alloc_free(void) {
    kv_cache kv;
    hr_err err;
    CHECK_EQ_INT(kv_cache_init(&kv, 10, 4, true, 1, &err), HR_OK);
    kv_seq a = {0}, b = {0};
    CHECK_EQ_INT(kv_cache_allocate(&kv, &a, 13, NULL, 0), HR_OK); /* 4 blocks */
    CHECK_EQ_INT(a.n_blocks, 4);
    CHECK_EQ_INT(kv_cache_allocate(&kv, &a, 16, NULL, 0), HR_OK); /* still 4 */
    CHECK_EQ_INT(a.n_blocks, 4);
    CHECK_EQ_INT(kv.n_free, 6);
    CHECK_EQ_INT(kv_cache_allocate(&kv, &b, 28, NULL, 0), HR_EFULL); /* needs 7 */
    CHECK_EQ_INT(b.n_blocks, 0);
    CHECK_EQ_INT(kv.n_free, 6);
    CHECK_EQ_INT(kv_cache_allocate(&kv, &b, 24, NULL, 0), HR_OK);
    CHECK_EQ_INT(kv.n_free, 0);
    CHECK_NEAR(kv_cache_usage(&kv), 1.0, 0);
    CHECK(kv_cache_check(&kv) == NULL);
    /* all distinct */
    int seen[10] = {0};
    for (int i = 0; i < a.n_blocks; i++) seen[a.blocks[i]]++;
    for (int i = 0; i < b.n_blocks; i++) seen[b.blocks[i]]++;
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(seen[i], 1);
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    CHECK_EQ_INT(kv.n_free, 10);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_cache_destroy(&kv);
}

static void test_prefix_hits(void) {
    kv_cache kv;
    hr_err err;
    kv_cache_init(&kv, 32, 4, true, 42, &err);
    int32_t p[41], q[41], out[16];
    fill(p, 41, 100);
    memcpy(q, p, sizeof p);
    kv_seq a = {0};
    /* nothing cached yet */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 40, out, 16), 0);
    kv_cache_allocate(&kv, &a, 40, NULL, 0);
    kv_cache_commit(&kv, &a, p, 22); /* only 5 full blocks computed so far */
    CHECK_EQ_INT(a.n_hashed, 5);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 40, out, 16), 5);
    kv_cache_commit(&kv, &a, p, 40);
    CHECK_EQ_INT(a.n_hashed, 10);
    int32_t ablocks[10];
    memcpy(ablocks, a.blocks, sizeof ablocks);
    kv_cache_free_seq(&kv, &a);
    CHECK_EQ_INT(kv.n_free, 32);
    /* same 40-token prompt: 9 blocks (the last token must be computed) */
    int n = kv_cache_find_prefix(&kv, p, 40, out, 16);
    CHECK_EQ_INT(n, 9);
    for (int i = 0; i < n; i++) CHECK_EQ_INT(out[i], ablocks[i]);
    /* 41 tokens: all 10 */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 41, out, 16), 10);
    /* max_out caps */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 41, out, 3), 3);
    /* a change in block 6 stops the chain there */
    q[25] += 1;
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, q, 41, out, 16), 6);
    /* a change in the first token: nothing */
    q[25] -= 1;
    q[0] += 1;
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, q, 41, out, 16), 0);
    /* attach the cached prefix: blocks leave the free list, shared refs count */
    kv_seq b = {0}, c = {0};
    n = kv_cache_find_prefix(&kv, p, 41, out, 16);
    CHECK_EQ_INT(kv_cache_allocate(&kv, &b, 41, out, n), HR_OK);
    CHECK_EQ_INT(b.n_blocks, 11);
    CHECK_EQ_INT(kv.n_free, 32 - 11);
    n = kv_cache_find_prefix(&kv, p, 30, out, 16);
    CHECK_EQ_INT(n, 7);
    CHECK_EQ_INT(kv_cache_allocate(&kv, &c, 30, out, n), HR_OK);
    CHECK_EQ_INT(c.n_blocks, 8);
    CHECK_EQ_INT(kv.blocks[out[0]].ref, 2);
    CHECK_EQ_INT(kv.n_free, 32 - 12);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    kv_seq_release(&kv, &c);
    CHECK_EQ_INT(kv.n_free, 32);
    kv_cache_destroy(&kv);

    /* another salt (model) never matches */
    kv_cache kv2;
    kv_cache_init(&kv2, 32, 4, true, 43, &err);
    kv_seq d = {0};
    kv_cache_allocate(&kv2, &d, 40, NULL, 0);
    kv_cache_commit(&kv2, &d, p, 40);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv2, p, 41, out, 16), 10);
    CHECK(kv_block_hash(42, p, 4) != kv_block_hash(43, p, 4));
    kv_seq_release(&kv2, &d);
    kv_cache_destroy(&kv2);

    /* prefix caching off: no hits */
    kv_cache kv3;
    kv_cache_init(&kv3, 32, 4, false, 42, &err);
    kv_seq e = {0};
    kv_cache_allocate(&kv3, &e, 40, NULL, 0);
    kv_cache_commit(&kv3, &e, p, 40);
    kv_cache_free_seq(&kv3, &e);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv3, p, 41, out, 16), 0);
    kv_seq_release(&kv3, &e);
    kv_cache_destroy(&kv3);
}

/* Two sequences computing the same prompt at once: the second copy is a
 * duplicate and stays unregistered; freeing both keeps one cached copy. */
static void test_duplicates(void) {
    kv_cache kv;
    hr_err err;
    kv_cache_init(&kv, 16, 4, true, 7, &err);
    int32_t p[12], out[4];
    fill(p, 12, 5);
    kv_seq a = {0}, b = {0};
    kv_cache_allocate(&kv, &a, 12, NULL, 0);
    kv_cache_allocate(&kv, &b, 12, NULL, 0);
    kv_cache_commit(&kv, &a, p, 12);
    kv_cache_commit(&kv, &b, p, 12);
    int hashed = 0;
    for (int i = 0; i < 16; i++) hashed += kv.blocks[i].hashed;
    CHECK_EQ_INT(hashed, 3);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 12, out, 4), 2);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_cache_destroy(&kv);
}

/* LRU: freed cached blocks are evicted oldest first, a sequence's tail before
 * its head; unhashed blocks are reused before any cached one; a hit refreshes. */
static void test_lru(void) {
    kv_cache kv;
    hr_err err;
    kv_cache_init(&kv, 6, 2, true, 9, &err);
    int32_t A[5] = {1, 2, 3, 4, 99}, B[5] = {5, 6, 7, 8, 99}, out[4];
    kv_seq a = {0}, b = {0}, x = {0}, c = {0};
    kv_cache_allocate(&kv, &a, 4, NULL, 0);
    kv_cache_commit(&kv, &a, A, 4);
    kv_cache_allocate(&kv, &b, 4, NULL, 0);
    kv_cache_commit(&kv, &b, B, 4);
    kv_cache_allocate(&kv, &x, 3, NULL, 0); /* 2 blocks, only one full and uncommitted */
    kv_cache_free_seq(&kv, &a);
    kv_cache_free_seq(&kv, &b);
    kv_cache_free_seq(&kv, &x); /* unhashed: to the head */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, A, 5, out, 4), 2);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, B, 5, out, 4), 2);
    /* two blocks come from x, no eviction */
    kv_cache_allocate(&kv, &c, 4, NULL, 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, A, 5, out, 4), 2);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, B, 5, out, 4), 2);
    /* next eviction: A's last block */
    kv_cache_allocate(&kv, &c, 6, NULL, 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, A, 5, out, 4), 1);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, B, 5, out, 4), 2);
    /* touch B's first block through a hit, release: it becomes most recent */
    kv_seq d = {0};
    int n = kv_cache_find_prefix(&kv, B, 3, out, 4);
    CHECK_EQ_INT(n, 1);
    kv_cache_allocate(&kv, &d, 2, out, n);
    kv_cache_free_seq(&kv, &d);
    /* free order now: A0, B1, B0 -> evict A0 then B1 */
    kv_cache_allocate(&kv, &c, 8, NULL, 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, A, 5, out, 4), 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, B, 5, out, 4), 2);
    kv_cache_allocate(&kv, &c, 10, NULL, 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, B, 5, out, 4), 1);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_seq_release(&kv, &c);
    kv_seq_release(&kv, &d);
    kv_seq_release(&kv, &x);
    kv_seq_release(&kv, &a);
    kv_seq_release(&kv, &b);
    CHECK_EQ_INT(kv.n_free, 6);
    kv_cache_destroy(&kv);
}

/* A failed step's registrations are dropped; the chain is rebuilt after. */
static void test_forget(void) {
    kv_cache kv;
    hr_err err;
    kv_cache_init(&kv, 16, 4, true, 3, &err);
    int32_t p[17], out[8];
    fill(p, 17, 40);
    kv_seq a = {0};
    kv_cache_allocate(&kv, &a, 16, NULL, 0);
    kv_cache_commit(&kv, &a, p, 16);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 17, out, 8), 4);
    kv_cache_forget(&kv, &a, 2);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 17, out, 8), 2);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_cache_commit(&kv, &a, p, 16); /* re-registers blocks 2, 3 */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 17, out, 8), 4);
    kv_cache_forget(&kv, &a, 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 17, out, 8), 0);
    kv_seq_release(&kv, &a);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_cache_destroy(&kv);
}

/* reset_prefix forgets the cached free blocks and keeps the hashes of
 * blocks a sequence still holds */
static void test_reset_prefix(void) {
    kv_cache kv;
    hr_err err;
    kv_cache_init(&kv, 32, 4, true, 42, &err);
    int32_t p[41], q[41], out[16];
    fill(p, 41, 100);
    fill(q, 41, 300);
    kv_seq a = {0}, b = {0};
    kv_cache_allocate(&kv, &a, 40, NULL, 0);
    kv_cache_commit(&kv, &a, p, 40);
    kv_cache_allocate(&kv, &b, 40, NULL, 0);
    kv_cache_commit(&kv, &b, q, 40);
    kv_cache_free_seq(&kv, &a); /* a's 10 blocks: free and cached; b's: held */
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 41, out, 16), 10);
    CHECK_EQ_INT(kv_cache_reset_prefix(&kv), 10);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 41, out, 16), 0);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, q, 41, out, 16), 10);
    CHECK_EQ_INT(kv.n_free, 32 - 10);
    CHECK(kv_cache_check(&kv) == NULL);
    CHECK_EQ_INT(kv_cache_reset_prefix(&kv), 0);
    /* the forgotten blocks are reused like any free block, b's still match after it ends */
    kv_seq c = {0};
    CHECK_EQ_INT(kv_cache_allocate(&kv, &c, 88, NULL, 0), HR_OK);
    kv_cache_commit(&kv, &c, p, 40);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, p, 41, out, 16), 10);
    kv_seq_release(&kv, &b);
    CHECK_EQ_INT(kv_cache_find_prefix(&kv, q, 41, out, 16), 10);
    CHECK_EQ_INT(kv_cache_reset_prefix(&kv), 10);
    CHECK(kv_cache_check(&kv) == NULL);
    kv_seq_release(&kv, &c);
    kv_seq_release(NULL, &a); /* its blocks went back above; the table array is left */
    kv_cache_destroy(&kv);
}

int main(void) {
    test_reset_prefix();
    test_forget();
    test_alloc_free();
    test_prefix_hits();
    test_duplicates();
    test_lru();
    return test_report("engine/test_kv_cache");
}
