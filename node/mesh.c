/* mesh.c - admission, announcements, peer table and infer server on the p2p node (mesh.h).
 *
 * Everything here runs on the p2p loop thread except mesh_start/_stop (main thread) and the
 * getters (any thread: they read fixed fields, the peer table under its own lock, or
 * counters under mu).
 */
#include "node/mesh.h"

#include "core/err.h"
#include "core/sysmem.h"
#include "core/log.h"
#include "engine/model.h"
#include "net/dht.h"
#include "net/gossip_host.h"
#include "net/host.h"
#include "net/identity.h"
#include "node/blob.h"
#include "node/infer.h"
#include "node/local.h"
#include "node/member.h"
#include "node/modelstore.h"
#include "node/registry.h"
#include "node/stage.h"
#include "node/stageload.h"
#include "node/store.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MESH_TICK_MS 1000
#define MESH_MAX_PENDING 256           /* peers waiting to show a certificate */
#define MESH_PROTECT_TAG "mesh-member" /* host_peer_protect's tag for admitted members */
#define MESH_PERSIST_MS 30000
#define MESH_PERSIST_NEWS_MS 5000

/* Where a peer stands with us (admission). */
enum adm_state { ADM_PENDING = 0, ADM_MEMBER = 1, ADM_REFUSED = 2 };
struct adm {
    struct peer_id id;
    enum adm_state state;
    uint64_t since_ms;
    bool hello_sent;
};

struct mesh {
    struct p2pnode *pn;
    struct registry *reg;
    struct store *store;
    struct member *mem;
    struct peers *peers;
    struct infer_server *infer;
    struct stage_server *stage;     /* /meshllm/stage/1 (split models), loop thread */
    struct stageload_server *stageload; /* /meshllm/stageload/1, loop thread */
    bool accept_stages;             /* serve --accept-stages (announced) */
    struct blob_server *blob;       /* /meshllm/blob/1 provider and pull counters */
    struct peers_blob blobs[PEERS_MAX_BLOBS]; /* the store's files, announced (loop thread) */
    int n_blobs;
    uint64_t blobs_at_ms;           /* when the store was last listed */
    char data_dir[4096];
    char mesh_id[96];
    char self_text[64];
    char topic[160];
    char revoke_topic[160];
    uint64_t revoke_seq;            /* newest revocation published */
    char dht_protocol[160];
    bool in_mesh;
    uv_timer_t tick;
    bool has_tick;
    uint64_t last_announce_ms, last_persist_ms, ann_seq;
    char last_offer[512];           /* what the previous announcement said, to see changes */
    /* Prefix affinity: digests of the conversations delegated here lately (a ring, loop
     * thread), announced so a conversation's next turn comes back to the slot that holds it. */
    uint64_t recent[PEERS_MAX_PREFIXES];
    int n_recent, recent_next;
    unsigned n_recorded;
    bool announce_soon;             /* a member was admitted: tell it what we offer */
    uint64_t persisted_announces;   /* n_announces_recv when the table was last stored */
    uint64_t started_ms;
    unsigned n_ticks;
    struct adm adm[MESH_MAX_PENDING]; /* loop thread only */
    int n_adm;
    pthread_mutex_t mu;             /* guards st */
    struct mesh_stats st;
};

uint64_t mesh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void count(struct mesh *m, uint64_t *field)
{
    pthread_mutex_lock(&m->mu);
    (*field)++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- admission (loop thread) --------------------------------------------------------- */

static struct adm *adm_get(struct mesh *m, const struct peer_id *id, bool create)
{
    for (int i = 0; i < m->n_adm; i++)
        if (peer_id_equal(&m->adm[i].id, id)) return &m->adm[i];
    if (!create) return NULL;
    if (m->n_adm == MESH_MAX_PENDING) {
        /* Forget the oldest refused or pending stranger; members stay. */
        int victim = -1;
        for (int i = 0; i < m->n_adm; i++)
            if (m->adm[i].state != ADM_MEMBER &&
                (victim < 0 || m->adm[i].since_ms < m->adm[victim].since_ms))
                victim = i;
        if (victim < 0) return NULL;
        m->adm[victim] = m->adm[--m->n_adm];
    }
    struct adm *a = &m->adm[m->n_adm++];
    memset(a, 0, sizeof *a);
    a->id = *id;
    a->since_ms = mesh_now_ms();
    return a;
}

static bool is_admitted(struct mesh *m, const struct peer_id *id)
{
    return m->in_mesh && member_is_admitted(m->mem, id, (uint64_t)time(NULL));
}

/* The host's gate: identify/ping and the member protocol are open to anyone; the rest waits
 * for a certificate. Without a mesh nothing is gated (a node in no mesh delegates nothing
 * and serves no infer stream: its infer handler refuses non-members itself). */
static int gate(void *ctx, const struct peer_id *peer, const char *protocol)
{
    struct mesh *m = ctx;
    if (!strncmp(protocol, "/ipfs/", 6) || !strcmp(protocol, MEMBER_PROTOCOL))
        return HOST_GATE_ALLOW;
    if (!m->in_mesh)
        return strncmp(protocol, "/meshllm/infer/", 15) && strncmp(protocol, "/meshllm/stage/", 15) &&
                       strncmp(protocol, "/meshllm/stageload/", 19) &&
                       strncmp(protocol, "/meshllm/blob/", 14)
                   ? HOST_GATE_ALLOW
                   : HOST_GATE_REFUSE;
    if (is_admitted(m, peer)) return HOST_GATE_ALLOW;
    struct adm *a = adm_get(m, peer, true);
    if (!a || a->state == ADM_REFUSED) return HOST_GATE_REFUSE;
    if (mesh_now_ms() - a->since_ms > MESH_HELLO_TIMEOUT_MS) {
        /* no certificate in time: refused from now on (counted once) */
        a->state = ADM_REFUSED;
        count(m, &m->st.n_refused);
        char text[64];
        if (peer_id_to_text(peer, text, sizeof text)) text[0] = 0;
        log_info("mesh: %s refused: no membership certificate within %d ms", text,
                 MESH_HELLO_TIMEOUT_MS);
        return HOST_GATE_REFUSE;
    }
    return HOST_GATE_WAIT;
}

static bool gossip_filter(void *ctx, const struct peer_id *peer)
{
    struct mesh *m = ctx;
    return m->in_mesh && is_admitted(m, peer);
}

/* A peer's verdict is in: release or refuse its parked streams, let it into gossip. */
static void adm_decided(struct mesh *m, const struct peer_id *peer, bool ok, bool own,
                        const char *why)
{
    struct adm *a = adm_get(m, peer, true);
    if (a) a->state = ok ? ADM_MEMBER : ADM_REFUSED;
    if (ok) m->announce_soon = true;
    count(m, ok ? &m->st.n_admitted : &m->st.n_refused);
    peers_set_member(m->peers, peer, ok, own);
    p2pnode_peer_protect(m->pn, peer, ok); /* members keep their place in the peer table */
    struct host *h = p2pnode_host(m->pn);
    if (h) host_peer_protect(h, peer, MESH_PROTECT_TAG, ok); /* members are never trimmed */
    if (h) host_gate_recheck(h, peer);
    struct gossip_host *gh = p2pnode_gossip(m->pn);
    if (gh) gossip_host_recheck(gh, peer);
    char text[64];
    if (peer_id_to_text(peer, text, sizeof text)) text[0] = 0;
    if (ok)
        log_info("mesh: %s admitted%s", text, own ? " (owner device)" : "");
    else
        log_info("mesh: %s refused: %s", text, why);
}

/* After new revocations: peers no longer admitted lose their standing (member.c has
 * dropped them from its table) and are cut off from gossip and gated protocols. */
static void revocations_applied(struct mesh *m)
{
    for (int i = 0; i < m->n_adm; i++) {
        struct adm *a = &m->adm[i];
        if (a->state != ADM_MEMBER || is_admitted(m, &a->id)) continue;
        struct peer_id id = a->id;
        a->state = ADM_REFUSED;
        peers_remove(m->peers, &id);
        p2pnode_peer_protect(m->pn, &id, false);
        struct host *h = p2pnode_host(m->pn);
        if (h) host_peer_protect(h, &id, MESH_PROTECT_TAG, false);
        struct gossip_host *gh = p2pnode_gossip(m->pn);
        if (gh) gossip_host_recheck(gh, &id);
        char text[64];
        if (peer_id_to_text(&id, text, sizeof text)) text[0] = 0;
        log_info("mesh: %s was revoked", text);
    }
}

/* Both sides of /meshllm/member/1 read whole messages: a Hello (certificate), a join
 * request (answered on the same stream) or, on a stream we opened, nothing. */
static void member_on_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    struct mesh *m = ctx;
    const struct peer_id *peer = host_stream_peer(s);
    uint64_t now = (uint64_t)time(NULL);
    int kind = member_msg_kind(d, n);
    if (kind == MEMBER_MSG_HELLO && m->in_mesh) {
        struct member_hello_result r;
        memset(&r, 0, sizeof r);
        int rc = member_hello_handle(m->mem, peer, d, n, now, &r);
        if (r.n_new_revocations) revocations_applied(m);
        adm_decided(m, peer, rc == 0 && r.admitted, r.owner_device,
                    rc ? err_str(rc) : member_refusal_str(r.reason));
    } else if (kind == MEMBER_MSG_JOIN_REQUEST) {
        uint8_t *resp = NULL;
        size_t resp_len = 0;
        enum member_refusal why = MEMBER_OK;
        int rc = member_join_handle(m->mem, peer, d, n, now, &resp, &resp_len, &why);
        char text[64];
        if (peer_id_to_text(peer, text, sizeof text)) text[0] = 0;
        if (rc == 0)
            log_info("mesh: issued a certificate to %s (invite redeemed)", text);
        else
            log_info("mesh: refused the join request of %s: %s", text, member_refusal_str(why));
        if (resp) host_stream_write_msg(s, resp, resp_len);
        free(resp);
    } else {
        host_stream_reset(s);
        return;
    }
    host_stream_close(s);
}

static void member_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void member_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)ctx;
    (void)s;
    (void)status;
}

static const struct host_stream_cbs member_cbs = {member_on_data, member_on_eof, member_on_close};

static void member_serve(void *ctx, struct host_stream *s)
{
    host_stream_set_message_mode(s, MEMBER_MSG_MAX);
    host_stream_set_callbacks(s, &member_cbs, ctx);
}

/* Our hello went out on a stream we opened: write it and close our side. */
static void hello_opened(void *ctx, struct host_stream *s, int status)
{
    struct mesh *m = ctx;
    if (status < 0 || !s) return; /* the peer does not speak it: it stays unadmitted */
    uint8_t *msg = NULL;
    size_t len = 0;
    if (member_hello_make(m->mem, &msg, &len) != 0) {
        host_stream_reset(s);
        return;
    }
    host_stream_set_message_mode(s, MEMBER_MSG_MAX);
    host_stream_set_callbacks(s, &member_cbs, m);
    host_stream_write_msg(s, msg, len);
    host_stream_close(s);
    free(msg);
}

static void on_peer_event(void *ctx, enum host_peer_event ev, const struct host_peer_info *p)
{
    struct mesh *m = ctx;
    uint64_t now = mesh_now_ms();
    if (ev == HOST_PEER_DISCONNECTED) {
        struct host *h = p2pnode_host(m->pn);
        struct host_peer_info still;
        if (!h || host_peer_info(h, &p->id, &still) != 0) {
            peers_set_connected(m->peers, &p->id, false, now);
            struct adm *a = adm_get(m, &p->id, false);
            if (a && a->state != ADM_MEMBER) *a = m->adm[--m->n_adm]; /* may try again */
            else if (a) a->hello_sent = false;
        }
        return;
    }
    if (ev != HOST_PEER_IDENTIFIED || !m->in_mesh) return;
    struct adm *a = adm_get(m, &p->id, true);
    if (!a || a->hello_sent) return;
    a->hello_sent = true;
    if (a->state != ADM_MEMBER) a->since_ms = now;
    struct multiaddr addr = p->remote_addr;
    multiaddr_append_p2p(&addr, &p->id);
    struct host *h = p2pnode_host(m->pn);
    if (h) host_open_stream(h, &addr, MEMBER_PROTOCOL, hello_opened, m);
}

/* ---- announcements (loop thread) ------------------------------------------------------ */

static int local_models(struct mesh *m, struct peers_model *out, int cap)
{
    int n = 0;
    for (int i = 0; m->reg && i < registry_count(m->reg) && n < cap; i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(m->reg, i, &st);
        struct node_local_info li;
        if (st != REGISTRY_READY || node_local_info(m->reg, e->name, &li) != 0) continue;
        struct peers_model *pm = &out[n++];
        memset(pm, 0, sizeof *pm);
        snprintf(pm->name, sizeof pm->name, "%s", e->name);
        snprintf(pm->quant, sizeof pm->quant, "%s", e->quant);
        const char *dg = registry_digest(m->reg, i);
        if (dg) snprintf(pm->digest, sizeof pm->digest, "%s", dg);
        pm->file_bytes = e->file_bytes;
        pm->n_ctx = li.n_ctx;
        pm->gen_tps = (float)li.gen_tps;
        pm->n_slots = li.n_slots;
        pm->n_active = li.n_active;
        pm->n_queued = li.n_queued;
        if (e->is_split) { /* a stage (docs/SPLIT.md) */
            pm->layer_begin = e->layer_begin;
            pm->layer_end = e->layer_end;
            pm->n_layer = model_hparams(e->model)->n_layer;
        }
    }
    return n;
}

/* The store's files this node provides, listed again every MESH_BLOBS_MS. */
#define MESH_BLOBS_MS 3000
static void local_blobs(struct mesh *m, uint64_t now)
{
    if (m->blobs_at_ms && now - m->blobs_at_ms < MESH_BLOBS_MS) return;
    m->blobs_at_ms = now;
    struct modelstore_manifest *all = NULL;
    int n = 0;
    m->n_blobs = 0;
    if (modelstore_list(modelstore_dir(), &all, &n)) return;
    for (int i = 0; i < n && m->n_blobs < PEERS_MAX_BLOBS; i++) {
        struct peers_blob *b = &m->blobs[m->n_blobs++];
        memset(b, 0, sizeof *b);
        modelstore_full_name(&all[i], b->name, sizeof b->name);
        memcpy(b->content_id, all[i].content_id, sizeof b->content_id);
        b->size = all[i].size;
        b->piece_len = all[i].piece_len;
    }
    free(all);
}

static void announce(struct mesh *m, bool force)
{
    struct gossip_host *gh = p2pnode_gossip(m->pn);
    if (!gh || !m->in_mesh) return;
    struct peers_model models[PEERS_MAX_MODELS];
    int n_models = local_models(m, models, PEERS_MAX_MODELS);
    /* What changed: the models and their load (not the speed estimate, which drifts). */
    uint64_t now = mesh_now_ms();
    local_blobs(m, now);
    char offer[512];
    size_t off = (size_t)snprintf(offer, sizeof offer, "%u;", m->n_recorded);
    for (int i = 0; i < m->n_blobs && off < sizeof offer - 1; i++) {
        int w = snprintf(offer + off, sizeof offer - off, "%.8s;", m->blobs[i].content_id);
        if (w < 0) break;
        off += (size_t)w;
    }
    for (int i = 0; i < n_models && off < sizeof offer - 1; i++) {
        int w = snprintf(offer + off, sizeof offer - off, "%s:%d:%d:%c;", models[i].name,
                         models[i].n_active, models[i].n_queued, models[i].digest[0] ? 'h' : '-');
        if (w < 0) break;
        off += (size_t)w;
    }
    bool changed = strcmp(offer, m->last_offer) != 0;
    if (!force && !(changed && now - m->last_announce_ms >= 1000) &&
        now - m->last_announce_ms < MESH_ANNOUNCE_MS)
        return;
    struct multiaddr addrs[PEERS_MAX_ADDRS];
    int n_addrs = (int)p2pnode_listen_addrs(m->pn, addrs, PEERS_MAX_ADDRS);
    uint64_t wall = (uint64_t)time(NULL) * 1000;
    m->ann_seq = wall > m->ann_seq ? wall : m->ann_seq + 1;
    uint8_t *rec = NULL;
    size_t len = 0;
    struct peers_self self = {.mem_free = sysmem_free_bytes(),
                              .speed_gbps = (float)sysmem_speed_gbps(),
                              .accept_stages = m->accept_stages};
    if (peers_announce_encode_self(m->ann_seq, MESH_ANNOUNCE_TTL_S, models, n_models, addrs,
                                   n_addrs, &self, m->recent, m->n_recent, m->blobs, m->n_blobs,
                                   &rec, &len) != 0)
        return;
    if (gossip_publish(gossip_host_core(gh), p2pnode_now_ms(m->pn), m->topic, rec, len, NULL,
                       NULL) == 0) {
        gossip_host_kick(gh);
        count(m, &m->st.n_announces_sent);
    }
    free(rec);
    memcpy(m->last_offer, offer, sizeof offer);
    m->last_announce_ms = now;
}

static int gossip_validate(void *ud, const struct gossip_msg *msg)
{
    struct mesh *m = ud;
    if (!msg->from || !m->in_mesh) return GOSSIP_REJECT;
    if (peer_id_equal(msg->from, p2pnode_peer_id(m->pn))) return GOSSIP_ACCEPT;
    return is_admitted(m, msg->from) ? GOSSIP_ACCEPT : GOSSIP_REJECT;
}

static void gossip_on_message(void *ud, const struct gossip_msg *msg)
{
    struct mesh *m = ud;
    if (!msg->from || peer_id_equal(msg->from, p2pnode_peer_id(m->pn))) return;
    if (msg->topic && !strcmp(msg->topic, m->revoke_topic)) {
        bool is_new = false;
        if (member_revocation_add(m->mem, msg->data, msg->data_len, &is_new, NULL) == 0 && is_new)
            revocations_applied(m);
        return;
    }
    if (peers_on_announce(m->peers, msg->from, msg->data, msg->data_len, mesh_now_ms()) == 0)
        count(m, &m->st.n_announces_recv);
}

/* Revocations stored since the last look (ours, or written by `meshllm revoke` in another
 * process) are applied here and gossiped to the mesh. The first look publishes the newest
 * few again: members that were offline meanwhile get them; repeats are idempotent. */
static void revocations_publish(struct mesh *m)
{
    struct store_blob *b = NULL;
    size_t n = 0;
    if (member_revocations_since(m->mem, m->revoke_seq, 16, &b, &n) != 0) return;
    struct gossip_host *gh = p2pnode_gossip(m->pn);
    for (size_t i = 0; i < n; i++) {
        member_revocation_add(m->mem, b[i].bytes, b[i].len, NULL, NULL);
        if (gh)
            gossip_publish(gossip_host_core(gh), p2pnode_now_ms(m->pn), m->revoke_topic,
                           b[i].bytes, b[i].len, NULL, NULL);
        m->revoke_seq = b[i].seq;
    }
    if (n) {
        revocations_applied(m);
        if (gh) gossip_host_kick(gh);
    }
    store_blobs_free(b, n);
}

/* The peer table survives restarts: members' addresses and reputation go to the store every
 * 30 s and at stop; start restores them (they are dialed again by the bootstrap rounds). */
static void peers_persist(struct mesh *m)
{
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int n = es ? peers_snapshot(m->peers, es, PEERS_MAX) : 0;
    char err[256];
    for (int i = 0; i < n; i++) {
        const struct peers_entry *e = &es[i];
        if (!e->is_member) continue;
        char addrs[PEERS_MAX_ADDRS * (MULTIADDR_TEXT_CAP + 1)] = "";
        size_t off = 0;
        for (int k = 0; k < e->n_addrs; k++) {
            char t[MULTIADDR_TEXT_CAP];
            if (multiaddr_to_text(&e->addrs[k], t, sizeof t)) continue;
            int w = snprintf(addrs + off, sizeof addrs - off, "%s%s", off ? " " : "", t);
            if (w > 0 && (size_t)w < sizeof addrs - off) off += (size_t)w;
        }
        struct store_peer sp = {.addrs = addrs, .last_seen = (int64_t)time(NULL),
                                .rtt_us = e->rtt_us, .n_ok = e->n_ok, .n_fail = e->n_fail,
                                .n_lies = e->n_lies};
        snprintf(sp.peer_id, sizeof sp.peer_id, "%s", e->id_text);
        if (store_peer_put(m->store, &sp, err, sizeof err))
            log_warn("mesh: cannot save the peer table: %s", err);
    }
    free(es);
}

static void peers_load(struct mesh *m)
{
    struct store_peer *sp = NULL;
    size_t n = 0;
    char err[256];
    if (store_peers_load(m->store, &sp, &n, err, sizeof err) != 0) {
        log_warn("mesh: cannot read the peer table: %s", err);
        return;
    }
    for (size_t i = 0; i < n && i < PEERS_MAX; i++) {
        struct peers_entry e;
        memset(&e, 0, sizeof e);
        if (peer_id_from_text(sp[i].peer_id, strlen(sp[i].peer_id), &e.id) != 0) continue;
        char *save = NULL;
        for (char *t = strtok_r(sp[i].addrs ? sp[i].addrs : (char *)"", " ", &save);
             t && e.n_addrs < PEERS_MAX_ADDRS; t = strtok_r(NULL, " ", &save))
            if (multiaddr_from_text(t, &e.addrs[e.n_addrs]) == 0) e.n_addrs++;
        e.rtt_us = sp[i].rtt_us;
        e.n_ok = (uint32_t)sp[i].n_ok;
        e.n_fail = (uint32_t)sp[i].n_fail;
        e.n_lies = (uint32_t)sp[i].n_lies;
        peers_restore(m->peers, &e);
    }
    store_peers_free(sp, n);
}

/* Adds the remembered peers' first addresses (ending in /p2p/ID) after boot[0..n). */
static size_t remembered_boot(struct mesh *m, struct multiaddr *boot, size_t n)
{
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int ne = es ? peers_snapshot(m->peers, es, PEERS_MAX) : 0;
    for (int i = 0; i < ne && n < P2PNODE_MAX_BOOTSTRAP; i++) {
        if (es[i].n_addrs == 0) continue;
        struct multiaddr a = es[i].addrs[0];
        struct peer_id pid;
        if (multiaddr_peer_id(&a, &pid) != 0 && multiaddr_append_p2p(&a, &es[i].id) != 0)
            continue;
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++) dup = multiaddr_equal(&boot[k], &a);
        if (!dup) boot[n++] = a;
    }
    free(es);
    return n;
}

/* ---- timers (loop thread) -------------------------------------------------------------- */

struct ping_ctx {
    struct mesh *m;
    struct peer_id id;
};

static void on_ping(void *ctx, int status, uint64_t rtt_us)
{
    struct ping_ctx *pc = ctx;
    if (status == 0) peers_set_rtt(pc->m->peers, &pc->id, (int64_t)rtt_us);
    free(pc);
}

static void ping_members(struct mesh *m)
{
    struct host *h = p2pnode_host(m->pn);
    if (!h) return;
    struct host_peer_info list[64];
    size_t n = host_list_peers(h, list, 64);
    uint64_t now = mesh_now_ms();
    for (size_t i = 0; i < n; i++) {
        peers_set_connected(m->peers, &list[i].id, true, now);
        if (!is_admitted(m, &list[i].id)) continue;
        struct ping_ctx *pc = malloc(sizeof *pc);
        struct multiaddr a = list[i].remote_addr;
        if (!pc) return;
        pc->m = m;
        pc->id = list[i].id;
        if (multiaddr_append_p2p(&a, &list[i].id) != 0 || host_ping(h, &a, on_ping, pc) != 0)
            free(pc);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct mesh *m = t->data;
    struct host *h = p2pnode_host(m->pn);
    if (!h) return;
    host_gate_recheck(h, NULL); /* refuses peers whose hello is overdue */
    if (m->n_ticks++ % (MESH_PING_MS / MESH_TICK_MS) == 0) ping_members(m);
    /* a newcomer needs a moment to join the topic's mesh: announce on the tick after */
    bool soon = m->announce_soon && m->n_ticks > 1;
    if (soon) m->announce_soon = false;
    announce(m, m->n_ticks == 3 || soon);
    if (m->in_mesh) revocations_publish(m);
    /* the table goes to the store every 30 s, and within 5 s of news from a peer (its
     * announcement may carry new addresses): a node killed soon after meeting its peers
     * still finds them when it restarts */
    uint64_t now = mesh_now_ms();
    struct mesh_stats st;
    mesh_stats(m, &st);
    bool news = st.n_announces_recv != m->persisted_announces;
    if (now - m->last_persist_ms >= MESH_PERSIST_MS ||
        (news && now - m->last_persist_ms >= MESH_PERSIST_NEWS_MS)) {
        peers_persist(m);
        m->last_persist_ms = now;
        m->persisted_announces = st.n_announces_recv;
    }
}

/* ---- start / stop ---------------------------------------------------------------------- */

/* Remembers the digest of a chat request's whole conversation (loop thread). */
static void recent_record(struct mesh *m, const struct node_gen_req *req)
{
    if (req->kind != NODE_KIND_CHAT || req->n_msgs <= 0 || req->n_msgs > 4096) return;
    const char **roles = malloc((size_t)req->n_msgs * sizeof *roles);
    const char **contents = malloc((size_t)req->n_msgs * sizeof *contents);
    uint64_t *d = malloc((size_t)req->n_msgs * sizeof *d);
    if (roles && contents && d) {
        for (int i = 0; i < req->n_msgs; i++) {
            roles[i] = req->msgs[i].role;
            contents[i] = req->msgs[i].content;
        }
        peers_conv_digests(req->model, roles, contents, req->n_msgs, d);
        uint64_t last = d[req->n_msgs - 1];
        bool known = false;
        for (int i = 0; i < m->n_recent && !known; i++) known = m->recent[i] == last;
        if (!known) {
            m->recent[m->recent_next] = last;
            m->recent_next = (m->recent_next + 1) % PEERS_MAX_PREFIXES;
            if (m->n_recent < PEERS_MAX_PREFIXES) m->n_recent++;
            m->n_recorded++;
        }
    }
    free(roles);
    free(contents);
    free(d);
}

static int infer_submit(void *ctx, const struct node_gen_req *req, const struct node_client *cl,
                        struct node_req **out, struct node_error *err)
{
    struct mesh *m = ctx;
    if (!m->reg) {
        node_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                       "this node serves no model");
        return MESH_ENOTFOUND;
    }
    int rc = node_local_submit(m->reg, req, cl, out, err);
    if (rc == 0) recent_record(m, req);
    return rc;
}

static bool stageload_is_member(void *ctx, const struct peer_id *peer)
{
    return is_admitted(ctx, peer);
}

/* p2pnode's setup hook: handlers, gate and timers exist before any peer can reach us. */
static int mesh_setup(void *ctx, struct p2pnode *pn)
{
    struct mesh *m = ctx;
    m->pn = pn;
    struct host *h = p2pnode_host(pn);
    int rc = host_set_handler(h, MEMBER_PROTOCOL, member_serve, m);
    if (!rc) rc = host_add_peer_listener(h, on_peer_event, m);
    if (rc) return rc;
    host_set_gate(h, "/", gate, m);
    struct gossip_host *gh = p2pnode_gossip(pn);
    if (gh && m->in_mesh) {
        gossip_host_set_filter(gh, gossip_filter, m);
        rc = gossip_subscribe(gossip_host_core(gh), p2pnode_now_ms(pn), m->topic);
        if (!rc) rc = gossip_subscribe(gossip_host_core(gh), p2pnode_now_ms(pn), m->revoke_topic);
        if (rc) return rc;
    }
    struct infer_server_config ic = {.pn = pn, .submit = infer_submit, .submit_ctx = m};
    rc = infer_server_new(&ic, &m->infer);
    if (rc) return rc;
    if (m->reg) { /* split models' stages (node/stage.h) */
        struct stage_server_config sc = {.pn = pn, .submit = registry_stage_submit,
                                         .submit_ctx = m->reg};
        rc = stage_server_new(&sc, &m->stage);
        if (rc) return rc;
        struct stageload_server_config lc = {.pn = pn, .reg = m->reg,
                                             .accept = m->accept_stages,
                                             .is_member = stageload_is_member,
                                             .member_ctx = m};
        rc = stageload_server_new(&lc, &m->stageload);
        if (rc) return rc;
    }
    rc = blob_server_new(pn, modelstore_dir(), &m->blob); /* reached by members only (gate) */
    if (rc) return rc;
    uv_timer_init(p2pnode_loop(pn), &m->tick);
    m->tick.data = m;
    m->has_tick = true;
    uv_timer_start(&m->tick, on_tick, 200, MESH_TICK_MS);
    return 0;
}

/* Runs on the loop during stop: the timer and the infer server go before the host. */
static void mesh_teardown(struct p2pnode *pn, void *arg)
{
    (void)pn;
    struct mesh *m = arg;
    if (m->has_tick) uv_close((uv_handle_t *)&m->tick, NULL);
    m->has_tick = false;
    peers_persist(m);
    infer_server_free(m->infer);
    m->infer = NULL;
    stage_server_free(m->stage);
    m->stage = NULL;
    stageload_server_free(m->stageload);
    m->stageload = NULL;
}

int mesh_start(const struct mesh_config *cfg, struct mesh **out, char *err, size_t err_cap)
{
    *out = NULL;
    struct mesh *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    m->reg = cfg->reg;
    m->accept_stages = cfg->accept_stages;
    m->started_ms = mesh_now_ms();
    sysmem_speed_gbps(); /* measured once, now, not on the loop thread's first announce */
    snprintf(m->data_dir, sizeof m->data_dir, "%s", cfg->data_dir);
    int rc = peers_new(&m->peers);
    if (rc) {
        err_set(err, err_cap, rc, "out of memory");
        goto fail;
    }
    if (cfg->join_token) {
        rc = mesh_join(cfg->data_dir, cfg->join_token, MESH_JOIN_TIMEOUT_MS, err, err_cap);
        if (rc) goto fail;
    }
    rc = store_open(cfg->data_dir, &m->store, err, err_cap);
    if (!rc) rc = member_open(cfg->data_dir, m->store, (uint64_t)time(NULL), &m->mem, err, err_cap);
    if (rc) goto fail;
    struct member_info mi;
    rc = member_info_get(m->mem, &mi, err, err_cap);
    if (rc) goto fail;
    m->in_mesh = mi.is_member;
    if (m->in_mesh) {
        snprintf(m->mesh_id, sizeof m->mesh_id, "%s", mi.mesh_id);
        snprintf(m->topic, sizeof m->topic, "/meshllm/announce/1/%s", m->mesh_id);
        snprintf(m->revoke_topic, sizeof m->revoke_topic, "/meshllm/revoke/1/%s", m->mesh_id);
        snprintf(m->dht_protocol, sizeof m->dht_protocol, "%s/%s", DHT_PROTOCOL_MESHLLM,
                 m->mesh_id);
    } else {
        snprintf(m->dht_protocol, sizeof m->dht_protocol, "%s", DHT_PROTOCOL_MESHLLM);
    }
    peers_load(m);
    /* Bootstrap from the user's peers, then from the remembered ones: a restarted node (or a
     * node that just joined) finds its mesh again without --bootstrap. */
    struct multiaddr boot[P2PNODE_MAX_BOOTSTRAP];
    size_t n_boot = 0;
    for (size_t i = 0; i < cfg->n_bootstrap && n_boot < P2PNODE_MAX_BOOTSTRAP; i++)
        boot[n_boot++] = cfg->bootstrap[i];
    if (m->in_mesh) n_boot = remembered_boot(m, boot, n_boot);
    struct p2pnode_config pc = {
        .data_dir = cfg->data_dir,
        .listen = cfg->listen,
        .n_listen = cfg->n_listen,
        .bootstrap = boot,
        .n_bootstrap = n_boot,
        .use_mdns = cfg->use_mdns,
        .dht_protocol = m->dht_protocol,
        .use_gossip = true,
        .gossip_validate = gossip_validate,
        .gossip_on_message = gossip_on_message,
        .gossip_ud = m,
        .setup = mesh_setup,
        .setup_ctx = m,
    };
    rc = p2pnode_start(&pc, &m->pn, err, err_cap);
    if (rc) goto fail;
    if (peer_id_to_text(p2pnode_peer_id(m->pn), m->self_text, sizeof m->self_text))
        m->self_text[0] = 0;
    /* Where `meshllm invite` finds this node's addresses. */
    struct multiaddr la[8];
    size_t n_la = p2pnode_listen_addrs(m->pn, la, 8);
    char e2[256];
    if (store_listen_addrs_set(m->store, la, n_la, e2, sizeof e2))
        log_warn("mesh: cannot record the listen addresses: %s", e2);
    if (m->reg) registry_set_mesh(m->reg, m); /* split models reach their stages */
    *out = m;
    return 0;
fail:
    member_close(m->mem);
    store_close(m->store);
    peers_free(m->peers);
    pthread_mutex_destroy(&m->mu);
    free(m);
    return rc;
}

void mesh_stop(struct mesh *m)
{
    if (!m) return;
    if (m->reg) registry_set_mesh(m->reg, NULL); /* passes end, their streams close */
    if (m->pn && p2pnode_call(m->pn, mesh_teardown, m) == 0) {
        /* p2pnode_stop runs the queued teardown before it closes the host. */
    }
    p2pnode_stop(m->pn);
    blob_server_free(m->blob); /* after the host: its streams are closed */
    member_close(m->mem);
    store_close(m->store);
    peers_free(m->peers);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

struct p2pnode *mesh_p2pnode(struct mesh *m) { return m->pn; }
struct peers *mesh_peers(struct mesh *m) { return m->peers; }
struct blob_server *mesh_blob(struct mesh *m) { return m ? m->blob : NULL; }
const char *mesh_id(const struct mesh *m) { return m->mesh_id; }
const char *mesh_self_text(const struct mesh *m) { return m->self_text; }
uint64_t mesh_uptime_ms(const struct mesh *m) { return mesh_now_ms() - m->started_ms; }

void mesh_stats(struct mesh *m, struct mesh_stats *out)
{
    pthread_mutex_lock(&m->mu);
    *out = m->st;
    pthread_mutex_unlock(&m->mu);
    /* the infer server's counters are atomics; it lives from start to stop */
    struct infer_server_stats is;
    infer_server_stats(m->infer, &is);
    out->n_infer_served = is.n_served;
    out->n_infer_opened = is.n_opened;
    out->n_infer_active = is.n_active;
    struct stageload_server_stats ls;
    stageload_server_stats(m->stageload, &ls);
    out->n_stageload_requests = ls.n_requests;
    out->n_stageload_loaded = ls.n_loaded;
    out->n_stageload_refused = ls.n_refused;
    if (m->pn) p2pnode_stats(m->pn, &out->p2p);
}

void mesh_count_infer_out(struct mesh *m)
{
    count(m, &m->st.n_infer_out);
}

/* ---- JSON (any thread) ------------------------------------------------------------------ */

char *mesh_peers_json(struct mesh *m)
{
    char *base = p2pnode_peers_json(m->pn);
    cJSON *root = base ? cJSON_Parse(base) : cJSON_CreateObject();
    free(base);
    if (!root) return NULL;
    cJSON *mj = cJSON_AddObjectToObject(root, "mesh");
    cJSON_AddStringToObject(mj, "id", m->mesh_id);
    cJSON_AddBoolToObject(mj, "member", m->in_mesh);
    struct mesh_stats st;
    mesh_stats(m, &st);
    cJSON *sj = cJSON_AddObjectToObject(mj, "stats");
    cJSON_AddNumberToObject(sj, "admitted", (double)st.n_admitted);
    cJSON_AddNumberToObject(sj, "refused", (double)st.n_refused);
    cJSON_AddNumberToObject(sj, "announces_sent", (double)st.n_announces_sent);
    cJSON_AddNumberToObject(sj, "announces_received", (double)st.n_announces_recv);
    cJSON_AddNumberToObject(sj, "infer_served", (double)st.n_infer_served);
    cJSON_AddNumberToObject(sj, "infer_opened", (double)st.n_infer_opened);
    cJSON_AddNumberToObject(sj, "infer_out", (double)st.n_infer_out);
    cJSON_AddNumberToObject(sj, "stageload_requests", (double)st.n_stageload_requests);
    cJSON_AddNumberToObject(sj, "stageload_loaded", (double)st.n_stageload_loaded);
    cJSON_AddNumberToObject(sj, "stageload_refused", (double)st.n_stageload_refused);
    cJSON_AddBoolToObject(mj, "accept_stages", m->accept_stages);
    cJSON_AddNumberToObject(mj, "mem_free", (double)sysmem_free_bytes());
    cJSON_AddNumberToObject(mj, "speed_gbps", sysmem_speed_gbps());
    struct blob_stats bst;
    blob_server_stats(m->blob, &bst);
    cJSON *bj = cJSON_AddObjectToObject(sj, "blob");
    cJSON_AddNumberToObject(bj, "streams", (double)bst.n_streams);
    cJSON_AddNumberToObject(bj, "streams_refused", (double)bst.n_streams_refused);
    cJSON_AddNumberToObject(bj, "pieces_served", (double)bst.n_pieces_served);
    cJSON_AddNumberToObject(bj, "bytes_served", (double)bst.bytes_served);
    cJSON_AddNumberToObject(bj, "errors_sent", (double)bst.n_errors_sent);
    cJSON_AddNumberToObject(bj, "pieces_fetched", (double)bst.n_pieces_fetched);
    cJSON_AddNumberToObject(bj, "bytes_fetched", (double)bst.bytes_fetched);
    cJSON_AddNumberToObject(bj, "pieces_resumed", (double)bst.n_pieces_resumed);
    cJSON_AddNumberToObject(bj, "bad_pieces", (double)bst.n_bad_pieces);
    cJSON_AddNumberToObject(bj, "peers_dropped", (double)bst.n_peers_dropped);
    cJSON_AddNumberToObject(bj, "pulls_ok", (double)bst.n_pulls_ok);
    cJSON_AddNumberToObject(bj, "pulls_failed", (double)bst.n_pulls_failed);
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int n = es ? peers_snapshot(m->peers, es, PEERS_MAX) : 0;
    cJSON *arr = cJSON_AddArrayToObject(mj, "peers");
    uint64_t now = mesh_now_ms();
    for (int i = 0; i < n; i++) {
        const struct peers_entry *e = &es[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "id", e->id_text);
        cJSON_AddBoolToObject(o, "connected", e->is_connected);
        cJSON_AddBoolToObject(o, "member", e->is_member);
        cJSON_AddBoolToObject(o, "own", e->is_own);
        if (e->rtt_us >= 0)
            cJSON_AddNumberToObject(o, "rtt_ms", (double)e->rtt_us / 1000.0);
        else
            cJSON_AddNullToObject(o, "rtt_ms");
        bool live = e->ann_seq && e->ann_expires_ms > now;
        cJSON_AddBoolToObject(o, "announced", live);
        cJSON *ms = cJSON_AddArrayToObject(o, "models");
        for (int k = 0; live && k < e->n_models; k++) {
            cJSON *mo = cJSON_CreateObject();
            cJSON_AddItemToArray(ms, mo);
            cJSON_AddStringToObject(mo, "name", e->models[k].name);
            cJSON_AddNumberToObject(mo, "n_ctx", e->models[k].n_ctx);
            cJSON_AddNumberToObject(mo, "slots", e->models[k].n_slots);
            cJSON_AddNumberToObject(mo, "active", e->models[k].n_active);
            cJSON_AddNumberToObject(mo, "queued", e->models[k].n_queued);
            cJSON_AddNumberToObject(mo, "tokens_per_s", e->models[k].gen_tps);
            if (e->models[k].n_layer > 0) { /* a stage of a split model */
                cJSON_AddNumberToObject(mo, "layer_begin", e->models[k].layer_begin);
                cJSON_AddNumberToObject(mo, "layer_end", e->models[k].layer_end);
                cJSON_AddNumberToObject(mo, "n_layer", e->models[k].n_layer);
            }
        }
        cJSON_AddNumberToObject(o, "mem_free", (double)e->mem_free);
        cJSON_AddNumberToObject(o, "speed_gbps", e->speed_gbps);
        cJSON_AddBoolToObject(o, "accept_stages", e->accept_stages);
        cJSON *bl = cJSON_AddArrayToObject(o, "blobs");
        for (int k = 0; live && k < e->n_blobs; k++) {
            cJSON *bo = cJSON_CreateObject();
            cJSON_AddItemToArray(bl, bo);
            cJSON_AddStringToObject(bo, "name", e->blobs[k].name);
            cJSON_AddStringToObject(bo, "content_id", e->blobs[k].content_id);
            cJSON_AddNumberToObject(bo, "size", (double)e->blobs[k].size);
            cJSON_AddNumberToObject(bo, "piece_len", e->blobs[k].piece_len);
        }
        cJSON_AddNumberToObject(o, "ok", e->n_ok);
        cJSON_AddNumberToObject(o, "failed", e->n_fail);
        cJSON_AddNumberToObject(o, "busy", e->n_busy);
        cJSON_AddNumberToObject(o, "lies", e->n_lies);
        cJSON_AddNumberToObject(o, "inflight", e->n_inflight);
    }
    free(es);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return json;
}
