/* identify.h - the libp2p identify message (libp2p/specs identify/README.md,
 * /ipfs/id/1.0.0): encoding ours and decoding a peer's, as pure functions (the host sends and
 * receives them length-prefixed on a stream). Kept: agentVersion, protocolVersion, publicKey
 * (checked against the peer ID the Noise handshake authenticated), listenAddrs, observedAddr,
 * protocols. Ignored: signedPeerRecord. Unsupported multiaddrs in a peer's list are skipped;
 * extra protocols or addresses beyond our caps are dropped. Any thread; no shared state.
 */
#ifndef MESH_NET_IDENTIFY_H
#define MESH_NET_IDENTIFY_H

#include "net/multiaddr.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IDENTIFY_PROTOCOL_ID "/ipfs/id/1.0.0"
#define IDENTIFY_MAX_MSG 8192 /* js-libp2p's limit too */
#define IDENTIFY_MAX_PROTOCOLS 32
#define IDENTIFY_MAX_PROTOCOL_LEN 128
#define IDENTIFY_MAX_ADDRS 8

struct identify_info {
    char agent[64];
    char protocol_version[32];
    char protocols[IDENTIFY_MAX_PROTOCOLS][IDENTIFY_MAX_PROTOCOL_LEN];
    size_t n_protocols;
    struct multiaddr listen_addrs[IDENTIFY_MAX_ADDRS];
    size_t n_listen_addrs;
    struct multiaddr observed_addr; /* len 0: absent */
};

/* Encodes info plus our PublicKey protobuf into out (cap bytes). Returns 0 or MESH_ERANGE. */
int identify_encode(const struct identify_info *info, const uint8_t *pubkey_proto,
                    size_t pubkey_len, uint8_t *out, size_t cap, size_t *out_len);

/* Decodes a peer's message. If it carries a public key, that key must hash to peer.
 * Returns 0, MESH_EPROTO (malformed or over IDENTIFY_MAX_MSG) or MESH_ECRYPTO (key of
 * another peer). */
int identify_decode(const uint8_t *b, size_t len, const struct peer_id *peer,
                    struct identify_info *out);

#endif
