/* cmd_id.c - `meshllm id`: prints this node's libp2p peer ID, creating the Ed25519 identity
 * key on first use (DIR/identity.key, mode 0600; see net/identity.h). The data directory is
 * --data-dir DIR, else $MESHLLM_HOME, else ~/.meshllm. Listen addresses belong to a running
 * node (`meshllm serve --p2p`), so they are not printed here. */
#include "cli/cli.h"

#include "net/identity.h"
#include "net/peer_id.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void id_usage(FILE *f)
{
    fprintf(f, "usage: meshllm id [--data-dir DIR]\n\n"
               "Print this node's peer ID (12D3KooW...), creating its identity key on first use.\n\n"
               "options:\n"
               "  --data-dir DIR   node data directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  -h, --help       show this help\n");
}

int cmd_id(int argc, char **argv)
{
    const char *dir = NULL;
    char def[4096], err[512], text[PEER_ID_TEXT_CAP];
    struct identity id;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            id_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) {
            dir = argv[++i];
        } else {
            fprintf(stderr, "meshllm id: unknown or incomplete option '%s'\n", argv[i]);
            id_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        const char *env = getenv("MESHLLM_HOME"), *home = getenv("HOME");
        if (env && *env) {
            dir = env;
        } else {
            if (!home || !*home) {
                cli_fail("id: neither MESHLLM_HOME nor HOME is set; pass --data-dir DIR");
                return 1;
            }
            snprintf(def, sizeof def, "%s/.meshllm", home);
            dir = def;
        }
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
    return 0;
}
