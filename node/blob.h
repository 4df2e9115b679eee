/* blob.h - /meshllm/blob/1: model store files between admitted members (docs/PROTOCOL.md).
 *
 * The provider (blob.c) serves this node's model store on the p2p host: INFO (size, piece
 * length, piece layer read from blobs/<cid>.pieces) and PIECE (pread from blobs/<cid>, one
 * piece per request), to admitted members only (node/mesh.c's gate; a node in no mesh
 * refuses the protocol to everyone). Bounded: one piece per request, at most
 * BLOB_MAX_STREAMS_PER_PEER concurrent streams per peer, and a puller that leaves more
 * than the host's 8 MiB of answers unread is reset. The multi-peer pull is blobpull.h;
 * the wire format blob_internal.h. Counters for /metrics live here, for both sides.
 * Thread rule: blob_server_new/_free and the stream callbacks run on the p2p loop thread;
 * the counters (atomics) from any thread.
 */
#ifndef MESH_NODE_BLOB_H
#define MESH_NODE_BLOB_H

#include "net/p2pnode.h"

#include <stdint.h>

#define BLOB_PROTOCOL_ID "/meshllm/blob/1"
#define BLOB_VERSION 1
#define BLOB_MAX_STREAMS_PER_PEER 4

/* Counters since start (both the provider's and this node's pulls). */
struct blob_stats {
    uint64_t n_streams;        /* provider: streams accepted */
    uint64_t n_streams_refused; /* provider: over BLOB_MAX_STREAMS_PER_PEER */
    uint64_t n_pieces_served, bytes_served;
    uint64_t n_errors_sent;    /* replies with an error (not found, range, malformed) */
    uint64_t n_pieces_fetched, bytes_fetched; /* puller: verified and written */
    uint64_t n_pieces_resumed; /* puller: found valid in a partial file */
    uint64_t n_bad_pieces;     /* puller: pieces that did not verify */
    uint64_t n_peers_dropped;  /* puller: providers dropped (bad piece, error, timeout) */
    uint64_t n_pulls_ok, n_pulls_failed;
};

enum blob_counter {
    BLOB_C_FETCHED = 0, BLOB_C_BYTES_FETCHED, BLOB_C_RESUMED, BLOB_C_BAD, BLOB_C_DROPPED,
    BLOB_C_PULL_OK, BLOB_C_PULL_FAILED, BLOB_C_N
};

struct blob_server;
/* Registers the provider on pn's host, serving the store at dir (copied).
 * MESHLLM_TEST_CORRUPT_BLOB=1 in the environment (test-only, docs/MODELS.md) flips a byte
 * of every piece this provider sends. 0, MESH_ENOMEM or the host's error. */
int blob_server_new(struct p2pnode *pn, const char *dir, struct blob_server **out);
void blob_server_free(struct blob_server *b);
/* Adds n to a puller counter. b may be NULL. Any thread. */
void blob_server_count(struct blob_server *b, enum blob_counter c, uint64_t n);
void blob_server_stats(const struct blob_server *b, struct blob_stats *out);

#endif
