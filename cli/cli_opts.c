/* cli_opts.c - options shared by run and chat (see cli_opts.h). Flag names follow
 * llama.cpp's (-n, -c/--ctx-size, -t, --temp, --top-k, --top-p, --min-p, --repeat-penalty,
 * --repeat-last-n, -s/--seed, -r/--reverse-prompt) with the long forms. */
#include <stdio.h>

#include "cli/cli_opts.h"

#include "cli/cli.h"
#include "core/err.h"
#include "net/peer_id.h"
#include "node/mesh.h"
#include "engine/chat.h"
#include "node/registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool chat_template_name_ok(const char *v)
{
    if (chat_tmpl_from_name(v) != CHAT_TMPL_UNKNOWN || chat_builtin_source(v)) return true;
    if (access(v, R_OK) == 0) return true;
    cli_fail("--chat-template %s: not a readable .jinja file (%s), a family (chatml, llama2, "
             "llama2-sys, llama3, llama3.1, mistral-v1, mistral-v3, mistral-v3-tekken, "
             "mistral-v7, phi3, phi4, zephyr, gemma) nor a built-in template (qwen2.5-tools, "
             "llama3.1-tools, mistral-v3-tools, hermes2pro-tools)", v, strerror(errno));
    return false;
}

void cli_gen_opts_default(struct cli_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    sampler_params_default(&o->sp);
    o->n_predict = -1;
    o->k_type = MODEL_KV_F16;
    o->v_type = MODEL_KV_F16;
    cli_spec_opts_default(&o->spec);
}

void cli_spec_opts_default(struct cli_spec_opts *o)
{
    memset(o, 0, sizeof *o);
    o->n_draft_max = SPEC_DRAFT_MAX_DEFAULT;
    o->n_draft_min = 1;
}


static bool is(const char *a, const char *s1, const char *s2)
{
    return !strcmp(a, s1) || (s2 && !strcmp(a, s2));
}

static int parse_int(const char *opt, const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        cli_fail("%s: '%s' is not an integer in [%ld, %ld]", opt, v, lo, hi);
        return 2;
    }
    *out = x;
    return 0;
}

static int parse_float(const char *opt, const char *v, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || end == v || x != x) {
        cli_fail("%s: '%s' is not a number", opt, v);
        return 2;
    }
    *out = x;
    return 0;
}

int cli_spec_opts_parse(struct cli_spec_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    bool known = is(a, "--spec", NULL) || is(a, "--draft", "-md") || is(a, "--model-draft", NULL) ||
                 is(a, "--draft-max", "--draft-n") || is(a, "--draft-min", "--draft-n-min");
    if (!known) return 0;
    if (*i + 1 >= argc) {
        cli_fail("%s needs a value", a);
        return 2;
    }
    const char *v = argv[++*i];
    long x;
    if (is(a, "--spec", NULL)) {
        if (spec_mode_parse(v, &o->mode)) {
            cli_fail("--spec: '%s' is not ngram, draft or off", v);
            return 2;
        }
        o->has_mode = true;
    } else if (is(a, "--draft", "-md") || is(a, "--model-draft", NULL)) {
        o->draft_path = v;
    } else if (is(a, "--draft-max", "--draft-n")) {
        if (parse_int(a, v, 1, SPEC_DRAFT_MAX_CAP, &x)) return 2;
        o->n_draft_max = (int)x;
    } else {
        if (parse_int(a, v, 1, SPEC_DRAFT_MAX_CAP, &x)) return 2;
        o->n_draft_min = (int)x;
    }
    return 1;
}

int cli_spec_opts_apply(struct cli_spec_opts *o, const char *cmd, struct sched_params *sp)
{
    if (!o->has_mode) o->mode = o->draft_path ? SPEC_DRAFT : SPEC_OFF;
    if (o->mode == SPEC_DRAFT && !o->draft_path) {
        cli_fail("%s: --spec draft needs a draft model (--draft MODEL.gguf)", cmd);
        return 2;
    }
    if (o->mode == SPEC_NGRAM && o->draft_path) {
        cli_fail("%s: --draft gives a draft model, but --spec ngram drafts without one", cmd);
        return 2;
    }
    if (o->n_draft_min > o->n_draft_max) {
        cli_fail("%s: --draft-min %d is above --draft-max %d", cmd, o->n_draft_min, o->n_draft_max);
        return 2;
    }
    sp->spec = o->mode;
    sp->draft_path = o->mode == SPEC_DRAFT ? o->draft_path : NULL;
    sp->n_draft_max = o->n_draft_max;
    sp->n_draft_min = o->n_draft_min;
    return 0;
}

void cli_spec_opts_help(FILE *f)
{
    fprintf(f,
            "      --spec MODE        speculative decoding: ngram (prompt lookup), draft (a\n"
            "                         draft model), off (default, draft with --draft)\n"
            "      --draft MODEL      draft model sharing the model's vocabulary (-md,\n"
            "                         --model-draft)\n"
            "      --draft-max K      tokens proposed per step (default %d; --draft-n)\n"
            "      --draft-min K      propose nothing shorter than K (default 1; --draft-n-min)\n",
            SPEC_DRAFT_MAX_DEFAULT);
}

int cli_gen_opts_parse(struct cli_gen_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    int sr = cli_spec_opts_parse(&o->spec, argc, argv, i);
    if (sr) return sr;
    bool known = is(a, "-n", "--n-predict") || is(a, "-c", "--ctx") || is(a, "--ctx-size", NULL) ||
                 is(a, "-t", "--threads") || is(a, "-b", "--batch-size") ||
                 is(a, "--temp", NULL) || is(a, "--top-k", NULL) || is(a, "--top-p", NULL) ||
                 is(a, "--min-p", NULL) || is(a, "--repeat-penalty", NULL) ||
                 is(a, "--repeat-last-n", NULL) || is(a, "--presence-penalty", NULL) ||
                 is(a, "--frequency-penalty", NULL) || is(a, "-s", "--seed") ||
                 is(a, "--stop", "-r") || is(a, "--reverse-prompt", NULL) ||
                 is(a, "--kv-type", NULL) || is(a, "-ctk", "--cache-type-k") ||
                 is(a, "-ctv", "--cache-type-v");
    if (is(a, "--mlock", NULL)) {
        o->mlock = true;
        return 1;
    }
    if (is(a, "-v", "--verbose")) {
        o->verbose = true;
        return 1;
    }
    if (!known) return 0;
    if (*i + 1 >= argc) {
        cli_fail("%s needs a value", a);
        return 2;
    }
    const char *v = argv[++*i];
    long x;
    int rc = 0;
    if (is(a, "-n", "--n-predict")) {
        if (!(rc = parse_int(a, v, -1, 1 << 24, &x))) o->n_predict = (int)x;
    } else if (is(a, "-c", "--ctx") || is(a, "--ctx-size", NULL)) {
        if (!(rc = parse_int(a, v, 0, 1 << 24, &x))) o->n_ctx = (int)x;
    } else if (is(a, "-t", "--threads")) {
        if (!(rc = parse_int(a, v, 0, 1024, &x))) o->n_threads = (int)x;
    } else if (is(a, "-b", "--batch-size")) {
        if (!(rc = parse_int(a, v, 1, 1 << 16, &x))) o->n_batch = (int)x;
    } else if (is(a, "--temp", NULL)) {
        rc = parse_float(a, v, &o->sp.temp);
    } else if (is(a, "--top-k", NULL)) {
        if (!(rc = parse_int(a, v, 0, 1 << 24, &x))) o->sp.top_k = (int)x;
    } else if (is(a, "--top-p", NULL)) {
        rc = parse_float(a, v, &o->sp.top_p);
    } else if (is(a, "--min-p", NULL)) {
        rc = parse_float(a, v, &o->sp.min_p);
    } else if (is(a, "--repeat-penalty", NULL)) {
        rc = parse_float(a, v, &o->sp.repeat_penalty);
    } else if (is(a, "--repeat-last-n", NULL)) {
        if (!(rc = parse_int(a, v, -1, 1 << 24, &x))) o->sp.penalty_last_n = (int)x;
    } else if (is(a, "--presence-penalty", NULL)) {
        rc = parse_float(a, v, &o->sp.presence_penalty);
    } else if (is(a, "--frequency-penalty", NULL)) {
        rc = parse_float(a, v, &o->sp.frequency_penalty);
    } else if (is(a, "-s", "--seed")) {
        char *end;
        errno = 0;
        long long s = strtoll(v, &end, 10);
        if (errno || *end || end == v) {
            cli_fail("%s: '%s' is not an integer", a, v);
            rc = 2;
        } else {
            o->sp.seed = s < 0 ? SAMPLER_SEED_RANDOM : (uint64_t)s;
        }
    } else if (is(a, "--stop", "-r") || is(a, "--reverse-prompt", NULL)) {
        if (o->n_stops >= CLI_MAX_STOPS) {
            cli_fail("at most %d --stop strings", CLI_MAX_STOPS);
            rc = 2;
        } else if (!*v) {
            cli_fail("--stop: the stop string is empty");
            rc = 2;
        } else {
            o->stops[o->n_stops++] = v;
        }
    } else if (is(a, "--kv-type", NULL) || is(a, "-ctk", "--cache-type-k") ||
               is(a, "-ctv", "--cache-type-v")) {
        int t = model_kv_type_parse(v);
        if (t < 0) {
            cli_fail("%s: '%s' is not f16, f32, q8_0 or q4_0", a, v);
            rc = 2;
        } else {
            if (!is(a, "-ctv", "--cache-type-v")) o->k_type = (enum model_kv_type)t;
            if (!is(a, "-ctk", "--cache-type-k")) o->v_type = (enum model_kv_type)t;
        }
    }
    return rc ? rc : 1;
}

void cli_gen_opts_help(FILE *f)
{
    fprintf(f,
            "  -n, --n-predict N      tokens to generate (default -1: until end of text)\n"
            "  -c, --ctx N            context length (default: the model's, at most 4096)\n"
            "  -t, --threads N        threads (default: all cores)\n"
            "  -b, --batch-size N     prompt tokens per forward pass (default 512)\n"
            "      --temp T           temperature; 0 = greedy (default 0.8)\n"
            "      --top-k K          keep the K most likely tokens; 0 = off (default 40)\n"
            "      --top-p P          nucleus sampling; 1 = off (default 0.95)\n"
            "      --min-p P          drop tokens below P x the best; 0 = off (default 0.05)\n"
            "      --repeat-penalty R penalise repeats of the last N tokens; 1 = off (default 1)\n"
            "      --repeat-last-n N  tokens the penalties look at (default 64, -1 = context)\n"
            "      --presence-penalty P, --frequency-penalty F   OpenAI-style penalties (0)\n"
            "  -s, --seed S           random seed (default: random)\n"
            "  -r, --stop STR         stop when STR is generated (repeatable)\n"
            "  -ctk, --cache-type-k T K cache type: f16 (default), f32, q8_0, q4_0\n"
            "  -ctv, --cache-type-v T V cache type: f16 (default), f32, q8_0, q4_0\n"
            "      --kv-type T        both at once\n"
            "      --mlock            keep the model in RAM\n"
            "  -v, --verbose          print timings and model facts to stderr\n");
}

int cli_parse_layers(const char *v, int *begin, int *end)
{
    if (!strcmp(v, "none")) {
        *begin = *end = 0;
        return 0;
    }
    char *dash;
    long a = strtol(v, &dash, 10);
    if (dash == v || *dash != '-' || a < 0 || a > 65535) return MESH_EINVAL;
    char *stop;
    long b = strtol(dash + 1, &stop, 10);
    if (stop == dash + 1 || *stop || b < a || b > 65535) return MESH_EINVAL;
    *begin = (int)a;
    *end = (int)b + 1;
    return 0;
}

void cli_mesh_opts_default(struct cli_mesh_opts *o)
{
    memset(o, 0, sizeof *o);
    o->route_wait_s = 30;
}

int cli_mesh_opts_parse(struct cli_mesh_opts *o, const char *cmd, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (is(a, "--no-mdns", NULL) || is(a, "--auto-split", NULL) ||
        is(a, "--accept-stages", NULL) || is(a, "--mesh", NULL)) {
        if (is(a, "--no-mdns", NULL)) o->no_mdns = true;
        if (is(a, "--auto-split", NULL)) o->auto_split = true;
        if (is(a, "--accept-stages", NULL)) o->accept_stages = true;
        if (is(a, "--mesh", NULL)) o->mesh_fit = true;
        return 1;
    }
    bool known = is(a, "--layers", NULL) || is(a, "--join", NULL) || is(a, "--data-dir", NULL) ||
                 is(a, "--p2p-listen", NULL) || is(a, "--bootstrap", NULL) ||
                 is(a, "--route-wait", NULL);
    if (!known) return 0;
    if (*i + 1 >= argc) {
        cli_fail("%s: %s needs a value", cmd, a);
        return 2;
    }
    const char *v = argv[++*i];
    if (is(a, "--layers", NULL)) {
        if (cli_parse_layers(v, &o->layer_begin, &o->layer_end)) {
            cli_fail("%s: --layers %s: say A-B (first and last layer, from 0) or none", cmd, v);
            return 2;
        }
        o->has_layers = true;
    } else if (is(a, "--join", NULL)) {
        o->join = v;
    } else if (is(a, "--data-dir", NULL)) {
        o->data_dir = v;
    } else if (is(a, "--route-wait", NULL)) {
        long x;
        if (parse_int(a, v, 0, 3600, &x)) return 2;
        o->route_wait_s = (int)x;
    } else {
        bool is_listen = is(a, "--p2p-listen", NULL);
        size_t *cnt = is_listen ? &o->n_listen : &o->n_boot;
        size_t cap = is_listen ? P2PNODE_MAX_LISTEN : P2PNODE_MAX_BOOTSTRAP;
        if (*cnt == cap) {
            cli_fail("%s: at most %zu %s addresses", cmd, cap, a);
            return 2;
        }
        struct multiaddr *ma = is_listen ? &o->listen[*cnt] : &o->boot[*cnt];
        struct peer_id pid;
        if (multiaddr_from_text(v, ma)) {
            cli_fail("%s: bad value '%s' for %s", cmd, v, a);
            return 2;
        }
        if (!is_listen && multiaddr_peer_id(ma, &pid) != 0) {
            cli_fail("%s: --bootstrap %s: the address must end in /p2p/<peer id>", cmd, v);
            return 2;
        }
        (*cnt)++;
    }
    return 1;
}

int cli_mesh_config(const struct cli_mesh_opts *o, const char *cmd, char *dir_buf,
                    size_t dir_cap, struct mesh_config *out)
{
    memset(out, 0, sizeof *out);
    const char *dir = cli_data_dir(o->data_dir, dir_buf, dir_cap);
    if (!dir) {
        cli_fail("%s: neither MESHLLM_HOME nor HOME is set; pass --data-dir DIR", cmd);
        return 1;
    }
    out->data_dir = dir;
    out->listen = o->listen;
    out->n_listen = o->n_listen;
    out->bootstrap = o->boot;
    out->n_bootstrap = o->n_boot;
    out->use_mdns = !o->no_mdns;
    out->join_token = o->join;
    return 0;
}

void cli_mesh_print(struct mesh *m, FILE *f)
{
    char text[MULTIADDR_TEXT_CAP];
    struct p2pnode *pn = mesh_p2pnode(m);
    if (peer_id_to_text(p2pnode_peer_id(pn), text, sizeof text) == 0)
        fprintf(f, "meshllm: peer ID %s\n", text);
    struct multiaddr addrs[32];
    size_t n = p2pnode_listen_addrs(pn, addrs, 32);
    for (size_t i = 0; i < n; i++)
        if (multiaddr_to_text(&addrs[i], text, sizeof text) == 0)
            fprintf(f, "meshllm: p2p listening on %s\n", text);
    if (mesh_id(m)[0])
        fprintf(f, "meshllm: member of mesh %s\n", mesh_id(m));
    else
        fprintf(f, "meshllm: in no mesh yet: no peer is admitted and nothing is delegated "
                   "(make one with 'meshllm mesh create', or join one with 'meshllm join "
                   "TOKEN')\n");
}

void cli_mesh_opts_help(FILE *f)
{
    fprintf(f,
            "\nsplit models over the mesh (docs/SPLIT.md):\n"
            "      --layers A-B       hold only layers A..B here (or 'none': the embedding and\n"
            "                         head only) and run the rest on the mesh's stages\n"
            "      --mesh             split only when the file does not fit in free memory:\n"
            "                         hold the layers that fit, the rest from the mesh\n"
            "      --auto-split       ask members started with --accept-stages to load the\n"
            "                         layers nobody serves (in proportion to memory x speed)\n"
            "      --route-wait S     wait up to S seconds for stages (default 30)\n"
            "      --join TOKEN       join the mesh of an invite first\n"
            "      --data-dir DIR     node key directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
            "      --p2p-listen MA    listen on multiaddr MA (default /ip4/0.0.0.0/tcp/0)\n"
            "      --bootstrap MA     a peer to dial first, /ip4/A/tcp/P/p2p/ID (repeatable)\n"
            "      --no-mdns          do not look for peers on the LAN with mDNS\n");
}

static int64_t load_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_load_bar_init(struct cli_load_bar *b, const char *name)
{
    b->name = name;
    b->tty = isatty(2) == 1;
    b->t0_ms = b->last_ms = load_now_ms();
}

double cli_load_bar_seconds(const struct cli_load_bar *b)
{
    return (double)(load_now_ms() - b->t0_ms) / 1000.0;
}

void cli_load_bar_update(void *arg, int n_done, int n_total, uint64_t bytes_done,
                         uint64_t bytes_total)
{
    struct cli_load_bar *b = arg;
    if (!b->tty) return;
    if (n_done >= n_total) { /* the end: clear the bar, the caller prints its ready line */
        fprintf(stderr, "\r\033[K");
        return;
    }
    int64_t now = load_now_ms();
    if (now - b->last_ms < 100) return;
    b->last_ms = now;
    int pct = bytes_total ? (int)(100.0 * (double)bytes_done / (double)bytes_total) : 0;
    char bar[31];
    for (int i = 0; i < 30; i++) bar[i] = i < pct * 30 / 100 ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\r\033[Kloading %s [%s] %3d%% %d/%d tensors %.2f/%.2f GiB", b->name, bar,
            pct, n_done, n_total, (double)bytes_done / (1 << 30), (double)bytes_total / (1 << 30));
}

int cli_load_model(const char *path, const struct cli_gen_opts *o, int n_seq, struct model **m,
                   struct model_ctx **c)
{
    char err[1024] = "";
    *m = NULL;
    *c = NULL;
    struct model_load_opts lo = {.use_mlock = o->mlock};
    /* a path, a NAME.gguf in the models folder, or a store name (node/registry.h) */
    char resolved[4096], name[256] = "";
    if (registry_resolve(path, resolved, sizeof resolved, name, sizeof name, err, sizeof err)) {
        if (!strchr(path, '/')) {
            cli_fail("%s", err);
            return MESH_ENOTFOUND;
        }
        snprintf(resolved, sizeof resolved, "%s", path); /* a path: the loader says why */
    }
    struct cli_load_bar bar;
    cli_load_bar_init(&bar, name[0] ? name : path);
    lo.progress = cli_load_bar_update;
    lo.progress_arg = &bar;
    int rc = model_load(resolved, &lo, m, err, sizeof err);
    if (rc < 0) {
        cli_fail("%s", err);
        return rc;
    }
    struct model_ctx_params p;
    model_ctx_params_default(&p);
    p.n_ctx = o->n_ctx;
    p.n_threads = o->n_threads;
    p.n_batch = o->n_batch;
    p.n_seq = n_seq;
    p.k_type = o->k_type;
    p.v_type = o->v_type;
    rc = model_ctx_new(*m, &p, c, err, sizeof err);
    if (rc < 0) {
        cli_fail("%s: %s", path, err[0] ? err : err_str(rc));
        model_free(*m);
        *m = NULL;
        return rc;
    }
    if (o->verbose || bar.tty) cli_load_ready_line(stderr, bar.name, *m, cli_load_bar_seconds(&bar));
    char line[256];
    model_ctx_kv_describe(*c, line, sizeof line);
    fprintf(stderr, "meshllm: %s\n", line);
    return rc;
}

void cli_load_ready_line(FILE *f, const char *name, const struct model *m, double load_s)
{
    const struct model_hparams *hp = model_hparams(m);
    const char *ft = hp->file_type >= 0 ? model_ftype_name(hp->file_type) : "unknown";
    fprintf(f, "meshllm: model %s ready in %.2f s (%s%s%d layers, %.0f MiB of weights)\n", name,
            load_s, strcmp(ft, "unknown") ? ft : "", strcmp(ft, "unknown") ? ", " : "",
            hp->n_layer, (double)model_weight_bytes(m) / (1 << 20));
}
