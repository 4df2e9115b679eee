/* member.c - admission to a private mesh (see member.h; wire format and signed encodings in
 * docs/PROTOCOL.md, "/meshllm/member/1").
 *
 * Signatures are Ed25519 (crypto_sign_detached) over a domain string followed by a fixed,
 * length-prefixed encoding of the decoded fields, never over protobuf bytes: "meshllm-cert-v1",
 * "meshllm-invite-v1", "meshllm-revoke-v1" (none is a prefix of another, so a signature made
 * for one kind can never verify as another). Does no I/O besides the owner key file and the
 * store; no networking.
 */
#include "node/member.h"

#include "core/err.h"
#include "member.pb-c.h"

#include <sodium.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CERT_DOMAIN "meshllm-cert-v1"
#define INVITE_DOMAIN "meshllm-invite-v1"
#define REVOKE_DOMAIN "meshllm-revoke-v1"
/* Largest signed encoding: the invite's, with MEMBER_INVITE_MAX_ADDRS full multiaddrs. */
#define SIGNED_CAP (64 + 64 + 16 + 8 + PEER_ID_MAX_LEN + 8 + \
                    MEMBER_INVITE_MAX_ADDRS * (2 + MULTIADDR_MAX_LEN))

/* One peer we admitted, and the subjects of its chain (to drop it when any is revoked). */
struct admitted {
    struct peer_id peer;
    uint64_t expires_at; /* 0 = never */
    bool owner_device;
    size_t n_chain;
    struct peer_id chain[MEMBER_CHAIN_MAX];
};

struct member {
    pthread_mutex_t mu; /* guards every field below, and is held across store calls */
    char dir[4096];
    struct store *st;       /* borrowed */
    struct identity id;     /* this node (secret) */
    bool has_owner;
    struct identity owner;  /* the mesh owner key, when this node holds it (secret) */
    uint8_t *cert;          /* my serialized certificate, NULL when not a member */
    size_t cert_len;
    struct member_chain chain; /* of cert */
    size_t n_admitted;
    struct admitted admitted[MEMBER_MAX_ADMITTED];
};

const char *member_refusal_str(enum member_refusal r)
{
    switch (r) {
    case MEMBER_OK: return "admitted";
    case MEMBER_R_MALFORMED: return "malformed message";
    case MEMBER_R_VERSION: return "unknown certificate version";
    case MEMBER_R_TOO_DEEP: return "certificate chain too long";
    case MEMBER_R_WRONG_MESH: return "certificate from another mesh";
    case MEMBER_R_BAD_SIGNATURE: return "bad signature";
    case MEMBER_R_ROOT_NOT_OWNER: return "chain does not start at the mesh owner";
    case MEMBER_R_ISSUER_MISMATCH: return "certificate issuer is not its parent's subject";
    case MEMBER_R_OWNER_DEVICE_FORGED: return "owner-device flag not set by the owner";
    case MEMBER_R_EXPIRED: return "certificate expired";
    case MEMBER_R_REVOKED: return "peer revoked";
    case MEMBER_R_SUBJECT_MISMATCH: return "certificate is for another peer";
    case MEMBER_R_NOT_MEMBER: return "this node is not a member of a mesh";
    case MEMBER_R_INVITE_NOT_MINE: return "invite not issued by this node";
    case MEMBER_R_INVITE_EXPIRED: return "invite expired";
    case MEMBER_R_INVITE_USED: return "invite already used";
    case MEMBER_R_INVITE_WRONG_PEER: return "invite is for another peer";
    case MEMBER_R_BAD_TOKEN: return "not an invite token";
    case MEMBER_R_NOT_OWNER: return "revocation not signed by the mesh owner";
    case MEMBER_R_UNEXPECTED: return "unexpected message";
    case MEMBER_R_INTERNAL: return "internal error";
    }
    return "unknown reason";
}

void member_mesh_id(const uint8_t owner_pk[32], char out[MEMBER_MESH_ID_CAP])
{
    static const char k_b32[] = "abcdefghijklmnopqrstuvwxyz234567"; /* RFC 4648 section 6 */
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, owner_pk, 32);
    memcpy(out, "mesh-", 5);
    size_t o = 5;
    uint32_t acc = 0;
    int bits = 0;
    for (int i = 0; i < 16; i++) { /* 128 bits -> 26 characters, last one 3 bits padded */
        acc = (acc << 8) | h[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = k_b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0) out[o++] = k_b32[(acc << (5 - bits)) & 31];
    out[o] = 0;
}

/* ---- signed encodings ---- */

struct enc {
    uint8_t b[SIGNED_CAP];
    size_t n;
    bool overflow;
};

static void enc_put(struct enc *e, const void *p, size_t n)
{
    if (e->overflow || n > sizeof e->b - e->n) {
        e->overflow = true;
        return;
    }
    memcpy(e->b + e->n, p, n);
    e->n += n;
}

static void enc_u8(struct enc *e, uint8_t v) { enc_put(e, &v, 1); }

static void enc_u64(struct enc *e, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (56 - 8 * i));
    enc_put(e, b, 8);
}

/* "meshllm-cert-v1" || version u32be || owner(32) || u8 len || subject || issuer(32) ||
 * issued_at u64be || expires_at u64be || owner_device u8 */
static void enc_cert(struct enc *e, uint32_t version, const struct member_link *l)
{
    e->n = 0;
    e->overflow = false;
    enc_put(e, CERT_DOMAIN, strlen(CERT_DOMAIN));
    uint8_t v[4] = {(uint8_t)(version >> 24), (uint8_t)(version >> 16), (uint8_t)(version >> 8),
                    (uint8_t)version};
    enc_put(e, v, 4);
    enc_put(e, l->owner_pk, 32);
    enc_u8(e, l->subject.len);
    enc_put(e, l->subject.bytes, l->subject.len);
    enc_put(e, l->issuer_pk, 32);
    enc_u64(e, l->issued_at);
    enc_u64(e, l->expires_at);
    enc_u8(e, l->owner_device ? 1 : 0);
}

/* "meshllm-revoke-v1" || owner(32) || u8 len || peer || revoked_at u64be */
static void enc_revoke(struct enc *e, const uint8_t owner[32], const struct peer_id *peer,
                       uint64_t revoked_at)
{
    e->n = 0;
    e->overflow = false;
    enc_put(e, REVOKE_DOMAIN, strlen(REVOKE_DOMAIN));
    enc_put(e, owner, 32);
    enc_u8(e, peer->len);
    enc_put(e, peer->bytes, peer->len);
    enc_u64(e, revoked_at);
}

/* The fields of an invite, decoded and size-checked. */
struct invite_fields {
    uint8_t inviter_sig[64]; /* binds the invite to the inviter certificate it carries */
    uint8_t id[MEMBER_INVITE_ID_LEN];
    uint64_t expires_at;
    struct peer_id bound; /* len 0 = none */
    bool single_use;
    size_t n_addrs;
    struct multiaddr addrs[MEMBER_INVITE_MAX_ADDRS];
};

/* "meshllm-invite-v1" || inviter cert signature(64) || id(16) || expires_at u64be ||
 * u8 len || bound peer || single_use u8 || u8 n_addrs || n x (u16be len || addr) */
static void enc_invite(struct enc *e, const struct invite_fields *f)
{
    e->n = 0;
    e->overflow = false;
    enc_put(e, INVITE_DOMAIN, strlen(INVITE_DOMAIN));
    enc_put(e, f->inviter_sig, 64);
    enc_put(e, f->id, sizeof f->id);
    enc_u64(e, f->expires_at);
    enc_u8(e, f->bound.len);
    enc_put(e, f->bound.bytes, f->bound.len);
    enc_u8(e, f->single_use ? 1 : 0);
    enc_u8(e, (uint8_t)f->n_addrs);
    for (size_t i = 0; i < f->n_addrs; i++) {
        uint8_t l[2] = {(uint8_t)(f->addrs[i].len >> 8), (uint8_t)f->addrs[i].len};
        enc_put(e, l, 2);
        enc_put(e, f->addrs[i].bytes, f->addrs[i].len);
    }
}

/* The Ed25519 key inside an identity-multihash peer ID. MESH_EINVAL for other IDs. */
static int peer_pk(const struct peer_id *p, uint8_t pk[32])
{
    const uint8_t *proto;
    size_t proto_len;
    if (peer_id_pubkey_proto(p, &proto, &proto_len)) return MESH_EINVAL;
    return identity_pubkey_decode(proto, proto_len, pk) ? MESH_EINVAL : 0;
}

/* ---- certificates ---- */

static bool bin_is(const ProtobufCBinaryData *b, size_t len) { return b->len == len && b->data; }

/* Decoded link from a MemberCert; false if a field has the wrong size. */
static bool link_from_pb(const Meshmember__MemberCert *c, struct member_link *l)
{
    memset(l, 0, sizeof *l);
    if (!bin_is(&c->owner_key, 32) || !bin_is(&c->issuer_key, 32) || !bin_is(&c->signature, 64))
        return false;
    if (peer_id_from_bytes(c->subject.data, c->subject.len, &l->subject)) return false;
    memcpy(l->owner_pk, c->owner_key.data, 32);
    memcpy(l->issuer_pk, c->issuer_key.data, 32);
    l->issued_at = c->issued_at;
    l->expires_at = c->expires_at;
    l->owner_device = c->owner_device;
    return true;
}

int member_cert_issue(const uint8_t owner_pk[32], const struct identity *issuer,
                      const uint8_t *parent, size_t parent_len, const struct peer_id *subject,
                      uint64_t issued_at, uint64_t expires_at, bool owner_device,
                      uint8_t **out, size_t *out_len)
{
    Meshmember__MemberCert c = MESHMEMBER__MEMBER_CERT__INIT;
    struct member_link l = {0};
    struct enc e;
    uint8_t sig[64], pk[32];

    *out = NULL;
    *out_len = 0;
    if (peer_pk(subject, pk) || parent_len > MEMBER_MSG_MAX) return MESH_EINVAL;
    memcpy(l.owner_pk, owner_pk, 32);
    l.subject = *subject;
    memcpy(l.issuer_pk, issuer->pk, 32);
    l.issued_at = issued_at;
    l.expires_at = expires_at;
    l.owner_device = owner_device;
    enc_cert(&e, MEMBER_CERT_VERSION, &l);
    crypto_sign_detached(sig, NULL, e.b, e.n, issuer->sk);
    c.version = MEMBER_CERT_VERSION;
    c.owner_key = (ProtobufCBinaryData){32, (uint8_t *)owner_pk};
    c.subject = (ProtobufCBinaryData){subject->len, (uint8_t *)subject->bytes};
    c.issuer_key = (ProtobufCBinaryData){32, (uint8_t *)issuer->pk};
    c.issued_at = issued_at;
    c.expires_at = expires_at;
    c.owner_device = owner_device;
    c.parent = (ProtobufCBinaryData){parent_len, (uint8_t *)parent};
    c.signature = (ProtobufCBinaryData){64, sig};
    size_t n = meshmember__member_cert__get_packed_size(&c);
    *out = malloc(n ? n : 1);
    if (!*out) return MESH_ENOMEM;
    *out_len = meshmember__member_cert__pack(&c, *out);
    return 0;
}

/* Verifies the chain whose leaf is already decoded (c). See member_cert_verify. */
static int chain_verify_pb(const Meshmember__MemberCert *c, const uint8_t *owner_pk,
                           const struct peer_id *subject, uint64_t now,
                           member_revoked_fn revoked, void *ctx, struct member_chain *chain,
                           enum member_refusal *reason)
{
    Meshmember__MemberCert *up[MEMBER_CHAIN_MAX] = {0}; /* unpacked parents, freed at out */
    const Meshmember__MemberCert *pb[MEMBER_CHAIN_MAX];
    struct member_chain ch = {0};
    struct enc e;
    int rc = MESH_EPROTO;
    enum member_refusal why = MEMBER_R_MALFORMED;

    /* Decode link by link: a parent is only parsed once the depth allows it. */
    pb[0] = c;
    for (ch.n = 1;; ch.n++) {
        const Meshmember__MemberCert *cur = pb[ch.n - 1];
        if (!link_from_pb(cur, &ch.link[ch.n - 1])) goto out;
        if (cur->version != MEMBER_CERT_VERSION) {
            why = MEMBER_R_VERSION;
            goto out;
        }
        if (cur->parent.len == 0) break;
        if (ch.n == MEMBER_CHAIN_MAX) {
            why = MEMBER_R_TOO_DEEP;
            goto out;
        }
        up[ch.n] = meshmember__member_cert__unpack(NULL, cur->parent.len, cur->parent.data);
        if (!up[ch.n]) goto out;
        pb[ch.n] = up[ch.n];
    }
    rc = MESH_ECRYPTO;
    const uint8_t *mesh = owner_pk ? owner_pk : ch.link[0].owner_pk;
    for (size_t i = 0; i < ch.n; i++)
        if (sodium_memcmp(ch.link[i].owner_pk, mesh, 32) != 0) {
            why = MEMBER_R_WRONG_MESH;
            goto out;
        }
    if (subject && !peer_id_equal(subject, &ch.link[0].subject)) {
        why = MEMBER_R_SUBJECT_MISMATCH;
        goto out;
    }
    for (size_t i = 0; i < ch.n; i++) {
        enc_cert(&e, pb[i]->version, &ch.link[i]);
        if (e.overflow || crypto_sign_verify_detached(pb[i]->signature.data, e.b, e.n,
                                                      ch.link[i].issuer_pk) != 0) {
            why = MEMBER_R_BAD_SIGNATURE;
            goto out;
        }
    }
    /* Root issued by the owner; every other link by its parent's subject. */
    if (memcmp(ch.link[ch.n - 1].issuer_pk, mesh, 32) != 0) {
        why = MEMBER_R_ROOT_NOT_OWNER;
        goto out;
    }
    for (size_t i = 0; i + 1 < ch.n; i++) {
        uint8_t pk[32];
        if (peer_pk(&ch.link[i + 1].subject, pk) || memcmp(pk, ch.link[i].issuer_pk, 32) != 0) {
            why = MEMBER_R_ISSUER_MISMATCH;
            goto out;
        }
        if (ch.link[i].owner_device) { /* only the owner key itself may say "owner device" */
            why = MEMBER_R_OWNER_DEVICE_FORGED;
            goto out;
        }
    }
    for (size_t i = 0; i < ch.n; i++) {
        uint64_t x = ch.link[i].expires_at;
        if (x != 0 && (now >= x || ch.link[i].issued_at >= x)) {
            why = MEMBER_R_EXPIRED;
            goto out;
        }
        if (x != 0 && (ch.expires_at == 0 || x < ch.expires_at)) ch.expires_at = x;
    }
    for (size_t i = 0; revoked && i < ch.n; i++) {
        bool is_revoked = false;
        int src = revoked(ctx, mesh, ch.link[i].subject.bytes, ch.link[i].subject.len,
                          &is_revoked);
        if (src) {
            rc = src;
            why = MEMBER_R_INTERNAL;
            goto out;
        }
        if (is_revoked) {
            why = MEMBER_R_REVOKED;
            goto out;
        }
    }
    rc = 0;
    why = MEMBER_OK;
    if (chain) *chain = ch;
out:
    for (size_t i = 0; i < MEMBER_CHAIN_MAX; i++) meshmember__member_cert__free_unpacked(up[i], NULL);
    *reason = why;
    return rc;
}

int member_cert_verify(const uint8_t *cert, size_t len, const uint8_t *owner_pk,
                       const struct peer_id *subject, uint64_t now, member_revoked_fn revoked,
                       void *ctx, struct member_chain *chain, enum member_refusal *reason)
{
    if (chain) memset(chain, 0, sizeof *chain);
    *reason = MEMBER_R_MALFORMED;
    if (!cert || len == 0 || len > MEMBER_MSG_MAX) return MESH_EPROTO;
    Meshmember__MemberCert *c = meshmember__member_cert__unpack(NULL, len, cert);
    if (!c) return MESH_EPROTO;
    int rc = chain_verify_pb(c, owner_pk, subject, now, revoked, ctx, chain, reason);
    meshmember__member_cert__free_unpacked(c, NULL);
    return rc;
}

/* ---- revocations ---- */

int member_revocation_make(const struct identity *owner, const struct peer_id *peer,
                           uint64_t revoked_at, uint8_t **out, size_t *out_len)
{
    Meshmember__Revocation r = MESHMEMBER__REVOCATION__INIT;
    struct enc e;
    uint8_t sig[64];

    *out = NULL;
    *out_len = 0;
    if (peer->len == 0 || peer->len > PEER_ID_MAX_LEN) return MESH_EINVAL;
    enc_revoke(&e, owner->pk, peer, revoked_at);
    crypto_sign_detached(sig, NULL, e.b, e.n, owner->sk);
    r.owner_key = (ProtobufCBinaryData){32, (uint8_t *)owner->pk};
    r.peer = (ProtobufCBinaryData){peer->len, (uint8_t *)peer->bytes};
    r.revoked_at = revoked_at;
    r.signature = (ProtobufCBinaryData){64, sig};
    size_t n = meshmember__revocation__get_packed_size(&r);
    *out = malloc(n);
    if (!*out) return MESH_ENOMEM;
    *out_len = meshmember__revocation__pack(&r, *out);
    return 0;
}

/* Checks a decoded revocation against the mesh owner key; fills *peer. */
static int revocation_check(const Meshmember__Revocation *r, const uint8_t owner_pk[32],
                            struct peer_id *peer, enum member_refusal *reason)
{
    struct enc e;
    *reason = MEMBER_R_MALFORMED;
    if (!bin_is(&r->owner_key, 32) || !bin_is(&r->signature, 64) ||
        peer_id_from_bytes(r->peer.data, r->peer.len, peer))
        return MESH_EPROTO;
    if (sodium_memcmp(r->owner_key.data, owner_pk, 32) != 0) {
        *reason = MEMBER_R_NOT_OWNER;
        return MESH_ECRYPTO;
    }
    enc_revoke(&e, owner_pk, peer, r->revoked_at);
    if (crypto_sign_verify_detached(r->signature.data, e.b, e.n, owner_pk) != 0) {
        *reason = MEMBER_R_BAD_SIGNATURE;
        return MESH_ECRYPTO;
    }
    *reason = MEMBER_OK;
    return 0;
}

/* ---- struct member ---- */

static int store_revoked(void *ctx, const uint8_t owner_pk[32], const uint8_t *peer,
                         size_t peer_len, bool *revoked)
{
    return store_revocation_exists(ctx, owner_pk, peer, peer_len, revoked, NULL, 0);
}

/* The owner key of the mesh this node is in (or owns); NULL when neither. Locked. */
static const uint8_t *mesh_owner(const struct member *m)
{
    if (m->cert) return m->chain.link[0].owner_pk;
    return m->has_owner ? m->owner.pk : NULL;
}

/* Drops admitted peers whose chain holds peer. If peer is in my own chain, I am no longer a
 * member either. Locked. */
static void drop_revoked(struct member *m, const struct peer_id *peer)
{
    for (size_t i = 0; i < m->n_admitted;) {
        bool hit = false;
        for (size_t k = 0; k < m->admitted[i].n_chain; k++)
            hit |= peer_id_equal(&m->admitted[i].chain[k], peer);
        if (hit)
            m->admitted[i] = m->admitted[--m->n_admitted];
        else
            i++;
    }
    for (size_t k = 0; m->cert && k < m->chain.n; k++)
        if (peer_id_equal(&m->chain.link[k].subject, peer)) {
            free(m->cert);
            m->cert = NULL;
            m->cert_len = 0;
            memset(&m->chain, 0, sizeof m->chain);
            break;
        }
}

/* Verifies and stores one decoded revocation for the mesh of owner_pk. Locked. */
static int revocation_add_pb(struct member *m, const Meshmember__Revocation *r,
                             const uint8_t owner_pk[32], bool *is_new,
                             enum member_refusal *reason)
{
    struct peer_id peer;
    uint8_t *b = NULL;
    *is_new = false;
    int rc = revocation_check(r, owner_pk, &peer, reason);
    if (rc) return rc;
    size_t n = meshmember__revocation__get_packed_size(r);
    if (!(b = malloc(n))) {
        *reason = MEMBER_R_INTERNAL;
        return MESH_ENOMEM;
    }
    n = meshmember__revocation__pack(r, b);
    rc = store_revocation_put(m->st, owner_pk, peer.bytes, peer.len, r->revoked_at, b, n,
                              is_new, NULL, NULL, 0);
    free(b);
    if (rc) {
        *reason = MEMBER_R_INTERNAL;
        return rc;
    }
    drop_revoked(m, &peer);
    return 0;
}

int member_revocation_add(struct member *m, const uint8_t *b, size_t len, bool *is_new,
                          enum member_refusal *reason)
{
    enum member_refusal why = MEMBER_R_MALFORMED;
    bool fresh = false;
    int rc = MESH_EPROTO;
    Meshmember__Revocation *r = NULL;

    pthread_mutex_lock(&m->mu);
    const uint8_t *owner = mesh_owner(m);
    if (!owner) {
        why = MEMBER_R_NOT_MEMBER;
        rc = MESH_ENOTFOUND;
        goto out;
    }
    if (!b || len == 0 || len > MEMBER_MSG_MAX ||
        !(r = meshmember__revocation__unpack(NULL, len, b)))
        goto out;
    uint8_t pk[32];
    memcpy(pk, owner, 32); /* owner may point into m->chain, which drop_revoked may clear */
    rc = revocation_add_pb(m, r, pk, &fresh, &why);
out:
    pthread_mutex_unlock(&m->mu);
    meshmember__revocation__free_unpacked(r, NULL);
    if (is_new) *is_new = fresh;
    if (reason) *reason = why;
    return rc;
}

int member_revocations_since(struct member *m, uint64_t after_seq, size_t max,
                             struct store_blob **out, size_t *n)
{
    int rc = 0;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&m->mu);
    const uint8_t *owner = mesh_owner(m);
    if (owner) rc = store_revocations_since(m->st, owner, after_seq, max, out, n, NULL, 0);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Owner key file: the libp2p PrivateKey protobuf, like identity.key. */
static int owner_key_load(struct member *m, char *err, size_t err_cap)
{
    char path[4200];
    uint8_t b[128];
    struct stat sb;
    int rc = 0;
    snprintf(path, sizeof path, "%s/%s", m->dir, MEMBER_OWNER_KEY_PATH);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return err_set(err, err_cap, err_from_errno(errno), "%s: %s", path, strerror(errno));
    }
    if (fstat(fd, &sb) != 0 || (sb.st_mode & 077)) {
        rc = err_set(err, err_cap, MESH_EIO,
                     "%s is readable by others: the mesh owner key must be private "
                     "(chmod 600 %s)",
                     path, path);
        goto out;
    }
    ssize_t n = read(fd, b, sizeof b);
    if (n < 0 || identity_privkey_decode(b, (size_t)n, &m->owner) != 0) {
        rc = err_set(err, err_cap, MESH_EPROTO, "%s: not a valid Ed25519 key file", path);
        goto out;
    }
    m->has_owner = true;
out:
    close(fd);
    sodium_memzero(b, sizeof b);
    return rc;
}

/* Writes the owner key to DATA_DIR/mesh/owner.key (0600) through a temporary file and a
 * rename, so a crash never leaves half a key. */
static int owner_key_save(struct member *m, const struct identity *owner, char *err,
                          size_t err_cap)
{
    char dir[4200], path[4200], tmp[4300];
    uint8_t b[IDENTITY_PRIVKEY_PROTO_LEN];
    int rc = 0, fd = -1;
    snprintf(dir, sizeof dir, "%s/mesh", m->dir);
    snprintf(path, sizeof path, "%s/%s", m->dir, MEMBER_OWNER_KEY_PATH);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = err_set(err, err_cap, err_from_errno(errno), "cannot create %s: %s", dir,
                     strerror(errno));
        goto out;
    }
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    identity_privkey_encode(owner, b);
    if (fd < 0 || write(fd, b, sizeof b) != (ssize_t)sizeof b || fsync(fd) != 0 ||
        rename(tmp, path) != 0) {
        rc = err_set(err, err_cap, err_from_errno(errno), "cannot write %s: %s", path,
                     strerror(errno));
        unlink(tmp);
    }
out:
    if (fd >= 0) close(fd);
    sodium_memzero(b, sizeof b);
    return rc;
}

/* Loads and re-verifies my stored certificate. Not being a member is not an error. Locked. */
static int cert_load(struct member *m, uint64_t now, char *err, size_t err_cap)
{
    uint8_t *c = NULL;
    size_t len = 0;
    enum member_refusal why;
    int rc = store_cert_get(m->st, &c, &len, err, err_cap);
    if (rc == MESH_ENOTFOUND) return 0;
    if (rc) return rc;
    if (member_cert_verify(c, len, NULL, &m->id.id, now, store_revoked, m->st, &m->chain,
                           &why) != 0) {
        free(c); /* kept in the store for inspection, out of use */
        memset(&m->chain, 0, sizeof m->chain);
        return 0;
    }
    m->cert = c;
    m->cert_len = len;
    return 0;
}

int member_open(const char *data_dir, struct store *st, uint64_t now, struct member **out,
                char *err, size_t err_cap)
{
    int rc;
    struct member *m;
    *out = NULL;
    if (sodium_init() < 0) return err_set(err, err_cap, MESH_ECRYPTO, "libsodium failed to start");
    if (strlen(data_dir) >= sizeof m->dir)
        return err_set(err, err_cap, MESH_ERANGE, "data directory path too long");
    if (!(m = calloc(1, sizeof *m))) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    snprintf(m->dir, sizeof m->dir, "%s", data_dir);
    m->st = st;
    if ((rc = identity_load_or_create(data_dir, &m->id, err, err_cap)) ||
        (rc = owner_key_load(m, err, err_cap)) ||
        (rc = cert_load(m, now, err, err_cap)))
        goto out;
    *out = m;
    m = NULL;
out:
    member_close(m);
    return rc;
}

void member_close(struct member *m)
{
    if (!m) return;
    identity_wipe(&m->id);
    identity_wipe(&m->owner);
    free(m->cert);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int member_mesh_create(struct member *m, bool force, uint64_t now, char *err, size_t err_cap)
{
    struct identity owner;
    uint8_t *c = NULL;
    size_t len = 0;
    enum member_refusal why;
    struct member_chain ch;
    char mesh[MEMBER_MESH_ID_CAP];
    int rc;

    memset(&owner, 0, sizeof owner);
    pthread_mutex_lock(&m->mu);
    uint8_t *old = NULL;
    size_t old_len = 0;
    bool has_cert = store_cert_get(m->st, &old, &old_len, NULL, 0) == 0;
    free(old);
    if (!force && (m->has_owner || has_cert)) {
        const uint8_t *o = mesh_owner(m);
        if (o) member_mesh_id(o, mesh);
        rc = err_set(err, err_cap, MESH_EINVAL,
                     "this node already belongs to %s; --force replaces it (and forgets "
                     "that mesh)",
                     o ? mesh : "a mesh");
        goto out;
    }
    if ((rc = identity_generate(&owner))) {
        err_set(err, err_cap, rc, "cannot generate the owner key");
        goto out;
    }
    /* Our own device: issued by the owner key, no expiry (revocation ends it). */
    if ((rc = member_cert_issue(owner.pk, &owner, NULL, 0, &m->id.id, now, 0, true, &c, &len))) {
        err_set(err, err_cap, rc, "cannot issue this node's certificate");
        goto out;
    }
    if ((rc = member_cert_verify(c, len, owner.pk, &m->id.id, now, NULL, NULL, &ch, &why))) {
        err_set(err, err_cap, rc, "own certificate does not verify: %s", member_refusal_str(why));
        goto out;
    }
    if ((force && (rc = store_mesh_reset(m->st, err, err_cap))) ||
        (rc = owner_key_save(m, &owner, err, err_cap)) ||
        (rc = store_cert_put(m->st, c, len, err, err_cap)))
        goto out;
    m->owner = owner;
    m->has_owner = true;
    free(m->cert);
    m->cert = c;
    m->cert_len = len;
    m->chain = ch;
    m->n_admitted = 0;
    c = NULL;
out:
    pthread_mutex_unlock(&m->mu);
    free(c);
    sodium_memzero(&owner, sizeof owner);
    return rc;
}

int member_info_get(struct member *m, struct member_info *out, char *err, size_t err_cap)
{
    int rc = 0;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    out->self = m->id.id;
    out->has_owner_key = m->has_owner;
    const uint8_t *owner = mesh_owner(m);
    if (owner) {
        memcpy(out->owner_pk, owner, 32);
        member_mesh_id(owner, out->mesh_id);
        rc = store_revocation_count(m->st, owner, &out->n_revocations, err, err_cap);
    }
    if (m->cert) {
        out->is_member = true;
        out->owner_device = m->chain.link[0].owner_device;
        memcpy(out->issuer_pk, m->chain.link[0].issuer_pk, 32);
        out->expires_at = m->chain.expires_at;
        out->depth = m->chain.n;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Re-verifies my certificate at now (it may have expired or been revoked since it was
 * loaded). Locked. Returns 0 or MESH_ENOTFOUND (not a member now). */
static int self_check(struct member *m, uint64_t now)
{
    enum member_refusal why;
    if (!m->cert) return MESH_ENOTFOUND;
    if (member_cert_verify(m->cert, m->cert_len, NULL, &m->id.id, now, store_revoked, m->st,
                           &m->chain, &why) != 0)
        return MESH_ENOTFOUND;
    return 0;
}

/* Wraps a packed body into a MemberMsg. */
static int msg_pack(Meshmember__MemberMsg *msg, uint8_t **out, size_t *out_len)
{
    size_t n = meshmember__member_msg__get_packed_size(msg);
    *out = NULL;
    *out_len = 0;
    if (n > MEMBER_MSG_MAX) return MESH_ERANGE;
    if (!(*out = malloc(n ? n : 1))) return MESH_ENOMEM;
    *out_len = meshmember__member_msg__pack(msg, *out);
    return 0;
}

/* Revocations to carry in a message: up to MEMBER_MSG_MAX_REVOCATIONS of the mesh, decoded
 * into v (caller frees each with free_unpacked). Locked. */
static int revs_collect(struct member *m, const uint8_t owner[32], Meshmember__Revocation **v,
                        size_t *n)
{
    struct store_blob *b = NULL;
    size_t nb = 0;
    *n = 0;
    int rc = store_revocations_since(m->st, owner, 0, MEMBER_MSG_MAX_REVOCATIONS, &b, &nb, NULL, 0);
    for (size_t i = 0; !rc && i < nb; i++) {
        Meshmember__Revocation *r = meshmember__revocation__unpack(NULL, b[i].len, b[i].bytes);
        if (r) v[(*n)++] = r; /* only what we verified ever entered the store */
    }
    store_blobs_free(b, nb);
    return rc;
}

static void revs_free(Meshmember__Revocation **v, size_t n)
{
    for (size_t i = 0; i < n; i++) meshmember__revocation__free_unpacked(v[i], NULL);
}

int member_hello_make(struct member *m, uint8_t **out, size_t *out_len)
{
    Meshmember__MemberMsg msg = MESHMEMBER__MEMBER_MSG__INIT;
    Meshmember__Hello h = MESHMEMBER__HELLO__INIT;
    Meshmember__Revocation *revs[MEMBER_MSG_MAX_REVOCATIONS];
    Meshmember__MemberCert *c = NULL;
    size_t n_revs = 0;
    int rc = MESH_ENOTFOUND;

    *out = NULL;
    *out_len = 0;
    pthread_mutex_lock(&m->mu);
    if (!m->cert) goto out;
    rc = MESH_ENOMEM;
    if (!(c = meshmember__member_cert__unpack(NULL, m->cert_len, m->cert))) goto out;
    if ((rc = revs_collect(m, m->chain.link[0].owner_pk, revs, &n_revs))) goto out;
    h.cert = c;
    h.n_revocations = n_revs;
    h.revocations = revs;
    msg.body_case = MESHMEMBER__MEMBER_MSG__BODY_HELLO;
    msg.hello = &h;
    rc = msg_pack(&msg, out, out_len);
out:
    pthread_mutex_unlock(&m->mu);
    revs_free(revs, n_revs);
    meshmember__member_cert__free_unpacked(c, NULL);
    return rc;
}

/* Unpacks a MemberMsg within the size limit; NULL if it is not one. */
static Meshmember__MemberMsg *msg_unpack(const uint8_t *b, size_t len)
{
    if (!b || len == 0 || len > MEMBER_MSG_MAX) return NULL;
    return meshmember__member_msg__unpack(NULL, len, b);
}

int member_msg_kind(const uint8_t *msg, size_t len)
{
    Meshmember__MemberMsg *m = msg_unpack(msg, len);
    int kind = MESH_EPROTO;
    if (m && m->body_case == MESHMEMBER__MEMBER_MSG__BODY_HELLO && m->hello)
        kind = MEMBER_MSG_HELLO;
    else if (m && m->body_case == MESHMEMBER__MEMBER_MSG__BODY_JOIN_REQUEST && m->join_request)
        kind = MEMBER_MSG_JOIN_REQUEST;
    else if (m && m->body_case == MESHMEMBER__MEMBER_MSG__BODY_JOIN_RESPONSE && m->join_response)
        kind = MEMBER_MSG_JOIN_RESPONSE;
    meshmember__member_msg__free_unpacked(m, NULL);
    return kind;
}

/* Adds the valid revocations of a peer's message; invalid ones are skipped (the peer may be
 * of another mesh: its certificate check then says so). Locked. */
static int revs_add(struct member *m, const uint8_t owner[32], Meshmember__Revocation **v,
                    size_t n, size_t *n_new)
{
    uint8_t pk[32];
    memcpy(pk, owner, 32); /* owner may point into m->chain, which a revocation may clear */
    *n_new = 0;
    for (size_t i = 0; i < n && i < MEMBER_MSG_MAX_REVOCATIONS; i++) {
        bool fresh;
        enum member_refusal why;
        int rc = revocation_add_pb(m, v[i], pk, &fresh, &why);
        if (rc && why == MEMBER_R_INTERNAL) return rc;
        if (!rc && fresh) (*n_new)++;
    }
    return 0;
}

/* Records an admitted peer. Locked. */
static int admit(struct member *m, const struct peer_id *peer, const struct member_chain *ch,
                 uint64_t now)
{
    struct admitted *a = NULL;
    for (size_t i = 0; i < m->n_admitted && !a; i++)
        if (peer_id_equal(&m->admitted[i].peer, peer)) a = &m->admitted[i];
    for (size_t i = 0; !a && m->n_admitted == MEMBER_MAX_ADMITTED && i < m->n_admitted;)
        if (m->admitted[i].expires_at && now >= m->admitted[i].expires_at)
            m->admitted[i] = m->admitted[--m->n_admitted];
        else
            i++;
    if (!a && m->n_admitted == MEMBER_MAX_ADMITTED) return MESH_EFULL;
    if (!a) a = &m->admitted[m->n_admitted++];
    a->peer = *peer;
    a->expires_at = ch->expires_at;
    a->owner_device = ch->link[0].owner_device;
    a->n_chain = ch->n;
    for (size_t k = 0; k < ch->n; k++) a->chain[k] = ch->link[k].subject;
    return 0;
}

int member_hello_handle(struct member *m, const struct peer_id *remote, const uint8_t *msg,
                        size_t len, uint64_t now, struct member_hello_result *res)
{
    struct member_chain ch;
    int rc = 0;
    Meshmember__MemberMsg *mm = msg_unpack(msg, len);

    memset(res, 0, sizeof *res);
    res->reason = MEMBER_R_MALFORMED;
    pthread_mutex_lock(&m->mu);
    if (!mm) goto out;
    if (mm->body_case != MESHMEMBER__MEMBER_MSG__BODY_HELLO || !mm->hello) {
        res->reason = MEMBER_R_UNEXPECTED;
        goto out;
    }
    const uint8_t *owner = mesh_owner(m);
    if (!owner) {
        res->reason = MEMBER_R_NOT_MEMBER;
        goto out;
    }
    uint8_t pk[32];
    memcpy(pk, owner, 32);
    /* Revocations first: a peer cannot be admitted on the strength of a chain its own hello
     * shows revoked. */
    if ((rc = revs_add(m, pk, mm->hello->revocations, mm->hello->n_revocations,
                       &res->n_new_revocations))) {
        res->reason = MEMBER_R_INTERNAL;
        goto out;
    }
    if (!mm->hello->cert) goto out;
    if (chain_verify_pb(mm->hello->cert, pk, remote, now, store_revoked, m->st, &ch,
                        &res->reason) != 0) {
        if (res->reason == MEMBER_R_INTERNAL) rc = MESH_EIO;
        goto out;
    }
    if ((rc = admit(m, remote, &ch, now))) {
        res->reason = MEMBER_R_INTERNAL;
        goto out;
    }
    res->admitted = true;
    res->owner_device = ch.link[0].owner_device;
    res->expires_at = ch.expires_at;
out:
    pthread_mutex_unlock(&m->mu);
    meshmember__member_msg__free_unpacked(mm, NULL);
    return rc;
}

bool member_is_admitted(struct member *m, const struct peer_id *peer, uint64_t now)
{
    bool ok = false;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_admitted && !ok; i++)
        ok = peer_id_equal(&m->admitted[i].peer, peer) &&
             (m->admitted[i].expires_at == 0 || now < m->admitted[i].expires_at);
    pthread_mutex_unlock(&m->mu);
    return ok;
}

bool member_is_own(struct member *m, const struct peer_id *peer)
{
    bool own = false;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_admitted && !own; i++)
        own = peer_id_equal(&m->admitted[i].peer, peer) && m->admitted[i].owner_device;
    pthread_mutex_unlock(&m->mu);
    return own;
}

void member_peer_forget(struct member *m, const struct peer_id *peer)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n_admitted; i++)
        if (peer_id_equal(&m->admitted[i].peer, peer)) {
            m->admitted[i] = m->admitted[--m->n_admitted];
            break;
        }
    pthread_mutex_unlock(&m->mu);
}

int member_revoke(struct member *m, const struct peer_id *peer, uint64_t now, char *err,
                  size_t err_cap)
{
    uint8_t *b = NULL, owner[32];
    size_t len = 0;
    bool fresh;
    int rc;

    pthread_mutex_lock(&m->mu);
    if (!m->has_owner) {
        rc = err_set(err, err_cap, MESH_ENOTFOUND,
                     "this node does not hold the mesh owner key (%s/%s); run revoke on the "
                     "device that created the mesh",
                     m->dir, MEMBER_OWNER_KEY_PATH);
        goto out;
    }
    if ((rc = member_revocation_make(&m->owner, peer, now, &b, &len))) {
        err_set(err, err_cap, rc, "cannot sign the revocation");
        goto out;
    }
    memcpy(owner, m->owner.pk, 32);
    if ((rc = store_revocation_put(m->st, owner, peer->bytes, peer->len, now, b, len, &fresh,
                                   NULL, err, err_cap)))
        goto out;
    drop_revoked(m, peer);
out:
    pthread_mutex_unlock(&m->mu);
    free(b);
    return rc;
}

/* ---- invites ---- */

/* Decodes and size-checks the fields of an invite (not its signature). */
static bool invite_fields_from_pb(const Meshmember__Invite *iv, struct invite_fields *f)
{
    memset(f, 0, sizeof *f);
    if (!iv->inviter_cert || !bin_is(&iv->inviter_cert->signature, 64) ||
        !bin_is(&iv->id, MEMBER_INVITE_ID_LEN) || !bin_is(&iv->signature, 64) ||
        iv->n_addrs > MEMBER_INVITE_MAX_ADDRS)
        return false;
    memcpy(f->inviter_sig, iv->inviter_cert->signature.data, 64);
    memcpy(f->id, iv->id.data, MEMBER_INVITE_ID_LEN);
    f->expires_at = iv->expires_at;
    if (iv->bound_peer.len && peer_id_from_bytes(iv->bound_peer.data, iv->bound_peer.len, &f->bound))
        return false;
    f->single_use = iv->single_use;
    for (size_t i = 0; i < iv->n_addrs; i++)
        if (multiaddr_from_bytes(iv->addrs[i].data, iv->addrs[i].len, &f->addrs[f->n_addrs++]))
            return false;
    return true;
}

int member_invite_make(struct member *m, const struct member_invite_opts *o, uint64_t now,
                       char **token, char *err, size_t err_cap)
{
    Meshmember__Invite iv = MESHMEMBER__INVITE__INIT;
    Meshmember__MemberCert *c = NULL;
    ProtobufCBinaryData addrs[MEMBER_INVITE_MAX_ADDRS];
    struct invite_fields f;
    struct enc e;
    uint8_t sig[64], *bin = NULL;
    char *text = NULL;
    int rc;

    *token = NULL;
    memset(&f, 0, sizeof f);
    pthread_mutex_lock(&m->mu);
    if (self_check(m, now)) {
        rc = err_set(err, err_cap, MESH_EINVAL,
                     "this node is not a member of a mesh (create one with 'meshllm mesh "
                     "create' or join one)");
        goto out;
    }
    if (m->chain.n >= MEMBER_CHAIN_MAX) {
        rc = err_set(err, err_cap, MESH_EINVAL,
                     "this node is %d invitations away from the owner, the most a mesh "
                     "allows; ask a device closer to the owner to invite",
                     MEMBER_CHAIN_MAX - 1);
        goto out;
    }
    if (o->expires_at <= now) {
        rc = err_set(err, err_cap, MESH_EINVAL, "the invite must expire in the future");
        goto out;
    }
    if (o->n_addrs) {
        f.n_addrs = o->n_addrs < MEMBER_INVITE_MAX_ADDRS ? o->n_addrs : MEMBER_INVITE_MAX_ADDRS;
        memcpy(f.addrs, o->addrs, f.n_addrs * sizeof *f.addrs);
    } else if ((rc = store_listen_addrs_get(m->st, f.addrs, MEMBER_INVITE_MAX_ADDRS, &f.n_addrs,
                                            err, err_cap))) {
        goto out;
    }
    if (f.n_addrs == 0) {
        /* a token nobody could redeem: the joiner would have nowhere to dial */
        rc = err_set(err, err_cap, MESH_EINVAL,
                     "no address to put in the invite: start this node ('meshllm serve --p2p') "
                     "so it records where it listens, or give --addr MULTIADDR");
        goto out;
    }
    rc = err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    if (!(c = meshmember__member_cert__unpack(NULL, m->cert_len, m->cert))) goto out;
    memcpy(f.inviter_sig, c->signature.data, 64);
    randombytes_buf(f.id, sizeof f.id);
    f.expires_at = o->expires_at;
    if (o->bound) f.bound = *o->bound;
    f.single_use = !o->bound; /* a bound invite may be redeemed again by its peer (retries) */
    enc_invite(&e, &f);
    identity_sign(&m->id, e.b, e.n, sig);
    iv.inviter_cert = c;
    iv.id = (ProtobufCBinaryData){sizeof f.id, f.id};
    iv.expires_at = f.expires_at;
    iv.bound_peer = (ProtobufCBinaryData){f.bound.len, f.bound.bytes};
    iv.single_use = f.single_use;
    for (size_t i = 0; i < f.n_addrs; i++) addrs[i] = (ProtobufCBinaryData){f.addrs[i].len, f.addrs[i].bytes};
    iv.n_addrs = f.n_addrs;
    iv.addrs = addrs;
    iv.signature = (ProtobufCBinaryData){64, sig};
    size_t n = meshmember__invite__get_packed_size(&iv);
    if (!(bin = malloc(n))) goto out;
    n = meshmember__invite__pack(&iv, bin);
    size_t pre = strlen(MEMBER_INVITE_PREFIX);
    size_t b64 = sodium_base64_encoded_len(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (!(text = malloc(pre + b64))) goto out;
    memcpy(text, MEMBER_INVITE_PREFIX, pre);
    sodium_bin2base64(text + pre, b64, bin, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *token = text;
    text = NULL;
    rc = 0;
out:
    pthread_mutex_unlock(&m->mu);
    meshmember__member_cert__free_unpacked(c, NULL);
    free(bin);
    free(text);
    return rc;
}

void member_join_clear(struct member_join *j)
{
    free(j->request);
    memset(j, 0, sizeof *j);
}

/* Decodes a token's text into an Invite; NULL with *reason on failure. */
static Meshmember__Invite *token_decode(const char *token, enum member_refusal *reason)
{
    size_t pre = strlen(MEMBER_INVITE_PREFIX), bin_len = 0;
    uint8_t *bin = NULL;
    Meshmember__Invite *iv = NULL;
    *reason = MEMBER_R_BAD_TOKEN;
    if (!token || strncmp(token, MEMBER_INVITE_PREFIX, pre) != 0) return NULL;
    const char *b64 = token + pre;
    size_t len = strnlen(b64, MEMBER_TOKEN_CAP);
    while (len > 0 && (b64[len - 1] == '\n' || b64[len - 1] == '\r' || b64[len - 1] == ' ')) len--;
    if (len == 0 || len >= MEMBER_TOKEN_CAP - pre) return NULL;
    if (!(bin = malloc(len))) return NULL;
    const char *end = NULL;
    if (sodium_base642bin(bin, len, b64, len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != b64 + len || bin_len == 0 || bin_len > MEMBER_MSG_MAX)
        goto out;
    *reason = MEMBER_R_MALFORMED;
    iv = meshmember__invite__unpack(NULL, bin_len, bin);
out:
    free(bin);
    return iv;
}

int member_join_request(const char *token, uint64_t now, struct member_join *j,
                        enum member_refusal *reason, char *err, size_t err_cap)
{
    Meshmember__MemberMsg msg = MESHMEMBER__MEMBER_MSG__INIT;
    Meshmember__JoinRequest jr = MESHMEMBER__JOIN_REQUEST__INIT;
    struct invite_fields f;
    struct member_chain ch;
    struct enc e;
    uint8_t pk[32];
    int rc = MESH_EPROTO;

    memset(j, 0, sizeof *j);
    Meshmember__Invite *iv = token_decode(token, reason);
    if (!iv) {
        rc = err_set(err, err_cap, MESH_EPROTO, "%s", *reason == MEMBER_R_BAD_TOKEN
                     ? "not an invite token (expected meshllm-invite:...)"
                     : "the invite token is damaged");
        goto out;
    }
    if (!invite_fields_from_pb(iv, &f)) {
        *reason = MEMBER_R_MALFORMED;
        rc = err_set(err, err_cap, MESH_EPROTO, "the invite token is damaged");
        goto out;
    }
    /* The inviter must be a member (no revocations known yet to the joiner) ... */
    if ((rc = chain_verify_pb(iv->inviter_cert, NULL, NULL, now, NULL, NULL, &ch, reason))) {
        err_set(err, err_cap, rc, "the inviter's certificate is not valid: %s",
                member_refusal_str(*reason));
        goto out;
    }
    /* ... and must have signed this invite with its node key. */
    enc_invite(&e, &f);
    if (peer_pk(&ch.link[0].subject, pk) ||
        crypto_sign_verify_detached(iv->signature.data, e.b, e.n, pk) != 0) {
        *reason = MEMBER_R_BAD_SIGNATURE;
        rc = err_set(err, err_cap, MESH_ECRYPTO, "the invite's signature is not the inviter's");
        goto out;
    }
    if (now >= f.expires_at) {
        *reason = MEMBER_R_INVITE_EXPIRED;
        rc = err_set(err, err_cap, MESH_ETIMEOUT, "the invite has expired; ask for a new one");
        goto out;
    }
    memcpy(j->owner_pk, ch.link[0].owner_pk, 32);
    member_mesh_id(j->owner_pk, j->mesh_id);
    j->inviter = ch.link[0].subject;
    j->n_addrs = f.n_addrs;
    memcpy(j->addrs, f.addrs, f.n_addrs * sizeof *f.addrs);
    j->expires_at = f.expires_at;
    jr.invite = iv;
    msg.body_case = MESHMEMBER__MEMBER_MSG__BODY_JOIN_REQUEST;
    msg.join_request = &jr;
    if ((rc = msg_pack(&msg, &j->request, &j->request_len))) {
        *reason = MEMBER_R_INTERNAL;
        err_set(err, err_cap, rc, "cannot encode the join request");
        goto out;
    }
    *reason = MEMBER_OK;
out:
    meshmember__invite__free_unpacked(iv, NULL);
    if (rc) member_join_clear(j);
    return rc;
}

/* Checks a join request against this node's invites and issues the certificate. Locked.
 * Returns the refusal (MEMBER_OK with *cert set when admitted). */
static enum member_refusal join_admit(struct member *m, const struct peer_id *remote,
                                      const Meshmember__MemberMsg *mm, uint64_t now,
                                      uint8_t **cert, size_t *cert_len)
{
    struct invite_fields f;
    struct enc e;
    uint8_t pk[32];
    char text[PEER_ID_TEXT_CAP];
    bool used = false, revoked = false;

    if (mm->body_case != MESHMEMBER__MEMBER_MSG__BODY_JOIN_REQUEST || !mm->join_request)
        return MEMBER_R_UNEXPECTED;
    const Meshmember__Invite *iv = mm->join_request->invite;
    if (!iv || !invite_fields_from_pb(iv, &f)) return MEMBER_R_MALFORMED;
    if (self_check(m, now)) return MEMBER_R_NOT_MEMBER;
    enc_invite(&e, &f);
    /* Signed by this node's key, and for the mesh it is in now: after `mesh create --force`
     * the invites it made for the old mesh no longer admit anyone. */
    if (crypto_sign_verify_detached(iv->signature.data, e.b, e.n, m->id.pk) != 0 ||
        !bin_is(&iv->inviter_cert->owner_key, 32) ||
        memcmp(iv->inviter_cert->owner_key.data, m->chain.link[0].owner_pk, 32) != 0)
        return MEMBER_R_INVITE_NOT_MINE;
    if (now >= f.expires_at) return MEMBER_R_INVITE_EXPIRED;
    if (f.bound.len && !peer_id_equal(&f.bound, remote)) return MEMBER_R_INVITE_WRONG_PEER;
    if (peer_pk(remote, pk) || peer_id_to_text(remote, text, sizeof text))
        return MEMBER_R_MALFORMED;
    bool single = f.single_use || !f.bound.len; /* an unbound invite is never reusable */
    if (single && store_invite_is_used(m->st, f.id, sizeof f.id, &used, NULL, 0))
        return MEMBER_R_INTERNAL;
    if (used) return MEMBER_R_INVITE_USED;
    if (store_revocation_exists(m->st, m->chain.link[0].owner_pk, remote->bytes, remote->len,
                                &revoked, NULL, 0))
        return MEMBER_R_INTERNAL;
    if (revoked) return MEMBER_R_REVOKED;
    if (member_cert_issue(m->chain.link[0].owner_pk, &m->id, m->cert, m->cert_len, remote, now,
                          0, false, cert, cert_len))
        return MEMBER_R_INTERNAL;
    /* Marking the invite used is the atomic step: of two joiners racing with one token, the
     * second finds the row and is refused, even across processes sharing node.db. */
    if (single && (store_invite_use(m->st, f.id, sizeof f.id, text, now, &used, NULL, 0) || used)) {
        free(*cert);
        *cert = NULL;
        return used ? MEMBER_R_INVITE_USED : MEMBER_R_INTERNAL;
    }
    return MEMBER_OK;
}

int member_join_handle(struct member *m, const struct peer_id *remote, const uint8_t *msg,
                       size_t len, uint64_t now, uint8_t **resp, size_t *resp_len,
                       enum member_refusal *reason)
{
    Meshmember__MemberMsg out = MESHMEMBER__MEMBER_MSG__INIT;
    Meshmember__JoinResponse jr = MESHMEMBER__JOIN_RESPONSE__INIT;
    Meshmember__Revocation *revs[MEMBER_MSG_MAX_REVOCATIONS];
    Meshmember__MemberCert *c = NULL;
    uint8_t *cert = NULL;
    size_t cert_len = 0, n_revs = 0;
    Meshmember__MemberMsg *mm = msg_unpack(msg, len);
    enum member_refusal why = MEMBER_R_MALFORMED;

    *resp = NULL;
    *resp_len = 0;
    pthread_mutex_lock(&m->mu);
    if (mm) why = join_admit(m, remote, mm, now, &cert, &cert_len);
    if (why == MEMBER_OK) {
        c = meshmember__member_cert__unpack(NULL, cert_len, cert);
        if (!c || revs_collect(m, m->chain.link[0].owner_pk, revs, &n_revs)) why = MEMBER_R_INTERNAL;
    }
    pthread_mutex_unlock(&m->mu);
    if (why == MEMBER_OK) {
        jr.cert = c;
        jr.n_revocations = n_revs;
        jr.revocations = revs;
    } else {
        jr.refusal = (uint32_t)why;
        jr.reason = (char *)member_refusal_str(why);
    }
    out.body_case = MESHMEMBER__MEMBER_MSG__BODY_JOIN_RESPONSE;
    out.join_response = &jr;
    int rc = msg_pack(&out, resp, resp_len);
    revs_free(revs, n_revs);
    meshmember__member_cert__free_unpacked(c, NULL);
    meshmember__member_msg__free_unpacked(mm, NULL);
    free(cert);
    *reason = why;
    if (rc) return rc;
    switch (why) {
    case MEMBER_OK: return 0;
    case MEMBER_R_INTERNAL: return MESH_EIO;
    case MEMBER_R_MALFORMED:
    case MEMBER_R_UNEXPECTED: return MESH_EPROTO;
    case MEMBER_R_INVITE_EXPIRED: return MESH_ETIMEOUT;
    case MEMBER_R_NOT_MEMBER: return MESH_ENOTFOUND;
    default: return MESH_ECRYPTO;
    }
}

int member_join_finish(struct member *m, const struct member_join *j, const uint8_t *msg,
                       size_t len, uint64_t now, enum member_refusal *reason, char *err,
                       size_t err_cap)
{
    struct member_chain ch;
    uint8_t *cert = NULL, pk[32];
    size_t cert_len = 0, n_new;
    int rc = MESH_EPROTO;
    Meshmember__MemberMsg *mm = msg_unpack(msg, len);

    *reason = MEMBER_R_MALFORMED;
    pthread_mutex_lock(&m->mu);
    if (!mm || mm->body_case != MESHMEMBER__MEMBER_MSG__BODY_JOIN_RESPONSE || !mm->join_response) {
        if (mm) *reason = MEMBER_R_UNEXPECTED;
        err_set(err, err_cap, rc, "the inviter's answer is not a join response");
        goto out;
    }
    const Meshmember__JoinResponse *jr = mm->join_response;
    if (jr->refusal != 0) {
        *reason = jr->refusal <= MEMBER_R_INTERNAL ? (enum member_refusal)jr->refusal
                                                   : MEMBER_R_MALFORMED;
        rc = err_set(err, err_cap, MESH_ECRYPTO, "the inviter refused: %s",
                     member_refusal_str(*reason));
        goto out;
    }
    if (!jr->cert) {
        err_set(err, err_cap, rc, "the inviter's answer has no certificate");
        goto out;
    }
    if ((rc = revs_add(m, j->owner_pk, jr->revocations, jr->n_revocations, &n_new))) {
        *reason = MEMBER_R_INTERNAL;
        err_set(err, err_cap, rc, "cannot store the mesh's revocations");
        goto out;
    }
    if ((rc = chain_verify_pb(jr->cert, j->owner_pk, &m->id.id, now, store_revoked, m->st, &ch,
                              reason))) {
        err_set(err, err_cap, rc, "the certificate from the inviter is not valid: %s",
                member_refusal_str(*reason));
        goto out;
    }
    /* Issued by the inviter we dialed, not by some other member relaying an answer. */
    if (peer_pk(&j->inviter, pk) || memcmp(pk, ch.link[0].issuer_pk, 32) != 0) {
        *reason = MEMBER_R_ISSUER_MISMATCH;
        rc = err_set(err, err_cap, MESH_ECRYPTO, "the certificate was not issued by the inviter");
        goto out;
    }
    cert_len = meshmember__member_cert__get_packed_size(jr->cert);
    rc = MESH_ENOMEM;
    if (!(cert = malloc(cert_len))) goto out;
    cert_len = meshmember__member_cert__pack(jr->cert, cert);
    if ((rc = store_cert_put(m->st, cert, cert_len, err, err_cap))) {
        *reason = MEMBER_R_INTERNAL;
        goto out;
    }
    free(m->cert);
    m->cert = cert;
    m->cert_len = cert_len;
    m->chain = ch;
    m->n_admitted = 0; /* admitted under another mesh, if any */
    cert = NULL;
    *reason = MEMBER_OK;
out:
    pthread_mutex_unlock(&m->mu);
    free(cert);
    meshmember__member_msg__free_unpacked(mm, NULL);
    return rc;
}
