/* registry.h - the models a node serves: resolved by path or by name, loaded in the background.
 *
 * A model is named by a file path (any path to a .gguf) or by a name looked up in the models
 * folder ($MESHLLM_MODELS, else ~/.meshllm/models): NAME, then NAME.gguf. Its API name is the
 * file name without ".gguf". Entries are added before loading starts; loading runs on a
 * background thread so the API can answer 503 ("loading") meanwhile. Each loaded model gets a
 * scheduler (node/sched.h).
 * Thread rule: add entries and start loading from one thread; lookups from any thread (an
 * entry's fields are fixed once its state is READY or FAILED, which is published atomically).
 */
#ifndef MESH_NODE_REGISTRY_H
#define MESH_NODE_REGISTRY_H

#include "node/sched.h"

#include "engine/chat.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum registry_state { REGISTRY_LOADING = 0, REGISTRY_READY = 1, REGISTRY_FAILED = 2 };

struct registry_entry {
    char name[128];
    char path[4096];
    char err[256];        /* why loading failed */
    int64_t created;      /* file modification time, unix seconds */
    uint64_t file_bytes;
    char quant[16];       /* READY only: the file type ("Q4_K_M", "F16"; "" unknown) */
    struct model *model;  /* READY only */
    struct chat_setup chat; /* READY only: how its conversations are rendered */
    struct sched *sched;  /* READY only */
    /* A split model (`serve --layers`): this node holds layers [layer_begin, layer_end)
     * (begin == end: none, the embedding and head only); its scheduler runs through
     * pipe (node/pipeline.h) and, with a non-empty range, stage serves the range to peers
     * (node/stage.h). Fixed at registry_add_split; pipe and stage READY only. */
    bool is_split;
    bool auto_split;      /* --auto-split: ask members to load the layers nobody serves */
    int layer_begin, layer_end;
    struct pipeline *pipe;
    struct stage_engine *stage;
};

struct registry;
int registry_new(const struct sched_params *sp, struct registry **out);
/* The SHA-256 of entry i's file in 64 hex digits (as Ollama's digests and sha256sum print
 * it), or NULL until the loader has hashed it: after every model is READY the loader thread
 * reads each file once more in the background. Any thread. */
const char *registry_digest(struct registry *r, int i);
/* The SHA-256 of the file at path as 64 hex digits into hex. Reads it all; gives up when
 * *stop turns true (stop may be NULL). 0, MESH_EIO, MESH_ENOMEM, MESH_ECANCELED. */
int registry_file_sha256(const char *path, char hex[65], const atomic_bool *stop);
/* Stops every scheduler now (unfinished requests end "cancelled"); models stay loaded so
 * their tokenizers remain usable until registry_free. Callers must not submit afterwards. */
void registry_stop(struct registry *r);
/* Keeps the schedulers from being stopped (freed) until registry_unpin, so an entry's sched
 * may be used meanwhile. Returns false (nothing held) once registry_stop has run. Any
 * thread; pins may nest across threads but not wait on registry_stop. */
bool registry_pin(struct registry *r);
void registry_unpin(struct registry *r);
/* Stops every scheduler (unfinished requests end "cancelled"), frees models. */
void registry_free(struct registry *r);

/* Folder searched for model names (static buffer). */
const char *registry_models_dir(void);
/* Resolves spec (path or name) to an existing file path and an API name. MESH_ENOTFOUND with
 * a message naming the places searched. */
int registry_resolve(const char *spec, char *path, size_t path_cap, char *name, size_t name_cap,
                     char *err, size_t err_cap);
/* Adds a model (state LOADING). MESH_EINVAL for a duplicate name, MESH_EFULL past 32 models. */
int registry_add(struct registry *r, const char *spec, char *err, size_t err_cap);
/* Load events for serve's display: progress while entry `name` packs its weights (the
 * figures of engine/model.h model_progress_fn), then ready with the load time in seconds.
 * Called from the loader threads (a store model's own thread too): may run concurrently
 * for two models. Set before registry_load_start. */
struct registry_load_hook {
    void (*progress)(void *arg, const char *name, int n_done, int n_total, uint64_t bytes_done,
                     uint64_t bytes_total);
    void (*ready)(void *arg, const char *name, const struct model *m, double load_s);
    void *arg;
};
void registry_set_load_hook(struct registry *r, const struct registry_load_hook *h);
/* Gives entry i the API name name (serve --alias), before loading starts (one thread).
 * MESH_EINVAL for an empty, too long or duplicate name. */
int registry_rename(struct registry *r, int i, const char *name, char *err, size_t err_cap);
/* --chat-template for the models loaded from now on: a C family, a built-in Jinja template
 * or a .jinja file (engine/chat.h); NULL or "" = each model's own template. Call before
 * loading; a template that cannot be used fails the model's load with that reason. */
void registry_set_chat_template(struct registry *r, const char *name);
/* Adds a model of which this node holds only layers [layer_begin, layer_end) (equal: none;
 * checked against the model at load). MESH_EINVAL also for a negative or reversed range. */
int registry_add_split(struct registry *r, const char *spec, int layer_begin, int layer_end,
                       char *err, size_t err_cap);
/* Computes the content hash of every READY entry that has none yet, now (tests; serve
 * lets the loader thread do it). */
void registry_hash_wait(struct registry *r);
/* The mesh through which split models reach their stages: mesh_start sets it, mesh_stop
 * clears it (NULL) first, which interrupts passes in flight, waits for them and closes the
 * pipelines' streams while the node still runs. */
struct mesh;
void registry_set_mesh(struct registry *r, struct mesh *m);
/* The mesh, or NULL, held (read lock) until registry_mesh_release; always release. */
struct mesh *registry_mesh_hold(struct registry *r);
void registry_mesh_release(struct registry *r);
/* The auto-split driver (node/autosplit.h) that a pass may ask to load a lost stage's
 * layers elsewhere (recovery): set by the service after autosplit_start, cleared (NULL)
 * before autosplit_free, which waits for passes in flight. _held reads it while the caller
 * holds registry_mesh_hold. */
struct autosplit;
void registry_set_autosplit(struct registry *r, struct autosplit *a);
struct autosplit *registry_autosplit_held(struct registry *r);
/* The stage server's submit function (node/stage.h stage_submit_fn; ctx is the registry):
 * hands j to the stage engine of the READY split entry whose content hash and range j
 * names. STAGE_OK, or STAGE_ERR_MODEL / _RANGE / _CLOSING (j not consumed). */
struct stage_job;
int registry_stage_submit(void *reg, struct stage_job *j);
/* Adds spec (any thread, also while serving) and loads it on a thread of its own: the
 * model store's load on first request. sha256_hex: the file's SHA-256 when already known
 * (the store verified it; 64 hex digits), else NULL and the loader hashes the file.
 * 0 also when a model of that name is already there. MESH_EFULL, MESH_ENOTFOUND,
 * MESH_ECLOSED (registry_stop has begun). */
int registry_add_load(struct registry *r, const char *spec, const char *sha256_hex, char *err,
                      size_t err_cap);
/* Like registry_add_load for a split entry holding layers [layer_begin, layer_end) of the
 * file at path, named name, whose SHA-256 (64 hex) is digest, known already (the caller
 * checked it): what /meshllm/stageload/1 loads for a member (node/stageload.h). Also
 * MESH_EINVAL when an entry of that name exists. The entry's state says when it is
 * loaded (registry_find by name). */
int registry_add_split_load(struct registry *r, const char *path, const char *name,
                            const char *digest, int layer_begin, int layer_end, char *err,
                            size_t err_cap);
/* Loads every added model on a background thread (in order). */
int registry_load_start(struct registry *r);
/* Loads synchronously; returns 0 if all loaded (failures are logged and kept in entries). */
int registry_load_wait(struct registry *r);

int registry_count(const struct registry *r);
/* Entry i (0 <= i < count) and its state. */
struct registry_entry *registry_at(struct registry *r, int i, enum registry_state *state);
/* Finds a model by API name (an Ollama ":latest" tag is ignored), by file name, or by path.
 * Returns the entry or NULL; *state is set when found. */
struct registry_entry *registry_find(struct registry *r, const char *name,
                                     enum registry_state *state);

#endif
