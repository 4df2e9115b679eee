/* pipeline.c - the requester's side of a split model (pipeline.h): plan a route of stages,
 * then run each scheduler batch embedding -> hops -> head.
 *
 * Hops are asked one after the other (a star around the requester: each hop is a round
 * trip from here), each with one message per run of a slot's tokens; the stage batches the
 * sessions of one hop into one pass. The last remote hop sends back only the states the
 * head needs (a prefill chunk's last token, none for a chunk that is not the prompt's end).
 * A stage that fails is replaced within the pass: the route is planned again without it
 * (hops it shares with the old route keep their streams, so their KV), every slot's token
 * history is replayed as prefill through the hops up to the last new one, and the batch
 * runs again (docs/SPLIT.md "Recovery" says why replay rather than kept hidden states).
 * Spec: docs/SPLIT.md, docs/PROTOCOL.md (/meshllm/stage/1). Not here: a chain (stage to
 * stage), speculative decoding.
 */
#include "node/pipeline.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/model.h"
#include "node/autosplit.h"
#include "node/mesh.h"
#include "node/registry.h"
#include "node/stage.h"

#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- planner ------------------------------------------------------------------------------ */

#define PLAN_MAX_LAYERS 4096

int pipeline_plan(const struct peers_stage *cands, int n_cands, int n_layer, int local_begin,
                  int local_end, struct pipeline_hop *out, int cap)
{
    if (n_layer <= 0 || n_layer > PLAN_MAX_LAYERS) return MESH_ERANGE;
    bool has_local = local_begin < local_end && local_begin >= 0 && local_end <= n_layer;
    /* best[l]: least cost of covering [l, n_layer); via[l]: the segment taken at l (-1 the
     * local one, -2 none), filled from the top down */
    double *best = malloc(((size_t)n_layer + 1) * sizeof *best);
    int *via = malloc(((size_t)n_layer + 1) * sizeof *via);
    int *hops = malloc(((size_t)n_layer + 1) * sizeof *hops);
    int rc = MESH_ENOMEM;
    if (!best || !via || !hops) goto out;
    best[n_layer] = 0;
    hops[n_layer] = 0;
    via[n_layer] = -2;
    for (int l = n_layer - 1; l >= 0; l--) {
        best[l] = -1;
        via[l] = -2;
        hops[l] = 0;
        if (has_local && local_begin == l && best[local_end] >= 0) {
            best[l] = best[local_end];
            via[l] = -1;
            hops[l] = hops[local_end] + 1;
        }
        for (int i = 0; i < n_cands; i++) {
            const struct peers_stage *c = &cands[i];
            if (c->layer_begin != l || c->layer_end > n_layer || c->layer_end <= l ||
                best[c->layer_end] < 0)
                continue;
            double cost = best[c->layer_end] + c->pick.score_ms + PIPELINE_HOP_COST_MS;
            if (best[l] < 0 || cost < best[l]) {
                best[l] = cost;
                via[l] = i;
                hops[l] = hops[c->layer_end] + 1;
            }
        }
    }
    rc = MESH_ENOTFOUND;
    if (best[0] < 0) goto out;
    rc = MESH_ERANGE;
    if (hops[0] > cap) goto out;
    int n = 0;
    for (int l = 0; l < n_layer;) {
        struct pipeline_hop *h = &out[n++];
        memset(h, 0, sizeof *h);
        if (via[l] == -1) {
            h->is_local = true;
            h->layer_begin = local_begin;
            h->layer_end = local_end;
        } else {
            const struct peers_stage *c = &cands[via[l]];
            h->layer_begin = c->layer_begin;
            h->layer_end = c->layer_end;
            h->id = c->pick.id;
            memcpy(h->id_text, c->pick.id_text, sizeof h->id_text);
            h->addr = c->pick.addr;
        }
        l = h->layer_end;
    }
    rc = n;
out:
    free(best);
    free(via);
    free(hops);
    return rc;
}

/* ---- the pipeline ------------------------------------------------------------------------- */

struct bad_peer {
    struct peer_id id;
    uint64_t until_ms;
};

/* One message of a remote hop: a run of one slot's consecutive tokens. */
struct run {
    int t0, n;                   /* rows [t0, t0 + n) of the batch */
    int out;                     /* enum stage_out */
};

struct pipeline {
    struct sched_forward fwd;
    const struct model *m;
    struct registry *reg;
    int reg_index;
    int layer_begin, layer_end, n_layer, n_embd, n_seq;
    atomic_bool interrupt;
    /* mu: the route and scratch; held across a pass (the worker) and by detach/free */
    pthread_mutex_t mu;
    struct pipeline_hop hops[PIPELINE_MAX_HOPS];
    struct stage_conn *conns[PIPELINE_MAX_HOPS];
    int n_hops;                  /* 0: no route */
    uint8_t (*sess)[STAGE_SESSION_LEN]; /* [n_seq] session ids on the current route */
    int *valid;                  /* [n_seq] positions the route holds per slot */
    int *target;                 /* [n_seq] positions a recovery replays per slot */
    struct bad_peer bad[8];
    int n_bad;
    int n_batch;                 /* scratch below sized for it (first pass) */
    float *x;                    /* [n_batch][n_embd] */
    struct run *runs;            /* [n_batch] */
    uint8_t **msgs;              /* [n_batch] */
    size_t *lens;
    struct stage_reply *replies;
    int hist_cap;                /* positions per slot: the context's n_ctx */
    int32_t *hist;               /* [n_seq][hist_cap] the token at each held position */
    int32_t *rb_tok, *rb_pos, *rb_seq; /* [n_batch] a replay batch */
    bool *rb_want;               /* [n_batch] all false: a replay wants no logits */
    struct pipeline_stats st;
    pthread_mutex_t text_mu;     /* guards text, shown, n_shown */
    char text[512];              /* the route, as describe writes it */
    struct pipeline_hop shown[PIPELINE_MAX_HOPS]; /* the route, for pipeline_view */
    int n_shown;
};

static void route_text_update(struct pipeline *pl)
{
    char t[sizeof pl->text];
    size_t off = 0;
    t[0] = 0;
    bool local_in = false;
    for (int i = 0; i < pl->n_hops; i++) local_in |= pl->hops[i].is_local;
    if (!local_in) off += (size_t)snprintf(t, sizeof t, "local:none");
    for (int i = 0; i < pl->n_hops && off < sizeof t; i++) {
        const struct pipeline_hop *h = &pl->hops[i];
        off += (size_t)snprintf(t + off, sizeof t - off, "%s%s:%d-%d", off ? "+" : "",
                                h->is_local ? "local" : h->id_text, h->layer_begin,
                                h->layer_end - 1);
    }
    if (pl->n_hops == 0) snprintf(t, sizeof t, "local:pipeline-unplanned");
    pthread_mutex_lock(&pl->text_mu);
    memcpy(pl->text, t, sizeof t);
    memcpy(pl->shown, pl->hops, (size_t)pl->n_hops * sizeof *pl->hops);
    pl->n_shown = pl->n_hops;
    pthread_mutex_unlock(&pl->text_mu);
}

/* Forgets the route (mu held); node_alive: its streams may be closed through the node. */
static void route_drop(struct pipeline *pl, bool node_alive)
{
    for (int i = 0; i < pl->n_hops; i++) {
        uint64_t s = 0, r = 0; /* the counters outlive the route's streams */
        if (pl->conns[i]) stage_conn_bytes(pl->conns[i], &s, &r);
        pl->st.bytes_sent += s;
        pl->st.bytes_recv += r;
        stage_conn_free(pl->conns[i], node_alive);
        pl->conns[i] = NULL;
    }
    pl->n_hops = 0;
    for (int i = 0; i < pl->n_seq; i++) pl->valid[i] = 0;
    route_text_update(pl);
}

static void bad_add(struct pipeline *pl, const struct peer_id *id)
{
    uint64_t until = mesh_now_ms() + PIPELINE_RETRY_MS;
    for (int i = 0; i < pl->n_bad; i++)
        if (peer_id_equal(&pl->bad[i].id, id)) {
            pl->bad[i].until_ms = until;
            return;
        }
    int at = pl->n_bad < 8 ? pl->n_bad++ : 0;
    pl->bad[at].id = *id;
    pl->bad[at].until_ms = until;
}

/* The old hop that new hop h is (the same peer and range) and whose stream is not taken
 * yet, or -1. */
static int old_hop_find(const struct pipeline *pl, const struct pipeline_hop *h,
                        const bool *taken)
{
    for (int j = 0; j < pl->n_hops; j++) {
        const struct pipeline_hop *o = &pl->hops[j];
        if (!taken[j] && !o->is_local && o->layer_begin == h->layer_begin &&
            o->layer_end == h->layer_end && peer_id_equal(&o->id, &h->id))
            return j;
    }
    return -1;
}

/* Plans a route over mesh (mu held, mesh held) and opens its streams. With a route already
 * there (a recovery), the hops the new one shares with it keep their streams, so their
 * sessions and KV, and the others' streams close (their stages forget our sessions);
 * *last_new is the last hop that is new (-1: none). A first route gets fresh session ids.
 * 0, MESH_EAGAIN (the content hash is not known yet), MESH_ENOTFOUND (no cover),
 * MESH_ENOMEM; the old route stays as it was on an error. */
static int route_build(struct pipeline *pl, struct mesh *mesh, int *last_new)
{
    *last_new = -1;
    if (!mesh) return MESH_ENOTFOUND;
    const char *digest = registry_digest(pl->reg, pl->reg_index);
    if (!digest) return MESH_EAGAIN;
    struct peer_id ex[8];
    int n_ex = 0;
    uint64_t now = mesh_now_ms();
    for (int i = 0; i < pl->n_bad; i++)
        if (pl->bad[i].until_ms > now) ex[n_ex++] = pl->bad[i].id;
    struct peers_stage *cands = malloc(PEERS_MAX * sizeof *cands);
    if (!cands) return MESH_ENOMEM;
    int n = peers_stages(mesh_peers(mesh), digest, pl->n_layer, ex, n_ex, now, cands, PEERS_MAX);
    struct pipeline_hop hops[PIPELINE_MAX_HOPS];
    int nh = pipeline_plan(cands, n, pl->n_layer, pl->layer_begin, pl->layer_end, hops,
                           PIPELINE_MAX_HOPS);
    free(cands);
    if (nh < 0) return nh == MESH_ERANGE ? MESH_ENOTFOUND : nh;
    struct stage_conn *conns[PIPELINE_MAX_HOPS] = {0};
    bool taken[PIPELINE_MAX_HOPS] = {0}, fresh[PIPELINE_MAX_HOPS] = {0};
    for (int i = 0; i < nh; i++) {
        if (hops[i].is_local) continue;
        int j = old_hop_find(pl, &hops[i], taken);
        if (j >= 0) {
            taken[j] = true;
            conns[i] = pl->conns[j];
            continue;
        }
        int rc = stage_conn_new(mesh_p2pnode(mesh), &hops[i].id, &hops[i].addr, &conns[i]);
        if (rc) {
            for (int k = 0; k < i; k++)
                if (fresh[k]) stage_conn_free(conns[k], true);
            *last_new = -1;
            return rc;
        }
        fresh[i] = true;
        *last_new = i;
    }
    bool is_first = pl->n_hops == 0;
    for (int j = 0; j < pl->n_hops; j++) {
        if (taken[j] || !pl->conns[j]) continue;
        uint64_t sent = 0, recv = 0; /* the counters outlive a replaced hop's stream */
        stage_conn_bytes(pl->conns[j], &sent, &recv);
        pl->st.bytes_sent += sent;
        pl->st.bytes_recv += recv;
        stage_conn_free(pl->conns[j], true);
    }
    memcpy(pl->hops, hops, (size_t)nh * sizeof *hops);
    memcpy(pl->conns, conns, (size_t)nh * sizeof *conns);
    pl->n_hops = nh;
    if (is_first) {
        randombytes_buf(pl->sess, (size_t)pl->n_seq * STAGE_SESSION_LEN);
        for (int i = 0; i < pl->n_seq; i++) pl->valid[i] = 0;
    }
    pl->st.n_plans++;
    route_text_update(pl);
    if (is_first) {
        pthread_mutex_lock(&pl->text_mu);
        log_info("pipeline: %s runs as %s",
                 model_hparams(pl->m)->name[0] ? model_hparams(pl->m)->name : "the model",
                 pl->text);
        pthread_mutex_unlock(&pl->text_mu);
    }
    return 0;
}

static int route_plan(struct pipeline *pl, struct mesh *mesh)
{
    int last_new;
    return route_build(pl, mesh, &last_new);
}

static void scratch_free(struct pipeline *pl)
{
    free(pl->x);
    free(pl->runs);
    free(pl->msgs);
    free(pl->lens);
    free(pl->replies);
    free(pl->hist);
    free(pl->rb_tok);
    free(pl->rb_pos);
    free(pl->rb_seq);
    free(pl->rb_want);
    pl->x = NULL;
    pl->runs = NULL;
    pl->msgs = NULL;
    pl->lens = NULL;
    pl->replies = NULL;
    pl->hist = NULL;
    pl->rb_tok = pl->rb_pos = pl->rb_seq = NULL;
    pl->rb_want = NULL;
    pl->n_batch = pl->hist_cap = 0;
}

/* Scratch for the context's batches and the slots' histories (first pass; mu held). */
static int scratch_init(struct pipeline *pl, const struct model_ctx *c)
{
    if (pl->n_batch) return 0;
    size_t nb = (size_t)model_ctx_n_batch(c), n_ctx = (size_t)model_ctx_n_ctx(c);
    scratch_free(pl);
    pl->x = malloc(nb * (size_t)pl->n_embd * sizeof *pl->x);
    pl->runs = malloc(nb * sizeof *pl->runs);
    pl->msgs = calloc(nb, sizeof *pl->msgs);
    pl->lens = calloc(nb, sizeof *pl->lens);
    pl->replies = calloc(nb, sizeof *pl->replies);
    pl->hist = calloc((size_t)pl->n_seq * n_ctx, sizeof *pl->hist);
    pl->rb_tok = malloc(nb * sizeof *pl->rb_tok);
    pl->rb_pos = malloc(nb * sizeof *pl->rb_pos);
    pl->rb_seq = malloc(nb * sizeof *pl->rb_seq);
    pl->rb_want = calloc(nb, sizeof *pl->rb_want);
    if (!pl->x || !pl->runs || !pl->msgs || !pl->lens || !pl->replies || !pl->hist ||
        !pl->rb_tok || !pl->rb_pos || !pl->rb_seq || !pl->rb_want)
        return MESH_ENOMEM; /* the next pass tries again */
    pl->hist_cap = (int)n_ctx;
    pl->n_batch = (int)nb;
    return 0;
}

static bool row_wants(const struct model_batch *b, int t)
{
    return b->want_logits ? b->want_logits[t] : t == b->n - 1;
}

/* Splits the batch into runs of one slot's consecutive tokens, at most max_tok each; on
 * the last hop, asks only for the states the head needs. Returns the number of runs. */
static int runs_make(struct pipeline *pl, const struct model_batch *b, bool last_hop)
{
    int max_tok = (int)(STAGE_FRAME_BUDGET / (2u * (unsigned)pl->n_embd));
    if (max_tok > STAGE_MAX_TOKENS) max_tok = STAGE_MAX_TOKENS;
    int nr = 0;
    for (int t = 0; t < b->n;) {
        int seq = b->seq ? b->seq[t] : 0, k = 1;
        while (t + k < b->n && k < max_tok && (b->seq ? b->seq[t + k] : 0) == seq &&
               b->pos[t + k] == b->pos[t + k - 1] + 1)
            k++;
        struct run *r = &pl->runs[nr++];
        r->t0 = t;
        r->n = k;
        r->out = STAGE_OUT_ALL;
        if (last_hop) {
            int n_want = 0;
            for (int i = t; i < t + k; i++) n_want += row_wants(b, i);
            r->out = n_want == 0 ? STAGE_OUT_NONE
                     : n_want == 1 && row_wants(b, t + k - 1) ? STAGE_OUT_LAST
                                                               : STAGE_OUT_ALL;
        }
        t += k;
    }
    return nr;
}

/* Runs x through remote hop h (mu held). 0, or MESH_EFULL (the stage is busy), MESH_EIO /
 * MESH_EPROTO / MESH_ETIMEOUT (it failed), MESH_ECLOSED, MESH_ENOMEM. */
static int hop_remote(struct pipeline *pl, int h, const struct model_batch *b, bool last_hop)
{
    const struct pipeline_hop *hop = &pl->hops[h];
    const char *digest = registry_digest(pl->reg, pl->reg_index);
    size_t E = (size_t)pl->n_embd;
    int nr = runs_make(pl, b, last_hop);
    int rc = 0;
    for (int i = 0; i < nr; i++) {
        const struct run *r = &pl->runs[i];
        struct stage_req q;
        memset(&q, 0, sizeof q);
        int seq = b->seq ? b->seq[r->t0] : 0;
        memcpy(q.session, pl->sess[seq], STAGE_SESSION_LEN);
        snprintf(q.model, sizeof q.model, "%s", digest ? digest : "");
        q.layer_begin = hop->layer_begin;
        q.layer_end = hop->layer_end;
        q.n_embd = pl->n_embd;
        q.n_tokens = r->n;
        q.pos = (int32_t *)b->pos + r->t0;
        q.x = pl->x + (size_t)r->t0 * E;
        q.out = r->out;
        pl->msgs[i] = NULL;
        if (!rc) rc = stage_req_encode(&q, &pl->msgs[i], &pl->lens[i]);
    }
    if (rc) {
        for (int i = 0; i < nr; i++) free(pl->msgs[i]);
        return rc;
    }
    rc = stage_conn_call(pl->conns[h], pl->msgs, pl->lens, nr, pl->n_embd, pl->replies,
                         STAGE_CALL_TIMEOUT_MS, &pl->interrupt);
    if (rc) {
        log_warn("pipeline: stage %s (layers %d-%d): %s", hop->id_text, hop->layer_begin,
                 hop->layer_end - 1, err_str(rc));
        return rc;
    }
    for (int i = 0; i < nr; i++) {
        const struct run *r = &pl->runs[i];
        struct stage_reply *y = &pl->replies[i];
        int seq = b->seq ? b->seq[r->t0] : 0;
        int want_n = r->out == STAGE_OUT_ALL ? r->n : r->out == STAGE_OUT_LAST ? 1 : 0;
        int want_pos = b->pos[r->t0 + (r->out == STAGE_OUT_ALL ? 0 : r->n - 1)];
        if (!rc && y->error) {
            log_warn("pipeline: stage %s (layers %d-%d) refused: %s (%s)", hop->id_text,
                     hop->layer_begin, hop->layer_end - 1, stage_err_name(y->error),
                     y->message);
            rc = y->error == STAGE_ERR_BUSY ? MESH_EFULL : MESH_EPROTO;
        } else if (!rc && (memcmp(y->session, pl->sess[seq], STAGE_SESSION_LEN) ||
                           y->n_tokens != want_n || (want_n && y->pos != want_pos))) {
            log_warn("pipeline: stage %s answered out of turn", hop->id_text);
            rc = MESH_EPROTO;
        } else if (!rc && want_n) {
            int at = r->t0 + r->n - want_n;
            memcpy(pl->x + (size_t)at * E, y->x, (size_t)want_n * E * sizeof *pl->x);
        }
        stage_reply_free(y);
    }
    return rc;
}

/* A remote hop's error that means the stage failed (lost, reset, broke the protocol, busy,
 * closing, refused, timed out), rather than this node or its mesh stopping. */
static bool stage_failed(int rc)
{
    return rc == MESH_EIO || rc == MESH_EPROTO || rc == MESH_EFULL || rc == MESH_ETIMEOUT;
}

/* Runs batch b through the route (mu held): embedding -> hops -> head. On a remote hop's
 * error, *bad is that hop (else -1). */
static int pass_run(struct pipeline *pl, struct model_ctx *c, const struct model_batch *b,
                    float *logits, int *bad)
{
    size_t E = (size_t)pl->n_embd;
    *bad = -1;
    /* x[n][n_embd] = token embeddings */
    int rc = model_embed(c, b->tokens, b->n, pl->x);
    /* this node's layers on its own context; with none, the call only books positions */
    if (rc == 0 && pl->layer_begin == pl->layer_end) rc = model_layers(c, b, pl->x);
    int last_remote = -1;
    for (int h = 0; h < pl->n_hops; h++)
        if (!pl->hops[h].is_local) last_remote = h;
    for (int h = 0; rc == 0 && h < pl->n_hops; h++) {
        if (pl->hops[h].is_local) {
            rc = model_layers(c, b, pl->x);
            continue;
        }
        /* the head needs only some states back, unless a local hop follows */
        rc = hop_remote(pl, h, b, h == last_remote && h == pl->n_hops - 1);
        if (rc) *bad = h;
    }
    if (rc) return rc;
    /* logits of the rows that want them: final norm + output head */
    int n_out = 0;
    for (int t = 0; t < b->n; t++) {
        if (!row_wants(b, t)) continue;
        if (n_out != t)
            memmove(pl->x + (size_t)n_out * E, pl->x + (size_t)t * E, E * sizeof *pl->x);
        n_out++;
    }
    return n_out ? model_head(c, pl->x, n_out, logits) : 0;
}

/* After a pass: the route holds b's tokens at their positions, and each slot in b holds
 * positions up to its last row (a batch that starts below what a slot held rewound it). */
static void hist_record(struct pipeline *pl, const struct model_batch *b)
{
    for (int t = 0; t < b->n; t++) {
        int seq = b->seq ? b->seq[t] : 0, pos = b->pos[t];
        if (seq < 0 || seq >= pl->n_seq || pos < 0 || pos >= pl->hist_cap) continue;
        pl->hist[(size_t)seq * (size_t)pl->hist_cap + (size_t)pos] = b->tokens[t];
        pl->valid[seq] = pos + 1;
    }
}

/* What a recovery replays per slot (mu held): what both the route and the context held
 * before batch b, whose positions the context gives back first (b runs again afterwards). */
static void targets_set(struct pipeline *pl, struct model_ctx *c, const struct model_batch *b)
{
    for (int t = 0; t < b->n; t++) model_kv_seq_truncate(c, b->seq ? b->seq[t] : 0, b->pos[t]);
    for (int s = 0; s < pl->n_seq; s++) {
        int n = model_kv_seq_len(c, s);
        pl->target[s] = n < pl->valid[s] ? n : pl->valid[s];
        if (pl->target[s] > pl->hist_cap) pl->target[s] = pl->hist_cap;
    }
}

/* Rebuilds the sessions on a re-planned route (mu held): each slot's first target[s]
 * positions run again as prefill through hops 0..last_new. The new hops build their KV
 * from it; the hops before them held theirs, and recompute it (a position below a
 * session's end rewinds it: same tokens, same states) because that is how the new hops get
 * their input states; the hops after last_new still hold theirs and are skipped. This
 * node's own layers run again too when they come first. On a remote hop's error, *bad is
 * that hop. *n_tok: positions replayed. */
static int replay(struct pipeline *pl, struct model_ctx *c, int last_new, int *bad, int *n_tok)
{
    *bad = -1;
    *n_tok = 0;
    bool local_runs = false;
    for (int h = 0; h <= last_new; h++) local_runs |= pl->hops[h].is_local;
    for (int s = 0; local_runs && s < pl->n_seq; s++) model_kv_seq_truncate(c, s, 0);
    int rc = 0;
    for (int seq = 0, at = 0; rc == 0 && last_new >= 0;) {
        /* the next n_batch positions, slot after slot: rb[n] */
        int n = 0;
        while (n < pl->n_batch && seq < pl->n_seq) {
            if (at >= pl->target[seq]) {
                seq++;
                at = 0;
                continue;
            }
            pl->rb_tok[n] = pl->hist[(size_t)seq * (size_t)pl->hist_cap + (size_t)at];
            pl->rb_pos[n] = at++;
            pl->rb_seq[n] = seq;
            n++;
        }
        if (n == 0) break;
        struct model_batch rb = {.n = n, .tokens = pl->rb_tok, .pos = pl->rb_pos,
                                 .seq = pl->rb_seq, .want_logits = pl->rb_want};
        rc = model_embed(c, rb.tokens, n, pl->x);
        for (int h = 0; rc == 0 && h <= last_new; h++) {
            if (pl->hops[h].is_local) {
                rc = model_layers(c, &rb, pl->x);
                continue;
            }
            rc = hop_remote(pl, h, &rb, h == last_new); /* the last one returns nothing */
            if (rc) *bad = h;
        }
        if (rc == 0) *n_tok += n;
    }
    if (rc) return rc;
    for (int s = 0; s < pl->n_seq; s++) {
        pl->valid[s] = pl->target[s];
        model_kv_seq_truncate(c, s, pl->target[s]);
    }
    return 0;
}

/* Hop bad of the route failed with rc while batch b ran: avoids that stage, plans the route
 * again without it and replays the sessions onto it (mu held), so that the caller can run b
 * again. At most PIPELINE_RECOVER_MAX tries per pass (*n_tries). Returns 0, or the error
 * that ends the pass (the route is dropped: the next pass plans a new one). */
static int recover(struct pipeline *pl, struct mesh *mesh, struct model_ctx *c,
                   const struct model_batch *b, int bad, int rc, int *n_tries)
{
    uint64_t t0 = mesh_now_ms();
    struct pipeline_hop lost = pl->hops[bad];
    targets_set(pl, c, b);
    for (;;) {
        pl->st.n_failures++;
        bool failed = stage_failed(rc);
        if (failed) bad_add(pl, &pl->hops[bad].id);
        if (!failed || !mesh || atomic_load(&pl->interrupt)) break; /* nothing to replace */
        if (++*n_tries > PIPELINE_RECOVER_MAX) {
            log_warn("pipeline: gave up after %d replacements in one pass", PIPELINE_RECOVER_MAX);
            break;
        }
        int last_new = -1;
        int prc = route_build(pl, mesh, &last_new);
        struct autosplit *as = registry_autosplit_held(pl->reg);
        if (prc == MESH_ENOTFOUND && as) { /* --auto-split: a member loads the lost range */
            struct peer_id ex[8];
            int n_ex = 0;
            uint64_t now = mesh_now_ms();
            for (int i = 0; i < pl->n_bad && n_ex < 8; i++)
                if (pl->bad[i].until_ms > now) ex[n_ex++] = pl->bad[i].id;
            if (autosplit_fill(as, pl->reg_index, ex, n_ex, PIPELINE_AUTOSPLIT_WAIT_MS) == 0)
                prc = route_build(pl, mesh, &last_new);
        }
        if (prc) {
            log_warn("pipeline: stage %s (layers %d-%d) failed and %s: the requests of this "
                     "pass end with an error", pl->hops[bad].id_text, pl->hops[bad].layer_begin,
                     pl->hops[bad].layer_end - 1,
                     prc == MESH_ENOTFOUND ? "no other member covers its layers now"
                                           : err_str(prc));
            break;
        }
        int n_tok = 0;
        rc = replay(pl, c, last_new, &bad, &n_tok);
        pl->st.n_replayed += (uint64_t)n_tok;
        if (rc == 0) {
            pl->st.n_recoveries++;
            pthread_mutex_lock(&pl->text_mu);
            log_info("pipeline: stage %s (layers %d-%d) replaced; %d positions replayed in %llu "
                     "ms; now %s", lost.id_text, lost.layer_begin, lost.layer_end - 1, n_tok,
                     (unsigned long long)(mesh_now_ms() - t0), pl->text);
            pthread_mutex_unlock(&pl->text_mu);
            return 0;
        }
        if (bad < 0) break; /* this node failed */
    }
    route_drop(pl, mesh != NULL);
    return rc;
}

/* The forward pass of a batch (pipeline.h; the scheduler's worker). */
static int pl_decode(void *arg, struct model_ctx *c, const struct model_batch *b, float *logits)
{
    struct pipeline *pl = arg;
    if (b->n <= 0 || !b->tokens) return MESH_EINVAL;
    struct mesh *mesh = registry_mesh_hold(pl->reg);
    pthread_mutex_lock(&pl->mu);
    int rc = scratch_init(pl, c);
    if (rc == 0 && b->n > pl->n_batch) rc = MESH_EINVAL;
    if (rc == 0 && pl->n_hops == 0) rc = route_plan(pl, mesh);
    if (rc) {
        if (rc == MESH_ENOTFOUND || rc == MESH_EAGAIN)
            log_warn("pipeline: no route covers the model's %d layers (%s)", pl->n_layer,
                     rc == MESH_EAGAIN ? "its content hash is not computed yet"
                                       : "no member announces the missing layers");
        goto out;
    }
    /* a stage that fails is replaced and the batch runs again */
    for (int n_tries = 0;;) {
        int bad = -1;
        rc = pass_run(pl, c, b, logits, &bad);
        if (rc == 0 || bad < 0) break;
        rc = recover(pl, mesh, c, b, bad, rc, &n_tries);
        if (rc) break;
    }
    if (rc == 0) {
        pl->st.n_passes++;
        pl->st.n_tokens += (uint64_t)b->n;
        hist_record(pl, b);
    }
out:
    pthread_mutex_unlock(&pl->mu);
    registry_mesh_release(pl->reg);
    return rc;
}

static int pl_seq_valid(void *arg, int seq)
{
    struct pipeline *pl = arg;
    pthread_mutex_lock(&pl->mu);
    int v = pl->n_hops && seq >= 0 && seq < pl->n_seq ? pl->valid[seq] : 0;
    pthread_mutex_unlock(&pl->mu);
    return v;
}

static void pl_describe(void *arg, char *buf, size_t cap)
{
    struct pipeline *pl = arg;
    struct pipeline_hop h[1];
    pipeline_route(pl, h, 0); /* plans one when there is none and nobody is passing */
    pthread_mutex_lock(&pl->text_mu);
    snprintf(buf, cap, "%s", pl->text);
    pthread_mutex_unlock(&pl->text_mu);
}

int pipeline_route(struct pipeline *pl, struct pipeline_hop *out, int cap)
{
    if (pthread_mutex_trylock(&pl->mu) != 0) return 0; /* a pass runs: it has a route */
    if (pl->n_hops == 0) {
        pthread_mutex_unlock(&pl->mu);
        struct mesh *mesh = registry_mesh_hold(pl->reg);
        pthread_mutex_lock(&pl->mu);
        if (pl->n_hops == 0) route_plan(pl, mesh);
        registry_mesh_release(pl->reg);
    }
    int n = pl->n_hops < cap ? pl->n_hops : cap;
    if (n > 0) memcpy(out, pl->hops, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&pl->mu);
    return n;
}

int pipeline_new(const struct pipeline_config *cfg, struct pipeline **out)
{
    *out = NULL;
    const struct model_hparams *hp = model_hparams(cfg->m);
    if (cfg->layer_begin < 0 || cfg->layer_begin > cfg->layer_end ||
        cfg->layer_end > hp->n_layer || cfg->n_seq <= 0)
        return MESH_EINVAL;
    struct pipeline *pl = calloc(1, sizeof *pl);
    if (!pl) return MESH_ENOMEM;
    pl->m = cfg->m;
    pl->reg = cfg->reg;
    pl->reg_index = cfg->reg_index;
    pl->layer_begin = cfg->layer_begin;
    pl->layer_end = cfg->layer_end;
    pl->n_layer = hp->n_layer;
    pl->n_embd = hp->n_embd;
    pl->n_seq = cfg->n_seq;
    pl->sess = calloc((size_t)pl->n_seq, sizeof *pl->sess);
    pl->valid = calloc((size_t)pl->n_seq, sizeof *pl->valid);
    pl->target = calloc((size_t)pl->n_seq, sizeof *pl->target);
    if (!pl->sess || !pl->valid || !pl->target) {
        free(pl->sess);
        free(pl->valid);
        free(pl->target);
        free(pl);
        return MESH_ENOMEM;
    }
    atomic_init(&pl->interrupt, false);
    pthread_mutex_init(&pl->mu, NULL);
    pthread_mutex_init(&pl->text_mu, NULL);
    pl->fwd.decode = pl_decode;
    pl->fwd.seq_valid = pl_seq_valid;
    pl->fwd.describe = pl_describe;
    pl->fwd.arg = pl;
    route_text_update(pl);
    *out = pl;
    return 0;
}

const struct sched_forward *pipeline_forward(struct pipeline *pl) { return &pl->fwd; }

void pipeline_interrupt(struct pipeline *pl, bool on)
{
    if (pl) atomic_store(&pl->interrupt, on);
}

void pipeline_detach(struct pipeline *pl)
{
    if (!pl) return;
    pthread_mutex_lock(&pl->mu);
    route_drop(pl, true);
    pthread_mutex_unlock(&pl->mu);
}

void pipeline_stats(struct pipeline *pl, struct pipeline_stats *out)
{
    pthread_mutex_lock(&pl->mu);
    *out = pl->st;
    for (int i = 0; i < pl->n_hops; i++) {
        if (!pl->conns[i]) continue;
        uint64_t s = 0, r = 0;
        stage_conn_bytes(pl->conns[i], &s, &r);
        out->bytes_sent += s;
        out->bytes_recv += r;
    }
    pthread_mutex_unlock(&pl->mu);
}

void pipeline_free(struct pipeline *pl)
{
    if (!pl) return;
    atomic_store(&pl->interrupt, true);
    struct mesh *mesh = registry_mesh_hold(pl->reg);
    pthread_mutex_lock(&pl->mu);
    route_drop(pl, mesh != NULL);
    pthread_mutex_unlock(&pl->mu);
    registry_mesh_release(pl->reg);
    scratch_free(pl);
    free(pl->sess);
    free(pl->valid);
    free(pl->target);
    pthread_mutex_destroy(&pl->text_mu);
    pthread_mutex_destroy(&pl->mu);
    free(pl);
}

/* ---- what a user is shown (meshllm route, the console, refusals) ------------------------- */

int pipeline_missing(const struct peers_stage *cands, int n_cands, int n_layer, int local_begin,
                     int local_end, struct pipeline_gap *out, int cap)
{
    if (n_layer <= 0 || n_layer > PLAN_MAX_LAYERS) return 0;
    bool held[PLAN_MAX_LAYERS] = {false};
    for (int l = local_begin < 0 ? 0 : local_begin; l < local_end && l < n_layer; l++)
        held[l] = true;
    for (int i = 0; i < n_cands; i++)
        for (int l = cands[i].layer_begin < 0 ? 0 : cands[i].layer_begin;
             l < cands[i].layer_end && l < n_layer; l++)
            held[l] = true;
    int n = 0;
    for (int l = 0; l < n_layer && n < cap;) {
        if (held[l]) {
            l++;
            continue;
        }
        int e = l;
        while (e < n_layer && !held[e]) e++;
        out[n].layer_begin = l;
        out[n].layer_end = e;
        n++;
        l = e;
    }
    return n;
}

int pipeline_view(struct pipeline *pl, struct pipeline_view *out)
{
    memset(out, 0, sizeof *out);
    out->n_layer = pl->n_layer;
    out->layer_begin = pl->layer_begin;
    out->layer_end = pl->layer_end;
    struct pipeline_hop none[1];
    pipeline_route(pl, none, 0); /* plans one when there is none and no pass runs */
    pthread_mutex_lock(&pl->text_mu);
    out->n_hops = pl->n_shown;
    memcpy(out->hops, pl->shown, (size_t)pl->n_shown * sizeof *out->hops);
    pthread_mutex_unlock(&pl->text_mu);
    if (out->n_hops > 0) return 0;
    const char *digest = registry_digest(pl->reg, pl->reg_index);
    if (!digest) return MESH_EAGAIN;
    /* no route: which layers nobody announces (failed stages count as holding theirs) */
    struct peers_stage *cands = malloc(PEERS_MAX * sizeof *cands);
    if (!cands) return MESH_ENOTFOUND;
    struct mesh *mesh = registry_mesh_hold(pl->reg);
    int n = mesh ? peers_stages(mesh_peers(mesh), digest, pl->n_layer, NULL, 0, mesh_now_ms(),
                                cands, PEERS_MAX)
                 : 0;
    registry_mesh_release(pl->reg);
    out->n_gaps = pipeline_missing(cands, n, pl->n_layer, pl->layer_begin, pl->layer_end,
                                   out->gaps, PIPELINE_MAX_GAPS);
    free(cands);
    return MESH_ENOTFOUND;
}
