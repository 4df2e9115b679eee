/* router.h - where a request runs: this node's model, or an admitted peer's.
 *
 * router_submit is the one entry point of a generation request (api/ calls it). It honours
 * the request's route (node/req.h: local, own, mesh; DEFAULT takes the node's configured
 * route): local first when the model is here and has a free slot, else the best peer that
 * announces the model (RTT, queue depth, measured speed, reputation, prefix affinity), and
 * on a peer that fails before or during the answer, the next one (failover: the tokens
 * already delivered go along as a continuation, node/req.h). Details: docs/MESH.md.
 * Thread rule: router_* may be called from any thread after router_new.
 */
#ifndef MESH_NODE_ROUTER_H
#define MESH_NODE_ROUTER_H

#include "node/req.h"

#include <stdint.h>

struct mesh;
struct registry; /* node/registry.h; not included, so api/ sees no engine header */

struct router_config {
    struct registry *reg;        /* this node's models (may hold none: a lite node) */
    struct mesh *mesh;           /* the mesh (node/mesh.h), NULL when p2p is off */
    enum node_route default_route; /* NODE_ROUTE_DEFAULT here means local */
};

struct router;
int router_new(const struct router_config *cfg, struct router **out);
void router_free(struct router *rt);
enum node_route router_default_route(const struct router *rt);
/* This node's registry (the store's load-on-first-request adds to it: node/modelserve.h). */
struct registry *router_registry(const struct router *rt);
/* The mesh the router delegates to (node/mesh.h), NULL when p2p is off. */
struct mesh *router_mesh(const struct router *rt);

/* Starts req (copied; the caller keeps ownership). 0 with *out, or a MESH_E* code with
 * *err filled (node_local_submit's codes; 404 also when no peer on the allowed route serves
 * the model; 429 with retry_after_s when this node and every peer are full). */
int router_submit(struct router *rt, const struct node_gen_req *req, const struct node_client *cl,
                  struct node_req **out, struct node_error *err);

/* Stops this node's schedulers (unfinished requests end "cancelled", their clients are
 * notified) and refuses new requests with 503 shutting_down. Models stay loaded. */
void router_stop(struct router *rt);

/* A model's state as the API shows it (the values of enum registry_state). */
enum router_state { ROUTER_LOADING = 0, ROUTER_READY = 1, ROUTER_FAILED = 2 };

/* A model as the API lists it (/v1/models, /api/tags, /node/status, /metrics). */
#define ROUTER_MAX_WHERE 8
struct router_model {
    char name[128];
    bool is_local;             /* loaded here (state below) */
    int state;                 /* enum router_state when is_local */
    char err[256];             /* why loading failed */
    int64_t created;           /* unix seconds */
    uint64_t file_bytes;
    char quant[16];            /* "Q4_0", ... ("" unknown) */
    int n_ctx;
    char digest[65];           /* hex content hash ("" unknown) */
    int tool_syntax;           /* enum toolcall_syntax its template teaches (HERMES unknown) */
    int n_where;               /* peers that serve it */
    char where[ROUTER_MAX_WHERE][64]; /* their peer IDs */
    /* local and READY (not stopped): the scheduler's numbers and the model's shape */
    bool has_stats;
    char arch[32];
    int n_layer, n_embd, n_slots, n_active, n_queued;
    uint64_t n_requests, n_cancelled, n_prompt_tokens, n_cached_tokens, n_gen_tokens;
    uint64_t n_spec_drafted, n_spec_accepted;
    double gen_tps, busy_s;
};
/* Local models then mesh models (each name once) into out[cap]; returns how many. */
int router_models(struct router *rt, struct router_model *out, int cap);
/* One model by name (the registry's matching: API name, ":latest" tag, file name, path).
 * 0, or MESH_ENOTFOUND. */
int router_model_get(struct router *rt, const char *name, struct router_model *out);

/* ---- split models: their routes (meshllm route, the console, /metrics) ------------------ */

enum router_route_state {
    ROUTER_ROUTE_OK = 0,       /* stages below cover every layer */
    ROUTER_ROUTE_NONE = 1,     /* no route: missing names the layers nobody announces */
    ROUTER_ROUTE_WAIT = 2,     /* loading, or its content hash is being computed */
    ROUTER_ROUTE_FAILED = 3,   /* the model failed to load (why says why) */
};
#define ROUTER_MAX_STAGES 16
#define ROUTER_MAX_GAPS 8
struct router_stage {
    bool is_local;             /* this node's own layers */
    bool is_whole;             /* a whole model (not split): all its layers */
    int layer_begin, layer_end; /* [begin, end) */
    char peer[64];             /* the stage's peer ID ("" when local) */
    double rtt_ms;             /* last ping; -1 unknown, 0 local */
    bool has_load;             /* the numbers below are known (announced or local) */
    int n_active, n_slots, n_queued;
};
struct router_route {
    char model[128];
    bool is_split;             /* served here as a pipeline (serve --layers) */
    int state;                 /* enum router_route_state */
    int n_layer;               /* 0 when unknown (a model only peers serve whole) */
    int layer_begin, layer_end; /* this node's range of a split model (equal: none) */
    int n_stages;
    struct router_stage stages[ROUTER_MAX_STAGES];
    int n_missing;             /* ROUTER_ROUTE_NONE: [begin, end) ranges nobody holds */
    int missing[ROUTER_MAX_GAPS][2];
    char why[320];             /* for a user: what is wrong and what to do ("" when OK) */
};
/* The route a generation of model would take now, without running one: a split model's
 * stages (the kept route, else one planned now), a whole local model's one local stage, or
 * for a model only peers serve, the peer that would be asked first. 0, or MESH_ENOTFOUND
 * (neither this node nor a peer on the default route has it). */
int router_route(struct router *rt, const char *model, struct router_route *out);

/* A split model's pipeline counters (node/pipeline.h pipeline_stats), for /metrics. */
struct router_split {
    char model[128];
    int layer_begin, layer_end;   /* this node's */
    uint64_t n_passes, n_tokens, n_plans, n_failures, bytes_sent, bytes_recv;
    uint64_t n_recoveries, n_replayed;
};
/* The READY split models of this node into out[cap]; returns how many. Plans nothing. */
int router_splits(struct router *rt, struct router_split *out, int cap);

#endif
