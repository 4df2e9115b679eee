/* yamux.c - yamux session state machine (see yamux.h; spec: hashicorp/yamux spec.md,
 * sections "Framing", "Flag Field", "Stream Establishment", "Flow Control", "Ping",
 * "Go Away").
 *
 * Streams live in a small array searched linearly (max_streams is tens). Data payloads are
 * copied straight from the input into the stream's receive buffer, never framed twice.
 */
#include "net/yamux.h"

#include "core/buf.h"
#include "core/err.h"

#include <stdlib.h>
#include <string.h>


struct ystream {
    uint32_t id;
    bool fin_sent, fin_recv;
    uint32_t send_window;    /* bytes the peer still accepts */
    uint32_t recv_window;    /* bytes we still accept before granting more */
    uint32_t pending_credit; /* bytes read by the app, not yet re-granted */
    struct buf in;
    void *user;
};

struct yamux {
    bool is_client, dead, goaway_sent, goaway_recv;
    uint32_t next_id;
    struct yamux_config cfg;
    struct ystream **streams;
    size_t n_streams;
    struct buf out;
    struct yamux_event *events;
    size_t n_events, events_head, events_cap;
    /* input parser: header bytes, then the payload of a data frame */
    uint8_t hdr[YAMUX_HEADER_LEN];
    size_t hdr_len;
    uint32_t data_left;  /* payload bytes of the current data frame still to come */
    uint32_t data_id;    /* its stream (0: discard) */
    uint16_t data_flags; /* flags applied after the payload (FIN) */
};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int send_frame(struct yamux *y, uint8_t type, uint16_t flags, uint32_t id, uint32_t len,
                      const uint8_t *payload)
{
    uint8_t h[YAMUX_HEADER_LEN];
    h[0] = 0; /* version */
    h[1] = type;
    h[2] = (uint8_t)(flags >> 8);
    h[3] = (uint8_t)flags;
    put32(h + 4, id);
    put32(h + 8, len);
    int rc = buf_append(&y->out, h, sizeof h);
    if (!rc && type == YAMUX_TYPE_DATA && len) rc = buf_append(&y->out, payload, len);
    return rc;
}

static int push_event(struct yamux *y, enum yamux_event_type type, uint32_t id, uint32_t value)
{
    if (y->events_head > 0 && y->events_head == y->n_events) y->events_head = y->n_events = 0;
    if (y->n_events == y->events_cap) {
        size_t cap = y->events_cap ? y->events_cap * 2 : 32;
        struct yamux_event *e = realloc(y->events, cap * sizeof *e);
        if (!e) return MESH_ENOMEM;
        y->events = e;
        y->events_cap = cap;
    }
    y->events[y->n_events++] = (struct yamux_event){type, id, value};
    return 0;
}

int yamux_next_event(struct yamux *y, struct yamux_event *ev)
{
    if (y->events_head >= y->n_events) return 0;
    *ev = y->events[y->events_head++];
    return 1;
}

static struct ystream *find(const struct yamux *y, uint32_t id, size_t *index)
{
    for (size_t i = 0; i < y->n_streams; i++)
        if (y->streams[i]->id == id) {
            if (index) *index = i;
            return y->streams[i];
        }
    return NULL;
}

static void remove_stream(struct yamux *y, uint32_t id)
{
    size_t i;
    struct ystream *s = find(y, id, &i);
    if (!s) return;
    buf_free(&s->in);
    free(s);
    y->streams[i] = y->streams[--y->n_streams];
}

/* Forgets a stream once both directions are closed and the app has read everything. */
static void maybe_done(struct yamux *y, struct ystream *s)
{
    if (s->fin_sent && s->fin_recv && buf_size(&s->in) == 0) remove_stream(y, s->id);
}

static struct ystream *add_stream(struct yamux *y, uint32_t id)
{
    struct ystream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->id = id;
    s->send_window = s->recv_window = YAMUX_INITIAL_WINDOW;
    y->streams[y->n_streams++] = s;
    return s;
}

int yamux_new(bool is_client, const struct yamux_config *cfg, struct yamux **out)
{
    struct yamux *y = calloc(1, sizeof *y);
    *out = NULL;
    if (!y) return MESH_ENOMEM;
    y->is_client = is_client;
    y->next_id = is_client ? 1 : 2;
    y->cfg.max_streams = cfg && cfg->max_streams ? cfg->max_streams : 64;
    y->cfg.max_output = cfg && cfg->max_output ? cfg->max_output : 4u << 20;
    y->streams = calloc(y->cfg.max_streams, sizeof *y->streams);
    if (!y->streams) {
        free(y);
        return MESH_ENOMEM;
    }
    *out = y;
    return 0;
}

void yamux_free(struct yamux *y)
{
    if (!y) return;
    for (size_t i = 0; i < y->n_streams; i++) {
        buf_free(&y->streams[i]->in);
        free(y->streams[i]);
    }
    free(y->streams);
    buf_free(&y->out);
    free(y->events);
    free(y);
}

/* A protocol violation: tell the peer once, then refuse everything. */
static int fail(struct yamux *y)
{
    if (!y->dead && !y->goaway_sent) send_frame(y, YAMUX_TYPE_GO_AWAY, 0, 0, YAMUX_GOAWAY_PROTOCOL, NULL);
    y->goaway_sent = true;
    y->dead = true;
    return MESH_EPROTO;
}

/* SYN: the peer opens a stream. Ids must have the peer's parity and be new. */
static int on_syn(struct yamux *y, uint32_t id, struct ystream **s)
{
    bool peer_odd = !y->is_client;
    if (id == 0 || (id % 2 == 1) != peer_odd || find(y, id, NULL)) return fail(y);
    if (y->goaway_sent || y->n_streams >= y->cfg.max_streams) {
        *s = NULL; /* refuse politely */
        return send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_RST, id, 0, NULL);
    }
    *s = add_stream(y, id);
    if (!*s) return MESH_ENOMEM;
    int rc = send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_ACK, id, 0, NULL);
    if (!rc) rc = push_event(y, YAMUX_EV_OPEN, id, 0);
    return rc;
}

/* Flags that come before the payload (SYN, ACK) for Data and Window Update frames. */
static int on_stream_head(struct yamux *y, uint16_t flags, uint32_t id, struct ystream **s)
{
    int rc = 0;
    *s = find(y, id, NULL);
    if (flags & YAMUX_FLAG_SYN) {
        if ((rc = on_syn(y, id, s))) return rc;
    }
    if (*s && (flags & YAMUX_FLAG_ACK)) rc = push_event(y, YAMUX_EV_ACK, id, 0);
    return rc;
}

/* Flags that come after the payload (FIN, RST). */
static int on_stream_tail(struct yamux *y, uint16_t flags, struct ystream *s)
{
    int rc = 0;
    if (!s) return 0;
    if (flags & YAMUX_FLAG_RST) {
        uint32_t id = s->id;
        remove_stream(y, id);
        return push_event(y, YAMUX_EV_RESET, id, 0);
    }
    if (flags & YAMUX_FLAG_FIN) {
        if (s->fin_recv) return 0;
        s->fin_recv = true;
        rc = push_event(y, YAMUX_EV_FIN, s->id, 0); /* forgotten when the app reads EOF */
    }
    return rc;
}

/* A complete 12-byte header. */
static int on_header(struct yamux *y)
{
    const uint8_t *h = y->hdr;
    uint8_t type = h[1];
    uint16_t flags = (uint16_t)(h[2] << 8 | h[3]);
    uint32_t id = get32(h + 4), len = get32(h + 8);
    struct ystream *s;
    int rc;

    if (h[0] != 0 || type > YAMUX_TYPE_GO_AWAY) return fail(y);
    if (flags & ~(YAMUX_FLAG_SYN | YAMUX_FLAG_ACK | YAMUX_FLAG_FIN | YAMUX_FLAG_RST))
        return fail(y);
    switch (type) {
    case YAMUX_TYPE_DATA:
        if (id == 0) return fail(y);
        if ((rc = on_stream_head(y, flags, id, &s))) return rc;
        if (s && s->fin_recv && len) return fail(y); /* data after FIN */
        if (s && len > s->recv_window) return fail(y); /* beyond the window we granted */
        if (s) s->recv_window -= len;
        y->data_left = len;
        y->data_id = s ? id : 0; /* unknown (e.g. we reset it): discard */
        y->data_flags = flags;
        if (len == 0) return on_stream_tail(y, flags, s);
        return 0;
    case YAMUX_TYPE_WINDOW_UPDATE:
        if (id == 0) return fail(y);
        if ((rc = on_stream_head(y, flags, id, &s))) return rc;
        if (s && len) {
            if ((uint64_t)s->send_window + len > UINT32_MAX) return fail(y);
            s->send_window += len;
            if ((rc = push_event(y, YAMUX_EV_WINDOW, id, s->send_window))) return rc;
        }
        return on_stream_tail(y, flags, s);
    case YAMUX_TYPE_PING:
        if (id != 0) return fail(y);
        if (flags & YAMUX_FLAG_SYN) {
            if (buf_size(&y->out) > y->cfg.max_output) return fail(y); /* ping flood */
            return send_frame(y, YAMUX_TYPE_PING, YAMUX_FLAG_ACK, 0, len, NULL);
        }
        if (flags & YAMUX_FLAG_ACK) return push_event(y, YAMUX_EV_PING, 0, len);
        return fail(y);
    default: /* GO_AWAY */
        if (id != 0) return fail(y);
        y->goaway_recv = true;
        return push_event(y, YAMUX_EV_GOAWAY, 0, len);
    }
}

int yamux_input(struct yamux *y, const uint8_t *data, size_t len)
{
    size_t i = 0;
    int rc = 0;

    if (y->dead) return MESH_EPROTO;
    while (i < len) {
        if (y->data_left) {
            size_t n = len - i < y->data_left ? len - i : y->data_left;
            struct ystream *s = y->data_id ? find(y, y->data_id, NULL) : NULL;
            if (s) {
                if ((rc = buf_append(&s->in, data + i, n))) break;
                if (buf_size(&s->in) == n && (rc = push_event(y, YAMUX_EV_DATA, s->id, 0)))
                    break;
            }
            i += n;
            y->data_left -= (uint32_t)n;
            if (y->data_left == 0 && (rc = on_stream_tail(y, y->data_flags, s))) break;
            continue;
        }
        size_t n = YAMUX_HEADER_LEN - y->hdr_len;
        if (n > len - i) n = len - i;
        memcpy(y->hdr + y->hdr_len, data + i, n);
        y->hdr_len += n;
        i += n;
        if (y->hdr_len < YAMUX_HEADER_LEN) break;
        y->hdr_len = 0;
        if ((rc = on_header(y))) break;
    }
    if (rc == MESH_ENOMEM) y->dead = true;
    return rc;
}

void yamux_output(const struct yamux *y, const uint8_t **data, size_t *len)
{
    *data = y->out.p + y->out.off;
    *len = buf_size(&y->out);
}

void yamux_output_consume(struct yamux *y, size_t n)
{
    buf_consume(&y->out, n);
}

int yamux_stream_open(struct yamux *y, uint32_t *id)
{
    *id = 0;
    if (y->dead || y->goaway_recv || y->goaway_sent) return MESH_ECLOSED;
    if (y->n_streams >= y->cfg.max_streams) return MESH_EFULL;
    if (y->next_id > UINT32_MAX - 2) return MESH_EFULL; /* ids exhausted */
    struct ystream *s = add_stream(y, y->next_id);
    if (!s) return MESH_ENOMEM;
    y->next_id += 2;
    int rc = send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_SYN, s->id, 0, NULL);
    if (rc) {
        remove_stream(y, s->id);
        return rc;
    }
    *id = s->id;
    return 0;
}

int yamux_stream_write(struct yamux *y, uint32_t id, const uint8_t *data, size_t len,
                       size_t *written)
{
    struct ystream *s = find(y, id, NULL);
    size_t done = 0;
    *written = 0;
    if (!s) return MESH_ENOTFOUND;
    if (y->dead || s->fin_sent) return MESH_ECLOSED;
    while (done < len && s->send_window > 0) {
        uint32_t n = YAMUX_MAX_FRAME_PAYLOAD;
        if (n > s->send_window) n = s->send_window;
        if (n > len - done) n = (uint32_t)(len - done);
        int rc = send_frame(y, YAMUX_TYPE_DATA, 0, id, n, data + done);
        if (rc) return rc;
        s->send_window -= n;
        done += n;
    }
    *written = done;
    return 0;
}

int yamux_stream_read(struct yamux *y, uint32_t id, uint8_t *buf, size_t cap, size_t *n)
{
    struct ystream *s = find(y, id, NULL);
    *n = 0;
    if (!s) return MESH_ENOTFOUND;
    size_t avail = buf_size(&s->in);
    if (avail == 0 && s->fin_recv) {
        maybe_done(y, s);
        return MESH_ECLOSED;
    }
    if (avail == 0) return 0;
    size_t k = avail < cap ? avail : cap;
    memcpy(buf, s->in.p + s->in.off, k);
    buf_consume(&s->in, k);
    *n = k;
    /* Re-grant what was read once it reaches half the window (fewer, larger updates). */
    s->pending_credit += (uint32_t)k;
    if (!s->fin_recv && !y->dead && s->pending_credit >= YAMUX_INITIAL_WINDOW / 2) {
        int rc = send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, 0, id, s->pending_credit, NULL);
        if (rc) return rc;
        s->recv_window += s->pending_credit;
        s->pending_credit = 0;
    }
    return 0;
}

size_t yamux_stream_readable(const struct yamux *y, uint32_t id)
{
    struct ystream *s = find(y, id, NULL);
    return s ? buf_size(&s->in) : 0;
}

int yamux_stream_close(struct yamux *y, uint32_t id)
{
    struct ystream *s = find(y, id, NULL);
    if (!s) return MESH_ENOTFOUND;
    if (s->fin_sent) return 0;
    s->fin_sent = true;
    int rc = y->dead ? 0 : send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_FIN, id, 0, NULL);
    maybe_done(y, s);
    return rc;
}

int yamux_stream_reset(struct yamux *y, uint32_t id)
{
    if (!find(y, id, NULL)) return MESH_ENOTFOUND;
    remove_stream(y, id);
    return y->dead ? 0 : send_frame(y, YAMUX_TYPE_WINDOW_UPDATE, YAMUX_FLAG_RST, id, 0, NULL);
}

int yamux_stream_set_user(struct yamux *y, uint32_t id, void *user)
{
    struct ystream *s = find(y, id, NULL);
    if (!s) return MESH_ENOTFOUND;
    s->user = user;
    return 0;
}

void *yamux_stream_user(const struct yamux *y, uint32_t id)
{
    struct ystream *s = find(y, id, NULL);
    return s ? s->user : NULL;
}

uint32_t yamux_stream_send_window(const struct yamux *y, uint32_t id)
{
    struct ystream *s = find(y, id, NULL);
    return s ? s->send_window : 0;
}

int yamux_ping(struct yamux *y, uint32_t value)
{
    if (y->dead) return MESH_ECLOSED;
    return send_frame(y, YAMUX_TYPE_PING, YAMUX_FLAG_SYN, 0, value, NULL);
}

int yamux_go_away(struct yamux *y, uint32_t code)
{
    if (y->dead || y->goaway_sent) return 0;
    y->goaway_sent = true;
    return send_frame(y, YAMUX_TYPE_GO_AWAY, 0, 0, code, NULL);
}

size_t yamux_n_streams(const struct yamux *y)
{
    return y->n_streams;
}

bool yamux_is_dead(const struct yamux *y)
{
    return y->dead || (y->goaway_sent && y->goaway_recv && y->n_streams == 0);
}
