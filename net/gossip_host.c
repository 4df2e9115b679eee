/* gossip_host.c - the GossipSub core on a libp2p host (see gossip_host.h).
 *
 * Stream callbacks find their peer by ID through an anchor that dies with the gossip_host, so
 * a late callback never touches freed state. One outbound stream per peer carries all our
 * RPCs; the peer's inbound stream carries theirs (pubsub spec: "streams are unidirectional").
 */
#include "net/gossip_host.h"

#include "core/err.h"

#include <stdlib.h>
#include <string.h>

#define QUEUE_MAX 64

struct anchor {
    struct gossip_host *gh; /* NULL once freed */
    size_t refs;
};

struct gh_peer {
    struct peer_id id;
    struct host_stream *out; /* our outbound stream, once open */
    bool opening;
    uint8_t *q[QUEUE_MAX];   /* frames waiting for the stream */
    size_t q_len[QUEUE_MAX];
    size_t n_q;
};

struct gossip_host {
    uv_loop_t *loop;
    struct host *h;
    struct gossip *g;
    uv_timer_t timer;
    struct anchor *anchor;
    struct gh_peer **peers;
    size_t n_peers, cap_peers;
    bool (*filter)(void *ctx, const struct peer_id *peer); /* gossip_host_set_filter's */
    void *filter_ctx;
};

struct stream_ctx {
    struct anchor *a;
    struct peer_id peer;
};

static void anchor_release(struct anchor *a)
{
    if (a && --a->refs == 0) free(a);
}

static struct stream_ctx *ctx_new(struct anchor *a, const struct peer_id *id)
{
    struct stream_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->a = a;
    c->peer = *id;
    a->refs++;
    return c;
}

static void ctx_free(struct stream_ctx *c)
{
    if (!c) return;
    anchor_release(c->a);
    free(c);
}

static uint64_t now_ms(const struct gossip_host *gh) { return uv_now(gh->loop); }

static struct gh_peer *peer_get(struct gossip_host *gh, const struct peer_id *id)
{
    for (size_t i = 0; i < gh->n_peers; i++)
        if (peer_id_equal(&gh->peers[i]->id, id)) return gh->peers[i];
    return NULL;
}

static void peer_drop(struct gossip_host *gh, const struct peer_id *id)
{
    for (size_t i = 0; i < gh->n_peers; i++) {
        struct gh_peer *p = gh->peers[i];
        if (!peer_id_equal(&p->id, id)) continue;
        for (size_t j = 0; j < p->n_q; j++) free(p->q[j]);
        /* The outbound stream's context holds no pointer to p: it finishes on its own. */
        free(p);
        gh->peers[i] = gh->peers[--gh->n_peers];
        gossip_peer_remove(gh->g, now_ms(gh), id);
        return;
    }
}

static void on_timer(uv_timer_t *t);

static void flush_out(struct gossip_host *gh)
{
    struct gossip_output o;
    while (gossip_next_output(gh->g, &o) == 0) {
        struct gh_peer *p = peer_get(gh, &o.peer);
        if (p && p->out && host_stream_write(p->out, o.frame, o.frame_len) == 0) {
            free(o.frame);
        } else if (p && !p->out && p->n_q < QUEUE_MAX) {
            p->q[p->n_q] = o.frame;
            p->q_len[p->n_q++] = o.frame_len;
        } else {
            free(o.frame);
        }
    }
}

void gossip_host_kick(struct gossip_host *gh)
{
    flush_out(gh);
    uint64_t now = now_ms(gh), next = gossip_periodic(gh->g, now);
    flush_out(gh);
    uv_timer_start(&gh->timer, on_timer, next > now ? next - now : 1, 0);
}

static void on_timer(uv_timer_t *t)
{
    gossip_host_kick(t->data);
}

/* ---- our outbound stream ---------------------------------------------------------- */

static void out_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    (void)ctx;
    (void)s;
    (void)d;
    (void)n; /* nothing is expected on our outbound stream */
}

static void out_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static int peer_open(struct gossip_host *gh, struct gh_peer *p);

/* Our stream ended (its connection closed, or the peer reset it): if the peer is still
 * connected another way, open a new one; if that fails, forget the peer. */
static void out_close(void *ctx, struct host_stream *s, int status)
{
    struct stream_ctx *c = ctx;
    (void)status;
    struct gossip_host *gh = c->a->gh;
    struct gh_peer *p = gh ? peer_get(gh, &c->peer) : NULL;
    struct peer_id id = c->peer;
    ctx_free(c);
    if (!p || p->out != s) return;
    p->out = NULL;
    if (peer_open(gh, p) < 0) peer_drop(gh, &id);
}

static const struct host_stream_cbs g_out_cbs = {out_data, out_eof, out_close};

static void on_open(void *ctx, struct host_stream *s, int status)
{
    struct stream_ctx *c = ctx;
    struct gossip_host *gh = c->a->gh;
    struct gh_peer *p = gh ? peer_get(gh, &c->peer) : NULL;
    if (!p || status < 0 || !s) {
        if (s) host_stream_reset(s);
        if (p) peer_drop(gh, &c->peer); /* cannot talk to it: forget it */
        ctx_free(c);
        return;
    }
    p->opening = false;
    p->out = s;
    host_stream_set_callbacks(s, &g_out_cbs, c);
    for (size_t i = 0; i < p->n_q; i++) {
        host_stream_write(s, p->q[i], p->q_len[i]);
        free(p->q[i]);
    }
    p->n_q = 0;
}

/* Adds the peer to the router and opens our stream to it (once). */
/* Opens our outbound stream to a connected peer. 0, or an error (the peer cannot be reached). */
static int peer_open(struct gossip_host *gh, struct gh_peer *p)
{
    struct host_peer_info info;
    if (host_peer_info(gh->h, &p->id, &info) != 0) return MESH_ENOTFOUND;
    struct multiaddr a = info.remote_addr;
    struct stream_ctx *c = ctx_new(gh->anchor, &p->id);
    if (!c || multiaddr_append_p2p(&a, &p->id) < 0 ||
        host_open_stream(gh->h, &a, GOSSIP_PROTOCOL_ID, on_open, c) < 0) {
        ctx_free(c);
        return MESH_EIO;
    }
    p->opening = true;
    return 0;
}

/* Adds the peer to the router and opens our stream to it (once). */
static int peer_ensure(struct gossip_host *gh, const struct peer_id *id, bool outbound)
{
    struct gh_peer *p = peer_get(gh, id);
    if (p) return 0;
    if (gh->filter && !gh->filter(gh->filter_ctx, id)) return MESH_ECRYPTO;
    struct host_peer_info info;
    if (host_peer_info(gh->h, id, &info) != 0) return MESH_ENOTFOUND;
    if (gh->n_peers == gh->cap_peers) {
        size_t nc = gh->cap_peers ? gh->cap_peers * 2 : 16;
        struct gh_peer **np = realloc(gh->peers, nc * sizeof *np);
        if (!np) return MESH_ENOMEM;
        gh->peers = np;
        gh->cap_peers = nc;
    }
    p = calloc(1, sizeof *p);
    if (!p) return MESH_ENOMEM;
    p->id = *id;
    gh->peers[gh->n_peers++] = p;
    int rc = gossip_peer_add(gh->g, now_ms(gh), id, outbound || info.is_outbound);
    size_t pos = 0;
    struct multiaddr_part part;
    if (rc == 0 && multiaddr_next(&info.remote_addr, &pos, &part) == 1 &&
        (part.code == MA_IP4 || part.code == MA_IP6))
        gossip_peer_set_ip(gh->g, id, part.value, part.value_len); /* for P6 */
    if (rc == 0) rc = peer_open(gh, p);
    if (rc < 0) peer_drop(gh, id);
    return rc;
}

/* ---- the peer's inbound stream ---------------------------------------------------- */

static void in_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    struct stream_ctx *c = ctx;
    struct gossip_host *gh = c->a->gh;
    if (!gh) return;
    if (gossip_on_rpc(gh->g, now_ms(gh), &c->peer, d, n) == MESH_EPROTO) {
        host_stream_reset(s); /* no on_close follows */
        ctx_free(c);
    }
    gossip_host_kick(gh);
}

static void in_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void in_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    ctx_free(ctx);
}

static const struct host_stream_cbs g_in_cbs = {in_data, in_eof, in_close};

static void on_inbound(void *ctx, struct host_stream *s)
{
    struct anchor *a = ctx;
    struct gossip_host *gh = a->gh;
    const struct peer_id *id = host_stream_peer(s);
    struct stream_ctx *c = gh ? ctx_new(a, id) : NULL;
    if (!c || peer_ensure(gh, id, false) < 0) {
        ctx_free(c);
        host_stream_reset(s);
        return;
    }
    host_stream_set_message_mode(s, GOSSIP_RPC_MAX_LEN);
    host_stream_set_callbacks(s, &g_in_cbs, c);
    gossip_host_kick(gh);
}

static void refuse_stream(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_reset(s);
}

/* ---- peers and life cycle --------------------------------------------------------- */

/* Host peer listener (registered by gossip_host_new). */
static void on_peer_event(void *ctx, enum host_peer_event ev, const struct host_peer_info *p)
{
    struct gossip_host *gh = ctx;
    if (ev == HOST_PEER_DISCONNECTED) {
        /* One connection closed; the peer goes only when no other connection is left (a
         * stream on the closed one reopens itself in out_close). */
        struct host_peer_info info;
        if (host_peer_info(gh->h, &p->id, &info) != 0) peer_drop(gh, &p->id);
        return;
    }
    if (ev != HOST_PEER_IDENTIFIED) return;
    for (size_t i = 0; i < p->ident.n_protocols; i++)
        if (strcmp(p->ident.protocols[i], GOSSIP_PROTOCOL_ID) == 0) {
            peer_ensure(gh, &p->id, p->is_outbound);
            gossip_host_kick(gh);
            return;
        }
}

struct gossip *gossip_host_core(struct gossip_host *gh) { return gh->g; }

void gossip_host_set_filter(struct gossip_host *gh, bool (*fn)(void *ctx, const struct peer_id *),
                            void *ctx)
{
    gh->filter = fn;
    gh->filter_ctx = ctx;
}

void gossip_host_recheck(struct gossip_host *gh, const struct peer_id *peer)
{
    if (gh->filter && !gh->filter(gh->filter_ctx, peer)) {
        peer_drop(gh, peer);
        return;
    }
    struct host_peer_info info;
    if (host_peer_info(gh->h, peer, &info) != 0 || !info.is_identified) return;
    for (size_t i = 0; i < info.ident.n_protocols; i++)
        if (strcmp(info.ident.protocols[i], GOSSIP_PROTOCOL_ID) == 0) {
            peer_ensure(gh, peer, info.is_outbound);
            gossip_host_kick(gh);
            return;
        }
}

int gossip_host_new(uv_loop_t *loop, struct host *h, const struct gossip_config *cfg,
                    struct gossip_host **out)
{
    *out = NULL;
    if (!loop || !h || !cfg || !cfg->id || !peer_id_equal(&cfg->id->id, host_peer_id(h)))
        return MESH_EINVAL;
    struct gossip_host *gh = calloc(1, sizeof *gh);
    struct anchor *a = calloc(1, sizeof *a);
    int rc = gh && a ? gossip_new(cfg, &gh->g) : MESH_ENOMEM;
    if (rc == 0) rc = host_set_handler(h, GOSSIP_PROTOCOL_ID, on_inbound, a);
    if (rc == 0) {
        rc = host_add_peer_listener(h, on_peer_event, gh);
        if (rc < 0) host_set_handler(h, GOSSIP_PROTOCOL_ID, refuse_stream, NULL);
    }
    if (rc < 0) {
        if (gh) gossip_free(gh->g);
        free(gh);
        free(a);
        return rc;
    }
    a->gh = gh;
    a->refs = 1;
    gh->anchor = a;
    gh->loop = loop;
    gh->h = h;
    uv_timer_init(loop, &gh->timer);
    gh->timer.data = gh;
    gossip_host_kick(gh);
    *out = gh;
    return 0;
}

static void on_timer_closed(uv_handle_t *t)
{
    free(t->data);
}

void gossip_host_free(struct gossip_host *gh)
{
    if (!gh) return;
    host_set_handler(gh->h, GOSSIP_PROTOCOL_ID, refuse_stream, NULL);
    host_remove_peer_listener(gh->h, on_peer_event, gh);
    gh->anchor->gh = NULL;
    for (size_t i = 0; i < gh->n_peers; i++) {
        struct gh_peer *p = gh->peers[i];
        for (size_t j = 0; j < p->n_q; j++) free(p->q[j]);
        free(p);
    }
    free(gh->peers);
    anchor_release(gh->anchor);
    gossip_free(gh->g);
    gh->g = NULL;
    uv_timer_stop(&gh->timer);
    uv_close((uv_handle_t *)&gh->timer, on_timer_closed);
}
