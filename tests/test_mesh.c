/* test_mesh.c - node/mesh.c and the router on real nodes over 127.0.0.1, in one process:
 * O creates a mesh and serves stories260K; J joins with an invite (a lite node: no model);
 * X is a libp2p node with a valid identity and no certificate; Y is the member of another
 * mesh. J hears O's announcement and its router answers through O (the same text as O's own
 * scheduler), but not on route local (404, and O opens no infer stream); X and Y are
 * refused on /meshllm/infer/1 and hear nothing; O2 (honest) and L (a liar: a cheaper model
 * under the announced name) join, and J's spot checks find L out; J restarted with no
 * bootstrap finds its peers again from its store; once the owner revokes J, O refuses it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/host.h"
#include "net/p2pnode.h"
#include "node/infer.h"
#include "node/local.h"
#include "node/member.h"
#include "node/mesh.h"
#include "node/peers.h"
#include "node/registry.h"
#include "node/router.h"
#include "node/store.h"
#include "tests/util/test_util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROMPT "Once upon a time, there was a little girl named Lily."

static struct registry *g_reg, *g_liar_reg;
static struct mesh *g_o, *g_j, *g_y, *g_o2, *g_l;
static struct p2pnode *g_x;
static struct multiaddr g_o_addr;

static const char *node_dir(const char *name)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmp_dir(), name);
    mkdir(dir, 0700);
    return dir;
}

/* Opens the membership of a data dir, as the CLI does next to a running node. */
static struct member *member_at(const char *dir, struct store **st)
{
    char err[256];
    struct member *m = NULL;
    if (store_open(dir, st, err, sizeof err) ||
        member_open(dir, *st, (uint64_t)time(NULL), &m, err, sizeof err))
        fail_msg("member_open %s: %s", dir, err);
    return m;
}

static void mesh_create(const char *dir)
{
    struct store *st = NULL;
    struct member *m = member_at(dir, &st);
    char err[256];
    if (member_mesh_create(m, false, (uint64_t)time(NULL), err, sizeof err))
        fail_msg("mesh create: %s", err);
    member_close(m);
    store_close(st);
}

static struct mesh *start(const char *name, struct registry *reg, const char *token,
                          const struct multiaddr *boot)
{
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    struct mesh_config c = {.data_dir = node_dir(name), .reg = reg, .listen = &lo, .n_listen = 1,
                            .bootstrap = boot, .n_bootstrap = boot ? 1 : 0,
                            .join_token = token};
    struct mesh *m = NULL;
    char err[512];
    if (mesh_start(&c, &m, err, sizeof err)) fail_msg("mesh_start %s: %s", name, err);
    return m;
}

static bool announces_model(struct mesh *m, const struct peer_id *who)
{
    struct peers_entry *es = calloc(PEERS_MAX, sizeof *es);
    int n = peers_snapshot(mesh_peers(m), es, PEERS_MAX);
    bool ok = false;
    for (int i = 0; i < n; i++)
        if (peer_id_equal(&es[i].id, who) && es[i].is_member && es[i].n_models > 0 &&
            !strcmp(es[i].models[0].name, "stories260K"))
            ok = true;
    free(es);
    return ok;
}

static char *invite_from_o(void)
{
    struct store *st = NULL;
    struct member *mo = member_at(node_dir("O"), &st);
    struct member_invite_opts io = {.expires_at = (uint64_t)time(NULL) + 3600};
    char *tok = NULL, err[256];
    if (member_invite_make(mo, &io, (uint64_t)time(NULL), &tok, err, sizeof err))
        fail_msg("invite: %s", err);
    member_close(mo);
    store_close(st);
    return tok;
}

/* A copy of the Q4_K_M file named like the real one: a peer that passes a cheaper model
 * off as the announced one. */
static struct registry *liar_registry(void)
{
    char path[600];
    snprintf(path, sizeof path, "%s/stories260K.gguf", node_dir("liar-model"));
    size_t len = 0;
    char *b = test_read_file(test_model_path("stories260K-Q4_K_M.gguf"), &len);
    assert_non_null(b);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, len, f), len);
    fclose(f);
    free(b);
    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 2;
    sp.n_ctx = 256;
    sp.n_threads = 1;
    struct registry *reg = NULL;
    char err[256];
    if (registry_new(&sp, &reg) || registry_add(reg, path, err, sizeof err) ||
        registry_load_wait(reg))
        fail_msg("liar registry: %s", err);
    return reg;
}

static int group_setup(void **state)
{
    (void)state;
    struct sched_params sp;
    sched_params_default(&sp);
    sp.n_slots = 2;
    sp.n_ctx = 256;
    sp.n_threads = 1;
    char err[256];
    if (registry_new(&sp, &g_reg) ||
        registry_add(g_reg, test_model_path("stories260K.gguf"), err, sizeof err) ||
        registry_load_wait(g_reg))
        return -1;
    mesh_create(node_dir("O"));
    g_o = start("O", g_reg, NULL, NULL);
    assert_true(p2pnode_listen_addrs(mesh_p2pnode(g_o), &g_o_addr, 1) == 1);
    /* J joins with an invite made next to the running O (as `meshllm invite` does) */
    char *tok = invite_from_o();
    g_j = start("J", NULL, tok, &g_o_addr);
    free(tok);
    /* Y: another mesh; X: no mesh at all (a plain libp2p node) */
    mesh_create(node_dir("Y"));
    g_y = start("Y", NULL, NULL, &g_o_addr);
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    struct p2pnode_config xc = {.data_dir = node_dir("X"), .listen = &lo, .n_listen = 1,
                                .bootstrap = &g_o_addr, .n_bootstrap = 1, .use_gossip = true};
    if (p2pnode_start(&xc, &g_x, err, sizeof err)) fail_msg("X: %s", err);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    p2pnode_stop(g_x);
    mesh_stop(g_l);
    mesh_stop(g_o2);
    registry_free(g_liar_reg);
    mesh_stop(g_y);
    mesh_stop(g_j);
    mesh_stop(g_o);
    registry_free(g_reg);
    return 0;
}

static void chat(struct node_gen_req *q, struct node_msg *msg)
{
    node_gen_req_init(q);
    memset(msg, 0, sizeof *msg); /* tool_calls_json, tool_call_id, name: none */
    q->kind = NODE_KIND_CHAT;
    q->model = "stories260K";
    *msg = (struct node_msg){.role = "user", .content = PROMPT};
    q->msgs = msg;
    q->n_msgs = 1;
    q->temperature = 0;
    q->max_tokens = 24;
}

struct result {
    char text[8192];
    size_t len;
    const char *finish;
    enum node_fail fail;
    struct node_error err;
};

static void drain(struct node_req *r, struct result *res)
{
    memset(res, 0, sizeof *res);
    for (int spins = 0; spins < 100000; spins++) {
        struct node_chunk ch;
        assert_int_equal(node_req_take(r, &ch), 0);
        assert_true(res->len + ch.len < sizeof res->text);
        if (ch.len) memcpy(res->text + res->len, ch.text, ch.len);
        res->len += ch.len;
        bool done = ch.done;
        if (done) {
            res->finish = ch.finish_reason;
            res->fail = ch.fail;
            res->err = ch.err;
        }
        node_chunk_free(&ch);
        if (done) return;
        usleep(200);
    }
    fail_msg("request did not finish");
}

static void wait_until(bool (*cond)(void), int seconds, const char *what)
{
    for (int i = 0; i < seconds * 20; i++) {
        if (cond()) return;
        usleep(50000);
    }
    fail_msg("timed out waiting for %s", what);
}

static bool j_hears_o(void)
{
    return announces_model(g_j, p2pnode_peer_id(mesh_p2pnode(g_o)));
}

static void test_mesh_delegation_and_routes(void **state)
{
    (void)state;
    assert_true(mesh_id(g_o)[0] != 0);
    assert_string_equal(mesh_id(g_j), mesh_id(g_o));
    assert_string_not_equal(mesh_id(g_y), mesh_id(g_o));
    wait_until(j_hears_o, 20, "J to hear O's announcement");
    struct node_gen_req q;
    struct node_msg msg;
    chat(&q, &msg);
    /* what O's own scheduler says */
    struct result *want = calloc(1, sizeof *want), *got = calloc(1, sizeof *got);
    struct node_req *r = NULL;
    struct node_error e;
    assert_int_equal(node_local_submit(g_reg, &q, NULL, &r, &e), 0);
    drain(r, want);
    node_req_release(r);
    /* J's router, route mesh (a lite node's default) */
    struct router *rt = NULL;
    struct router_config rc = {.reg = NULL, .mesh = g_j, .default_route = NODE_ROUTE_MESH};
    assert_int_equal(router_new(&rc, &rt), 0);
    struct router_model models[8];
    int n = router_models(rt, models, 8);
    assert_int_equal(n, 1);
    assert_string_equal(models[0].name, "stories260K");
    assert_false(models[0].is_local);
    assert_int_equal(models[0].n_where, 1);
    assert_string_equal(models[0].where[0], mesh_self_text(g_o));
    struct node_client cl = {0};
    if (router_submit(rt, &q, &cl, &r, &e)) fail_msg("router: %d %s", e.status, e.message);
    drain(r, got);
    char who[NODE_RAN_ON_CAP];
    node_req_ran_on(r, who, sizeof who);
    node_req_release(r);
    assert_string_equal(who, mesh_self_text(g_o));
    assert_string_equal(got->finish, "length");
    assert_int_equal(got->len, want->len);
    assert_memory_equal(got->text, want->text, want->len);
    struct mesh_stats so, sj;
    mesh_stats(g_o, &so);
    mesh_stats(g_j, &sj);
    assert_true(sj.n_infer_out >= 1);
    /* route local on the lite node: nothing to answer with, and nothing leaves */
    uint64_t out_before = sj.n_infer_out;
    q.route = NODE_ROUTE_LOCAL;
    r = NULL;
    assert_int_equal(router_submit(rt, &q, &cl, &r, &e), MESH_ENOTFOUND);
    assert_null(r);
    assert_int_equal(e.status, 404);
    mesh_stats(g_j, &sj);
    assert_int_equal(sj.n_infer_out, out_before);
    /* an unknown model: 404 naming the mesh */
    q.route = NODE_ROUTE_MESH;
    q.model = "no-such-model";
    assert_int_equal(router_submit(rt, &q, &cl, &r, &e), MESH_ENOTFOUND);
    assert_int_equal(e.status, 404);
    assert_non_null(strstr(e.message, "mesh"));
    router_free(rt);
    free(want);
    free(got);
}

/* Opens an infer stream from node pn to O and returns how it ended. */
static void infer_from(struct p2pnode *pn, struct result *res)
{
    struct node_gen_req q;
    struct node_msg msg;
    chat(&q, &msg);
    struct peer_id o_id = *p2pnode_peer_id(mesh_p2pnode(g_o));
    struct node_client cl = {0};
    struct node_req *r = NULL;
    assert_int_equal(infer_client_submit(pn, &o_id, &g_o_addr, &q, &cl, &r), 0);
    drain(r, res);
    node_req_release(r);
}

/* Asks O's host, on its loop thread, whether it protects a peer from trimming. */
struct protect_q {
    struct peer_id id;
    atomic_int answer; /* -1 until answered, then 0 or 1 */
};

static void protect_ask(struct p2pnode *n, void *arg)
{
    struct protect_q *q = arg;
    struct host *h = p2pnode_host(n);
    q->answer = h && host_peer_is_protected(h, &q->id);
}

static bool o_protects(const struct peer_id *id)
{
    struct protect_q *q = calloc(1, sizeof *q); /* kept if never answered: still the loop's */
    assert_non_null(q);
    q->id = *id;
    q->answer = -1;
    assert_int_equal(p2pnode_call(mesh_p2pnode(g_o), protect_ask, q), 0);
    for (int i = 0; i < 500 && q->answer < 0; i++) usleep(10000);
    assert_true(q->answer >= 0);
    bool yes = q->answer == 1;
    free(q);
    return yes;
}

static void test_mesh_strangers_are_refused(void **state)
{
    (void)state;
    struct mesh_stats before, after;
    mesh_stats(g_o, &before);
    struct result *res = calloc(1, sizeof *res);
    /* no certificate: parked, then refused once the hello timeout passes */
    infer_from(g_x, res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->fail, NODE_FAIL_LOST);
    assert_int_equal(res->len, 0);
    /* another mesh's certificate: refused */
    infer_from(mesh_p2pnode(g_y), res);
    assert_string_equal(res->finish, "error");
    assert_int_equal(res->len, 0);
    mesh_stats(g_o, &after);
    assert_true(after.n_refused >= 1); /* Y's hello */
    assert_int_equal(after.n_infer_opened, before.n_infer_opened);
    /* Y heard none of O's announcements, and O counts neither as a member */
    struct mesh_stats sy;
    mesh_stats(g_y, &sy);
    assert_int_equal(sy.n_announces_recv, 0);
    assert_false(announces_model(g_y, p2pnode_peer_id(mesh_p2pnode(g_o))));
    struct peers_entry *es = calloc(PEERS_MAX, sizeof *es);
    int n = peers_snapshot(mesh_peers(g_o), es, PEERS_MAX);
    for (int i = 0; i < n; i++) {
        if (peer_id_equal(&es[i].id, p2pnode_peer_id(g_x)) ||
            peer_id_equal(&es[i].id, p2pnode_peer_id(mesh_p2pnode(g_y))))
            assert_false(es[i].is_member);
    }
    /* the admitted member is spared by O's connection trim; the strangers are not */
    assert_true(o_protects(p2pnode_peer_id(mesh_p2pnode(g_j))));
    assert_false(o_protects(p2pnode_peer_id(g_x)));
    assert_false(o_protects(p2pnode_peer_id(mesh_p2pnode(g_y))));
    free(es);
    free(res);
}

static struct peers_entry *entry_of(struct mesh *m, const struct peer_id *id, struct peers_entry *es)
{
    int n = peers_snapshot(mesh_peers(m), es, PEERS_MAX);
    for (int i = 0; i < n; i++)
        if (peer_id_equal(&es[i].id, id)) return &es[i];
    return NULL;
}

static bool j_hears_all(void)
{
    return announces_model(g_j, p2pnode_peer_id(mesh_p2pnode(g_o))) &&
           announces_model(g_j, p2pnode_peer_id(mesh_p2pnode(g_o2))) &&
           announces_model(g_j, p2pnode_peer_id(mesh_p2pnode(g_l)));
}

/* Spot checks: L serves another model under the announced name. J (no model) checks every
 * greedy answer on a second peer, and on a third when they disagree: L is found out. */
static void test_mesh_spot_check_finds_a_liar_and_route_own(void **state)
{
    (void)state;
    char *tok = invite_from_o();
    g_o2 = start("O2", g_reg, tok, &g_o_addr);
    free(tok);
    g_liar_reg = liar_registry();
    tok = invite_from_o();
    g_l = start("L", g_liar_reg, tok, &g_o_addr);
    free(tok);
    wait_until(j_hears_all, 30, "J to hear O, O2 and L");
    const struct peer_id *o = p2pnode_peer_id(mesh_p2pnode(g_o));
    const struct peer_id *o2 = p2pnode_peer_id(mesh_p2pnode(g_o2));
    const struct peer_id *l = p2pnode_peer_id(mesh_p2pnode(g_l));
    /* J has had bad luck with O and O2, so the router picks L */
    for (int i = 0; i < 4; i++) {
        peers_report(mesh_peers(g_j), o, PEERS_FAIL);
        peers_report(mesh_peers(g_j), o2, PEERS_FAIL);
    }
    setenv("MESHLLM_SPOT_CHECK", "1", 1);
    struct router *rt = NULL;
    struct router_config rc = {.mesh = g_j, .default_route = NODE_ROUTE_MESH};
    assert_int_equal(router_new(&rc, &rt), 0);
    unsetenv("MESHLLM_SPOT_CHECK");
    struct node_gen_req q;
    struct node_msg msg;
    chat(&q, &msg);
    struct node_client cl = {0};
    struct node_req *r = NULL;
    struct node_error e;
    if (router_submit(rt, &q, &cl, &r, &e)) fail_msg("router: %s", e.message);
    struct result *res = calloc(1, sizeof *res);
    drain(r, res);
    char who[NODE_RAN_ON_CAP], l_text[64];
    node_req_ran_on(r, who, sizeof who);
    node_req_release(r);
    assert_int_equal(peer_id_to_text(l, l_text, sizeof l_text), 0);
    assert_string_equal(who, l_text);
    assert_string_equal(res->finish, "length");
    /* the check runs after the answer: O or O2 disagrees, the other one decides */
    struct peers_entry *es = calloc(PEERS_MAX, sizeof *es);
    bool found = false;
    for (int i = 0; i < 100 && !found; i++) {
        usleep(100000);
        struct peers_entry *pe = entry_of(g_j, l, es);
        found = pe && pe->n_lies >= 1;
    }
    assert_true(found);
    assert_int_equal(entry_of(g_j, o, es)->n_lies, 0);
    assert_int_equal(entry_of(g_j, o2, es)->n_lies, 0);
    /* a liar ranks last from now on, whatever else happened */
    struct peers_pick picks[4];
    int n = peers_rank(mesh_peers(g_j), "stories260K", false, NULL, 0, NULL, 0, mesh_now_ms(),
                       picks, 4);
    assert_int_equal(n, 3);
    assert_true(peer_id_equal(&picks[2].id, l));
    router_free(rt); /* waits for any check still running */
    /* route own: only devices holding the owner key answer (O), however they rank */
    for (int i = 0; i < 8; i++) peers_report(mesh_peers(g_j), o, PEERS_FAIL);
    struct router_config own = {.mesh = g_j, .default_route = NODE_ROUTE_OWN};
    assert_int_equal(router_new(&own, &rt), 0);
    char o_text[64];
    assert_int_equal(peer_id_to_text(o, o_text, sizeof o_text), 0);
    for (int i = 0; i < 3; i++) {
        if (router_submit(rt, &q, &cl, &r, &e)) fail_msg("router own: %s", e.message);
        drain(r, res);
        node_req_ran_on(r, who, sizeof who);
        node_req_release(r);
        assert_string_equal(who, o_text);
    }
    router_free(rt);
    free(es);
    free(res);
}

/* A restart knows its peers: the table is persisted at stop and restored at start, and
 * the remembered members are dialed without any --bootstrap. */
static void test_mesh_restart_remembers_peers(void **state)
{
    (void)state;
    mesh_stop(g_j);
    g_j = start("J", NULL, NULL, NULL);
    struct peers_entry *es = calloc(PEERS_MAX, sizeof *es);
    /* before any connection: O, O2 and L are in the table, with their addresses */
    assert_non_null(entry_of(g_j, p2pnode_peer_id(mesh_p2pnode(g_o)), es));
    assert_non_null(entry_of(g_j, p2pnode_peer_id(mesh_p2pnode(g_o2)), es));
    struct peers_entry *pl = entry_of(g_j, p2pnode_peer_id(mesh_p2pnode(g_l)), es);
    assert_non_null(pl);
    assert_true(pl->n_addrs >= 1);
    free(es);
    wait_until(j_hears_all, 30, "the restarted J to hear its mesh again");
}

static void test_mesh_revoked_member_is_refused(void **state)
{
    (void)state;
    struct result *res = calloc(1, sizeof *res);
    /* J is served now */
    infer_from(mesh_p2pnode(g_j), res);
    assert_string_equal(res->finish, "length");
    /* the owner revokes J next to the running O (as `meshllm revoke` does) */
    struct store *st = NULL;
    struct member *mo = member_at(node_dir("O"), &st);
    char err[256];
    if (member_revoke(mo, p2pnode_peer_id(mesh_p2pnode(g_j)), (uint64_t)time(NULL), err,
                      sizeof err))
        fail_msg("revoke: %s", err);
    member_close(mo);
    store_close(st);
    /* O applies it within a tick or two; then J's streams are refused */
    bool refused = false;
    for (int i = 0; i < 50 && !refused; i++) {
        usleep(100000);
        infer_from(mesh_p2pnode(g_j), res);
        refused = !strcmp(res->finish, "error");
    }
    assert_true(refused);
    assert_int_equal(res->len, 0);
    assert_false(o_protects(p2pnode_peer_id(mesh_p2pnode(g_j))));
    free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mesh_delegation_and_routes),
        cmocka_unit_test(test_mesh_strangers_are_refused),
        cmocka_unit_test(test_mesh_spot_check_finds_a_liar_and_route_own),
        cmocka_unit_test(test_mesh_restart_remembers_peers),
        cmocka_unit_test(test_mesh_revoked_member_is_refused),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
