/* test_net_p2p.c - net/p2p: the DHT core on real host streams. Five nodes on 127.0.0.1 in one
 * process bootstrap from the first, then FIND_NODE, PUT_VALUE/GET_VALUE of a /meshllm record
 * and ADD_PROVIDER/GET_PROVIDERS work across them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/dht.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/p2p.h"

#include <stdio.h>
#include <string.h>

#define N_NODES 5

struct node {
    struct identity id;
    struct host *h;
    struct p2p *p;
    struct multiaddr addr; /* listen address with /p2p */
};

struct q {
    bool done;
    int status;
    struct dht_peer peers[DHT_K];
    size_t n_peers;
    uint8_t value[512];
    size_t value_len;
};

static void q_done(void *ctx, struct dht *d, uint64_t qid)
{
    struct q *q = ctx;
    const uint8_t *v;
    size_t vlen, n_values, best;
    q->done = true;
    q->status = dht_query_status(d, qid);
    q->n_peers = dht_query_closest(d, qid, q->peers, DHT_K);
    if (dht_query_value(d, qid, 0, &v, &vlen, &n_values, &best) == 0 &&
        dht_query_value(d, qid, best, &v, &vlen, &n_values, NULL) == 0 && vlen <= sizeof q->value) {
        memcpy(q->value, v, vlen);
        q->value_len = vlen;
    }
    size_t np = dht_query_providers(d, qid, q->peers, DHT_K);
    if (np) q->n_peers = np;
    dht_query_release(d, qid);
}

static void wait_q(uv_loop_t *loop, struct q *q)
{
    while (!q->done) uv_run(loop, UV_RUN_ONCE);
}

static bool has_peer(const struct q *q, const struct peer_id *id)
{
    for (size_t i = 0; i < q->n_peers; i++)
        if (peer_id_equal(&q->peers[i].id, id)) return true;
    return false;
}

static void test_net_p2p_dht_over_host_streams(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct node n[N_NODES];
    struct multiaddr lo;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    memset(n, 0, sizeof n);
    for (int i = 0; i < N_NODES; i++) {
        assert_int_equal(identity_generate(&n[i].id), 0);
        struct host_config hc = {.identity = &n[i].id};
        assert_int_equal(host_new(&loop, &hc, &n[i].h), 0);
        assert_int_equal(host_listen(n[i].h, &lo), 0);
        host_listen_addrs(n[i].h, &n[i].addr, 1);
        multiaddr_append_p2p(&n[i].addr, &n[i].id.id);
        struct p2p_config pc = {.host = n[i].h, .dht_server = true};
        pc.seed[0] = (uint8_t)(i + 1);
        assert_int_equal(p2p_new(&loop, &pc, &n[i].p), 0);
    }
    /* Everyone bootstraps from node 0, one after the other. */
    struct dht_peer boot;
    assert_int_equal(p2p_dht_peer_from_addr(&n[0].addr, &boot), 0);
    for (int i = 1; i < N_NODES; i++) {
        struct q q = {0};
        assert_int_equal(p2p_dht_bootstrap(n[i].p, &boot, 1, q_done, &q), 0);
        wait_q(&loop, &q);
        assert_int_equal(q.status, DHT_QUERY_DONE);
    }
    assert_true(dht_table_size(p2p_dht(n[0].p)) >= N_NODES - 1);
    /* Node 4 looks up node 1: found, with a dialable address. */
    struct q fq = {0};
    assert_int_equal(p2p_dht_find_node(n[4].p, n[1].id.id.bytes, n[1].id.id.len, q_done, &fq), 0);
    wait_q(&loop, &fq);
    assert_int_equal(fq.status, DHT_QUERY_DONE);
    assert_true(has_peer(&fq, &n[1].id.id));
    /* Node 2 stores a signed /meshllm record; node 3 reads it back. */
    uint8_t key[256], val[512];
    size_t key_len, val_len;
    assert_int_equal(dht_meshllm_record_make(&n[2].id, "models", 7, (const uint8_t *)"tinyllama", 9,
                                             key, sizeof key, &key_len, val, sizeof val, &val_len),
                     0);
    struct q pq = {0}, gq = {0};
    assert_int_equal(p2p_dht_put_value(n[2].p, key, key_len, val, val_len, q_done, &pq), 0);
    wait_q(&loop, &pq);
    assert_int_equal(pq.status, DHT_QUERY_DONE);
    /* quorum 2: node 3 may hold the record itself (it can be among the k closest), and a
     * query answered only from the local store reports FAILED (no peer answered). */
    assert_int_equal(p2p_dht_get_value(n[3].p, key, key_len, 2, q_done, &gq), 0);
    wait_q(&loop, &gq);
    assert_int_equal(gq.status, DHT_QUERY_DONE);
    assert_int_equal(gq.value_len, val_len);
    assert_memory_equal(gq.value, val, val_len);
    /* Node 1 provides a content key; node 4 finds it as provider. */
    static const uint8_t content[] = "sha256-merkle-root-of-a-model";
    struct q aq = {0}, rq = {0};
    assert_int_equal(p2p_dht_provide(n[1].p, content, sizeof content, q_done, &aq), 0);
    wait_q(&loop, &aq);
    assert_int_equal(aq.status, DHT_QUERY_DONE);
    assert_int_equal(p2p_dht_get_providers(n[4].p, content, sizeof content, 4, q_done, &rq), 0);
    wait_q(&loop, &rq);
    assert_true(has_peer(&rq, &n[1].id.id));
    for (int i = 0; i < N_NODES; i++) {
        host_close(n[i].h);
        p2p_close(n[i].p);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < N_NODES; i++) identity_wipe(&n[i].id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_p2p_dht_over_host_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
