/* infer.c - /meshllm/infer/1: the server that runs peers' requests here, and the client
 * handle that runs ours on a peer (infer.h; the wire format is infer_wire.c).
 *
 * Threads. Streams live on the p2pnode's loop thread. A served request's output is made by
 * a scheduler worker, whose notify only queues the stream on the server's ready list and
 * wakes the loop (uv_async); the loop then takes the output and writes it as frames. A
 * client handle is the reverse: frames arrive on the loop thread, are appended to the
 * handle's pending output and the client is notified there; take/cancel/release come from
 * any thread, and cancel/release reach the stream through p2pnode_call.
 */
#include "node/infer.h"

#include "core/err.h"
#include "core/log.h"
#include "net/host.h"
#include "net/varint.h"
#include "node/infer_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- server ------------------------------------------------------------------------------ */

struct sreq;

struct infer_server {
    struct p2pnode *pn;
    struct host *h;
    infer_submit_fn submit;
    void *submit_ctx;
    int max_streams;
    uv_async_t wake;
    bool closing;
    struct sreq *all;            /* every live stream (loop thread) */
    pthread_mutex_t mu;          /* guards the ready list */
    struct sreq *ready;
    atomic_uint_fast64_t n_opened, n_served, n_refused_busy, n_refused, n_errors, n_cancelled,
        n_active;
};

/* One inbound stream and the request it carries. */
struct sreq {
    struct infer_server *srv;
    struct host_stream *s;       /* NULL once over */
    struct node_req *r;          /* the request running here, NULL before and after */
    bool got_request, answered;  /* a request was read; the last frame was written */
    bool queued;                 /* on srv->ready (srv->mu) */
    struct sreq *next_ready;
    struct sreq *prev, *next;    /* srv->all */
};

static void sreq_notify(void *arg)
{
    struct sreq *q = arg;
    struct infer_server *srv = q->srv;
    pthread_mutex_lock(&srv->mu);
    if (!q->queued) {
        q->queued = true;
        q->next_ready = srv->ready;
        srv->ready = q;
    }
    pthread_mutex_unlock(&srv->mu);
    uv_async_send(&srv->wake);
}

/* Drops q from the ready list (srv->mu taken here). */
static void sreq_unqueue(struct sreq *q)
{
    struct infer_server *srv = q->srv;
    pthread_mutex_lock(&srv->mu);
    if (q->queued) {
        for (struct sreq **pp = &srv->ready; *pp; pp = &(*pp)->next_ready)
            if (*pp == q) {
                *pp = q->next_ready;
                break;
            }
        q->queued = false;
    }
    pthread_mutex_unlock(&srv->mu);
}

/* Stops the request running for q (its backend cancels it); no notify after this. */
static void sreq_release_req(struct sreq *q)
{
    if (!q->r) return;
    node_req_release(q->r);
    q->r = NULL;
    sreq_unqueue(q);
}

static void sreq_free(struct sreq *q)
{
    struct infer_server *srv = q->srv;
    sreq_release_req(q);
    sreq_unqueue(q);
    if (q->prev) q->prev->next = q->next;
    else srv->all = q->next;
    if (q->next) q->next->prev = q->prev;
    atomic_fetch_sub(&srv->n_active, 1);
    free(q);
}

/* Writes one encoded message; a stream that cannot take it is reset (q->s NULL then). */
static int sreq_write(struct sreq *q, uint8_t *buf, size_t len)
{
    int rc = host_stream_write_msg(q->s, buf, len);
    free(buf);
    if (rc) {
        char who[64] = "?";
        peer_id_to_text(host_stream_peer(q->s), who, sizeof who);
        atomic_fetch_add(&q->srv->n_errors, 1);
        log_warn("infer: cannot write to %s's stream (%s): reset", who, err_str(rc));
    }
    return rc;
}

/* Refuses q's request with e: one error frame, then the end of the stream. */
static void sreq_refuse(struct sreq *q, const struct node_error *e)
{
    struct infer_server *srv = q->srv;
    atomic_fetch_add(e->status == 429 || e->status == 503 ? &srv->n_refused_busy : &srv->n_refused,
                     1);
    q->answered = true;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (infer_frame_encode_error(e, &buf, &len) || sreq_write(q, buf, len)) {
        host_stream_reset(q->s);
        q->s = NULL;
        sreq_free(q);
        return;
    }
    host_stream_close(q->s);
}

/* The stream is unusable: reset it and forget q (no callback follows a reset). */
static void sreq_abort(struct sreq *q)
{
    if (q->s) host_stream_reset(q->s);
    q->s = NULL;
    sreq_free(q);
}

/* Sends what q's request produced since the last time (loop thread). */
static void sreq_pump(struct sreq *q)
{
    if (!q->r || !q->s) return;
    struct node_chunk c;
    if (node_req_take(q->r, &c)) {
        node_chunk_free(&c);
        atomic_fetch_add(&q->srv->n_errors, 1);
        sreq_abort(q);
        return;
    }
    if (!c.done && c.len == 0 && c.n_ids == 0 && c.n_lps == 0) {
        node_chunk_free(&c);
        return;
    }
    int piece = 0, id = 0, lp = 0;
    bool last = false;
    while (!last) {
        struct node_chunk part;
        size_t base = 0;
        uint8_t *buf = NULL;
        size_t len = 0;
        if (infer_chunk_part(&c, &piece, &id, &lp, &part, &base, &last) ||
            infer_frame_encode(&part, base, &buf, &len) || sreq_write(q, buf, len)) {
            node_chunk_free(&c);
            atomic_fetch_add(&q->srv->n_errors, 1);
            sreq_abort(q);
            return;
        }
    }
    bool done = c.done;
    node_chunk_free(&c);
    if (done) {
        atomic_fetch_add(&q->srv->n_served, 1);
        q->answered = true;
        sreq_release_req(q);
        host_stream_close(q->s);
    }
}

static void srv_on_wake(uv_async_t *a)
{
    struct infer_server *srv = a->data;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        struct sreq *q = srv->ready;
        if (q) {
            srv->ready = q->next_ready;
            q->queued = false;
        }
        pthread_mutex_unlock(&srv->mu);
        if (!q) break;
        sreq_pump(q);
    }
}

static void srv_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    (void)s;
    struct sreq *q = ctx;
    struct infer_server *srv = q->srv;
    if (q->got_request) { /* one request per stream */
        atomic_fetch_add(&srv->n_errors, 1);
        sreq_abort(q);
        return;
    }
    q->got_request = true;
    struct node_error e;
    struct node_gen_req req;
    node_gen_req_init(&req);
    int rc = infer_request_decode(data, len, &req);
    if (rc) {
        atomic_fetch_add(&srv->n_errors, 1);
        node_error_set(&e, rc == MESH_ENOMEM ? 503 : 400,
                       rc == MESH_ENOMEM ? "server_error" : "invalid_request_error", NULL, NULL,
                       "malformed /meshllm/infer/1 request (%s)", err_str(rc));
        node_gen_req_free(&req);
        sreq_refuse(q, &e);
        return;
    }
    if (srv->closing) {
        node_error_set(&e, 503, "server_error", "shutting_down", NULL, "the node is stopping");
        node_gen_req_free(&req);
        sreq_refuse(q, &e);
        return;
    }
    if ((int)atomic_load(&srv->n_active) > srv->max_streams) {
        node_error_set(&e, 503, "server_error", "too_many_streams", NULL,
                       "this node serves %d delegated requests at most", srv->max_streams);
        e.retry_after_s = 1;
        node_gen_req_free(&req);
        sreq_refuse(q, &e);
        return;
    }
    struct node_client cl = {.notify = sreq_notify, .arg = q};
    memset(&e, 0, sizeof e);
    rc = srv->submit(srv->submit_ctx, &req, &cl, &q->r, &e);
    node_gen_req_free(&req);
    if (rc) {
        q->r = NULL;
        if (!e.status) node_error_set(&e, 500, "server_error", NULL, NULL, "%s", err_str(rc));
        sreq_refuse(q, &e);
        return;
    }
    sreq_pump(q); /* whatever is already there */
}

static void srv_on_eof(void *ctx, struct host_stream *s)
{
    /* the client half-closes after its request; an EOF before one is a malformed request */
    (void)s;
    struct sreq *q = ctx;
    if (!q->got_request) {
        atomic_fetch_add(&q->srv->n_errors, 1);
        sreq_abort(q);
    }
}

static void srv_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    struct sreq *q = ctx;
    q->s = NULL;
    if (!q->answered) atomic_fetch_add(&q->srv->n_cancelled, 1);
    sreq_free(q); /* releasing a running request cancels it */
}

static const struct host_stream_cbs srv_cbs = {
    .on_data = srv_on_data, .on_eof = srv_on_eof, .on_close = srv_on_close};

static void srv_on_stream(void *ctx, struct host_stream *s)
{
    struct infer_server *srv = ctx;
    struct sreq *q = calloc(1, sizeof *q);
    if (!q || srv->closing) {
        free(q);
        host_stream_reset(s);
        return;
    }
    q->srv = srv;
    q->s = s;
    q->next = srv->all;
    if (srv->all) srv->all->prev = q;
    srv->all = q;
    atomic_fetch_add(&srv->n_opened, 1);
    atomic_fetch_add(&srv->n_active, 1);
    host_stream_set_message_mode(s, INFER_MAX_REQUEST);
    host_stream_set_callbacks(s, &srv_cbs, q);
}

int infer_server_new(const struct infer_server_config *cfg, struct infer_server **out)
{
    *out = NULL;
    struct host *h = cfg->pn ? p2pnode_host(cfg->pn) : NULL;
    if (!h || !cfg->submit) return MESH_EINVAL;
    struct infer_server *srv = calloc(1, sizeof *srv);
    if (!srv) return MESH_ENOMEM;
    srv->pn = cfg->pn;
    srv->h = h;
    srv->submit = cfg->submit;
    srv->submit_ctx = cfg->submit_ctx;
    srv->max_streams = cfg->max_streams > 0 ? cfg->max_streams : 64;
    pthread_mutex_init(&srv->mu, NULL);
    if (uv_async_init(p2pnode_loop(cfg->pn), &srv->wake, srv_on_wake)) {
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return MESH_ENOMEM;
    }
    srv->wake.data = srv;
    int rc = host_set_handler(h, INFER_PROTOCOL_ID, srv_on_stream, srv);
    if (rc) {
        srv->closing = true;
        infer_server_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void infer_server_stats(const struct infer_server *s, struct infer_server_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    struct infer_server *m = (struct infer_server *)s; /* atomics only */
    out->n_opened = atomic_load(&m->n_opened);
    out->n_served = atomic_load(&m->n_served);
    out->n_refused_busy = atomic_load(&m->n_refused_busy);
    out->n_refused = atomic_load(&m->n_refused);
    out->n_errors = atomic_load(&m->n_errors);
    out->n_cancelled = atomic_load(&m->n_cancelled);
    out->n_active = atomic_load(&m->n_active);
}

static void srv_on_wake_closed(uv_handle_t *h)
{
    struct infer_server *srv = h->data;
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

void infer_server_free(struct infer_server *srv)
{
    if (!srv) return;
    srv->closing = true;
    while (srv->all) {
        struct sreq *q = srv->all;
        if (!q->answered) atomic_fetch_add(&srv->n_cancelled, 1);
        sreq_abort(q);
    }
    uv_close((uv_handle_t *)&srv->wake, srv_on_wake_closed);
}

/* ---- client ------------------------------------------------------------------------------ */

struct creq {
    struct node_req base;
    struct p2pnode *pn;
    struct node_client cl;
    struct multiaddr addr;
    char peer_text[64];
    uint8_t *msg;                /* the encoded request, freed once written */
    size_t msg_len;
    struct host_stream *s;       /* loop thread: the open stream */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t cv;
    int refs;                    /* the client's, the loop's, each pending p2pnode_call */
    struct node_chunk pend;      /* output not taken yet (its done/finish stick) */
    size_t cap_text, cap_cuts, cap_ids, cap_lps;
    bool done, released, cancel_wanted;
    int n_notifying;
    pthread_t notifier;
    int64_t t_submit, ttff_us, total_us;
    uint64_t n_frames, n_ids;
};

static const struct node_req_ops client_ops;

static void creq_free(struct creq *c)
{
    node_chunk_free(&c->pend);
    free(c->msg);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void creq_unref(struct creq *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) creq_free(c);
}

/* Tells the client output is ready (loop thread), unless it has released the handle. */
static void creq_notify(struct creq *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->released || !c->cl.notify) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    c->n_notifying++;
    c->notifier = pthread_self();
    pthread_mutex_unlock(&c->mu);
    c->cl.notify(c->cl.arg);
    pthread_mutex_lock(&c->mu);
    c->n_notifying--;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return MESH_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

/* Appends frame f to the pending output (c->mu held). */
static int pend_append(struct creq *c, const struct node_chunk *f)
{
    struct node_chunk *p = &c->pend;
    if (grow((void **)&p->text, &c->cap_text, p->len + f->len + 1, 1) ||
        grow((void **)&p->cuts, &c->cap_cuts, (size_t)(p->n_cuts + f->n_cuts), sizeof *p->cuts) ||
        grow((void **)&p->ids, &c->cap_ids, (size_t)(p->n_ids + f->n_ids), sizeof *p->ids) ||
        grow((void **)&p->lps, &c->cap_lps, (size_t)(p->n_lps + f->n_lps), sizeof *p->lps))
        return MESH_ENOMEM;
    for (int i = 0; i < f->n_cuts; i++) p->cuts[p->n_cuts++] = p->len + f->cuts[i];
    if (f->len) memcpy(p->text + p->len, f->text, f->len);
    p->len += f->len;
    p->text[p->len] = 0;
    if (f->n_ids) memcpy(p->ids + p->n_ids, f->ids, (size_t)f->n_ids * sizeof *f->ids);
    p->n_ids += f->n_ids;
    if (f->n_lps) memcpy(p->lps + p->n_lps, f->lps, (size_t)f->n_lps * sizeof *f->lps);
    p->n_lps += f->n_lps;
    if (f->n_prompt) p->n_prompt = f->n_prompt;
    if (f->n_gen) p->n_gen = f->n_gen;
    if (f->n_cached) p->n_cached = f->n_cached;
    c->n_ids += (uint64_t)f->n_ids;
    return 0;
}

/* Ends the request here (loop thread): finish "cancelled", or "error" with fail and why. */
static void creq_end(struct creq *c, const char *finish, enum node_fail fail, const char *why)
{
    pthread_mutex_lock(&c->mu);
    bool was = c->done;
    if (!was) {
        c->done = true;
        c->pend.done = true;
        c->pend.finish_reason = finish;
        c->pend.fail = fail;
        if (fail != NODE_FAIL_NONE)
            node_error_set(&c->pend.err, 502, "server_error",
                           c->n_frames ? "peer_lost" : "peer_unreachable", NULL, "peer %s: %s",
                           c->peer_text, why);
        c->total_us = mono_us() - c->t_submit;
    }
    pthread_mutex_unlock(&c->mu);
    if (!was) creq_notify(c);
}

static void cl_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct creq *c = ctx;
    struct node_chunk f;
    bool is_error = false;
    int rc = infer_frame_decode(data, len, &f, &is_error);
    pthread_mutex_lock(&c->mu);
    bool after_done = c->done;
    if (!rc && !after_done) {
        if (c->n_frames++ == 0) c->ttff_us = mono_us() - c->t_submit;
        rc = pend_append(c, &f);
        if (!rc && f.done) {
            c->done = true;
            c->pend.done = true;
            c->pend.finish_reason = f.finish_reason;
            c->pend.fail = f.fail;
            c->pend.err = f.err;
            c->total_us = mono_us() - c->t_submit;
        }
    }
    pthread_mutex_unlock(&c->mu);
    node_chunk_free(&f);
    if (rc || after_done) { /* a broken frame, or frames after the last one */
        host_stream_reset(s);
        c->s = NULL;
        creq_end(c, "error", NODE_FAIL_LOST,
                 rc == MESH_ENOMEM ? "out of memory reading the answer"
                                   : "broke the /meshllm/infer/1 protocol");
        creq_unref(c);
        return;
    }
    creq_notify(c);
}

static void cl_on_eof(void *ctx, struct host_stream *s)
{
    /* our side closed after the request, so the stream is over: on_close follows */
    (void)ctx;
    (void)s;
}

static void cl_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    struct creq *c = ctx;
    c->s = NULL;
    creq_end(c, "error", NODE_FAIL_LOST,
             status ? "the connection was lost before the answer ended"
                    : "closed the stream before the answer ended");
    creq_unref(c);
}

static const struct host_stream_cbs cl_cbs = {
    .on_data = cl_on_data, .on_eof = cl_on_eof, .on_close = cl_on_close};

static void cl_on_open(void *ctx, struct host_stream *s, int status)
{
    struct creq *c = ctx;
    pthread_mutex_lock(&c->mu);
    bool cancel = c->cancel_wanted || c->released;
    pthread_mutex_unlock(&c->mu);
    if (status || cancel) {
        if (s) host_stream_reset(s);
        char why[128];
        snprintf(why, sizeof why, "cannot open a stream (%s)", err_str(status));
        creq_end(c, cancel ? "cancelled" : "error", cancel ? NODE_FAIL_NONE : NODE_FAIL_LOST, why);
        creq_unref(c);
        return;
    }
    c->s = s;
    host_stream_set_message_mode(s, INFER_MAX_FRAME);
    host_stream_set_callbacks(s, &cl_cbs, c);
    free(c->msg); /* sent with the proposal (cl_call_open) */
    c->msg = NULL;
    int rc = host_stream_close(s); /* nothing more to say: the answer comes back */
    if (rc) {
        host_stream_reset(s);
        c->s = NULL;
        creq_end(c, "error", NODE_FAIL_LOST, "cannot send the request");
        creq_unref(c);
    }
}

/* Loop thread: open the stream. */
static void cl_call_open(struct p2pnode *pn, void *arg)
{
    struct creq *c = arg;
    struct host *h = p2pnode_host(pn);
    /* The request goes right behind the protocol proposal: the peer serves the protocol
     * (it announced models), so waiting for its answer would only add a round trip. */
    uint8_t hdr[VARINT_MAX_LEN];
    size_t hl = varint_encode(c->msg_len, hdr);
    uint8_t *wire = malloc(hl + c->msg_len);
    int rc = MESH_ENOMEM;
    if (wire) {
        memcpy(wire, hdr, hl);
        memcpy(wire + hl, c->msg, c->msg_len);
        rc = h ? host_open_stream_data(h, &c->addr, INFER_PROTOCOL_ID, wire, hl + c->msg_len,
                                       cl_on_open, c)
               : MESH_ECLOSED;
        free(wire);
    }
    if (rc) {
        creq_end(c, "error", NODE_FAIL_LOST,
                 rc == MESH_ECLOSED ? "this node is stopping" : "cannot dial the peer");
        creq_unref(c);
        return;
    }
}

/* Loop thread: the client cancelled (or released) a request that may still run. */
static void cl_call_cancel(struct p2pnode *pn, void *arg)
{
    struct creq *c = arg;
    if (p2pnode_host(pn) && c->s) {
        host_stream_reset(c->s); /* no callback follows: we drop the stream's ref ourselves */
        c->s = NULL;
        creq_end(c, "cancelled", NODE_FAIL_NONE, "");
        creq_unref(c);
    }
    creq_unref(c); /* the call's */
}

/* Asks the loop to reset the stream (c->mu held): the request ends "cancelled" there. */
static void creq_ask_cancel(struct creq *c)
{
    if (c->done || c->cancel_wanted) return;
    c->cancel_wanted = true;
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    if (p2pnode_call(c->pn, cl_call_cancel, c)) {
        pthread_mutex_lock(&c->mu);
        c->refs--; /* the node is stopping: its host closes the stream, on_close ends it */
        return;
    }
    pthread_mutex_lock(&c->mu);
}

static int client_take(struct node_req *r, struct node_chunk *out)
{
    struct creq *c = (struct creq *)r;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&c->mu);
    struct node_chunk *p = &c->pend;
    *out = *p; /* the buffers move over */
    p->text = NULL;
    p->cuts = NULL;
    p->ids = NULL;
    p->lps = NULL;
    p->len = 0;
    p->n_cuts = p->n_ids = p->n_lps = 0;
    c->cap_text = c->cap_cuts = c->cap_ids = c->cap_lps = 0;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static void client_cancel(struct node_req *r)
{
    struct creq *c = (struct creq *)r;
    pthread_mutex_lock(&c->mu);
    creq_ask_cancel(c);
    pthread_mutex_unlock(&c->mu);
}

static void client_release(struct node_req *r)
{
    struct creq *c = (struct creq *)r;
    pthread_mutex_lock(&c->mu);
    creq_ask_cancel(c);
    c->released = true;
    while (c->n_notifying > 0 && !pthread_equal(c->notifier, pthread_self()))
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    creq_unref(c);
}

static void client_ran_on(struct node_req *r, char *buf, size_t cap)
{
    struct creq *c = (struct creq *)r;
    snprintf(buf, cap, "%s", c->peer_text);
}

static const struct node_req_ops client_ops = {
    .take = client_take, .cancel = client_cancel, .release = client_release,
    .ran_on = client_ran_on};

int infer_client_submit(struct p2pnode *pn, const struct peer_id *peer_id,
                        const struct multiaddr *addr, const struct node_gen_req *req,
                        const struct node_client *cl, struct node_req **out)
{
    *out = NULL;
    if (!pn || !peer_id || !addr || !req || !cl) return MESH_EINVAL;
    if (req->kind != NODE_KIND_CHAT && req->kind != NODE_KIND_COMPLETION) return MESH_EUNSUPPORTED;
    struct creq *c = calloc(1, sizeof *c);
    if (!c) return MESH_ENOMEM;
    int rc = infer_request_encode(req, &c->msg, &c->msg_len);
    if (rc) {
        free(c);
        return rc;
    }
    c->base.ops = &client_ops;
    c->pn = pn;
    c->cl = *cl;
    c->addr = *addr;
    if (peer_id_to_text(peer_id, c->peer_text, sizeof c->peer_text))
        snprintf(c->peer_text, sizeof c->peer_text, "?");
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->refs = 2; /* the client's and the loop's */
    c->t_submit = mono_us();
    c->ttff_us = c->total_us = -1;
    rc = p2pnode_call(pn, cl_call_open, c);
    if (rc) {
        creq_free(c);
        return rc;
    }
    *out = &c->base;
    return 0;
}

int infer_client_stats(struct node_req *r, struct infer_client_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!r || r->ops != &client_ops) return MESH_EINVAL;
    struct creq *c = (struct creq *)r;
    pthread_mutex_lock(&c->mu);
    out->ttff_us = c->ttff_us;
    out->total_us = c->total_us;
    out->n_frames = c->n_frames;
    out->n_ids = c->n_ids;
    pthread_mutex_unlock(&c->mu);
    return 0;
}
