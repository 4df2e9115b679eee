/* dht_host.c - the Kademlia core on a libp2p host (see dht_host.h).
 *
 * Streams outlive nothing they point at: every stream context holds a reference on a small
 * anchor that points at the dht_host, and dht_host_free() clears that pointer, so callbacks
 * arriving later only release their context. Requests are one stream each (libp2p kad-dht
 * allows reuse; one per request keeps failure handling simple).
 */
#include "net/dht_host.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

struct anchor {
    struct dht_host *dh; /* NULL once the dht_host is freed */
    size_t refs;
};

struct dht_host {
    uv_loop_t *loop;
    struct host *h;
    struct dht *d;
    uv_timer_t timer;
    struct anchor *anchor;
};

struct out_req {
    struct anchor *a;
    uint64_t req_id;
    uint8_t *msg;
    size_t msg_len;
    bool expects_response, answered, closing;
};

static void anchor_release(struct anchor *a)
{
    if (a && --a->refs == 0) free(a);
}

static uint64_t now_ms(const struct dht_host *dh) { return uv_now(dh->loop); }

static void on_timer(uv_timer_t *t);

/* Sends queued requests, runs the core's timers and re-arms ours. */
static void drain(struct dht_host *dh);

void dht_host_kick(struct dht_host *dh)
{
    drain(dh);
    uint64_t now = now_ms(dh), next = dht_periodic(dh->d, now);
    drain(dh);
    uv_timer_start(&dh->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_timer(uv_timer_t *t)
{
    dht_host_kick(t->data);
}

/* ---- inbound requests (server mode) ------------------------------------------------ */

static void srv_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct anchor *a = ctx;
    struct dht_host *dh = a->dh;
    if (!dh) {
        host_stream_reset(s);
        return;
    }
    struct dht_peer from;
    struct host_peer_info info;
    memset(&from, 0, sizeof from);
    from.id = *host_stream_peer(s);
    if (host_peer_info(dh->h, &from.id, &info) == 0 && info.is_identified)
        for (size_t i = 0; i < info.ident.n_listen_addrs && from.n_addrs < DHT_PEER_ADDRS_MAX; i++)
            from.addrs[from.n_addrs++] = info.ident.listen_addrs[i];
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    int rc = dht_handle_request(dh->d, now_ms(dh), &from, data, len, &resp, &resp_len);
    if (rc < 0) {
        anchor_release(a); /* reset: no on_close follows */
        host_stream_reset(s);
    } else if (resp) {
        host_stream_write(s, resp, resp_len); /* already length-prefixed */
    }
    free(resp);
    dht_host_kick(dh);
}

static void srv_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void srv_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    anchor_release(ctx);
}

static const struct host_stream_cbs g_srv_cbs = {srv_data, srv_eof, srv_close};

static void on_inbound(void *ctx, struct host_stream *s)
{
    struct anchor *a = ctx;
    if (!a->dh) {
        host_stream_reset(s);
        return;
    }
    a->refs++;
    host_stream_set_message_mode(s, DHT_MSG_MAX_LEN);
    host_stream_set_callbacks(s, &g_srv_cbs, a);
}

static void refuse_stream(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_reset(s);
}

/* ---- outgoing requests ------------------------------------------------------------- */

static void req_fail(struct out_req *r)
{
    struct dht_host *dh = r->a->dh;
    if (!dh || r->answered) return;
    r->answered = true;
    dht_on_failure(dh->d, now_ms(dh), r->req_id);
    dht_host_kick(dh);
}

static void req_free(struct out_req *r)
{
    anchor_release(r->a);
    free(r->msg);
    free(r);
}

static void cli_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct out_req *r = ctx;
    struct dht_host *dh = r->a->dh;
    if (dh && !r->answered) {
        r->answered = true;
        dht_on_response(dh->d, now_ms(dh), r->req_id, data, len);
        dht_host_kick(dh);
    }
    if (!r->closing) {
        r->closing = true;
        host_stream_close(s);
    }
}

static void cli_eof(void *ctx, struct host_stream *s)
{
    struct out_req *r = ctx;
    if (!r->closing) {
        r->closing = true;
        host_stream_close(s);
    }
}

static void cli_close(void *ctx, struct host_stream *s, int status)
{
    struct out_req *r = ctx;
    (void)s;
    (void)status;
    if (r->expects_response) req_fail(r); /* no-op if answered */
    req_free(r);
}

static const struct host_stream_cbs g_cli_cbs = {cli_data, cli_eof, cli_close};

static void on_open(void *ctx, struct host_stream *s, int status)
{
    struct out_req *r = ctx;
    if (!r->a->dh || status < 0 || !s) {
        if (s) host_stream_reset(s);
        req_fail(r);
        req_free(r);
        return;
    }
    host_stream_set_message_mode(s, DHT_MSG_MAX_LEN);
    host_stream_set_callbacks(s, &g_cli_cbs, r);
    if (host_stream_write(s, r->msg, r->msg_len) < 0) {
        host_stream_reset(s);
        req_fail(r);
        req_free(r);
        return;
    }
    if (!r->expects_response) {
        r->closing = true;
        host_stream_close(s);
    }
}

/* Opens a stream to the peer: over its current connection if any, else to each known
 * address in turn until one is dialable. */
static int open_to(struct dht_host *dh, const struct dht_peer *p, struct out_req *r)
{
    struct host_peer_info info;
    struct multiaddr a;
    if (host_peer_info(dh->h, &p->id, &info) == 0) {
        a = info.remote_addr;
        if (multiaddr_append_p2p(&a, &p->id) == 0 &&
            host_open_stream(dh->h, &a, dht_protocol_id(dh->d), on_open, r) == 0)
            return 0;
    }
    for (size_t i = 0; i < p->n_addrs; i++) {
        struct peer_id in;
        a = p->addrs[i];
        if (multiaddr_peer_id(&a, &in) != 0 && multiaddr_append_p2p(&a, &p->id) != 0) continue;
        if (host_open_stream(dh->h, &a, dht_protocol_id(dh->d), on_open, r) == 0) return 0;
    }
    return MESH_ENOTFOUND;
}

static void drain(struct dht_host *dh)
{
    struct dht_request q;
    while (dht_next_request(dh->d, &q) == 0) {
        struct out_req *r = calloc(1, sizeof *r);
        if (!r) {
            free(q.msg);
            dht_on_failure(dh->d, now_ms(dh), q.req_id);
            continue;
        }
        r->a = dh->anchor;
        r->a->refs++;
        r->req_id = q.req_id;
        r->msg = q.msg;
        r->msg_len = q.msg_len;
        r->expects_response = q.expects_response;
        if (open_to(dh, &q.peer, r) < 0) {
            if (r->expects_response) dht_on_failure(dh->d, now_ms(dh), r->req_id);
            req_free(r);
        }
    }
}

/* ---- peers and life cycle -------------------------------------------------------- */

void dht_host_on_peer_event(struct dht_host *dh, enum host_peer_event ev,
                            const struct host_peer_info *p)
{
    if (ev == HOST_PEER_DISCONNECTED) {
        dht_peer_disconnected(dh->d, now_ms(dh), &p->id);
        return;
    }
    if (ev != HOST_PEER_IDENTIFIED) return;
    bool is_server = false;
    for (size_t i = 0; i < p->ident.n_protocols; i++)
        if (strcmp(p->ident.protocols[i], dht_protocol_id(dh->d)) == 0) is_server = true;
    struct dht_peer dp;
    memset(&dp, 0, sizeof dp);
    dp.id = p->id;
    for (size_t i = 0; i < p->ident.n_listen_addrs && dp.n_addrs < DHT_PEER_ADDRS_MAX; i++)
        dp.addrs[dp.n_addrs++] = p->ident.listen_addrs[i];
    dht_peer_connected(dh->d, now_ms(dh), &dp, is_server);
    dht_host_kick(dh);
}

struct dht *dht_host_core(struct dht_host *dh) { return dh->d; }

int dht_host_new(uv_loop_t *loop, struct host *h, const struct dht_config *cfg,
                 struct dht_host **out)
{
    *out = NULL;
    if (!loop || !h || !cfg || !peer_id_equal(&cfg->self, host_peer_id(h))) return MESH_EINVAL;
    struct dht_host *dh = calloc(1, sizeof *dh);
    struct anchor *a = calloc(1, sizeof *a);
    if (!dh || !a) {
        free(dh);
        free(a);
        return MESH_ENOMEM;
    }
    int rc = dht_new(cfg, &dh->d);
    if (rc < 0) {
        free(dh);
        free(a);
        return rc;
    }
    a->dh = dh;
    a->refs = 1;
    dh->anchor = a;
    dh->loop = loop;
    dh->h = h;
    if (cfg->is_server) {
        rc = host_set_handler(h, dht_protocol_id(dh->d), on_inbound, a);
        if (rc < 0) {
            dht_free(dh->d);
            free(dh);
            free(a);
            return rc;
        }
    }
    uv_timer_init(loop, &dh->timer);
    dh->timer.data = dh;
    dht_host_kick(dh);
    *out = dh;
    return 0;
}

static void on_timer_closed(uv_handle_t *t)
{
    free(t->data);
}

void dht_host_free(struct dht_host *dh)
{
    if (!dh) return;
    if (dht_is_server(dh->d)) host_set_handler(dh->h, dht_protocol_id(dh->d), refuse_stream, NULL);
    dh->anchor->dh = NULL;
    anchor_release(dh->anchor);
    dht_free(dh->d);
    dh->d = NULL;
    uv_timer_stop(&dh->timer);
    uv_close((uv_handle_t *)&dh->timer, on_timer_closed);
}
