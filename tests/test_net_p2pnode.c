/* test_net_p2pnode.c - net/p2pnode: whole nodes (host, DHT, gossip; no mDNS) on 127.0.0.1,
 * each on its own loop thread, as `meshllm serve --p2p` runs them. Four nodes bootstrap from
 * the first; each must then list the three others in its peers JSON, connected, with the
 * protocols identify reported and a ping latency; calls queued with p2pnode_call run on
 * the loop thread in order. Bad configurations fail with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/p2pnode.h"
#include "tests/util/test_util.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_NODES 4

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void node_dir(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/p2pnode-%d", test_tmp_dir(), i);
}

/* Counts the peers of n's JSON that are connected, have a latency, list the DHT protocol and
 * are one of want[0..n_want). */
static int count_seen(struct p2pnode *n, char want[][PEER_ID_TEXT_CAP], int n_want)
{
    char *json = p2pnode_peers_json(n);
    if (!json) return -1;
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (!root) return -1;
    int seen = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(root, "peers"))
    {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(p, "id"));
        bool ok = id && cJSON_IsTrue(cJSON_GetObjectItem(p, "connected")) &&
                  cJSON_IsNumber(cJSON_GetObjectItem(p, "latency_ms"));
        bool has_dht = false;
        const cJSON *pr;
        cJSON_ArrayForEach(pr, cJSON_GetObjectItem(p, "protocols"))
        {
            const char *s = cJSON_GetStringValue(pr);
            if (s && !strcmp(s, "/meshllm/kad/1.0.0")) has_dht = true;
        }
        for (int i = 0; ok && has_dht && i < n_want; i++)
            if (!strcmp(id, want[i])) seen++;
    }
    cJSON_Delete(root);
    return seen;
}

/* p2pnode_call: functions queued from this thread run on the loop thread, in order, and the
 * host is reachable there. */
struct call_probe {
    pthread_t loop_thread;
    int order[8];
    atomic_int n_ran;
    bool saw_host;
};
static struct call_probe g_probe;

static void probe_fn(struct p2pnode *n, void *arg)
{
    int i = atomic_load(&g_probe.n_ran);
    g_probe.order[i] = (int)(intptr_t)arg;
    g_probe.loop_thread = pthread_self();
    g_probe.saw_host = p2pnode_host(n) != NULL;
    atomic_fetch_add(&g_probe.n_ran, 1);
}

static void test_net_p2pnode_bootstrap_sees_all(void **state)
{
    (void)state;
    struct p2pnode *n[N_NODES] = {0};
    char ids[N_NODES][PEER_ID_TEXT_CAP];
    char dir[512], err[256];
    struct multiaddr lo, boot;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    for (int i = 0; i < N_NODES; i++) {
        node_dir(i, dir, sizeof dir);
        struct p2pnode_config c = {.data_dir = dir, .listen = &lo, .n_listen = 1,
                                   .use_gossip = true};
        if (i > 0) {
            c.bootstrap = &boot;
            c.n_bootstrap = 1;
        }
        assert_int_equal(p2pnode_start(&c, &n[i], err, sizeof err), 0);
        assert_int_equal(peer_id_to_text(p2pnode_peer_id(n[i]), ids[i], sizeof ids[i]), 0);
        if (i == 0) {
            assert_int_equal(p2pnode_listen_addrs(n[0], &boot, 1), 1);
            struct peer_id pid;
            assert_int_equal(multiaddr_peer_id(&boot, &pid), 0);
            assert_true(peer_id_equal(&pid, p2pnode_peer_id(n[0])));
        }
    }
    /* Everyone must see the three others (connected, identified, pinged); 20 s at most. */
    bool all = false;
    for (int t = 0; t < 200 && !all; t++) {
        all = true;
        for (int i = 0; i < N_NODES && all; i++) {
            char others[N_NODES - 1][PEER_ID_TEXT_CAP];
            for (int j = 0, k = 0; j < N_NODES; j++)
                if (j != i) memcpy(others[k++], ids[j], PEER_ID_TEXT_CAP);
            all = count_seen(n[i], others, N_NODES - 1) == N_NODES - 1;
        }
        if (!all) sleep_ms(100);
    }
    assert_true(all);
    /* The command queue: 8 calls from this thread run on the loop thread, in order. */
    for (int i = 0; i < 8; i++) assert_int_equal(p2pnode_call(n[0], probe_fn, (void *)(intptr_t)i), 0);
    for (int t = 0; t < 100 && atomic_load(&g_probe.n_ran) < 8; t++) sleep_ms(20);
    assert_int_equal(atomic_load(&g_probe.n_ran), 8);
    for (int i = 0; i < 8; i++) assert_int_equal(g_probe.order[i], i);
    assert_false(pthread_equal(g_probe.loop_thread, pthread_self()));
    assert_true(g_probe.saw_host);
    /* Restarting node 1 from its data directory keeps its peer ID. */
    char old_id[PEER_ID_TEXT_CAP];
    memcpy(old_id, ids[1], sizeof old_id);
    p2pnode_stop(n[1]);
    node_dir(1, dir, sizeof dir);
    struct p2pnode_config c = {.data_dir = dir, .listen = &lo, .n_listen = 1};
    assert_int_equal(p2pnode_start(&c, &n[1], err, sizeof err), 0);
    assert_int_equal(peer_id_to_text(p2pnode_peer_id(n[1]), ids[1], sizeof ids[1]), 0);
    assert_string_equal(ids[1], old_id);
    for (int i = 0; i < N_NODES; i++) p2pnode_stop(n[i]);
}

static void test_net_p2pnode_bad_config_fails(void **state)
{
    (void)state;
    char dir[512], err[256] = "";
    struct p2pnode *n = NULL, *m = NULL;
    struct multiaddr lo, noid, used;
    node_dir(9, dir, sizeof dir);
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    /* A bootstrap address without /p2p/ID. */
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/9", &noid), 0);
    struct p2pnode_config c = {.data_dir = dir, .listen = &lo, .n_listen = 1,
                               .bootstrap = &noid, .n_bootstrap = 1};
    assert_true(p2pnode_start(&c, &n, err, sizeof err) < 0);
    assert_null(n);
    assert_non_null(strstr(err, "/p2p/"));
    /* A port already taken by another node. */
    c.bootstrap = NULL;
    c.n_bootstrap = 0;
    assert_int_equal(p2pnode_start(&c, &n, err, sizeof err), 0);
    assert_int_equal(p2pnode_listen_addrs(n, &used, 1), 1);
    char text[MULTIADDR_TEXT_CAP];
    assert_int_equal(multiaddr_to_text(&used, text, sizeof text), 0);
    *strstr(text, "/p2p/") = 0; /* the bare /ip4/127.0.0.1/tcp/PORT */
    assert_int_equal(multiaddr_from_text(text, &used), 0);
    c.listen = &used;
    err[0] = 0;
    assert_true(p2pnode_start(&c, &m, err, sizeof err) < 0);
    assert_null(m);
    assert_non_null(strstr(err, "cannot listen"));
    /* No listen address at all. */
    c.n_listen = 0;
    assert_int_equal(p2pnode_start(&c, &m, err, sizeof err), MESH_EINVAL);
    p2pnode_stop(n);
}

/* ---- peer table eviction ---------------------------------------------------------------- */

struct visitor {
    uv_loop_t *loop;
    struct host *h;
    struct peer_id id;
    bool done;
    int status;
};

static void visitor_on_ping(void *ctx, int status, uint64_t rtt_us)
{
    struct visitor *v = ctx;
    (void)rtt_us;
    v->done = true;
    v->status = status;
}

/* A fresh identity connects to addr (a ping) from a host on loop; it stays up if keep. */
static void visit(uv_loop_t *loop, const struct multiaddr *addr, bool keep, struct visitor *v)
{
    struct identity id;
    memset(v, 0, sizeof *v);
    v->loop = loop;
    assert_int_equal(identity_generate(&id), 0);
    v->id = id.id;
    struct host_config hc = {.identity = &id};
    assert_int_equal(host_new(loop, &hc, &v->h), 0);
    identity_wipe(&id);
    assert_int_equal(host_ping(v->h, addr, visitor_on_ping, v), 0);
    while (!v->done) uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(v->status, 0);
    if (keep) return;
    host_close(v->h);
    uv_run(loop, UV_RUN_DEFAULT);
    v->h = NULL;
}

/* Is id in n's peer listing (and connected, if must_be_connected)? */
static bool listed(struct p2pnode *n, const struct peer_id *id, bool must_be_connected)
{
    char want[PEER_ID_TEXT_CAP];
    assert_int_equal(peer_id_to_text(id, want, sizeof want), 0);
    char *json = p2pnode_peers_json(n);
    assert_non_null(json);
    cJSON *root = cJSON_Parse(json);
    free(json);
    assert_non_null(root);
    bool found = false;
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(root, "peers"))
    {
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(p, "id"));
        if (s && !strcmp(s, want))
            found = !must_be_connected || cJSON_IsTrue(cJSON_GetObjectItem(p, "connected"));
    }
    cJSON_Delete(root);
    return found;
}

/* 300 throwaway identities that connect once each do not lock the table: a peer connecting
 * after them is listed, and a protected peer that came (and left) before them still is. */
static void test_net_p2pnode_peer_table_evicts_throwaway_identities(void **state)
{
    (void)state;
    struct p2pnode *n = NULL;
    char dir[512], err[256];
    struct multiaddr lo, addr;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    node_dir(20, dir, sizeof dir);
    struct p2pnode_config c = {.data_dir = dir, .listen = &lo, .n_listen = 1};
    assert_int_equal(p2pnode_start(&c, &n, err, sizeof err), 0);
    assert_int_equal(p2pnode_listen_addrs(n, &addr, 1), 1);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct visitor v;
    /* The friend: connects, is protected (as node/mesh.c does for members), leaves. */
    visit(&loop, &addr, false, &v);
    struct peer_id friend = v.id;
    assert_int_equal(p2pnode_peer_protect(n, &friend, true), 0);
    assert_true(listed(n, &friend, false));
    for (int i = 0; i < 300; i++) visit(&loop, &addr, false, &v);
    /* Let the node see the last disconnections. */
    sleep_ms(200);
    visit(&loop, &addr, true, &v);
    struct visitor real = v;
    bool ok = false;
    for (int t = 0; t < 50 && !ok; t++) {
        ok = listed(n, &real.id, true);
        if (!ok) sleep_ms(50);
    }
    assert_true(ok);
    assert_true(listed(n, &friend, false));
    struct p2pnode_stats st;
    p2pnode_stats(n, &st);
    assert_true(st.n_peers <= P2PNODE_MAX_PEERS);
    assert_int_equal(st.n_protected, 1);
    assert_true(st.n_peer_table_evicted >= 302 - P2PNODE_MAX_PEERS);
    assert_int_equal(st.n_peer_table_refused, 0);
    /* Unprotected, a friend who left is fair game again. */
    assert_int_equal(p2pnode_peer_protect(n, &friend, false), 0);
    host_close(real.h);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    p2pnode_stop(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_p2pnode_bootstrap_sees_all),
        cmocka_unit_test(test_net_p2pnode_bad_config_fails),
        cmocka_unit_test(test_net_p2pnode_peer_table_evicts_throwaway_identities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
