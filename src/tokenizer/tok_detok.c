/* Incremental detokenizer for streaming. Keeps the ids of the current
 * window [prefix, end) and re-decodes only that window: the text is the
 * decode of [prefix, end) minus the decode of [prefix, read). A delta is
 * emitted only when the window's decode does not end in U+FFFD (an
 * incomplete UTF-8 character), so no later token can change it. Decoding
 * both strings from the same start makes SentencePiece's "strip the first
 * space" rule cancel out (the approach of vLLM's detokenize_incrementally). */
#include <string.h>

#include "tokenizer/tok_internal.h"

struct hr_detok {
    const hr_tokenizer *t;
    bool skip_special;
    tok_ids ids;
    size_t prefix, read;
    tok_buf a, b, delta;
};

hr_detok *hr_detok_new(const hr_tokenizer *t, bool skip_special) {
    hr_detok *d = hr_xcalloc(1, sizeof(*d));
    d->t = t;
    d->skip_special = skip_special;
    return d;
}

void hr_detok_free(hr_detok *d) {
    if (!d) return;
    free(d->ids.p);
    tok_buf_free(&d->a);
    tok_buf_free(&d->b);
    tok_buf_free(&d->delta);
    free(d);
}

static bool ends_incomplete(const tok_buf *b) {
    return b->len >= 3 && memcmp(b->p + b->len - 3, "\xEF\xBF\xBD", 3) == 0;
}

/* Decodes the window both ways and sets the delta; returns its length. */
static size_t step(hr_detok *d, bool force) {
    d->a.len = d->b.len = d->delta.len = 0;
    tok_buf_put(&d->delta, "", 0);
    tok_decode_into(d->t, d->ids.p + d->prefix, d->read - d->prefix, d->skip_special, &d->a);
    tok_decode_into(d->t, d->ids.p + d->prefix, d->ids.len - d->prefix, d->skip_special, &d->b);
    if (d->b.len > d->a.len && (force || !ends_incomplete(&d->b))) {
        size_t common = d->a.len;
        if (memcmp(d->a.p, d->b.p, common) != 0) common = 0; /* should not happen; never re-emit */
        tok_buf_put(&d->delta, d->b.p + common, d->b.len - common);
        d->prefix = d->read;
        d->read = d->ids.len;
    } else if (force) {
        d->prefix = d->read = d->ids.len;
    }
    return d->delta.len;
}

size_t hr_detok_push(hr_detok *d, int32_t id, const char **delta) {
    tok_ids_push(&d->ids, id);
    size_t n = step(d, false);
    *delta = d->delta.p;
    return n;
}

size_t hr_detok_flush(hr_detok *d, const char **delta) {
    size_t n = d->ids.len > d->read ? step(d, true) : 0;
    if (!d->delta.p) tok_buf_put(&d->delta, "", 0);
    if (n == 0) d->delta.len = 0, d->delta.p[0] = 0;
    *delta = d->delta.p;
    return n;
}
