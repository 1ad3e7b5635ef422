/* Internals shared by the tokenizer's files: the hr_tokenizer struct, the
 * hash maps, the normalizer / pre-tokenizer / decoder steps as data, and the
 * helpers each loader (tokenizer.json, tiktoken, GGUF) fills them with.
 * Only the tokenizer module includes this; everyone else uses tokenizer.h. */
#ifndef HEARTH_TOKENIZER_TOK_INTERNAL_H
#define HEARTH_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* ---- growable byte buffer and id vector ---------------------------------- */
typedef struct tok_buf {
    char *p;
    size_t len, cap;
} tok_buf;
void tok_buf_put(tok_buf *b, const void *s, size_t n);
void tok_buf_putc(tok_buf *b, char c);
void tok_buf_free(tok_buf *b);

typedef struct tok_ids {
    int32_t *p;
    size_t len, cap;
} tok_ids;
void tok_ids_push(tok_ids *v, int32_t id);

/* A list of strings stored back to back in one buffer: piece i is
 * buf.p[off[i] .. off[i+1]). Used for pre-tokens and for decoder tokens. */
typedef struct tok_pieces {
    tok_buf buf;
    size_t *off; /* n + 1 entries */
    size_t n, cap;
    uint8_t *flag; /* per piece: 1 = final (an added token id in fixed_id) */
    int32_t *fixed_id;
} tok_pieces;
void tok_pieces_init(tok_pieces *p);
void tok_pieces_free(tok_pieces *p);
void tok_pieces_clear(tok_pieces *p);
/* Appends a piece; id >= 0 marks it final (already a token id). */
void tok_pieces_add(tok_pieces *p, const char *s, size_t n, int32_t id);
static inline const char *tok_piece(const tok_pieces *p, size_t i, size_t *n) {
    *n = p->off[i + 1] - p->off[i];
    return p->buf.p + p->off[i];
}

/* ---- hash maps ------------------------------------------------------------ */
/* Bytes -> int32, open addressing. Keys point into memory the map does not
 * own. One slot per probe keeps a lookup to about one cache line. */
typedef struct tok_slot {
    const char *key;
    uint32_t klen;
    uint32_t tag; /* high hash bits: most probe misses end without memcmp */
    int32_t val;
} tok_slot;
typedef struct tok_smap {
    tok_slot *slot;
    size_t cap, n; /* cap is a power of two */
} tok_smap;
void tok_smap_init(tok_smap *m, size_t expect);
void tok_smap_free(tok_smap *m);
/* Inserts or overwrites. */
void tok_smap_put(tok_smap *m, const char *k, uint32_t klen, int32_t v);
int32_t tok_smap_get(const tok_smap *m, const char *k, size_t klen); /* -1 if absent */

/* (id, id) -> (rank, merged id). */
typedef struct tok_pmap {
    uint64_t *key; /* (a << 32 | b) + 1, 0 = empty */
    int32_t *rank, *merged;
    size_t cap, n;
} tok_pmap;
void tok_pmap_init(tok_pmap *m, size_t expect);
void tok_pmap_free(tok_pmap *m);
void tok_pmap_put(tok_pmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged); /* overwrites */
bool tok_pmap_get(const tok_pmap *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged);

/* ---- UTF-8 ---------------------------------------------------------------- */
/* Length of the well-formed UTF-8 sequence at s (Unicode table 3-7), or 0. */
size_t tok_utf8_valid_len(const unsigned char *s, size_t n);
/* Copies s into out replacing each maximal ill-formed subpart by U+FFFD, as
 * Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy do. */
void tok_utf8_sanitize(const char *s, size_t n, tok_buf *out);
size_t tok_utf8_encode(uint32_t cp, char *out);
/* Decodes one char of valid UTF-8; returns its length. */
size_t tok_utf8_decode(const char *s, size_t n, uint32_t *cp);
/* Unicode White_Space (Rust char::is_whitespace). */
bool tok_is_whitespace(uint32_t cp);

/* GPT-2 byte <-> printable code point map. */
extern const uint16_t tok_byte_to_cp[256];
int tok_cp_to_byte(uint32_t cp); /* -1 if not a mapped char */

/* ---- steps ---------------------------------------------------------------- */
typedef enum {
    /* normalizers */
    TOK_N_PREPEND,
    TOK_N_REPLACE,
    TOK_N_STRIP,
    TOK_N_NFC,
    /* pre-tokenizers */
    TOK_P_BYTELEVEL,
    TOK_P_SPLIT,
    TOK_P_DIGITS,
    TOK_P_METASPACE,
    TOK_P_WHITESPACE_SPLIT,
    /* decoders */
    TOK_D_BYTELEVEL,
    TOK_D_BYTEFALLBACK,
    TOK_D_METASPACE,
    TOK_D_FUSE,
    TOK_D_STRIP,
    TOK_D_REPLACE,
} tok_step_type;

typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_PREV,
    TOK_SPLIT_NEXT,
    TOK_SPLIT_CONTIGUOUS
} tok_split_behavior;
typedef enum { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_step {
    tok_step_type type;
    pcre2_code *re;   /* SPLIT (regex form), BYTELEVEL (use_regex), REPLACE (regex form) */
    char *str, *str2; /* SPLIT/REPLACE string pattern, REPLACE content, PREPEND, METASPACE replacement */
    size_t str_len, str2_len;
    tok_split_behavior behavior;
    tok_prepend_scheme prepend;
    bool invert, add_prefix_space, use_regex, individual_digits, split, left, right;
    int start, stop; /* decoder Strip */
} tok_step;

typedef struct tok_added {
    char *content;
    size_t len;
    char *pat; /* what is matched: content, or for normalized tokens the normalized content */
    size_t pat_len;
    int32_t id;
    bool special, lstrip, rstrip, normalized, single_word;
} tok_added;

typedef enum { TOK_MODEL_BPE, TOK_MODEL_TIKTOKEN } tok_model_type;

struct hr_tokenizer {
    tok_model_type model;
    int n_vocab;
    char **tok; /* id -> token string (vocab form), may be NULL for holes */
    uint32_t *tok_len;
    uint8_t *special; /* id -> special added token */
    tok_smap vocab;   /* model vocab: string -> id (added tokens not included) */
    tok_pmap merges;  /* BPE: pair -> rank, merged id */
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;
    int32_t byte_tok[256]; /* byte_fallback: id of <0xNN>, else -1 */
    int32_t byte_id[256];  /* tiktoken: id of the single-byte token */

    tok_added *added;
    int n_added;
    int added_first[257]; /* added[added_first[c] .. added_first[c+1]) start with byte c */
    bool has_added_normalized;
    bool no_special_text; /* tekken: special-token text is never matched in input */
    pcre2_code *word_re;  /* Rust regex's \w, for single_word tokens */

    tok_step *norm, *pre, *dec;
    int n_norm, n_pre, n_dec;
    bool has_decoder;

    /* post-processor (TemplateProcessing single): -1 = $A, else token id */
    int32_t *post;
    int n_post;
    bool has_post;

    int32_t bos, eos;
    char *bos_str, *eos_str;
    char *chat_template;
};

void tok_step_free(tok_step *s);
/* Compiles a regex with UTF + UCP (+ JIT when available). */
pcre2_code *tok_regex_compile(const char *pat, size_t len, hr_err *err);

/* Allocates an empty tokenizer with n_vocab slots. */
hr_tokenizer *tok_alloc(int n_vocab);
/* Sets token id's string (copied) and adds it to the model vocab map when in_vocab. */
void tok_set_token(hr_tokenizer *t, int32_t id, const char *s, size_t n, bool in_vocab);
/* Registers an added token (content copied). */
void tok_add_added(hr_tokenizer *t, const tok_added *a);
/* Finalises after loading: byte fallback table, sorting of added tokens. */
int tok_finish(hr_tokenizer *t, hr_err *err);

/* BPE over one pre-token (vocab form, valid UTF-8 unless t->model is
 * TIKTOKEN), appending ids to out. */
void tok_bpe_word(const hr_tokenizer *t, const char *w, size_t n, tok_ids *out);

int tok_load_hf_json(const char *path, hr_tokenizer **out, hr_err *err);
int tok_load_tiktoken(const char *path, const char *encoding, hr_tokenizer **out, hr_err *err);
int tok_load_gguf(const char *path, hr_tokenizer **out, hr_err *err);
/* root: a parsed tekken.json (borrowed). */
struct json_t;
int tok_load_tekken(struct json_t *root, const char *path, hr_tokenizer **out, hr_err *err);
/* Reads tokenizer_config.json next to a tokenizer (chat_template, bos/eos). */
void tok_read_config(hr_tokenizer *t, const char *dir);

/* Decodes ids[0..n) to bytes (lossy UTF-8) appended to out. */
void tok_decode_into(const hr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, tok_buf *out);

#endif
