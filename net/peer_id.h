/* peer_id.h - libp2p peer IDs: multihash bytes, base58btc text, CIDv1 text.
 *
 * Follows libp2p/specs peer-ids/peer-ids.md: a peer ID is the multihash of the canonical
 * protobuf PublicKey; identity multihash (code 0x00) when that encoding is <= 42 bytes
 * (Ed25519: 38 bytes, "12D3KooW..."), else sha2-256 (code 0x12, "Qm..."). Text is
 * base58btc of the multihash; parsing also accepts the CIDv1 form (multibase 'b' base32,
 * codec libp2p-key 0x72). Pure functions, no I/O, no allocation; any thread.
 */
#ifndef MESH_NET_PEER_ID_H
#define MESH_NET_PEER_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest multihash we accept: identity multihash of a 42-byte key + 2 header bytes. */
#define PEER_ID_MAX_LEN 48
/* Longest base58btc text of a PEER_ID_MAX_LEN multihash, plus the NUL. */
#define PEER_ID_TEXT_CAP 72

/* Multihash codes used by peer IDs. */
enum { PEER_ID_MH_IDENTITY = 0x00, PEER_ID_MH_SHA256 = 0x12 };

/* A peer ID: the multihash bytes. Plain value; copy with '='. len == 0 means "none". */
struct peer_id {
    uint8_t len;
    uint8_t bytes[PEER_ID_MAX_LEN];
};

/* Peer ID of a serialized protobuf PublicKey (pub, pub_len bytes): identity multihash if
 * pub_len <= 42, else sha2-256. Returns 0 or MESH_EINVAL (empty input). */
int peer_id_from_pubkey_proto(const uint8_t *pub, size_t pub_len, struct peer_id *out);

/* Validates multihash bytes as a peer ID (identity with 1..42 byte digest, or sha2-256 with a
 * 32-byte digest) and copies them. Returns 0 or MESH_EPROTO. */
int peer_id_from_bytes(const uint8_t *b, size_t len, struct peer_id *out);

/* If the ID is an identity multihash, points *pub at the embedded protobuf PublicKey
 * (inside id) and sets *pub_len. Returns 0, or MESH_ENOTFOUND for hashed IDs. */
int peer_id_pubkey_proto(const struct peer_id *id, const uint8_t **pub, size_t *pub_len);

/* Writes the base58btc text (NUL-terminated) into buf. Returns 0 or MESH_ERANGE. */
int peer_id_to_text(const struct peer_id *id, char *buf, size_t cap);

/* Parses base58btc ("12D3KooW...", "Qm...") or CIDv1 ("bafz...") text of length len.
 * Returns 0 or MESH_EPROTO. */
int peer_id_from_text(const char *text, size_t len, struct peer_id *out);

/* True if both IDs hold the same multihash. */
bool peer_id_equal(const struct peer_id *a, const struct peer_id *b);

/* Base58btc (Bitcoin alphabet) helpers, also used for multiaddr /p2p text.
 * Encode: writes NUL-terminated text; 0 or MESH_ERANGE.
 * Decode: writes *out_len bytes into out (cap); 0, MESH_EPROTO (bad char) or MESH_ERANGE. */
int peer_id_base58_encode(const uint8_t *b, size_t len, char *buf, size_t cap);
int peer_id_base58_decode(const char *text, size_t len, uint8_t *out, size_t cap,
                          size_t *out_len);

#endif
