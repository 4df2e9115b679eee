/* pipeline.h - a split model on the requesting node: the planner that picks stages for the
 * layers this node lacks, and the forward pass that runs a batch through them.
 *
 * A node serving a model with `--layers A-B` (or `none`) holds the token embedding and the
 * output head itself, so token ids and text never leave it; the scheduler's worker calls
 * this pipeline's sched_forward: embedding -> every hop of the route in layer order (this
 * node's own range on its context, other ranges on peers over /meshllm/stage/1) -> head.
 * The route is planned from the peers table (members announcing the model's content hash
 * with a layer range; node/peers.h peers_stages), kept while it works, and planned again
 * without the peer that failed when a stage fails. Each scheduler slot is one session on
 * each remote stage. Recovery: a stage that fails mid-pass (stream lost, reset, busy,
 * closing, timeout) is replaced within the same pass by the members that now cover its
 * layers; the pipeline keeps every slot's token history and replays it as prefill through
 * the new stages (the earlier hops recompute their inputs), then runs the batch again, so
 * the scheduler sees one slow pass instead of an error. Docs: docs/SPLIT.md. Not here:
 * speculative decoding, a stage serving part of its range.
 * Thread rule: the forward's functions run on the scheduler's worker; pipeline_interrupt,
 * pipeline_detach and the describe function from any thread.
 */
#ifndef MESH_NODE_PIPELINE_H
#define MESH_NODE_PIPELINE_H

#include "net/multiaddr.h"
#include "net/peer_id.h"
#include "node/peers.h"
#include "node/sched.h"

#include <stdbool.h>
#include <stdint.h>

#define PIPELINE_MAX_HOPS 16
/* What an extra hop costs in the planner's score (ms): fewer, longer stages win ties. */
#define PIPELINE_HOP_COST_MS 5.0
/* A stage that failed is not planned again for this long. */
#define PIPELINE_RETRY_MS 10000
/* With --auto-split, how long a pass whose stage left waits for a member to load its
 * layers (autosplit_fill) before its requests end with an error. */
#define PIPELINE_AUTOSPLIT_WAIT_MS 120000
/* Replacements tried within one pass before its requests end with an error. */
#define PIPELINE_RECOVER_MAX 3

struct pipeline_hop {
    bool is_local;                /* this node's own range */
    int layer_begin, layer_end;   /* [begin, end) */
    struct peer_id id;            /* remote hops */
    char id_text[64];
    struct multiaddr addr;
};

/* The planner (pure): a route of contiguous ranges covering [0, n_layer), in layer order,
 * from the candidates (peers_stages, best first) and this node's own range [local_begin,
 * local_end) (empty: none), of least total score (each remote hop costs its score plus
 * PIPELINE_HOP_COST_MS; the local one nothing). Returns the number of hops written to out,
 * MESH_ENOTFOUND when no combination covers every layer, MESH_ERANGE past cap hops. */
int pipeline_plan(const struct peers_stage *cands, int n_cands, int n_layer, int local_begin,
                  int local_end, struct pipeline_hop *out, int cap);

struct registry;
struct model;

struct pipeline_config {
    const struct model *m;
    struct registry *reg;         /* the model's content hash and the mesh, through it */
    int reg_index;
    int layer_begin, layer_end;   /* this node's layers; begin == end: none */
    int n_seq;                    /* the scheduler's slots */
};

struct pipeline;
int pipeline_new(const struct pipeline_config *cfg, struct pipeline **out);
/* Interrupts calls in flight (they fail soon) and frees the route. NULL is fine. */
void pipeline_free(struct pipeline *pl);
/* The scheduler's forward (valid as long as pl). */
const struct sched_forward *pipeline_forward(struct pipeline *pl);
/* on: calls waiting for a stage give up within 100 ms (the scheduler or the mesh is about
 * to stop); off again afterwards. */
void pipeline_interrupt(struct pipeline *pl, bool on);
/* The mesh is going away: close the route's streams now (node still running) and forget
 * the route. Called with no pass running (registry_set_mesh holds the mesh lock). */
void pipeline_detach(struct pipeline *pl);
/* The current route (planned when there is none yet and it can be); returns hops, 0. */
int pipeline_route(struct pipeline *pl, struct pipeline_hop *out, int cap);

struct pipeline_stats {
    uint64_t n_passes;            /* batches run through the route */
    uint64_t n_plans;             /* routes planned */
    uint64_t n_failures;          /* stage failures seen (recovered ones included) */
    uint64_t n_recoveries;        /* failed stages replaced within their pass */
    uint64_t n_replayed;          /* positions replayed to rebuild the replacements' KV */
    uint64_t n_tokens;            /* batch rows (tokens) the passes carried */
    uint64_t bytes_sent, bytes_recv; /* on every route's stage streams so far */
};
void pipeline_stats(struct pipeline *pl, struct pipeline_stats *out);

/* Layers [layer_begin, layer_end) that nobody holds. */
struct pipeline_gap {
    int layer_begin, layer_end;
};
#define PIPELINE_MAX_GAPS 8
/* The layers of [0, n_layer) that neither a candidate (peers_stages) nor this node's range
 * [local_begin, local_end) holds, as ranges in layer order into out[cap] (pure). Returns
 * how many (0: every layer is held by someone; the planner may still find no chain when
 * ranges overlap without meeting end to begin), at most cap. */
int pipeline_missing(const struct peers_stage *cands, int n_cands, int n_layer, int local_begin,
                     int local_end, struct pipeline_gap *out, int cap);

/* A split model's route as a user is shown it (meshllm route, the console, the API's 503). */
struct pipeline_view {
    int n_layer;                  /* the model's */
    int layer_begin, layer_end;   /* this node's (equal: none) */
    int n_hops;                   /* the route, in layer order; 0: none */
    struct pipeline_hop hops[PIPELINE_MAX_HOPS];
    int n_gaps;                   /* no route: the layers no live member announces */
    struct pipeline_gap gaps[PIPELINE_MAX_GAPS];
};
/* Fills out with the route the next request would use: the kept one, else one planned now
 * (not while a pass runs: then the pass's). 0 (a route), MESH_ENOTFOUND (none: gaps names
 * the missing layers; no gap means every layer is announced but no chain of usable stages
 * covers them, e.g. one failed in the last PIPELINE_RETRY_MS), MESH_EAGAIN (the model's
 * content hash is not computed yet, so its stages cannot be matched). Any thread; never
 * waits for a pass. */
int pipeline_view(struct pipeline *pl, struct pipeline_view *out);

#endif
