/* Paged KV block pool with prefix caching (vLLM v1 block pool + KV cache
 * manager). Owns: the block array, reference counts, the free list in
 * eviction order (LRU head first), the prefix-hash map, query/hit counters.
 * Sequences own their block tables (kv_seq); this module only moves blocks
 * between the pool and them. It answers "no space" (HR_EFULL) and never
 * preempts: that is the scheduler's decision. Knows nothing of requests,
 * sampling or the model; the KV memory itself lives in the model. */
#ifndef HEARTH_ENGINE_KV_CACHE_H
#define HEARTH_ENGINE_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

typedef struct kv_block {
    int32_t ref;        /* sequences holding it; 0 = in the free list */
    int32_t prev, next; /* free-list links (-1 = none) */
    int32_t hnext;      /* next block in its hash bucket (-1 = none) */
    bool hashed;        /* registered in the prefix map under `hash` */
    bool in_free;
    uint64_t hash;   /* chained: hash(parent hash, token ids of this block) */
    uint64_t parent; /* parent hash, compared on lookup with the tokens */
} kv_block;

typedef struct kv_cache {
    int n_blocks, block_size;
    bool prefix_caching;
    uint64_t salt; /* per model: blocks of different models never match */
    kv_block *blocks;
    int32_t *block_tokens; /* [n_blocks * block_size]: ids of hashed blocks, to rule out collisions */
    int32_t free_head, free_tail;
    int n_free;
    int32_t *buckets;       /* [n_buckets] head block per bucket, -1 = empty */
    int n_buckets;          /* power of two */
    uint64_t queries, hits; /* prefix-cache counters, in prompt tokens */
} kv_cache;

/* A sequence's block table and its prefix-hash progress. Zero-initialise. */
typedef struct kv_seq {
    int32_t *blocks;
    int n_blocks, cap;
    int n_hashed;       /* leading full blocks already hashed */
    uint64_t last_hash; /* hash of block n_hashed-1 (the salt when 0) */
} kv_seq;

int kv_cache_init(kv_cache *kv, int n_blocks, int block_size, bool prefix_caching, uint64_t salt, hr_err *err);
void kv_cache_destroy(kv_cache *kv);

/* Longest cached prefix of tokens[0..n) in whole blocks, never all n tokens
 * (the last token must be computed to get logits). Writes up to max_out block
 * ids to out and returns their count; changes nothing. */
int kv_cache_find_prefix(const kv_cache *kv, const int32_t *tokens, int n, int32_t *out, int max_out);

/* Makes seq cover n_total tokens: first attaches the n_prefix cached blocks
 * from kv_cache_find_prefix (only when seq has no blocks yet), then takes new
 * blocks from the head of the free list (evicting their hashes).
 * HR_EFULL, with nothing changed, when the free blocks do not suffice. */
int kv_cache_allocate(kv_cache *kv, kv_seq *seq, int n_total, const int32_t *prefix, int n_prefix);

/* Registers the full blocks of tokens[0..n_computed) not yet hashed in the
 * prefix map: call once their KV is written or scheduled to be written by
 * the step about to run (kv_cache_forget undoes it if that step fails). A
 * block whose hash is already mapped to another block stays unregistered
 * (a duplicate). */
void kv_cache_commit(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int n_computed);

/* Unregisters the hashes of seq's blocks from index `from` on (their KV
 * was never written); the next commit rehashes seq's chain. */
void kv_cache_forget(kv_cache *kv, kv_seq *seq, int from);

/* Returns seq's blocks to the pool (hashed ones stay cached, evicted last;
 * a sequence's later blocks are evicted before its earlier ones) and empties
 * the table (its array is kept for reuse). */
void kv_cache_free_seq(kv_cache *kv, kv_seq *seq);
/* Frees seq's table array too. */
void kv_seq_release(kv_cache *kv, kv_seq *seq);
/* Forgets every cached block no sequence holds (vLLM's reset_prefix_cache):
 * they stay free but no later prompt can match them. Blocks in use keep
 * their hashes. Returns the number forgotten; the query/hit counters are
 * left alone. */
int kv_cache_reset_prefix(kv_cache *kv);

static inline int kv_cache_used(const kv_cache *kv) { return kv->n_blocks - kv->n_free; }
static inline double kv_cache_usage(const kv_cache *kv) {
    return kv->n_blocks ? (double)(kv->n_blocks - kv->n_free) / kv->n_blocks : 0.0;
}

/* The chained block hash (exposed for tests). */
uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int n);

/* Checks the pool's own invariants (free list vs ref counts, hash map).
 * Returns NULL when consistent, else a static description. */
const char *kv_cache_check(const kv_cache *kv);

#endif
