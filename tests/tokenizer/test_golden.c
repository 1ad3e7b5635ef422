/* Golden tests: the fixture tiny-bpe tokenizer.json against ids and decoded
 * text from HF tokenizers, and the tiktoken rank files (o200k_base,
 * cl100k_base, o200k_harmony) against tiktoken's encode_ordinary and
 * allowed_special="all". Tolerance: none, every id must match. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tokenizer/tokenizer.h"

static bool ids_equal(const int32_t *ids, size_t n, json_t *want) {
    if (json_array_size(want) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != ids[i]) return false;
    return true;
}

static void check_case(const hr_tokenizer *t, const char *label, json_t *text, json_t *want, bool special) {
    hr_encode_opts o = {.parse_special = special};
    int32_t *ids = NULL;
    size_t n = 0;
    hr_err err = {0};
    int rc = hr_tokenizer_encode(t, json_string_value(text), json_string_length(text), &o, &ids, &n, &err);
    CHECK_EQ_INT(rc, HR_OK);
    CHECK_MSG(ids_equal(ids, n, want), "%s: ids differ for \"%.60s\" (%zu ids, want %zu)", label,
              json_string_value(text), n, json_array_size(want));
    free(ids);
}

static void test_tiny_bpe(const char *fx) {
    char p[1024];
    hr_err err = {0};
    hr_tokenizer *t = NULL;
    snprintf(p, sizeof(p), "%s/tokenizers/tiny-bpe/tokenizer.json", fx);
    CHECK_EQ_INT(hr_tokenizer_load_file(p, NULL, &t, &err), HR_OK);
    if (!t) return;
    snprintf(p, sizeof(p), "%s/tokenizers/tiny-bpe/golden.json", fx);
    json_t *g = json_load_file(p, 0, NULL);
    CHECK(g != NULL);
    size_t i;
    json_t *c;
    int cases = 0;
    json_array_foreach(json_object_get(g, "cases"), i, c) {
        json_t *ids = json_object_get(c, "ids");
        check_case(t, "tiny-bpe", json_object_get(c, "text"), ids, true);
        size_t n = json_array_size(ids);
        int32_t *v = malloc((n + 1) * sizeof(int32_t));
        for (size_t k = 0; k < n; k++) v[k] = (int32_t)json_integer_value(json_array_get(ids, k));
        char *text = NULL;
        CHECK_EQ_INT(hr_tokenizer_decode(t, v, n, false, &text, &err), HR_OK);
        const char *want = json_string_value(json_object_get(c, "decoded"));
        CHECK_MSG(text && want && strcmp(text, want) == 0, "decode \"%s\" != \"%s\"", text, want);
        free(text);
        free(v);
        cases++;
    }
    CHECK(cases > 10);
    /* the chat-format specials are single ids (added tokens, matched first) */
    CHECK_EQ_INT(hr_tokenizer_token_id(t, "<|im_end|>"), 2);
    CHECK(hr_tokenizer_is_special(t, 2));
    json_decref(g);
    hr_tokenizer_free(t);
}

static void test_tiktoken(const char *fx) {
    static const char *const encs[] = {"o200k_base", "cl100k_base", "o200k_harmony"};
    char p[1024];
    snprintf(p, sizeof(p), "%s/tokenizers/tiktoken/golden.json", fx);
    json_t *g = json_load_file(p, 0, NULL);
    CHECK(g != NULL);
    for (size_t e = 0; e < HR_ARRAY_LEN(encs); e++) {
        hr_err err = {0};
        hr_tokenizer *t = NULL;
        snprintf(p, sizeof(p), "%s/tokenizers/tiktoken/%s.tiktoken", fx,
                 strcmp(encs[e], "cl100k_base") ? "o200k_base" : "cl100k_base");
        CHECK_EQ_INT(hr_tokenizer_load_file(p, encs[e], &t, &err), HR_OK);
        if (!t) continue;
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(g, "cases"), i, c) {
            json_t *want = json_object_get(c, encs[e]);
            check_case(t, encs[e], json_object_get(c, "text"), json_object_get(want, "ordinary"), false);
            check_case(t, encs[e], json_object_get(c, "text"), json_object_get(want, "allowed_special_all"), true);
        }
        if (!strcmp(encs[e], "o200k_harmony")) {
            const char *k;
            json_t *v;
            json_object_foreach(json_object_get(g, "harmony_special_tokens"), k, v)
                CHECK_MSG(hr_tokenizer_token_id(t, k) == json_integer_value(v), "%s", k);
            CHECK_EQ_INT(hr_tokenizer_token_id(t, "<|reserved_200013|>"), 200013);
            CHECK_EQ_INT(hr_tokenizer_token_id(t, "<|reserved_201087|>"), 201087);
            CHECK_EQ_INT(hr_tokenizer_token_id(t, "<|reserved_201088|>"), -1);
        }
        hr_tokenizer_free(t);
    }
    json_decref(g);
}

/* A model directory: tokenizer.json + tokenizer_config.json (ChatML template,
 * eos <|im_end|> = 2 per the fixtures README). */
static void test_model_dir(const char *fx) {
    char p[1024];
    hr_err err = {0};
    hr_tokenizer *t = NULL;
    snprintf(p, sizeof(p), "%s/models/tiny-llama", fx);
    CHECK_EQ_INT(hr_tokenizer_load_model(p, &t, &err), HR_OK);
    if (!t) return;
    CHECK_EQ_INT(hr_tokenizer_eos(t), 2);
    CHECK_STREQ(hr_tokenizer_eos_str(t), "<|im_end|>");
    const char *tpl = hr_tokenizer_chat_template(t);
    CHECK(tpl && strstr(tpl, "<|im_start|>") != NULL);
    CHECK_EQ_INT(hr_tokenizer_vocab_size(t), 512);
    hr_tokenizer_free(t);
}

int main(void) {
    const char *fx = test_fixtures();
    test_model_dir(fx);
    test_tiny_bpe(fx);
    test_tiktoken(fx);
    return test_report("tokenizer/test_golden");
}
