/* Serves the built-in chat page (ui.h): GET / and /index.html with a
 * revalidating cache (ETag, 304 on If-None-Match) and a content security
 * policy that lets the page talk to this server only. Also the Basic-auth
 * decoding that lets a browser open the page when --api-key is set. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "server/internal.h"
#include "server/ui.h"

/* Inline script and style are the page's only code; connect-src 'self' keeps
 * it (and anything a model could ever smuggle into it) talking to this
 * server alone. */
#define UI_CSP                                                                                                         \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; "   \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* RFC 4648 base64 (padding optional) into out; -1 on a bad character or if
 * it does not fit (n bytes including the NUL), else the decoded length. */
static long b64_decode(const char *in, char *out, size_t n) {
    size_t len = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *in && *in != '='; in++) {
        int v = b64_value((unsigned char)*in);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (len + 1 >= n) return -1;
            out[len++] = (char)((acc >> bits) & 0xff);
        }
    }
    while (*in == '=') in++;
    if (*in) return -1;
    out[len] = 0;
    return (long)len;
}

bool srv_ui_basic_password(const char *h, char *out, size_t n) {
    char cred[512];
    if (!h || !n || strncasecmp(h, "Basic ", 6) != 0) return false;
    h += 6;
    while (*h == ' ') h++;
    bool ok = false;
    long len = b64_decode(h, cred, sizeof cred);
    if (len < 0 || memchr(cred, 0, (size_t)len)) goto done;
    const char *colon = strchr(cred, ':');
    if (!colon || strlen(colon + 1) >= n) goto done;
    memcpy(out, colon + 1, strlen(colon + 1) + 1);
    ok = true;
done:
    explicit_bzero(cred, sizeof cred); /* it held the key */
    return ok;
}

static char g_etag[24];
static pthread_once_t g_etag_once = PTHREAD_ONCE_INIT;

static void etag_init(void) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64: the page changes only with the binary */
    for (size_t i = 0; i < srv_ui_page_len; i++) h = (h ^ (unsigned char)srv_ui_page[i]) * 0x100000001b3ull;
    snprintf(g_etag, sizeof g_etag, "\"%016llx\"", (unsigned long long)h);
}

const char *srv_ui_etag(void) {
    pthread_once(&g_etag_once, etag_init);
    return g_etag;
}

/* If-None-Match is a list of tags (or *); weak tags compare by value. */
static bool etag_matches(const char *inm, const char *etag) {
    if (!inm) return false;
    if (strchr(inm, '*')) return true;
    size_t n = strlen(etag);
    for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag))
        if (p[n] == 0 || p[n] == ',' || p[n] == ' ') return true;
    return false;
}

enum MHD_Result srv_route_ui(srv_conn *cn) {
    const char *etag = srv_ui_etag();
    const char *inm = MHD_lookup_connection_value(cn->c, MHD_HEADER_KIND, "If-None-Match");
    bool fresh = etag_matches(inm, etag);
    int status = fresh ? 304 : 200;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(fresh ? 0 : srv_ui_page_len, (void *)srv_ui_page, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
    /* revalidate every time (a new binary serves a new page at once); private
     * when the page sits behind the API key */
    MHD_add_response_header(r, "Cache-Control", cn->s->api_key && cn->s->api_key[0] ? "private, no-cache" : "no-cache");
    MHD_add_response_header(r, "ETag", etag);
    MHD_add_response_header(r, "Content-Security-Policy", UI_CSP);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    srv_note_status(status);
    enum MHD_Result ret = MHD_queue_response(cn->c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result srv_ui_reply_unauthorized(struct MHD_Connection *c) {
    srv_error e;
    srv_error_set(&e, 401, "invalid_api_key", NULL,
                  "Incorrect or missing API key (Authorization: Bearer ..., or Basic with the key as password)");
    char *s = srv_error_json(&e);
    if (!s) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    /* makes a browser ask for the key (as the password) */
    MHD_add_response_header(r, "WWW-Authenticate", "Basic realm=\"hearth\", charset=\"UTF-8\"");
    srv_add_common_headers(r);
    srv_note_status(401);
    enum MHD_Result ret = MHD_queue_response(c, 401, r);
    MHD_destroy_response(r);
    return ret;
}
