/* stageload.c - /meshllm/stageload/1 (stageload.h): the server that loads a layer range a
 * member asks for, and the requester's call.
 *
 * Threads. Streams live on the loop thread. A request that passes the checks the loop can
 * make (decoded, accepted, from a member, no load running) goes to a worker thread (one at
 * a time): it finds the file (model store, or the named path after hashing it), checks the
 * memory, adds the range to the registry and waits for it to load; then it hands the
 * reply to the loop with p2pnode_call. A job is referenced by its stream (until on_close)
 * and by the worker (until its reply is on the loop); the last reference frees it.
 * Spec: docs/PROTOCOL.md, /meshllm/stageload/1.
 */
#include "node/stageload.h"

#include "core/err.h"
#include "core/log.h"
#include "core/sysmem.h"
#include "net/host.h"
#include "node/autosplit.h"
#include "node/modelstore.h"
#include "node/registry.h"
#include "node/stage.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct ljob {
    struct stageload_server *srv; /* valid while the worker runs (free joins it) */
    struct host_stream *s;        /* loop thread; NULL once closed */
    atomic_int refs;
    bool has_req;                 /* loop thread: a request came (one per stream) */
    struct stageload_req req;
    struct stageload_reply reply;
};

struct stageload_server {
    struct p2pnode *pn;
    struct registry *reg;
    bool accept;
    bool (*is_member)(void *ctx, const struct peer_id *peer);
    void *member_ctx;
    pthread_mutex_t mu;           /* guards busy, st */
    bool busy;                    /* a worker runs (or has not been joined) */
    bool has_thread;              /* loop thread */
    pthread_t thread;
    atomic_bool stop;
    struct stageload_server_stats st;
};

static void ljob_unref(struct ljob *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1) free(j);
}

/* Loop thread: writes j's reply on its stream (if still open) and closes it. */
static void ljob_write(struct ljob *j)
{
    if (!j->s) return;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (stageload_reply_encode(&j->reply, &buf, &len) == 0 &&
        host_stream_write_msg(j->s, buf, len) == 0)
        host_stream_close(j->s);
    else
        host_stream_reset(j->s);
    free(buf);
}

static void reply_on_loop(struct p2pnode *pn, void *arg)
{
    struct ljob *j = arg;
    if (p2pnode_host(pn)) ljob_write(j);
    ljob_unref(j); /* the worker's */
}

static void reply_set(struct stageload_reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_set(struct stageload_reply *r, int status, const char *fmt, ...)
{
    r->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

/* The registry entry already serving q's model and range, or NULL. */
static struct registry_entry *entry_serving(struct registry *reg, const struct stageload_req *q,
                                            enum registry_state *st)
{
    for (int i = 0; i < registry_count(reg); i++) {
        struct registry_entry *e = registry_at(reg, i, st);
        const char *dg = registry_digest(reg, i);
        if (e->is_split && dg && !strcmp(dg, q->model) && e->layer_begin == q->layer_begin &&
            e->layer_end == q->layer_end && *st != REGISTRY_FAILED)
            return e;
    }
    return NULL;
}

/* A file here whose SHA-256 is q->model: the store's blob, or q->path once hashed. */
static int find_file(struct stageload_server *srv, const struct stageload_req *q, char *path,
                     size_t cap)
{
    const char *dir = modelstore_dir();
    struct modelstore_manifest *all = NULL;
    int n = 0;
    if (modelstore_list(dir, &all, &n) == 0) {
        for (int i = 0; i < n; i++) {
            struct stat sb;
            if (strcmp(all[i].sha256, q->model)) continue;
            snprintf(path, cap, "%s/blobs/%s", dir, all[i].content_id);
            if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                free(all);
                return 0;
            }
        }
        free(all);
    }
    /* the requester's path: only a .gguf file of the announced size (a member must not use
     * this node to hash, or probe for, arbitrary files) */
    struct stat sb;
    size_t n_path = strlen(q->path);
    if (n_path < 6 || strcmp(q->path + n_path - 5, ".gguf") || stat(q->path, &sb) != 0 ||
        !S_ISREG(sb.st_mode) || !q->file_bytes || (uint64_t)sb.st_size != q->file_bytes)
        return MESH_ENOTFOUND;
    char hex[65];
    int rc = registry_file_sha256(q->path, hex, &srv->stop);
    if (rc) return rc;
    if (strcmp(hex, q->model)) return MESH_ENOTFOUND;
    snprintf(path, cap, "%s", q->path);
    return 0;
}

/* A registry name for the range: the requester's, else "stage", with "@A-B" when taken. */
static void entry_name(struct registry *reg, const struct stageload_req *q, char *out,
                       size_t cap)
{
    enum registry_state st;
    const char *base = q->name[0] ? q->name : "stage";
    snprintf(out, cap, "%s", base);
    if (registry_find(reg, out, &st))
        snprintf(out, cap, "%.100s@%d-%d", base, q->layer_begin, q->layer_end - 1);
}

/* Worker: the load itself, answered in j->reply. */
static void load_run(struct stageload_server *srv, struct ljob *j)
{
    const struct stageload_req *q = &j->req;
    struct stageload_reply *r = &j->reply;
    enum registry_state st;
    char path[4096], name[160], err[512] = "";
    if (!entry_serving(srv->reg, q, &st)) {
        int rc = find_file(srv, q, path, sizeof path);
        if (rc == MESH_ECANCELED) {
            reply_set(r, STAGELOAD_CLOSING, "the node is stopping");
            return;
        }
        if (rc) {
            reply_set(r, STAGELOAD_NO_FILE, "no file with SHA-256 %.12s... here (not in the "
                      "model store, and %s)", q->model,
                      q->path[0] ? "not at the requester's path" : "no path was named");
            return;
        }
        uint64_t *lb = NULL, shared = 0;
        int n_layer = 0;
        if (autosplit_sizes_read(path, &lb, &n_layer, &shared, err, sizeof err)) {
            reply_set(r, STAGELOAD_FAILED, "%s", err);
            return;
        }
        uint64_t need = 0;
        for (int l = q->layer_begin; l < q->layer_end && l < n_layer; l++) need += lb[l];
        free(lb);
        uint64_t mem = sysmem_free_bytes();
        if (n_layer != q->n_layer) {
            reply_set(r, STAGELOAD_FAILED, "the file has %d layers, not %d", n_layer,
                      q->n_layer);
            return;
        }
        if ((double)need > (double)mem * AUTOSPLIT_MEM_SHARE) {
            reply_set(r, STAGELOAD_NO_MEMORY, "layers %d-%d need %.1f MiB; %.1f MiB free",
                      q->layer_begin, q->layer_end - 1, (double)need / 1048576.0,
                      (double)mem / 1048576.0);
            return;
        }
        entry_name(srv->reg, q, name, sizeof name);
        if (registry_add_split_load(srv->reg, path, name, q->model, q->layer_begin,
                                    q->layer_end, err, sizeof err)) {
            reply_set(r, STAGELOAD_FAILED, "%s", err);
            return;
        }
        log_info("stageload: loading layers %d-%d of %s (%s) for a member", q->layer_begin,
                 q->layer_end - 1, name, path);
    }
    /* wait for the loader thread (its entry's state), polling the stop flag */
    struct registry_entry *e;
    while ((e = entry_serving(srv->reg, q, &st)) && st == REGISTRY_LOADING &&
           !atomic_load(&srv->stop)) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&srv->stop)) reply_set(r, STAGELOAD_CLOSING, "the node is stopping");
    else if (e && st == REGISTRY_READY)
        reply_set(r, STAGELOAD_OK, "serving layers %d-%d of %s", q->layer_begin,
                  q->layer_end - 1, e->name);
    else
        reply_set(r, STAGELOAD_FAILED, "the load failed: %s", e ? e->err : "entry gone");
}

static void *worker_main(void *arg)
{
    struct ljob *j = arg;
    struct stageload_server *srv = j->srv;
    load_run(srv, j);
    pthread_mutex_lock(&srv->mu);
    if (j->reply.status == STAGELOAD_OK) srv->st.n_loaded++;
    else srv->st.n_refused++;
    srv->busy = false;
    pthread_mutex_unlock(&srv->mu);
    if (j->reply.status == STAGELOAD_OK) log_info("stageload: %s", j->reply.message);
    else log_info("stageload: refused: %s", j->reply.message);
    if (p2pnode_call(srv->pn, reply_on_loop, j)) ljob_unref(j);
    return NULL;
}

/* Loop thread: answers now (refusals) or starts the worker. */
static void srv_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct ljob *j = ctx;
    struct stageload_server *srv = j->srv;
    if (j->has_req) { /* one request per stream */
        host_stream_reset(s);
        return;
    }
    j->has_req = true;
    char why[STAGE_MAX_MESSAGE];
    int rc = stageload_req_decode(data, len, &j->req, why, sizeof why);
    bool go = false;
    if (rc) {
        reply_set(&j->reply, STAGELOAD_MALFORMED, "%s", why);
    } else if (!srv->is_member || !srv->is_member(srv->member_ctx, host_stream_peer(s))) {
        reply_set(&j->reply, STAGELOAD_REFUSED, "only members of this node's mesh may ask");
    } else if (!srv->accept) {
        reply_set(&j->reply, STAGELOAD_REFUSED,
                  "this node does not load stages for others (serve --accept-stages)");
    } else {
        go = true;
    }
    pthread_mutex_lock(&srv->mu);
    srv->st.n_requests++;
    if (go && srv->busy) {
        go = false;
        reply_set(&j->reply, STAGELOAD_BUSY, "another load is running; ask again later");
    }
    if (go) srv->busy = true;
    else srv->st.n_refused++;
    pthread_mutex_unlock(&srv->mu);
    if (!go) {
        log_info("stageload: refused a request: %s", j->reply.message);
        ljob_write(j);
        return;
    }
    if (srv->has_thread) pthread_join(srv->thread, NULL); /* the previous one has ended */
    srv->has_thread = false;
    atomic_fetch_add(&j->refs, 1); /* the worker's */
    if (pthread_create(&srv->thread, NULL, worker_main, j) != 0) {
        atomic_fetch_sub(&j->refs, 1);
        pthread_mutex_lock(&srv->mu);
        srv->busy = false;
        pthread_mutex_unlock(&srv->mu);
        reply_set(&j->reply, STAGELOAD_FAILED, "cannot start a loader thread");
        ljob_write(j);
        return;
    }
    srv->has_thread = true;
}

static void srv_on_eof(void *ctx, struct host_stream *s)
{
    struct ljob *j = ctx;
    if (!j->has_req) host_stream_close(s); /* nothing asked: nothing to answer */
    /* else the reply closes our side */
}

static void srv_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    struct ljob *j = ctx;
    j->s = NULL;
    ljob_unref(j); /* the stream's */
}

static const struct host_stream_cbs srv_cbs = {
    .on_data = srv_on_data, .on_eof = srv_on_eof, .on_close = srv_on_close};

static void srv_on_stream(void *ctx, struct host_stream *s)
{
    struct stageload_server *srv = ctx;
    struct ljob *j = atomic_load(&srv->stop) ? NULL : calloc(1, sizeof *j);
    if (!j) {
        host_stream_reset(s);
        return;
    }
    j->srv = srv;
    j->s = s;
    atomic_init(&j->refs, 1);
    host_stream_set_message_mode(s, STAGELOAD_MAX_FRAME);
    host_stream_set_callbacks(s, &srv_cbs, j);
}

int stageload_server_new(const struct stageload_server_config *cfg,
                         struct stageload_server **out)
{
    *out = NULL;
    struct host *h = cfg->pn ? p2pnode_host(cfg->pn) : NULL;
    if (!h || !cfg->reg) return MESH_EINVAL;
    struct stageload_server *srv = calloc(1, sizeof *srv);
    if (!srv) return MESH_ENOMEM;
    srv->pn = cfg->pn;
    srv->reg = cfg->reg;
    srv->accept = cfg->accept;
    srv->is_member = cfg->is_member;
    srv->member_ctx = cfg->member_ctx;
    pthread_mutex_init(&srv->mu, NULL);
    atomic_init(&srv->stop, false);
    int rc = host_set_handler(h, STAGELOAD_PROTOCOL_ID, srv_on_stream, srv);
    if (rc) {
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void stageload_server_stats(struct stageload_server *s, struct stageload_server_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

void stageload_server_free(struct stageload_server *s)
{
    if (!s) return;
    atomic_store(&s->stop, true);
    if (s->has_thread) pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int stageload_ask(struct p2pnode *pn, const struct peer_id *peer, const struct multiaddr *addr,
                  const struct stageload_req *q, int timeout_ms, const atomic_bool *interrupt,
                  struct stageload_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    uint8_t *msg = NULL, *in = NULL;
    size_t len = 0, in_len = 0;
    int rc = stageload_req_encode(q, &msg, &len);
    if (rc) return rc;
    struct stage_conn *c = NULL;
    rc = stage_conn_new_proto(pn, peer, addr, STAGELOAD_PROTOCOL_ID, STAGELOAD_MAX_FRAME, &c);
    if (rc) {
        free(msg);
        return rc;
    }
    rc = stage_conn_call_raw(c, msg, len, &in, &in_len, timeout_ms, interrupt);
    if (rc == 0 && stageload_reply_decode(in, in_len, reply)) rc = MESH_EIO;
    free(in);
    stage_conn_free(c, true);
    return rc;
}
