/* registry.c - model registry and background loader (see registry.h). */
#include "node/registry.h"

#include "node/modelstore.h"
#include "node/pipeline.h"
#include "node/stage.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/model.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define REGISTRY_MAX 32

struct registry {
    struct sched_params sp;
    struct registry_load_hook hook; /* set before loading; read by the loader threads */
    char chat_template[1024];       /* --chat-template for every model; "" = the model's own */
    struct registry_entry e[REGISTRY_MAX];
    atomic_int state[REGISTRY_MAX];
    char digest[REGISTRY_MAX][65];  /* 64 hex, valid once has_digest */
    atomic_bool has_digest[REGISTRY_MAX];
    atomic_bool stopping;           /* registry_free: the hashing stops */
    atomic_int n;                   /* entries are filled before n grows */
    /* registry_add_load: serialises dynamic adds; is_dyn entries load on their own thread */
    pthread_mutex_t add_mu;
    bool is_dyn[REGISTRY_MAX];
    pthread_t dyn_loader[REGISTRY_MAX];
    bool dyn_started[REGISTRY_MAX];  /* guarded by add_mu */
    bool no_more_adds;               /* guarded by add_mu */
    /* read-held by whoever uses a scheduler (registry_pin); write-held by registry_stop,
     * which frees them: a submit never races the shutdown */
    pthread_rwlock_t stop_lock;
    bool is_stopped;            /* guarded by stop_lock */
    pthread_t loader;
    bool loader_started;
    /* read-held by a pipeline pass (registry_mesh_hold), write-held to change mesh */
    pthread_rwlock_t mesh_lock;
    struct mesh *mesh;
    struct autosplit *autosplit;     /* mesh_lock, like mesh */
};

int registry_new(const struct sched_params *sp, struct registry **out)
{
    *out = NULL;
    struct registry *r = calloc(1, sizeof *r);
    if (!r) return MESH_ENOMEM;
    r->sp = *sp;
    pthread_rwlock_init(&r->stop_lock, NULL);
    pthread_rwlock_init(&r->mesh_lock, NULL);
    pthread_mutex_init(&r->add_mu, NULL);
    for (int i = 0; i < REGISTRY_MAX; i++) atomic_init(&r->state[i], REGISTRY_LOADING);
    *out = r;
    return 0;
}

/* Stops an entry's scheduler, then its pipeline (the scheduler's worker uses it) and
 * stage engine. */
static void entry_stop(struct registry_entry *e)
{
    pipeline_interrupt(e->pipe, true); /* a pass waiting on a stage gives up */
    sched_free(e->sched);
    e->sched = NULL;
    pipeline_free(e->pipe);
    e->pipe = NULL;
    stage_engine_free(e->stage);
    e->stage = NULL;
}

void registry_set_mesh(struct registry *r, struct mesh *m)
{
    /* passes in flight hold the lock while they wait on stages: make them give up */
    int n = r->n;
    for (int i = 0; i < n && !m; i++)
        if (atomic_load(&r->state[i]) == REGISTRY_READY) pipeline_interrupt(r->e[i].pipe, true);
    pthread_rwlock_wrlock(&r->mesh_lock);
    if (!m)
        for (int i = 0; i < n; i++)
            if (atomic_load(&r->state[i]) == REGISTRY_READY) pipeline_detach(r->e[i].pipe);
    r->mesh = m;
    pthread_rwlock_unlock(&r->mesh_lock);
    for (int i = 0; i < n && !m; i++)
        if (atomic_load(&r->state[i]) == REGISTRY_READY) pipeline_interrupt(r->e[i].pipe, false);
}

struct mesh *registry_mesh_hold(struct registry *r)
{
    pthread_rwlock_rdlock(&r->mesh_lock);
    return r->mesh;
}

void registry_mesh_release(struct registry *r) { pthread_rwlock_unlock(&r->mesh_lock); }

void registry_set_autosplit(struct registry *r, struct autosplit *a)
{
    pthread_rwlock_wrlock(&r->mesh_lock);
    r->autosplit = a;
    pthread_rwlock_unlock(&r->mesh_lock);
}

struct autosplit *registry_autosplit_held(struct registry *r) { return r->autosplit; }

static void dyn_join(struct registry *r)
{
    pthread_mutex_lock(&r->add_mu);
    r->no_more_adds = true;
    pthread_mutex_unlock(&r->add_mu);
    for (int i = 0; i < REGISTRY_MAX; i++)
        if (r->dyn_started[i]) {
            pthread_join(r->dyn_loader[i], NULL);
            r->dyn_started[i] = false;
        }
}

void registry_stop(struct registry *r)
{
    if (!r) return;
    dyn_join(r);
    if (r->loader_started) {
        pthread_join(r->loader, NULL);
        r->loader_started = false;
    }
    pthread_rwlock_wrlock(&r->stop_lock);
    r->is_stopped = true;
    for (int i = 0; i < r->n; i++) entry_stop(&r->e[i]);
    pthread_rwlock_unlock(&r->stop_lock);
}

bool registry_pin(struct registry *r)
{
    pthread_rwlock_rdlock(&r->stop_lock);
    if (!r->is_stopped) return true;
    pthread_rwlock_unlock(&r->stop_lock);
    return false;
}

void registry_unpin(struct registry *r)
{
    pthread_rwlock_unlock(&r->stop_lock);
}

void registry_set_chat_template(struct registry *r, const char *name)
{
    snprintf(r->chat_template, sizeof r->chat_template, "%s", name ? name : "");
}

void registry_free(struct registry *r)
{
    if (!r) return;
    atomic_store(&r->stopping, true);
    dyn_join(r);
    if (r->loader_started) pthread_join(r->loader, NULL);
    for (int i = 0; i < r->n; i++) {
        entry_stop(&r->e[i]);
        chat_setup_free(&r->e[i].chat);
        model_free(r->e[i].model);
    }
    pthread_rwlock_destroy(&r->stop_lock);
    pthread_rwlock_destroy(&r->mesh_lock);
    pthread_mutex_destroy(&r->add_mu);
    free(r);
}

const char *registry_models_dir(void)
{
    static char buf[4096];
    const char *d = getenv("MESHLLM_MODELS");
    if (d && *d) return d;
    const char *home = getenv("HOME");
    snprintf(buf, sizeof buf, "%s/.meshllm/models", home && *home ? home : ".");
    return buf;
}

static bool is_file(const char *p, struct stat *st)
{
    return stat(p, st) == 0 && S_ISREG(st->st_mode);
}

static void name_from_path(const char *path, char *name, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf")) n -= 5;
    if (n >= cap) n = cap - 1;
    memcpy(name, b, n);
    name[n] = 0;
}

int registry_resolve(const char *spec, char *path, size_t path_cap, char *name, size_t name_cap,
                     char *err, size_t err_cap)
{
    struct stat st;
    if (!spec || !*spec) return err_set(err, err_cap, MESH_EINVAL, "empty model name");
    if (is_file(spec, &st)) {
        if (strlen(spec) >= path_cap) return err_set(err, err_cap, MESH_ERANGE, "path too long");
        snprintf(path, path_cap, "%s", spec);
        name_from_path(spec, name, name_cap);
        return 0;
    }
    if (!strchr(spec, '/')) {
        const char *dir = registry_models_dir();
        char cand[4096];
        const char *suffix[2] = {"", ".gguf"};
        for (int k = 0; k < 2; k++) {
            int n = snprintf(cand, sizeof cand, "%s/%s%s", dir, spec, suffix[k]);
            if (n < 0 || (size_t)n >= sizeof cand || (size_t)n >= path_cap) continue;
            if (is_file(cand, &st)) {
                snprintf(path, path_cap, "%s", cand);
                name_from_path(cand, name, name_cap);
                return 0;
            }
        }
        /* the model store (node/modelstore.h): NAME[:TAG] -> blobs/<content id> */
        struct modelstore_manifest mf;
        char blob[4096];
        if (modelstore_get(dir, spec, &mf, blob, sizeof blob, NULL, 0) == 0 &&
            is_file(blob, &st) && strlen(blob) < path_cap) {
            snprintf(path, path_cap, "%s", blob);
            if (!strcmp(mf.tag, "latest")) snprintf(name, name_cap, "%s", mf.name);
            else snprintf(name, name_cap, "%s:%s", mf.name, mf.tag);
            return 0;
        }
        return err_set(err, err_cap, MESH_ENOTFOUND,
                       "model '%s' not found: no such file, nor %s/%s(.gguf), nor a model of "
                       "that name in the store (meshllm list; meshllm pull URL)",
                       spec, dir, spec);
    }
    return err_set(err, err_cap, MESH_ENOTFOUND, "model file '%s' not found", spec);
}

/* Entry n from spec (named name, or after its file), split when begin >= 0; published by
 * the increment of n once every field is set. */
static int add_entry(struct registry *r, const char *spec, const char *name, int begin, int end,
                     const char *digest, char *err, size_t err_cap)
{
    if (r->n >= REGISTRY_MAX) return err_set(err, err_cap, MESH_EFULL, "too many models");
    if (begin >= 0 && begin > end)
        return err_set(err, err_cap, MESH_EINVAL, "layer range %d-%d is reversed", begin,
                       end - 1);
    struct registry_entry *e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    int rc = registry_resolve(spec, e->path, sizeof e->path, e->name, sizeof e->name, err, err_cap);
    if (rc) return rc;
    if (name) snprintf(e->name, sizeof e->name, "%s", name);
    if (begin >= 0) {
        e->is_split = true;
        e->layer_begin = begin;
        e->layer_end = end;
    }
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].name, e->name))
            return err_set(err, err_cap, MESH_EINVAL, "model '%s' given twice", e->name);
    struct stat st;
    if (stat(e->path, &st) == 0) {
        e->created = (int64_t)st.st_mtime;
        e->file_bytes = (uint64_t)st.st_size;
    }
    /* a store model's SHA-256 was verified when it entered the store: no need to hash it */
    struct modelstore_manifest mf;
    char blob[4096];
    if (!digest && !strchr(spec, '/') &&
        modelstore_get(registry_models_dir(), spec, &mf, blob, sizeof blob, NULL, 0) == 0 &&
        !strcmp(blob, e->path))
        digest = mf.sha256;
    if (digest) {
        snprintf(r->digest[r->n], sizeof r->digest[r->n], "%s", digest);
        atomic_store(&r->has_digest[r->n], true);
    }
    atomic_store(&r->state[r->n], REGISTRY_LOADING);
    r->n++;
    return 0;
}

int registry_add(struct registry *r, const char *spec, char *err, size_t err_cap)
{
    return add_entry(r, spec, NULL, -1, -1, NULL, err, err_cap);
}

int registry_rename(struct registry *r, int i, const char *name, char *err, size_t err_cap)
{
    if (i < 0 || i >= r->n || !name || !*name || strlen(name) >= sizeof r->e[i].name)
        return err_set(err, err_cap, MESH_EINVAL, "model name '%s' is empty or too long",
                       name ? name : "");
    for (int k = 0; k < r->n; k++)
        if (k != i && !strcmp(r->e[k].name, name))
            return err_set(err, err_cap, MESH_EINVAL, "model '%s' given twice", name);
    snprintf(r->e[i].name, sizeof r->e[i].name, "%s", name);
    return 0;
}

int registry_add_split(struct registry *r, const char *spec, int layer_begin, int layer_end,
                       char *err, size_t err_cap)
{
    if (layer_begin < 0 || layer_begin > layer_end)
        return err_set(err, err_cap, MESH_EINVAL, "layer range %d-%d is reversed", layer_begin,
                       layer_end - 1);
    return add_entry(r, spec, NULL, layer_begin, layer_end, NULL, err, err_cap);
}

/* A split entry's pipeline, scheduler over it and stage engine (loader thread). */
static int load_split(struct registry *r, int i)
{
    struct registry_entry *e = &r->e[i];
    const struct model_hparams *hp = model_hparams(e->model);
    if (e->layer_end > hp->n_layer)
        return err_set(e->err, sizeof e->err, MESH_EINVAL,
                       "--layers %d-%d: the model has layers 0-%d", e->layer_begin,
                       e->layer_end - 1, hp->n_layer - 1);
    struct pipeline_config pc = {.m = e->model, .reg = r, .reg_index = i,
                                 .layer_begin = e->layer_begin, .layer_end = e->layer_end,
                                 .n_seq = r->sp.n_slots};
    int rc = pipeline_new(&pc, &e->pipe);
    if (rc) return err_set(e->err, sizeof e->err, rc, "pipeline: %s", err_str(rc));
    struct sched_params sp = r->sp;
    bool none = e->layer_begin == e->layer_end;
    sp.layer_begin = none ? hp->n_layer : e->layer_begin; /* an empty range, not 0/0 = all */
    sp.layer_end = none ? hp->n_layer : e->layer_end;
    sp.fwd = pipeline_forward(e->pipe);
    rc = sched_new(e->model, &sp, &e->sched, e->err, sizeof e->err);
    if (rc || none) return rc;
    struct stage_engine_params ep = {.layer_begin = e->layer_begin, .layer_end = e->layer_end,
                                     .n_slots = r->sp.n_slots, .n_ctx = r->sp.n_ctx,
                                     .n_batch = r->sp.n_batch, .n_threads = r->sp.n_threads,
                                     .k_type = r->sp.k_type, .v_type = r->sp.v_type};
    return stage_engine_new(e->model, &ep, &e->stage, e->err, sizeof e->err);
}

void registry_set_load_hook(struct registry *r, const struct registry_load_hook *h)
{
    r->hook = *h;
}

struct load_progress {
    struct registry *r;
    const char *name;
};

static void on_load_progress(void *arg, int n_done, int n_total, uint64_t bytes_done,
                             uint64_t bytes_total)
{
    struct load_progress *p = arg;
    p->r->hook.progress(p->r->hook.arg, p->name, n_done, n_total, bytes_done, bytes_total);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int load_one(struct registry *r, int i)
{
    struct registry_entry *e = &r->e[i];
    struct model_load_opts lo = {0};
    struct load_progress lp = {r, e->name};
    if (r->hook.progress) {
        lo.progress = on_load_progress;
        lo.progress_arg = &lp;
    }
    double t0 = mono_s();
    if (e->is_split) { /* pack only this node's share */
        lo.layer_begin = e->layer_begin;
        lo.layer_end = e->layer_end;
        lo.no_layers = e->layer_begin == e->layer_end;
        if (lo.no_layers) lo.layer_begin = lo.layer_end = 0;
    }
    int rc = model_load(e->path, &lo, &e->model, e->err, sizeof e->err);
    if (rc == 0 && e->is_split) rc = load_split(r, i);
    else if (rc == 0) rc = sched_new(e->model, &r->sp, &e->sched, e->err, sizeof e->err);
    if (rc == 0) {
        rc = chat_setup_init(&e->chat, model_chat_template(e->model), model_tok(e->model),
                             r->chat_template[0] ? r->chat_template : NULL);
        if (rc) snprintf(e->err, sizeof e->err, "chat template '%.160s' cannot be used (see the log)",
                         r->chat_template);
    }
    if (rc) {
        log_error("model %s: %s", e->path, e->err[0] ? e->err : err_str(rc));
        if (!e->err[0]) snprintf(e->err, sizeof e->err, "%s", err_str(rc));
        entry_stop(e);
        chat_setup_free(&e->chat);
        model_free(e->model);
        e->model = NULL;
        atomic_store(&r->state[i], REGISTRY_FAILED);
        return rc;
    }
    int ft = model_hparams(e->model)->file_type;
    snprintf(e->quant, sizeof e->quant, "%s", ft >= 0 ? model_ftype_name(ft) : "");
    if (!strcmp(e->quant, "unknown")) e->quant[0] = 0;
    log_info("model %s loaded from %s", e->name, e->path);
    if (e->sched) { /* the memory line every command prints at load */
        char kv[256];
        sched_kv_describe(e->sched, kv, sizeof kv);
        fprintf(stderr, "meshllm: model %s: %s\n", e->name, kv);
    }
    if (r->hook.ready) r->hook.ready(r->hook.arg, e->name, e->model, mono_s() - t0);
    atomic_store(&r->state[i], REGISTRY_READY);
    return 0;
}

int registry_load_wait(struct registry *r)
{
    int first = 0;
    for (int i = 0; i < r->n; i++) {
        if (atomic_load(&r->state[i]) != REGISTRY_LOADING || r->is_dyn[i]) continue;
        int rc = load_one(r, i);
        if (rc && !first) first = rc;
    }
    return first;
}

int registry_file_sha256(const char *path, char hex[65], const atomic_bool *stop)
{
    hex[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return MESH_EIO;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    int rc = buf ? 0 : MESH_ENOMEM;
    while (rc == 0) {
        if (stop && atomic_load(stop)) {
            rc = MESH_ECANCELED;
            break;
        }
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = MESH_EIO;
        if (n <= 0) break;
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
    }
    close(fd);
    free(buf);
    if (rc) return rc;
    uint8_t h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    sodium_bin2hex(hex, 65, h, sizeof h);
    return 0;
}

/* SHA-256 of entry i's file into r->digest[i] (loader thread, after loading). */
static void hash_one(struct registry *r, int i)
{
    if (registry_file_sha256(r->e[i].path, r->digest[i], &r->stopping) == 0)
        atomic_store(&r->has_digest[i], true);
}

int registry_stage_submit(void *reg, struct stage_job *j)
{
    struct registry *r = reg;
    if (!registry_pin(r)) return STAGE_ERR_CLOSING;
    int rc = STAGE_ERR_MODEL;
    for (int i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->e[i];
        const char *dg = registry_digest(r, i);
        if (atomic_load(&r->state[i]) != REGISTRY_READY || !e->stage || !dg ||
            strcmp(dg, j->req.model))
            continue;
        if (e->layer_begin != j->req.layer_begin || e->layer_end != j->req.layer_end) {
            rc = STAGE_ERR_RANGE;
            continue;
        }
        stage_engine_submit(e->stage, j);
        rc = STAGE_OK;
        break;
    }
    registry_unpin(r);
    return rc;
}

void registry_hash_wait(struct registry *r)
{
    for (int i = 0; i < r->n; i++)
        if (atomic_load(&r->state[i]) == REGISTRY_READY && !atomic_load(&r->has_digest[i]))
            hash_one(r, i);
}

static void *loader_main(void *arg)
{
    struct registry *r = arg;
    registry_load_wait(r);
    for (int i = 0; i < r->n && !atomic_load(&r->stopping); i++)
        if (atomic_load(&r->state[i]) == REGISTRY_READY && !atomic_load(&r->has_digest[i]))
            hash_one(r, i);
    return NULL;
}

const char *registry_digest(struct registry *r, int i)
{
    if (i < 0 || i >= r->n || !atomic_load(&r->has_digest[i])) return NULL;
    return r->digest[i];
}

struct dyn_arg {
    struct registry *r;
    int i;
};

static void *dyn_main(void *arg)
{
    struct dyn_arg a = *(struct dyn_arg *)arg;
    free(arg);
    if (load_one(a.r, a.i) == 0 && !atomic_load(&a.r->stopping) &&
        !atomic_load(&a.r->has_digest[a.i]))
        hash_one(a.r, a.i);
    return NULL;
}

/* Where a dynamic add differs: a split range, a name and a digest known beforehand. */
struct dyn_spec {
    bool is_split;
    int layer_begin, layer_end;
    const char *name;    /* NULL: from the file name */
    const char *digest;  /* NULL: hashed after loading */
};

static int add_load(struct registry *r, const char *spec, const struct dyn_spec *ds, char *err,
                    size_t err_cap)
{
    pthread_mutex_lock(&r->add_mu);
    int rc = 0;
    enum registry_state st;
    if (r->no_more_adds) {
        rc = err_set(err, err_cap, MESH_ECLOSED, "the node is stopping");
        goto out;
    }
    if (!ds->is_split && registry_find(r, spec, &st)) goto out; /* someone asked first */
    int i = r->n;
    if (i >= REGISTRY_MAX) {
        rc = err_set(err, err_cap, MESH_EFULL, "too many models");
        goto out;
    }
    if (ds->name && registry_find(r, ds->name, &st)) {
        rc = err_set(err, err_cap, MESH_EINVAL, "a model named %s is already here", ds->name);
        goto out;
    }
    r->is_dyn[i] = true;
    rc = add_entry(r, spec, ds->name, ds->is_split ? ds->layer_begin : -1,
                   ds->is_split ? ds->layer_end : -1, ds->digest, err, err_cap);
    if (rc) {
        r->is_dyn[i] = false;
        goto out;
    }
    struct dyn_arg *a = malloc(sizeof *a);
    if (a) *a = (struct dyn_arg){r, i};
    if (!a || pthread_create(&r->dyn_loader[i], NULL, dyn_main, a) != 0) {
        free(a);
        snprintf(r->e[i].err, sizeof r->e[i].err, "cannot start a loader thread");
        atomic_store(&r->state[i], REGISTRY_FAILED);
        rc = err_set(err, err_cap, MESH_ENOMEM, "cannot start a loader thread");
        goto out;
    }
    r->dyn_started[i] = true;
    if (ds->is_split)
        log_info("model %s: loading layers %d-%d for a member", r->e[i].name, ds->layer_begin,
                 ds->layer_end - 1);
    else
        log_info("model %s: loading on first request", r->e[i].name);
out:
    pthread_mutex_unlock(&r->add_mu);
    return rc;
}

int registry_add_load(struct registry *r, const char *spec, const char *sha256_hex, char *err,
                      size_t err_cap)
{
    /* a digest verified when the file entered the store spares the loader a hash */
    struct dyn_spec ds = {.is_split = false,
                          .digest = sha256_hex && strlen(sha256_hex) == 64 ? sha256_hex : NULL};
    return add_load(r, spec, &ds, err, err_cap);
}

int registry_add_split_load(struct registry *r, const char *path, const char *name,
                            const char *digest, int layer_begin, int layer_end, char *err,
                            size_t err_cap)
{
    struct dyn_spec ds = {.is_split = true, .layer_begin = layer_begin, .layer_end = layer_end,
                          .name = name, .digest = digest};
    return add_load(r, path, &ds, err, err_cap);
}

int registry_load_start(struct registry *r)
{
    if (r->loader_started) return MESH_EINVAL;
    if (pthread_create(&r->loader, NULL, loader_main, r) != 0) return MESH_ENOMEM;
    r->loader_started = true;
    return 0;
}

int registry_count(const struct registry *r) { return r->n; }

struct registry_entry *registry_at(struct registry *r, int i, enum registry_state *state)
{
    if (i < 0 || i >= r->n) return NULL;
    *state = (enum registry_state)atomic_load(&r->state[i]);
    return &r->e[i];
}

struct registry_entry *registry_find(struct registry *r, const char *name,
                                     enum registry_state *state)
{
    char want[256];
    snprintf(want, sizeof want, "%s", name);
    char *tag = strrchr(want, ':');
    if (tag && !strcmp(tag, ":latest")) *tag = 0;
    for (int i = 0; i < r->n; i++) {
        struct registry_entry *e = &r->e[i];
        const char *base = strrchr(e->path, '/');
        base = base ? base + 1 : e->path;
        if (!strcmp(e->name, want) || !strcmp(base, want) || !strcmp(e->path, name)) {
            *state = (enum registry_state)atomic_load(&r->state[i]);
            return e;
        }
    }
    return NULL;
}
