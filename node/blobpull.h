/* blobpull.h - `meshllm pull NAME|CID` from the mesh: a store file fetched over
 * /meshllm/blob/1 from several members at once (docs/MODELS.md, docs/PROTOCOL.md).
 *
 * Providers are the live members whose announcements list the file (node/peers.h
 * peers_blob_providers), plus any the caller names. Every provider is asked INFO first;
 * its piece layer must hash up to the content ID (a provider whose does not is a liar).
 * Pieces then come from all providers from one shared queue (node/blobsched.h, 4 requests
 * in flight each: the faster takes more); each is verified against its piece-layer hash
 * before it is written (pwrite into DIR/partial/<cid>.blobpart); a bad piece drops that
 * provider (scored down: peers_report PEERS_LIE) and the piece is asked elsewhere. A
 * partial file from an earlier run is verified piece by piece and what is valid is kept.
 * The whole file's SHA-256 is computed as its front fills; at the end it is fsynced,
 * checked to be a GGUF, renamed into blobs/ and its manifest written.
 * Thread rule: blocking; run on a thread of its own (not the p2p loop). cancel may be set
 * from any thread.
 */
#ifndef MESH_NODE_BLOBPULL_H
#define MESH_NODE_BLOBPULL_H

#include "net/multiaddr.h"
#include "node/modelpull.h"
#include "node/modelstore.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct mesh;

#define BLOBPULL_TIMEOUT_MS 15000 /* a provider that answers nothing for this long is dropped */

struct blobpull_opts {
    const char *spec;              /* a content ID (64 hex digits) or NAME[:TAG] announced */
    const char *name;              /* NAME[:TAG] to store it under; NULL: the announced name
                                      (for a bare content ID nobody names: cid-<12 hex>) */
    const struct multiaddr *peers; /* extra providers to ask (.../p2p/ID), may be NULL */
    size_t n_peers;
    int timeout_ms;                /* 0: BLOBPULL_TIMEOUT_MS */
    atomic_bool *cancel;           /* set to stop (the partial file stays for a resume) */
    void (*progress)(void *arg, const struct modelpull_progress *p); /* any phase; rate_bps */
    void *progress_arg;
};

/* Whether spec names something blobpull_run could fetch now: a content ID, or a name a
 * live member announces. */
bool blobpull_available(struct mesh *m, const char *spec);

/* Pulls into the store at dir. 0 with *out the new manifest; MESH_ENOTFOUND (nobody
 * provides it), MESH_EIO (every provider failed or lied: the partial file is kept for a
 * resume), MESH_ECANCELED (kept), MESH_EBADMODEL (not a GGUF), MESH_EINVAL (a bad name).
 * err says what happened and what to do. */
int blobpull_run(struct mesh *m, const char *dir, const struct blobpull_opts *o,
                 struct modelstore_manifest *out, char *err, size_t err_cap);

#endif
