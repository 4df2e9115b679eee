/* cli.h - subcommands of the meshllm program. Each takes the arguments after its name
 * (argv[0] is the subcommand name) and returns the process exit status:
 * 0 success, 1 failure (message "meshllm: what: why" already printed), 2 misuse. */
#ifndef MESH_CLI_CLI_H
#define MESH_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>

struct cli_cmd {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

/* GETs url (bearer key if not NULL/empty) into *out (malloc'd, NUL-terminated, at most
 * 4 MiB). Returns 0, or 1 after printing "meshllm: <what>: ..." unless quiet. */
int cli_http_get(const char *what, const char *url, const char *key, bool quiet, char **out);
/* GETs url like cli_http_get but takes any HTTP answer: 0 with *status and the body in *out
 * (malloc'd, "" when empty), or 1 when none came (printed). */
int cli_http_fetch(const char *what, const char *url, const char *key, long *status, char **out);

/* The node data directory: opt (--data-dir) if given, else $MESHLLM_HOME, else ~/.meshllm
 * (written into buf). NULL when none can be named (no HOME). */
const char *cli_data_dir(const char *opt, char *buf, size_t cap);

/* The whole of path ("-": standard input), NUL-terminated (not counted in *len), malloc'd;
 * NULL after printing "meshllm: CMD: PATH: why" (the system's reason, or out of memory). */
char *cli_read_file(const char *cmd, const char *path, size_t *len);

/* Prints "meshllm: <fmt>" + newline to stderr. */
void cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_id(int argc, char **argv);
int cmd_peers(int argc, char **argv);
int cmd_mesh(int argc, char **argv);
int cmd_invite(int argc, char **argv);
int cmd_revoke(int argc, char **argv);
int cmd_join(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_route(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_template(int argc, char **argv);

#endif
