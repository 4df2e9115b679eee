/* host.h - the libp2p host: TCP connections over libuv, upgraded with multistream-select ->
 * Noise -> multistream-select -> yamux, protocol handlers per stream, identify and ping.
 *
 * This is the only part of net/ that does I/O; it drives the mss, noise and yamux state
 * machines. Follows libp2p/specs connections/README.md (upgrade), identify/README.md
 * (/ipfs/id/1.0.0 and /ipfs/id/push/1.0.0; signed peer records are ignored) and ping/ping.md (/ipfs/ping/1.0.0). Every function and callback runs on the loop's thread.
 *
 * Typical use (our own /meshllm/... protocols):
 *   host_new(loop, &cfg, &h); host_listen(h, &addr);
 *   host_set_handler(h, "/meshllm/infer/1", on_infer_stream, ctx);     // server side
 *   host_open_stream(h, &peer_addr, "/meshllm/infer/1", on_open, ctx); // client side
 *   ... in on_open: host_stream_set_callbacks(s, &cbs, ctx); host_stream_write_msg(s, ...);
 */
#ifndef MESH_NET_HOST_H
#define MESH_NET_HOST_H

#include "net/connmgr.h"
#include "net/identify.h"
#include "net/identity.h"
#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define HOST_IDENTIFY_ID IDENTIFY_PROTOCOL_ID
#define HOST_IDENTIFY_PUSH_ID "/ipfs/id/push/1.0.0"
#define HOST_PING_ID "/ipfs/ping/1.0.0"
#define HOST_AGENT "meshllm/0.1"
#define HOST_PROTOCOL_VERSION "ipfs/0.1.0"
#define HOST_MAX_PROTOCOL_LEN IDENTIFY_MAX_PROTOCOL_LEN

struct host;
struct host_stream;

/* Connection limits (docs/PROTOCOL.md "Resource limits: connections" says why each number).
 * Pending: inbound, not yet through Noise and the muxer negotiation; such connections have a
 * budget of their own, so idle sockets cannot take the slots of upgraded peers or of our
 * dials. Established inbound connections are trimmed from the high to the low water mark
 * (unprotected peers only, never inside the grace period); our own dials count only against
 * the outbound limit and are never trimmed. */
#define HOST_DEFAULT_MAX_PENDING 32
#define HOST_DEFAULT_MAX_PENDING_PER_IP 4
#define HOST_DEFAULT_HANDSHAKE_TIMEOUT_MS 5000
#define HOST_DEFAULT_DIAL_TIMEOUT_MS 10000
#define HOST_DEFAULT_MAX_CONNS 128
#define HOST_DEFAULT_MAX_CONNS_OUTBOUND 128
#define HOST_DEFAULT_MAX_CONNS_PER_PEER 4
#define HOST_DEFAULT_CONNS_HIGH_WATER 96
#define HOST_DEFAULT_CONNS_LOW_WATER 64
#define HOST_DEFAULT_TRIM_GRACE_MS 10000

/* Every limit: 0 takes the default. */
struct host_config {
    const struct identity *identity; /* copied */
    const char *agent;               /* identify agentVersion; NULL: HOST_AGENT */
    uint32_t max_pending;            /* inbound pending connections in total */
    uint32_t max_pending_per_ip;     /* ... from one IPv4 address or IPv6 /64 */
    uint32_t handshake_timeout_ms;   /* an inbound connection's upgrade (pending deadline) */
    uint32_t dial_timeout_ms;        /* our dial: TCP connect + upgrade */
    uint32_t max_conns;              /* established inbound connections (protected peers
                                        may exceed it) */
    uint32_t max_conns_outbound;     /* our dials, pending or established */
    uint32_t max_conns_per_peer;     /* established, both directions */
    uint32_t conns_high_water;       /* established inbound above this: trim ... */
    uint32_t conns_low_water;        /* ... down to this (default: 2/3 of a high water mark
                                        that is set below the default low one) */
    uint32_t trim_grace_ms;          /* connections younger than this are not trimmed */
    uint32_t max_streams_per_conn;   /* default 64 (yamux limit) */
    size_t max_stream_pending;       /* bytes queued by host_stream_write beyond the peer's
                                        window; default 8 MiB */
};

/* A connected peer and what identify told us about it (ident.observed_addr: how the peer
 * sees us). */
struct host_peer_info {
    struct peer_id id;
    struct multiaddr remote_addr; /* the address of our connection to it */
    bool is_outbound;             /* we dialed it */
    bool is_identified;
    struct identify_info ident;
};

enum host_peer_event { HOST_PEER_CONNECTED = 1, HOST_PEER_IDENTIFIED, HOST_PEER_DISCONNECTED };
typedef void (*host_peer_fn)(void *ctx, enum host_peer_event ev, const struct host_peer_info *p);

/* A new inbound stream negotiated for a registered protocol. Set its callbacks here. */
typedef void (*host_stream_fn)(void *ctx, struct host_stream *s);
/* Result of host_open_stream: s is ready (status 0) or NULL with a MESH_E* status. */
typedef void (*host_open_fn)(void *ctx, struct host_stream *s, int status);

struct host_stream_cbs {
    /* Bytes (or, in message mode, one whole message) from the peer. */
    void (*on_data)(void *ctx, struct host_stream *s, const uint8_t *data, size_t len);
    /* The peer closed its side; we may still write, then host_stream_close(). */
    void (*on_eof)(void *ctx, struct host_stream *s);
    /* The stream is over (both sides closed: status 0; reset or connection lost: < 0).
     * s is freed when this returns. */
    void (*on_close)(void *ctx, struct host_stream *s, int status);
};

/* Creates a host on loop. Sets SIGPIPE to ignored if it had its default action (a peer that
 * hangs up must not kill the process). Returns 0, MESH_EINVAL (no identity) or MESH_ENOMEM. */
int host_new(uv_loop_t *loop, const struct host_config *cfg, struct host **out);

/* Closes every connection and listener; the host frees itself once libuv has closed its
 * handles (keep running the loop). Stream on_close callbacks run with MESH_ECLOSED. */
void host_close(struct host *h);

/* Listens on /ip4|ip6/A/tcp/P (P may be 0). Returns 0, MESH_EUNSUPPORTED, MESH_EIO. */
int host_listen(struct host *h, const struct multiaddr *addr);
/* Actual listen addresses (port resolved); returns how many were written. */
size_t host_listen_addrs(const struct host *h, struct multiaddr *out, size_t cap);
const struct peer_id *host_peer_id(const struct host *h);

/* Registers the handler of a protocol id (replacing any previous one); a new id is announced
 * to connected peers by identify push. Returns 0, MESH_EINVAL (bad id) or MESH_EFULL. */
int host_set_handler(struct host *h, const char *protocol, host_stream_fn fn, void *ctx);

/* Admission gate: inbound streams whose protocol starts with prefix are first shown to fn
 * (after negotiation, before the handler): HOST_GATE_ALLOW hands them to the handler,
 * HOST_GATE_REFUSE resets them, HOST_GATE_WAIT parks them unread (yamux's window holds the
 * peer's bytes) until host_gate_recheck asks again. The policy is the owner's (node/mesh.c
 * admits members of a mesh); the host only enforces it. fn NULL removes the gate. */
enum { HOST_GATE_ALLOW = 0, HOST_GATE_WAIT = 1, HOST_GATE_REFUSE = 2 };
typedef int (*host_gate_fn)(void *ctx, const struct peer_id *peer, const char *protocol);
void host_set_gate(struct host *h, const char *prefix, host_gate_fn fn, void *ctx);
/* Asks the gate again about parked streams of peer (NULL: of every peer). */
void host_gate_recheck(struct host *h, const struct peer_id *peer);

/* Connection events (connected, identified, disconnected): one callback set by the owner,
 * plus up to HOST_MAX_PEER_LISTENERS listeners added by modules (p2p, gossip, mDNS glue),
 * which are told first. add returns 0 or MESH_EFULL. */
#define HOST_MAX_PEER_LISTENERS 8
void host_set_peer_callback(struct host *h, host_peer_fn fn, void *ctx);
int host_add_peer_listener(struct host *h, host_peer_fn fn, void *ctx);
void host_remove_peer_listener(struct host *h, host_peer_fn fn, void *ctx);

/* Opens a stream for protocol to the peer at addr (/ip4|ip6/A/tcp/P[/p2p/ID]), reusing a
 * connection to that peer or dialing. cb runs exactly once, later (never inside this call).
 * Returns 0 or an immediate error (MESH_EUNSUPPORTED address, MESH_EINVAL, MESH_ENOMEM). */
int host_open_stream(struct host *h, const struct multiaddr *addr, const char *protocol,
                     host_open_fn cb, void *ctx);
/* The same, sending data (copied) right behind the protocol proposal instead of after the
 * answer: the listener reads it once it has accepted the protocol, which saves the
 * negotiation's round trip before the first request (multistream-select's optimistic use,
 * for a protocol the peer is known to speak; if it refuses, cb gets an error and the data
 * is discarded unread). data is raw bytes: length-prefix messages yourself. */
int host_open_stream_data(struct host *h, const struct multiaddr *addr, const char *protocol,
                          const uint8_t *data, size_t data_len, host_open_fn cb, void *ctx);

/* Stream use. */
void host_stream_set_callbacks(struct host_stream *s, const struct host_stream_cbs *cbs,
                               void *ctx);
/* Message mode: on_data then receives whole uvarint-length-prefixed messages of at most
 * max_len bytes (longer ones reset the stream). */
void host_stream_set_message_mode(struct host_stream *s, size_t max_len);
/* Queues bytes (flow control is handled here). Returns 0, MESH_ECLOSED, MESH_EFULL
 * (more than max_stream_pending waiting). */
int host_stream_write(struct host_stream *s, const uint8_t *data, size_t len);
/* Writes uvarint(len) || data. */
int host_stream_write_msg(struct host_stream *s, const uint8_t *data, size_t len);
/* Half-close after queued bytes are sent. */
int host_stream_close(struct host_stream *s);
/* Abort: RST to the peer; s is freed now and no callback follows. */
void host_stream_reset(struct host_stream *s);
const char *host_stream_protocol(const struct host_stream *s);
const struct peer_id *host_stream_peer(const struct host_stream *s);

/* Pings the peer at addr over /ipfs/ping/1.0.0 (32 random bytes echoed).
 * cb gets status 0 and the round trip in microseconds, or an error. */
typedef void (*host_ping_fn)(void *ctx, int status, uint64_t rtt_us);
int host_ping(struct host *h, const struct multiaddr *addr, host_ping_fn cb, void *ctx);

/* Protection from trimming: a peer is protected while it holds at least one tag (the owner's
 * policy: node/mesh.c tags admitted members "mesh-member"). Tags are 1..CONNMGR_TAG_CAP - 1
 * bytes; a peer may be tagged before it connects. Removing the last tag of a peer may trim
 * its connections at once if the host is over its high water mark. Returns 0, MESH_EINVAL,
 * MESH_EFULL (CONNMGR_MAX_PROTECTED tags) or MESH_ENOMEM. */
int host_peer_protect(struct host *h, const struct peer_id *peer, const char *tag, bool on);
bool host_peer_is_protected(const struct host *h, const struct peer_id *peer);

/* What the connection limits refused and closed since host_new, and the counts now. */
struct host_stats {
    uint64_t n_refused_pending_total;  /* inbound sockets closed at accept: max_pending */
    uint64_t n_refused_pending_per_ip; /* ... max_pending_per_ip */
    uint64_t n_handshake_timeouts;     /* inbound connections not upgraded in time */
    uint64_t n_refused_conns_total;    /* upgraded inbound connections closed: max_conns */
    uint64_t n_refused_conns_per_peer; /* upgraded connections closed, either direction */
    uint64_t n_refused_dials;          /* dials refused: max_conns_outbound */
    uint64_t n_trimmed;                /* inbound connections closed by the trim */
    uint32_t n_pending;                /* inbound connections being upgraded now */
    uint32_t n_conns_inbound;          /* established inbound connections now */
    uint32_t n_conns_outbound;         /* our dials now, pending or established */
};
void host_stats_get(const struct host *h, struct host_stats *out);

/* Identify results of a connected peer. Returns 0 or MESH_ENOTFOUND. */
int host_peer_info(const struct host *h, const struct peer_id *id, struct host_peer_info *out);
size_t host_n_conns(const struct host *h);
/* Copies the info of up to cap connected (upgraded) peers into out; returns how many. */
size_t host_list_peers(const struct host *h, struct host_peer_info *out, size_t cap);

#endif
