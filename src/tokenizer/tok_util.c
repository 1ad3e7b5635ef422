/* Small containers and UTF-8 helpers for the tokenizer: growable buffers,
 * the bytes->id and pair->rank hash maps, lossy UTF-8 sanitizing, and the
 * GPT-2 byte <-> code point table. */
#include <string.h>

#include "tokenizer/tok_internal.h"

void tok_buf_put(tok_buf *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 64;
        while (c < b->len + n + 1) c *= 2;
        b->p = hr_xrealloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void tok_buf_putc(tok_buf *b, char c) { tok_buf_put(b, &c, 1); }

void tok_buf_free(tok_buf *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void tok_ids_push(tok_ids *v, int32_t id) {
    if (v->len == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->p = hr_xrealloc(v->p, v->cap * sizeof(int32_t));
    }
    v->p[v->len++] = id;
}

void tok_pieces_init(tok_pieces *p) {
    memset(p, 0, sizeof(*p));
    p->cap = 16;
    p->off = hr_xmalloc((p->cap + 1) * sizeof(size_t));
    p->flag = hr_xmalloc(p->cap);
    p->fixed_id = hr_xmalloc(p->cap * sizeof(int32_t));
    p->off[0] = 0;
    tok_buf_put(&p->buf, "", 0);
}

void tok_pieces_free(tok_pieces *p) {
    tok_buf_free(&p->buf);
    free(p->off);
    free(p->flag);
    free(p->fixed_id);
    memset(p, 0, sizeof(*p));
}

void tok_pieces_clear(tok_pieces *p) {
    p->n = 0;
    p->buf.len = 0;
    p->off[0] = 0;
}

void tok_pieces_add(tok_pieces *p, const char *s, size_t n, int32_t id) {
    if (p->n == p->cap) {
        p->cap *= 2;
        p->off = hr_xrealloc(p->off, (p->cap + 1) * sizeof(size_t));
        p->flag = hr_xrealloc(p->flag, p->cap);
        p->fixed_id = hr_xrealloc(p->fixed_id, p->cap * sizeof(int32_t));
    }
    tok_buf_put(&p->buf, s, n);
    p->flag[p->n] = id >= 0;
    p->fixed_id[p->n] = id;
    p->n++;
    p->off[p->n] = p->buf.len;
}

/* FNV-1a with a final mix: keys are short (tokens, pair concatenations), so
 * a byte loop beats word-at-a-time hashing with its variable-length tail. */
static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

void tok_smap_init(tok_smap *m, size_t expect) {
    m->cap = pow2_at_least(expect * 2 + 16);
    m->n = 0;
    m->slot = hr_xcalloc(m->cap, sizeof(*m->slot));
}

void tok_smap_free(tok_smap *m) {
    free(m->slot);
    memset(m, 0, sizeof(*m));
}

static void smap_grow(tok_smap *m) {
    tok_smap n;
    tok_smap_init(&n, m->cap);
    for (size_t i = 0; i < m->cap; i++)
        if (m->slot[i].key) tok_smap_put(&n, m->slot[i].key, m->slot[i].klen, m->slot[i].val);
    tok_smap_free(m);
    *m = n;
}

void tok_smap_put(tok_smap *m, const char *k, uint32_t klen, int32_t v) {
    if ((m->n + 1) * 2 > m->cap) smap_grow(m);
    uint64_t h = hash_bytes(k, klen);
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = h & (m->cap - 1);
    for (tok_slot *e = &m->slot[i]; e->key; e = &m->slot[i = (i + 1) & (m->cap - 1)]) {
        if (e->tag == tag && e->klen == klen && memcmp(e->key, k, klen) == 0) {
            e->val = v;
            return;
        }
    }
    m->slot[i] = (tok_slot){.key = k, .klen = klen, .tag = tag, .val = v};
    m->n++;
}

int32_t tok_smap_get(const tok_smap *m, const char *k, size_t klen) {
    if (!m->cap) return -1;
    uint64_t h = hash_bytes(k, klen);
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = h & (m->cap - 1);
    for (const tok_slot *e = &m->slot[i]; e->key; e = &m->slot[i = (i + 1) & (m->cap - 1)])
        if (e->tag == tag && e->klen == klen && memcmp(e->key, k, klen) == 0) return e->val;
    return -1;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

void tok_pmap_init(tok_pmap *m, size_t expect) {
    m->cap = pow2_at_least(expect * 2 + 16);
    m->n = 0;
    m->key = hr_xcalloc(m->cap, sizeof(*m->key));
    m->rank = hr_xcalloc(m->cap, sizeof(*m->rank));
    m->merged = hr_xcalloc(m->cap, sizeof(*m->merged));
}

void tok_pmap_free(tok_pmap *m) {
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof(*m));
}

void tok_pmap_put(tok_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->n + 1) * 2 > m->cap) {
        tok_pmap n;
        tok_pmap_init(&n, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i])
                tok_pmap_put(&n, (int32_t)((m->key[i] - 1) >> 32), (int32_t)((m->key[i] - 1) & 0xffffffffu), m->rank[i],
                             m->merged[i]);
        tok_pmap_free(m);
        *m = n;
    }
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(k) & (m->cap - 1);
    while (m->key[i]) {
        if (m->key[i] == k) { /* HF collects merges into a map: a repeated pair keeps its last rank */
            m->rank[i] = rank;
            m->merged[i] = merged;
            return;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->n++;
}

bool tok_pmap_get(const tok_pmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->cap) return false;
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = hash_u64(k) & (m->cap - 1);
    while (m->key[i]) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return false;
}

size_t tok_utf8_valid_len(const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (n < 2 || s[1] < lo || s[1] > hi) return 0;
        return (n >= 3 && (s[2] & 0xC0) == 0x80) ? 3 : 0;
    }
    if (c < 0xF5) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (n < 2 || s[1] < lo || s[1] > hi) return 0;
        if (n < 3 || (s[2] & 0xC0) != 0x80) return 0;
        return (n >= 4 && (s[3] & 0xC0) == 0x80) ? 4 : 0;
    }
    return 0;
}

/* Length of the maximal prefix of an ill-formed sequence that could start a
 * well-formed one (at least 1): that prefix becomes one U+FFFD. */
static size_t maximal_subpart(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c < 0xE0)
        need = 2;
    else if (c >= 0xE0 && c < 0xF0) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c < 0xF5) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 1;
    size_t i = 1;
    if (i < n && s[i] >= lo && s[i] <= hi)
        i++;
    else
        return 1;
    while (i < need && i < n && (s[i] & 0xC0) == 0x80) i++;
    return i;
}

void tok_utf8_sanitize(const char *s, size_t n, tok_buf *out) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t l = tok_utf8_valid_len(u + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        tok_buf_put(out, s + run, i - run);
        tok_buf_put(out, "\xEF\xBF\xBD", 3);
        i += maximal_subpart(u + i, n - i);
        run = i;
    }
    tok_buf_put(out, s + run, n - run);
}

size_t tok_utf8_encode(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tok_utf8_decode(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    size_t l = tok_utf8_valid_len(u, n);
    if (l == 0) {
        *cp = 0xFFFD;
        return 1;
    }
    if (l == 1)
        *cp = u[0];
    else if (l == 2)
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    else if (l == 3)
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    else
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) | ((uint32_t)(u[2] & 0x3F) << 6) |
              (u[3] & 0x3F);
    return l;
}

bool tok_is_whitespace(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
#define R4(a)  a, a + 1, a + 2, a + 3
#define R16(a) R4(a), R4(a + 4), R4(a + 8), R4(a + 12)
const uint16_t tok_byte_to_cp[256] = {
    R16(256), R16(272), 288, /* 0..32 */
    33,       34,       35,       36,       37,       38,       39,      40,      41,      42,  43,  44,  45,
    46,       47,       R16(48),  R16(64),  R16(80),  R16(96),  R4(112), R4(116), R4(120), 124, 125, 126, /* 33..126 */
    289,      290,      291,      292,      R16(293), 309,      310,     311,     312,     313, 314, 315, 316,
    317,      318,      319,      320,      321,      322,                                                /* 127..160 */
    161,      162,      163,      164,      165,      166,      167,     168,     169,     170, 171, 172, /* 161..172 */
    323,                                                                                                  /* 173 */
    174,      175,      R16(176), R16(192), R16(208), R16(224), R16(240)                                  /* 174..255 */
};

int tok_cp_to_byte(uint32_t cp) {
    /* inverse of the table above, computed: no shared state to initialise */
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp > 323) return -1;
    uint32_t k = cp - 256; /* k-th byte that is not printable Latin-1 */
    if (k < 33) return (int)k;         /* 0..32 */
    if (k < 67) return (int)(k + 94);  /* 127..160 */
    return 173;
}
