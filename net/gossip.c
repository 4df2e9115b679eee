/* gossip.c - GossipSub v1.1 router core (see gossip.h; specs: libp2p/specs pubsub/README.md,
 * pubsub/gossipsub/gossipsub-v1.0.md, gossipsub-v1.1.md).
 *
 * Peers, topics and mesh sets are small arrays searched linearly: a node has tens of peers
 * and a handful of topics. Messages are kept once, reference counted, as their marshalled
 * protobuf (what we forward); the message cache is history_length windows of pointers; the
 * seen cache is an open-addressing hash of ids rebuilt at each heartbeat to drop expired
 * ids. Outgoing control and messages accumulate per peer and leave as one RPC per
 * gossip_next_output() call (gossip_rpc.c, which also checks received RPCs; shared state in
 * gossip_internal.h).
 */
#include "net/gossip_internal.h"

#include "core/err.h"
#include "net/varint.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------- */


static void shuffle(struct gossip *g, struct g_peer **a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(&g->rng) % i);
        struct g_peer *t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

int gossip_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 8;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np) return MESH_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

static uint64_t hash_bytes(const uint8_t *b, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h ? h : 1;
}

void gossip_msg_unref(struct g_msg *m)
{
    if (!m || --m->refs > 0) return;
    free(m->raw);
    free(m);
}

void gossip_params_default(struct gossip_params *p)
{
    memset(p, 0, sizeof *p);
    p->d = 6;
    p->d_lo = 4;
    p->d_hi = 12;
    p->d_lazy = 6;
    p->d_score = 4;
    p->d_out = 2;
    p->heartbeat_ms = 1000;
    p->history_length = 5;
    p->history_gossip = 3;
    p->fanout_ttl_ms = 60000;
    p->seen_ttl_ms = 120000;
    p->prune_backoff_ms = 60000;
    p->unsubscribe_backoff_ms = 10000;
    p->gossip_factor = 0.25;
    p->max_ihave_length = 5000;
    p->max_ihave_messages = 10;
    p->iwant_followup_ms = 3000;
    p->gossip_retransmission = 3;
    p->opportunistic_graft_ticks = 60;
    p->opportunistic_graft_peers = 2;
    p->flood_publish = true;
    p->do_px = false;
    p->prune_peers = 16;
}

/* Defaults: the spec leaves weights to the application; these make one invalid message
 * push a peer below 0 (out of the mesh), two below the gossip threshold and three below the
 * graylist threshold. P3/P3b are off (weight 0) because their threshold depends on a topic's
 * expected message rate; set them per deployment. */
void gossip_score_params_default(struct gossip_score_params *s)
{
    memset(s, 0, sizeof *s);
    struct gossip_topic_score_params *t = &s->topic;
    t->topic_weight = 1.0;
    t->time_in_mesh_weight = 0.01;
    t->time_in_mesh_quantum_ms = 1000;
    t->time_in_mesh_cap = 300;
    t->first_deliveries_weight = 1.0;
    t->first_deliveries_decay = 0.9;
    t->first_deliveries_cap = 20;
    t->mesh_deliveries_weight = 0;
    t->mesh_deliveries_decay = 0.9;
    t->mesh_deliveries_cap = 20;
    t->mesh_deliveries_threshold = 1;
    t->mesh_deliveries_window_ms = 10;
    t->mesh_deliveries_activation_ms = 30000;
    t->mesh_failure_weight = 0;
    t->mesh_failure_decay = 0.9;
    t->invalid_weight = -10.0;
    t->invalid_decay = 0.9;
    s->topic_score_cap = 50;
    s->app_specific_weight = 1.0;
    s->ip_colocation_weight = 0; /* off: every peer of a test or a LAN may share an address */
    s->ip_colocation_threshold = 1;
    s->behaviour_penalty_weight = -10.0;
    s->behaviour_penalty_threshold = 1;
    s->behaviour_penalty_decay = 0.9;
    s->decay_interval_ms = 1000;
    s->decay_to_zero = 0.01;
    s->gossip_threshold = -10;
    s->publish_threshold = -50;
    s->graylist_threshold = -80;
    s->accept_px_threshold = 10;
    s->opportunistic_graft_threshold = 1;
}

/* ---- topics and peers ---------------------------------------------------------------- */

static int topic_find(const struct gossip *g, const char *name)
{
    for (size_t i = 0; i < g->n_topics; i++)
        if (strcmp(g->topics[i]->name, name) == 0) return (int)i;
    return -1;
}

/* Index of the topic, created if new. MESH_EFULL when the table is full; a topic a peer
 * brings (is_foreign) may not take the last GOSSIP_TOPICS_RESERVED slots, so that peers'
 * subscriptions never keep us from subscribing or publishing. */
static int topic_get(struct gossip *g, const char *name, bool is_foreign)
{
    int i = topic_find(g, name);
    if (i >= 0) return i;
    size_t len = strlen(name);
    if (len == 0 || len > GOSSIP_TOPIC_MAX_LEN) return MESH_EINVAL;
    if (is_foreign && g->n_topics >= GOSSIP_TOPICS_MAX - GOSSIP_TOPICS_RESERVED) {
        g->st.n_topics_refused++;
        return MESH_EFULL;
    }
    if (g->n_topics == GOSSIP_TOPICS_MAX) return MESH_EFULL;
    struct g_topic *t = calloc(1, sizeof *t);
    if (!t) return MESH_ENOMEM;
    memcpy(t->name, name, len + 1);
    g->topics[g->n_topics] = t;
    return (int)g->n_topics++;
}

static struct g_peer *peer_find(const struct gossip *g, const struct peer_id *id)
{
    for (size_t i = 0; i < g->n_peers; i++)
        if (peer_id_equal(&g->peers[i]->id, id)) return g->peers[i];
    return NULL;
}

static struct g_peer *peer_by_serial(const struct gossip *g, uint32_t serial)
{
    for (size_t i = 0; i < g->n_peers; i++)
        if (g->peers[i]->serial == serial) return g->peers[i];
    return NULL;
}

static bool peer_in_topic(const struct g_peer *p, int topic)
{
    for (size_t i = 0; i < p->n_topics; i++)
        if (p->topics[i] == topic) return true;
    return false;
}

static struct g_tstat *tstat(struct g_peer *p, int topic, bool create)
{
    for (size_t i = 0; i < p->n_ts; i++)
        if (p->ts[i].topic == topic) return &p->ts[i];
    if (!create || gossip_grow((void **)&p->ts, &p->cap_ts, p->n_ts + 1, sizeof *p->ts) < 0)
        return NULL;
    struct g_tstat *s = &p->ts[p->n_ts++];
    memset(s, 0, sizeof *s);
    s->topic = (uint16_t)topic;
    return s;
}

static bool set_has(struct g_peer *const *a, size_t n, const struct g_peer *p)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] == p) return true;
    return false;
}

static void set_del(struct g_peer **a, size_t *n, const struct g_peer *p)
{
    for (size_t i = 0; i < *n; i++)
        if (a[i] == p) {
            a[i] = a[--*n];
            return;
        }
}

static int set_add(struct g_peer ***a, size_t *n, size_t *cap, struct g_peer *p)
{
    if (set_has(*a, *n, p)) return 0;
    if (gossip_grow((void **)a, cap, *n + 1, sizeof **a) < 0) return MESH_ENOMEM;
    (*a)[(*n)++] = p;
    return 0;
}

/* ---- scoring (gossipsub-v1.1.md "The Score Function") --------------------------------- */

static double peer_score(struct gossip *g, struct g_peer *p, uint64_t now_ms)
{
    const struct gossip_topic_score_params *tp = &g->sp.topic;
    double s = 0;
    for (size_t i = 0; i < p->n_ts; i++) {
        const struct g_tstat *t = &p->ts[i];
        double ts = 0;
        if (t->in_mesh && tp->time_in_mesh_quantum_ms) { /* P1 */
            double q = (double)(now_ms - t->graft_ms) / (double)tp->time_in_mesh_quantum_ms;
            ts += tp->time_in_mesh_weight * (q < tp->time_in_mesh_cap ? q : tp->time_in_mesh_cap);
        }
        ts += tp->first_deliveries_weight * t->first_deliveries; /* P2 */
        if (t->mesh_active && t->mesh_deliveries < tp->mesh_deliveries_threshold) { /* P3 */
            double deficit = tp->mesh_deliveries_threshold - t->mesh_deliveries;
            ts += tp->mesh_deliveries_weight * deficit * deficit;
        }
        ts += tp->mesh_failure_weight * t->mesh_failure;        /* P3b */
        ts += tp->invalid_weight * t->invalid * t->invalid;     /* P4 */
        s += tp->topic_weight * ts;
    }
    if (g->sp.topic_score_cap > 0 && s > g->sp.topic_score_cap) s = g->sp.topic_score_cap;
    if (g->cfg.app_score) s += g->sp.app_specific_weight * g->cfg.app_score(g->cfg.ud, &p->id);
    if (g->sp.ip_colocation_weight != 0 && p->ip_len) { /* P6 */
        double same = 0;
        for (size_t i = 0; i < g->n_peers; i++)
            same += g->peers[i]->ip_len == p->ip_len &&
                    memcmp(g->peers[i]->ip, p->ip, p->ip_len) == 0;
        if (same > g->sp.ip_colocation_threshold) {
            double ex = same - g->sp.ip_colocation_threshold;
            s += g->sp.ip_colocation_weight * ex * ex;
        }
    }
    if (p->behaviour_penalty > g->sp.behaviour_penalty_threshold) { /* P7 */
        double ex = p->behaviour_penalty - g->sp.behaviour_penalty_threshold;
        s += g->sp.behaviour_penalty_weight * ex * ex;
    }
    return s;
}

static double decay(double v, double f, double zero)
{
    v *= f;
    return v < zero ? 0 : v;
}

static void score_decay(struct gossip *g, uint64_t now_ms)
{
    const struct gossip_topic_score_params *tp = &g->sp.topic;
    double z = g->sp.decay_to_zero;
    for (size_t i = 0; i < g->n_peers; i++) {
        struct g_peer *p = g->peers[i];
        for (size_t j = 0; j < p->n_ts; j++) {
            struct g_tstat *t = &p->ts[j];
            t->first_deliveries = decay(t->first_deliveries, tp->first_deliveries_decay, z);
            t->mesh_deliveries = decay(t->mesh_deliveries, tp->mesh_deliveries_decay, z);
            t->mesh_failure = decay(t->mesh_failure, tp->mesh_failure_decay, z);
            t->invalid = decay(t->invalid, tp->invalid_decay, z);
            if (t->in_mesh && now_ms - t->graft_ms >= tp->mesh_deliveries_activation_ms)
                t->mesh_active = true;
        }
        p->behaviour_penalty = decay(p->behaviour_penalty, g->sp.behaviour_penalty_decay, z);
    }
}

/* Leaving the mesh while P3 is active turns the deficit into a sticky P3b penalty. */
static void mesh_leave_stats(struct gossip *g, struct g_peer *p, int topic)
{
    struct g_tstat *t = tstat(p, topic, false);
    if (!t) return;
    const struct gossip_topic_score_params *tp = &g->sp.topic;
    if (t->mesh_active && t->mesh_deliveries < tp->mesh_deliveries_threshold) {
        double d = tp->mesh_deliveries_threshold - t->mesh_deliveries;
        t->mesh_failure += d * d;
    }
    t->in_mesh = false;
    t->mesh_active = false;
}

static void mesh_join_stats(struct g_peer *p, int topic, uint64_t now_ms)
{
    struct g_tstat *t = tstat(p, topic, true);
    if (!t) return;
    t->in_mesh = true;
    t->mesh_active = false;
    t->graft_ms = now_ms;
}

/* ---- backoff ------------------------------------------------------------------------- */

static bool backoff_active(const struct g_topic *t, const struct peer_id *id, uint64_t now_ms)
{
    for (size_t i = 0; i < t->n_bo; i++)
        if (peer_id_equal(&t->bo[i].id, id)) return t->bo[i].until_ms > now_ms;
    return false;
}

static void backoff_set(struct g_topic *t, const struct peer_id *id, uint64_t until_ms,
                        struct gossip_stats *st)
{
    for (size_t i = 0; i < t->n_bo; i++)
        if (peer_id_equal(&t->bo[i].id, id)) {
            if (t->bo[i].until_ms < until_ms) t->bo[i].until_ms = until_ms;
            return;
        }
    if (t->n_bo >= GOSSIP_BACKOFF_MAX) { /* the one due soonest makes room */
        size_t soon = 0;
        for (size_t i = 1; i < t->n_bo; i++)
            if (t->bo[i].until_ms < t->bo[soon].until_ms) soon = i;
        t->bo[soon] = t->bo[--t->n_bo];
        if (st) st->n_backoff_evicted++;
    }
    if (gossip_grow((void **)&t->bo, &t->cap_bo, t->n_bo + 1, sizeof *t->bo) < 0) return;
    t->bo[t->n_bo++] = (struct g_backoff){*id, until_ms};
}

/* ---- mesh membership ----------------------------------------------------------------- */

static void mesh_add(struct gossip *g, struct g_topic *t, int topic, struct g_peer *p,
                     uint64_t now_ms, bool send_graft)
{
    (void)g;
    if (set_add(&t->mesh, &t->n_mesh, &t->cap_mesh, p) < 0) return;
    mesh_join_stats(p, topic, now_ms);
    if (send_graft) gossip_out_graft(p, topic);
}

/* Up to prune_peers other topic peers with a non-negative score, to offer p in a PRUNE
 * (gossipsub-v1.1 "Peer Exchange"; only to peers that are not misbehaving themselves). */
static size_t px_pick(struct gossip *g, int topic, const struct g_peer *p, uint64_t now_ms,
                      struct peer_id *out, size_t cap)
{
    size_t n = 0;
    if (!g->p.do_px || peer_score(g, (struct g_peer *)p, now_ms) < 0) return 0;
    for (size_t i = 0; i < g->n_peers && n < cap; i++) {
        struct g_peer *q = g->peers[i];
        if (q == p || !peer_in_topic(q, topic) || peer_score(g, q, now_ms) < 0) continue;
        out[n++] = q->id;
    }
    return n;
}

static void mesh_remove(struct gossip *g, struct g_topic *t, int topic, struct g_peer *p,
                        uint64_t now_ms, uint64_t backoff_ms, bool send_prune)
{
    set_del(t->mesh, &t->n_mesh, p);
    mesh_leave_stats(g, p, topic);
    backoff_set(t, &p->id, now_ms + backoff_ms, &g->st);
    if (send_prune) gossip_out_prune(p, topic, backoff_ms, NULL, 0);
}

/* Prune because the mesh is full (not the peer's fault): offer PX. */
static void mesh_remove_px(struct gossip *g, struct g_topic *t, int topic, struct g_peer *p,
                           uint64_t now_ms)
{
    struct peer_id px[32];
    size_t cap = g->p.prune_peers <= 0 ? 0 : g->p.prune_peers < 32 ? (size_t)g->p.prune_peers : 32;
    size_t n = px_pick(g, topic, p, now_ms, px, cap);
    set_del(t->mesh, &t->n_mesh, p);
    mesh_leave_stats(g, p, topic);
    backoff_set(t, &p->id, now_ms + g->p.prune_backoff_ms, &g->st);
    gossip_out_prune(p, topic, g->p.prune_backoff_ms, px, n);
}

/* Peers subscribed to topic that may join its mesh: not in it, not backed off, score >= min. */
static size_t mesh_candidates(struct gossip *g, struct g_topic *t, int topic, uint64_t now_ms,
                              double min_score, struct g_peer **out)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n_peers; i++) {
        struct g_peer *p = g->peers[i];
        if (!peer_in_topic(p, topic) || set_has(t->mesh, t->n_mesh, p)) continue;
        if (backoff_active(t, &p->id, now_ms)) continue;
        if (peer_score(g, p, now_ms) < min_score) continue;
        out[n++] = p;
    }
    return n;
}

/* ---- messages ------------------------------------------------------------------------ */

static struct g_seen *seen_lookup(const struct gossip *g, const uint8_t *id, size_t len)
{
    if (!g->seen_cap) return NULL;
    uint64_t h = hash_bytes(id, len);
    for (size_t i = h & (g->seen_cap - 1);; i = (i + 1) & (g->seen_cap - 1)) {
        struct g_seen *s = &g->seen[i];
        if (!s->len) return NULL;
        if (s->h == h && s->len == len && memcmp(s->id, id, len) == 0) return s;
    }
}

static void seen_insert_raw(struct g_seen *tab, size_t cap, const struct g_seen *e)
{
    for (size_t i = e->h & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!tab[i].len) {
            tab[i] = *e;
            return;
        }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The first_ms before which ids are forgotten so that at most keep live ones remain (the
 * oldest go first); 0 when all fit. */
static uint64_t seen_cutoff(const struct gossip *g, uint64_t now_ms, size_t live, size_t keep)
{
    if (live <= keep) return 0;
    uint64_t *t = malloc(live * sizeof *t);
    if (!t) return UINT64_MAX; /* no memory: forget them all rather than grow */
    size_t n = 0;
    for (size_t i = 0; i < g->seen_cap; i++)
        if (g->seen[i].len && g->seen[i].expire_ms > now_ms) t[n++] = g->seen[i].first_ms;
    qsort(t, n, sizeof *t, cmp_u64);
    uint64_t cut = t[n - keep];
    free(t);
    return cut;
}

/* Rebuilds the table without expired ids, at a size that keeps the load under one half.
 * Beyond GOSSIP_SEEN_MAX live ids the oldest are forgotten early, down to half the cap (a
 * message seen again after that is delivered again: better than refusing new ones). */
static int seen_rebuild(struct gossip *g, uint64_t now_ms, size_t extra)
{
    size_t live = 0;
    for (size_t i = 0; i < g->seen_cap; i++)
        live += g->seen[i].len && g->seen[i].expire_ms > now_ms;
    uint64_t cut = 0;
    size_t at_cut = SIZE_MAX; /* ids with first_ms == cut that may stay (ties) */
    if (live + extra > GOSSIP_SEEN_MAX) {
        size_t keep = GOSSIP_SEEN_MAX / 2, newer = 0;
        cut = seen_cutoff(g, now_ms, live, keep);
        for (size_t i = 0; i < g->seen_cap; i++)
            newer += g->seen[i].len && g->seen[i].expire_ms > now_ms && g->seen[i].first_ms > cut;
        at_cut = newer < keep ? keep - newer : 0;
        g->st.n_seen_evicted += live - (newer + at_cut < live ? newer + at_cut : live);
        live = newer + at_cut < live ? newer + at_cut : live;
    }
    size_t cap = 256;
    while (cap < (live + extra) * 2) cap *= 2;
    struct g_seen *tab = calloc(cap, sizeof *tab);
    if (!tab) return MESH_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < g->seen_cap; i++) {
        const struct g_seen *e = &g->seen[i];
        if (!e->len || e->expire_ms <= now_ms || e->first_ms < cut) continue;
        if (e->first_ms == cut && at_cut-- == 0) {
            at_cut = 0;
            continue;
        }
        seen_insert_raw(tab, cap, e);
        n++;
    }
    free(g->seen);
    g->seen = tab;
    g->seen_cap = cap;
    g->seen_n = n;
    return 0;
}

static int seen_add(struct gossip *g, uint64_t now_ms, const uint8_t *id, size_t len)
{
    if ((g->seen_n + 1) * 2 > g->seen_cap && seen_rebuild(g, now_ms, 64) < 0) return MESH_ENOMEM;
    struct g_seen e;
    memset(&e, 0, sizeof e);
    e.h = hash_bytes(id, len);
    e.len = (uint8_t)len;
    memcpy(e.id, id, len);
    e.first_ms = now_ms;
    e.expire_ms = now_ms + g->p.seen_ttl_ms;
    seen_insert_raw(g->seen, g->seen_cap, &e);
    g->seen_n++;
    return 0;
}

static struct g_msg *mcache_get(const struct gossip *g, const uint8_t *id, size_t len)
{
    for (int w = 0; w < g->p.history_length; w++)
        for (size_t i = 0; i < g->win[w].n; i++) {
            struct g_msg *m = g->win[w].m[i];
            if (m->id_len == len && memcmp(m->id, id, len) == 0) return m;
        }
    return NULL;
}

/* Drops the oldest cached message (the first of the oldest non-empty window). */
static void mcache_evict_oldest(struct gossip *g)
{
    for (int w = g->p.history_length - 1; w >= 0; w--) {
        struct g_window *win = &g->win[w];
        if (!win->n) continue;
        struct g_msg *m = win->m[0];
        memmove(win->m, win->m + 1, (win->n - 1) * sizeof *win->m);
        win->n--;
        g->mcache_n--;
        g->mcache_bytes -= m->raw_len;
        gossip_msg_unref(m);
        g->st.n_mcache_evicted++;
        return;
    }
}

/* Caches m for IWANT; beyond GOSSIP_MCACHE_MAX messages or GOSSIP_MCACHE_BYTES_MAX bytes the
 * oldest make room (the cache serves recent gossip). */
static void mcache_put(struct gossip *g, struct g_msg *m)
{
    struct g_window *w = &g->win[0];
    while (g->mcache_n && (g->mcache_n >= GOSSIP_MCACHE_MAX ||
                           g->mcache_bytes + m->raw_len > GOSSIP_MCACHE_BYTES_MAX))
        mcache_evict_oldest(g);
    if (gossip_grow((void **)&w->m, &w->cap, w->n + 1, sizeof *w->m) < 0) return;
    m->refs++;
    w->m[w->n++] = m;
    g->mcache_n++;
    g->mcache_bytes += m->raw_len;
}

static void mcache_shift(struct gossip *g)
{
    int last = g->p.history_length - 1;
    for (size_t i = 0; i < g->win[last].n; i++) {
        g->mcache_n--;
        g->mcache_bytes -= g->win[last].m[i]->raw_len;
        gossip_msg_unref(g->win[last].m[i]);
    }
    struct g_window old = g->win[last];
    old.n = 0;
    memmove(&g->win[1], &g->win[0], (size_t)last * sizeof g->win[0]);
    g->win[0] = old;
}

/* Builds the message id from || seqno. */
static size_t msg_id(const uint8_t *from, size_t from_len, const uint8_t *seq, size_t seq_len,
                     uint8_t *out)
{
    memcpy(out, from, from_len);
    memcpy(out + from_len, seq, seq_len);
    return from_len + seq_len;
}

/* Verifies a message per StrictSign: from is a peer ID, seqno is 8 bytes, the signature is
 * Ed25519 by from's key (inlined in an identity peer ID, or in `key` matching from). */
static int msg_verify(const Pubsub__Pb__Message *m, struct peer_id *from)
{
    const uint8_t *pub;
    size_t pub_len;
    struct peer_id kid;
    if (!m->has_from || peer_id_from_bytes(m->from.data, m->from.len, from) < 0)
        return MESH_EPROTO;
    if (!m->has_seqno || m->seqno.len != 8) return MESH_EPROTO;
    if (!m->has_signature || m->signature.len != IDENTITY_SIG_LEN) return MESH_ECRYPTO;
    if (!m->topic || strlen(m->topic) == 0 || strlen(m->topic) > GOSSIP_TOPIC_MAX_LEN)
        return MESH_EPROTO;
    if (m->has_data && m->data.len > GOSSIP_DATA_MAX_LEN) return MESH_EPROTO;
    if (m->has_key) {
        if (peer_id_from_pubkey_proto(m->key.data, m->key.len, &kid) < 0 ||
            !peer_id_equal(&kid, from))
            return MESH_ECRYPTO;
        pub = m->key.data;
        pub_len = m->key.len;
    } else if (peer_id_pubkey_proto(from, &pub, &pub_len) < 0) {
        return MESH_ECRYPTO;
    }
    Pubsub__Pb__Message u = *m;
    u.has_signature = 0;
    u.has_key = 0;
    size_t pre = sizeof GOSSIP_SIGN_PREFIX - 1;
    size_t n = pubsub__pb__message__get_packed_size(&u);
    uint8_t *b = malloc(pre + n);
    if (!b) return MESH_ENOMEM;
    memcpy(b, GOSSIP_SIGN_PREFIX, pre);
    pubsub__pb__message__pack(&u, b + pre);
    int rc = identity_verify(pub, pub_len, b, pre + n, m->signature.data, m->signature.len);
    free(b);
    return rc < 0 ? MESH_ECRYPTO : 0;
}

static struct g_msg *msg_new(const uint8_t *id, size_t id_len, int topic,
                             const Pubsub__Pb__Message *m)
{
    struct g_msg *gm = calloc(1, sizeof *gm);
    if (!gm) return NULL;
    gm->raw_len = pubsub__pb__message__get_packed_size(m);
    gm->raw = malloc(gm->raw_len ? gm->raw_len : 1);
    if (!gm->raw) {
        free(gm);
        return NULL;
    }
    pubsub__pb__message__pack(m, gm->raw);
    gm->refs = 1;
    memcpy(gm->id, id, id_len);
    gm->id_len = id_len;
    gm->topic = (uint16_t)topic;
    return gm;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static void deliver(struct gossip *g, const struct g_msg *gm, const Pubsub__Pb__Message *m,
                    const struct peer_id *from, const struct peer_id *source)
{
    if (!g->cfg.on_message || !g->topics[gm->topic]->subscribed) return;
    struct gossip_msg dm = {g->topics[gm->topic]->name, from, source, m->data.data,
                            m->has_data ? m->data.len : 0, be64(m->seqno.data), gm->id,
                            gm->id_len};
    g->st.n_delivered++;
    g->cfg.on_message(g->cfg.ud, &dm);
}

/* Forwards to the topic's mesh (we subscribe) or, for our own messages, to the flood /
 * mesh / fanout set of gossipsub-v1.1 "Flood Publishing". */
static void forward(struct gossip *g, uint64_t now_ms, struct g_msg *gm, const struct g_peer *src,
                    const struct peer_id *author, bool own)
{
    struct g_topic *t = g->topics[gm->topic];
    if (own && g->p.flood_publish) {
        for (size_t i = 0; i < g->n_peers; i++) {
            struct g_peer *p = g->peers[i];
            if (peer_in_topic(p, gm->topic) &&
                peer_score(g, p, now_ms) >= g->sp.publish_threshold)
                gossip_out_msg(p, gm);
        }
        return;
    }
    struct g_peer **set = t->subscribed ? t->mesh : t->fanout;
    size_t n = t->subscribed ? t->n_mesh : t->n_fanout;
    for (size_t i = 0; i < n; i++) {
        struct g_peer *p = set[i];
        if (p == src || peer_id_equal(&p->id, author)) continue;
        gossip_out_msg(p, gm);
    }
}

static void promise_clear(struct gossip *g, const uint8_t *id, size_t len)
{
    for (size_t i = 0; i < g->n_prom;) {
        if (g->prom[i].id.len == len && memcmp(g->prom[i].id.b, id, len) == 0)
            g->prom[i] = g->prom[--g->n_prom];
        else
            i++;
    }
}

/* One message from an RPC's publish list (gossipsub-v1.0 "Message processing"). */
static void handle_message(struct gossip *g, uint64_t now_ms, struct g_peer *src,
                           const Pubsub__Pb__Message *m)
{
    uint8_t id[GOSSIP_MSG_ID_MAX_LEN];
    struct peer_id from;
    int topic = m->topic ? topic_find(g, m->topic) : -1;
    if (topic < 0 || !g->topics[topic]->subscribed) return; /* not ours: never forwarded */
    struct g_tstat *ts = tstat(src, topic, true);
    if (!m->has_from || m->from.len > PEER_ID_MAX_LEN || !m->has_seqno || m->seqno.len != 8) {
        g->st.n_invalid++;
        if (ts) ts->invalid += 1; /* P4 */
        return;
    }
    size_t id_len = msg_id(m->from.data, m->from.len, m->seqno.data, 8, id);
    struct g_seen *s = seen_lookup(g, id, id_len);
    if (s) {
        g->st.n_duplicates++;
        if (ts && ts->in_mesh && now_ms <= s->first_ms + g->sp.topic.mesh_deliveries_window_ms &&
            ts->mesh_deliveries < g->sp.topic.mesh_deliveries_cap)
            ts->mesh_deliveries += 1; /* P3 counts near-first mesh deliveries */
        return;
    }
    if (seen_add(g, now_ms, id, id_len) < 0) return;
    promise_clear(g, id, id_len);
    int rc = msg_verify(m, &from);
    if (rc == MESH_ENOMEM) return;
    if (rc == 0 && peer_id_equal(&from, &g->ident.id)) return; /* our own, echoed back */
    struct gossip_msg vm = {m->topic, &from, &src->id, m->data.data, m->has_data ? m->data.len : 0,
                            be64(m->seqno.data), id, id_len};
    int verdict = rc < 0 ? GOSSIP_REJECT
                 : g->cfg.validate ? g->cfg.validate(g->cfg.ud, &vm)
                                   : GOSSIP_ACCEPT;
    if (verdict == GOSSIP_IGNORE) return;
    if (verdict != GOSSIP_ACCEPT) {
        g->st.n_invalid++;
        if (ts) ts->invalid += 1; /* P4 */
        return;
    }
    if (ts) {
        ts->first_deliveries += 1; /* P2 */
        if (ts->first_deliveries > g->sp.topic.first_deliveries_cap)
            ts->first_deliveries = g->sp.topic.first_deliveries_cap;
        if (ts->in_mesh && ts->mesh_deliveries < g->sp.topic.mesh_deliveries_cap)
            ts->mesh_deliveries += 1; /* P3 */
    }
    struct g_msg *gm = msg_new(id, id_len, topic, m);
    if (!gm) return;
    mcache_put(g, gm);
    deliver(g, gm, m, &from, &src->id);
    forward(g, now_ms, gm, src, &from, false);
    gossip_msg_unref(gm);
}

/* ---- control ------------------------------------------------------------------------- */

static void handle_ihave(struct gossip *g, uint64_t now_ms, struct g_peer *p,
                         const Pubsub__Pb__ControlIHave *ih)
{
    int topic = ih->topicid ? topic_find(g, ih->topicid) : -1;
    if (topic < 0 || !g->topics[topic]->subscribed) return;
    if (++p->n_ihave_rpcs > g->p.max_ihave_messages) return;
    for (size_t i = 0; i < ih->n_messageids; i++) {
        const ProtobufCBinaryData *id = &ih->messageids[i];
        if (p->n_ihave_asked >= g->p.max_ihave_length || g->n_prom >= PROMISES_MAX) return;
        if (id->len == 0 || id->len > GOSSIP_MSG_ID_MAX_LEN) continue;
        if (seen_lookup(g, id->data, id->len)) continue;
        bool asked = false;
        for (size_t j = 0; j < g->n_prom && !asked; j++)
            asked = g->prom[j].id.len == id->len && memcmp(g->prom[j].id.b, id->data, id->len) == 0;
        if (asked) continue;
        gossip_out_iwant(p, id->data, id->len);
        p->n_ihave_asked++;
        g->st.n_iwant_sent++;
        if (gossip_grow((void **)&g->prom, &g->cap_prom, g->n_prom + 1, sizeof *g->prom) == 0) {
            struct g_promise *pr = &g->prom[g->n_prom++];
            pr->id.len = (uint8_t)id->len;
            memcpy(pr->id.b, id->data, id->len);
            pr->peer = p->serial;
            pr->deadline_ms = now_ms + g->p.iwant_followup_ms;
        }
    }
}

static void handle_iwant(struct gossip *g, struct g_peer *p, const Pubsub__Pb__ControlIWant *iw)
{
    for (size_t i = 0; i < iw->n_messageids; i++) {
        struct g_msg *m = mcache_get(g, iw->messageids[i].data, iw->messageids[i].len);
        if (!m) continue;
        size_t k = 0;
        while (k < m->n_served && m->served_peer[k] != p->serial) k++;
        if (k == m->n_served) {
            if (k == SERVED_MAX) continue;
            m->served_peer[k] = p->serial;
            m->served_n[k] = 0;
            m->n_served++;
        }
        if (m->served_n[k] >= g->p.gossip_retransmission) continue;
        m->served_n[k]++;
        gossip_out_msg(p, m);
        g->st.n_iwant_served++;
    }
}

static void handle_graft(struct gossip *g, uint64_t now_ms, struct g_peer *p, const char *name)
{
    int topic = name ? topic_find(g, name) : -1;
    if (topic < 0) return; /* unknown topic: ignore, as go-libp2p-pubsub does */
    struct g_topic *t = g->topics[topic];
    if (!t->subscribed) {
        gossip_out_prune(p, topic, g->p.prune_backoff_ms, NULL, 0);
        return;
    }
    if (set_has(t->mesh, t->n_mesh, p)) return;
    if (backoff_active(t, &p->id, now_ms)) {
        p->behaviour_penalty += 1; /* P7: GRAFT during backoff */
        mesh_remove(g, t, topic, p, now_ms, g->p.prune_backoff_ms, true);
        return;
    }
    if (peer_score(g, p, now_ms) < 0) {
        mesh_remove(g, t, topic, p, now_ms, g->p.prune_backoff_ms, true);
        return;
    }
    if (t->n_mesh >= (size_t)g->p.d_hi && !p->outbound) {
        mesh_remove_px(g, t, topic, p, now_ms);
        return;
    }
    mesh_add(g, t, topic, p, now_ms, false);
}

static void handle_prune(struct gossip *g, uint64_t now_ms, struct g_peer *p,
                         const Pubsub__Pb__ControlPrune *pr)
{
    int topic = pr->topicid ? topic_find(g, pr->topicid) : -1;
    if (topic < 0) return;
    struct g_topic *t = g->topics[topic];
    uint64_t bo = g->p.prune_backoff_ms;
    if (pr->has_backoff && pr->backoff > 0)
        bo = pr->backoff > 24 * 3600 ? 24 * 3600 * 1000ull : pr->backoff * 1000;
    set_del(t->mesh, &t->n_mesh, p);
    mesh_leave_stats(g, p, topic);
    backoff_set(t, &p->id, now_ms + bo, &g->st);
    /* Peer exchange: only from peers we trust enough (accept_px_threshold). */
    if (pr->n_peers == 0 || peer_score(g, p, now_ms) < g->sp.accept_px_threshold) return;
    for (size_t i = 0; i < pr->n_peers && g->n_px < GOSSIP_PX_QUEUE; i++) {
        struct peer_id id;
        const Pubsub__Pb__PeerInfo *pi = pr->peers[i];
        if (!pi->has_peerid || peer_id_from_bytes(pi->peerid.data, pi->peerid.len, &id) < 0)
            continue;
        if (peer_id_equal(&id, &g->ident.id) || peer_find(g, &id)) continue;
        bool dup = false;
        for (size_t k = 0; k < g->n_px && !dup; k++) dup = peer_id_equal(&g->px[k], &id);
        if (!dup) g->px[g->n_px++] = id;
    }
}

int gossip_next_px(struct gossip *g, struct peer_id *out)
{
    if (g->n_px == 0) return MESH_ENOTFOUND;
    *out = g->px[0];
    memmove(g->px, g->px + 1, (g->n_px - 1) * sizeof *g->px);
    g->n_px--;
    return 0;
}

static void handle_subscription(struct gossip *g, struct g_peer *p,
                                const Pubsub__Pb__RPC__SubOpts *so, uint64_t now_ms)
{
    if (!so->topicid) return;
    int topic = topic_find(g, so->topicid);
    if (topic < 0 && so->subscribe && p->n_topics >= GOSSIP_PEER_TOPICS_MAX) {
        g->st.n_peer_topics_refused++; /* checked first: a refused one creates no topic */
        return;
    }
    if (topic < 0 && so->subscribe) topic = topic_get(g, so->topicid, true);
    if (topic < 0) return;
    bool has = peer_in_topic(p, topic);
    if (so->subscribe && !has && p->n_topics >= GOSSIP_PEER_TOPICS_MAX) {
        g->st.n_peer_topics_refused++;
    } else if (so->subscribe && !has) {
        p->topics[p->n_topics++] = (uint16_t)topic;
    } else if (!so->subscribe && has) {
        for (size_t i = 0; i < p->n_topics; i++)
            if (p->topics[i] == topic) p->topics[i] = p->topics[--p->n_topics];
        struct g_topic *t = g->topics[topic];
        if (set_has(t->mesh, t->n_mesh, p)) {
            set_del(t->mesh, &t->n_mesh, p);
            mesh_leave_stats(g, p, topic);
        }
        set_del(t->fanout, &t->n_fanout, p);
    }
    (void)now_ms;
}

int gossip_on_rpc(struct gossip *g, uint64_t now_ms, const struct peer_id *peer,
                  const uint8_t *body, size_t body_len)
{
    struct g_peer *p = peer_find(g, peer);
    Pubsub__Pb__RPC *r;
    if (!p) return MESH_ENOTFOUND;
    /* Graylisted peers are ignored whole (gossipsub-v1.1 "Score Thresholds"). */
    if (peer_score(g, p, now_ms) < g->sp.graylist_threshold) {
        g->st.n_graylisted++;
        return 0;
    }
    int rc = gossip_rpc_decode(body, body_len, &r);
    if (rc < 0) {
        g->st.n_rpc_errors++;
        p->behaviour_penalty += 1; /* malformed RPCs are misbehaviour */
        return rc;
    }
    for (size_t i = 0; i < r->n_subscriptions; i++)
        handle_subscription(g, p, r->subscriptions[i], now_ms);
    for (size_t i = 0; i < r->n_publish; i++) handle_message(g, now_ms, p, r->publish[i]);
    const Pubsub__Pb__ControlMessage *c = r->control;
    if (c) {
        bool gossip_ok = peer_score(g, p, now_ms) >= g->sp.gossip_threshold;
        for (size_t i = 0; gossip_ok && i < c->n_ihave; i++) handle_ihave(g, now_ms, p, c->ihave[i]);
        for (size_t i = 0; gossip_ok && i < c->n_iwant; i++) handle_iwant(g, p, c->iwant[i]);
        for (size_t i = 0; i < c->n_graft; i++) handle_graft(g, now_ms, p, c->graft[i]->topicid);
        for (size_t i = 0; i < c->n_prune; i++) handle_prune(g, now_ms, p, c->prune[i]);
    }
    pubsub__pb__rpc__free_unpacked(r, NULL);
    return 0;
}

/* ---- local operations ---------------------------------------------------------------- */

int gossip_peer_add(struct gossip *g, uint64_t now_ms, const struct peer_id *id, bool outbound)
{
    (void)now_ms;
    if (peer_find(g, id)) return 0;
    if (g->n_peers >= GOSSIP_PEERS_MAX) {
        g->st.n_peers_refused++;
        return MESH_EFULL;
    }
    if (gossip_grow((void **)&g->peers, &g->cap_peers, g->n_peers + 1, sizeof *g->peers) < 0)
        return MESH_ENOMEM;
    struct g_peer *p = calloc(1, sizeof *p);
    if (!p) return MESH_ENOMEM;
    p->id = *id;
    p->serial = ++g->next_serial;
    p->outbound = outbound;
    g->peers[g->n_peers++] = p;
    for (size_t i = 0; i < g->n_topics; i++)
        if (g->topics[i]->subscribed) gossip_out_sub(p, (int)i, true);
    return 0;
}

void gossip_peer_set_ip(struct gossip *g, const struct peer_id *peer, const uint8_t *ip,
                        size_t ip_len)
{
    struct g_peer *p = peer_find(g, peer);
    if (!p || (ip_len != 4 && ip_len != 16)) return;
    memcpy(p->ip, ip, ip_len);
    p->ip_len = ip_len;
}

void gossip_peer_remove(struct gossip *g, uint64_t now_ms, const struct peer_id *id)
{
    (void)now_ms;
    for (size_t i = 0; i < g->n_peers; i++) {
        struct g_peer *p = g->peers[i];
        if (!peer_id_equal(&p->id, id)) continue;
        for (size_t t = 0; t < g->n_topics; t++) {
            set_del(g->topics[t]->mesh, &g->topics[t]->n_mesh, p);
            set_del(g->topics[t]->fanout, &g->topics[t]->n_fanout, p);
        }
        gossip_pending_free(&p->out);
        free(p->ts);
        free(p);
        g->peers[i] = g->peers[--g->n_peers];
        return;
    }
}

int gossip_subscribe(struct gossip *g, uint64_t now_ms, const char *name)
{
    int topic = topic_get(g, name, false);
    if (topic < 0) return topic;
    struct g_topic *t = g->topics[topic];
    if (t->subscribed) return 0;
    t->subscribed = true;
    for (size_t i = 0; i < g->n_peers; i++) gossip_out_sub(g->peers[i], topic, true);
    /* Join: fanout peers first, then other topic peers, up to D (gossipsub-v1.0 "JOIN"). */
    for (size_t i = 0; i < t->n_fanout && t->n_mesh < (size_t)g->p.d; i++)
        if (peer_score(g, t->fanout[i], now_ms) >= 0 &&
            !backoff_active(t, &t->fanout[i]->id, now_ms))
            mesh_add(g, t, topic, t->fanout[i], now_ms, true);
    t->n_fanout = 0;
    struct g_peer **cand = malloc((g->n_peers + 1) * sizeof *cand);
    if (!cand) return MESH_ENOMEM;
    size_t n = mesh_candidates(g, t, topic, now_ms, 0, cand);
    shuffle(g, cand, n);
    for (size_t i = 0; i < n && t->n_mesh < (size_t)g->p.d; i++)
        mesh_add(g, t, topic, cand[i], now_ms, true);
    free(cand);
    return 0;
}

int gossip_unsubscribe(struct gossip *g, uint64_t now_ms, const char *name)
{
    int topic = topic_find(g, name);
    if (topic < 0 || !g->topics[topic]->subscribed) return 0;
    struct g_topic *t = g->topics[topic];
    t->subscribed = false;
    for (size_t i = 0; i < g->n_peers; i++) gossip_out_sub(g->peers[i], topic, false);
    while (t->n_mesh)
        mesh_remove(g, t, topic, t->mesh[0], now_ms, g->p.unsubscribe_backoff_ms, true);
    return 0;
}

int gossip_publish(struct gossip *g, uint64_t now_ms, const char *name, const uint8_t *data,
                   size_t data_len, uint8_t *id_out, size_t *id_len_out)
{
    Pubsub__Pb__Message m = PUBSUB__PB__MESSAGE__INIT;
    uint8_t seq[8], id[GOSSIP_MSG_ID_MAX_LEN], sig[IDENTITY_SIG_LEN];
    if (data_len > GOSSIP_DATA_MAX_LEN) return MESH_EINVAL;
    int topic = topic_get(g, name, false);
    if (topic < 0) return topic;
    struct g_topic *t = g->topics[topic];
    uint64_t s = ++g->seqno;
    for (int i = 0; i < 8; i++) seq[i] = (uint8_t)(s >> (56 - 8 * i));
    m.has_from = 1;
    m.from = (ProtobufCBinaryData){g->ident.id.len, g->ident.id.bytes};
    m.has_data = 1;
    m.data = (ProtobufCBinaryData){data_len, (uint8_t *)data};
    m.has_seqno = 1;
    m.seqno = (ProtobufCBinaryData){8, seq};
    m.topic = t->name;
    /* StrictSign: sign "libp2p-pubsub:" || marshal(message without signature and key). */
    size_t pre = sizeof GOSSIP_SIGN_PREFIX - 1, n = pubsub__pb__message__get_packed_size(&m);
    uint8_t *b = malloc(pre + n);
    if (!b) return MESH_ENOMEM;
    memcpy(b, GOSSIP_SIGN_PREFIX, pre);
    pubsub__pb__message__pack(&m, b + pre);
    identity_sign(&g->ident, b, pre + n, sig);
    free(b);
    m.has_signature = 1;
    m.signature = (ProtobufCBinaryData){IDENTITY_SIG_LEN, sig};
    size_t id_len = msg_id(g->ident.id.bytes, g->ident.id.len, seq, 8, id);
    struct g_msg *gm = msg_new(id, id_len, topic, &m);
    if (!gm) return MESH_ENOMEM;
    seen_add(g, now_ms, id, id_len);
    mcache_put(g, gm);
    if (!t->subscribed) {
        /* Fanout (gossipsub-v1.0 "Message Publishing" for topics we are not in). */
        t->fanout_last_pub_ms = now_ms;
        if (t->n_fanout == 0) {
            struct g_peer **cand = malloc((g->n_peers + 1) * sizeof *cand);
            if (cand) {
                size_t nc = 0;
                for (size_t i = 0; i < g->n_peers; i++)
                    if (peer_in_topic(g->peers[i], topic) &&
                        peer_score(g, g->peers[i], now_ms) >= g->sp.publish_threshold)
                        cand[nc++] = g->peers[i];
                shuffle(g, cand, nc);
                for (size_t i = 0; i < nc && i < (size_t)g->p.d; i++)
                    set_add(&t->fanout, &t->n_fanout, &t->cap_fanout, cand[i]);
                free(cand);
            }
        }
    }
    deliver(g, gm, &m, &g->ident.id, &g->ident.id);
    forward(g, now_ms, gm, NULL, &g->ident.id, true);
    gossip_msg_unref(gm);
    if (id_out) memcpy(id_out, id, id_len);
    if (id_len_out) *id_len_out = id_len;
    return 0;
}

/* ---- heartbeat (gossipsub-v1.0 "Heartbeat", v1.1 additions) --------------------------- */

static int cmp_score_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

struct scored {
    double s;
    struct g_peer *p;
};

/* Keeps D of an oversubscribed mesh: the Dscore best by score, the rest at random, with at
 * least Dout outbound peers; prunes the others. */
static void mesh_trim(struct gossip *g, struct g_topic *t, int topic, uint64_t now_ms)
{
    size_t n = t->n_mesh, keep_n = 0;
    struct scored *sc = malloc(n * sizeof *sc);
    struct g_peer **keep = malloc(n * sizeof *keep);
    if (!sc || !keep) goto done;
    shuffle(g, t->mesh, n);
    for (size_t i = 0; i < n; i++) sc[i] = (struct scored){peer_score(g, t->mesh[i], now_ms), t->mesh[i]};
    qsort(sc, n, sizeof *sc, cmp_score_desc);
    for (size_t i = 0; i < n && keep_n < (size_t)g->p.d_score; i++) keep[keep_n++] = sc[i].p;
    /* random rest */
    for (size_t i = 0; i < n && keep_n < (size_t)g->p.d; i++)
        if (!set_has(keep, keep_n, t->mesh[i])) keep[keep_n++] = t->mesh[i];
    /* outbound quota: swap in outbound peers for inbound non-score-picked ones */
    size_t n_out = 0;
    for (size_t i = 0; i < keep_n; i++) n_out += keep[i]->outbound;
    for (size_t i = 0; i < n && n_out < (size_t)g->p.d_out; i++) {
        struct g_peer *p = t->mesh[i];
        if (!p->outbound || set_has(keep, keep_n, p)) continue;
        for (size_t j = keep_n; j-- > (size_t)g->p.d_score;) {
            if (keep[j]->outbound) continue;
            keep[j] = p;
            n_out++;
            break;
        }
    }
    for (size_t i = 0; i < n;) {
        struct g_peer *p = t->mesh[i];
        if (set_has(keep, keep_n, p)) {
            i++;
            continue;
        }
        mesh_remove_px(g, t, topic, p, now_ms);
        n = t->n_mesh;
    }
done:
    free(sc);
    free(keep);
}

static void emit_gossip(struct gossip *g, struct g_topic *t, int topic, uint64_t now_ms,
                        struct g_peer **cand)
{
    size_t n_ids = 0;
    for (int w = 0; w < g->p.history_gossip && w < g->p.history_length; w++)
        for (size_t i = 0; i < g->win[w].n; i++) n_ids += g->win[w].m[i]->topic == topic;
    if (n_ids == 0) return;
    size_t n = 0;
    for (size_t i = 0; i < g->n_peers; i++) {
        struct g_peer *p = g->peers[i];
        if (!peer_in_topic(p, topic) || set_has(t->mesh, t->n_mesh, p) ||
            set_has(t->fanout, t->n_fanout, p))
            continue;
        if (peer_score(g, p, now_ms) < g->sp.gossip_threshold) continue;
        cand[n++] = p;
    }
    size_t target = (size_t)g->p.d_lazy, f = (size_t)(g->p.gossip_factor * (double)n);
    if (f > target) target = f;
    shuffle(g, cand, n);
    for (size_t k = 0; k < n && k < target; k++) {
        size_t sent = 0;
        for (int w = 0; w < g->p.history_gossip && w < g->p.history_length; w++)
            for (size_t i = 0; i < g->win[w].n && sent < (size_t)g->p.max_ihave_length; i++)
                if (g->win[w].m[i]->topic == topic) {
                    gossip_out_ihave(cand[k], topic, g->win[w].m[i]);
                    sent++;
                }
    }
}

static void heartbeat_topic(struct gossip *g, int topic, uint64_t now_ms, struct g_peer **cand)
{
    struct g_topic *t = g->topics[topic];
    /* Negative-score peers leave the mesh. */
    for (size_t i = 0; i < t->n_mesh;) {
        if (peer_score(g, t->mesh[i], now_ms) < 0)
            mesh_remove(g, t, topic, t->mesh[i], now_ms, g->p.prune_backoff_ms, true);
        else
            i++;
    }
    if (t->n_mesh < (size_t)g->p.d_lo) {
        size_t n = mesh_candidates(g, t, topic, now_ms, 0, cand);
        shuffle(g, cand, n);
        for (size_t i = 0; i < n && t->n_mesh < (size_t)g->p.d; i++)
            mesh_add(g, t, topic, cand[i], now_ms, true);
    }
    if (t->n_mesh > (size_t)g->p.d_hi) mesh_trim(g, t, topic, now_ms);
    if (t->n_mesh >= (size_t)g->p.d_lo) {
        size_t n_out = 0;
        for (size_t i = 0; i < t->n_mesh; i++) n_out += t->mesh[i]->outbound;
        if (n_out < (size_t)g->p.d_out) {
            size_t n = mesh_candidates(g, t, topic, now_ms, 0, cand);
            shuffle(g, cand, n);
            for (size_t i = 0; i < n && n_out < (size_t)g->p.d_out; i++)
                if (cand[i]->outbound) {
                    mesh_add(g, t, topic, cand[i], now_ms, true);
                    n_out++;
                }
        }
    }
    /* Opportunistic grafting: if the mesh's median score is low, graft better peers. */
    if (g->p.opportunistic_graft_ticks > 0 && t->n_mesh > 1 &&
        g->n_heartbeats % (uint64_t)g->p.opportunistic_graft_ticks == 0) {
        double *s = malloc(t->n_mesh * sizeof *s);
        if (s) {
            for (size_t i = 0; i < t->n_mesh; i++) s[i] = peer_score(g, t->mesh[i], now_ms);
            qsort(s, t->n_mesh, sizeof *s, cmp_score_desc);
            double median = s[t->n_mesh / 2];
            free(s);
            if (median < g->sp.opportunistic_graft_threshold) {
                size_t n = mesh_candidates(g, t, topic, now_ms, median + 1e-9, cand);
                shuffle(g, cand, n);
                for (size_t i = 0; i < n && i < (size_t)g->p.opportunistic_graft_peers; i++)
                    mesh_add(g, t, topic, cand[i], now_ms, true);
            }
        }
    }
    emit_gossip(g, t, topic, now_ms, cand);
}

static void heartbeat_fanout(struct gossip *g, int topic, uint64_t now_ms, struct g_peer **cand)
{
    struct g_topic *t = g->topics[topic];
    if (t->n_fanout == 0) return;
    if (t->fanout_last_pub_ms + g->p.fanout_ttl_ms < now_ms) {
        t->n_fanout = 0;
        return;
    }
    for (size_t i = 0; i < t->n_fanout;) {
        struct g_peer *p = t->fanout[i];
        if (!peer_in_topic(p, topic) || peer_score(g, p, now_ms) < g->sp.publish_threshold)
            t->fanout[i] = t->fanout[--t->n_fanout];
        else
            i++;
    }
    size_t n = 0;
    for (size_t i = 0; i < g->n_peers; i++) {
        struct g_peer *p = g->peers[i];
        if (peer_in_topic(p, topic) && !set_has(t->fanout, t->n_fanout, p) &&
            peer_score(g, p, now_ms) >= g->sp.publish_threshold)
            cand[n++] = p;
    }
    shuffle(g, cand, n);
    for (size_t i = 0; i < n && t->n_fanout < (size_t)g->p.d; i++)
        set_add(&t->fanout, &t->n_fanout, &t->cap_fanout, cand[i]);
    emit_gossip(g, t, topic, now_ms, cand);
}

static void heartbeat(struct gossip *g, uint64_t now_ms)
{
    g->n_heartbeats++;
    /* Broken IWANT promises are misbehaviour (P7). */
    for (size_t i = 0; i < g->n_prom;) {
        if (g->prom[i].deadline_ms > now_ms) {
            i++;
            continue;
        }
        struct g_peer *p = peer_by_serial(g, g->prom[i].peer);
        if (p) p->behaviour_penalty += 1;
        g->prom[i] = g->prom[--g->n_prom];
    }
    for (size_t i = 0; i < g->n_peers; i++) g->peers[i]->n_ihave_rpcs = g->peers[i]->n_ihave_asked = 0;
    struct g_peer **cand = malloc((g->n_peers + 1) * sizeof *cand);
    if (cand) {
        for (size_t i = 0; i < g->n_topics; i++) {
            if (g->topics[i]->subscribed) heartbeat_topic(g, (int)i, now_ms, cand);
            else heartbeat_fanout(g, (int)i, now_ms, cand);
        }
        free(cand);
    }
    for (size_t i = 0; i < g->n_topics; i++) {
        struct g_topic *t = g->topics[i];
        for (size_t j = 0; j < t->n_bo;) {
            if (t->bo[j].until_ms <= now_ms) t->bo[j] = t->bo[--t->n_bo];
            else j++;
        }
    }
    mcache_shift(g);
    seen_rebuild(g, now_ms, 0);
}

uint64_t gossip_periodic(struct gossip *g, uint64_t now_ms)
{
    if (!g->has_time) {
        g->has_time = true;
        g->next_heartbeat_ms = now_ms + g->p.heartbeat_ms;
        g->next_decay_ms = now_ms + g->sp.decay_interval_ms;
    }
    if (now_ms >= g->next_decay_ms) {
        score_decay(g, now_ms);
        g->next_decay_ms = now_ms + g->sp.decay_interval_ms;
    }
    if (now_ms >= g->next_heartbeat_ms) {
        heartbeat(g, now_ms);
        g->next_heartbeat_ms = now_ms + g->p.heartbeat_ms;
    }
    return g->next_heartbeat_ms < g->next_decay_ms ? g->next_heartbeat_ms : g->next_decay_ms;
}

/* ---- queries and life cycle ---------------------------------------------------------- */

double gossip_peer_score(struct gossip *g, uint64_t now_ms, const struct peer_id *id)
{
    struct g_peer *p = peer_find(g, id);
    return p ? peer_score(g, p, now_ms) : 0;
}

size_t gossip_mesh_peers(const struct gossip *g, const char *name, struct peer_id *out,
                         size_t n_max)
{
    int topic = topic_find(g, name);
    if (topic < 0 || !g->topics[topic]->subscribed) return 0;
    const struct g_topic *t = g->topics[topic];
    if (!out) return t->n_mesh;
    size_t n = 0;
    for (; n < t->n_mesh && n < n_max; n++) out[n] = t->mesh[n]->id;
    return n;
}

bool gossip_is_subscribed(const struct gossip *g, const char *name)
{
    int topic = topic_find(g, name);
    return topic >= 0 && g->topics[topic]->subscribed;
}

void gossip_get_stats(const struct gossip *g, struct gossip_stats *st)
{
    *st = g->st;
    st->n_seen = g->seen_n;
    st->n_mcache = g->mcache_n;
    st->mcache_bytes = g->mcache_bytes;
    st->n_topics = g->n_topics;
}

int gossip_new(const struct gossip_config *cfg, struct gossip **out)
{
    *out = NULL;
    if (!cfg || !cfg->id || cfg->id->id.len == 0) return MESH_EINVAL;
    struct gossip_params p;
    if (cfg->params) p = *cfg->params;
    else gossip_params_default(&p);
    if (p.d_lo > p.d || p.d > p.d_hi || p.d_lo < 1 || p.history_gossip > p.history_length ||
        p.history_length < 1 || p.history_length > HISTORY_MAX || p.heartbeat_ms == 0 ||
        p.d_out >= p.d_lo || p.d_score > p.d)
        return MESH_EINVAL;
    struct gossip *g = calloc(1, sizeof *g);
    if (!g) return MESH_ENOMEM;
    g->cfg = *cfg;
    g->ident = *cfg->id;
    g->cfg.id = &g->ident;
    g->p = p;
    if (cfg->score) g->sp = *cfg->score;
    else gossip_score_params_default(&g->sp);
    if (!g->sp.decay_interval_ms) g->sp.decay_interval_ms = 1000;
    uint8_t h[32];
    crypto_hash_sha256(h, cfg->seed, sizeof cfg->seed);
    rng_seed_bytes(&g->rng, h);
    g->seqno = rng_next(&g->rng) >> 16; /* random start, so restarts do not reuse message ids */
    if (seen_rebuild(g, 0, 0) < 0) {
        gossip_free(g);
        return MESH_ENOMEM;
    }
    *out = g;
    return 0;
}

void gossip_free(struct gossip *g)
{
    if (!g) return;
    while (g->n_peers) gossip_peer_remove(g, 0, &g->peers[g->n_peers - 1]->id);
    free(g->peers);
    for (size_t i = 0; i < g->n_topics; i++) {
        free(g->topics[i]->mesh);
        free(g->topics[i]->fanout);
        free(g->topics[i]->bo);
        free(g->topics[i]);
    }
    for (int w = 0; w < HISTORY_MAX; w++) {
        for (size_t i = 0; i < g->win[w].n; i++) gossip_msg_unref(g->win[w].m[i]);
        free(g->win[w].m);
    }
    free(g->seen);
    free(g->prom);
    identity_wipe(&g->ident);
    free(g);
}
