/* host.c - libuv libp2p host (see host.h).
 *
 * Connection upgrade, per the libp2p connections spec:
 *   raw TCP:  mss "/noise"  ->  Noise XX handshake (2-byte framed)
 *   sealed:   mss "/yamux/1.0.0"  ->  yamux frames
 *   per stream: mss <protocol>  ->  application bytes
 * Memory rules: a conn is freed only in libuv's close callbacks, so a conn pointer stays valid
 * for the whole callback that closes it; a stream is freed by stream_finish() or
 * host_stream_reset(), so after calling into the application we look the stream up again by
 * id instead of trusting the pointer.
 */
#include "net/host.h"

#include "core/buf.h"
#include "core/err.h"
#include "core/log.h"
#include "net/mss.h"
#include "net/noise.h"
#include "net/varint.h"
#include "net/yamux.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define HOST_MAX_HANDLERS 32
#define HOST_MAX_LISTENERS 8
#define HOST_PING_LEN 32
#define HOST_CONN_MAX_WRITE (32u << 20) /* unsent bytes before a peer counts as stalled */
#define HOST_REFUSE_LOG_MS 10000        /* at most one warning per period about refusals */

/* ---- byte queue ------------------------------------------------------------------------ */


/* ---- types ----------------------------------------------------------------------------- */

enum conn_phase { PH_CONNECTING, PH_MSS_SECURITY, PH_NOISE, PH_MSS_MUXER, PH_MUX };

struct open_req {
    char protocol[HOST_MAX_PROTOCOL_LEN];
    host_open_fn cb;
    void *ctx;
    uint8_t *data;        /* host_open_stream_data's first bytes (malloc'd), or NULL */
    size_t data_len;
    struct open_req *next;
};

struct host_stream {
    struct conn *c;
    uint32_t id;
    struct host_stream *next;
    bool is_outbound, is_negotiated, close_requested, fin_sent, fin_recv;
    struct mss mss;
    char protocol[HOST_MAX_PROTOCOL_LEN];
    host_open_fn open_cb; /* outbound, until negotiated */
    void *open_ctx;
    struct host_stream_cbs cbs;
    void *ctx;
    struct buf pending; /* written by the app, waiting for window */
    size_t msg_max;       /* message mode if > 0 */
    struct buf msg_in;
    bool is_parked;       /* inbound, negotiated, waiting for the gate (not read meanwhile) */
    struct buf parked;    /* bytes that came with the negotiation, for the handler */
};

struct conn {
    struct host *h;
    struct conn *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_shutdown_t shutdown_req;
    int n_open_handles;
    bool is_dialer, is_closing, is_ready;
    enum conn_phase phase;
    struct mss mss;
    struct noise_conn *noise;
    struct yamux *yamux;
    struct host_stream *streams;
    struct open_req *opens; /* waiting for the upgrade */
    struct peer_id expected;
    struct host_peer_info info;
    size_t write_pending;
    /* Connection limits: an inbound conn is pending (counted in n_pending and against its
     * ip) until it is upgraded, then counted in n_inbound; a dialed one counts in
     * n_outbound from the dial to the close. */
    bool is_pending, is_counted_inbound, is_counted_outbound;
    struct connmgr_ip ip; /* inbound only */
    uint64_t ready_ms;    /* uv_now when upgraded */
    uint64_t useful_ms;   /* uv_now of the last stream of a protocol other than /ipfs/... */
};

struct handler {
    char protocol[HOST_MAX_PROTOCOL_LEN];
    host_stream_fn fn;
    void *ctx;
};

struct listener {
    uv_tcp_t tcp;
    struct host *h;
    struct multiaddr addr;
};

struct host {
    uv_loop_t *loop;
    struct host_config cfg;
    struct identity id;
    char agent[64];
    struct handler handlers[HOST_MAX_HANDLERS];
    size_t n_handlers;
    struct listener *listeners[HOST_MAX_LISTENERS];
    size_t n_listeners;
    struct conn *conns;
    size_t n_conns;                  /* all of them, pending included */
    size_t n_pending, n_inbound, n_outbound; /* see struct conn */
    struct connmgr cm;
    struct host_stats st;
    uv_timer_t trim_timer;
    bool is_trimming; /* over the high water mark, not yet down to the low one */
    uint64_t refuse_log_ms; /* uv_now of the last "refusing" warning */
    host_peer_fn on_peer; /* host_set_peer_callback's */
    void *on_peer_ctx;
    struct {
        host_peer_fn fn;
        void *ctx;
    } listeners_peer[HOST_MAX_PEER_LISTENERS]; /* host_add_peer_listener's */
    size_t n_peer_listeners;
    bool is_closing;
    int n_open_handles;
    char gate_prefix[HOST_MAX_PROTOCOL_LEN]; /* host_set_gate's */
    host_gate_fn gate;
    void *gate_ctx;
    uint8_t rbuf[65536];
};

struct write_req {
    uv_write_t req;
    struct conn *c;
    size_t len;
    uint8_t data[];
};

static void conn_close(struct conn *c, int status);
static void conn_flush(struct conn *c);
static void conn_process_events(struct conn *c);
static void stream_flush(struct host_stream *s);
static int gate_ask(struct host *h, const struct host_stream *s);
static void identify_start(struct conn *c);
static int host_register_builtin(struct host *h);
static void identify_push_all(struct host *h);
static void peer_event(struct host *h, enum host_peer_event ev, const struct host_peer_info *p);
static int defer_error(struct host *h, host_open_fn cb, void *ctx, int status);
static size_t conns_to_peer(const struct host *h, const struct peer_id *id);
static void conns_trim(struct host *h);

/* ---- host life ------------------------------------------------------------------------- */

static void host_release(struct host *h)
{
    identity_wipe(&h->id);
    connmgr_free(&h->cm);
    free(h);
}

static void handle_closed(struct host *h)
{
    if (--h->n_open_handles == 0 && h->is_closing) host_release(h);
}

/* Fills the limits left at 0 (host.h names the defaults). */
static void host_config_defaults(struct host_config *c)
{
    if (!c->max_pending) c->max_pending = HOST_DEFAULT_MAX_PENDING;
    if (!c->max_pending_per_ip) c->max_pending_per_ip = HOST_DEFAULT_MAX_PENDING_PER_IP;
    if (!c->handshake_timeout_ms) c->handshake_timeout_ms = HOST_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    if (!c->dial_timeout_ms) c->dial_timeout_ms = HOST_DEFAULT_DIAL_TIMEOUT_MS;
    if (!c->max_conns) c->max_conns = HOST_DEFAULT_MAX_CONNS;
    if (!c->max_conns_outbound) c->max_conns_outbound = HOST_DEFAULT_MAX_CONNS_OUTBOUND;
    if (!c->max_conns_per_peer) c->max_conns_per_peer = HOST_DEFAULT_MAX_CONNS_PER_PEER;
    if (!c->conns_high_water) c->conns_high_water = HOST_DEFAULT_CONNS_HIGH_WATER;
    if (!c->trim_grace_ms) c->trim_grace_ms = HOST_DEFAULT_TRIM_GRACE_MS;
    if (!c->max_streams_per_conn) c->max_streams_per_conn = 64;
    if (!c->max_stream_pending) c->max_stream_pending = 8u << 20;
    if (!c->conns_low_water)
        c->conns_low_water = c->conns_high_water > HOST_DEFAULT_CONNS_LOW_WATER
                                 ? HOST_DEFAULT_CONNS_LOW_WATER
                                 : c->conns_high_water * 2 / 3;
    if (c->conns_low_water > c->conns_high_water) c->conns_low_water = c->conns_high_water;
}

int host_new(uv_loop_t *loop, const struct host_config *cfg, struct host **out)
{
    *out = NULL;
    if (!cfg || !cfg->identity || cfg->identity->id.len == 0) return MESH_EINVAL;
    struct host *h = calloc(1, sizeof *h);
    if (!h) return MESH_ENOMEM;
    /* A peer that hangs up must cost an EPIPE, not the process: libuv writes with write(2).
     * Only the default action is replaced, never a handler the program installed. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    h->loop = loop;
    h->cfg = *cfg;
    h->id = *cfg->identity;
    h->cfg.identity = &h->id;
    snprintf(h->agent, sizeof h->agent, "%s", cfg->agent ? cfg->agent : HOST_AGENT);
    host_config_defaults(&h->cfg);
    connmgr_init(&h->cm);
    if (host_register_builtin(h)) {
        host_release(h);
        return MESH_ENOMEM;
    }
    uv_timer_init(loop, &h->trim_timer);
    h->trim_timer.data = h;
    h->n_open_handles++;
    *out = h;
    return 0;
}

const struct peer_id *host_peer_id(const struct host *h)
{
    return &h->id.id;
}

static void listener_closed(uv_handle_t *hd)
{
    struct listener *l = hd->data;
    struct host *h = l->h;
    free(l);
    handle_closed(h);
}

static void trim_timer_closed(uv_handle_t *hd)
{
    handle_closed(hd->data);
}

void host_close(struct host *h)
{
    if (!h || h->is_closing) return;
    h->is_closing = true;
    for (size_t i = 0; i < h->n_listeners; i++)
        uv_close((uv_handle_t *)&h->listeners[i]->tcp, listener_closed);
    h->n_listeners = 0;
    uv_close((uv_handle_t *)&h->trim_timer, trim_timer_closed);
    for (struct conn *c = h->conns; c; c = c->next)
        if (c->yamux) {
            yamux_go_away(c->yamux, YAMUX_GOAWAY_NORMAL);
            conn_flush(c);
        }
    while (h->conns) conn_close(h->conns, MESH_ECLOSED);
}

int host_set_handler(struct host *h, const char *protocol, host_stream_fn fn, void *ctx)
{
    size_t n = strlen(protocol);
    if (n == 0 || n >= HOST_MAX_PROTOCOL_LEN || strchr(protocol, '\n')) return MESH_EINVAL;
    for (size_t i = 0; i < h->n_handlers; i++)
        if (!strcmp(h->handlers[i].protocol, protocol)) {
            h->handlers[i].fn = fn;
            h->handlers[i].ctx = ctx;
            return 0;
        }
    if (h->n_handlers == HOST_MAX_HANDLERS) return MESH_EFULL;
    struct handler *hd = &h->handlers[h->n_handlers++];
    memcpy(hd->protocol, protocol, n + 1);
    hd->fn = fn;
    hd->ctx = ctx;
    identify_push_all(h);
    return 0;
}

void host_set_peer_callback(struct host *h, host_peer_fn fn, void *ctx)
{
    h->on_peer = fn;
    h->on_peer_ctx = ctx;
}

int host_add_peer_listener(struct host *h, host_peer_fn fn, void *ctx)
{
    if (h->n_peer_listeners == HOST_MAX_PEER_LISTENERS) return MESH_EFULL;
    h->listeners_peer[h->n_peer_listeners].fn = fn;
    h->listeners_peer[h->n_peer_listeners].ctx = ctx;
    h->n_peer_listeners++;
    return 0;
}

void host_remove_peer_listener(struct host *h, host_peer_fn fn, void *ctx)
{
    for (size_t i = 0; i < h->n_peer_listeners; i++)
        if (h->listeners_peer[i].fn == fn && h->listeners_peer[i].ctx == ctx) {
            memmove(&h->listeners_peer[i], &h->listeners_peer[i + 1],
                    (h->n_peer_listeners - i - 1) * sizeof h->listeners_peer[0]);
            h->n_peer_listeners--;
            return;
        }
}

/* Tells the listeners first (in the order they were added), then the callback. */
static void peer_event(struct host *h, enum host_peer_event ev, const struct host_peer_info *p)
{
    for (size_t i = 0; i < h->n_peer_listeners; i++)
        h->listeners_peer[i].fn(h->listeners_peer[i].ctx, ev, p);
    if (h->on_peer) h->on_peer(h->on_peer_ctx, ev, p);
}

static const struct handler *find_handler(const struct host *h, const char *protocol)
{
    for (size_t i = 0; i < h->n_handlers; i++)
        if (!strcmp(h->handlers[i].protocol, protocol)) return &h->handlers[i];
    return NULL;
}

static bool supports_protocol(void *ctx, const char *protocol)
{
    return find_handler(ctx, protocol) != NULL;
}

size_t host_n_conns(const struct host *h)
{
    return h->n_conns;
}

size_t host_list_peers(const struct host *h, struct host_peer_info *out, size_t cap)
{
    size_t n = 0;
    for (struct conn *c = h->conns; c && n < cap; c = c->next)
        if (c->is_ready) out[n++] = c->info;
    return n;
}

int host_peer_info(const struct host *h, const struct peer_id *id, struct host_peer_info *out)
{
    for (struct conn *c = h->conns; c; c = c->next)
        if (c->is_ready && peer_id_equal(&c->info.id, id)) {
            *out = c->info;
            return 0;
        }
    memset(out, 0, sizeof *out);
    return MESH_ENOTFOUND;
}

/* ---- connection limits: protection, trim, stats ---------------------------------------- */

static void trim_fired(uv_timer_t *t)
{
    conns_trim(t->data);
}

/* Past the high water mark of established inbound connections, closes them down to the low
 * water mark, never a protected peer's. The victims are the lowest ranked of all the others
 * (connmgr_rank: least recently useful, then youngest); a victim still inside its grace
 * period is closed when the period ends, unless by then a stream made it rank higher. The
 * trim is over at the low water mark or when no connection is left to close. */
static void conns_trim(struct host *h)
{
    uint64_t now = uv_now(h->loop), next_ms = UINT64_MAX;
    if (h->is_closing) return;
    if (h->n_inbound <= h->cfg.conns_low_water ||
        (!h->is_trimming && h->n_inbound <= h->cfg.conns_high_water)) {
        h->is_trimming = false;
        uv_timer_stop(&h->trim_timer);
        return;
    }
    h->is_trimming = true;
    struct connmgr_cand *cands = malloc((h->n_inbound + 1) * sizeof *cands);
    size_t n = 0, excess = h->n_inbound - h->cfg.conns_low_water;
    if (!cands) return; /* stays over; the next upgraded connection tries again */
    for (struct conn *c = h->conns; c && n < h->n_inbound; c = c->next)
        if (c->is_counted_inbound && !c->is_closing && !connmgr_is_protected(&h->cm, &c->info.id))
            cands[n++] = (struct connmgr_cand){c, c->useful_ms, c->ready_ms};
    connmgr_rank(cands, n);
    /* conn_close tells the application, which may close others: closed conns stay
     * allocated until libuv's close callbacks, so the pointers are still good. */
    for (size_t i = 0; i < n && i < excess && h->n_inbound > h->cfg.conns_low_water; i++) {
        struct conn *c = cands[i].conn;
        uint64_t ends_ms = c->ready_ms + h->cfg.trim_grace_ms;
        if (c->is_closing) continue;
        if (ends_ms > now) {
            if (ends_ms < next_ms) next_ms = ends_ms;
            continue;
        }
        h->st.n_trimmed++;
        yamux_go_away(c->yamux, YAMUX_GOAWAY_NORMAL);
        conn_flush(c);
        conn_close(c, MESH_ECLOSED);
    }
    free(cands);
    if (h->n_inbound <= h->cfg.conns_low_water || next_ms == UINT64_MAX) {
        h->is_trimming = false;
        uv_timer_stop(&h->trim_timer);
        return;
    }
    uv_timer_start(&h->trim_timer, trim_fired, next_ms - now, 0);
}

int host_peer_protect(struct host *h, const struct peer_id *peer, const char *tag, bool on)
{
    int rc = connmgr_protect(&h->cm, peer, tag, on);
    if (rc == 0 && !on) conns_trim(h);
    return rc;
}

bool host_peer_is_protected(const struct host *h, const struct peer_id *peer)
{
    return connmgr_is_protected(&h->cm, peer);
}

void host_stats_get(const struct host *h, struct host_stats *out)
{
    *out = h->st;
    out->n_pending = (uint32_t)h->n_pending;
    out->n_conns_inbound = (uint32_t)h->n_inbound;
    out->n_conns_outbound = (uint32_t)h->n_outbound;
}

/* ---- raw writes ------------------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = w->c;
    c->write_pending -= w->len;
    free(w);
    if (status < 0 && !c->is_closing) {
        log_debug("host: write failed: %s", uv_strerror(status));
        conn_close(c, MESH_EIO);
    }
}

/* Sends bytes on the socket as they are (already sealed, or pre-Noise negotiation). */
static int conn_write_raw(struct conn *c, const uint8_t *data, size_t len)
{
    if (len == 0 || c->is_closing) return 0;
    if (c->write_pending + len > HOST_CONN_MAX_WRITE) {
        conn_close(c, MESH_EFULL); /* the peer stopped reading */
        return MESH_EFULL;
    }
    struct write_req *w = malloc(sizeof *w + len);
    if (!w) {
        conn_close(c, MESH_ENOMEM);
        return MESH_ENOMEM;
    }
    w->c = c;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t buf = uv_buf_init((char *)w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(w);
        conn_close(c, MESH_EIO);
        return MESH_EIO;
    }
    c->write_pending += len;
    return 0;
}

/* Seals plaintext with Noise and sends it. */
static int conn_write_secure(struct conn *c, const uint8_t *data, size_t len)
{
    if (len == 0 || c->is_closing) return 0;
    size_t cap = noise_conn_sealed_len(len), n;
    uint8_t *buf = malloc(cap);
    if (!buf) {
        conn_close(c, MESH_ENOMEM);
        return MESH_ENOMEM;
    }
    int rc = noise_conn_seal(c->noise, data, len, buf, cap, &n);
    if (rc == 0) rc = conn_write_raw(c, buf, n);
    else conn_close(c, rc);
    free(buf);
    return rc;
}

/* Sends whatever yamux has queued. */
static void conn_flush(struct conn *c)
{
    const uint8_t *d;
    size_t n;
    if (c->is_closing || !c->yamux) return;
    yamux_output(c->yamux, &d, &n);
    if (n == 0) return;
    conn_write_secure(c, d, n);
    if (c->yamux) yamux_output_consume(c->yamux, n);
}

/* ---- streams --------------------------------------------------------------------------- */

static struct host_stream *find_stream(struct conn *c, uint32_t id)
{
    for (struct host_stream *s = c->streams; s; s = s->next)
        if (s->id == id) return s;
    return NULL;
}

static void stream_unlink_free(struct host_stream *s)
{
    struct conn *c = s->c;
    for (struct host_stream **pp = &c->streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    buf_free(&s->pending);
    buf_free(&s->msg_in);
    buf_free(&s->parked);
    free(s);
}

/* Ends a stream: tells the application once, then frees it. */
static void stream_finish(struct host_stream *s, int status)
{
    struct conn *c = s->c;
    uint32_t id = s->id;
    if (status != 0 && c->yamux) yamux_stream_reset(c->yamux, id);
    if (!s->is_negotiated && s->open_cb) {
        host_open_fn cb = s->open_cb;
        void *ctx = s->open_ctx;
        s->open_cb = NULL;
        cb(ctx, NULL, status ? status : MESH_ECLOSED);
    } else if (s->cbs.on_close) {
        s->cbs.on_close(s->ctx, s, status);
    }
    if ((s = find_stream(c, id))) stream_unlink_free(s);
}

static struct host_stream *stream_new(struct conn *c, uint32_t id, bool outbound)
{
    struct host_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->c = c;
    s->id = id;
    s->is_outbound = outbound;
    s->next = c->streams;
    c->streams = s;
    yamux_stream_set_user(c->yamux, id, s);
    return s;
}

/* Moves the app's queued bytes into yamux as far as the window allows; sends FIN after. */
static void stream_flush(struct host_stream *s)
{
    struct conn *c = s->c;
    size_t n = buf_size(&s->pending), w = 0;
    if (n) {
        int rc = yamux_stream_write(c->yamux, s->id, s->pending.p + s->pending.off, n, &w);
        if (rc) {
            stream_finish(s, rc);
            return;
        }
        buf_consume(&s->pending, w);
    }
    if (s->close_requested && !s->fin_sent && buf_size(&s->pending) == 0) {
        s->fin_sent = true;
        yamux_stream_close(c->yamux, s->id);
        if (!s->fin_recv && !yamux_stream_user(c->yamux, s->id)) {
            /* yamux already had the peer's FIN (it came with the last bytes we read) and,
             * both sides now closed, forgot the stream: its FIN event will find nothing, so
             * the end is told here */
            uint32_t id = s->id;
            s->fin_recv = true;
            if (s->is_negotiated && s->cbs.on_eof) s->cbs.on_eof(s->ctx, s);
            if ((s = find_stream(c, id))) stream_finish(s, s->is_negotiated ? 0 : MESH_ECLOSED);
            return;
        }
        if (s->fin_recv) stream_finish(s, 0);
    }
}

/* Queues negotiation output of the stream's mss. */
static void stream_send_mss(struct host_stream *s)
{
    const uint8_t *d;
    size_t n;
    mss_output(&s->mss, &d, &n);
    if (n) buf_append(&s->pending, d, n);
    mss_output_clear(&s->mss);
    stream_flush(s);
}

/* Gives application bytes to the stream's owner (whole messages in message mode). */
static void stream_deliver(struct conn *c, uint32_t id, const uint8_t *data, size_t len)
{
    struct host_stream *s = find_stream(c, id);
    if (!s || len == 0) return;
    if (!s->msg_max) {
        if (s->cbs.on_data) s->cbs.on_data(s->ctx, s, data, len);
        return;
    }
    if (buf_append(&s->msg_in, data, len)) {
        stream_finish(s, MESH_ENOMEM);
        return;
    }
    for (;;) {
        uint64_t mlen;
        size_t used;
        const uint8_t *p = s->msg_in.p + s->msg_in.off;
        size_t avail = buf_size(&s->msg_in);
        int rc = varint_decode(p, avail, &mlen, &used);
        if (rc == MESH_EAGAIN) return;
        if (rc || mlen > s->msg_max) {
            log_debug("host: oversized or malformed message on %s", s->protocol);
            stream_finish(s, MESH_EPROTO);
            return;
        }
        if (avail - used < mlen) return;
        /* Copy out: the callback may free s and with it msg_in. */
        uint8_t *msg = malloc(mlen ? mlen : 1);
        if (!msg) {
            stream_finish(s, MESH_ENOMEM);
            return;
        }
        memcpy(msg, p + used, mlen);
        buf_consume(&s->msg_in, used + mlen);
        if (s->cbs.on_data) s->cbs.on_data(s->ctx, s, msg, mlen);
        free(msg);
        if (!(s = find_stream(c, id))) return;
    }
}

/* Bytes arrived on a stream: negotiation first, then the application. */
static void stream_on_bytes(struct conn *c, uint32_t id, const uint8_t *data, size_t len)
{
    struct host_stream *s = find_stream(c, id);
    size_t used = 0;
    if (!s) return;
    if (!s->is_negotiated) {
        int rc = mss_input(&s->mss, data, len, &used);
        stream_send_mss(s);
        if (!(s = find_stream(c, id))) return;
        if (rc) {
            stream_finish(s, rc);
            return;
        }
        if (s->mss.state != MSS_DONE) return;
        s->is_negotiated = true;
        size_t plen = strlen(s->mss.protocol); /* one of ours, so < HOST_MAX_PROTOCOL_LEN */
        if (plen >= sizeof s->protocol) plen = sizeof s->protocol - 1;
        memcpy(s->protocol, s->mss.protocol, plen);
        s->protocol[plen] = 0;
        if (strncmp(s->protocol, "/ipfs/", 6)) c->useful_ms = uv_now(c->h->loop);
        if (s->is_outbound) {
            host_open_fn cb = s->open_cb;
            s->open_cb = NULL;
            if (cb) cb(s->open_ctx, s, 0);
        } else {
            int g = gate_ask(c->h, s);
            if (g == HOST_GATE_REFUSE) {
                stream_finish(s, MESH_ECRYPTO);
                return;
            }
            if (g == HOST_GATE_WAIT) {
                /* Not read until the gate decides: yamux's window holds the peer back. */
                s->is_parked = true;
                if (len > used && buf_append(&s->parked, data + used, len - used))
                    stream_finish(s, MESH_ENOMEM);
                return;
            }
            const struct handler *hd = find_handler(c->h, s->protocol);
            if (hd) hd->fn(hd->ctx, s);
        }
    }
    stream_deliver(c, id, data + used, len - used);
}

/* The gate's word on an inbound stream of a gated protocol (ALLOW for the others). */
static int gate_ask(struct host *h, const struct host_stream *s)
{
    size_t n = strlen(h->gate_prefix);
    if (!h->gate || !n || strncmp(s->protocol, h->gate_prefix, n) != 0) return HOST_GATE_ALLOW;
    return h->gate(h->gate_ctx, &s->c->info.id, s->protocol);
}

static void stream_on_fin(struct conn *c, uint32_t id)
{
    struct host_stream *s = find_stream(c, id);
    if (!s || s->fin_recv) return;
    s->fin_recv = true;
    if (!s->is_negotiated) {
        stream_finish(s, MESH_ECLOSED);
        return;
    }
    if (s->cbs.on_eof) s->cbs.on_eof(s->ctx, s);
    if ((s = find_stream(c, id)) && s->fin_sent) stream_finish(s, 0);
}

/* Reads everything yamux buffered for a stream. */
static void stream_pull(struct conn *c, uint32_t id)
{
    uint8_t buf[16384];
    for (;;) {
        size_t n;
        if (c->is_closing || !c->yamux) return;
        struct host_stream *ps = find_stream(c, id);
        if (ps && ps->is_parked) return;
        int rc = yamux_stream_read(c->yamux, id, buf, sizeof buf, &n);
        if (rc == MESH_ECLOSED) {
            stream_on_fin(c, id);
            return;
        }
        if (rc || n == 0) return;
        stream_on_bytes(c, id, buf, n);
    }
}

void host_set_gate(struct host *h, const char *prefix, host_gate_fn fn, void *ctx)
{
    snprintf(h->gate_prefix, sizeof h->gate_prefix, "%s", prefix ? prefix : "");
    h->gate = fn;
    h->gate_ctx = ctx;
}

/* Asks the gate again about one parked stream: hands it to its handler (with the bytes
 * that came with the negotiation, then whatever yamux holds) or resets it. */
static void gate_recheck_stream(struct conn *c, uint32_t id)
{
    struct host_stream *s = find_stream(c, id);
    if (!s || !s->is_parked) return;
    int g = gate_ask(c->h, s);
    if (g == HOST_GATE_WAIT) return;
    if (g == HOST_GATE_REFUSE) {
        stream_finish(s, MESH_ECRYPTO);
        return;
    }
    s->is_parked = false;
    const struct handler *hd = find_handler(c->h, s->protocol);
    if (hd) hd->fn(hd->ctx, s);
    if (!(s = find_stream(c, id))) return;
    struct buf b = s->parked;
    memset(&s->parked, 0, sizeof s->parked);
    if (buf_size(&b)) stream_deliver(c, id, b.p + b.off, buf_size(&b));
    buf_free(&b);
    if (find_stream(c, id)) stream_pull(c, id);
}

static bool conn_alive(const struct host *h, const struct conn *c)
{
    for (const struct conn *x = h->conns; x; x = x->next)
        if (x == c) return true;
    return false;
}

void host_gate_recheck(struct host *h, const struct peer_id *peer)
{
    for (struct conn *c = h->conns; c; c = c->next) {
        if (c->is_closing || !c->is_ready) continue;
        if (peer && !peer_id_equal(&c->info.id, peer)) continue;
        uint32_t ids[64];
        size_t n = 0;
        for (struct host_stream *s = c->streams; s && n < 64; s = s->next)
            if (s->is_parked) ids[n++] = s->id;
        for (size_t i = 0; i < n && conn_alive(h, c) && !c->is_closing; i++)
            gate_recheck_stream(c, ids[i]);
        if (!conn_alive(h, c)) return; /* the list changed under us; the next sweep goes on */
        conn_flush(c);
    }
}

/* Opens a yamux stream on a ready connection and starts negotiating protocol; data (may be
 * NULL) goes right behind the proposal, before the answer (optimistic). */
static void conn_open_stream(struct conn *c, const char *protocol, const uint8_t *data,
                             size_t data_len, host_open_fn cb, void *ctx)
{
    uint32_t id;
    int rc = yamux_stream_open(c->yamux, &id);
    if (rc) {
        if (defer_error(c->h, cb, ctx, rc)) cb(ctx, NULL, rc);
        return;
    }
    struct host_stream *s = stream_new(c, id, true);
    if (!s) {
        yamux_stream_reset(c->yamux, id);
        if (defer_error(c->h, cb, ctx, MESH_ENOMEM)) cb(ctx, NULL, MESH_ENOMEM);
        return;
    }
    snprintf(s->protocol, sizeof s->protocol, "%s", protocol);
    s->open_cb = cb;
    s->open_ctx = ctx;
    const char *protos[1] = {s->protocol};
    mss_dialer_init(&s->mss, protos, 1);
    s->mss.proposals[0] = s->protocol;
    stream_send_mss(s);
    if (data_len && buf_append(&s->pending, data, data_len)) {
        s->open_cb = NULL; /* told below, on the next loop turn like every error */
        stream_finish(s, MESH_ENOMEM);
        conn_flush(c);
        if (defer_error(c->h, cb, ctx, MESH_ENOMEM)) cb(ctx, NULL, MESH_ENOMEM);
        return;
    }
    if (data_len) stream_flush(s);
    conn_flush(c);
}

void host_stream_set_callbacks(struct host_stream *s, const struct host_stream_cbs *cbs,
                               void *ctx)
{
    s->cbs = *cbs;
    s->ctx = ctx;
}

void host_stream_set_message_mode(struct host_stream *s, size_t max_len)
{
    s->msg_max = max_len;
}

int host_stream_write(struct host_stream *s, const uint8_t *data, size_t len)
{
    struct conn *c = s->c;
    if (c->is_closing || s->close_requested) return MESH_ECLOSED;
    if (buf_size(&s->pending) + len > c->h->cfg.max_stream_pending) return MESH_EFULL;
    if (buf_append(&s->pending, data, len)) return MESH_ENOMEM;
    uint32_t id = s->id;
    stream_flush(s);
    if (find_stream(c, id)) conn_flush(c);
    return 0;
}

int host_stream_write_msg(struct host_stream *s, const uint8_t *data, size_t len)
{
    uint8_t hdr[VARINT_MAX_LEN];
    size_t n = varint_encode(len, hdr);
    struct conn *c = s->c;
    if (c->is_closing || s->close_requested) return MESH_ECLOSED;
    if (buf_size(&s->pending) + n + len > c->h->cfg.max_stream_pending) return MESH_EFULL;
    if (buf_append(&s->pending, hdr, n)) return MESH_ENOMEM;
    return host_stream_write(s, data, len);
}

int host_stream_close(struct host_stream *s)
{
    struct conn *c = s->c;
    s->close_requested = true;
    if (c->is_closing) return 0;
    stream_flush(s);
    conn_flush(c);
    return 0;
}

void host_stream_reset(struct host_stream *s)
{
    struct conn *c = s->c;
    if (c->yamux) yamux_stream_reset(c->yamux, s->id);
    stream_unlink_free(s);
    conn_flush(c);
}

const char *host_stream_protocol(const struct host_stream *s)
{
    return s->protocol;
}

const struct peer_id *host_stream_peer(const struct host_stream *s)
{
    return &s->c->info.id;
}

/* ---- yamux events ---------------------------------------------------------------------- */

static void conn_on_open(struct conn *c, uint32_t id)
{
    struct host_stream *s = stream_new(c, id, false);
    if (!s) {
        yamux_stream_reset(c->yamux, id);
        return;
    }
    mss_listener_init(&s->mss, supports_protocol, c->h);
    stream_send_mss(s);
}

static void conn_process_events(struct conn *c)
{
    struct yamux_event ev;
    while (!c->is_closing && c->yamux && yamux_next_event(c->yamux, &ev)) {
        struct host_stream *s;
        switch (ev.type) {
        case YAMUX_EV_OPEN:
            conn_on_open(c, ev.stream_id);
            break;
        case YAMUX_EV_DATA:
        case YAMUX_EV_FIN:
            stream_pull(c, ev.stream_id);
            break;
        case YAMUX_EV_RESET:
            if ((s = find_stream(c, ev.stream_id))) stream_finish(s, MESH_ECLOSED);
            break;
        case YAMUX_EV_WINDOW:
            if ((s = find_stream(c, ev.stream_id))) stream_flush(s);
            break;
        case YAMUX_EV_GOAWAY:
            log_debug("host: peer sent go away (%u)", ev.value);
            break;
        default:
            break;
        }
        conn_flush(c);
    }
}

/* ---- connection upgrade ---------------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *hd)
{
    struct conn *c = hd->data;
    struct host *h = c->h;
    if (--c->n_open_handles == 0) free(c);
    handle_closed(h);
}

static void conn_on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

/* Takes c out of the limits' counts (pending, inbound, outbound). */
static void conn_uncount(struct conn *c)
{
    struct host *h = c->h;
    if (c->is_pending) h->n_pending--;
    if (c->is_counted_inbound) h->n_inbound--;
    if (c->is_counted_outbound) h->n_outbound--;
    c->is_pending = c->is_counted_inbound = c->is_counted_outbound = false;
}

static void conn_close(struct conn *c, int status)
{
    struct host *h = c->h;
    if (c->is_closing) return;
    c->is_closing = true;
    for (struct conn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            h->n_conns--;
            break;
        }
    conn_uncount(c);
    char who[PEER_ID_TEXT_CAP] = "?";
    if (c->info.id.len) peer_id_to_text(&c->info.id, who, sizeof who);
    log_debug("host: connection %s %s closed (%s)", c->is_dialer ? "to" : "from", who,
              err_str(status));
    /* Pending opens and streams learn it; they cannot reach the conn any more. */
    while (c->opens) {
        struct open_req *o = c->opens;
        c->opens = o->next;
        o->cb(o->ctx, NULL, status ? status : MESH_ECLOSED);
        free(o->data);
        free(o);
    }
    while (c->streams) {
        struct host_stream *s = c->streams;
        s->fin_sent = true; /* nothing more can be sent */
        stream_finish(s, MESH_ECLOSED);
    }
    if (c->is_ready) peer_event(h, HOST_PEER_DISCONNECTED, &c->info);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    /* A clean close lets queued bytes (go away, last replies) reach the peer first. */
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (status == MESH_ECLOSED && c->write_pending > 0 &&
        uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, conn_on_shutdown) == 0) {
        c->shutdown_req.data = c;
    } else {
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    }
    yamux_free(c->yamux);
    c->yamux = NULL;
    noise_conn_free(c->noise);
    c->noise = NULL;
}

static void conn_ready(struct conn *c)
{
    struct host *h = c->h;
    struct yamux_config ycfg = {.max_streams = h->cfg.max_streams_per_conn};
    if (yamux_new(c->is_dialer, &ycfg, &c->yamux)) {
        conn_close(c, MESH_ENOMEM);
        return;
    }
    uv_timer_stop(&c->timer);
    c->info.id = *noise_conn_remote(c->noise);
    c->info.is_outbound = c->is_dialer;
    if (conns_to_peer(h, &c->info.id) >= h->cfg.max_conns_per_peer) {
        log_warn("host: refusing another connection from a peer (%u already)",
                 h->cfg.max_conns_per_peer);
        h->st.n_refused_conns_per_peer++;
        conn_close(c, MESH_EFULL);
        return;
    }
    if (!c->is_dialer) {
        /* The pending slot is free now; protected peers may go past the inbound cap. */
        h->n_pending--;
        c->is_pending = false;
        if (h->n_inbound >= h->cfg.max_conns && !connmgr_is_protected(&h->cm, &c->info.id)) {
            log_debug("host: refusing a connection: %u inbound connections", h->cfg.max_conns);
            h->st.n_refused_conns_total++;
            conn_close(c, MESH_EFULL);
            return;
        }
        h->n_inbound++;
        c->is_counted_inbound = true;
    }
    c->ready_ms = uv_now(h->loop);
    c->phase = PH_MUX;
    c->is_ready = true;
    peer_event(h, HOST_PEER_CONNECTED, &c->info);
    if (c->is_closing) return;
    identify_start(c);
    while (c->opens && !c->is_closing) {
        struct open_req *o = c->opens;
        c->opens = o->next;
        conn_open_stream(c, o->protocol, o->data, o->data_len, o->cb, o->ctx);
        free(o->data);
        free(o);
    }
    if (!c->is_dialer) conns_trim(h);
}

static bool supports_yamux(void *ctx, const char *protocol)
{
    (void)ctx;
    return !strcmp(protocol, YAMUX_MSS_ID);
}

static bool supports_noise(void *ctx, const char *protocol)
{
    (void)ctx;
    return !strcmp(protocol, NOISE_MSS_ID);
}

/* Decrypted bytes: muxer negotiation, then yamux. */
static void conn_on_plain(struct conn *c, const uint8_t *d, size_t n)
{
    const uint8_t *out;
    size_t used = 0, out_len;
    int rc;
    if (c->phase == PH_MSS_MUXER) {
        rc = mss_input(&c->mss, d, n, &used);
        mss_output(&c->mss, &out, &out_len);
        conn_write_secure(c, out, out_len);
        mss_output_clear(&c->mss);
        if (rc) {
            conn_close(c, rc);
            return;
        }
        if (c->mss.state != MSS_DONE || c->is_closing) return;
        conn_ready(c);
        if (c->is_closing) return;
    }
    if (used < n) {
        rc = yamux_input(c->yamux, d + used, n - used);
        conn_process_events(c);
        conn_flush(c);
        if (rc && !c->is_closing) {
            log_debug("host: yamux: %s", err_str(rc));
            conn_close(c, rc);
        }
    }
}

static void conn_start_noise(struct conn *c)
{
    const uint8_t *out;
    size_t out_len;
    int rc = noise_conn_new(c->is_dialer, &c->h->id, c->expected.len ? &c->expected : NULL,
                            &c->noise);
    if (rc) {
        conn_close(c, rc);
        return;
    }
    c->phase = PH_NOISE;
    noise_conn_output(c->noise, &out, &out_len);
    conn_write_raw(c, out, out_len);
    noise_conn_output_clear(c->noise);
}

static void conn_on_secure(struct conn *c)
{
    const uint8_t *out;
    size_t out_len;
    static const char *const muxers[] = {YAMUX_MSS_ID};
    c->phase = PH_MSS_MUXER;
    if (c->is_dialer) mss_dialer_init(&c->mss, muxers, 1);
    else mss_listener_init(&c->mss, supports_yamux, NULL);
    mss_output(&c->mss, &out, &out_len);
    conn_write_secure(c, out, out_len);
    mss_output_clear(&c->mss);
}

/* Bytes from the socket. */
static void conn_on_raw(struct conn *c, const uint8_t *d, size_t n)
{
    while (n && !c->is_closing) {
        const uint8_t *out, *plain;
        size_t used, out_len, plain_len;
        int rc;
        if (c->phase == PH_MSS_SECURITY) {
            rc = mss_input(&c->mss, d, n, &used);
            mss_output(&c->mss, &out, &out_len);
            conn_write_raw(c, out, out_len);
            mss_output_clear(&c->mss);
            if (rc) {
                conn_close(c, rc);
                return;
            }
            d += used;
            n -= used;
            if (c->mss.state == MSS_DONE) conn_start_noise(c);
            continue;
        }
        bool was_handshake = noise_conn_state(c->noise) == NOISE_CONN_HANDSHAKE;
        rc = noise_conn_input(c->noise, d, n, &used, &plain, &plain_len);
        d += used;
        n -= used;
        if (rc) {
            log_debug("host: noise failed: %s", err_str(rc));
            conn_close(c, rc);
            return;
        }
        noise_conn_output(c->noise, &out, &out_len);
        conn_write_raw(c, out, out_len);
        noise_conn_output_clear(c->noise);
        if (was_handshake && noise_conn_state(c->noise) == NOISE_CONN_READY) conn_on_secure(c);
        if (plain_len) conn_on_plain(c, plain, plain_len);
    }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = hd->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->h->rbuf, sizeof c->h->rbuf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    if (nread < 0) {
        log_debug("host: read: %s", uv_strerror((int)nread));
        conn_close(c, nread == UV_EOF ? MESH_ECLOSED : MESH_EIO);
        return;
    }
    conn_on_raw(c, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_handshake_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    log_debug("host: connection upgrade timed out");
    if (c->is_pending) c->h->st.n_handshake_timeouts++;
    conn_close(c, MESH_ETIMEOUT);
}

/* A conn with only its TCP handle; conn_link makes it a connection of the host. */
static struct conn *conn_new(struct host *h, bool is_dialer)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->h = h;
    c->is_dialer = is_dialer;
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c->connect_req.data = c;
    c->n_open_handles = 1;
    h->n_open_handles++;
    return c;
}

/* Lists c on the host, counts it and starts its upgrade deadline. */
static void conn_link(struct conn *c)
{
    struct host *h = c->h;
    uv_timer_init(h->loop, &c->timer);
    c->timer.data = c;
    c->n_open_handles++;
    h->n_open_handles++;
    c->next = h->conns;
    h->conns = c;
    h->n_conns++;
    if (c->is_dialer) {
        h->n_outbound++;
        c->is_counted_outbound = true;
    } else {
        h->n_pending++;
        c->is_pending = true;
    }
    uint32_t ms = c->is_dialer ? h->cfg.dial_timeout_ms : h->cfg.handshake_timeout_ms;
    uv_timer_start(&c->timer, on_handshake_timeout, ms, 0);
}

/* Inbound connections being upgraded from ip. */
static size_t pending_from(const struct host *h, const struct connmgr_ip *ip)
{
    size_t n = 0;
    for (const struct conn *c = h->conns; c; c = c->next)
        if (c->is_pending && connmgr_ip_equal(&c->ip, ip)) n++;
    return n;
}

static size_t conns_to_peer(const struct host *h, const struct peer_id *id)
{
    size_t n = 0;
    for (struct conn *c = h->conns; c; c = c->next)
        if (c->is_ready && peer_id_equal(&c->info.id, id)) n++;
    return n;
}

static void conn_start_reading(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        multiaddr_from_sockaddr((struct sockaddr *)&ss, &c->info.remote_addr);
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
        conn_close(c, MESH_EIO);
        return;
    }
    c->phase = PH_MSS_SECURITY;
    if (c->is_dialer) {
        static const char *const sec[] = {NOISE_MSS_ID};
        mss_dialer_init(&c->mss, sec, 1);
    } else {
        mss_listener_init(&c->mss, supports_noise, NULL);
    }
    const uint8_t *out;
    size_t out_len;
    mss_output(&c->mss, &out, &out_len);
    conn_write_raw(c, out, out_len);
    mss_output_clear(&c->mss);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct host *h = l->h;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (status < 0 || h->is_closing) return;
    struct conn *c = conn_new(h, false);
    if (!c) return;
    /* Accept even what is refused: a socket left in the backlog would stay there. */
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0 ||
        connmgr_ip_key((struct sockaddr *)&ss, &c->ip) < 0) {
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    /* The pending budget is full: close at once, with a reset (no FIN exchange, no
     * TIME_WAIT kept here), before anything was allocated for the upgrade. */
    uint64_t *refused = NULL;
    if (h->n_pending >= h->cfg.max_pending) refused = &h->st.n_refused_pending_total;
    else if (pending_from(h, &c->ip) >= h->cfg.max_pending_per_ip)
        refused = &h->st.n_refused_pending_per_ip;
    if (refused) {
        uint64_t now = uv_now(h->loop);
        (*refused)++;
        if (!h->refuse_log_ms || now - h->refuse_log_ms >= HOST_REFUSE_LOG_MS) {
            h->refuse_log_ms = now ? now : 1; /* one line per period, however hard the flood */
            log_warn("host: refusing inbound connections: %s (%llu so far)",
                     refused == &h->st.n_refused_pending_total ? "too many being upgraded"
                                                               : "too many from one address",
                     (unsigned long long)*refused);
        }
        if (uv_tcp_close_reset(&c->tcp, conn_handle_closed) < 0)
            uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
        return;
    }
    conn_link(c);
    conn_start_reading(c);
}

int host_listen(struct host *h, const struct multiaddr *addr)
{
    struct sockaddr_storage ss;
    int rc = multiaddr_to_sockaddr(addr, &ss), len = sizeof ss;
    if (rc) return rc;
    if (h->n_listeners == HOST_MAX_LISTENERS) return MESH_EFULL;
    struct listener *l = calloc(1, sizeof *l);
    if (!l) return MESH_ENOMEM;
    l->h = h;
    uv_tcp_init(h->loop, &l->tcp);
    l->tcp.data = l;
    h->n_open_handles++;
    /* IPv6 listeners take IPv6 only, so /ip4/0.0.0.0 and /ip6/:: can share a port. */
    unsigned bind_flags = ss.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, bind_flags)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection)) < 0 ||
        (rc = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len)) < 0) {
        log_error("host: cannot listen: %s", uv_strerror(rc));
        uv_close((uv_handle_t *)&l->tcp, listener_closed);
        return MESH_EIO;
    }
    multiaddr_from_sockaddr((struct sockaddr *)&ss, &l->addr);
    h->listeners[h->n_listeners++] = l;
    return 0;
}

size_t host_listen_addrs(const struct host *h, struct multiaddr *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_listeners && n < cap; i++) out[n++] = h->listeners[i]->addr;
    return n;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->is_closing) return;
    if (status < 0) {
        log_debug("host: connect failed: %s", uv_strerror(status));
        conn_close(c, MESH_EIO);
        return;
    }
    conn_start_reading(c);
}

/* Defers an error callback to the next loop turn (host_open_stream never calls back inline). */
struct deferred {
    uv_idle_t idle;
    struct host *h;
    host_open_fn cb;
    void *ctx;
    int status;
};

static void deferred_closed(uv_handle_t *hd)
{
    struct deferred *d = hd->data;
    struct host *h = d->h;
    free(d);
    handle_closed(h);
}

static void deferred_run(uv_idle_t *idle)
{
    struct deferred *d = idle->data;
    uv_idle_stop(idle);
    d->cb(d->ctx, NULL, d->status);
    uv_close((uv_handle_t *)idle, deferred_closed);
}

static int defer_error(struct host *h, host_open_fn cb, void *ctx, int status)
{
    struct deferred *d = calloc(1, sizeof *d);
    if (!d) return MESH_ENOMEM;
    d->h = h;
    d->cb = cb;
    d->ctx = ctx;
    d->status = status;
    uv_idle_init(h->loop, &d->idle);
    d->idle.data = d;
    h->n_open_handles++;
    uv_idle_start(&d->idle, deferred_run);
    return 0;
}

/* A pending open (the connection is not ready yet) with a copy of data. */
static struct open_req *open_req_new(const char *protocol, size_t plen, const uint8_t *data,
                                     size_t data_len, host_open_fn cb, void *ctx)
{
    struct open_req *o = calloc(1, sizeof *o);
    if (!o) return NULL;
    if (data_len) {
        o->data = malloc(data_len);
        if (!o->data) {
            free(o);
            return NULL;
        }
        memcpy(o->data, data, data_len);
        o->data_len = data_len;
    }
    memcpy(o->protocol, protocol, plen + 1);
    o->cb = cb;
    o->ctx = ctx;
    return o;
}

int host_open_stream(struct host *h, const struct multiaddr *addr, const char *protocol,
                     host_open_fn cb, void *ctx)
{
    return host_open_stream_data(h, addr, protocol, NULL, 0, cb, ctx);
}

int host_open_stream_data(struct host *h, const struct multiaddr *addr, const char *protocol,
                          const uint8_t *data, size_t data_len, host_open_fn cb, void *ctx)
{
    struct peer_id want;
    struct sockaddr_storage ss;
    bool has_id = multiaddr_peer_id(addr, &want) == 0;
    size_t plen = strlen(protocol);

    if (h->is_closing) return MESH_ECLOSED;
    if (plen == 0 || plen >= HOST_MAX_PROTOCOL_LEN || strchr(protocol, '\n')) return MESH_EINVAL;
    /* Reuse a live connection to the peer, or one being dialed to it. */
    for (struct conn *c = h->conns; c && has_id; c = c->next) {
        if (c->is_closing) continue;
        bool same = c->is_ready ? peer_id_equal(&c->info.id, &want)
                                : (c->is_dialer && peer_id_equal(&c->expected, &want));
        if (!same) continue;
        if (c->is_ready) {
            conn_open_stream(c, protocol, data, data_len, cb, ctx); /* answers later */
            return 0;
        }
        struct open_req *o = open_req_new(protocol, plen, data, data_len, cb, ctx);
        if (!o) return MESH_ENOMEM;
        o->next = c->opens;
        c->opens = o;
        return 0;
    }
    int rc = multiaddr_to_sockaddr(addr, &ss);
    if (rc) return rc;
    if (has_id && peer_id_equal(&want, &h->id.id)) return MESH_EINVAL; /* that is us */
    /* Only our own dials count here: inbound connections never block them. */
    if (h->n_outbound >= h->cfg.max_conns_outbound) {
        h->st.n_refused_dials++;
        return defer_error(h, cb, ctx, MESH_EFULL);
    }
    if (has_id && conns_to_peer(h, &want) >= h->cfg.max_conns_per_peer) {
        h->st.n_refused_conns_per_peer++;
        return defer_error(h, cb, ctx, MESH_EFULL);
    }
    struct conn *c = conn_new(h, true);
    if (!c) return MESH_ENOMEM;
    conn_link(c);
    if (has_id) c->expected = want;
    struct open_req *o = open_req_new(protocol, plen, data, data_len, cb, ctx);
    if (!o) {
        conn_close(c, MESH_ENOMEM);
        return MESH_ENOMEM;
    }
    c->opens = o;
    c->phase = PH_CONNECTING;
    if ((rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ss, on_connect)) < 0) {
        c->opens = NULL;
        free(o->data);
        free(o);
        conn_close(c, MESH_EIO);
        return defer_error(h, cb, ctx, MESH_EIO);
    }
    return 0;
}

/* ---- identify (/ipfs/id/1.0.0) ---------------------------------------------------------- */

static void identify_on_msg(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct conn *c = s->c;
    struct host *h = c->h;
    (void)ctx;
    int rc = identify_decode(data, len, &c->info.id, &c->info.ident);
    if (rc) {
        log_warn("host: bad identify message from a peer: %s", err_str(rc));
        host_stream_reset(s);
        return;
    }
    c->info.is_identified = true;
    peer_event(h, HOST_PEER_IDENTIFIED, &c->info);
}

static void identify_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_identify_cbs = {identify_on_msg, identify_on_eof, NULL};

/* /ipfs/id/push/1.0.0: the peer sends an Identify with the fields that changed. */
static void identify_push_on_msg(void *ctx, struct host_stream *s, const uint8_t *data,
                                 size_t len)
{
    struct conn *c = s->c;
    struct host *h = c->h;
    struct identify_info *upd = malloc(sizeof *upd);
    (void)ctx;
    if (!upd || identify_decode(data, len, &c->info.id, upd) != 0) {
        free(upd);
        host_stream_reset(s);
        return;
    }
    struct identify_info *cur = &c->info.ident;
    if (upd->agent[0]) memcpy(cur->agent, upd->agent, sizeof cur->agent);
    if (upd->protocol_version[0])
        memcpy(cur->protocol_version, upd->protocol_version, sizeof cur->protocol_version);
    if (upd->n_protocols) {
        memcpy(cur->protocols, upd->protocols, sizeof cur->protocols);
        cur->n_protocols = upd->n_protocols;
    }
    if (upd->n_listen_addrs) {
        memcpy(cur->listen_addrs, upd->listen_addrs, sizeof cur->listen_addrs);
        cur->n_listen_addrs = upd->n_listen_addrs;
    }
    if (upd->observed_addr.len) cur->observed_addr = upd->observed_addr;
    free(upd);
    if (c->info.is_identified) peer_event(h, HOST_PEER_IDENTIFIED, &c->info);
}

static const struct host_stream_cbs g_identify_push_cbs = {identify_push_on_msg,
                                                           identify_on_eof, NULL};

static void identify_push_serve(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_set_message_mode(s, IDENTIFY_MAX_MSG);
    host_stream_set_callbacks(s, &g_identify_push_cbs, NULL);
}

static void identify_opened(void *ctx, struct host_stream *s, int status)
{
    (void)ctx;
    if (status) {
        log_debug("host: identify not available: %s", err_str(status));
        return;
    }
    host_stream_set_callbacks(s, &g_identify_cbs, NULL);
    host_stream_set_message_mode(s, IDENTIFY_MAX_MSG);
}

static void identify_start(struct conn *c)
{
    conn_open_stream(c, HOST_IDENTIFY_ID, NULL, 0, identify_opened, NULL);
}

/* The listen address to tell the peer of connection c: a listener on an unspecified IP
 * (0.0.0.0, ::) is reported with the IP the peer reached us on (this connection's local
 * address, same family) - a peer cannot dial 0.0.0.0. Returns 0, or MESH_ENOTFOUND when the
 * listener has nothing to offer this peer. */
static int listen_addr_for(struct conn *c, const struct multiaddr *listen, struct multiaddr *out)
{
    struct sockaddr_storage la, local;
    int len = sizeof local;
    if (multiaddr_to_sockaddr(listen, &la) != 0) {
        *out = *listen;
        return 0;
    }
    bool any = la.ss_family == AF_INET
                   ? ((struct sockaddr_in *)&la)->sin_addr.s_addr == htonl(INADDR_ANY)
                   : IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&la)->sin6_addr);
    if (!any) {
        *out = *listen;
        return 0;
    }
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&local, &len) != 0 ||
        local.ss_family != la.ss_family)
        return MESH_ENOTFOUND;
    if (local.ss_family == AF_INET)
        ((struct sockaddr_in *)&local)->sin_port = ((struct sockaddr_in *)&la)->sin_port;
    else
        ((struct sockaddr_in6 *)&local)->sin6_port = ((struct sockaddr_in6 *)&la)->sin6_port;
    return multiaddr_from_sockaddr((struct sockaddr *)&local, out) == 0 ? 0 : MESH_ENOTFOUND;
}

/* Writes our identify message (as seen on connection c) to s and closes it. */
static void identify_send(struct host *h, struct host_stream *s)
{
    struct conn *c = s->c;
    struct identify_info *info = malloc(sizeof *info);
    uint8_t pub[IDENTITY_PUBKEY_PROTO_LEN], *buf = malloc(IDENTIFY_MAX_MSG);
    size_t n;

    if (!info || !buf) goto fail;
    memset(info, 0, sizeof *info);
    identity_pubkey_proto(h->id.pk, pub);
    snprintf(info->protocol_version, sizeof info->protocol_version, "%s", HOST_PROTOCOL_VERSION);
    snprintf(info->agent, sizeof info->agent, "%s", h->agent);
    for (size_t i = 0; i < h->n_listeners && info->n_listen_addrs < IDENTIFY_MAX_ADDRS; i++)
        if (listen_addr_for(c, &h->listeners[i]->addr,
                            &info->listen_addrs[info->n_listen_addrs]) == 0)
            info->n_listen_addrs++;
    for (size_t i = 0; i < h->n_handlers && i < IDENTIFY_MAX_PROTOCOLS; i++)
        memcpy(info->protocols[info->n_protocols++], h->handlers[i].protocol,
               HOST_MAX_PROTOCOL_LEN);
    info->observed_addr = c->info.remote_addr; /* how we see the peer */
    if (identify_encode(info, pub, sizeof pub, buf, IDENTIFY_MAX_MSG, &n)) goto fail;
    if (host_stream_write_msg(s, buf, n) == 0) host_stream_close(s);
    free(info);
    free(buf);
    return;
fail:
    free(info);
    free(buf);
    host_stream_reset(s);
}

/* Inbound identify request: answer with our identify message and close. */
static void identify_serve(void *ctx, struct host_stream *s)
{
    identify_send(ctx, s);
}

/* Our protocols changed: tell every connected peer (identify push). */
static void identify_push_opened(void *ctx, struct host_stream *s, int status)
{
    if (status) return; /* the peer does not take pushes */
    identify_send(ctx, s);
}

static void identify_push_all(struct host *h)
{
    for (struct conn *c = h->conns; c; c = c->next)
        if (c->is_ready && !c->is_closing)
            conn_open_stream(c, HOST_IDENTIFY_PUSH_ID, NULL, 0, identify_push_opened, h);
}

/* ---- ping (/ipfs/ping/1.0.0) ------------------------------------------------------------ */

static void ping_echo_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    (void)ctx;
    host_stream_write(s, data, len); /* the spec: echo every 32 bytes back */
}

static void ping_echo_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static const struct host_stream_cbs g_ping_echo_cbs = {ping_echo_data, ping_echo_eof, NULL};

static void ping_serve(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_set_callbacks(s, &g_ping_echo_cbs, NULL);
}

struct ping_op {
    host_ping_fn cb;
    void *ctx;
    uint8_t sent[HOST_PING_LEN], got[HOST_PING_LEN];
    size_t n_got;
    uint64_t t0_ns;
    bool done;
};

static void ping_report(struct ping_op *p, int status, uint64_t rtt_us)
{
    if (p->done) return;
    p->done = true;
    p->cb(p->ctx, status, rtt_us);
}

static void ping_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct ping_op *p = ctx;
    size_t take = len < HOST_PING_LEN - p->n_got ? len : HOST_PING_LEN - p->n_got;
    memcpy(p->got + p->n_got, data, take);
    p->n_got += take;
    if (p->n_got < HOST_PING_LEN) return;
    uint64_t rtt_us = (uv_hrtime() - p->t0_ns) / 1000;
    int status = sodium_memcmp(p->got, p->sent, HOST_PING_LEN) == 0 ? 0 : MESH_EPROTO;
    /* The callback may close the host: close the stream first (which may end it and free
     * p) and touch nothing of ours after the callback. */
    host_ping_fn cb = p->done ? NULL : p->cb;
    void *cb_ctx = p->ctx;
    p->done = true;
    host_stream_close(s);
    if (cb) cb(cb_ctx, status, status ? 0 : rtt_us);
}

static void ping_on_close(void *ctx, struct host_stream *s, int status)
{
    struct ping_op *p = ctx;
    (void)s;
    ping_report(p, status ? status : MESH_ECLOSED, 0);
    free(p);
}

static const struct host_stream_cbs g_ping_cbs = {ping_on_data, NULL, ping_on_close};

static void ping_opened(void *ctx, struct host_stream *s, int status)
{
    struct ping_op *p = ctx;
    if (status) {
        ping_report(p, status, 0);
        free(p);
        return;
    }
    host_stream_set_callbacks(s, &g_ping_cbs, p);
    randombytes_buf(p->sent, sizeof p->sent);
    p->t0_ns = uv_hrtime();
    host_stream_write(s, p->sent, sizeof p->sent);
}

int host_ping(struct host *h, const struct multiaddr *addr, host_ping_fn cb, void *ctx)
{
    struct ping_op *p = calloc(1, sizeof *p);
    if (!p) return MESH_ENOMEM;
    p->cb = cb;
    p->ctx = ctx;
    int rc = host_open_stream(h, addr, HOST_PING_ID, ping_opened, p);
    if (rc) free(p);
    return rc;
}

/* Identify and ping are served by every host. */
static int host_register_builtin(struct host *h)
{
    int rc = host_set_handler(h, HOST_IDENTIFY_ID, identify_serve, h);
    if (!rc) rc = host_set_handler(h, HOST_IDENTIFY_PUSH_ID, identify_push_serve, h);
    if (!rc) rc = host_set_handler(h, HOST_PING_ID, ping_serve, h);
    return rc;
}
