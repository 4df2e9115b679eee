/* cmd_id.c - `meshllm id`: prints this node's libp2p peer ID, creating the Ed25519 identity
 * key on first use (DIR/identity.key, mode 0600; see net/identity.h). The data directory is
 * --data-dir DIR, else $MESHLLM_HOME, else ~/.meshllm. Listen addresses belong to a running
 * node: when `meshllm serve --p2p` with this identity answers at --url, its addresses are
 * printed too, one dialable multiaddr (.../p2p/ID) per line. */
#include "cli/cli.h"

#include "net/identity.h"
#include "net/peer_id.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void id_usage(FILE *f)
{
    fprintf(f, "usage: meshllm id [--data-dir DIR] [--url URL]\n\n"
               "Print this node's peer ID (12D3KooW...), creating its identity key on first use,\n"
               "and the addresses it listens on when it is running ('meshllm serve --p2p').\n\n"
               "options:\n"
               "  --data-dir DIR   node data directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  --url URL        where the running node's API is (default http://127.0.0.1:9337)\n"
               "  -h, --help       show this help\n");
}

/* If the node with this peer ID is running at base, prints its listen addresses. Silent
 * when no node answers: that is the normal case of a node that is not started. */
static void print_running_addrs(const char *base, const char *my_id)
{
    char url[2048], *body = NULL;
    snprintf(url, sizeof url, "%s/node/peers", base);
    if (cli_http_get("id", url, getenv("MESHLLM_API_KEY"), true, &body) != 0) return;
    cJSON *root = cJSON_Parse(body);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(root, "peer_id"));
    const cJSON *a;
    if (id && !strcmp(id, my_id))
        cJSON_ArrayForEach(a, cJSON_GetObjectItem(root, "listen_addrs"))
            if (cJSON_IsString(a)) /* the node lists them dialable, ending in /p2p/ID */
                printf("%s%s%s\n", a->valuestring, strstr(a->valuestring, "/p2p/") ? "" : "/p2p/",
                       strstr(a->valuestring, "/p2p/") ? "" : my_id);
    cJSON_Delete(root);
    free(body);
}

int cmd_id(int argc, char **argv)
{
    const char *dir = NULL, *base = "http://127.0.0.1:9337";
    char def[4096], err[512], text[PEER_ID_TEXT_CAP];
    struct identity id;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            id_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--url") && i + 1 < argc) {
            base = argv[++i];
        } else {
            fprintf(stderr, "meshllm id: unknown or incomplete option '%s'\n", argv[i]);
            id_usage(stderr);
            return 2;
        }
    }
    dir = cli_data_dir(dir, def, sizeof def);
    if (!dir) {
        cli_fail("id: neither MESHLLM_HOME nor HOME is set; pass --data-dir DIR");
        return 1;
    }
    if (identity_load_or_create(dir, &id, err, sizeof err) != 0) {
        cli_fail("id: %s", err);
        return 1;
    }
    int rc = peer_id_to_text(&id.id, text, sizeof text);
    identity_wipe(&id);
    if (rc) {
        cli_fail("id: cannot format the peer ID");
        return 1;
    }
    printf("%s\n", text);
    print_running_addrs(base, text);
    return 0;
}
