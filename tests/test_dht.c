/* test_dht.c - net/dht: wire handling between two cores, hostile messages, record
 * validators, providers with expiry, client mode, bucket refresh, and lookups in a 300-node
 * virtual-clock simulation (true k closest found; still found with 20 % churn).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/dht.h"
#include "net/identity.h"
#include "net/sim.h"
#include "net/varint.h"
#include "tests/util/test_util.h"

#include "dht.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------- */

static void make_identity(uint8_t tag, struct identity *id)
{
    uint8_t seed[32];
    memset(seed, tag, sizeof seed);
    seed[0] = 0x5a;
    assert_int_equal(identity_from_seed(seed, id), 0);
}

static struct dht *make_core(const struct identity *id, bool server, uint64_t provider_ttl_ms)
{
    struct dht_config c;
    struct dht *d;
    memset(&c, 0, sizeof c);
    c.self = id->id;
    c.protocol_id = DHT_PROTOCOL_MESHLLM;
    c.is_server = server;
    c.provider_ttl_ms = provider_ttl_ms;
    memcpy(c.seed, id->pk, 32);
    assert_int_equal(dht_new(&c, &d), 0);
    return d;
}

static void peer_of(const struct identity *id, struct dht_peer *p)
{
    memset(p, 0, sizeof *p);
    p->id = id->id;
}

/* Delivers every queued request of `from` to `to` and the answers back (one round). */
static int exchange(struct dht *from, const struct identity *from_id, struct dht *to,
                    uint64_t now)
{
    struct dht_request r;
    struct dht_peer fp;
    int n = 0;
    peer_of(from_id, &fp);
    while (dht_next_request(from, &r) == 0) {
        const uint8_t *body;
        size_t body_len, used;
        uint8_t *resp = NULL;
        size_t resp_len = 0;
        assert_int_equal(dht_frame_split(r.msg, r.msg_len, &body, &body_len, &used), 0);
        assert_int_equal(used, r.msg_len);
        int rc = dht_handle_request(to, now, &fp, body, body_len, &resp, &resp_len);
        if (r.expects_response) {
            if (rc == 0 && resp) {
                assert_int_equal(dht_frame_split(resp, resp_len, &body, &body_len, &used), 0);
                dht_on_response(from, now, r.req_id, body, body_len);
            } else {
                dht_on_failure(from, now, r.req_id);
            }
        }
        free(resp);
        free(r.msg);
        n++;
    }
    return n;
}

static int cmp_dist(const uint8_t *a, const uint8_t *b, const uint8_t *t)
{
    for (int i = 0; i < DHT_KEY_LEN; i++) {
        uint8_t x = a[i] ^ t[i], y = b[i] ^ t[i];
        if (x != y) return x < y ? -1 : 1;
    }
    return 0;
}

/* ---- two cores ----------------------------------------------------------------------- */

static void test_dht_find_node_returns_k_closest_without_requester(void **state)
{
    (void)state;
    struct identity a, b, others[60];
    make_identity(1, &a);
    make_identity(2, &b);
    struct dht *da = make_core(&a, true, 0), *db = make_core(&b, true, 0);
    struct dht_peer p;
    for (int i = 0; i < 60; i++) {
        make_identity((uint8_t)(10 + i), &others[i]);
        peer_of(&others[i], &p);
        dht_peer_connected(da, 1, &p, true);
    }
    peer_of(&b, &p);
    dht_peer_connected(da, 1, &p, true); /* the requester is in A's table too */
    peer_of(&a, &p);
    dht_peer_connected(db, 1, &p, true);
    assert_true(dht_table_size(da) > DHT_K);

    uint64_t qid;
    uint8_t target[] = "some key";
    assert_int_equal(dht_find_node(db, 5, target, sizeof target, &qid), 0);
    struct dht_request r;
    assert_int_equal(dht_next_request(db, &r), 0);
    assert_true(peer_id_equal(&r.peer.id, &a.id));
    assert_int_equal(r.type, DHT_MSG_FIND_NODE);

    /* A's answer: exactly its k table peers closest to SHA-256(key), never B. */
    const uint8_t *body;
    size_t body_len, used;
    uint8_t *resp;
    size_t resp_len;
    struct dht_peer fb;
    peer_of(&b, &fb);
    assert_int_equal(dht_frame_split(r.msg, r.msg_len, &body, &body_len, &used), 0);
    assert_int_equal(dht_handle_request(da, 6, &fb, body, body_len, &resp, &resp_len), 0);
    assert_int_equal(dht_frame_split(resp, resp_len, &body, &body_len, &used), 0);
    Dht__Pb__Message *m = dht__pb__message__unpack(NULL, body_len, body);
    assert_non_null(m);
    assert_int_equal(m->type, DHT_MSG_FIND_NODE);
    assert_int_equal(m->n_closerpeers, DHT_K);
    uint8_t key[DHT_KEY_LEN];
    dht_key_of(target, sizeof target, key);
    struct dht_peer want[DHT_K + 1];
    size_t n_want = dht_table_closest(da, key, want, DHT_K + 1);
    size_t wi = 0;
    for (size_t i = 0; i < m->n_closerpeers; i++, wi++) {
        if (peer_id_equal(&want[wi].id, &b.id)) wi++;
        assert_true(wi < n_want);
        assert_int_equal(m->closerpeers[i]->id.len, want[wi].id.len);
        assert_memory_equal(m->closerpeers[i]->id.data, want[wi].id.bytes, want[wi].id.len);
    }
    dht__pb__message__free_unpacked(m, NULL);

    /* Feeding the answer advances B's lookup: alpha new requests go out. */
    assert_int_equal(dht_on_response(db, 7, r.req_id, body, body_len), 0);
    int n_sent = 0;
    struct dht_request r2;
    while (dht_next_request(db, &r2) == 0) {
        n_sent++;
        free(r2.msg);
    }
    assert_int_equal(n_sent, DHT_ALPHA);
    assert_int_equal(dht_query_status(db, qid), DHT_QUERY_RUNNING);
    /* Unanswered requests time out; then the query finishes. */
    uint64_t t = dht_periodic(db, 8);
    assert_true(t > 8);
    for (int i = 0; i < 20 && dht_query_status(db, qid) == DHT_QUERY_RUNNING; i++) {
        dht_periodic(db, 100000 + (uint64_t)i * 20000);
        while (dht_next_request(db, &r2) == 0) free(r2.msg);
    }
    assert_int_equal(dht_query_status(db, qid), DHT_QUERY_DONE);
    struct dht_query_stats st;
    assert_int_equal(dht_query_stats(db, qid, &st), 0);
    assert_int_equal(st.n_answers, 1);
    assert_true(st.n_failures >= DHT_ALPHA);
    dht_query_release(db, qid);
    assert_int_equal(dht_query_status(db, qid), MESH_ENOTFOUND);
    free(resp);
    free(r.msg);
    dht_free(da);
    dht_free(db);
}

static size_t pack_msg(const Dht__Pb__Message *m, uint8_t *buf, size_t cap)
{
    size_t n = dht__pb__message__get_packed_size(m);
    assert_true(n <= cap);
    dht__pb__message__pack(m, buf);
    return n;
}

static void test_dht_rejects_hostile_messages(void **state)
{
    (void)state;
    struct identity a, b;
    make_identity(1, &a);
    make_identity(2, &b);
    struct dht *da = make_core(&a, true, 0);
    struct dht_peer fb;
    peer_of(&b, &fb);
    uint8_t buf[70000], *resp;
    size_t len, resp_len;

    /* Not protobuf at all. */
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x12};
    assert_int_equal(dht_handle_request(da, 1, &fb, junk, sizeof junk, &resp, &resp_len),
                     MESH_EPROTO);
    assert_null(resp);

    /* Unknown message type. */
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    m.type = 17;
    m.key.data = (uint8_t *)"k";
    m.key.len = 1;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_handle_request(da, 1, &fb, buf, len, &resp, &resp_len), MESH_EPROTO);

    /* Oversized key. */
    static uint8_t big[DHT_RECORD_KEY_MAX + 1];
    m.type = DHT__PB__MESSAGE__MESSAGE_TYPE__FIND_NODE;
    m.key.data = big;
    m.key.len = sizeof big;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_msg_check(buf, len), MESH_EPROTO);
    assert_int_equal(dht_handle_request(da, 1, &fb, buf, len, &resp, &resp_len), MESH_EPROTO);

    /* A closer peer whose ID is not a multihash. */
    Dht__Pb__Message__Peer pp = DHT__PB__MESSAGE__PEER__INIT, *ppp = &pp;
    pp.id.data = (uint8_t *)"\x99\x01\x02";
    pp.id.len = 3;
    m.key.data = (uint8_t *)"k";
    m.key.len = 1;
    m.n_closerpeers = 1;
    m.closerpeers = &ppp;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_msg_check(buf, len), MESH_EPROTO);

    /* A malformed address (ip4 with 2 bytes). */
    pp.id.data = b.id.bytes;
    pp.id.len = b.id.len;
    ProtobufCBinaryData ad = {3, (uint8_t *)"\x04\x7f\x00"};
    pp.n_addrs = 1;
    pp.addrs = &ad;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_msg_check(buf, len), MESH_EPROTO);
    pp.n_addrs = 0;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_msg_check(buf, len), 0);

    /* Too many closer peers. */
    Dht__Pb__Message__Peer *many[DHT_MSG_PEERS_MAX + 1];
    for (int i = 0; i <= DHT_MSG_PEERS_MAX; i++) many[i] = &pp;
    m.n_closerpeers = DHT_MSG_PEERS_MAX + 1;
    m.closerpeers = many;
    len = pack_msg(&m, buf, sizeof buf);
    assert_int_equal(dht_msg_check(buf, len), MESH_EPROTO);

    /* PUT_VALUE whose record key differs from the message key, and one in an unknown
     * namespace: both refused, nothing stored. */
    Dht__Pb__Message put = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Record rec = DHT__PB__RECORD__INIT;
    put.type = DHT__PB__MESSAGE__MESSAGE_TYPE__PUT_VALUE;
    put.key.data = (uint8_t *)"/x/a";
    put.key.len = 4;
    rec.key.data = (uint8_t *)"/x/b";
    rec.key.len = 4;
    rec.value.data = (uint8_t *)"v";
    rec.value.len = 1;
    put.record = &rec;
    len = pack_msg(&put, buf, sizeof buf);
    assert_int_equal(dht_handle_request(da, 1, &fb, buf, len, &resp, &resp_len), MESH_EPROTO);
    rec.key = put.key;
    len = pack_msg(&put, buf, sizeof buf);
    assert_int_equal(dht_handle_request(da, 1, &fb, buf, len, &resp, &resp_len), MESH_EPROTO);
    const uint8_t *v;
    size_t vl;
    assert_int_equal(dht_record_get(da, (const uint8_t *)"/x/a", 4, &v, &vl), MESH_ENOTFOUND);

    /* A response that is garbage counts as a failure of that request. */
    struct dht *db = make_core(&b, true, 0);
    struct dht_peer pa;
    peer_of(&a, &pa);
    dht_peer_connected(db, 1, &pa, true);
    uint64_t qid;
    assert_int_equal(dht_find_node(db, 1, (const uint8_t *)"t", 1, &qid), 0);
    struct dht_request r;
    assert_int_equal(dht_next_request(db, &r), 0);
    assert_int_equal(dht_on_response(db, 2, r.req_id, junk, sizeof junk), MESH_EPROTO);
    assert_int_equal(dht_query_status(db, qid), DHT_QUERY_FAILED);
    assert_int_equal(dht_table_size(db), 0); /* the liar left the routing table */
    free(r.msg);
    dht_free(db);
    dht_free(da);
}

static void test_dht_record_validators_pk_and_meshllm(void **state)
{
    (void)state;
    struct identity a, b;
    make_identity(1, &a);
    make_identity(2, &b);
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN], key[128];
    identity_pubkey_proto(a.pk, pub);
    memcpy(key, "/pk/", 4);
    memcpy(key + 4, a.id.bytes, a.id.len);
    assert_int_equal(dht_validate_pk(NULL, key, 4 + a.id.len, pub, sizeof pub), 0);
    identity_pubkey_proto(b.pk, pub);
    assert_int_equal(dht_validate_pk(NULL, key, 4 + a.id.len, pub, sizeof pub), MESH_ECRYPTO);

    uint8_t mk[256], mv[256];
    size_t mk_len, mv_len;
    const uint8_t data[] = "model=llama;port=4001";
    assert_int_equal(dht_meshllm_record_make(&a, "node", 7, data, sizeof data, mk, sizeof mk,
                                             &mk_len, mv, sizeof mv, &mv_len),
                     0);
    assert_int_equal(dht_validate_meshllm(NULL, mk, mk_len, mv, mv_len), 0);
    mv[mv_len - 1] ^= 1; /* tampered data */
    assert_int_equal(dht_validate_meshllm(NULL, mk, mk_len, mv, mv_len), MESH_ECRYPTO);
    mv[mv_len - 1] ^= 1;
    /* B signing a record under A's name is refused. */
    uint8_t bk[256], bv[256];
    size_t bk_len, bv_len;
    assert_int_equal(dht_meshllm_record_make(&b, "node", 9, data, sizeof data, bk, sizeof bk,
                                             &bk_len, bv, sizeof bv, &bv_len),
                     0);
    assert_int_equal(dht_validate_meshllm(NULL, mk, mk_len, bv, bv_len), MESH_ECRYPTO);
    assert_int_equal(dht_validate_meshllm(NULL, mk, mk_len, mv, 10), MESH_EPROTO);

    /* A server keeps the higher sequence number. */
    struct dht *d = make_core(&b, true, 0);
    uint64_t qid;
    assert_int_equal(dht_put_value(d, 1, mk, mk_len, mv, mv_len, &qid), 0);
    assert_int_equal(dht_query_status(d, qid), DHT_QUERY_FAILED); /* nobody to send to */
    uint8_t mk2[256], mv2[256];
    size_t mk2_len, mv2_len;
    assert_int_equal(dht_meshllm_record_make(&a, "node", 3, data, 4, mk2, sizeof mk2, &mk2_len,
                                             mv2, sizeof mv2, &mv2_len),
                     0);
    assert_int_equal(dht_put_value(d, 2, mk2, mk2_len, mv2, mv2_len, &qid), 0);
    const uint8_t *v;
    size_t vl;
    assert_int_equal(dht_record_get(d, mk, mk_len, &v, &vl), 0);
    assert_int_equal(vl, mv_len); /* seq 7 kept over seq 3 */
    assert_memory_equal(v, mv, mv_len);
    assert_int_equal(dht_put_value(d, 3, mk, mk_len, bv, bv_len, &qid), MESH_ECRYPTO);
    /* A GET answered from the local store alone (no peers at all) succeeds with the value. */
    assert_int_equal(dht_get_value(d, 4, mk, mk_len, 1, &qid), 0);
    assert_int_equal(dht_query_status(d, qid), DHT_QUERY_DONE);
    size_t n_vals = 0;
    assert_int_equal(dht_query_value(d, qid, 0, &v, &vl, &n_vals, NULL), 0);
    assert_int_equal(n_vals, 1);
    assert_int_equal(vl, mv_len);
    assert_memory_equal(v, mv, mv_len);
    dht_query_release(d, qid);
    dht_free(d);
}

static void test_dht_providers_stored_served_and_expire(void **state)
{
    (void)state;
    struct identity a, b, c;
    make_identity(1, &a);
    make_identity(2, &b);
    make_identity(3, &c);
    struct dht *da = make_core(&a, true, 60000), *db = make_core(&b, true, 0),
               *dc = make_core(&c, true, 0);
    struct dht_peer pa, pb;
    peer_of(&a, &pa);
    dht_peer_connected(db, 1, &pa, true);
    dht_peer_connected(dc, 1, &pa, true);
    peer_of(&b, &pb);
    assert_int_equal(multiaddr_from_text("/ip4/10.0.0.2/tcp/4001", &pb.addrs[0]), 0);
    pb.n_addrs = 1;

    const uint8_t cid[] = "model-sha256-root";
    uint64_t qid;
    /* B provides: FIND_NODE lookup (A answers), then ADD_PROVIDER to A. */
    assert_int_equal(dht_provide(db, 10, cid, sizeof cid, &pb, &qid), 0);
    assert_int_equal(exchange(db, &b, da, 11), 2);
    assert_int_equal(dht_query_status(db, qid), DHT_QUERY_DONE);
    assert_int_equal(dht_providers_count(da, 12, cid, sizeof cid), 1);

    /* C asks for providers and gets B with its address. */
    assert_int_equal(dht_get_providers(dc, 20, cid, sizeof cid, 5, &qid), 0);
    assert_int_equal(exchange(dc, &c, da, 21), 1);
    assert_int_equal(dht_query_status(dc, qid), DHT_QUERY_DONE);
    struct dht_peer got[4];
    assert_int_equal(dht_query_providers(dc, qid, got, 4), 1);
    assert_true(peer_id_equal(&got[0].id, &b.id));
    assert_int_equal(got[0].n_addrs, 1);
    assert_true(multiaddr_equal(&got[0].addrs[0], &pb.addrs[0]));

    /* C cannot announce B as a provider (only the sender may provide itself): refused
     * locally, and ignored by a server when C sends it anyway. */
    struct dht_peer pc;
    peer_of(&c, &pc);
    assert_int_equal(dht_provide(dc, 30, cid, sizeof cid, &pb, &qid), MESH_EINVAL);
    const uint8_t other[] = "other-cid";
    Dht__Pb__Message ap = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Message__Peer who = DHT__PB__MESSAGE__PEER__INIT, *whop = &who;
    ap.type = DHT__PB__MESSAGE__MESSAGE_TYPE__ADD_PROVIDER;
    ap.key.data = (uint8_t *)other;
    ap.key.len = sizeof other;
    who.id.data = b.id.bytes;
    who.id.len = b.id.len;
    ap.n_providerpeers = 1;
    ap.providerpeers = &whop;
    uint8_t apb[256];
    size_t apl = dht__pb__message__pack(&ap, apb);
    uint8_t *none;
    size_t none_len;
    assert_int_equal(dht_handle_request(da, 31, &pc, apb, apl, &none, &none_len), 0);
    assert_null(none);
    assert_int_equal(dht_providers_count(da, 31, other, sizeof other), 0);
    who.id.data = c.id.bytes; /* C announcing itself is fine */
    who.id.len = c.id.len;
    apl = dht__pb__message__pack(&ap, apb);
    assert_int_equal(dht_handle_request(da, 32, &pc, apb, apl, &none, &none_len), 0);
    assert_int_equal(dht_providers_count(da, 32, other, sizeof other), 1);

    /* After the provider TTL the record is gone. */
    dht_periodic(da, 12 + 60000 + 60000);
    assert_int_equal(dht_providers_count(da, 12 + 60001, cid, sizeof cid), 0);
    assert_int_equal(dht_get_providers(dc, 200000, cid, sizeof cid, 5, &qid), 0);
    exchange(dc, &c, da, 200001);
    assert_int_equal(dht_query_providers(dc, qid, got, 4), 0);
    dht_free(da);
    dht_free(db);
    dht_free(dc);
}

static void test_dht_client_mode_does_not_serve(void **state)
{
    (void)state;
    struct identity a, b;
    make_identity(1, &a);
    make_identity(2, &b);
    struct dht *client = make_core(&a, false, 0), *server = make_core(&b, true, 0);
    struct dht_peer pa, pb;
    peer_of(&a, &pa);
    peer_of(&b, &pb);
    dht_peer_connected(server, 1, &pa, false); /* identify said: client */
    assert_int_equal(dht_table_size(server), 0);
    dht_peer_connected(client, 1, &pb, true);
    uint64_t qid;
    assert_int_equal(dht_find_node(client, 2, a.id.bytes, a.id.len, &qid), 0);
    assert_int_equal(exchange(client, &a, server, 3), 1);
    assert_int_equal(dht_query_status(client, qid), DHT_QUERY_DONE);
    /* The server answering the client's query never served from the client. */
    assert_int_equal(dht_find_node(server, 4, b.id.bytes, b.id.len, &qid), 0);
    assert_int_equal(dht_query_status(server, qid), DHT_QUERY_FAILED);
    uint8_t *resp;
    size_t resp_len;
    const uint8_t ping[] = {0x08, 0x05};
    assert_int_equal(dht_handle_request(client, 5, &pb, ping, sizeof ping, &resp, &resp_len),
                     MESH_EUNSUPPORTED);
    dht_set_server(client, true);
    assert_int_equal(dht_handle_request(client, 5, &pb, ping, sizeof ping, &resp, &resp_len), 0);
    free(resp);
    dht_free(client);
    dht_free(server);
}

static void test_dht_bucket_refresh_starts_lookups(void **state)
{
    (void)state;
    struct identity a, o[8];
    make_identity(1, &a);
    struct dht *d = make_core(&a, true, 0);
    struct dht_peer p;
    for (int i = 0; i < 8; i++) {
        make_identity((uint8_t)(40 + i), &o[i]);
        peer_of(&o[i], &p);
        dht_peer_connected(d, 0, &p, true);
    }
    uint64_t t = dht_periodic(d, 0);
    assert_true(t > 0 && t <= 10 * 60 * 1000);
    struct dht_request r;
    assert_int_equal(dht_next_request(d, &r), MESH_ENOTFOUND);
    dht_periodic(d, 10 * 60 * 1000);
    int n = 0;
    while (dht_next_request(d, &r) == 0) {
        /* Refresh keys are sha2-256 multihashes whose SHA-256 falls in the bucket. */
        const uint8_t *body;
        size_t bl, used;
        assert_int_equal(dht_frame_split(r.msg, r.msg_len, &body, &bl, &used), 0);
        Dht__Pb__Message *m = dht__pb__message__unpack(NULL, bl, body);
        assert_non_null(m);
        assert_int_equal(m->type, DHT_MSG_FIND_NODE);
        assert_int_equal(m->key.len, 34);
        dht__pb__message__free_unpacked(m, NULL);
        free(r.msg);
        n++;
    }
    assert_true(n > 0);
    dht_free(d);
}

/* ---- simulation ---------------------------------------------------------------------- */

#define SIM_N 300

struct world {
    struct sim *s;
    uint8_t keys[SIM_N * 2][DHT_KEY_LEN];
    uint64_t rng;
};

static struct world *g_world; /* the 300-node network, shared by the simulation tests */

static struct world *world_build(size_t n_initial)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    struct sim_config c;
    memset(&c, 0, sizeof c);
    c.n_max = SIM_N * 2;
    c.seed = 42;
    c.with_dht = true;
    c.dht_protocol = DHT_PROTOCOL_MESHLLM;
    assert_int_equal(sim_new(&c, &w->s), 0);
    w->rng = 7;
    for (size_t i = 0; i < n_initial; i++) {
        size_t idx;
        assert_int_equal(sim_node_add(w->s, &idx), 0);
        const struct identity *id = sim_node_identity(w->s, idx);
        dht_key_of(id->id.bytes, id->id.len, w->keys[idx]);
        if (idx == 0) continue;
        /* Join through one random earlier node. */
        struct dht_peer seed;
        memset(&seed, 0, sizeof seed);
        seed.id = sim_node_identity(w->s, test_rand_u64(&w->rng) % idx)->id;
        uint64_t qid;
        assert_int_equal(dht_bootstrap(sim_node_dht(w->s, idx), sim_now(w->s), &seed, 1, &qid), 0);
        sim_node_poke(w->s, idx);
        assert_int_equal(sim_dht_wait(w->s, idx, qid, sim_now(w->s) + 600000), DHT_QUERY_DONE);
        dht_query_release(sim_node_dht(w->s, idx), qid);
    }
    /* Every node looks itself up once more, so that early joiners learn late ones (cheaper
     * than a full bucket-refresh round, which bench/sim_dht.c runs). */
    for (size_t i = 1; i < n_initial; i++) {
        uint64_t qid;
        struct dht *d = sim_node_dht(w->s, i);
        const struct identity *id = sim_node_identity(w->s, i);
        assert_int_equal(dht_find_node(d, sim_now(w->s), id->id.bytes, id->id.len, &qid), 0);
        sim_node_poke(w->s, i);
        assert_int_equal(sim_dht_wait(w->s, i, qid, sim_now(w->s) + 600000), DHT_QUERY_DONE);
        dht_query_release(d, qid);
    }
    return w;
}

/* Indices of the k online nodes closest to target (brute force). */
static size_t true_closest(struct world *w, const uint8_t *target, size_t *out, size_t skip)
{
    size_t n = 0, total = sim_n_nodes(w->s);
    for (size_t i = 0; i < total; i++) {
        if (!sim_node_online(w->s, i) || i == skip) continue;
        size_t j = n < DHT_K ? n++ : DHT_K;
        if (j == DHT_K && cmp_dist(w->keys[i], w->keys[out[DHT_K - 1]], target) >= 0) continue;
        if (j == DHT_K) j = DHT_K - 1;
        while (j > 0 && cmp_dist(w->keys[i], w->keys[out[j - 1]], target) < 0) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = i;
    }
    return n;
}

/* Runs n_lookups FIND_NODE queries for random keys from random online nodes; counts
 * lookups that found all k true closest, and that found the closest one. */
static void run_lookups(struct world *w, int n_lookups, int *n_exact, int *n_closest,
                        double *mean_hops)
{
    *n_exact = *n_closest = 0;
    double hops = 0;
    for (int l = 0; l < n_lookups; l++) {
        size_t from;
        do from = test_rand_u64(&w->rng) % sim_n_nodes(w->s);
        while (!sim_node_online(w->s, from));
        uint8_t key[16], target[DHT_KEY_LEN];
        for (int i = 0; i < 16; i += 8) {
            uint64_t r = test_rand_u64(&w->rng);
            memcpy(key + i, &r, 8);
        }
        dht_key_of(key, sizeof key, target);
        uint64_t qid;
        struct dht *d = sim_node_dht(w->s, from);
        assert_int_equal(dht_find_node(d, sim_now(w->s), key, sizeof key, &qid), 0);
        sim_node_poke(w->s, from);
        assert_int_equal(sim_dht_wait(w->s, from, qid, sim_now(w->s) + 600000), DHT_QUERY_DONE);
        struct dht_peer found[DHT_K];
        size_t n_found = dht_query_closest(d, qid, found, DHT_K), want[DHT_K];
        size_t n_want = true_closest(w, target, want, from);
        size_t hit = 0;
        for (size_t i = 0; i < n_want; i++)
            for (size_t j = 0; j < n_found; j++)
                if (peer_id_equal(&found[j].id, &sim_node_identity(w->s, want[i])->id)) {
                    hit++;
                    break;
                }
        *n_exact += hit == n_want;
        *n_closest += n_found > 0 &&
                      peer_id_equal(&found[0].id, &sim_node_identity(w->s, want[0])->id);
        struct dht_query_stats st;
        dht_query_stats(d, qid, &st);
        hops += st.hops;
        dht_query_release(d, qid);
    }
    *mean_hops = hops / n_lookups;
}

static struct world *world_shared(void)
{
    if (!g_world) g_world = world_build(SIM_N);
    return g_world;
}

static int world_teardown(void **state)
{
    (void)state;
    if (g_world) {
        sim_free(g_world->s);
        free(g_world);
        g_world = NULL;
    }
    return 0;
}

static void test_dht_sim_lookups_find_true_k_closest(void **state)
{
    (void)state;
    struct world *w = world_shared();
    int exact, closest;
    double hops;
    run_lookups(w, 60, &exact, &closest, &hops);
    printf("# %d nodes: %d/60 lookups exact k-closest, %d/60 closest, mean hops %.2f\n", SIM_N,
           exact, closest, hops);
    assert_int_equal(closest, 60);
    assert_true(exact >= 57);
    assert_true(hops >= 1.0);
}

/* Runs after the test above on the same network. */
static void test_dht_sim_lookups_survive_churn(void **state)
{
    (void)state;
    struct world *w = world_shared();
    /* 20 % leave without a word... */
    size_t n_gone = 0;
    while (n_gone < SIM_N / 5) {
        size_t i = test_rand_u64(&w->rng) % SIM_N;
        if (!sim_node_online(w->s, i)) continue;
        sim_node_set_online(w->s, i, false);
        n_gone++;
    }
    /* ...and 20 % new nodes join through a random online node. */
    for (size_t k = 0; k < SIM_N / 5; k++) {
        size_t idx, seed_i;
        assert_int_equal(sim_node_add(w->s, &idx), 0);
        const struct identity *id = sim_node_identity(w->s, idx);
        dht_key_of(id->id.bytes, id->id.len, w->keys[idx]);
        do seed_i = test_rand_u64(&w->rng) % idx;
        while (!sim_node_online(w->s, seed_i));
        struct dht_peer seed;
        memset(&seed, 0, sizeof seed);
        seed.id = sim_node_identity(w->s, seed_i)->id;
        uint64_t qid;
        assert_int_equal(dht_bootstrap(sim_node_dht(w->s, idx), sim_now(w->s), &seed, 1, &qid), 0);
        sim_node_poke(w->s, idx);
        assert_int_equal(sim_dht_wait(w->s, idx, qid, sim_now(w->s) + 600000), DHT_QUERY_DONE);
        dht_query_release(sim_node_dht(w->s, idx), qid);
    }
    int exact, closest;
    double hops;
    run_lookups(w, 60, &exact, &closest, &hops);
    printf("# churn 20%%: %d/60 exact, %d/60 closest, mean hops %.2f\n", exact, closest, hops);
    assert_true(closest >= 57);
    assert_true(exact >= 50);
}

/* On the churned network: records and providers still travel. */
static void test_dht_sim_put_get_and_providers_across_network(void **state)
{
    (void)state;
    struct world *w = world_shared();
    size_t who[4], n_who = 0;
    for (size_t i = 1; n_who < 4; i += 37)
        if (sim_node_online(w->s, i)) who[n_who++] = i;
    const struct identity *owner = sim_node_identity(w->s, who[0]);
    uint8_t k[256], v[256];
    size_t kl, vl;
    const uint8_t data[] = "serves llama-3-8b q4_0";
    assert_int_equal(dht_meshllm_record_make(owner, "caps", 1, data, sizeof data, k, sizeof k,
                                             &kl, v, sizeof v, &vl),
                     0);
    uint64_t qid;
    struct dht *d5 = sim_node_dht(w->s, who[0]);
    assert_int_equal(dht_put_value(d5, sim_now(w->s), k, kl, v, vl, &qid), 0);
    sim_node_poke(w->s, who[0]);
    assert_int_equal(sim_dht_wait(w->s, who[0], qid, sim_now(w->s) + 60000), DHT_QUERY_DONE);
    dht_query_release(d5, qid);

    struct dht *d77 = sim_node_dht(w->s, who[1]);
    assert_int_equal(dht_get_value(d77, sim_now(w->s), k, kl, 3, &qid), 0);
    sim_node_poke(w->s, who[1]);
    assert_int_equal(sim_dht_wait(w->s, who[1], qid, sim_now(w->s) + 60000), DHT_QUERY_DONE);
    const uint8_t *got;
    size_t got_len, n_vals, best;
    assert_int_equal(dht_query_value(d77, qid, 0, &got, &got_len, &n_vals, &best), 0);
    assert_int_equal(n_vals, 1);
    assert_int_equal(got_len, vl);
    assert_memory_equal(got, v, vl);
    dht_query_release(d77, qid);

    /* Provider record for a content id, found from another node. */
    struct dht_peer self;
    memset(&self, 0, sizeof self);
    self.id = sim_node_identity(w->s, who[2])->id;
    const uint8_t cid[] = "blob:0123456789";
    struct dht *d12 = sim_node_dht(w->s, who[2]);
    assert_int_equal(dht_provide(d12, sim_now(w->s), cid, sizeof cid, &self, &qid), 0);
    sim_node_poke(w->s, who[2]);
    assert_int_equal(sim_dht_wait(w->s, who[2], qid, sim_now(w->s) + 60000), DHT_QUERY_DONE);
    dht_query_release(d12, qid);
    sim_run_until(w->s, sim_now(w->s) + 1000);
    struct dht *d90 = sim_node_dht(w->s, who[3]);
    assert_int_equal(dht_get_providers(d90, sim_now(w->s), cid, sizeof cid, 1, &qid), 0);
    sim_node_poke(w->s, who[3]);
    assert_int_equal(sim_dht_wait(w->s, who[3], qid, sim_now(w->s) + 60000), DHT_QUERY_DONE);
    struct dht_peer prov[2];
    assert_int_equal(dht_query_providers(d90, qid, prov, 2), 1);
    assert_true(peer_id_equal(&prov[0].id, &self.id));
    dht_query_release(d90, qid);
}

/* ---- hostile floods: the tables stay bounded and honest peers get in ------------------ */

/* Identity number i of a flood (distinct from the make_identity tags). */
static void flood_identity(unsigned i, struct identity *id)
{
    uint8_t seed[32];
    memset(seed, 0, sizeof seed);
    seed[0] = 0xf1;
    memcpy(seed + 1, &i, sizeof i);
    assert_int_equal(identity_from_seed(seed, id), 0);
}

/* `from` sends ADD_PROVIDER for key, announcing itself at one address. */
static void send_add_provider(struct dht *d, uint64_t now, const struct identity *from,
                              const char *key)
{
    struct dht_peer fp;
    peer_of(from, &fp);
    struct multiaddr ma;
    assert_int_equal(multiaddr_from_text("/ip4/10.1.2.3/tcp/4001", &ma), 0);
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Message__Peer who = DHT__PB__MESSAGE__PEER__INIT, *whop = &who;
    ProtobufCBinaryData addr = {ma.len, ma.bytes};
    m.type = DHT__PB__MESSAGE__MESSAGE_TYPE__ADD_PROVIDER;
    m.key.data = (uint8_t *)key;
    m.key.len = strlen(key);
    who.id.data = (uint8_t *)from->id.bytes;
    who.id.len = from->id.len;
    who.n_addrs = 1;
    who.addrs = &addr;
    m.n_providerpeers = 1;
    m.providerpeers = &whop;
    uint8_t buf[1024], *resp = NULL;
    size_t len = pack_msg(&m, buf, sizeof buf), resp_len = 0;
    assert_int_equal(dht_handle_request(d, now, &fp, buf, len, &resp, &resp_len), 0);
    assert_null(resp);
}

/* Sends a request from `from` and returns the decoded response (caller frees). */
static Dht__Pb__Message *ask(struct dht *d, uint64_t now, const struct identity *from, int type,
                             const uint8_t *key, size_t key_len)
{
    struct dht_peer fp;
    peer_of(from, &fp);
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    m.type = (Dht__Pb__Message__MessageType)type;
    m.key.data = (uint8_t *)key;
    m.key.len = key_len;
    uint8_t buf[1024], *resp = NULL;
    size_t len = pack_msg(&m, buf, sizeof buf), resp_len = 0;
    assert_int_equal(dht_handle_request(d, now, &fp, buf, len, &resp, &resp_len), 0);
    const uint8_t *body;
    size_t body_len, used;
    assert_int_equal(dht_frame_split(resp, resp_len, &body, &body_len, &used), 0);
    Dht__Pb__Message *r = dht__pb__message__unpack(NULL, body_len, body);
    assert_non_null(r);
    free(resp);
    return r;
}

static void assert_provider_bounds(const struct dht *d)
{
    struct dht_stats st;
    dht_stats(d, &st);
    assert_true(st.n_provider_keys <= 4096);
    assert_true(st.n_provider_records <= DHT_PROVIDER_RECORDS_MAX);
    assert_true(st.provider_bytes <= st.provider_bytes_max);
    /* 4096 short keys with one provider each: well under a megabyte (it was 33 MB of RSS
     * when every key got DHT_PROVIDERS_PER_KEY full-size slots). */
    assert_true(st.provider_bytes < (1u << 20));
}

/* 5,000 ADD_PROVIDER records from one identity, then 5,000 more from 40 identities: the
 * table stays within its bounds and an honest provider's record is still stored and
 * served. */
static void test_dht_provider_flood_leaves_room_for_honest(void **state)
{
    (void)state;
    struct identity s, flooder, honest, asker;
    make_identity(1, &s);
    make_identity(2, &honest);
    make_identity(3, &asker);
    flood_identity(0, &flooder);
    struct dht *d = make_core(&s, true, 0);
    char key[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "flood-%d", i);
        send_add_provider(d, 10 + (uint64_t)i, &flooder, key);
    }
    struct dht_stats st;
    dht_stats(d, &st);
    assert_int_equal(st.n_provider_records, DHT_PROVIDER_KEYS_PER_PEER);
    assert_int_equal(st.n_provider_quota_refused, 5000 - DHT_PROVIDER_KEYS_PER_PEER);
    assert_provider_bounds(d);
    for (unsigned j = 1; j <= 40; j++) {
        struct identity sy;
        flood_identity(j, &sy);
        for (int i = 0; i < 125; i++) {
            snprintf(key, sizeof key, "sybil-%u-%d", j, i);
            send_add_provider(d, 10000 + j * 1000 + (uint64_t)i, &sy, key);
        }
    }
    dht_stats(d, &st);
    assert_int_equal(st.n_provider_keys, 4096); /* full */
    assert_true(st.n_provider_evicted > 0);     /* the largest holder paid */
    assert_provider_bounds(d);
    const char hk[] = "honest-model-root";
    send_add_provider(d, 100000, &honest, hk);
    assert_int_equal(dht_providers_count(d, 100001, (const uint8_t *)hk, strlen(hk)), 1);
    Dht__Pb__Message *r = ask(d, 100002, &asker, DHT_MSG_GET_PROVIDERS, (const uint8_t *)hk,
                              strlen(hk));
    assert_int_equal(r->n_providerpeers, 1);
    struct peer_id got;
    assert_int_equal(peer_id_from_bytes(r->providerpeers[0]->id.data,
                                        r->providerpeers[0]->id.len, &got), 0);
    assert_true(peer_id_equal(&got, &honest.id));
    assert_int_equal(r->providerpeers[0]->n_addrs, 1);
    dht__pb__message__free_unpacked(r, NULL);
    assert_provider_bounds(d);
    dht_free(d);
}

/* `from` stores its own /meshllm record `name` (data_len bytes of data) with PUT_VALUE. */
static void send_put_value(struct dht *d, uint64_t now, const struct identity *from,
                           const char *name, size_t data_len)
{
    static uint8_t data[8192], val[8192 + 128];
    uint8_t key[256];
    size_t key_len, val_len;
    memset(data, 'x', data_len);
    assert_int_equal(dht_meshllm_record_make(from, name, 1, data, data_len, key, sizeof key,
                                             &key_len, val, sizeof val, &val_len), 0);
    struct dht_peer fp;
    peer_of(from, &fp);
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Record rec = DHT__PB__RECORD__INIT;
    m.type = DHT__PB__MESSAGE__MESSAGE_TYPE__PUT_VALUE;
    m.key.data = key;
    m.key.len = key_len;
    rec.key = m.key;
    rec.value.data = val;
    rec.value.len = val_len;
    m.record = &rec;
    static uint8_t buf[16384];
    uint8_t *resp = NULL;
    size_t len = pack_msg(&m, buf, sizeof buf), resp_len = 0;
    assert_int_equal(dht_handle_request(d, now, &fp, buf, len, &resp, &resp_len), 0);
    free(resp);
}

/* A PUT_VALUE flood from one identity (5,000 records) and from 20 more (4,000 records of
 * 4 KB, 16 MB in all): counts and bytes stay bounded, and an honest record is stored and
 * served by GET_VALUE. */
static void test_dht_value_flood_leaves_room_for_honest(void **state)
{
    (void)state;
    struct identity s, flooder, honest, asker;
    make_identity(1, &s);
    make_identity(2, &honest);
    make_identity(3, &asker);
    flood_identity(0, &flooder);
    struct dht *d = make_core(&s, true, 0);
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        send_put_value(d, 10 + (uint64_t)i, &flooder, name, 16);
    }
    struct dht_stats st;
    dht_stats(d, &st);
    assert_int_equal(st.n_records, DHT_RECORDS_PER_PEER);
    assert_int_equal(st.n_value_quota_refused, 5000 - DHT_RECORDS_PER_PEER);
    for (unsigned j = 1; j <= 20; j++) {
        struct identity sy;
        flood_identity(j, &sy);
        for (int i = 0; i < 200; i++) {
            snprintf(name, sizeof name, "s%d", i);
            send_put_value(d, 10000 + j * 1000 + (uint64_t)i, &sy, name, 4096);
        }
    }
    dht_stats(d, &st);
    assert_true(st.record_bytes <= DHT_RECORD_BYTES_MAX);
    assert_true(st.n_records <= DHT_RECORDS_MAX);
    assert_true(st.n_value_evicted > 0);
    send_put_value(d, 100000, &honest, "model", 100);
    uint8_t key[256], val[512];
    size_t key_len, val_len;
    uint8_t data[100];
    memset(data, 'x', sizeof data);
    assert_int_equal(dht_meshllm_record_make(&honest, "model", 1, data, sizeof data, key,
                                             sizeof key, &key_len, val, sizeof val, &val_len), 0);
    Dht__Pb__Message *r = ask(d, 100001, &asker, DHT_MSG_GET_VALUE, key, key_len);
    assert_non_null(r->record);
    assert_int_equal(r->record->value.len, val_len);
    assert_memory_equal(r->record->value.data, val, val_len);
    dht__pb__message__free_unpacked(r, NULL);
    dht_stats(d, &st);
    assert_true(st.record_bytes <= st.record_bytes_max);
    dht_free(d);
}

/* Kademlia prefers old live nodes: 300 newcomers for a full bucket do not push its live
 * entries out; they wait in a bounded replacement cache. The entry quiet for a minute is
 * pinged, and when the ping fails the newest replacement takes its place. */
static void test_dht_full_bucket_keeps_live_entries(void **state)
{
    (void)state;
    struct identity s;
    make_identity(1, &s);
    struct dht *d = make_core(&s, true, 0);
    uint8_t self_key[DHT_KEY_LEN];
    dht_key_of(s.id.bytes, s.id.len, self_key);
    struct peer_id old[DHT_K];
    size_t n_old = 0;
    unsigned n_new = 0;
    for (unsigned i = 100; n_new < 300; i++) {
        struct identity id;
        flood_identity(i, &id);
        uint8_t k[DHT_KEY_LEN];
        dht_key_of(id.id.bytes, id.id.len, k);
        if ((k[0] ^ self_key[0]) < 0x80) continue; /* only bucket 0 (first bit differs) */
        struct dht_peer p;
        peer_of(&id, &p);
        if (n_old < DHT_K) {
            old[n_old++] = id.id;
            dht_peer_connected(d, 1000, &p, true);
        } else {
            dht_peer_connected(d, 2000 + n_new, &p, true);
            n_new++;
        }
    }
    struct dht_stats st;
    dht_stats(d, &st);
    assert_int_equal(st.n_table, DHT_K);
    assert_int_equal(st.n_replacements, DHT_REPLACEMENTS);
    assert_int_equal(st.n_table_refused, 300);
    for (size_t i = 0; i < n_old; i++) {
        uint8_t k[DHT_KEY_LEN];
        struct dht_peer got;
        dht_key_of(old[i].bytes, old[i].len, k);
        assert_int_equal(dht_table_closest(d, k, &got, 1), 1);
        assert_true(peer_id_equal(&got.id, &old[i]));
    }
    /* No ping so far: every entry was seen less than a minute before. */
    struct dht_request r;
    assert_int_equal(dht_next_request(d, &r), MESH_ENOTFOUND);
    /* A minute later, one more newcomer: the quietest entry is pinged; it does not answer. */
    struct identity late;
    for (unsigned i = 5000;; i++) {
        flood_identity(i, &late);
        uint8_t k[DHT_KEY_LEN];
        dht_key_of(late.id.bytes, late.id.len, k);
        if ((k[0] ^ self_key[0]) >= 0x80) break;
    }
    struct dht_peer lp;
    peer_of(&late, &lp);
    dht_peer_connected(d, 1000 + 60000, &lp, true);
    assert_int_equal(dht_next_request(d, &r), 0);
    assert_int_equal(r.type, DHT_MSG_PING);
    bool is_old = false;
    for (size_t i = 0; i < n_old; i++) is_old |= peer_id_equal(&r.peer.id, &old[i]);
    assert_true(is_old);
    free(r.msg);
    dht_on_failure(d, 1000 + 60001, r.req_id);
    dht_stats(d, &st);
    assert_int_equal(st.n_table, DHT_K);
    assert_int_equal(st.n_table_replaced, 1);
    uint8_t k[DHT_KEY_LEN];
    struct dht_peer got;
    dht_key_of(late.id.bytes, late.id.len, k);
    assert_int_equal(dht_table_closest(d, k, &got, 1), 1);
    assert_true(peer_id_equal(&got.id, &late.id)); /* the newest replacement */
    dht_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dht_find_node_returns_k_closest_without_requester),
        cmocka_unit_test(test_dht_rejects_hostile_messages),
        cmocka_unit_test(test_dht_record_validators_pk_and_meshllm),
        cmocka_unit_test(test_dht_providers_stored_served_and_expire),
        cmocka_unit_test(test_dht_client_mode_does_not_serve),
        cmocka_unit_test(test_dht_provider_flood_leaves_room_for_honest),
        cmocka_unit_test(test_dht_value_flood_leaves_room_for_honest),
        cmocka_unit_test(test_dht_full_bucket_keeps_live_entries),
        cmocka_unit_test(test_dht_bucket_refresh_starts_lookups),
        cmocka_unit_test(test_dht_sim_lookups_find_true_k_closest),
        cmocka_unit_test(test_dht_sim_lookups_survive_churn),
        cmocka_unit_test(test_dht_sim_put_get_and_providers_across_network),
    };
    return cmocka_run_group_tests(tests, NULL, world_teardown);
}
