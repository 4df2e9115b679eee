/* sched.c - continuous batching scheduler (see sched.h).
 *
 * Worker loop: admit queued requests into free slots (choosing the slot whose cached tokens
 * share the longest prefix with the prompt), build one batch with one token per generating
 * slot and prompt chunks for prefilling slots, run model_decode once, then sample for every
 * slot whose logits came back, through the engine's one per-token step (engine/gen.h gen_step:
 * sampler, detokenizer, stop matcher, logprobs). Locks: s->mu guards the queue, the slot table's request
 * pointers and the stats; each request's mu guards its output buffer and notify fields.
 * Order: never take s->mu while holding a request's mu.
 */
#include "node/sched.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/gen.h"
#include "engine/grammar.h"
#include "engine/model.h"
#include "engine/tok.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum req_kind { REQ_GEN = 1, REQ_EMBED = 2 };
enum slot_state { SLOT_FREE = 0, SLOT_PREFILL, SLOT_GEN };

struct sched_req {
    /* immutable after submit */
    enum req_kind kind;
    int32_t *prompt;
    int n_prompt;
    struct sched_gen_params gp; /* stop strings point into stop_buf copies */
    char *stop_copy[SCHED_MAX_STOP];
    char *grammar_copy;
    uint64_t seq_no;            /* submission order (set under sched mu at submit) */
    atomic_bool canceled;
    struct sched_req *next;     /* queue link, guarded by sched mu */

    pthread_mutex_t mu;         /* guards everything below */
    pthread_cond_t cv;
    char *out;
    size_t out_len, out_cap;
    size_t *cuts;               /* end offset in out of each emitted piece */
    int n_cuts, cuts_cap;
    struct sched_lp *lps;
    int n_lps, lps_cap;
    int32_t *ids;               /* generated token ids not taken yet */
    int n_ids, ids_cap;
    float *embd;
    int n_embd;
    bool done;
    const char *finish;
    int n_gen, n_cached;
    sched_notify_fn fn;
    void *arg;
    int n_notifying;
    pthread_t notifier;         /* the thread inside fn while n_notifying > 0 (the worker) */
    int refs;                   /* client + scheduler */
};

struct slot {
    struct sched_req *req;      /* NULL when free (written under s->mu) */
    enum slot_state state;
    int32_t *cache;             /* [n_ctx] tokens whose K/V is cached at positions 0.. */
    int n_cache;
    int32_t next;               /* GEN: sampled token to decode next */
    int n_gen;
    int n_fed;                  /* tokens put in the current batch */
    int logit_row;              /* row of this slot's logits in the current step, or -1 */
    int32_t *draft;             /* [n_draft_max] tokens proposed after next in this step */
    int n_draft;
    uint64_t last_used;
    struct sampler *smp;
    struct gen_seq gs;          /* the per-token step state (detokenizer, stop matcher) */
};

_Static_assert(SCHED_MAX_TOP_LOGPROBS == GEN_MAX_TOP_LOGPROBS, "sched_lp holds a gen_lp");

struct sched {
    const struct model *m;
    struct model_ctx *ctx;
    const struct sched_forward *fwd; /* a split model's pass, or NULL */
    const struct tok *tok;
    struct grammar_vocab *gvocab; /* token pieces for grammars: built by the worker at the
                                     first constrained request, then read-only */
    int n_slots, n_ctx, n_batch, n_vocab, n_embd, queue_cap;
    struct slot *slots;
    /* step scratch, sized at creation */
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_want;
    float *logits;              /* [n_rows][n_vocab]: one row per slot, 1 + n_draft_max with spec */
    int n_rows;
    enum spec_mode spec;
    int n_draft_max, n_draft_min;
    struct spec_draft *draft;   /* SPEC_DRAFT: the draft model, one sequence per slot */
    float *x;                   /* [n_batch][n_embd] for embeddings */
    double *acc;                /* [n_embd] */
    pthread_t thread;
    bool started;

    pthread_mutex_t mu;         /* guards fields below */
    pthread_cond_t cv;
    bool stop;
    struct sched_req *q_head, *q_tail;
    uint64_t n_submitted;       /* guarded by mu: the next request's seq_no */
    int n_queued, n_active;
    uint64_t use_clock;
    struct sched_stats st;
    double win_t0;
    uint64_t win_tokens;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sched_params_default(struct sched_params *p)
{
    memset(p, 0, sizeof *p);
    p->n_slots = 8;
    p->n_batch = 512;
    p->queue_cap = 64;
    p->n_draft_max = SPEC_DRAFT_MAX_DEFAULT;
    p->n_draft_min = 1;
}

void sched_gen_params_default(struct sched_gen_params *p)
{
    memset(p, 0, sizeof *p);
    sampler_params_default(&p->sp);
    p->n_logprobs = -1;
}

int sched_n_ctx(const struct sched *s) { return s->n_ctx; }

int sched_kv_describe(const struct sched *s, char *buf, size_t cap)
{
    return model_ctx_kv_describe(s->ctx, buf, cap);
}

void sched_describe(const struct sched *s, char *buf, size_t cap)
{
    if (s->fwd && s->fwd->describe) s->fwd->describe(s->fwd->arg, buf, cap);
    else snprintf(buf, cap, "local");
}

/* ---- requests --------------------------------------------------------------------------- */

static void req_unref(struct sched_req *r)
{
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0) return;
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->prompt);
    for (int i = 0; i < SCHED_MAX_STOP; i++) free(r->stop_copy[i]);
    free(r->grammar_copy);
    free(r->out);
    free(r->cuts);
    free(r->lps);
    free(r->ids);
    free(r->embd);
    free(r);
}

/* Calls the notify callback outside r->mu, keeping release() from returning meanwhile. */
static void req_notify(struct sched_req *r)
{
    pthread_mutex_lock(&r->mu);
    sched_notify_fn fn = r->fn;
    void *arg = r->arg;
    if (fn) {
        r->n_notifying++;
        r->notifier = pthread_self();
    }
    pthread_mutex_unlock(&r->mu);
    if (!fn) return;
    fn(arg);
    pthread_mutex_lock(&r->mu);
    r->n_notifying--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* gp.still_wanted(arg) under req_notify's protocol (never after sched_req_release):
 * false when the client said it is gone or has released the request. */
static bool req_still_wanted(struct sched_req *r)
{
    if (r->kind != REQ_GEN || !r->gp.still_wanted) return true;
    pthread_mutex_lock(&r->mu);
    sched_notify_fn fn = r->fn;
    if (fn) {
        r->n_notifying++;
        r->notifier = pthread_self();
    }
    pthread_mutex_unlock(&r->mu);
    if (!fn) return !atomic_load(&r->canceled); /* released, or no notify to ask with */
    bool want = r->gp.still_wanted(r->arg);
    pthread_mutex_lock(&r->mu);
    r->n_notifying--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return want;
}

/* Grows an array of n used elements of size sz to hold one more; false on out of memory. */
static bool grow(void **p, int n, int *cap, size_t sz)
{
    if (n < *cap) return true;
    int nc = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, (size_t)nc * sz);
    if (!q) return false;
    *p = q;
    *cap = nc;
    return true;
}

/* Appends text, a generated token id (id < 0: none, a flush) and its logprob entry to the
 * request's output (worker thread). */
static void req_emit(struct sched_req *r, const char *text, size_t len, int32_t id,
                     const struct sched_lp *lp)
{
    pthread_mutex_lock(&r->mu);
    if (id >= 0 && grow((void **)&r->ids, r->n_ids, &r->ids_cap, sizeof *r->ids))
        r->ids[r->n_ids++] = id;
    if (len && r->out_len + len + 1 > r->out_cap) {
        size_t cap = (r->out_len + len + 1) * 2;
        char *p = realloc(r->out, cap);
        if (p) {
            r->out = p;
            r->out_cap = cap;
        }
    }
    if (len && r->n_cuts == r->cuts_cap) {
        int cap = r->cuts_cap ? r->cuts_cap * 2 : 16;
        size_t *p = realloc(r->cuts, (size_t)cap * sizeof *p);
        if (p) {
            r->cuts = p;
            r->cuts_cap = cap;
        }
    }
    if (len && r->out_len + len + 1 <= r->out_cap && r->n_cuts < r->cuts_cap) {
        memcpy(r->out + r->out_len, text, len);
        r->out_len += len;
        r->out[r->out_len] = 0;
        r->cuts[r->n_cuts++] = r->out_len;
    }
    if (lp) {
        if (r->n_lps == r->lps_cap) {
            int cap = r->lps_cap ? r->lps_cap * 2 : 16;
            struct sched_lp *p = realloc(r->lps, (size_t)cap * sizeof *p);
            if (p) {
                r->lps = p;
                r->lps_cap = cap;
            }
        }
        if (r->n_lps < r->lps_cap) r->lps[r->n_lps++] = *lp;
    }
    pthread_mutex_unlock(&r->mu);
}

static void req_finish(struct sched_req *r, const char *reason)
{
    pthread_mutex_lock(&r->mu);
    r->done = true;
    r->finish = reason;
    pthread_mutex_unlock(&r->mu);
    req_notify(r);
}

static int submit(struct sched *s, struct sched_req *r, struct sched_req **out)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->stop)
        rc = MESH_ECLOSED;
    else if (s->n_queued >= s->queue_cap + (s->n_slots - s->n_active)) {
        /* queue_cap counts requests waiting beyond the free slots */
        rc = MESH_EFULL;
        s->st.n_rejected++;
    }
    if (rc == 0) {
        r->seq_no = s->n_submitted++;
        if (s->q_tail)
            s->q_tail->next = r;
        else
            s->q_head = r;
        s->q_tail = r;
        s->n_queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        r->refs = 1;
        req_unref(r);
        return rc;
    }
    *out = r;
    return 0;
}

static struct sched_req *req_new(enum req_kind kind, const int32_t *toks, int n,
                                 sched_notify_fn fn, void *arg)
{
    struct sched_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->prompt = malloc((size_t)n * sizeof *r->prompt);
    if (!r->prompt) {
        free(r);
        return NULL;
    }
    memcpy(r->prompt, toks, (size_t)n * sizeof *r->prompt);
    r->n_prompt = n;
    r->kind = kind;
    r->fn = fn;
    r->arg = arg;
    r->refs = 2;
    atomic_init(&r->canceled, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

int sched_submit_gen(struct sched *s, const int32_t *prompt, int n_prompt,
                     const struct sched_gen_params *gp, sched_notify_fn fn, void *arg,
                     struct sched_req **out)
{
    *out = NULL;
    if (n_prompt <= 0 || gp->n_stop < 0 || gp->n_stop > SCHED_MAX_STOP ||
        gp->n_logprobs > SCHED_MAX_TOP_LOGPROBS || gp->n_cont < 0 || gp->n_cont >= n_prompt)
        return MESH_EINVAL;
    if (n_prompt >= s->n_ctx) return MESH_ERANGE;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= s->n_vocab) return MESH_EINVAL;
    struct sched_req *r = req_new(REQ_GEN, prompt, n_prompt, fn, arg);
    if (!r) return MESH_ENOMEM;
    r->gp = *gp;
    for (int i = 0; i < gp->n_stop; i++) {
        r->stop_copy[i] = strdup(gp->stop[i] ? gp->stop[i] : "");
        if (!r->stop_copy[i]) {
            r->refs = 1;
            req_unref(r);
            return MESH_ENOMEM;
        }
        r->gp.stop[i] = r->stop_copy[i];
    }
    if (gp->grammar) {
        r->gp.grammar = r->grammar_copy = strdup(gp->grammar);
        if (!r->grammar_copy) {
            r->refs = 1;
            req_unref(r);
            return MESH_ENOMEM;
        }
    }
    return submit(s, r, out);
}

int sched_submit_embed(struct sched *s, const int32_t *tokens, int n_tokens, sched_notify_fn fn,
                       void *arg, struct sched_req **out)
{
    *out = NULL;
    if (n_tokens <= 0) return MESH_EINVAL;
    if (n_tokens > s->n_ctx) return MESH_ERANGE;
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || tokens[i] >= s->n_vocab) return MESH_EINVAL;
    struct sched_req *r = req_new(REQ_EMBED, tokens, n_tokens, fn, arg);
    if (!r) return MESH_ENOMEM;
    return submit(s, r, out);
}

int sched_req_take(struct sched_req *r, struct sched_chunk *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&r->mu);
    if (r->out_len) {
        out->text = r->out; /* hand the buffer over */
        out->len = r->out_len;
        r->out = NULL;
        r->out_len = r->out_cap = 0;
        out->cuts = r->cuts;
        out->n_cuts = r->n_cuts;
        r->cuts = NULL;
        r->n_cuts = r->cuts_cap = 0;
    }
    if (r->n_ids) {
        out->ids = r->ids;
        out->n_ids = r->n_ids;
        r->ids = NULL;
        r->n_ids = r->ids_cap = 0;
    }
    if (r->n_lps) {
        out->lps = r->lps;
        out->n_lps = r->n_lps;
        r->lps = NULL;
        r->n_lps = r->lps_cap = 0;
    }
    if (r->done && r->embd) {
        out->embd = r->embd;
        out->n_embd = r->n_embd;
        r->embd = NULL;
    }
    out->done = r->done;
    out->finish_reason = r->finish;
    out->n_prompt = r->n_prompt;
    out->n_gen = r->n_gen;
    out->n_cached = r->n_cached;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

void sched_chunk_free(struct sched_chunk *c)
{
    if (!c) return;
    free(c->text);
    free(c->cuts);
    free(c->lps);
    free(c->ids);
    free(c->embd);
    memset(c, 0, sizeof *c);
}

void sched_req_cancel(struct sched_req *r)
{
    if (r) atomic_store(&r->canceled, true);
}

void sched_req_release(struct sched_req *r)
{
    if (!r) return;
    atomic_store(&r->canceled, true);
    pthread_mutex_lock(&r->mu);
    r->fn = NULL;
    /* Wait for a notify in progress to return, unless it is the caller itself (a client
     * releasing r from inside its own notify): only one thread ever notifies, so then no
     * other call is in flight, and the scheduler's reference keeps r alive until it ends. */
    while (r->n_notifying > 0 && !pthread_equal(r->notifier, pthread_self()))
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    req_unref(r);
}

/* ---- slots -------------------------------------------------------------------------------- */

static void slot_free_req(struct sched *s, struct slot *sl, const char *reason)
{
    struct sched_req *r = sl->req;
    gen_seq_free(&sl->gs);
    sampler_free(sl->smp);
    sl->smp = NULL;
    sl->state = SLOT_FREE;
    pthread_mutex_lock(&s->mu);
    sl->req = NULL;
    s->n_active--;
    if (atomic_load(&r->canceled)) s->st.n_cancelled++;
    pthread_mutex_unlock(&s->mu);
    req_finish(r, reason);
    req_unref(r);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Picks the free slot for r: longest cached common prefix, else least recently used. */
static int slot_pick(struct sched *s, const struct sched_req *r)
{
    int best = -1, best_common = -1;
    uint64_t best_used = UINT64_MAX;
    for (int i = 0; i < s->n_slots; i++) {
        const struct slot *sl = &s->slots[i];
        if (sl->req) continue;
        int c = r->kind == REQ_GEN ? common_prefix(sl->cache, sl->n_cache, r->prompt, r->n_prompt) : 0;
        if (c > best_common || (c == best_common && sl->last_used < best_used)) {
            best = i;
            best_common = c;
            best_used = sl->last_used;
        }
    }
    return best;
}

static int embed_run(struct sched *s, int seq, struct sched_req *r)
{
    struct slot *sl = &s->slots[seq];
    if (s->fwd) return MESH_EUNSUPPORTED; /* a split model: embeddings are not piped */
    model_kv_seq_truncate(s->ctx, seq, 0);
    sl->n_cache = 0;
    memset(s->acc, 0, (size_t)s->n_embd * sizeof *s->acc);
    int rc = 0;
    for (int off = 0; off < r->n_prompt && rc == 0; off += s->n_batch) {
        int k = r->n_prompt - off < s->n_batch ? r->n_prompt - off : s->n_batch;
        for (int i = 0; i < k; i++) {
            s->b_pos[i] = off + i;
            s->b_seq[i] = seq;
        }
        struct model_batch b = {.n = k, .tokens = r->prompt + off, .pos = s->b_pos, .seq = s->b_seq};
        rc = model_embed(s->ctx, r->prompt + off, k, s->x);
        if (rc == 0) rc = model_layers(s->ctx, &b, s->x);
        for (int i = 0; rc == 0 && i < k; i++)
            for (int j = 0; j < s->n_embd; j++) s->acc[j] += s->x[(size_t)i * s->n_embd + j];
    }
    model_kv_seq_truncate(s->ctx, seq, 0);
    if (rc) return rc;
    float *v = malloc((size_t)s->n_embd * sizeof *v);
    if (!v) return MESH_ENOMEM;
    double norm = 0;
    for (int j = 0; j < s->n_embd; j++) norm += s->acc[j] * s->acc[j];
    norm = sqrt(norm);
    for (int j = 0; j < s->n_embd; j++) v[j] = (float)(norm > 0 ? s->acc[j] / norm : 0);
    pthread_mutex_lock(&r->mu);
    r->embd = v;
    r->n_embd = s->n_embd;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void slot_end(struct sched *s, struct slot *sl, const char *reason);

/* Puts r into free slot i (worker thread). Embeddings run to completion here. */
static void slot_start(struct sched *s, int i, struct sched_req *r)
{
    struct slot *sl = &s->slots[i];
    sl->last_used = ++s->use_clock;
    if (r->kind == REQ_EMBED) {
        int rc = embed_run(s, i, r);
        pthread_mutex_lock(&s->mu);
        s->st.n_prompt_tokens += (uint64_t)r->n_prompt;
        sl->req = NULL;
        s->n_active--;
        pthread_mutex_unlock(&s->mu);
        if (rc) log_warn("sched: embedding failed: %s", err_str(rc));
        req_finish(r, rc ? "error" : "stop");
        req_unref(r);
        return;
    }
    /* Keep the shared prefix, but always recompute at least the last prompt token so its
     * logits come out of this step. */
    int keep = common_prefix(sl->cache, sl->n_cache, r->prompt, r->n_prompt);
    if (keep >= r->n_prompt) keep = r->n_prompt - 1;
    if (s->fwd && s->fwd->seq_valid) {
        int valid = s->fwd->seq_valid(s->fwd->arg, i); /* what the pipeline still holds */
        if (keep > valid) keep = valid;
    }
    model_kv_seq_truncate(s->ctx, i, keep);
    sl->n_cache = keep;
    sl->state = SLOT_PREFILL;
    int n_cont = r->gp.n_cont, n_fresh = r->n_prompt - n_cont;
    struct gen_seq_opts so = {.stops = r->gp.stop, .n_stops = r->gp.n_stop,
                              .strip_leading_space = r->gp.strip_leading_space,
                              .n_logprobs = r->gp.n_logprobs, .grammar = r->gp.grammar};
    int rc = 0;
    if (r->gp.grammar && !s->gvocab) rc = grammar_vocab_new(s->tok, &s->gvocab);
    so.gvocab = s->gvocab;
    if (rc == 0) rc = sampler_new(&r->gp.sp, s->n_vocab, &sl->smp);
    if (rc == 0) {
        char gerr[256] = "";
        rc = gen_seq_init_err(&sl->gs, s->tok, sl->smp, &so, gerr, sizeof gerr);
        if (rc && gerr[0]) log_warn("sched: %s", gerr);
    }
    if (rc == 0)
        for (int k = 0; k < n_fresh; k++) sampler_accept(sl->smp, r->prompt[k]);
    /* A continuation's tokens were generated (and shown) elsewhere: replay them through the
     * step state so the detokenizer, stop matcher and penalties stand where they would. */
    int end = 0;
    if (rc == 0) rc = gen_seq_replay(&sl->gs, r->prompt + n_fresh, n_cont, &end);
    sl->n_gen = n_cont;
    pthread_mutex_lock(&r->mu);
    r->n_cached = keep;
    r->n_gen = n_cont;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&s->mu);
    s->st.n_cached_tokens += (uint64_t)keep;
    pthread_mutex_unlock(&s->mu);
    if (rc)
        slot_free_req(s, sl, "error");
    else if (end == 2)
        slot_free_req(s, sl, "stop");
    else if (end == 1)
        slot_end(s, sl, "stop");
    else if (r->gp.max_tokens > 0 && n_cont >= r->gp.max_tokens)
        slot_end(s, sl, "length");
}

/* Moves queued requests into free slots. Returns false when the worker should exit. */
static bool admit(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    for (;;) {
        bool have_free = s->n_active < s->n_slots;
        if (s->stop) break;
        if (s->q_head && have_free) {
            struct sched_req *r = s->q_head;
            s->q_head = r->next;
            if (!s->q_head) s->q_tail = NULL;
            s->n_queued--;
            if (!atomic_load(&r->canceled)) {
                /* a client that left while queued is noticed here at the latest */
                pthread_mutex_unlock(&s->mu);
                if (!req_still_wanted(r)) atomic_store(&r->canceled, true);
                pthread_mutex_lock(&s->mu);
            }
            if (atomic_load(&r->canceled)) {
                s->st.n_cancelled++;
                pthread_mutex_unlock(&s->mu);
                req_finish(r, "cancelled");
                req_unref(r);
                pthread_mutex_lock(&s->mu);
                continue;
            }
            int i = slot_pick(s, r);
            s->slots[i].req = r;
            s->n_active++;
            s->st.n_requests++;
            pthread_mutex_unlock(&s->mu);
            slot_start(s, i, r);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (s->n_active > 0) break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    bool go = !s->stop;
    pthread_mutex_unlock(&s->mu);
    return go;
}

/* ---- sampling and text ------------------------------------------------------------------- */

static int emit_tail(void *user, const char *text, int len)
{
    req_emit(user, text, (size_t)len, -1, NULL);
    return 0;
}

/* End of the text: releases what the detokenizer and the stop matcher still hold and
 * finishes the slot with reason ("stop" if the tail completed a stop string). */
static void slot_end(struct sched *s, struct slot *sl, const char *reason)
{
    if (gen_seq_finish(&sl->gs, emit_tail, sl->req) > 0) reason = "stop";
    slot_free_req(s, sl, reason);
}

/* Samples the next token of slot sl from its logits row (engine/gen.h: the step shared with
 * `run` and `chat`); emits text, id and logprobs; may finish the slot. Returns true when
 * the slot goes on generating (its next token is sl->next). */
static bool slot_sample(struct sched *s, struct slot *sl, const float *row)
{
    struct sched_req *r = sl->req;
    const struct sched_gen_params *gp = &r->gp;
    struct gen_tok tk;
    if (gen_step(&sl->gs, row, &tk) < 0 || tk.id >= s->n_vocab) {
        slot_free_req(s, sl, "error");
        return false;
    }
    if (tk.is_eog) {
        slot_end(s, sl, "stop");
        return false;
    }
    struct sched_lp lp;
    if (tk.has_lp) {
        memset(&lp, 0, sizeof lp);
        lp.id = tk.lp.id;
        lp.logprob = tk.lp.logprob;
        lp.n_top = tk.lp.n_top;
        memcpy(lp.top_id, tk.lp.top_id, (size_t)lp.n_top * sizeof *lp.top_id);
        memcpy(lp.top_lp, tk.lp.top_lp, (size_t)lp.n_top * sizeof *lp.top_lp);
    }
    sl->n_gen++;
    pthread_mutex_lock(&r->mu);
    r->n_gen = sl->n_gen;
    pthread_mutex_unlock(&r->mu);
    req_emit(r, tk.text, tk.len, tk.id, tk.has_lp ? &lp : NULL);
    pthread_mutex_lock(&s->mu);
    s->st.n_gen_tokens++;
    s->win_tokens++;
    pthread_mutex_unlock(&s->mu);
    if (tk.is_stopped) {
        slot_free_req(s, sl, "stop");
        return false;
    }
    bool at_max = gp->max_tokens > 0 && sl->n_gen >= gp->max_tokens;
    bool ctx_full = sl->n_cache >= s->n_ctx;
    if (at_max || ctx_full) {
        slot_end(s, sl, "length");
        return false;
    }
    sl->next = tk.id;
    sl->state = SLOT_GEN;
    req_notify(r);
    return true;
}

/* Verification of a speculative step (sched_params.spec): the batch fed sl->next at
 * position base and the n_draft proposed tokens after it, with logits at every position.
 * Row i holds the distribution after the first i proposed tokens; the per-token step runs
 * on it exactly as plain decoding would (same penalties history, same draws of the RNG),
 * and the proposal stands while the step picks the proposed token. That is the rejection
 * rule for a point-mass proposal: accept x with probability p(x), else a draw from p
 * without x (spec.h). The cache then holds base + 1 + accepted positions; the rest is
 * rolled back here (a stage rewinds at the next pass, which starts at an earlier position). */
static void slot_verify(struct sched *s, int seq, const float *rows)
{
    struct slot *sl = &s->slots[seq];
    int base = sl->n_cache, k = sl->n_draft, n_acc = 0;
    sl->cache[base] = sl->next;
    memcpy(sl->cache + base + 1, sl->draft, (size_t)k * sizeof *sl->cache);
    for (int i = 0; i <= k; i++) {
        sl->n_cache = base + 1 + i; /* what plain decoding would have cached at this token */
        if (!slot_sample(s, sl, rows + (size_t)i * s->n_vocab)) break;
        if (i == k || sl->next != sl->draft[i]) break;
        n_acc++;
    }
    if (model_kv_seq_len(s->ctx, seq) > sl->n_cache) model_kv_seq_truncate(s->ctx, seq, sl->n_cache);
    pthread_mutex_lock(&s->mu);
    s->st.n_spec_drafted += (uint64_t)k;
    s->st.n_spec_accepted += (uint64_t)n_acc;
    pthread_mutex_unlock(&s->mu);
}

/* Proposes tokens to follow slot sl's next token (at most n_max), into sl->draft. */
static int slot_draft(struct sched *s, int seq, int n_max)
{
    struct slot *sl = &s->slots[seq];
    if (n_max < s->n_draft_min || n_max <= 0) return 0;
    sl->cache[sl->n_cache] = sl->next; /* the history: cached tokens, then next */
    int n_hist = sl->n_cache + 1, n = 0;
    if (s->spec == SPEC_NGRAM) {
        n = spec_ngram_draft(sl->cache, n_hist, n_max, sl->draft);
    } else if (s->spec == SPEC_DRAFT) {
        n = spec_draft_propose(s->draft, seq, sl->cache, n_hist, n_max, sl->draft);
        if (n < 0) {
            log_warn("sched: the draft model failed: %s", err_str(n));
            n = 0;
        }
    }
    return n >= s->n_draft_min ? n : 0;
}


/* ---- the step ---------------------------------------------------------------------------- */

/* True when r holds SCHED_PAUSE_TOKENS or more generated tokens its client has not taken
 * (a streaming client that does not read): its slot then sits out the steps until the
 * client takes them, so what waits for a slow reader stays bounded (back-pressure). */
static bool req_paused(struct sched_req *r)
{
    pthread_mutex_lock(&r->mu);
    bool paused = r->n_ids >= SCHED_PAUSE_TOKENS;
    pthread_mutex_unlock(&r->mu);
    return paused;
}

static void step(struct sched *s)
{
    int n = 0, n_want = 0, n_paused = 0;
    /* Cancelled requests leave first. */
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        sl->n_fed = 0;
        sl->logit_row = -1;
        if (sl->req && atomic_load(&sl->req->canceled)) slot_free_req(s, sl, "cancelled");
    }
    /* One token per generating slot. */
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->req || sl->state != SLOT_GEN || n >= s->n_batch) continue;
        if (req_paused(sl->req)) {
            n_paused++;
            continue;
        }
        s->b_tok[n] = sl->next;
        s->b_pos[n] = sl->n_cache;
        s->b_seq[n] = i;
        s->b_want[n] = true;
        sl->logit_row = n_want++;
        sl->n_fed = 1;
        n++;
        sl->n_draft = 0;
        if (s->spec == SPEC_OFF) continue;
        /* Speculation: proposed tokens after next, each wanting logits. No more than the
         * context, max_tokens (one token comes from the last row anyway), the batch and
         * the logits rows leave room for. */
        int k = s->n_draft_max, max = sl->req->gp.max_tokens;
        if (k > s->n_ctx - sl->n_cache - 1) k = s->n_ctx - sl->n_cache - 1;
        if (max > 0 && k > max - sl->n_gen - 1) k = max - sl->n_gen - 1;
        if (k > s->n_batch - n) k = s->n_batch - n;
        if (k > s->n_rows - n_want) k = s->n_rows - n_want;
        k = slot_draft(s, i, k);
        for (int j = 0; j < k; j++) {
            s->b_tok[n] = sl->draft[j];
            s->b_pos[n] = sl->n_cache + 1 + j;
            s->b_seq[n] = i;
            s->b_want[n] = true;
            n++;
        }
        sl->n_draft = k;
        sl->n_fed += k;
        n_want += k;
    }
    /* Prompt chunks with the remaining budget: the whole batch for a prompt alone, else
     * SCHED_PREFILL_CHUNK tokens a step, to the oldest prefilling request first. */
    int n_prompt_tokens = 0, n_prefill = 0;
    for (int i = 0; i < s->n_slots; i++)
        n_prefill += s->slots[i].req && s->slots[i].state == SLOT_PREFILL;
    int limit = n > 0 || n_prefill > 1 ? n + SCHED_PREFILL_CHUNK : s->n_batch;
    if (limit > s->n_batch) limit = s->n_batch;
    int order[256]; /* prefilling slots, oldest request first */
    int n_order = 0;
    for (int i = 0; i < s->n_slots && n_order < 256; i++)
        if (s->slots[i].req && s->slots[i].state == SLOT_PREFILL) order[n_order++] = i;
    for (int a = 1; a < n_order; a++) /* insertion sort by submission order */
        for (int b = a; b > 0 && s->slots[order[b]].req->seq_no < s->slots[order[b - 1]].req->seq_no; b--) {
            int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int o = 0; o < n_order && n < limit; o++) {
        int i = order[o];
        struct slot *sl = &s->slots[i];
        if (n_want >= s->n_rows) break; /* its last token's logits would have no row */
        struct sched_req *r = sl->req;
        int left = r->n_prompt - sl->n_cache;
        int k = left < limit - n ? left : limit - n;
        for (int j = 0; j < k; j++) {
            s->b_tok[n] = r->prompt[sl->n_cache + j];
            s->b_pos[n] = sl->n_cache + j;
            s->b_seq[n] = i;
            s->b_want[n] = false;
            n++;
        }
        if (k == left) {
            s->b_want[n - 1] = true;
            sl->logit_row = n_want++;
        }
        sl->n_fed = k;
        n_prompt_tokens += k;
    }
    if (n == 0) {
        if (n_paused) { /* only slow readers: look again soon (a take or a cancel) */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += SCHED_PAUSE_POLL_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&s->mu);
            s->st.n_paused_waits++;
            if (!s->stop && !s->q_head) pthread_cond_timedwait(&s->cv, &s->mu, &until);
            pthread_mutex_unlock(&s->mu);
        }
        return;
    }
    struct model_batch b = {.n = n, .tokens = s->b_tok, .pos = s->b_pos, .seq = s->b_seq,
                            .want_logits = s->b_want};
    double t0 = now_s();
    int rc = s->fwd ? s->fwd->decode(s->fwd->arg, s->ctx, &b, s->logits)
                    : model_decode(s->ctx, &b, s->logits);
    double t1 = now_s();
    pthread_mutex_lock(&s->mu);
    s->st.busy_s += t1 - t0;
    s->st.n_prompt_tokens += (uint64_t)n_prompt_tokens;
    if (t1 - s->win_t0 >= 1.0) {
        s->st.gen_tps = s->win_tokens / (t1 - s->win_t0);
        s->win_t0 = t1;
        s->win_tokens = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        log_warn("sched: decode of %d tokens failed: %s", n, err_str(rc));
        for (int i = 0; i < s->n_slots; i++) {
            struct slot *sl = &s->slots[i];
            if (!sl->req || !sl->n_fed) continue;
            model_kv_seq_truncate(s->ctx, i, 0);
            sl->n_cache = 0;
            slot_free_req(s, sl, "error");
        }
        return;
    }
    /* The cache now holds the fed tokens; then sample where logits came back. */
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->req || !sl->n_fed) continue;
        if (sl->state == SLOT_GEN && sl->n_draft > 0) {
            slot_verify(s, i, s->logits + (size_t)sl->logit_row * s->n_vocab);
            continue;
        }
        if (sl->state == SLOT_GEN)
            sl->cache[sl->n_cache] = sl->next;
        else
            memcpy(sl->cache + sl->n_cache, sl->req->prompt + sl->n_cache,
                   (size_t)sl->n_fed * sizeof *sl->cache);
        sl->n_cache += sl->n_fed;
        if (sl->logit_row >= 0) slot_sample(s, sl, s->logits + (size_t)sl->logit_row * s->n_vocab);
    }
}

/* MESHLLM_SCHED_STEP_DELAY_MS: a pause after every step, so tests can act in the middle of
 * a stream (kill the serving peer) that the tiny test models would otherwise finish in a
 * millisecond. 0 or unset: none. Never for production use. */
static long step_delay_ms(void)
{
    const char *v = getenv("MESHLLM_SCHED_STEP_DELAY_MS");
    long ms = v ? strtol(v, NULL, 10) : 0;
    return ms > 0 && ms <= 1000 ? ms : 0;
}

static void *worker_main(void *arg)
{
    struct sched *s = arg;
    long delay = step_delay_ms();
    while (admit(s)) {
        step(s);
        if (delay) {
            struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

void sched_free(struct sched *s)
{
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; s->slots && i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->req) slot_end(s, sl, "cancelled");
        free(sl->cache);
        free(sl->draft);
    }
    while (s->q_head) {
        struct sched_req *r = s->q_head;
        s->q_head = r->next;
        req_finish(r, "cancelled");
        req_unref(r);
    }
    spec_draft_free(s->draft);
    grammar_vocab_free(s->gvocab);
    model_ctx_free(s->ctx);
    free(s->slots);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_want);
    free(s->logits);
    free(s->x);
    free(s->acc);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int sched_new(const struct model *m, const struct sched_params *p, struct sched **out,
              char *err, size_t err_cap)
{
    *out = NULL;
    if (p->n_slots <= 0 || p->n_slots > 256 || p->n_batch <= 0 || p->queue_cap < 0)
        return err_set(err, err_cap, MESH_EINVAL, "scheduler: bad parameters");
    struct sched *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, err_cap, MESH_ENOMEM, "scheduler: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->m = m;
    s->tok = model_tok(m);
    const struct model_hparams *hp = model_hparams(m);
    s->n_vocab = hp->n_vocab;
    s->n_embd = hp->n_embd;
    s->n_slots = p->n_slots;
    s->n_batch = p->n_batch;
    s->queue_cap = p->queue_cap;
    int rc;
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
    s->fwd = p->fwd;
    if ((p->layer_begin || p->layer_end) && !p->fwd) {
        rc = err_set(err, err_cap, MESH_EINVAL, "scheduler: a layer range needs a pipeline");
        goto fail;
    }
    rc = model_ctx_new(m, &cp, &s->ctx, err, err_cap);
    if (rc) goto fail;
    s->n_ctx = model_ctx_n_ctx(s->ctx);
    s->spec = p->spec;
    s->n_draft_max = p->n_draft_max;
    s->n_draft_min = p->n_draft_min > 0 ? p->n_draft_min : 1;
    if (s->spec == SPEC_OFF) s->n_draft_max = 0;
    if (s->spec != SPEC_OFF && (s->n_draft_max <= 0 || s->n_draft_max > SPEC_DRAFT_MAX_CAP)) {
        rc = err_set(err, err_cap, MESH_EINVAL, "scheduler: the draft length must be 1..%d",
                     SPEC_DRAFT_MAX_CAP);
        goto fail;
    }
    if (s->spec == SPEC_DRAFT) {
        if (!p->draft_path) {
            rc = err_set(err, err_cap, MESH_EINVAL, "scheduler: draft decoding needs a draft model");
            goto fail;
        }
        rc = spec_draft_new(m, p->draft_path, s->n_slots, s->n_ctx, p->n_threads, p->k_type,
                            p->v_type, &s->draft, err,
                            err_cap);
        if (rc) goto fail;
    }
    /* a logits row per slot, and one per proposed token (all wanting logits) */
    long rows = (long)s->n_slots * (1 + s->n_draft_max);
    s->n_rows = (int)(rows < s->n_slots + s->n_batch ? rows : s->n_slots + s->n_batch);
    size_t nb = (size_t)s->n_batch;
    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    s->b_tok = malloc(nb * sizeof *s->b_tok);
    s->b_pos = malloc(nb * sizeof *s->b_pos);
    s->b_seq = malloc(nb * sizeof *s->b_seq);
    s->b_want = malloc(nb * sizeof *s->b_want);
    s->logits = malloc((size_t)s->n_rows * (size_t)s->n_vocab * sizeof *s->logits);
    s->x = malloc(nb * (size_t)s->n_embd * sizeof *s->x);
    s->acc = malloc((size_t)s->n_embd * sizeof *s->acc);
    rc = MESH_ENOMEM;
    if (!s->slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_want || !s->logits || !s->x ||
        !s->acc)
        goto fail;
    for (int i = 0; i < s->n_slots; i++) {
        s->slots[i].cache = malloc((size_t)s->n_ctx * sizeof *s->slots[i].cache);
        if (!s->slots[i].cache) goto fail;
        if (s->n_draft_max) {
            s->slots[i].draft = malloc((size_t)s->n_draft_max * sizeof *s->slots[i].draft);
            if (!s->slots[i].draft) goto fail;
        }
    }
    s->st.n_slots = s->n_slots;
    s->st.queue_cap = s->queue_cap;
    s->st.n_ctx = s->n_ctx;
    s->win_t0 = now_s();
    if (pthread_create(&s->thread, NULL, worker_main, s) != 0) {
        rc = MESH_ENOMEM;
        goto fail;
    }
    s->started = true;
    *out = s;
    return 0;
fail:
    if (rc == MESH_ENOMEM) err_set(err, err_cap, rc, "scheduler: out of memory");
    sched_free(s);
    return rc;
}

void sched_stats(struct sched *s, struct sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    out->n_active = s->n_active;
    out->n_queued = s->n_queued;
    /* the window rate decays to 0 when the worker is idle */
    double t = now_s();
    if (t - s->win_t0 > 2.0) out->gen_tps = 0;
    pthread_mutex_unlock(&s->mu);
}
