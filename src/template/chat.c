/* Chat rendering: builds the context Hugging Face's apply_chat_template
 * passes (messages, tools, documents, add_generation_prompt, special token
 * strings, extra keyword arguments) and renders the template. */
#include "template/tpl_internal.h"

int tpl_render_chat(const char *source, json_t *messages, json_t *tools, bool add_generation_prompt,
                    const char *bos_token, const char *eos_token, json_t *extra, char **out, hr_err *err) {
    *out = NULL;
    int rc = HR_OK;
    tpl_template *t = tpl_parse(source, err);
    if (!t) return err ? err->code : HR_EINVAL;
    json_t *ctx = json_object();
    /* transformers renders with tools=None and documents=None when absent,
     * so `tools is defined` holds and `tools is none` decides. */
    json_object_set(ctx, "messages", messages ? messages : json_array());
    if (!messages) json_decref(json_object_get(ctx, "messages"));
    json_object_set_new(ctx, "tools", tools ? json_incref(tools) : json_null());
    json_object_set_new(ctx, "documents", json_null());
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt));
    if (bos_token) json_object_set_new(ctx, "bos_token", json_string(bos_token));
    if (eos_token) json_object_set_new(ctx, "eos_token", json_string(eos_token));
    if (extra && json_is_object(extra)) {
        const char *k;
        json_t *v;
        json_object_foreach(extra, k, v) json_object_set(ctx, k, v);
    }
    rc = tpl_render(t, ctx, out, err);
    json_decref(ctx);
    tpl_free(t);
    return rc;
}
