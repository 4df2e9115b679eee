/* sim.c - discrete-event network simulation for the DHT and GossipSub cores (see sim.h).
 *
 * Events (frame deliveries, request failures, core timers) sit in a binary min-heap ordered
 * by (virtual time, insertion number), so runs are deterministic. The glue here is what the
 * libuv host will do for real: each DHT request is a fresh stream (request frame out, one
 * response frame back; a node that is offline never answers, so the requester's timeout
 * fires); gossip uses one long-lived pair of streams per connection. Node identities are
 * Ed25519 keys derived from the seed, so peer IDs are real "12D3KooW..." IDs.
 */
#include "net/sim.h"

#include "core/err.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

enum { EV_TIMER = 0, EV_DHT_REQ, EV_DHT_RESP, EV_DHT_FAIL, EV_GOSSIP };

struct sim_event {
    uint64_t t, seq;
    int kind;
    uint32_t node, peer; /* destination, origin */
    uint64_t req_id;
    uint8_t *buf;        /* frame with its length prefix (owned) */
    size_t len;
};

struct sim_node {
    struct identity id;
    struct dht *dht;
    struct gossip *gossip;
    bool online;
    uint64_t timer_at; /* earliest timer event queued, 0: none */
    struct sim *s;
    size_t idx;
};

struct sim {
    struct sim_config cfg;
    struct sim_node *nodes;
    size_t n_nodes;
    uint32_t *map; /* peer id hash -> node index + 1, open addressing */
    size_t map_cap;
    struct sim_event *heap;
    size_t n_heap, cap_heap;
    uint64_t now, seq, rng;
    struct sim_stats st;
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t id_hash(const struct peer_id *id)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < id->len; i++) h = (h ^ id->bytes[i]) * 1099511628211ull;
    return h;
}

/* ---- event heap ---------------------------------------------------------------------- */

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static int heap_push(struct sim *s, struct sim_event ev)
{
    if (s->n_heap == s->cap_heap) {
        size_t nc = s->cap_heap ? s->cap_heap * 2 : 1024;
        struct sim_event *nh = realloc(s->heap, nc * sizeof *nh);
        if (!nh) {
            free(ev.buf);
            return MESH_ENOMEM;
        }
        s->heap = nh;
        s->cap_heap = nc;
    }
    ev.seq = s->seq++;
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&ev, &s->heap[p])) break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = ev;
    return 0;
}

static struct sim_event heap_pop(struct sim *s)
{
    struct sim_event top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct sim_event *best = &last;
        if (l < s->n_heap && ev_less(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < s->n_heap && ev_less(&s->heap[r], best)) m = r;
        if (m == i) break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->n_heap) s->heap[i] = last;
    return top;
}

static uint64_t latency(struct sim *s)
{
    uint32_t lo = s->cfg.latency_min_ms, hi = s->cfg.latency_max_ms;
    return lo + splitmix(&s->rng) % (uint64_t)(hi - lo + 1);
}

/* ---- glue: drain a node's cores into the network ------------------------------------- */

static void node_flush(struct sim *s, struct sim_node *n)
{
    if (!n->online) return;
    uint64_t next = UINT64_MAX;
    for (int round = 0; round < 2; round++) {
        if (n->dht) {
            struct dht_request r;
            while (dht_next_request(n->dht, &r) == 0) {
                size_t to;
                if (sim_node_find(s, &r.peer.id, &to) < 0) {
                    free(r.msg);
                    struct sim_event f = {s->now + 1, 0, EV_DHT_FAIL, (uint32_t)n->idx, 0,
                                          r.req_id, NULL, 0};
                    heap_push(s, f);
                    continue;
                }
                struct sim_event ev = {s->now + latency(s), 0, EV_DHT_REQ, (uint32_t)to,
                                       (uint32_t)n->idx, r.expects_response ? r.req_id : 0,
                                       r.msg, r.msg_len};
                heap_push(s, ev);
            }
            uint64_t t = dht_periodic(n->dht, s->now);
            if (t < next) next = t;
        }
        if (n->gossip) {
            struct gossip_output o;
            while (gossip_next_output(n->gossip, &o) == 0) {
                size_t to;
                if (sim_node_find(s, &o.peer, &to) < 0) {
                    free(o.frame);
                    continue;
                }
                struct sim_event ev = {s->now + latency(s), 0, EV_GOSSIP, (uint32_t)to,
                                       (uint32_t)n->idx, 0, o.frame, o.frame_len};
                heap_push(s, ev);
            }
            uint64_t t = gossip_periodic(n->gossip, s->now);
            if (t < next) next = t;
        }
    }
    if (next != UINT64_MAX && (n->timer_at == 0 || next < n->timer_at || n->timer_at <= s->now)) {
        n->timer_at = next;
        struct sim_event ev = {next, 0, EV_TIMER, (uint32_t)n->idx, 0, 0, NULL, 0};
        heap_push(s, ev);
    }
}

void sim_node_poke(struct sim *s, size_t i)
{
    if (i < s->n_nodes) node_flush(s, &s->nodes[i]);
}

static void peer_of(const struct sim_node *n, struct dht_peer *p)
{
    memset(p, 0, sizeof *p);
    p->id = n->id.id;
}

/* Host role for an inbound DHT stream: identify says the requester's mode, then the core
 * answers. */
static void on_dht_req(struct sim *s, struct sim_event *ev)
{
    struct sim_node *to = &s->nodes[ev->node], *from = &s->nodes[ev->peer];
    const uint8_t *body;
    size_t body_len, used;
    if (!to->online || !to->dht) {
        s->st.n_dropped++;
        return; /* the requester times out */
    }
    s->st.n_frames++;
    s->st.n_bytes += ev->len;
    struct dht_peer fp;
    peer_of(from, &fp);
    dht_peer_connected(to->dht, s->now, &fp, dht_is_server(from->dht));
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    int rc = dht_frame_split(ev->buf, ev->len, &body, &body_len, &used);
    if (rc == 0) rc = dht_handle_request(to->dht, s->now, &fp, body, body_len, &resp, &resp_len);
    if (ev->req_id) {
        struct sim_event r = {s->now + latency(s), 0, rc == 0 && resp ? EV_DHT_RESP : EV_DHT_FAIL,
                              ev->peer, ev->node, ev->req_id, resp, resp_len};
        heap_push(s, r);
    } else {
        free(resp);
    }
    node_flush(s, to);
}

static void on_dht_resp(struct sim *s, struct sim_event *ev)
{
    struct sim_node *n = &s->nodes[ev->node];
    const uint8_t *body;
    size_t body_len, used;
    if (!n->online) {
        s->st.n_dropped++;
        return;
    }
    if (!s->nodes[ev->peer].online) {
        /* The responder left while the answer was in flight: the stream breaks. */
        s->st.n_dropped++;
        dht_on_failure(n->dht, s->now, ev->req_id);
    } else if (dht_frame_split(ev->buf, ev->len, &body, &body_len, &used) == 0) {
        s->st.n_frames++;
        s->st.n_bytes += ev->len;
        dht_on_response(n->dht, s->now, ev->req_id, body, body_len);
    } else {
        dht_on_failure(n->dht, s->now, ev->req_id);
    }
    node_flush(s, n);
}

static void on_gossip(struct sim *s, struct sim_event *ev)
{
    struct sim_node *n = &s->nodes[ev->node], *from = &s->nodes[ev->peer];
    const uint8_t *body;
    size_t body_len, used;
    if (!n->online || !from->online || !n->gossip) {
        s->st.n_dropped++;
        return;
    }
    s->st.n_frames++;
    s->st.n_bytes += ev->len;
    if (gossip_frame_split(ev->buf, ev->len, &body, &body_len, &used) == 0)
        gossip_on_rpc(n->gossip, s->now, &from->id.id, body, body_len);
    node_flush(s, n);
}

int sim_step(struct sim *s)
{
    if (s->n_heap == 0) return MESH_ENOTFOUND;
    struct sim_event ev = heap_pop(s);
    if (ev.t > s->now) s->now = ev.t;
    struct sim_node *n = &s->nodes[ev.node];
    switch (ev.kind) {
    case EV_TIMER:
        if (n->timer_at == ev.t) n->timer_at = 0;
        node_flush(s, n);
        break;
    case EV_DHT_REQ:
        on_dht_req(s, &ev);
        break;
    case EV_DHT_RESP:
        on_dht_resp(s, &ev);
        break;
    case EV_DHT_FAIL:
        if (n->online && n->dht) {
            dht_on_failure(n->dht, s->now, ev.req_id);
            node_flush(s, n);
        }
        break;
    case EV_GOSSIP:
        on_gossip(s, &ev);
        break;
    }
    free(ev.buf);
    return 0;
}

void sim_run_until(struct sim *s, uint64_t t_ms)
{
    while (s->n_heap && s->heap[0].t <= t_ms) sim_step(s);
    if (s->now < t_ms) s->now = t_ms;
}

int sim_dht_wait(struct sim *s, size_t i, uint64_t qid, uint64_t limit_ms)
{
    struct dht *d = s->nodes[i].dht;
    while (dht_query_status(d, qid) == DHT_QUERY_RUNNING && s->n_heap && s->heap[0].t <= limit_ms)
        sim_step(s);
    return dht_query_status(d, qid);
}

/* ---- nodes --------------------------------------------------------------------------- */

static void map_put(struct sim *s, const struct peer_id *id, size_t idx)
{
    for (size_t i = id_hash(id) & (s->map_cap - 1);; i = (i + 1) & (s->map_cap - 1))
        if (!s->map[i]) {
            s->map[i] = (uint32_t)idx + 1;
            return;
        }
}

int sim_node_find(const struct sim *s, const struct peer_id *id, size_t *idx)
{
    for (size_t i = id_hash(id) & (s->map_cap - 1);; i = (i + 1) & (s->map_cap - 1)) {
        uint32_t v = s->map[i];
        if (!v) return MESH_ENOTFOUND;
        if (peer_id_equal(&s->nodes[v - 1].id.id, id)) {
            *idx = v - 1;
            return 0;
        }
    }
}

static void on_gossip_msg(void *ud, const struct gossip_msg *m)
{
    struct sim_node *n = ud;
    if (n->s->cfg.on_gossip_message) n->s->cfg.on_gossip_message(n->s->cfg.ud, n->idx, m);
}

int sim_node_add(struct sim *s, size_t *idx)
{
    uint8_t seed[32];
    int rc;
    *idx = 0;
    if (s->n_nodes == s->cfg.n_max) return MESH_EFULL;
    struct sim_node *n = &s->nodes[s->n_nodes];
    memset(n, 0, sizeof *n);
    n->s = s;
    n->idx = s->n_nodes;
    for (int i = 0; i < 4; i++) {
        uint64_t r = splitmix(&s->rng);
        memcpy(seed + 8 * i, &r, 8);
    }
    rc = identity_from_seed(seed, &n->id);
    if (rc < 0) return rc;
    if (s->cfg.with_dht) {
        struct dht_config dc;
        memset(&dc, 0, sizeof dc);
        dc.self = n->id.id;
        dc.protocol_id = s->cfg.dht_protocol;
        dc.is_server = !s->cfg.dht_client_mode;
        dc.request_timeout_ms = s->cfg.dht_request_timeout_ms;
        crypto_hash_sha256(dc.seed, seed, sizeof seed);
        rc = dht_new(&dc, &n->dht);
        if (rc < 0) return rc;
    }
    if (s->cfg.with_gossip) {
        struct gossip_config gc;
        memset(&gc, 0, sizeof gc);
        gc.id = &n->id;
        gc.params = s->cfg.gossip_params;
        gc.on_message = on_gossip_msg;
        gc.ud = n;
        crypto_generichash(gc.seed, sizeof gc.seed, seed, sizeof seed, NULL, 0);
        rc = gossip_new(&gc, &n->gossip);
        if (rc < 0) {
            dht_free(n->dht);
            return rc;
        }
    }
    n->online = true;
    map_put(s, &n->id.id, s->n_nodes);
    *idx = s->n_nodes++;
    return 0;
}

size_t sim_n_nodes(const struct sim *s) { return s->n_nodes; }

void sim_node_set_online(struct sim *s, size_t i, bool online)
{
    if (i >= s->n_nodes) return;
    struct sim_node *n = &s->nodes[i];
    bool was = n->online;
    n->online = online;
    if (online && !was) {
        n->timer_at = 0;
        node_flush(s, n);
    }
}

bool sim_node_online(const struct sim *s, size_t i) { return i < s->n_nodes && s->nodes[i].online; }
const struct identity *sim_node_identity(const struct sim *s, size_t i) { return &s->nodes[i].id; }
struct dht *sim_node_dht(struct sim *s, size_t i) { return s->nodes[i].dht; }
struct gossip *sim_node_gossip(struct sim *s, size_t i) { return s->nodes[i].gossip; }
uint64_t sim_now(const struct sim *s) { return s->now; }
void sim_stats(const struct sim *s, struct sim_stats *st) { *st = s->st; }

int sim_gossip_connect(struct sim *s, size_t i, size_t j)
{
    if (i >= s->n_nodes || j >= s->n_nodes || i == j) return MESH_EINVAL;
    struct sim_node *a = &s->nodes[i], *b = &s->nodes[j];
    if (!a->gossip || !b->gossip || !a->online || !b->online) return MESH_EINVAL;
    int rc = gossip_peer_add(a->gossip, s->now, &b->id.id, true);
    if (rc == 0) rc = gossip_peer_add(b->gossip, s->now, &a->id.id, false);
    node_flush(s, a);
    node_flush(s, b);
    return rc;
}

void sim_gossip_disconnect(struct sim *s, size_t i, size_t j)
{
    if (i >= s->n_nodes || j >= s->n_nodes) return;
    gossip_peer_remove(s->nodes[i].gossip, s->now, &s->nodes[j].id.id);
    gossip_peer_remove(s->nodes[j].gossip, s->now, &s->nodes[i].id.id);
}

/* ---- life cycle ---------------------------------------------------------------------- */

int sim_new(const struct sim_config *cfg, struct sim **out)
{
    *out = NULL;
    if (!cfg || cfg->n_max == 0 || cfg->n_max > (1u << 24)) return MESH_EINVAL;
    if (sodium_init() < 0) return MESH_ECRYPTO;
    struct sim *s = calloc(1, sizeof *s);
    if (!s) return MESH_ENOMEM;
    s->cfg = *cfg;
    if (s->cfg.latency_max_ms == 0) {
        s->cfg.latency_min_ms = 10;
        s->cfg.latency_max_ms = 50;
    }
    if (s->cfg.latency_min_ms > s->cfg.latency_max_ms) s->cfg.latency_min_ms = s->cfg.latency_max_ms;
    if (!s->cfg.dht_request_timeout_ms) s->cfg.dht_request_timeout_ms = 2000;
    s->rng = cfg->seed;
    s->map_cap = 16;
    while (s->map_cap < cfg->n_max * 2) s->map_cap *= 2;
    s->nodes = calloc(cfg->n_max, sizeof *s->nodes);
    s->map = calloc(s->map_cap, sizeof *s->map);
    if (!s->nodes || !s->map) {
        sim_free(s);
        return MESH_ENOMEM;
    }
    *out = s;
    return 0;
}

void sim_free(struct sim *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n_nodes; i++) {
        dht_free(s->nodes[i].dht);
        gossip_free(s->nodes[i].gossip);
        identity_wipe(&s->nodes[i].id);
    }
    for (size_t i = 0; i < s->n_heap; i++) free(s->heap[i].buf);
    free(s->heap);
    free(s->nodes);
    free(s->map);
    free(s);
}
