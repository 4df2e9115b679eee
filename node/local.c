/* local.c - requests answered by this node's own models (see local.h).
 *
 * Submit: find the model -> render its chat template (engine/chat.h) -> tokenize -> check the
 * context -> sched_submit_gen. The handle converts the scheduler's chunks into node chunks
 * (logprob token texts from the tokenizer), so callers never see a tokenizer. Embedding
 * requests keep one scheduler request at a time: take collects a finished vector and submits
 * the next input, and the handle ends with every vector. The messages (404/413/429/503)
 * are the API's own words (docs/API.md).
 */
#include "node/local.h"

#include "core/err.h"
#include "engine/chat.h"
#include "engine/model.h"
#include "engine/tok.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCAL_MAX_PROMPT_BYTES (16u << 20) /* twice the API's body limit */

struct local_req {
    struct node_req base;     /* first: the handle the caller holds */
    struct registry *reg;
    const struct tok *tok;
    struct sched *sched;      /* valid while the registry is pinned */
    struct node_client cl;
    bool is_embed;
    int n_cont;               /* continuation tokens at the end of the prompt */
    pthread_mutex_t mu;       /* guards everything below */
    struct sched_req *sr;     /* the scheduler request in flight, NULL once released */
    bool released;
    /* embeddings: inputs run one after the other */
    char **inputs;
    int n_inputs, emb_i;
    float *vecs;              /* [n_inputs * n_embd] */
    int n_embd;
    int emb_tokens;           /* summed prompt tokens */
    bool emb_done;
    const char *emb_finish;
};

/* ---- prompt ------------------------------------------------------------------------------ */

static int render_prompt(struct registry_entry *e, const struct node_gen_req *r, char **out,
                         enum chat_tmpl *tmpl_out)
{
    *tmpl_out = CHAT_TMPL_UNKNOWN;
    if (r->kind == NODE_KIND_COMPLETION && r->raw) {
        *out = strdup(r->prompt ? r->prompt : "");
        return *out ? 0 : MESH_ENOMEM;
    }
    /* the registry chose the template once per model, as `chat` does */
    *tmpl_out = e->chat.tmpl;
    bool jinja = e->chat.jinja != NULL;
    int n = r->kind == NODE_KIND_CHAT ? r->n_msgs : 2;
    struct chat_msg *msgs = calloc((size_t)n + 2, sizeof *msgs);
    struct chat_msg_tools *mt = calloc((size_t)n + 2, sizeof *mt);
    char *tools_sys = NULL;
    int rc = 0;
    if (!msgs || !mt) {
        rc = MESH_ENOMEM;
        goto out;
    }
    int k = 0;
    if (r->json_mode) /* best effort JSON mode: ask for it in a system message */
        msgs[k++] = (struct chat_msg){"system", "Reply with one valid JSON object and nothing else."};
    if (r->tools_json && !jinja) { /* a template that cannot show tools: Hermes' wording */
        static const char pre[] = "You may call functions to help with the request. The "
                                  "functions, as JSON schemas:\n<tools>\n";
        static const char post[] = "\n</tools>\nTo call one, reply with only\n<tool_call>\n"
                                   "{\"name\": <function name>, \"arguments\": <arguments "
                                   "object>}\n</tool_call>";
        size_t len = sizeof pre + strlen(r->tools_json) + sizeof post;
        if (!(tools_sys = malloc(len))) {
            rc = MESH_ENOMEM;
            goto out;
        }
        snprintf(tools_sys, len, "%s%s%s", pre, r->tools_json, post);
        msgs[k++] = (struct chat_msg){"system", tools_sys};
    }
    if (r->kind == NODE_KIND_CHAT) {
        for (int i = 0; i < r->n_msgs; i++, k++) {
            bool tool = !strcmp(r->msgs[i].role, "tool");
            /* the C renderers know no role "tool": a result reads as the user's turn */
            msgs[k] = (struct chat_msg){tool && !jinja ? "user" : r->msgs[i].role,
                                        r->msgs[i].content};
            mt[k] = (struct chat_msg_tools){r->msgs[i].tool_calls_json, r->msgs[i].tool_call_id,
                                            r->msgs[i].name};
        }
    } else {
        if (r->system) msgs[k++] = (struct chat_msg){"system", r->system};
        msgs[k++] = (struct chat_msg){"user", r->prompt ? r->prompt : ""};
    }
    rc = chat_setup_render_tools(&e->chat, msgs, mt, (size_t)k, jinja ? r->tools_json : NULL,
                                 true, out);
out:
    free(tools_sys);
    free(mt);
    free(msgs);
    return rc;
}

/* Tokenizes text into *ids (malloc'd, extra spare entries at the end) and *n. */
static int tokenize(const struct tok *t, const char *text, int spare, int32_t **ids, int *n)
{
    size_t len = strlen(text);
    if (len > LOCAL_MAX_PROMPT_BYTES) return MESH_ERANGE;
    int cap = (int)len + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = malloc(((size_t)cap + (size_t)spare) * sizeof *buf);
        if (!buf) return MESH_ENOMEM;
        int need = 0;
        int rc = tok_encode(t, text, len, true, true, buf, cap, &need);
        if (rc == 0) {
            *ids = buf;
            *n = need;
            return 0;
        }
        free(buf);
        if (rc != MESH_ERANGE || need <= cap) return rc;
        cap = need;
    }
    return MESH_ERANGE;
}

static void fill_params(const struct node_gen_req *r, enum chat_tmpl tmpl,
                        struct sched_gen_params *p)
{
    sched_gen_params_default(p);
    p->sp.temp = r->temperature;
    p->sp.top_p = r->top_p;
    p->sp.top_k = r->top_k;
    p->sp.min_p = r->min_p;
    p->sp.repeat_penalty = r->repeat_penalty;
    p->sp.presence_penalty = r->presence_penalty;
    p->sp.frequency_penalty = r->frequency_penalty;
    p->sp.penalty_last_n = 64;
    p->sp.seed = r->has_seed ? r->seed : SAMPLER_SEED_RANDOM;
    p->max_tokens = r->max_tokens;
    for (int i = 0; i < r->n_stop && p->n_stop < SCHED_MAX_STOP; i++) p->stop[p->n_stop++] = r->stop[i];
    if (tmpl != CHAT_TMPL_UNKNOWN) {
        const char *const *ts = chat_tmpl_stops(tmpl);
        for (int i = 0; ts && ts[i] && p->n_stop < SCHED_MAX_STOP; i++) p->stop[p->n_stop++] = ts[i];
    }
    p->n_logprobs = r->n_logprobs > NODE_MAX_TOP_LOGPROBS ? NODE_MAX_TOP_LOGPROBS : r->n_logprobs;
    p->strip_leading_space = r->strip_leading_space;
    p->grammar = r->grammar;
    p->n_cont = r->n_cont > 0 && r->cont_ids ? r->n_cont : 0;
}

/* The scheduler's refusal as the API says it; returns rc. */
static int submit_err(int rc, int n_prompt, int n_ctx, int max_tokens, struct node_error *err)
{
    int max = max_tokens > 0 ? max_tokens : 0;
    if (rc == MESH_EFULL) {
        node_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                       "the server is busy (request queue full); retry shortly");
        err->retry_after_s = 1;
    } else if (rc == MESH_ERANGE) {
        node_error_set(err, 413, "invalid_request_error", "context_length_exceeded", "messages",
                       "This model's maximum context length is %d tokens. However, you "
                       "requested %d tokens (%d in the prompt, %d for the completion).",
                       n_ctx, n_prompt + max, n_prompt, max);
    } else if (rc == MESH_ECLOSED) {
        node_error_set(err, 503, "server_error", "shutting_down", NULL,
                       "the server is shutting down");
    } else {
        node_error_set(err, 500, "server_error", NULL, NULL, "could not start: %s", err_str(rc));
    }
    return rc;
}

static int find_model(struct registry *reg, const char *name, struct registry_entry **e,
                      struct node_error *err)
{
    enum registry_state st;
    *e = registry_find(reg, name ? name : "", &st);
    if (!*e) {
        node_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                       "The model '%.200s' does not exist on this node.", name ? name : "");
        return MESH_ENOTFOUND;
    }
    if (st == REGISTRY_LOADING) {
        node_error_set(err, 503, "server_error", "model_loading", "model",
                       "The model '%.200s' is still loading; retry shortly.", name);
        return MESH_EAGAIN;
    }
    if (st == REGISTRY_FAILED) {
        node_error_set(err, 503, "server_error", "model_unavailable", "model",
                       "The model '%.200s' failed to load: %.200s", name, (*e)->err);
        return MESH_EAGAIN;
    }
    return 0;
}

/* ---- the handle --------------------------------------------------------------------------- */

/* Scheduler logprobs -> node logprobs with each token's text. */
static struct node_lp *lps_convert(const struct tok *t, const struct sched_lp *in, int n)
{
    struct node_lp *o = calloc((size_t)n, sizeof *o);
    if (!o) return NULL;
    for (int i = 0; i < n; i++) {
        o[i].id = in[i].id;
        int len = tok_piece(t, in[i].id, false, o[i].tok.text, NODE_PIECE_CAP);
        o[i].tok.len = len > 0 ? len : 0;
        o[i].tok.logprob = in[i].logprob;
        o[i].n_top = in[i].n_top;
        for (int k = 0; k < in[i].n_top; k++) {
            len = tok_piece(t, in[i].top_id[k], false, o[i].top[k].text, NODE_PIECE_CAP);
            o[i].top[k].len = len > 0 ? len : 0;
            o[i].top[k].logprob = in[i].top_lp[k];
        }
    }
    return o;
}

static void fail_engine(struct node_chunk *out, const char *what)
{
    out->fail = NODE_FAIL_ENGINE;
    node_error_set(&out->err, 500, "server_error", NULL, NULL, "%s", what);
}

static int gen_take(struct local_req *lr, struct node_chunk *out)
{
    struct sched_chunk ch;
    int rc = sched_req_take(lr->sr, &ch);
    if (rc) return rc;
    out->text = ch.text; /* the buffers move over */
    out->len = ch.len;
    out->cuts = ch.cuts;
    out->n_cuts = ch.n_cuts;
    out->ids = ch.ids;
    out->n_ids = ch.n_ids;
    ch.text = NULL;
    ch.cuts = NULL;
    ch.ids = NULL;
    if (ch.n_lps > 0) {
        out->lps = lps_convert(lr->tok, ch.lps, ch.n_lps);
        if (!out->lps) rc = MESH_ENOMEM;
        else out->n_lps = ch.n_lps;
    }
    out->done = ch.done;
    out->finish_reason = ch.finish_reason;
    out->n_prompt = ch.n_prompt - lr->n_cont; /* the client's prompt, without its continuation */
    out->n_gen = ch.n_gen;
    out->n_cached = ch.n_cached;
    if (ch.done && ch.finish_reason && !strcmp(ch.finish_reason, "error"))
        fail_engine(out, "generation failed");
    sched_chunk_free(&ch);
    return rc;
}

/* Submits embedding input lr->emb_i (lr->mu held, registry pinned). */
static int embed_submit(struct local_req *lr, struct node_error *err)
{
    int32_t *ids = NULL;
    int n = 0;
    int rc = tokenize(lr->tok, lr->inputs[lr->emb_i], 0, &ids, &n);
    if (rc == 0) {
        lr->emb_tokens += n;
        rc = sched_submit_embed(lr->sched, ids, n, lr->cl.notify, lr->cl.arg, &lr->sr);
    }
    free(ids);
    if (rc) return submit_err(rc, n, sched_n_ctx(lr->sched), 0, err);
    return 0;
}

/* Ends an embedding request early with finish (lr->mu held). */
static void embed_end(struct local_req *lr, const char *finish)
{
    lr->emb_done = true;
    lr->emb_finish = finish;
}

/* Collects a finished input's vector and submits the next (lr->mu held). The finished
 * scheduler request goes to *done_sr: the caller releases it after unlocking mu, since a
 * release may wait for a notify in progress. */
static void embed_advance(struct local_req *lr, struct sched_req **done_sr)
{
    struct sched_chunk ch;
    sched_req_take(lr->sr, &ch);
    if (!ch.done) return;
    bool ok = ch.embd && ch.n_embd > 0 && (!lr->n_embd || ch.n_embd == lr->n_embd);
    if (ok && !lr->vecs) {
        lr->n_embd = ch.n_embd;
        lr->vecs = malloc((size_t)lr->n_inputs * (size_t)ch.n_embd * sizeof *lr->vecs);
        ok = lr->vecs != NULL;
    }
    if (ok)
        memcpy(lr->vecs + (size_t)lr->emb_i * (size_t)lr->n_embd, ch.embd,
               (size_t)lr->n_embd * sizeof *lr->vecs);
    const char *finish = ch.finish_reason;
    sched_chunk_free(&ch);
    *done_sr = lr->sr;
    lr->sr = NULL;
    if (!ok) {
        embed_end(lr, finish && !strcmp(finish, "cancelled") ? "cancelled" : "error");
        return;
    }
    if (++lr->emb_i == lr->n_inputs) {
        embed_end(lr, "stop");
        return;
    }
    struct node_error err;
    if (!registry_pin(lr->reg)) {
        embed_end(lr, "cancelled");
        return;
    }
    if (embed_submit(lr, &err)) embed_end(lr, "error");
    registry_unpin(lr->reg);
}

static int embed_take(struct local_req *lr, struct node_chunk *out, struct sched_req **done_sr)
{
    if (!lr->emb_done && lr->sr) embed_advance(lr, done_sr);
    out->n_prompt = lr->emb_tokens;
    if (!lr->emb_done) return 0;
    out->done = true;
    out->finish_reason = lr->emb_finish;
    if (!strcmp(lr->emb_finish, "stop")) {
        out->embd = lr->vecs; /* handed over once */
        out->n_embd = lr->n_embd;
        out->n_vecs = lr->n_inputs;
        lr->vecs = NULL;
    } else if (!strcmp(lr->emb_finish, "error")) {
        fail_engine(out, "embedding failed");
    }
    return 0;
}

static int local_take(struct node_req *r, struct node_chunk *out)
{
    struct local_req *lr = (struct local_req *)r;
    struct sched_req *done_sr = NULL;
    pthread_mutex_lock(&lr->mu);
    int rc = 0;
    if (lr->released)
        ; /* a nested take racing release: nothing more comes */
    else if (lr->is_embed)
        rc = embed_take(lr, out, &done_sr);
    else
        rc = gen_take(lr, out);
    pthread_mutex_unlock(&lr->mu);
    /* may run inside that request's own notify: sched_req_release allows it */
    sched_req_release(done_sr);
    return rc;
}

static void local_cancel(struct node_req *r)
{
    struct local_req *lr = (struct local_req *)r;
    pthread_mutex_lock(&lr->mu);
    sched_req_cancel(lr->sr);
    pthread_mutex_unlock(&lr->mu);
}

static void local_free(struct local_req *lr)
{
    for (int i = 0; lr->inputs && i < lr->n_inputs; i++) free(lr->inputs[i]);
    free(lr->inputs);
    free(lr->vecs);
    pthread_mutex_destroy(&lr->mu);
    free(lr);
}

static void local_release(struct node_req *r)
{
    struct local_req *lr = (struct local_req *)r;
    pthread_mutex_lock(&lr->mu);
    struct sched_req *sr = lr->sr;
    lr->sr = NULL;
    lr->released = true;
    pthread_mutex_unlock(&lr->mu);
    /* outside mu: a notify in progress may take (and so lock mu) before it returns */
    sched_req_release(sr);
    local_free(lr);
}

static void local_ran_on(struct node_req *r, char *buf, size_t cap)
{
    struct local_req *lr = (struct local_req *)r;
    /* a split model names its stages (node/pipeline.c) */
    if (lr->sched && registry_pin(lr->reg)) {
        sched_describe(lr->sched, buf, cap);
        registry_unpin(lr->reg);
        return;
    }
    snprintf(buf, cap, "local");
}

static const struct node_req_ops local_ops = {
    .take = local_take, .cancel = local_cancel, .release = local_release, .ran_on = local_ran_on};

/* ---- submit ------------------------------------------------------------------------------ */

static struct local_req *local_new(struct registry *reg, struct registry_entry *e,
                                   const struct node_client *cl)
{
    struct local_req *lr = calloc(1, sizeof *lr);
    if (!lr) return NULL;
    lr->base.ops = &local_ops;
    lr->reg = reg;
    lr->tok = model_tok(e->model);
    lr->sched = e->sched;
    if (cl) lr->cl = *cl;
    pthread_mutex_init(&lr->mu, NULL);
    return lr;
}

static int embed_start(struct local_req *lr, const struct node_gen_req *req,
                       struct node_error *err)
{
    if (req->n_inputs <= 0 || !req->inputs) {
        node_error_set(err, 400, "invalid_request_error", NULL, "input", "no input to embed");
        return MESH_EINVAL;
    }
    lr->is_embed = true;
    lr->inputs = calloc((size_t)req->n_inputs, sizeof *lr->inputs);
    if (!lr->inputs) goto nomem;
    lr->n_inputs = req->n_inputs;
    for (int i = 0; i < req->n_inputs; i++)
        if (!(lr->inputs[i] = strdup(req->inputs[i] ? req->inputs[i] : ""))) goto nomem;
    pthread_mutex_lock(&lr->mu);
    int rc = embed_submit(lr, err);
    pthread_mutex_unlock(&lr->mu);
    return rc;
nomem:
    node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    return MESH_ENOMEM;
}

static int gen_start(struct local_req *lr, struct registry_entry *e,
                     const struct node_gen_req *req, struct node_error *err)
{
    char *prompt = NULL;
    int32_t *ids = NULL;
    int n = 0, rc;
    enum chat_tmpl tmpl;
    int n_cont = req->n_cont > 0 && req->cont_ids ? req->n_cont : 0;
    if ((rc = render_prompt(e, req, &prompt, &tmpl))) {
        if (rc == MESH_EINVAL)
            node_error_set(err, 400, "invalid_request_error", NULL, "messages",
                           "the model's chat template does not accept these roles");
        else
            node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        return rc;
    }
    rc = tokenize(lr->tok, prompt, n_cont, &ids, &n);
    free(prompt);
    if (rc) {
        free(ids);
        node_error_set(err, 413, "invalid_request_error", "context_length_exceeded", "messages",
                       "the prompt could not be tokenized: %s", err_str(rc));
        return MESH_ERANGE;
    }
    /* a continuation's tokens follow the prompt: the model sees what it generated so far */
    if (n_cont) memcpy(ids + n, req->cont_ids, (size_t)n_cont * sizeof *ids);
    n += n_cont;
    lr->n_cont = n_cont;
    int n_ctx = sched_n_ctx(lr->sched);
    int max = req->max_tokens;
    if (n >= n_ctx || (max > 0 && req->max_tokens_must_fit && (long long)n - n_cont + max > n_ctx)) {
        free(ids);
        return submit_err(MESH_ERANGE, n, n_ctx, max, err);
    }
    struct sched_gen_params p;
    fill_params(req, tmpl, &p);
    p.still_wanted = lr->cl.still_wanted;
    pthread_mutex_lock(&lr->mu);
    rc = sched_submit_gen(lr->sched, ids, n, &p, lr->cl.notify, lr->cl.arg, &lr->sr);
    pthread_mutex_unlock(&lr->mu);
    free(ids);
    if (rc) return submit_err(rc, n, n_ctx, max, err);
    return 0;
}

int node_local_submit(struct registry *reg, const struct node_gen_req *req,
                      const struct node_client *cl, struct node_req **out,
                      struct node_error *err)
{
    *out = NULL;
    memset(err, 0, sizeof *err);
    struct registry_entry *e;
    if (req->grammar) { /* checked here too: a peer's request has not passed our API */
        char gerr[256] = "";
        int grc = node_grammar_check(req->grammar, strlen(req->grammar), gerr, sizeof gerr);
        if (grc == MESH_EINVAL)
            return node_error_set(err, 400, "invalid_request_error", NULL, "grammar", "%s", gerr);
        if (grc) return node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    int rc = find_model(reg, req->model, &e, err);
    if (rc) return rc;
    if (!registry_pin(reg))
        return submit_err(MESH_ECLOSED, 0, 0, 0, err);
    struct local_req *lr = NULL;
    if (!e->sched) {
        rc = submit_err(MESH_ECLOSED, 0, 0, 0, err);
        goto out;
    }
    if (!(lr = local_new(reg, e, cl))) {
        rc = MESH_ENOMEM;
        node_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    rc = req->kind == NODE_KIND_EMBEDDING ? embed_start(lr, req, err) : gen_start(lr, e, req, err);
out:
    registry_unpin(reg);
    if (rc) {
        if (lr) local_free(lr);
        return rc;
    }
    *out = &lr->base;
    return 0;
}

int node_local_info(struct registry *reg, const char *model, struct node_local_info *out)
{
    memset(out, 0, sizeof *out);
    enum registry_state st;
    struct registry_entry *e = registry_find(reg, model, &st);
    if (!e) return MESH_ENOTFOUND;
    if (st != REGISTRY_READY || !registry_pin(reg)) return 0;
    if (e->sched) {
        struct sched_stats ss;
        sched_stats(e->sched, &ss);
        const struct model_hparams *hp = model_hparams(e->model);
        out->is_ready = true;
        out->n_slots = ss.n_slots;
        out->n_active = ss.n_active;
        out->n_queued = ss.n_queued;
        out->queue_cap = ss.queue_cap;
        out->n_ctx = ss.n_ctx;
        out->gen_tps = ss.gen_tps;
        out->n_requests = ss.n_requests;
        out->n_cancelled = ss.n_cancelled;
        out->n_prompt_tokens = ss.n_prompt_tokens;
        out->n_cached_tokens = ss.n_cached_tokens;
        out->n_gen_tokens = ss.n_gen_tokens;
        out->n_spec_drafted = ss.n_spec_drafted;
        out->n_spec_accepted = ss.n_spec_accepted;
        out->busy_s = ss.busy_s;
        snprintf(out->arch, sizeof out->arch, "%s", hp->arch_name);
        out->n_layer = hp->n_layer;
        out->n_embd = hp->n_embd;
    }
    registry_unpin(reg);
    return 0;
}
