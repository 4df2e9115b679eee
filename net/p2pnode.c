/* p2pnode.c - host + DHT + GossipSub + mDNS on a libuv loop thread, and the peer table
 * (see p2pnode.h). Everything but p2pnode_start/_stop/_peers_json runs on the loop thread;
 * the peer table is written there under mu and read by other threads under mu.
 */
#include "net/p2pnode.h"

#include "core/err.h"
#include "net/dht.h"
#include "net/gossip_host.h"
#include "net/host.h"
#include "net/identity.h"
#include "net/mdns_host.h"
#include "net/p2p.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define PN_ADDRS 4          /* addresses kept per peer */
#define PN_PROTOS_CAP 1024  /* comma-separated protocol ids */
#define PN_MAX_ADDRS 32     /* our expanded listen addresses */
#define PN_TICK_MS 1000     /* peer table refresh */
#define PN_PING_TICKS 5     /* ping every connected peer every 5 ticks */
#define PN_LIST_CAP 128     /* connected peers read per refresh */

struct pn_peer {
    struct peer_id id;
    char how[12];          /* bootstrap, mdns, dht, inbound */
    bool is_connected;
    bool is_outbound;
    bool in_table;         /* in the DHT routing table */
    bool needs_ping;       /* newly identified: ping at the next tick */
    bool is_identified;    /* identify answered at least once */
    bool is_protected;     /* p2pnode_peer_protect: never evicted for a newcomer */
    uint64_t last_seen_ms; /* loop clock when it was last connected (or added) */
    int64_t rtt_us;        /* last ping round trip; -1: none yet */
    size_t n_addrs;
    struct multiaddr addrs[PN_ADDRS];
    char agent[64];
    char protocols[PN_PROTOS_CAP];
};

struct pn_ping {
    struct p2pnode *n;
    struct peer_id id;
};

struct pn_call {
    p2pnode_call_fn fn;
    void *arg;
    struct pn_call *next;
};

struct p2pnode {
    uv_loop_t loop;
    uv_async_t stop_async;
    uv_async_t call_async;
    pthread_mutex_t call_mu;    /* guards calls, calls_tail, calls_closed */
    struct pn_call *calls, *calls_tail;
    bool calls_closed;
    uv_timer_t boot_timer, tick_timer;
    pthread_t thread;
    bool has_thread;
    bool is_closing;
    struct identity id;
    struct host *host;
    struct p2p *p2p;
    struct gossip_host *gh;
    struct mdns_host *mh;
    struct dht_peer *boot;
    size_t n_boot;
    unsigned n_boot_rounds;
    unsigned n_ticks;
    struct multiaddr addrs[PN_MAX_ADDRS];
    size_t n_addrs;
    char dht_protocol[64];
    bool use_mdns, use_gossip;
    pthread_mutex_t mu; /* guards everything below */
    struct pn_peer *peers;
    size_t n_peers;
    size_t dht_table_size;
    uint64_t clock_ms; /* the loop's clock at its last event, for last_seen_ms */
    struct p2pnode_stats st;
};

/* ---- peer table (loop thread, mu held) --------------------------------------------------- */

/* How much an entry is worth keeping, for eviction (lowest goes first): connected peers
 * outrank disconnected ones; then one point each for having identified, for being more than
 * an inbound stranger (we dialed it, or found it by bootstrap, mDNS or the DHT) and for being
 * in the DHT routing table. Ties: the one seen longest ago goes first. */
static unsigned peer_rank(const struct pn_peer *p)
{
    unsigned r = p->is_connected ? 4 : 0;
    r += p->is_identified;
    r += p->is_outbound || strcmp(p->how, "inbound") != 0;
    r += p->in_table;
    return r;
}

/* The entry to give up for a newcomer: the lowest-ranked unprotected one; -1 if all are
 * protected. */
static long peer_victim(const struct p2pnode *n)
{
    long v = -1;
    for (size_t i = 0; i < n->n_peers; i++) {
        const struct pn_peer *p = &n->peers[i];
        if (p->is_protected) continue;
        if (v < 0) {
            v = (long)i;
            continue;
        }
        const struct pn_peer *w = &n->peers[v];
        unsigned rp = peer_rank(p), rw = peer_rank(w);
        if (rp < rw || (rp == rw && p->last_seen_ms < w->last_seen_ms)) v = (long)i;
    }
    return v;
}

static struct pn_peer *peer_find(struct p2pnode *n, const struct peer_id *id)
{
    for (size_t i = 0; i < n->n_peers; i++)
        if (peer_id_equal(&n->peers[i].id, id)) return &n->peers[i];
    return NULL;
}

/* The entry of id, added with `how` if new; a full table gives up its least useful
 * unprotected entry (peer_rank) for it. NULL when id is us or every entry is protected. */
static struct pn_peer *peer_get(struct p2pnode *n, const struct peer_id *id, const char *how)
{
    if (peer_id_equal(id, &n->id.id)) return NULL;
    struct pn_peer *p = peer_find(n, id);
    if (p) return p;
    if (n->n_peers < P2PNODE_MAX_PEERS) {
        p = &n->peers[n->n_peers++];
    } else {
        long v = peer_victim(n);
        if (v < 0) {
            n->st.n_peer_table_refused++;
            return NULL;
        }
        n->st.n_peer_table_evicted++;
        p = &n->peers[v];
    }
    memset(p, 0, sizeof *p);
    p->id = *id;
    p->rtt_us = -1;
    p->last_seen_ms = n->clock_ms;
    snprintf(p->how, sizeof p->how, "%s", how);
    return p;
}

static void peer_add_addr(struct pn_peer *p, const struct multiaddr *a)
{
    for (size_t i = 0; i < p->n_addrs; i++)
        if (multiaddr_equal(&p->addrs[i], a)) return;
    if (p->n_addrs < PN_ADDRS) p->addrs[p->n_addrs++] = *a;
}

/* Copies what a connection tells us about a peer into its entry. */
static void peer_fill(struct pn_peer *p, const struct host_peer_info *hi, uint64_t now_ms)
{
    p->last_seen_ms = now_ms;
    p->is_connected = true;
    p->is_outbound = hi->is_outbound;
    if (!hi->is_identified) {
        if (hi->is_outbound) peer_add_addr(p, &hi->remote_addr);
        return;
    }
    p->is_identified = true;
    snprintf(p->agent, sizeof p->agent, "%s", hi->ident.agent);
    size_t off = 0;
    p->protocols[0] = 0;
    for (size_t i = 0; i < hi->ident.n_protocols; i++) {
        int w = snprintf(p->protocols + off, sizeof p->protocols - off, "%s%s", off ? "," : "",
                         hi->ident.protocols[i]);
        if (w < 0 || (size_t)w >= sizeof p->protocols - off) {
            p->protocols[off] = 0;
            break;
        }
        off += (size_t)w;
    }
    if (hi->ident.n_listen_addrs) p->n_addrs = 0;
    for (size_t i = 0; i < hi->ident.n_listen_addrs; i++)
        peer_add_addr(p, &hi->ident.listen_addrs[i]);
    if (p->n_addrs == 0 && hi->is_outbound) peer_add_addr(p, &hi->remote_addr);
}

/* ---- loop thread ------------------------------------------------------------------------- */

static void on_host_peer(void *ctx, enum host_peer_event ev, const struct host_peer_info *hi)
{
    struct p2pnode *n = ctx;
    pthread_mutex_lock(&n->mu);
    n->clock_ms = uv_now(&n->loop);
    /* A peer we did not name, nor hear of by mDNS, that we dialed: the DHT glue did. */
    struct pn_peer *p = ev == HOST_PEER_DISCONNECTED
                            ? peer_find(n, &hi->id) /* a leaving peer takes no one's place */
                            : peer_get(n, &hi->id, hi->is_outbound ? "dht" : "inbound");
    if (p) {
        if (ev == HOST_PEER_DISCONNECTED) {
            p->is_connected = false; /* the next tick sees any connection left */
            p->last_seen_ms = n->clock_ms;
        } else {
            peer_fill(p, hi, n->clock_ms);
        }
        if (ev == HOST_PEER_IDENTIFIED && p->rtt_us < 0) p->needs_ping = true;
    }
    pthread_mutex_unlock(&n->mu);
}

static void on_ping(void *ctx, int status, uint64_t rtt_us)
{
    struct pn_ping *pp = ctx;
    struct p2pnode *n = pp->n;
    if (status == 0) {
        pthread_mutex_lock(&n->mu);
        struct pn_peer *p = peer_find(n, &pp->id);
        if (p) p->rtt_us = rtt_us > INT64_MAX ? INT64_MAX : (int64_t)rtt_us;
        pthread_mutex_unlock(&n->mu);
    }
    free(pp);
}

/* Pings id at addr (with /p2p/id appended when missing): dials it if not connected. */
static void ping_peer(struct p2pnode *n, const struct peer_id *id, const struct multiaddr *addr)
{
    struct multiaddr a = *addr;
    struct peer_id has;
    if (multiaddr_peer_id(&a, &has) != 0 && multiaddr_append_p2p(&a, id) != 0) return;
    struct pn_ping *pp = malloc(sizeof *pp);
    if (!pp) return;
    pp->n = n;
    pp->id = *id;
    if (host_ping(n->host, &a, on_ping, pp) != 0) free(pp);
}

/* 127.0.0.0/8 or ::1. */
static bool is_loopback(const struct multiaddr *a)
{
    struct sockaddr_storage ss;
    if (multiaddr_to_sockaddr(a, &ss) != 0) return false;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    return ss.ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
}

/* The address to dial of an mDNS peer: its first one off loopback (a LAN peer's loopback
 * address is our own machine... or ourselves), else the first. */
static const struct multiaddr *mdns_pick_addr(const struct mdns_peer *mp)
{
    for (size_t i = 0; i < mp->n_addrs; i++)
        if (!is_loopback(&mp->addrs[i])) return &mp->addrs[i];
    return &mp->addrs[0];
}

static void on_mdns_peer(void *ctx, const struct mdns_peer *mp)
{
    struct p2pnode *n = ctx;
    if (n->is_closing || mp->n_addrs == 0) return;
    pthread_mutex_lock(&n->mu);
    struct pn_peer *p = peer_get(n, &mp->id, "mdns");
    bool dial = p && !p->is_connected;
    if (p)
        for (size_t i = 0; i < mp->n_addrs; i++) peer_add_addr(p, &mp->addrs[i]);
    pthread_mutex_unlock(&n->mu);
    if (dial) ping_peer(n, &mp->id, mdns_pick_addr(mp));
}

static void on_query_done(void *ctx, struct dht *d, uint64_t qid)
{
    (void)ctx;
    dht_query_release(d, qid);
}

/* Bootstrap rounds at 0, 1, 5, 15 s, then every 60 s: a lookup of our own ID through the
 * bootstrap peers (or, without any, through the routing table) fills the tables both ways. */
static void on_boot_timer(uv_timer_t *t)
{
    static const uint64_t delays_ms[] = {1000, 4000, 10000};
    struct p2pnode *n = t->data;
    if (n->is_closing) return;
    if (n->n_boot)
        p2p_dht_bootstrap(n->p2p, n->boot, n->n_boot, on_query_done, n);
    else if (dht_table_size(p2p_dht(n->p2p)) > 0)
        p2p_dht_find_node(n->p2p, n->id.id.bytes, n->id.id.len, on_query_done, n);
    unsigned r = n->n_boot_rounds++;
    uint64_t next = r < sizeof delays_ms / sizeof delays_ms[0] ? delays_ms[r] : 60000;
    uv_timer_start(&n->boot_timer, on_boot_timer, next, 0);
}

/* Refreshes the table from the host's connections and the DHT routing table; pings. */
static void on_tick(uv_timer_t *t)
{
    struct p2pnode *n = t->data;
    if (n->is_closing) return;
    struct host_peer_info *list = malloc(PN_LIST_CAP * sizeof *list);
    struct dht_peer *tab = malloc(P2PNODE_MAX_PEERS * sizeof *tab);
    if (!list || !tab) goto out;
    size_t n_list = host_list_peers(n->host, list, PN_LIST_CAP);
    uint8_t key[DHT_KEY_LEN];
    dht_key_of(n->id.id.bytes, n->id.id.len, key);
    struct dht *d = p2p_dht(n->p2p);
    size_t n_tab = dht_table_closest(d, key, tab, P2PNODE_MAX_PEERS);
    pthread_mutex_lock(&n->mu);
    n->clock_ms = uv_now(&n->loop);
    /* Who is still connected is settled before any newcomer is added, so that eviction
     * never takes a connected peer for a disconnected one. */
    bool *live = calloc(n->n_peers ? n->n_peers : 1, sizeof *live);
    if (!live) {
        pthread_mutex_unlock(&n->mu);
        goto out;
    }
    for (size_t i = 0; i < n_list; i++) {
        struct pn_peer *p = peer_find(n, &list[i].id);
        if (p) live[p - n->peers] = true;
    }
    for (size_t i = 0; i < n->n_peers; i++) {
        n->peers[i].is_connected = live[i];
        n->peers[i].in_table = false;
    }
    free(live);
    for (size_t i = 0; i < n_list; i++) {
        struct pn_peer *p = peer_get(n, &list[i].id, list[i].is_outbound ? "dht" : "inbound");
        if (p) peer_fill(p, &list[i], n->clock_ms);
    }
    for (size_t i = 0; i < n_tab; i++) {
        struct pn_peer *p = peer_get(n, &tab[i].id, "dht");
        if (!p) continue;
        p->in_table = true;
        if (p->n_addrs == 0)
            for (size_t j = 0; j < tab[i].n_addrs; j++) peer_add_addr(p, &tab[i].addrs[j]);
    }
    n->dht_table_size = dht_table_size(d);
    host_stats_get(n->host, &n->st.host);
    dht_stats(d, &n->st.dht);
    if (n->gh) gossip_get_stats(gossip_host_core(n->gh), &n->st.gossip);
    bool all = n->n_ticks++ % PN_PING_TICKS == 0, ping[PN_LIST_CAP];
    for (size_t i = 0; i < n_list; i++) {
        struct pn_peer *p = peer_find(n, &list[i].id);
        ping[i] = all || (p && p->needs_ping);
        if (p) p->needs_ping = false;
    }
    pthread_mutex_unlock(&n->mu);
    for (size_t i = 0; i < n_list; i++)
        if (ping[i]) ping_peer(n, &list[i].id, &list[i].remote_addr);
out:
    free(list);
    free(tab);
}

/* Runs the queued calls (loop thread). */
static void run_calls(struct p2pnode *n)
{
    for (;;) {
        pthread_mutex_lock(&n->call_mu);
        struct pn_call *c = n->calls;
        n->calls = NULL;
        n->calls_tail = NULL;
        pthread_mutex_unlock(&n->call_mu);
        if (!c) return;
        while (c) {
            struct pn_call *next = c->next;
            c->fn(n, c->arg);
            free(c);
            c = next;
        }
    }
}

static void on_call(uv_async_t *a)
{
    run_calls(a->data);
}

int p2pnode_call(struct p2pnode *n, p2pnode_call_fn fn, void *arg)
{
    struct pn_call *c = malloc(sizeof *c);
    if (!c) return MESH_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->next = NULL;
    pthread_mutex_lock(&n->call_mu);
    if (n->calls_closed) {
        pthread_mutex_unlock(&n->call_mu);
        free(c);
        return MESH_ECLOSED;
    }
    if (n->calls_tail)
        n->calls_tail->next = c;
    else
        n->calls = c;
    n->calls_tail = c;
    uv_async_send(&n->call_async); /* under the lock: the handle is not closed meanwhile */
    pthread_mutex_unlock(&n->call_mu);
    return 0;
}

struct host *p2pnode_host(struct p2pnode *n) { return n->is_closing ? NULL : n->host; }
struct p2p *p2pnode_p2p(struct p2pnode *n) { return n->is_closing ? NULL : n->p2p; }
struct gossip_host *p2pnode_gossip(struct p2pnode *n) { return n->is_closing ? NULL : n->gh; }
const struct identity *p2pnode_identity(const struct p2pnode *n) { return &n->id; }
uint64_t p2pnode_now_ms(struct p2pnode *n) { return uv_now(&n->loop); }
uv_loop_t *p2pnode_loop(struct p2pnode *n) { return &n->loop; }

/* Closes every module and handle; the loop then runs out. */
static void close_all(struct p2pnode *n)
{
    n->is_closing = true;
    /* Calls queued before now still run, seeing p2pnode_host() == NULL, so their owners
     * can release what they carry. */
    pthread_mutex_lock(&n->call_mu);
    n->calls_closed = true;
    pthread_mutex_unlock(&n->call_mu);
    run_calls(n);
    gossip_host_free(n->gh);
    n->gh = NULL;
    mdns_host_free(n->mh);
    n->mh = NULL;
    if (n->host) host_close(n->host);
    if (n->p2p) p2p_close(n->p2p);
    n->host = NULL;
    n->p2p = NULL;
    uv_close((uv_handle_t *)&n->boot_timer, NULL);
    uv_close((uv_handle_t *)&n->tick_timer, NULL);
    uv_close((uv_handle_t *)&n->stop_async, NULL);
    uv_close((uv_handle_t *)&n->call_async, NULL);
}

static void on_stop(uv_async_t *a)
{
    close_all(a->data);
}

static void *loop_main(void *arg)
{
    struct p2pnode *n = arg;
    uv_run(&n->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* ---- start / stop ------------------------------------------------------------------------- */

/* Our listen addresses for display and mDNS: an unspecified IP becomes every interface
 * address of its family (IPv6 link-local ones are skipped: they need a zone). */
static void expand_addrs(struct p2pnode *n)
{
    struct multiaddr la[P2PNODE_MAX_LISTEN];
    size_t n_la = host_listen_addrs(n->host, la, P2PNODE_MAX_LISTEN);
    uv_interface_address_t *ifs = NULL;
    int n_ifs = 0;
    if (uv_interface_addresses(&ifs, &n_ifs) != 0) n_ifs = 0;
    n->n_addrs = 0;
    for (size_t i = 0; i < n_la; i++) {
        struct sockaddr_storage ss;
        bool any4 = false, any6 = false;
        if (multiaddr_to_sockaddr(&la[i], &ss) == 0) {
            if (ss.ss_family == AF_INET)
                any4 = ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_ANY);
            else if (ss.ss_family == AF_INET6)
                any6 = IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr);
        }
        if (!any4 && !any6) {
            if (n->n_addrs < PN_MAX_ADDRS) n->addrs[n->n_addrs++] = la[i];
            continue;
        }
        for (int j = 0; j < n_ifs && n->n_addrs < PN_MAX_ADDRS; j++) {
            struct sockaddr_storage a;
            memset(&a, 0, sizeof a);
            if (any4 && ifs[j].address.address4.sin_family == AF_INET) {
                struct sockaddr_in *s4 = (struct sockaddr_in *)&a;
                *s4 = ifs[j].address.address4;
                s4->sin_port = ((struct sockaddr_in *)&ss)->sin_port;
            } else if (any6 && ifs[j].address.address6.sin6_family == AF_INET6 &&
                       !IN6_IS_ADDR_LINKLOCAL(&ifs[j].address.address6.sin6_addr)) {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a;
                *s6 = ifs[j].address.address6;
                s6->sin6_port = ((struct sockaddr_in6 *)&ss)->sin6_port;
                s6->sin6_scope_id = 0;
            } else {
                continue;
            }
            if (multiaddr_from_sockaddr((struct sockaddr *)&a, &n->addrs[n->n_addrs]) == 0)
                n->n_addrs++;
        }
    }
    if (ifs) uv_free_interface_addresses(ifs, n_ifs);
    for (size_t i = 0; i < n->n_addrs; i++) multiaddr_append_p2p(&n->addrs[i], &n->id.id);
}

static int start_modules(struct p2pnode *n, const struct p2pnode_config *cfg, char *err,
                         size_t err_cap)
{
    char text[MULTIADDR_TEXT_CAP];
    struct host_config hc = {.identity = &n->id};
    int rc = host_new(&n->loop, &hc, &n->host);
    if (rc) return err_set(err, err_cap, rc, "cannot create the libp2p host: %s", err_str(rc));
    host_set_peer_callback(n->host, on_host_peer, n);
    for (size_t i = 0; i < cfg->n_listen; i++) {
        rc = host_listen(n->host, &cfg->listen[i]);
        if (rc) {
            if (multiaddr_to_text(&cfg->listen[i], text, sizeof text)) snprintf(text, sizeof text, "?");
            return err_set(err, err_cap, rc, "cannot listen on %s: %s", text, err_str(rc));
        }
    }
    struct p2p_config pc = {.host = n->host, .dht_protocol = n->dht_protocol, .dht_server = true};
    randombytes_buf(pc.seed, sizeof pc.seed);
    rc = p2p_new(&n->loop, &pc, &n->p2p);
    if (rc) return err_set(err, err_cap, rc, "cannot start the DHT: %s", err_str(rc));
    expand_addrs(n);
    if (n->use_gossip) {
        struct gossip_config gc;
        memset(&gc, 0, sizeof gc);
        gc.id = &n->id;
        randombytes_buf(gc.seed, sizeof gc.seed);
        gc.on_message = cfg->gossip_on_message;
        gc.validate = cfg->gossip_validate;
        gc.app_score = cfg->gossip_app_score;
        gc.ud = cfg->gossip_ud;
        rc = gossip_host_new(&n->loop, n->host, &gc, &n->gh);
        if (rc) return err_set(err, err_cap, rc, "cannot start GossipSub: %s", err_str(rc));
        gossip_host_kick(n->gh);
    }
    if (n->use_mdns) {
        struct mdns_host_config mc;
        memset(&mc, 0, sizeof mc);
        mc.core.self = n->id.id;
        randombytes_buf(mc.core.seed, sizeof mc.core.seed);
        mc.on_peer = on_mdns_peer;
        mc.ctx = n;
        rc = mdns_host_new(&n->loop, &mc, &n->mh);
        if (rc) return err_set(err, err_cap, rc, "cannot start mDNS (UDP 5353): %s", err_str(rc));
        /* Announce the LAN addresses (loopback ones only when there is nothing else). */
        struct multiaddr lan[PN_MAX_ADDRS];
        size_t n_lan = 0;
        for (size_t i = 0; i < n->n_addrs; i++)
            if (!is_loopback(&n->addrs[i])) lan[n_lan++] = n->addrs[i];
        rc = n_lan ? mdns_host_set_addrs(n->mh, lan, n_lan)
                   : mdns_host_set_addrs(n->mh, n->addrs, n->n_addrs);
        if (rc) return err_set(err, err_cap, rc, "mDNS: cannot announce our addresses: %s",
                               err_str(rc));
        mdns_host_query(n->mh);
    }
    for (size_t i = 0; i < cfg->n_bootstrap; i++) {
        rc = p2p_dht_peer_from_addr(&cfg->bootstrap[i], &n->boot[n->n_boot]);
        if (rc) {
            if (multiaddr_to_text(&cfg->bootstrap[i], text, sizeof text)) snprintf(text, sizeof text, "?");
            return err_set(err, err_cap, rc, "bootstrap address %s must end in /p2p/<peer id>",
                           text);
        }
        if (peer_id_equal(&n->boot[n->n_boot].id, &n->id.id)) continue; /* ourselves */
        struct pn_peer *p = peer_get(n, &n->boot[n->n_boot].id, "bootstrap");
        if (p) {
            peer_add_addr(p, &cfg->bootstrap[i]);
            p->is_protected = true; /* named by the user: strangers never push it out */
        }
        n->n_boot++;
    }
    if (cfg->setup && (rc = cfg->setup(cfg->setup_ctx, n)) != 0)
        return err_set(err, err_cap, rc, "cannot start the mesh: %s", err_str(rc));
    return 0;
}

int p2pnode_start(const struct p2pnode_config *cfg, struct p2pnode **out, char *err,
                  size_t err_cap)
{
    *out = NULL;
    if (!cfg || !cfg->data_dir || cfg->n_listen == 0 || cfg->n_listen > P2PNODE_MAX_LISTEN ||
        cfg->n_bootstrap > P2PNODE_MAX_BOOTSTRAP)
        return err_set(err, err_cap, MESH_EINVAL, "p2p: bad configuration");
    if (sodium_init() < 0) return err_set(err, err_cap, MESH_ECRYPTO, "libsodium failed to start");
    struct p2pnode *n = calloc(1, sizeof *n);
    if (!n) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    int rc = MESH_ENOMEM;
    n->peers = calloc(P2PNODE_MAX_PEERS, sizeof *n->peers);
    n->boot = calloc(P2PNODE_MAX_BOOTSTRAP, sizeof *n->boot);
    if (!n->peers || !n->boot) {
        free(n->peers);
        free(n->boot);
        free(n);
        return err_set(err, err_cap, rc, "out of memory");
    }
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->call_mu, NULL);
    snprintf(n->dht_protocol, sizeof n->dht_protocol, "%s",
             cfg->dht_protocol ? cfg->dht_protocol : DHT_PROTOCOL_MESHLLM);
    n->use_mdns = cfg->use_mdns;
    n->use_gossip = cfg->use_gossip;
    rc = identity_load_or_create(cfg->data_dir, &n->id, err, err_cap);
    if (rc) goto fail_id;
    if (uv_loop_init(&n->loop) != 0) {
        rc = err_set(err, err_cap, MESH_EIO, "cannot create an event loop");
        goto fail_id;
    }
    uv_async_init(&n->loop, &n->stop_async, on_stop);
    n->stop_async.data = n;
    uv_async_init(&n->loop, &n->call_async, on_call);
    n->call_async.data = n;
    uv_timer_init(&n->loop, &n->boot_timer);
    n->boot_timer.data = n;
    uv_timer_init(&n->loop, &n->tick_timer);
    n->tick_timer.data = n;
    rc = start_modules(n, cfg, err, err_cap);
    if (rc) goto fail_loop;
    uv_timer_start(&n->boot_timer, on_boot_timer, 0, 0);
    uv_timer_start(&n->tick_timer, on_tick, 200, PN_TICK_MS);
    if (pthread_create(&n->thread, NULL, loop_main, n) != 0) {
        rc = err_set(err, err_cap, MESH_EIO, "cannot start the p2p thread");
        goto fail_loop;
    }
    n->has_thread = true;
    *out = n;
    return 0;
fail_loop:
    close_all(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
    uv_loop_close(&n->loop);
fail_id:
    identity_wipe(&n->id);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->call_mu);
    free(n->peers);
    free(n->boot);
    free(n);
    return rc;
}

void p2pnode_stop(struct p2pnode *n)
{
    if (!n) return;
    if (n->has_thread) {
        uv_async_send(&n->stop_async);
        pthread_join(n->thread, NULL);
    }
    uv_loop_close(&n->loop);
    identity_wipe(&n->id);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->call_mu);
    free(n->peers);
    free(n->boot);
    free(n);
}

const struct peer_id *p2pnode_peer_id(const struct p2pnode *n)
{
    return &n->id.id;
}

size_t p2pnode_listen_addrs(const struct p2pnode *n, struct multiaddr *out, size_t cap)
{
    size_t k = n->n_addrs < cap ? n->n_addrs : cap;
    memcpy(out, n->addrs, k * sizeof *out);
    return k;
}

/* ---- peer table API (any thread) ------------------------------------------------------- */

int p2pnode_peer_protect(struct p2pnode *n, const struct peer_id *id, bool is_protected)
{
    int rc = 0;
    pthread_mutex_lock(&n->mu);
    struct pn_peer *p = is_protected ? peer_get(n, id, "inbound") : peer_find(n, id);
    if (p)
        p->is_protected = is_protected;
    else if (is_protected)
        rc = peer_id_equal(id, &n->id.id) ? MESH_EINVAL : MESH_EFULL;
    pthread_mutex_unlock(&n->mu);
    return rc;
}

void p2pnode_stats(struct p2pnode *n, struct p2pnode_stats *st)
{
    pthread_mutex_lock(&n->mu);
    *st = n->st;
    st->n_peers = n->n_peers;
    st->n_protected = 0;
    for (size_t i = 0; i < n->n_peers; i++) st->n_protected += n->peers[i].is_protected;
    pthread_mutex_unlock(&n->mu);
}

/* ---- JSON (any thread) --------------------------------------------------------------------- */

static void add_addr_array(cJSON *obj, const char *name, const struct multiaddr *a, size_t n_a)
{
    char text[MULTIADDR_TEXT_CAP];
    cJSON *arr = cJSON_AddArrayToObject(obj, name);
    for (size_t i = 0; arr && i < n_a; i++)
        if (multiaddr_to_text(&a[i], text, sizeof text) == 0)
            cJSON_AddItemToArray(arr, cJSON_CreateString(text));
}

char *p2pnode_peers_json(struct p2pnode *n)
{
    char text[PEER_ID_TEXT_CAP];
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddBoolToObject(root, "enabled", true);
    if (peer_id_to_text(&n->id.id, text, sizeof text) == 0)
        cJSON_AddStringToObject(root, "peer_id", text);
    add_addr_array(root, "listen_addrs", n->addrs, n->n_addrs);
    pthread_mutex_lock(&n->mu);
    cJSON *dht = cJSON_AddObjectToObject(root, "dht");
    if (dht) {
        cJSON_AddStringToObject(dht, "protocol", n->dht_protocol);
        cJSON_AddNumberToObject(dht, "table_size", (double)n->dht_table_size);
    }
    cJSON_AddBoolToObject(root, "mdns", n->use_mdns);
    cJSON_AddBoolToObject(root, "gossip", n->use_gossip);
    cJSON *arr = cJSON_AddArrayToObject(root, "peers");
    for (size_t i = 0; arr && i < n->n_peers; i++) {
        const struct pn_peer *p = &n->peers[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(arr, o);
        if (peer_id_to_text(&p->id, text, sizeof text) == 0) cJSON_AddStringToObject(o, "id", text);
        cJSON_AddBoolToObject(o, "connected", p->is_connected);
        cJSON_AddStringToObject(o, "how", p->how);
        cJSON_AddStringToObject(o, "direction", !p->is_connected ? ""
                                                : p->is_outbound  ? "outbound"
                                                                  : "inbound");
        cJSON_AddBoolToObject(o, "in_dht", p->in_table);
        if (p->rtt_us >= 0)
            cJSON_AddNumberToObject(o, "latency_ms", (double)p->rtt_us / 1000.0);
        else
            cJSON_AddNullToObject(o, "latency_ms");
        add_addr_array(o, "addrs", p->addrs, p->n_addrs);
        cJSON_AddStringToObject(o, "agent", p->agent);
        cJSON *pr = cJSON_AddArrayToObject(o, "protocols");
        const char *s = p->protocols;
        while (pr && *s) {
            const char *e = strchr(s, ',');
            size_t len = e ? (size_t)(e - s) : strlen(s);
            char one[IDENTIFY_MAX_PROTOCOL_LEN + 1];
            if (len < sizeof one) {
                memcpy(one, s, len);
                one[len] = 0;
                cJSON_AddItemToArray(pr, cJSON_CreateString(one));
            }
            s += len + (e ? 1 : 0);
        }
    }
    pthread_mutex_unlock(&n->mu);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return json;
}
