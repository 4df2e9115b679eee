/* identity.h - this node's Ed25519 identity key: creation, storage, signing, verifying.
 *
 * Keys are kept on disk as the libp2p PrivateKey protobuf (peer-ids spec, "Keys"; Ed25519
 * Data = 32-byte seed || 32-byte public key) in DIR/identity.key, mode 0600. Public keys
 * travel as the canonical PublicKey protobuf (08 01 12 20 || key). Only Ed25519 keys are
 * supported, for signing and for verifying peers' signatures (RSA, secp256k1 and ECDSA
 * peers are refused with MESH_EUNSUPPORTED). Any thread; no shared state.
 */
#ifndef MESH_NET_IDENTITY_H
#define MESH_NET_IDENTITY_H

#include "net/peer_id.h"

#include <stddef.h>
#include <stdint.h>

/* Length of the canonical protobuf PublicKey of an Ed25519 key. */
#define IDENTITY_PUBKEY_PROTO_LEN 36
/* Length of the protobuf PrivateKey of an Ed25519 key. */
#define IDENTITY_PRIVKEY_PROTO_LEN 68
#define IDENTITY_SIG_LEN 64
#define IDENTITY_FILE_NAME "identity.key"

/* libp2p KeyType values. */
enum { IDENTITY_KEY_RSA = 0, IDENTITY_KEY_ED25519 = 1, IDENTITY_KEY_SECP256K1 = 2,
       IDENTITY_KEY_ECDSA = 3 };

/* An Ed25519 key pair and its peer ID. Holds a secret: wipe with identity_wipe(). */
struct identity {
    uint8_t sk[64]; /* libsodium secret key: seed || public key */
    uint8_t pk[32];
    struct peer_id id;
};

/* Fills id with a fresh random key pair. Returns 0 or MESH_ECRYPTO. */
int identity_generate(struct identity *id);

/* Derives the key pair from a 32-byte Ed25519 seed (RFC 8032 private key). */
int identity_from_seed(const uint8_t seed[32], struct identity *id);

/* Loads DIR/identity.key, or creates DIR (0700) and a new key (file mode 0600) if absent.
 * Refuses a key file readable by group or others. Returns 0, MESH_EIO, MESH_EPROTO (corrupt
 * file), MESH_EUNSUPPORTED (not Ed25519); message in err. */
int identity_load_or_create(const char *dir, struct identity *id, char *err, size_t err_cap);

/* Encodes the public key as the canonical PublicKey protobuf (IDENTITY_PUBKEY_PROTO_LEN). */
void identity_pubkey_proto(const uint8_t pk[32], uint8_t out[IDENTITY_PUBKEY_PROTO_LEN]);

/* Encodes / decodes the PrivateKey protobuf (Ed25519 only; decode also accepts the legacy
 * 96-byte Data form when its two public keys match). Returns 0, MESH_EPROTO or
 * MESH_EUNSUPPORTED. */
void identity_privkey_encode(const struct identity *id, uint8_t out[IDENTITY_PRIVKEY_PROTO_LEN]);
int identity_privkey_decode(const uint8_t *b, size_t len, struct identity *id);

/* Decodes a PublicKey protobuf holding an Ed25519 key into pk. Returns 0, MESH_EPROTO (not a
 * valid PublicKey) or MESH_EUNSUPPORTED (another key type). */
int identity_pubkey_decode(const uint8_t *b, size_t len, uint8_t pk[32]);

/* Signs msg with the identity key into sig (IDENTITY_SIG_LEN bytes). */
void identity_sign(const struct identity *id, const uint8_t *msg, size_t msg_len,
                   uint8_t sig[IDENTITY_SIG_LEN]);

/* Verifies sig over msg with a PublicKey protobuf. Returns 0, MESH_ECRYPTO (bad signature),
 * MESH_EPROTO (bad key encoding) or MESH_EUNSUPPORTED (key type other than Ed25519). */
int identity_verify(const uint8_t *pub_proto, size_t pub_len, const uint8_t *msg,
                    size_t msg_len, const uint8_t *sig, size_t sig_len);

/* Wipes the secret key. */
void identity_wipe(struct identity *id);

#endif
