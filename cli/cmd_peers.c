/* cmd_peers.c - `meshllm peers`: asks a running `meshllm serve --p2p` for its peers
 * (GET /node/peers, docs/API.md) and prints them as a table: peer ID, how it was found
 * (bootstrap, mdns, dht, inbound), connected or only known (DHT routing table, mDNS),
 * ping latency, first address, protocols. --json prints the server's JSON as is. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void peers_usage(FILE *f)
{
    fprintf(f, "usage: meshllm peers [--url URL] [--api-key KEY] [--json]\n\n"
               "List the connected and known peers of a running 'meshllm serve --p2p'.\n\n"
               "options:\n"
               "  --url URL        the node's API (default http://127.0.0.1:9337)\n"
               "  --api-key KEY    bearer key of that node (default $MESHLLM_API_KEY)\n"
               "  --json           print the node's JSON instead of a table\n"
               "  -h, --help       show this help\n");
}

static const char *str_or(const cJSON *o, const char *name, const char *def)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
    return s ? s : def;
}

static double num_or(const cJSON *o, const char *name, double def)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The mesh's peer table (members, what they serve, RTT, load, reputation). */
static void mesh_print(const cJSON *mesh, const char *route)
{
    if (!cJSON_IsObject(mesh)) return;
    if (!cJSON_IsTrue(cJSON_GetObjectItem(mesh, "member"))) {
        printf("mesh      none: this node admits nobody and delegates nothing ('meshllm mesh "
               "create' or 'meshllm join TOKEN')\n\n");
        return;
    }
    printf("mesh      %s, route %s\n", str_or(mesh, "id", "?"), route);
    const cJSON *peers = cJSON_GetObjectItem(mesh, "peers"), *p;
    printf("%-52s  %-6s  %-9s  %9s  %-34s  %s\n", "MEMBER", "KIND", "STATE", "RTT",
           "MODELS (active/slots queued tok/s)", "OK/FAILED/BUSY/LIES");
    cJSON_ArrayForEach(p, peers)
    {
        if (!cJSON_IsTrue(cJSON_GetObjectItem(p, "member"))) continue;
        char rtt[32] = "-", models[256] = "", rep[64];
        double r = num_or(p, "rtt_ms", -1);
        if (r >= 0) snprintf(rtt, sizeof rtt, "%.2f ms", r);
        size_t off = 0;
        const cJSON *mo;
        cJSON_ArrayForEach(mo, cJSON_GetObjectItem(p, "models"))
        {
            int w = snprintf(models + off, sizeof models - off, "%s%s %d/%d %d %.0f",
                             off ? ", " : "", str_or(mo, "name", "?"), (int)num_or(mo, "active", 0),
                             (int)num_or(mo, "slots", 0), (int)num_or(mo, "queued", 0),
                             num_or(mo, "tokens_per_s", 0));
            if (w < 0 || (size_t)w >= sizeof models - off) break;
            off += (size_t)w;
        }
        snprintf(rep, sizeof rep, "%d/%d/%d/%d", (int)num_or(p, "ok", 0),
                 (int)num_or(p, "failed", 0), (int)num_or(p, "busy", 0), (int)num_or(p, "lies", 0));
        printf("%-52s  %-6s  %-9s  %9s  %-34s  %s\n", str_or(p, "id", "?"),
               cJSON_IsTrue(cJSON_GetObjectItem(p, "own")) ? "owner" : "member",
               cJSON_IsTrue(cJSON_GetObjectItem(p, "connected")) ? "connected" : "known", rtt,
               models[0] ? models : "(none: a lite node)", rep);
        const cJSON *bl;
        cJSON_ArrayForEach(bl, cJSON_GetObjectItem(p, "blobs")) /* its store, on /meshllm/blob/1 */
        {
            printf("    provides %-32s  %.16s...  %.1f MiB\n", str_or(bl, "name", "?"),
                   str_or(bl, "content_id", "?"), num_or(bl, "size", 0) / 1048576.0);
        }
    }
    printf("\n");
}

/* Prints the table. Returns 0 or 1 (not the JSON we expect). */
static int peers_print(const cJSON *root)
{
    if (!cJSON_IsObject(root)) return 1;
    if (!cJSON_IsTrue(cJSON_GetObjectItem(root, "enabled"))) {
        printf("peer-to-peer is off on this node (start it with 'meshllm serve --p2p')\n");
        return 0;
    }
    printf("node      %s\n", str_or(root, "peer_id", "?"));
    const cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(root, "listen_addrs"))
    {
        if (cJSON_IsString(a)) printf("listening %s\n", a->valuestring);
    }
    const cJSON *dht = cJSON_GetObjectItem(root, "dht");
    const cJSON *ts = cJSON_GetObjectItem(dht, "table_size");
    printf("dht       %s, %d peers in the routing table\n", str_or(dht, "protocol", "?"),
           cJSON_IsNumber(ts) ? (int)ts->valuedouble : 0);
    const cJSON *peers = cJSON_GetObjectItem(root, "peers");
    int n_conn = 0, n = cJSON_GetArraySize(peers);
    const cJSON *p;
    cJSON_ArrayForEach(p, peers) n_conn += cJSON_IsTrue(cJSON_GetObjectItem(p, "connected"));
    printf("peers     %d connected, %d known\n\n", n_conn, n);
    mesh_print(cJSON_GetObjectItem(root, "mesh"), str_or(root, "route", "local"));
    if (n == 0) return 0;
    printf("%-52s  %-9s  %-9s  %10s  %-44s  %s\n", "PEER ID", "HOW", "STATE", "LATENCY",
           "ADDRESS", "PROTOCOLS");
    cJSON_ArrayForEach(p, peers)
    {
        char lat[32] = "-", protos[512] = "";
        const cJSON *l = cJSON_GetObjectItem(p, "latency_ms");
        if (cJSON_IsNumber(l)) snprintf(lat, sizeof lat, "%.2f ms", l->valuedouble);
        const cJSON *addrs = cJSON_GetObjectItem(p, "addrs");
        const char *addr = cJSON_GetStringValue(cJSON_GetArrayItem(addrs, 0));
        size_t off = 0;
        const cJSON *pr;
        cJSON_ArrayForEach(pr, cJSON_GetObjectItem(p, "protocols"))
        {
            /* The standard ones every host serves add nothing. */
            const char *s = cJSON_GetStringValue(pr);
            if (!s || !strncmp(s, "/ipfs/id/", 9) || !strcmp(s, "/ipfs/ping/1.0.0")) continue;
            int w = snprintf(protos + off, sizeof protos - off, "%s%s", off ? "," : "", s);
            if (w < 0 || (size_t)w >= sizeof protos - off) break;
            off += (size_t)w;
        }
        printf("%-52s  %-9s  %-9s  %10s  %-44s  %s\n", str_or(p, "id", "?"), str_or(p, "how", "?"),
               cJSON_IsTrue(cJSON_GetObjectItem(p, "connected")) ? "connected" : "known", lat,
               addr ? addr : "-", protos[0] ? protos : "-");
    }
    return 0;
}

int cmd_peers(int argc, char **argv)
{
    const char *base = "http://127.0.0.1:9337", *key = getenv("MESHLLM_API_KEY");
    bool as_json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            peers_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            as_json = true;
        } else if (!strcmp(argv[i], "--url") && i + 1 < argc) {
            base = argv[++i];
        } else if (!strcmp(argv[i], "--api-key") && i + 1 < argc) {
            key = argv[++i];
        } else {
            fprintf(stderr, "meshllm peers: unknown or incomplete option '%s'\n", argv[i]);
            peers_usage(stderr);
            return 2;
        }
    }
    char url[2048];
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/') blen--;
    if (blen + sizeof "/node/peers" > sizeof url) {
        cli_fail("peers: --url too long");
        return 2;
    }
    snprintf(url, sizeof url, "%.*s/node/peers", (int)blen, base);
    char *body = NULL;
    int rc = cli_http_get("peers", url, key, false, &body);
    if (rc == 0 && as_json) {
        printf("%s\n", body);
    } else if (rc == 0) {
        cJSON *root = cJSON_Parse(body);
        if (peers_print(root)) {
            cli_fail("peers: %s did not answer with a peers object", url);
            rc = 1;
        }
        cJSON_Delete(root);
    }
    free(body);
    return rc;
}
