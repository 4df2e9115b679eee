/* test_merkle.c - node/merkle: BEP 52 roots against vectors from tests/util/merkle_ref.py
 * (an independent hashlib implementation of the BEP's definition), fed in odd chunk sizes;
 * piece layers; a single piece and a single leaf verified alone by proof.
 * With arguments, `test_merkle --root FILE` prints "ROOT SHA256 N_PIECES PIECES_SHA256"
 * for tests/store_merkle.test.sh, which checks random files against merkle_ref.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "node/merkle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t *pattern(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((i * 7 + i / 251) % 256);
    return p;
}

struct tree_out {
    char root[65], sha[65], pieces_sha[65];
    size_t n_pieces;
    uint8_t *pieces;
};

static void build(const uint8_t *data, size_t n, size_t chunk, struct tree_out *o)
{
    struct merkle m;
    assert_int_equal(merkle_init(&m, MERKLE_PIECE_DEFAULT), 0);
    for (size_t off = 0; off < n; off += chunk)
        assert_int_equal(merkle_update(&m, data + off, n - off < chunk ? n - off : chunk), 0);
    uint8_t root[32], sha[32], ph[32];
    assert_int_equal(merkle_final(&m, root, sha, &o->pieces, &o->n_pieces), 0);
    merkle_hex(root, o->root);
    merkle_hex(sha, o->sha);
    crypto_hash_sha256(ph, o->pieces ? o->pieces : (const uint8_t *)"", o->n_pieces * 32);
    merkle_hex(ph, o->pieces_sha);
}

static void test_merkle_roots_match_reference(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        const char *root, *sha;
        size_t n_pieces;
        const char *pieces_sha;
    } v[] = {
#define NOPIECES "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        {0, "0000000000000000000000000000000000000000000000000000000000000000",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", 0, NOPIECES},
        {1, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d", 0, NOPIECES},
        {16383, "50746bbdb527488824fc110794cab39be1e361d0ff108bb77fb3396a69acb34e",
         "50746bbdb527488824fc110794cab39be1e361d0ff108bb77fb3396a69acb34e", 0, NOPIECES},
        {16384, "15345b8bcf83c9acd70121ebacc0aae2b90b2995b90a5143382a4f29fd125083",
         "15345b8bcf83c9acd70121ebacc0aae2b90b2995b90a5143382a4f29fd125083", 0, NOPIECES},
        {16385, "4f06ab5d81301a6be8740291d8491edb35843daecf491a50c4d22d92eaf9acbc",
         "c6e2a604165ace2031492c0e04ec6944c79bf10ba5d8dd94cd807067482c569c", 0, NOPIECES},
        {1048576, "6d5976bfd3ac283d3c5d43e7e4bdd44ae62a7e4cd4c87c82bef45c27cd37e92d",
         "07f4465ef6fe98070beaf8d8d01454b5d11f6cd4ff86a139d92cd031b46ddfdc", 0, NOPIECES},
        {1048577, "6e3b166202d7346cbc39cf82acde1db093c0df77f42838ed38863e2ddefeb601",
         "7d129a470ea3dee543fdd2b4423cb950a5037750f9427a1b4b6488a7b7ff574c", 2,
         "6e3b166202d7346cbc39cf82acde1db093c0df77f42838ed38863e2ddefeb601"},
        {3145733, "f5466c35e41191155b6789be9584b5809d2501ed1d6d7eacf243848c7e0f3497",
         "97b223b8dffd3197ac94f503412970b2d77110b3c78d60b4647c8fa2cebe897b", 4,
         "be9ef6e89fc439fe65f03319c31e307cf92acbde0eebff63cb6cc4ae532548a1"},
    };
    static const size_t chunks[] = {1u << 22, 16384, 1000, 16385};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t *d = pattern(v[i].n);
        for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
            if (chunks[c] < 16384 && v[i].n > 100000) continue; /* slow and adds nothing */
            struct tree_out o;
            build(d, v[i].n, chunks[c], &o);
            assert_string_equal(o.root, v[i].root);
            assert_string_equal(o.sha, v[i].sha);
            assert_int_equal(o.n_pieces, v[i].n_pieces);
            assert_string_equal(o.pieces_sha, v[i].pieces_sha);
            free(o.pieces);
        }
        free(d);
    }
}

static void test_merkle_piece_verifies_alone(void **state)
{
    (void)state;
    size_t n = 3145733; /* 3 MiB + 5: the last piece is 5 bytes */
    uint8_t *d = pattern(n);
    struct tree_out o;
    build(d, n, n, &o);
    assert_int_equal(o.n_pieces, 4);
    uint8_t root[32], again[32];
    assert_int_equal(sodium_hex2bin(root, 32, o.root, 64, NULL, NULL, NULL), 0);
    merkle_root_from_pieces(o.pieces, o.n_pieces, MERKLE_PIECE_DEFAULT, again);
    assert_memory_equal(root, again, 32);
    for (size_t p = 0; p < 4; p++) {
        size_t off = p * MERKLE_PIECE_DEFAULT;
        size_t len = n - off < MERKLE_PIECE_DEFAULT ? n - off : MERKLE_PIECE_DEFAULT;
        assert_true(merkle_piece_verify(d + off, len, MERKLE_PIECE_DEFAULT, o.pieces + p * 32));
        /* and the piece's hash is in the root, with a proof of 2 siblings */
        uint8_t pad[32], proof[64][32];
        merkle_piece_pad(MERKLE_PIECE_DEFAULT, pad);
        int k = merkle_proof_make(o.pieces, o.n_pieces, pad, p, proof);
        assert_int_equal(k, 2);
        assert_true(merkle_proof_verify(root, o.pieces + p * 32, p, (const uint8_t(*)[32])proof, k));
        assert_false(merkle_proof_verify(root, o.pieces + p * 32, p ^ 1,
                                         (const uint8_t(*)[32])proof, k));
    }
    d[MERKLE_PIECE_DEFAULT + 77] ^= 1; /* one bit of piece 1 */
    assert_false(merkle_piece_verify(d + MERKLE_PIECE_DEFAULT, MERKLE_PIECE_DEFAULT,
                                     MERKLE_PIECE_DEFAULT, o.pieces + 32));
    assert_true(merkle_piece_verify(d, MERKLE_PIECE_DEFAULT, MERKLE_PIECE_DEFAULT, o.pieces));
    assert_false(merkle_piece_verify(d + 3 * MERKLE_PIECE_DEFAULT, 4, MERKLE_PIECE_DEFAULT,
                                     o.pieces + 96)); /* short by a byte */
    free(o.pieces);
    free(d);
}

static void test_merkle_leaf_proof(void **state)
{
    (void)state;
    /* 5 leaves (65537 bytes... 4 full blocks and 1 byte) padded to 8: prove each leaf */
    size_t n = 4 * 16384 + 1;
    uint8_t *d = pattern(n);
    uint8_t leaves[5][32], zero[32] = {0}, root[32], proof[64][32];
    for (int i = 0; i < 5; i++)
        crypto_hash_sha256(leaves[i], d + (size_t)i * 16384, i < 4 ? 16384 : 1);
    struct tree_out o;
    build(d, n, n, &o);
    assert_int_equal(sodium_hex2bin(root, 32, o.root, 64, NULL, NULL, NULL), 0);
    for (size_t i = 0; i < 5; i++) {
        int k = merkle_proof_make(&leaves[0][0], 5, zero, i, proof);
        assert_int_equal(k, 3);
        assert_true(merkle_proof_verify(root, leaves[i], i, (const uint8_t(*)[32])proof, k));
        uint8_t bad[32];
        memcpy(bad, leaves[i], 32);
        bad[0] ^= 0x80;
        assert_false(merkle_proof_verify(root, bad, i, (const uint8_t(*)[32])proof, k));
        assert_false(merkle_proof_verify(root, leaves[i], i + 8, (const uint8_t(*)[32])proof, k));
    }
    free(o.pieces);
    free(d);
}

static void test_merkle_init_refuses_bad_piece_len(void **state)
{
    (void)state;
    struct merkle m;
    assert_int_equal(merkle_init(&m, 16383), MESH_EINVAL);
    assert_int_equal(merkle_init(&m, 3 * 16384), MESH_EINVAL);
    assert_int_equal(merkle_init(&m, 1u << 27), MESH_EINVAL);
    merkle_clear(&m);
    uint8_t h[32] = {0};
    assert_false(merkle_piece_verify(h, 0, MERKLE_PIECE_DEFAULT, h));
}

static int print_root(const char *path, uint32_t piece_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 1;
    struct merkle m;
    if (merkle_init(&m, piece_len)) return 1;
    uint8_t buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) merkle_update(&m, buf, n);
    fclose(f);
    uint8_t root[32], sha[32], ph[32];
    uint8_t *pieces;
    size_t np;
    if (merkle_final(&m, root, sha, &pieces, &np)) return 1;
    crypto_hash_sha256(ph, pieces ? pieces : (const uint8_t *)"", np * 32);
    char a[65], b[65], c[65];
    merkle_hex(root, a);
    merkle_hex(sha, b);
    merkle_hex(ph, c);
    printf("%s %s %zu %s\n", a, b, np, c);
    free(pieces);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--root"))
        return print_root(argv[2], argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10)
                                            : MERKLE_PIECE_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merkle_roots_match_reference),
        cmocka_unit_test(test_merkle_piece_verifies_alone),
        cmocka_unit_test(test_merkle_leaf_proof),
        cmocka_unit_test(test_merkle_init_refuses_bad_piece_len),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
