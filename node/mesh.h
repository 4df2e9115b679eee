/* mesh.h - this node in its mesh: admission, announcements, the peer table, the infer server.
 *
 * mesh_start assembles the policy on top of the libp2p node (net/p2pnode.h):
 * - Admission (node/member.h): when this node belongs to a mesh, every protocol but
 *   identify, ping and /meshllm/member/1 is parked by the host's gate until the peer has
 *   shown a valid membership certificate on /meshllm/member/1, and refused if it has not
 *   within MESH_HELLO_TIMEOUT_MS; GossipSub admits only members (gossip_host filter) and
 *   accepts only members' messages. The DHT speaks /meshllm/kad/1.0.0/<mesh id>, so two
 *   meshes never mix. A node in no mesh admits nobody and delegates nothing.
 * - Announcements: every MESH_ANNOUNCE_MS, and within a second of a change in what this
 *   node offers, a record (net/proto/announce.proto) on /meshllm/announce/1/<mesh id>.
 * - The peer table (node/peers.h), fed by announcements, pings and the router's outcomes,
 *   persisted in the node's store so a restart knows its peers.
 * - The /meshllm/infer/1 server (node/infer.h) over this node's models.
 * - The /meshllm/blob/1 provider (node/blob.h) over the model store, whose files each
 *   announcement lists (Blob: name, content ID, size, piece length).
 * Thread rule: mesh_start/mesh_stop from the main thread; the rest from any thread.
 */
#ifndef MESH_NODE_MESH_H
#define MESH_NODE_MESH_H

#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "node/peers.h"
#include "node/registry.h"

#include <stdbool.h>
#include <stddef.h>

#define MESH_ANNOUNCE_MS 10000      /* a record every 10 s ... */
#define MESH_ANNOUNCE_TTL_S 30      /* ... lives 3 periods, so one lost message costs nothing */
#define MESH_HELLO_TIMEOUT_MS 5000  /* a peer that shows no certificate by then is refused */
#define MESH_PING_MS 5000
#define MESH_JOIN_TIMEOUT_MS 10000  /* dialing the inviter and its answer */

struct mesh_config {
    const char *data_dir;                /* identity, membership, store */
    struct registry *reg;                /* this node's models (may hold none) */
    const struct multiaddr *listen;
    size_t n_listen;
    const struct multiaddr *bootstrap;
    size_t n_bootstrap;
    bool use_mdns;
    const char *join_token;              /* serve --join: join this mesh first (or NULL) */
    bool accept_stages;                  /* serve --accept-stages: load ranges for members
                                            (/meshllm/stageload/1), and announce it */
};

struct mesh;
struct blob_server;
/* Starts the p2p node with the mesh's policy. 0 or a MESH_E* code with a sentence in err. */
int mesh_start(const struct mesh_config *cfg, struct mesh **out, char *err, size_t err_cap);
void mesh_stop(struct mesh *m);

/* Joins a mesh with an invite token: dials the inviter (a temporary host with this node's
 * identity), sends the join request on /meshllm/member/1 and stores the certificate it
 * answers. `meshllm join` and `serve --join` use it. 0, or a MESH_E* code with the
 * inviter's refusal or the network failure in err. */
int mesh_join(const char *data_dir, const char *token, int timeout_ms, char *err,
              size_t err_cap);

struct p2pnode *mesh_p2pnode(struct mesh *m);
struct peers *mesh_peers(struct mesh *m);
/* The /meshllm/blob/1 provider and the pull counters (node/blob.h); NULL before start. */
struct blob_server *mesh_blob(struct mesh *m);
/* The mesh ID ("" when in no mesh). */
const char *mesh_id(const struct mesh *m);
const char *mesh_self_text(const struct mesh *m); /* our peer ID */
uint64_t mesh_now_ms(void);                       /* the clock of the peer table */
uint64_t mesh_uptime_ms(const struct mesh *m);    /* since mesh_start */

/* Counters for tests and the console. */
struct mesh_stats {
    uint64_t n_admitted, n_refused;      /* hellos accepted / refused */
    uint64_t n_announces_sent, n_announces_recv;
    uint64_t n_infer_served, n_infer_opened, n_infer_active; /* our infer server's */
    uint64_t n_infer_out;                /* infer streams this node opened to peers */
    uint64_t n_stageload_requests, n_stageload_loaded, n_stageload_refused; /* served */
    struct p2pnode_stats p2p;            /* connection limits, tables (net/p2pnode.h) */
};
void mesh_stats(struct mesh *m, struct mesh_stats *out);
void mesh_count_infer_out(struct mesh *m);

/* The node, its mesh and peers as malloc'd JSON (docs/API.md, GET /node/peers). */
char *mesh_peers_json(struct mesh *m);

#endif
