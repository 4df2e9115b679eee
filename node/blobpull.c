/* blobpull.c - a store file from several mesh members over /meshllm/blob/1 (blobpull.h).
 *
 * Two threads share one struct bp under its mutex: the p2p loop owns the streams (opens
 * them, writes requests, turns each reply into an item on a queue), the caller's thread
 * (blobpull_run) takes items off the queue, verifies, writes and tells the scheduler
 * (node/blobsched.h), then asks the loop (p2pnode_call) to send more. Hashing and disk
 * writes stay off the loop, decryption stays off the worker: a pull uses both cores.
 * Replies on a stream come in request order (docs/PROTOCOL.md), so each provider keeps a
 * FIFO of what it was asked. Does not fetch byte ranges of a file (a stage's layers): the
 * whole file or nothing.
 */
#include "node/blobpull.h"

#include "core/err.h"
#include "core/log.h"
#include "net/host.h"
#include "net/p2pnode.h"
#include "node/blob.h"
#include "node/blob_internal.h"
#include "node/blobsched.h"
#include "node/merkle.h"
#include "node/mesh.h"
#include "node/peers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BP_MAX_ASKED (BLOBSCHED_DEPTH + 1) /* INFO and the pieces in flight */

struct bp;

struct bp_peer {
    struct bp *bp;
    int idx;                       /* in the scheduler; -1 before it exists */
    struct peer_id id;
    char id_text[64];
    struct multiaddr addr;
    struct host_stream *s;         /* loop thread (under mu) */
    bool is_opening, is_gone, info_sent, info_ok;
    int64_t asked[BP_MAX_ASKED];   /* FIFO of the replies due: -1 INFO, else a piece */
    int n_asked;
    uint64_t last_ms;              /* last reply, or the first request after a quiet spell */
};

struct bp_item {
    struct bp_item *next;
    int peer;
    int64_t asked;
    struct blob_reply r;
};

struct bp {
    pthread_mutex_t mu;            /* guards everything below */
    pthread_cond_t cv;             /* an item arrived or a provider went away */
    int refs;                      /* the worker, pending calls, opening and open streams */
    struct p2pnode *pn;
    bool is_ready;                 /* the scheduler exists (INFO verified) */
    bool is_stopping;
    struct blobsched sched;
    struct bp_peer peers[BLOBSCHED_MAX_PEERS];
    int n_peers;
    struct bp_item *head, *tail;
    char cid[65];
};

/* What the worker keeps: the file being filled. */
struct bp_file {
    char path[4200];
    int fd;
    uint64_t size;
    uint32_t piece_len;
    uint8_t *pieces;               /* the piece layer (NULL for a file of one piece) */
    size_t n_layer;
    uint32_t n_pieces;
    uint8_t root[MERKLE_HASH];
    struct sha256 sha;             /* over pieces [0, sha_next) */
    uint32_t sha_next;
    uint8_t *buf;                  /* piece_len bytes */
};

static uint64_t now_ms(void)
{
    return mesh_now_ms();
}

static void bp_unref(struct bp *bp)
{
    pthread_mutex_lock(&bp->mu);
    bool last = --bp->refs == 0;
    pthread_mutex_unlock(&bp->mu);
    if (!last) return;
    for (struct bp_item *it = bp->head, *nx; it; it = nx) {
        nx = it->next;
        blob_reply_free(&it->r);
        free(it);
    }
    blobsched_free(&bp->sched);
    pthread_cond_destroy(&bp->cv);
    pthread_mutex_destroy(&bp->mu);
    free(bp);
}

/* ---- loop thread ------------------------------------------------------------------------- */

static void push_item(struct bp *bp, int peer, int64_t asked, const struct blob_reply *r)
{
    struct bp_item *it = calloc(1, sizeof *it);
    if (it) {
        it->peer = peer;
        it->asked = asked;
        if (r) it->r = *r;
        if (bp->tail) bp->tail->next = it;
        else bp->head = it;
        bp->tail = it;
    } else if (r) {
        struct blob_reply tmp = *r;
        blob_reply_free(&tmp);
    }
    pthread_cond_signal(&bp->cv);
}

/* The provider is out (stream lost, refused, protocol violation): its pieces go back. */
static void peer_gone(struct bp_peer *p, const char *why)
{
    struct bp *bp = p->bp;
    if (p->is_gone) return;
    p->is_gone = true;
    p->n_asked = 0;
    if (bp->is_ready && p->idx >= 0) blobsched_drop(&bp->sched, p->idx);
    if (!bp->is_stopping) log_info("blobpull: provider %s dropped: %s", p->id_text, why);
    push_item(bp, (int)(p - bp->peers), -2, NULL); /* wakes the worker */
}

static int send_req(struct bp_peer *p, int kind, uint32_t piece)
{
    struct blob_req q = {.kind = kind, .piece = piece};
    memcpy(q.content_id, p->bp->cid, 65);
    uint8_t *msg = NULL;
    size_t len = 0;
    int rc = blob_req_encode(&q, &msg, &len);
    if (!rc) rc = host_stream_write_msg(p->s, msg, len);
    free(msg);
    if (!rc) {
        if (p->n_asked == 0) p->last_ms = now_ms();
        p->asked[p->n_asked++] = kind == BLOB_INFO ? -1 : (int64_t)piece;
    }
    return rc;
}

/* Under mu: asks p for INFO, then for pieces up to the scheduler's depth. */
static void send_more(struct bp_peer *p)
{
    struct bp *bp = p->bp;
    if (!p->s || p->is_gone || bp->is_stopping) return;
    if (!p->info_sent) {
        p->info_sent = true;
        if (send_req(p, BLOB_INFO, 0)) {
            peer_gone(p, "cannot write to its stream");
            return;
        }
    }
    if (!bp->is_ready || !p->info_ok) return;
    while (p->n_asked < BP_MAX_ASKED) {
        int64_t piece = blobsched_next(&bp->sched, p->idx);
        if (piece < 0) break;
        if (send_req(p, BLOB_PIECE, (uint32_t)piece)) {
            peer_gone(p, "cannot write to its stream");
            return;
        }
    }
}

static void bs_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    (void)s;
    struct bp_peer *p = ctx;
    struct bp *bp = p->bp;
    pthread_mutex_lock(&bp->mu);
    struct blob_reply r;
    if (p->is_gone || bp->is_stopping) {
        /* answers after a drop are ignored; kick resets the stream */
    } else if (p->n_asked == 0) {
        peer_gone(p, "it sent a reply nobody asked for");
    } else if (blob_reply_decode(data, len, &r) != 0) {
        peer_gone(p, "a reply that is not a BlobReply");
    } else {
        int64_t asked = p->asked[0];
        memmove(p->asked, p->asked + 1, (size_t)(--p->n_asked) * sizeof p->asked[0]);
        p->last_ms = now_ms();
        push_item(bp, (int)(p - bp->peers), asked, &r);
    }
    pthread_mutex_unlock(&bp->mu);
}

static void bs_on_eof(void *ctx, struct host_stream *s)
{
    struct bp_peer *p = ctx;
    pthread_mutex_lock(&p->bp->mu);
    peer_gone(p, "it closed the stream");
    pthread_mutex_unlock(&p->bp->mu);
    host_stream_close(s);
}

static void bs_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    struct bp_peer *p = ctx;
    struct bp *bp = p->bp;
    pthread_mutex_lock(&bp->mu);
    p->s = NULL;
    char why[96];
    snprintf(why, sizeof why, "stream closed (%s)", status ? err_str(status) : "by the peer");
    peer_gone(p, why);
    pthread_mutex_unlock(&bp->mu);
    bp_unref(bp);
}

static const struct host_stream_cbs bp_cbs = {bs_on_data, bs_on_eof, bs_on_close};

static void bp_opened(void *ctx, struct host_stream *s, int status)
{
    struct bp_peer *p = ctx;
    struct bp *bp = p->bp;
    pthread_mutex_lock(&bp->mu);
    p->is_opening = false;
    bool keep = s && status == 0 && !bp->is_stopping && !p->is_gone;
    if (keep) {
        bp->refs++; /* the stream's */
        p->s = s;
        host_stream_set_message_mode(s, BLOB_MAX_FRAME);
        host_stream_set_callbacks(s, &bp_cbs, p);
        send_more(p);
    } else {
        if (s) host_stream_reset(s);
        char why[96];
        snprintf(why, sizeof why, "cannot open %s (%s)", BLOB_PROTOCOL_ID,
                 status ? err_str(status) : "stopped");
        peer_gone(p, why);
    }
    pthread_mutex_unlock(&bp->mu);
    bp_unref(bp); /* the opening's */
}

/* p2pnode_call: opens streams, sends what each provider may take, resets dropped ones. */
static void bp_kick(struct p2pnode *pn, void *arg)
{
    struct bp *bp = arg;
    struct host *h = p2pnode_host(pn);
    int n_unref = 1; /* this call's */
    pthread_mutex_lock(&bp->mu);
    for (int i = 0; i < bp->n_peers; i++) {
        struct bp_peer *p = &bp->peers[i];
        bool dropped = p->is_gone || (bp->is_ready && p->idx >= 0 &&
                                      bp->sched.peers[p->idx].is_dropped);
        if (p->s && (dropped || bp->is_stopping || !h)) {
            host_stream_reset(p->s); /* no callback follows: release its ref here */
            p->s = NULL;
            n_unref++;
            if (!p->is_gone) peer_gone(p, bp->is_stopping ? "done" : "dropped");
            continue;
        }
        if (dropped || bp->is_stopping || !h) continue;
        if (!p->s && !p->is_opening) {
            p->is_opening = true;
            bp->refs++;
            if (host_open_stream(h, &p->addr, BLOB_PROTOCOL_ID, bp_opened, p) != 0) {
                p->is_opening = false;
                bp->refs--;
                peer_gone(p, "cannot dial its address");
            }
            continue;
        }
        send_more(p);
    }
    pthread_mutex_unlock(&bp->mu);
    while (n_unref--) bp_unref(bp);
}

static void kick(struct bp *bp)
{
    pthread_mutex_lock(&bp->mu);
    bp->refs++;
    pthread_mutex_unlock(&bp->mu);
    if (p2pnode_call(bp->pn, bp_kick, bp) != 0) bp_unref(bp);
}

/* ---- worker thread ------------------------------------------------------------------------ */

static int write_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return MESH_EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int read_full(int fd, uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return MESH_EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static size_t piece_size(const struct bp_file *f, uint32_t i)
{
    uint64_t off = (uint64_t)i * f->piece_len;
    return f->size - off < f->piece_len ? (size_t)(f->size - off) : f->piece_len;
}

/* Whether data is piece i of the file: its piece-layer hash, or for a file of one piece
 * the root itself (its tree is the leaves, not a whole piece). */
static bool piece_ok(const struct bp_file *f, uint32_t i, const uint8_t *data, size_t len)
{
    if (len != piece_size(f, i)) return false;
    if (f->pieces) return merkle_piece_verify(data, len, f->piece_len, f->pieces + (size_t)i * 32);
    struct merkle mk;
    uint8_t root[MERKLE_HASH];
    if (merkle_init(&mk, f->piece_len) || merkle_update(&mk, data, len) ||
        merkle_final(&mk, root, NULL, NULL, NULL)) {
        merkle_clear(&mk);
        return false;
    }
    return sodium_memcmp(root, f->root, MERKLE_HASH) == 0;
}

/* The INFO of a provider: the piece layer must hash to the content ID. */
static bool info_ok(const struct blob_reply *r, const uint8_t root[MERKLE_HASH])
{
    if (!r->has_info || r->size == 0) return false;
    if (r->n_pieces < 2) return blob_n_pieces(r->size, r->piece_len) == 1;
    uint8_t got[MERKLE_HASH];
    merkle_root_from_pieces(r->pieces, r->n_pieces, r->piece_len, got);
    return sodium_memcmp(got, root, MERKLE_HASH) == 0;
}

/* Feeds the SHA-256 with the pieces now contiguous from the front (done never undoes). */
static int sha_advance(struct bp *bp, struct bp_file *f, uint32_t just, const uint8_t *data)
{
    for (;;) {
        pthread_mutex_lock(&bp->mu);
        bool done = f->sha_next < f->n_pieces && bp->sched.state[f->sha_next] == BLOBSCHED_DONE;
        pthread_mutex_unlock(&bp->mu);
        if (!done) return 0;
        size_t len = piece_size(f, f->sha_next);
        const uint8_t *p = data;
        if (f->sha_next != just || !data) {
            if (read_full(f->fd, f->buf, len, (uint64_t)f->sha_next * f->piece_len)) return MESH_EIO;
            p = f->buf;
        }
        sha256_update(&f->sha, p, len);
        f->sha_next++;
    }
}

/* The first verified INFO: opens (or resumes) the partial file and starts the scheduler. */
static int file_start(struct bp *bp, struct bp_file *f, const struct blob_reply *r,
                      struct blob_server *bs, char *err, size_t err_cap)
{
    f->size = r->size;
    f->piece_len = r->piece_len;
    f->n_pieces = (uint32_t)blob_n_pieces(r->size, r->piece_len);
    if (r->n_pieces) {
        f->pieces = malloc(r->n_pieces * MERKLE_HASH);
        if (!f->pieces) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
        memcpy(f->pieces, r->pieces, r->n_pieces * MERKLE_HASH);
        f->n_layer = r->n_pieces;
    }
    f->buf = malloc(f->piece_len);
    if (!f->buf) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    f->fd = open(f->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat sb;
    if (f->fd < 0 || fstat(f->fd, &sb))
        return err_set(err, err_cap, MESH_EIO, "cannot open %s: %s", f->path, strerror(errno));
    struct blobsched s;
    int rc = blobsched_init(&s, f->n_pieces, BLOBSCHED_DEPTH);
    if (rc) return err_set(err, err_cap, rc, "out of memory");
    /* A partial file from an earlier run: keep each piece that verifies. */
    uint32_t n_resumed = 0;
    for (uint32_t i = 0; i < f->n_pieces; i++) {
        size_t len = piece_size(f, i);
        uint64_t off = (uint64_t)i * f->piece_len;
        if (off + len > (uint64_t)sb.st_size) break;
        if (read_full(f->fd, f->buf, len, off) == 0 && piece_ok(f, i, f->buf, len)) {
            blobsched_mark_done(&s, i);
            n_resumed++;
        }
    }
    if (n_resumed) {
        log_info("blobpull: resuming %.16s...: %u of %u pieces already in %s", bp->cid, n_resumed,
                 f->n_pieces, f->path);
        blob_server_count(bs, BLOB_C_RESUMED, n_resumed);
    }
    if ((uint64_t)sb.st_size > f->size && ftruncate(f->fd, (off_t)f->size))
        return err_set(err, err_cap, MESH_EIO, "cannot truncate %s", f->path);
    sha256_init(&f->sha);
    pthread_mutex_lock(&bp->mu);
    bp->sched = s;
    for (int i = 0; i < bp->n_peers; i++) {
        bp->peers[i].idx = blobsched_add_peer(&bp->sched);
        if (bp->peers[i].is_gone) blobsched_drop(&bp->sched, bp->peers[i].idx);
    }
    bp->is_ready = true;
    pthread_mutex_unlock(&bp->mu);
    return sha_advance(bp, f, UINT32_MAX, NULL);
}

/* The worker's state across items. */
struct bp_run {
    struct bp *bp;
    struct mesh *mesh;
    struct blob_server *bs;
    struct bp_file f;
    const struct blobpull_opts *o;
    uint64_t t0_ms, last_progress_ms, bytes_this_run;
};

/* Drops provider i for what it did (the scheduler forgets its pieces; kick resets it). */
static void drop(struct bp_run *w, int i, enum peers_outcome o, const char *fmt, const char *what)
{
    struct bp *bp = w->bp;
    pthread_mutex_lock(&bp->mu);
    struct bp_peer *p = &bp->peers[i];
    if (bp->is_ready && p->idx >= 0) blobsched_drop(&bp->sched, p->idx);
    bool was_gone = p->is_gone;
    p->is_gone = true;
    p->n_asked = 0;
    char id[64];
    memcpy(id, p->id_text, sizeof id);
    struct peer_id pid = p->id;
    pthread_mutex_unlock(&bp->mu);
    if (was_gone) return;
    peers_report(mesh_peers(w->mesh), &pid, o);
    blob_server_count(w->bs, BLOB_C_DROPPED, 1);
    log_warn(fmt, id, what);
}

static void progress(struct bp_run *w, enum modelpull_phase ph, bool force)
{
    if (!w->o->progress) return;
    uint64_t now = now_ms();
    if (!force && now - w->last_progress_ms < 100) return;
    w->last_progress_ms = now;
    struct bp *bp = w->bp;
    struct modelpull_progress p = {.phase = ph, .total = w->f.size, .content_id = bp->cid};
    pthread_mutex_lock(&bp->mu);
    if (bp->is_ready) {
        uint64_t n_done = bp->sched.n_done;
        p.done = n_done * w->f.piece_len;
        if (n_done == w->f.n_pieces) p.done = w->f.size;
        p.n_peers = blobsched_n_live(&bp->sched);
    }
    pthread_mutex_unlock(&bp->mu);
    double dt = (double)(now - w->t0_ms) / 1000.0;
    p.rate_bps = dt > 0 ? (double)w->bytes_this_run / dt : 0;
    w->o->progress(w->o->progress_arg, &p);
}

/* One reply to INFO. */
static int on_info(struct bp_run *w, struct bp_item *it, char *err, size_t err_cap)
{
    struct bp *bp = w->bp;
    const struct blob_reply *r = &it->r;
    char what[BLOB_MAX_MESSAGE + 32];
    if (r->error) {
        snprintf(what, sizeof what, "%s: %s", blob_err_name(r->error), r->message);
        drop(w, it->peer, PEERS_FAIL, "blobpull: provider %s refused: %s", what);
        return 0;
    }
    if (!info_ok(r, w->f.root)) {
        drop(w, it->peer, PEERS_LIE, "blobpull: provider %s dropped: %s", "its piece layer does "
             "not hash to the content ID (a corrupt or lying peer)");
        return 0;
    }
    pthread_mutex_lock(&bp->mu);
    bool ready = bp->is_ready;
    pthread_mutex_unlock(&bp->mu);
    if (ready && (r->size != w->f.size || r->piece_len != w->f.piece_len)) {
        drop(w, it->peer, PEERS_FAIL, "blobpull: provider %s dropped: %s",
             "its file has another piece length");
        return 0;
    }
    if (!ready) {
        int rc = file_start(bp, &w->f, r, w->bs, err, err_cap);
        if (rc) return rc;
        progress(w, MODELPULL_DOWNLOADING, true);
    }
    pthread_mutex_lock(&bp->mu);
    bp->peers[it->peer].info_ok = true;
    pthread_mutex_unlock(&bp->mu);
    return 0;
}

/* One reply to PIECE: verified, written, counted; a bad one drops its provider. */
static int on_piece(struct bp_run *w, struct bp_item *it, char *err, size_t err_cap)
{
    struct bp *bp = w->bp;
    const struct blob_reply *r = &it->r;
    char what[BLOB_MAX_MESSAGE + 64];
    if (r->error) {
        snprintf(what, sizeof what, "piece %lld: %s: %s", (long long)it->asked,
                 blob_err_name(r->error), r->message);
        drop(w, it->peer, PEERS_FAIL, "blobpull: provider %s refused %s", what);
        return 0;
    }
    uint32_t i = (uint32_t)it->asked;
    if (r->has_info || r->piece != i || !piece_ok(&w->f, i, r->data, r->data_len)) {
        snprintf(what, sizeof what, "piece %u did not verify against the content ID (a corrupt "
                 "or lying peer); asking another provider", i);
        blob_server_count(w->bs, BLOB_C_BAD, 1);
        pthread_mutex_lock(&bp->mu);
        int idx = bp->peers[it->peer].idx;
        if (idx >= 0) blobsched_done(&bp->sched, idx, i, false);
        pthread_mutex_unlock(&bp->mu);
        drop(w, it->peer, PEERS_LIE, "blobpull: provider %s dropped: %s", what);
        return 0;
    }
    pthread_mutex_lock(&bp->mu);
    int idx = bp->peers[it->peer].idx;
    bool mine = idx >= 0 && i < bp->sched.n_pieces && bp->sched.state[i] == BLOBSCHED_INFLIGHT &&
                bp->sched.owner[i] == idx;
    pthread_mutex_unlock(&bp->mu);
    if (!mine) return 0; /* its provider was dropped meanwhile: someone else has it now */
    if (write_full(w->f.fd, r->data, r->data_len, (uint64_t)i * w->f.piece_len))
        return err_set(err, err_cap, MESH_EIO, "cannot write %s: %s", w->f.path, strerror(errno));
    pthread_mutex_lock(&bp->mu);
    blobsched_done(&bp->sched, idx, i, true);
    pthread_mutex_unlock(&bp->mu);
    w->bytes_this_run += r->data_len;
    blob_server_count(w->bs, BLOB_C_FETCHED, 1);
    blob_server_count(w->bs, BLOB_C_BYTES_FETCHED, r->data_len);
    int rc = sha_advance(bp, &w->f, i, r->data);
    if (rc) return err_set(err, err_cap, rc, "cannot read back %s", w->f.path);
    progress(w, MODELPULL_DOWNLOADING, false);
    return 0;
}

/* Drops providers that owe answers and have been silent for timeout_ms. */
static void check_timeouts(struct bp_run *w, int timeout_ms)
{
    struct bp *bp = w->bp;
    uint64_t now = now_ms();
    for (int i = 0; i < bp->n_peers; i++) {
        pthread_mutex_lock(&bp->mu);
        struct bp_peer *p = &bp->peers[i];
        bool late = !p->is_gone && (p->n_asked > 0 || p->is_opening) && p->last_ms &&
                    now - p->last_ms > (uint64_t)timeout_ms;
        pthread_mutex_unlock(&bp->mu);
        if (late)
            drop(w, i, PEERS_FAIL, "blobpull: provider %s dropped: %s",
                 "no answer in time");
    }
}

/* The worker's loop: items until the file is whole, nobody is left, or a cancel. */
static int run_items(struct bp_run *w, char *err, size_t err_cap)
{
    struct bp *bp = w->bp;
    int timeout_ms = w->o->timeout_ms > 0 ? w->o->timeout_ms : BLOBPULL_TIMEOUT_MS;
    for (;;) {
        pthread_mutex_lock(&bp->mu);
        bool whole = bp->is_ready && blobsched_complete(&bp->sched);
        int live = 0;
        for (int i = 0; i < bp->n_peers; i++) live += !bp->peers[i].is_gone;
        struct bp_item *it = bp->head;
        if (!it && !whole && live) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&bp->cv, &bp->mu, &ts);
            it = bp->head;
        }
        if (it) {
            bp->head = it->next;
            if (!bp->head) bp->tail = NULL;
        }
        pthread_mutex_unlock(&bp->mu);
        if (whole) {
            if (it) {
                blob_reply_free(&it->r);
                free(it);
            }
            progress(w, MODELPULL_DOWNLOADING, true); /* the last line says done == total */
            return 0;
        }
        if (w->o->cancel && atomic_load(w->o->cancel)) {
            if (it) blob_reply_free(&it->r);
            free(it);
            return err_set(err, err_cap, MESH_ECANCELED, "pull cancelled; the partial file %s "
                           "stays and the next pull resumes it", w->f.path);
        }
        if (!it) {
            if (!live) break;
            check_timeouts(w, timeout_ms);
            continue;
        }
        int rc = 0;
        if (it->asked == -1) rc = on_info(w, it, err, err_cap);
        else if (it->asked >= 0) rc = on_piece(w, it, err, err_cap);
        blob_reply_free(&it->r);
        free(it);
        if (rc) return rc;
        kick(bp);
    }
    uint32_t n_done = 0;
    pthread_mutex_lock(&bp->mu);
    if (bp->is_ready) n_done = bp->sched.n_done;
    pthread_mutex_unlock(&bp->mu);
    return err_set(err, err_cap, MESH_EIO, "no provider left for %.16s...: %u of %u pieces "
                   "fetched and verified (every provider failed, refused or sent bad data); "
                   "the partial file stays and the next pull resumes it", bp->cid, n_done,
                   w->f.n_pieces);
}

bool blobpull_available(struct mesh *m, const char *spec)
{
    if (!m || !spec) return false;
    if (blob_is_hex64(spec)) return true;
    struct peers_blob b;
    struct peers_pick pk[1];
    return peers_blob_providers(mesh_peers(m), spec, NULL, 0, mesh_now_ms(), &b, pk, 1) > 0;
}

/* The providers: announced ones, then the caller's (not twice). */
static int providers_add(struct bp *bp, struct mesh *m, const struct blobpull_opts *o,
                         struct peers_blob *ann)
{
    struct peers_pick pk[BLOBSCHED_MAX_PEERS];
    int n = peers_blob_providers(mesh_peers(m), o->spec, NULL, 0, mesh_now_ms(), ann, pk,
                                 BLOBSCHED_MAX_PEERS);
    const struct peer_id *self = p2pnode_peer_id(mesh_p2pnode(m));
    for (int i = 0; i < n && bp->n_peers < BLOBSCHED_MAX_PEERS; i++) {
        if (peer_id_equal(&pk[i].id, self)) continue;
        struct bp_peer *p = &bp->peers[bp->n_peers++];
        p->id = pk[i].id;
        memcpy(p->id_text, pk[i].id_text, sizeof p->id_text);
        p->addr = pk[i].addr;
    }
    for (size_t i = 0; i < o->n_peers && bp->n_peers < BLOBSCHED_MAX_PEERS; i++) {
        struct peer_id id;
        if (multiaddr_peer_id(&o->peers[i], &id) != 0) continue;
        bool dup = false;
        for (int k = 0; k < bp->n_peers && !dup; k++) dup = peer_id_equal(&bp->peers[k].id, &id);
        if (dup) continue;
        struct bp_peer *p = &bp->peers[bp->n_peers++];
        p->id = id;
        if (peer_id_to_text(&id, p->id_text, sizeof p->id_text)) p->id_text[0] = 0;
        p->addr = o->peers[i];
    }
    for (int i = 0; i < bp->n_peers; i++) {
        bp->peers[i].bp = bp;
        bp->peers[i].idx = -1;
        bp->peers[i].last_ms = mesh_now_ms();
    }
    return bp->n_peers;
}

/* The store name: the caller's, the announced one, or cid-<12 hex>. */
static int pick_name(const struct blobpull_opts *o, const struct peers_blob *ann, const char *cid,
                     struct modelstore_manifest *m, char *err, size_t err_cap)
{
    char def[MODELSTORE_NAME_CAP + MODELSTORE_TAG_CAP + 2];
    if (o->name) snprintf(def, sizeof def, "%s", o->name);
    else if (ann->name[0]) snprintf(def, sizeof def, "%s", ann->name);
    else if (!blob_is_hex64(o->spec)) snprintf(def, sizeof def, "%s", o->spec);
    else snprintf(def, sizeof def, "cid-%.12s", cid);
    if (modelstore_name_parse(def, m->name, m->tag))
        return err_set(err, err_cap, MESH_EINVAL, "'%s' is not a model name (letters, digits, "
                       "'.', '_', '-', then an optional :TAG)", def);
    return 0;
}

/* Ends the pull on both threads: streams reset by a last kick, the worker's ref dropped. */
static void bp_finish(struct bp *bp)
{
    pthread_mutex_lock(&bp->mu);
    bp->is_stopping = true;
    pthread_mutex_unlock(&bp->mu);
    kick(bp);
    bp_unref(bp);
}

static int finish_file(struct bp_run *w, struct modelstore_manifest *m, const char *dir, char *err,
                       size_t err_cap)
{
    struct bp_file *f = &w->f;
    progress(w, MODELPULL_VERIFYING, true);
    uint8_t sha[MERKLE_HASH];
    if (f->sha_next != f->n_pieces)
        return err_set(err, err_cap, MESH_EIO, "internal: the SHA-256 stopped at piece %u",
                       f->sha_next);
    sha256_final(&f->sha, sha);
    if (fsync(f->fd))
        return err_set(err, err_cap, MESH_EIO, "fsync %s: %s", f->path, strerror(errno));
    close(f->fd);
    f->fd = -1;
    m->size = f->size;
    m->piece_len = f->piece_len;
    merkle_hex(f->root, m->content_id);
    merkle_hex(sha, m->sha256);
    snprintf(m->source, sizeof m->source, "mesh:%s", m->content_id);
    progress(w, MODELPULL_WRITING, true);
    return modelstore_install(dir, f->path, m, f->pieces, f->n_layer, err, err_cap);
}

int blobpull_run(struct mesh *m, const char *dir, const struct blobpull_opts *o,
                 struct modelstore_manifest *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof *out);
    if (!m || !o->spec) return err_set(err, err_cap, MESH_EINVAL, "this node is not on a mesh "
                                       "(serve --p2p, and join one with meshllm join)");
    struct bp *bp = calloc(1, sizeof *bp);
    if (!bp) return err_set(err, err_cap, MESH_ENOMEM, "out of memory");
    pthread_mutex_init(&bp->mu, NULL);
    pthread_cond_init(&bp->cv, NULL);
    bp->refs = 1;
    bp->pn = mesh_p2pnode(m);
    struct bp_run w = {.bp = bp, .mesh = m, .bs = mesh_blob(m), .o = o, .t0_ms = now_ms()};
    w.f.fd = -1;
    struct peers_blob ann;
    struct modelstore_manifest man;
    memset(&man, 0, sizeof man);
    int rc = 0;
    int n = providers_add(bp, m, o, &ann);
    const char *cid = blob_is_hex64(o->spec) ? o->spec : ann.content_id;
    if (n == 0 || !cid[0]) {
        rc = err_set(err, err_cap, MESH_ENOTFOUND, "no member of the mesh provides '%s' "
                     "(`meshllm peers` lists what each member announces)", o->spec);
        goto out;
    }
    memcpy(bp->cid, cid, 65);
    sodium_hex2bin(w.f.root, sizeof w.f.root, cid, 64, NULL, NULL, NULL);
    if ((rc = pick_name(o, &ann, cid, &man, err, err_cap))) goto out;
    if ((rc = modelstore_prepare(dir, err, err_cap))) goto out;
    snprintf(w.f.path, sizeof w.f.path, "%s/partial/%s.blobpart", dir, cid);
    log_info("blobpull: %.16s... (%s:%s) from %d provider%s", cid, man.name, man.tag, n,
             n == 1 ? "" : "s");
    progress(&w, MODELPULL_CONNECTING, true);
    kick(bp);
    rc = run_items(&w, err, err_cap);
    uint64_t t_fetched = now_ms();
    if (!rc) rc = finish_file(&w, &man, dir, err, err_cap);
    if (!rc) {
        progress(&w, MODELPULL_DONE, true);
        *out = man;
        double dt = (double)(now_ms() - w.t0_ms) / 1000.0;
        double df = (double)(t_fetched - w.t0_ms) / 1000.0;
        log_info("blobpull: %s:%s complete: %llu bytes in %.2f s from %d provider%s (fetched "
                 "and verified in %.2f s, %.0f MiB/s; fsync and install %.2f s)", man.name,
                 man.tag, (unsigned long long)man.size, dt, n, n == 1 ? "" : "s", df,
                 df > 0 ? (double)w.bytes_this_run / 1048576.0 / df : 0, dt - df);
    }
out:
    if (w.f.fd >= 0) close(w.f.fd);
    free(w.f.pieces);
    free(w.f.buf);
    blob_server_count(w.bs, rc ? BLOB_C_PULL_FAILED : BLOB_C_PULL_OK, 1);
    bp_finish(bp);
    return rc;
}
