/* multiaddr.h - multiaddrs: binary and text forms (multiformats/multiaddr, libp2p/specs
 * addressing/). Supported protocols: ip4, ip6, tcp, udp, dns, dns4, dns6, p2p (text alias
 * ipfs) and p2p-circuit; anything else is refused as unsupported. Parsing is strict: every
 * component must be complete and minimal, ports are 0..65535 in decimal, ip4 is dotted decimal
 * without leading zeros. A multiaddr is a plain value (fixed buffer, copy with '='). No I/O;
 * any thread.
 */
#ifndef MESH_NET_MULTIADDR_H
#define MESH_NET_MULTIADDR_H

#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct sockaddr_storage;

#define MULTIADDR_MAX_LEN 256  /* binary bytes */
#define MULTIADDR_TEXT_CAP 1024 /* enough for the text of any MULTIADDR_MAX_LEN binary form */

/* Protocol codes (multicodec table). */
enum {
    MA_IP4 = 4,
    MA_TCP = 6,
    MA_UDP = 273,
    MA_DNS = 53,
    MA_DNS4 = 54,
    MA_DNS6 = 55,
    MA_IP6 = 41,
    MA_P2P_CIRCUIT = 290,
    MA_P2P = 421,
};

struct multiaddr {
    size_t len;
    uint8_t bytes[MULTIADDR_MAX_LEN];
};

/* One component while iterating: protocol code and its raw value bytes (inside the
 * multiaddr; for dns and p2p without the varint length prefix). */
struct multiaddr_part {
    uint32_t code;
    const uint8_t *value;
    size_t value_len;
};

/* Validates binary bytes and copies them into out. Returns 0, MESH_EPROTO (malformed),
 * MESH_EUNSUPPORTED (unknown protocol) or MESH_ERANGE (longer than MULTIADDR_MAX_LEN). */
int multiaddr_from_bytes(const uint8_t *b, size_t len, struct multiaddr *out);

/* Parses text ("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."). Same codes as above. */
int multiaddr_from_text(const char *text, struct multiaddr *out);

/* Writes the canonical text form. Returns 0 or MESH_ERANGE. */
int multiaddr_to_text(const struct multiaddr *ma, char *buf, size_t cap);

/* Iteration: *pos starts at 0; returns 1 and fills *part while components remain, 0 at the
 * end. Only for multiaddrs already validated (from_bytes/from_text/build helpers). */
int multiaddr_next(const struct multiaddr *ma, size_t *pos, struct multiaddr_part *part);

/* Appends /p2p/<id>. Returns 0 or MESH_ERANGE. */
int multiaddr_append_p2p(struct multiaddr *ma, const struct peer_id *id);

/* Finds the last /p2p component. Returns 0 or MESH_ENOTFOUND. */
int multiaddr_peer_id(const struct multiaddr *ma, struct peer_id *out);

/* /ip4|ip6/A/tcp/P from a socket address. Returns 0 or MESH_EUNSUPPORTED. */
int multiaddr_from_sockaddr(const struct sockaddr *sa, struct multiaddr *out);

/* Socket address of a multiaddr that starts /ip4|ip6/A/tcp/P (anything may follow, e.g.
 * /p2p). Returns 0 or MESH_EUNSUPPORTED (dns, udp, circuit...). */
int multiaddr_to_sockaddr(const struct multiaddr *ma, struct sockaddr_storage *out);

bool multiaddr_equal(const struct multiaddr *a, const struct multiaddr *b);

#endif
