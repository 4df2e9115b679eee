/* identity.c - Ed25519 identity keys (see identity.h; spec: libp2p peer-ids.md "Keys").
 *
 * Encoding is written by hand because the spec asks for one canonical byte string
 * (field 1 then field 2, minimal varints); decoding goes through protobuf-c so any valid
 * protobuf from a peer is accepted. The key file is created with O_EXCL and mode 0600.
 */
#include "net/identity.h"

#include "core/err.h"
#include "crypto.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int identity_finish(struct identity *id)
{
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN];
    identity_pubkey_proto(id->pk, pub);
    return peer_id_from_pubkey_proto(pub, sizeof pub, &id->id);
}

int identity_generate(struct identity *id)
{
    memset(id, 0, sizeof *id);
    if (sodium_init() < 0) return MESH_ECRYPTO;
    if (crypto_sign_ed25519_keypair(id->pk, id->sk) != 0) return MESH_ECRYPTO;
    return identity_finish(id);
}

int identity_from_seed(const uint8_t seed[32], struct identity *id)
{
    memset(id, 0, sizeof *id);
    if (sodium_init() < 0) return MESH_ECRYPTO;
    if (crypto_sign_ed25519_seed_keypair(id->pk, id->sk, seed) != 0) return MESH_ECRYPTO;
    return identity_finish(id);
}

void identity_pubkey_proto(const uint8_t pk[32], uint8_t out[IDENTITY_PUBKEY_PROTO_LEN])
{
    out[0] = 0x08; /* field 1 (Type), varint */
    out[1] = IDENTITY_KEY_ED25519;
    out[2] = 0x12; /* field 2 (Data), bytes */
    out[3] = 32;
    memcpy(out + 4, pk, 32);
}

void identity_privkey_encode(const struct identity *id, uint8_t out[IDENTITY_PRIVKEY_PROTO_LEN])
{
    out[0] = 0x08;
    out[1] = IDENTITY_KEY_ED25519;
    out[2] = 0x12;
    out[3] = 64;
    memcpy(out + 4, id->sk, 64); /* seed || public key, as the spec prefers */
}

int identity_privkey_decode(const uint8_t *b, size_t len, struct identity *id)
{
    int rc = 0;
    P2pkeys__PrivateKey *m = p2pkeys__private_key__unpack(NULL, len, b);

    memset(id, 0, sizeof *id);
    if (!m) return MESH_EPROTO;
    if (m->type != P2PKEYS__KEY_TYPE__Ed25519) {
        rc = MESH_EUNSUPPORTED;
        goto out;
    }
    if (m->data.len != 64 && m->data.len != 96) {
        rc = MESH_EPROTO;
        goto out;
    }
    /* Legacy form: seed || pk || pk; the two copies must agree. */
    if (m->data.len == 96 && sodium_memcmp(m->data.data + 32, m->data.data + 64, 32) != 0) {
        rc = MESH_EPROTO;
        goto out;
    }
    rc = identity_from_seed(m->data.data, id);
    if (rc) goto out;
    /* The stored public key must be the one the seed derives. */
    if (sodium_memcmp(id->pk, m->data.data + 32, 32) != 0) rc = MESH_EPROTO;
out:
    if (rc) identity_wipe(id);
    sodium_memzero(m->data.data, m->data.len);
    p2pkeys__private_key__free_unpacked(m, NULL);
    return rc;
}

int identity_pubkey_decode(const uint8_t *b, size_t len, uint8_t pk[32])
{
    int rc = 0;
    P2pkeys__PublicKey *m = p2pkeys__public_key__unpack(NULL, len, b);

    memset(pk, 0, 32);
    if (!m) return MESH_EPROTO;
    if (m->type != P2PKEYS__KEY_TYPE__Ed25519) rc = MESH_EUNSUPPORTED;
    else if (m->data.len != 32) rc = MESH_EPROTO;
    else memcpy(pk, m->data.data, 32);
    p2pkeys__public_key__free_unpacked(m, NULL);
    return rc;
}

void identity_sign(const struct identity *id, const uint8_t *msg, size_t msg_len,
                   uint8_t sig[IDENTITY_SIG_LEN])
{
    crypto_sign_ed25519_detached(sig, NULL, msg, msg_len, id->sk);
}

int identity_verify(const uint8_t *pub_proto, size_t pub_len, const uint8_t *msg,
                    size_t msg_len, const uint8_t *sig, size_t sig_len)
{
    uint8_t pk[32];
    int rc = identity_pubkey_decode(pub_proto, pub_len, pk);
    if (rc) return rc;
    if (sig_len != IDENTITY_SIG_LEN) return MESH_ECRYPTO;
    if (sodium_init() < 0) return MESH_ECRYPTO;
    if (crypto_sign_ed25519_verify_detached(sig, msg, msg_len, pk) != 0) return MESH_ECRYPTO;
    return 0;
}

void identity_wipe(struct identity *id)
{
    sodium_memzero(id, sizeof *id);
}

static int write_new_key(const char *path, struct identity *id, char *err, size_t err_cap)
{
    uint8_t buf[IDENTITY_PRIVKEY_PROTO_LEN];
    int rc = identity_generate(id);
    if (rc) return err_set(err, err_cap, rc, "cannot generate an identity key");
    identity_privkey_encode(id, buf);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = err_set(err, err_cap, err_from_errno(errno), "cannot create %s: %s", path,
                     strerror(errno));
        goto out;
    }
    ssize_t w = write(fd, buf, sizeof buf);
    if (w != (ssize_t)sizeof buf || fsync(fd) != 0) {
        rc = err_set(err, err_cap, MESH_EIO, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        goto out;
    }
    if (close(fd) != 0)
        rc = err_set(err, err_cap, MESH_EIO, "cannot write %s: %s", path, strerror(errno));
out:
    sodium_memzero(buf, sizeof buf);
    if (rc) identity_wipe(id);
    return rc;
}

int identity_load_or_create(const char *dir, struct identity *id, char *err, size_t err_cap)
{
    char path[4096];
    uint8_t buf[256];
    struct stat st;
    int rc = 0, fd = -1;
    ssize_t n;

    memset(id, 0, sizeof *id);
    if (snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILE_NAME) >= (int)sizeof path)
        return err_set(err, err_cap, MESH_EINVAL, "data directory path too long");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return err_set(err, err_cap, err_from_errno(errno), "cannot create %s: %s", dir,
                       strerror(errno));
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) return write_new_key(path, id, err, err_cap);
    if (fd < 0)
        return err_set(err, err_cap, err_from_errno(errno), "cannot open %s: %s", path,
                       strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = err_set(err, err_cap, MESH_EIO, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        rc = err_set(err, err_cap, MESH_EIO,
                     "%s is readable by other users; fix with: chmod 600 %s", path, path);
        goto out;
    }
    n = read(fd, buf, sizeof buf);
    if (n < 0) {
        rc = err_set(err, err_cap, MESH_EIO, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    rc = identity_privkey_decode(buf, (size_t)n, id);
    if (rc == MESH_EUNSUPPORTED)
        rc = err_set(err, err_cap, rc, "%s: only Ed25519 identity keys are supported", path);
    else if (rc)
        rc = err_set(err, err_cap, rc, "%s: not a libp2p Ed25519 private key", path);
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
