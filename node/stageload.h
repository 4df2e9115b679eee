/* stageload.h - /meshllm/stageload/1: a member asks this node to load a layer range of a
 * model and serve it on /meshllm/stage/1 (docs/PROTOCOL.md; docs/SPLIT.md "Auto-split").
 *
 * The server (mesh.c registers it in the setup hook) answers every request, but loads only
 * when the user allowed it (`serve --accept-stages`; loading someone's model costs RAM) and
 * only for members (the mesh's gate parks a stranger's stream, and the handler checks
 * again). The file must already be here: in the model store with that SHA-256
 * (node/modelstore.h), or at the path the requester names, with the same size and SHA-256
 * (hashed before use). The range must fit AUTOSPLIT_MEM_SHARE of free memory. One load at
 * a time (another request meanwhile: busy). The load is the registry's
 * (registry_add_split_load): the new entry is announced like any stage once it is READY.
 * The reply comes when the range is served, or refused. Not here: fetching a file the node
 * lacks (node/blob.h, another part), unloading ranges nobody uses any more.
 * The client (stageload_ask) is the requester's blocking call (node/autosplit.c).
 * Thread rule: server new/free on the loop thread; stats and stageload_ask any thread.
 */
#ifndef MESH_NODE_STAGELOAD_H
#define MESH_NODE_STAGELOAD_H

#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "net/peer_id.h"
#include "node/stage_internal.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* How long a requester waits for a load (the file is read from disk and packed). */
#define STAGELOAD_TIMEOUT_MS 300000

struct registry;

struct stageload_server_config {
    struct p2pnode *pn;
    struct registry *reg;
    bool accept;                 /* --accept-stages: load what members ask for */
    /* whether peer is an admitted member (mesh.c); NULL: nobody is */
    bool (*is_member)(void *ctx, const struct peer_id *peer);
    void *member_ctx;
};

struct stageload_server_stats {
    uint64_t n_requests, n_loaded, n_refused;
};

struct stageload_server;
int stageload_server_new(const struct stageload_server_config *cfg,
                         struct stageload_server **out);
void stageload_server_stats(struct stageload_server *s, struct stageload_server_stats *out);
/* Stops answering (a load in progress finishes in the registry; its reply is dropped).
 * Loop thread, before p2pnode_stop; NULL is fine. */
void stageload_server_free(struct stageload_server *s);

/* Asks peer (at addr) to load q's range and waits for its answer, at most timeout_ms or
 * until *interrupt. 0 with *reply filled (reply->status says whether it loaded),
 * MESH_EIO (no stream, or the peer broke the protocol), MESH_ETIMEOUT, MESH_ECLOSED,
 * MESH_EINVAL (a bad q), MESH_ENOMEM. */
int stageload_ask(struct p2pnode *pn, const struct peer_id *peer, const struct multiaddr *addr,
                  const struct stageload_req *q, int timeout_ms, const atomic_bool *interrupt,
                  struct stageload_reply *reply);

#endif
