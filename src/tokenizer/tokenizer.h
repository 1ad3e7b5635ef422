/* Text <-> token ids, exactly as the reference libraries (HF tokenizers,
 * tiktoken) do for the model: tokenizer.json (BPE, byte-level or
 * SentencePiece-style), tiktoken rank files (+ o200k_harmony specials), and
 * GGUF vocabularies. Plus incremental detokenization for streaming.
 * Owns its vocabulary; thread-safe for concurrent encode/decode after load. */
#ifndef HEARTH_TOKENIZER_H
#define HEARTH_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

typedef struct hr_tokenizer hr_tokenizer;

/* From a model source: a directory (tokenizer.json, else *.tiktoken /
 * tokenizer.model in tiktoken format) or a .gguf file. Also reads
 * tokenizer_config.json (chat_template, bos/eos, add_bos_token) when present. */
int hr_tokenizer_load_model(const char *path, hr_tokenizer **out, hr_err *err);
/* From one file: tokenizer.json, a .tiktoken rank file (encoding names the
 * pattern + specials: "o200k_base", "o200k_harmony", "cl100k_base"; NULL =
 * guess from the file name) or a .gguf file. */
int hr_tokenizer_load_file(const char *file, const char *encoding, hr_tokenizer **out, hr_err *err);
/* A tiktoken encoding by name, its rank file looked up in
 * $TIKTOKEN_ENCODINGS_BASE (as vLLM's gpt-oss recipe uses it). */
int hr_tokenizer_load_encoding(const char *encoding, hr_tokenizer **out, hr_err *err);
void hr_tokenizer_free(hr_tokenizer *t);

typedef struct hr_encode_opts {
    bool add_special_tokens; /* post-processor BOS/EOS (HF add_special_tokens) */
    bool parse_special;      /* recognise special-token text (tiktoken allowed_special="all");
                                tokenizer.json added tokens are always matched as HF does */
} hr_encode_opts;

/* Encodes len bytes of text. *ids is malloc'd (caller frees). The reference
 * libraries take Python str, so invalid UTF-8 is first replaced with U+FFFD
 * per maximal ill-formed subpart, exactly as bytes.decode("utf-8",
 * "replace") does; the ids then equal the reference's on that string. */
int hr_tokenizer_encode(const hr_tokenizer *t, const char *text, size_t len, const hr_encode_opts *opts, int32_t **ids,
                        size_t *n_ids, hr_err *err);
/* Decodes ids to a malloc'd NUL-terminated string (caller frees). Bytes that
 * do not form UTF-8 come out as U+FFFD, as the references' decode does.
 * skip_special drops special tokens (HF skip_special_tokens, Tekken IGNORE). */
int hr_tokenizer_decode(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                        hr_err *err);
/* Same, also giving the length (the text may hold NUL bytes, e.g. byte 0x00 tokens). */
int hr_tokenizer_decode_n(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                          size_t *len, hr_err *err);

int hr_tokenizer_vocab_size(const hr_tokenizer *t);
/* Token text (raw vocab string) or NULL when out of range. */
const char *hr_tokenizer_token_str(const hr_tokenizer *t, int32_t id);
/* Id of a token text, or -1. */
int32_t hr_tokenizer_token_id(const hr_tokenizer *t, const char *s);
bool hr_tokenizer_is_special(const hr_tokenizer *t, int32_t id);
int32_t hr_tokenizer_bos(const hr_tokenizer *t); /* -1 if none */
int32_t hr_tokenizer_eos(const hr_tokenizer *t); /* -1 if none */
/* The chat template shipped with the tokenizer (tokenizer_config.json
 * chat_template or GGUF tokenizer.chat_template), or NULL. */
const char *hr_tokenizer_chat_template(const hr_tokenizer *t);
const char *hr_tokenizer_bos_str(const hr_tokenizer *t); /* "" if none */
const char *hr_tokenizer_eos_str(const hr_tokenizer *t);

/* Incremental detokenizer for streaming: push ids one by one, get back only
 * text that no later token can change (complete UTF-8 characters, leading
 * SentencePiece space resolved). */
typedef struct hr_detok hr_detok;
hr_detok *hr_detok_new(const hr_tokenizer *t, bool skip_special);
void hr_detok_free(hr_detok *d);
/* Appends the newly final text (NUL-terminated, owned by d, valid until the
 * next call) to *delta; returns its length. */
size_t hr_detok_push(hr_detok *d, int32_t id, const char **delta);
/* Flushes whatever is left (e.g. an incomplete UTF-8 tail as U+FFFD). */
size_t hr_detok_flush(hr_detok *d, const char **delta);

#endif
