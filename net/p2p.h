/* p2p.h - the libuv glue between the host (net/host.h) and the Kademlia DHT core
 * (net/dht.h): DHT requests travel on host streams, identified peers feed the routing table,
 * a uv timer drives dht_periodic. GossipSub and mDNS have their own glue (net/gossip_host.h,
 * net/mdns_host.h).
 *
 * Wire use (libp2p/specs kad-dht): one uvarint-length-prefixed request per outgoing stream,
 * one response read back, then the stream is closed; inbound streams may carry several
 * requests. Peers enter the routing table when identify says they serve the DHT protocol.
 * Every call and callback runs on the loop's thread. Query callbacks follow dht.h's rule:
 * read the results, release the query, but start no other query from inside.
 */
#ifndef MESH_NET_P2P_H
#define MESH_NET_P2P_H

#include "net/dht.h"
#include "net/host.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct p2p_config {
    struct host *host;        /* borrowed; must outlive the p2p object */
    const char *dht_protocol; /* DHT_PROTOCOL_IPFS or DHT_PROTOCOL_MESHLLM; NULL: meshllm's */
    bool dht_server;          /* answer DHT requests (server mode) */
    uint8_t seed[32];         /* DHT randomness; zero: random */
};

struct p2p;

/* A finished query: read it with dht_query_* on d, then dht_query_release(d, qid). May run
 * inside the call that started the query when it ends at once (e.g. no peers). */
typedef void (*p2p_query_fn)(void *ctx, struct dht *d, uint64_t qid);

/* Creates the glue on loop: registers the DHT protocol handler and a host peer listener
 * (events are also forwarded to p2p_set_peer_callback's). Returns 0, MESH_EINVAL,
 * MESH_ENOMEM, MESH_EFULL. */
int p2p_new(uv_loop_t *loop, const struct p2p_config *cfg, struct p2p **out);
/* Stops the timer and frees once libuv closed it and every request stream has ended (keep
 * running the loop). Close the host first, then the p2p, in the same loop turn. Callbacks of
 * unfinished queries are not called after this. */
void p2p_close(struct p2p *p);

struct dht *p2p_dht(struct p2p *p);
void p2p_set_peer_callback(struct p2p *p, host_peer_fn fn, void *ctx);

/* DHT queries (see dht.h for their meaning); cb runs once when the query ends. Return 0 or
 * the dht_* start error. */
int p2p_dht_bootstrap(struct p2p *p, const struct dht_peer *peers, size_t n, p2p_query_fn cb,
                      void *ctx);
int p2p_dht_find_node(struct p2p *p, const uint8_t *key, size_t key_len, p2p_query_fn cb,
                      void *ctx);
int p2p_dht_put_value(struct p2p *p, const uint8_t *key, size_t key_len, const uint8_t *val,
                      size_t val_len, p2p_query_fn cb, void *ctx);
int p2p_dht_get_value(struct p2p *p, const uint8_t *key, size_t key_len, size_t quorum,
                      p2p_query_fn cb, void *ctx);
/* Announces this node (its host listen addresses) as a provider of key. */
int p2p_dht_provide(struct p2p *p, const uint8_t *key, size_t key_len, p2p_query_fn cb,
                    void *ctx);
int p2p_dht_get_providers(struct p2p *p, const uint8_t *key, size_t key_len, size_t n_max,
                          p2p_query_fn cb, void *ctx);

/* Builds a dht_peer from a multiaddr with /p2p (for bootstrap lists). */
int p2p_dht_peer_from_addr(const struct multiaddr *addr, struct dht_peer *out);

#endif
