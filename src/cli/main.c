/* hearth command-line entry point: dispatches to one file per command. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: hearth COMMAND [options]\n");
        return argc < 2 ? 1 : 0;
    }
    fprintf(stderr, "hearth: unknown command '%s' (see hearth --help)\n", argv[1]);
    return 1;
}
