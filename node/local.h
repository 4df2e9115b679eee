/* local.h - requests answered by this node's own models: template, tokens, scheduler.
 *
 * node_local_submit renders the chat template of the model (engine/chat.h), tokenizes,
 * checks the context, and submits to the model's scheduler (node/sched.h); the returned
 * handle (node/req.h) converts the scheduler's output: text pieces, token ids, logprobs with
 * their token texts. Embedding requests run their inputs one after the other and finish with
 * every vector. The infer protocol's server (node/infer.c) and the router both use this.
 * Thread rule: any thread; the registry must outlive every handle.
 */
#ifndef MESH_NODE_LOCAL_H
#define MESH_NODE_LOCAL_H

#include "node/registry.h"
#include "node/req.h"

/* Starts req on a local model. Returns 0 with *out (release with node_req_release), or a
 * negative MESH_E* code with *err filled: MESH_ENOTFOUND (404: no such model here),
 * MESH_EAGAIN (503: loading or failed to load), MESH_ERANGE (413: context),
 * MESH_EFULL (429: queue full), MESH_EINVAL (400: the template refuses the roles),
 * MESH_ECLOSED (503: shutting down). On 429, err->retry_after_s is 1.
 * Embeddings: take collects each finished input and submits the next. */
int node_local_submit(struct registry *reg, const struct node_gen_req *req,
                      const struct node_client *cl, struct node_req **out,
                      struct node_error *err);

/* What the router needs to know of a local model. */
struct node_local_info {
    bool is_ready;     /* loaded and serving */
    int n_slots, n_active, n_queued, queue_cap, n_ctx;
    double gen_tps;    /* measured generation speed (tokens/s, recent window; 0 unknown) */
    /* counters since start (sched_stats) and the model's shape, for /metrics and status */
    uint64_t n_requests, n_cancelled, n_prompt_tokens, n_cached_tokens, n_gen_tokens;
    uint64_t n_spec_drafted, n_spec_accepted; /* speculative decoding's proposals, kept */
    double busy_s;
    char arch[32];
    int n_layer, n_embd;
};
/* Fills *out for model name (zeroes, is_ready false, while loading, failed or stopped).
 * 0, or MESH_ENOTFOUND when reg does not have it. */
int node_local_info(struct registry *reg, const char *model, struct node_local_info *out);

#endif
