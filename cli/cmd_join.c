/* cmd_join.c - `meshllm join TOKEN`: joins the mesh an invite names. The inviter (a running
 * `meshllm serve --p2p` that is a member) is dialed at the addresses in the token; it checks
 * the invite and answers with a membership certificate for this node, which is stored with
 * the node's identity (DATA_DIR/node.db). Then `meshllm serve --p2p` starts as a member. */
#include "cli/cli.h"

#include "core/err.h"
#include "node/mesh.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void join_usage(FILE *f)
{
    fprintf(f, "usage: meshllm join TOKEN [--data-dir DIR] [--timeout S]\n\n"
               "Joins the private mesh of an invite made with 'meshllm invite' on a member.\n"
               "The member that made it must be running ('meshllm serve --p2p').\n\n"
               "options:\n"
               "  --data-dir DIR   node key directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  --timeout S      seconds to wait for the inviter (default 10)\n"
               "  -h, --help       show this help\n");
}

struct join_args {
    const char *token, *data_dir;
    int timeout_s;
};

static int join_parse(int argc, char **argv, struct join_args *a)
{
    memset(a, 0, sizeof *a);
    a->timeout_s = 10;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
        if (!strcmp(o, "--data-dir") && i + 1 < argc) {
            a->data_dir = argv[++i];
        } else if (!strcmp(o, "--timeout") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 600) {
                cli_fail("join: bad value '%s' for --timeout", argv[i]);
                return 2;
            }
            a->timeout_s = (int)v;
        } else if (o[0] != '-' && !a->token) {
            a->token = o;
        } else {
            cli_fail("join: unknown option or extra argument %s (see 'meshllm join --help')", o);
            return 2;
        }
    }
    if (!a->token) {
        cli_fail("join: give the invite token (see 'meshllm join --help')");
        return 2;
    }
    return 0;
}

int cmd_join(int argc, char **argv)
{
    struct join_args a;
    int rc = join_parse(argc, argv, &a);
    if (rc == -1) {
        join_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    char dir_buf[4096], err[512];
    const char *dir = cli_data_dir(a.data_dir, dir_buf, sizeof dir_buf);
    if (!dir) {
        cli_fail("join: neither MESHLLM_HOME nor HOME is set; pass --data-dir DIR");
        return 1;
    }
    if (mesh_join(dir, a.token, a.timeout_s * 1000, err, sizeof err) != 0) {
        cli_fail("join: %s", err);
        return 1;
    }
    printf("meshllm: joined the mesh; start the node with 'meshllm serve --p2p'\n");
    return 0;
}
