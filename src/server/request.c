/* Parsing and validation of /v1/chat/completions and /v1/completions bodies
 * with the OpenAI / vLLM field names and ranges. Every rejection names the
 * offending field in `param`. Unknown fields are ignored, as vLLM does.
 * Sampling defaults: the request's value, else generation_config.json's,
 * else the neutral default (vLLM's --generation-config auto). */
#include <math.h>
#include <string.h>

#include "server/server.h"

#define MAX_N        128 /* choices per request (n x prompts) */
#define MAX_STOPS    32
#define MAX_STOP_LEN 512 /* bytes; bounds the per-token cost of matching */
#define MAX_STOP_IDS 256

static bool is_int(const json_t *v) { return json_is_integer(v); }
static bool is_num(const json_t *v) { return json_is_number(v); }

/* Reads an optional number field; returns 1 when present, 0 absent, -1 error. */
static int get_num(json_t *root, const char *key, double *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!is_num(v)) return srv_error_set(e, 400, NULL, key, "'%s' must be a number", key);
    *out = json_number_value(v);
    if (!isfinite(*out)) return srv_error_set(e, 400, NULL, key, "'%s' must be finite", key);
    return 1;
}

static int get_int(json_t *root, const char *key, long long *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    /* 2.0 is accepted as 2 by pydantic; 2.5 is not */
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || fabs(d) > 9e15) return srv_error_set(e, 400, NULL, key, "'%s' must be an integer", key);
        *out = (long long)d;
        return 1;
    }
    if (!is_int(v)) return srv_error_set(e, 400, NULL, key, "'%s' must be an integer", key);
    *out = json_integer_value(v);
    return 1;
}

static int get_bool(json_t *root, const char *key, bool *out, srv_error *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return srv_error_set(e, 400, NULL, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 1;
}

static int parse_ids(json_t *arr, int vocab_size, const char *param, srv_pool *pool, int32_t **ids, int *n,
                     srv_error *e) {
    size_t len = json_array_size(arr);
    *ids = srv_pool_alloc(pool, (len ? len : 1) * sizeof(int32_t));
    if (!*ids) return srv_error_set(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(arr, i);
        if (!is_int(v)) return srv_error_set(e, 400, NULL, param, "'%s' must contain token ids (integers)", param);
        json_int_t id = json_integer_value(v);
        if (id < 0 || id > INT32_MAX || (vocab_size > 0 && id >= vocab_size))
            return srv_error_set(e, 400, NULL, param, "token id %lld in '%s' is out of vocabulary range [0, %d)",
                                 (long long)id, param, vocab_size);
        (*ids)[i] = (int32_t)id;
    }
    *n = (int)len;
    return 0;
}

/* prompt: string | [string] | [int] | [[int]] */
static int parse_prompts(json_t *p, int vocab_size, srv_pool *pool, srv_gen_req *r, srv_error *e) {
    if (!p || json_is_null(p)) return srv_error_set(e, 400, NULL, "prompt", "'prompt' is required");
    if (json_is_string(p)) {
        r->prompts = srv_pool_alloc(pool, sizeof(srv_prompt));
        if (!r->prompts) return srv_error_set(e, 500, NULL, NULL, "out of memory");
        r->prompts[0] = (srv_prompt){.text = json_string_value(p)};
        r->n_prompts = 1;
        return 0;
    }
    if (!json_is_array(p))
        return srv_error_set(e, 400, NULL, "prompt",
                             "'prompt' must be a string, a list of strings, a list of token ids or a list of lists");
    size_t n = json_array_size(p);
    if (n == 0) return srv_error_set(e, 400, NULL, "prompt", "'prompt' must not be empty");
    json_t *first = json_array_get(p, 0);
    if (is_int(first)) { /* one prompt of token ids */
        r->prompts = srv_pool_alloc(pool, sizeof(srv_prompt));
        if (!r->prompts) return srv_error_set(e, 500, NULL, NULL, "out of memory");
        r->prompts[0] = (srv_prompt){0};
        r->n_prompts = 1;
        return parse_ids(p, vocab_size, "prompt", pool, &r->prompts[0].ids, &r->prompts[0].n_ids, e);
    }
    if (n > MAX_N) return srv_error_set(e, 400, NULL, "prompt", "at most %d prompts per request", MAX_N);
    r->prompts = srv_pool_alloc(pool, n * sizeof(srv_prompt));
    if (!r->prompts) return srv_error_set(e, 500, NULL, NULL, "out of memory");
    r->n_prompts = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(p, i);
        r->prompts[i] = (srv_prompt){0};
        if (json_is_string(v))
            r->prompts[i].text = json_string_value(v);
        else if (json_is_array(v) && json_array_size(v) > 0 && json_is_integer(json_array_get(v, 0))) {
            if (parse_ids(v, vocab_size, "prompt", pool, &r->prompts[i].ids, &r->prompts[i].n_ids, e)) return -1;
        } else
            return srv_error_set(e, 400, NULL, "prompt",
                                 "'prompt' list items must all be strings or non-empty lists of token ids");
        if (json_is_string(v) != json_is_string(first))
            return srv_error_set(e, 400, NULL, "prompt", "'prompt' mixes strings and token id lists");
    }
    return 0;
}

json_t *srv_normalize_messages(json_t *messages, srv_error *e) {
    if (!json_is_array(messages)) {
        srv_error_set(e, 400, NULL, "messages", "'messages' must be a list of message objects");
        return NULL;
    }
    if (json_array_size(messages) == 0) {
        srv_error_set(e, 400, NULL, "messages", "'messages' must not be empty");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m) {
        if (!json_is_object(m)) {
            srv_error_set(e, 400, NULL, "messages", "messages[%zu] must be an object", i);
            goto fail;
        }
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) {
            srv_error_set(e, 400, NULL, "messages", "messages[%zu].role must be a string", i);
            goto fail;
        }
        json_t *c = json_object_get(m, "content");
        json_t *copy = json_copy(m); /* shallow: the template may read other keys (name, tool_calls) */
        json_array_append_new(out, copy);
        if (!c || json_is_null(c) || json_is_string(c)) continue;
        if (!json_is_array(c)) {
            srv_error_set(e, 400, NULL, "messages", "messages[%zu].content must be a string or a list of parts", i);
            goto fail;
        }
        srv_buf text = {0};
        size_t j;
        json_t *part;
        int n_text = 0;
        json_array_foreach(c, j, part) {
            json_t *type = json_object_get(part, "type"), *t = json_object_get(part, "text");
            if (!json_is_object(part) || !json_is_string(type)) {
                srv_buf_free(&text);
                srv_error_set(e, 400, NULL, "messages", "messages[%zu].content[%zu] must be a {\"type\": ...} part", i,
                              j);
                goto fail;
            }
            if (strcmp(json_string_value(type), "text") != 0) {
                srv_buf_free(&text);
                srv_error_set(e, 400, NULL, "messages", "messages[%zu].content[%zu]: only text parts are supported", i,
                              j);
                goto fail;
            }
            if (!json_is_string(t)) {
                srv_buf_free(&text);
                srv_error_set(e, 400, NULL, "messages", "messages[%zu].content[%zu].text must be a string", i, j);
                goto fail;
            }
            if (n_text++) srv_buf_puts(&text, "\n");
            srv_buf_append(&text, json_string_value(t), json_string_length(t));
        }
        json_object_set_new(copy, "content", json_stringn(text.p ? text.p : "", text.len));
        srv_buf_free(&text);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

static int parse_stop(json_t *root, srv_pool *pool, srv_gen_req *r, srv_error *e) {
    json_t *s = json_object_get(root, "stop");
    if (!s || json_is_null(s)) return 0;
    if (json_is_string(s)) {
        r->stops = srv_pool_alloc(pool, sizeof(char *));
        if (!r->stops) return srv_error_set(e, 500, NULL, NULL, "out of memory");
        if (json_string_length(s) > MAX_STOP_LEN)
            return srv_error_set(e, 400, NULL, "stop", "stop strings are limited to %d bytes", MAX_STOP_LEN);
        r->stops[0] = json_string_value(s);
        r->n_stops = json_string_length(s) ? 1 : 0;
        return 0;
    }
    if (!json_is_array(s)) return srv_error_set(e, 400, NULL, "stop", "'stop' must be a string or a list of strings");
    size_t n = json_array_size(s);
    if (n > MAX_STOPS) return srv_error_set(e, 400, NULL, "stop", "at most %d stop strings", MAX_STOPS);
    r->stops = srv_pool_alloc(pool, (n ? n : 1) * sizeof(char *));
    if (!r->stops) return srv_error_set(e, 500, NULL, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(s, i);
        if (!json_is_string(v))
            return srv_error_set(e, 400, NULL, "stop", "'stop' must be a string or a list of strings");
        if (json_string_length(v) > MAX_STOP_LEN)
            return srv_error_set(e, 400, NULL, "stop", "stop strings are limited to %d bytes", MAX_STOP_LEN);
        if (json_string_length(v)) r->stops[r->n_stops++] = json_string_value(v);
    }
    return 0;
}

static int parse_logit_bias(json_t *root, int vocab_size, hr_sampling_params *sp, srv_error *e) {
    json_t *lb = json_object_get(root, "logit_bias");
    if (!lb || json_is_null(lb)) return 0;
    if (!json_is_object(lb))
        return srv_error_set(e, 400, NULL, "logit_bias", "'logit_bias' must map token ids to numbers");
    if (json_object_size(lb) > HR_MAX_LOGIT_BIAS)
        return srv_error_set(e, 400, NULL, "logit_bias", "at most %d logit_bias entries", HR_MAX_LOGIT_BIAS);
    const char *k;
    json_t *v;
    json_object_foreach(lb, k, v) {
        char *end;
        long long id = strtoll(k, &end, 10);
        if (!*k || *end || id < 0 || id > INT32_MAX || (vocab_size > 0 && id >= vocab_size))
            return srv_error_set(e, 400, NULL, "logit_bias", "logit_bias key '%.64s' is not a token id in [0, %d)", k,
                                 vocab_size);
        if (!is_num(v)) return srv_error_set(e, 400, NULL, "logit_bias", "logit_bias values must be numbers");
        double b = json_number_value(v);
        if (!(b >= -100 && b <= 100))
            return srv_error_set(e, 400, NULL, "logit_bias", "logit_bias values must be in [-100, 100]");
        sp->logit_bias_ids[sp->n_logit_bias] = (int32_t)id;
        sp->logit_bias_vals[sp->n_logit_bias++] = (float)b;
    }
    return 0;
}

/* The sampler's neutral values (as hr_sampling_params_default), set here so
 * that parsing does not depend on the engine library. */
static void neutral_defaults(hr_sampling_params *sp) {
    memset(sp, 0, sizeof *sp);
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->repetition_penalty = 1.0f;
    sp->logprobs = -1;
}

/* Sampling fields and their ranges (vLLM's SamplingParams._verify_args). */
static int parse_sampling(json_t *root, int vocab_size, const hr_config *cfg, srv_pool *pool, srv_gen_req *r,
                          srv_error *e) {
    hr_sampling_params *sp = &r->sp;
    neutral_defaults(sp);
    /* generation_config.json defaults first; the request overrides */
    if (cfg) {
        if (cfg->gen_temperature >= 0) sp->temperature = cfg->gen_temperature;
        if (cfg->gen_top_p > 0) sp->top_p = cfg->gen_top_p;
        if (cfg->gen_top_k > 0) sp->top_k = cfg->gen_top_k;
        if (cfg->gen_min_p >= 0) sp->min_p = cfg->gen_min_p;
        if (cfg->gen_repetition_penalty > 0) sp->repetition_penalty = cfg->gen_repetition_penalty;
    }
    double d;
    long long i;
    int rc;
    if ((rc = get_num(root, "temperature", &d, e)) < 0) return -1;
    if (rc) {
        if (d < 0) return srv_error_set(e, 400, NULL, "temperature", "temperature must be non-negative, got %g", d);
        sp->temperature = (float)d;
    }
    if ((rc = get_num(root, "top_p", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d > 0 && d <= 1)) return srv_error_set(e, 400, NULL, "top_p", "top_p must be in (0, 1], got %g", d);
        sp->top_p = (float)d;
    }
    if ((rc = get_int(root, "top_k", &i, e)) < 0) return -1;
    if (rc) {
        if (i < -1)
            return srv_error_set(e, 400, NULL, "top_k", "top_k must be -1 or 0 (disable), or at least 1, got %lld", i);
        sp->top_k = i > INT32_MAX ? 0 : (int)i;
    }
    if ((rc = get_num(root, "min_p", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d >= 0 && d <= 1)) return srv_error_set(e, 400, NULL, "min_p", "min_p must be in [0, 1], got %g", d);
        sp->min_p = (float)d;
    }
    if ((rc = get_num(root, "presence_penalty", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d >= -2 && d <= 2))
            return srv_error_set(e, 400, NULL, "presence_penalty", "presence_penalty must be in [-2, 2], got %g", d);
        sp->presence_penalty = (float)d;
    }
    if ((rc = get_num(root, "frequency_penalty", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d >= -2 && d <= 2))
            return srv_error_set(e, 400, NULL, "frequency_penalty", "frequency_penalty must be in [-2, 2], got %g", d);
        sp->frequency_penalty = (float)d;
    }
    if ((rc = get_num(root, "repetition_penalty", &d, e)) < 0) return -1;
    if (rc) {
        if (!(d > 0 && d <= 100))
            return srv_error_set(e, 400, NULL, "repetition_penalty", "repetition_penalty must be in (0, 100], got %g",
                                 d);
        sp->repetition_penalty = (float)d;
    }
    if ((rc = get_int(root, "seed", &i, e)) < 0) return -1;
    if (rc) {
        sp->has_seed = true;
        sp->seed = (uint64_t)i;
    }
    bool b;
    if ((rc = get_bool(root, "ignore_eos", &b, e)) < 0) return -1;
    if (rc) sp->ignore_eos = b;
    if (parse_logit_bias(root, vocab_size, sp, e)) return -1;

    /* length */
    r->max_tokens = -1;
    if (cfg && cfg->gen_max_new_tokens > 0) r->max_tokens = cfg->gen_max_new_tokens;
    const char *mt_key = r->api == SRV_API_CHAT && json_object_get(root, "max_completion_tokens") &&
                                 !json_is_null(json_object_get(root, "max_completion_tokens"))
                             ? "max_completion_tokens"
                             : "max_tokens";
    if ((rc = get_int(root, mt_key, &i, e)) < 0) return -1;
    if (rc) {
        if (i < 1) return srv_error_set(e, 400, NULL, mt_key, "%s must be at least 1, got %lld", mt_key, i);
        r->max_tokens = i > INT32_MAX ? INT32_MAX : (int)i;
        r->max_tokens_set = true;
    }
    if ((rc = get_int(root, "min_tokens", &i, e)) < 0) return -1;
    if (rc) {
        if (i < 0) return srv_error_set(e, 400, NULL, "min_tokens", "min_tokens must be non-negative, got %lld", i);
        if (r->max_tokens > 0 && i > r->max_tokens)
            return srv_error_set(e, 400, NULL, "min_tokens", "min_tokens (%lld) must be <= max_tokens (%d)", i,
                                 r->max_tokens);
        sp->min_tokens = (int)HR_MIN(i, INT32_MAX);
    }

    /* n, stop */
    r->n = 1;
    if ((rc = get_int(root, "n", &i, e)) < 0) return -1;
    if (rc) {
        if (i < 1) return srv_error_set(e, 400, NULL, "n", "n must be at least 1, got %lld", i);
        if (i > MAX_N) return srv_error_set(e, 400, NULL, "n", "n must be at most %d, got %lld", MAX_N, i);
        r->n = (int)i;
    }
    if (parse_stop(root, pool, r, e)) return -1;
    json_t *sti = json_object_get(root, "stop_token_ids");
    if (sti && !json_is_null(sti)) {
        if (!json_is_array(sti))
            return srv_error_set(e, 400, NULL, "stop_token_ids", "'stop_token_ids' must be a list of token ids");
        if (json_array_size(sti) > MAX_STOP_IDS)
            return srv_error_set(e, 400, NULL, "stop_token_ids", "at most %d stop_token_ids", MAX_STOP_IDS);
        if (parse_ids(sti, vocab_size, "stop_token_ids", pool, &r->stop_ids, &r->n_stop_ids, e)) return -1;
    }

    /* logprobs: chat has a bool + top_logprobs, completions an int */
    sp->logprobs = -1;
    json_t *lp = json_object_get(root, "logprobs");
    if (r->api == SRV_API_CHAT) {
        bool want = false;
        if (get_bool(root, "logprobs", &want, e) < 0) return -1;
        if ((rc = get_int(root, "top_logprobs", &i, e)) < 0) return -1;
        if (rc) {
            if (i < 0 || i > HR_MAX_TOP_LOGPROBS)
                return srv_error_set(e, 400, NULL, "top_logprobs", "top_logprobs must be in [0, %d], got %lld",
                                     HR_MAX_TOP_LOGPROBS, i);
            if (!want && i > 0)
                return srv_error_set(e, 400, NULL, "top_logprobs", "top_logprobs requires logprobs to be true");
            r->top_logprobs = (int)i;
        }
        r->logprobs = want;
    } else if (lp && !json_is_null(lp)) {
        if (json_is_boolean(lp) || get_int(root, "logprobs", &i, e) < 0)
            return srv_error_set(e, 400, NULL, "logprobs", "'logprobs' must be an integer");
        if (i < 0 || i > HR_MAX_TOP_LOGPROBS)
            return srv_error_set(e, 400, NULL, "logprobs", "logprobs must be in [0, %d], got %lld", HR_MAX_TOP_LOGPROBS,
                                 i);
        r->logprobs = true;
        r->top_logprobs = (int)i;
    }
    if (r->logprobs) sp->logprobs = r->top_logprobs;
    return 0;
}

int srv_parse_gen_request(srv_api api, const char *body, size_t len, int vocab_size, const hr_config *cfg,
                          srv_pool *pool, srv_gen_req *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->api = api;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return srv_error_set(e, 400, NULL, NULL, "Invalid JSON body: %s (at position %d)", je.text, je.position);
    /* the body's strings are referenced by r: kept alive until srv_gen_req_free */
    r->body_ = root;
    if (!json_is_object(root)) return srv_error_set(e, 400, NULL, NULL, "The request body must be a JSON object");

    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return srv_error_set(e, 400, NULL, "model", "'model' must be a string");
        r->model = json_string_value(model);
    }
    if (api == SRV_API_CHAT) {
        r->messages = srv_normalize_messages(json_object_get(root, "messages"), e);
        if (!r->messages) return -1;
        json_t *tools = json_object_get(root, "tools");
        if (tools && !json_is_null(tools)) {
            if (!json_is_array(tools)) return srv_error_set(e, 400, NULL, "tools", "'tools' must be a list");
            r->tools = tools;
        }
    } else {
        if (parse_prompts(json_object_get(root, "prompt"), vocab_size, pool, r, e)) return -1;
        if (get_bool(root, "echo", &r->echo, e) < 0) return -1;
        json_t *suffix = json_object_get(root, "suffix");
        if (suffix && !json_is_null(suffix)) return srv_error_set(e, 400, NULL, "suffix", "'suffix' is not supported");
    }
    /* structured output is not implemented: refuse rather than return text
     * the client would take for valid JSON */
    json_t *rf = json_object_get(root, "response_format");
    if (rf && !json_is_null(rf)) {
        json_t *type = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(type))
            return srv_error_set(e, 400, NULL, "response_format", "'response_format' must be {\"type\": ...}");
        if (strcmp(json_string_value(type), "text") != 0)
            return srv_error_set(e, 400, NULL, "response_format", "response_format type '%.40s' is not supported",
                                 json_string_value(type));
    }
    if (parse_sampling(root, vocab_size, cfg, pool, r, e)) return -1;
    if (r->n * r->n_prompts > MAX_N) return srv_error_set(e, 400, NULL, "n", "n x prompts must be at most %d", MAX_N);

    if (get_bool(root, "stream", &r->stream, e) < 0) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return srv_error_set(e, 400, NULL, "stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return srv_error_set(e, 400, NULL, "stream_options", "stream_options can only be set when stream is true");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu)) {
            if (!json_is_boolean(iu))
                return srv_error_set(e, 400, NULL, "stream_options", "stream_options.include_usage must be a boolean");
            r->include_usage = json_is_true(iu);
        }
    }
    return 0;
}

void srv_gen_req_free(srv_gen_req *r) {
    json_decref(r->messages);
    json_decref(r->body_);
    r->messages = NULL;
    r->body_ = NULL;
}
