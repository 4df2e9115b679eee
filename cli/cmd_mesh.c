/* cmd_mesh.c - `meshllm mesh create|show`, `meshllm invite`, `meshllm revoke`: the private
 * mesh from the command line (node/member.h; wire format in docs/PROTOCOL.md,
 * "/meshllm/member/1"). No networking: create and revoke work on the data directory (owner
 * key in DATA_DIR/mesh/owner.key, state in DATA_DIR/node.db), invite prints a token the
 * joiner redeems with `meshllm join` against the running node. Data directory: --data-dir,
 * else $MESHLLM_HOME, else ~/.meshllm.
 */
#include "cli/cli.h"

#include "core/err.h"
#include "net/identity.h"
#include "net/multiaddr.h"
#include "net/peer_id.h"
#include "node/member.h"
#include "node/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_INVITE_TTL_S (24 * 3600)
#define MAX_INVITE_TTL_S (365 * 24 * 3600ull)

/* The member state of one data directory, opened for a command. */
struct mesh_ctx {
    struct store *st;
    struct member *m;
};

/* Opens DATA_DIR's store and membership. Returns 0 or 1 (printed as "meshllm: what: ..."). */
static int ctx_open(const char *what, const char *opt_dir, struct mesh_ctx *c)
{
    char buf[4096], err[512];
    memset(c, 0, sizeof *c);
    const char *dir = cli_data_dir(opt_dir, buf, sizeof buf);
    if (!dir) {
        cli_fail("%s: neither MESHLLM_HOME nor HOME is set; pass --data-dir DIR", what);
        return 1;
    }
    if (store_open(dir, &c->st, err, sizeof err) ||
        member_open(dir, c->st, (uint64_t)time(NULL), &c->m, err, sizeof err)) {
        cli_fail("%s: %s", what, err);
        store_close(c->st);
        c->st = NULL;
        return 1;
    }
    return 0;
}

static void ctx_close(struct mesh_ctx *c)
{
    member_close(c->m);
    store_close(c->st);
}

/* ---- mesh create | show ---- */

struct mesh_args {
    const char *data_dir;
    bool is_create, force;
};

static void mesh_usage(FILE *f)
{
    fprintf(f, "usage: meshllm mesh create [--force] [--data-dir DIR]\n"
               "       meshllm mesh show [--data-dir DIR]\n\n"
               "create: make a new private mesh owned by this device: an owner key\n"
               "        (DIR/mesh/owner.key, keep it safe) and this node's certificate as the\n"
               "        owner's device. Prints the mesh ID. Refuses if the node already\n"
               "        belongs to a mesh, unless --force (which forgets that mesh).\n"
               "show:   print the mesh ID, this node's peer ID, its certificate's issuer and\n"
               "        expiry, whether it is an owner device, and the revocations known.\n\n"
               "options:\n"
               "  --force          replace the current mesh (create only)\n"
               "  --data-dir DIR   node data directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  -h, --help       show this help\n");
}

/* Returns 0, 2 (misuse, printed) or -1 for --help. */
static int mesh_parse(int argc, char **argv, struct mesh_args *a)
{
    memset(a, 0, sizeof *a);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) return -1;
    if (argc < 2 || (strcmp(argv[1], "create") && strcmp(argv[1], "show"))) {
        cli_fail("mesh: expected 'create' or 'show'");
        mesh_usage(stderr);
        return 2;
    }
    a->is_create = !strcmp(argv[1], "create");
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return -1;
        if (!strcmp(argv[i], "--force") && a->is_create) {
            a->force = true;
        } else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) {
            a->data_dir = argv[++i];
        } else {
            cli_fail("mesh %s: unknown or incomplete option '%s'", argv[1], argv[i]);
            mesh_usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* Peer ID text of a raw Ed25519 key. */
static void pk_text(const uint8_t pk[32], char *buf, size_t cap)
{
    uint8_t proto[IDENTITY_PUBKEY_PROTO_LEN];
    struct peer_id id;
    identity_pubkey_proto(pk, proto);
    if (peer_id_from_pubkey_proto(proto, sizeof proto, &id) || peer_id_to_text(&id, buf, cap))
        snprintf(buf, cap, "?");
}

static void time_text(uint64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t == 0)
        snprintf(buf, cap, "never");
    else if (!gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, cap, "%llu", (unsigned long long)t);
}

static int mesh_show(struct mesh_ctx *c)
{
    struct member_info in;
    char err[512], self[PEER_ID_TEXT_CAP], issuer[PEER_ID_TEXT_CAP], exp[64];
    if (member_info_get(c->m, &in, err, sizeof err)) {
        cli_fail("mesh show: %s", err);
        return 1;
    }
    if (peer_id_to_text(&in.self, self, sizeof self)) snprintf(self, sizeof self, "?");
    printf("mesh:         %s\n", in.is_member ? in.mesh_id : "none (not a member)");
    printf("peer:         %s\n", self);
    if (in.is_member) {
        if (!memcmp(in.issuer_pk, in.owner_pk, 32))
            snprintf(issuer, sizeof issuer, "mesh owner key");
        else
            pk_text(in.issuer_pk, issuer, sizeof issuer);
        time_text(in.expires_at, exp, sizeof exp);
        printf("issuer:       %s\n", issuer);
        printf("expires:      %s\n", exp);
        printf("owner device: %s\n", in.owner_device ? "yes" : "no");
        printf("chain depth:  %zu\n", in.depth);
        printf("owner key:    %s\n", in.has_owner_key ? "held by this node" : "not here");
        printf("revocations:  %zu\n", in.n_revocations);
    }
    return 0;
}

int cmd_mesh(int argc, char **argv)
{
    struct mesh_args a;
    struct mesh_ctx c;
    struct member_info in;
    char err[512];
    int rc = mesh_parse(argc, argv, &a);
    if (rc < 0) {
        mesh_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    const char *what = a.is_create ? "mesh create" : "mesh show";
    if (ctx_open(what, a.data_dir, &c)) return 1;
    if (!a.is_create) {
        rc = mesh_show(&c);
    } else if (member_mesh_create(c.m, a.force, (uint64_t)time(NULL), err, sizeof err) ||
               member_info_get(c.m, &in, err, sizeof err)) {
        cli_fail("mesh create: %s", err);
        rc = 1;
    } else {
        printf("%s\n", in.mesh_id);
    }
    ctx_close(&c);
    return rc;
}

/* ---- invite ---- */

struct invite_args {
    const char *data_dir;
    uint64_t ttl_s;
    bool has_peer;
    struct peer_id peer;
    struct multiaddr addrs[MEMBER_INVITE_MAX_ADDRS];
    size_t n_addrs;
};

static void invite_usage(FILE *f)
{
    fprintf(f, "usage: meshllm invite [--expires DURATION] [--peer PEER_ID] [--addr MULTIADDR]...\n"
               "                      [--data-dir DIR]\n\n"
               "Print an invite token (meshllm-invite:...) for another device to join this\n"
               "node's mesh with 'meshllm join TOKEN'. The token is a secret until used: anyone\n"
               "holding it may join. Without --peer it works once; with --peer only that peer\n"
               "may use it. It names this node's listen addresses, as recorded by the running\n"
               "node ('meshllm serve --p2p'), unless --addr is given.\n\n"
               "options:\n"
               "  --expires D      validity: N followed by s, m, h or d (30m, 24h, 7d; default\n"
               "                   24h, at most 365d)\n"
               "  --peer ID        only this peer ID (12D3KooW...) may join with the token\n"
               "  --addr MA        an address to dial this node at (repeatable, at most %d)\n"
               "  --data-dir DIR   node data directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  -h, --help       show this help\n",
            MEMBER_INVITE_MAX_ADDRS);
}

/* "30m", "24h", "7d", "90s" -> seconds in [1, MAX_INVITE_TTL_S]. Returns 0 or -1. */
static int parse_duration(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    uint64_t unit;
    if (errno || end == s || *s == '-' || *s == '+' || end[0] == 0 || end[1] != 0) return -1;
    switch (*end) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    default: return -1;
    }
    if (v == 0 || v > MAX_INVITE_TTL_S / unit) return -1;
    *out = v * unit;
    return 0;
}

static int invite_parse(int argc, char **argv, struct invite_args *a)
{
    memset(a, 0, sizeof *a);
    a->ttl_s = DEFAULT_INVITE_TTL_S;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
        if (i + 1 >= argc) {
            cli_fail("invite: unknown option or missing value: %s", o);
            invite_usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(o, "--data-dir")) {
            a->data_dir = v;
        } else if (!strcmp(o, "--expires")) {
            if (parse_duration(v, &a->ttl_s)) {
                cli_fail("invite: --expires '%s': expected N followed by s, m, h or d "
                         "(30m, 24h, 7d), at most 365d", v);
                return 2;
            }
        } else if (!strcmp(o, "--peer")) {
            if (peer_id_from_text(v, strlen(v), &a->peer)) {
                cli_fail("invite: --peer '%s' is not a peer ID (12D3KooW...)", v);
                return 2;
            }
            a->has_peer = true;
        } else if (!strcmp(o, "--addr")) {
            if (a->n_addrs == MEMBER_INVITE_MAX_ADDRS) {
                cli_fail("invite: at most %d --addr", MEMBER_INVITE_MAX_ADDRS);
                return 2;
            }
            if (multiaddr_from_text(v, &a->addrs[a->n_addrs])) {
                cli_fail("invite: --addr '%s' is not a multiaddr (/ip4/1.2.3.4/tcp/4001)", v);
                return 2;
            }
            a->n_addrs++;
        } else {
            cli_fail("invite: unknown option %s (see 'meshllm invite --help')", o);
            return 2;
        }
    }
    return 0;
}

int cmd_invite(int argc, char **argv)
{
    struct invite_args a;
    struct mesh_ctx c;
    char err[512], *token = NULL;
    int rc = invite_parse(argc, argv, &a);
    if (rc < 0) {
        invite_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (ctx_open("invite", a.data_dir, &c)) return 1;
    uint64_t now = (uint64_t)time(NULL);
    struct member_invite_opts o = {
        .expires_at = now + a.ttl_s,
        .bound = a.has_peer ? &a.peer : NULL,
        .addrs = a.addrs,
        .n_addrs = a.n_addrs,
    };
    if (member_invite_make(c.m, &o, now, &token, err, sizeof err)) {
        cli_fail("invite: %s", err);
        rc = 1;
    } else {
        printf("%s\n", token);
    }
    free(token);
    ctx_close(&c);
    return rc;
}

/* ---- revoke ---- */

static void revoke_usage(FILE *f)
{
    fprintf(f, "usage: meshllm revoke PEER_ID [--data-dir DIR]\n\n"
               "Remove PEER_ID from the mesh, and every device it invited. Needs the mesh owner\n"
               "key (the device that ran 'meshllm mesh create'). The running node gossips the\n"
               "revocation to the mesh; it cannot be undone (the device may be invited again\n"
               "only under a new peer ID).\n\n"
               "options:\n"
               "  --data-dir DIR   node data directory (default $MESHLLM_HOME, else ~/.meshllm)\n"
               "  -h, --help       show this help\n");
}

struct revoke_args {
    const char *data_dir;
    struct peer_id peer;
};

static int revoke_parse(int argc, char **argv, struct revoke_args *a)
{
    bool has_peer = false;
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) return -1;
        if (!strcmp(o, "--data-dir") && i + 1 < argc) {
            a->data_dir = argv[++i];
        } else if (o[0] != '-' && !has_peer) {
            if (peer_id_from_text(o, strlen(o), &a->peer)) {
                cli_fail("revoke: '%s' is not a peer ID (12D3KooW...)", o);
                return 2;
            }
            has_peer = true;
        } else {
            cli_fail("revoke: unexpected argument '%s'", o);
            revoke_usage(stderr);
            return 2;
        }
    }
    if (!has_peer) {
        cli_fail("revoke: give the PEER_ID to revoke");
        revoke_usage(stderr);
        return 2;
    }
    return 0;
}

int cmd_revoke(int argc, char **argv)
{
    struct revoke_args a;
    struct mesh_ctx c;
    char err[512];
    int rc = revoke_parse(argc, argv, &a);
    if (rc < 0) {
        revoke_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (ctx_open("revoke", a.data_dir, &c)) return 1;
    if (member_revoke(c.m, &a.peer, (uint64_t)time(NULL), err, sizeof err)) {
        cli_fail("revoke: %s", err);
        rc = 1;
    }
    ctx_close(&c);
    return rc;
}
