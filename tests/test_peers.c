/* test_peers.c - node/peers: announcements (seq, TTL, malformed, foreign addresses),
 * membership, ranking by RTT and load, exclusion, reputation, and eviction of strangers
 * before members when the table is full. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/identity.h"
#include "node/peers.h"

#include <stdlib.h>
#include <string.h>

/* An announcement of one model "m" by id, with n_queued waiting, its own address. */
static void announce(struct peers *t, const struct peer_id *id, uint64_t seq, int n_queued,
                     uint64_t now, int want_rc)
{
    struct peers_model pm;
    memset(&pm, 0, sizeof pm);
    strcpy(pm.name, "m");
    pm.n_slots = 4;
    pm.n_queued = n_queued;
    struct multiaddr a;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &a), 0);
    assert_int_equal(multiaddr_append_p2p(&a, id), 0);
    uint8_t *rec;
    size_t len;
    assert_int_equal(peers_announce_encode(seq, 30, &pm, 1, &a, 1, 0, NULL, 0, &rec, &len), 0);
    assert_int_equal(peers_on_announce(t, id, rec, len, now), want_rc);
    free(rec);
}

static struct peer_id new_id(void)
{
    struct identity idn;
    assert_int_equal(identity_generate(&idn), 0);
    struct peer_id p = idn.id;
    identity_wipe(&idn);
    return p;
}

static void test_peers_announce_rank_and_expiry(void **state)
{
    (void)state;
    struct peers *t;
    assert_int_equal(peers_new(&t), 0);
    struct peer_id a = new_id(), b = new_id(), c = new_id();
    announce(t, &a, 10, 0, 1000, 0);
    announce(t, &b, 10, 0, 1000, 0);
    announce(t, &c, 10, 0, 1000, 0);
    announce(t, &a, 10, 0, 1000, MESH_EAGAIN); /* same seq: ignored */
    assert_int_equal(peers_on_announce(t, &a, (const uint8_t *)"\xff\xff\xff", 3, 1000), MESH_EPROTO);
    struct peers_pick p[4];
    /* Only members are candidates. */
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, NULL, 0, 1000, p, 4), 0);
    peers_set_member(t, &a, true, false);
    peers_set_member(t, &b, true, true);
    peers_set_rtt(t, &a, 50000);
    peers_set_rtt(t, &b, 5000);
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, NULL, 0, 1000, p, 4), 2);
    assert_true(peer_id_equal(&p[0].id, &b)); /* 5 ms beats 50 ms */
    assert_int_equal(peers_rank(t, "nope", false, NULL, 0, NULL, 0, 1000, p, 4), 0);
    /* own only: b */
    assert_int_equal(peers_rank(t, "m", true, NULL, 0, NULL, 0, 1000, p, 4), 1);
    assert_true(peer_id_equal(&p[0].id, &b));
    /* A queue at b (newer record) makes a the better choice; excluding a leaves b. */
    announce(t, &b, 11, 4, 1000, 0);
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, NULL, 0, 1000, p, 4), 2);
    assert_true(peer_id_equal(&p[0].id, &a));
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, &a, 1, 1000, p, 4), 1);
    assert_true(peer_id_equal(&p[0].id, &b));
    /* Failures count against a peer. */
    for (int i = 0; i < 10; i++) peers_report(t, &a, PEERS_FAIL);
    peers_report(t, &a, PEERS_LIE);
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, NULL, 0, 1000, p, 4), 2);
    assert_true(peer_id_equal(&p[0].id, &b));
    /* 30 s TTL: gone at 31 s. */
    assert_int_equal(peers_rank(t, "m", false, NULL, 0, NULL, 0, 1000 + 31000, p, 4), 0);
    peers_free(t);
}

static void test_peers_full_table_evicts_strangers_first(void **state)
{
    (void)state;
    struct peers *t;
    assert_int_equal(peers_new(&t), 0);
    struct peer_id member = new_id();
    peers_set_member(t, &member, true, false);
    for (int i = 0; i < PEERS_MAX + 40; i++) {
        struct peer_id s = new_id();
        announce(t, &s, 1, 0, (uint64_t)(2000 + i), 0);
    }
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int n = peers_snapshot(t, es, PEERS_MAX);
    assert_int_equal(n, PEERS_MAX);
    bool kept = false;
    for (int i = 0; i < n; i++) kept |= peer_id_equal(&es[i].id, &member);
    assert_true(kept);
    free(es);
    peers_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peers_announce_rank_and_expiry),
        cmocka_unit_test(test_peers_full_table_evicts_strangers_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
