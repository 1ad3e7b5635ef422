/* Prompt building shared by the generation and tokenizer routes: chat
 * template rendering, tokenization into the request pool, the context-length
 * check with vLLM's messages, and the `model` field check. */
#include <string.h>

#include "server/internal.h"
#include "template/template.h"

/* A JSON string of text that may hold a lone byte of a multi-byte character
 * (a single token's text): never NULL. */
json_t *srv_json_str(const char *t) {
    json_t *j = json_string(t);
    return j ? j : json_string("\xef\xbf\xbd");
}

int srv_encode(hr_server *s, srv_pool *pool, const char *text, bool add_special, bool parse_special, int32_t **ids,
               int *n, srv_error *e) {
    hr_encode_opts eo = {.add_special_tokens = add_special, .parse_special = parse_special};
    int32_t *raw = NULL;
    size_t nr = 0;
    hr_err err = {0};
    if (hr_tokenizer_encode(s->tok, text, strlen(text), &eo, &raw, &nr, &err) != HR_OK)
        return srv_error_set(e, 400, NULL, "prompt", "could not tokenize the prompt: %s", err.msg);
    *ids = srv_pool_alloc(pool, (nr ? nr : 1) * sizeof(int32_t));
    if (!*ids) {
        free(raw);
        return srv_error_set(e, 500, NULL, NULL, "out of memory");
    }
    if (nr) memcpy(*ids, raw, nr * sizeof(int32_t));
    free(raw);
    *n = (int)nr;
    return 0;
}

/* Renders messages with the chat template (add_generation_prompt) into text.
 * The caller frees *out. */
int srv_render_chat(hr_server *s, json_t *messages, json_t *tools, bool add_gen, json_t *extra, char **out,
                    srv_error *e) {
    const char *src = s->chat_template ? s->chat_template : hr_tokenizer_chat_template(s->tok);
    if (!src)
        return srv_error_set(e, 400, NULL, "messages",
                             "The model has no chat template; start the server with --chat-template FILE");
    hr_err err = {0};
    if (tpl_render_chat(src, messages, tools, add_gen, hr_tokenizer_bos_str(s->tok), hr_tokenizer_eos_str(s->tok),
                        extra, out, &err) != HR_OK)
        return srv_error_set(e, 400, NULL, "messages", "chat template error: %s", err.msg);
    return 0;
}

int srv_context_check(hr_server *s, int n_prompt, int max_tokens, srv_error *e) {
    int mml = s->max_model_len;
    if (n_prompt == 0) return srv_error_set(e, 400, NULL, "prompt", "The prompt is empty (0 tokens)");
    if (mml > 0 && n_prompt >= mml)
        return srv_error_set(e, 400, "context_length_exceeded", "messages",
                             "This model's maximum context length is %d tokens. However, your request has %d input "
                             "tokens. Please reduce the length of the input messages.",
                             mml, n_prompt);
    if (mml > 0 && max_tokens > 0 && (long)n_prompt + max_tokens > mml)
        return srv_error_set(e, 400, "context_length_exceeded", "max_tokens",
                             "'max_tokens' or 'max_completion_tokens' is too large: %d. This model's maximum context "
                             "length is %d tokens and your request has %d input tokens (%d > %d - %d).",
                             max_tokens, mml, n_prompt, max_tokens, mml, n_prompt);
    return 0;
}

bool srv_model_ok(hr_server *s, const char *model) {
    return !model || !strcmp(model, s->model_name) || !strcmp(model, s->model_path);
}
