/* test_blobsched.c - node/blobsched (the piece scheduler of a mesh pull, I/O-free) and the
 * Blob records of announcements (node/peers: encode, checks on decode, providers by name
 * and content ID). A simulated pull: providers of different speeds on a virtual clock, one
 * of them a liar; every piece ends up done exactly once, the faster provider takes more,
 * the liar's pieces are asked elsewhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/identity.h"
#include "node/blobsched.h"
#include "node/peers.h"

#include <stdlib.h>
#include <string.h>

static void test_blobsched_depth_and_order(void **state)
{
    (void)state;
    struct blobsched s;
    assert_int_equal(blobsched_init(&s, 0, 4), MESH_EINVAL);
    assert_int_equal(blobsched_init(&s, 10, 4), 0);
    int a = blobsched_add_peer(&s), b = blobsched_add_peer(&s);
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    blobsched_mark_done(&s, 1); /* resumed */
    /* lowest missing first, at most depth in flight per provider */
    assert_int_equal(blobsched_next(&s, a), 0);
    assert_int_equal(blobsched_next(&s, a), 2);
    assert_int_equal(blobsched_next(&s, a), 3);
    assert_int_equal(blobsched_next(&s, a), 4);
    assert_int_equal(blobsched_next(&s, a), -1);
    assert_int_equal(blobsched_next(&s, b), 5);
    /* an answer nobody asked for, or from the wrong provider, is refused */
    assert_int_equal(blobsched_done(&s, b, 0, true), MESH_EINVAL);
    assert_int_equal(blobsched_done(&s, a, 7, true), MESH_EINVAL);
    assert_int_equal(blobsched_done(&s, a, 0, true), 0);
    assert_int_equal(blobsched_done(&s, a, 0, true), MESH_EINVAL); /* twice */
    assert_int_equal(blobsched_next(&s, a), 6);
    /* a bad piece: back to the queue (asked first again), the provider dropped */
    assert_int_equal(blobsched_done(&s, b, 5, false), 0);
    assert_true(s.peers[b].is_dropped);
    assert_int_equal(blobsched_next(&s, b), -1);
    assert_int_equal(blobsched_next(&s, a), -1); /* a has 4 in flight: 2, 3, 4, 6 */
    assert_int_equal(blobsched_done(&s, a, 2, true), 0);
    assert_int_equal(blobsched_next(&s, a), 5);
    /* a drop gives every piece in flight back */
    blobsched_drop(&s, a);
    assert_int_equal(blobsched_n_live(&s), 0);
    for (uint32_t i = 3; i <= 6; i++) assert_int_equal(s.state[i], BLOBSCHED_MISSING);
    assert_int_equal(s.n_done, 3);
    assert_false(blobsched_complete(&s));
    blobsched_free(&s);
}

/* Providers send one piece per cost[p] virtual ms each (their bandwidth), in request
 * order; peer 2 lies on every piece. */
static void test_blobsched_simulated_pull(void **state)
{
    (void)state;
    enum { N = 200, P = 3 };
    const int cost[P] = {1, 3, 2};
    int busy_until[P] = {0};
    struct blobsched s;
    assert_int_equal(blobsched_init(&s, N, BLOBSCHED_DEPTH), 0);
    for (int p = 0; p < P; p++) assert_int_equal(blobsched_add_peer(&s), p);
    struct { int64_t piece; int due; } q[P][BLOBSCHED_DEPTH];
    int nq[P] = {0};
    int writes[N] = {0};
    for (int t = 0; t < 10000 && !blobsched_complete(&s); t++) {
        for (int p = 0; p < P; p++) {
            int64_t i;
            while (nq[p] < BLOBSCHED_DEPTH && (i = blobsched_next(&s, p)) >= 0) {
                busy_until[p] = (busy_until[p] > t ? busy_until[p] : t) + cost[p];
                q[p][nq[p]].piece = i;
                q[p][nq[p]++].due = busy_until[p];
            }
            if (nq[p] && q[p][0].due <= t) {
                int64_t i0 = q[p][0].piece;
                memmove(q[p], q[p] + 1, (size_t)(--nq[p]) * sizeof q[p][0]);
                bool ok = p != 2;
                int rc = blobsched_done(&s, p, (uint32_t)i0, ok);
                if (rc == 0 && ok) writes[i0]++;
                if (!ok) nq[p] = 0; /* dropped: its other answers are never used */
            }
        }
    }
    assert_true(blobsched_complete(&s));
    for (int i = 0; i < N; i++) assert_int_equal(writes[i], 1); /* each piece once */
    assert_true(s.peers[2].is_dropped);
    assert_int_equal(s.peers[2].n_done, 0);
    assert_int_equal(s.peers[2].n_bad, 1);
    /* the faster provider took more: 3 times the bandwidth */
    assert_true(s.peers[0].n_done > 2 * s.peers[1].n_done);
    assert_int_equal(s.peers[0].n_done + s.peers[1].n_done, N);
    blobsched_free(&s);
}

static struct peer_id new_id(void)
{
    struct identity idn;
    assert_int_equal(identity_generate(&idn), 0);
    struct peer_id p = idn.id;
    identity_wipe(&idn);
    return p;
}

static void announce_blobs(struct peers *t, const struct peer_id *id, uint64_t seq,
                           const struct peers_blob *b, int n)
{
    struct multiaddr a;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &a), 0);
    assert_int_equal(multiaddr_append_p2p(&a, id), 0);
    uint8_t *rec;
    size_t len;
    struct peers_self self = {0};
    assert_int_equal(peers_announce_encode_self(seq, 30, NULL, 0, &a, 1, &self, NULL, 0, b, n,
                                                &rec, &len), 0);
    assert_int_equal(peers_on_announce(t, id, rec, len, 1000), 0);
    free(rec);
}

static void test_blobsched_announced_providers(void **state)
{
    (void)state;
    struct peers *t;
    assert_int_equal(peers_new(&t), 0);
    struct peer_id a = new_id(), b = new_id(), c = new_id();
    struct peers_blob good = {.name = "m:latest", .size = 5 << 20, .piece_len = 1 << 20};
    memset(good.content_id, 'a', 64);
    struct peers_blob bad[4] = {good, good, good, good};
    bad[0].piece_len = 1000;             /* not a power of two */
    bad[1].content_id[3] = 'G';          /* not hex */
    bad[2].size = 0;
    strcpy(bad[3].name, "has space");
    peers_set_member(t, &a, true, false);
    peers_set_member(t, &b, true, false);
    announce_blobs(t, &a, 1, &good, 1);
    announce_blobs(t, &b, 1, bad, 4);
    announce_blobs(t, &c, 1, &good, 1); /* not a member */
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int n = peers_snapshot(t, es, PEERS_MAX);
    for (int i = 0; i < n; i++) {
        if (peer_id_equal(&es[i].id, &a)) {
            assert_int_equal(es[i].n_blobs, 1);
            assert_string_equal(es[i].blobs[0].name, "m:latest");
            assert_int_equal(es[i].blobs[0].size, 5 << 20);
        }
        if (peer_id_equal(&es[i].id, &b)) assert_int_equal(es[i].n_blobs, 0);
    }
    free(es);
    struct peers_blob found;
    struct peers_pick pk[4];
    assert_int_equal(peers_blob_providers(t, "m", NULL, 0, 2000, &found, pk, 4), 1);
    assert_true(peer_id_equal(&pk[0].id, &a));
    assert_string_equal(found.content_id, good.content_id);
    assert_int_equal(peers_blob_providers(t, good.content_id, NULL, 0, 2000, &found, pk, 4), 1);
    assert_int_equal(peers_blob_providers(t, "other", NULL, 0, 2000, &found, pk, 4), 0);
    assert_int_equal(peers_blob_providers(t, "m", &a, 1, 2000, &found, pk, 4), 0);
    /* expired announcements provide nothing */
    assert_int_equal(peers_blob_providers(t, "m", NULL, 0, 1000 + 31000, &found, pk, 4), 0);
    /* a second member with it, lying once: ranked after the honest one */
    peers_set_member(t, &c, true, false);
    announce_blobs(t, &c, 2, &good, 1);
    peers_report(t, &a, PEERS_LIE);
    assert_int_equal(peers_blob_providers(t, "m:latest", NULL, 0, 2000, &found, pk, 4), 2);
    assert_true(peer_id_equal(&pk[0].id, &c));
    peers_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blobsched_depth_and_order),
        cmocka_unit_test(test_blobsched_simulated_pull),
        cmocka_unit_test(test_blobsched_announced_providers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
