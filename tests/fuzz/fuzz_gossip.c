/* fuzz_gossip.c - fuzz target: GossipSub RPC decoding and handling (net/gossip).
 *
 * The input is one RPC body (no length prefix). It goes through gossip_rpc_check, then to a
 * router (subscribed to two topics, one message published, two peers connected) as an RPC
 * from a peer, twice (so duplicates and repeated control are exercised), then heartbeats run
 * and every output frame is decoded again: what we send must pass our own check.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/gossip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct identity g_ids[3];
static int g_ready;

static void drain_checked(struct gossip *g)
{
    struct gossip_output o;
    while (gossip_next_output(g, &o) == 0) {
        const uint8_t *body;
        size_t bl, used;
        if (gossip_frame_split(o.frame, o.frame_len, &body, &bl, &used) != 0) abort();
        if (gossip_rpc_check(body, bl) != 0) abort();
        free(o.frame);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_ready) {
        for (int i = 0; i < 3; i++) {
            uint8_t seed[32];
            memset(seed, 0x40 + i, sizeof seed);
            identity_from_seed(seed, &g_ids[i]);
        }
        g_ready = 1;
    }
    (void)gossip_rpc_check(data, size);
    struct gossip_config c;
    memset(&c, 0, sizeof c);
    c.id = &g_ids[0];
    struct gossip *g;
    if (gossip_new(&c, &g) != 0) abort();
    gossip_peer_add(g, 0, &g_ids[1].id, true);
    gossip_peer_add(g, 0, &g_ids[2].id, false);
    gossip_subscribe(g, 0, "a");
    gossip_subscribe(g, 0, "/meshllm/announce/1");
    gossip_periodic(g, 0);
    gossip_publish(g, 1, "a", (const uint8_t *)"x", 1, NULL, NULL);
    drain_checked(g);
    (void)gossip_on_rpc(g, 10, &g_ids[1].id, data, size);
    drain_checked(g);
    (void)gossip_on_rpc(g, 20, &g_ids[2].id, data, size);
    drain_checked(g);
    for (uint64_t t = 1000; t <= 8000; t += 1000) {
        gossip_periodic(g, t);
        drain_checked(g);
    }
    (void)gossip_peer_score(g, 9000, &g_ids[1].id);
    gossip_peer_remove(g, 9000, &g_ids[1].id);
    gossip_free(g);
    return 0;
}
