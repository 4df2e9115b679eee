/* cmd_status.c - `meshllm status`: a running node, its mesh and where each model would run.
 * Reads GET /node/peers and GET /v1/models of the node (docs/API.md). */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void status_usage(FILE *f)
{
    fprintf(f, "usage: meshllm status [--url URL] [--api-key KEY]\n\n"
               "Show a running 'meshllm serve': its mesh, the members it knows and the models\n"
               "it can answer for, with where each runs (this device or which peers).\n\n"
               "options:\n"
               "  --url URL        the node's API (default http://127.0.0.1:9337)\n"
               "  --api-key KEY    bearer key of that node (default $MESHLLM_API_KEY)\n"
               "  -h, --help       show this help\n");
}

static const char *jstr(const cJSON *o, const char *name, const char *def)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
    return s ? s : def;
}

static double jnum(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static void print_mesh(const cJSON *peers)
{
    if (!cJSON_IsTrue(cJSON_GetObjectItem(peers, "enabled"))) {
        printf("mesh      none (peer-to-peer is off: 'meshllm serve --p2p')\nroute     local\n");
        return;
    }
    const cJSON *mesh = cJSON_GetObjectItem(peers, "mesh");
    printf("node      %s\n", jstr(peers, "peer_id", "?"));
    if (cJSON_IsTrue(cJSON_GetObjectItem(mesh, "member")))
        printf("mesh      %s\n", jstr(mesh, "id", "?"));
    else
        printf("mesh      none ('meshllm mesh create', or 'meshllm join TOKEN')\n");
    printf("route     %s\n", jstr(peers, "route", "local"));
    const cJSON *p;
    int n = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(mesh, "peers")) n += cJSON_IsTrue(cJSON_GetObjectItem(p, "member"));
    printf("members   %d\n", n);
    if (!n) return;
    printf("\n%-52s  %-5s  %9s  %-9s  %s\n", "MEMBER", "OWN", "RTT", "SERVED", "MODELS");
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(mesh, "peers"))
    {
        if (!cJSON_IsTrue(cJSON_GetObjectItem(p, "member"))) continue;
        char rtt[24] = "-", served[24], models[512] = "";
        const cJSON *r = cJSON_GetObjectItem(p, "rtt_ms");
        if (cJSON_IsNumber(r)) snprintf(rtt, sizeof rtt, "%.2f ms", r->valuedouble);
        snprintf(served, sizeof served, "%d/%d", (int)jnum(p, "ok"), (int)jnum(p, "failed"));
        size_t off = 0;
        const cJSON *m;
        cJSON_ArrayForEach(m, cJSON_GetObjectItem(p, "models"))
        {
            int w = snprintf(models + off, sizeof models - off, "%s%s (%d/%d slots, %.0f tok/s)",
                             off ? ", " : "", jstr(m, "name", "?"), (int)jnum(m, "active"),
                             (int)jnum(m, "slots"), jnum(m, "tokens_per_s"));
            if (w < 0 || (size_t)w >= sizeof models - off) break;
            off += (size_t)w;
        }
        printf("%-52s  %-5s  %9s  %-9s  %s\n", jstr(p, "id", "?"),
               cJSON_IsTrue(cJSON_GetObjectItem(p, "own")) ? "yes" : "no", rtt, served,
               models[0] ? models : (cJSON_IsTrue(cJSON_GetObjectItem(p, "announced")) ? "lite" : "-"));
    }
}

static void print_models(const cJSON *models)
{
    printf("\n%-32s  %s\n", "MODEL", "RUNS ON");
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(models, "data"))
    {
        const cJSON *mj = cJSON_GetObjectItem(m, "meshllm");
        char where[1024] = "";
        size_t off = 0;
        if (cJSON_IsTrue(cJSON_GetObjectItem(mj, "local")))
            off += (size_t)snprintf(where, sizeof where, "this device");
        const cJSON *w;
        cJSON_ArrayForEach(w, cJSON_GetObjectItem(mj, "where"))
        {
            int k = snprintf(where + off, sizeof where - off, "%s%s", off ? ", " : "",
                             cJSON_GetStringValue(w) ? w->valuestring : "?");
            if (k < 0 || (size_t)k >= sizeof where - off) break;
            off += (size_t)k;
        }
        printf("%-32s  %s\n", jstr(m, "id", "?"), where[0] ? where : "this device");
    }
}

int cmd_status(int argc, char **argv)
{
    const char *base = "http://127.0.0.1:9337", *key = getenv("MESHLLM_API_KEY");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            status_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--url") && i + 1 < argc) {
            base = argv[++i];
        } else if (!strcmp(argv[i], "--api-key") && i + 1 < argc) {
            key = argv[++i];
        } else {
            cli_fail("status: unknown or incomplete option '%s' (see 'meshllm status --help')",
                     argv[i]);
            return 2;
        }
    }
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/') blen--;
    if (blen > 1900) {
        cli_fail("status: --url too long");
        return 2;
    }
    char url[2048];
    char *pb = NULL, *mb = NULL;
    snprintf(url, sizeof url, "%.*s/node/peers", (int)blen, base);
    int rc = cli_http_get("status", url, key, false, &pb);
    snprintf(url, sizeof url, "%.*s/v1/models", (int)blen, base);
    if (rc == 0) rc = cli_http_get("status", url, key, false, &mb);
    if (rc == 0) {
        cJSON *peers = cJSON_Parse(pb), *models = cJSON_Parse(mb);
        if (!cJSON_IsObject(peers) || !cJSON_IsObject(models)) {
            cli_fail("status: %.*s did not answer as a meshllm node", (int)blen, base);
            rc = 1;
        } else {
            print_mesh(peers);
            print_models(models);
        }
        cJSON_Delete(peers);
        cJSON_Delete(models);
    }
    free(pb);
    free(mb);
    return rc;
}
