/* p2pnode.h - a whole libp2p node for `meshllm serve --p2p`: the host (host.h) with the
 * DHT (p2p.h), GossipSub (gossip_host.h) and mDNS (mdns_host.h) on one libuv loop that runs
 * in a thread of its own, plus a table of the peers it has met (how it found them, their
 * addresses, protocols and ping latency) that any thread can read as JSON.
 *
 * Use: p2pnode_start(&cfg, &n, err, cap) -> p2pnode_peer_id / p2pnode_listen_addrs (print
 * them) -> p2pnode_peers_json from any thread (the HTTP server) -> p2pnode_stop(n).
 *
 * Discovery: every --bootstrap peer (its address must end in /p2p/ID) seeds a DHT bootstrap
 * (a lookup of our own ID), repeated after 1, 5, 15 s and then every 60 s; peers mDNS reports
 * are dialed (a ping, which also measures the latency); every connected peer is pinged every
 * 5 s. With gossip on, the node publishes "meshllm/1 <peer id>" on P2PNODE_ANNOUNCE_TOPIC after
 * 2 and 5 s, then every 30 s, and counts the announcements of others.
 * "how" a peer was found: "bootstrap" (named by the user), "mdns", "dht" (we dialed it for
 * a DHT lookup, or it is only in the routing table) or "inbound" (it dialed us first).
 */
#ifndef MESH_NET_P2PNODE_H
#define MESH_NET_P2PNODE_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>

#define P2PNODE_MAX_LISTEN 8
#define P2PNODE_MAX_BOOTSTRAP 16
#define P2PNODE_MAX_PEERS 256         /* peers remembered in the table */
#define P2PNODE_ANNOUNCE_TOPIC "/meshllm/announce/1"

struct p2pnode_config {
    const char *data_dir;                /* identity.key lives here (created on first use) */
    const struct multiaddr *listen;      /* /ip4|ip6/A/tcp/P */
    size_t n_listen;                     /* 1..P2PNODE_MAX_LISTEN */
    const struct multiaddr *bootstrap;   /* each ends in /p2p/ID */
    size_t n_bootstrap;                  /* 0..P2PNODE_MAX_BOOTSTRAP */
    bool use_mdns;                       /* opens UDP 5353 in 224.0.0.251 on the default iface */
    const char *dht_protocol;            /* NULL: DHT_PROTOCOL_MESHLLM */
    bool use_gossip;                     /* join P2PNODE_ANNOUNCE_TOPIC */
};

struct p2pnode;

/* Loads the identity, listens, starts the DHT, gossip and mDNS, then the loop thread.
 * Returns 0 or a MESH_E* code with a sentence in err. */
int p2pnode_start(const struct p2pnode_config *cfg, struct p2pnode **out, char *err,
                  size_t err_cap);
/* Stops the loop thread, closes every connection and frees n. NULL is fine. */
void p2pnode_stop(struct p2pnode *n);

/* Fixed after start; any thread. */
const struct peer_id *p2pnode_peer_id(const struct p2pnode *n);
/* Listen addresses with the port resolved and an unspecified address (0.0.0.0, ::) replaced
 * by the machine's interface addresses, each ending in /p2p/<our id>; returns how many. */
size_t p2pnode_listen_addrs(const struct p2pnode *n, struct multiaddr *out, size_t cap);

/* The node and its peers as a malloc'd JSON object (docs/API.md, GET /node/peers); any
 * thread. NULL on out of memory. */
char *p2pnode_peers_json(struct p2pnode *n);

#endif
