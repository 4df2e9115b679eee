/* join.c - joining a mesh with an invite (mesh.h, mesh_join): a short-lived libp2p host with
 * this node's identity dials the inviter at the token's addresses, sends the join request on
 * /meshllm/member/1 and waits for the certificate (node/member.h does the checking). The
 * inviter must be running; the token is verified before anything is sent.
 */
#include "node/mesh.h"

#include "core/err.h"
#include "core/log.h"
#include "net/host.h"
#include "node/member.h"
#include "node/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What the loop thread and the waiting thread share; mu guards every field below it. */
struct join_op {
    const struct member_join *j;
    struct p2pnode *pn;
    size_t next_addr;               /* loop thread only */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;                     /* 0: resp holds the answer */
    uint8_t *resp;
    size_t resp_len;
    char why[160];
};

static void join_finish(struct join_op *op, int status, const char *why, const uint8_t *resp,
                        size_t len)
{
    pthread_mutex_lock(&op->mu);
    if (!op->done) {
        op->done = true;
        op->status = status;
        snprintf(op->why, sizeof op->why, "%s", why ? why : "");
        if (resp && (op->resp = malloc(len ? len : 1))) {
            memcpy(op->resp, resp, len);
            op->resp_len = len;
        }
        pthread_cond_signal(&op->cv);
    }
    pthread_mutex_unlock(&op->mu);
}

static void join_on_data(void *ctx, struct host_stream *s, const uint8_t *d, size_t n)
{
    join_finish(ctx, 0, NULL, d, n);
    host_stream_close(s);
}

static void join_on_eof(void *ctx, struct host_stream *s)
{
    join_finish(ctx, MESH_ECLOSED, "the inviter closed the stream without an answer", NULL, 0);
    host_stream_close(s);
}

static void join_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    if (status) join_finish(ctx, status, "the connection to the inviter broke", NULL, 0);
}

static const struct host_stream_cbs join_cbs = {join_on_data, join_on_eof, join_on_close};

static void join_opened(void *ctx, struct host_stream *s, int status);

/* Opens the member stream to the next address of the invite (loop thread). */
static void join_try(struct p2pnode *pn, void *arg)
{
    struct join_op *op = arg;
    struct host *h = p2pnode_host(pn);
    while (h && op->next_addr < op->j->n_addrs) {
        struct multiaddr a = op->j->addrs[op->next_addr++];
        struct peer_id has;
        if (multiaddr_peer_id(&a, &has) != 0 && multiaddr_append_p2p(&a, &op->j->inviter) != 0)
            continue;
        if (host_open_stream(h, &a, MEMBER_PROTOCOL, join_opened, op) == 0) return;
    }
    join_finish(op, MESH_EIO, h ? "cannot reach the inviter at any address of the invite"
                                : "stopped", NULL, 0);
}

static void join_opened(void *ctx, struct host_stream *s, int status)
{
    struct join_op *op = ctx;
    if (status < 0 || !s) {
        join_try(op->pn, op); /* this address did not work: the next one */
        return;
    }
    host_stream_set_message_mode(s, MEMBER_MSG_MAX);
    host_stream_set_callbacks(s, &join_cbs, op);
    host_stream_write_msg(s, op->j->request, op->j->request_len);
}

/* Sends the request and waits for the answer (or the deadline). */
static int join_exchange(const char *data_dir, int timeout_ms,
                         struct join_op *op, char *err, size_t err_cap)
{
    struct multiaddr lo;
    multiaddr_from_text("/ip4/127.0.0.1/tcp/0", &lo);
    struct p2pnode_config pc = {.data_dir = data_dir, .listen = &lo, .n_listen = 1};
    int rc = p2pnode_start(&pc, &op->pn, err, err_cap);
    if (rc) return rc;
    rc = p2pnode_call(op->pn, join_try, op);
    if (rc == 0) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&op->mu);
        while (!op->done && pthread_cond_timedwait(&op->cv, &op->mu, &dl) == 0) {
        }
        if (!op->done) {
            op->done = true;
            op->status = MESH_ETIMEOUT;
            snprintf(op->why, sizeof op->why, "the inviter did not answer within %d s",
                     timeout_ms / 1000);
        }
        rc = op->status;
        pthread_mutex_unlock(&op->mu);
    }
    p2pnode_stop(op->pn); /* every callback has run once this returns */
    op->pn = NULL;
    if (rc) err_set(err, err_cap, rc, "%s", op->why[0] ? op->why : err_str(rc));
    return rc;
}

/* The inviter goes into the peer table's store, so the node's first start dials it (mesh.c
 * restores the table and bootstraps from it) even without --bootstrap. */
static void remember_inviter(struct store *st, const struct member_join *j)
{
    struct store_peer sp = {.last_seen = (int64_t)time(NULL), .rtt_us = -1};
    char addrs[MEMBER_INVITE_MAX_ADDRS * (MULTIADDR_TEXT_CAP + 1)] = "", e[256];
    size_t off = 0;
    for (size_t i = 0; i < j->n_addrs; i++) {
        struct multiaddr a = j->addrs[i];
        char t[MULTIADDR_TEXT_CAP];
        struct peer_id pid;
        if (multiaddr_peer_id(&a, &pid) != 0 && multiaddr_append_p2p(&a, &j->inviter) != 0)
            continue;
        if (multiaddr_to_text(&a, t, sizeof t)) continue;
        int w = snprintf(addrs + off, sizeof addrs - off, "%s%s", off ? " " : "", t);
        if (w > 0 && (size_t)w < sizeof addrs - off) off += (size_t)w;
    }
    if (peer_id_to_text(&j->inviter, sp.peer_id, sizeof sp.peer_id)) return;
    sp.addrs = addrs;
    if (store_peer_put(st, &sp, e, sizeof e)) log_warn("join: cannot remember the inviter: %s", e);
}

int mesh_join(const char *data_dir, const char *token, int timeout_ms, char *err,
              size_t err_cap)
{
    struct store *st = NULL;
    struct member *m = NULL;
    struct member_join j;
    memset(&j, 0, sizeof j);
    struct join_op op;
    memset(&op, 0, sizeof op);
    pthread_mutex_init(&op.mu, NULL);
    pthread_cond_init(&op.cv, NULL);
    op.j = &j;
    enum member_refusal why = MEMBER_OK;
    uint64_t now = (uint64_t)time(NULL);
    int rc = member_join_request(token, now, &j, &why, err, err_cap);
    if (rc) goto out;
    rc = store_open(data_dir, &st, err, err_cap);
    if (!rc) rc = member_open(data_dir, st, (uint64_t)time(NULL), &m, err, err_cap);
    struct member_info mi;
    char ierr[128];
    if (!rc && member_info_get(m, &mi, ierr, sizeof ierr) == 0 && mi.is_member &&
        !strcmp(mi.mesh_id, j.mesh_id)) {
        /* `serve --join` again after a restart: the invite is spent, the membership is not */
        log_info("join: already a member of %s; the invite is not needed", j.mesh_id);
        goto out;
    }
    if (!rc) rc = join_exchange(data_dir, timeout_ms, &op, err, err_cap);
    if (!rc) rc = member_join_finish(m, &j, op.resp, op.resp_len, (uint64_t)time(NULL), &why,
                                     err, err_cap);
    if (!rc) remember_inviter(st, &j);
out:
    member_join_clear(&j);
    member_close(m);
    store_close(st);
    free(op.resp);
    pthread_cond_destroy(&op.cv);
    pthread_mutex_destroy(&op.mu);
    return rc;
}
