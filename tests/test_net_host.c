/* test_net_host.c - net/host: two hosts in one process over real TCP on 127.0.0.1 (upgrade,
 * identify, ping, a length-prefixed echo protocol with flow control, refused protocols,
 * wrong peer IDs, shutdown).
 *
 * Also the C side of the js-libp2p interop test (tests/net_interop.test.sh):
 *   test_net_host --interop-dial MULTIADDR   dial a JS peer: ping it, wait for its identify,
 *                                            its ping of us and its identify push
 *   test_net_host --interop-listen           listen on 127.0.0.1, print our address, serve
 *                                            one JS peer, identify it, ping it back, then
 *                                            announce a protocol by identify push
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/mss.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_ID "/meshllm/test-echo/1"

struct fixture {
    uv_loop_t loop;
    struct identity ida, idb;
    struct host *a, *b;
    struct multiaddr b_addr; /* with /p2p */
    uv_timer_t guard;
};

static void guard_fired(uv_timer_t *t)
{
    (void)t;
    fail_msg("test timed out");
}

static void fixture_up(struct fixture *f)
{
    struct multiaddr lo;
    memset(f, 0, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(identity_generate(&f->ida), 0);
    assert_int_equal(identity_generate(&f->idb), 0);
    struct host_config ca = {.identity = &f->ida};
    struct host_config cb = {.identity = &f->idb, .handshake_timeout_ms = 1000};
    assert_int_equal(host_new(&f->loop, &ca, &f->a), 0);
    assert_int_equal(host_new(&f->loop, &cb, &f->b), 0);
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    assert_int_equal(host_listen(f->b, &lo), 0);
    assert_int_equal(host_listen_addrs(f->b, &f->b_addr, 1), 1);
    assert_int_equal(multiaddr_append_p2p(&f->b_addr, &f->idb.id), 0);
    uv_timer_init(&f->loop, &f->guard);
    uv_timer_start(&f->guard, guard_fired, 20000, 0);
    uv_unref((uv_handle_t *)&f->guard);
}

static void fixture_down(struct fixture *f)
{
    host_close(f->a);
    host_close(f->b);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    identity_wipe(&f->ida);
    identity_wipe(&f->idb);
}

/* Runs the loop until *flag is set. */
static void run_until(struct fixture *f, const bool *flag)
{
    while (!*flag) uv_run(&f->loop, UV_RUN_ONCE);
}

struct ping_result {
    bool done;
    int status;
    uint64_t rtt_us;
};

static void on_ping(void *ctx, int status, uint64_t rtt_us)
{
    struct ping_result *r = ctx;
    r->done = true;
    r->status = status;
    r->rtt_us = rtt_us;
}

struct peer_watch {
    bool identified;
    struct host_peer_info info;
};

static void on_peer(void *ctx, enum host_peer_event ev, const struct host_peer_info *p)
{
    struct peer_watch *w = ctx;
    if (ev == HOST_PEER_IDENTIFIED) {
        w->identified = true;
        w->info = *p;
    }
}

static bool has_protocol(const struct host_peer_info *p, const char *id)
{
    for (size_t i = 0; i < p->ident.n_protocols; i++)
        if (!strcmp(p->ident.protocols[i], id)) return true;
    return false;
}

static void echo_serve_stub(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_reset(s);
}

struct close_in_ping {
    struct host *h;
    bool done;
    int status;
};

static void on_ping_close_host(void *ctx, int status, uint64_t rtt_us)
{
    (void)rtt_us;
    struct close_in_ping *c = ctx;
    c->done = true;
    c->status = status;
    host_close(c->h); /* from inside the host's own callback */
}

/* A ping's callback may close the pinging host (a throwaway dialer does): no use after
 * free on the way back out (ASan). */
static void test_net_host_close_inside_ping_callback(void **state)
{
    (void)state;
    struct fixture f;
    fixture_up(&f);
    struct identity idc;
    assert_int_equal(identity_generate(&idc), 0);
    struct host_config cc = {.identity = &idc};
    struct close_in_ping c = {0};
    assert_int_equal(host_new(&f.loop, &cc, &c.h), 0);
    assert_int_equal(host_ping(c.h, &f.b_addr, on_ping_close_host, &c), 0);
    run_until(&f, &c.done);
    assert_int_equal(c.status, 0);
    for (int i = 0; i < 20; i++) uv_run(&f.loop, UV_RUN_NOWAIT);
    /* B still serves others */
    struct ping_result r = {0};
    assert_int_equal(host_ping(f.a, &f.b_addr, on_ping, &r), 0);
    run_until(&f, &r.done);
    assert_int_equal(r.status, 0);
    identity_wipe(&idc);
    fixture_down(&f);
}

static void test_net_host_ping_and_identify(void **state)
{
    (void)state;
    struct fixture f;
    struct ping_result r = {0};
    struct peer_watch wa = {0}, wb = {0}, la = {0};
    fixture_up(&f);
    host_set_peer_callback(f.a, on_peer, &wa);
    assert_int_equal(host_add_peer_listener(f.a, on_peer, &la), 0); /* a module's listener */
    host_set_peer_callback(f.b, on_peer, &wb);
    assert_int_equal(host_ping(f.a, &f.b_addr, on_ping, &r), 0);
    run_until(&f, &r.done);
    assert_int_equal(r.status, 0);
    run_until(&f, &wa.identified);
    run_until(&f, &wb.identified);
    assert_true(la.identified && peer_id_equal(&la.info.id, &f.idb.id));
    host_remove_peer_listener(f.a, on_peer, &la);
    /* A learned B's identity, agent, protocols and listen address; B saw A from loopback. */
    assert_true(peer_id_equal(&wa.info.id, &f.idb.id));
    assert_string_equal(wa.info.ident.agent, HOST_AGENT);
    assert_true(has_protocol(&wa.info, HOST_PING_ID));
    assert_true(has_protocol(&wa.info, HOST_IDENTIFY_ID));
    assert_int_equal(wa.info.ident.n_listen_addrs, 1);
    struct multiaddr b_listen;
    host_listen_addrs(f.b, &b_listen, 1);
    assert_true(multiaddr_equal(&wa.info.ident.listen_addrs[0], &b_listen));
    char text[MULTIADDR_TEXT_CAP];
    assert_int_equal(multiaddr_to_text(&wa.info.ident.observed_addr, text, sizeof text), 0);
    assert_non_null(strstr(text, "/ip4/127.0.0.1/tcp/"));
    assert_true(peer_id_equal(&wb.info.id, &f.ida.id));
    /* A second ping reuses the connection. */
    struct ping_result r2 = {0};
    assert_int_equal(host_ping(f.a, &f.b_addr, on_ping, &r2), 0);
    run_until(&f, &r2.done);
    assert_int_equal(r2.status, 0);
    assert_int_equal(host_n_conns(f.a), 1);
    struct host_peer_info info;
    assert_int_equal(host_peer_info(f.a, &f.idb.id, &info), 0);
    assert_true(info.is_identified);
    /* B starts serving a new protocol: A hears of it by identify push. */
    wa.identified = false;
    assert_int_equal(host_set_handler(f.b, "/meshllm/late/1", echo_serve_stub, NULL), 0);
    run_until(&f, &wa.identified);
    assert_true(has_protocol(&wa.info, "/meshllm/late/1"));
    assert_true(has_protocol(&wa.info, HOST_PING_ID));
    fixture_down(&f);
}

/* Echo server: returns every message, closes when the client does. */
static void echo_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    (void)ctx;
    host_stream_write_msg(s, d, n);
}

static void echo_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void echo_close(void *ctx, struct host_stream *s, int status)
{
    int *closed = ctx;
    (void)s;
    *closed = status == 0 ? 1 : -1;
}

static int g_server_closed;
static const struct host_stream_cbs g_echo_cbs = {echo_data, echo_eof, echo_close};

static void echo_serve(void *ctx, struct host_stream *s)
{
    (void)ctx;
    assert_string_equal(host_stream_protocol(s), ECHO_ID);
    host_stream_set_message_mode(s, 1 << 20);
    host_stream_set_callbacks(s, &g_echo_cbs, &g_server_closed);
}

struct echo_client {
    bool opened, closed;
    int open_status, close_status;
    size_t n_msgs;
    size_t lens[4];
    bool contents_ok;
    uint8_t *big;
};

static void client_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    struct echo_client *c = ctx;
    (void)s;
    if (c->n_msgs < 4) c->lens[c->n_msgs] = n;
    if (c->n_msgs == 2) c->contents_ok = n == 300000 && memcmp(d, c->big, n) == 0;
    c->n_msgs++;
    if (c->n_msgs == 3) host_stream_close(s);
}

static void client_close(void *ctx, struct host_stream *s, int status)
{
    struct echo_client *c = ctx;
    (void)s;
    c->closed = true;
    c->close_status = status;
}

static const struct host_stream_cbs g_client_cbs = {client_data, NULL, client_close};

static void client_opened(void *ctx, struct host_stream *s, int status)
{
    struct echo_client *c = ctx;
    c->opened = true;
    c->open_status = status;
    if (status) {
        c->closed = true;
        return;
    }
    host_stream_set_message_mode(s, 1 << 20);
    host_stream_set_callbacks(s, &g_client_cbs, c);
    assert_int_equal(host_stream_write_msg(s, (const uint8_t *)"hello", 5), 0);
    assert_int_equal(host_stream_write_msg(s, NULL, 0), 0);
    assert_int_equal(host_stream_write_msg(s, c->big, 300000), 0); /* > one yamux window */
}

static void test_net_host_echo_protocol_with_flow_control(void **state)
{
    (void)state;
    struct fixture f;
    struct echo_client c = {0};
    fixture_up(&f);
    c.big = malloc(300000);
    for (size_t i = 0; i < 300000; i++) c.big[i] = (uint8_t)(i * 13);
    g_server_closed = 0;
    assert_int_equal(host_set_handler(f.b, ECHO_ID, echo_serve, NULL), 0);
    assert_int_equal(host_open_stream(f.a, &f.b_addr, ECHO_ID, client_opened, &c), 0);
    run_until(&f, &c.closed);
    assert_int_equal(c.open_status, 0);
    assert_int_equal(c.close_status, 0);
    assert_int_equal(c.n_msgs, 3);
    assert_int_equal(c.lens[0], 5);
    assert_int_equal(c.lens[1], 0);
    assert_true(c.contents_ok);
    while (g_server_closed == 0) uv_run(&f.loop, UV_RUN_ONCE);
    assert_int_equal(g_server_closed, 1);
    free(c.big);
    fixture_down(&f);
}

/* The admission gate: a gated protocol's stream waits unread while the gate says WAIT (the
 * handler never sees it, nothing is echoed), is served in full once it says ALLOW, and a
 * stream opened while it says REFUSE is reset. */
static int g_gate = HOST_GATE_WAIT;
static int g_gate_asked;

static int test_gate(void *ctx, const struct peer_id *peer, const char *protocol)
{
    const struct fixture *f = ctx;
    assert_true(peer_id_equal(peer, &f->ida.id));
    assert_string_equal(protocol, ECHO_ID);
    g_gate_asked++;
    return g_gate;
}

static void flag_fired(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void test_net_host_gate_parks_then_admits_or_refuses(void **state)
{
    (void)state;
    struct fixture f;
    struct echo_client c = {0}, d = {0};
    fixture_up(&f);
    c.big = d.big = calloc(1, 300000);
    g_server_closed = 0;
    g_gate = HOST_GATE_WAIT;
    g_gate_asked = 0;
    assert_int_equal(host_set_handler(f.b, ECHO_ID, echo_serve, NULL), 0);
    host_set_gate(f.b, "/meshllm/test-", test_gate, &f);
    assert_int_equal(host_open_stream(f.a, &f.b_addr, ECHO_ID, client_opened, &c), 0);
    run_until(&f, &c.opened);
    assert_int_equal(c.open_status, 0);
    bool waited = false;
    uv_timer_t t;
    uv_timer_init(&f.loop, &t);
    t.data = &waited;
    uv_timer_start(&t, flag_fired, 300, 0);
    run_until(&f, &waited);
    assert_true(g_gate_asked >= 1);
    assert_int_equal(c.n_msgs, 0);      /* parked: nothing reached the echo handler */
    assert_false(c.closed);
    host_gate_recheck(f.b, &f.ida.id);  /* still WAIT: stays parked */
    assert_int_equal(c.n_msgs, 0);
    g_gate = HOST_GATE_ALLOW;
    host_gate_recheck(f.b, NULL);
    run_until(&f, &c.closed);
    assert_int_equal(c.close_status, 0);
    assert_int_equal(c.n_msgs, 3);      /* every message written while parked arrives */
    assert_int_equal(c.lens[0], 5);
    g_gate = HOST_GATE_REFUSE;
    assert_int_equal(host_open_stream(f.a, &f.b_addr, ECHO_ID, client_opened, &d), 0);
    run_until(&f, &d.closed);
    /* reset by the listener: before or after the dialer saw the protocol agreed */
    assert_true(d.open_status < 0 || d.close_status < 0);
    assert_int_equal(d.n_msgs, 0);
    uv_close((uv_handle_t *)&t, NULL);
    free(c.big);
    fixture_down(&f);
}

static void test_net_host_refuses_unknown_protocol_and_wrong_peer(void **state)
{
    (void)state;
    struct fixture f;
    struct echo_client c = {0}, d = {0};
    fixture_up(&f);
    assert_int_equal(host_open_stream(f.a, &f.b_addr, "/nobody/serves/this", client_opened, &c), 0);
    run_until(&f, &c.opened);
    assert_int_equal(c.open_status, MESH_ENOTFOUND);
    /* Same address, but we claim it belongs to another peer: Noise must refuse. */
    struct identity other;
    struct multiaddr wrong;
    assert_int_equal(identity_generate(&other), 0);
    host_listen_addrs(f.b, &wrong, 1);
    assert_int_equal(multiaddr_append_p2p(&wrong, &other.id), 0);
    assert_int_equal(host_open_stream(f.a, &wrong, ECHO_ID, client_opened, &d), 0);
    run_until(&f, &d.opened);
    assert_int_equal(d.open_status, MESH_ECRYPTO);
    /* Nothing listens here (port of a closed listener is unlikely to be reused at once). */
    struct multiaddr nobody;
    struct echo_client e = {0};
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/1", &nobody), 0);
    assert_int_equal(host_open_stream(f.a, &nobody, ECHO_ID, client_opened, &e), 0);
    run_until(&f, &e.opened);
    assert_int_equal(e.open_status, MESH_EIO);
    identity_wipe(&other);
    fixture_down(&f);
}

static void test_net_host_identify_codec_roundtrip_and_key_check(void **state)
{
    (void)state;
    struct identity me, other;
    struct identify_info in, out;
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN], buf[IDENTIFY_MAX_MSG];
    size_t n;
    assert_int_equal(identity_generate(&me), 0);
    assert_int_equal(identity_generate(&other), 0);
    memset(&in, 0, sizeof in);
    strcpy(in.agent, "meshllm/0.1");
    strcpy(in.protocol_version, "ipfs/0.1.0");
    strcpy(in.protocols[0], "/ipfs/ping/1.0.0");
    strcpy(in.protocols[1], "/meshllm/infer/1");
    in.n_protocols = 2;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/4001", &in.listen_addrs[0]), 0);
    assert_int_equal(multiaddr_from_text("/ip6/::1/tcp/4001", &in.listen_addrs[1]), 0);
    in.n_listen_addrs = 2;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/5555", &in.observed_addr), 0);
    identity_pubkey_proto(me.pk, pub);
    assert_int_equal(identify_encode(&in, pub, sizeof pub, buf, sizeof buf, &n), 0);
    assert_int_equal(identify_decode(buf, n, &me.id, &out), 0);
    assert_memory_equal(&in, &out, sizeof in);
    /* The same message presented as another peer's: the key does not match its ID. */
    assert_int_equal(identify_decode(buf, n, &other.id, &out), MESH_ECRYPTO);
    assert_int_equal(identify_decode(buf, n - 1, &me.id, &out), MESH_EPROTO);
    assert_int_equal(identify_encode(&in, pub, sizeof pub, buf, 10, &n), MESH_ERANGE);
    identity_wipe(&me);
    identity_wipe(&other);
}

static void test_net_host_limits_connections_per_peer(void **state)
{
    (void)state;
    struct fixture f;
    struct ping_result r1 = {0}, r2 = {0};
    struct host *twin;
    fixture_up(&f);
    host_close(f.b);
    struct host_config cb = {.identity = &f.idb, .max_conns_per_peer = 1};
    struct multiaddr lo;
    assert_int_equal(host_new(&f.loop, &cb, &f.b), 0);
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    assert_int_equal(host_listen(f.b, &lo), 0);
    host_listen_addrs(f.b, &f.b_addr, 1);
    multiaddr_append_p2p(&f.b_addr, &f.idb.id);
    /* A second host with A's identity: B already has its one connection to that peer. */
    struct host_config ct = {.identity = &f.ida};
    assert_int_equal(host_new(&f.loop, &ct, &twin), 0);
    assert_int_equal(host_ping(f.a, &f.b_addr, on_ping, &r1), 0);
    run_until(&f, &r1.done);
    assert_int_equal(r1.status, 0);
    assert_int_equal(host_ping(twin, &f.b_addr, on_ping, &r2), 0);
    run_until(&f, &r2.done);
    assert_true(r2.status < 0);
    assert_int_equal(host_n_conns(f.b), 1);
    host_close(twin);
    fixture_down(&f);
}

/* A raw TCP client that sends hostile bytes and records when the host hangs up. */
struct raw_client {
    uv_tcp_t tcp;
    uv_connect_t req;
    uv_write_t wreq;
    uv_buf_t buf;
    bool eof;
    char rbuf[4096];
};

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    struct raw_client *r = h->data;
    (void)n;
    *b = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct raw_client *r = st->data;
    (void)b;
    if (n < 0) {
        r->eof = true;
        uv_read_stop(st);
    }
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw_client *r = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &r->buf, 1, NULL);
}

static void test_net_host_drops_hostile_connections(void **state)
{
    (void)state;
    struct fixture f;
    fixture_up(&f);
    struct sockaddr_storage ss;
    struct multiaddr plain;
    host_listen_addrs(f.b, &plain, 1);
    assert_int_equal(multiaddr_to_sockaddr(&plain, &ss), 0);
    /* 1: not multistream at all; 2: a valid header and /noise, then a Noise message with a
     * bogus ephemeral key and a length prefix that lies; 3: header, then an oversized line;
     * 4: silence (the 1 s upgrade deadline of this fixture). */
    static const char http[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n"
                               "Accept: */*\r\nConnection: close\r\n\r\n.........................";
    static uint8_t case2[512], case3[64];
    size_t n2 = mss_encode_line("/multistream/1.0.0", case2, sizeof case2);
    n2 += mss_encode_line("/noise", case2 + n2, sizeof case2 - n2);
    case2[n2++] = 0x00;
    case2[n2++] = 0x20;
    memset(case2 + n2, 0, 32); /* all-zero X25519 key: low order */
    n2 += 32;
    case2[n2++] = 0x01;
    case2[n2++] = 0x00;
    memset(case2 + n2, 0x41, 100);
    n2 += 100;
    size_t n3 = mss_encode_line("/multistream/1.0.0", case3, sizeof case3);
    case3[n3++] = 0xff;
    case3[n3++] = 0x7f;
    case3[n3++] = '/';
    const struct {
        const void *b;
        size_t n;
    } cases[] = {{http, sizeof http - 1}, {case2, n2}, {case3, n3}, {"", 0}};
    for (size_t i = 0; i < 4; i++) {
        struct raw_client r;
        memset(&r, 0, sizeof r);
        uv_tcp_init(&f.loop, &r.tcp);
        r.tcp.data = r.req.data = &r;
        r.buf = uv_buf_init((char *)cases[i].b, (unsigned)cases[i].n);
        assert_int_equal(uv_tcp_connect(&r.req, &r.tcp, (struct sockaddr *)&ss, raw_connected), 0);
        run_until(&f, &r.eof);
        uv_close((uv_handle_t *)&r.tcp, NULL);
        uv_run(&f.loop, UV_RUN_NOWAIT);
    }
    /* The host still serves honest peers. */
    struct ping_result pr = {0};
    assert_int_equal(host_ping(f.a, &f.b_addr, on_ping, &pr), 0);
    run_until(&f, &pr.done);
    assert_int_equal(pr.status, 0);
    struct host_peer_info peers[4];
    assert_int_equal(host_list_peers(f.b, peers, 4), 1);
    assert_true(peer_id_equal(&peers[0].id, &f.ida.id));
    fixture_down(&f);
}

/* ---- interop driver ---------------------------------------------------------------------- */

static void print_info(const char *who, const struct host_peer_info *p)
{
    char id[PEER_ID_TEXT_CAP];
    peer_id_to_text(&p->id, id, sizeof id);
    printf("%s identify peer=%s agent=%s protocols=", who, id, p->ident.agent);
    for (size_t i = 0; i < p->ident.n_protocols; i++) printf("%s%s", i ? "," : "", p->ident.protocols[i]);
    for (size_t i = 0; i < p->ident.n_listen_addrs; i++) {
        char t[MULTIADDR_TEXT_CAP];
        multiaddr_to_text(&p->ident.listen_addrs[i], t, sizeof t);
        printf(" listen=%s", t);
    }
    printf("\n");
    fflush(stdout);
}

struct interop {
    uv_loop_t loop;
    struct host *h;
    struct peer_watch w;
    struct ping_result ping;
    bool ping_started, disconnected, was_pinged, ping_stream_closed, saw_push;
    size_t n_echoed;
    /* bulk echo through the JS peer */
    bool bulk_started, bulk_done;
    int bulk_status;
    uint8_t *bulk_sent, *bulk_got;
    size_t bulk_n_got;
};

#define INTEROP_BULK (1024 * 1024)

static void bulk_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    struct interop *io = ctx;
    (void)s;
    if (n > INTEROP_BULK - io->bulk_n_got) {
        io->bulk_status = MESH_EPROTO;
        n = INTEROP_BULK - io->bulk_n_got;
    }
    memcpy(io->bulk_got + io->bulk_n_got, d, n);
    io->bulk_n_got += n;
}

static void bulk_close(void *ctx, struct host_stream *s, int status)
{
    struct interop *io = ctx;
    (void)s;
    io->bulk_done = true;
    if (!io->bulk_status) io->bulk_status = status;
    if (io->bulk_n_got != INTEROP_BULK || memcmp(io->bulk_got, io->bulk_sent, INTEROP_BULK))
        io->bulk_status = MESH_EPROTO;
    printf("c echo %s bytes=%zu\n", io->bulk_status == 0 ? "ok" : "failed", io->bulk_n_got);
    fflush(stdout);
}

static const struct host_stream_cbs g_bulk_cbs = {bulk_data, NULL, bulk_close};

static void bulk_opened(void *ctx, struct host_stream *s, int status)
{
    struct interop *io = ctx;
    if (status) {
        io->bulk_done = true;
        io->bulk_status = status;
        return;
    }
    host_stream_set_callbacks(s, &g_bulk_cbs, io);
    /* more than host_config.max_stream_pending allows at once? no: 1 MiB < 8 MiB */
    if (host_stream_write(s, io->bulk_sent, INTEROP_BULK) == 0) host_stream_close(s);
}

/* Raw echo for a JS peer's bulk stream. */
static void raw_echo_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    (void)ctx;
    host_stream_write(s, d, n);
}

static void raw_echo_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_raw_echo_cbs = {raw_echo_data, raw_echo_eof, NULL};

static void raw_echo_serve(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_set_callbacks(s, &g_raw_echo_cbs, NULL);
}

/* Dial mode serves /ipfs/ping/1.0.0 itself (through the public handler API) to see when the
 * JS peer has pinged us back. */
static void interop_echo(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    struct interop *io = ctx;
    host_stream_write(s, d, n);
    io->n_echoed += n;
    if (io->n_echoed >= 32 && !io->was_pinged) {
        io->was_pinged = true;
        printf("c served ping from js\n");
        fflush(stdout);
    }
}

static void interop_echo_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void interop_echo_close(void *ctx, struct host_stream *s, int status)
{
    struct interop *io = ctx;
    (void)s;
    (void)status;
    io->ping_stream_closed = true; /* the JS side has finished reading our echo */
}

static const struct host_stream_cbs g_interop_echo_cbs = {interop_echo, interop_echo_eof,
                                                          interop_echo_close};

static void interop_ping_serve(void *ctx, struct host_stream *s)
{
    host_stream_set_callbacks(s, &g_interop_echo_cbs, ctx);
}

static void interop_peer(void *ctx, enum host_peer_event ev, const struct host_peer_info *p)
{
    struct interop *io = ctx;
    if (ev == HOST_PEER_IDENTIFIED) {
        bool pushed = has_protocol(p, "/meshllm/pushed/1");
        if (io->w.identified && !pushed) return;
        if (pushed) io->saw_push = true;
        io->w.identified = true;
        io->w.info = *p;
        print_info(pushed ? "c push" : "c", p);
    }
    if (ev == HOST_PEER_DISCONNECTED) io->disconnected = true;
}

static void interop_deadline(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "interop: timed out\n");
    exit(1);
}

static int interop_main(int argc, char **argv)
{
    struct interop io;
    struct identity id;
    struct multiaddr addr;
    uv_timer_t deadline;
    bool dial = !strcmp(argv[1], "--interop-dial");
    memset(&io, 0, sizeof io);
    if (dial && argc < 3) return 2;
    uv_loop_init(&io.loop);
    identity_generate(&id);
    struct host_config cfg = {.identity = &id};
    if (host_new(&io.loop, &cfg, &io.h)) return 1;
    host_set_peer_callback(io.h, interop_peer, &io);
    if (dial) host_set_handler(io.h, HOST_PING_ID, interop_ping_serve, &io);
    host_set_handler(io.h, ECHO_ID, raw_echo_serve, NULL);
    io.bulk_sent = malloc(INTEROP_BULK);
    io.bulk_got = malloc(INTEROP_BULK);
    if (!io.bulk_sent || !io.bulk_got) return 1;
    for (size_t i = 0; i < INTEROP_BULK; i++) io.bulk_sent[i] = (uint8_t)(i * 7 + 3);
    uv_timer_init(&io.loop, &deadline);
    uv_timer_start(&deadline, interop_deadline, 30000, 0);
    multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &addr);
    if (host_listen(io.h, &addr)) return 1;
    char text[MULTIADDR_TEXT_CAP];
    host_listen_addrs(io.h, &addr, 1);
    multiaddr_append_p2p(&addr, &id.id);
    multiaddr_to_text(&addr, text, sizeof text);
    printf("c listening %s\n", text);
    fflush(stdout);
    if (dial) {
        if (multiaddr_from_text(argv[2], &addr)) {
            fprintf(stderr, "interop: bad multiaddr %s\n", argv[2]);
            return 1;
        }
    }
    /* Dialer: ping now. Listener: wait until the JS peer connected and identified, then ping
     * it back over that connection. Both: wait for identify and a ping. */
    for (;;) {
        if (!io.ping_started && (dial || io.w.identified)) {
            if (!dial) {
                addr = io.w.info.remote_addr;
                multiaddr_append_p2p(&addr, &io.w.info.id);
            }
            io.ping_started = true;
            if (host_ping(io.h, &addr, on_ping, &io.ping)) return 1;
        }
        if (io.ping.done && io.w.identified) break;
        uv_run(&io.loop, UV_RUN_ONCE);
    }
    printf("c ping status=%d rtt_us=%llu\n", io.ping.status, (unsigned long long)io.ping.rtt_us);
    fflush(stdout);
    int rc = io.ping.status == 0 && strstr(io.w.info.ident.agent, "libp2p") ? 0 : 1;
    if (dial) {
        /* Push 1 MiB through the JS peer's echo (flow control across implementations). */
        io.bulk_started = true;
        if (host_open_stream(io.h, &addr, ECHO_ID, bulk_opened, &io)) return 1;
        while (!io.bulk_done) uv_run(&io.loop, UV_RUN_ONCE);
        if (io.bulk_status) rc = 1;
        /* Stay until the JS side has pinged us back and pushed its identify update (the
         * deadline timer fails the run if that never happens). */
        while (!(io.was_pinged && io.ping_stream_closed && io.saw_push))
            uv_run(&io.loop, UV_RUN_ONCE);
    } else {
        /* Announce a new protocol: the JS dialer must learn it by identify push. */
        host_set_handler(io.h, "/meshllm/pushed-by-c/1", raw_echo_serve, NULL);
        /* Stay until the JS side, which checks us, hangs up. */
        while (!io.disconnected) uv_run(&io.loop, UV_RUN_ONCE);
    }
    host_close(io.h);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(&io.loop, UV_RUN_DEFAULT);
    uv_loop_close(&io.loop);
    identity_wipe(&id);
    free(io.bulk_sent);
    free(io.bulk_got);
    printf("c done rc=%d\n", rc);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strncmp(argv[1], "--interop-", 10)) return interop_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_host_ping_and_identify),
        cmocka_unit_test(test_net_host_close_inside_ping_callback),
        cmocka_unit_test(test_net_host_echo_protocol_with_flow_control),
        cmocka_unit_test(test_net_host_gate_parks_then_admits_or_refuses),
        cmocka_unit_test(test_net_host_refuses_unknown_protocol_and_wrong_peer),
        cmocka_unit_test(test_net_host_identify_codec_roundtrip_and_key_check),
        cmocka_unit_test(test_net_host_limits_connections_per_peer),
        cmocka_unit_test(test_net_host_drops_hostile_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
