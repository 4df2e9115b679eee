/* test_net_p2p.c - net/p2p: the DHT core on real host streams. Five nodes on 127.0.0.1 in one
 * process bootstrap from the first, then FIND_NODE, PUT_VALUE/GET_VALUE of a /meshllm record
 * and ADD_PROVIDER/GET_PROVIDERS work across them.
 *
 * Also the C side of tests/net_dht_interop.test.sh:
 *   test_net_p2p --interop-dht A_ADDR B_ID   join js-libp2p's DHT through A (/ipfs/kad/1.0.0),
 *       find B, read B's /meshllm record and provider record, store our own of each, then
 *       stay until the JS side (which reads ours) hangs up. */
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

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
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
    /* quorum 1: node 3 may hold the record itself (it can be among the k closest) */
    assert_int_equal(p2p_dht_get_value(n[3].p, key, key_len, 1, q_done, &gq), 0);
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

/* ---- interop driver ---------------------------------------------------------------------- */

static void interop_deadline(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "interop-dht: timed out\n");
    exit(1);
}

/* Multihash (sha2-256) of text: the DHT key of a raw CID of it. */
static void mh_of(const char *text, uint8_t out[34])
{
    out[0] = 0x12;
    out[1] = 32;
    crypto_hash_sha256(out + 2, (const uint8_t *)text, strlen(text));
}

static int interop_dht(int argc, char **argv)
{
    uv_loop_t loop;
    uv_timer_t deadline;
    struct identity id;
    struct host *h;
    struct p2p *p;
    struct multiaddr a_addr, lo;
    struct peer_id b_id;
    int rc = 0;
    if (argc < 4 || multiaddr_from_text(argv[2], &a_addr) ||
        peer_id_from_text(argv[3], strlen(argv[3]), &b_id)) {
        fprintf(stderr, "usage: test_net_p2p --interop-dht A_MULTIADDR B_PEER_ID\n");
        return 2;
    }
    uv_loop_init(&loop);
    uv_timer_init(&loop, &deadline);
    uv_timer_start(&deadline, interop_deadline, 40000, 0);
    identity_generate(&id);
    struct host_config hc = {.identity = &id};
    if (host_new(&loop, &hc, &h)) return 1;
    multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo);
    if (host_listen(h, &lo)) return 1;
    struct p2p_config pc = {.host = h, .dht_protocol = DHT_PROTOCOL_IPFS, .dht_server = true};
    if (p2p_new(&loop, &pc, &p)) return 1;
    char text[PEER_ID_TEXT_CAP];
    peer_id_to_text(&id.id, text, sizeof text);
    printf("c id %s\n", text);

    struct dht_peer boot;
    struct q bq = {0}, fq = {0}, gq = {0}, rq = {0}, pq = {0}, aq = {0};
    p2p_dht_peer_from_addr(&a_addr, &boot);
    if (p2p_dht_bootstrap(p, &boot, 1, q_done, &bq)) return 1;
    wait_q(&loop, &bq);
    printf("c bootstrap status=%d table=%zu\n", bq.status, dht_table_size(p2p_dht(p)));
    /* FIND_NODE for B, which we have never talked to. */
    if (p2p_dht_find_node(p, b_id.bytes, b_id.len, q_done, &fq)) return 1;
    wait_q(&loop, &fq);
    bool found = false;
    for (size_t i = 0; i < fq.n_peers; i++)
        if (peer_id_equal(&fq.peers[i].id, &b_id) && fq.peers[i].n_addrs > 0) found = true;
    printf("c findnode %s\n", found ? "ok" : "failed");
    if (!found) rc = 1;
    /* B's signed /meshllm record, validated by our /meshllm validator. */
    char key[256];
    int key_len = snprintf(key, sizeof key, "/meshllm/%s/js", argv[3]);
    if (p2p_dht_get_value(p, (const uint8_t *)key, (size_t)key_len, 1, q_done, &gq)) return 1;
    wait_q(&loop, &gq);
    bool got = gq.value_len == 1 + 8 + 64 + 7 && !memcmp(gq.value + 73, "from-js", 7);
    printf("c get %s\n", got ? "ok" : "failed");
    if (!got) rc = 1;
    /* B provides the raw CID of "meshllm-interop-js". */
    uint8_t mh[34];
    mh_of("meshllm-interop-js", mh);
    if (p2p_dht_get_providers(p, mh, sizeof mh, 4, q_done, &rq)) return 1;
    wait_q(&loop, &rq);
    bool prov = false;
    for (size_t i = 0; i < rq.n_peers; i++)
        if (peer_id_equal(&rq.peers[i].id, &b_id)) prov = true;
    printf("c providers %s\n", prov ? "ok" : "failed");
    if (!prov) rc = 1;
    /* Our own record and provider record, for the JS side to read. */
    uint8_t k[256], v[256];
    size_t kl, vl;
    dht_meshllm_record_make(&id, "c", 1, (const uint8_t *)"from-c", 6, k, sizeof k, &kl, v,
                            sizeof v, &vl);
    if (p2p_dht_put_value(p, k, kl, v, vl, q_done, &pq)) return 1;
    wait_q(&loop, &pq);
    printf("c put status=%d\n", pq.status);
    mh_of("meshllm-interop-c", mh);
    if (p2p_dht_provide(p, mh, sizeof mh, q_done, &aq)) return 1;
    wait_q(&loop, &aq);
    printf("c provide status=%d\n", aq.status);
    if (pq.status != DHT_QUERY_DONE || aq.status != DHT_QUERY_DONE) rc = 1;
    fflush(stdout);
    /* Serve the JS side's reads until it hangs up. */
    while (host_n_conns(h) > 0) uv_run(&loop, UV_RUN_ONCE);
    host_close(h);
    p2p_close(p);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    identity_wipe(&id);
    printf("c done rc=%d\n", rc);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--interop-dht")) return interop_dht(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_p2p_dht_over_host_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
