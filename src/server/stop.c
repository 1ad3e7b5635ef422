/* Stop strings over streamed text. Invariant: `pending` holds exactly the
 * longest suffix of the text seen so far that is a proper prefix of some
 * stop string, so any stop string that will ever match starts inside
 * pending or in text not yet seen. Everything before it is final and safe
 * to emit. The output ends right before the stop string that completes
 * first, as vLLM's check of each new token's text does. */
#include <string.h>

#include "server/server.h"

void srv_stop_init(srv_stop *m, const char *const *stops, int n_stops) {
    *m = (srv_stop){.stops = stops, .n_stops = n_stops, .which = -1};
}

void srv_stop_free(srv_stop *m) { srv_buf_free(&m->pending); }

/* The occurrence that completes first (smallest end; on a tie the longest,
 * i.e. earliest start): what a character-by-character stream would hit, so
 * the result does not depend on how the text was split into tokens.
 * Returns its start or -1. */
static long find_first(const srv_stop *m, const char *s, size_t n, int *which) {
    long best = -1;
    size_t best_end = 0;
    for (int i = 0; i < m->n_stops; i++) {
        size_t sl = strlen(m->stops[i]);
        if (!sl || sl > n) continue;
        const char *p = memmem(s, n, m->stops[i], sl);
        if (!p) continue;
        size_t end = (size_t)(p - s) + sl;
        if (best < 0 || end < best_end || (end == best_end && p - s < best)) {
            best = p - s;
            best_end = end;
            *which = i;
        }
    }
    return best;
}

/* Length of the longest suffix of s[0, n) that is a proper prefix of a stop string. */
static size_t held_suffix(const srv_stop *m, const char *s, size_t n) {
    size_t best = 0;
    for (int i = 0; i < m->n_stops; i++) {
        size_t sl = strlen(m->stops[i]);
        size_t k = sl ? HR_MIN(sl - 1, n) : 0;
        for (; k > best; k--)
            if (!memcmp(s + n - k, m->stops[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

bool srv_stop_feed(srv_stop *m, const char *text, size_t len, srv_buf *out) {
    if (m->stopped) return true;
    if (m->n_stops == 0) {
        srv_buf_append(out, text, len);
        return false;
    }
    srv_buf_append(&m->pending, text, len);
    int which = -1;
    long at = find_first(m, m->pending.p, m->pending.len, &which);
    if (at >= 0) {
        srv_buf_append(out, m->pending.p, (size_t)at);
        srv_buf_consume(&m->pending, m->pending.len);
        m->stopped = true;
        m->which = which;
        return true;
    }
    size_t keep = held_suffix(m, m->pending.p, m->pending.len);
    size_t emit = m->pending.len - keep;
    srv_buf_append(out, m->pending.p, emit);
    srv_buf_consume(&m->pending, emit);
    return false;
}

void srv_stop_flush(srv_stop *m, srv_buf *out) {
    if (!m->stopped && m->pending.len) srv_buf_append(out, m->pending.p, m->pending.len);
    srv_buf_consume(&m->pending, m->pending.len);
}
