/* cmd_route.c - `meshllm route MODEL`: the route a running node would use for MODEL, from
 * GET /node/route?model=NAME (docs/API.md): each stage of a split model in layer order with
 * its layers, peer (short ID, "local" for this node's own range), RTT and load, and the
 * layers covered; or, when no route covers the model, which layers are missing and how to
 * serve them. It plans without running a request. --json prints the node's JSON as is. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct route_args {
    const char *base, *key, *model;
    bool as_json;
};

static void route_usage(FILE *f)
{
    fprintf(f, "usage: meshllm route MODEL [--url URL] [--api-key KEY] [--json]\n\n"
               "Show the route a running 'meshllm serve' would use for MODEL: for a split\n"
               "model (serve --layers), each stage in layer order with its layers, peer, RTT\n"
               "and load; when no route covers it, the missing layers. Runs no request.\n"
               "Exit status 1 when no route covers the model.\n\n"
               "options:\n"
               "  --url URL        the node's API (default http://127.0.0.1:9337)\n"
               "  --api-key KEY    bearer key of that node (default $MESHLLM_API_KEY)\n"
               "  --json           print the node's JSON instead of a table\n"
               "  -h, --help       show this help\n");
}

/* 0, 1 (--help: done), 2 (misuse, message printed). */
static int route_parse(int argc, char **argv, struct route_args *a)
{
    memset(a, 0, sizeof *a);
    a->base = "http://127.0.0.1:9337";
    a->key = getenv("MESHLLM_API_KEY");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            route_usage(stdout);
            return 1;
        } else if (!strcmp(argv[i], "--json")) {
            a->as_json = true;
        } else if (!strcmp(argv[i], "--url") && i + 1 < argc) {
            a->base = argv[++i];
        } else if (!strcmp(argv[i], "--api-key") && i + 1 < argc) {
            a->key = argv[++i];
        } else if (argv[i][0] != '-' && !a->model) {
            a->model = argv[i];
        } else {
            cli_fail("route: unknown or incomplete option '%s' (see 'meshllm route --help')",
                     argv[i]);
            return 2;
        }
    }
    if (!a->model || !*a->model) {
        cli_fail("route: name a model (meshllm route MODEL; 'meshllm status' lists them)");
        return 2;
    }
    return 0;
}

static const char *jstr(const cJSON *o, const char *name, const char *def)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
    return s ? s : def;
}

static int jint(const cJSON *o, const char *name, int def)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : def;
}

/* 12D3KooW...a1b2c3, as the console shortens peer IDs. */
static void short_id(const char *id, char *buf, size_t cap)
{
    size_t n = strlen(id);
    if (n > 16) snprintf(buf, cap, "%.8s...%s", id, id + n - 6);
    else snprintf(buf, cap, "%s", id);
}

static void stage_print(int i, const cJSON *st)
{
    char peer[64], rtt[32] = "-", load[64] = "-";
    if (cJSON_IsTrue(cJSON_GetObjectItem(st, "local"))) snprintf(peer, sizeof peer, "local");
    else short_id(jstr(st, "peer", "?"), peer, sizeof peer);
    const cJSON *r = cJSON_GetObjectItem(st, "rtt_ms");
    if (cJSON_IsNumber(r) && !cJSON_IsTrue(cJSON_GetObjectItem(st, "local")))
        snprintf(rtt, sizeof rtt, "%.2f ms", r->valuedouble);
    if (cJSON_IsNumber(cJSON_GetObjectItem(st, "slots")))
        snprintf(load, sizeof load, "%d/%d active, %d queued", jint(st, "active", 0),
                 jint(st, "slots", 0), jint(st, "queued", 0));
    printf("%-5d  %-7s  %-20s  %9s  %s\n", i, jstr(st, "layers", "?"), peer, rtt, load);
}

/* Prints the route; returns 0 (a route), 1 (none, or not the JSON we expect). */
static int route_print(const cJSON *root)
{
    if (!cJSON_IsObject(root) || !cJSON_IsArray(cJSON_GetObjectItem(root, "stages"))) return -1;
    const char *model = jstr(root, "model", "?");
    int n_layer = jint(root, "n_layer", 0);
    bool split = cJSON_IsTrue(cJSON_GetObjectItem(root, "split"));
    const cJSON *stages = cJSON_GetObjectItem(root, "stages"), *st;
    if (!split) {
        st = cJSON_GetArrayItem(stages, 0);
        char peer[64];
        if (!st) {
            printf("model     %s\nroute     none\n", model);
            return 1;
        }
        if (cJSON_IsTrue(cJSON_GetObjectItem(st, "local"))) {
            printf("model     %s: %d layers, whole on this node\nroute     local (one stage)\n",
                   model, n_layer);
            return 0;
        }
        short_id(jstr(st, "peer", "?"), peer, sizeof peer);
        printf("model     %s: whole on peers (not split)\nroute     delegated whole to %s\n",
               model, peer);
        return 0;
    }
    const cJSON *mine = cJSON_GetObjectItem(root, "local_layers");
    printf("model     %s: %d layers, split (this node holds %s)\n", model, n_layer,
           jstr(mine, "layers", "none"));
    if (cJSON_IsTrue(cJSON_GetObjectItem(root, "covered"))) {
        int n = cJSON_GetArraySize(stages), i = 0;
        printf("route     %d stage%s cover layers 0-%d\n\n", n, n == 1 ? "" : "s", n_layer - 1);
        printf("%-5s  %-7s  %-20s  %9s  %s\n", "STAGE", "LAYERS", "PEER", "RTT", "LOAD");
        cJSON_ArrayForEach(st, stages) stage_print(++i, st);
        printf("total  %d of %d layers\n", jint(root, "layers_covered", 0), n_layer);
        return 0;
    }
    const cJSON *miss = cJSON_GetObjectItem(root, "missing"), *g;
    char gaps[256] = "";
    size_t off = 0;
    int n_missing = 0;
    cJSON_ArrayForEach(g, miss)
    {
        int w = snprintf(gaps + off, sizeof gaps - off, "%s%s", off ? ", " : "",
                         jstr(g, "layers", "?"));
        if (w < 0 || (size_t)w >= sizeof gaps - off) break;
        off += (size_t)w;
        n_missing += jint(g, "layer_end", 0) - jint(g, "layer_begin", 0);
    }
    if (!strcmp(jstr(root, "state", ""), "no_route") && gaps[0]) {
        printf("route     none: no mesh member announces layers %s (%d of %d layers are held)\n",
               gaps, n_layer - n_missing, n_layer);
        printf("hint      start a node with --layers %s: meshllm serve --model FILE --layers %s "
               "--join TOKEN\n",
               jstr(cJSON_GetArrayItem(miss, 0), "layers", "A-B"),
               jstr(cJSON_GetArrayItem(miss, 0), "layers", "A-B"));
    } else {
        printf("route     none: %s\n", jstr(root, "message", "not known yet"));
    }
    return 1;
}

static int route_run(const struct route_args *a)
{
    size_t blen = strlen(a->base);
    while (blen && a->base[blen - 1] == '/') blen--;
    char *esc = curl_easy_escape(NULL, a->model, 0);
    if (!esc) {
        cli_fail("route: out of memory");
        return 1;
    }
    char url[4096];
    int w = snprintf(url, sizeof url, "%.*s/node/route?model=%s", (int)blen, a->base, esc);
    curl_free(esc);
    if (w < 0 || (size_t)w >= sizeof url) {
        cli_fail("route: --url or the model name too long");
        return 2;
    }
    char *body = NULL;
    long status = 0;
    if (cli_http_fetch("route", url, a->key, &status, &body)) return 1;
    cJSON *root = cJSON_Parse(body);
    int rc = 0;
    if (status != 200) {
        const char *msg = jstr(cJSON_GetObjectItem(root, "error"), "message", NULL);
        if (status == 404 && msg)
            cli_fail("route: %s ('meshllm status --url %.*s' lists them)", msg, (int)blen, a->base);
        else
            cli_fail("route: %s answered HTTP %ld%s%s", url, status,
                     status == 401 ? " (pass --api-key)" : msg ? ": " : "", msg ? msg : "");
        cJSON_Delete(root);
        free(body);
        return 1;
    }
    if (a->as_json) {
        printf("%s\n", body);
        rc = cJSON_IsTrue(cJSON_GetObjectItem(root, "covered")) ? 0 : 1;
    } else {
        rc = route_print(root);
        if (rc < 0) cli_fail("route: %.*s did not answer with a route", (int)blen, a->base);
        else if (rc == 1) cli_fail("route: no route covers '%s' now", a->model);
        rc = rc ? 1 : 0;
    }
    cJSON_Delete(root);
    free(body);
    return rc;
}

int cmd_route(int argc, char **argv)
{
    struct route_args a;
    int rc = route_parse(argc, argv, &a);
    if (rc) return rc == 1 ? 0 : rc;
    return route_run(&a);
}
