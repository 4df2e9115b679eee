/* connmgr.h - the connection manager's policy core: which peers are protected from trimming,
 * which remote addresses share a per-IP budget, and in what order connections are trimmed.
 *
 * No I/O, no clock: host.c feeds it peers, socket addresses and times and closes what it
 * picks. Modelled on go-libp2p's connmgr (low/high water marks, grace period, protected
 * peers by tag) and its resource manager's per-IP-prefix connection limits. Who deserves
 * protection is the owner's policy (node/mesh.c protects admitted members); this only keeps
 * the list. One owner thread (the host's loop).
 */
#ifndef MESH_NET_CONNMGR_H
#define MESH_NET_CONNMGR_H

#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CONNMGR_TAG_CAP 32        /* a protection tag, NUL included */
#define CONNMGR_MAX_PROTECTED 4096 /* (peer, tag) pairs */

struct connmgr_protection {
    struct peer_id id;
    char tag[CONNMGR_TAG_CAP];
};

/* Protected peers: a peer is protected while it holds at least one tag. */
struct connmgr {
    struct connmgr_protection *prot; /* malloc'd, n_prot used of prot_cap */
    size_t n_prot, prot_cap;
};

void connmgr_init(struct connmgr *cm);
void connmgr_free(struct connmgr *cm);

/* Adds (on) or removes (!on) the tag on peer; repeating either is harmless. tag is 1 to
 * CONNMGR_TAG_CAP - 1 bytes. Returns 0, MESH_EINVAL, MESH_EFULL (CONNMGR_MAX_PROTECTED pairs)
 * or MESH_ENOMEM. */
int connmgr_protect(struct connmgr *cm, const struct peer_id *id, const char *tag, bool on);
bool connmgr_is_protected(const struct connmgr *cm, const struct peer_id *id);

/* The key of a remote address's per-IP budget: IPv4 addresses (also IPv4-mapped IPv6) whole,
 * IPv6 by their /64 prefix (one host usually holds a whole /64). */
struct connmgr_ip {
    uint8_t b[16];
};
/* Returns 0, or MESH_EUNSUPPORTED for a family other than AF_INET / AF_INET6. */
int connmgr_ip_key(const struct sockaddr *sa, struct connmgr_ip *out);
bool connmgr_ip_equal(const struct connmgr_ip *a, const struct connmgr_ip *b);

/* A connection the owner may trim: conn is the owner's pointer, useful_ms the last time (of
 * the owner's clock; 0: never) it carried a stream the owner counts as useful, since_ms when
 * it was established. */
struct connmgr_cand {
    void *conn;
    uint64_t useful_ms;
    uint64_t since_ms;
};

/* Sorts cands so that the first are the first to close: the least recently useful, and among
 * equals the youngest (a flood is young; a peer that stayed is more likely honest). */
void connmgr_rank(struct connmgr_cand *cands, size_t n);

#endif
