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
 * 5 s. GossipSub runs with the owner's hooks; what is published, and to whom streams are
 * admitted, is the owner's policy (node/mesh.c): this file decides nothing about models.
 * "how" a peer was found: "bootstrap" (named by the user), "mdns", "dht" (we dialed it for
 * a DHT lookup, or it is only in the routing table) or "inbound" (it dialed us first).
 */
#ifndef MESH_NET_P2PNODE_H
#define MESH_NET_P2PNODE_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include "net/dht.h"
#include "net/gossip.h"
#include "net/host.h"

#include <uv.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define P2PNODE_MAX_LISTEN 8
#define P2PNODE_MAX_BOOTSTRAP 16
/* Peers remembered in the table. When it is full a newcomer takes the place of the least
 * useful entry that is not protected: disconnected before connected, then inbound strangers
 * that never identified before peers we found or that are in the DHT table, the one seen
 * longest ago first (docs/PROTOCOL.md "Resource limits: tables"). */
#define P2PNODE_MAX_PEERS 256

struct p2pnode;

struct p2pnode_config {
    const char *data_dir;                /* identity.key lives here (created on first use) */
    const struct multiaddr *listen;      /* /ip4|ip6/A/tcp/P */
    size_t n_listen;                     /* 1..P2PNODE_MAX_LISTEN */
    const struct multiaddr *bootstrap;   /* each ends in /p2p/ID */
    size_t n_bootstrap;                  /* 0..P2PNODE_MAX_BOOTSTRAP */
    bool use_mdns;                       /* opens UDP 5353 in 224.0.0.251 on the default iface */
    const char *dht_protocol;            /* NULL: DHT_PROTOCOL_MESHLLM */
    bool use_gossip;                     /* run GossipSub (topics are the owner's) */
    /* Optional GossipSub hooks (gossip.h), run on the loop thread with gossip_ud. */
    int (*gossip_validate)(void *ud, const struct gossip_msg *m);
    void (*gossip_on_message)(void *ud, const struct gossip_msg *m);
    double (*gossip_app_score)(void *ud, const struct peer_id *peer);
    void *gossip_ud;
    /* Optional: runs on the calling thread inside p2pnode_start once the host, DHT and
     * gossip exist and before the loop thread starts, so protocol handlers and the
     * admission gate are in place before any peer can reach them. Nonzero fails start. */
    int (*setup)(void *ctx, struct p2pnode *n);
    void *setup_ctx;
};

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

/* The libp2p parts, for the loop thread only (inside setup or a p2pnode_call function).
 * p2pnode_host returns NULL once the node is closing. */
struct host;
struct p2p;
struct gossip_host;
struct identity;
struct host *p2pnode_host(struct p2pnode *n);
struct p2p *p2pnode_p2p(struct p2pnode *n);
struct gossip_host *p2pnode_gossip(struct p2pnode *n); /* NULL without gossip */
const struct identity *p2pnode_identity(const struct p2pnode *n);
uint64_t p2pnode_now_ms(struct p2pnode *n);              /* the loop's clock */
uv_loop_t *p2pnode_loop(struct p2pnode *n);               /* for the owner's timers */

/* The loop's command queue: runs fn(n, arg) on the loop thread, exactly once: soon, or
 * during p2pnode_stop (then p2pnode_host(n) is NULL: just release arg). Any thread.
 * Returns 0 or MESH_ENOMEM / MESH_ECLOSED (stopped: fn is not called). */
typedef void (*p2pnode_call_fn)(struct p2pnode *n, void *arg);
int p2pnode_call(struct p2pnode *n, p2pnode_call_fn fn, void *arg);

/* Marks (or unmarks) a peer as protected: its entry in the peer table is never given up for
 * a newcomer (node/ protects admitted mesh members). Protecting a peer not yet in the table
 * adds it. Any thread. Returns 0, MESH_EINVAL (our own id) or MESH_EFULL (every entry is
 * protected already). */
int p2pnode_peer_protect(struct p2pnode *n, const struct peer_id *id, bool is_protected);

/* Peer table counters (docs in net/README.md). */
struct p2pnode_stats {
    size_t n_peers;                  /* entries now, <= P2PNODE_MAX_PEERS */
    size_t n_protected;              /* of which protected */
    uint64_t n_peer_table_evicted;   /* entries given up for a newcomer */
    uint64_t n_peer_table_refused;   /* newcomers not listed: every entry was protected */
    /* The host's, the DHT's and GossipSub's counters as of the last table refresh (every
     * PN_TICK_MS, 1 s), so any thread can read them (/metrics). */
    struct host_stats host;
    struct dht_stats dht;
    struct gossip_stats gossip;      /* zero without gossip */
};
/* Copies the counters; any thread. */
void p2pnode_stats(struct p2pnode *n, struct p2pnode_stats *st);

/* The node and its peers as a malloc'd JSON object (docs/API.md, GET /node/peers); any
 * thread. NULL on out of memory. */
char *p2pnode_peers_json(struct p2pnode *n);

#endif
