/* Stop strings across token boundaries: the stop string and everything after
 * it never reach the client, text that may start a stop string is held back,
 * and nothing else is delayed. Checked on hand cases and against a brute-force
 * reference over random texts, stop sets and token splits. */
#include <string.h>

#include "server/server.h"
#include "test.h"

/* Feeds pieces (NULL-terminated) and returns what was emitted (static buffer). */
static const char *run(const char *const *stops, int n_stops, const char *const *pieces, bool *stopped) {
    static char out[1024];
    srv_stop m;
    srv_stop_init(&m, stops, n_stops);
    srv_buf b = {0};
    *stopped = false;
    for (int i = 0; pieces[i]; i++)
        if (srv_stop_feed(&m, pieces[i], strlen(pieces[i]), &b)) *stopped = true;
    if (!*stopped) srv_stop_flush(&m, &b);
    snprintf(out, sizeof out, "%s", b.p ? b.p : "");
    srv_buf_free(&b);
    srv_stop_free(&m);
    return out;
}

static void test_cases(void) {
    bool st;
    const char *none[] = {"a", "b", NULL};
    CHECK_STREQ(run(NULL, 0, none, &st), "ab");
    CHECK(!st);

    const char *end[] = {"END"};
    const char *p1[] = {"Hello E", "N", "D and more", NULL};
    CHECK_STREQ(run(end, 1, p1, &st), "Hello ");
    CHECK(st);
    const char *p2[] = {"Hello EN", "d", NULL}; /* case sensitive: no match, all text comes back */
    CHECK_STREQ(run(end, 1, p2, &st), "Hello ENd");
    CHECK(!st);

    const char *two[] = {"world", "lo w"};
    const char *p3[] = {"h", "e", "l", "l", "o", " ", "w", "o", "r", "l", "d", NULL};
    CHECK_STREQ(run(two, 2, p3, &st), "hel"); /* "lo w" completes first */
    const char *p3b[] = {"hello world", NULL};
    CHECK_STREQ(run(two, 2, p3b, &st), "hel"); /* same in one piece */
    const char *nest[] = {"cbab", "b"};
    const char *p3c[] = {"cbab", NULL};
    CHECK_STREQ(run(nest, 2, p3c, &st), "c"); /* "b" completes before "cbab", whatever the split */
    CHECK(st);

    const char *aab[] = {"aab"};
    const char *p4[] = {"a", "a", "a", "b", "c", NULL};
    CHECK_STREQ(run(aab, 1, p4, &st), "a");
    const char *p5[] = {"xaab", NULL}; /* inside a single token */
    CHECK_STREQ(run(aab, 1, p5, &st), "x");

    const char *utf[] = {"\xc3\xa9t\xc3\xa9"}; /* "été" */
    const char *p6[] = {"un \xc3\xa9", "t", "\xc3\xa9 chaud", NULL};
    CHECK_STREQ(run(utf, 1, p6, &st), "un ");
    CHECK(st);

    /* hold-back: incremental view */
    srv_stop m;
    srv_stop_init(&m, end, 1);
    srv_buf b = {0};
    CHECK(!srv_stop_feed(&m, "abc E", 5, &b));
    CHECK_STREQ(b.p, "abc "); /* "E" held back */
    CHECK(!srv_stop_feed(&m, "N", 1, &b));
    CHECK_STREQ(b.p, "abc ");
    CHECK(!srv_stop_feed(&m, "x", 1, &b));
    CHECK_STREQ(b.p, "abc ENx"); /* released once it cannot be a stop string */
    CHECK(srv_stop_feed(&m, "yEND!", 5, &b));
    CHECK_STREQ(b.p, "abc ENxy");
    CHECK(m.stopped && m.which == 0);
    CHECK(srv_stop_feed(&m, "more", 4, &b)); /* stays stopped, emits nothing */
    CHECK_STREQ(b.p, "abc ENxy");
    srv_buf_free(&b);
    srv_stop_free(&m);
}

static uint64_t rng = 88172645463325252ull;
static unsigned rnd(unsigned n) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void test_random(void) {
    for (int it = 0; it < 5000; it++) {
        char text[64], stops_s[3][6];
        const char *stops[3];
        int len = 1 + (int)rnd(40), n_stops = (int)rnd(4);
        for (int i = 0; i < len; i++) text[i] = "abc"[rnd(3)];
        text[len] = 0;
        for (int s = 0; s < n_stops; s++) {
            int sl = 1 + (int)rnd(4);
            for (int i = 0; i < sl; i++) stops_s[s][i] = "abc"[rnd(3)];
            stops_s[s][sl] = 0;
            stops[s] = stops_s[s];
        }
        /* reference, character by character: the first stop string to
         * complete (on a tie the longest) cuts the text at its start */
        int cut = len;
        for (int e = 1; e <= len && cut == len; e++)
            for (int s = 0; s < n_stops; s++) {
                int sl = (int)strlen(stops[s]);
                if (sl <= e && !strncmp(text + e - sl, stops[s], (size_t)sl) && e - sl < cut) cut = e - sl;
            }
        srv_stop m;
        srv_stop_init(&m, stops, n_stops);
        srv_buf b = {0};
        bool stopped = false;
        int pos = 0;
        while (pos < len && !stopped) {
            int k = 1 + (int)rnd(5);
            if (pos + k > len) k = len - pos;
            stopped = srv_stop_feed(&m, text + pos, (size_t)k, &b);
            pos += k;
            if (!stopped) {
                /* nothing lost: emitted + held back == text so far */
                CHECK_EQ_INT(b.len + m.pending.len, pos);
                /* minimal hold-back: everything that cannot start a stop string is out */
                for (size_t h = 0; h < m.pending.len; h++) {
                    bool prefix = false;
                    for (int s = 0; s < n_stops; s++)
                        if (!strncmp(m.pending.p + h, stops[s], m.pending.len - h) &&
                            strlen(stops[s]) > m.pending.len - h)
                            prefix = true;
                    if (h == 0) CHECK(prefix);
                }
            }
        }
        if (!stopped) srv_stop_flush(&m, &b);
        CHECK_EQ_INT(stopped, cut < len);
        CHECK_MSG((int)b.len == cut, "text %s stops %d [%s %s %s] out %.*s", text, n_stops, n_stops > 0 ? stops[0] : "",
                  n_stops > 1 ? stops[1] : "", n_stops > 2 ? stops[2] : "", (int)b.len, b.p ? b.p : "");
        CHECK(b.len == 0 || !memcmp(b.p, text, (size_t)cut));
        srv_buf_free(&b);
        srv_stop_free(&m);
    }
}

int main(void) {
    test_cases();
    test_random();
    return test_report("server/test_stop");
}
