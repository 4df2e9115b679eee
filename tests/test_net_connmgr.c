/* test_net_connmgr.c - net/host's connection limits (issue 11, "Hostile traffic can't lock a
 * node out") and their policy core net/connmgr: hosts in one process on one uv loop over
 * 127.0.0.1, plus idle TCP sockets made with plain socket()/connect() that send nothing and
 * are reopened whenever the host drops them.
 *
 * A flood from one address (127.0.0.2, as in the finding: about 130 idle sockets) must not
 * keep a fresh node from connecting, a full pending budget must not keep the host from
 * dialing out, idle sockets are closed at the upgrade deadline, and a flood of established
 * connections from many identities is trimmed to the low water mark sparing a protected
 * peer and a useful one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "net/connmgr.h"
#include "net/host.h"
#include "net/identity.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_ID "/meshllm/test-echo/1"
#define JUNK_MAX 256

/* ---- helpers ------------------------------------------------------------------------------ */

struct node {
    struct identity id;
    struct host *h;
    struct multiaddr addr; /* listen address with /p2p, if listening */
};

static void node_up(uv_loop_t *loop, struct node *n, struct host_config cfg, bool listen)
{
    memset(n, 0, sizeof *n);
    assert_int_equal(identity_generate(&n->id), 0);
    cfg.identity = &n->id;
    assert_int_equal(host_new(loop, &cfg, &n->h), 0);
    if (!listen) return;
    struct multiaddr lo;
    assert_int_equal(multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo), 0);
    assert_int_equal(host_listen(n->h, &lo), 0);
    assert_int_equal(host_listen_addrs(n->h, &n->addr, 1), 1);
    assert_int_equal(multiaddr_append_p2p(&n->addr, &n->id.id), 0);
}

static void node_down(struct node *n)
{
    host_close(n->h);
    identity_wipe(&n->id);
}

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until done(ctx) or max_ms pass; returns done(ctx). A 10 ms ticker keeps
 * UV_RUN_ONCE returning. */
static bool run_until(uv_loop_t *loop, bool (*done)(void *), void *ctx, uint64_t max_ms)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    uint64_t end = now_ms() + max_ms;
    bool ok;
    while (!(ok = done(ctx)) && now_ms() < end) uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static bool flag_set(void *ctx)
{
    return *(const bool *)ctx;
}

static void run_for(uv_loop_t *loop, uint64_t ms)
{
    bool never = false;
    run_until(loop, flag_set, &never, ms);
}

struct ping_result {
    bool done;
    int status;
};

static void on_ping(void *ctx, int status, uint64_t rtt_us)
{
    struct ping_result *r = ctx;
    (void)rtt_us;
    r->done = true;
    r->status = status;
}

/* Pings addr from h and waits; returns the status (MESH_ETIMEOUT if no answer in max_ms). */
static int ping_wait(uv_loop_t *loop, struct host *h, const struct multiaddr *addr,
                     uint64_t max_ms)
{
    struct ping_result *r = calloc(1, sizeof *r); /* leaked on purpose if it never ends */
    assert_non_null(r);
    assert_int_equal(host_ping(h, addr, on_ping, r), 0);
    if (!run_until(loop, flag_set, &r->done, max_ms)) return MESH_ETIMEOUT;
    int status = r->status;
    free(r);
    return status;
}

static void loop_down(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* ---- idle sockets ------------------------------------------------------------------------ */

/* n sockets from src (any port) to dst that never send; a 50 ms timer reopens closed ones
 * while is_reopening. */
struct junk {
    uv_timer_t timer;
    int fds[JUNK_MAX];
    size_t n;
    struct sockaddr_in src, dst;
    bool is_reopening;
    size_t n_closed; /* seen closed by the host */
};

static int junk_open(const struct junk *j)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (bind(fd, (const struct sockaddr *)&j->src, sizeof j->src) != 0) {
        close(fd);
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)&j->dst, sizeof j->dst) != 0 &&
        errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The host closed it (FIN: 0, reset or failed connect: an error other than EAGAIN). What
 * the host sent (its multistream header) is read and dropped. */
static bool junk_is_closed(int fd)
{
    char b[256];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (r > 0) continue;
        return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
}

static void junk_poll(uv_timer_t *t)
{
    struct junk *j = t->data;
    for (size_t i = 0; i < j->n; i++) {
        if (j->fds[i] >= 0 && !junk_is_closed(j->fds[i])) continue;
        if (j->fds[i] >= 0) {
            close(j->fds[i]);
            j->fds[i] = -1;
            j->n_closed++;
        }
        if (j->is_reopening) j->fds[i] = junk_open(j);
    }
}

/* Opens n idle sockets from src_ip to the host's listen address. Returns false if src_ip
 * cannot be bound (a machine without 127.0.0.0/8 on lo). */
static bool junk_start(uv_loop_t *loop, struct junk *j, const struct host *h, const char *src_ip,
                       size_t n, bool reopen)
{
    struct multiaddr plain;
    struct sockaddr_storage ss;
    memset(j, 0, sizeof *j);
    assert_true(n <= JUNK_MAX);
    assert_int_equal(host_listen_addrs(h, &plain, 1), 1);
    assert_int_equal(multiaddr_to_sockaddr(&plain, &ss), 0);
    memcpy(&j->dst, &ss, sizeof j->dst);
    j->src.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, src_ip, &j->src.sin_addr), 1);
    j->is_reopening = reopen;
    j->n = n;
    for (size_t i = 0; i < n; i++)
        if ((j->fds[i] = junk_open(j)) < 0) {
            for (size_t k = 0; k < i; k++) close(j->fds[k]);
            return false;
        }
    uv_timer_init(loop, &j->timer);
    j->timer.data = j;
    uv_timer_start(&j->timer, junk_poll, 50, 50);
    return true;
}

static void junk_stop(struct junk *j)
{
    for (size_t i = 0; i < j->n; i++)
        if (j->fds[i] >= 0) close(j->fds[i]);
    uv_close((uv_handle_t *)&j->timer, NULL);
}

/* ---- tests ------------------------------------------------------------------------------- */

static bool pending_reaches(void *ctx)
{
    const struct node *a = ctx;
    struct host_stats st;
    host_stats_get(a->h, &st);
    return st.n_pending >= 4 && st.n_refused_pending_per_ip > 100;
}

/* The finding: idle sockets from one address, reopened when dropped. Only its per-IP share of
 * the pending budget is theirs: a fresh node still connects at once, and A still dials. */
static void test_net_connmgr_idle_flood_does_not_lock_out_bootstrap(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct node a, b, c;
    struct junk j;
    assert_int_equal(uv_loop_init(&loop), 0);
    node_up(&loop, &a, (struct host_config){.handshake_timeout_ms = 500}, true);
    node_up(&loop, &b, (struct host_config){0}, false);
    node_up(&loop, &c, (struct host_config){0}, true);
    if (!junk_start(&loop, &j, a.h, "127.0.0.2", 200, true)) {
        node_down(&a);
        node_down(&b);
        node_down(&c);
        loop_down(&loop);
        skip();
    }
    /* The flood is on: A holds 4 from 127.0.0.2, the rest are reset and come back; those
     * 4 reach the deadline twice and are replaced. */
    assert_true(run_until(&loop, pending_reaches, &a, 3000));
    run_for(&loop, 1200);
    uint64_t t0 = now_ms();
    assert_int_equal(ping_wait(&loop, b.h, &a.addr, 3000), 0);
    uint64_t b_ms = now_ms() - t0;
    t0 = now_ms();
    assert_int_equal(ping_wait(&loop, a.h, &c.addr, 3000), 0);
    uint64_t c_ms = now_ms() - t0;
    print_message("B reached A in %llu ms, A reached C in %llu ms under the flood\n",
                  (unsigned long long)b_ms, (unsigned long long)c_ms);
    struct host_stats st;
    host_stats_get(a.h, &st);
    assert_true(st.n_pending <= HOST_DEFAULT_MAX_PENDING_PER_IP);
    assert_int_equal(st.n_conns_inbound, 1);  /* B */
    assert_int_equal(st.n_conns_outbound, 1); /* C */
    assert_int_equal(st.n_refused_pending_total, 0);
    assert_true(st.n_refused_pending_per_ip > 100);
    assert_true(st.n_handshake_timeouts >= 2 * HOST_DEFAULT_MAX_PENDING_PER_IP);
    print_message("%llu refused, %llu timed out\n",
                  (unsigned long long)st.n_refused_pending_per_ip,
                  (unsigned long long)st.n_handshake_timeouts);
    junk_stop(&j);
    node_down(&a);
    node_down(&b);
    node_down(&c);
    loop_down(&loop);
}

static bool pending_full(void *ctx)
{
    const struct node *a = ctx;
    struct host_stats st;
    host_stats_get(a->h, &st);
    return st.n_pending == 32 && st.n_refused_pending_total > 100;
}

/* Every pending slot and every established inbound slot taken: A's own dials still go out,
 * and a newcomer is turned away at once (not left hanging). */
static void test_net_connmgr_full_inbound_budget_still_dials_out(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct node a, b, c, d;
    struct junk j;
    assert_int_equal(uv_loop_init(&loop), 0);
    /* One IP for everyone here: lift the per-IP cap so the flood fills the total. */
    struct host_config ca = {.max_pending = 32, .max_pending_per_ip = 1000, .max_conns = 1,
                             .handshake_timeout_ms = 20000};
    node_up(&loop, &a, ca, true);
    node_up(&loop, &b, (struct host_config){0}, false);
    node_up(&loop, &c, (struct host_config){0}, true);
    node_up(&loop, &d, (struct host_config){0}, false);
    assert_int_equal(ping_wait(&loop, d.h, &a.addr, 3000), 0); /* the one inbound slot */
    assert_true(junk_start(&loop, &j, a.h, "127.0.0.1", 200, true));
    assert_true(run_until(&loop, pending_full, &a, 3000));
    assert_int_equal(ping_wait(&loop, a.h, &c.addr, 3000), 0);
    assert_true(ping_wait(&loop, b.h, &a.addr, 3000) < 0);
    struct host_stats st;
    host_stats_get(a.h, &st);
    assert_int_equal(st.n_pending, 32);
    assert_int_equal(st.n_conns_inbound, 1);
    assert_int_equal(st.n_conns_outbound, 1);
    assert_int_equal(st.n_refused_dials, 0);
    junk_stop(&j);
    node_down(&a);
    node_down(&b);
    node_down(&c);
    node_down(&d);
    loop_down(&loop);
}

struct deadline_watch {
    struct junk *j;
    size_t want;
};

static bool junk_closed(void *ctx)
{
    const struct deadline_watch *w = ctx;
    return w->j->n_closed >= w->want;
}

/* Sockets that never speak are closed at the upgrade deadline; one over the per-IP cap is
 * closed at once. */
static void test_net_connmgr_pending_deadline_closes_idle_sockets(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct node a;
    struct junk j;
    assert_int_equal(uv_loop_init(&loop), 0);
    node_up(&loop, &a, (struct host_config){.handshake_timeout_ms = 400}, true);
    uint64_t t0 = now_ms();
    assert_true(junk_start(&loop, &j, a.h, "127.0.0.1", HOST_DEFAULT_MAX_PENDING_PER_IP + 1,
                           false));
    struct deadline_watch w = {&j, 1};
    assert_true(run_until(&loop, junk_closed, &w, 300)); /* the one too many */
    assert_true(now_ms() - t0 < 300);
    struct host_stats st;
    host_stats_get(a.h, &st);
    assert_int_equal(st.n_refused_pending_per_ip, 1);
    assert_int_equal(st.n_pending, HOST_DEFAULT_MAX_PENDING_PER_IP);
    w.want = HOST_DEFAULT_MAX_PENDING_PER_IP + 1;
    assert_true(run_until(&loop, junk_closed, &w, 3000));
    uint64_t dt = now_ms() - t0;
    print_message("idle sockets closed after %llu ms (deadline 400)\n", (unsigned long long)dt);
    assert_true(dt >= 380 && dt < 1500);
    host_stats_get(a.h, &st);
    assert_int_equal(st.n_handshake_timeouts, HOST_DEFAULT_MAX_PENDING_PER_IP);
    assert_int_equal(st.n_pending, 0);
    junk_stop(&j);
    node_down(&a);
    loop_down(&loop);
}

#define FLOOD_N 40

static void echo_serve(void *ctx, struct host_stream *s)
{
    (void)ctx;
    (void)s; /* left open: the stream is what makes the peer useful */
}

static void echo_opened(void *ctx, struct host_stream *s, int status)
{
    bool *done = ctx;
    (void)s;
    assert_int_equal(status, 0);
    *done = true;
}

struct flood {
    struct node *a;
    struct ping_result r[FLOOD_N];
};

static bool flood_done(void *ctx)
{
    const struct flood *f = ctx;
    for (size_t i = 0; i < FLOOD_N; i++)
        if (!f->r[i].done) return false;
    return true;
}

static bool trimmed_to_low_water(void *ctx)
{
    const struct flood *f = ctx;
    struct host_stats st;
    host_stats_get(f->a->h, &st);
    return st.n_conns_inbound <= 8;
}

/* 40 fresh identities connect to A (16 inbound at most, trimmed from 12 down to 8): the
 * protected peer and the one with a useful stream are kept, 8 others are closed. */
static void test_net_connmgr_trims_established_flood_sparing_protected(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct node a, p, u;
    static struct node crowd[FLOOD_N];
    static struct flood f;
    struct host_peer_info info;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct host_config ca = {.max_pending = 64, .max_pending_per_ip = 64, .max_conns = 16,
                             .conns_high_water = 12, .conns_low_water = 8,
                             .trim_grace_ms = 300};
    node_up(&loop, &a, ca, true);
    assert_int_equal(host_set_handler(a.h, ECHO_ID, echo_serve, NULL), 0);
    node_up(&loop, &p, (struct host_config){0}, false);
    node_up(&loop, &u, (struct host_config){0}, false);
    assert_int_equal(host_peer_protect(a.h, &p.id.id, "test", true), 0);
    assert_true(host_peer_is_protected(a.h, &p.id.id));
    assert_int_equal(ping_wait(&loop, p.h, &a.addr, 3000), 0);
    bool echo_up = false;
    assert_int_equal(host_open_stream(u.h, &a.addr, ECHO_ID, echo_opened, &echo_up), 0);
    assert_true(run_until(&loop, flag_set, &echo_up, 3000));
    memset(&f, 0, sizeof f);
    f.a = &a;
    for (size_t i = 0; i < FLOOD_N; i++) {
        node_up(&loop, &crowd[i], (struct host_config){0}, false);
        assert_int_equal(host_ping(crowd[i].h, &a.addr, on_ping, &f.r[i]), 0);
    }
    assert_true(run_until(&loop, flood_done, &f, 5000));
    struct host_stats st;
    host_stats_get(a.h, &st);
    assert_true(st.n_conns_inbound <= 16);
    assert_int_equal(st.n_refused_conns_total, FLOOD_N + 2 - 16);
    assert_true(run_until(&loop, trimmed_to_low_water, &f, 3000));
    run_for(&loop, 400); /* nothing more goes */
    host_stats_get(a.h, &st);
    print_message("inbound %u, refused %llu, trimmed %llu\n", st.n_conns_inbound,
                  (unsigned long long)st.n_refused_conns_total,
                  (unsigned long long)st.n_trimmed);
    assert_int_equal(st.n_conns_inbound, 8);
    assert_int_equal(st.n_trimmed, 8);
    assert_int_equal(host_peer_info(a.h, &p.id.id, &info), 0);
    assert_int_equal(host_peer_info(a.h, &u.id.id, &info), 0);
    /* Unprotected, P goes on the next trim like any idle peer (it is the oldest: last). */
    assert_int_equal(host_peer_protect(a.h, &p.id.id, "test", false), 0);
    assert_false(host_peer_is_protected(a.h, &p.id.id));
    for (size_t i = 0; i < FLOOD_N; i++) node_down(&crowd[i]);
    node_down(&a);
    node_down(&p);
    node_down(&u);
    loop_down(&loop);
}

/* The policy core alone: tags, per-IP keys, the trim order. */
static void test_net_connmgr_core_tags_keys_and_order(void **state)
{
    (void)state;
    struct connmgr cm;
    struct identity x;
    assert_int_equal(identity_generate(&x), 0);
    connmgr_init(&cm);
    assert_false(connmgr_is_protected(&cm, &x.id));
    assert_int_equal(connmgr_protect(&cm, &x.id, "a", true), 0);
    assert_int_equal(connmgr_protect(&cm, &x.id, "a", true), 0);
    assert_int_equal(connmgr_protect(&cm, &x.id, "b", true), 0);
    assert_int_equal(cm.n_prot, 2);
    assert_int_equal(connmgr_protect(&cm, &x.id, "a", false), 0);
    assert_true(connmgr_is_protected(&cm, &x.id)); /* "b" still holds */
    assert_int_equal(connmgr_protect(&cm, &x.id, "b", false), 0);
    assert_false(connmgr_is_protected(&cm, &x.id));
    assert_int_equal(connmgr_protect(&cm, &x.id, "", true), MESH_EINVAL);
    assert_int_equal(connmgr_protect(&cm, &x.id, "0123456789012345678901234567890123", true),
                     MESH_EINVAL);
    connmgr_free(&cm);
    identity_wipe(&x);

    /* IPv6 peers of one /64 share a budget; IPv4 and IPv4-mapped IPv6 are one address. */
    struct sockaddr_in6 s1 = {.sin6_family = AF_INET6}, s2 = s1, s3 = s1, s4 = s1;
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct connmgr_ip k1, k2, k3, k4, k5;
    inet_pton(AF_INET6, "2001:db8:1:2::1", &s1.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", &s2.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:3::1", &s3.sin6_addr);
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &s4.sin6_addr);
    inet_pton(AF_INET, "192.0.2.7", &v4.sin_addr);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&s1, &k1), 0);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&s2, &k2), 0);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&s3, &k3), 0);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&s4, &k4), 0);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&v4, &k5), 0);
    assert_true(connmgr_ip_equal(&k1, &k2));
    assert_false(connmgr_ip_equal(&k1, &k3));
    assert_true(connmgr_ip_equal(&k4, &k5));
    v4.sin_addr.s_addr ^= htonl(1);
    assert_int_equal(connmgr_ip_key((struct sockaddr *)&v4, &k5), 0);
    assert_false(connmgr_ip_equal(&k4, &k5));
    struct sockaddr bad = {.sa_family = AF_UNIX};
    assert_int_equal(connmgr_ip_key(&bad, &k5), MESH_EUNSUPPORTED);

    /* Never useful first, youngest first among equals; the recently useful last. */
    int c0, c1, c2, c3;
    struct connmgr_cand cands[] = {
        {&c0, 500, 100}, {&c1, 0, 100}, {&c2, 0, 300}, {&c3, 900, 50}};
    connmgr_rank(cands, 4);
    assert_ptr_equal(cands[0].conn, &c2);
    assert_ptr_equal(cands[1].conn, &c1);
    assert_ptr_equal(cands[2].conn, &c0);
    assert_ptr_equal(cands[3].conn, &c3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_connmgr_core_tags_keys_and_order),
        cmocka_unit_test(test_net_connmgr_pending_deadline_closes_idle_sockets),
        cmocka_unit_test(test_net_connmgr_idle_flood_does_not_lock_out_bootstrap),
        cmocka_unit_test(test_net_connmgr_full_inbound_budget_still_dials_out),
        cmocka_unit_test(test_net_connmgr_trims_established_flood_sparing_protected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
