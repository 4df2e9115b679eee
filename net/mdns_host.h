/* mdns_host.h - runs the mDNS core (mdns.h) on a libuv UDP socket: IPv4 multicast
 * 224.0.0.251:5353, one interface. Queries every 10 s, answers queries for _p2p._udp.local
 * with our addresses, reports each peer a response names through on_peer.
 *
 * Opening this socket joins a multicast group on a real interface: on development machines it
 * must only run inside a network namespace made for the purpose (tests do that); the node
 * opens it only when asked to use mDNS. IPv6 (ff02::fb) is not done yet.
 * Everything runs on the loop's thread.
 */
#ifndef MESH_NET_MDNS_HOST_H
#define MESH_NET_MDNS_HOST_H

#include "net/mdns.h"

#include <uv.h>

typedef void (*mdns_host_peer_fn)(void *ctx, const struct mdns_peer *p);

struct mdns_host_config {
    struct mdns_config core;
    const char *iface_addr;  /* IPv4 address of the interface to use ("127.0.0.1" in tests);
                                NULL: let the kernel choose */
    mdns_host_peer_fn on_peer;
    void *ctx;
};

struct mdns_host;

/* Binds 0.0.0.0:5353 (address reuse on), joins the group, starts querying. Returns 0,
 * MESH_EINVAL, MESH_ENOMEM or MESH_EIO (socket errors). */
int mdns_host_new(uv_loop_t *loop, const struct mdns_host_config *cfg, struct mdns_host **out);
/* Addresses to announce (see mdns_set_addrs). */
int mdns_host_set_addrs(struct mdns_host *mh, const struct multiaddr *addrs, size_t n);
/* Sends a query now (e.g. after a network change). */
void mdns_host_query(struct mdns_host *mh);
/* Closes the socket and frees once libuv has closed the handles (keep running the loop).
 * NULL is fine. */
void mdns_host_free(struct mdns_host *mh);

#endif
