/* p2p.c - host <-> DHT glue (see p2p.h; seam described in net/dht.h and net/README.md). */
#include "net/p2p.h"

#include "core/err.h"
#include "core/log.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define P2P_MAX_QUERIES 256

struct pending_query {
    uint64_t qid;
    p2p_query_fn cb;
    void *ctx;
};

struct p2p {
    uv_loop_t *loop;
    struct host *host;
    struct dht *dht;
    uv_timer_t timer;
    bool is_closing, is_timer_closed;
    size_t n_out; /* out_req objects alive: p is freed only when none is left */
    host_peer_fn on_peer;
    void *on_peer_ctx;
    struct pending_query queries[P2P_MAX_QUERIES];
    size_t n_queries;
};

/* One outgoing DHT request on its own stream. */
struct out_req {
    struct p2p *p;
    uint64_t req_id;
    bool expects_response, is_answered;
    uint8_t *msg;
    size_t msg_len;
};

static void p2p_pump(struct p2p *p);

static uint64_t now_ms(const struct p2p *p)
{
    return uv_now(p->loop);
}

/* ---- queries ---------------------------------------------------------------------------- */

static void on_query_done(void *ud, uint64_t qid)
{
    struct p2p *p = ud;
    for (size_t i = 0; i < p->n_queries; i++)
        if (p->queries[i].qid == qid) {
            struct pending_query q = p->queries[i];
            p->queries[i] = p->queries[--p->n_queries];
            q.cb(q.ctx, p->dht, qid);
            return;
        }
}

/* Registers the callback of a started query, or runs it now if the query already ended. */
static int track(struct p2p *p, int rc, uint64_t qid, p2p_query_fn cb, void *ctx)
{
    if (rc) return rc;
    if (dht_query_status(p->dht, qid) != DHT_QUERY_RUNNING) {
        cb(ctx, p->dht, qid);
    } else if (p->n_queries == P2P_MAX_QUERIES) {
        dht_query_release(p->dht, qid);
        return MESH_EFULL;
    } else {
        p->queries[p->n_queries++] = (struct pending_query){qid, cb, ctx};
    }
    p2p_pump(p);
    return 0;
}

int p2p_dht_bootstrap(struct p2p *p, const struct dht_peer *peers, size_t n, p2p_query_fn cb,
                      void *ctx)
{
    uint64_t qid = 0;
    int rc = dht_bootstrap(p->dht, now_ms(p), peers, n, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_find_node(struct p2p *p, const uint8_t *key, size_t key_len, p2p_query_fn cb,
                      void *ctx)
{
    uint64_t qid = 0;
    int rc = dht_find_node(p->dht, now_ms(p), key, key_len, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_put_value(struct p2p *p, const uint8_t *key, size_t key_len, const uint8_t *val,
                      size_t val_len, p2p_query_fn cb, void *ctx)
{
    uint64_t qid = 0;
    int rc = dht_put_value(p->dht, now_ms(p), key, key_len, val, val_len, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_get_value(struct p2p *p, const uint8_t *key, size_t key_len, size_t quorum,
                      p2p_query_fn cb, void *ctx)
{
    uint64_t qid = 0;
    int rc = dht_get_value(p->dht, now_ms(p), key, key_len, quorum, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_provide(struct p2p *p, const uint8_t *key, size_t key_len, p2p_query_fn cb,
                    void *ctx)
{
    struct dht_peer self;
    uint64_t qid = 0;
    memset(&self, 0, sizeof self);
    self.id = *host_peer_id(p->host);
    self.n_addrs = host_listen_addrs(p->host, self.addrs, DHT_PEER_ADDRS_MAX);
    int rc = dht_provide(p->dht, now_ms(p), key, key_len, &self, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_get_providers(struct p2p *p, const uint8_t *key, size_t key_len, size_t n_max,
                          p2p_query_fn cb, void *ctx)
{
    uint64_t qid = 0;
    int rc = dht_get_providers(p->dht, now_ms(p), key, key_len, n_max, &qid);
    return track(p, rc, qid, cb, ctx);
}

int p2p_dht_peer_from_addr(const struct multiaddr *addr, struct dht_peer *out)
{
    memset(out, 0, sizeof *out);
    int rc = multiaddr_peer_id(addr, &out->id);
    if (rc) return MESH_EINVAL;
    out->addrs[0] = *addr;
    out->n_addrs = 1;
    return 0;
}

/* ---- timer ------------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t)
{
    p2p_pump(t->data);
}

/* ---- outgoing requests ------------------------------------------------------------------ */

static void p2p_release(struct p2p *p)
{
    dht_free(p->dht);
    free(p);
}

static void out_req_free(struct out_req *r)
{
    struct p2p *p = r->p;
    free(r->msg);
    free(r);
    if (--p->n_out == 0 && p->is_timer_closed) p2p_release(p);
}

static void req_on_msg(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct out_req *r = ctx;
    if (r->is_answered) return;
    r->is_answered = true;
    dht_on_response(r->p->dht, now_ms(r->p), r->req_id, data, len);
    host_stream_close(s);
    p2p_pump(r->p);
}

static void req_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void req_on_close(void *ctx, struct host_stream *s, int status)
{
    struct out_req *r = ctx;
    struct p2p *p = r->p;
    (void)s;
    (void)status;
    if (r->expects_response && !r->is_answered && !p->is_closing) {
        dht_on_failure(p->dht, now_ms(p), r->req_id);
        p2p_pump(p);
    }
    out_req_free(r);
}

static const struct host_stream_cbs g_req_cbs = {req_on_msg, req_on_eof, req_on_close};

static void req_opened(void *ctx, struct host_stream *s, int status)
{
    struct out_req *r = ctx;
    struct p2p *p = r->p;
    if (status) {
        if (!p->is_closing) {
            dht_on_failure(p->dht, now_ms(p), r->req_id);
            p2p_pump(p);
        }
        out_req_free(r);
        return;
    }
    host_stream_set_message_mode(s, DHT_MSG_MAX_LEN);
    host_stream_set_callbacks(s, &g_req_cbs, r);
    /* r->msg already carries its length prefix */
    if (host_stream_write(s, r->msg, r->msg_len) != 0) {
        host_stream_reset(s);
        if (r->expects_response && !p->is_closing) dht_on_failure(p->dht, now_ms(p), r->req_id);
        out_req_free(r);
        return;
    }
    if (!r->expects_response) host_stream_close(s);
}

/* Where to reach a peer: the live connection if any, else its first known address. */
static int peer_addr(struct p2p *p, const struct dht_peer *peer, struct multiaddr *out)
{
    struct host_peer_info info;
    struct peer_id embedded;
    if (host_peer_info(p->host, &peer->id, &info) == 0) {
        *out = info.remote_addr;
    } else if (peer->n_addrs > 0) {
        *out = peer->addrs[0];
        if (multiaddr_peer_id(out, &embedded) == 0) return 0;
    } else {
        return MESH_ENOTFOUND;
    }
    return multiaddr_append_p2p(out, &peer->id);
}

static void send_requests(struct p2p *p)
{
    struct dht_request req;
    while (!p->is_closing && dht_next_request(p->dht, &req) == 0) {
        struct multiaddr addr;
        struct out_req *r = calloc(1, sizeof *r);
        if (!r || peer_addr(p, &req.peer, &addr) != 0) {
            free(r);
            free(req.msg);
            dht_on_failure(p->dht, now_ms(p), req.req_id);
            continue;
        }
        r->p = p;
        p->n_out++;
        r->req_id = req.req_id;
        r->expects_response = req.expects_response;
        r->msg = req.msg;
        r->msg_len = req.msg_len;
        if (host_open_stream(p->host, &addr, dht_protocol_id(p->dht), req_opened, r) != 0) {
            dht_on_failure(p->dht, now_ms(p), req.req_id);
            out_req_free(r);
        }
    }
}

/* Runs the DHT's timers, sends what it queued and re-arms the timer for its next deadline. */
static void p2p_pump(struct p2p *p)
{
    if (p->is_closing) return;
    uint64_t now = now_ms(p);
    uint64_t next = dht_periodic(p->dht, now);
    send_requests(p);
    uv_timer_start(&p->timer, on_timer, next > now ? next - now : 1, 0);
}

/* ---- inbound requests ------------------------------------------------------------------- */

static void serve_on_msg(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct p2p *p = ctx;
    struct dht_peer from;
    struct host_peer_info info;
    uint8_t *resp = NULL;
    size_t resp_len = 0;

    memset(&from, 0, sizeof from);
    from.id = *host_stream_peer(s);
    if (host_peer_info(p->host, &from.id, &info) == 0)
        for (size_t i = 0; i < info.ident.n_listen_addrs && from.n_addrs < DHT_PEER_ADDRS_MAX; i++)
            from.addrs[from.n_addrs++] = info.ident.listen_addrs[i];
    int rc = dht_handle_request(p->dht, now_ms(p), &from, data, len, &resp, &resp_len);
    if (rc) {
        log_debug("p2p: refused a DHT request: %s", err_str(rc));
        host_stream_reset(s);
    } else if (resp) {
        host_stream_write(s, resp, resp_len);
    }
    free(resp);
    p2p_pump(p);
}

static void serve_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_serve_cbs = {serve_on_msg, serve_on_eof, NULL};

static void serve_stream(void *ctx, struct host_stream *s)
{
    host_stream_set_message_mode(s, DHT_MSG_MAX_LEN);
    host_stream_set_callbacks(s, &g_serve_cbs, ctx);
}

/* ---- peers ------------------------------------------------------------------------------ */

static void on_peer(void *ctx, enum host_peer_event ev, const struct host_peer_info *info)
{
    struct p2p *p = ctx;
    if (!p->is_closing && ev == HOST_PEER_IDENTIFIED) {
        struct dht_peer dp;
        bool is_server = false;
        memset(&dp, 0, sizeof dp);
        dp.id = info->id;
        for (size_t i = 0; i < info->ident.n_listen_addrs && dp.n_addrs < DHT_PEER_ADDRS_MAX; i++)
            dp.addrs[dp.n_addrs++] = info->ident.listen_addrs[i];
        for (size_t i = 0; i < info->ident.n_protocols; i++)
            if (!strcmp(info->ident.protocols[i], dht_protocol_id(p->dht))) is_server = true;
        dht_peer_connected(p->dht, now_ms(p), &dp, is_server);
        p2p_pump(p);
    } else if (!p->is_closing && ev == HOST_PEER_DISCONNECTED) {
        dht_peer_disconnected(p->dht, now_ms(p), &info->id);
    }
    if (p->on_peer) p->on_peer(p->on_peer_ctx, ev, info);
}

void p2p_set_peer_callback(struct p2p *p, host_peer_fn fn, void *ctx)
{
    p->on_peer = fn;
    p->on_peer_ctx = ctx;
}

struct dht *p2p_dht(struct p2p *p)
{
    return p->dht;
}

/* ---- life ------------------------------------------------------------------------------- */

int p2p_new(uv_loop_t *loop, const struct p2p_config *cfg, struct p2p **out)
{
    struct dht_config dc;
    int rc;
    *out = NULL;
    if (!cfg || !cfg->host) return MESH_EINVAL;
    struct p2p *p = calloc(1, sizeof *p);
    if (!p) return MESH_ENOMEM;
    p->loop = loop;
    p->host = cfg->host;
    memset(&dc, 0, sizeof dc);
    dc.self = *host_peer_id(cfg->host);
    dc.protocol_id = cfg->dht_protocol ? cfg->dht_protocol : DHT_PROTOCOL_MESHLLM;
    dc.is_server = cfg->dht_server;
    memcpy(dc.seed, cfg->seed, sizeof dc.seed);
    if (sodium_is_zero(dc.seed, sizeof dc.seed)) randombytes_buf(dc.seed, sizeof dc.seed);
    dc.on_query_done = on_query_done;
    dc.ud = p;
    if ((rc = dht_new(&dc, &p->dht))) {
        free(p);
        return rc;
    }
    /* Only a server announces (and answers) the DHT protocol. */
    if (cfg->dht_server && (rc = host_set_handler(cfg->host, dc.protocol_id, serve_stream, p))) {
        dht_free(p->dht);
        free(p);
        return rc;
    }
    if ((rc = host_add_peer_listener(cfg->host, on_peer, p))) {
        dht_free(p->dht);
        free(p);
        return rc;
    }
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    *out = p;
    p2p_pump(p);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    struct p2p *p = h->data;
    p->is_timer_closed = true;
    if (p->n_out == 0) p2p_release(p);
}

void p2p_close(struct p2p *p)
{
    if (!p || p->is_closing) return;
    p->is_closing = true;
    host_remove_peer_listener(p->host, on_peer, p);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
