/* hearth command-line entry point: dispatches to one file per command. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

/* Weak placeholders so the binary links while a command is not written yet;
 * the real definitions in src/cli/<command>.c replace them. */
#define PLACEHOLDER(fn, what)                                                   \
    __attribute__((weak)) int fn(int argc, char **argv) {                       \
        (void)argc; (void)argv;                                                 \
        fprintf(stderr, "hearth: '%s' is not available in this build\n", what); \
        return 1;                                                               \
    }
PLACEHOLDER(cmd_generate, "generate")
PLACEHOLDER(cmd_serve, "serve")
PLACEHOLDER(cmd_bench, "bench")
PLACEHOLDER(cmd_tokenize, "tokenize")
PLACEHOLDER(cmd_detokenize, "detokenize")
PLACEHOLDER(cmd_chat_template, "chat-template")

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} k_commands[] = {
    {"serve",         cmd_serve,         "serve a model over an OpenAI-compatible HTTP API"},
    {"generate",      cmd_generate,      "generate text from a prompt, offline"},
    {"bench",         cmd_bench,         "benchmarks: latency, serve, copy"},
    {"tokenize",      cmd_tokenize,      "print the token ids of a text"},
    {"detokenize",    cmd_detokenize,    "print the text of token ids"},
    {"chat-template", cmd_chat_template, "render chat messages with the model's chat template"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: hearth COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        fprintf(f, "  %-14s %s\n", k_commands[i].name, k_commands[i].help);
    fprintf(f, "\n'hearth COMMAND --help' explains each command's flags.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hearth %s\n", HEARTH_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (!strcmp(argv[1], k_commands[i].name)) return k_commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "hearth: unknown command '%s' (see hearth --help)\n", argv[1]);
    return 2;
}
