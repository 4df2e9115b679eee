/* mss.h - multistream-select 1.0 (libp2p/specs connections/README.md "Protocol Negotiation",
 * multiformats/multistream-select): agreeing on one protocol id over a fresh connection or
 * stream. A state machine with no I/O: feed it received bytes with mss_input(), send what
 * mss_output() returns. Messages are uvarint-length-prefixed lines ending in '\n'; both sides
 * send "/multistream/1.0.0" first; the dialer proposes ids in order and the listener echoes
 * one it supports or answers "na". Not supported: "ls", lazy (0-RTT) negotiation.
 * One struct per negotiation; not thread-safe; no allocation.
 */
#ifndef MESH_NET_MSS_H
#define MESH_NET_MSS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSS_PROTOCOL_ID "/multistream/1.0.0"
/* Longest line (protocol id + '\n') we send or accept. */
#define MSS_MAX_LINE 1024
#define MSS_MAX_PROPOSALS 8

enum mss_state { MSS_NEGOTIATING = 0, MSS_DONE, MSS_FAILED };

/* Listener callback: true if the protocol id (NUL-terminated) is served here. */
typedef bool (*mss_supports_fn)(void *ctx, const char *protocol);

struct mss {
    enum mss_state state;
    bool is_dialer;
    int step; /* 0: waiting for the peer's header, 1: waiting for a proposal/answer */
    /* dialer */
    const char *proposals[MSS_MAX_PROPOSALS]; /* borrowed; must outlive the negotiation */
    size_t n_proposals, i_proposal;
    /* listener */
    mss_supports_fn supports;
    void *supports_ctx;
    /* result */
    char protocol[MSS_MAX_LINE];
    /* one partial incoming message: varint length + line */
    uint8_t in[MSS_MAX_LINE + 4];
    size_t in_len;
    /* bytes to send */
    uint8_t out[2 * (MSS_MAX_LINE + 4)];
    size_t out_len;
};

/* Starts a dialer that proposes protocols[0..n) in order (borrowed strings, each shorter
 * than MSS_MAX_LINE, no '\n'). Queues the header and the first proposal.
 * Returns 0 or MESH_EINVAL. */
int mss_dialer_init(struct mss *m, const char *const *protocols, size_t n);

/* Starts a listener; supports(ctx, id) decides each proposal. Queues the header. */
void mss_listener_init(struct mss *m, mss_supports_fn supports, void *ctx);

/* Feeds received bytes. Consumes bytes only up to the end of the negotiation, so that
 * *consumed < len after MSS_DONE means the rest belongs to the next protocol. Returns 0
 * (see m->state), MESH_EPROTO (peer broke the protocol) or MESH_ENOTFOUND (dialer: the
 * peer refused every proposal). */
int mss_input(struct mss *m, const uint8_t *data, size_t len, size_t *consumed);

/* Bytes waiting to be sent; after sending them all, call mss_output_clear(). */
void mss_output(const struct mss *m, const uint8_t **data, size_t *len);
void mss_output_clear(struct mss *m);

/* Writes one message (varint length, line, '\n') for id into out (cap bytes). Returns the
 * bytes written, 0 if it does not fit. Exposed for tests and for pipelined dialers. */
size_t mss_encode_line(const char *id, uint8_t *out, size_t cap);

#endif
