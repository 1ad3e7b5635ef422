/* Server-Sent Events framing as the OpenAI streaming API uses it: one JSON
 * object per event, "data: " prefix, blank-line terminator, and a final
 * "data: [DONE]" sentinel (https://html.spec.whatwg.org/#server-sent-events). */
#include "server/server.h"

void srv_sse_data(srv_buf *b, const char *json) {
    srv_buf_puts(b, "data: ");
    srv_buf_puts(b, json);
    srv_buf_puts(b, "\n\n");
}

void srv_sse_done(srv_buf *b) { srv_buf_puts(b, "data: [DONE]\n\n"); }
