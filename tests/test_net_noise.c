/* test_net_noise.c - net/noise: the XX handshake against the published test vector for
 * Noise_XX_25519_ChaChaPoly_SHA256, and the libp2p channel (identity payload, framing,
 * tampering, wrong peer) between two in-process ends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "tests/util/test_util.h"
#include "net/identity.h"
#include "net/noise.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Test vectors "Noise_XX_25519_ChaChaPoly_SHA256" from rweather/noise-c: the same keys and
 * payloads with two prologues, in tests/vector/noise-c-basic.txt (prologue "Prologue123",
 * with the handshake hash) and tests/vector/cacophony.txt (the cacophony project's vectors,
 * prologue "John Galt"). Messages 0-2 are the handshake, 3-5 transport messages (3 and 5 from
 * the responder). */
static const char *k_init_static = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
static const char *k_init_ephemeral =
    "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
static const char *k_resp_static = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
static const char *k_resp_ephemeral =
    "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
static const char *k_payloads[6] = {
    "4c756477696720766f6e204d69736573", "4d757272617920526f746862617264",
    "462e20412e20486179656b",           "4361726c204d656e676572",
    "4a65616e2d426170746973746520536179", "457567656e2042f6686d20766f6e2042617765726b"};

struct xx_vector {
    const char *prologue;
    const char *hash; /* NULL if the file gives none */
    const char *ciphertexts[6];
};

static const struct xx_vector k_vectors[] = {
    {"50726f6c6f677565313233", /* noise-c-basic.txt */
     "852a28d2146785c54bd8334f4e460c80d7fe4fd0cc5bc0abef2a24a3c4d44d5f",
     {"ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d6"
      "9736573",
      "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce"
      "2b65285e08d6b68aaa3629a5a8639392490e5b94a6d8798832d5372f220f161d9c2df035528f8982ffe09be9b5"
      "c412f8a0db5d21351f20af1370d0bf8ef1a8c59a30e",
      "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a8589981dfbd651e6ff4724a781"
      "cc2aa6158c9fea0d4ec82a286427484c5b8c8123a7a6002b1de9f9775fc97",
      "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df",
      "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5",
      "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"}},
    {"4a6f686e2047616c74", /* cacophony.txt */
     NULL,
     {"ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d6"
      "9736573",
      "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381cbad1f276e038c48378ffce"
      "2b65285e08d6b68aaa3629a5a8639392490e5b9bd5269c2f1e4f488ed8831161f19b7815528f8982ffe09be9b5"
      "c412f8a0db50f8814c7194e83f23dbd8d162c9326ad",
      "c7195ffacac1307ff99046f219750fc47693e23c3cb08b89c2af808b444850a80ae475b9df0f169ae80a89be0"
      "865b57f58c9fea0d4ec82a286427402f113e4b6ae769a1d95941d49b25030",
      "96763ed773f8e47bb3712f0e29b3060ffc956ffc146cee53d5e1df",
      "3e40f15f6f3a46ae446b253bf8b1d9ffb6ed9b174d272328ff91a7e2e5c79c07f5",
      "eb3f3515110702e047a6c9da4478b6ead94873c11c0f2d710ddb3f09fce024b3a58502ae3f"}},
};

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = test_hex_decode(hex, out, cap);
    assert_true(n != SIZE_MAX);
    return n;
}

static void run_xx_vector(const struct xx_vector *v)
{
    uint8_t pro[32], is[32], ie[32], rs[32], re[32], h[32];
    size_t pro_len = unhex(v->prologue, pro, sizeof pro);
    unhex(k_init_static, is, 32);
    unhex(k_init_ephemeral, ie, 32);
    unhex(k_resp_static, rs, 32);
    unhex(k_resp_ephemeral, re, 32);
    struct noise_hs ini, rsp;
    assert_int_equal(noise_hs_init(&ini, true, pro, pro_len, is, ie), 0);
    assert_int_equal(noise_hs_init(&rsp, false, pro, pro_len, rs, re), 0);
    struct noise_cipher i_send, i_recv, r_send, r_recv;
    for (size_t m = 0; m < 6; m++) {
        uint8_t payload[128], expect[256], out[256], got[256];
        size_t pl = unhex(k_payloads[m], payload, sizeof payload);
        size_t el = unhex(v->ciphertexts[m], expect, sizeof expect);
        size_t ol, gl;
        bool from_initiator = m % 2 == 0;
        struct noise_hs *w = from_initiator ? &ini : &rsp, *r = from_initiator ? &rsp : &ini;
        if (m < 3) {
            assert_int_equal(noise_hs_write(w, payload, pl, out, sizeof out, &ol), 0);
            assert_int_equal(ol, el);
            assert_memory_equal(out, expect, el);
            assert_int_equal(noise_hs_read(r, out, ol, got, sizeof got, &gl), 0);
            assert_int_equal(gl, pl);
            assert_memory_equal(got, payload, pl);
            if (m == 2) {
                assert_memory_equal(ini.h, rsp.h, 32);
                if (v->hash) {
                    unhex(v->hash, h, 32);
                    assert_memory_equal(ini.h, h, 32);
                }
                assert_memory_equal(ini.rs, rsp.s_pk, 32);
                assert_memory_equal(rsp.rs, ini.s_pk, 32);
                assert_int_equal(noise_hs_split(&ini, &i_send, &i_recv), 0);
                assert_int_equal(noise_hs_split(&rsp, &r_send, &r_recv), 0);
                noise_hs_wipe(&ini);
                noise_hs_wipe(&rsp);
            }
        } else {
            struct noise_cipher *s = from_initiator ? &i_send : &r_send;
            struct noise_cipher *d = from_initiator ? &r_recv : &i_recv;
            assert_int_equal(noise_cipher_encrypt(s, NULL, 0, payload, pl, out), 0);
            assert_int_equal(pl + NOISE_TAG_LEN, el);
            assert_memory_equal(out, expect, el);
            assert_int_equal(noise_cipher_decrypt(d, NULL, 0, out, el, got), 0);
            assert_memory_equal(got, payload, pl);
        }
    }
}

static void test_net_noise_xx_test_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_vectors / sizeof k_vectors[0]; i++) run_xx_vector(&k_vectors[i]);
}

static void test_net_noise_hs_rejects_out_of_turn_and_tampering(void **state)
{
    (void)state;
    uint8_t sk1[32] = {1}, sk2[32] = {2}, out[256], got[256];
    size_t ol, gl;
    struct noise_hs a, b;
    assert_int_equal(noise_hs_init(&a, true, NULL, 0, sk1, NULL), 0);
    assert_int_equal(noise_hs_init(&b, false, NULL, 0, sk2, NULL), 0);
    assert_int_equal(noise_hs_write(&b, NULL, 0, out, sizeof out, &ol), MESH_EINVAL);
    assert_int_equal(noise_hs_write(&a, NULL, 0, out, sizeof out, &ol), 0);
    assert_int_equal(noise_hs_read(&b, out, 31, got, sizeof got, &gl), MESH_EPROTO);
    assert_int_equal(noise_hs_read(&b, out, ol, got, sizeof got, &gl), 0);
    assert_int_equal(noise_hs_write(&b, (const uint8_t *)"x", 1, out, sizeof out, &ol), 0);
    out[40] ^= 0x01; /* inside the encrypted static key */
    assert_int_equal(noise_hs_read(&a, out, ol, got, sizeof got, &gl), MESH_ECRYPTO);
}

/* Moves queued handshake output of one end into the other. */
static int deliver(struct noise_conn *from, struct noise_conn *to)
{
    const uint8_t *d, *plain;
    size_t n, used, pl;
    noise_conn_output(from, &d, &n);
    uint8_t copy[2048];
    assert_true(n <= sizeof copy);
    memcpy(copy, d, n);
    noise_conn_output_clear(from);
    size_t off = 0;
    while (off < n) {
        int rc = noise_conn_input(to, copy + off, n - off, &used, &plain, &pl);
        if (rc) return rc;
        off += used;
    }
    return 0;
}

static void handshake(struct noise_conn *i, struct noise_conn *r)
{
    assert_int_equal(deliver(i, r), 0);
    assert_int_equal(deliver(r, i), 0);
    assert_int_equal(noise_conn_state(i), NOISE_CONN_READY);
    assert_int_equal(deliver(i, r), 0);
    assert_int_equal(noise_conn_state(r), NOISE_CONN_READY);
}

static void test_net_noise_libp2p_channel_roundtrip(void **state)
{
    (void)state;
    struct identity ida, idb;
    struct noise_conn *i, *r;
    assert_int_equal(identity_generate(&ida), 0);
    assert_int_equal(identity_generate(&idb), 0);
    assert_int_equal(noise_conn_new(true, &ida, &idb.id, &i), 0);
    assert_int_equal(noise_conn_new(false, &idb, NULL, &r), 0);
    handshake(i, r);
    assert_true(peer_id_equal(noise_conn_remote(i), &idb.id));
    assert_true(peer_id_equal(noise_conn_remote(r), &ida.id));
    /* A message larger than one frame is split and arrives in order, fed 1000 bytes at a time. */
    size_t big = NOISE_MAX_PLAINTEXT + 5000;
    uint8_t *msg = malloc(big), *wire = malloc(noise_conn_sealed_len(big)), *back = malloc(big);
    assert_non_null(msg);
    for (size_t k = 0; k < big; k++) msg[k] = (uint8_t)(k * 7);
    size_t wl, got = 0, off = 0;
    assert_int_equal(noise_conn_seal(i, msg, big, wire, noise_conn_sealed_len(big), &wl), 0);
    assert_int_equal(wl, noise_conn_sealed_len(big));
    while (off < wl) {
        const uint8_t *plain;
        size_t used, pl, chunk = wl - off < 1000 ? wl - off : 1000;
        assert_int_equal(noise_conn_input(r, wire + off, chunk, &used, &plain, &pl), 0);
        off += used;
        if (pl) memcpy(back + got, plain, pl);
        got += pl;
    }
    assert_int_equal(got, big);
    assert_memory_equal(back, msg, big);
    /* A flipped bit fails authentication and the channel is dead after. */
    assert_int_equal(noise_conn_seal(r, msg, 100, wire, 200, &wl), 0);
    wire[10] ^= 0x80;
    const uint8_t *plain;
    size_t used, pl;
    assert_int_equal(noise_conn_input(i, wire, wl, &used, &plain, &pl), MESH_ECRYPTO);
    assert_int_equal(noise_conn_state(i), NOISE_CONN_FAILED);
    free(msg);
    free(wire);
    free(back);
    noise_conn_free(i);
    noise_conn_free(r);
    identity_wipe(&ida);
    identity_wipe(&idb);
}

static void test_net_noise_libp2p_rejects_unexpected_peer(void **state)
{
    (void)state;
    struct identity ida, idb, idc;
    struct noise_conn *i, *r;
    assert_int_equal(identity_generate(&ida), 0);
    assert_int_equal(identity_generate(&idb), 0);
    assert_int_equal(identity_generate(&idc), 0);
    assert_int_equal(noise_conn_new(true, &ida, &idc.id, &i), 0); /* dialer wants C */
    assert_int_equal(noise_conn_new(false, &idb, NULL, &r), 0);   /* B answers */
    assert_int_equal(deliver(i, r), 0);
    assert_int_equal(deliver(r, i), MESH_ECRYPTO);
    assert_int_equal(noise_conn_state(i), NOISE_CONN_FAILED);
    noise_conn_free(i);
    noise_conn_free(r);
    noise_conn_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_noise_xx_test_vectors),
        cmocka_unit_test(test_net_noise_hs_rejects_out_of_turn_and_tampering),
        cmocka_unit_test(test_net_noise_libp2p_channel_roundtrip),
        cmocka_unit_test(test_net_noise_libp2p_rejects_unexpected_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
