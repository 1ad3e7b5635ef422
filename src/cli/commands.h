/* One function per `hearth` sub-command, each in its own file of src/cli.
 * Each returns the process exit status (0 ok, 1 error, 2 bad usage). */
#ifndef HEARTH_CLI_COMMANDS_H
#define HEARTH_CLI_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_bench_serve(int argc, char **argv); /* bench_serve.c, called by cmd_bench */
int cmd_bench_gemm(int argc, char **argv);  /* bench_gemm.c, called by cmd_bench */

#endif
