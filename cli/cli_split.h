/* cli_split.h - `run` and `chat` on a model that is not whole on this node, and the
 * scheduler loop they (and `run --spec`) generate with.
 *
 * A model runs split when --layers says so, or with --mesh when its file does not fit in
 * free memory (then this node holds the leading layers that fit, maybe none). The node
 * joins its mesh as `serve` does (node/service.h: the same registry entry, pipeline and
 * scheduler), waits for a route over the stages that members announce, and generates
 * through that scheduler: greedy output is a single node's, token for token.
 */
#ifndef MESH_CLI_CLI_SPLIT_H
#define MESH_CLI_CLI_SPLIT_H

#include "cli/cli_opts.h"
#include "node/service.h"

#include <stdbool.h>
#include <stdint.h>

struct cli_split {
    struct service *svc;
    struct registry_entry *e;       /* the model (its scheduler runs through the route) */
    char dir_buf[4096];
};

/* Opens the model split when the options ask for it: 0 with *is_split false (run it whole
 * as before: nothing was started), 0 with *is_split true (cs is ready: a route covers every
 * layer), 1 (failure, printed as "meshllm: cmd: ...") or 2 (misuse, printed). sp holds the
 * scheduler's parameters (slots, context, threads, speculative decoding). verbose prints
 * the node's identity and the route to stderr. */
int cli_split_open(struct cli_split *cs, const char *cmd, const char *model,
                   const struct cli_mesh_opts *mo, const struct sched_params *sp, bool verbose,
                   bool *is_split);
void cli_split_close(struct cli_split *cs);

/* What a generation gave. */
struct cli_sched_result {
    int n_gen;
    double t_submit_ms, t_first_ms, t_end_ms; /* CLOCK_MONOTONIC */
    char finish[16];                          /* "stop", "length", "cancelled", "error" */
};
/* Text (len bytes) and ids of newly generated tokens; nonzero cancels the generation. */
typedef int (*cli_sched_emit_fn)(void *user, const char *text, size_t len, const int32_t *ids,
                                 int n_ids);
/* Generates ids[n_ids] with gp on s, calling emit as chunks come, until the request ends.
 * 0 (res filled; finish says how it ended), MESH_ERANGE (the prompt does not fit), or the
 * submit's MESH_E* code. */
int cli_sched_generate(struct sched *s, const int32_t *ids, int n_ids,
                       const struct sched_gen_params *gp, cli_sched_emit_fn emit, void *user,
                       struct cli_sched_result *res);

#endif
