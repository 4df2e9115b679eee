/* p2p.c - host <-> DHT glue (see p2p.h; seam described in net/dht.h and net/README.md). */
#include "net/p2p.h"

#include "core/err.h"
#include "core/log.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define P2P_MAX_QUERIES 256
#define P2P_MAX_GOSSIP_PEERS 128

struct pending_query {
    uint64_t qid;
    p2p_query_fn cb;
    void *ctx;
};

/* A gossip peer: our outbound /meshsub stream to it, and frames waiting for it to open. */
struct gossip_peer {
    struct peer_id id;
    struct p2p *p;
    struct host_stream *out;
    bool is_opening;
    uint8_t *pending;
    size_t pending_len;
};

struct p2p {
    uv_loop_t *loop;
    struct host *host;
    struct dht *dht;
    struct gossip *gossip;
    struct gossip_peer *gpeers[P2P_MAX_GOSSIP_PEERS];
    size_t n_gpeers;
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
static void gossip_flush(struct p2p *p);
static void gossip_peer_up(struct p2p *p, const struct host_peer_info *info);
static void gossip_peer_down(struct p2p *p, const struct peer_id *id);
struct gossip_peer;
static void gpeer_free(struct gossip_peer *gp);

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
    for (size_t i = 0; i < p->n_gpeers; i++) {
        if (p->gpeers[i]->is_opening) p->gpeers[i]->p = NULL;
        else gpeer_free(p->gpeers[i]);
    }
    gossip_free(p->gossip);
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
    if (p->gossip) {
        uint64_t gnext = gossip_periodic(p->gossip, now);
        gossip_flush(p);
        if (gnext < next) next = gnext;
    }
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

/* ---- gossip ----------------------------------------------------------------------------- */

static struct gossip_peer *gpeer_find(struct p2p *p, const struct peer_id *id, size_t *index)
{
    for (size_t i = 0; i < p->n_gpeers; i++)
        if (peer_id_equal(&p->gpeers[i]->id, id)) {
            if (index) *index = i;
            return p->gpeers[i];
        }
    return NULL;
}

static void gpeer_free(struct gossip_peer *gp)
{
    free(gp->pending);
    free(gp);
}

static void gossip_out_close(void *ctx, struct host_stream *s, int status)
{
    struct gossip_peer *gp = ctx;
    (void)s;
    (void)status;
    gp->out = NULL; /* the peer's entry goes when it disconnects */
}

static void gossip_out_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_gossip_out_cbs = {NULL, gossip_out_eof, gossip_out_close};

static void gossip_out_opened(void *ctx, struct host_stream *s, int status)
{
    struct gossip_peer *gp = ctx;
    gp->is_opening = false;
    if (status) {
        if (gp->p == NULL) gpeer_free(gp); /* orphaned while opening */
        return;
    }
    if (gp->p == NULL) {
        host_stream_reset(s);
        gpeer_free(gp);
        return;
    }
    gp->out = s;
    host_stream_set_callbacks(s, &g_gossip_out_cbs, gp);
    if (gp->pending_len) host_stream_write(s, gp->pending, gp->pending_len);
    free(gp->pending);
    gp->pending = NULL;
    gp->pending_len = 0;
}

/* A connected, identified peer: if it speaks /meshsub/1.1.0, open our stream to it. */
static void gossip_peer_up(struct p2p *p, const struct host_peer_info *info)
{
    bool speaks = false;
    for (size_t i = 0; i < info->ident.n_protocols; i++)
        if (!strcmp(info->ident.protocols[i], GOSSIP_PROTOCOL_ID)) speaks = true;
    if (!speaks || gpeer_find(p, &info->id, NULL) || p->n_gpeers == P2P_MAX_GOSSIP_PEERS) return;
    struct gossip_peer *gp = calloc(1, sizeof *gp);
    if (!gp) return;
    gp->id = info->id;
    gp->p = p;
    gp->is_opening = true;
    struct multiaddr addr = info->remote_addr;
    multiaddr_append_p2p(&addr, &info->id);
    if (host_open_stream(p->host, &addr, GOSSIP_PROTOCOL_ID, gossip_out_opened, gp) != 0) {
        gpeer_free(gp);
        return;
    }
    p->gpeers[p->n_gpeers++] = gp;
    gossip_peer_add(p->gossip, now_ms(p), &info->id, info->is_outbound);
    gossip_flush(p);
}

static void gossip_peer_down(struct p2p *p, const struct peer_id *id)
{
    size_t i;
    struct gossip_peer *gp = gpeer_find(p, id, &i);
    if (!gp) return;
    gossip_peer_remove(p->gossip, now_ms(p), id);
    p->gpeers[i] = p->gpeers[--p->n_gpeers];
    if (gp->is_opening) gp->p = NULL; /* freed by its open callback */
    else gpeer_free(gp);
}

/* Writes every frame the router queued onto the peers' outbound streams. */
static void gossip_flush(struct p2p *p)
{
    struct gossip_output o;
    while (p->gossip && gossip_next_output(p->gossip, &o) == 0) {
        struct gossip_peer *gp = gpeer_find(p, &o.peer, NULL);
        if (gp && gp->out) {
            host_stream_write(gp->out, o.frame, o.frame_len);
        } else if (gp && gp->is_opening && gp->pending_len + o.frame_len <= 4 * GOSSIP_RPC_MAX_LEN) {
            uint8_t *np = realloc(gp->pending, gp->pending_len + o.frame_len);
            if (np) {
                memcpy(np + gp->pending_len, o.frame, o.frame_len);
                gp->pending = np;
                gp->pending_len += o.frame_len;
            }
        }
        free(o.frame);
    }
}

static void gossip_in_msg(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct p2p *p = ctx;
    const struct peer_id *from = host_stream_peer(s);
    int rc = gossip_on_rpc(p->gossip, now_ms(p), from, data, len);
    if (rc == MESH_EPROTO) {
        log_debug("p2p: malformed gossip RPC");
        host_stream_reset(s);
    }
    gossip_flush(p);
}

static void gossip_in_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_gossip_in_cbs = {gossip_in_msg, gossip_in_eof, NULL};

static void gossip_in_stream(void *ctx, struct host_stream *s)
{
    host_stream_set_message_mode(s, GOSSIP_RPC_MAX_LEN);
    host_stream_set_callbacks(s, &g_gossip_in_cbs, ctx);
}

struct gossip *p2p_gossip(struct p2p *p)
{
    return p->gossip;
}

int p2p_gossip_subscribe(struct p2p *p, const char *topic)
{
    if (!p->gossip) return MESH_EINVAL;
    int rc = gossip_subscribe(p->gossip, now_ms(p), topic);
    gossip_flush(p);
    return rc;
}

int p2p_gossip_publish(struct p2p *p, const char *topic, const uint8_t *data, size_t len)
{
    if (!p->gossip) return MESH_EINVAL;
    int rc = gossip_publish(p->gossip, now_ms(p), topic, data, len, NULL, NULL);
    gossip_flush(p);
    return rc;
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
        if (p->gossip) gossip_peer_up(p, info);
        p2p_pump(p);
    } else if (!p->is_closing && ev == HOST_PEER_DISCONNECTED) {
        dht_peer_disconnected(p->dht, now_ms(p), &info->id);
        if (p->gossip) gossip_peer_down(p, &info->id);
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
    if (cfg->gossip_on_message) {
        struct gossip_config gc;
        memset(&gc, 0, sizeof gc);
        gc.id = cfg->identity;
        memcpy(gc.seed, dc.seed, sizeof gc.seed);
        gc.seed[0] ^= 0x5a; /* not the DHT's stream of randomness */
        gc.on_message = cfg->gossip_on_message;
        gc.validate = cfg->gossip_validate;
        gc.ud = cfg->gossip_ud;
        if (!cfg->identity || (rc = gossip_new(&gc, &p->gossip)) ||
            (rc = host_set_handler(cfg->host, GOSSIP_PROTOCOL_ID, gossip_in_stream, p))) {
            gossip_free(p->gossip);
            dht_free(p->dht);
            free(p);
            return rc ? rc : MESH_EINVAL;
        }
    }
    host_set_peer_callback(cfg->host, on_peer, p);
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
    host_set_peer_callback(p->host, NULL, NULL);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
}
