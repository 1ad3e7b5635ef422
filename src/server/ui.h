/* The built-in chat page: the html embedded at build time (ui_page.c,
 * generated from ui/chat.html by scripts/embed-ui.sh) and the route that
 * serves it at GET / and /index.html (ui_route.c). Private to src/server.
 * The page is static: it knows the API only as a browser client does, and
 * the server knows nothing of what the page does. */
#ifndef HEARTH_SERVER_UI_H
#define HEARTH_SERVER_UI_H

#include <stdbool.h>
#include <stddef.h>

#include "server/internal.h"

/* The page, NUL-terminated; srv_ui_page_len excludes the NUL. */
extern const char srv_ui_page[];
extern const size_t srv_ui_page_len;

/* A browser navigating to the page cannot send "Authorization: Bearer", so
 * with --api-key the page (only the page) also accepts HTTP Basic
 * credentials whose password is the key; the user name is ignored. Decodes
 * the password of an "Authorization: Basic ..." header value into out
 * (NUL-terminated); false when the header is not well-formed Basic or the
 * password does not fit in n bytes. */
bool srv_ui_basic_password(const char *authorization, char *out, size_t n);

/* GET/HEAD of the page: 200 with the html, or 304 when If-None-Match holds
 * the current ETag. Auth is the caller's (http.c). */
enum MHD_Result srv_route_ui(srv_conn *cn);
/* 401 for the page: the OpenAI error object plus WWW-Authenticate: Basic, so
 * a browser prompts for the key. */
enum MHD_Result srv_ui_reply_unauthorized(struct MHD_Connection *c);

/* Strong ETag of the embedded page ("\"<16 hex>\""), computed once. */
const char *srv_ui_etag(void);

#endif
