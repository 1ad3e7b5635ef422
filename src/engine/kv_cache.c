/* Block pool + prefix cache. The free list is a doubly linked list through
 * the block array: allocation pops the head, a freed unhashed block goes to
 * the head (worthless, reuse first), a freed hashed block to the tail (LRU:
 * kept as long as possible). A free hashed block that a new sequence hits is
 * unlinked from the middle of the list. */
#include "engine/kv_cache.h"

#include <string.h>

/* ---- hashing ----------------------------------------------------------------
 * 64-bit chained hash: start from the parent's hash (the per-model salt for
 * the first block), fold in each token with a multiply-rotate step and finish
 * with the murmur3 fmix64 avalanche. Not cryptographic: a hit is confirmed by
 * comparing the parent hash and the stored token ids, so a collision can cost
 * a cache miss but never a wrong KV. */
static uint64_t fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t kv_block_hash(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = parent ^ 0x243f6a8885a308d3ULL;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)tokens[i] * 0x9e3779b97f4a7c15ULL;
        h = ((h << 31) | (h >> 33)) * 0xbf58476d1ce4e5b9ULL;
    }
    return fmix64(h ^ (uint64_t)n);
}

/* ---- free list ---- */
static void free_unlink(kv_cache *kv, int32_t b) {
    kv_block *k = &kv->blocks[b];
    HR_ASSERT(k->in_free);
    if (k->prev >= 0)
        kv->blocks[k->prev].next = k->next;
    else
        kv->free_head = k->next;
    if (k->next >= 0)
        kv->blocks[k->next].prev = k->prev;
    else
        kv->free_tail = k->prev;
    k->prev = k->next = -1;
    k->in_free = false;
    kv->n_free--;
}

static void free_push(kv_cache *kv, int32_t b, bool at_tail) {
    kv_block *k = &kv->blocks[b];
    HR_ASSERT(!k->in_free && k->ref == 0);
    k->in_free = true;
    if (at_tail) {
        k->prev = kv->free_tail;
        k->next = -1;
        if (kv->free_tail >= 0)
            kv->blocks[kv->free_tail].next = b;
        else
            kv->free_head = b;
        kv->free_tail = b;
    } else {
        k->next = kv->free_head;
        k->prev = -1;
        if (kv->free_head >= 0)
            kv->blocks[kv->free_head].prev = b;
        else
            kv->free_tail = b;
        kv->free_head = b;
    }
    kv->n_free++;
}

/* ---- hash map (chained through kv_block.hnext) ---- */
static int32_t map_lookup(const kv_cache *kv, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    int bs = kv->block_size;
    for (int32_t b = kv->buckets[hash & (uint64_t)(kv->n_buckets - 1)]; b >= 0; b = kv->blocks[b].hnext) {
        const kv_block *k = &kv->blocks[b];
        if (k->hash == hash && k->parent == parent &&
            memcmp(&kv->block_tokens[(size_t)b * bs], tokens, (size_t)bs * sizeof *tokens) == 0)
            return b;
    }
    return -1;
}

static void map_remove(kv_cache *kv, int32_t b) {
    kv_block *k = &kv->blocks[b];
    HR_ASSERT(k->hashed);
    int32_t *pp = &kv->buckets[k->hash & (uint64_t)(kv->n_buckets - 1)];
    while (*pp != b) {
        HR_ASSERT(*pp >= 0);
        pp = &kv->blocks[*pp].hnext;
    }
    *pp = k->hnext;
    k->hnext = -1;
    k->hashed = false;
}

int kv_cache_init(kv_cache *kv, int n_blocks, int block_size, bool prefix_caching, uint64_t salt, hr_err *err) {
    memset(kv, 0, sizeof *kv);
    if (n_blocks <= 0 || block_size <= 0)
        return hr_err_set(err, HR_EINVAL, "kv cache: bad size %d blocks x %d tokens", n_blocks, block_size);
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->prefix_caching = prefix_caching;
    kv->salt = salt;
    kv->n_buckets = 1;
    while (kv->n_buckets < 2 * n_blocks) kv->n_buckets *= 2;
    kv->blocks = malloc((size_t)n_blocks * sizeof *kv->blocks);
    kv->buckets = malloc((size_t)kv->n_buckets * sizeof *kv->buckets);
    kv->block_tokens = prefix_caching ? malloc((size_t)n_blocks * block_size * sizeof(int32_t)) : NULL;
    if (!kv->blocks || !kv->buckets || (prefix_caching && !kv->block_tokens)) {
        kv_cache_destroy(kv);
        return hr_err_set(err, HR_ENOMEM, "kv cache: out of memory for %d blocks", n_blocks);
    }
    for (int i = 0; i < kv->n_buckets; i++) kv->buckets[i] = -1;
    kv->free_head = kv->free_tail = -1;
    for (int i = 0; i < n_blocks; i++) {
        kv->blocks[i] = (kv_block){.ref = 0, .prev = -1, .next = -1, .hnext = -1};
        free_push(kv, i, true);
    }
    return HR_OK;
}

void kv_cache_destroy(kv_cache *kv) {
    free(kv->blocks);
    free(kv->buckets);
    free(kv->block_tokens);
    memset(kv, 0, sizeof *kv);
}

int kv_cache_find_prefix(const kv_cache *kv, const int32_t *tokens, int n, int32_t *out, int max_out) {
    if (!kv->prefix_caching || n <= 1) return 0;
    int bs = kv->block_size, max_blocks = (n - 1) / bs; /* keep >= 1 token to compute */
    if (max_blocks > max_out) max_blocks = max_out;
    uint64_t parent = kv->salt;
    int i = 0;
    for (; i < max_blocks; i++) {
        const int32_t *t = tokens + (size_t)i * bs;
        uint64_t h = kv_block_hash(parent, t, bs);
        int32_t b = map_lookup(kv, h, parent, t);
        if (b < 0) break;
        out[i] = b;
        parent = h;
    }
    return i;
}

static int seq_reserve(kv_seq *seq, int n) {
    if (n <= seq->cap) return HR_OK;
    int cap = seq->cap ? seq->cap : 8;
    while (cap < n) cap *= 2;
    int32_t *nb = realloc(seq->blocks, (size_t)cap * sizeof *nb);
    if (!nb) return HR_ENOMEM;
    seq->blocks = nb;
    seq->cap = cap;
    return HR_OK;
}

int kv_cache_allocate(kv_cache *kv, kv_seq *seq, int n_total, const int32_t *prefix, int n_prefix) {
    if (seq->n_blocks > 0) n_prefix = 0;
    int need = HR_CDIV(n_total, kv->block_size) - seq->n_blocks - n_prefix;
    if (need < 0) need = 0;
    /* Cached prefix blocks that sit in the free list stop being free. */
    int prefix_free = 0;
    for (int i = 0; i < n_prefix; i++) prefix_free += kv->blocks[prefix[i]].ref == 0;
    if (need > kv->n_free - prefix_free) return HR_EFULL;
    if (seq_reserve(seq, seq->n_blocks + n_prefix + need) != HR_OK) return HR_ENOMEM;

    for (int i = 0; i < n_prefix; i++) {
        kv_block *k = &kv->blocks[prefix[i]];
        HR_ASSERT(k->hashed);
        if (k->ref++ == 0) free_unlink(kv, prefix[i]);
        seq->blocks[seq->n_blocks++] = prefix[i];
    }
    if (n_prefix > 0) {
        seq->n_hashed = n_prefix;
        seq->last_hash = kv->blocks[prefix[n_prefix - 1]].hash;
    }
    for (int i = 0; i < need; i++) {
        int32_t b = kv->free_head;
        HR_ASSERT(b >= 0);
        free_unlink(kv, b);
        if (kv->blocks[b].hashed) map_remove(kv, b); /* evict */
        kv->blocks[b].ref = 1;
        seq->blocks[seq->n_blocks++] = b;
    }
    return HR_OK;
}

void kv_cache_commit(kv_cache *kv, kv_seq *seq, const int32_t *tokens, int n_computed) {
    if (!kv->prefix_caching) return;
    int bs = kv->block_size, full = n_computed / bs;
    if (full > seq->n_blocks) full = seq->n_blocks;
    if (seq->n_hashed == 0) seq->last_hash = kv->salt;
    for (int i = seq->n_hashed; i < full; i++) {
        const int32_t *t = tokens + (size_t)i * bs;
        uint64_t parent = seq->last_hash, h = kv_block_hash(parent, t, bs);
        int32_t b = seq->blocks[i];
        kv_block *k = &kv->blocks[b];
        if (!k->hashed && map_lookup(kv, h, parent, t) < 0) {
            k->hash = h;
            k->parent = parent;
            k->hashed = true;
            memcpy(&kv->block_tokens[(size_t)b * bs], t, (size_t)bs * sizeof *t);
            int32_t *head = &kv->buckets[h & (uint64_t)(kv->n_buckets - 1)];
            k->hnext = *head;
            *head = b;
        }
        seq->last_hash = h;
        seq->n_hashed = i + 1;
    }
}

void kv_cache_forget(kv_cache *kv, kv_seq *seq, int from) {
    if (from < 0) from = 0;
    for (int i = from; i < seq->n_blocks; i++)
        if (kv->blocks[seq->blocks[i]].hashed) map_remove(kv, seq->blocks[i]);
    /* Rehash the chain from the start on the next commit (the parent hash
     * of block `from` may belong to an unregistered duplicate). */
    if (seq->n_hashed > from) {
        seq->n_hashed = 0;
        seq->last_hash = 0;
    }
}

void kv_cache_free_seq(kv_cache *kv, kv_seq *seq) {
    /* Reverse order: the tail of a sequence is the least likely to be shared,
     * so it is placed nearer the eviction end. */
    for (int i = seq->n_blocks - 1; i >= 0; i--) {
        int32_t b = seq->blocks[i];
        kv_block *k = &kv->blocks[b];
        HR_ASSERT(k->ref > 0);
        if (--k->ref == 0) free_push(kv, b, k->hashed);
    }
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->last_hash = 0;
}

void kv_seq_release(kv_cache *kv, kv_seq *seq) {
    if (kv) kv_cache_free_seq(kv, seq);
    free(seq->blocks);
    memset(seq, 0, sizeof *seq);
}

int kv_cache_reset_prefix(kv_cache *kv) {
    int n = 0;
    for (int32_t b = 0; b < kv->n_blocks; b++)
        if (kv->blocks[b].ref == 0 && kv->blocks[b].hashed) {
            map_remove(kv, b);
            n++;
        }
    return n;
}

const char *kv_cache_check(const kv_cache *kv) {
    int n = 0;
    int32_t prev = -1;
    for (int32_t b = kv->free_head; b >= 0; b = kv->blocks[b].next) {
        const kv_block *k = &kv->blocks[b];
        if (!k->in_free) return "block in the free list not marked free";
        if (k->ref != 0) return "free block with a non-zero ref count";
        if (k->prev != prev) return "free list back link broken";
        prev = b;
        if (++n > kv->n_blocks) return "free list cycle";
    }
    if (prev != kv->free_tail) return "free list tail wrong";
    if (n != kv->n_free) return "n_free differs from the free list length";
    int hashed = 0;
    for (int b = 0; b < kv->n_blocks; b++) {
        const kv_block *k = &kv->blocks[b];
        if (k->ref < 0) return "negative ref count";
        if (k->ref == 0 && !k->in_free) return "unreferenced block not in the free list";
        if (k->ref > 0 && k->in_free) return "referenced block in the free list";
        hashed += k->hashed;
    }
    int mapped = 0;
    for (int i = 0; i < kv->n_buckets; i++)
        for (int32_t b = kv->buckets[i]; b >= 0; b = kv->blocks[b].hnext) {
            if (!kv->blocks[b].hashed) return "unhashed block in the prefix map";
            if ((kv->blocks[b].hash & (uint64_t)(kv->n_buckets - 1)) != (uint64_t)i) return "block in wrong bucket";
            if (++mapped > kv->n_blocks) return "prefix map cycle";
        }
    if (mapped != hashed) return "hashed blocks differ from the prefix map";
    return NULL;
}
