/* blob.c - the /meshllm/blob/1 provider (see blob.h; protocol in docs/PROTOCOL.md). Each
 * request is answered at once, in order, from the store's files: the piece layer from
 * blobs/<cid>.pieces, a piece by pread from blobs/<cid> (the page cache serves repeated
 * reads; nothing holds a whole file). It does not check what it serves: the store only
 * holds files verified when they were added, and the puller verifies every piece anyway.
 * The reads run on the loop thread (a 1 MiB pread from the page cache is a fraction of a
 * millisecond); a cold disk delays the loop by a read.
 */
#include "node/blob.h"

#include "core/err.h"
#include "core/log.h"
#include "net/host.h"
#include "node/blob_internal.h"
#include "node/merkle.h"
#include "node/modelstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOB_MAX_REQUEST 1024 /* a BlobRequest is ~80 bytes */
#define BLOB_MAX_PEERS_TRACKED 64

struct peer_count {
    struct peer_id id;
    int n;
};

struct blob_server {
    struct p2pnode *pn;
    char dir[4096];
    bool corrupt;                  /* MESHLLM_TEST_CORRUPT_BLOB: test-only */
    struct peer_count peers[BLOB_MAX_PEERS_TRACKED]; /* loop thread */
    int n_peers;
    _Atomic uint64_t n_streams, n_refused, n_pieces, n_bytes, n_errors;
    _Atomic uint64_t c[BLOB_C_N];
};

/* One inbound stream: the file it last asked about stays open. */
struct bs_stream {
    struct blob_server *srv;
    struct peer_id peer;
    char cid[65];
    int fd;
    uint64_t size;
    uint32_t piece_len;
    uint8_t *buf;                  /* piece_len bytes */
};

static struct peer_count *peer_slot(struct blob_server *b, const struct peer_id *id, bool create)
{
    for (int i = 0; i < b->n_peers; i++)
        if (peer_id_equal(&b->peers[i].id, id)) return &b->peers[i];
    if (!create || b->n_peers == BLOB_MAX_PEERS_TRACKED) return NULL;
    struct peer_count *p = &b->peers[b->n_peers++];
    p->id = *id;
    p->n = 0;
    return p;
}

static void peer_release(struct blob_server *b, const struct peer_id *id)
{
    struct peer_count *p = peer_slot(b, id, false);
    if (p && --p->n <= 0) *p = b->peers[--b->n_peers];
}

static void file_close(struct bs_stream *st)
{
    if (st->fd >= 0) close(st->fd);
    st->fd = -1;
    st->cid[0] = 0;
    free(st->buf);
    st->buf = NULL;
}

/* Opens the store file of cid (its manifest gives the piece length). BLOB_OK, or the
 * refusal code with a sentence in why. */
static int file_open(struct bs_stream *st, const char *cid, char *why, size_t why_cap)
{
    if (st->fd >= 0 && !strcmp(st->cid, cid)) return BLOB_OK;
    file_close(st);
    struct modelstore_manifest *all = NULL;
    int n = 0;
    if (modelstore_list(st->srv->dir, &all, &n)) {
        snprintf(why, why_cap, "the store cannot be read");
        return BLOB_ERR_INTERNAL;
    }
    int found = -1;
    for (int i = 0; i < n && found < 0; i++)
        if (!strcmp(all[i].content_id, cid)) found = i;
    int rc = BLOB_ERR_NOTFOUND;
    snprintf(why, why_cap, "no file %.16s... in this node's store", cid);
    if (found >= 0 && all[found].piece_len <= BLOB_MAX_PIECE) {
        char path[4200];
        snprintf(path, sizeof path, "%s/blobs/%s", st->srv->dir, cid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd >= 0 && fstat(fd, &sb) == 0 && (uint64_t)sb.st_size == all[found].size &&
            (st->buf = malloc(all[found].piece_len))) {
            st->fd = fd;
            st->size = all[found].size;
            st->piece_len = all[found].piece_len;
            memcpy(st->cid, cid, 65);
            rc = BLOB_OK;
        } else {
            if (fd >= 0) close(fd);
            snprintf(why, why_cap, "the file %.16s... cannot be read here", cid);
            rc = fd >= 0 ? BLOB_ERR_INTERNAL : BLOB_ERR_NOTFOUND;
        }
    }
    free(all);
    return rc;
}

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
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

/* The INFO answer: the piece layer from blobs/<cid>.pieces (none for one piece). */
static int info_fill(struct bs_stream *st, struct blob_reply *r, char *why, size_t why_cap)
{
    r->has_info = true;
    r->size = st->size;
    r->piece_len = st->piece_len;
    uint64_t n = blob_n_pieces(st->size, st->piece_len);
    if (n <= 1) return BLOB_OK;
    char path[4200];
    snprintf(path, sizeof path, "%s/blobs/%s.pieces", st->srv->dir, st->cid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    r->pieces = fd >= 0 ? malloc((size_t)n * MERKLE_HASH) : NULL;
    int rc = r->pieces && read_full(fd, r->pieces, (size_t)n * MERKLE_HASH, 0) == 0;
    if (fd >= 0) close(fd);
    if (!rc) {
        snprintf(why, why_cap, "the piece layer of %.16s... cannot be read here", st->cid);
        return BLOB_ERR_INTERNAL;
    }
    r->n_pieces = (size_t)n;
    return BLOB_OK;
}

static int piece_fill(struct bs_stream *st, uint32_t piece, struct blob_reply *r, char *why,
                      size_t why_cap)
{
    uint64_t n = blob_n_pieces(st->size, st->piece_len);
    if (piece >= n) {
        snprintf(why, why_cap, "piece %u of a file of %llu pieces", piece, (unsigned long long)n);
        return BLOB_ERR_RANGE;
    }
    uint64_t off = (uint64_t)piece * st->piece_len;
    size_t len = st->size - off < st->piece_len ? (size_t)(st->size - off) : st->piece_len;
    if (read_full(st->fd, st->buf, len, off)) {
        snprintf(why, why_cap, "cannot read piece %u here", piece);
        return BLOB_ERR_INTERNAL;
    }
    if (st->srv->corrupt) st->buf[len / 2] ^= 0x5a; /* test-only liar */
    r->piece = piece;
    r->data = st->buf;
    r->data_len = len;
    return BLOB_OK;
}

static void bs_on_data(void *ctx, struct host_stream *s, const uint8_t *data, size_t len)
{
    struct bs_stream *st = ctx;
    struct blob_server *b = st->srv;
    struct blob_req q;
    struct blob_reply r;
    memset(&r, 0, sizeof r);
    char why[BLOB_MAX_MESSAGE] = "";
    int code = blob_req_decode(data, len, &q, why, sizeof why);
    if (code == BLOB_OK) code = file_open(st, q.content_id, why, sizeof why);
    if (code == BLOB_OK)
        code = q.kind == BLOB_INFO ? info_fill(st, &r, why, sizeof why)
                                   : piece_fill(st, q.piece, &r, why, sizeof why);
    if (code != BLOB_OK) {
        free(r.pieces);
        memset(&r, 0, sizeof r);
        r.error = code;
        snprintf(r.message, sizeof r.message, "%s", why);
        atomic_fetch_add(&b->n_errors, 1);
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = blob_reply_encode(&r, &out, &out_len);
    if (!rc) rc = host_stream_write_msg(s, out, out_len);
    free(out);
    if (r.has_info) free(r.pieces);
    if (rc) { /* MESH_EFULL: the puller asks faster than it reads */
        host_stream_reset(s);
        return;
    }
    if (code == BLOB_OK && q.kind == BLOB_PIECE) {
        atomic_fetch_add(&b->n_pieces, 1);
        atomic_fetch_add(&b->n_bytes, r.data_len);
    }
}

static void bs_on_eof(void *ctx, struct host_stream *s)
{
    (void)ctx;
    host_stream_close(s);
}

static void bs_on_close(void *ctx, struct host_stream *s, int status)
{
    (void)s;
    (void)status;
    struct bs_stream *st = ctx;
    peer_release(st->srv, &st->peer);
    file_close(st);
    free(st);
}

static const struct host_stream_cbs bs_cbs = {bs_on_data, bs_on_eof, bs_on_close};

static void bs_on_stream(void *ctx, struct host_stream *s)
{
    struct blob_server *b = ctx;
    const struct peer_id *peer = host_stream_peer(s);
    struct peer_count *pc = peer ? peer_slot(b, peer, true) : NULL;
    struct bs_stream *st = pc && pc->n < BLOB_MAX_STREAMS_PER_PEER ? calloc(1, sizeof *st) : NULL;
    if (!st) {
        if (pc && pc->n == 0) peer_release(b, peer); /* drops the slot it just made */
        atomic_fetch_add(&b->n_refused, 1);
        host_stream_reset(s);
        return;
    }
    pc->n++;
    st->srv = b;
    st->peer = *peer;
    st->fd = -1;
    atomic_fetch_add(&b->n_streams, 1);
    host_stream_set_message_mode(s, BLOB_MAX_REQUEST);
    host_stream_set_callbacks(s, &bs_cbs, st);
}

int blob_server_new(struct p2pnode *pn, const char *dir, struct blob_server **out)
{
    *out = NULL;
    struct blob_server *b = calloc(1, sizeof *b);
    if (!b) return MESH_ENOMEM;
    b->pn = pn;
    snprintf(b->dir, sizeof b->dir, "%s", dir);
    const char *c = getenv("MESHLLM_TEST_CORRUPT_BLOB");
    b->corrupt = c && !strcmp(c, "1");
    if (b->corrupt) log_warn("blob: MESHLLM_TEST_CORRUPT_BLOB=1: this node sends corrupt pieces "
                             "(a test-only setting)");
    struct host *h = p2pnode_host(pn);
    int rc = h ? host_set_handler(h, BLOB_PROTOCOL_ID, bs_on_stream, b) : MESH_EINVAL;
    if (rc) {
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void blob_server_free(struct blob_server *b)
{
    free(b);
}

void blob_server_count(struct blob_server *b, enum blob_counter c, uint64_t n)
{
    if (b && c >= 0 && c < BLOB_C_N) atomic_fetch_add(&b->c[c], n);
}

void blob_server_stats(const struct blob_server *b, struct blob_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!b) return;
    struct blob_server *m = (struct blob_server *)b;
    out->n_streams = atomic_load(&m->n_streams);
    out->n_streams_refused = atomic_load(&m->n_refused);
    out->n_pieces_served = atomic_load(&m->n_pieces);
    out->bytes_served = atomic_load(&m->n_bytes);
    out->n_errors_sent = atomic_load(&m->n_errors);
    out->n_pieces_fetched = atomic_load(&m->c[BLOB_C_FETCHED]);
    out->bytes_fetched = atomic_load(&m->c[BLOB_C_BYTES_FETCHED]);
    out->n_pieces_resumed = atomic_load(&m->c[BLOB_C_RESUMED]);
    out->n_bad_pieces = atomic_load(&m->c[BLOB_C_BAD]);
    out->n_peers_dropped = atomic_load(&m->c[BLOB_C_DROPPED]);
    out->n_pulls_ok = atomic_load(&m->c[BLOB_C_PULL_OK]);
    out->n_pulls_failed = atomic_load(&m->c[BLOB_C_PULL_FAILED]);
}
