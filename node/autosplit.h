/* autosplit.h - deciding who holds which layers of a split model, and asking them.
 *
 * The pure part: a GGUF's bytes per layer (autosplit_sizes_read), how many layers fit in
 * some memory (autosplit_fit: `run --mesh` with a file larger than free RAM), and the
 * split of missing layers over peers in proportion to their free memory x measured speed,
 * none given more than fits it (autosplit_assign).
 * The driver (autosplit_start): a thread that, every AUTOSPLIT_TICK_MS, looks at each split
 * model with auto-split on whose route has gaps (pipeline_view), picks the members that
 * announce accept_stages, assigns them the missing layers and asks each on
 * /meshllm/stageload/1 to load its range (node/stageload.h); a peer that refuses (no such
 * file, not enough memory) is not asked again for AUTOSPLIT_RETRY_MS and the rest are
 * reassigned at the next tick. The same loop replaces a stage that left (its layers are a
 * gap again), and a pass whose stage fails with no replacement asks it to load that
 * range at once (autosplit_fill), so the pass recovers instead of failing. docs/SPLIT.md,
 * "Auto-split".
 * Thread rule: the pure functions anywhere; start/stop/free from the service's thread;
 * autosplit_fill from a scheduler's worker.
 */
#ifndef MESH_NODE_AUTOSPLIT_H
#define MESH_NODE_AUTOSPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTOSPLIT_TICK_MS 500
#define AUTOSPLIT_RETRY_MS 30000 /* a peer that refused or failed is skipped this long */
#define AUTOSPLIT_MAX_PEERS 32
/* A peer is given layers whose bytes are at most this share of its free memory (the rest
 * is for its KV cache, scratch and everything else it runs). */
#define AUTOSPLIT_MEM_SHARE 0.8

/* Bytes of a GGUF's tensors per layer ("blk.N." names) into *layer_bytes (malloc'd,
 * *n_layer entries; free()), and of every other tensor (embedding, output head, norms)
 * into *shared. 0, or the loader's MESH_E* code with a sentence in err. */
int autosplit_sizes_read(const char *path, uint64_t **layer_bytes, int *n_layer,
                         uint64_t *shared, char *err, size_t err_cap);

/* How many leading layers of layer_bytes[n_layer] fit beside shared bytes in mem bytes
 * (times AUTOSPLIT_MEM_SHARE): n_layer when the whole model fits, 0 when not even one. */
int autosplit_fit(const uint64_t *layer_bytes, int n_layer, uint64_t shared, uint64_t mem);

struct autosplit_cand {
    uint64_t mem_free;   /* bytes it announces */
    double speed;        /* its measured speed (any unit, the same for all; <= 0: 1) */
};
struct autosplit_range {
    int cand;            /* index into the candidates */
    int layer_begin, layer_end;
};
/* Splits layers [begin, end) into contiguous ranges, in layer order, over the candidates
 * in the order given: each gets a share of the layers' bytes in proportion to mem_free x
 * speed, never more than AUTOSPLIT_MEM_SHARE of its mem_free; a candidate whose share
 * rounds to no layer is skipped. Writes at most cap ranges; returns how many, or
 * MESH_EFULL when their memory cannot hold every layer, MESH_EINVAL for a bad range. */
int autosplit_assign(const uint64_t *layer_bytes, int begin, int end,
                     const struct autosplit_cand *c, int n, struct autosplit_range *out, int cap);

/* ---- the driver -------------------------------------------------------------------------- */

struct registry;
struct mesh;
struct autosplit_config {
    struct registry *reg;
    struct mesh *mesh;
};
struct autosplit;
int autosplit_start(const struct autosplit_config *cfg, struct autosplit **out);
/* Stops the thread; requests in flight, and an autosplit_fill, give up soon (the struct
 * stays usable: autosplit_fill returns at once). NULL is fine. */
void autosplit_stop(struct autosplit *a);
/* autosplit_stop, then frees it (no pass may be using it: registry_set_autosplit(NULL)
 * first). NULL is fine. */
void autosplit_free(struct autosplit *a);
/* Recovery (pipeline.c, on the scheduler's worker during a pass): the layers of registry
 * entry reg_index that no live member outside exclude[n_exclude] announces are assigned to
 * members that accept stages (exclude left out) and loaded now, on the caller's thread;
 * then it waits until their announcements cover them. At most timeout_ms in all. 0 (the
 * layers are announced: plan again), MESH_ENOTFOUND (nobody could take them), MESH_ECLOSED
 * (interrupted), MESH_ETIMEOUT. */
struct peer_id;
int autosplit_fill(struct autosplit *a, int reg_index, const struct peer_id *exclude,
                   int n_exclude, int timeout_ms);

struct autosplit_stats {
    uint64_t n_asked;      /* stageload requests sent */
    uint64_t n_loaded;     /* answered: loaded (or already held) */
    uint64_t n_refused;    /* answered with a refusal, or failed */
};
void autosplit_stats(struct autosplit *a, struct autosplit_stats *out);

#endif
