/* stage.h - /meshllm/stage/1: one pipeline stage of a split model (docs/PROTOCOL.md,
 * /meshllm/stage/1; docs/SPLIT.md).
 *
 * Three parts. The engine runs a layer range of a model for many sessions: a worker thread
 * owns a model_ctx whose n_slots sequences hold the sessions' KV caches, and batches the
 * requests of different sessions that wait together into one model_layers pass. The server
 * is the libp2p glue on the loop thread: it decodes each stream's requests, hands them to
 * the engine through a submit function (mesh.c: the registry's engine for that content hash
 * and range) and writes the replies back in request order. The client connection is the
 * requester's side (node/pipeline.c): one stream to one stage, blocking calls from the
 * caller's thread (a scheduler worker), answers in order.
 * Not here: which stages to use and recovery of a lost one (pipeline.c, docs/SPLIT.md).
 */
#ifndef MESH_NODE_STAGE_H
#define MESH_NODE_STAGE_H

#include "engine/model.h"
#include "net/multiaddr.h"
#include "net/p2pnode.h"
#include "net/peer_id.h"
#include "node/stage_internal.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STAGE_PROTOCOL_ID "/meshllm/stage/1"
#define STAGE_VERSION 1
/* A session nobody used for this long is forgotten (its slot freed). */
#define STAGE_SESSION_IDLE_MS 60000
/* A requester gives up on a stage that has not answered a call after this long. */
#define STAGE_CALL_TIMEOUT_MS 30000
/* Requests one stream may have waiting for their replies; more reset the stream. */
#define STAGE_MAX_INFLIGHT 256

struct model;

/* ---- engine ------------------------------------------------------------------------------ */

struct stage_engine_params {
    int layer_begin, layer_end; /* [begin, end), non-empty */
    int n_slots;                /* sessions at once */
    int n_ctx;                  /* positions per session; 0 = model_ctx default */
    int n_batch;                /* tokens per pass; 0 = 512 */
    int n_threads;              /* 0 = all cores */
    enum model_kv_type k_type, v_type; /* KV cache elements; 0 = f16 */
};

/* One request handed to an engine. done runs exactly once, on the engine's worker (or in
 * stage_engine_submit's caller when it fails), with the encoded reply (malloc'd, owned by
 * done; NULL for a drop job) and owns j afterwards (stage_job_free). */
struct stage_job {
    struct stage_req req;       /* decoded request (owned) */
    uint64_t owner;             /* the stream: sessions are keyed by (owner, session id) */
    bool is_drop;               /* forget every session of owner (its stream closed) */
    int err;                    /* preset error (decode failed): answered as it is */
    char why[STAGE_MAX_MESSAGE];
    void (*done)(struct stage_job *j, uint8_t *reply, size_t reply_len);
    void *arg;
    uint64_t seqno;             /* the server's order on its stream */
    /* engine private */
    struct stage_job *next;
    int slot;
    int rc;
};
void stage_job_free(struct stage_job *j);
/* Encodes an error reply for j (j->err, j->why) into *out. */
int stage_job_error_reply(const struct stage_job *j, uint8_t **out, size_t *out_len);

struct stage_engine;
int stage_engine_new(const struct model *m, const struct stage_engine_params *p,
                     struct stage_engine **out, char *err, size_t err_cap);
/* Stops the worker; waiting jobs are answered STAGE_ERR_CLOSING. NULL is fine. */
void stage_engine_free(struct stage_engine *e);
/* Queues j (any thread). Always consumes j: done is called, now or later. */
void stage_engine_submit(struct stage_engine *e, struct stage_job *j);
void stage_engine_range(const struct stage_engine *e, int *layer_begin, int *layer_end);
/* The stage context's KV cache memory line (model_ctx_kv_describe) into buf[cap]. */
int stage_engine_kv_describe(const struct stage_engine *e, char *buf, size_t cap);

struct stage_engine_stats {
    int n_slots, n_sessions;
    uint64_t n_requests;        /* requests answered */
    uint64_t n_errors;          /* of which with an error */
    uint64_t n_busy;            /* refused: every slot busy */
    uint64_t n_passes;          /* model_layers calls */
    uint64_t n_batched;         /* passes that ran more than one session */
    uint64_t n_tokens;          /* hidden states run through the layers */
    uint64_t n_evicted;         /* sessions forgotten for idleness */
};
void stage_engine_stats(struct stage_engine *e, struct stage_engine_stats *out);

/* ---- server ------------------------------------------------------------------------------ */

/* Finds the engine for j->req's model and range and stage_engine_submit's j there (keeping
 * the engine alive across the call), or returns the enum stage_err to answer (MODEL, RANGE,
 * CLOSING) without consuming j. Called on the loop thread. */
typedef int (*stage_submit_fn)(void *ctx, struct stage_job *j);

struct stage_server_config {
    struct p2pnode *pn;
    stage_submit_fn submit;
    void *submit_ctx;
};

struct stage_server_stats {
    uint64_t n_streams, n_requests, n_replies, n_errors, n_active;
};

struct stage_server;
/* Registers STAGE_PROTOCOL_ID on the node's host. Loop thread only (the setup hook). */
int stage_server_new(const struct stage_server_config *cfg, struct stage_server **out);
void stage_server_stats(struct stage_server *s, struct stage_server_stats *out);
/* Resets every stream and stops answering. Loop thread, before p2pnode_stop; NULL fine. */
void stage_server_free(struct stage_server *s);

/* ---- client ------------------------------------------------------------------------------ */

struct stage_conn;
/* A connection to the stage peer at addr (ending in /p2p/<id>); the stream opens at the
 * first call. Any thread. */
int stage_conn_new(struct p2pnode *pn, const struct peer_id *peer, const struct multiaddr *addr,
                   struct stage_conn **out);
/* The same over another protocol with one-message exchanges (/meshllm/stageload/1):
 * messages up to max_frame bytes; use stage_conn_call_raw. */
int stage_conn_new_proto(struct p2pnode *pn, const struct peer_id *peer,
                         const struct multiaddr *addr, const char *protocol, size_t max_frame,
                         struct stage_conn **out);
/* Sends msg (ownership taken) and waits for the next message, returned raw in *reply
 * (malloc'd; free()). Same returns and timeout as stage_conn_call. */
int stage_conn_call_raw(struct stage_conn *c, uint8_t *msg, size_t len, uint8_t **reply,
                        size_t *reply_len, int timeout_ms, const atomic_bool *interrupt);
/* Sends msgs[n] (encoded StageRequests; ownership taken, freed) and waits for their n
 * replies, decoded with width n_embd into replies[n] (stage_reply_free each). Gives up
 * after timeout_ms, or soon after *interrupt turns true. One call at a time per conn.
 * Returns 0 (replies may still carry errors), MESH_EIO (the stream failed or the peer
 * broke the protocol; the conn is dead), MESH_ETIMEOUT, MESH_ECLOSED (interrupted or the
 * node is stopping), MESH_ENOMEM. */
int stage_conn_call(struct stage_conn *c, uint8_t **msgs, const size_t *lens, int n, int n_embd,
                    struct stage_reply *replies, int timeout_ms, const atomic_bool *interrupt);
/* Closes the stream (when the node still runs: node_alive) and drops the caller's ref. */
void stage_conn_free(struct stage_conn *c, bool node_alive);
/* Bytes sent and received on the stream so far. */
void stage_conn_bytes(struct stage_conn *c, uint64_t *sent, uint64_t *recv);

#endif
