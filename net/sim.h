/* sim.h - in-process network simulation with a virtual clock for the DHT and GossipSub cores.
 *
 * Plays the part the libuv host plays in a real node: it delivers each core's outgoing frames
 * to the destination core after a random latency, calls the cores' periodic functions at
 * their deadlines, and tells the cores about connections. No sockets, no threads, no wall
 * clock: a run with a given seed is exactly reproducible. Nodes can go offline (frames to and
 * from them are dropped, so requests time out) and new nodes can join, to model churn.
 * Used by tests/test_dht.c, tests/test_gossip.c and bench/sim_dht.c; not by the node.
 * Thread rule: one thread per struct sim.
 */
#ifndef MESH_NET_SIM_H
#define MESH_NET_SIM_H

#include "net/dht.h"
#include "net/gossip.h"
#include "net/identity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sim_config {
    size_t n_max;               /* node capacity (initial nodes are added with sim_node_add) */
    uint64_t seed;              /* all randomness: identities, latencies, core seeds */
    uint32_t latency_min_ms;    /* one-way latency, uniform in [min, max]; 0/0: 10..50 ms */
    uint32_t latency_max_ms;
    bool with_dht;
    bool dht_client_mode;       /* nodes are DHT clients (not servers) when true */
    const char *dht_protocol;
    uint64_t dht_request_timeout_ms; /* 0: 2 s */
    bool with_gossip;
    const struct gossip_params *gossip_params; /* NULL: spec defaults */
    /* Called for every message a node's gossip core delivers to its application. */
    void (*on_gossip_message)(void *ud, size_t node, const struct gossip_msg *m);
    void *ud;
};

struct sim_stats {
    uint64_t n_frames;      /* frames delivered */
    uint64_t n_bytes;       /* bytes delivered */
    uint64_t n_dropped;     /* frames to or from offline nodes */
};

struct sim;

/* Creates an empty simulation. Returns 0, MESH_EINVAL or MESH_ENOMEM. */
int sim_new(const struct sim_config *cfg, struct sim **out);
/* Frees every node and pending event; NULL is fine. */
void sim_free(struct sim *s);

/* Adds an online node with a fresh identity (derived from the seed) and its cores.
 * Returns 0 with its index, MESH_EFULL or MESH_ENOMEM. */
int sim_node_add(struct sim *s, size_t *idx);
size_t sim_n_nodes(const struct sim *s);
/* Takes a node off the network (it keeps its state) or brings it back. */
void sim_node_set_online(struct sim *s, size_t i, bool online);
bool sim_node_online(const struct sim *s, size_t i);
const struct identity *sim_node_identity(const struct sim *s, size_t i);
struct dht *sim_node_dht(struct sim *s, size_t i);
struct gossip *sim_node_gossip(struct sim *s, size_t i);
/* Index of the node with this peer ID, or MESH_ENOTFOUND. */
int sim_node_find(const struct sim *s, const struct peer_id *id, size_t *idx);
/* After calling into a node's core directly (start a query, publish...), hand its output to
 * the network and re-arm its timer. */
void sim_node_poke(struct sim *s, size_t i);

/* Connects two nodes' gossip cores (i dials j) if both are online. */
int sim_gossip_connect(struct sim *s, size_t i, size_t j);
/* Drops the gossip connection between i and j on both sides. */
void sim_gossip_disconnect(struct sim *s, size_t i, size_t j);

uint64_t sim_now(const struct sim *s);
/* Processes the next event. Returns 0, or MESH_ENOTFOUND when nothing is scheduled. */
int sim_step(struct sim *s);
/* Processes events until the virtual clock reaches t_ms (then sets it to t_ms). */
void sim_run_until(struct sim *s, uint64_t t_ms);
/* Runs until the DHT query qid of node i has finished or the clock passes limit_ms. Returns
 * its dht_query_status. */
int sim_dht_wait(struct sim *s, size_t i, uint64_t qid, uint64_t limit_ms);
void sim_stats(const struct sim *s, struct sim_stats *st);

#endif
