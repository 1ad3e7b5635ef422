/* OpenAI error objects. The type follows the status the way the OpenAI API
 * reports it, so SDKs raise the matching exception class (BadRequestError,
 * AuthenticationError, NotFoundError, RateLimitError, ...). */
#include <stdarg.h>
#include <string.h>

#include "server/server.h"

static const char *type_for(int status) {
    switch (status) {
    case 401:
        return "authentication_error";
    case 429:
        return "rate_limit_error";
    case 503:
        return "service_unavailable";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

int srv_error_set(srv_error *e, int status, const char *code, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = type_for(status);
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

char *srv_error_json(const srv_error *e) {
    json_t *o = json_object();
    json_t *msg = json_string(e->message);
    /* a message quoting client bytes may not be UTF-8: never drop the field */
    json_object_set_new(o, "message", msg ? msg : json_string("invalid request (message not UTF-8)"));
    json_object_set_new(o, "type", json_string(e->type ? e->type : type_for(e->status)));
    json_object_set_new(o, "param", e->param[0] ? json_string(e->param) : json_null());
    json_object_set_new(o, "code", e->code ? json_string(e->code) : json_null());
    json_t *root = json_pack("{so}", "error", o);
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}
