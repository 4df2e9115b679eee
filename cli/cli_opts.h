/* cli_opts.h - options shared by the commands that load a model and generate
 * (run, chat, later serve/bench): parsing, help text, and building the engine objects. */
#ifndef MESH_CLI_CLI_OPTS_H
#define MESH_CLI_CLI_OPTS_H

#include "engine/model.h"
#include "engine/sampler.h"
#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "node/sched.h"

#include <stdbool.h>
#include <stdio.h>

enum { CLI_MAX_STOPS = 16 };

/* Speculative decoding (node/spec.h), for run and serve: --spec ngram|draft|off,
 * --draft / -md / --model-draft MODEL, --draft-max / --draft-n K, --draft-min / --draft-n-min K
 * (llama.cpp's spellings too). Off unless --draft is given (then draft) or --spec asks. */
struct cli_spec_opts {
    enum spec_mode mode;
    bool has_mode;                 /* --spec was given */
    const char *draft_path;
    int n_draft_max, n_draft_min;
};
void cli_spec_opts_default(struct cli_spec_opts *o);
/* Like cli_gen_opts_parse: 1 consumed, 0 not a spec option, 2 misuse (printed). */
int cli_spec_opts_parse(struct cli_spec_opts *o, int argc, char **argv, int *i);
/* Settles the mode (--draft alone means draft) and writes it into *sp. 0, or 2 on a
 * contradiction (message printed as "meshllm: cmd: ..."). */
int cli_spec_opts_apply(struct cli_spec_opts *o, const char *cmd, struct sched_params *sp);
void cli_spec_opts_help(FILE *f);

struct cli_gen_opts {
    struct sampler_params sp;
    int n_predict;                 /* -n; -1 = until end of text / context full */
    int n_ctx;                     /* --ctx; 0 = model default (capped at 4096) */
    int n_threads;                 /* -t; 0 = all cores */
    int n_batch;                   /* -b; 0 = 512 */
    enum model_kv_type k_type;     /* -ctk / --kv-type: f16 f32 q8_0 q4_0 */
    enum model_kv_type v_type;     /* -ctv / --kv-type */
    bool mlock;                    /* --mlock */
    bool verbose;                  /* -v: timings and model info on stderr */
    const char *stops[CLI_MAX_STOPS];
    int n_stops;
    struct cli_spec_opts spec;     /* parsed by cli_gen_opts_parse too */
};

void cli_gen_opts_default(struct cli_gen_opts *o);
/* Tries to consume argv[*i] (and its value). Returns 1 if consumed (and advances *i past
 * the value), 0 if the option is not a generation option, 2 on misuse (message printed). */
int cli_gen_opts_parse(struct cli_gen_opts *o, int argc, char **argv, int *i);
/* Help lines for the options above. */
void cli_gen_opts_help(FILE *f);

/* The mesh options of serve, run and chat (docs/CLI.md, docs/SPLIT.md): --layers A-B|none,
 * --join TOKEN, --data-dir DIR, --p2p-listen MA, --bootstrap MA, --no-mdns, --auto-split,
 * --accept-stages (serve), --mesh and --route-wait S (run, chat). */
struct cli_mesh_opts {
    bool has_layers;               /* --layers: the model is split */
    int layer_begin, layer_end;    /* [begin, end); equal: none */
    const char *join;
    const char *data_dir;
    struct multiaddr listen[P2PNODE_MAX_LISTEN];
    size_t n_listen;
    struct multiaddr boot[P2PNODE_MAX_BOOTSTRAP];
    size_t n_boot;
    bool no_mdns;
    bool auto_split;               /* ask members with --accept-stages to load missing layers */
    bool accept_stages;            /* load layer ranges that members ask for */
    bool mesh_fit;                 /* --mesh: split the model when it does not fit free RAM */
    int route_wait_s;              /* run/chat: how long to wait for a route (default 30) */
};
void cli_mesh_opts_default(struct cli_mesh_opts *o);
/* Like cli_gen_opts_parse (1 consumed, 0 not a mesh option, 2 misuse, printed with cmd). */
int cli_mesh_opts_parse(struct cli_mesh_opts *o, const char *cmd, int argc, char **argv, int *i);
/* The help lines of the options run and chat take. */
void cli_mesh_opts_help(FILE *f);
/* The mesh_config of these options (reg left NULL; the data directory is written into
 * dir_buf, which must outlive out). 0, or 1 (printed as "meshllm: cmd: ..."). */
struct mesh_config;
int cli_mesh_config(const struct cli_mesh_opts *o, const char *cmd, char *dir_buf,
                    size_t dir_cap, struct mesh_config *out);
/* Prints the node's peer ID, p2p addresses and mesh to f ("meshllm: ..." lines). */
struct mesh;
void cli_mesh_print(struct mesh *m, FILE *f);
/* --layers A-B (inclusive, as a user counts them) or none, into [begin, end). 0 or
 * MESH_EINVAL. */
int cli_parse_layers(const char *v, int *begin, int *end);
/* --chat-template's value is usable: a C family, a built-in Jinja template or a readable
 * file. Prints "meshllm: --chat-template ...: ..." and returns false if not. */
bool chat_template_name_ok(const char *v);

/* Loads the model and creates a context for it, printing "meshllm: ..." on failure. */
int cli_load_model(const char *path, const struct cli_gen_opts *o, int n_seq,
                   struct model **m, struct model_ctx **c);

/* A load's progress bar on stderr when it is a terminal ("loading NAME [###...] 45%
 * 90/201 tensors 1.2/2.6 GiB", redrawn at most every 100 ms), cleared at the end. Fill
 * name (and zero the rest) before the first call; one load per struct; not thread-safe. */
struct cli_load_bar {
    const char *name;
    bool tty;
    int64_t t0_ms, last_ms;
};
void cli_load_bar_init(struct cli_load_bar *b, const char *name);
/* model_progress_fn for model_load_opts (arg: struct cli_load_bar *). */
void cli_load_bar_update(void *arg, int n_done, int n_total, uint64_t bytes_done,
                         uint64_t bytes_total);
/* Seconds since cli_load_bar_init. */
double cli_load_bar_seconds(const struct cli_load_bar *b);
/* "meshllm: model NAME ready in 0.42 s (Q4_0, 22 layers, 606 MiB of weights)" on f. */
void cli_load_ready_line(FILE *f, const char *name, const struct model *m, double load_s);

#endif
