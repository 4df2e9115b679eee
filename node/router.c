/* router.c - where a request runs, and failover when a peer dies mid-answer (router.h).
 *
 * A routed request (struct rreq) is itself a node_req: it wraps the handle of whoever
 * serves it now (this node's scheduler or a peer's infer stream, node/infer.h) and
 * remembers every token id it passed on. When that handle ends with NODE_FAIL_LOST (the peer
 * vanished or broke the protocol) or NODE_FAIL_BUSY (refused before starting), the next
 * target is asked with the same request plus the delivered ids as a continuation
 * (node/req.h), so the client's stream goes on with no token lost or repeated; a request
 * that fails on its own merits (NODE_FAIL_REFUSED, the model failing) is not retried.
 * Local models are preferred while they have a free slot; peers are ranked by node/peers.c.
 * Requests on route local (the default) never leave: they go straight to node/local.c.
 */
#include "node/router.h"


#include "core/err.h"
#include "core/log.h"
#include "node/infer.h"
#include "node/local.h"
#include "node/mesh.h"
#include "node/peers.h"
#include "node/pipeline.h"
#include "node/registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert((int)ROUTER_LOADING == (int)REGISTRY_LOADING && (int)ROUTER_READY == (int)REGISTRY_READY &&
                   (int)ROUTER_FAILED == (int)REGISTRY_FAILED,
               "router_state mirrors registry_state");

#define ROUTER_MAX_TRIES 4     /* targets asked for one request before giving up */
#define ROUTER_MAX_CONV 64     /* conversation prefixes looked up for affinity */
#define ROUTER_SPOT_RATE 0.05  /* default share of delegated greedy answers checked */
#define ROUTER_SPOT_TOKENS 32  /* tokens compared by a spot check */
#define ROUTER_SPOT_MAX 2      /* checks running at once */
#define ROUTER_UNREACHABLE_MS 10000 /* a peer we could not dial is left alone this long */
#define ROUTER_WARMUP_MS 10000 /* after start, before any announcement: 503, not 404 */

struct spot;

struct router {
    struct router_config cfg;
    pthread_rwlock_t stop_lock; /* read-held while submitting; write-held to set stopping */
    bool stopping;              /* guarded by stop_lock */
    double spot_rate;           /* share of delegated greedy answers checked again */
    pthread_mutex_t spot_mu;    /* guards the spot checks below */
    pthread_cond_t spot_cv;
    struct spot *spots;         /* checks in flight */
    int n_spots;
    uint64_t spot_rng;
    bool spot_closing;
    bool round_robin;           /* MESHLLM_ROUTER_ROUND_ROBIN=1: rotate peers (benchmarks) */
    atomic_uint rr_next;
};

int router_new(const struct router_config *cfg, struct router **out)
{
    *out = NULL;
    struct router *rt = calloc(1, sizeof *rt);
    if (!rt) return MESH_ENOMEM;
    rt->cfg = *cfg;
    pthread_rwlock_init(&rt->stop_lock, NULL);
    pthread_mutex_init(&rt->spot_mu, NULL);
    pthread_cond_init(&rt->spot_cv, NULL);
    const char *sr = getenv("MESHLLM_SPOT_CHECK");
    rt->spot_rate = sr && *sr ? strtod(sr, NULL) : ROUTER_SPOT_RATE;
    if (!(rt->spot_rate >= 0)) rt->spot_rate = 0; /* NaN, negative */
    rt->spot_rng = (uint64_t)(uintptr_t)rt ^ 0x9e3779b97f4a7c15ull;
    const char *rr = getenv("MESHLLM_ROUTER_ROUND_ROBIN");
    rt->round_robin = rr && !strcmp(rr, "1");
    *out = rt;
    return 0;
}

static void spots_drain(struct router *rt);

void router_free(struct router *rt)
{
    if (!rt) return;
    spots_drain(rt);
    pthread_cond_destroy(&rt->spot_cv);
    pthread_mutex_destroy(&rt->spot_mu);
    pthread_rwlock_destroy(&rt->stop_lock);
    free(rt);
}

struct mesh *router_mesh(const struct router *rt) { return rt->cfg.mesh; }

struct registry *router_registry(const struct router *rt) { return rt->cfg.reg; }

enum node_route router_default_route(const struct router *rt)
{
    return rt->cfg.default_route == NODE_ROUTE_DEFAULT ? NODE_ROUTE_LOCAL : rt->cfg.default_route;
}

void router_stop(struct router *rt)
{
    pthread_rwlock_wrlock(&rt->stop_lock);
    rt->stopping = true;
    pthread_rwlock_unlock(&rt->stop_lock);
    if (rt->cfg.reg) registry_stop(rt->cfg.reg);
}

/* ---- the routed request ---------------------------------------------------------------- */

struct rreq {
    struct node_req base;
    struct router *rt;
    struct node_client cl;
    struct node_gen_req req;       /* our copy, for retries */
    enum node_route route;
    uint64_t prefix[ROUTER_MAX_CONV];
    int n_prefix;
    pthread_mutex_t mu;            /* guards everything below */
    struct node_req *inner;        /* who serves it now */
    struct peer_id inner_peer;
    bool inner_is_peer, tried_local;
    bool inflight;                 /* counted in the peer table's inflight for inner_peer */
    bool finished;                 /* the end was handed to the client */
    struct peer_id tried[ROUTER_MAX_TRIES];
    int n_tried;
    int32_t *ids;                  /* delivered ids */
    int n_ids, cap_ids;
    char ran_on[NODE_RAN_ON_CAP];
    /* Handles that failed over: released with r, since releasing one inside take (where the
     * client may hold a lock its notify wants) could wait on that very notify. */
    struct node_req *stale[ROUTER_MAX_TRIES + 1];
    int n_stale;
};

static void rreq_inner_notify(void *arg)
{
    struct rreq *r = arg;
    if (r->cl.notify) r->cl.notify(r->cl.arg);
}

static bool rreq_inner_wanted(void *arg)
{
    struct rreq *r = arg;
    return !r->cl.still_wanted || r->cl.still_wanted(r->cl.arg);
}

static void ran_on_add(struct rreq *r, const char *who)
{
    size_t off = strlen(r->ran_on);
    snprintf(r->ran_on + off, sizeof r->ran_on - off, "%s%s", off ? "," : "", who);
}

/* Starts r on the best allowed target not tried yet (caller holds r->mu). 0, or the last
 * refusal in *err. */
static int rreq_start_next(struct rreq *r, struct node_error *err);

static int ids_add(struct rreq *r, const int32_t *ids, int n)
{
    if (n <= 0) return 0;
    if (r->n_ids + n > r->cap_ids) {
        int cap = (r->n_ids + n) * 2;
        int32_t *p = realloc(r->ids, (size_t)cap * sizeof *p);
        if (!p) return MESH_ENOMEM;
        r->ids = p;
        r->cap_ids = cap;
    }
    memcpy(r->ids + r->n_ids, ids, (size_t)n * sizeof *ids);
    r->n_ids += n;
    return 0;
}

static void spot_maybe_start(struct rreq *r, const char *finish);

static int rreq_take(struct node_req *base, struct node_chunk *out)
{
    struct rreq *r = (struct rreq *)base;
    pthread_mutex_lock(&r->mu);
    int rc = node_req_take(r->inner, out);
    if (rc == 0) rc = ids_add(r, out->ids, out->n_ids);
    if (rc || !out->done || r->finished) goto out;
    bool retry = out->fail == NODE_FAIL_LOST || out->fail == NODE_FAIL_BUSY;
    if (r->inflight) {
        struct peers *pt = mesh_peers(r->rt->cfg.mesh);
        peers_inflight(pt, &r->inner_peer, -1);
        r->inflight = false;
        if (out->err.code && !strcmp(out->err.code, "peer_unreachable"))
            peers_unreachable(pt, &r->inner_peer, mesh_now_ms() + ROUTER_UNREACHABLE_MS);
        peers_report(pt, &r->inner_peer,
                     out->fail == NODE_FAIL_NONE   ? PEERS_OK
                     : out->fail == NODE_FAIL_BUSY ? PEERS_BUSY
                                                   : PEERS_FAIL);
    }
    if (!retry || r->n_stale == ROUTER_MAX_TRIES) {
        r->finished = true;
        if (out->fail == NODE_FAIL_NONE) spot_maybe_start(r, out->finish_reason);
        goto out;
    }
    /* Failover: the next target continues from the delivered ids. */
    log_info("router: %s %s after %d tokens: %s", r->inner_is_peer ? "peer" : "local model",
             out->fail == NODE_FAIL_BUSY ? "busy" : "lost", r->n_ids, out->err.message);
    r->stale[r->n_stale++] = r->inner;
    r->inner = NULL;
    free(r->req.cont_ids);
    r->req.cont_ids = NULL;
    r->req.n_cont = 0;
    if (r->n_ids) {
        r->req.cont_ids = malloc((size_t)r->n_ids * sizeof *r->ids);
        if (r->req.cont_ids) {
            memcpy(r->req.cont_ids, r->ids, (size_t)r->n_ids * sizeof *r->ids);
            r->req.n_cont = r->n_ids;
        }
    }
    struct node_error e;
    memset(&e, 0, sizeof e);
    if ((r->n_ids == 0 || r->req.cont_ids) && rreq_start_next(r, &e) == 0) {
        const char *at = strrchr(r->ran_on, ',');
        log_info("router: going on at %s", at ? at + 1 : r->ran_on);
        /* The client sees one stream: this chunk is not the end. */
        out->done = false;
        out->finish_reason = NULL;
        out->fail = NODE_FAIL_NONE;
        memset(&out->err, 0, sizeof out->err);
        goto out;
    }
    /* Nobody left: the error stands (with the last refusal when there was one). The last
     * handle stays as inner so later takes repeat the end. */
    r->inner = r->stale[--r->n_stale];
    r->finished = true;
    if (e.status) out->err = e;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void rreq_cancel(struct node_req *base)
{
    struct rreq *r = (struct rreq *)base;
    pthread_mutex_lock(&r->mu);
    if (r->inner) node_req_cancel(r->inner);
    pthread_mutex_unlock(&r->mu);
}

static void rreq_release(struct node_req *base)
{
    struct rreq *r = (struct rreq *)base;
    pthread_mutex_lock(&r->mu);
    struct node_req *inner = r->inner;
    r->inner = NULL;
    bool was_peer = r->inflight;
    pthread_mutex_unlock(&r->mu);
    node_req_release(inner); /* no notify after this */
    for (int i = 0; i < r->n_stale; i++) node_req_release(r->stale[i]);
    if (was_peer) peers_inflight(mesh_peers(r->rt->cfg.mesh), &r->inner_peer, -1);
    node_gen_req_free(&r->req);
    free(r->ids);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static void rreq_ran_on(struct node_req *base, char *buf, size_t cap)
{
    struct rreq *r = (struct rreq *)base;
    pthread_mutex_lock(&r->mu);
    snprintf(buf, cap, "%s", r->ran_on);
    pthread_mutex_unlock(&r->mu);
}

static const struct node_req_ops rreq_ops = {rreq_take, rreq_cancel, rreq_release, rreq_ran_on};

/* ---- spot checks ------------------------------------------------------------------------ */

/* A delegated greedy answer asked again, to catch peers that lie (a wrong model, a cheaper
 * quantization passed off as the announced one, made-up text). The first ROUTER_SPOT_TOKENS
 * ids are recomputed here when this node has the model (trusted: a mismatch is a lie), else
 * on a second peer; when that one disagrees, a third decides (two against one). Greedy
 * decoding is deterministic for one model file on one kind of CPU; across CPUs a float
 * difference can flip a near-tie, which is why only a short prefix is compared. */
struct spot {
    struct router *rt;
    struct spot *next;
    struct node_gen_req req;
    int32_t want[ROUTER_SPOT_TOKENS];   /* what the suspect sent */
    int n_want;
    int32_t first[ROUTER_SPOT_TOKENS];  /* what a first checking peer said, when it disagreed */
    int n_first;
    bool has_first;
    struct peer_id suspect, checker, first_checker;
    struct peer_id tried[3];
    int n_tried;
    bool checker_is_peer;
    bool own_only;                      /* the request's route was own: so are its checkers */
    struct node_req *r;
    int32_t got[ROUTER_SPOT_TOKENS];
    int n_got;
};

static bool spot_start_next(struct spot *sp);

static void spot_lie(struct spot *sp, const struct peer_id *liar, const char *how)
{
    char who[64];
    if (peer_id_to_text(liar, who, sizeof who)) who[0] = 0;
    log_warn("router: spot check: peer %s's tokens differ from those of %s: counted as a lie",
             who, how);
    peers_report(mesh_peers(sp->rt->cfg.mesh), liar, PEERS_LIE);
}

/* Unlinks and frees sp (rt->spot_mu held). */
static void spot_free(struct spot *sp)
{
    struct router *rt = sp->rt;
    for (struct spot **pp = &rt->spots; *pp; pp = &(*pp)->next)
        if (*pp == sp) {
            *pp = sp->next;
            break;
        }
    rt->n_spots--;
    pthread_cond_broadcast(&rt->spot_cv);
    node_gen_req_free(&sp->req);
    free(sp);
}

static bool ids_equal(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

/* The checker's answer is complete (its notify, after its release; rt->spot_mu held). */
static void spot_judge(struct spot *sp, bool ok)
{
    if (!ok) {
        spot_free(sp); /* the check itself failed: no verdict */
        return;
    }
    bool same = ids_equal(sp->got, sp->n_got, sp->want, sp->n_want);
    if (!sp->checker_is_peer) {
        if (!same) spot_lie(sp, &sp->suspect, "this node's own model");
    } else if (sp->has_first) {
        /* a third opinion: it sides with the suspect or with the first checker */
        if (same)
            spot_lie(sp, &sp->first_checker, "two other peers");
        else if (ids_equal(sp->got, sp->n_got, sp->first, sp->n_first))
            spot_lie(sp, &sp->suspect, "two other peers");
    } else if (!same) {
        memcpy(sp->first, sp->got, sizeof sp->got);
        sp->n_first = sp->n_got;
        sp->first_checker = sp->checker;
        sp->has_first = true;
        sp->n_got = 0;
        if (!sp->rt->spot_closing && spot_start_next(sp)) return; /* ask a third */
        log_info("router: spot check: two peers disagree and no third serves the model");
    }
    spot_free(sp);
}

static void spot_notify(void *arg)
{
    struct spot *sp = arg;
    struct router *rt = sp->rt;
    pthread_mutex_lock(&rt->spot_mu); /* also waits for the submit that set sp->r */
    struct node_chunk ch;
    if (!sp->r || node_req_take(sp->r, &ch)) {
        if (sp->r) node_chunk_free(&ch);
        pthread_mutex_unlock(&rt->spot_mu);
        return;
    }
    for (int i = 0; i < ch.n_ids && sp->n_got < ROUTER_SPOT_TOKENS; i++)
        sp->got[sp->n_got++] = ch.ids[i];
    bool done = ch.done;
    bool ok = done && ch.fail == NODE_FAIL_NONE && ch.finish_reason &&
              strcmp(ch.finish_reason, "cancelled") && strcmp(ch.finish_reason, "error");
    node_chunk_free(&ch);
    if (done) {
        node_req_release(sp->r); /* from inside its own notify: both backends allow it */
        sp->r = NULL;
        spot_judge(sp, ok);
    }
    pthread_mutex_unlock(&rt->spot_mu);
}

/* Starts the next checker: this node's model, else a peer not asked yet (rt->spot_mu
 * held, so its notify cannot run before sp->r is set). */
static bool spot_start_next(struct spot *sp)
{
    struct router *rt = sp->rt;
    struct node_client cl = {.notify = spot_notify, .arg = sp};
    struct node_error e;
    bool here = false;
    if (rt->cfg.reg && !sp->has_first) {
        struct node_local_info li;
        here = node_local_info(rt->cfg.reg, sp->req.model, &li) == 0 && li.is_ready;
    }
    if (here) {
        sp->checker_is_peer = false;
        return node_local_submit(rt->cfg.reg, &sp->req, &cl, &sp->r, &e) == 0;
    }
    struct peer_id exclude[4];
    int n_ex = 0;
    exclude[n_ex++] = sp->suspect;
    for (int i = 0; i < sp->n_tried; i++) exclude[n_ex++] = sp->tried[i];
    struct peers_pick pick;
    if (sp->n_tried == 3 ||
        peers_rank(mesh_peers(rt->cfg.mesh), sp->req.model, sp->own_only, NULL, 0, exclude,
                   n_ex, mesh_now_ms(), &pick, 1) < 1)
        return false;
    sp->tried[sp->n_tried++] = pick.id;
    sp->checker = pick.id;
    sp->checker_is_peer = true;
    if (infer_client_submit(mesh_p2pnode(rt->cfg.mesh), &pick.id, &pick.addr, &sp->req, &cl,
                            &sp->r))
        return false;
    mesh_count_infer_out(rt->cfg.mesh);
    return true;
}

static double spot_rand(struct router *rt)
{
    uint64_t z = (rt->spot_rng += 0x9e3779b97f4a7c15ull); /* splitmix64, under spot_mu */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

/* r's answer from a peer ended well (r->mu held): check a share of greedy ones. */
static void spot_maybe_start(struct rreq *r, const char *finish)
{
    struct router *rt = r->rt;
    if (!r->inner_is_peer || r->n_stale > 0 || r->req.temperature != 0 || r->n_ids == 0 ||
        r->req.n_cont > 0 || rt->spot_rate <= 0 || !finish)
        return;
    pthread_mutex_lock(&rt->spot_mu);
    bool go = !rt->spot_closing && rt->n_spots < ROUTER_SPOT_MAX && spot_rand(rt) < rt->spot_rate;
    if (go) rt->n_spots++;
    pthread_mutex_unlock(&rt->spot_mu);
    if (!go) return;
    struct spot *sp = calloc(1, sizeof *sp);
    if (!sp || node_gen_req_copy(&sp->req, &r->req)) {
        free(sp);
        pthread_mutex_lock(&rt->spot_mu);
        rt->n_spots--;
        pthread_mutex_unlock(&rt->spot_mu);
        return;
    }
    sp->rt = rt;
    sp->own_only = r->route == NODE_ROUTE_OWN;
    sp->suspect = r->inner_peer;
    sp->n_want = r->n_ids < ROUTER_SPOT_TOKENS ? r->n_ids : ROUTER_SPOT_TOKENS;
    memcpy(sp->want, r->ids, (size_t)sp->n_want * sizeof *sp->want);
    /* the same request cut to the compared prefix (a stop inside it still ends it there) */
    if (sp->n_want == ROUTER_SPOT_TOKENS || !strcmp(finish, "length")) sp->req.max_tokens = sp->n_want;
    sp->req.n_logprobs = -1;
    sp->req.route = NODE_ROUTE_LOCAL;
    pthread_mutex_lock(&rt->spot_mu);
    sp->next = rt->spots;
    rt->spots = sp;
    if (!spot_start_next(sp)) spot_free(sp);
    pthread_mutex_unlock(&rt->spot_mu);
}

/* router_free: cancels the checks in flight and waits for their ends. */
static void spots_drain(struct router *rt)
{
    pthread_mutex_lock(&rt->spot_mu);
    rt->spot_closing = true;
    for (struct spot *sp = rt->spots; sp; sp = sp->next)
        if (sp->r) node_req_cancel(sp->r);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    while (rt->n_spots > 0)
        if (pthread_cond_timedwait(&rt->spot_cv, &rt->spot_mu, &until)) break;
    if (rt->n_spots > 0) log_warn("router: %d spot checks did not end; leaking them", rt->n_spots);
    pthread_mutex_unlock(&rt->spot_mu);
}

/* ---- choosing ---------------------------------------------------------------------------- */

static bool local_has(struct router *rt, const char *model, bool *has_free)
{
    struct node_local_info li;
    *has_free = false;
    if (!rt->cfg.reg || node_local_info(rt->cfg.reg, model, &li) != 0 || !li.is_ready) return false;
    *has_free = li.n_active + li.n_queued < li.n_slots;
    return true;
}

static int start_local(struct rreq *r, struct node_error *err)
{
    struct node_client cl = {rreq_inner_notify, rreq_inner_wanted, r};
    r->tried_local = true;
    int rc = node_local_submit(r->rt->cfg.reg, &r->req, &cl, &r->inner, err);
    if (rc == 0) {
        r->inner_is_peer = false;
        char who[NODE_RAN_ON_CAP]; /* "local", or a split model's stages */
        node_req_ran_on(r->inner, who, sizeof who);
        ran_on_add(r, who);
    }
    return rc;
}

/* Whether any member's announcement is live (else the mesh is not discovered yet). */
static bool mesh_heard(struct router *rt)
{
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int n = es ? peers_snapshot(mesh_peers(rt->cfg.mesh), es, PEERS_MAX) : 0;
    uint64_t now = mesh_now_ms();
    bool heard = false;
    for (int i = 0; i < n && !heard; i++)
        heard = es[i].is_member && es[i].ann_seq && es[i].ann_expires_ms > now;
    free(es);
    return heard;
}

static int rreq_start_next(struct rreq *r, struct node_error *err)
{
    struct router *rt = r->rt;
    bool has_free = false;
    bool here = !r->tried_local && local_has(rt, r->req.model, &has_free);
    if (here && (has_free || r->route == NODE_ROUTE_LOCAL || !rt->cfg.mesh)) return start_local(r, err);
    if (r->route != NODE_ROUTE_LOCAL && rt->cfg.mesh) {
        struct peers_pick picks[8];
        while (r->n_tried < ROUTER_MAX_TRIES) {
            int n = peers_rank(mesh_peers(rt->cfg.mesh), r->req.model, r->route == NODE_ROUTE_OWN,
                               r->prefix, r->n_prefix, r->tried, r->n_tried, mesh_now_ms(),
                               picks, 8);
            if (n == 0) break;
            /* the best, or (for benchmarks comparing against it) the next in turn */
            const struct peers_pick *p =
                &picks[rt->round_robin ? atomic_fetch_add(&rt->rr_next, 1) % (unsigned)n : 0];
            r->tried[r->n_tried++] = p->id;
            struct node_client cl = {rreq_inner_notify, rreq_inner_wanted, r};
            int rc = infer_client_submit(mesh_p2pnode(rt->cfg.mesh), &p->id, &p->addr, &r->req, &cl,
                                         &r->inner);
            if (rc != 0) continue;
            mesh_count_infer_out(rt->cfg.mesh);
            peers_inflight(mesh_peers(rt->cfg.mesh), &p->id, +1);
            r->inflight = true;
            r->inner_peer = p->id;
            r->inner_is_peer = true;
            ran_on_add(r, p->id_text);
            return 0;
        }
    }
    if (here) return start_local(r, err); /* queue here rather than fail */
    if (!r->tried_local && rt->cfg.reg) {
        /* here but not ready (loading, failed): its own error says why */
        int rc = start_local(r, err);
        if (rc == 0 || err->status != 404) return rc;
    }
    if (r->n_tried) {
        if (err->status) return MESH_EFULL;
        node_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                       "every node serving '%.200s' is busy or unreachable; retry shortly",
                       r->req.model);
        err->retry_after_s = 1;
        return MESH_EFULL;
    }
    if (rt->cfg.mesh && mesh_uptime_ms(rt->cfg.mesh) < ROUTER_WARMUP_MS && !mesh_heard(rt)) {
        /* just started: the peers' announcements may not have arrived yet */
        node_error_set(err, 503, "server_error", "model_loading", "model",
                       "No peer has announced '%.200s' yet; this node joined its mesh %llu ms "
                       "ago, retry in a moment.", r->req.model,
                       (unsigned long long)mesh_uptime_ms(rt->cfg.mesh));
        err->retry_after_s = 2;
        return MESH_EAGAIN;
    }
    node_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                   "The model '%.200s' does not exist on this node%s.", r->req.model,
                   r->route == NODE_ROUTE_LOCAL ? ""
                   : r->route == NODE_ROUTE_OWN ? " nor on your own devices"
                                                : " nor on any peer of the mesh");
    return MESH_ENOTFOUND;
}

/* Conversation digests of a chat request, for prefix affinity (node/peers.h). */
static int conv_digests(const struct node_gen_req *req, uint64_t *out)
{
    /* MESHLLM_ROUTER_AFFINITY=0 turns affinity off (for benchmarks comparing against it) */
    const char *env = getenv("MESHLLM_ROUTER_AFFINITY");
    if (env && !strcmp(env, "0")) return 0;
    if (req->kind != NODE_KIND_CHAT || req->n_msgs <= 0) return 0;
    int n = req->n_msgs;
    const char **roles = malloc((size_t)n * sizeof *roles);
    const char **contents = malloc((size_t)n * sizeof *contents);
    uint64_t *d = malloc((size_t)n * sizeof *d);
    int k = 0;
    if (roles && contents && d) {
        for (int i = 0; i < n; i++) {
            roles[i] = req->msgs[i].role;
            contents[i] = req->msgs[i].content;
        }
        peers_conv_digests(req->model, roles, contents, n, d);
        /* the longest prefixes are the ones worth finding: keep the last ROUTER_MAX_CONV */
        int from = n > ROUTER_MAX_CONV ? n - ROUTER_MAX_CONV : 0;
        for (int i = from; i < n; i++) out[k++] = d[i];
    }
    free(roles);
    free(contents);
    free(d);
    return k;
}

static int submit_routed(struct router *rt, const struct node_gen_req *req,
                         enum node_route route, const struct node_client *cl,
                         struct node_req **out, struct node_error *err)
{
    struct rreq *r = calloc(1, sizeof *r);
    if (!r) {
        node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return MESH_ENOMEM;
    }
    r->base.ops = &rreq_ops;
    r->rt = rt;
    r->cl = *cl;
    r->route = route;
    pthread_mutex_init(&r->mu, NULL);
    if (node_gen_req_copy(&r->req, req) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return MESH_ENOMEM;
    }
    r->n_prefix = conv_digests(req, r->prefix);
    pthread_mutex_lock(&r->mu);
    int rc = rreq_start_next(r, err);
    pthread_mutex_unlock(&r->mu);
    if (rc) {
        node_gen_req_free(&r->req);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return rc;
    }
    *out = &r->base;
    return 0;
}

static int split_refusal(struct router *rt, const struct node_gen_req *req, struct node_error *err);

int router_submit(struct router *rt, const struct node_gen_req *req, const struct node_client *cl,
                  struct node_req **out, struct node_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof *err);
    enum node_route route = req->route == NODE_ROUTE_DEFAULT ? router_default_route(rt) : req->route;
    pthread_rwlock_rdlock(&rt->stop_lock);
    int rc;
    if (rt->stopping) {
        node_error_set(err, 503, "server_error", "shutting_down", NULL,
                       "the server is shutting down");
        rc = MESH_ECLOSED;
    } else if ((rc = split_refusal(rt, req, err)) != 0) {
        /* a split model no route covers: 503 now, not a request that ends "error" */
    } else if (route != NODE_ROUTE_LOCAL && rt->cfg.mesh && req->kind != NODE_KIND_EMBEDDING) {
        rc = submit_routed(rt, req, route, cl, out, err);
    } else if (!rt->cfg.reg || registry_count(rt->cfg.reg) == 0) {
        node_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                       "The model '%.200s' does not exist on this node%s.",
                       req->model ? req->model : "",
                       req->kind == NODE_KIND_EMBEDDING ? " (embeddings are not delegated)"
                       : rt->cfg.mesh ? " (it holds no model, and on route local peers are not "
                                        "asked: choose route mesh or own)"
                                      : "");
        rc = MESH_ENOTFOUND;
    } else {
        /* local only, or embeddings (not delegated); node_local_submit does not keep req */
        rc = node_local_submit(rt->cfg.reg, req, cl, out, err);
    }
    pthread_rwlock_unlock(&rt->stop_lock);
    return rc;
}

static void model_fill(struct router *rt, struct registry_entry *e, enum registry_state st,
                       struct router_model *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", e->name);
    m->is_local = true;
    m->state = (int)st;
    if (st == REGISTRY_FAILED) snprintf(m->err, sizeof m->err, "%s", e->err);
    m->created = e->created;
    m->file_bytes = e->file_bytes;
    snprintf(m->quant, sizeof m->quant, "%s", e->quant);
    /* the syntax of the template that renders: the C renderers describe tools as Hermes */
    if (st == REGISTRY_READY && e->model) m->tool_syntax = e->chat.tool_syntax;
    for (int i = 0; i < registry_count(rt->cfg.reg); i++) {
        enum registry_state s2;
        if (registry_at(rt->cfg.reg, i, &s2) != e) continue;
        const char *dg = registry_digest(rt->cfg.reg, i);
        if (dg) snprintf(m->digest, sizeof m->digest, "%s", dg);
    }
    struct node_local_info li;
    if (st != REGISTRY_READY || node_local_info(rt->cfg.reg, e->name, &li) || !li.is_ready)
        return;
    m->has_stats = true;
    m->n_ctx = li.n_ctx;
    snprintf(m->arch, sizeof m->arch, "%s", li.arch);
    m->n_layer = li.n_layer;
    m->n_embd = li.n_embd;
    m->n_slots = li.n_slots;
    m->n_active = li.n_active;
    m->n_queued = li.n_queued;
    m->n_requests = li.n_requests;
    m->n_cancelled = li.n_cancelled;
    m->n_prompt_tokens = li.n_prompt_tokens;
    m->n_cached_tokens = li.n_cached_tokens;
    m->n_gen_tokens = li.n_gen_tokens;
    m->n_spec_drafted = li.n_spec_drafted;
    m->n_spec_accepted = li.n_spec_accepted;
    m->gen_tps = li.gen_tps;
    m->busy_s = li.busy_s;
}

/* Adds the mesh's models (live announcements of members on the default route) after the
 * n already in out; returns the new count. */
static int mesh_models(struct router *rt, struct router_model *out, int n, int cap,
                       const char *only)
{
    enum node_route route = router_default_route(rt);
    if (!rt->cfg.mesh || route == NODE_ROUTE_LOCAL) return n;
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int ne = es ? peers_snapshot(mesh_peers(rt->cfg.mesh), es, PEERS_MAX) : 0;
    uint64_t now = mesh_now_ms();
    for (int i = 0; i < ne; i++) {
        const struct peers_entry *e = &es[i];
        if (!e->is_member || !e->ann_seq || e->ann_expires_ms <= now) continue;
        if (route == NODE_ROUTE_OWN && !e->is_own) continue;
        for (int k = 0; k < e->n_models; k++) {
            const struct peers_model *pm = &e->models[k];
            if (only && strcmp(pm->name, only)) continue;
            struct router_model *m = NULL;
            for (int j = 0; j < n && !m; j++)
                if (!strcmp(out[j].name, pm->name)) m = &out[j];
            if (!m) {
                if (n == cap) continue;
                m = &out[n++];
                memset(m, 0, sizeof *m);
                snprintf(m->name, sizeof m->name, "%s", pm->name);
                m->state = ROUTER_READY;
                m->file_bytes = pm->file_bytes;
                m->n_ctx = pm->n_ctx;
                snprintf(m->quant, sizeof m->quant, "%s", pm->quant);
                snprintf(m->digest, sizeof m->digest, "%s", pm->digest);
            }
            if (m->n_where < ROUTER_MAX_WHERE)
                snprintf(m->where[m->n_where++], sizeof m->where[0], "%s", e->id_text);
        }
    }
    free(es);
    return n;
}

int router_models(struct router *rt, struct router_model *out, int cap)
{
    int n = 0;
    struct registry *reg = rt->cfg.reg;
    for (int i = 0; reg && i < registry_count(reg) && n < cap; i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(reg, i, &st);
        model_fill(rt, e, st, &out[n++]);
    }
    return mesh_models(rt, out, n, cap, NULL);
}

int router_model_get(struct router *rt, const char *name, struct router_model *out)
{
    memset(out, 0, sizeof *out);
    enum registry_state st;
    struct registry_entry *e = rt->cfg.reg ? registry_find(rt->cfg.reg, name, &st) : NULL;
    if (e) {
        model_fill(rt, e, st, out);
        mesh_models(rt, out, 1, 1, out->name); /* where else it runs */
        return 0;
    }
    return mesh_models(rt, out, 0, 1, name) == 1 ? 0 : MESH_ENOTFOUND;
}

/* ---- routes of split models -------------------------------------------------------------- */

/* The RTT and announced load of peer id_text's model (digest and range of a stage, or name
 * for a whole model) from a peer table snapshot es[ne]. */
static void stage_from_peer(const struct peers_entry *es, int ne, const char *digest,
                            const char *name, struct router_stage *s)
{
    s->rtt_ms = -1;
    for (int i = 0; i < ne; i++) {
        const struct peers_entry *p = &es[i];
        if (strcmp(p->id_text, s->peer)) continue;
        if (p->rtt_us >= 0) s->rtt_ms = (double)p->rtt_us / 1000.0;
        for (int k = 0; k < p->n_models; k++) {
            const struct peers_model *m = &p->models[k];
            bool match = digest ? !strcmp(m->digest, digest) && m->layer_begin == s->layer_begin &&
                                      m->layer_end == s->layer_end
                                : !strcmp(m->name, name) && m->n_layer == 0;
            if (!match) continue;
            s->has_load = true;
            s->n_active = m->n_active;
            s->n_slots = m->n_slots;
            s->n_queued = m->n_queued;
            break;
        }
        return;
    }
}

static void stage_from_local(struct router *rt, const char *name, struct router_stage *s)
{
    struct node_local_info li;
    s->rtt_ms = 0;
    if (node_local_info(rt->cfg.reg, name, &li) || !li.is_ready) return;
    s->has_load = true;
    s->n_active = li.n_active;
    s->n_slots = li.n_slots;
    s->n_queued = li.n_queued;
}

/* "2-3, 7-9": the missing layers as --layers would name them. */
static void gaps_text(const struct router_route *r, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < r->n_missing && off < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s%d-%d", i ? ", " : "", r->missing[i][0],
                         r->missing[i][1] - 1);
        if (w < 0) break;
        off += (size_t)w;
    }
}

/* The route of a model only peers serve (whole): the peer that would be asked first. */
static int route_remote(struct router *rt, const char *model, struct router_route *out)
{
    enum node_route route = router_default_route(rt);
    if (!rt->cfg.mesh || route == NODE_ROUTE_LOCAL || !model) return MESH_ENOTFOUND;
    struct peers_pick pick;
    if (peers_rank(mesh_peers(rt->cfg.mesh), model, route == NODE_ROUTE_OWN, NULL, 0, NULL, 0,
                   mesh_now_ms(), &pick, 1) != 1)
        return MESH_ENOTFOUND;
    snprintf(out->model, sizeof out->model, "%s", model);
    struct router_stage *s = &out->stages[out->n_stages++];
    s->is_whole = true;
    snprintf(s->peer, sizeof s->peer, "%s", pick.id_text);
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    int ne = es ? peers_snapshot(mesh_peers(rt->cfg.mesh), es, PEERS_MAX) : 0;
    stage_from_peer(es, ne, NULL, model, s);
    free(es);
    return 0;
}

/* A READY split entry's stages from its pipeline's view (rc: pipeline_view's). */
static void route_split(struct router *rt, struct registry_entry *e, const struct pipeline_view *vp,
                        int rc, struct router_route *out)
{
    const struct pipeline_view *v = vp;
    out->n_layer = v->n_layer;
    const char *digest = NULL;
    for (int i = 0; i < registry_count(rt->cfg.reg); i++) {
        enum registry_state st;
        if (registry_at(rt->cfg.reg, i, &st) == e) digest = registry_digest(rt->cfg.reg, i);
    }
    struct peers_entry *es = rt->cfg.mesh ? malloc(PEERS_MAX * sizeof *es) : NULL;
    int ne = es ? peers_snapshot(mesh_peers(rt->cfg.mesh), es, PEERS_MAX) : 0;
    for (int i = 0; i < v->n_hops && out->n_stages < ROUTER_MAX_STAGES; i++) {
        const struct pipeline_hop *h = &v->hops[i];
        struct router_stage *s = &out->stages[out->n_stages++];
        s->is_local = h->is_local;
        s->layer_begin = h->layer_begin;
        s->layer_end = h->layer_end;
        if (h->is_local) {
            stage_from_local(rt, e->name, s);
            continue;
        }
        snprintf(s->peer, sizeof s->peer, "%s", h->id_text);
        stage_from_peer(es, ne, digest, NULL, s);
    }
    free(es);
    for (int i = 0; i < v->n_gaps && i < ROUTER_MAX_GAPS; i++) {
        out->missing[i][0] = v->gaps[i].layer_begin;
        out->missing[i][1] = v->gaps[i].layer_end;
        out->n_missing++;
    }
    if (rc == 0) return;
    if (rc == MESH_EAGAIN) {
        out->state = ROUTER_ROUTE_WAIT;
        snprintf(out->why, sizeof out->why,
                 "The content hash of '%.128s' is still being computed (its stages are matched "
                 "by it); retry in a moment.", e->name);
        return;
    }
    out->state = ROUTER_ROUTE_NONE;
    char gaps[64];
    gaps_text(out, gaps, sizeof gaps);
    if (out->n_missing)
        snprintf(out->why, sizeof out->why,
                 "No route covers layers %s of '%.64s' (%d layers): no mesh member announces "
                 "them. Start a node with: meshllm serve --model FILE --layers %d-%d --join TOKEN",
                 gaps, e->name, out->n_layer, out->missing[0][0], out->missing[0][1] - 1);
    else
        snprintf(out->why, sizeof out->why,
                 "No route covers the %d layers of '%.128s': every layer is announced, but the "
                 "stages do not meet end to begin or one failed in the last %d s.",
                 out->n_layer, e->name, PIPELINE_RETRY_MS / 1000);
}

int router_route(struct router *rt, const char *model, struct router_route *out)
{
    memset(out, 0, sizeof *out);
    enum registry_state st;
    struct registry_entry *e = rt->cfg.reg && model ? registry_find(rt->cfg.reg, model, &st) : NULL;
    if (!e) return route_remote(rt, model, out);
    snprintf(out->model, sizeof out->model, "%s", e->name);
    out->is_split = e->is_split;
    out->layer_begin = e->layer_begin;
    out->layer_end = e->layer_end;
    if (st == REGISTRY_FAILED) {
        out->state = ROUTER_ROUTE_FAILED;
        snprintf(out->why, sizeof out->why, "'%.128s' failed to load: %.160s", e->name, e->err);
        return 0;
    }
    if (st != REGISTRY_READY || !registry_pin(rt->cfg.reg)) {
        out->state = ROUTER_ROUTE_WAIT;
        snprintf(out->why, sizeof out->why, "'%.128s' is %s.", e->name,
                 st == REGISTRY_READY ? "stopped: the node is shutting down" : "still loading");
        return 0;
    }
    /* the view under the pin (the pipeline lives as long as it); the rest pins on its own */
    struct pipeline_view *v = e->is_split && e->pipe ? malloc(sizeof *v) : NULL;
    int rc = v ? pipeline_view(e->pipe, v) : 0;
    registry_unpin(rt->cfg.reg);
    if (v) {
        route_split(rt, e, v, rc, out);
        free(v);
    } else if (e->is_split) {
        out->state = ROUTER_ROUTE_WAIT;
        snprintf(out->why, sizeof out->why, "'%.128s': out of memory", e->name);
    } else {
        struct router_stage *s = &out->stages[out->n_stages++];
        struct node_local_info li;
        if (node_local_info(rt->cfg.reg, e->name, &li) == 0) out->n_layer = li.n_layer;
        s->is_local = true;
        s->is_whole = true;
        s->layer_end = out->n_layer;
        stage_from_local(rt, e->name, s);
    }
    return 0;
}

/* A split model that no route covers, refused before it is queued (router_submit). */
static int split_refusal(struct router *rt, const struct node_gen_req *req, struct node_error *err)
{
    if (!rt->cfg.reg || !req->model || req->kind == NODE_KIND_EMBEDDING) return 0;
    enum registry_state st;
    struct registry_entry *e = registry_find(rt->cfg.reg, req->model, &st);
    if (!e || !e->is_split || st != REGISTRY_READY || !registry_pin(rt->cfg.reg)) return 0;
    /* the common case first: a route is kept (no copy of the peer table) */
    struct pipeline_view *v = e->pipe ? malloc(sizeof *v) : NULL;
    int vrc = v ? pipeline_view(e->pipe, v) : 0;
    registry_unpin(rt->cfg.reg);
    free(v);
    if (vrc == 0) return 0;
    struct router_route *r = malloc(sizeof *r);
    if (!r) return 0; /* the pass will say it */
    int rc = 0;
    if (router_route(rt, req->model, r) == 0 && r->state == ROUTER_ROUTE_NONE) {
        node_error_set(err, 503, "server_error", "no_route", "model", "%s", r->why);
        err->retry_after_s = 5;
        rc = MESH_ENOTFOUND;
    } else if (r->state == ROUTER_ROUTE_WAIT) {
        node_error_set(err, 503, "server_error", "model_loading", "model", "%s", r->why);
        err->retry_after_s = 2;
        rc = MESH_EAGAIN;
    }
    free(r);
    return rc;
}

int router_splits(struct router *rt, struct router_split *out, int cap)
{
    struct registry *reg = rt->cfg.reg;
    if (!reg || !registry_pin(reg)) return 0;
    int n = 0;
    for (int i = 0; i < registry_count(reg) && n < cap; i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(reg, i, &st);
        if (st != REGISTRY_READY || !e->is_split || !e->pipe) continue;
        struct pipeline_stats ps;
        pipeline_stats(e->pipe, &ps);
        struct router_split *o = &out[n++];
        memset(o, 0, sizeof *o);
        snprintf(o->model, sizeof o->model, "%s", e->name);
        o->layer_begin = e->layer_begin;
        o->layer_end = e->layer_end;
        o->n_passes = ps.n_passes;
        o->n_tokens = ps.n_tokens;
        o->n_plans = ps.n_plans;
        o->n_failures = ps.n_failures;
        o->n_recoveries = ps.n_recoveries;
        o->n_replayed = ps.n_replayed;
        o->bytes_sent = ps.bytes_sent;
        o->bytes_recv = ps.bytes_recv;
    }
    registry_unpin(reg);
    return n;
}
