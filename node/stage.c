/* stage.c - /meshllm/stage/1 (stage.h): the engine that runs a layer range for many
 * sessions, the server glue on the loop thread, and the requester's client connection.
 *
 * Threads. The engine's worker thread owns its model_ctx and session table; jobs reach it
 * through a mutex-guarded FIFO. The server's streams live on the p2pnode loop thread; the
 * worker hands each encoded reply back through the server's ready list and a uv_async wake,
 * and the loop writes replies in each stream's request order (seqno). A client connection
 * is used by one caller thread at a time; its stream lives on the loop thread, replies are
 * queued raw under the connection's mutex and decoded by the caller.
 * Spec: docs/PROTOCOL.md, /meshllm/stage/1. Not here: batching one session's requests
 * (they run one after the other), recovery (docs/SPLIT.md).
 */
#include "node/stage.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/model.h"
#include "net/host.h"
#include "net/varint.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void stage_job_free(struct stage_job *j)
{
    if (!j) return;
    stage_req_free(&j->req);
    free(j);
}

static int reply_error(const uint8_t session[STAGE_SESSION_LEN], int err, const char *why,
                       uint8_t **out, size_t *out_len)
{
    struct stage_reply r;
    memset(&r, 0, sizeof r);
    memcpy(r.session, session, STAGE_SESSION_LEN);
    r.error = err;
    snprintf(r.message, sizeof r.message, "%s", why && *why ? why : stage_err_name(err));
    return stage_reply_encode(&r, out, out_len);
}

int stage_job_error_reply(const struct stage_job *j, uint8_t **out, size_t *out_len)
{
    return reply_error(j->req.session, j->err ? j->err : STAGE_ERR_INTERNAL, j->why, out,
                       out_len);
}

/* ---- engine ------------------------------------------------------------------------------ */

struct sess {
    bool used;
    uint8_t id[STAGE_SESSION_LEN];
    uint64_t owner;
    uint64_t last_ms;
};

struct stage_engine {
    const struct model *m;
    struct model_ctx *ctx;       /* worker thread */
    int layer_begin, layer_end, n_slots, n_batch, n_ctx, n_embd;
    struct sess *sess;           /* [n_slots], worker thread */
    float *x;                    /* [n_batch][n_embd] the pass's hidden states */
    int32_t *pos, *seq;          /* [n_batch] */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;          /* guards the queue, stop and st */
    pthread_cond_t cv;
    bool stop;
    struct stage_job *q_head, *q_tail;
    struct stage_engine_stats st;
};

static void job_finish(struct stage_job *j, int err, const char *why)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!j->is_drop) {
        j->err = err;
        if (why) snprintf(j->why, sizeof j->why, "%s", why);
        if (stage_job_error_reply(j, &buf, &len)) buf = NULL, len = 0;
    }
    j->done(j, buf, len);
}

void stage_engine_submit(struct stage_engine *e, struct stage_job *j)
{
    j->next = NULL;
    j->slot = -1;
    pthread_mutex_lock(&e->mu);
    if (e->stop) {
        pthread_mutex_unlock(&e->mu);
        job_finish(j, STAGE_ERR_CLOSING, "the node is stopping");
        return;
    }
    if (e->q_tail) e->q_tail->next = j;
    else e->q_head = j;
    e->q_tail = j;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int stage_engine_kv_describe(const struct stage_engine *e, char *buf, size_t cap)
{
    return model_ctx_kv_describe(e->ctx, buf, cap);
}

void stage_engine_range(const struct stage_engine *e, int *layer_begin, int *layer_end)
{
    *layer_begin = e->layer_begin;
    *layer_end = e->layer_end;
}

static void sess_forget(struct stage_engine *e, int i)
{
    model_kv_seq_truncate(e->ctx, i, 0);
    memset(&e->sess[i], 0, sizeof e->sess[i]);
}

static int sess_find(struct stage_engine *e, uint64_t owner, const uint8_t *id)
{
    for (int i = 0; i < e->n_slots; i++)
        if (e->sess[i].used && e->sess[i].owner == owner &&
            !memcmp(e->sess[i].id, id, STAGE_SESSION_LEN))
            return i;
    return -1;
}

/* Forgets sessions idle for STAGE_SESSION_IDLE_MS (worker thread). */
static void evict_idle(struct stage_engine *e, uint64_t now)
{
    int n = 0;
    for (int i = 0; i < e->n_slots; i++)
        if (e->sess[i].used && now - e->sess[i].last_ms > STAGE_SESSION_IDLE_MS) {
            sess_forget(e, i);
            n++;
        }
    if (!n) return;
    pthread_mutex_lock(&e->mu);
    e->st.n_evicted += (uint64_t)n;
    pthread_mutex_unlock(&e->mu);
}

/* Checks a compute job against the session table and gives it its slot (worker thread).
 * Returns STAGE_OK or the error to answer (why filled). */
static int job_admit(struct stage_engine *e, struct stage_job *j, uint64_t now)
{
    struct stage_req *q = &j->req;
    if (q->layer_begin != e->layer_begin || q->layer_end != e->layer_end) {
        snprintf(j->why, sizeof j->why, "this stage runs layers [%d, %d)", e->layer_begin,
                 e->layer_end);
        return STAGE_ERR_RANGE;
    }
    if (q->n_embd != e->n_embd) {
        snprintf(j->why, sizeof j->why, "hidden states are %d wide here, not %d", e->n_embd,
                 q->n_embd);
        return STAGE_ERR_DIMS;
    }
    if (q->pos[q->n_tokens - 1] >= e->n_ctx) {
        snprintf(j->why, sizeof j->why, "position %d is beyond the context (%d)",
                 q->pos[q->n_tokens - 1], e->n_ctx);
        return STAGE_ERR_POS;
    }
    int i = sess_find(e, j->owner, q->session);
    if (i < 0) {
        if (q->pos[0] != 0) {
            snprintf(j->why, sizeof j->why, "unknown session: its first position must be 0");
            return STAGE_ERR_POS;
        }
        for (int k = 0; k < e->n_slots && i < 0; k++)
            if (!e->sess[k].used) i = k;
        if (i < 0) {
            snprintf(j->why, sizeof j->why, "all %d session slots are in use", e->n_slots);
            return STAGE_ERR_BUSY;
        }
        e->sess[i].used = true;
        e->sess[i].owner = j->owner;
        memcpy(e->sess[i].id, q->session, STAGE_SESSION_LEN);
        model_kv_seq_truncate(e->ctx, i, 0);
    }
    int cached = model_kv_seq_len(e->ctx, i);
    if (q->pos[0] > cached) {
        snprintf(j->why, sizeof j->why, "position %d after %d cached: a gap", q->pos[0], cached);
        return STAGE_ERR_POS;
    }
    /* an earlier position rewinds: the requester recomputes from there */
    if (q->pos[0] < cached) model_kv_seq_truncate(e->ctx, i, q->pos[0]);
    e->sess[i].last_ms = now;
    j->slot = i;
    return STAGE_OK;
}

/* Runs one job alone, n_batch tokens at a time, in place in its own buffer. */
static int run_alone(struct stage_engine *e, struct stage_job *j)
{
    struct stage_req *q = &j->req;
    for (int off = 0; off < q->n_tokens; off += e->n_batch) {
        int k = q->n_tokens - off < e->n_batch ? q->n_tokens - off : e->n_batch;
        for (int t = 0; t < k; t++) e->seq[t] = j->slot;
        struct model_batch b = {.n = k, .pos = q->pos + off, .seq = e->seq};
        int rc = model_layers(e->ctx, &b, q->x + (size_t)off * (size_t)e->n_embd);
        pthread_mutex_lock(&e->mu);
        e->st.n_passes++;
        e->st.n_tokens += (uint64_t)k;
        pthread_mutex_unlock(&e->mu);
        if (rc) return rc;
    }
    return 0;
}

/* Runs the jobs of list with a slot (their tokens fit n_batch together) in one pass. */
static int run_together(struct stage_engine *e, struct stage_job *list, int n_jobs)
{
    size_t E = (size_t)e->n_embd;
    int n = 0;
    for (struct stage_job *j = list; j; j = j->next) {
        if (j->slot < 0) continue;
        memcpy(e->x + (size_t)n * E, j->req.x, (size_t)j->req.n_tokens * E * sizeof *e->x);
        for (int t = 0; t < j->req.n_tokens; t++) {
            e->pos[n + t] = j->req.pos[t];
            e->seq[n + t] = j->slot;
        }
        n += j->req.n_tokens;
    }
    if (n == 0) return 0;
    struct model_batch b = {.n = n, .pos = e->pos, .seq = e->seq};
    int rc = model_layers(e->ctx, &b, e->x);
    pthread_mutex_lock(&e->mu);
    e->st.n_passes++;
    e->st.n_tokens += (uint64_t)n;
    if (n_jobs > 1) e->st.n_batched++;
    pthread_mutex_unlock(&e->mu);
    if (rc) return rc;
    n = 0;
    for (struct stage_job *j = list; j; j = j->next) {
        if (j->slot < 0) continue;
        memcpy(j->req.x, e->x + (size_t)n * E, (size_t)j->req.n_tokens * E * sizeof *e->x);
        n += j->req.n_tokens;
    }
    return 0;
}

/* The reply of a job that ran: the states it asked for. */
static void job_reply(struct stage_engine *e, struct stage_job *j)
{
    struct stage_req *q = &j->req;
    struct stage_reply r;
    memset(&r, 0, sizeof r);
    memcpy(r.session, q->session, STAGE_SESSION_LEN);
    r.n_embd = e->n_embd;
    r.n_cached = model_kv_seq_len(e->ctx, j->slot);
    int from = q->out == STAGE_OUT_ALL ? 0 : q->n_tokens - 1;
    r.n_tokens = q->out == STAGE_OUT_ALL ? q->n_tokens : q->out == STAGE_OUT_LAST ? 1 : 0;
    r.pos = q->pos[from];
    r.x = q->x + (size_t)from * (size_t)e->n_embd;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (stage_reply_encode(&r, &buf, &len)) {
        job_finish(j, STAGE_ERR_INTERNAL, "out of memory encoding the reply");
        return;
    }
    j->done(j, buf, len);
}

/* Takes the jobs to run next: the head of the queue, and behind it those of other sessions
 * whose tokens still fit one pass (mu held). Order is kept: the first job that does not fit
 * stays, with everything behind it. */
static struct stage_job *take_jobs(struct stage_engine *e)
{
    struct stage_job *list = e->q_head, *last = list;
    int tokens = list->req.n_tokens;
    /* a session's end or a stream's drop runs alone: it frees slots the others may take */
    while (last->next && !list->is_drop && !list->req.end) {
        struct stage_job *nx = last->next;
        if (nx->is_drop || nx->req.end) break;
        if (tokens + nx->req.n_tokens > e->n_batch || tokens >= e->n_batch) break;
        bool clash = false;
        for (struct stage_job *j = list; j != nx && !clash; j = j->next)
            clash = j->owner == nx->owner &&
                    !memcmp(j->req.session, nx->req.session, STAGE_SESSION_LEN);
        if (clash) break;
        tokens += nx->req.n_tokens;
        last = nx;
    }
    e->q_head = last->next;
    if (!e->q_head) e->q_tail = NULL;
    last->next = NULL;
    return list;
}

static void process(struct stage_engine *e, struct stage_job *list)
{
    uint64_t now = mono_ms();
    int n_compute = 0, n_tokens = 0;
    for (struct stage_job *j = list; j; j = j->next) {
        j->slot = -1;
        j->rc = j->err;
        if (j->is_drop) {
            for (int i = 0; i < e->n_slots; i++)
                if (e->sess[i].used && e->sess[i].owner == j->owner) sess_forget(e, i);
            continue;
        }
        if (j->rc) continue;
        if (j->req.end) {
            int i = sess_find(e, j->owner, j->req.session);
            if (i >= 0) sess_forget(e, i);
            continue;
        }
        j->rc = job_admit(e, j, now);
        if (j->rc == STAGE_OK) {
            n_compute++;
            n_tokens += j->req.n_tokens;
        }
    }
    int rc = 0;
    if (n_compute == 1 && n_tokens > e->n_batch) {
        for (struct stage_job *j = list; j; j = j->next)
            if (j->slot >= 0) rc = run_alone(e, j);
    } else {
        rc = run_together(e, list, n_compute);
    }
    if (rc) {
        log_warn("stage: layers [%d, %d) failed on %d tokens: %s", e->layer_begin, e->layer_end,
                 n_tokens, err_str(rc));
        for (struct stage_job *j = list; j; j = j->next)
            if (j->slot >= 0) {
                sess_forget(e, j->slot);
                j->slot = -1;
                j->rc = STAGE_ERR_INTERNAL;
                snprintf(j->why, sizeof j->why, "the stage failed: %s", err_str(rc));
            }
    }
    /* the replies, in the order the jobs came */
    while (list) {
        struct stage_job *j = list;
        list = j->next;
        j->next = NULL;
        pthread_mutex_lock(&e->mu);
        if (!j->is_drop) e->st.n_requests++;
        if (!j->is_drop && j->rc) e->st.n_errors++;
        if (j->rc == STAGE_ERR_BUSY) e->st.n_busy++;
        pthread_mutex_unlock(&e->mu);
        if (j->is_drop || j->req.end) {
            if (j->is_drop) {
                j->done(j, NULL, 0);
            } else {
                struct stage_reply r;
                memset(&r, 0, sizeof r);
                memcpy(r.session, j->req.session, STAGE_SESSION_LEN);
                uint8_t *buf = NULL;
                size_t len = 0;
                if (stage_reply_encode(&r, &buf, &len)) buf = NULL, len = 0;
                j->done(j, buf, len);
            }
        } else if (j->rc) {
            job_finish(j, j->rc, NULL);
        } else {
            job_reply(e, j);
        }
    }
}

static void *engine_main(void *arg)
{
    struct stage_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && !e->q_head) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
            pthread_mutex_unlock(&e->mu);
            evict_idle(e, mono_ms());
            pthread_mutex_lock(&e->mu);
        }
        if (e->stop) break;
        struct stage_job *list = take_jobs(e);
        pthread_mutex_unlock(&e->mu);
        process(e, list);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int stage_engine_new(const struct model *m, const struct stage_engine_params *p,
                     struct stage_engine **out, char *err, size_t err_cap)
{
    *out = NULL;
    const struct model_hparams *hp = model_hparams(m);
    if (p->layer_begin < 0 || p->layer_begin >= p->layer_end || p->layer_end > hp->n_layer ||
        p->n_slots <= 0 || p->n_slots > 256)
        return err_set(err, err_cap, MESH_EINVAL, "stage: bad layer range or slot count");
    struct stage_engine *e = calloc(1, sizeof *e);
    if (!e) return err_set(err, err_cap, MESH_ENOMEM, "stage: out of memory");
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->m = m;
    e->layer_begin = p->layer_begin;
    e->layer_end = p->layer_end;
    e->n_slots = p->n_slots;
    e->n_embd = hp->n_embd;
    struct model_ctx_params cp;
    model_ctx_params_default(&cp);
    cp.n_ctx = p->n_ctx;
    cp.n_batch = p->n_batch;
    cp.n_seq = p->n_slots;
    cp.n_threads = p->n_threads;
    cp.k_type = p->k_type;
    cp.v_type = p->v_type;
    cp.layer_begin = p->layer_begin;
    cp.layer_end = p->layer_end;
    int rc = model_ctx_new(m, &cp, &e->ctx, err, err_cap);
    if (rc) goto fail;
    e->n_batch = model_ctx_n_batch(e->ctx);
    e->n_ctx = model_ctx_n_ctx(e->ctx);
    e->sess = calloc((size_t)e->n_slots, sizeof *e->sess);
    e->x = malloc((size_t)e->n_batch * (size_t)e->n_embd * sizeof *e->x);
    e->pos = malloc((size_t)e->n_batch * sizeof *e->pos);
    e->seq = malloc((size_t)e->n_batch * sizeof *e->seq);
    rc = MESH_ENOMEM;
    if (!e->sess || !e->x || !e->pos || !e->seq) {
        err_set(err, err_cap, rc, "stage: out of memory");
        goto fail;
    }
    e->st.n_slots = e->n_slots;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0) {
        err_set(err, err_cap, rc, "stage: cannot start the worker");
        goto fail;
    }
    e->started = true;
    *out = e;
    return 0;
fail:
    stage_engine_free(e);
    return rc;
}

void stage_engine_free(struct stage_engine *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    struct stage_job *q = e->q_head;
    e->q_head = e->q_tail = NULL;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->thread, NULL);
    while (q) {
        struct stage_job *j = q;
        q = j->next;
        job_finish(j, STAGE_ERR_CLOSING, "the node is stopping");
    }
    model_ctx_free(e->ctx);
    free(e->sess);
    free(e->x);
    free(e->pos);
    free(e->seq);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

void stage_engine_stats(struct stage_engine *e, struct stage_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    pthread_mutex_unlock(&e->mu);
    /* the session count is the worker's; a racy read is fine for a number shown */
    int n = 0;
    for (int i = 0; i < e->n_slots; i++) n += e->sess[i].used;
    out->n_sessions = n;
}

/* ---- server ------------------------------------------------------------------------------ */

struct sconn;

/* A reply ready to be written, in the stream's order. */
struct sout {
    uint64_t seqno;
    uint8_t *buf;
    size_t len;
    struct sout *next;
};

#define SCONN_MAX_KEYS 4

struct stage_server {
    struct p2pnode *pn;
    stage_submit_fn submit;
    void *submit_ctx;
    uv_async_t wake;
    struct sconn *all;           /* loop thread */
    uint64_t next_owner;         /* loop thread */
    pthread_mutex_t mu;          /* guards closing, the ready list, each sconn's refs/done */
    bool closing;
    struct sconn *ready;
    struct stage_server_stats st; /* mu */
};

/* One inbound stream. Referenced by the loop (while the stream is open) and by each job
 * in an engine; freed at the last reference. */
struct sconn {
    struct stage_server *srv;
    struct host_stream *s;       /* loop thread; NULL once closed */
    uint64_t owner;
    uint64_t next_in, next_out;  /* loop thread: seqnos given / written */
    int refs;                    /* srv->mu */
    struct sout *done;           /* srv->mu: replies not written, any order */
    bool queued;                 /* srv->mu: on srv->ready */
    struct sconn *next_ready;
    struct sconn *prev, *next;   /* srv->all (loop thread) */
    struct {                     /* the engines its sessions live on, to drop them at close */
        char model[65];
        int layer_begin, layer_end;
    } keys[SCONN_MAX_KEYS];
    int n_keys;
};

static void sconn_unref(struct sconn *c)
{
    struct stage_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&srv->mu);
    if (!last) return;
    while (c->done) {
        struct sout *o = c->done;
        c->done = o->next;
        free(o->buf);
        free(o);
    }
    free(c);
}

/* Queues a reply for c (any thread); takes buf. */
static void sconn_post(struct sconn *c, uint64_t seqno, uint8_t *buf, size_t len)
{
    struct stage_server *srv = c->srv;
    struct sout *o = calloc(1, sizeof *o);
    pthread_mutex_lock(&srv->mu);
    if (!o || srv->closing) {
        pthread_mutex_unlock(&srv->mu);
        free(o);
        free(buf);
        return;
    }
    o->seqno = seqno;
    o->buf = buf;
    o->len = len;
    o->next = c->done;
    c->done = o;
    if (!c->queued) {
        c->queued = true;
        c->refs++;
        c->next_ready = srv->ready;
        srv->ready = c;
    }
    uv_async_send(&srv->wake);
    pthread_mutex_unlock(&srv->mu);
}

static void job_done(struct stage_job *j, uint8_t *buf, size_t len)
{
    struct sconn *c = j->arg;
    if (j->is_drop || j->seqno == UINT64_MAX) free(buf); /* no reply of its own */
    else sconn_post(c, j->seqno, buf, len); /* even NULL: keeps the order moving */
    stage_job_free(j);
    sconn_unref(c);
}

static void sconn_remove(struct sconn *c)
{
    struct stage_server *srv = c->srv;
    if (c->prev) c->prev->next = c->next;
    else srv->all = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Tells the engines c used to forget its sessions (loop thread). */
static void sconn_drop_sessions(struct sconn *c)
{
    struct stage_server *srv = c->srv;
    for (int k = 0; k < c->n_keys && !srv->closing; k++) {
        struct stage_job *j = calloc(1, sizeof *j);
        if (!j) break;
        j->is_drop = true;
        j->owner = c->owner;
        memcpy(j->req.model, c->keys[k].model, sizeof j->req.model);
        j->req.layer_begin = c->keys[k].layer_begin;
        j->req.layer_end = c->keys[k].layer_end;
        j->done = job_done;
        j->arg = c;
        pthread_mutex_lock(&srv->mu);
        c->refs++;
        pthread_mutex_unlock(&srv->mu);
        if (srv->submit(srv->submit_ctx, j) != STAGE_OK) {
            stage_job_free(j);
            sconn_unref(c);
        }
    }
    c->n_keys = 0;
}

/* The stream is over (closed by the peer, reset, or by us): forget it. */
static void sconn_gone(struct sconn *c)
{
    struct stage_server *srv = c->srv;
    c->s = NULL;
    sconn_drop_sessions(c);
    sconn_remove(c);
    pthread_mutex_lock(&srv->mu);
    srv->st.n_active--;
    pthread_mutex_unlock(&srv->mu);
    sconn_unref(c); /* the loop's */
}

static void sconn_abort(struct sconn *c, const char *why)
{
    char who[64] = "?";
    if (c->s) peer_id_to_text(host_stream_peer(c->s), who, sizeof who);
    log_warn("stage: %s's stream reset: %s", who, why);
    if (c->s) host_stream_reset(c->s);
    sconn_gone(c);
}

/* Writes c's replies that are next in order (loop thread). */
static void sconn_pump(struct sconn *c)
{
    struct stage_server *srv = c->srv;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        struct sout *o = NULL, **pp;
        for (pp = &c->done; *pp; pp = &(*pp)->next)
            if ((*pp)->seqno == c->next_out) {
                o = *pp;
                *pp = o->next;
                break;
            }
        pthread_mutex_unlock(&srv->mu);
        if (!o) return;
        c->next_out++;
        int rc = 0;
        if (c->s && o->buf) {
            rc = host_stream_write_msg(c->s, o->buf, o->len);
            pthread_mutex_lock(&srv->mu);
            srv->st.n_replies++;
            pthread_mutex_unlock(&srv->mu);
        }
        free(o->buf);
        free(o);
        if (rc && c->s) {
            sconn_abort(c, "cannot write a reply");
            return;
        }
    }
}

static void srv_on_wake(uv_async_t *a)
{
    struct stage_server *srv = a->data;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        struct sconn *c = srv->ready;
        if (c) {
            srv->ready = c->next_ready;
            c->queued = false;
        }
        pthread_mutex_unlock(&srv->mu);
        if (!c) break;
        if (c->s) sconn_pump(c);
        sconn_unref(c); /* the ready list's */
    }
}

static void sconn_key_add(struct sconn *c, const struct stage_req *q)
{
    for (int k = 0; k < c->n_keys; k++)
        if (!strcmp(c->keys[k].model, q->model) && c->keys[k].layer_begin == q->layer_begin &&
            c->keys[k].layer_end == q->layer_end)
            return;
    if (c->n_keys == SCONN_MAX_KEYS) return; /* idle eviction frees those sessions */
    memcpy(c->keys[c->n_keys].model, q->model, sizeof c->keys[0].model);
    c->keys[c->n_keys].layer_begin = q->layer_begin;
    c->keys[c->n_keys].layer_end = q->layer_end;
    c->n_keys++;
}

static void srv_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    (void)s;
    struct sconn *c = ctx;
    struct stage_server *srv = c->srv;
    if (c->next_in - c->next_out >= STAGE_MAX_INFLIGHT) {
        sconn_abort(c, "too many requests waiting");
        return;
    }
    struct stage_job *j = calloc(1, sizeof *j);
    if (!j) {
        sconn_abort(c, "out of memory");
        return;
    }
    bool has_session = false;
    int rc = stage_req_decode(data, len, &j->req, &has_session, j->why, sizeof j->why);
    j->owner = c->owner;
    j->seqno = c->next_in++;
    j->done = job_done;
    j->arg = c;
    pthread_mutex_lock(&srv->mu);
    c->refs++;
    srv->st.n_requests++;
    if (rc) srv->st.n_errors++;
    pthread_mutex_unlock(&srv->mu);
    if (rc == MESH_ENOMEM) {
        rc = STAGE_ERR_INTERNAL;
        snprintf(j->why, sizeof j->why, "out of memory");
    }
    if (rc == STAGE_OK && srv->closing) rc = STAGE_ERR_CLOSING;
    if (rc == STAGE_OK && !j->req.end) {
        sconn_key_add(c, &j->req);
        rc = srv->submit(srv->submit_ctx, j);
        if (rc == STAGE_OK) return; /* the engine answers */
        if (!j->why[0])
            snprintf(j->why, sizeof j->why, "%s",
                     rc == STAGE_ERR_MODEL ? "this node serves no stage of that model"
                     : rc == STAGE_ERR_RANGE ? "this node serves other layers of that model"
                                             : stage_err_name(rc));
        pthread_mutex_lock(&srv->mu);
        srv->st.n_errors++;
        pthread_mutex_unlock(&srv->mu);
    } else if (rc == STAGE_OK) { /* end: the engines forget it */
        for (int k = 0; k < c->n_keys; k++) {
            struct stage_job *e = calloc(1, sizeof *e);
            if (!e) break;
            e->req = j->req;
            e->req.pos = NULL;
            e->req.x = NULL;
            memcpy(e->req.model, c->keys[k].model, sizeof e->req.model);
            e->req.layer_begin = c->keys[k].layer_begin;
            e->req.layer_end = c->keys[k].layer_end;
            e->owner = c->owner;
            e->is_drop = false;
            e->seqno = UINT64_MAX; /* no reply of its own */
            e->done = job_done;
            e->arg = c;
            e->err = 0;
            pthread_mutex_lock(&srv->mu);
            c->refs++;
            pthread_mutex_unlock(&srv->mu);
            if (srv->submit(srv->submit_ctx, e) != STAGE_OK) {
                stage_job_free(e);
                sconn_unref(c);
            }
        }
    }
    /* answered here: an error, or end's plain acknowledgement */
    j->err = rc;
    uint8_t *buf = NULL;
    size_t blen = 0;
    if (rc) stage_job_error_reply(j, &buf, &blen);
    else reply_error(j->req.session, 0, "", &buf, &blen);
    sconn_post(c, j->seqno, buf, blen);
    stage_job_free(j);
    sconn_unref(c);
}

static void srv_on_eof(void *ctx, struct host_stream *s)
{
    /* the requester is done: finish writing what is pending, then close our side */
    struct sconn *c = ctx;
    (void)c;
    host_stream_close(s);
}

static void srv_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    sconn_gone(ctx);
}

static const struct host_stream_cbs srv_cbs = {
    .on_data = srv_on_data, .on_eof = srv_on_eof, .on_close = srv_on_close};

static void srv_on_stream(void *ctx, struct host_stream *s)
{
    struct stage_server *srv = ctx;
    struct sconn *c = srv->closing ? NULL : calloc(1, sizeof *c);
    if (!c) {
        host_stream_reset(s);
        return;
    }
    c->srv = srv;
    c->s = s;
    c->owner = ++srv->next_owner;
    c->refs = 1;
    c->next = srv->all;
    if (srv->all) srv->all->prev = c;
    srv->all = c;
    pthread_mutex_lock(&srv->mu);
    srv->st.n_streams++;
    srv->st.n_active++;
    pthread_mutex_unlock(&srv->mu);
    host_stream_set_message_mode(s, STAGE_MAX_FRAME);
    host_stream_set_callbacks(s, &srv_cbs, c);
}

int stage_server_new(const struct stage_server_config *cfg, struct stage_server **out)
{
    *out = NULL;
    struct host *h = cfg->pn ? p2pnode_host(cfg->pn) : NULL;
    if (!h || !cfg->submit) return MESH_EINVAL;
    struct stage_server *srv = calloc(1, sizeof *srv);
    if (!srv) return MESH_ENOMEM;
    srv->pn = cfg->pn;
    srv->submit = cfg->submit;
    srv->submit_ctx = cfg->submit_ctx;
    pthread_mutex_init(&srv->mu, NULL);
    if (uv_async_init(p2pnode_loop(cfg->pn), &srv->wake, srv_on_wake)) {
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return MESH_ENOMEM;
    }
    srv->wake.data = srv;
    int rc = host_set_handler(h, STAGE_PROTOCOL_ID, srv_on_stream, srv);
    if (rc) {
        stage_server_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void stage_server_stats(struct stage_server *s, struct stage_server_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

static void srv_on_wake_closed(uv_handle_t *h)
{
    struct stage_server *srv = h->data;
    /* replies posted before closing wait on the ready list: drop its refs */
    while (srv->ready) {
        struct sconn *c = srv->ready;
        srv->ready = c->next_ready;
        c->queued = false;
        sconn_unref(c);
    }
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

void stage_server_free(struct stage_server *srv)
{
    if (!srv) return;
    pthread_mutex_lock(&srv->mu);
    srv->closing = true; /* the engines' replies from now on are dropped */
    pthread_mutex_unlock(&srv->mu);
    while (srv->all) {
        struct sconn *c = srv->all;
        if (c->s) host_stream_reset(c->s);
        sconn_gone(c);
    }
    uv_close((uv_handle_t *)&srv->wake, srv_on_wake_closed);
}

/* ---- client ------------------------------------------------------------------------------ */

struct cmsg {
    uint8_t *buf;
    size_t len;
    struct cmsg *next;
};

struct stage_conn {
    struct p2pnode *pn;
    struct multiaddr addr;
    const char *protocol;        /* STAGE_PROTOCOL_ID, or stage_conn_new_proto's */
    size_t max_frame;
    char peer_text[64];
    struct host_stream *s;       /* loop thread */
    bool opening;                /* loop thread: host_open_stream in flight */
    struct cmsg *out_head, *out_tail; /* loop thread: waiting for the stream to open */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t cv;
    int refs;                    /* the caller's, the stream's, each pending p2pnode_call */
    bool dead;                   /* the stream failed: every call fails */
    struct cmsg *in_head, *in_tail; /* replies not yet taken */
    int n_in;
    uint64_t bytes_sent, bytes_recv;
};

/* A batch of requests for the loop to write. */
struct ccall {
    struct stage_conn *c;
    struct cmsg *msgs;
    bool is_close;
};

static void conn_unref(struct stage_conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last) return;
    for (struct cmsg *l = c->in_head; l;) {
        struct cmsg *n = l->next;
        free(l->buf);
        free(l);
        l = n;
    }
    for (struct cmsg *l = c->out_head; l;) {
        struct cmsg *n = l->next;
        free(l->buf);
        free(l);
        l = n;
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void msgs_free(struct cmsg *l)
{
    while (l) {
        struct cmsg *n = l->next;
        free(l->buf);
        free(l);
        l = n;
    }
}

static void conn_die(struct stage_conn *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    bool was = c->dead;
    c->dead = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (was) return;
    if (!strcmp(c->protocol, STAGE_PROTOCOL_ID))
        log_info("stage: the stream to %s failed: %s", c->peer_text, why);
    else /* a one-message exchange: its end is no failure */
        log_debug("%s: the stream to %s ended: %s", c->protocol, c->peer_text, why);
}

static void cl_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    (void)s;
    struct stage_conn *c = ctx;
    struct cmsg *m = calloc(1, sizeof *m);
    uint8_t *b = m ? malloc(len ? len : 1) : NULL;
    if (!b) {
        free(m);
        conn_die(c, "out of memory");
        return;
    }
    memcpy(b, data, len);
    m->buf = b;
    m->len = len;
    pthread_mutex_lock(&c->mu);
    if (c->in_tail) c->in_tail->next = m;
    else c->in_head = m;
    c->in_tail = m;
    c->n_in++;
    c->bytes_recv += len;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void cl_on_eof(void *ctx, struct host_stream *s)
{
    (void)s;
    conn_die(ctx, "the stage closed the stream");
}

static void cl_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    struct stage_conn *c = ctx;
    c->s = NULL;
    conn_die(c, status ? "connection lost" : "stream closed");
    conn_unref(c); /* the stream's */
}

static const struct host_stream_cbs cl_cbs = {
    .on_data = cl_on_data, .on_eof = cl_on_eof, .on_close = cl_on_close};

/* Writes the queued messages (loop thread, stream open). */
static void conn_flush(struct stage_conn *c)
{
    while (c->out_head && c->s) {
        struct cmsg *m = c->out_head;
        c->out_head = m->next;
        if (!c->out_head) c->out_tail = NULL;
        int rc = host_stream_write_msg(c->s, m->buf, m->len);
        pthread_mutex_lock(&c->mu);
        c->bytes_sent += m->len;
        pthread_mutex_unlock(&c->mu);
        free(m->buf);
        free(m);
        if (rc) {
            host_stream_reset(c->s);
            c->s = NULL;
            conn_die(c, "cannot write");
            conn_unref(c); /* the stream's: no callback follows a reset */
            return;
        }
    }
}

static void cl_on_open(void *ctx, struct host_stream *s, int status)
{
    struct stage_conn *c = ctx;
    c->opening = false;
    pthread_mutex_lock(&c->mu);
    bool dead = c->dead;
    pthread_mutex_unlock(&c->mu);
    if (status || dead) {
        if (s) host_stream_reset(s);
        conn_die(c, status ? err_str(status) : "closed");
        msgs_free(c->out_head);
        c->out_head = c->out_tail = NULL;
        conn_unref(c); /* the stream's */
        return;
    }
    c->s = s;
    host_stream_set_message_mode(s, c->max_frame);
    host_stream_set_callbacks(s, &cl_cbs, c);
    conn_flush(c);
}

static void cl_call(struct p2pnode *pn, void *arg)
{
    struct ccall *k = arg;
    struct stage_conn *c = k->c;
    struct host *h = p2pnode_host(pn);
    if (k->is_close || !h) {
        msgs_free(k->msgs);
        if (c->s) {
            host_stream_reset(c->s);
            c->s = NULL;
            conn_unref(c); /* the stream's */
        }
        conn_die(c, h ? "closed by us" : "the node is stopping");
        goto out;
    }
    for (struct cmsg *m = k->msgs; m;) {
        struct cmsg *n = m->next;
        m->next = NULL;
        if (c->out_tail) c->out_tail->next = m;
        else c->out_head = m;
        c->out_tail = m;
        m = n;
    }
    if (c->s) {
        conn_flush(c);
    } else if (!c->opening) {
        pthread_mutex_lock(&c->mu);
        bool dead = c->dead;
        if (!dead) c->refs++; /* the stream's */
        pthread_mutex_unlock(&c->mu);
        if (dead) {
            msgs_free(c->out_head);
            c->out_head = c->out_tail = NULL;
        } else {
            c->opening = true;
            int rc = host_open_stream(h, &c->addr, c->protocol, cl_on_open, c);
            if (rc) {
                c->opening = false;
                conn_die(c, "cannot dial");
                msgs_free(c->out_head);
                c->out_head = c->out_tail = NULL;
                conn_unref(c);
            }
        }
    }
out:
    conn_unref(c); /* the call's */
    free(k);
}

int stage_conn_new_proto(struct p2pnode *pn, const struct peer_id *peer,
                         const struct multiaddr *addr, const char *protocol, size_t max_frame,
                         struct stage_conn **out)
{
    *out = NULL;
    if (!pn || !peer || !addr || !protocol) return MESH_EINVAL;
    struct stage_conn *c = calloc(1, sizeof *c);
    if (!c) return MESH_ENOMEM;
    c->pn = pn;
    c->addr = *addr;
    c->protocol = protocol;
    c->max_frame = max_frame;
    if (peer_id_to_text(peer, c->peer_text, sizeof c->peer_text))
        snprintf(c->peer_text, sizeof c->peer_text, "?");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->refs = 1;
    *out = c;
    return 0;
}

int stage_conn_new(struct p2pnode *pn, const struct peer_id *peer, const struct multiaddr *addr,
                   struct stage_conn **out)
{
    return stage_conn_new_proto(pn, peer, addr, STAGE_PROTOCOL_ID, STAGE_MAX_FRAME, out);
}

static int conn_post(struct stage_conn *c, struct cmsg *msgs, bool is_close)
{
    struct ccall *k = calloc(1, sizeof *k);
    if (!k) {
        msgs_free(msgs);
        return MESH_ENOMEM;
    }
    k->c = c;
    k->msgs = msgs;
    k->is_close = is_close;
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    int rc = p2pnode_call(c->pn, cl_call, k);
    if (rc) {
        msgs_free(msgs);
        free(k);
        conn_unref(c);
    }
    return rc;
}

/* The next message from the stream into *out (the caller frees it), waiting until deadline
 * (mono_ms) or *interrupt, waking every 100 ms to look at it. 0, MESH_EIO (the stream is
 * dead), MESH_ECLOSED, MESH_ETIMEOUT; after the last two the conn is dead too (a late
 * reply would be taken for the next call's). */
static int conn_take(struct stage_conn *c, uint64_t deadline, const atomic_bool *interrupt,
                     struct cmsg **out)
{
    *out = NULL;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->in_head) {
            struct cmsg *m = c->in_head;
            c->in_head = m->next;
            if (!c->in_head) c->in_tail = NULL;
            c->n_in--;
            *out = m;
            break;
        }
        if (c->dead) {
            rc = MESH_EIO;
            break;
        }
        if (interrupt && atomic_load(interrupt)) {
            rc = MESH_ECLOSED;
            break;
        }
        uint64_t now = mono_ms();
        if (now >= deadline) {
            rc = MESH_ETIMEOUT;
            break;
        }
        uint64_t wait_ms = deadline - now < 100 ? deadline - now : 100;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(wait_ms * 1000000);
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    if (rc) c->dead = true;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int stage_conn_call(struct stage_conn *c, uint8_t **msgs, const size_t *lens, int n, int n_embd,
                    struct stage_reply *replies, int timeout_ms, const atomic_bool *interrupt)
{
    for (int i = 0; i < n; i++) memset(&replies[i], 0, sizeof replies[i]);
    struct cmsg *head = NULL, **tail = &head;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        struct cmsg *m = rc ? NULL : calloc(1, sizeof *m);
        if (!m) {
            free(msgs[i]);
            rc = MESH_ENOMEM;
            continue;
        }
        m->buf = msgs[i];
        m->len = lens[i];
        *tail = m;
        tail = &m->next;
    }
    if (rc) {
        msgs_free(head);
        return rc;
    }
    pthread_mutex_lock(&c->mu);
    bool dead = c->dead;
    pthread_mutex_unlock(&c->mu);
    if (dead) {
        msgs_free(head);
        return MESH_EIO;
    }
    rc = conn_post(c, head, false);
    if (rc) return rc == MESH_ENOMEM ? rc : MESH_ECLOSED;
    uint64_t deadline = mono_ms() + (uint64_t)timeout_ms;
    int got = 0;
    while (got < n && rc == 0) {
        struct cmsg *m = NULL;
        if ((rc = conn_take(c, deadline, interrupt, &m))) break;
        int drc = stage_reply_decode(m->buf, m->len, n_embd, &replies[got]);
        free(m->buf);
        free(m);
        if (drc) {
            rc = drc == MESH_ENOMEM ? drc : MESH_EIO;
            pthread_mutex_lock(&c->mu);
            c->dead = true; /* the order is lost: nothing more can be matched */
            pthread_mutex_unlock(&c->mu);
            break;
        }
        got++;
    }
    if (rc)
        for (int i = 0; i < got; i++) stage_reply_free(&replies[i]);
    return rc;
}

int stage_conn_call_raw(struct stage_conn *c, uint8_t *msg, size_t len, uint8_t **reply,
                        size_t *reply_len, int timeout_ms, const atomic_bool *interrupt)
{
    *reply = NULL;
    *reply_len = 0;
    struct cmsg *m = calloc(1, sizeof *m);
    if (!m) {
        free(msg);
        return MESH_ENOMEM;
    }
    m->buf = msg;
    m->len = len;
    pthread_mutex_lock(&c->mu);
    bool dead = c->dead;
    pthread_mutex_unlock(&c->mu);
    if (dead) {
        msgs_free(m);
        return MESH_EIO;
    }
    int rc = conn_post(c, m, false);
    if (rc) return rc == MESH_ENOMEM ? rc : MESH_ECLOSED;
    struct cmsg *in = NULL;
    rc = conn_take(c, mono_ms() + (uint64_t)timeout_ms, interrupt, &in);
    if (rc) return rc;
    *reply = in->buf;
    *reply_len = in->len;
    free(in);
    return 0;
}

void stage_conn_bytes(struct stage_conn *c, uint64_t *sent, uint64_t *recv)
{
    pthread_mutex_lock(&c->mu);
    *sent = c->bytes_sent;
    *recv = c->bytes_recv;
    pthread_mutex_unlock(&c->mu);
}

void stage_conn_free(struct stage_conn *c, bool node_alive)
{
    if (!c) return;
    if (node_alive) conn_post(c, NULL, true);
    conn_unref(c);
}
