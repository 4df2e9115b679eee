/* soak_junk.c - hostile traffic against one node, for bench/soak.sh (issue 11's soak).
 *
 * Usage: soak_junk --p2p /ip4/127.0.0.1/tcp/P/p2p/ID [--http 127.0.0.1:PORT] [--seconds N]
 *                  [--idle N] [--sybil-per-s N] [--provide-per-s N] [--slowloris N]
 *                  [--from 127.0.0.2]
 *
 * On one libuv loop, for --seconds (default 600), it keeps up:
 *   idle       N plain TCP sockets to the p2p port that never say a byte (reopened when the
 *              node closes them: the node's pending-handshake budget and deadline);
 *   sybil      N fresh identities per second, each a whole host that dials the node, pings
 *              it over an encrypted connection and leaves (the peer table, the connection
 *              cap and its trimming);
 *   provide    N ADD_PROVIDER records per second for random keys from one identity over one
 *              DHT stream (the provider table's quotas; reopened if the node resets it);
 *   slowloris  N HTTP connections that send a request's headers one byte every 2 s (the
 *              HTTP server's request deadline and per-address limit; reopened when cut).
 * --from binds the idle and slowloris sockets to another loopback address, as an attacker
 * elsewhere would be (the per-address budgets then spare the honest peers on 127.0.0.1);
 * the sybils and the flooder always come from the default address.
 * Every 10 s it prints one line of counters; the last line is the totals. It only ever
 * connects to the addresses given (loopback in soak.sh).
 */
#include "core/err.h"
#include "net/dht.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/multiaddr.h"
#include "net/varint.h"

#include "dht.pb-c.h"

#include <sodium.h>
#include <uv.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JUNK_MAX_IDLE 4096
#define JUNK_MAX_SLOW 1024
#define JUNK_MAX_SYBILS_IN_FLIGHT 32

struct junk;

struct sock { /* one idle or slowloris TCP connection */
    struct junk *j;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t wr;
    bool is_open, is_slow;
    size_t sent; /* slowloris: header bytes sent so far */
    char one[1];
};

struct sybil {
    struct junk *j;
    struct host *h;
    uv_timer_t later; /* closes the host after the ping, on its own turn of the loop */
};

struct junk {
    uv_loop_t *loop;
    struct multiaddr p2p_addr;
    struct sockaddr_storage p2p_sa, http_sa, from_sa;
    bool has_http, has_from;
    int seconds, n_idle, sybil_per_s, provide_per_s, n_slow;
    struct sock *idle, *slow;
    uv_timer_t tick, reopen, sybil_timer, provide_timer, slow_timer, stop_timer;
    int n_sybils_in_flight;
    /* the provider flooder */
    struct identity prov_id;
    struct host *prov_host;
    struct host_stream *prov_stream;
    bool prov_opening;
    /* counters */
    uint64_t idle_opened, idle_closed_by_node, sybil_ok, sybil_fail, provides_sent,
        prov_streams, prov_resets, slow_opened, slow_cut;
    uint64_t t0_ms;
};

static const char SLOW_REQ[] =
    "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "X-Padding-Header-That-Never-Ends: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/* ---- idle and slowloris sockets --------------------------------------------------- */

static void sock_open(struct sock *s);

static void on_sock_closed(uv_handle_t *hd)
{
    struct sock *s = hd->data;
    s->is_open = false; /* the reopen timer brings it back */
}

static void sock_drop(struct sock *s, bool by_node)
{
    if (!s->is_open || uv_is_closing((uv_handle_t *)&s->tcp)) return;
    if (by_node) {
        if (s->is_slow) s->j->slow_cut++;
        else s->j->idle_closed_by_node++;
    }
    uv_close((uv_handle_t *)&s->tcp, on_sock_closed);
}

static void on_alloc(uv_handle_t *hd, size_t sz, uv_buf_t *b)
{
    (void)hd;
    (void)sz;
    static char scratch[4096]; /* what the node says is thrown away */
    *b = uv_buf_init(scratch, sizeof scratch);
}

static void on_sock_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    if (n < 0) sock_drop(st->data, true);
}

static void on_sock_connect(uv_connect_t *c, int status)
{
    struct sock *s = c->data;
    if (status < 0) {
        sock_drop(s, false);
        return;
    }
    if (s->is_slow) s->j->slow_opened++;
    else s->j->idle_opened++;
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_sock_read);
}

static void sock_open(struct sock *s)
{
    struct junk *j = s->j;
    if (uv_tcp_init(j->loop, &s->tcp) < 0) return;
    s->tcp.data = s;
    s->conn.data = s;
    s->is_open = true;
    s->sent = 0;
    if (j->has_from && uv_tcp_bind(&s->tcp, (const struct sockaddr *)&j->from_sa, 0) < 0) {
        sock_drop(s, false);
        return;
    }
    const struct sockaddr *sa = (const struct sockaddr *)(s->is_slow ? &j->http_sa : &j->p2p_sa);
    if (uv_tcp_connect(&s->conn, &s->tcp, sa, on_sock_connect) < 0) sock_drop(s, false);
}

static void on_reopen(uv_timer_t *t)
{
    struct junk *j = t->data;
    for (int i = 0; i < j->n_idle; i++)
        if (!j->idle[i].is_open) sock_open(&j->idle[i]);
    for (int i = 0; i < j->n_slow; i++)
        if (!j->slow[i].is_open) sock_open(&j->slow[i]);
}

static void on_slow_written(uv_write_t *w, int status)
{
    if (status < 0) sock_drop(w->data, true);
}

static void on_slow_tick(uv_timer_t *t)
{
    struct junk *j = t->data;
    for (int i = 0; i < j->n_slow; i++) {
        struct sock *s = &j->slow[i];
        if (!s->is_open || uv_is_closing((uv_handle_t *)&s->tcp) ||
            !uv_is_writable((uv_stream_t *)&s->tcp))
            continue;
        if (s->sent >= sizeof SLOW_REQ - 1) s->sent = sizeof SLOW_REQ - 40; /* never ends */
        s->one[0] = SLOW_REQ[s->sent++];
        uv_buf_t b = uv_buf_init(s->one, 1);
        s->wr.data = s;
        if (uv_write(&s->wr, (uv_stream_t *)&s->tcp, &b, 1, on_slow_written) < 0)
            sock_drop(s, true);
    }
}

/* ---- sybils: a fresh identity per connection ----------------------------------------- */

static void on_sybil_freed(uv_handle_t *hd) { free(hd->data); }

static void on_sybil_later(uv_timer_t *t)
{
    struct sybil *sy = t->data;
    host_close(sy->h); /* frees itself once libuv closed its handles */
    uv_close((uv_handle_t *)&sy->later, on_sybil_freed);
}

static void on_sybil_ping(void *ctx, int status, uint64_t rtt_us)
{
    (void)rtt_us;
    struct sybil *sy = ctx;
    struct junk *j = sy->j;
    if (status == 0) j->sybil_ok++;
    else j->sybil_fail++;
    j->n_sybils_in_flight--;
    uv_timer_start(&sy->later, on_sybil_later, 0, 0);
}

static void on_sybil_timer(uv_timer_t *t)
{
    struct junk *j = t->data;
    if (j->n_sybils_in_flight >= JUNK_MAX_SYBILS_IN_FLIGHT) {
        j->sybil_fail++; /* the node is too slow to answer: count it as a failure */
        return;
    }
    struct sybil *sy = calloc(1, sizeof *sy);
    struct identity id;
    if (!sy || identity_generate(&id) < 0) {
        free(sy);
        return;
    }
    struct host_config cfg = {.identity = &id, .agent = "soak-sybil/1"};
    sy->j = j;
    uv_timer_init(j->loop, &sy->later);
    sy->later.data = sy;
    int rc = host_new(j->loop, &cfg, &sy->h);
    identity_wipe(&id);
    if (rc < 0) {
        uv_close((uv_handle_t *)&sy->later, on_sybil_freed);
        return;
    }
    if (host_ping(sy->h, &j->p2p_addr, on_sybil_ping, sy) < 0) {
        j->sybil_fail++;
        uv_timer_start(&sy->later, on_sybil_later, 0, 0);
        return;
    }
    j->n_sybils_in_flight++;
}

/* ---- provider flood ------------------------------------------------------------------ */

static void prov_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    struct junk *j = ctx;
    if (status < 0) j->prov_resets++;
    j->prov_stream = NULL;
}

static void prov_on_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    (void)ctx, (void)s, (void)d, (void)n; /* ADD_PROVIDER has no answer */
}

static void prov_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void prov_on_open(void *ctx, struct host_stream *s, int status)
{
    struct junk *j = ctx;
    j->prov_opening = false;
    if (status < 0 || !s) return;
    static const struct host_stream_cbs cbs = {prov_on_data, prov_on_eof, prov_on_close};
    host_stream_set_callbacks(s, &cbs, j);
    j->prov_stream = s;
    j->prov_streams++;
}

static void provide_one(struct junk *j)
{
    uint8_t key[32], id_bytes[PEER_ID_MAX_LEN];
    randombytes_buf(key, sizeof key);
    const struct peer_id *self = host_peer_id(j->prov_host);
    memcpy(id_bytes, self->bytes, self->len);
    Dht__Pb__Message m = DHT__PB__MESSAGE__INIT;
    Dht__Pb__Message__Peer p = DHT__PB__MESSAGE__PEER__INIT, *pp = &p;
    ProtobufCBinaryData addr = {j->p2p_addr.len, j->p2p_addr.bytes};
    m.type = DHT__PB__MESSAGE__MESSAGE_TYPE__ADD_PROVIDER;
    m.key.data = key;
    m.key.len = sizeof key;
    p.id.data = id_bytes;
    p.id.len = self->len;
    p.n_addrs = 1; /* any address will do: the record is junk */
    p.addrs = &addr;
    m.n_providerpeers = 1;
    m.providerpeers = &pp;
    uint8_t buf[512];
    size_t n = dht__pb__message__get_packed_size(&m);
    if (n > sizeof buf) return;
    dht__pb__message__pack(&m, buf);
    if (host_stream_write_msg(j->prov_stream, buf, n) == 0) j->provides_sent++;
}

static void on_provide_timer(uv_timer_t *t)
{
    struct junk *j = t->data;
    if (!j->prov_stream) {
        if (!j->prov_opening &&
            host_open_stream(j->prov_host, &j->p2p_addr, DHT_PROTOCOL_MESHLLM, prov_on_open, j) == 0)
            j->prov_opening = true;
        return;
    }
    int per_tick = j->provide_per_s / 10; /* the timer runs every 100 ms */
    if (per_tick < 1) per_tick = 1;
    for (int i = 0; i < per_tick && j->prov_stream; i++) provide_one(j);
}

/* ---- reporting and the end ------------------------------------------------------------ */

static void report(struct junk *j, const char *what)
{
    printf("%s t=%4llus idle_open=%llu idle_cut=%llu sybil_ok=%llu sybil_fail=%llu "
           "provides=%llu prov_streams=%llu prov_resets=%llu slow_open=%llu slow_cut=%llu\n",
           what, (unsigned long long)((uv_now(j->loop) - j->t0_ms) / 1000),
           (unsigned long long)j->idle_opened, (unsigned long long)j->idle_closed_by_node,
           (unsigned long long)j->sybil_ok, (unsigned long long)j->sybil_fail,
           (unsigned long long)j->provides_sent, (unsigned long long)j->prov_streams,
           (unsigned long long)j->prov_resets, (unsigned long long)j->slow_opened,
           (unsigned long long)j->slow_cut);
    fflush(stdout);
}

static void on_tick(uv_timer_t *t) { report(t->data, "junk"); }

static void on_stop(uv_timer_t *t)
{
    struct junk *j = t->data;
    report(j, "total");
    uv_timer_stop(&j->tick);
    uv_timer_stop(&j->reopen);
    uv_timer_stop(&j->sybil_timer);
    uv_timer_stop(&j->provide_timer);
    uv_timer_stop(&j->slow_timer);
    if (j->prov_host) host_close(j->prov_host);
    j->prov_host = NULL;
    uv_stop(j->loop); /* the process exits right after: the kernel closes the rest */
}

static int parse_hostport(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    return uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)out);
}

static void usage(void)
{
    fprintf(stderr, "usage: soak_junk --p2p /ip4/A/tcp/P/p2p/ID [--http A:PORT] [--seconds N]\n"
                    "                 [--idle N] [--sybil-per-s N] [--provide-per-s N] "
                    "[--slowloris N] [--from 127.0.0.2]\n");
}

int main(int argc, char **argv)
{
    struct junk j = {.seconds = 600, .n_idle = 200, .sybil_per_s = 5, .provide_per_s = 50,
                     .n_slow = 50};
    const char *p2p = NULL, *http = NULL, *from = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (!strcmp(a, "--p2p")) p2p = v;
        else if (!strcmp(a, "--http")) http = v;
        else if (!strcmp(a, "--from")) from = v;
        else if (!strcmp(a, "--seconds")) j.seconds = atoi(v);
        else if (!strcmp(a, "--idle")) j.n_idle = atoi(v);
        else if (!strcmp(a, "--sybil-per-s")) j.sybil_per_s = atoi(v);
        else if (!strcmp(a, "--provide-per-s")) j.provide_per_s = atoi(v);
        else if (!strcmp(a, "--slowloris")) j.n_slow = atoi(v);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!p2p || multiaddr_from_text(p2p, &j.p2p_addr) < 0 ||
        multiaddr_to_sockaddr(&j.p2p_addr, &j.p2p_sa) < 0) {
        fprintf(stderr, "soak_junk: --p2p needs /ip4/A/tcp/P/p2p/ID\n");
        return 2;
    }
    j.has_http = http != NULL;
    if (http && parse_hostport(http, &j.http_sa) < 0) {
        fprintf(stderr, "soak_junk: --http needs A:PORT\n");
        return 2;
    }
    if (!j.has_http) j.n_slow = 0;
    j.has_from = from != NULL;
    if (from && uv_ip4_addr(from, 0, (struct sockaddr_in *)&j.from_sa) < 0) {
        fprintf(stderr, "soak_junk: --from needs an IPv4 address (127.0.0.2)\n");
        return 2;
    }
    if (j.n_idle < 0 || j.n_idle > JUNK_MAX_IDLE || j.n_slow < 0 || j.n_slow > JUNK_MAX_SLOW ||
        j.seconds <= 0) {
        fprintf(stderr, "soak_junk: --idle 0..%d, --slowloris 0..%d, --seconds > 0\n",
                JUNK_MAX_IDLE, JUNK_MAX_SLOW);
        return 2;
    }
    if (sodium_init() < 0) return 1;
    j.loop = uv_default_loop();
    j.t0_ms = uv_now(j.loop);
    j.idle = calloc((size_t)j.n_idle + 1, sizeof *j.idle);
    j.slow = calloc((size_t)j.n_slow + 1, sizeof *j.slow);
    if (!j.idle || !j.slow) return 1;
    for (int i = 0; i < j.n_idle; i++) {
        j.idle[i].j = &j;
        sock_open(&j.idle[i]);
    }
    for (int i = 0; i < j.n_slow; i++) {
        j.slow[i].j = &j;
        j.slow[i].is_slow = true;
        sock_open(&j.slow[i]);
    }
    if (j.provide_per_s > 0) {
        if (identity_generate(&j.prov_id) < 0) return 1;
        struct host_config cfg = {.identity = &j.prov_id, .agent = "soak-provider/1"};
        if (host_new(j.loop, &cfg, &j.prov_host) < 0) return 1;
    }
    uv_timer_t *timers[] = {&j.tick, &j.reopen, &j.sybil_timer, &j.provide_timer, &j.slow_timer,
                            &j.stop_timer};
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        uv_timer_init(j.loop, timers[i]);
        timers[i]->data = &j;
    }
    uv_timer_start(&j.tick, on_tick, 10000, 10000);
    uv_timer_start(&j.reopen, on_reopen, 200, 200);
    if (j.sybil_per_s > 0)
        uv_timer_start(&j.sybil_timer, on_sybil_timer, 0, (uint64_t)(1000 / j.sybil_per_s));
    if (j.provide_per_s > 0) uv_timer_start(&j.provide_timer, on_provide_timer, 0, 100);
    if (j.n_slow > 0) uv_timer_start(&j.slow_timer, on_slow_tick, 2000, 2000);
    uv_timer_start(&j.stop_timer, on_stop, (uint64_t)j.seconds * 1000, 0);
    uv_run(j.loop, UV_RUN_DEFAULT);
    return 0;
}
