/* test_sha256.c - core/sha256: FIPS 180-4 / NIST example vectors ("abc", the empty string,
 * the 448-bit two-block message, a million 'a'), both compression functions against each
 * other and the whole hash against libsodium's on random lengths and split points. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/sha256.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static void hex(const uint8_t *d, char out[65])
{
    sodium_bin2hex(out, 65, d, 32);
}

static void test_sha256_nist_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        const char *want;
    } v[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char got[65];
    uint8_t d[32];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        sha256(v[i].msg, strlen(v[i].msg), d);
        hex(d, got);
        assert_string_equal(got, v[i].want);
    }
    struct sha256 s;
    sha256_init(&s);
    uint8_t a[1000];
    memset(a, 'a', sizeof a);
    for (int i = 0; i < 1000; i++) sha256_update(&s, a, sizeof a);
    sha256_final(&s, d);
    hex(d, got);
    assert_string_equal(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_sha256_shani_matches_scalar(void **state)
{
    (void)state;
    if (!sha256_has_shani()) {
        print_message("no SHA extensions on this CPU: the SHA-NI path is not run\n");
        skip();
    }
    uint8_t blocks[64 * 9];
    randombytes_buf(blocks, sizeof blocks);
    for (size_t n = 1; n <= 9; n++) {
        uint32_t h1[8], h2[8];
        for (int i = 0; i < 8; i++) h1[i] = h2[i] = randombytes_random();
        sha256_compress_scalar(h1, blocks, n);
        sha256_compress_shani(h2, blocks, n);
        assert_memory_equal(h1, h2, sizeof h1);
    }
}

static void test_sha256_matches_libsodium(void **state)
{
    (void)state;
    enum { MAX = 5000 };
    uint8_t *buf = malloc(MAX);
    randombytes_buf(buf, MAX);
    for (int r = 0; r < 300; r++) {
        size_t len = randombytes_uniform(MAX);
        size_t cut = len ? randombytes_uniform((uint32_t)len) : 0;
        uint8_t want[32], got[32];
        crypto_hash_sha256(want, buf, len);
        struct sha256 s;
        sha256_init(&s);
        sha256_update(&s, buf, cut);
        sha256_update(&s, buf + cut, len - cut);
        sha256_final(&s, got);
        assert_memory_equal(got, want, 32);
    }
    uint8_t pair[64], want[32], got[32];
    randombytes_buf(pair, sizeof pair);
    crypto_hash_sha256(want, pair, 64);
    sha256_pair(pair, pair + 32, got);
    assert_memory_equal(got, want, 32);
    free(buf);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_nist_vectors),
        cmocka_unit_test(test_sha256_shani_matches_scalar),
        cmocka_unit_test(test_sha256_matches_libsodium),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
