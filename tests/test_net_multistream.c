/* test_net_multistream.c - net/mss: multistream-select 1.0 dialer and listener against each
 * other and against hand-written wire bytes from the spec's examples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/mss.h"

#include <string.h>

static bool supports_yamux_only(void *ctx, const char *p)
{
    (void)ctx;
    return strcmp(p, "/yamux/1.0.0") == 0;
}

/* Moves all pending output of a into b, byte by byte if slow. Returns mss_input's code. */
static int pump(struct mss *a, struct mss *b, bool slow)
{
    const uint8_t *d;
    size_t n, used, total = 0;
    int rc = 0;
    mss_output(a, &d, &n);
    uint8_t copy[sizeof a->out];
    memcpy(copy, d, n);
    mss_output_clear(a);
    while (total < n && rc == 0) {
        size_t chunk = slow ? 1 : n - total;
        rc = mss_input(b, copy + total, chunk, &used);
        total += used;
        if (used < chunk) break;
    }
    return rc;
}

static void test_net_multistream_wire_bytes_match_spec(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = mss_encode_line(MSS_PROTOCOL_ID, buf, sizeof buf);
    assert_int_equal(n, 20);
    assert_int_equal(buf[0], 19); /* length counts the trailing newline */
    assert_memory_equal(buf + 1, "/multistream/1.0.0\n", 19);
    const char *protos[] = {"/noise"};
    struct mss m;
    assert_int_equal(mss_dialer_init(&m, protos, 1), 0);
    const uint8_t *d;
    mss_output(&m, &d, &n);
    assert_int_equal(n, 20 + 8);
    assert_memory_equal(d + 20, "\x07/noise\n", 8);
}

static void test_net_multistream_negotiates_after_na(void **state)
{
    (void)state;
    for (int slow = 0; slow < 2; slow++) {
        const char *protos[] = {"/mplex/6.7.0", "/yamux/1.0.0"};
        struct mss d, l;
        assert_int_equal(mss_dialer_init(&d, protos, 2), 0);
        mss_listener_init(&l, supports_yamux_only, NULL);
        assert_int_equal(pump(&d, &l, slow), 0); /* header + mplex -> na */
        assert_int_equal(l.state, MSS_NEGOTIATING);
        assert_int_equal(pump(&l, &d, slow), 0); /* header + na -> propose yamux */
        assert_int_equal(pump(&d, &l, slow), 0);
        assert_int_equal(l.state, MSS_DONE);
        assert_string_equal(l.protocol, "/yamux/1.0.0");
        assert_int_equal(pump(&l, &d, slow), 0);
        assert_int_equal(d.state, MSS_DONE);
        assert_string_equal(d.protocol, "/yamux/1.0.0");
    }
}

static void test_net_multistream_dialer_fails_when_all_refused(void **state)
{
    (void)state;
    const char *protos[] = {"/a", "/b"};
    struct mss d, l;
    assert_int_equal(mss_dialer_init(&d, protos, 2), 0);
    mss_listener_init(&l, supports_yamux_only, NULL);
    assert_int_equal(pump(&d, &l, false), 0);
    assert_int_equal(pump(&l, &d, false), 0);
    assert_int_equal(pump(&d, &l, false), 0);
    assert_int_equal(pump(&l, &d, false), MESH_ENOTFOUND);
    assert_int_equal(d.state, MSS_FAILED);
}

static void test_net_multistream_leaves_following_bytes(void **state)
{
    (void)state;
    /* Listener reply followed by the first bytes of the next protocol in one read. */
    uint8_t wire[64];
    size_t n = mss_encode_line(MSS_PROTOCOL_ID, wire, sizeof wire);
    n += mss_encode_line("/noise", wire + n, sizeof wire - n);
    memcpy(wire + n, "\x00\x20XYZ", 5);
    const char *protos[] = {"/noise"};
    struct mss d;
    size_t used;
    assert_int_equal(mss_dialer_init(&d, protos, 1), 0);
    assert_int_equal(mss_input(&d, wire, n + 5, &used), 0);
    assert_int_equal(d.state, MSS_DONE);
    assert_int_equal(used, n);
}

static void test_net_multistream_rejects_malformed(void **state)
{
    (void)state;
    const char *protos[] = {"/noise"};
    struct mss d;
    size_t used;
    static const uint8_t no_newline[] = "\x13/multistream/1.0.0X";
    static const uint8_t wrong_header[] = "\x13/multistream/2.0.0\n";
    static const uint8_t zero_len[] = {0x00};
    static const uint8_t huge_len[] = {0xff, 0xff, 0x7f};
    static const uint8_t inner_nl[] = "\x13/multistream\n1.0.0\n";
    const struct {
        const uint8_t *b;
        size_t n;
    } cases[] = {{no_newline, 20}, {wrong_header, 20}, {zero_len, 1}, {huge_len, 3}, {inner_nl, 20}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(mss_dialer_init(&d, protos, 1), 0);
        assert_int_equal(mss_input(&d, cases[i].b, cases[i].n, &used), MESH_EPROTO);
    }
    /* A reply that is neither our proposal nor "na". */
    uint8_t wire[64];
    size_t n = mss_encode_line(MSS_PROTOCOL_ID, wire, sizeof wire);
    n += mss_encode_line("/other", wire + n, sizeof wire - n);
    assert_int_equal(mss_dialer_init(&d, protos, 1), 0);
    assert_int_equal(mss_input(&d, wire, n, &used), MESH_EPROTO);
    /* Bad proposals from our own caller. */
    const char *bad[] = {"/a\nb"};
    assert_int_equal(mss_dialer_init(&d, bad, 1), MESH_EINVAL);
    assert_int_equal(mss_dialer_init(&d, protos, 0), MESH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_multistream_wire_bytes_match_spec),
        cmocka_unit_test(test_net_multistream_negotiates_after_na),
        cmocka_unit_test(test_net_multistream_dialer_fails_when_all_refused),
        cmocka_unit_test(test_net_multistream_leaves_following_bytes),
        cmocka_unit_test(test_net_multistream_rejects_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
