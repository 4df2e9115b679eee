/* service.h - a node's models and mesh as one object: what `serve`, `run` and `chat` share.
 *
 * service_open builds the registry (node/registry.h) with the models, whole or split
 * (`--layers`), and, with p2p on, starts the node in its mesh (node/mesh.h), which gives
 * the split models' pipelines their stages and serves this node's ranges to members.
 * serve then starts the loader in the background and puts the router and HTTP server on
 * top; run and chat load synchronously, wait for a route that covers their split model
 * (service_route_wait) and generate through its scheduler, so a split model runs through
 * the very code paths serve uses (docs/SPLIT.md). With auto_split the service also asks
 * peers to load the layers nobody holds (node/autosplit.h); with accept_stages it loads
 * ranges that members ask for (/meshllm/stageload/1).
 * Not here: HTTP, the router, printing (the commands do it).
 * Thread rule: open, load, route_wait and close from one thread (the command's main);
 * the getters from any thread.
 */
#ifndef MESH_NODE_SERVICE_H
#define MESH_NODE_SERVICE_H

#include "node/mesh.h"
#include "node/registry.h"
#include "node/sched.h"

#include <stdbool.h>
#include <stddef.h>

struct service_config {
    const struct sched_params *sp;  /* every model's scheduler (and stage engine) */
    const char *const *models;      /* paths or names (registry_resolve) */
    int n_models;
    const char *const *aliases;     /* NULL, or [n_models]: the API name of each (NULL: its
                                       file's name) */
    const char *chat_template;      /* NULL, or every model's chat template instead of its
                                       own (registry_set_chat_template) */
    bool has_layers;                /* every model is split: this node holds [begin, end) */
    int layer_begin, layer_end;     /* begin == end: none (embedding and head only) */
    bool p2p;                       /* start the node in its mesh */
    struct mesh_config mesh;        /* .reg is filled in by service_open */
    bool auto_split;                /* ask peers to load the layers nobody holds */
    bool accept_stages;             /* load ranges that members ask for */
};

struct service;
/* Adds the models and starts the mesh (when cfg->p2p). 0, or a MESH_E* code with a
 * sentence in err (the model that cannot be resolved, the mesh that cannot start). */
int service_open(const struct service_config *cfg, struct service **out, char *err,
                 size_t err_cap);
struct registry *service_registry(struct service *s);
struct mesh *service_mesh(struct service *s); /* NULL when p2p is off */

/* Loads every model on a background thread (serve). */
int service_load_start(struct service *s);
/* Loads every model now, then computes their content hashes (split models are matched to
 * their stages by them). 0, or the first model's failure with its reason in err. */
int service_load_wait(struct service *s, char *err, size_t err_cap);

/* Waits until a route covers the split model of entry i (its layers this node lacks are
 * announced by live members), at most timeout_ms; prints "meshllm: <cmd>: waiting ..."
 * once to stderr when it has to wait. 0 (a route: the next pass uses it), MESH_ETIMEOUT
 * with err naming the missing layers and the --layers to start a node with, MESH_EINVAL
 * (entry i is not a split model). */
int service_route_wait(struct service *s, int i, int timeout_ms, const char *cmd, char *err,
                       size_t err_cap);

/* Stops the mesh, then the schedulers, and frees the models. NULL is fine. Callers free
 * what they built on top (router, HTTP) first. */
void service_close(struct service *s);

#endif
