/* router.c - where a request runs (see router.h). For now LOCAL ONLY: every request goes to
 * this node's models (node/local.c); the model list is the registry's. Peers, routes and
 * failover come with node/mesh.h; the entry points stay the same.
 */
#include "node/router.h"

#include "core/err.h"
#include "node/local.h"
#include "node/registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert((int)ROUTER_LOADING == (int)REGISTRY_LOADING && (int)ROUTER_READY == (int)REGISTRY_READY &&
                   (int)ROUTER_FAILED == (int)REGISTRY_FAILED,
               "router_state mirrors registry_state");

struct router {
    struct router_config cfg;
    pthread_rwlock_t stop_lock; /* read-held while submitting; write-held to set stopping */
    bool stopping;              /* guarded by stop_lock */
};

int router_new(const struct router_config *cfg, struct router **out)
{
    *out = NULL;
    struct router *rt = calloc(1, sizeof *rt);
    if (!rt) return MESH_ENOMEM;
    rt->cfg = *cfg;
    pthread_rwlock_init(&rt->stop_lock, NULL);
    *out = rt;
    return 0;
}

void router_free(struct router *rt)
{
    if (!rt) return;
    pthread_rwlock_destroy(&rt->stop_lock);
    free(rt);
}

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

int router_submit(struct router *rt, const struct node_gen_req *req, const struct node_client *cl,
                  struct node_req **out, struct node_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof *err);
    pthread_rwlock_rdlock(&rt->stop_lock);
    int rc;
    if (rt->stopping) {
        node_error_set(err, 503, "server_error", "shutting_down", NULL,
                       "the server is shutting down");
        rc = MESH_ECLOSED;
    } else if (!rt->cfg.reg) {
        node_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                       "The model '%.200s' does not exist on this node.",
                       req->model ? req->model : "");
        rc = MESH_ENOTFOUND;
    } else {
        /* every route includes this device; node_local_submit does not keep req */
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
    m->gen_tps = li.gen_tps;
    m->busy_s = li.busy_s;
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
    return n;
}

int router_model_get(struct router *rt, const char *name, struct router_model *out)
{
    memset(out, 0, sizeof *out);
    enum registry_state st;
    struct registry_entry *e = rt->cfg.reg ? registry_find(rt->cfg.reg, name, &st) : NULL;
    if (!e) return MESH_ENOTFOUND;
    model_fill(rt, e, st, out);
    return 0;
}
