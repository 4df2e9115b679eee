/* blobsched.h - the piece scheduler of a multi-peer pull (node/blobpull.c): which piece to
 * ask which provider next. I/O-free (STYLE.md: protocol cores do no I/O): the caller tells
 * it what was asked and what came back; tests/test_blobsched.c drives it directly.
 *
 * One shared queue of missing pieces, lowest index first (so the file fills from the front
 * and its SHA-256 can be computed as it arrives). Each provider keeps up to `depth`
 * requests in flight; a faster provider answers sooner, asks again sooner and so takes more
 * pieces. A piece is in flight at one provider at a time. A provider that sends a bad piece,
 * or is dropped (stream lost, timeout), gives its in-flight pieces back to the queue.
 * Not thread-safe: the owner locks around every call (blobpull.c holds its mutex).
 */
#ifndef MESH_NODE_BLOBSCHED_H
#define MESH_NODE_BLOBSCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLOBSCHED_MAX_PEERS 16
#define BLOBSCHED_DEPTH 4 /* requests in flight per provider (4 x 1 MiB pieces) */

enum blobsched_state { BLOBSCHED_MISSING = 0, BLOBSCHED_INFLIGHT = 1, BLOBSCHED_DONE = 2 };

struct blobsched_peer {
    bool is_dropped;
    int n_inflight;
    uint64_t n_done;           /* pieces it delivered that verified */
    uint64_t n_bad;            /* pieces that did not (at most 1: it is dropped at once) */
};

struct blobsched {
    uint32_t n_pieces, n_done;
    uint8_t *state;            /* n_pieces enum blobsched_state */
    int8_t *owner;             /* n_pieces: the provider a piece is in flight at, -1 none */
    uint32_t next;             /* every piece below it is in flight or done */
    int depth;
    int n_peers;
    struct blobsched_peer peers[BLOBSCHED_MAX_PEERS];
};

/* n_pieces >= 1; depth 1..64 (0: BLOBSCHED_DEPTH). 0, MESH_EINVAL, MESH_ENOMEM. */
int blobsched_init(struct blobsched *s, uint32_t n_pieces, int depth);
void blobsched_free(struct blobsched *s);
/* A piece already there (resumed from a partial file and verified). */
void blobsched_mark_done(struct blobsched *s, uint32_t piece);
/* A new provider: its index, or MESH_EFULL. */
int blobsched_add_peer(struct blobsched *s);
/* The next piece to ask provider peer, marked in flight there; -1 when it is dropped, has
 * depth requests in flight, or no piece is missing. */
int64_t blobsched_next(struct blobsched *s, int peer);
/* Provider peer answered piece: ok (verified: done) or not (a bad piece: the piece goes
 * back to the queue and the provider is dropped). 0, or MESH_EINVAL when the piece was not
 * in flight at that provider (an answer nobody asked for, or one after a drop: ignore it). */
int blobsched_done(struct blobsched *s, int peer, uint32_t piece, bool ok);
/* The provider is gone: its in-flight pieces go back to the queue. */
void blobsched_drop(struct blobsched *s, int peer);
bool blobsched_complete(const struct blobsched *s);
/* Providers not dropped. */
int blobsched_n_live(const struct blobsched *s);

#endif
