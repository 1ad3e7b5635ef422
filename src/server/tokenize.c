/* /tokenize and /detokenize with vLLM's request and response shapes. */
#include <string.h>

#include "server/internal.h"

static json_t *parse_body(srv_conn *cn, srv_error *e) {
    json_error_t je;
    json_t *root = json_loadb(cn->body.p ? cn->body.p : "", cn->body.len, 0, &je);
    if (!root) {
        srv_error_set(e, 400, NULL, NULL, "Invalid JSON body: %s", je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        srv_error_set(e, 400, NULL, NULL, "The request body must be a JSON object");
        return NULL;
    }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && (!json_is_string(model) || !srv_model_ok(cn->s, json_string_value(model)))) {
        if (json_is_string(model))
            srv_error_set(e, 404, "model_not_found", "model", "The model `%.200s` does not exist.",
                          json_string_value(model));
        else
            srv_error_set(e, 400, NULL, "model", "'model' must be a string");
        json_decref(root);
        return NULL;
    }
    return root;
}

static int opt_bool(json_t *root, const char *key, bool def, bool *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return srv_error_set(e, 400, NULL, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

enum MHD_Result srv_route_tokenize(srv_conn *cn) {
    hr_server *s = cn->s;
    srv_error e = {0};
    json_t *msgs = NULL, *resp = NULL;
    char *text = NULL;
    json_t *root = parse_body(cn, &e);
    if (!root) goto fail;
    json_t *prompt = json_object_get(root, "prompt"), *messages = json_object_get(root, "messages");
    bool add_special, return_strs, add_gen;
    if (opt_bool(root, "return_token_strs", false, &return_strs, &e)) goto fail;
    int32_t *ids = NULL;
    int n = 0;
    if (messages) {
        if (opt_bool(root, "add_special_tokens", false, &add_special, &e) ||
            opt_bool(root, "add_generation_prompt", true, &add_gen, &e))
            goto fail;
        msgs = srv_normalize_messages(messages, &e);
        if (!msgs) goto fail;
        json_t *tools = json_object_get(root, "tools");
        json_t *kw = json_object_get(root, "chat_template_kwargs");
        if (srv_render_chat(s, msgs, json_is_array(tools) ? tools : NULL, add_gen, json_is_object(kw) ? kw : NULL,
                            &text, &e))
            goto fail;
        if (srv_encode(s, cn->pool, text, add_special, true, &ids, &n, &e)) goto fail;
    } else {
        if (!json_is_string(prompt)) {
            srv_error_set(&e, 400, NULL, "prompt", "'prompt' (a string) or 'messages' is required");
            goto fail;
        }
        if (opt_bool(root, "add_special_tokens", true, &add_special, &e)) goto fail;
        if (srv_encode(s, cn->pool, json_string_value(prompt), add_special, false, &ids, &n, &e)) goto fail;
    }
    json_t *tokens = json_array(), *strs = return_strs ? json_array() : json_null();
    for (int i = 0; i < n; i++) {
        json_array_append_new(tokens, json_integer(ids[i]));
        if (return_strs) {
            const char *t = hr_tokenizer_token_str(s->tok, ids[i]);
            json_array_append_new(strs, srv_json_str(t ? t : ""));
        }
    }
    resp = json_pack("{s:i,s:i,s:o,s:o}", "count", n, "max_model_len", s->max_model_len, "tokens", tokens, "token_strs",
                     strs);
    json_decref(root);
    json_decref(msgs);
    free(text);
    return srv_reply_json(cn->c, MHD_HTTP_OK, resp);
fail:
    json_decref(root);
    json_decref(msgs);
    free(text);
    return srv_reply_error(cn->c, &e);
}

enum MHD_Result srv_route_detokenize(srv_conn *cn) {
    hr_server *s = cn->s;
    srv_error e = {0};
    char *text = NULL;
    json_t *root = parse_body(cn, &e);
    if (!root) goto fail;
    json_t *tokens = json_object_get(root, "tokens");
    if (!json_is_array(tokens)) {
        srv_error_set(&e, 400, NULL, "tokens", "'tokens' must be a list of token ids");
        goto fail;
    }
    size_t n = json_array_size(tokens);
    int32_t *ids = srv_pool_alloc(cn->pool, (n ? n : 1) * sizeof(int32_t));
    if (!ids) {
        srv_error_set(&e, 500, NULL, NULL, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(tokens, i);
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
        if (id < 0 || id >= s->vocab_size) {
            srv_error_set(&e, 400, NULL, "tokens", "tokens[%zu] is not a token id in [0, %d)", i, s->vocab_size);
            goto fail;
        }
        ids[i] = (int32_t)id;
    }
    hr_err err = {0};
    if (hr_tokenizer_decode(s->tok, ids, n, false, &text, &err) != HR_OK) {
        srv_error_set(&e, 400, NULL, "tokens", "could not detokenize: %s", err.msg);
        goto fail;
    }
    json_t *resp = json_pack("{s:o}", "prompt", srv_json_str(text));
    free(text);
    json_decref(root);
    return srv_reply_json(cn->c, MHD_HTTP_OK, resp);
fail:
    free(text);
    json_decref(root);
    return srv_reply_error(cn->c, &e);
}
