/* NFC (UAX #15): full canonical decomposition, canonical ordering of
 * combining marks, then canonical composition with the blocking rule.
 * Text whose code points are all below U+0300 is already NFC and no later
 * character can compose with it, so it is copied as is. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_unicode.h"

enum {
    S_BASE = 0xAC00,
    L_BASE = 0x1100,
    V_BASE = 0x1161,
    T_BASE = 0x11A7,
    L_COUNT = 19,
    V_COUNT = 21,
    T_COUNT = 28,
    N_COUNT = V_COUNT * T_COUNT,
    S_COUNT = L_COUNT * N_COUNT
};

static int ccc(uint32_t cp) {
    if (cp < 0x300) return 0;
    int lo = 0, hi = tok_ccc_count - 1;
    while (lo <= hi) {
        int m = (lo + hi) / 2;
        if (tok_ccc_table[m][0] == cp) return (int)tok_ccc_table[m][1];
        if (tok_ccc_table[m][0] < cp)
            lo = m + 1;
        else
            hi = m - 1;
    }
    return 0;
}

typedef struct cps {
    uint32_t *p;
    size_t n, cap;
} cps;

static void cps_push(cps *v, uint32_t c) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->p = hr_xrealloc(v->p, v->cap * sizeof(uint32_t));
    }
    v->p[v->n++] = c;
}

static void decompose(uint32_t cp, cps *out) {
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        cps_push(out, L_BASE + s / N_COUNT);
        cps_push(out, V_BASE + (s % N_COUNT) / T_COUNT);
        if (s % T_COUNT) cps_push(out, T_BASE + s % T_COUNT);
        return;
    }
    if (cp >= 0xC0) {
        int lo = 0, hi = tok_decomp_count - 1;
        while (lo <= hi) {
            int m = (lo + hi) / 2;
            if (tok_decomp_table[m][0] == cp) {
                for (uint32_t k = 0; k < tok_decomp_table[m][2]; k++)
                    cps_push(out, tok_decomp_chars[tok_decomp_table[m][1] + k]);
                return;
            }
            if (tok_decomp_table[m][0] < cp)
                lo = m + 1;
            else
                hi = m - 1;
        }
    }
    cps_push(out, cp);
}

/* Primary composite of (a, b), or 0. */
static uint32_t compose(uint32_t a, uint32_t b) {
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE && b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = tok_comp_count - 1;
    while (lo <= hi) {
        int m = (lo + hi) / 2;
        uint32_t f = tok_comp_table[m][0], s = tok_comp_table[m][1];
        if (f == a && s == b) return tok_comp_table[m][2];
        if (f < a || (f == a && s < b))
            lo = m + 1;
        else
            hi = m - 1;
    }
    return 0;
}

void tok_nfc(const char *s, size_t n, tok_buf *out) {
    size_t i;
    for (i = 0; i < n && (unsigned char)s[i] < 0xCC; i++) {
    }
    if (i == n) {
        tok_buf_put(out, s, n);
        return;
    }
    cps d = {0};
    for (size_t k = 0; k < n;) {
        uint32_t cp;
        k += tok_utf8_decode(s + k, n - k, &cp);
        decompose(cp, &d);
    }
    /* canonical ordering: stable insertion sort of each run of marks */
    for (size_t k = 1; k < d.n; k++) {
        int c = ccc(d.p[k]);
        if (!c) continue;
        size_t j = k;
        uint32_t x = d.p[k];
        while (j > 0 && ccc(d.p[j - 1]) > c) {
            d.p[j] = d.p[j - 1];
            j--;
        }
        d.p[j] = x;
    }
    /* composition: a mark composes with the last starter unless a char in
     * between has class 0 or a class >= its own (blocked) */
    size_t w = 0, starter = SIZE_MAX;
    for (size_t k = 0; k < d.n; k++) {
        uint32_t c = d.p[k];
        int cc = ccc(c);
        if (starter != SIZE_MAX) {
            bool adjacent = w - 1 == starter;
            int last = adjacent ? -1 : ccc(d.p[w - 1]);
            if (adjacent || (last != 0 && last < cc)) {
                uint32_t comp = compose(d.p[starter], c);
                if (comp) {
                    d.p[starter] = comp;
                    continue;
                }
            }
        }
        if (cc == 0) starter = w;
        d.p[w++] = c;
    }
    for (size_t k = 0; k < w; k++) {
        char u[4];
        tok_buf_put(out, u, tok_utf8_encode(d.p[k], u));
    }
    free(d.p);
}
