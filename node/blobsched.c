/* blobsched.c - the piece scheduler of a multi-peer pull (see blobsched.h). */
#include "node/blobsched.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

int blobsched_init(struct blobsched *s, uint32_t n_pieces, int depth)
{
    memset(s, 0, sizeof *s);
    if (n_pieces == 0 || depth < 0 || depth > 64) return MESH_EINVAL;
    s->state = calloc(n_pieces, 1);
    s->owner = malloc(n_pieces);
    if (!s->state || !s->owner) {
        blobsched_free(s);
        return MESH_ENOMEM;
    }
    memset(s->owner, -1, n_pieces);
    s->n_pieces = n_pieces;
    s->depth = depth ? depth : BLOBSCHED_DEPTH;
    return 0;
}

void blobsched_free(struct blobsched *s)
{
    free(s->state);
    free(s->owner);
    memset(s, 0, sizeof *s);
}

void blobsched_mark_done(struct blobsched *s, uint32_t piece)
{
    if (piece >= s->n_pieces || s->state[piece] == BLOBSCHED_DONE) return;
    if (s->state[piece] == BLOBSCHED_INFLIGHT && s->owner[piece] >= 0)
        s->peers[s->owner[piece]].n_inflight--;
    s->state[piece] = BLOBSCHED_DONE;
    s->owner[piece] = -1;
    s->n_done++;
}

int blobsched_add_peer(struct blobsched *s)
{
    if (s->n_peers == BLOBSCHED_MAX_PEERS) return MESH_EFULL;
    memset(&s->peers[s->n_peers], 0, sizeof s->peers[0]);
    return s->n_peers++;
}

int64_t blobsched_next(struct blobsched *s, int peer)
{
    if (peer < 0 || peer >= s->n_peers) return -1;
    struct blobsched_peer *p = &s->peers[peer];
    if (p->is_dropped || p->n_inflight >= s->depth) return -1;
    while (s->next < s->n_pieces && s->state[s->next] != BLOBSCHED_MISSING) s->next++;
    if (s->next == s->n_pieces) return -1;
    uint32_t i = s->next++;
    s->state[i] = BLOBSCHED_INFLIGHT;
    s->owner[i] = (int8_t)peer;
    p->n_inflight++;
    return i;
}

/* Piece i goes back to the queue; next moves down so it is asked first. */
static void requeue(struct blobsched *s, uint32_t i)
{
    s->state[i] = BLOBSCHED_MISSING;
    s->owner[i] = -1;
    if (i < s->next) s->next = i;
}

int blobsched_done(struct blobsched *s, int peer, uint32_t piece, bool ok)
{
    if (peer < 0 || peer >= s->n_peers || piece >= s->n_pieces ||
        s->state[piece] != BLOBSCHED_INFLIGHT || s->owner[piece] != peer)
        return MESH_EINVAL;
    struct blobsched_peer *p = &s->peers[peer];
    p->n_inflight--;
    if (ok) {
        s->state[piece] = BLOBSCHED_DONE;
        s->owner[piece] = -1;
        s->n_done++;
        p->n_done++;
        return 0;
    }
    p->n_bad++;
    requeue(s, piece);
    blobsched_drop(s, peer);
    return 0;
}

void blobsched_drop(struct blobsched *s, int peer)
{
    if (peer < 0 || peer >= s->n_peers) return;
    struct blobsched_peer *p = &s->peers[peer];
    p->is_dropped = true;
    for (uint32_t i = 0; i < s->n_pieces && p->n_inflight > 0; i++)
        if (s->state[i] == BLOBSCHED_INFLIGHT && s->owner[i] == peer) {
            requeue(s, i);
            p->n_inflight--;
        }
    p->n_inflight = 0;
}

bool blobsched_complete(const struct blobsched *s)
{
    return s->n_pieces && s->n_done == s->n_pieces;
}

int blobsched_n_live(const struct blobsched *s)
{
    int n = 0;
    for (int i = 0; i < s->n_peers; i++) n += !s->peers[i].is_dropped;
    return n;
}
