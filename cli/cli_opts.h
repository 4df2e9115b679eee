/* cli_opts.h - options shared by the commands that load a model and generate
 * (run, chat, later serve/bench): parsing, help text, and building the engine objects. */
#ifndef MESH_CLI_CLI_OPTS_H
#define MESH_CLI_CLI_OPTS_H

#include "engine/model.h"
#include "engine/sampler.h"

#include <stdbool.h>

enum { CLI_MAX_STOPS = 16 };

struct cli_gen_opts {
    struct sampler_params sp;
    int n_predict;                 /* -n; -1 = until end of text / context full */
    int n_ctx;                     /* --ctx; 0 = model default (capped at 4096) */
    int n_threads;                 /* -t; 0 = all cores */
    int n_batch;                   /* -b; 0 = 512 */
    enum model_kv_type kv_type;    /* --kv-type f16|f32 */
    bool mlock;                    /* --mlock */
    bool verbose;                  /* -v: timings and model info on stderr */
    const char *stops[CLI_MAX_STOPS];
    int n_stops;
};

void cli_gen_opts_default(struct cli_gen_opts *o);
/* Tries to consume argv[*i] (and its value). Returns 1 if consumed (and advances *i past
 * the value), 0 if the option is not a generation option, 2 on misuse (message printed). */
int cli_gen_opts_parse(struct cli_gen_opts *o, int argc, char **argv, int *i);
/* Help lines for the options above. */
void cli_gen_opts_help(FILE *f);

/* Loads the model and creates a context for it, printing "meshllm: ..." on failure. */
int cli_load_model(const char *path, const struct cli_gen_opts *o, int n_seq,
                   struct model **m, struct model_ctx **c);

#endif
