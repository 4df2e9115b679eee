/* cmd_pull.c - `meshllm pull URL [--name NAME[:TAG]] [--sha256 HEX]`: a GGUF over HTTP(S)
 * into the model store (node/modelpull.h), with a progress bar on a terminal (one final
 * line otherwise). Ctrl-C stops it; the same command resumes.
 * `meshllm pull NAME|CID [--url NODE]`: anything that is not a URL is fetched from mesh
 * members by a running node (its /api/pull, node/blobpull.h), whose NDJSON progress drives
 * the same bar; the node's store is the one that receives the file. */
#include "cli/cli.h"

#include "core/err.h"
#include "node/modelpull.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_bool g_cancel;

static void on_sigint(int sig)
{
    (void)sig;
    atomic_store(&g_cancel, true);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meshllm pull URL [--name NAME[:TAG]] [--sha256 HEX] [--quiet]\n"
               "       meshllm pull NAME[:TAG]|CONTENT_ID [--url NODE] [--name NAME[:TAG]]\n"
               "                    [--peer MULTIADDR]... [--api-key KEY] [--quiet]\n\n"
               "Downloads a GGUF model into the model store ($MESHLLM_MODELS, else\n"
               "~/.meshllm/models). URL is https://HOST/PATH/FILE.gguf or the Hugging Face\n"
               "shorthand hf:OWNER/REPO/FILE.gguf. An interrupted pull (Ctrl-C, a cut)\n"
               "resumes when run again. The file's SHA-256 must match the digest the server\n"
               "publishes (Hugging Face does) or --sha256; then it must be a GGUF.\n"
               "Proxies come from http_proxy, https_proxy, ALL_PROXY and NO_PROXY.\n"
               "A NAME or CONTENT_ID (not a URL) is fetched from the members of the mesh that\n"
               "announce it, by the running node at --url, into that node's store: pieces\n"
               "from several members at once, each verified against the content ID.\n\n"
               "options:\n"
               "  --name NAME[:TAG]  the name in the store (default: the file name without .gguf)\n"
               "  --sha256 HEX       the file's expected SHA-256\n"
               "  --url NODE         mesh pull: the node's API (default $MESHLLM_URL, else\n"
               "                     http://127.0.0.1:9337)\n"
               "  --peer MULTIADDR   mesh pull: also ask this provider (.../p2p/PEER_ID)\n"
               "  --api-key KEY      mesh pull: the node's bearer key ($MESHLLM_API_KEY)\n"
               "  -q, --quiet        no progress, only errors\n"
               "  -h, --help         this help\n\n"
               "example: meshllm pull hf:ggml-org/models/tinyllamas/stories260K.gguf\n");
}

#define PULL_MAX_PEERS 8

struct pull_args {
    const char *url, *name, *sha256;
    const char *node, *key;                /* mesh pull: the node's API and key */
    const char *peers[PULL_MAX_PEERS];
    int n_peers;
    bool quiet;
};

static int parse_args(int argc, char **argv, struct pull_args *a)
{
    memset(a, 0, sizeof *a);
    a->node = getenv("MESHLLM_URL") ? getenv("MESHLLM_URL") : "http://127.0.0.1:9337";
    a->key = getenv("MESHLLM_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return -1;
        } else if (!strcmp(s, "--name") || !strcmp(s, "--sha256")) {
            if (i + 1 >= argc) {
                cli_fail("pull: %s needs a value (try --help)", s);
                return 2;
            }
            *(!strcmp(s, "--name") ? &a->name : &a->sha256) = argv[++i];
        } else if (!strcmp(s, "--url") || !strcmp(s, "--api-key") || !strcmp(s, "--peer")) {
            if (i + 1 >= argc) {
                cli_fail("pull: %s needs a value (try --help)", s);
                return 2;
            }
            if (!strcmp(s, "--peer")) {
                if (a->n_peers == PULL_MAX_PEERS) {
                    cli_fail("pull: at most %d --peer", PULL_MAX_PEERS);
                    return 2;
                }
                a->peers[a->n_peers++] = argv[++i];
            } else {
                *(!strcmp(s, "--url") ? &a->node : &a->key) = argv[++i];
            }
        } else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            a->quiet = true;
        } else if (s[0] == '-') {
            cli_fail("pull: unknown option '%s' (try --help)", s);
            return 2;
        } else if (!a->url) {
            a->url = s;
        } else {
            cli_fail("pull: one URL at a time, please (try --help)");
            return 2;
        }
    }
    if (!a->url) {
        usage(stderr);
        return 2;
    }
    return 0;
}

static void human(double b, char *out, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int k = 0;
    while (b >= 1024 && k < 4) {
        b /= 1024;
        k++;
    }
    snprintf(out, cap, k ? "%.1f %s" : "%.0f %s", b, u[k]);
}

struct bar {
    bool tty, quiet, drawn, has_start;
    struct timespec t0;
    uint64_t start_bytes, last_done, total;
};

static double since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void on_progress(void *arg, const struct modelpull_progress *p)
{
    struct bar *b = arg;
    if (p->phase == MODELPULL_CONNECTING) {
        clock_gettime(CLOCK_MONOTONIC, &b->t0);
        b->start_bytes = 0;
        return;
    }
    if (p->done > b->last_done) b->last_done = p->done;
    if (p->phase != MODELPULL_DOWNLOADING) {
        if (p->phase == MODELPULL_VERIFYING && b->tty && !b->quiet) {
            fprintf(stderr, "\r\033[Kverifying sha256 digest and content ID...");
            b->drawn = true;
        }
        return;
    }
    if (!b->has_start) b->start_bytes = p->resumed_from;
    b->has_start = true;
    b->total = p->total;
    if (!b->tty || b->quiet) return;
    double dt = since(&b->t0);
    double rate = dt > 0 ? (double)(p->done - b->start_bytes) / dt : 0;
    char d[32], t[32], r[32], eta[32] = "";
    human((double)p->done, d, sizeof d);
    human((double)p->total, t, sizeof t);
    human(rate, r, sizeof r);
    int pct = p->total ? (int)(100.0 * (double)p->done / (double)p->total) : 0;
    if (p->total && rate > 0)
        snprintf(eta, sizeof eta, " ETA %.0fs", (double)(p->total - p->done) / rate);
    char bar[31];
    int fill = p->total ? pct * 30 / 100 : 0;
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    if (p->total)
        fprintf(stderr, "\r\033[K[%s] %3d%% %s/%s %s/s%s", bar, pct, d, t, r, eta);
    else
        fprintf(stderr, "\r\033[K%s %s/s", d, r);
    b->drawn = true;
}

/* A mesh pull through a node's /api/pull: its NDJSON lines as they come. */
struct ndjson {
    struct bar *bar;
    char line[8192];
    size_t len;
    bool has_first, is_ok;
    uint64_t first_done;
    char error[1200], model[200];
};

static void ndjson_line(struct ndjson *nj, const char *line)
{
    cJSON *o = cJSON_Parse(line);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return;
    }
    const char *err = cJSON_GetStringValue(cJSON_GetObjectItem(o, "error"));
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(o, "status"));
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItem(o, "meshllm_model"));
    const cJSON *done = cJSON_GetObjectItem(o, "completed"), *total = cJSON_GetObjectItem(o, "total");
    if (err) snprintf(nj->error, sizeof nj->error, "%s", err);
    if (st && !strcmp(st, "success")) nj->is_ok = true;
    if (model) snprintf(nj->model, sizeof nj->model, "%s", model);
    if (cJSON_IsNumber(done) && cJSON_IsNumber(total)) {
        struct modelpull_progress p = {.phase = MODELPULL_DOWNLOADING,
                                       .done = (uint64_t)done->valuedouble,
                                       .total = (uint64_t)total->valuedouble};
        if (!nj->has_first) nj->first_done = p.done;
        nj->has_first = true;
        p.resumed_from = nj->first_done;
        on_progress(nj->bar, &p);
    } else if (st && !strncmp(st, "verifying", 9)) {
        struct modelpull_progress p = {.phase = MODELPULL_VERIFYING};
        on_progress(nj->bar, &p);
    }
    cJSON_Delete(o);
}

static size_t ndjson_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct ndjson *nj = ud;
    size_t n = size * nmemb;
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n' || nj->len == sizeof nj->line - 1) {
            nj->line[nj->len] = 0;
            if (nj->len) ndjson_line(nj, nj->line);
            nj->len = 0;
            if (data[i] == '\n') continue;
        }
        nj->line[nj->len++] = data[i];
    }
    return n;
}

static int ndjson_cancel(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)ud;
    (void)a;
    (void)b;
    (void)c;
    (void)d;
    return atomic_load(&g_cancel) ? 1 : 0; /* the node keeps the partial file */
}

/* POST {model, meshllm_name, meshllm_peers, stream} to NODE/api/pull. 0, 1 (failed). */
static int mesh_pull(const struct pull_args *a, struct bar *b, char *model, size_t model_cap)
{
    cJSON *req = cJSON_CreateObject();
    cJSON_AddStringToObject(req, "model", a->url);
    if (a->name) cJSON_AddStringToObject(req, "meshllm_name", a->name);
    cJSON *pa = a->n_peers ? cJSON_AddArrayToObject(req, "meshllm_peers") : NULL;
    for (int i = 0; i < a->n_peers; i++) cJSON_AddItemToArray(pa, cJSON_CreateString(a->peers[i]));
    cJSON_AddBoolToObject(req, "stream", true);
    char *body = cJSON_PrintUnformatted(req);
    cJSON_Delete(req);
    char url[2048], auth[512];
    size_t blen = strlen(a->node);
    while (blen && a->node[blen - 1] == '/') blen--;
    snprintf(url, sizeof url, "%.*s/api/pull", (int)blen, a->node);
    struct ndjson *nj = calloc(1, sizeof *nj);
    CURL *c = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    int rc = 1;
    if (!body || !nj || !c || !hdrs) {
        cli_fail("pull: out of memory");
        goto out;
    }
    nj->bar = b;
    if (a->key && *a->key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", a->key);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ndjson_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, nj);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, ndjson_cancel);
    struct modelpull_progress p0 = {.phase = MODELPULL_CONNECTING};
    on_progress(b, &p0);
    CURLcode cr = curl_easy_perform(c);
    if (nj->len) {
        nj->line[nj->len] = 0;
        ndjson_line(nj, nj->line);
    }
    if (b->drawn) fputs("\r\033[K", stderr);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cr == CURLE_ABORTED_BY_CALLBACK)
        cli_fail("pull: stopped; the node keeps the partial file and the same command resumes");
    else if (cr != CURLE_OK)
        cli_fail("pull: %s: %s%s", url, curl_easy_strerror(cr),
                 cr == CURLE_COULDNT_CONNECT ? " (a mesh pull needs a running 'meshllm serve "
                                               "--p2p'; --url names it)" : "");
    else if (nj->error[0])
        cli_fail("pull: %s", nj->error);
    else if (!nj->is_ok)
        cli_fail("pull: %s answered HTTP %ld without success%s", url, status,
                 status == 401 ? " (pass --api-key)" : "");
    else {
        snprintf(model, model_cap, "%s", nj->model[0] ? nj->model : a->url);
        rc = 0;
    }
out:
    curl_slist_free_all(hdrs);
    if (c) curl_easy_cleanup(c);
    free(nj);
    free(body);
    return rc;
}

int cmd_pull(int argc, char **argv)
{
    struct pull_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc < 0 ? 0 : rc;
    struct bar b = {.tty = isatty(2) == 1, .quiet = a.quiet};
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char nm[MODELSTORE_NAME_CAP], tg[MODELSTORE_TAG_CAP];
    bool is_url = strstr(a.url, "://") || !strncmp(a.url, "hf:", 3);
    if (!is_url && modelstore_name_parse(a.url, nm, tg)) {
        cli_fail("pull: '%s' is neither a URL (https://HOST/PATH/FILE.gguf or "
                 "hf:OWNER/REPO/FILE.gguf) nor a model name or content ID to fetch from the mesh",
                 a.url);
        return 1;
    }
    if (!is_url) { /* from the mesh */
        char model[200];
        if (mesh_pull(&a, &b, model, sizeof model)) return 1;
        if (!a.quiet) {
            double dt = since(&b.t0);
            char sz[32], r[32];
            human((double)b.total, sz, sizeof sz);
            human(dt > 0 ? (double)(b.last_done - b.start_bytes) / dt : 0, r, sizeof r);
            fprintf(stderr, "pulled %s from the mesh: %s in %.1f s (%s/s)\n", model, sz, dt, r);
        }
        printf("%s\n", model);
        return 0;
    }
    struct modelpull_opts o = {.url = a.url, .name = a.name, .sha256 = a.sha256, .retries = -1,
                               .cancel = &g_cancel, .progress = on_progress, .progress_arg = &b};
    struct modelstore_manifest m;
    char err[1200];
    const char *dir = modelstore_dir();
    rc = modelpull_run(dir, &o, &m, err, sizeof err);
    if (b.drawn) fputs("\r\033[K", stderr);
    if (rc) {
        cli_fail("%s", err);
        return 1;
    }
    if (!a.quiet) {
        double dt = since(&b.t0);
        char sz[32], r[32];
        human((double)m.size, sz, sizeof sz);
        human(dt > 0 ? (double)(b.last_done - b.start_bytes) / dt : 0, r, sizeof r);
        fprintf(stderr, "pulled %s:%s: %s in %.1f s (%s/s), sha256 %s, content ID %.16s...\n",
                m.name, m.tag, sz, dt, r, m.sha256, m.content_id);
    }
    printf("%s:%s\n", m.name, m.tag);
    return 0;
}
