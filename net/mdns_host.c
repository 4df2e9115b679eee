/* mdns_host.c - the mDNS core on a libuv UDP socket (see mdns_host.h; RFC 6762 section 11:
 * queries and responses go to 224.0.0.251:5353 with the multicast loop on, so other nodes on
 * this host hear them too).
 */
#include "net/mdns_host.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

struct mdns_host {
    uv_loop_t *loop;
    struct mdns *m;
    uv_udp_t udp;
    uv_timer_t timer;
    struct sockaddr_in group;
    mdns_host_peer_fn on_peer;
    void *ctx;
    int n_open_handles;
    bool closing;
    uint8_t rbuf[MDNS_MSG_MAX];
};

struct send_req {
    uv_udp_send_t req;
    uint8_t *buf;
};

static void on_sent(uv_udp_send_t *req, int status)
{
    struct send_req *s = (struct send_req *)req;
    (void)status; /* a lost mDNS packet is retried by the next query */
    free(s->buf);
    free(s);
}

static void on_timer(uv_timer_t *t);

/* Sends what the core queued, reports discovered peers, re-arms the timer. */
static void pump(struct mdns_host *mh)
{
    uint8_t *b;
    size_t len;
    if (mh->closing) return;
    uint64_t now = uv_now(mh->loop), next = mdns_periodic(mh->m, now);
    while (mdns_next_packet(mh->m, &b, &len) == 0) {
        struct send_req *s = malloc(sizeof *s);
        if (!s) {
            free(b);
            continue;
        }
        s->buf = b;
        uv_buf_t ub = uv_buf_init((char *)b, (unsigned)len);
        if (uv_udp_send(&s->req, &mh->udp, &ub, 1, (const struct sockaddr *)&mh->group,
                        on_sent) != 0) {
            free(b);
            free(s);
        }
    }
    struct mdns_peer p;
    while (mdns_next_peer(mh->m, &p) == 0)
        if (mh->on_peer) mh->on_peer(mh->ctx, &p);
    uv_timer_start(&mh->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_timer(uv_timer_t *t)
{
    pump(t->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct mdns_host *mh = h->data;
    (void)hint;
    *buf = uv_buf_init((char *)mh->rbuf, sizeof mh->rbuf);
}

static void on_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags)
{
    struct mdns_host *mh = u->data;
    (void)from;
    if (n <= 0 || (flags & UV_UDP_PARTIAL) || mh->closing) return;
    (void)mdns_on_packet(mh->m, uv_now(mh->loop), (const uint8_t *)buf->base, (size_t)n);
    pump(mh);
}

int mdns_host_set_addrs(struct mdns_host *mh, const struct multiaddr *addrs, size_t n)
{
    return mdns_set_addrs(mh->m, addrs, n);
}

void mdns_host_query(struct mdns_host *mh)
{
    struct send_req *s = malloc(sizeof *s);
    uint8_t *b = malloc(64);
    size_t len;
    if (!s || !b || mh->closing || mdns_query_build(b, 64, &len) != 0) {
        free(s);
        free(b);
        return;
    }
    s->buf = b;
    uv_buf_t ub = uv_buf_init((char *)b, (unsigned)len);
    if (uv_udp_send(&s->req, &mh->udp, &ub, 1, (const struct sockaddr *)&mh->group, on_sent) != 0) {
        free(b);
        free(s);
    }
}

static void on_closed(uv_handle_t *h)
{
    struct mdns_host *mh = h->data;
    if (--mh->n_open_handles == 0) {
        mdns_free(mh->m);
        free(mh);
    }
}

void mdns_host_free(struct mdns_host *mh)
{
    if (!mh || mh->closing) return;
    mh->closing = true;
    uv_udp_recv_stop(&mh->udp);
    uv_timer_stop(&mh->timer);
    uv_close((uv_handle_t *)&mh->udp, on_closed);
    uv_close((uv_handle_t *)&mh->timer, on_closed);
}

int mdns_host_new(uv_loop_t *loop, const struct mdns_host_config *cfg, struct mdns_host **out)
{
    struct sockaddr_in any;
    *out = NULL;
    if (!loop || !cfg) return MESH_EINVAL;
    struct mdns_host *mh = calloc(1, sizeof *mh);
    if (!mh) return MESH_ENOMEM;
    int rc = mdns_new(&cfg->core, &mh->m);
    if (rc < 0) {
        free(mh);
        return rc;
    }
    mh->loop = loop;
    mh->on_peer = cfg->on_peer;
    mh->ctx = cfg->ctx;
    uv_ip4_addr(MDNS_IP4_GROUP, MDNS_PORT, &mh->group);
    uv_ip4_addr("0.0.0.0", MDNS_PORT, &any);
    uv_udp_init(loop, &mh->udp);
    uv_timer_init(loop, &mh->timer);
    mh->udp.data = mh->timer.data = mh;
    mh->n_open_handles = 2;
    int e = uv_udp_bind(&mh->udp, (const struct sockaddr *)&any, UV_UDP_REUSEADDR);
    if (!e) e = uv_udp_set_membership(&mh->udp, MDNS_IP4_GROUP, cfg->iface_addr, UV_JOIN_GROUP);
    if (!e && cfg->iface_addr) e = uv_udp_set_multicast_interface(&mh->udp, cfg->iface_addr);
    if (!e) e = uv_udp_set_multicast_loop(&mh->udp, 1);
    if (!e) e = uv_udp_set_multicast_ttl(&mh->udp, 255); /* RFC 6762 section 11 */
    if (!e) e = uv_udp_recv_start(&mh->udp, on_alloc, on_recv);
    if (e) {
        mdns_host_free(mh);
        return MESH_EIO;
    }
    pump(mh); /* first query at once */
    *out = mh;
    return 0;
}
