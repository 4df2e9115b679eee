/* dht_host.h - runs the Kademlia core (dht.h) on a libp2p host (host.h): the libuv glue.
 *
 * What it does for the core: serves the DHT protocol id (server mode only), one request per
 * inbound message, each answer written back on the same stream; opens a stream per outgoing
 * request (to the peer's first known address, else its current connection), writes the request,
 * reads one response; runs dht_periodic() on a libuv timer. What it leaves to its owner:
 * the host's peer callback (a host has only one) - forward its events to
 * dht_host_on_peer_event(), which tells the core about identified peers and whether they serve
 * the DHT protocol. Everything runs on the loop's thread.
 */
#ifndef MESH_NET_DHT_HOST_H
#define MESH_NET_DHT_HOST_H

#include "net/dht.h"
#include "net/host.h"

#include <uv.h>

struct dht_host;

/* Creates the core from cfg (cfg->self must be the host's peer ID) and attaches it to h.
 * Returns 0, MESH_EINVAL, MESH_ENOMEM or the host's error registering the protocol. */
int dht_host_new(uv_loop_t *loop, struct host *h, const struct dht_config *cfg,
                 struct dht_host **out);
/* Detaches and frees (requests in flight are abandoned; their streams finish on their own).
 * The owner must close the timer's loop iteration: call before host_close, then keep running
 * the loop. NULL is fine. */
void dht_host_free(struct dht_host *dh);

/* The core, to start queries (dht_find_node, dht_put_value, ...). After calling into it, call
 * dht_host_kick() so its requests go out and its timer is re-armed. */
struct dht *dht_host_core(struct dht_host *dh);
void dht_host_kick(struct dht_host *dh);

/* Forward the host's peer events here. */
void dht_host_on_peer_event(struct dht_host *dh, enum host_peer_event ev,
                            const struct host_peer_info *p);

#endif
