/* `hearth chat-template`: renders chat messages with a model's own chat
 * template exactly as transformers' apply_chat_template(tokenize=False)
 * does, and prints the prompt with no extra newline. The template comes from
 * --chat-template, the model's chat_template.jinja, chat_template.json,
 * tokenizer_config.json (a string or a list of named templates) or a GGUF's
 * tokenizer.chat_template; special-token strings from the same place. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "io/gguf.h"
#include "io/model_path.h"
#include "template/template.h"

#define MAX_VARS 32

typedef struct chat_cli {
    const char *model, *messages, *tools, *tpl_file;
    bool add_gen;
    const char *vars[MAX_VARS];
    int nvars;
} chat_cli;

/* What a model contributes: the template source and special tokens. */
typedef struct chat_model {
    char *source;
    json_t *special;        /* {"bos_token": "...", ...} */
} chat_model;

static void usage(FILE *o) {
    fprintf(o,
            "usage: hearth chat-template (--model M | --chat-template FILE) --messages FILE.json\n"
            "                            [--add-generation-prompt] [--tools FILE.json] [--var KEY=VALUE]...\n"
            "  --model M               a model directory, a .gguf file or a Hugging Face id (HF cache);\n"
            "                          its template: chat_template.jinja, chat_template.json,\n"
            "                          tokenizer_config.json's chat_template, or GGUF tokenizer.chat_template\n"
            "  --chat-template FILE    use this Jinja template instead (bos/eos still from --model)\n"
            "  --messages FILE.json    a JSON array of messages ({\"role\", \"content\", ...}), or an object\n"
            "                          with \"messages\" (and optionally \"tools\")\n"
            "  --add-generation-prompt end with the assistant turn header\n"
            "  --tools FILE.json       a JSON array of tool definitions; picks the \"tool_use\" template\n"
            "                          when the model has named templates\n"
            "  --var KEY=VALUE         an extra template variable (VALUE parsed as JSON, else a string),\n"
            "                          e.g. --var reasoning_effort=high\n"
            "Prints the rendered prompt exactly, without a trailing newline.\n");
}

static int parse(int argc, char **argv, chat_cli *c) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"messages", required_argument, 0, 'j'},
        {"tools", required_argument, 0, 't'},   {"chat-template", required_argument, 0, 'c'},
        {"add-generation-prompt", no_argument, 0, 'g'}, {"var", required_argument, 0, 'v'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0},
    };
    memset(c, 0, sizeof(*c));
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'm': c->model = optarg; break;
        case 'j': c->messages = optarg; break;
        case 't': c->tools = optarg; break;
        case 'c': c->tpl_file = optarg; break;
        case 'g': c->add_gen = true; break;
        case 'v':
            if (c->nvars == MAX_VARS || !strchr(optarg, '=')) {
                fprintf(stderr, "hearth chat-template: --var takes KEY=VALUE (at most %d)\n", MAX_VARS);
                return 2;
            }
            c->vars[c->nvars++] = optarg;
            break;
        case 'h': usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hearth chat-template: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (!c->messages) {
        fprintf(stderr, "hearth chat-template: --messages FILE.json is required\n");
        return 2;
    }
    if (!c->model && !c->tpl_file) {
        fprintf(stderr, "hearth chat-template: give --model or --chat-template\n");
        return 2;
    }
    return 0;
}

static bool file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A special token in tokenizer_config.json: a string or {"content": ...}. */
static json_t *token_string(json_t *v) {
    if (json_is_string(v)) return json_incref(v);
    if (json_is_object(v) && json_is_string(json_object_get(v, "content")))
        return json_incref(json_object_get(v, "content"));
    return NULL;
}

static const char *const SPECIAL_KEYS[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                           "pad_token", "cls_token", "mask_token"};

/* Picks from a list of {"name", "template"}: "tool_use" when tools are
 * given and present, else "default" (transformers' rule). */
static int pick_named(json_t *list, bool tools, char **out, hr_err *err) {
    json_t *def = NULL, *tool = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        json_t *t = json_object_get(e, "template");
        if (!n || !json_is_string(t)) continue;
        if (!strcmp(n, "default")) def = t;
        if (!strcmp(n, "tool_use")) tool = t;
    }
    json_t *pick = (tools && tool) ? tool : def;
    if (!pick) return hr_err_set(err, HR_ENOTFOUND, "the model's named chat templates have no \"default\"%s",
                                 tools ? " or \"tool_use\"" : "");
    *out = hr_xstrdup(json_string_value(pick));
    return HR_OK;
}

static int load_dir(const char *dir, bool tools, chat_model *m, hr_err *err) {
    char path[4096];
    int rc = HR_OK;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    json_t *cfg = file_exists(path) ? json_load_file(path, 0, NULL) : NULL;
    if (cfg) {
        for (size_t i = 0; i < HR_ARRAY_LEN(SPECIAL_KEYS); i++) {
            json_t *s = token_string(json_object_get(cfg, SPECIAL_KEYS[i]));
            if (s) json_object_set_new(m->special, SPECIAL_KEYS[i], s);
        }
        json_t *add = json_object_get(cfg, "additional_special_tokens");
        if (json_is_array(add)) {
            json_t *l = json_array();
            size_t i;
            json_t *e;
            json_array_foreach(add, i, e) {
                json_t *s = token_string(e);
                if (s) json_array_append_new(l, s);
            }
            json_object_set_new(m->special, "additional_special_tokens", l);
        }
    }
    if (!m->source) { /* newer checkpoints keep the template in its own file */
        snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
        if (file_exists(path)) {
            size_t len;
            rc = hr_read_file(path, &m->source, &len, err);
            if (rc) goto done;
        }
    }
    if (!m->source) {
        snprintf(path, sizeof(path), "%s/chat_template.json", dir);
        json_t *ct = file_exists(path) ? json_load_file(path, 0, NULL) : NULL;
        json_t *t = json_object_get(ct, "chat_template");
        if (json_is_string(t)) m->source = hr_xstrdup(json_string_value(t));
        else if (json_is_array(t)) rc = pick_named(t, tools, &m->source, err);
        json_decref(ct);
        if (rc) goto done;
    }
    if (!m->source && cfg) {
        json_t *t = json_object_get(cfg, "chat_template");
        if (json_is_string(t)) m->source = hr_xstrdup(json_string_value(t));
        else if (json_is_array(t)) rc = pick_named(t, tools, &m->source, err);
        if (rc) goto done;
    }
    if (!m->source)
        rc = hr_err_set(err, HR_ENOTFOUND, "%s has no chat template (chat_template.jinja, chat_template.json or "
                        "tokenizer_config.json's chat_template)", dir);
done:
    json_decref(cfg);
    return rc;
}

static void gguf_token(gguf_file *f, const char *id_key, const char *name, json_t *special) {
    const gguf_kv *toks = gguf_find_kv(f, "tokenizer.ggml.tokens");
    int64_t id = gguf_get_int(f, id_key, -1);
    if (!toks || toks->type != GGUF_TYPE_ARRAY || toks->arr_type != GGUF_TYPE_STRING || id < 0 ||
        (uint64_t)id >= toks->arr_len)
        return;
    gguf_str s = gguf_get_arr_str(toks, (uint64_t)id);
    json_t *js = json_stringn(s.ptr, (size_t)s.len);
    if (js) json_object_set_new(special, name, js);
}

static int load_gguf(const char *path, bool tools, chat_model *m, hr_err *err) {
    gguf_file *f = gguf_open(path, err);
    if (!f) return err->code ? err->code : HR_EIO;
    gguf_token(f, "tokenizer.ggml.bos_token_id", "bos_token", m->special);
    gguf_token(f, "tokenizer.ggml.eos_token_id", "eos_token", m->special);
    gguf_token(f, "tokenizer.ggml.unknown_token_id", "unk_token", m->special);
    gguf_token(f, "tokenizer.ggml.padding_token_id", "pad_token", m->special);
    int rc = HR_OK;
    if (!m->source) {
        if (tools) m->source = gguf_get_str(f, "tokenizer.chat_template.tool_use");
        if (!m->source) m->source = gguf_get_str(f, "tokenizer.chat_template");
        if (!m->source) rc = hr_err_set(err, HR_ENOTFOUND, "%s has no tokenizer.chat_template", path);
    }
    gguf_close(f);
    return rc;
}

static json_t *load_json(const char *path, const char *what) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) fprintf(stderr, "hearth chat-template: %s %s: %s (line %d)\n", what, path, je.text, je.line);
    return j;
}

int cmd_chat_template(int argc, char **argv) {
    chat_cli c;
    int prc = parse(argc, argv, &c);
    if (prc) return prc < 0 ? 0 : prc;
    int status = 1;
    hr_err err = {0};
    chat_model m = {.source = NULL, .special = json_object()};
    json_t *msgs = NULL, *tools = NULL, *extra = json_object();
    char *out = NULL;

    msgs = load_json(c.messages, "--messages");
    if (!msgs) goto done;
    if (json_is_object(msgs)) { /* {"messages": [...], "tools": [...]} */
        json_t *inner = json_incref(json_object_get(msgs, "messages"));
        if (!c.tools && json_is_array(json_object_get(msgs, "tools"))) tools = json_incref(json_object_get(msgs, "tools"));
        json_decref(msgs);
        msgs = inner;
    }
    if (!json_is_array(msgs)) {
        fprintf(stderr, "hearth chat-template: --messages must hold a JSON array of messages\n");
        goto done;
    }
    if (c.tools) {
        tools = load_json(c.tools, "--tools");
        if (!tools) goto done;
        if (!json_is_array(tools)) {
            fprintf(stderr, "hearth chat-template: --tools must hold a JSON array\n");
            goto done;
        }
    }
    if (c.tpl_file) {
        size_t len;
        if (hr_read_file(c.tpl_file, &m.source, &len, &err)) {
            fprintf(stderr, "hearth chat-template: %s\n", err.msg);
            goto done;
        }
    }
    if (c.model) {
        char path[4096];
        int rc = hr_model_path_resolve(c.model, path, sizeof(path), &err);
        if (rc == HR_OK) {
            size_t n = strlen(path);
            bool is_gguf = n > 5 && !strcmp(path + n - 5, ".gguf") && file_exists(path);
            rc = is_gguf ? load_gguf(path, tools != NULL, &m, &err) : load_dir(path, tools != NULL, &m, &err);
        }
        if (rc) {
            fprintf(stderr, "hearth chat-template: %s\n", err.msg);
            goto done;
        }
    }
    /* transformers passes every special token of the tokenizer as a variable */
    const char *k;
    json_t *v;
    json_object_foreach(m.special, k, v) {
        if (strcmp(k, "bos_token") && strcmp(k, "eos_token")) json_object_set(extra, k, v);
    }
    for (int i = 0; i < c.nvars; i++) {
        const char *eq = strchr(c.vars[i], '=');
        char key[256];
        snprintf(key, sizeof(key), "%.*s", (int)(eq - c.vars[i]), c.vars[i]);
        json_t *val = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
        if (!val) val = json_string(eq + 1);
        if (!val) {
            fprintf(stderr, "hearth chat-template: --var %s: value is not valid UTF-8\n", key);
            goto done;
        }
        json_object_set_new(extra, key, val);
    }
    if (tpl_render_chat(m.source, msgs, tools, c.add_gen, json_string_value(json_object_get(m.special, "bos_token")),
                        json_string_value(json_object_get(m.special, "eos_token")), extra, &out, &err)) {
        fprintf(stderr, "hearth chat-template: %s\n", err.msg);
        goto done;
    }
    fwrite(out, 1, strlen(out), stdout);
    fflush(stdout);
    status = 0;
done:
    free(out);
    free(m.source);
    json_decref(m.special);
    json_decref(msgs);
    json_decref(tools);
    json_decref(extra);
    return status;
}
