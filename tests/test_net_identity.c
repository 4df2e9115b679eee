/* test_net_identity.c - net/peer_id and net/identity: key encodings and peer IDs against the
 * libp2p peer-ids spec test vectors, base58btc / CIDv1 text, the on-disk key file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/identity.h"
#include "net/peer_id.h"
#include "tests/util/test_util.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* libp2p/specs peer-ids/peer-ids.md, "Test vectors": Ed25519 PrivateKey and PublicKey
 * protobufs. The text ID of this key, 12D3KooWBtg3..., was computed independently with
 * js-libp2p (@libp2p/peer-id peerIdFromPrivateKey). */
static const char *k_spec_priv_hex =
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a1"
    "44b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
static const char *k_spec_pub_hex =
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
static const char *k_spec_id_text = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";
static const char *k_spec_id_cid =
    "bafzaajaiaejcahwr5d5ofrfbis4l5d6uwr57hu5tjodrypfm6yaq6dsc2r2pzyt6";

static size_t hex_decode(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = test_hex_decode(hex, out, cap);
    assert_true(n != SIZE_MAX);
    return n;
}

static void test_net_identity_spec_vector_encodings(void **state)
{
    (void)state;
    uint8_t priv[128], pub[64], enc[IDENTITY_PRIVKEY_PROTO_LEN], pub_enc[IDENTITY_PUBKEY_PROTO_LEN];
    size_t priv_len = hex_decode(k_spec_priv_hex, priv, sizeof priv);
    size_t pub_len = hex_decode(k_spec_pub_hex, pub, sizeof pub);
    struct identity id;
    assert_int_equal(identity_privkey_decode(priv, priv_len, &id), 0);
    /* Re-encoding gives the spec's exact bytes (canonical encoding). */
    identity_privkey_encode(&id, enc);
    assert_int_equal(priv_len, sizeof enc);
    assert_memory_equal(enc, priv, priv_len);
    identity_pubkey_proto(id.pk, pub_enc);
    assert_int_equal(pub_len, sizeof pub_enc);
    assert_memory_equal(pub_enc, pub, pub_len);
    uint8_t pk[32];
    assert_int_equal(identity_pubkey_decode(pub, pub_len, pk), 0);
    assert_memory_equal(pk, id.pk, 32);
    identity_wipe(&id);
}

static void test_net_identity_spec_vector_peer_id(void **state)
{
    (void)state;
    uint8_t pub[64];
    size_t pub_len = hex_decode(k_spec_pub_hex, pub, sizeof pub);
    struct peer_id id, parsed, from_cid;
    char text[PEER_ID_TEXT_CAP];
    assert_int_equal(peer_id_from_pubkey_proto(pub, pub_len, &id), 0);
    assert_int_equal(id.len, 38);
    assert_int_equal(id.bytes[0], 0x00);
    assert_int_equal(id.bytes[1], 36);
    assert_int_equal(peer_id_to_text(&id, text, sizeof text), 0);
    assert_string_equal(text, k_spec_id_text);
    assert_int_equal(peer_id_from_text(text, strlen(text), &parsed), 0);
    assert_true(peer_id_equal(&id, &parsed));
    assert_int_equal(peer_id_from_text(k_spec_id_cid, strlen(k_spec_id_cid), &from_cid), 0);
    assert_true(peer_id_equal(&id, &from_cid));
    const uint8_t *emb;
    size_t emb_len;
    assert_int_equal(peer_id_pubkey_proto(&id, &emb, &emb_len), 0);
    assert_int_equal(emb_len, pub_len);
    assert_memory_equal(emb, pub, pub_len);
}

/* peer-ids.md "String representation": the same sha2-256 peer ID as base58btc and CIDv1. */
static void test_net_identity_spec_string_forms_agree(void **state)
{
    (void)state;
    const char *b58 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    const char *cid = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe";
    struct peer_id a, b;
    assert_int_equal(peer_id_from_text(b58, strlen(b58), &a), 0);
    assert_int_equal(peer_id_from_text(cid, strlen(cid), &b), 0);
    assert_true(peer_id_equal(&a, &b));
    assert_int_equal(a.len, 34);
    assert_int_equal(a.bytes[0], 0x12);
    assert_int_equal(a.bytes[2], 0x9d); /* sha256 digest 9dff3b17... */
    const uint8_t *emb;
    size_t emb_len;
    assert_int_equal(peer_id_pubkey_proto(&a, &emb, &emb_len), MESH_ENOTFOUND);
}

static void test_net_identity_rejects_bad_text(void **state)
{
    (void)state;
    struct peer_id id;
    const char *bad[] = {"", "0", "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3p",
                         "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pqq",
                         "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5l", "bafz",
                         "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqx",
                         "zQmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(peer_id_from_text(bad[i], strlen(bad[i]), &id), MESH_EPROTO);
    /* Multihash with a wrong length byte or unknown code. */
    uint8_t mh[34] = {0x12, 0x21};
    assert_int_equal(peer_id_from_bytes(mh, sizeof mh, &id), MESH_EPROTO);
    mh[0] = 0x13;
    mh[1] = 0x20;
    assert_int_equal(peer_id_from_bytes(mh, sizeof mh, &id), MESH_EPROTO);
}

static void test_net_identity_base58_leading_zeros(void **state)
{
    (void)state;
    uint8_t in[5] = {0, 0, 1, 2, 3}, out[8];
    char text[16];
    size_t n;
    assert_int_equal(peer_id_base58_encode(in, sizeof in, text, sizeof text), 0);
    assert_string_equal(text, "11Ldp");
    assert_int_equal(peer_id_base58_decode(text, strlen(text), out, sizeof out, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(out, in, 5);
    assert_int_equal(peer_id_base58_encode(in, sizeof in, text, 3), MESH_ERANGE);
}

static void test_net_identity_sign_verify(void **state)
{
    (void)state;
    struct identity id;
    uint8_t sig[IDENTITY_SIG_LEN], pub[IDENTITY_PUBKEY_PROTO_LEN];
    const uint8_t msg[] = "hello";
    assert_int_equal(identity_generate(&id), 0);
    identity_pubkey_proto(id.pk, pub);
    identity_sign(&id, msg, sizeof msg, sig);
    assert_int_equal(identity_verify(pub, sizeof pub, msg, sizeof msg, sig, sizeof sig), 0);
    sig[5] ^= 1;
    assert_int_equal(identity_verify(pub, sizeof pub, msg, sizeof msg, sig, sizeof sig),
                     MESH_ECRYPTO);
    pub[1] = IDENTITY_KEY_SECP256K1;
    assert_int_equal(identity_verify(pub, sizeof pub, msg, sizeof msg, sig, sizeof sig),
                     MESH_EUNSUPPORTED);
    identity_wipe(&id);
}

static void test_net_identity_rejects_mismatched_private_key(void **state)
{
    (void)state;
    uint8_t priv[128];
    size_t n = hex_decode(k_spec_priv_hex, priv, sizeof priv);
    struct identity id;
    priv[n - 1] ^= 1; /* stored public key no longer matches the seed */
    assert_int_equal(identity_privkey_decode(priv, n, &id), MESH_EPROTO);
    assert_int_equal(identity_privkey_decode(priv, 10, &id), MESH_EPROTO);
}

static void test_net_identity_key_file_created_once_0600(void **state)
{
    (void)state;
    char dir[512], path[600], err[256];
    snprintf(dir, sizeof dir, "%s/idhome", test_tmp_dir());
    struct identity a, b;
    assert_int_equal(identity_load_or_create(dir, &a, err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/%s", dir, IDENTITY_FILE_NAME);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(identity_load_or_create(dir, &b, err, sizeof err), 0);
    assert_true(peer_id_equal(&a.id, &b.id));
    assert_memory_equal(a.sk, b.sk, 64);
    /* A key file others can read is refused. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(identity_load_or_create(dir, &b, err, sizeof err), MESH_EIO);
    assert_non_null(strstr(err, "chmod 600"));
    identity_wipe(&a);
    identity_wipe(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_identity_spec_vector_encodings),
        cmocka_unit_test(test_net_identity_spec_vector_peer_id),
        cmocka_unit_test(test_net_identity_spec_string_forms_agree),
        cmocka_unit_test(test_net_identity_rejects_bad_text),
        cmocka_unit_test(test_net_identity_base58_leading_zeros),
        cmocka_unit_test(test_net_identity_sign_verify),
        cmocka_unit_test(test_net_identity_rejects_mismatched_private_key),
        cmocka_unit_test(test_net_identity_key_file_created_once_0600),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
