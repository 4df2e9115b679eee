/* gossip_host.h - runs the GossipSub core (gossip.h) on a libp2p host (host.h): libuv glue.
 *
 * For every identified peer that lists /meshsub/1.1.0 (and for every peer that opens such a
 * stream to us) it adds the peer to the router and opens our outbound /meshsub/1.1.0 stream;
 * RPCs read from a peer's inbound stream go to gossip_on_rpc(); frames the router emits are
 * written on the outbound stream (queued until it is open, at most 64 frames); the heartbeat
 * runs on a libuv timer. It hears of peers through its own host peer listener; a peer counts
 * as outbound (for the Dout quota) when we dialed its connection. Everything runs on the
 * loop's thread.
 */
#ifndef MESH_NET_GOSSIP_HOST_H
#define MESH_NET_GOSSIP_HOST_H

#include "net/gossip.h"
#include "net/host.h"

#include <uv.h>

struct gossip_host;

/* Creates the router from cfg (cfg->id must be the host's identity), serves
 * GOSSIP_PROTOCOL_ID on h and adds a peer listener to h. Returns 0, MESH_EINVAL, MESH_ENOMEM
 * or the host's error (MESH_EFULL: no listener slot left). */
int gossip_host_new(uv_loop_t *loop, struct host *h, const struct gossip_config *cfg,
                    struct gossip_host **out);
/* Detaches and frees; open streams are left to the host (close it next) and only release
 * their contexts when they end. Keep running the loop so the timer closes. NULL is fine. */
void gossip_host_free(struct gossip_host *gh);

/* The router, to subscribe and publish; call gossip_host_kick() afterwards. */
struct gossip *gossip_host_core(struct gossip_host *gh);
void gossip_host_kick(struct gossip_host *gh);

/* Peers the router may talk to: fn (loop thread) is asked before a peer joins; false keeps
 * it out (its inbound streams are reset). gossip_host_recheck asks again for one peer (it
 * joins if it now passes and speaks GossipSub, or leaves if it no longer does). */
void gossip_host_set_filter(struct gossip_host *gh, bool (*fn)(void *ctx, const struct peer_id *),
                            void *ctx);
void gossip_host_recheck(struct gossip_host *gh, const struct peer_id *peer);

#endif
