/* generate.c - one generation request between the HTTP layer and the scheduler.
 *
 * Turns a validated request into prompt tokens (chat template, tokenizer), submits it to the
 * model's scheduler and shapes what comes back as the protocol wants it: OpenAI JSON or SSE
 * chunks ending in "data: [DONE]", Ollama JSON or NDJSON lines, OpenAI embedding lists.
 * Waiting never blocks the MHD thread: the connection is suspended and the scheduler's notify
 * resumes it (api_conn_wake).
 */
#include "api/api_internal.h"

#include "core/err.h"
#include "core/log.h"
#include "engine/chat.h"
#include "engine/model.h"
#include "engine/tok.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct api_gen {
    struct api_conn *c;
    enum api_proto proto;
    struct api_gen_req req;
    struct registry_entry *e;
    const struct tok *tok;
    struct sched *sched;
    struct sched_req *sr;
    char id[48];
    int64_t created;
    double t0;
    /* whole-response accumulation (non-streaming) */
    char *text;
    size_t len, cap;
    struct sched_lp *lps;
    int n_lps, lps_cap;
    int n_prompt, n_gen;
    /* streaming */
    bool sent_first, ended;
    char *sbuf;
    size_t slen, soff, scap;
    /* embeddings: one input at a time */
    int emb_i;
    float **vecs;
    int n_embd;
    int emb_tokens;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void api_gen_cancel(struct api_gen *g)
{
    if (g) sched_req_cancel(g->sr);
}

void api_gen_free(struct api_gen *g)
{
    if (!g) return;
    sched_req_release(g->sr); /* cancels if still running; no notify after this */
    if (g->vecs)
        for (int i = 0; i < g->req.n_inputs; i++) free(g->vecs[i]);
    free(g->vecs);
    api_gen_req_free(&g->req);
    free(g->text);
    free(g->lps);
    free(g->sbuf);
    free(g);
}

static int buf_add(char **b, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*len + n + 1) * 2;
        char *p = realloc(*b, nc);
        if (!p) return MESH_ENOMEM;
        *b = p;
        *cap = nc;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

/* ---- prompt ----------------------------------------------------------------------------- */

static int render_prompt(struct api_gen *g, char **out, enum chat_tmpl *tmpl_out)
{
    struct api_gen_req *r = &g->req;
    *tmpl_out = CHAT_TMPL_UNKNOWN;
    if (r->kind == API_KIND_COMPLETION && (r->raw || g->proto == API_PROTO_OPENAI)) {
        *out = strdup(r->prompt ? r->prompt : "");
        return *out ? 0 : MESH_ENOMEM;
    }
    /* the registry chose the template once per model, as `chat` does */
    *tmpl_out = g->e->chat.tmpl;
    int n = r->kind == API_KIND_CHAT ? r->n_msgs : 2;
    struct chat_msg *msgs = calloc((size_t)n + 1, sizeof *msgs);
    if (!msgs) return MESH_ENOMEM;
    int k = 0;
    if (r->json_mode) /* best effort JSON mode: ask for it in a system message */
        msgs[k++] = (struct chat_msg){"system", "Reply with one valid JSON object and nothing else."};
    if (r->kind == API_KIND_CHAT) {
        for (int i = 0; i < r->n_msgs; i++)
            msgs[k++] = (struct chat_msg){r->msgs[i].role, r->msgs[i].content};
    } else {
        if (r->system) msgs[k++] = (struct chat_msg){"system", r->system};
        msgs[k++] = (struct chat_msg){"user", r->prompt ? r->prompt : ""};
    }
    int rc = chat_setup_render(&g->e->chat, msgs, (size_t)k, true, out);
    free(msgs);
    return rc;
}

static int tokenize(const struct tok *t, const char *text, int32_t **ids, int *n)
{
    size_t len = strlen(text);
    if (len > (size_t)HTTP_MAX_BODY * 2) return MESH_ERANGE;
    int cap = (int)len + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
        int32_t *buf = malloc((size_t)cap * sizeof *buf);
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

static void fill_params(const struct api_gen *g, enum chat_tmpl tmpl, struct sched_gen_params *p)
{
    const struct api_gen_req *r = &g->req;
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
    p->n_logprobs = r->logprobs ? r->top_logprobs : -1;
    /* A chat reply starts fresh: drop SPM's leading space. A completion continues the prompt. */
    p->strip_leading_space = r->kind == API_KIND_CHAT || (r->kind == API_KIND_COMPLETION &&
                                                          g->proto == API_PROTO_OLLAMA && !r->raw);
}

static int submit_err(int rc, int n_prompt, int n_ctx, int max_tokens, struct api_error *err)
{
    if (rc == MESH_EFULL)
        return api_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                             "the server is busy (request queue full); retry shortly");
    if (rc == MESH_ERANGE)
        return api_error_set(err, 413, "invalid_request_error", "context_length_exceeded",
                             "messages",
                             "This model's maximum context length is %d tokens. However, you "
                             "requested %d tokens (%d in the prompt, %d for the completion).",
                             n_ctx, n_prompt + (max_tokens > 0 ? max_tokens : 0), n_prompt,
                             max_tokens > 0 ? max_tokens : 0);
    if (rc == MESH_ECLOSED)
        return api_error_set(err, 503, "server_error", "shutting_down", NULL,
                             "the server is shutting down");
    return api_error_set(err, 500, "server_error", NULL, NULL, "could not start: %s",
                         err_str(rc));
}

/* Submits embedding input i. Caller holds c->mu. */
static int embed_submit(struct api_gen *g, struct api_error *err)
{
    int32_t *ids = NULL;
    int n = 0;
    int rc = tokenize(g->tok, g->req.inputs[g->emb_i], &ids, &n);
    if (rc == 0) {
        g->emb_tokens += n;
        rc = sched_submit_embed(g->sched, ids, n, api_conn_wake, g->c, &g->sr);
    }
    free(ids);
    if (rc) return submit_err(rc, n, sched_n_ctx(g->sched), 0, err);
    return 0;
}

/* ---- streaming -------------------------------------------------------------------------- */

static const char *finish_name(const char *f)
{
    if (!f || !strcmp(f, "cancelled")) return "stop";
    return f;
}

/* Converts scheduler logprobs to API entries; piece texts live in *pool (caller frees). */
static struct api_lp_token *lps_convert(const struct tok *t, const struct sched_lp *in, int n,
                                        char **pool)
{
    *pool = NULL;
    if (n <= 0) return NULL;
    struct api_lp_token *o = calloc((size_t)n, sizeof *o);
    char *p = malloc((size_t)n * (SCHED_MAX_TOP_LOGPROBS + 1) * 64);
    if (!o || !p) {
        free(o);
        free(p);
        return NULL;
    }
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        int len = tok_piece(t, in[i].id, false, p + used, 64);
        o[i].tok = (struct api_lp_entry){p + used, len > 0 ? (size_t)len : 0, in[i].logprob};
        used += 64;
        o[i].n_top = in[i].n_top;
        for (int k = 0; k < in[i].n_top; k++) {
            len = tok_piece(t, in[i].top_id[k], false, p + used, 64);
            o[i].top[k] = (struct api_lp_entry){p + used, len > 0 ? (size_t)len : 0, in[i].top_lp[k]};
            used += 64;
        }
    }
    *pool = p;
    return o;
}

static void out_init(const struct api_gen *g, struct api_gen_out *o)
{
    memset(o, 0, sizeof *o);
    o->id = g->id;
    o->created = g->created;
    o->model = g->e->name;
    o->n_prompt = g->n_prompt;
    o->n_completion = g->n_gen;
}

static int sse_add(struct api_gen *g, char *json)
{
    if (!json) return MESH_ENOMEM;
    int rc = buf_add(&g->sbuf, &g->slen, &g->scap, "data: ", 6);
    if (!rc) rc = buf_add(&g->sbuf, &g->slen, &g->scap, json, strlen(json));
    if (!rc) rc = buf_add(&g->sbuf, &g->slen, &g->scap, "\n\n", 2);
    free(json);
    return rc;
}

static int line_add(struct api_gen *g, char *line)
{
    if (!line) return MESH_ENOMEM;
    int rc = buf_add(&g->sbuf, &g->slen, &g->scap, line, strlen(line));
    free(line);
    return rc;
}

/* Formats a taken chunk into the stream buffer: one event per generated piece (as servers
 * that stream token by token do), logprobs with the last piece. */
static void stream_format(struct api_gen *g, struct sched_chunk *ch)
{
    enum api_kind k = g->req.kind;
    g->n_prompt = ch->n_prompt;
    g->n_gen = ch->n_gen;
    int n_pieces = ch->n_cuts > 0 ? ch->n_cuts : 1;
    size_t off = 0;
    for (int i = 0; i < n_pieces; i++) {
        size_t end = ch->n_cuts > 0 ? ch->cuts[i] : ch->len;
        const char *text = ch->text ? ch->text + off : "";
        size_t len = end - off;
        off = end;
        bool last = i == n_pieces - 1;
        if (g->proto == API_PROTO_OLLAMA) {
            if (len) line_add(g, api_ollama_chunk(k, g->e->name, text, len, false, NULL, 0, 0, 0));
            continue;
        }
        bool has = len > 0 || (last && ch->n_lps > 0) || (!g->sent_first && k == API_KIND_CHAT);
        if (!has) continue;
        struct api_gen_out o;
        out_init(g, &o);
        o.text = text;
        o.len = len;
        char *pool = NULL;
        struct api_lp_token *lps =
            last && g->req.logprobs ? lps_convert(g->tok, ch->lps, ch->n_lps, &pool) : NULL;
        o.lps = lps;
        o.n_lps = lps ? ch->n_lps : 0;
        sse_add(g, api_openai_chunk_json(k, &o, !g->sent_first, false));
        g->sent_first = true;
        free(lps);
        free(pool);
    }
    if (!ch->done) return;
    g->ended = true;
    if (g->proto == API_PROTO_OLLAMA) {
        line_add(g, api_ollama_chunk(k, g->e->name, "", 0, true, finish_name(ch->finish_reason),
                                     ch->n_prompt, ch->n_gen, now_s() - g->t0));
        return;
    }
    if (ch->finish_reason && !strcmp(ch->finish_reason, "error")) {
        struct api_error e;
        api_error_set(&e, 500, "server_error", NULL, NULL, "generation failed");
        sse_add(g, api_error_json(&e));
    } else {
        struct api_gen_out o;
        out_init(g, &o);
        o.text = "";
        o.finish_reason = finish_name(ch->finish_reason);
        sse_add(g, api_openai_chunk_json(k, &o, false, false));
        if (g->req.include_usage) sse_add(g, api_openai_chunk_json(k, &o, false, true));
    }
    buf_add(&g->sbuf, &g->slen, &g->scap, "data: [DONE]\n\n", 14);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct api_conn *c = cls;
    struct api_gen *g = c->gen;
    pthread_mutex_lock(&c->mu);
    for (int round = 0; round < 2; round++) {
        if (g->soff < g->slen) {
            size_t n = g->slen - g->soff < max ? g->slen - g->soff : max;
            memcpy(buf, g->sbuf + g->soff, n);
            g->soff += n;
            pthread_mutex_unlock(&c->mu);
            return (ssize_t)n;
        }
        g->slen = g->soff = 0;
        if (g->ended) {
            pthread_mutex_unlock(&c->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (round == 1) break;
        struct sched_chunk ch;
        sched_req_take(g->sr, &ch);
        stream_format(g, &ch);
        sched_chunk_free(&ch);
    }
    api_conn_suspend_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int stream_start(struct api_conn *c)
{
    struct api_gen *g = c->gen;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, c, NULL);
    if (!r) return MESH_ENOMEM;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            g->proto == API_PROTO_OLLAMA ? "application/x-ndjson"
                                                         : "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    MHD_queue_response(c->mc, 200, r);
    MHD_destroy_response(r);
    c->responded = true;
    atomic_fetch_add(&c->srv->n_http[2], 1);
    return 0;
}

/* ---- start ------------------------------------------------------------------------------ */

static void make_id(struct api_gen *g)
{
    static atomic_uint counter;
    unsigned n = atomic_fetch_add(&counter, 1);
    const char *pre = g->req.kind == API_KIND_CHAT ? "chatcmpl-" : "cmpl-";
    snprintf(g->id, sizeof g->id, "%s%08llx%08x", pre, (unsigned long long)g->created, n);
}

static int find_model(struct http_server *s, const char *name, struct registry_entry **e,
                      struct api_error *err)
{
    enum registry_state st;
    *e = registry_find(s->reg, name, &st);
    if (!*e)
        return api_error_set(err, 404, "invalid_request_error", "model_not_found", "model",
                             "The model '%.200s' does not exist on this node.", name);
    if (st == REGISTRY_LOADING)
        return api_error_set(err, 503, "server_error", "model_loading", "model",
                             "The model '%.200s' is still loading; retry shortly.", name);
    if (st == REGISTRY_FAILED)
        return api_error_set(err, 503, "server_error", "model_unavailable", "model",
                             "The model '%.200s' failed to load: %.200s", name, (*e)->err);
    return 0;
}

static int gen_prepare(struct api_gen *g, struct api_error *err)
{
    struct http_server *s = g->c->srv;
    char *prompt = NULL;
    int32_t *ids = NULL;
    int n = 0, rc;
    enum chat_tmpl tmpl;
    if ((rc = render_prompt(g, &prompt, &tmpl)))
        return rc == MESH_EINVAL
                   ? api_error_set(err, 400, "invalid_request_error", NULL, "messages",
                                   "the model's chat template does not accept these roles")
                   : api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    rc = tokenize(g->tok, prompt, &ids, &n);
    free(prompt);
    if (rc) {
        free(ids);
        return api_error_set(err, 413, "invalid_request_error", "context_length_exceeded",
                             "messages", "the prompt could not be tokenized: %s", err_str(rc));
    }
    int n_ctx = sched_n_ctx(g->sched);
    int max = g->req.max_tokens;
    if (n >= n_ctx || (max > 0 && g->proto == API_PROTO_OPENAI && (long long)n + max > n_ctx)) {
        free(ids);
        return submit_err(MESH_ERANGE, n, n_ctx, max, err);
    }
    g->n_prompt = n;
    struct sched_gen_params p;
    fill_params(g, tmpl, &p);
    p.still_wanted = api_conn_still_wanted;
    pthread_mutex_lock(&g->c->mu);
    rc = sched_submit_gen(g->sched, ids, n, &p, api_conn_wake, g->c, &g->sr);
    free(ids);
    if (rc) {
        pthread_mutex_unlock(&g->c->mu);
        return submit_err(rc, n, n_ctx, max, err);
    }
    atomic_fetch_add(&s->n_gen_req, 1);
    g->c->gen = g;
    if (g->req.stream) {
        pthread_mutex_unlock(&g->c->mu);
        return stream_start(g->c);
    }
    api_conn_suspend_locked(g->c);
    pthread_mutex_unlock(&g->c->mu);
    return 0;
}

int api_gen_start(struct api_conn *c, enum api_proto proto, struct api_gen_req *req,
                  struct api_error *err)
{
    struct http_server *s = c->srv;
    struct api_gen *g = calloc(1, sizeof *g);
    if (!g) {
        api_gen_req_free(req);
        return api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    }
    g->req = *req; /* ownership moves */
    memset(req, 0, sizeof *req);
    g->c = c;
    g->proto = proto;
    g->created = (int64_t)time(NULL);
    g->t0 = now_s();
    make_id(g);
    pthread_rwlock_rdlock(&s->stop_lock);
    int rc;
    if (s->stopping) {
        rc = api_error_set(err, 503, "server_error", "shutting_down", NULL,
                           "the server is shutting down");
        goto out;
    }
    if ((rc = find_model(s, g->req.model, &g->e, err))) goto out;
    g->tok = model_tok(g->e->model);
    g->sched = g->e->sched;
    if (g->req.kind == API_KIND_EMBEDDING) {
        g->vecs = calloc((size_t)g->req.n_inputs, sizeof *g->vecs);
        if (!g->vecs) {
            rc = api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
            goto out;
        }
        pthread_mutex_lock(&c->mu);
        rc = embed_submit(g, err);
        if (rc == 0) {
            c->gen = g;
            api_conn_suspend_locked(c);
        }
        pthread_mutex_unlock(&c->mu);
        goto out;
    }
    rc = gen_prepare(g, err);
out:
    pthread_rwlock_unlock(&s->stop_lock);
    if (rc && c->gen != g) api_gen_free(g);
    return rc;
}

/* ---- non-streaming completion ----------------------------------------------------------- */

static enum MHD_Result reply_embeddings(struct api_conn *c, struct api_gen *g)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    bool b64 = g->req.echo;
    for (int i = 0; i < g->req.n_inputs; i++) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToArray(data, d);
        cJSON_AddStringToObject(d, "object", "embedding");
        cJSON_AddNumberToObject(d, "index", i);
        if (b64) {
            /* little-endian float32 bytes, base64 (what the official clients ask for) */
            static const char tbl[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            size_t nb = (size_t)g->n_embd * 4;
            unsigned char *raw = (unsigned char *)g->vecs[i];
            char *s = malloc((nb + 2) / 3 * 4 + 1);
            size_t j = 0;
            for (size_t k = 0; s && k < nb; k += 3) {
                unsigned v = (unsigned)raw[k] << 16 | (k + 1 < nb ? raw[k + 1] : 0) << 8 |
                             (k + 2 < nb ? raw[k + 2] : 0);
                s[j++] = tbl[(v >> 18) & 63];
                s[j++] = tbl[(v >> 12) & 63];
                s[j++] = k + 1 < nb ? tbl[(v >> 6) & 63] : '=';
                s[j++] = k + 2 < nb ? tbl[v & 63] : '=';
            }
            if (s) {
                s[j] = 0;
                cJSON_AddStringToObject(d, "embedding", s);
            }
            free(s);
        } else {
            cJSON *arr = cJSON_AddArrayToObject(d, "embedding");
            for (int k = 0; arr && k < g->n_embd; k++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(g->vecs[i][k]));
        }
    }
    cJSON_AddStringToObject(root, "model", g->e->name);
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", g->emb_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", g->emb_tokens);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return api_reply_json(c, 200, json);
}

static enum MHD_Result embed_resume(struct api_conn *c, struct api_gen *g)
{
    struct sched_chunk ch;
    pthread_mutex_lock(&c->mu);
    sched_req_take(g->sr, &ch);
    if (!ch.done) {
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return MHD_YES;
    }
    struct api_error err;
    if (!ch.embd) {
        pthread_mutex_unlock(&c->mu);
        sched_chunk_free(&ch);
        api_error_set(&err, 500, "server_error", NULL, NULL, "embedding failed");
        return api_reply_error(c, &err);
    }
    g->vecs[g->emb_i++] = ch.embd;
    g->n_embd = ch.n_embd;
    ch.embd = NULL;
    sched_chunk_free(&ch);
    sched_req_release(g->sr);
    g->sr = NULL;
    if (g->emb_i < g->req.n_inputs) {
        pthread_rwlock_rdlock(&c->srv->stop_lock);
        int rc = c->srv->stopping ? submit_err(MESH_ECLOSED, 0, 0, 0, &err) : embed_submit(g, &err);
        pthread_rwlock_unlock(&c->srv->stop_lock);
        if (rc == 0) api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return rc == 0 ? MHD_YES : api_reply_error(c, &err);
    }
    pthread_mutex_unlock(&c->mu);
    return reply_embeddings(c, g);
}

static enum MHD_Result reply_whole(struct api_conn *c, struct api_gen *g, const char *finish)
{
    if (finish && !strcmp(finish, "error")) {
        struct api_error err;
        api_error_set(&err, 500, "server_error", NULL, NULL, "generation failed");
        return api_reply_error(c, &err);
    }
    if (g->proto == API_PROTO_OLLAMA) {
        char *line = api_ollama_chunk(g->req.kind, g->e->name, g->text ? g->text : "", g->len,
                                      true, finish_name(finish), g->n_prompt, g->n_gen,
                                      now_s() - g->t0);
        return api_reply_json(c, 200, line);
    }
    struct api_gen_out o;
    out_init(g, &o);
    char *full = NULL;
    o.text = g->text ? g->text : "";
    o.len = g->len;
    if (g->req.echo && g->req.kind == API_KIND_COMPLETION) { /* completions echo */
        size_t pl = strlen(g->req.prompt);
        full = malloc(pl + g->len + 1);
        if (full) {
            memcpy(full, g->req.prompt, pl);
            memcpy(full + pl, o.text, g->len);
            full[pl + g->len] = 0;
            o.text = full;
            o.len = pl + g->len;
        }
    }
    o.finish_reason = finish_name(finish);
    char *pool = NULL;
    struct api_lp_token *lps = g->req.logprobs ? lps_convert(g->tok, g->lps, g->n_lps, &pool) : NULL;
    if (g->req.logprobs) {
        static struct api_lp_token none;
        o.lps = lps ? lps : &none;
        o.n_lps = lps ? g->n_lps : 0;
    }
    char *json = api_openai_response_json(g->req.kind, &o);
    free(lps);
    free(pool);
    free(full);
    return api_reply_json(c, 200, json);
}

enum MHD_Result api_gen_resume(struct api_conn *c)
{
    struct api_gen *g = c->gen;
    if (c->responded) return MHD_YES;
    if (g->req.kind == API_KIND_EMBEDDING) return embed_resume(c, g);
    struct sched_chunk ch;
    pthread_mutex_lock(&c->mu);
    sched_req_take(g->sr, &ch);
    if (ch.len) buf_add(&g->text, &g->len, &g->cap, ch.text, ch.len);
    if (ch.n_lps) {
        if (g->n_lps + ch.n_lps > g->lps_cap) {
            int cap = (g->n_lps + ch.n_lps) * 2;
            struct sched_lp *p = realloc(g->lps, (size_t)cap * sizeof *p);
            if (p) {
                g->lps = p;
                g->lps_cap = cap;
            }
        }
        if (g->n_lps + ch.n_lps <= g->lps_cap) {
            memcpy(g->lps + g->n_lps, ch.lps, (size_t)ch.n_lps * sizeof *ch.lps);
            g->n_lps += ch.n_lps;
        }
    }
    g->n_prompt = ch.n_prompt;
    g->n_gen = ch.n_gen;
    bool done = ch.done;
    const char *finish = ch.finish_reason;
    sched_chunk_free(&ch);
    if (!done) {
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&c->mu);
    return reply_whole(c, g, finish);
}
