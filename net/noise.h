/* noise.h - Noise_XX_25519_ChaChaPoly_SHA256 and the libp2p Noise secure channel.
 *
 * Two layers, both state machines without I/O:
 *  - noise_hs_*: the XX handshake of the Noise Protocol Framework (noiseprotocol.org
 *    noise.pdf rev 34: 4 crypto functions, 5.1 CipherState, 5.2 SymmetricState, 5.3
 *    HandshakeState, 7.5 pattern XX) on libsodium: X25519, ChaCha20-Poly1305 IETF (nonce =
 *    32 zero bits || 64-bit little-endian counter), SHA-256 and HMAC-SHA256 HKDF.
 *  - noise_conn_*: libp2p's use of it (libp2p/specs noise/README.md): 2-byte big-endian
 *    length-prefixed messages, the NoiseHandshakePayload (identity key + Ed25519 signature
 *    over "noise-libp2p-static-key:" || static X25519 key) in messages 2 and 3, then
 *    transport messages of at most 65535 bytes.
 * Not implemented: other patterns, rekey, early data / extensions (received ones are ignored).
 * One struct per connection, used by one thread at a time.
 */
#ifndef MESH_NET_NOISE_H
#define MESH_NET_NOISE_H

#include "net/identity.h"
#include "net/peer_id.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NOISE_PROTOCOL_NAME "Noise_XX_25519_ChaChaPoly_SHA256"
#define NOISE_MSS_ID "/noise"
#define NOISE_KEY_LEN 32
#define NOISE_TAG_LEN 16
#define NOISE_MAX_MSG 65535                              /* spec: a Noise message's cap */
#define NOISE_MAX_PLAINTEXT (NOISE_MAX_MSG - NOISE_TAG_LEN) /* per transport frame */

struct noise_cipher {
    uint8_t k[NOISE_KEY_LEN];
    uint64_t n;
    bool has_key;
};

/* HandshakeState for XX (spec 5.3). Holds secrets: noise_hs_wipe() when done. */
struct noise_hs {
    bool is_initiator;
    int msg_index; /* next message of the pattern: 0, 1, 2; 3 = finished */
    struct noise_cipher cs;
    uint8_t ck[32], h[32];
    uint8_t s_sk[32], s_pk[32]; /* local static */
    uint8_t e_sk[32], e_pk[32]; /* local ephemeral */
    bool has_fixed_e;           /* test vectors: e_sk given at init */
    uint8_t rs[32], re[32];     /* remote static and ephemeral */
};

/* Initializes the handshake with a prologue, the local static X25519 private key and,
 * for test vectors only, a fixed ephemeral private key (NULL: random at write time).
 * Returns 0 or MESH_ECRYPTO. */
int noise_hs_init(struct noise_hs *hs, bool is_initiator, const uint8_t *prologue,
                  size_t prologue_len, const uint8_t static_sk[32],
                  const uint8_t *fixed_ephemeral_sk);

/* Writes the next handshake message carrying payload into out (cap bytes).
 * Returns 0, MESH_EINVAL (not our turn), MESH_ERANGE (too big) or MESH_ECRYPTO. */
int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t payload_len,
                   uint8_t *out, size_t cap, size_t *out_len);

/* Reads the peer's next handshake message; its payload goes to payload (cap bytes).
 * Returns 0, MESH_EINVAL (not their turn), MESH_EPROTO (malformed), MESH_ECRYPTO
 * (authentication failed) or MESH_ERANGE. */
int noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t msg_len, uint8_t *payload,
                  size_t cap, size_t *payload_len);

/* After the third message: the two transport ciphers (spec Split()), for sending and
 * receiving from this side's point of view. Returns 0 or MESH_EINVAL. */
int noise_hs_split(struct noise_hs *hs, struct noise_cipher *send, struct noise_cipher *recv);

void noise_hs_wipe(struct noise_hs *hs);

/* AEAD with the cipher's key and counter (spec 5.1 EncryptWithAd / DecryptWithAd); the
 * counter advances on success. out needs len + NOISE_TAG_LEN (encrypt) or len - 16
 * (decrypt) bytes. Return 0, MESH_ECRYPTO (bad tag) or MESH_ERANGE (nonce exhausted). */
int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
                         const uint8_t *pt, size_t len, uint8_t *out);
int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
                         const uint8_t *ct, size_t len, uint8_t *out);

/* ---- libp2p secure channel ------------------------------------------------------------ */

enum noise_conn_state { NOISE_CONN_HANDSHAKE = 0, NOISE_CONN_READY, NOISE_CONN_FAILED };

struct noise_conn; /* heap object: holds a 64 KiB receive frame */

/* Starts a handshake as initiator (dialer) or responder. identity is borrowed for the
 * call. expected (may be NULL) is the peer ID the dialer wants: a different remote
 * identity fails the handshake. The initiator's first message is queued at once.
 * Returns 0, MESH_ENOMEM or MESH_ECRYPTO. */
int noise_conn_new(bool is_initiator, const struct identity *identity,
                   const struct peer_id *expected, struct noise_conn **out);
void noise_conn_free(struct noise_conn *c);

enum noise_conn_state noise_conn_state(const struct noise_conn *c);
/* The authenticated remote peer (valid once READY). */
const struct peer_id *noise_conn_remote(const struct noise_conn *c);

/* Feeds received bytes. During the handshake, handshake replies are queued for
 * noise_conn_output(). When READY, at most one transport frame is decrypted per call:
 * *plain / *plain_len (inside c, valid until the next call) are set when a frame completes.
 * *consumed tells how many input bytes were used; call again with the rest.
 * Returns 0, MESH_EPROTO, MESH_ECRYPTO (bad tag, bad signature, unexpected peer) or
 * MESH_EUNSUPPORTED (non-Ed25519 identity). After an error the state is FAILED. */
int noise_conn_input(struct noise_conn *c, const uint8_t *data, size_t len, size_t *consumed,
                     const uint8_t **plain, size_t *plain_len);

/* Handshake bytes waiting to be sent; clear after sending. */
void noise_conn_output(const struct noise_conn *c, const uint8_t **data, size_t *len);
void noise_conn_output_clear(struct noise_conn *c);

/* Bytes needed to seal len plaintext bytes (frames of NOISE_MAX_PLAINTEXT). */
size_t noise_conn_sealed_len(size_t len);

/* Encrypts plain into framed transport messages in out (cap >= noise_conn_sealed_len(len)).
 * Returns 0, MESH_EINVAL (not READY), MESH_ERANGE or MESH_ECRYPTO. */
int noise_conn_seal(struct noise_conn *c, const uint8_t *plain, size_t len, uint8_t *out,
                    size_t cap, size_t *out_len);

#endif
