/* Chat rendering: builds the context Hugging Face's apply_chat_template
 * passes (messages with reasoning fields aliased, tools, documents,
 * add_generation_prompt, special token strings, extra keyword arguments)
 * and renders the template. */
#include "template/tpl_internal.h"

/* transformers' _alias_reasoning_fields: a message's reasoning, under
 * whichever of reasoning_content / thinking / reasoning is set first, is
 * exposed as both `thinking` (what gpt-oss templates read) and
 * `reasoning_content`, as {"thinking": r, **message, "reasoning_content": r}. */
static json_t *alias_reasoning(json_t *messages) {
    static const char *const fields[] = {"reasoning_content", "thinking", "reasoning"};
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        json_t *r = NULL;
        for (size_t f = 0; f < HR_ARRAY_LEN(fields) && json_is_object(m) && !r; f++) {
            json_t *v = json_object_get(m, fields[f]);
            if (v && !json_is_null(v)) r = v;
        }
        if (!r) {
            json_array_append(out, m);
            continue;
        }
        json_t *n = json_object();
        json_object_set(n, "thinking", r);
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v) json_object_set(n, k, v);
        json_object_set(n, "reasoning_content", r);
        json_array_append_new(out, n);
    }
    return out;
}

int tpl_render_chat(const char *source, json_t *messages, json_t *tools, bool add_generation_prompt,
                    const char *bos_token, const char *eos_token, json_t *extra, char **out, hr_err *err) {
    *out = NULL;
    int rc = HR_OK;
    tpl_template *t = tpl_parse(source, err);
    if (!t) return err ? err->code : HR_EINVAL;
    json_t *ctx = json_object();
    /* transformers renders with tools=None and documents=None when absent,
     * so `tools is defined` holds and `tools is none` decides. */
    json_object_set_new(ctx, "messages", messages && json_is_array(messages) ? alias_reasoning(messages) : json_array());
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
