/* test_net_yamux.c - net/yamux: frame layout per the spec, stream life cycle, flow control
 * windows both ways, resets, pings, limits, and protocol violations closing the session. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/yamux.h"

#include <stdlib.h>
#include <string.h>

/* Moves all pending output of a into b. */
static int pump(struct yamux *a, struct yamux *b)
{
    const uint8_t *d;
    size_t n;
    yamux_output(a, &d, &n);
    int rc = n ? yamux_input(b, d, n) : 0;
    yamux_output_consume(a, n);
    return rc;
}

static bool has_event(struct yamux *y, enum yamux_event_type t, uint32_t id)
{
    struct yamux_event ev;
    bool found = false;
    while (yamux_next_event(y, &ev))
        if (ev.type == t && ev.stream_id == id) found = true;
    return found;
}

static void test_net_yamux_frame_layout_matches_spec(void **state)
{
    (void)state;
    struct yamux *c;
    uint32_t id;
    const uint8_t *d;
    size_t n, w;
    assert_int_equal(yamux_new(true, NULL, &c), 0);
    assert_int_equal(yamux_stream_open(c, &id), 0);
    assert_int_equal(id, 1); /* client ids are odd */
    assert_int_equal(yamux_stream_write(c, id, (const uint8_t *)"hi", 2, &w), 0);
    assert_int_equal(w, 2);
    yamux_output(c, &d, &n);
    static const uint8_t expect[] = {
        0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,             /* window update, SYN, stream 1, +0 */
        0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 'h', 'i'}; /* data, stream 1, 2 bytes */
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(d, expect, sizeof expect);
    yamux_free(c);
}

static void test_net_yamux_stream_lifecycle(void **state)
{
    (void)state;
    struct yamux *c, *s;
    uint32_t id;
    size_t w, n;
    uint8_t buf[64];
    assert_int_equal(yamux_new(true, NULL, &c), 0);
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    assert_int_equal(yamux_stream_open(c, &id), 0);
    assert_int_equal(yamux_stream_write(c, id, (const uint8_t *)"ping", 4, &w), 0);
    assert_int_equal(yamux_stream_close(c, id), 0);
    assert_int_equal(pump(c, s), 0);
    struct yamux_event ev;
    assert_int_equal(yamux_next_event(s, &ev), 1);
    assert_int_equal(ev.type, YAMUX_EV_OPEN);
    assert_int_equal(ev.stream_id, 1);
    assert_int_equal(yamux_next_event(s, &ev), 1);
    assert_int_equal(ev.type, YAMUX_EV_DATA);
    assert_int_equal(yamux_next_event(s, &ev), 1);
    assert_int_equal(ev.type, YAMUX_EV_FIN);
    assert_int_equal(yamux_stream_read(s, 1, buf, sizeof buf, &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(yamux_stream_read(s, 1, buf, sizeof buf, &n), MESH_ECLOSED);
    /* The server answers on the same stream and closes; then both sides forget it. */
    assert_int_equal(yamux_stream_write(s, 1, (const uint8_t *)"pong", 4, &w), 0);
    assert_int_equal(yamux_stream_close(s, 1), 0);
    assert_int_equal(yamux_n_streams(s), 0);
    assert_int_equal(pump(s, c), 0);
    assert_true(has_event(c, YAMUX_EV_DATA, id));
    assert_int_equal(yamux_stream_read(c, id, buf, sizeof buf, &n), 0);
    assert_memory_equal(buf, "pong", 4);
    assert_int_equal(yamux_stream_read(c, id, buf, sizeof buf, &n), MESH_ECLOSED);
    assert_int_equal(yamux_n_streams(c), 0);
    assert_int_equal(yamux_stream_write(c, id, buf, 1, &w), MESH_ENOTFOUND);
    yamux_free(c);
    yamux_free(s);
}

static void test_net_yamux_flow_control_window(void **state)
{
    (void)state;
    struct yamux *c, *s;
    uint32_t id;
    size_t w, n, total_read = 0;
    size_t big = 1024 * 1024;
    uint8_t *data = malloc(big), *back = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (uint8_t)(i * 31 + 7);
    assert_int_equal(yamux_new(true, NULL, &c), 0);
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    assert_int_equal(yamux_stream_open(c, &id), 0);
    size_t sent = 0;
    assert_int_equal(yamux_stream_write(c, id, data, big, &w), 0);
    assert_int_equal(w, YAMUX_INITIAL_WINDOW); /* no more than the initial window */
    sent += w;
    assert_int_equal(yamux_stream_send_window(c, id), 0);
    for (int round = 0; round < 100 && total_read < big; round++) {
        assert_int_equal(pump(c, s), 0);
        /* The reader takes 50 KiB at a time; credit returns in half-window updates. */
        assert_int_equal(yamux_stream_read(s, id, back + total_read, 50 * 1024, &n), 0);
        total_read += n;
        assert_int_equal(pump(s, c), 0);
        if (sent < big) {
            assert_int_equal(yamux_stream_write(c, id, data + sent, big - sent, &w), 0);
            sent += w;
        }
        assert_true(sent - total_read <= YAMUX_INITIAL_WINDOW);
    }
    assert_int_equal(total_read, big);
    assert_memory_equal(back, data, big);
    free(data);
    free(back);
    yamux_free(c);
    yamux_free(s);
}

/* Builds a 12-byte header. */
static void hdr(uint8_t *h, uint8_t type, uint16_t flags, uint32_t id, uint32_t len)
{
    h[0] = 0;
    h[1] = type;
    h[2] = (uint8_t)(flags >> 8);
    h[3] = (uint8_t)flags;
    h[4] = (uint8_t)(id >> 24);
    h[5] = (uint8_t)(id >> 16);
    h[6] = (uint8_t)(id >> 8);
    h[7] = (uint8_t)id;
    h[8] = (uint8_t)(len >> 24);
    h[9] = (uint8_t)(len >> 16);
    h[10] = (uint8_t)(len >> 8);
    h[11] = (uint8_t)len;
}

static void expect_goaway_protocol(struct yamux *y)
{
    const uint8_t *d;
    size_t n;
    uint8_t h[12];
    hdr(h, YAMUX_TYPE_GO_AWAY, 0, 0, YAMUX_GOAWAY_PROTOCOL);
    yamux_output(y, &d, &n);
    assert_true(n >= 12);
    assert_memory_equal(d + n - 12, h, 12);
    assert_true(yamux_is_dead(y));
}

static void test_net_yamux_violations_close_session(void **state)
{
    (void)state;
    struct yamux *s;
    uint8_t h[12];
    /* data beyond the granted window */
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    hdr(h, YAMUX_TYPE_DATA, YAMUX_FLAG_SYN, 1, YAMUX_INITIAL_WINDOW + 1);
    assert_int_equal(yamux_input(s, h, 12), MESH_EPROTO);
    expect_goaway_protocol(s);
    assert_int_equal(yamux_input(s, h, 1), MESH_EPROTO);
    yamux_free(s);
    /* SYN with the server's own parity */
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    hdr(h, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_SYN, 2, 0);
    assert_int_equal(yamux_input(s, h, 12), MESH_EPROTO);
    expect_goaway_protocol(s);
    yamux_free(s);
    /* bad version, unknown type, unknown flag, stream frame on id 0 */
    const uint8_t bad[][12] = {{1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0},
                               {0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
                               {0, 1, 0, 0x10, 0, 0, 0, 1, 0, 0, 0, 0},
                               {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(yamux_new(false, NULL, &s), 0);
        assert_int_equal(yamux_input(s, bad[i], 12), MESH_EPROTO);
        expect_goaway_protocol(s);
        yamux_free(s);
    }
    /* a duplicate SYN */
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    hdr(h, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_SYN, 1, 0);
    assert_int_equal(yamux_input(s, h, 12), 0);
    assert_int_equal(yamux_input(s, h, 12), MESH_EPROTO);
    yamux_free(s);
}

static void test_net_yamux_stream_limit_resets_excess(void **state)
{
    (void)state;
    struct yamux_config cfg = {.max_streams = 2};
    struct yamux *s, *c;
    uint32_t ids[3];
    assert_int_equal(yamux_new(false, &cfg, &s), 0);
    assert_int_equal(yamux_new(true, NULL, &c), 0);
    for (int i = 0; i < 3; i++) assert_int_equal(yamux_stream_open(c, &ids[i]), 0);
    assert_int_equal(pump(c, s), 0);
    assert_int_equal(yamux_n_streams(s), 2);
    assert_int_equal(pump(s, c), 0);
    struct yamux_event ev;
    int acks = 0, resets = 0;
    while (yamux_next_event(c, &ev)) {
        if (ev.type == YAMUX_EV_ACK) acks++;
        if (ev.type == YAMUX_EV_RESET) {
            resets++;
            assert_int_equal(ev.stream_id, ids[2]);
        }
    }
    assert_int_equal(acks, 2);
    assert_int_equal(resets, 1);
    assert_int_equal(yamux_n_streams(c), 2);
    assert_int_equal(yamux_stream_open(s, &ids[0]), MESH_EFULL);
    yamux_free(s);
    yamux_free(c);
}

static void test_net_yamux_ping_reset_goaway(void **state)
{
    (void)state;
    struct yamux *c, *s;
    uint32_t id;
    struct yamux_event ev;
    assert_int_equal(yamux_new(true, NULL, &c), 0);
    assert_int_equal(yamux_new(false, NULL, &s), 0);
    assert_int_equal(yamux_ping(c, 0xdeadbeef), 0);
    assert_int_equal(pump(c, s), 0);
    assert_int_equal(pump(s, c), 0);
    assert_int_equal(yamux_next_event(c, &ev), 1);
    assert_int_equal(ev.type, YAMUX_EV_PING);
    assert_int_equal(ev.value, 0xdeadbeef);
    assert_int_equal(yamux_stream_open(c, &id), 0);
    assert_int_equal(pump(c, s), 0);
    assert_int_equal(yamux_stream_reset(s, id), 0);
    assert_int_equal(pump(s, c), 0);
    assert_true(has_event(c, YAMUX_EV_RESET, id));
    assert_int_equal(yamux_n_streams(c), 0);
    assert_int_equal(yamux_go_away(s, YAMUX_GOAWAY_NORMAL), 0);
    assert_int_equal(pump(s, c), 0);
    assert_true(has_event(c, YAMUX_EV_GOAWAY, 0));
    assert_int_equal(yamux_stream_open(c, &id), MESH_ECLOSED);
    yamux_free(c);
    yamux_free(s);
    yamux_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_yamux_frame_layout_matches_spec),
        cmocka_unit_test(test_net_yamux_stream_lifecycle),
        cmocka_unit_test(test_net_yamux_flow_control_window),
        cmocka_unit_test(test_net_yamux_violations_close_session),
        cmocka_unit_test(test_net_yamux_stream_limit_resets_excess),
        cmocka_unit_test(test_net_yamux_ping_reset_goaway),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
