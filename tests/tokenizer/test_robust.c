/* Robustness and complexity of the encoder.
 * 1. Random bytes (fixed seed; mostly invalid UTF-8, NULs, special-token
 *    fragments) through byte-level BPE, tiktoken and a SentencePiece-style
 *    tokenizer: no crash (run under ASan/UBSan in the sanitizer build), every
 *    id in range, and encode(decode(ids)) is stable for byte-level vocabs.
 * 2. Concurrency: 4 threads encode and decode with one tokenizer; every
 *    result must equal the single-threaded one (tokenizer.h promises
 *    thread-safe encode/decode after load).
 * 3. Long repetitive inputs (1 MiB of one character, of spaces, of digits, of
 *    "ab") must encode in well under a second each (no quadratic merging):
 *    bound 1 s of the thread's CPU time in optimized builds (CPU time, not
 *    wall time: a loaded CI machine must not fail it; a quadratic merge
 *    would take minutes); only run, not timed, under sanitizers. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test.h"
#include "tokenizer/tokenizer.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static const char *const frags[] = {"<|endoftext|>", "<|im_start|>", "<|start|>", "<|", "\xE2\x96\x81",
                                    "\xF0\x9F",      "\xC3",         " ",         "\n", "'s",
                                    "123",           "\xE4\xB8\xAD"};

static void fuzz(const hr_tokenizer *t, const char *label, int iters) {
    char buf[512];
    hr_err err = {0};
    int bad = 0;
    for (int it = 0; it < iters; it++) {
        size_t n = 0, want = rnd() % sizeof(buf);
        while (n < want) {
            if (rnd() % 4 == 0) {
                const char *f = frags[rnd() % HR_ARRAY_LEN(frags)];
                size_t l = strlen(f);
                if (n + l > sizeof(buf)) break;
                memcpy(buf + n, f, l);
                n += l;
            } else
                buf[n++] = (char)(rnd() & 0xFF);
        }
        hr_encode_opts o = {.add_special_tokens = it % 2, .parse_special = it % 3 == 0};
        int32_t *ids = NULL;
        size_t nid = 0;
        if (hr_tokenizer_encode(t, buf, n, &o, &ids, &nid, &err) != HR_OK) {
            bad++;
            continue;
        }
        for (size_t i = 0; i < nid; i++)
            if (ids[i] < 0 || ids[i] >= hr_tokenizer_vocab_size(t)) bad++;
        char *text = NULL;
        if (hr_tokenizer_decode(t, ids, nid, it % 2, &text, &err) != HR_OK) bad++;
        hr_detok *d = hr_detok_new(t, false);
        const char *delta;
        for (size_t i = 0; i < nid; i++) hr_detok_push(d, ids[i], &delta);
        hr_detok_flush(d, &delta);
        hr_detok_free(d);
        free(text);
        free(ids);
    }
    CHECK_MSG(bad == 0, "%s: %d bad results", label, bad);
}

static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void timed(const hr_tokenizer *t, const char *label, const char *unit, size_t total) {
    size_t ul = strlen(unit);
    char *s = malloc(total + 1);
    for (size_t i = 0; i < total; i++) s[i] = unit[i % ul];
    s[total] = 0;
    hr_encode_opts o = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    hr_err err = {0};
    double t0 = thread_cpu_s();
    CHECK_EQ_INT(hr_tokenizer_encode(t, s, total, &o, &ids, &n, &err), HR_OK);
    double dt = thread_cpu_s() - t0;
    printf("%s: %zu KiB of \"%s\" -> %zu ids in %.3f s of CPU\n", label, total >> 10, unit[0] == '\n' ? "\\n" : unit, n, dt);
#ifndef HEARTH_SANITIZE
    CHECK_MSG(dt < 1.0, "%s: %.3f s for %zu KiB of \"%s\"", label, dt, total >> 10, unit);
#endif
    CHECK(n > 0);
    free(ids);
    free(s);
}

typedef struct job {
    const hr_tokenizer *t;
    const char *text;
    const int32_t *want;
    size_t n_want;
    int bad;
} job;

static void *worker(void *arg) {
    job *j = arg;
    for (int it = 0; it < 50; it++) {
        hr_encode_opts o = {.parse_special = true};
        int32_t *ids = NULL;
        size_t n = 0;
        hr_err err = {0};
        if (hr_tokenizer_encode(j->t, j->text, strlen(j->text), &o, &ids, &n, &err) || n != j->n_want ||
            memcmp(ids, j->want, n * sizeof(int32_t)) != 0)
            j->bad++;
        char *s = NULL;
        if (hr_tokenizer_decode(j->t, ids, n, false, &s, &err) || strcmp(s, j->text) != 0) j->bad++;
        free(s);
        free(ids);
    }
    return NULL;
}

static void threads(const hr_tokenizer *t, const char *label) {
    const char *text = "Hello, world! \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E 12345 <|endoftext|> don't   stop\n\n";
    hr_encode_opts o = {.parse_special = true};
    int32_t *want = NULL;
    size_t n = 0;
    hr_err err = {0};
    CHECK_EQ_INT(hr_tokenizer_encode(t, text, strlen(text), &o, &want, &n, &err), HR_OK);
    pthread_t th[4];
    job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (job){.t = t, .text = text, .want = want, .n_want = n};
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        bad += jobs[i].bad;
    }
    CHECK_MSG(bad == 0, "%s: %d differing results across threads", label, bad);
    free(want);
}

int main(void) {
    const char *fx = test_fixtures();
    char p[1024];
    hr_err err = {0};
    static const char *const files[][2] = {
        {"tokenizers/tiny-bpe/tokenizer.json", NULL},
        {"tokenizers/tiktoken/o200k_base.tiktoken", "o200k_harmony"},
        {"tokenizers/tiktoken/cl100k_base.tiktoken", "cl100k_base"},
    };
#ifdef HEARTH_SANITIZE
    const int iters = 300;
    const size_t mib = 1 << 18; /* a quarter: only crashes and leaks are checked there */
#else
    const int iters = 3000;
    const size_t mib = 1 << 20;
#endif
    for (size_t f = 0; f < HR_ARRAY_LEN(files); f++) {
        hr_tokenizer *t = NULL;
        snprintf(p, sizeof(p), "%s/%s", fx, files[f][0]);
        CHECK_EQ_INT(hr_tokenizer_load_file(p, files[f][1], &t, &err), HR_OK);
        if (!t) continue;
        fuzz(t, files[f][0], iters);
        threads(t, files[f][0]);
        timed(t, files[f][0], "a", mib);
        timed(t, files[f][0], " ", mib);
        timed(t, files[f][0], "7", mib);
        timed(t, files[f][0], "ab", mib);
        timed(t, files[f][0], "\n", mib);
        timed(t, files[f][0], "\xE4\xB8\xAD", mib / 4 * 3);
        hr_tokenizer_free(t);
    }
    /* malformed inputs fail cleanly with a message */
    hr_tokenizer *t = NULL;
    CHECK(hr_tokenizer_load_file("/nonexistent/tokenizer.json", NULL, &t, &err) == HR_ENOTFOUND && !t);
    CHECK(hr_tokenizer_load_encoding("p50k_base", &t, &err) == HR_EUNSUP && !t);
    return test_report("tokenizer/test_robust");
}
