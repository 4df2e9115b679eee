/* infer.h - /meshllm/infer/1: a generation request delegated to a peer, the answer streamed
 * back (docs/PROTOCOL.md, section /meshllm/infer/1).
 *
 * Server: registered on a p2pnode's host; each inbound stream carries one request, handed to
 * a submit function (production: node_local_submit over the registry); the backend's output
 * is written back as frames. Client: infer_client_submit returns a struct node_req (req.h)
 * whose output arrives from the peer. The wire encoding is infer_wire.c (pure functions, in
 * infer_internal.h for tests and the fuzz target). Embedding requests are not delegated.
 */
#ifndef MESH_NODE_INFER_H
#define MESH_NODE_INFER_H

#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "net/peer_id.h"
#include "node/req.h"

#include <stdint.h>

#define INFER_PROTOCOL_ID "/meshllm/infer/1"
#define INFER_VERSION 1

/* Production submit: node_local_submit(registry, ...). */
typedef int (*infer_submit_fn)(void *ctx, const struct node_gen_req *req,
                               const struct node_client *cl, struct node_req **out,
                               struct node_error *err);

struct infer_server_config {
    struct p2pnode *pn;       /* the node whose host serves the protocol */
    infer_submit_fn submit;   /* called on the loop thread */
    void *submit_ctx;
    int max_streams;          /* concurrent requests; more are answered 503; <= 0: 64 */
};

/* Counters since start; any thread (atomics). */
struct infer_server_stats {
    uint64_t n_opened;        /* streams accepted */
    uint64_t n_served;        /* requests whose last frame (done) was sent */
    uint64_t n_refused_busy;  /* error frames 429/503 (submit, or too many streams) */
    uint64_t n_refused;       /* other error frames (400, 404, 413, 500) */
    uint64_t n_errors;        /* malformed requests, frames that could not be written */
    uint64_t n_cancelled;     /* the client left before done (EOF, reset, connection lost) */
    uint64_t n_active;        /* streams open now */
};

struct infer_server;

/* Registers INFER_PROTOCOL_ID on p2pnode_host(cfg->pn). Loop thread only (the p2pnode setup
 * hook or a p2pnode_call function). Returns 0, MESH_EINVAL (no host, no submit),
 * MESH_ENOMEM, or host_set_handler's error. */
int infer_server_new(const struct infer_server_config *cfg, struct infer_server **out);
void infer_server_stats(const struct infer_server *s, struct infer_server_stats *out);
/* Releases every request in flight (their backends are cancelled), resets the streams and
 * refuses new ones. Loop thread only, before p2pnode_stop (from a p2pnode_call: it may then
 * run during the stop, which is fine); the memory goes once libuv has closed the server's
 * wake-up handle, so keep the loop running (p2pnode does). NULL is fine. */
void infer_server_free(struct infer_server *s);

/* Starts req on the peer peer_id reachable at addr (a multiaddr ending in /p2p/<peer_id>).
 * Any thread. The handle (*out) is returned at once; the stream is opened on the loop thread
 * and cl->notify (called on the loop thread, never after node_req_release returns) tells when
 * output, or the end, is ready. A failure to reach the peer, or a peer that vanishes or breaks
 * the protocol, ends the request "error" with fail NODE_FAIL_LOST (what was delivered until
 * then stays delivered); an error frame ends it with NODE_FAIL_BUSY (429, 503) or
 * NODE_FAIL_REFUSED and the peer's node_error. req is copied (encoded) before the return.
 * Returns 0, MESH_EINVAL (bad arguments), MESH_EUNSUPPORTED (embeddings), MESH_ERANGE (the
 * request exceeds the protocol's limits), MESH_ENOMEM, MESH_ECLOSED (the node is stopping). */
int infer_client_submit(struct p2pnode *pn, const struct peer_id *peer_id,
                        const struct multiaddr *addr, const struct node_gen_req *req,
                        const struct node_client *cl, struct node_req **out);

/* Measures of one client handle, for benchmarks; any thread. */
struct infer_client_stats {
    int64_t ttff_us;          /* submit -> first frame (-1: none yet) */
    int64_t total_us;         /* submit -> done (-1: not done) */
    uint64_t n_frames;
    uint64_t n_ids;           /* token ids delivered */
};
/* Returns 0 or MESH_EINVAL when r is not an infer client handle. */
int infer_client_stats(struct node_req *r, struct infer_client_stats *out);

#endif
