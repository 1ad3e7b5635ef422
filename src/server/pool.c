/* Per-request arena: a chain of blocks, freed in one go with the request, so
 * a parser never has to track (or leak) the small strings it keeps. */
#include <string.h>

#include "server/server.h"

#define POOL_BLOCK 4096

typedef struct pool_block {
    struct pool_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} pool_block;

struct srv_pool {
    pool_block *head;
};

srv_pool *srv_pool_new(void) { return calloc(1, sizeof(srv_pool)); }

void srv_pool_free(srv_pool *p) {
    if (!p) return;
    for (pool_block *b = p->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    free(p);
}

void *srv_pool_alloc(srv_pool *p, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    pool_block *b = p->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > POOL_BLOCK ? n : POOL_BLOCK;
        b = malloc(sizeof(pool_block) + cap);
        if (!b) return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = p->head;
        p->head = b;
    }
    void *r = b->data + b->used;
    b->used += n;
    return r;
}

char *srv_pool_strndup(srv_pool *p, const char *s, size_t n) {
    char *d = srv_pool_alloc(p, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}
