/* cmd_serve.c - `meshllm serve`: load models and serve the OpenAI/Ollama API and console.
 *
 * Listens first, then loads the models in the background (requests for a model still loading
 * get 503), prints where the API and console are, and serves until SIGINT/SIGTERM; then
 * stops gracefully: running streams end with their final events before sockets close.
 * Signals are blocked in every thread and taken with sigwait() by the main thread.
 */
#include "api/http.h"
#include "api/openai.h"
#include "cli/cli.h"
#include "cli/cli_opts.h"
#include "core/err.h"
#include "core/log.h"
#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "net/peer_id.h"
#include "node/mesh.h"
#include "node/registry.h"
#include "node/router.h"
#include "node/service.h"
#include "node/sched.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVE_MAX_MODELS 16
#define SERVE_MAX_NAMES 32 /* --allowed-host and --cors values each (API_GUARD_MAX_NAMES) */

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: meshllm serve [--model PATH_OR_NAME ...] [options]\n\n"
            "Serves the OpenAI-compatible API, the Ollama API and the web console.\n"
            "Without --model it is a lite node: console and API, every answer from a peer.\n\n"
            "  -m, --model M        model file, or a name in $MESHLLM_MODELS or ~/.meshllm/models\n"
            "  -a, --alias NAME     the API's name for the model given last (default: its file\n"
            "                       name without .gguf), as llama-server's --alias\n"
            "      --host ADDR      address to bind (default 127.0.0.1)\n"
            "      --port N         API and console port (default 9337; 0 = any free port)\n"
            "      --ollama-port N  also listen on N (Ollama's default is 11434)\n"
            "      --api-key KEY    require 'Authorization: Bearer KEY' (default: $MESHLLM_API_KEY);\n"
            "                       serving off loopback without one prints a warning\n"
            "      --api-key-file F the key is the first line of file F (keeps it out of ps)\n"
            "      --allowed-host NAME  also answer requests whose Host is NAME (repeatable;\n"
            "                       '*.example.com', '*' = any; default $MESHLLM_ALLOWED_HOSTS,\n"
            "                       comma-separated). Loopback names and the --host address\n"
            "                       are always allowed; others get 403 (DNS rebinding)\n"
            "      --cors ORIGIN    let web pages of ORIGIN call the API (repeatable; e.g.\n"
            "                       http://localhost:3000, http://localhost:*, or * for any;\n"
            "                       default $MESHLLM_CORS, else $OLLAMA_ORIGINS). Other pages\n"
            "                       get 403; the console is same-origin and always works\n"
            "      --slots N        concurrent sequences per model (default 8; -np, --parallel)\n"
            "      --ctx N          context positions per sequence (default: the model's, max 4096;\n"
            "                       -c, --ctx-size)\n"
            "      --batch N        tokens per decode step (default 512)\n"
            "  -ctk, --cache-type-k T  K cache type: f16 (default), f32, q8_0, q4_0\n"
            "  -ctv, --cache-type-v T  V cache type (q8_0 halves the cache; see 'perplexity')\n"
            "      --kv-type T      both at once\n"
            "      -ngl, -fa, -ts, -mg N  llama-server's GPU flags: accepted and ignored with\n"
            "                       one line (this build runs on the CPU)\n"
            "      --queue N        requests waiting for a slot before 429 (default 64)\n"
            "      --idle-timeout S close connections idle for S seconds (default 15)\n"
            "      --rate-limit N   generation requests a minute per client address, then 429\n"
            "                       (default 0 = no limit)\n"
            "  -t, --threads N      threads per model (default: all cores)\n"
            "      --temp T, --top-p P, --top-k K, --min-p P, --repeat-penalty R, -n N\n"
            "                       sampling defaults for OpenAI-route requests that leave the\n"
            "                       field out (as llama-server; Ollama routes keep Ollama's)\n"
            "      --spec MODE      speculative decoding: ngram (prompt lookup), draft (a draft\n"
            "                       model), off (default; draft when --draft is given)\n"
            "      --draft MODEL    draft model sharing the model's vocabulary (-md,\n"
            "                       --model-draft); it runs here, also for a split model\n"
            "      --draft-max K    tokens proposed per step (default 8; --draft-n)\n"
            "      --draft-min K    propose nothing shorter than K (default 1; --draft-n-min)\n"
            "\nthe mesh (docs/MESH.md, docs/PRIVACY.md):\n"
            "      --route R        where requests may run: local (default: nothing leaves this\n"
            "                       device), own (also your devices holding the owner key) or\n"
            "                       mesh (any admitted peer); a request may choose with the\n"
            "                       'meshllm.route' body field or X-Meshllm-Route header\n"
            "                       (default $MESHLLM_ROUTE; a lite node's default is mesh)\n"
            "      --join TOKEN     join the mesh of an invite first (see 'meshllm join')\n"
            "      --chat-template T  render chats with T instead of each model's own template:\n"
            "                       a family (chatml, llama3, ...), a built-in Jinja template\n"
            "                       (qwen2.5-tools, llama3.1-tools, mistral-v3-tools,\n"
            "                       hermes2pro-tools) or a .jinja file\n"
            "      --layers A-B     hold only layers A..B of the model (from 0), or 'none' (its\n"
            "                       embedding and head only); the other layers run on members\n"
            "                       serving them (docs/SPLIT.md); turns on p2p\n"
            "      --auto-split     with --layers: ask members started with --accept-stages to\n"
            "                       load the layers nobody serves (memory x speed shares)\n"
            "      --accept-stages  load layer ranges members ask for (a file with the same\n"
            "                       SHA-256 in the store or at their path); off by default\n"
            "\npeer-to-peer (on with --p2p, --join, --route own|mesh, --layers or no --model):\n"
            "      --p2p            start the libp2p host (default listen /ip4/0.0.0.0/tcp/4001\n"
            "                       and /ip6/::/tcp/4001), DHT, GossipSub and mDNS\n"
            "      --p2p-listen MA  listen on multiaddr MA instead (repeatable)\n"
            "      --bootstrap MA   DHT bootstrap peer, /ip4/A/tcp/P/p2p/ID (repeatable)\n"
            "      --no-mdns        do not look for peers on the LAN with mDNS\n"
            "      --public         also bootstrap from public peers (none are configured yet)\n"
            "      --data-dir DIR   node key directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
            "\nexample: meshllm serve --model stories260K.gguf --port 9337\n");
}

static int parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) return MESH_EINVAL;
    *out = (float)v;
    return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return MESH_EINVAL;
    *out = (int)v;
    return 0;
}

struct serve_args {
    const char *models[SERVE_MAX_MODELS];
    const char *aliases[SERVE_MAX_MODELS]; /* --alias: the API name of models[i], or NULL */
    int n_models;
    bool p2p, public_peers;
    struct cli_mesh_opts mo;    /* --layers, --join, --p2p-listen, --auto-split, ... */
    struct http_opts http;
    const char *hosts[SERVE_MAX_NAMES], *origins[SERVE_MAX_NAMES];
    char env_names[2][4096]; /* copies of the comma lists the env entries point into */
    struct sched_params sp;
    struct cli_spec_opts spec;     /* --spec, --draft, --draft-max, --draft-min */
    enum node_route route;
    char api_key_buf[1024];     /* --api-key-file: the key read from the file */
    struct api_sampling_defaults defaults; /* --temp, --top-p, ...: http.defaults */
    const char *chat_template;  /* --chat-template: a family, a built-in or a .jinja file */
};

/* --api-key-file: the file's first line, without its line end, is the key; 2 (printed) when
 * the file cannot be read or that line is empty or too long. */
static int key_from_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_fail("serve: --api-key-file %s: %s", path, strerror(errno));
        return 2;
    }
    bool got = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    size_t n = got ? strlen(buf) : 0;
    bool whole = n > 0 && (buf[n - 1] == '\n' || n + 1 < cap);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
    if (!whole || n == 0) {
        cli_fail("serve: --api-key-file %s: the first line must hold the key (1 to %zu bytes)",
                 path, cap - 2);
        return 2;
    }
    return 0;
}

/* Adds value to list (count *n, capacity SERVE_MAX_NAMES); 2 (printed) when full. */
static int name_add(const char **list, int *n, const char *value, const char *opt)
{
    if (*n == SERVE_MAX_NAMES) {
        cli_fail("serve: at most %d %s values", SERVE_MAX_NAMES, opt);
        return 2;
    }
    list[(*n)++] = value;
    return 0;
}

/* Splits the comma list of env variable var (copied into buf) into list. 0 or 2. */
static int names_from_env(const char *var, char *buf, size_t cap, const char **list, int *n)
{
    const char *v = getenv(var);
    if (!v || !*v) return 0;
    if (strlen(v) >= cap) {
        cli_fail("serve: %s is too long", var);
        return 2;
    }
    snprintf(buf, cap, "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        if (name_add(list, n, t, var)) return 2;
    return 0;
}

/* Load display (registry_load_hook): a bar on a terminal's stderr while a model packs, then
 * one "ready" line on stdout. Loads may overlap (a store model's own thread): one lock. */
static pthread_mutex_t serve_load_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cli_load_bar serve_bar; /* guarded by serve_load_mu */

static void serve_load_progress(void *arg, const char *name, int n_done, int n_total,
                                uint64_t bytes_done, uint64_t bytes_total)
{
    (void)arg;
    pthread_mutex_lock(&serve_load_mu);
    if (serve_bar.name != name) cli_load_bar_init(&serve_bar, name);
    cli_load_bar_update(&serve_bar, n_done, n_total, bytes_done, bytes_total);
    if (n_done >= n_total) serve_bar.name = NULL;
    pthread_mutex_unlock(&serve_load_mu);
}

static void serve_load_ready(void *arg, const char *name, const struct model *m, double load_s)
{
    (void)arg;
    pthread_mutex_lock(&serve_load_mu);
    cli_load_ready_line(stdout, name, m, load_s);
    fflush(stdout);
    pthread_mutex_unlock(&serve_load_mu);
}

/* Returns 0, 2 (misuse, message printed) or -1 for --help. */
static int parse_args(int argc, char **argv, struct serve_args *a)
{
    memset(a, 0, sizeof *a);
    a->http.host = "127.0.0.1";
    a->http.port = 9337;
    a->http.ollama_port = -1;
    api_sampling_defaults_init(&a->defaults);
    a->http.defaults = &a->defaults;
    a->http.api_key = getenv("MESHLLM_API_KEY");
    sched_params_default(&a->sp);
    cli_spec_opts_default(&a->spec);
    cli_mesh_opts_default(&a->mo);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
        int sr = cli_spec_opts_parse(&a->spec, argc, argv, &i);
        if (sr == 0) sr = cli_mesh_opts_parse(&a->mo, "serve", argc, argv, &i);
        if (sr == 2) return 2;
        if (sr == 1) continue;
        if (!strcmp(o, "--mesh") || !strcmp(o, "--route-wait")) {
            cli_fail("serve: %s is for run and chat (serve splits with --layers)", o);
            return 2;
        }
        if (!strcmp(o, "--p2p") || !strcmp(o, "--public")) {
            if (!strcmp(o, "--p2p")) a->p2p = true;
            if (!strcmp(o, "--public")) a->public_peers = true;
            continue;
        }
        if (i + 1 >= argc) {
            cli_fail("serve: unknown option or missing value: %s", o);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(o, "-m") || !strcmp(o, "--model")) {
            if (a->n_models == SERVE_MAX_MODELS) {
                cli_fail("serve: at most %d models", SERVE_MAX_MODELS);
                return 2;
            }
            a->models[a->n_models++] = v;
        } else if (!strcmp(o, "-a") || !strcmp(o, "--alias")) {
            /* names the model given last (or the first one, when it comes before any) */
            int k = a->n_models ? a->n_models - 1 : 0;
            if (!*v || strlen(v) >= 128 || strchr(v, '/')) {
                cli_fail("serve: --alias '%s': give a name of 1-127 characters without '/'", v);
                return 2;
            }
            a->aliases[k] = v;
        } else if (!strcmp(o, "--host"))
            a->http.host = v;
        else if (!strcmp(o, "--allowed-host")) {
            if (name_add(a->hosts, &a->http.n_allowed_hosts, v, o)) return 2;
        } else if (!strcmp(o, "--cors")) {
            if (name_add(a->origins, &a->http.n_cors_origins, v, o)) return 2;
        }
        else if (!strcmp(o, "--port"))
            bad = parse_int(v, 0, 65535, &a->http.port);
        else if (!strcmp(o, "--ollama-port"))
            bad = parse_int(v, 0, 65535, &a->http.ollama_port);
        else if (!strcmp(o, "--api-key"))
            a->http.api_key = v;
        else if (!strcmp(o, "--api-key-file")) {
            if (key_from_file(v, a->api_key_buf, sizeof a->api_key_buf)) return 2;
            a->http.api_key = a->api_key_buf;
        }
        else if (!strcmp(o, "--route")) {
            if (node_route_parse(v, &a->route) || a->route == NODE_ROUTE_DEFAULT) {
                cli_fail("serve: --route %s: say local, own or mesh", v);
                return 2;
            }
        } else if (!strcmp(o, "--chat-template")) {
            if (!chat_template_name_ok(v)) return 2;
            a->chat_template = v;
        }
        else if (!strcmp(o, "--slots") || !strcmp(o, "-np") || !strcmp(o, "--parallel"))
            bad = parse_int(v, 1, 256, &a->sp.n_slots);
        else if (!strcmp(o, "-ngl") || !strcmp(o, "--n-gpu-layers") || !strcmp(o, "--gpu-layers") ||
                 !strcmp(o, "-fa") || !strcmp(o, "--flash-attn") || !strcmp(o, "-ts") ||
                 !strcmp(o, "--tensor-split") || !strcmp(o, "-mg") || !strcmp(o, "--main-gpu"))
            fprintf(stderr, "meshllm: serve: %s %s ignored: this build runs on the CPU\n", o, v);
        else if (!strcmp(o, "-ctk") || !strcmp(o, "--cache-type-k") || !strcmp(o, "-ctv") ||
                 !strcmp(o, "--cache-type-v") || !strcmp(o, "--kv-type")) {
            int t = model_kv_type_parse(v);
            if (t < 0) {
                cli_fail("serve: %s %s: say f16, f32, q8_0 or q4_0", o, v);
                return 2;
            }
            bool only_v = !strcmp(o, "-ctv") || !strcmp(o, "--cache-type-v");
            bool only_k = !strcmp(o, "-ctk") || !strcmp(o, "--cache-type-k");
            if (!only_v) a->sp.k_type = (enum model_kv_type)t;
            if (!only_k) a->sp.v_type = (enum model_kv_type)t;
        }
        else if (!strcmp(o, "--ctx") || !strcmp(o, "-c") || !strcmp(o, "--ctx-size"))
            bad = parse_int(v, 16, 1 << 20, &a->sp.n_ctx);
        else if (!strcmp(o, "--batch"))
            bad = parse_int(v, 1, 65536, &a->sp.n_batch);
        else if (!strcmp(o, "--queue"))
            bad = parse_int(v, 0, 100000, &a->sp.queue_cap);
        else if (!strcmp(o, "--idle-timeout"))
            bad = parse_int(v, 1, 3600, &a->http.idle_timeout_s);
        else if (!strcmp(o, "--rate-limit"))
            bad = parse_int(v, 0, 1000000, &a->http.rate_limit_per_min);
        else if (!strcmp(o, "-t") || !strcmp(o, "--threads"))
            bad = parse_int(v, 0, 1024, &a->sp.n_threads);
        else if (!strcmp(o, "--temp") || !strcmp(o, "--temperature"))
            bad = parse_float(v, 0, 2, &a->defaults.temperature);
        else if (!strcmp(o, "--top-p"))
            bad = parse_float(v, 0, 1, &a->defaults.top_p);
        else if (!strcmp(o, "--min-p"))
            bad = parse_float(v, 0, 1, &a->defaults.min_p);
        else if (!strcmp(o, "--repeat-penalty"))
            bad = parse_float(v, 0, 100, &a->defaults.repeat_penalty);
        else if (!strcmp(o, "--top-k"))
            bad = parse_int(v, 0, 1000000, &a->defaults.top_k);
        else if (!strcmp(o, "-n") || !strcmp(o, "--n-predict") || !strcmp(o, "--predict"))
            bad = parse_int(v, -1, 1000000000, &a->defaults.max_tokens);
        else {
            cli_fail("serve: unknown option %s (see 'meshllm serve --help')", o);
            return 2;
        }
        if (bad) {
            cli_fail("serve: bad value '%s' for %s", v, o);
            return 2;
        }
    }
    if (cli_spec_opts_apply(&a->spec, "serve", &a->sp)) return 2;
    /* flags replace the environment's lists; MESHLLM_CORS before Ollama's OLLAMA_ORIGINS */
    if (a->http.n_allowed_hosts == 0 &&
        names_from_env("MESHLLM_ALLOWED_HOSTS", a->env_names[0], sizeof a->env_names[0],
                       a->hosts, &a->http.n_allowed_hosts))
        return 2;
    const char *cors_env = getenv("MESHLLM_CORS") && *getenv("MESHLLM_CORS") ? "MESHLLM_CORS"
                                                                             : "OLLAMA_ORIGINS";
    if (a->http.n_cors_origins == 0 &&
        names_from_env(cors_env, a->env_names[1], sizeof a->env_names[1], a->origins,
                       &a->http.n_cors_origins))
        return 2;
    a->http.allowed_hosts = a->hosts;
    a->http.cors_origins = a->origins;
    const char *deadline = getenv("MESHLLM_HTTP_REQUEST_DEADLINE_MS"); /* tests shorten it */
    if (deadline && *deadline && parse_int(deadline, 1, 3600000, &a->http.request_deadline_ms)) {
        cli_fail("serve: MESHLLM_HTTP_REQUEST_DEADLINE_MS=%s: say a number of milliseconds",
                 deadline);
        return 2;
    }
    const char *env_route = getenv("MESHLLM_ROUTE");
    if (a->route == NODE_ROUTE_DEFAULT && env_route && *env_route &&
        (node_route_parse(env_route, &a->route) || a->route == NODE_ROUTE_DEFAULT)) {
        cli_fail("serve: MESHLLM_ROUTE=%s: say local, own or mesh", env_route);
        return 2;
    }
    /* A lite node has nothing of its own to answer with: peers answer, over the mesh. */
    if (a->route == NODE_ROUTE_DEFAULT) a->route = a->n_models ? NODE_ROUTE_LOCAL : NODE_ROUTE_MESH;
    if (a->mo.has_layers && a->n_models == 0) {
        cli_fail("serve: --layers needs --model (the file whose layers this node holds)");
        return 2;
    }
    if (a->mo.auto_split && !a->mo.has_layers) {
        cli_fail("serve: --auto-split needs --layers (the range this node holds, or none)");
        return 2;
    }
    /* a split model reaches its other layers over the mesh */
    if (a->route != NODE_ROUTE_LOCAL || a->mo.join || a->n_models == 0 || a->mo.has_layers ||
        a->mo.accept_stages)
        a->p2p = true;
    if (!a->p2p && (a->mo.n_listen || a->mo.n_boot || a->public_peers)) {
        cli_fail("serve: --p2p-listen, --bootstrap and --public need --p2p");
        return 2;
    }
    if (a->p2p && a->mo.n_listen == 0) {
        multiaddr_from_text("/ip4/0.0.0.0/tcp/4001", &a->mo.listen[a->mo.n_listen++]);
        multiaddr_from_text("/ip6/::/tcp/4001", &a->mo.listen[a->mo.n_listen++]);
    }
    return 0;
}

/* GET /node/peers: the libp2p node, the mesh and its peer table (api/ adds the route). */
static char *serve_peers_json(void *ctx)
{
    return mesh_peers_json(ctx);
}

int cmd_serve(int argc, char **argv)
{
    struct serve_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc == -1) {
        serve_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    /* Every thread started from here on inherits the blocked set; main takes them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* A shell starts background jobs with SIGINT ignored; sigwait needs it deliverable. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    struct service *svc = NULL;
    struct registry *reg = NULL;
    struct router *rt = NULL;
    struct http_server *srv = NULL;
    struct mesh *mesh = NULL;
    char err[512] = "", dir_buf[4096];
    int status = 1;
    struct service_config sc = {.sp = &a.sp, .models = a.models, .n_models = a.n_models,
                                .aliases = a.aliases, .chat_template = a.chat_template,
                                .has_layers = a.mo.has_layers, .layer_begin = a.mo.layer_begin,
                                .layer_end = a.mo.layer_end, .p2p = a.p2p,
                                .auto_split = a.mo.auto_split,
                                .accept_stages = a.mo.accept_stages};
    if (a.p2p && cli_mesh_config(&a.mo, "serve", dir_buf, sizeof dir_buf, &sc.mesh)) goto out;
    /* --public would add the public bootstrap list; none is configured, so nothing public is
     * ever contacted unless the user names it with --bootstrap. */
    if (a.public_peers)
        fprintf(stderr, "meshllm: --public: no public bootstrap peers are configured yet\n");
    if (service_open(&sc, &svc, err, sizeof err)) {
        cli_fail("serve: %s", err);
        goto out;
    }
    reg = service_registry(svc);
    mesh = service_mesh(svc);
    if (mesh) {
        cli_mesh_print(mesh, stdout);
        a.http.peers_json = serve_peers_json;
        a.http.peers_ctx = mesh;
    }
    struct router_config rcfg = {.reg = reg, .mesh = mesh, .default_route = a.route};
    if (router_new(&rcfg, &rt)) {
        cli_fail("serve: out of memory");
        goto out;
    }
    if (http_server_start(rt, &a.http, &srv, err, sizeof err)) {
        cli_fail("serve: %s", err);
        goto out;
    }
    const char *host = a.http.host;
    bool v6 = strchr(host, ':') != NULL;
    printf("meshllm: OpenAI API at http://%s%s%s:%d/v1\n", v6 ? "[" : "", host, v6 ? "]" : "",
           http_server_port(srv));
    printf("meshllm: web console at http://%s%s%s:%d/\n", v6 ? "[" : "", host, v6 ? "]" : "",
           http_server_port(srv));
    if (http_server_ollama_port(srv) >= 0)
        printf("meshllm: Ollama API at http://%s%s%s:%d/api\n", v6 ? "[" : "", host,
               v6 ? "]" : "", http_server_ollama_port(srv));
    if (a.n_models == 0)
        printf("meshllm: lite node (no --model): every answer comes from a peer; route %s\n",
               node_route_name(a.route));
    else
        printf("meshllm: route %s (%s)\n", node_route_name(a.route),
               a.route == NODE_ROUTE_LOCAL ? "requests never leave this device"
               : a.route == NODE_ROUTE_OWN ? "requests may run on your own devices"
                                           : "requests may run on any admitted peer");
    for (int i = 0; i < registry_count(reg); i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(reg, i, &st);
        printf("meshllm: model %s (%s), loading\n", e->name, e->path);
        if (e->is_split && e->layer_begin == e->layer_end)
            printf("meshllm: model %s: this node holds its embedding and head only; its layers "
                   "run on the mesh's stages (they see hidden states, never text)\n", e->name);
        else if (e->is_split)
            printf("meshllm: model %s: layers %d-%d here (and served to members on "
                   "/meshllm/stage/1); the rest from the mesh's stages\n", e->name,
                   e->layer_begin, e->layer_end - 1);
    }
    fflush(stdout);
    registry_set_load_hook(reg, &(struct registry_load_hook){serve_load_progress,
                                                            serve_load_ready, NULL});
    if (service_load_start(svc)) {
        cli_fail("serve: cannot start the model loader");
        goto out;
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "meshllm: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    http_server_stop(srv);
    router_free(rt);
    service_close(svc);
    if (status == 0) fprintf(stderr, "meshllm: stopped\n");
    return status;
}
