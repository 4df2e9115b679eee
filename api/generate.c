/* generate.c - one generation request between the HTTP layer and the node.
 *
 * Turns a validated request into a node request (node/req.h), hands it to the router (one
 * call: templates, tokens and scheduling are the node's) and shapes what comes back as the
 * protocol wants it: OpenAI JSON or SSE chunks ending in "data: [DONE]", Ollama JSON or
 * NDJSON lines, OpenAI embedding lists. Waiting never blocks the MHD thread: the connection
 * is suspended and the backend's notify resumes it (api_conn_wake).
 */
#include "api/api_internal.h"

#include "core/err.h"
#include "core/log.h"
#include "node/router.h"

#include "engine/toolcall.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct api_gen {
    struct api_conn *c;
    enum api_proto proto;
    struct api_gen_req req;
    struct node_req *nr;
    char model[API_MODEL_NAME_CAP]; /* the node's name of the model (responses say it) */
    char ran_on[NODE_RAN_ON_CAP];
    char id[48];
    int64_t created;
    double t0;
    /* whole-response accumulation (non-streaming) */
    char *text;
    size_t len, cap;
    struct node_lp *lps;
    int n_lps, lps_cap;
    int n_prompt, n_gen, n_cached;
    /* streaming */
    bool sent_first, ended;
    int resp_seq;       /* Responses API: the events' sequence_number */
    /* tool calls (a chat with tools): the model's syntax; streamed text is held back from
     * where a call may begin (toolcall_stream_safe), g->text keeps the whole turn */
    bool has_tools;
    int tool_syntax;
    size_t sent_len;    /* bytes of g->text already sent as content */
    /* n > 1 (not streamed): choice i+1 is another generation of the same request, a sibling
     * api_gen borrowing the first one's req (its own req stays empty); finish when done */
    struct api_gen *sib;
    const struct api_gen *owner; /* a sibling: the first choice, whose req it uses */
    bool is_done;
    const char *finish;
    double last_read_s; /* when MHD last asked for stream bytes (now_s) */
    bool cut_slow;      /* cancelled: the client stopped reading (api_gen_stream_stalled) */
    char *sbuf;
    size_t slen, soff, scap;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void api_gen_cancel(struct api_gen *g)
{
    for (; g; g = g->sib) node_req_cancel(g->nr);
}

void api_gen_free(struct api_gen *g)
{
    if (!g) return;
    api_gen_free(g->sib);
    node_req_release(g->nr); /* cancels if still running; no notify after this */
    if (!g->owner) api_gen_req_free(&g->req); /* a sibling's req is the owner's, borrowed */
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

/* ---- the node request ------------------------------------------------------------------- */

/* The node request for g->req. Strings are borrowed from g->req (router_submit copies what it
 * keeps); only *msgs is allocated (caller frees). */
static int node_req_from(const struct api_gen *g, struct node_gen_req *n, struct node_msg **msgs)
{
    const struct api_gen_req *r = &g->req;
    node_gen_req_init(n);
    *msgs = NULL;
    n->kind = r->kind == API_KIND_CHAT         ? NODE_KIND_CHAT
              : r->kind == API_KIND_COMPLETION ? NODE_KIND_COMPLETION
                                               : NODE_KIND_EMBEDDING;
    n->model = (char *)r->model;
    if (r->n_msgs > 0) {
        *msgs = calloc((size_t)r->n_msgs, sizeof **msgs);
        if (!*msgs) return MESH_ENOMEM;
        for (int i = 0; i < r->n_msgs; i++)
            (*msgs)[i] = (struct node_msg){r->msgs[i].role, r->msgs[i].content,
                                           r->msgs[i].tool_calls_json, r->msgs[i].tool_call_id,
                                           r->msgs[i].name};
        n->msgs = *msgs;
        n->n_msgs = r->n_msgs;
    }
    n->prompt = r->prompt;
    n->system = r->system;
    /* OpenAI completions continue the prompt verbatim; Ollama's generate templates it */
    n->raw = r->kind == API_KIND_COMPLETION && (r->raw || g->proto == API_PROTO_OPENAI);
    n->json_mode = r->json_mode;
    n->tools_json = r->tools_json;
    n->grammar = r->grammar;
    n->inputs = r->inputs;
    n->n_inputs = r->n_inputs;
    n->temperature = r->temperature;
    n->top_p = r->top_p;
    n->min_p = r->min_p;
    n->repeat_penalty = r->repeat_penalty;
    n->presence_penalty = r->presence_penalty;
    n->frequency_penalty = r->frequency_penalty;
    n->top_k = r->top_k;
    n->has_seed = r->has_seed;
    n->seed = r->seed;
    n->max_tokens = r->max_tokens;
    n->max_tokens_must_fit = g->proto == API_PROTO_OPENAI; /* OpenAI refuses, Ollama truncates */
    for (int i = 0; i < r->n_stop && i < NODE_MAX_STOP; i++) n->stop[n->n_stop++] = r->stop[i];
    n->n_logprobs = r->logprobs ? r->top_logprobs : -1;
    /* A chat reply starts fresh: drop SPM's leading space. A completion continues the prompt. */
    n->strip_leading_space = r->kind == API_KIND_CHAT ||
                             (r->kind == API_KIND_COMPLETION && g->proto == API_PROTO_OLLAMA && !r->raw);
    n->route = r->route; /* DEFAULT: the router takes the node's configured route */
    return 0;
}

static int api_error_from(const struct node_error *ne, struct api_error *err)
{
    api_error_set(err, ne->status ? ne->status : 500, ne->type ? ne->type : "server_error",
                  ne->code, ne->param, "%s", ne->message);
    err->retry_after_s = ne->retry_after_s; /* the router's estimate (429): Retry-After */
    return MESH_EINVAL;
}

/* ---- streaming -------------------------------------------------------------------------- */

static const char *finish_name(const char *f)
{
    if (!f || !strcmp(f, "cancelled")) return "stop";
    return f;
}

/* Node logprobs to API entries (the texts stay in in[]; caller frees the array). */
static struct api_lp_token *lps_convert(const struct node_lp *in, int n)
{
    if (n <= 0) return NULL;
    struct api_lp_token *o = calloc((size_t)n, sizeof *o);
    if (!o) return NULL;
    for (int i = 0; i < n; i++) {
        const struct node_lp_entry *t = &in[i].tok;
        o[i].tok = (struct api_lp_entry){t->text, (size_t)t->len, t->logprob};
        o[i].n_top = in[i].n_top < API_MAX_TOP_LOGPROBS ? in[i].n_top : API_MAX_TOP_LOGPROBS;
        for (int k = 0; k < o[i].n_top; k++) {
            t = &in[i].top[k];
            o[i].top[k] = (struct api_lp_entry){t->text, (size_t)t->len, t->logprob};
        }
    }
    return o;
}

static void out_init(const struct api_gen *g, struct api_gen_out *o)
{
    memset(o, 0, sizeof *o);
    o->id = g->id;
    o->created = g->created;
    o->model = g->model;
    o->n_prompt = g->n_prompt;
    o->n_completion = g->n_gen;
    o->n_cached = g->n_cached;
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

/* The calls in g's whole text (g->has_tools): *res holds them (free with
 * toolcall_result_free), calls[] points into it with ids "call_<id>_<i>" in ids. Returns
 * how many (one at most without parallel_tool_calls). */
#define GEN_MAX_CALLS 16
#define GEN_CALL_ID_CAP 80 /* "call_" + an id (48) + "_" + index */
static int gen_calls(struct api_gen *g, struct toolcall_result *res,
                     struct api_tool_call calls[GEN_MAX_CALLS], char ids[GEN_MAX_CALLS][GEN_CALL_ID_CAP])
{
    if (toolcall_parse((enum toolcall_syntax)g->tool_syntax, g->text ? g->text : "", g->len, res))
        return 0;
    int n = res->n_calls < GEN_MAX_CALLS ? res->n_calls : GEN_MAX_CALLS;
    if (n > 1 && !g->req.parallel_tool_calls) n = 1;
    for (int i = 0; i < n; i++) {
        const char *tail = strchr(g->id, '-');
        snprintf(ids[i], sizeof ids[i], "call_%s_%d", tail ? tail + 1 : g->id, i);
        calls[i] = (struct api_tool_call){ids[i], res->calls[i].name, res->calls[i].arguments};
    }
    return n;
}

/* One streamed chunk of a turn with tools, into g->text: *safe = how far the text may be
 * sent as content (toolcall_stream_safe; at the end all of it, unless it held calls, which
 * are returned: their count, with res/calls/ids filled as gen_calls does). */
static int tools_step(struct api_gen *g, const struct node_chunk *ch, struct toolcall_result *res,
                      struct api_tool_call calls[GEN_MAX_CALLS],
                      char ids[GEN_MAX_CALLS][GEN_CALL_ID_CAP], size_t *safe)
{
    if (ch->len) buf_add(&g->text, &g->len, &g->cap, ch->text, ch->len);
    if (!ch->done) {
        *safe = toolcall_stream_safe((enum toolcall_syntax)g->tool_syntax, g->text ? g->text : "",
                                     g->len, g->sent_len);
        return 0;
    }
    int n_calls = gen_calls(g, res, calls, ids);
    *safe = n_calls ? g->sent_len : g->len; /* no call after all: the rest is content */
    return n_calls;
}

/* A chat with tools, streamed: content up to where a call may begin as it comes; at the end
 * the calls as tool_calls deltas (or the held-back text, when it was no call). */
static void stream_format_tools(struct api_gen *g, struct node_chunk *ch)
{
    enum api_kind k = g->req.kind;
    struct toolcall_result res = {0};
    struct api_tool_call calls[GEN_MAX_CALLS];
    char ids[GEN_MAX_CALLS][GEN_CALL_ID_CAP];
    size_t safe;
    int n_calls = tools_step(g, ch, &res, calls, ids, &safe);
    if (safe > g->sent_len || (!g->sent_first && g->proto == API_PROTO_OPENAI)) {
        if (g->proto == API_PROTO_OLLAMA) {
            line_add(g, api_ollama_chunk(k, g->model, g->text + g->sent_len, safe - g->sent_len,
                                         false, NULL, 0, 0, 0));
        } else {
            struct api_gen_out o;
            out_init(g, &o);
            o.text = g->text ? g->text + g->sent_len : "";
            o.len = safe - g->sent_len;
            sse_add(g, api_openai_chunk_json(k, &o, !g->sent_first, false));
        }
        g->sent_first = true;
        g->sent_len = safe;
    }
    if (n_calls && g->proto == API_PROTO_OLLAMA) {
        line_add(g, api_ollama_calls_chunk(g->model, calls, n_calls));
    } else if (n_calls) {
        for (int i = 0; i < n_calls; i++) { /* one delta per call, as OpenAI streams them */
            struct api_gen_out o;
            out_init(g, &o);
            o.text = "";
            o.calls = &calls[i];
            o.n_calls = 1;
            o.call_index0 = i;
            sse_add(g, api_openai_chunk_json(k, &o, false, false));
        }
    }
    toolcall_result_free(&res);
    if (ch->done && n_calls && g->proto == API_PROTO_OPENAI && ch->finish_reason &&
        strcmp(ch->finish_reason, "error"))
        ch->finish_reason = "tool_calls"; /* static strings only: see finish_name */
}

static void resp_out_init(struct api_gen *g, struct api_resp_out *o, const char *finish)
{
    memset(o, 0, sizeof *o);
    o->id = g->id;
    o->created = g->created;
    o->model = g->model;
    o->text = g->text ? g->text : "";
    o->len = g->len;
    o->n_prompt = g->n_prompt;
    o->n_completion = g->n_gen;
    o->n_cached = g->n_cached;
    o->is_incomplete = finish && !strcmp(finish, "length");
    o->is_failed = finish && !strcmp(finish, "error");
}

static int text_add(struct api_gen *g, char *events)
{
    if (!events) return MESH_ENOMEM;
    int rc = buf_add(&g->sbuf, &g->slen, &g->scap, events, strlen(events));
    free(events);
    return rc;
}

/* The Responses API's events for a chunk (the text is kept whole for the closing events). */
static void stream_format_responses(struct api_gen *g, struct node_chunk *ch)
{
    struct api_resp_out o;
    if (!g->sent_first) {
        resp_out_init(g, &o, NULL);
        text_add(g, api_responses_events(&o, API_RESP_BEGIN, &g->resp_seq));
        g->sent_first = true;
    }
    if (g->has_tools) { /* held back from where a call may begin, as for chat */
        struct toolcall_result res = {0};
        struct api_tool_call calls[GEN_MAX_CALLS];
        char ids[GEN_MAX_CALLS][GEN_CALL_ID_CAP];
        size_t safe;
        int n_calls = tools_step(g, ch, &res, calls, ids, &safe);
        if (safe > g->sent_len) {
            resp_out_init(g, &o, NULL);
            o.text = g->text + g->sent_len;
            o.len = safe - g->sent_len;
            text_add(g, api_responses_events(&o, API_RESP_DELTA, &g->resp_seq));
            g->sent_len = safe;
        }
        if (ch->done) {
            g->ended = true;
            resp_out_init(g, &o, ch->finish_reason);
            o.text = g->text ? g->text : "";
            o.len = g->sent_len; /* the message holds what was sent as text */
            o.calls = calls;
            o.n_calls = n_calls;
            o.has_message = true;
            node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
            o.ran_on = g->ran_on;
            text_add(g, api_responses_events(&o, API_RESP_END, &g->resp_seq));
        }
        toolcall_result_free(&res);
        return;
    }
    int n_pieces = ch->n_cuts > 0 ? ch->n_cuts : 1;
    size_t off = 0;
    for (int i = 0; i < n_pieces; i++) {
        size_t end = ch->n_cuts > 0 ? ch->cuts[i] : ch->len;
        if (end == off) continue;
        resp_out_init(g, &o, NULL);
        o.text = ch->text + off;
        o.len = end - off;
        text_add(g, api_responses_events(&o, API_RESP_DELTA, &g->resp_seq));
        off = end;
    }
    if (ch->len) buf_add(&g->text, &g->len, &g->cap, ch->text, ch->len);
    if (!ch->done) return;
    g->ended = true;
    resp_out_init(g, &o, ch->finish_reason);
    o.has_message = true;
    node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
    o.ran_on = g->ran_on;
    text_add(g, api_responses_events(&o, API_RESP_END, &g->resp_seq));
}

/* Formats a taken chunk into the stream buffer: one event per generated piece (as servers
 * that stream token by token do), logprobs with the last piece. */
static void stream_format(struct api_gen *g, struct node_chunk *ch)
{
    enum api_kind k = g->req.kind;
    g->n_prompt = ch->n_prompt;
    g->n_gen = ch->n_gen;
    g->n_cached = ch->n_cached;
    if (g->proto == API_PROTO_RESPONSES) {
        stream_format_responses(g, ch);
        return;
    }
    if (g->has_tools) {
        stream_format_tools(g, ch);
        if (!ch->done) return;
        goto end;
    }
    int n_pieces = ch->n_cuts > 0 ? ch->n_cuts : 1;
    size_t off = 0;
    for (int i = 0; i < n_pieces; i++) {
        size_t end = ch->n_cuts > 0 ? ch->cuts[i] : ch->len;
        const char *text = ch->text ? ch->text + off : "";
        size_t len = end - off;
        off = end;
        bool last = i == n_pieces - 1;
        if (g->proto == API_PROTO_OLLAMA) {
            if (len) line_add(g, api_ollama_chunk(k, g->model, text, len, false, NULL, 0, 0, 0));
            continue;
        }
        bool has = len > 0 || (last && ch->n_lps > 0) || (!g->sent_first && k == API_KIND_CHAT);
        if (!has) continue;
        struct api_gen_out o;
        out_init(g, &o);
        o.text = text;
        o.len = len;
        struct api_lp_token *lps = last && g->req.logprobs ? lps_convert(ch->lps, ch->n_lps) : NULL;
        o.lps = lps;
        o.n_lps = lps ? ch->n_lps : 0;
        sse_add(g, api_openai_chunk_json(k, &o, !g->sent_first, false));
        g->sent_first = true;
        free(lps);
    }
    if (!ch->done) return;
end:
    g->ended = true;
    if (g->proto == API_PROTO_OLLAMA) {
        line_add(g, api_ollama_chunk(k, g->model, "", 0, true, finish_name(ch->finish_reason),
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
        /* the last chunk says where the request ran (after a failover: every node) */
        node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
        o.ran_on = g->ran_on;
        sse_add(g, api_openai_chunk_json(k, &o, false, false));
        o.ran_on = NULL;
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
    g->last_read_s = now_s();
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
        struct node_chunk ch;
        node_req_take(g->nr, &ch);
        stream_format(g, &ch);
        node_chunk_free(&ch);
    }
    api_conn_suspend_locked(c);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

bool api_gen_stream_stalled(struct api_gen *g, int stall_ms)
{
    if (!g || !g->req.stream || g->req.kind == API_KIND_EMBEDDING || g->ended || g->cut_slow ||
        !g->c->responded || now_s() - g->last_read_s < stall_ms / 1000.0)
        return false;
    g->cut_slow = true;
    node_req_cancel(g->nr); /* frees the slot; the scheduler had paused it (sched.h) */
    return true;
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
    MHD_add_response_header(r, "X-Meshllm-Ran-On", g->ran_on);
    api_cors_headers(c, r);
    g->last_read_s = now_s();
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
    const char *pre = g->proto == API_PROTO_RESPONSES ? "resp_"
                      : g->req.kind == API_KIND_CHAT ? "chatcmpl-" : "cmpl-";
    snprintf(g->id, sizeof g->id, "%s%08llx%08x", pre, (unsigned long long)g->created, n);
}

/* Objects of a forced call's parameters that leave additionalProperties open get false, as
 * OpenAI's strict mode reads them: a small model would otherwise invent keys forever. */
static void close_objects(cJSON *schema, int depth)
{
    if (!cJSON_IsObject(schema) || depth > 32) return;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(schema, "type");
    bool object = cJSON_IsString(type) && !strcmp(type->valuestring, "object");
    if (object && !cJSON_GetObjectItemCaseSensitive(schema, "additionalProperties"))
        cJSON_AddFalseToObject(schema, "additionalProperties");
    for (cJSON *c = schema->child; c; c = c->next) {
        if (cJSON_IsObject(c)) close_objects(c, depth + 1);
        else if (cJSON_IsArray(c))
            for (cJSON *x = c->child; x; x = x->next) close_objects(x, depth + 1);
    }
}

/* tool_choice required or a named function: a grammar that lets the model write nothing but
 * a call, in the syntax it will be parsed with (Llama 3's bare JSON for a Llama 3 template,
 * otherwise Hermes' <tool_call> block), its arguments held to the function's parameters.
 * Sets g->req.grammar; 0, or MESH_EINVAL with *err (400). */
static int tools_force_grammar(struct api_gen *g, struct api_error *err)
{
    struct api_gen_req *r = &g->req;
    if (r->grammar)
        return api_error_set(err, 400, "invalid_request_error", NULL, "tool_choice",
                             "a forced tool_choice cannot be combined with response_format or "
                             "a grammar");
    bool llama3 = g->tool_syntax == TOOLCALL_LLAMA3;
    if (!llama3) g->tool_syntax = TOOLCALL_HERMES; /* what the grammar writes */
    cJSON *tools = cJSON_Parse(r->tools_json);
    cJSON *any = cJSON_CreateArray();
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const char *name = cJSON_GetObjectItemCaseSensitive(fn, "name")->valuestring;
        if (r->tool_choice == API_TOOLS_NAMED && strcmp(name, r->tool_choice_name)) continue;
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        cJSON *call = cJSON_CreateObject();
        cJSON_AddStringToObject(call, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(call, "properties");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(props, "name"), "const", name);
        cJSON *args = params ? cJSON_Duplicate(params, 1) : cJSON_CreateObject();
        if (args && !params) cJSON_AddStringToObject(args, "type", "object");
        close_objects(args, 0);
        cJSON_AddItemToObject(props, llama3 ? "parameters" : "arguments", args);
        cJSON *req = cJSON_AddArrayToObject(call, "required");
        cJSON_AddItemToArray(req, cJSON_CreateString("name"));
        cJSON_AddItemToArray(req, cJSON_CreateString(llama3 ? "parameters" : "arguments"));
        cJSON_AddFalseToObject(call, "additionalProperties");
        cJSON_AddItemToArray(any, call);
    }
    cJSON *schema = cJSON_CreateObject();
    cJSON_AddItemToObject(schema, "anyOf", any);
    char *text = cJSON_PrintUnformatted(schema);
    cJSON_Delete(schema);
    cJSON_Delete(tools);
    char why[256] = "", *gbnf = NULL;
    int rc = text ? node_grammar_from_schema(text, strlen(text), &gbnf, why, sizeof why) : MESH_ENOMEM;
    free(text);
    if (rc == MESH_EINVAL)
        return api_error_set(err, 400, "invalid_request_error", NULL, "tools",
                             "a function's parameters cannot be enforced: %s", why);
    if (rc) return api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    /* the schema's root becomes "call"; the new root wraps it in the syntax's markers */
    char *root = strncmp(gbnf, "root ::=", 8) ? strstr(gbnf, "\nroot ::=") : gbnf;
    if (root && root != gbnf) root++;
    size_t len = strlen(gbnf) + 64;
    char *out = root ? malloc(len) : NULL;
    if (out) {
        size_t pre = (size_t)(root - gbnf);
        snprintf(out, len, "%s%.*scall%s", llama3 ? "root ::= call\n"
                                                  : "root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n",
                 (int)pre, gbnf, root + 4);
    }
    free(gbnf);
    if (!out) return api_error_set(err, 500, "server_error", NULL, NULL, "tool grammar failed");
    r->grammar = out;
    return 0;
}

/* Submits g through the router (c->mu held, so no wake-up is lost before the suspend). */
static int gen_submit(struct api_gen *g, struct api_error *err)
{
    struct http_server *s = g->c->srv;
    /* responses name the model as the node does ("x" for "x:latest") */
    struct router_model m;
    snprintf(g->model, sizeof g->model, "%s", g->req.model);
    if (router_model_get(s->rt, g->req.model, &m) == 0) {
        snprintf(g->model, sizeof g->model, "%s", m.name);
        g->tool_syntax = m.tool_syntax;
    }
    g->has_tools = g->req.tools_json && g->req.kind == API_KIND_CHAT;
    if (g->has_tools && (g->req.tool_choice == API_TOOLS_REQUIRED ||
                         g->req.tool_choice == API_TOOLS_NAMED)) {
        int rc = tools_force_grammar(g, err);
        if (rc) return rc;
    }
    struct node_gen_req nq;
    struct node_msg *msgs = NULL;
    if (node_req_from(g, &nq, &msgs))
        return api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    struct node_client cl = {api_conn_wake, api_conn_still_wanted, g->c};
    struct node_error ne;
    int rc = router_submit(s->rt, &nq, &cl, &g->nr, &ne);
    free(msgs);
    if (rc) return api_error_from(&ne, err);
    node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
    return 0;
}

/* n > 1: choice i as a sibling generation of g's request (a seed given: seed + i, so the
 * choices differ yet repeat). Appended to g's list; c->mu held. */
static int sib_submit(struct api_gen *g, int i, struct api_error *err)
{
    struct api_gen *x = calloc(1, sizeof *x);
    if (!x) return api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    x->c = g->c;
    x->proto = g->proto;
    x->req = g->req; /* borrowed: freed with g */
    x->owner = g;
    x->created = g->created;
    x->t0 = g->t0;
    memcpy(x->id, g->id, sizeof x->id);
    struct api_gen **tail = &g->sib;
    while (*tail) tail = &(*tail)->sib;
    *tail = x; /* freed with g from here on */
    struct node_gen_req nq;
    struct node_msg *msgs = NULL;
    if (node_req_from(x, &nq, &msgs))
        return api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    if (nq.has_seed) nq.seed += (uint64_t)i;
    snprintf(x->model, sizeof x->model, "%s", g->model);
    x->tool_syntax = g->tool_syntax;
    x->has_tools = g->has_tools;
    struct node_client cl = {api_conn_wake, api_conn_still_wanted, g->c};
    struct node_error ne;
    int rc = router_submit(g->c->srv->rt, &nq, &cl, &x->nr, &ne);
    free(msgs);
    return rc ? api_error_from(&ne, err) : 0;
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
    pthread_mutex_lock(&c->mu);
    rc = gen_submit(g, err);
    if (rc) {
        pthread_mutex_unlock(&c->mu);
        goto out;
    }
    for (int i = 1; i < g->req.n_choices && rc == 0; i++) rc = sib_submit(g, i, err);
    if (rc) {
        api_gen_cancel(g);
        pthread_mutex_unlock(&c->mu);
        goto out;
    }
    if (g->req.kind != API_KIND_EMBEDDING) atomic_fetch_add(&s->n_gen_req, 1);
    c->gen = g;
    if (g->req.stream && g->req.kind != API_KIND_EMBEDDING) {
        pthread_mutex_unlock(&c->mu);
        rc = stream_start(c);
        goto out;
    }
    api_conn_suspend_locked(c);
    pthread_mutex_unlock(&c->mu);
out:
    pthread_rwlock_unlock(&s->stop_lock);
    if (rc && c->gen != g) api_gen_free(g);
    return rc;
}

/* ---- non-streaming completion ----------------------------------------------------------- */

/* Little-endian float32 bytes, base64 (what the official clients ask for); malloc'd. */
static char *base64_floats(const float *v, int n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t nb = (size_t)n * 4;
    const unsigned char *raw = (const unsigned char *)v;
    char *s = malloc((nb + 2) / 3 * 4 + 1);
    size_t j = 0;
    for (size_t k = 0; s && k < nb; k += 3) {
        unsigned x = (unsigned)raw[k] << 16 | (k + 1 < nb ? raw[k + 1] : 0) << 8 |
                     (k + 2 < nb ? raw[k + 2] : 0);
        s[j++] = tbl[(x >> 18) & 63];
        s[j++] = tbl[(x >> 12) & 63];
        s[j++] = k + 1 < nb ? tbl[(x >> 6) & 63] : '=';
        s[j++] = k + 2 < nb ? tbl[x & 63] : '=';
    }
    if (s) s[j] = 0;
    return s;
}

static enum MHD_Result reply_embeddings(struct api_conn *c, struct api_gen *g,
                                        const struct node_chunk *ch)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    bool b64 = g->req.echo;
    for (int i = 0; i < ch->n_vecs; i++) {
        const float *v = ch->embd + (size_t)i * (size_t)ch->n_embd;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToArray(data, d);
        cJSON_AddStringToObject(d, "object", "embedding");
        cJSON_AddNumberToObject(d, "index", i);
        if (b64) {
            char *s = base64_floats(v, ch->n_embd);
            if (s) cJSON_AddStringToObject(d, "embedding", s);
            free(s);
        } else {
            cJSON *arr = cJSON_AddArrayToObject(d, "embedding");
            for (int k = 0; arr && k < ch->n_embd; k++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(v[k]));
        }
    }
    cJSON_AddStringToObject(root, "model", g->model);
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", ch->n_prompt);
    cJSON_AddNumberToObject(u, "total_tokens", ch->n_prompt);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return api_reply_json(c, 200, json);
}

static enum MHD_Result embed_resume(struct api_conn *c, struct api_gen *g)
{
    struct node_chunk ch;
    pthread_mutex_lock(&c->mu);
    node_req_take(g->nr, &ch);
    if (!ch.done) {
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        node_chunk_free(&ch);
        return MHD_YES;
    }
    pthread_mutex_unlock(&c->mu);
    enum MHD_Result ret;
    if (ch.embd && ch.n_vecs == g->req.n_inputs && g->proto == API_PROTO_OLLAMA) {
        char *j = api_ollama_embed_json(g->model, g->req.embed_legacy, ch.embd, ch.n_vecs,
                                        ch.n_embd, ch.n_prompt, now_s() - g->t0);
        ret = j ? api_reply_json(c, 200, j) : MHD_NO;
    } else if (ch.embd && ch.n_vecs == g->req.n_inputs) {
        ret = reply_embeddings(c, g, &ch);
    } else {
        struct api_error err;
        if (ch.finish_reason && !strcmp(ch.finish_reason, "cancelled") && c->srv->stopping)
            api_error_set(&err, 503, "server_error", "shutting_down", NULL,
                          "the server is shutting down");
        else
            api_error_set(&err, 500, "server_error", NULL, NULL, "embedding failed");
        ret = api_reply_error(c, &err);
    }
    node_chunk_free(&ch);
    return ret;
}

static enum MHD_Result reply_gen_json(struct api_conn *c, struct api_gen *g, char *json)
{
    node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
    return api_reply_json_ran_on(c, 200, json, g->ran_on);
}

/* The OpenAI response object of g's whole text (chat or completion), malloc'd JSON. */
static char *openai_whole_json(struct api_gen *g, const char *finish)
{
    struct api_gen_out o;
    out_init(g, &o);
    char *full = NULL;
    o.text = g->text ? g->text : "";
    o.len = g->len;
    struct toolcall_result res = {0};
    struct api_tool_call calls[GEN_MAX_CALLS];
    char ids[GEN_MAX_CALLS][GEN_CALL_ID_CAP];
    if (g->has_tools && (o.n_calls = gen_calls(g, &res, calls, ids)) > 0) {
        o.calls = calls;
        o.text = res.content;
        o.len = strlen(res.content);
        finish = "tool_calls";
    }
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
    if (g->nr) node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on); /* every node that served a part */
    o.ran_on = g->ran_on;
    struct api_lp_token *lps = g->req.logprobs ? lps_convert(g->lps, g->n_lps) : NULL;
    if (g->req.logprobs) {
        static struct api_lp_token none;
        o.lps = lps ? lps : &none;
        o.n_lps = lps ? g->n_lps : 0;
    }
    char *json = api_openai_response_json(g->req.kind, &o);
    toolcall_result_free(&res);
    free(lps);
    free(full);
    return json;
}

/* n > 1: the choices of g's siblings (each its own generation) appended to json's, with
 * their index, and their completion tokens added to the usage. Takes json. */
static char *merge_choices(struct api_gen *g, char *json)
{
    cJSON *root = cJSON_Parse(json);
    free(json);
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    int index = 1, n_completion = g->n_gen;
    for (struct api_gen *x = g->sib; root && choices && x; x = x->sib, index++) {
        char *j = openai_whole_json(x, x->finish);
        cJSON *o = j ? cJSON_Parse(j) : NULL;
        free(j);
        cJSON *c = cJSON_DetachItemFromArray(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
        cJSON_Delete(o);
        if (!c) continue;
        cJSON_ReplaceItemInObjectCaseSensitive(c, "index", cJSON_CreateNumber(index));
        cJSON_AddItemToArray(choices, c);
        n_completion += x->n_gen;
    }
    if (usage) {
        cJSON_ReplaceItemInObjectCaseSensitive(usage, "completion_tokens", cJSON_CreateNumber(n_completion));
        cJSON_ReplaceItemInObjectCaseSensitive(usage, "total_tokens",
                                               cJSON_CreateNumber(n_completion + g->n_prompt));
    }
    char *out = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return out;
}

static enum MHD_Result reply_whole(struct api_conn *c, struct api_gen *g, const char *finish)
{
    if (finish && !strcmp(finish, "error")) {
        struct api_error err;
        api_error_set(&err, 500, "server_error", NULL, NULL, "generation failed");
        return api_reply_error(c, &err);
    }
    if (g->proto == API_PROTO_RESPONSES) {
        struct api_resp_out ro;
        resp_out_init(g, &ro, finish);
        struct toolcall_result tr = {0};
        struct api_tool_call tc[GEN_MAX_CALLS];
        char tid[GEN_MAX_CALLS][GEN_CALL_ID_CAP];
        if (g->has_tools && (ro.n_calls = gen_calls(g, &tr, tc, tid)) > 0) {
            ro.calls = tc;
            ro.text = tr.content;
            ro.len = strlen(tr.content);
        }
        ro.has_message = ro.len > 0 || ro.n_calls == 0;
        node_req_ran_on(g->nr, g->ran_on, sizeof g->ran_on);
        ro.ran_on = g->ran_on;
        enum MHD_Result ret = reply_gen_json(c, g, api_responses_json(&ro));
        toolcall_result_free(&tr);
        return ret;
    }
    if (g->proto == API_PROTO_OLLAMA) {
        struct toolcall_result tr = {0};
        struct api_tool_call tc[GEN_MAX_CALLS];
        char tid[GEN_MAX_CALLS][GEN_CALL_ID_CAP];
        int n_tc = g->has_tools ? gen_calls(g, &tr, tc, tid) : 0;
        const char *text = n_tc ? tr.content : g->text ? g->text : "";
        char *line = api_ollama_chunk_calls(g->req.kind, g->model, text, n_tc ? strlen(text) : g->len,
                                            tc, n_tc, true, finish_name(finish), g->n_prompt,
                                            g->n_gen, now_s() - g->t0);
        toolcall_result_free(&tr);
        return reply_gen_json(c, g, line);
    }
    char *json = openai_whole_json(g, finish);
    if (json && g->sib) json = merge_choices(g, json);
    return reply_gen_json(c, g, json);
}

/* Appends a chunk's logprobs to g's (they stay until the whole response is built). */
static void lps_keep(struct api_gen *g, const struct node_chunk *ch)
{
    if (g->n_lps + ch->n_lps > g->lps_cap) {
        int cap = (g->n_lps + ch->n_lps) * 2;
        struct node_lp *p = realloc(g->lps, (size_t)cap * sizeof *p);
        if (!p) return;
        g->lps = p;
        g->lps_cap = cap;
    }
    memcpy(g->lps + g->n_lps, ch->lps, (size_t)ch->n_lps * sizeof *ch->lps);
    g->n_lps += ch->n_lps;
}

/* Takes what g's generation has produced so far into g; true once it is done. */
static bool gen_take_whole(struct api_gen *g)
{
    if (g->is_done) return true;
    struct node_chunk ch;
    node_req_take(g->nr, &ch);
    if (ch.len) buf_add(&g->text, &g->len, &g->cap, ch.text, ch.len);
    if (ch.n_lps) lps_keep(g, &ch);
    g->n_prompt = ch.n_prompt;
    g->n_gen = ch.n_gen;
    g->n_cached = ch.n_cached;
    g->is_done = ch.done;
    g->finish = ch.finish_reason;
    node_chunk_free(&ch);
    return g->is_done;
}

enum MHD_Result api_gen_resume(struct api_conn *c)
{
    struct api_gen *g = c->gen;
    if (c->responded) return MHD_YES;
    if (g->req.kind == API_KIND_EMBEDDING) return embed_resume(c, g);
    pthread_mutex_lock(&c->mu);
    bool done = true;
    for (struct api_gen *x = g; x; x = x->sib) done &= gen_take_whole(x);
    if (!done) {
        api_conn_suspend_locked(c);
        pthread_mutex_unlock(&c->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&c->mu);
    const char *finish = g->finish;
    for (struct api_gen *x = g->sib; x; x = x->sib) /* one failed choice fails the request */
        if (x->finish && !strcmp(x->finish, "error")) finish = "error";
    return reply_whole(c, g, finish);
}
