/* The embedded chat page (src/server/ui_page.c) against its source
 * (src/server/ui/chat.html): byte-identical, so a page edited without
 * rerunning scripts/embed-ui.sh fails here; the page's shape (ASCII, one
 * inline script, no external resources); and the Basic-credential decoding
 * that lets a browser open the page when --api-key is set. HTTP behaviour is
 * in tests/e2e/test_ui.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/ui.h"
#include "test.h"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0) goto fail;
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) goto fail;
    p = malloc((size_t)n + 1);
    if (!p || fread(p, 1, (size_t)n, f) != (size_t)n) goto fail;
    p[n] = 0;
    *len = (size_t)n;
    fclose(f);
    return p;
fail:
    free(p);
    fclose(f);
    return NULL;
}

static void test_not_stale(void) {
    const char *src = getenv("HEARTH_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/src/server/ui/chat.html", src ? src : "..");
    size_t len = 0;
    char *html = read_file(path, &len);
    CHECK_MSG(html != NULL, "cannot read %s", path);
    if (!html) return;
    CHECK_MSG(len == srv_ui_page_len && !memcmp(html, srv_ui_page, len),
              "src/server/ui_page.c is stale: run scripts/embed-ui.sh (html %zu bytes, embedded %zu)", len,
              srv_ui_page_len);
    free(html);
}

static size_t count(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_page_shape(void) {
    CHECK_EQ_INT(strlen(srv_ui_page), srv_ui_page_len); /* no NUL inside */
    CHECK(!strncmp(srv_ui_page, "<!DOCTYPE html>", 15));
    size_t bad = 0;
    for (size_t i = 0; i < srv_ui_page_len; i++) bad += (unsigned char)srv_ui_page[i] > 126;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(count(srv_ui_page, "<script>"), 1);
    CHECK_EQ_INT(count(srv_ui_page, "</script>"), 1);
    /* works offline: nothing is loaded from anywhere */
    const char *external[] = {"http://", "https://", "<link", " src=", "@import", "url("};
    for (size_t i = 0; i < sizeof external / sizeof *external; i++)
        CHECK_MSG(!strstr(srv_ui_page, external[i]), "page references %s", external[i]);
    const char *needed[] = {"/v1/chat/completions", "/v1/models", "include_usage", "id=\"send\"", "id=\"apikey\""};
    for (size_t i = 0; i < sizeof needed / sizeof *needed; i++)
        CHECK_MSG(strstr(srv_ui_page, needed[i]) != NULL, "page lacks %s", needed[i]);
}

static void test_etag(void) {
    const char *e = srv_ui_etag();
    CHECK_EQ_INT(strlen(e), 18);
    CHECK(e[0] == '"' && e[17] == '"');
    CHECK(srv_ui_etag() == e); /* computed once */
}

static void test_basic(void) {
    char pw[16];
    struct {
        const char *header, *want; /* want NULL: refused */
    } cases[] = {
        {"Basic dXNlcjpzZWtyZXQ=", "sekret"},     /* user:sekret */
        {"basic  dXNlcjpzZWtyZXQ", "sekret"},     /* scheme case, spaces, no padding */
        {"Basic OnNla3JldA==", "sekret"},         /* :sekret */
        {"Basic dTphOmI=", "a:b"},                /* u:a:b, the password may hold ':' */
        {"Basic dTo=", ""},                       /* u: */
        {"Basic c2VrcmV0", NULL},                 /* sekret: no colon */
        {"Basic dXNlcjpzZWtyZXQ=x", NULL},        /* data after the padding */
        {"Basic dXNlcjpz*WtyZXQ=", NULL},         /* not base64 */
        {"Basic dTphAGI=", NULL},                 /* u:a\0b */
        {"Bearer dXNlcjpzZWtyZXQ=", NULL},        /* another scheme */
        {"Basic", NULL},                          /* nothing */
        {"Basic dTowMTIzNDU2Nzg5YWJjZGVm", NULL}, /* u:0123456789abcdef, 16 bytes do not fit pw[16] */
        {"Basic dTowMTIzNDU2Nzg5YWJjZGU=", "0123456789abcde"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memset(pw, 'x', sizeof pw);
        bool ok = srv_ui_basic_password(cases[i].header, pw, sizeof pw);
        CHECK_MSG(ok == (cases[i].want != NULL), "case %zu (%s): %d", i, cases[i].header, ok);
        if (ok && cases[i].want) CHECK_STREQ(pw, cases[i].want);
    }
    CHECK(!srv_ui_basic_password(NULL, pw, sizeof pw));
    /* a header longer than any credential buffer is refused, not truncated */
    char big[2048] = "Basic ";
    memset(big + 6, 'Q', sizeof big - 7);
    big[sizeof big - 1] = 0;
    CHECK(!srv_ui_basic_password(big, pw, sizeof pw));
}

int main(void) {
    test_not_stale();
    test_page_shape();
    test_etag();
    test_basic();
    return test_report("server/test_ui");
}
