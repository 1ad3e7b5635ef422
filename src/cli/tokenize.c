/* `hearth tokenize` and `hearth detokenize`: inspect the tokenizer of a model
 * or a tokenizer file. Also a batch mode (--jsonl) that the differential
 * tests use: one JSON string per input line, one JSON id array per output
 * line, so thousands of strings cost one process. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "io/model_path.h"
#include "tokenizer/tokenizer.h"

typedef struct tok_cli {
    const char *model, *tokenizer, *encoding, *text, *file, *ids, *jsonl;
    bool add_special, allowed_all, json, skip_special, time, quiet;
} tok_cli;

static void usage(FILE *o, bool detok) {
    if (!detok)
        fprintf(o, "usage: hearth tokenize (--model M | --tokenizer FILE [--encoding E] | --encoding E)\n"
                   "                       (--text T | --file F | --jsonl F) [--add-special-tokens]\n"
                   "                       [--allowed-special all] [--json]\n"
                   "  --model M            a model directory, a .gguf file or a Hugging Face id (HF cache)\n"
                   "  --tokenizer FILE     tokenizer.json, a .tiktoken rank file, tokenizer.model (tiktoken) or .gguf\n"
                   "  --encoding E         o200k_harmony | o200k_base | cl100k_base | llama3 (tiktoken; alone:\n"
                   "                       the rank file is looked up in $TIKTOKEN_ENCODINGS_BASE)\n"
                   "  --add-special-tokens add the post-processor's BOS/EOS (HF add_special_tokens=True)\n"
                   "  --allowed-special all  tiktoken: match special-token text (default: encode_ordinary)\n"
                   "  --json               print a JSON array instead of comma-separated ids\n"
                   "  --jsonl F            batch: each line of F is a JSON string (or an array of byte values,\n"
                   "                       for text that is not valid UTF-8); prints one JSON id array per line\n"
                   "  --time               print the encode time and MB/s to stderr (--quiet: no ids)\n"
                   "Invalid UTF-8 in the text is replaced by U+FFFD first (as Python's decode(errors='replace')).\n");
    else
        fprintf(o, "usage: hearth detokenize (--model M | --tokenizer FILE [--encoding E] | --encoding E)\n"
                   "                         (--ids 1,2,3 | --jsonl F) [--skip-special-tokens] [--json]\n"
                   "Prints the decoded text followed by one newline (with --json: a JSON string).\n"
                   "--jsonl F: each line of F is a JSON array of ids; prints one JSON string per line.\n");
}

static int parse(int argc, char **argv, tok_cli *c, bool detok) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"tokenizer", required_argument, 0, 't'},
        {"encoding", required_argument, 0, 'e'},
        {"text", required_argument, 0, 'x'},
        {"file", required_argument, 0, 'f'},
        {"ids", required_argument, 0, 'i'},
        {"jsonl", required_argument, 0, 'l'},
        {"add-special-tokens", no_argument, 0, 'a'},
        {"allowed-special", required_argument, 0, 's'},
        {"json", no_argument, 0, 'j'},
        {"skip-special-tokens", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},
        {"time", no_argument, 0, 'T'},
        {"quiet", no_argument, 0, 'q'},
        {0, 0, 0, 0},
    };
    memset(c, 0, sizeof(*c));
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'm':
            c->model = optarg;
            break;
        case 't':
            c->tokenizer = optarg;
            break;
        case 'e':
            c->encoding = optarg;
            break;
        case 'x':
            c->text = optarg;
            break;
        case 'f':
            c->file = optarg;
            break;
        case 'i':
            c->ids = optarg;
            break;
        case 'l':
            c->jsonl = optarg;
            break;
        case 'a':
            c->add_special = true;
            break;
        case 's':
            if (strcmp(optarg, "all") != 0) {
                fprintf(stderr, "hearth: --allowed-special takes only \"all\"\n");
                return 2;
            }
            c->allowed_all = true;
            break;
        case 'j':
            c->json = true;
            break;
        case 'k':
            c->skip_special = true;
            break;
        case 'T':
            c->time = true;
            break;
        case 'q':
            c->quiet = true;
            break;
        case 'h':
            usage(stdout, detok);
            return -1;
        default:
            usage(stderr, detok);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hearth: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (!c->model && !c->tokenizer && !c->encoding) {
        fprintf(stderr, "hearth: give --model, --tokenizer or --encoding\n");
        return 2;
    }
    return 0;
}

static int load(const tok_cli *c, hr_tokenizer **t) {
    hr_err err = {0};
    int rc;
    if (c->model) {
        char path[4096];
        rc = hr_model_path_resolve(c->model, path, sizeof(path), &err);
        if (rc == HR_OK) rc = hr_tokenizer_load_model(path, t, &err);
    } else if (c->tokenizer) {
        rc = hr_tokenizer_load_file(c->tokenizer, c->encoding, t, &err);
    } else {
        rc = hr_tokenizer_load_encoding(c->encoding, t, &err);
    }
    if (rc) {
        fprintf(stderr, "hearth: %s\n", err.msg);
        return 1;
    }
    return 0;
}

static void print_ids(const int32_t *ids, size_t n, bool json) {
    if (json) putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? (json ? ", %d" : ",%d") : "%d", ids[i]);
    if (json) putchar(']');
    putchar('\n');
}

static int encode_print(const hr_tokenizer *t, const tok_cli *c, const char *s, size_t n, bool json) {
    hr_encode_opts eo = {.add_special_tokens = c->add_special, .parse_special = c->allowed_all};
    int32_t *ids;
    size_t nid;
    hr_err err = {0};
    double t0 = hr_time_now();
    if (hr_tokenizer_encode(t, s, n, &eo, &ids, &nid, &err)) {
        fprintf(stderr, "hearth: %s\n", err.msg);
        return 1;
    }
    double dt = hr_time_now() - t0;
    if (c->time)
        fprintf(stderr, "encode: %zu bytes -> %zu ids in %.4f s (%.2f MB/s)\n", n, nid, dt,
                dt > 0 ? n / dt / 1e6 : 0.0);
    if (!c->quiet) print_ids(ids, nid, json);
    free(ids);
    return 0;
}

/* Batch mode: every line is one JSON value (a string to encode, or an id
 * array to decode). Output is line-aligned with the input. */
static int run_jsonl(const hr_tokenizer *t, const tok_cli *c, bool detok) {
    FILE *f = strcmp(c->jsonl, "-") ? fopen(c->jsonl, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "hearth: cannot open %s\n", c->jsonl);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    size_t lineno = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        json_error_t je;
        json_t *v = json_loadb(line, (size_t)len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        bool raw = !detok && json_is_array(v); /* tokenize: an array of byte values = raw bytes */
        if (!v || (detok ? !json_is_array(v) : !json_is_string(v) && !raw)) {
            fprintf(stderr, "hearth: %s:%zu: expected a JSON %s\n", c->jsonl, lineno, detok ? "id array" : "string");
            json_decref(v);
            rc = 1;
            break;
        }
        if (detok) {
            size_t n = json_array_size(v);
            int32_t *ids = malloc((n + 1) * sizeof(int32_t));
            for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(v, i));
            char *text;
            size_t tl;
            hr_err err = {0};
            hr_tokenizer_decode_n(t, ids, n, c->skip_special, &text, &tl, &err);
            json_t *s = json_stringn(text, tl);
            char *dump = json_dumps(s, JSON_ENCODE_ANY);
            puts(dump ? dump : "null");
            free(dump);
            json_decref(s);
            free(text);
            free(ids);
        } else if (raw) {
            size_t n = json_array_size(v);
            char *bytes = malloc(n + 1);
            for (size_t i = 0; i < n; i++) bytes[i] = (char)json_integer_value(json_array_get(v, i));
            rc = encode_print(t, c, bytes, n, true);
            free(bytes);
        } else {
            rc = encode_print(t, c, json_string_value(v), json_string_length(v), true);
        }
        json_decref(v);
        if (rc) break;
    }
    free(line);
    if (f != stdin) fclose(f);
    fflush(stdout);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    tok_cli c;
    int rc = parse(argc, argv, &c, false);
    if (rc) return rc < 0 ? 0 : rc;
    if (!!c.text + !!c.file + !!c.jsonl != 1) {
        fprintf(stderr, "hearth tokenize: give exactly one of --text, --file, --jsonl\n");
        return 2;
    }
    hr_tokenizer *t = NULL;
    if (load(&c, &t)) return 1;
    if (c.jsonl)
        rc = run_jsonl(t, &c, false);
    else if (c.text)
        rc = encode_print(t, &c, c.text, strlen(c.text), c.json);
    else {
        char *data;
        size_t len;
        hr_err err = {0};
        if (hr_read_file(c.file, &data, &len, &err)) {
            fprintf(stderr, "hearth: %s\n", err.msg);
            rc = 1;
        } else {
            rc = encode_print(t, &c, data, len, c.json);
            free(data);
        }
    }
    hr_tokenizer_free(t);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    tok_cli c;
    int rc = parse(argc, argv, &c, true);
    if (rc) return rc < 0 ? 0 : rc;
    if (!!c.ids + !!c.jsonl != 1) {
        fprintf(stderr, "hearth detokenize: give exactly one of --ids, --jsonl\n");
        return 2;
    }
    hr_tokenizer *t = NULL;
    if (load(&c, &t)) return 1;
    if (c.jsonl) {
        rc = run_jsonl(t, &c, true);
        hr_tokenizer_free(t);
        return rc;
    }
    size_t n = 0, cap = 16;
    int32_t *ids = malloc(cap * sizeof(int32_t));
    const char *p = c.ids;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            fprintf(stderr, "hearth detokenize: --ids must be comma-separated non-negative integers\n");
            free(ids);
            hr_tokenizer_free(t);
            return 2;
        }
        if (n == cap) ids = realloc(ids, (cap *= 2) * sizeof(int32_t));
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    char *text;
    size_t tl;
    hr_err err = {0};
    hr_tokenizer_decode_n(t, ids, n, c.skip_special, &text, &tl, &err);
    if (c.json) {
        json_t *s = json_stringn(text, tl);
        char *dump = json_dumps(s, JSON_ENCODE_ANY);
        puts(dump ? dump : "null");
        free(dump);
        json_decref(s);
    } else {
        fwrite(text, 1, tl, stdout);
        putchar('\n');
    }
    free(text);
    free(ids);
    hr_tokenizer_free(t);
    return 0;
}
