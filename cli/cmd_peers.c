/* cmd_peers.c - `meshllm peers`: asks a running `meshllm serve --p2p` for its peers
 * (GET /node/peers, docs/API.md) and prints them as a table: peer ID, how it was found
 * (bootstrap, mdns, dht, inbound), connected or only known (DHT routing table, mDNS),
 * ping latency, first address, protocols. --json prints the server's JSON as is. */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PEERS_MAX_BODY (4u << 20)

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

struct body {
    char *buf;
    size_t len;
    bool too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (b->len + n > PEERS_MAX_BODY) {
        b->too_big = true;
        return 0;
    }
    char *nb = realloc(b->buf, b->len + n + 1);
    if (!nb) return 0;
    memcpy(nb + b->len, data, n);
    b->buf = nb;
    b->len += n;
    nb[b->len] = 0;
    return n;
}

/* GETs url into *out (malloc'd, NUL-terminated). Returns 0 or 1 (message printed). */
static int peers_fetch(const char *url, const char *key, char **out)
{
    struct body b = {0};
    char auth[512];
    struct curl_slist *hdrs = NULL;
    int rc = 1;
    *out = NULL;
    CURL *c = curl_easy_init();
    if (!c) {
        cli_fail("peers: cannot start libcurl");
        return 1;
    }
    if (key && *key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        hdrs = curl_slist_append(hdrs, auth);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    CURLcode cr = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (cr != CURLE_OK) {
        cli_fail("peers: %s: %s%s", url, b.too_big ? "reply too large" : curl_easy_strerror(cr),
                 cr == CURLE_COULDNT_CONNECT ? " (is 'meshllm serve' running there?)" : "");
        goto out;
    }
    if (status != 200) {
        cli_fail("peers: %s answered HTTP %ld%s", url, status,
                 status == 401 ? " (pass --api-key)" : status == 404 ? " (an older node?)" : "");
        goto out;
    }
    *out = b.buf;
    b.buf = NULL;
    rc = 0;
out:
    free(b.buf);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return rc;
}

static const char *str_or(const cJSON *o, const char *name, const char *def)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
    return s ? s : def;
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
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        cli_fail("peers: cannot start libcurl");
        return 1;
    }
    char *body = NULL;
    int rc = peers_fetch(url, key, &body);
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
    curl_global_cleanup();
    return rc;
}
