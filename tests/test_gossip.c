/* test_gossip.c - net/gossip: signed publish between two routers, invalid signatures
 * rejected and penalised down to the graylist, IWANT served from the message cache (and not
 * after it shifts out), IHAVE -> IWANT with broken promises penalised, GRAFT during backoff,
 * malformed RPCs; and in a 120-node virtual-clock simulation: mesh degrees stay within
 * [Dlo, Dhi], every subscriber gets every message exactly once, duplicates are suppressed.
 * `test_gossip --interop-dial ADDR` / `--interop-listen` are the C side of
 * tests/net_gossip_interop.test.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/gossip.h"
#include "net/gossip_host.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/sim.h"
#include "tests/util/test_util.h"

#include "gossip.pb-c.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPIC "/meshllm/announce/1"

struct node {
    struct identity id;
    struct gossip *g;
    int n_got;
    uint8_t last[64];
    size_t last_len;
};

static void on_msg(void *ud, const struct gossip_msg *m)
{
    struct node *n = ud;
    n->n_got++;
    n->last_len = m->data_len < sizeof n->last ? m->data_len : sizeof n->last;
    memcpy(n->last, m->data, n->last_len);
}

static void node_init_params(struct node *n, uint8_t tag, const struct gossip_params *gp)
{
    uint8_t seed[32];
    memset(n, 0, sizeof *n);
    memset(seed, tag, sizeof seed);
    assert_int_equal(identity_from_seed(seed, &n->id), 0);
    struct gossip_config c;
    memset(&c, 0, sizeof c);
    c.id = &n->id;
    c.seed[0] = tag;
    c.on_message = on_msg;
    c.ud = n;
    c.params = gp;
    assert_int_equal(gossip_new(&c, &n->g), 0);
}

static void node_init(struct node *n, uint8_t tag)
{
    node_init_params(n, tag, NULL);
}

/* Moves every frame queued at `from` for `to` into `to`; returns how many. Frames for other
 * peers are dropped. */
static int pump(struct node *from, struct node *to, uint64_t now)
{
    struct gossip_output o;
    int n = 0;
    while (gossip_next_output(from->g, &o) == 0) {
        if (peer_id_equal(&o.peer, &to->id.id)) {
            const uint8_t *body;
            size_t bl, used;
            assert_int_equal(gossip_frame_split(o.frame, o.frame_len, &body, &bl, &used), 0);
            assert_int_equal(used, o.frame_len);
            assert_int_equal(gossip_on_rpc(to->g, now, &from->id.id, body, bl), 0);
            n++;
        }
        free(o.frame);
    }
    return n;
}

/* Pops frames of `from` and decodes them; the caller frees with free_unpacked. */
static Pubsub__Pb__RPC *next_rpc(struct node *from)
{
    struct gossip_output o;
    if (gossip_next_output(from->g, &o) != 0) return NULL;
    const uint8_t *body;
    size_t bl, used;
    assert_int_equal(gossip_frame_split(o.frame, o.frame_len, &body, &bl, &used), 0);
    Pubsub__Pb__RPC *r = pubsub__pb__rpc__unpack(NULL, bl, body);
    assert_non_null(r);
    free(o.frame);
    return r;
}

static void drain(struct node *n)
{
    struct gossip_output o;
    while (gossip_next_output(n->g, &o) == 0) free(o.frame);
}

/* Tests of two routers start at T(0): pair_up has run one heartbeat before. */
#define T(x) (2000 + (uint64_t)(x))

/* Connects a and b, subscribes both, and lets the first heartbeat graft them. */
static void pair_up(struct node *a, struct node *b)
{
    assert_int_equal(gossip_peer_add(a->g, 0, &b->id.id, true), 0);
    assert_int_equal(gossip_peer_add(b->g, 0, &a->id.id, false), 0);
    assert_int_equal(gossip_subscribe(a->g, 0, TOPIC), 0);
    assert_int_equal(gossip_subscribe(b->g, 0, TOPIC), 0);
    gossip_periodic(a->g, 0);
    gossip_periodic(b->g, 0);
    pump(a, b, 1);
    pump(b, a, 1);
    gossip_periodic(a->g, 1000);
    gossip_periodic(b->g, 1000);
    pump(a, b, 1001);
    pump(b, a, 1001);
}

/* An RPC with one message signed by `author` (optionally corrupted after signing). */
static size_t signed_rpc(const struct identity *author, uint64_t seq, const char *text,
                         bool corrupt, uint8_t *out, size_t cap)
{
    Pubsub__Pb__Message m = PUBSUB__PB__MESSAGE__INIT, *mp = &m;
    uint8_t seqb[8], sig[64], data[64];
    size_t dl = strlen(text);
    memcpy(data, text, dl);
    for (int i = 0; i < 8; i++) seqb[i] = (uint8_t)(seq >> (56 - 8 * i));
    m.has_from = 1;
    m.from = (ProtobufCBinaryData){author->id.len, (uint8_t *)author->id.bytes};
    m.has_data = 1;
    m.data = (ProtobufCBinaryData){dl, data};
    m.has_seqno = 1;
    m.seqno = (ProtobufCBinaryData){8, seqb};
    m.topic = (char *)TOPIC;
    uint8_t tosign[512];
    memcpy(tosign, GOSSIP_SIGN_PREFIX, 14);
    size_t n = pubsub__pb__message__pack(&m, tosign + 14);
    identity_sign(author, tosign, 14 + n, sig);
    m.has_signature = 1;
    m.signature = (ProtobufCBinaryData){64, sig};
    if (corrupt) data[0] ^= 0x20;
    Pubsub__Pb__RPC r = PUBSUB__PB__RPC__INIT;
    r.n_publish = 1;
    r.publish = &mp;
    size_t len = pubsub__pb__rpc__get_packed_size(&r);
    assert_true(len <= cap);
    return pubsub__pb__rpc__pack(&r, out);
}

/* ---- two routers --------------------------------------------------------------------- */

static void test_gossip_publish_signed_and_delivered(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 1);
    assert_int_equal(gossip_mesh_peers(b.g, TOPIC, NULL, 0), 1);

    uint8_t id[GOSSIP_MSG_ID_MAX_LEN];
    size_t id_len;
    assert_int_equal(gossip_publish(a.g, T(10), TOPIC, (const uint8_t *)"hello", 5, id, &id_len), 0);
    assert_int_equal(a.n_got, 1); /* our own subscription sees it */
    /* Message id = from || seqno. */
    assert_int_equal(id_len, a.id.id.len + 8);
    assert_memory_equal(id, a.id.id.bytes, a.id.id.len);
    /* On the wire: from, 8-byte seqno, a 64-byte signature, no key (inlined in the ID). */
    Pubsub__Pb__RPC *r = next_rpc(&a);
    assert_non_null(r);
    assert_int_equal(r->n_publish, 1);
    Pubsub__Pb__Message *m = r->publish[0];
    assert_true(m->has_signature && m->signature.len == 64);
    assert_false(m->has_key);
    assert_int_equal(m->seqno.len, 8);
    assert_string_equal(m->topic, TOPIC);
    /* The signature verifies over "libp2p-pubsub:" || message-without-signature. */
    Pubsub__Pb__Message u = *m;
    u.has_signature = 0;
    uint8_t buf[512], pub[IDENTITY_PUBKEY_PROTO_LEN];
    memcpy(buf, "libp2p-pubsub:", 14);
    size_t n = pubsub__pb__message__pack(&u, buf + 14);
    identity_pubkey_proto(a.id.pk, pub);
    assert_int_equal(identity_verify(pub, sizeof pub, buf, 14 + n, m->signature.data, 64), 0);
    pubsub__pb__rpc__free_unpacked(r, NULL);

    assert_int_equal(gossip_publish(a.g, T(11), TOPIC, (const uint8_t *)"second", 6, NULL, NULL), 0);
    pump(&a, &b, T(12));
    assert_int_equal(b.n_got, 1);
    assert_int_equal(b.last_len, 6);
    assert_memory_equal(b.last, "second", 6);
    /* B's mesh forwarding must not echo it back to A, the author. */
    assert_int_equal(pump(&b, &a, T(13)), 0);
    assert_true(gossip_peer_score(b.g, T(13), &a.id.id) > 0); /* P1 + P2 */
    gossip_free(a.g);
    gossip_free(b.g);
}

static void test_gossip_invalid_signature_rejected_and_penalised(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    uint8_t rpc[1024];
    size_t len = signed_rpc(&a.id, 1, "forged", true, rpc, sizeof rpc);
    assert_int_equal(gossip_on_rpc(b.g, T(5), &a.id.id, rpc, len), 0);
    assert_int_equal(b.n_got, 0);
    struct gossip_stats st;
    gossip_get_stats(b.g, &st);
    assert_int_equal(st.n_invalid, 1);
    assert_true(gossip_peer_score(b.g, T(5), &a.id.id) < 0);
    /* At the next heartbeat the negative peer leaves B's mesh (with a PRUNE). */
    gossip_periodic(b.g, T(1001));
    assert_int_equal(gossip_mesh_peers(b.g, TOPIC, NULL, 0), 0);
    Pubsub__Pb__RPC *r = next_rpc(&b);
    assert_non_null(r);
    assert_non_null(r->control);
    assert_int_equal(r->control->n_prune, 1);
    assert_true(r->control->prune[0]->has_backoff && r->control->prune[0]->backoff == 60);
    pubsub__pb__rpc__free_unpacked(r, NULL);
    /* Two more forgeries: graylisted, so even a valid message is then ignored. */
    for (uint64_t s = 2; s <= 3; s++) {
        len = signed_rpc(&a.id, s, "forged", true, rpc, sizeof rpc);
        assert_int_equal(gossip_on_rpc(b.g, T(1002), &a.id.id, rpc, len), 0);
    }
    assert_true(gossip_peer_score(b.g, T(1002), &a.id.id) < -80);
    len = signed_rpc(&a.id, 4, "valid", false, rpc, sizeof rpc);
    assert_int_equal(gossip_on_rpc(b.g, T(1003), &a.id.id, rpc, len), 0);
    assert_int_equal(b.n_got, 0);
    gossip_get_stats(b.g, &st);
    assert_int_equal(st.n_graylisted, 1);
    /* A valid message from an honest third peer is delivered. */
    struct node c;
    node_init(&c, 3);
    assert_int_equal(gossip_peer_add(b.g, T(1003), &c.id.id, false), 0);
    len = signed_rpc(&c.id, 9, "valid", false, rpc, sizeof rpc);
    assert_int_equal(gossip_on_rpc(b.g, T(1004), &c.id.id, rpc, len), 0);
    assert_int_equal(b.n_got, 1);
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(c.g);
}

static void test_gossip_iwant_served_from_mcache(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    drain(&a);
    uint8_t id[GOSSIP_MSG_ID_MAX_LEN];
    size_t id_len;
    assert_int_equal(gossip_publish(a.g, T(10), TOPIC, (const uint8_t *)"cached", 6, id, &id_len), 0);
    drain(&a);
    /* B asks with IWANT: A answers from its cache, at most 3 times (retransmission cap). */
    Pubsub__Pb__ControlIWant iw = PUBSUB__PB__CONTROL_IWANT__INIT, *iwp = &iw;
    ProtobufCBinaryData want[2] = {{id_len, id}, {5, (uint8_t *)"nope!"}};
    iw.n_messageids = 2;
    iw.messageids = want;
    Pubsub__Pb__ControlMessage ctl = PUBSUB__PB__CONTROL_MESSAGE__INIT;
    ctl.n_iwant = 1;
    ctl.iwant = &iwp;
    Pubsub__Pb__RPC r = PUBSUB__PB__RPC__INIT;
    r.control = &ctl;
    uint8_t buf[512];
    size_t len = pubsub__pb__rpc__pack(&r, buf);
    for (int k = 0; k < 4; k++) {
        assert_int_equal(gossip_on_rpc(a.g, T(11), &b.id.id, buf, len), 0);
        Pubsub__Pb__RPC *got = next_rpc(&a);
        if (k == 3) {
            assert_null(got); /* fourth ask: refused */
            break;
        }
        assert_non_null(got);
        assert_int_equal(got->n_publish, 1);
        assert_int_equal(got->publish[0]->data.len, 6);
        assert_memory_equal(got->publish[0]->data.data, "cached", 6);
        pubsub__pb__rpc__free_unpacked(got, NULL);
    }
    struct gossip_stats st;
    gossip_get_stats(a.g, &st);
    assert_int_equal(st.n_iwant_served, 3);
    /* After history_length (5) heartbeats the message has left the cache. */
    struct node c;
    node_init(&c, 3);
    assert_int_equal(gossip_peer_add(a.g, T(12), &c.id.id, false), 0);
    for (int h = 1; h <= 6; h++) gossip_periodic(a.g, T(11 + 1000 * (uint64_t)h));
    drain(&a);
    assert_int_equal(gossip_on_rpc(a.g, T(7000), &c.id.id, buf, len), 0);
    assert_null(next_rpc(&a));
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(c.g);
}

static void test_gossip_ihave_asks_iwant_and_broken_promises_penalised(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    drain(&b);
    /* A advertises two ids it will never deliver. */
    ProtobufCBinaryData ids[2] = {{6, (uint8_t *)"ghost1"}, {6, (uint8_t *)"ghost2"}};
    Pubsub__Pb__ControlIHave ih = PUBSUB__PB__CONTROL_IHAVE__INIT, *ihp = &ih;
    ih.topicid = (char *)TOPIC;
    ih.n_messageids = 2;
    ih.messageids = ids;
    Pubsub__Pb__ControlMessage ctl = PUBSUB__PB__CONTROL_MESSAGE__INIT;
    ctl.n_ihave = 1;
    ctl.ihave = &ihp;
    Pubsub__Pb__RPC r = PUBSUB__PB__RPC__INIT;
    r.control = &ctl;
    uint8_t buf[512];
    size_t len = pubsub__pb__rpc__pack(&r, buf);
    assert_int_equal(gossip_on_rpc(b.g, T(100), &a.id.id, buf, len), 0);
    Pubsub__Pb__RPC *got = next_rpc(&b);
    assert_non_null(got);
    assert_non_null(got->control);
    assert_int_equal(got->control->n_iwant, 1);
    assert_int_equal(got->control->iwant[0]->n_messageids, 2);
    pubsub__pb__rpc__free_unpacked(got, NULL);
    double before = gossip_peer_score(b.g, T(100), &a.id.id);
    /* Repeating the IHAVE does not ask again while the promise is open. */
    assert_int_equal(gossip_on_rpc(b.g, T(101), &a.id.id, buf, len), 0);
    assert_null(next_rpc(&b));
    /* 3 s later the promises are broken: behaviour penalty (P7) makes the score drop. */
    gossip_periodic(b.g, T(1000));
    gossip_periodic(b.g, T(2000));
    gossip_periodic(b.g, T(3500));
    double after = gossip_peer_score(b.g, T(3500), &a.id.id);
    assert_true(after < before - 1);
    gossip_free(a.g);
    gossip_free(b.g);
}

static void test_gossip_graft_during_backoff_is_pruned_and_penalised(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    drain(&a);
    drain(&b);
    /* B leaves the topic: A gets a PRUNE with the unsubscribe backoff (10 s). */
    assert_int_equal(gossip_unsubscribe(b.g, T(10), TOPIC), 0);
    pump(&b, &a, T(11));
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 0);
    assert_int_equal(gossip_subscribe(b.g, T(12), TOPIC), 0);
    /* B is backed off from A, so its own subscribe must not GRAFT A... */
    Pubsub__Pb__RPC *got = next_rpc(&b);
    assert_non_null(got);
    assert_true(got->control == NULL || got->control->n_graft == 0);
    pubsub__pb__rpc__free_unpacked(got, NULL);
    /* ...and if a GRAFT arrives anyway, A answers PRUNE and penalises B. */
    Pubsub__Pb__ControlGraft gr = PUBSUB__PB__CONTROL_GRAFT__INIT, *grp = &gr;
    gr.topicid = (char *)TOPIC;
    Pubsub__Pb__ControlMessage ctl = PUBSUB__PB__CONTROL_MESSAGE__INIT;
    ctl.n_graft = 1;
    ctl.graft = &grp;
    Pubsub__Pb__RPC r = PUBSUB__PB__RPC__INIT;
    r.control = &ctl;
    uint8_t buf[256];
    size_t len = pubsub__pb__rpc__pack(&r, buf);
    drain(&a);
    assert_int_equal(gossip_on_rpc(a.g, T(13), &b.id.id, buf, len), 0);
    assert_int_equal(gossip_on_rpc(a.g, T(14), &b.id.id, buf, len), 0);
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 0);
    got = next_rpc(&a);
    assert_non_null(got);
    assert_true(got->control && got->control->n_prune >= 1);
    pubsub__pb__rpc__free_unpacked(got, NULL);
    assert_true(gossip_peer_score(a.g, T(14), &b.id.id) < 0);
    gossip_free(a.g);
    gossip_free(b.g);
}

static void test_gossip_fanout_publish_without_subscribing(void **state)
{
    (void)state;
    struct gossip_params gp;
    gossip_params_default(&gp);
    gp.flood_publish = false; /* so that publishing goes through the fanout set */
    struct node a, b, c;
    node_init_params(&a, 1, &gp);
    node_init(&b, 2);
    node_init(&c, 3);
    assert_int_equal(gossip_peer_add(a.g, 0, &b.id.id, true), 0);
    assert_int_equal(gossip_peer_add(b.g, 0, &a.id.id, false), 0);
    assert_int_equal(gossip_peer_add(a.g, 0, &c.id.id, true), 0);
    assert_int_equal(gossip_peer_add(c.g, 0, &a.id.id, false), 0);
    assert_int_equal(gossip_subscribe(b.g, 0, TOPIC), 0); /* only B listens */
    pump(&b, &a, 1);
    drain(&c);
    gossip_periodic(a.g, 0);
    assert_false(gossip_is_subscribed(a.g, TOPIC));
    assert_int_equal(gossip_publish(a.g, 10, TOPIC, (const uint8_t *)"fan", 3, NULL, NULL), 0);
    assert_int_equal(a.n_got, 0); /* not subscribed: no local delivery */
    /* The message goes to B (subscribed, in the fanout set) and not to C. */
    struct gossip_output o;
    int to_b = 0, to_c = 0;
    while (gossip_next_output(a.g, &o) == 0) {
        to_b += peer_id_equal(&o.peer, &b.id.id);
        to_c += peer_id_equal(&o.peer, &c.id.id);
        if (peer_id_equal(&o.peer, &b.id.id)) {
            const uint8_t *body;
            size_t bl, used;
            assert_int_equal(gossip_frame_split(o.frame, o.frame_len, &body, &bl, &used), 0);
            assert_int_equal(gossip_on_rpc(b.g, 11, &a.id.id, body, bl), 0);
        }
        free(o.frame);
    }
    assert_int_equal(to_b, 1);
    assert_int_equal(to_c, 0);
    assert_int_equal(b.n_got, 1);
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 0);
    /* Subscribing later turns the fanout peers into the mesh (GRAFT to B). */
    assert_int_equal(gossip_subscribe(a.g, 20, TOPIC), 0);
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 1);
    Pubsub__Pb__RPC *r;
    bool grafted = false;
    while ((r = next_rpc(&a))) {
        grafted |= r->control && r->control->n_graft == 1;
        pubsub__pb__rpc__free_unpacked(r, NULL);
    }
    assert_true(grafted);
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(c.g);
}

static void test_gossip_full_mesh_prune_offers_peer_exchange(void **state)
{
    (void)state;
    struct gossip_params gp;
    gossip_params_default(&gp);
    gp.d = 2;
    gp.d_lo = 1;
    gp.d_hi = 2;
    gp.d_score = 1;
    gp.d_out = 0;
    gp.do_px = true;
    struct node a, b, c, x;
    node_init_params(&a, 1, &gp);
    node_init(&b, 2);
    node_init(&c, 3);
    /* X trusts A enough to take its suggestions. */
    uint8_t seed[32];
    memset(&x, 0, sizeof x);
    memset(seed, 4, sizeof seed);
    assert_int_equal(identity_from_seed(seed, &x.id), 0);
    struct gossip_score_params sp;
    gossip_score_params_default(&sp);
    sp.accept_px_threshold = 0;
    struct gossip_config xc;
    memset(&xc, 0, sizeof xc);
    xc.id = &x.id;
    xc.score = &sp;
    assert_int_equal(gossip_new(&xc, &x.g), 0);

    struct node *full[2] = {&b, &c};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(gossip_peer_add(a.g, 0, &full[i]->id.id, false), 0);
        assert_int_equal(gossip_peer_add(full[i]->g, 0, &a.id.id, true), 0);
        assert_int_equal(gossip_subscribe(full[i]->g, 0, TOPIC), 0);
        pump(full[i], &a, 1);
    }
    assert_int_equal(gossip_subscribe(a.g, 2, TOPIC), 0);
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 2); /* B and C: full (Dhi 2) */
    drain(&a);
    assert_int_equal(gossip_peer_add(a.g, 3, &x.id.id, false), 0);
    assert_int_equal(gossip_peer_add(x.g, 3, &a.id.id, true), 0);
    pump(&a, &x, 4); /* A's subscriptions reach X */
    assert_int_equal(gossip_subscribe(x.g, 4, TOPIC), 0); /* X grafts A at once */
    pump(&x, &a, 5); /* X's subscription and GRAFT reach A: the mesh is full */
    assert_int_equal(gossip_mesh_peers(a.g, TOPIC, NULL, 0), 2);
    Pubsub__Pb__RPC *r = next_rpc(&a);
    assert_non_null(r);
    assert_non_null(r->control);
    assert_int_equal(r->control->n_prune, 1);
    assert_int_equal(r->control->prune[0]->n_peers, 2); /* PX: B and C, not X itself */
    uint8_t buf[1024];
    size_t len = pubsub__pb__rpc__pack(r, buf);
    pubsub__pb__rpc__free_unpacked(r, NULL);
    assert_int_equal(gossip_on_rpc(x.g, 6, &a.id.id, buf, len), 0);
    struct peer_id got[3];
    int n = 0;
    while (n < 3 && gossip_next_px(x.g, &got[n]) == 0) n++;
    assert_int_equal(n, 2);
    for (int i = 0; i < 2; i++)
        assert_true(peer_id_equal(&got[i], &b.id.id) || peer_id_equal(&got[i], &c.id.id));
    /* A peer below accept_px_threshold (default 10) is not listened to. */
    struct node y;
    node_init(&y, 5);
    assert_int_equal(gossip_peer_add(y.g, 5, &a.id.id, true), 0);
    assert_int_equal(gossip_on_rpc(y.g, 6, &a.id.id, buf, len), 0);
    assert_int_equal(gossip_next_px(y.g, &got[0]), MESH_ENOTFOUND);
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(c.g);
    gossip_free(x.g);
    gossip_free(y.g);
}

static void test_gossip_ip_colocation_penalty(void **state)
{
    (void)state;
    struct node a, p[4];
    uint8_t seed[32];
    memset(&a, 0, sizeof a);
    memset(seed, 1, sizeof seed);
    assert_int_equal(identity_from_seed(seed, &a.id), 0);
    struct gossip_score_params sp;
    gossip_score_params_default(&sp);
    sp.ip_colocation_weight = -1;
    sp.ip_colocation_threshold = 1;
    struct gossip_config c;
    memset(&c, 0, sizeof c);
    c.id = &a.id;
    c.score = &sp;
    assert_int_equal(gossip_new(&c, &a.g), 0);
    const uint8_t shared[4] = {10, 0, 0, 7}, alone[4] = {10, 0, 0, 8};
    for (int i = 0; i < 4; i++) {
        node_init(&p[i], (uint8_t)(10 + i));
        assert_int_equal(gossip_peer_add(a.g, 0, &p[i].id.id, false), 0);
        gossip_peer_set_ip(a.g, &p[i].id.id, i < 3 ? shared : alone, 4);
    }
    /* Three peers behind one address: (3 - 1)^2 = 4 each; the fourth is not penalised. */
    for (int i = 0; i < 3; i++)
        assert_true(fabs(gossip_peer_score(a.g, 0, &p[i].id.id) - -4.0) < 1e-9);
    assert_true(fabs(gossip_peer_score(a.g, 0, &p[3].id.id)) < 1e-9);
    gossip_peer_remove(a.g, 0, &p[0].id.id);
    assert_true(fabs(gossip_peer_score(a.g, 0, &p[1].id.id) - -1.0) < 1e-9);
    gossip_free(a.g);
    for (int i = 0; i < 4; i++) gossip_free(p[i].g);
}

static void test_gossip_rejects_malformed_rpc(void **state)
{
    (void)state;
    struct node a, b;
    node_init(&a, 1);
    node_init(&b, 2);
    pair_up(&a, &b);
    const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(gossip_on_rpc(b.g, T(5), &a.id.id, junk, sizeof junk), MESH_EPROTO);
    assert_int_equal(gossip_rpc_check(junk, sizeof junk), MESH_EPROTO);
    /* A message without the required topic field. */
    const uint8_t no_topic[] = {0x12, 0x02, 0x12, 0x00};
    assert_int_equal(gossip_rpc_check(no_topic, sizeof no_topic), MESH_EPROTO);
    /* Unknown peer. */
    struct node c;
    node_init(&c, 3);
    uint8_t rpc[512];
    size_t len = signed_rpc(&c.id, 1, "x", false, rpc, sizeof rpc);
    assert_int_equal(gossip_on_rpc(b.g, T(5), &c.id.id, rpc, len), MESH_ENOTFOUND);
    /* Oversized frame length. */
    uint8_t frame[8] = {0x80, 0x80, 0x80, 0x08};
    const uint8_t *body;
    size_t bl, used;
    assert_int_equal(gossip_frame_split(frame, 4, &body, &bl, &used), MESH_ERANGE);
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(c.g);
}

/* ---- simulation ---------------------------------------------------------------------- */

#define SIM_N 120
#define N_MSGS 20

struct deliveries {
    uint8_t got[SIM_N][N_MSGS]; /* times each node's application saw each message */
    size_t n_extra;
};

static void sim_on_msg(void *ud, size_t node, const struct gossip_msg *m)
{
    struct deliveries *d = ud;
    if (m->data_len != 1 || m->data[0] >= N_MSGS || node >= SIM_N) {
        d->n_extra++;
        return;
    }
    d->got[node][m->data[0]]++;
}

static void test_gossip_sim_mesh_degrees_and_delivery(void **state)
{
    (void)state;
    struct deliveries *dl = calloc(1, sizeof *dl);
    assert_non_null(dl);
    struct sim_config c;
    memset(&c, 0, sizeof c);
    c.n_max = SIM_N;
    c.seed = 99;
    c.with_gossip = true;
    c.on_gossip_message = sim_on_msg;
    c.ud = dl;
    struct sim *s;
    assert_int_equal(sim_new(&c, &s), 0);
    for (size_t i = 0; i < SIM_N; i++) {
        size_t idx;
        assert_int_equal(sim_node_add(s, &idx), 0);
    }
    /* Each node dials 8 random others: degrees around 16, some above Dhi. */
    uint64_t rng = 3;
    for (size_t i = 0; i < SIM_N; i++)
        for (int k = 0; k < 8; k++) {
            size_t j = test_rand_u64(&rng) % SIM_N;
            if (j != i) sim_gossip_connect(s, i, j);
        }
    for (size_t i = 0; i < SIM_N; i++) {
        assert_int_equal(gossip_subscribe(sim_node_gossip(s, i), sim_now(s), TOPIC), 0);
        sim_node_poke(s, i);
    }
    sim_run_until(s, 30000);
    struct gossip_params p;
    gossip_params_default(&p);
    for (size_t i = 0; i < SIM_N; i++) {
        size_t deg = gossip_mesh_peers(sim_node_gossip(s, i), TOPIC, NULL, 0);
        if (deg < (size_t)p.d_lo || deg > (size_t)p.d_hi)
            fail_msg("node %zu mesh degree %zu outside [%d, %d]", i, deg, p.d_lo, p.d_hi);
    }
    for (int m = 0; m < N_MSGS; m++) {
        size_t from = test_rand_u64(&rng) % SIM_N;
        uint8_t data = (uint8_t)m;
        assert_int_equal(gossip_publish(sim_node_gossip(s, from), sim_now(s), TOPIC, &data, 1,
                                         NULL, NULL),
                         0);
        sim_node_poke(s, from);
        sim_run_until(s, sim_now(s) + 200);
    }
    sim_run_until(s, sim_now(s) + 10000);
    uint64_t dups = 0;
    for (size_t i = 0; i < SIM_N; i++) {
        for (int m = 0; m < N_MSGS; m++)
            if (dl->got[i][m] != 1)
                fail_msg("node %zu saw message %d %d times", i, m, dl->got[i][m]);
        struct gossip_stats st;
        gossip_get_stats(sim_node_gossip(s, i), &st);
        dups += st.n_duplicates;
        assert_int_equal(st.n_invalid, 0);
    }
    assert_int_equal(dl->n_extra, 0);
    assert_true(dups > 0); /* copies did arrive over several mesh links, and were dropped */
    printf("# %d nodes, %d messages: all delivered once; %llu duplicate copies suppressed\n",
           SIM_N, N_MSGS, (unsigned long long)dups);

    /* 20 % of nodes vanish without notice; messages still reach >= 99 % of the rest. */
    memset(dl->got, 0, sizeof dl->got);
    size_t n_off = 0;
    while (n_off < SIM_N / 5) {
        size_t i = test_rand_u64(&rng) % SIM_N;
        if (!sim_node_online(s, i)) continue;
        sim_node_set_online(s, i, false);
        n_off++;
    }
    size_t want = 0, got = 0;
    for (int m = 0; m < N_MSGS; m++) {
        size_t from;
        do from = test_rand_u64(&rng) % SIM_N;
        while (!sim_node_online(s, from));
        uint8_t data = (uint8_t)m;
        assert_int_equal(gossip_publish(sim_node_gossip(s, from), sim_now(s), TOPIC, &data, 1,
                                         NULL, NULL),
                         0);
        sim_node_poke(s, from);
        sim_run_until(s, sim_now(s) + 200);
    }
    sim_run_until(s, sim_now(s) + 10000);
    for (size_t i = 0; i < SIM_N; i++) {
        if (!sim_node_online(s, i)) continue;
        for (int m = 0; m < N_MSGS; m++) {
            want++;
            got += dl->got[i][m] > 0;
            assert_true(dl->got[i][m] <= 1);
        }
    }
    printf("# after 20%% churn: %zu of %zu deliveries\n", got, want);
    assert_true(got * 100 >= want * 99);
    sim_free(s);
    free(dl);
}

/* ---- over real TCP: A - B - C on 127.0.0.1 ------------------------------------------- */

struct tcp_node {
    struct node n; /* identity, delivery counter */
    struct host *h;
    struct gossip_host *gh;
    struct multiaddr addr;
};

static void tcp_on_ping(void *ctx, int status, uint64_t rtt_us)
{
    int *st = ctx;
    (void)rtt_us;
    *st = status == 0 ? 1 : -1;
}

static void tcp_guard(uv_timer_t *t)
{
    (void)t;
    fail_msg("test timed out");
}

static void test_gossip_host_relays_over_tcp(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t guard;
    struct tcp_node t[3];
    struct multiaddr lo;
    struct gossip_params gp;
    gossip_params_default(&gp);
    gp.heartbeat_ms = 100; /* quick meshes in real time */
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    for (int i = 0; i < 3; i++) {
        memset(&t[i], 0, sizeof t[i]);
        uint8_t seed[32];
        memset(seed, 0x70 + i, sizeof seed);
        assert_int_equal(identity_from_seed(seed, &t[i].n.id), 0);
        struct host_config hc = {.identity = &t[i].n.id};
        assert_int_equal(host_new(&loop, &hc, &t[i].h), 0);
        assert_int_equal(host_listen(t[i].h, &lo), 0);
        assert_int_equal(host_listen_addrs(t[i].h, &t[i].addr, 1), 1);
        assert_int_equal(multiaddr_append_p2p(&t[i].addr, &t[i].n.id.id), 0);
        struct gossip_config c;
        memset(&c, 0, sizeof c);
        c.id = &t[i].n.id;
        c.seed[0] = (uint8_t)i;
        c.params = &gp;
        c.on_message = on_msg;
        c.ud = &t[i].n;
        assert_int_equal(gossip_host_new(&loop, t[i].h, &c, &t[i].gh), 0);
        assert_int_equal(gossip_subscribe(gossip_host_core(t[i].gh), uv_now(&loop), TOPIC), 0);
        gossip_host_kick(t[i].gh);
    }
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, tcp_guard, 20000, 0);
    uv_unref((uv_handle_t *)&guard);
    /* A dials B, C dials B; A and C never meet. */
    int pa = 0, pc = 0;
    assert_int_equal(host_ping(t[0].h, &t[1].addr, tcp_on_ping, &pa), 0);
    assert_int_equal(host_ping(t[2].h, &t[1].addr, tcp_on_ping, &pc), 0);
    while (!pa || !pc) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(pa, 1);
    assert_int_equal(pc, 1);
    while (gossip_mesh_peers(gossip_host_core(t[1].gh), TOPIC, NULL, 0) < 2 ||
           gossip_mesh_peers(gossip_host_core(t[0].gh), TOPIC, NULL, 0) < 1 ||
           gossip_mesh_peers(gossip_host_core(t[2].gh), TOPIC, NULL, 0) < 1)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(gossip_publish(gossip_host_core(t[0].gh), uv_now(&loop), TOPIC,
                                    (const uint8_t *)"over tcp", 8, NULL, NULL),
                     0);
    gossip_host_kick(t[0].gh);
    while (t[2].n.n_got < 1 || t[1].n.n_got < 1) uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(t[2].n.last_len, 8);
    assert_memory_equal(t[2].n.last, "over tcp", 8);
    /* And back: C publishes, A receives through B. */
    assert_int_equal(gossip_publish(gossip_host_core(t[2].gh), uv_now(&loop), TOPIC,
                                    (const uint8_t *)"reply", 5, NULL, NULL),
                     0);
    gossip_host_kick(t[2].gh);
    while (t[0].n.n_got < 2) uv_run(&loop, UV_RUN_ONCE); /* its own + C's */
    assert_memory_equal(t[0].n.last, "reply", 5);
    /* B goes away: A and C forget it (their only peer) once the connection is gone. */
    gossip_host_free(t[1].gh);
    t[1].gh = NULL;
    host_close(t[1].h);
    t[1].h = NULL;
    while (gossip_mesh_peers(gossip_host_core(t[0].gh), TOPIC, NULL, 0) > 0 ||
           gossip_mesh_peers(gossip_host_core(t[2].gh), TOPIC, NULL, 0) > 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(gossip_peer_score(gossip_host_core(t[0].gh), uv_now(&loop), &t[1].n.id.id) == 0);
    for (int i = 0; i < 3; i++) {
        if (!t[i].h) continue;
        gossip_host_free(t[i].gh);
        t[i].gh = NULL;
        host_close(t[i].h);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    for (int i = 0; i < 3; i++) identity_wipe(&t[i].n.id);
}

/* ---- the C side of tests/net_gossip_interop.test.sh ------------------------------------- */

#define INTEROP_TOPIC "/meshllm/interop/1"

struct interop {
    uv_loop_t loop;
    struct identity id;
    struct host *h;
    struct gossip_host *gh;
    bool got_js;
    int after; /* publishes since theirs arrived */
    int ticks;
    uv_timer_t tick;
};

static void interop_on_msg(void *ud, const struct gossip_msg *m)
{
    struct interop *x = ud;
    char from[PEER_ID_TEXT_CAP];
    if (strcmp(m->topic, INTEROP_TOPIC) != 0 || m->data_len != 7 ||
        memcmp(m->data, "from-js", 7) != 0 || x->got_js)
        return;
    peer_id_to_text(m->from, from, sizeof from);
    printf("c got from-js from %s\n", from);
    fflush(stdout);
    x->got_js = true;
}

/* Every 300 ms: publish "from-c"; stop 4 publishes after theirs arrived (or after 30 s). */
static void interop_tick(uv_timer_t *t)
{
    struct interop *x = t->data;
    x->ticks++;
    gossip_publish(gossip_host_core(x->gh), uv_now(&x->loop), INTEROP_TOPIC,
                   (const uint8_t *)"from-c", 6, NULL, NULL);
    gossip_host_kick(x->gh);
    if (x->got_js) x->after++;
    if (x->after >= 4 || x->ticks > 100) uv_timer_stop(t);
}

static void interop_pinged(void *ctx, int status, uint64_t rtt_us)
{
    (void)ctx;
    printf("c ping status=%d rtt_us=%llu\n", status, (unsigned long long)rtt_us);
    fflush(stdout);
}

/* Dials a js-libp2p GossipSub peer at addr_text (or, if NULL, listens on 127.0.0.1 and waits
 * to be dialed); exit status 0 once its message arrived. */
static int interop_run(const char *addr_text)
{
    struct interop x;
    struct multiaddr js;
    memset(&x, 0, sizeof x);
    if (addr_text && multiaddr_from_text(addr_text, &js) != 0) return 2;
    if (uv_loop_init(&x.loop) != 0 || identity_generate(&x.id) != 0) return 1;
    struct host_config hc = {.identity = &x.id};
    if (host_new(&x.loop, &hc, &x.h) != 0) return 1;
    struct gossip_config gc;
    memset(&gc, 0, sizeof gc);
    gc.id = &x.id;
    randombytes_buf(gc.seed, sizeof gc.seed);
    gc.on_message = interop_on_msg;
    gc.ud = &x;
    if (gossip_host_new(&x.loop, x.h, &gc, &x.gh) != 0) return 1;
    gossip_subscribe(gossip_host_core(x.gh), uv_now(&x.loop), INTEROP_TOPIC);
    gossip_host_kick(x.gh);
    if (addr_text) {
        if (host_ping(x.h, &js, interop_pinged, &x) != 0) return 1;
    } else {
        struct multiaddr lo, me;
        char text[MULTIADDR_TEXT_CAP];
        if (multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo) != 0 || host_listen(x.h, &lo) != 0 ||
            host_listen_addrs(x.h, &me, 1) != 1 || multiaddr_append_p2p(&me, &x.id.id) != 0 ||
            multiaddr_to_text(&me, text, sizeof text) != 0)
            return 1;
        printf("c listening %s\n", text);
        fflush(stdout);
    }
    uv_timer_init(&x.loop, &x.tick);
    x.tick.data = &x;
    uv_timer_start(&x.tick, interop_tick, 300, 300);
    while (uv_is_active((uv_handle_t *)&x.tick)) uv_run(&x.loop, UV_RUN_ONCE);
    printf("c mesh %zu\n", gossip_mesh_peers(gossip_host_core(x.gh), INTEROP_TOPIC, NULL, 0));
    printf("c done %s\n", x.got_js ? "ok" : "without their message");
    gossip_host_free(x.gh);
    host_close(x.h);
    uv_close((uv_handle_t *)&x.tick, NULL);
    uv_run(&x.loop, UV_RUN_DEFAULT);
    uv_loop_close(&x.loop);
    identity_wipe(&x.id);
    return x.got_js ? 0 : 1;
}

/* A flood from one peer keeps the router's state bounded: 20,000 distinct signed messages
 * (the seen cache and message cache stay within their caps), subscriptions to 640 topics
 * from ten identities (the topic table keeps room for our own); an honest message is then
 * still delivered and we can still subscribe to a new topic. */
static void test_gossip_flood_keeps_state_bounded(void **state)
{
    (void)state;
    struct node a, b, h;
    node_init(&a, 1);
    node_init(&b, 2);
    node_init(&h, 3);
    pair_up(&a, &b);
    static uint8_t buf[4096];
    for (uint64_t i = 0; i < 20000; i++) {
        size_t len = signed_rpc(&a.id, 1000 + i, "flood", false, buf, sizeof buf);
        assert_int_equal(gossip_on_rpc(b.g, T(100 + i / 1000), &a.id.id, buf, len), 0);
        if (i % 256 == 0) drain(&b);
    }
    drain(&b);
    assert_int_equal(b.n_got, 20000); /* all valid and new: all delivered */
    struct gossip_stats st;
    gossip_get_stats(b.g, &st);
    assert_true(st.n_seen <= GOSSIP_SEEN_MAX);
    assert_true(st.n_seen_evicted > 0);
    assert_true(st.n_mcache <= GOSSIP_MCACHE_MAX);
    assert_true(st.mcache_bytes <= GOSSIP_MCACHE_BYTES_MAX);
    assert_true(st.n_mcache_evicted > 0);
    /* Ten identities subscribe to 64 (+ 1 refused) topics each. */
    for (int j = 0; j < 10; j++) {
        struct identity sy;
        uint8_t seed[32];
        memset(seed, 0x70 + j, sizeof seed);
        assert_int_equal(identity_from_seed(seed, &sy), 0);
        assert_int_equal(gossip_peer_add(b.g, T(200), &sy.id, false), 0);
        Pubsub__Pb__RPC r = PUBSUB__PB__RPC__INIT;
        Pubsub__Pb__RPC__SubOpts so[GOSSIP_PEER_TOPICS_MAX + 1], *sop[GOSSIP_PEER_TOPICS_MAX + 1];
        char names[GOSSIP_PEER_TOPICS_MAX + 1][32];
        for (int t = 0; t <= GOSSIP_PEER_TOPICS_MAX; t++) {
            pubsub__pb__rpc__sub_opts__init(&so[t]);
            snprintf(names[t], sizeof names[t], "/junk/%d/%d", j, t);
            so[t].has_subscribe = 1;
            so[t].subscribe = 1;
            so[t].topicid = names[t];
            sop[t] = &so[t];
        }
        r.n_subscriptions = GOSSIP_PEER_TOPICS_MAX + 1;
        r.subscriptions = sop;
        size_t len = pubsub__pb__rpc__pack(&r, buf);
        assert_int_equal(gossip_on_rpc(b.g, T(201), &sy.id, buf, len), 0);
    }
    gossip_get_stats(b.g, &st);
    assert_true(st.n_topics <= GOSSIP_TOPICS_MAX - GOSSIP_TOPICS_RESERVED);
    assert_true(st.n_topics_refused > 0);
    assert_true(st.n_peer_topics_refused > 0); /* the 65th of a peer */
    assert_int_equal(gossip_subscribe(b.g, T(202), "/meshllm/new-topic/1"), 0);
    /* The honest peer's message gets through. */
    assert_int_equal(gossip_peer_add(b.g, T(203), &h.id.id, false), 0);
    size_t len = signed_rpc(&h.id, 1, "honest", false, buf, sizeof buf);
    int before = b.n_got;
    assert_int_equal(gossip_on_rpc(b.g, T(204), &h.id.id, buf, len), 0);
    assert_int_equal(b.n_got, before + 1);
    assert_int_equal(b.last_len, 6);
    assert_memory_equal(b.last, "honest", 6);
    drain(&b);
    drain(&a);
    gossip_free(a.g);
    gossip_free(b.g);
    gossip_free(h.g);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--interop-dial") == 0) return interop_run(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--interop-listen") == 0) return interop_run(NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gossip_publish_signed_and_delivered),
        cmocka_unit_test(test_gossip_invalid_signature_rejected_and_penalised),
        cmocka_unit_test(test_gossip_iwant_served_from_mcache),
        cmocka_unit_test(test_gossip_ihave_asks_iwant_and_broken_promises_penalised),
        cmocka_unit_test(test_gossip_graft_during_backoff_is_pruned_and_penalised),
        cmocka_unit_test(test_gossip_fanout_publish_without_subscribing),
        cmocka_unit_test(test_gossip_full_mesh_prune_offers_peer_exchange),
        cmocka_unit_test(test_gossip_ip_colocation_penalty),
        cmocka_unit_test(test_gossip_rejects_malformed_rpc),
        cmocka_unit_test(test_gossip_flood_keeps_state_bounded),
        cmocka_unit_test(test_gossip_sim_mesh_degrees_and_delivery),
        cmocka_unit_test(test_gossip_host_relays_over_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
