/* test_net_multiaddr.c - net/multiaddr: text <-> binary with the examples of the multiaddr
 * spec (multiformats/multiaddr README and go-multiaddr's codec tests), strict rejection of
 * malformed text and bytes, socket address conversion; net/varint limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/multiaddr.h"
#include "net/varint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
}

struct vec {
    const char *text;
    const char *hex;
};

/* Pairs from the multiaddr spec and go-multiaddr's reference codec tests. */
static const struct vec k_vecs[] = {
    {"/ip4/127.0.0.1/udp/1234", "047f000001910204d2"},
    {"/ip4/127.0.0.1/tcp/4321", "047f0000010610e1"},
    {"/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321", "047f000001910204d2047f0000010610e1"},
    {"/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321/p2p/"
     "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC",
     "047f000001910204d2047f0000010610e1a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42b"
     "eec4ec20db76a68911c0b"},
    {"/ip6/::1/tcp/4001", "2900000000000000000000000000000001060fa1"},
    {"/dns4/example.com/tcp/443", "360b6578616d706c652e636f6d0601bb"},
    {"/dns/localhost/tcp/1", "35096c6f63616c686f7374060001"},
    {"/dns6/a.b/udp/0", "3703612e6291020000"},
    {"/p2p-circuit", "a202"},
};

static void test_net_multiaddr_spec_vectors_roundtrip(void **state)
{
    (void)state;
    char hex[1024], text[MULTIADDR_TEXT_CAP];
    for (size_t i = 0; i < sizeof k_vecs / sizeof k_vecs[0]; i++) {
        struct multiaddr ma, back;
        assert_int_equal(multiaddr_from_text(k_vecs[i].text, &ma), 0);
        to_hex(ma.bytes, ma.len, hex);
        assert_string_equal(hex, k_vecs[i].hex);
        assert_int_equal(multiaddr_to_text(&ma, text, sizeof text), 0);
        assert_string_equal(text, k_vecs[i].text);
        assert_int_equal(multiaddr_from_bytes(ma.bytes, ma.len, &back), 0);
        assert_true(multiaddr_equal(&ma, &back));
    }
}

static void test_net_multiaddr_ipfs_alias_and_peer_id(void **state)
{
    (void)state;
    struct multiaddr a, b;
    struct peer_id id;
    char text[MULTIADDR_TEXT_CAP], idtext[PEER_ID_TEXT_CAP];
    assert_int_equal(multiaddr_from_text("/ip4/1.2.3.4/tcp/80/ipfs/"
                                         "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC", &a), 0);
    assert_int_equal(multiaddr_to_text(&a, text, sizeof text), 0);
    assert_string_equal(text, "/ip4/1.2.3.4/tcp/80/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC");
    assert_int_equal(multiaddr_peer_id(&a, &id), 0);
    assert_int_equal(peer_id_to_text(&id, idtext, sizeof idtext), 0);
    assert_string_equal(idtext, "QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC");
    assert_int_equal(multiaddr_from_text("/ip4/1.2.3.4/tcp/80", &b), 0);
    assert_int_equal(multiaddr_peer_id(&b, &id), MESH_ENOTFOUND);
    assert_int_equal(multiaddr_append_p2p(&b, &id), 0);
    assert_int_equal(multiaddr_peer_id(&a, &id), 0);
    b.len = 0;
    assert_int_equal(multiaddr_from_text("/ip4/1.2.3.4/tcp/80", &b), 0);
    assert_int_equal(multiaddr_append_p2p(&b, &id), 0);
    assert_true(multiaddr_equal(&a, &b));
}

static void test_net_multiaddr_rejects_malformed_text(void **state)
{
    (void)state;
    static const char *bad[] = {
        "", "/", "ip4/1.2.3.4", "/ip4", "/ip4/", "/ip4/1.2.3", "/ip4/1.2.3.4.5", "/ip4/256.1.1.1",
        "/ip4/01.2.3.4", "/ip4/1.2.3.4/", "/ip4/1.2.3.4//tcp/1", "/tcp/65536", "/tcp/-1",
        "/tcp/0x10", "/tcp/080", "/tcp", "/ip6/1:2", "/ip6/::1%eth0", "/dns4/", "/p2p/xyz",
        "/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNK", "/ip4/1.2.3.4/tcp/1 ",
        "/ip4/ 1.2.3.4", "//"};
    struct multiaddr ma;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = multiaddr_from_text(bad[i], &ma);
        if (rc != MESH_EPROTO) fprintf(stderr, "accepted or wrong code for '%s': %d\n", bad[i], rc);
        assert_int_equal(rc, MESH_EPROTO);
    }
    assert_int_equal(multiaddr_from_text("/quic-v1", &ma), MESH_EUNSUPPORTED);
    assert_int_equal(multiaddr_from_text("/ip4/1.2.3.4/sctp/5", &ma), MESH_EUNSUPPORTED);
}

static void test_net_multiaddr_rejects_malformed_bytes(void **state)
{
    (void)state;
    struct multiaddr ma;
    static const uint8_t trunc_ip4[] = {0x04, 0x7f, 0x00, 0x00};
    static const uint8_t trunc_port[] = {0x06, 0x10};
    static const uint8_t dns_len_over[] = {0x36, 0x05, 'a', 'b'};
    static const uint8_t dns_slash[] = {0x36, 0x03, 'a', '/', 'b'};
    static const uint8_t bad_varint[] = {0x84, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
    static const uint8_t nonminimal[] = {0x84, 0x00, 1, 2, 3, 4};
    static const uint8_t bad_p2p[] = {0xa5, 0x03, 0x03, 0x12, 0x20, 0x00};
    static const uint8_t unknown[] = {0x7f, 0x00};
    assert_int_equal(multiaddr_from_bytes(trunc_ip4, sizeof trunc_ip4, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(trunc_port, sizeof trunc_port, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(dns_len_over, sizeof dns_len_over, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(dns_slash, sizeof dns_slash, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(bad_varint, sizeof bad_varint, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(nonminimal, sizeof nonminimal, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(bad_p2p, sizeof bad_p2p, &ma), MESH_EPROTO);
    assert_int_equal(multiaddr_from_bytes(unknown, sizeof unknown, &ma), MESH_EUNSUPPORTED);
    assert_int_equal(multiaddr_from_bytes(unknown, 0, &ma), MESH_EPROTO);
}

static void test_net_multiaddr_sockaddr_roundtrip(void **state)
{
    (void)state;
    struct multiaddr ma, back;
    struct sockaddr_storage ss;
    char text[MULTIADDR_TEXT_CAP];
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &ma), 0);
    assert_int_equal(multiaddr_to_sockaddr(&ma, &ss), 0);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    assert_int_equal(in->sin_family, AF_INET);
    assert_int_equal(ntohs(in->sin_port), 4001);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);
    assert_int_equal(multiaddr_from_sockaddr((const struct sockaddr *)&ss, &back), 0);
    assert_true(multiaddr_equal(&ma, &back));
    assert_int_equal(multiaddr_from_text("/ip6/::1/tcp/9", &ma), 0);
    assert_int_equal(multiaddr_to_sockaddr(&ma, &ss), 0);
    assert_int_equal(multiaddr_from_sockaddr((const struct sockaddr *)&ss, &back), 0);
    assert_int_equal(multiaddr_to_text(&back, text, sizeof text), 0);
    assert_string_equal(text, "/ip6/::1/tcp/9");
    assert_int_equal(multiaddr_from_text("/dns4/example.com/tcp/1", &ma), 0);
    assert_int_equal(multiaddr_to_sockaddr(&ma, &ss), MESH_EUNSUPPORTED);
}

static void test_net_multiaddr_varint_limits(void **state)
{
    (void)state;
    uint8_t b[VARINT_MAX_LEN];
    uint64_t v;
    size_t used;
    assert_int_equal(varint_encode(300, b), 2);
    assert_int_equal(b[0], 0xac);
    assert_int_equal(b[1], 0x02);
    assert_int_equal(varint_decode(b, 2, &v, &used), 0);
    assert_int_equal(v, 300);
    assert_int_equal(used, 2);
    assert_int_equal(varint_decode(b, 1, &v, &used), MESH_EAGAIN);
    size_t n = varint_encode((1ull << 63) - 1, b);
    assert_int_equal(n, 9);
    assert_int_equal(varint_decode(b, n, &v, &used), 0);
    assert_true(v == (1ull << 63) - 1);
    uint8_t too_long[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(varint_decode(too_long, 10, &v, &used), MESH_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_multiaddr_spec_vectors_roundtrip),
        cmocka_unit_test(test_net_multiaddr_ipfs_alias_and_peer_id),
        cmocka_unit_test(test_net_multiaddr_rejects_malformed_text),
        cmocka_unit_test(test_net_multiaddr_rejects_malformed_bytes),
        cmocka_unit_test(test_net_multiaddr_sockaddr_roundtrip),
        cmocka_unit_test(test_net_multiaddr_varint_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
