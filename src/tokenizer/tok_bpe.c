/* BPE merging of one pre-token: symbols in a doubly linked list, candidate
 * pairs in a binary min-heap ordered by (rank, position), so a word of n
 * symbols costs O(n log n) (HF tokenizers' word.rs and tiktoken both pick the
 * lowest rank, leftmost first; that order is what makes the ids exact).
 * Stale heap entries are detected by the symbol lengths they were made with. */
#include <string.h>

#include "tokenizer/tok_internal.h"

typedef struct cand {
    int32_t rank;
    int32_t pos; /* left symbol index */
    int32_t merged;
    uint32_t llen, rlen;
} cand;

typedef struct word {
    int32_t *id, *prev, *next;
    uint32_t *start, *len;
    int n;
    cand *heap;
    int hn, hcap;
} word;

static bool cand_less(const cand *a, const cand *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }

static void heap_push(word *w, cand c) {
    if (w->hn == w->hcap) {
        w->hcap = w->hcap ? w->hcap * 2 : 64;
        w->heap = hr_xrealloc(w->heap, (size_t)w->hcap * sizeof(cand));
    }
    int i = w->hn++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static cand heap_pop(word *w) {
    cand top = w->heap[0], last = w->heap[--w->hn];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, m = i;
        if (l >= w->hn) break;
        if (l + 1 < w->hn && cand_less(&w->heap[l + 1], &w->heap[l])) l++;
        if (!cand_less(&w->heap[l], &last)) break;
        w->heap[i] = w->heap[l];
        i = l;
        (void)m;
    }
    if (w->hn) w->heap[i] = last;
    return top;
}

/* Rank of merging symbols a and b (adjacent): HF looks the id pair up in the
 * merges table; tiktoken ranks the concatenated bytes, which are contiguous
 * in the word, so the vocab map answers directly. */
static bool pair_rank(const hr_tokenizer *t, const char *s, const word *w, int a, int b, int32_t *rank,
                      int32_t *merged) {
    if (t->model == TOK_MODEL_TIKTOKEN) {
        int32_t r = tok_smap_get(&t->vocab, s + w->start[a], w->len[a] + w->len[b]);
        if (r < 0) return false;
        *rank = *merged = r;
        return true;
    }
    return tok_pmap_get(&t->merges, w->id[a], w->id[b], rank, merged);
}

static void add_cand(const hr_tokenizer *t, const char *s, word *w, int a) {
    int b = w->next[a];
    if (a < 0 || b < 0) return;
    cand c;
    if (!pair_rank(t, s, w, a, b, &c.rank, &c.merged)) return;
    c.pos = a;
    c.llen = w->len[a];
    c.rlen = w->len[b];
    heap_push(w, c);
}

static void push_sym(word *w, int32_t id, uint32_t start, uint32_t len) {
    w->id[w->n] = id;
    w->start[w->n] = start;
    w->len[w->n] = len;
    w->n++;
}

void tok_bpe_word(const hr_tokenizer *t, const char *s, size_t n, tok_ids *out) {
    if (n == 0) return;
    if (t->ignore_merges || t->model == TOK_MODEL_TIKTOKEN) {
        int32_t id = tok_smap_get(&t->vocab, s, n);
        if (id >= 0) {
            tok_ids_push(out, id);
            return;
        }
    }
    word w = {0};
    size_t cap = n + 1;
    w.id = hr_xmalloc(cap * sizeof(int32_t));
    w.prev = hr_xmalloc(cap * sizeof(int32_t));
    w.next = hr_xmalloc(cap * sizeof(int32_t));
    w.start = hr_xmalloc(cap * sizeof(uint32_t));
    w.len = hr_xmalloc(cap * sizeof(uint32_t));

    if (t->model == TOK_MODEL_TIKTOKEN) {
        for (size_t i = 0; i < n; i++) push_sym(&w, t->byte_id[(unsigned char)s[i]], (uint32_t)i, 1);
    } else {
        /* Initial symbols are characters; unknown ones fall back to <0xNN>
         * byte tokens or the unk token (fused when fuse_unk), as HF's BPE. */
        bool last_unk = false;
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t l = tok_utf8_decode(s + i, n - i, &cp);
            int32_t id = tok_smap_get(&t->vocab, s + i, l);
            if (id >= 0) {
                push_sym(&w, id, (uint32_t)i, (uint32_t)l);
                last_unk = false;
            } else {
                bool done = false;
                if (t->byte_fallback) {
                    bool all = true;
                    for (size_t k = 0; k < l; k++) all = all && t->byte_tok[(unsigned char)s[i + k]] >= 0;
                    if (all) {
                        for (size_t k = 0; k < l; k++)
                            push_sym(&w, t->byte_tok[(unsigned char)s[i + k]], (uint32_t)(i + k), 1);
                        done = true;
                        last_unk = false;
                    }
                }
                if (!done && t->unk_id >= 0) {
                    if (t->fuse_unk && last_unk)
                        w.len[w.n - 1] += (uint32_t)l;
                    else
                        push_sym(&w, t->unk_id, (uint32_t)i, (uint32_t)l);
                    last_unk = true;
                }
            }
            i += l;
        }
    }
    for (int i = 0; i < w.n; i++) {
        w.prev[i] = i - 1;
        w.next[i] = i + 1 < w.n ? i + 1 : -1;
    }
    for (int i = 0; i + 1 < w.n; i++) add_cand(t, s, &w, i);
    while (w.hn) {
        cand c = heap_pop(&w);
        int a = c.pos, b = w.next[a];
        if (w.len[a] != c.llen || b < 0 || w.len[b] != c.rlen) continue; /* stale */
        if (w.len[a] == 0) continue;
        w.id[a] = c.merged;
        w.len[a] += w.len[b];
        w.len[b] = 0;
        w.next[a] = w.next[b];
        if (w.next[b] >= 0) w.prev[w.next[b]] = a;
        if (w.prev[a] >= 0) add_cand(t, s, &w, w.prev[a]);
        add_cand(t, s, &w, a);
    }
    for (int i = w.n ? 0 : -1; i >= 0; i = w.next[i])
        if (w.id[i] >= 0) tok_ids_push(out, w.id[i]);
    free(w.id);
    free(w.prev);
    free(w.next);
    free(w.start);
    free(w.len);
    free(w.heap);
}
