/* noise.c - Noise XX handshake and the libp2p Noise channel (see noise.h).
 *
 * Spec references are to noise.pdf revision 34 and libp2p/specs noise/README.md. Every
 * function that holds key material in locals wipes it at its single exit.
 */
#include "net/noise.h"

#include "core/err.h"
#include "noise.pb-c.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define SIG_PREFIX "noise-libp2p-static-key:"
#define HS_OUT_CAP 1024 /* our handshake messages are ~200 bytes */

/* ---- crypto functions (spec 4) -------------------------------------------------------- */

static void hmac(const uint8_t key[32], const uint8_t *a, size_t a_len, const uint8_t *b,
                 size_t b_len, uint8_t out[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, 32);
    crypto_auth_hmacsha256_update(&st, a, a_len);
    if (b_len) crypto_auth_hmacsha256_update(&st, b, b_len);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* HKDF(chaining_key, ikm) with two outputs (spec 4.3). */
static void hkdf2(const uint8_t ck[32], const uint8_t *ikm, size_t ikm_len, uint8_t out1[32],
                  uint8_t out2[32])
{
    uint8_t temp[32], one = 0x01, two = 0x02;
    hmac(ck, ikm, ikm_len, NULL, 0, temp);
    hmac(temp, &one, 1, NULL, 0, out1);
    hmac(temp, out1, 32, &two, 1, out2);
    sodium_memzero(temp, sizeof temp);
}

/* ---- CipherState (spec 5.1) ----------------------------------------------------------- */

static void make_nonce(uint64_t n, uint8_t nonce[12])
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
                         const uint8_t *pt, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    unsigned long long clen;
    if (c->n == UINT64_MAX) return MESH_ERANGE; /* 2^64-1 is reserved */
    make_nonce(c->n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, pt, len, ad, ad_len, NULL, nonce,
                                                  c->k) != 0)
        return MESH_ECRYPTO;
    c->n++;
    return 0;
}

int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ad, size_t ad_len,
                         const uint8_t *ct, size_t len, uint8_t *out)
{
    uint8_t nonce[12];
    unsigned long long plen;
    if (len < NOISE_TAG_LEN) return MESH_EPROTO;
    if (c->n == UINT64_MAX) return MESH_ERANGE;
    make_nonce(c->n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &plen, NULL, ct, len, ad, ad_len, nonce,
                                                  c->k) != 0)
        return MESH_ECRYPTO;
    c->n++;
    return 0;
}

/* ---- SymmetricState (spec 5.2) -------------------------------------------------------- */

static void mix_hash(struct noise_hs *hs, const uint8_t *data, size_t len)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, hs->h, 32);
    crypto_hash_sha256_update(&st, data, len);
    crypto_hash_sha256_final(&st, hs->h);
}

static void mix_key(struct noise_hs *hs, const uint8_t ikm[32])
{
    uint8_t temp_k[32];
    hkdf2(hs->ck, ikm, 32, hs->ck, temp_k);
    memcpy(hs->cs.k, temp_k, 32);
    hs->cs.n = 0;
    hs->cs.has_key = true;
    sodium_memzero(temp_k, sizeof temp_k);
}

/* MixKey(DH(sk, pk)); a low-order remote key (all-zero result) is refused. */
static int mix_dh(struct noise_hs *hs, const uint8_t sk[32], const uint8_t pk[32])
{
    uint8_t shared[32];
    int rc = 0;
    if (crypto_scalarmult(shared, sk, pk) != 0) rc = MESH_ECRYPTO;
    else mix_key(hs, shared);
    sodium_memzero(shared, sizeof shared);
    return rc;
}

static int encrypt_and_hash(struct noise_hs *hs, const uint8_t *pt, size_t len, uint8_t *out,
                            size_t cap, size_t *out_len)
{
    size_t need = len + (hs->cs.has_key ? NOISE_TAG_LEN : 0);
    if (need > cap) return MESH_ERANGE;
    if (hs->cs.has_key) {
        int rc = noise_cipher_encrypt(&hs->cs, hs->h, 32, pt, len, out);
        if (rc) return rc;
    } else {
        if (len) memmove(out, pt, len);
    }
    mix_hash(hs, out, need);
    *out_len = need;
    return 0;
}

static int decrypt_and_hash(struct noise_hs *hs, const uint8_t *ct, size_t len, uint8_t *out,
                            size_t cap, size_t *out_len)
{
    uint8_t h_before[32];
    size_t plen = len;
    if (hs->cs.has_key) {
        if (len < NOISE_TAG_LEN) return MESH_EPROTO;
        plen = len - NOISE_TAG_LEN;
    }
    if (plen > cap) return MESH_ERANGE;
    memcpy(h_before, hs->h, 32);
    mix_hash(hs, ct, len); /* h covers the ciphertext; ct may alias out, so hash first */
    if (hs->cs.has_key) {
        int rc = noise_cipher_decrypt(&hs->cs, h_before, 32, ct, len, out);
        if (rc) return rc;
    } else {
        if (len) memmove(out, ct, len);
    }
    *out_len = plen;
    return 0;
}

/* ---- HandshakeState, pattern XX (spec 5.3, 7.5) --------------------------------------- */

int noise_hs_init(struct noise_hs *hs, bool is_initiator, const uint8_t *prologue,
                  size_t prologue_len, const uint8_t static_sk[32],
                  const uint8_t *fixed_ephemeral_sk)
{
    memset(hs, 0, sizeof *hs);
    if (sodium_init() < 0) return MESH_ECRYPTO;
    hs->is_initiator = is_initiator;
    /* The protocol name is exactly HASHLEN (32) bytes, so h = name, unpadded. */
    _Static_assert(sizeof NOISE_PROTOCOL_NAME - 1 == 32, "name must be HASHLEN bytes");
    memcpy(hs->h, NOISE_PROTOCOL_NAME, 32);
    memcpy(hs->ck, hs->h, 32);
    mix_hash(hs, prologue, prologue_len);
    memcpy(hs->s_sk, static_sk, 32);
    crypto_scalarmult_base(hs->s_pk, hs->s_sk);
    if (fixed_ephemeral_sk) {
        memcpy(hs->e_sk, fixed_ephemeral_sk, 32);
        hs->has_fixed_e = true;
    }
    return 0;
}

static void make_ephemeral(struct noise_hs *hs)
{
    if (!hs->has_fixed_e) randombytes_buf(hs->e_sk, 32);
    crypto_scalarmult_base(hs->e_pk, hs->e_sk);
}

int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t payload_len,
                   uint8_t *out, size_t cap, size_t *out_len)
{
    size_t o = 0, n;
    int rc;

    *out_len = 0;
    if (hs->msg_index > 2 || (hs->msg_index % 2 == 0) != hs->is_initiator) return MESH_EINVAL;
    switch (hs->msg_index) {
    case 0: /* -> e */
        if (cap < 32) return MESH_ERANGE;
        make_ephemeral(hs);
        memcpy(out, hs->e_pk, 32);
        mix_hash(hs, hs->e_pk, 32);
        o = 32;
        break;
    case 1: /* <- e, ee, s, es */
        if (cap < 32) return MESH_ERANGE;
        make_ephemeral(hs);
        memcpy(out, hs->e_pk, 32);
        mix_hash(hs, hs->e_pk, 32);
        o = 32;
        if ((rc = mix_dh(hs, hs->e_sk, hs->re))) return rc;
        if ((rc = encrypt_and_hash(hs, hs->s_pk, 32, out + o, cap - o, &n))) return rc;
        o += n;
        if ((rc = mix_dh(hs, hs->s_sk, hs->re))) return rc;
        break;
    case 2: /* -> s, se */
        if ((rc = encrypt_and_hash(hs, hs->s_pk, 32, out, cap, &n))) return rc;
        o = n;
        if ((rc = mix_dh(hs, hs->s_sk, hs->re))) return rc;
        break;
    }
    if ((rc = encrypt_and_hash(hs, payload, payload_len, out + o, cap - o, &n))) return rc;
    *out_len = o + n;
    hs->msg_index++;
    return 0;
}

int noise_hs_read(struct noise_hs *hs, const uint8_t *msg, size_t msg_len, uint8_t *payload,
                  size_t cap, size_t *payload_len)
{
    size_t i = 0, n;
    int rc;

    *payload_len = 0;
    if (hs->msg_index > 2 || (hs->msg_index % 2 == 0) == hs->is_initiator) return MESH_EINVAL;
    switch (hs->msg_index) {
    case 0: /* -> e */
        if (msg_len < 32) return MESH_EPROTO;
        memcpy(hs->re, msg, 32);
        mix_hash(hs, hs->re, 32);
        i = 32;
        break;
    case 1: /* <- e, ee, s, es */
        if (msg_len < 32 + 32 + NOISE_TAG_LEN) return MESH_EPROTO;
        memcpy(hs->re, msg, 32);
        mix_hash(hs, hs->re, 32);
        i = 32;
        if ((rc = mix_dh(hs, hs->e_sk, hs->re))) return rc;
        if ((rc = decrypt_and_hash(hs, msg + i, 48, hs->rs, 32, &n))) return rc;
        i += 48;
        if ((rc = mix_dh(hs, hs->e_sk, hs->rs))) return rc;
        break;
    case 2: /* -> s, se */
        if (msg_len < 48) return MESH_EPROTO;
        if ((rc = decrypt_and_hash(hs, msg, 48, hs->rs, 32, &n))) return rc;
        i = 48;
        if ((rc = mix_dh(hs, hs->e_sk, hs->rs))) return rc;
        break;
    }
    if ((rc = decrypt_and_hash(hs, msg + i, msg_len - i, payload, cap, payload_len))) return rc;
    hs->msg_index++;
    return 0;
}

int noise_hs_split(struct noise_hs *hs, struct noise_cipher *send, struct noise_cipher *recv)
{
    uint8_t k1[32], k2[32];
    memset(send, 0, sizeof *send);
    memset(recv, 0, sizeof *recv);
    if (hs->msg_index != 3) return MESH_EINVAL;
    hkdf2(hs->ck, NULL, 0, k1, k2);
    /* The initiator sends with the first key, the responder with the second. */
    memcpy(send->k, hs->is_initiator ? k1 : k2, 32);
    memcpy(recv->k, hs->is_initiator ? k2 : k1, 32);
    send->has_key = recv->has_key = true;
    sodium_memzero(k1, sizeof k1);
    sodium_memzero(k2, sizeof k2);
    return 0;
}

void noise_hs_wipe(struct noise_hs *hs)
{
    sodium_memzero(hs, sizeof *hs);
}

/* ---- libp2p channel ------------------------------------------------------------------- */

struct noise_conn {
    enum noise_conn_state state;
    bool is_initiator, has_expected;
    struct peer_id expected, remote;
    struct noise_hs hs;
    uint8_t payload[256]; /* our NoiseHandshakePayload */
    size_t payload_len;
    struct noise_cipher send, recv;
    uint8_t out[HS_OUT_CAP];
    size_t out_len;
    uint8_t frame[2 + NOISE_MAX_MSG]; /* one incoming message with its length prefix */
    size_t frame_len;
    uint8_t plain[NOISE_MAX_MSG];
};

/* NoiseHandshakePayload: our identity key and its signature over our static X25519 key. */
static int build_payload(struct noise_conn *c, const struct identity *id)
{
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN], sig[IDENTITY_SIG_LEN];
    uint8_t msg[sizeof SIG_PREFIX - 1 + 32];
    P2pnoise__NoiseHandshakePayload p = P2PNOISE__NOISE_HANDSHAKE_PAYLOAD__INIT;

    identity_pubkey_proto(id->pk, pub);
    memcpy(msg, SIG_PREFIX, sizeof SIG_PREFIX - 1);
    memcpy(msg + sizeof SIG_PREFIX - 1, c->hs.s_pk, 32);
    identity_sign(id, msg, sizeof msg, sig);
    p.has_identity_key = p.has_identity_sig = 1;
    p.identity_key.data = pub;
    p.identity_key.len = sizeof pub;
    p.identity_sig.data = sig;
    p.identity_sig.len = sizeof sig;
    if (p2pnoise__noise_handshake_payload__get_packed_size(&p) > sizeof c->payload)
        return MESH_ERANGE;
    c->payload_len = p2pnoise__noise_handshake_payload__pack(&p, c->payload);
    return 0;
}

/* Checks the peer's payload against the static key it used in the handshake (hs.rs). */
static int verify_payload(struct noise_conn *c, const uint8_t *b, size_t len)
{
    uint8_t msg[sizeof SIG_PREFIX - 1 + 32];
    int rc;
    P2pnoise__NoiseHandshakePayload *p = p2pnoise__noise_handshake_payload__unpack(NULL, len, b);

    if (!p) return MESH_EPROTO;
    if (!p->has_identity_key || !p->has_identity_sig) {
        rc = MESH_EPROTO;
        goto out;
    }
    memcpy(msg, SIG_PREFIX, sizeof SIG_PREFIX - 1);
    memcpy(msg + sizeof SIG_PREFIX - 1, c->hs.rs, 32);
    rc = identity_verify(p->identity_key.data, p->identity_key.len, msg, sizeof msg,
                         p->identity_sig.data, p->identity_sig.len);
    if (rc) goto out;
    rc = peer_id_from_pubkey_proto(p->identity_key.data, p->identity_key.len, &c->remote);
    if (rc) goto out;
    if (c->has_expected && !peer_id_equal(&c->expected, &c->remote)) rc = MESH_ECRYPTO;
out:
    p2pnoise__noise_handshake_payload__free_unpacked(p, NULL);
    return rc;
}

/* Writes the next handshake message, with its 2-byte length, to the output queue. */
static int queue_hs_message(struct noise_conn *c, const uint8_t *payload, size_t payload_len)
{
    size_t n;
    int rc;
    if (c->out_len + 2 > sizeof c->out) return MESH_ERANGE;
    rc = noise_hs_write(&c->hs, payload, payload_len, c->out + c->out_len + 2,
                        sizeof c->out - c->out_len - 2, &n);
    if (rc) return rc;
    c->out[c->out_len] = (uint8_t)(n >> 8);
    c->out[c->out_len + 1] = (uint8_t)n;
    c->out_len += 2 + n;
    return 0;
}

static int finish_handshake(struct noise_conn *c)
{
    int rc = noise_hs_split(&c->hs, &c->send, &c->recv);
    noise_hs_wipe(&c->hs);
    if (!rc) c->state = NOISE_CONN_READY;
    return rc;
}

int noise_conn_new(bool is_initiator, const struct identity *identity,
                   const struct peer_id *expected, struct noise_conn **out)
{
    uint8_t static_sk[32];
    int rc;
    struct noise_conn *c = calloc(1, sizeof *c);

    *out = NULL;
    if (!c) return MESH_ENOMEM;
    c->is_initiator = is_initiator;
    if (expected && expected->len) {
        c->expected = *expected;
        c->has_expected = true;
    }
    if (sodium_init() < 0) {
        rc = MESH_ECRYPTO;
        goto out;
    }
    randombytes_buf(static_sk, sizeof static_sk); /* a fresh static key per connection */
    if ((rc = noise_hs_init(&c->hs, is_initiator, NULL, 0, static_sk, NULL))) goto out;
    if ((rc = build_payload(c, identity))) goto out;
    /* -> e, with an empty payload (libp2p: identities travel in messages 2 and 3) */
    if (is_initiator) rc = queue_hs_message(c, NULL, 0);
out:
    sodium_memzero(static_sk, sizeof static_sk);
    if (rc) {
        noise_conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void noise_conn_free(struct noise_conn *c)
{
    if (!c) return;
    sodium_memzero(c, sizeof *c);
    free(c);
}

enum noise_conn_state noise_conn_state(const struct noise_conn *c)
{
    return c->state;
}

const struct peer_id *noise_conn_remote(const struct noise_conn *c)
{
    return &c->remote;
}

void noise_conn_output(const struct noise_conn *c, const uint8_t **data, size_t *len)
{
    *data = c->out;
    *len = c->out_len;
}

void noise_conn_output_clear(struct noise_conn *c)
{
    c->out_len = 0;
}

/* One complete handshake message from the peer. */
static int on_handshake_msg(struct noise_conn *c, const uint8_t *msg, size_t len)
{
    size_t plen;
    int rc = noise_hs_read(&c->hs, msg, len, c->plain, sizeof c->plain, &plen);
    if (rc) return rc == MESH_EINVAL ? MESH_EPROTO : rc;
    if (c->hs.msg_index == 1) /* responder got -> e; answer <- e, ee, s, es + identity */
        return queue_hs_message(c, c->payload, c->payload_len);
    if (c->hs.msg_index == 2) { /* initiator got the responder's identity */
        if ((rc = verify_payload(c, c->plain, plen))) return rc;
        if ((rc = queue_hs_message(c, c->payload, c->payload_len))) return rc;
        return finish_handshake(c);
    }
    /* responder got -> s, se + identity */
    if ((rc = verify_payload(c, c->plain, plen))) return rc;
    return finish_handshake(c);
}

int noise_conn_input(struct noise_conn *c, const uint8_t *data, size_t len, size_t *consumed,
                     const uint8_t **plain, size_t *plain_len)
{
    size_t i = 0;
    int rc = 0;

    *consumed = 0;
    *plain = NULL;
    *plain_len = 0;
    if (c->state == NOISE_CONN_FAILED) return MESH_EPROTO;
    while (i < len) {
        /* Gather the 2-byte length, then the message. */
        size_t want = c->frame_len < 2 ? 2 : 2 + ((size_t)c->frame[0] << 8 | c->frame[1]);
        size_t take = want - c->frame_len;
        if (take > len - i) take = len - i;
        memcpy(c->frame + c->frame_len, data + i, take);
        c->frame_len += take;
        i += take;
        if (c->frame_len < 2) break;
        size_t msg_len = (size_t)c->frame[0] << 8 | c->frame[1];
        if (c->frame_len < 2 + msg_len) continue;
        c->frame_len = 0;
        if (c->state == NOISE_CONN_HANDSHAKE) {
            rc = on_handshake_msg(c, c->frame + 2, msg_len);
            if (rc || c->state == NOISE_CONN_READY) break;
            continue;
        }
        if (msg_len < NOISE_TAG_LEN) {
            rc = MESH_EPROTO;
            break;
        }
        rc = noise_cipher_decrypt(&c->recv, NULL, 0, c->frame + 2, msg_len, c->plain);
        if (rc) break;
        *plain = c->plain;
        *plain_len = msg_len - NOISE_TAG_LEN;
        break;
    }
    *consumed = i;
    if (rc) {
        c->state = NOISE_CONN_FAILED;
        *plain = NULL;
        *plain_len = 0;
    }
    return rc;
}

size_t noise_conn_sealed_len(size_t len)
{
    size_t frames = len == 0 ? 1 : (len + NOISE_MAX_PLAINTEXT - 1) / NOISE_MAX_PLAINTEXT;
    return len + frames * (2 + NOISE_TAG_LEN);
}

int noise_conn_seal(struct noise_conn *c, const uint8_t *plain, size_t len, uint8_t *out,
                    size_t cap, size_t *out_len)
{
    size_t o = 0, i = 0;
    *out_len = 0;
    if (c->state != NOISE_CONN_READY) return MESH_EINVAL;
    if (cap < noise_conn_sealed_len(len)) return MESH_ERANGE;
    do {
        size_t n = len - i > NOISE_MAX_PLAINTEXT ? NOISE_MAX_PLAINTEXT : len - i;
        int rc = noise_cipher_encrypt(&c->send, NULL, 0, plain + i, n, out + o + 2);
        if (rc) return rc;
        out[o] = (uint8_t)((n + NOISE_TAG_LEN) >> 8);
        out[o + 1] = (uint8_t)(n + NOISE_TAG_LEN);
        o += 2 + n + NOISE_TAG_LEN;
        i += n;
    } while (i < len);
    *out_len = o;
    return 0;
}
