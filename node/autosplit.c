/* autosplit.c - who holds which layers (autosplit.h): the sizes of a GGUF's layers, what
 * fits, the proportional split; and the requester's thread that asks members with
 * --accept-stages to load the layers nobody serves (/meshllm/stageload/1, stageload.h).
 * The split is by bytes, not by layer count: layers of one model are alike, but a share
 * in bytes is what a peer's memory has to hold.
 */
#include "node/autosplit.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/gguf.h"
#include "node/mesh.h"
#include "node/pipeline.h"
#include "node/registry.h"
#include "node/stageload.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* "blk.N." -> N, else -1. */
static long layer_of(const struct gguf_str *name)
{
    if (name->len < 6 || memcmp(name->ptr, "blk.", 4)) return -1;
    long n = 0;
    uint64_t i = 4;
    for (; i < name->len && name->ptr[i] >= '0' && name->ptr[i] <= '9' && n < 1000000; i++)
        n = n * 10 + (name->ptr[i] - '0');
    return i > 4 && i < name->len && name->ptr[i] == '.' ? n : -1;
}

int autosplit_sizes_read(const char *path, uint64_t **layer_bytes, int *n_layer,
                         uint64_t *shared, char *err, size_t err_cap)
{
    *layer_bytes = NULL;
    *n_layer = 0;
    *shared = 0;
    struct gguf *g = NULL;
    int rc = gguf_open(path, &g, err, err_cap);
    if (rc) return rc;
    int64_t n_t = gguf_tensor_count(g);
    long max_layer = -1;
    for (int64_t i = 0; i < n_t; i++) {
        long l = layer_of(&gguf_tensor_at(g, i)->name);
        if (l > max_layer) max_layer = l;
    }
    uint64_t *lb = calloc((size_t)(max_layer + 1 > 0 ? max_layer + 1 : 1), sizeof *lb);
    if (!lb) {
        gguf_close(g);
        return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n_t; i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        long l = layer_of(&t->name);
        if (l >= 0) lb[l] += t->size;
        else *shared += t->size;
    }
    gguf_close(g);
    *layer_bytes = lb;
    *n_layer = (int)(max_layer + 1);
    return 0;
}

int autosplit_fit(const uint64_t *layer_bytes, int n_layer, uint64_t shared, uint64_t mem)
{
    double room = (double)mem * AUTOSPLIT_MEM_SHARE - (double)shared;
    int k = 0;
    for (; k < n_layer && room >= (double)layer_bytes[k]; k++) room -= (double)layer_bytes[k];
    return k;
}

/* Each candidate's target share of total bytes: proportional to mem x speed, clipped at
 * its cap, the excess of a clipped one spread over the others (water-filling). */
static void targets(const struct autosplit_cand *c, int n, double total, double *t, double *cap)
{
    bool *clip = calloc((size_t)n, sizeof *clip);
    for (int i = 0; i < n; i++) cap[i] = (double)c[i].mem_free * AUTOSPLIT_MEM_SHARE;
    for (int round = 0; round <= n; round++) {
        double left = total, w = 0;
        for (int i = 0; i < n; i++) {
            if (clip && clip[i]) left -= cap[i];
            else w += (double)c[i].mem_free * (c[i].speed > 0 ? c[i].speed : 1);
        }
        bool more = false;
        for (int i = 0; i < n; i++) {
            if (clip && clip[i]) {
                t[i] = cap[i];
                continue;
            }
            double wi = (double)c[i].mem_free * (c[i].speed > 0 ? c[i].speed : 1);
            t[i] = w > 0 && left > 0 ? left * wi / w : 0;
            if (t[i] > cap[i] && clip) {
                clip[i] = true;
                more = true;
            }
        }
        if (!more) break;
    }
    free(clip);
}

int autosplit_assign(const uint64_t *layer_bytes, int begin, int end,
                     const struct autosplit_cand *c, int n, struct autosplit_range *out, int cap)
{
    if (begin < 0 || end <= begin || n < 0) return MESH_EINVAL;
    double total = 0;
    for (int l = begin; l < end; l++) total += (double)layer_bytes[l];
    double *t = calloc((size_t)(n > 0 ? n : 1), 2 * sizeof *t);
    if (!t) return MESH_ENOMEM;
    double *mcap = t + n;
    targets(c, n, total, t, mcap);
    int l = begin, n_out = 0, last = n - 1;
    double want = 0, done = 0; /* cumulative target, bytes assigned so far */
    for (int i = 0; i < n && l < end && n_out < cap; i++) {
        want += t[i];
        int start = l;
        double bytes = 0;
        while (l < end) {
            double b = (double)layer_bytes[l];
            if (bytes + b > mcap[i]) break;
            /* take the layer while that lands nearer the cumulative target */
            if (i != last && done + bytes + b / 2 > want) break;
            bytes += b;
            l++;
        }
        done += bytes;
        if (l > start) out[n_out++] = (struct autosplit_range){i, start, l};
    }
    if (l < end) { /* rounding left the last ones short: fill each as far as it holds */
        l = begin;
        n_out = 0;
        for (int i = 0; i < n && l < end && n_out < cap; i++) {
            int start = l;
            double bytes = 0;
            while (l < end && bytes + (double)layer_bytes[l] <= mcap[i])
                bytes += (double)layer_bytes[l++];
            if (l > start) out[n_out++] = (struct autosplit_range){i, start, l};
        }
    }
    free(t);
    return l < end ? MESH_EFULL : n_out;
}

/* ---- the driver (requester side) ---------------------------------------------------------- */

#define AUTOSPLIT_MAX_MODELS 32
#define AUTOSPLIT_ANNOUNCE_WAIT_MS 10000 /* after a load: time for its announcement */
#define AUTOSPLIT_SETTLE_MS 3000         /* after start: time to hear the members */
#define AUTOSPLIT_REASK_MS 2000          /* some loads refused: the rest again after this */

struct autosplit {
    struct registry *reg;
    struct mesh *mesh;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t mu;            /* guards st and the sleep */
    pthread_mutex_t work_mu;       /* one decision at a time: the driver's or a recovery's;
                                      guards everything below */
    pthread_cond_t cv;
    struct autosplit_stats st;

    struct {
        struct peer_id id;
        uint64_t until_ms;
    } skip[AUTOSPLIT_MAX_PEERS];
    int n_skip;
    uint64_t wait_until_ms[AUTOSPLIT_MAX_MODELS];
    uint64_t *lb[AUTOSPLIT_MAX_MODELS];   /* each model's layer bytes, read once */
    int n_layer[AUTOSPLIT_MAX_MODELS];
    bool said_full[AUTOSPLIT_MAX_MODELS]; /* "too little memory" logged for this gap */
};

static bool skipped(struct autosplit *a, const struct peer_id *id, uint64_t now)
{
    for (int i = 0; i < a->n_skip; i++)
        if (a->skip[i].until_ms > now && peer_id_equal(&a->skip[i].id, id)) return true;
    return false;
}

static void skip_add(struct autosplit *a, const struct peer_id *id, uint64_t now)
{
    int k = 0;
    for (int i = 0; i < a->n_skip; i++) /* forget expired ones */
        if (a->skip[i].until_ms > now && !peer_id_equal(&a->skip[i].id, id))
            a->skip[k++] = a->skip[i];
    a->n_skip = k;
    if (a->n_skip < AUTOSPLIT_MAX_PEERS) {
        a->skip[a->n_skip].id = *id;
        a->skip[a->n_skip++].until_ms = now + AUTOSPLIT_RETRY_MS;
    }
}

/* Members that may be asked to load a range: announced now, accept stages, not this node,
 * not skipped. Best (memory x speed) first. One that serves a range of the model already
 * may take another (its registry holds both; the stage server matches by range). */
struct cand_peer {
    struct peer_id id;
    char id_text[64];
    struct multiaddr addr;
    struct autosplit_cand c;
};

static int cand_cmp(const void *x, const void *y)
{
    const struct cand_peer *a = x, *b = y;
    double wa = (double)a->c.mem_free * a->c.speed, wb = (double)b->c.mem_free * b->c.speed;
    return wa < wb ? 1 : wa > wb ? -1 : strcmp(a->id_text, b->id_text);
}

static bool excluded(const struct peer_id *id, const struct peer_id *ex, int n_ex)
{
    for (int i = 0; i < n_ex; i++)
        if (peer_id_equal(&ex[i], id)) return true;
    return false;
}

static int candidates(struct autosplit *a, const struct peer_id *ex, int n_ex,
                      struct cand_peer *out, int cap)
{
    struct peers_entry *es = malloc(PEERS_MAX * sizeof *es);
    if (!es) return 0;
    int n = peers_snapshot(mesh_peers(a->mesh), es, PEERS_MAX), k = 0;
    uint64_t now = mesh_now_ms();
    const struct peer_id *self = p2pnode_peer_id(mesh_p2pnode(a->mesh));
    for (int i = 0; i < n && k < cap; i++) {
        const struct peers_entry *e = &es[i];
        bool live = e->ann_seq && e->ann_expires_ms > now;
        if (!live || !e->is_member || !e->accept_stages || e->n_addrs == 0 ||
            peer_id_equal(&e->id, self) || skipped(a, &e->id, now) || excluded(&e->id, ex, n_ex))
            continue;
        struct cand_peer *c = &out[k++];
        c->id = e->id;
        snprintf(c->id_text, sizeof c->id_text, "%s", e->id_text);
        c->addr = e->addrs[0];
        c->c.mem_free = e->mem_free;
        c->c.speed = e->speed_gbps > 0 ? e->speed_gbps : 1;
    }
    free(es);
    qsort(out, (size_t)k, sizeof *out, cand_cmp);
    return k;
}

struct ask {
    struct autosplit *a;
    struct cand_peer *peer;
    struct stageload_req q;
    struct stageload_reply reply;
    int rc;
    pthread_t thread;
    bool started;
};

static void *ask_main(void *arg)
{
    struct ask *k = arg;
    k->rc = stageload_ask(mesh_p2pnode(k->a->mesh), &k->peer->id, &k->peer->addr, &k->q,
                          STAGELOAD_TIMEOUT_MS, &k->a->stop, &k->reply);
    return NULL;
}

/* The name a member is told: the registry's, in the characters the protocol allows. */
static void wire_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (; name[n] && n + 1 < cap && n < STAGELOAD_NAME_CAP - 1; n++) {
        char c = name[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || (c == '.' && n > 0);
        out[n] = ok ? c : '_';
    }
    out[n] = 0;
}

/* Asks the members of ranges[n] in parallel; returns how many loaded. */
static int ask_all(struct autosplit *a, struct registry_entry *e, const char *digest, int n_layer,
                   const uint64_t *lb, struct cand_peer *cands, const struct autosplit_range *rs,
                   int n)
{
    struct ask *asks = calloc((size_t)n, sizeof *asks);
    if (!asks) return 0;
    char abs_path[4096];
    if (!realpath(e->path, abs_path)) abs_path[0] = 0;
    for (int i = 0; i < n; i++) {
        struct ask *k = &asks[i];
        k->a = a;
        k->peer = &cands[rs[i].cand];
        snprintf(k->q.model, sizeof k->q.model, "%s", digest);
        wire_name(e->name, k->q.name, sizeof k->q.name);
        k->q.file_bytes = e->file_bytes;
        snprintf(k->q.path, sizeof k->q.path, "%s", abs_path);
        k->q.layer_begin = rs[i].layer_begin;
        k->q.layer_end = rs[i].layer_end;
        k->q.n_layer = n_layer;
        for (int l = rs[i].layer_begin; l < rs[i].layer_end; l++) k->q.range_bytes += lb[l];
        log_info("auto-split: asking %s to load layers %d-%d of %s (%.1f MiB)",
                 k->peer->id_text, k->q.layer_begin, k->q.layer_end - 1, e->name,
                 (double)k->q.range_bytes / 1048576.0);
        k->rc = MESH_ENOMEM;
        k->started = pthread_create(&k->thread, NULL, ask_main, k) == 0;
    }
    int n_ok = 0;
    uint64_t now = mesh_now_ms();
    for (int i = 0; i < n; i++) {
        struct ask *k = &asks[i];
        if (k->started) pthread_join(k->thread, NULL);
        bool ok = k->rc == 0 && k->reply.status == STAGELOAD_OK;
        pthread_mutex_lock(&a->mu);
        a->st.n_asked++;
        if (ok) a->st.n_loaded++;
        else a->st.n_refused++;
        pthread_mutex_unlock(&a->mu);
        if (ok) {
            n_ok++;
            log_info("auto-split: %s: %s", k->peer->id_text, k->reply.message);
        } else {
            skip_add(a, &k->peer->id, now);
            log_warn("auto-split: %s did not load layers %d-%d: %s", k->peer->id_text,
                     k->q.layer_begin, k->q.layer_end - 1,
                     k->rc ? err_str(k->rc) : k->reply.message);
        }
    }
    free(asks);
    return n_ok;
}

/* Entry i's layer sizes, read once (work_mu held). false when the file cannot be read. */
static bool sizes_get(struct autosplit *a, int i, struct registry_entry *e)
{
    if (a->lb[i]) return true;
    uint64_t shared;
    char err[256];
    if (autosplit_sizes_read(e->path, &a->lb[i], &a->n_layer[i], &shared, err, sizeof err)) {
        log_warn("auto-split: %s", err);
        return false;
    }
    return true;
}

/* The gaps of entry i split over the candidates (none in ex) and asked for (work_mu
 * held). Returns how many members loaded a range. */
static int load_gaps(struct autosplit *a, int i, struct registry_entry *e, const char *digest,
                     const struct pipeline_gap *gaps, int n_gaps, const struct peer_id *ex,
                     int n_ex, int *n_asked)
{
    struct cand_peer *cands = calloc(AUTOSPLIT_MAX_PEERS, sizeof *cands);
    struct autosplit_cand *cc = calloc(AUTOSPLIT_MAX_PEERS, sizeof *cc);
    struct autosplit_range *rs = calloc(AUTOSPLIT_MAX_PEERS, sizeof *rs);
    int n = cands && cc && rs ? candidates(a, ex, n_ex, cands, AUTOSPLIT_MAX_PEERS) : 0;
    int n_rs = 0, used = 0; /* candidates [0, used) went to earlier gaps */
    for (int g = 0; g < n_gaps && used < n; g++) {
        for (int c = used; c < n; c++) cc[c - used] = cands[c].c;
        int r = autosplit_assign(a->lb[i], gaps[g].layer_begin, gaps[g].layer_end, cc, n - used,
                                 rs + n_rs, AUTOSPLIT_MAX_PEERS - n_rs);
        if (r < 0) {
            if (!a->said_full[i])
                log_warn("auto-split: the %d members that accept stages have too little free "
                         "memory for layers %d-%d of %s", n - used, gaps[g].layer_begin,
                         gaps[g].layer_end - 1, e->name);
            a->said_full[i] = true;
            continue;
        }
        int top = used;
        for (int k = n_rs; k < n_rs + r; k++) {
            rs[k].cand += used;
            if (rs[k].cand + 1 > top) top = rs[k].cand + 1;
        }
        n_rs += r;
        used = top;
    }
    int n_ok = n_rs ? ask_all(a, e, digest, a->n_layer[i], a->lb[i], cands, rs, n_rs) : 0;
    if (n_ok) a->said_full[i] = false;
    *n_asked = n_rs;
    free(cands);
    free(cc);
    free(rs);
    return n_ok;
}

/* One model: its gaps, split over the candidates and asked for (work_mu held). */
static void tick_model(struct autosplit *a, int i, struct registry_entry *e, const char *digest,
                       struct pipeline_view *v)
{
    if (!sizes_get(a, i, e)) {
        a->wait_until_ms[i] = mesh_now_ms() + AUTOSPLIT_RETRY_MS;
        return;
    }
    int n_asked = 0;
    int n_ok = load_gaps(a, i, e, digest, v->gaps, v->n_gaps, NULL, 0, &n_asked);
    /* the new stages announce within a second of loading; while some range is still
     * missing, look again soon (asking a member again for a range it serves is answered at
     * once), else give the announcements their time */
    a->wait_until_ms[i] = mesh_now_ms() + (n_ok == 0           ? 0
                                           : n_ok < n_asked    ? AUTOSPLIT_REASK_MS
                                                               : AUTOSPLIT_ANNOUNCE_WAIT_MS);
}

/* The layers of entry e that no live member outside ex announces (pipeline_missing). */
static int gaps_now(struct autosplit *a, struct registry_entry *e, const char *digest, int n_layer,
                    const struct peer_id *ex, int n_ex, struct pipeline_gap *out, int cap)
{
    struct peers_stage *st = malloc(PEERS_MAX * sizeof *st);
    if (!st) return -1;
    int n = peers_stages(mesh_peers(a->mesh), digest, n_layer, ex, n_ex, mesh_now_ms(), st,
                         PEERS_MAX);
    int n_g = pipeline_missing(st, n, n_layer, e->layer_begin, e->layer_end, out, cap);
    free(st);
    return n_g;
}

int autosplit_fill(struct autosplit *a, int reg_index, const struct peer_id *exclude,
                   int n_exclude, int timeout_ms)
{
    if (!a || reg_index < 0 || reg_index >= AUTOSPLIT_MAX_MODELS) return MESH_ENOTFOUND;
    if (atomic_load(&a->stop)) return MESH_ECLOSED;
    uint64_t deadline = mesh_now_ms() + (uint64_t)timeout_ms;
    enum registry_state st;
    struct registry_entry *e = registry_at(a->reg, reg_index, &st);
    const char *dg = registry_digest(a->reg, reg_index);
    if (!e || st != REGISTRY_READY || !e->auto_split || !dg) return MESH_ENOTFOUND;
    pthread_mutex_lock(&a->work_mu);
    int rc = sizes_get(a, reg_index, e) ? MESH_ETIMEOUT : MESH_ENOTFOUND;
    struct pipeline_gap gaps[PIPELINE_MAX_GAPS];
    uint64_t next_ask = 0;
    bool said = false;
    while (rc == MESH_ETIMEOUT && mesh_now_ms() < deadline) {
        if (atomic_load(&a->stop)) {
            rc = MESH_ECLOSED;
            break;
        }
        int n_g = gaps_now(a, e, dg, a->n_layer[reg_index], exclude, n_exclude, gaps,
                           PIPELINE_MAX_GAPS);
        if (n_g == 0) {
            rc = 0; /* announced: the caller plans again */
            break;
        }
        if (n_g > 0 && mesh_now_ms() >= next_ask) {
            if (!said)
                log_info("auto-split: a stage of %s left; asking members to load its layers",
                         e->name);
            said = true;
            int n_asked = 0;
            load_gaps(a, reg_index, e, dg, gaps, n_g, exclude, n_exclude, &n_asked);
            if (n_asked == 0) { /* nobody (left) to ask: refusals are skipped for 30 s */
                rc = MESH_ENOTFOUND;
                break;
            }
            next_ask = mesh_now_ms() + AUTOSPLIT_REASK_MS;
        }
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_unlock(&a->work_mu);
    return rc;
}

static void tick(struct autosplit *a, struct pipeline_view *v)
{
    /* the peers' announcements arrive within seconds of joining: decide on all of them */
    if (mesh_uptime_ms(a->mesh) < AUTOSPLIT_SETTLE_MS) return;
    if (!registry_pin(a->reg)) return;
    int n = registry_count(a->reg);
    for (int i = 0; i < n && i < AUTOSPLIT_MAX_MODELS && !atomic_load(&a->stop); i++) {
        enum registry_state st;
        struct registry_entry *e = registry_at(a->reg, i, &st);
        const char *dg = registry_digest(a->reg, i);
        if (st != REGISTRY_READY || !e->auto_split || !e->pipe || !dg) continue;
        if (mesh_now_ms() < a->wait_until_ms[i]) continue;
        if (pipeline_view(e->pipe, v) != MESH_ENOTFOUND || v->n_gaps == 0) continue;
        pthread_mutex_lock(&a->work_mu);
        tick_model(a, i, e, dg, v);
        pthread_mutex_unlock(&a->work_mu);
    }
    registry_unpin(a->reg);
}

static void *driver_main(void *arg)
{
    struct autosplit *a = arg;
    struct pipeline_view *v = malloc(sizeof *v);
    while (v && !atomic_load(&a->stop)) {
        tick(a, v);
        pthread_mutex_lock(&a->mu);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += AUTOSPLIT_TICK_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        if (!atomic_load(&a->stop)) pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        pthread_mutex_unlock(&a->mu);
    }
    free(v);
    return NULL;
}

int autosplit_start(const struct autosplit_config *cfg, struct autosplit **out)
{
    *out = NULL;
    if (!cfg->reg || !cfg->mesh) return MESH_EINVAL;
    struct autosplit *a = calloc(1, sizeof *a);
    if (!a) return MESH_ENOMEM;
    a->reg = cfg->reg;
    a->mesh = cfg->mesh;
    atomic_init(&a->stop, false);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->work_mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (pthread_create(&a->thread, NULL, driver_main, a) != 0) {
        autosplit_free(a);
        return MESH_ENOMEM;
    }
    a->started = true;
    *out = a;
    return 0;
}

void autosplit_stop(struct autosplit *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    atomic_store(&a->stop, true);
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (a->started) pthread_join(a->thread, NULL);
    a->started = false;
}

void autosplit_free(struct autosplit *a)
{
    if (!a) return;
    autosplit_stop(a);
    for (int i = 0; i < AUTOSPLIT_MAX_MODELS; i++) free(a->lb[i]);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->work_mu);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void autosplit_stats(struct autosplit *a, struct autosplit_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    pthread_mutex_unlock(&a->mu);
}
