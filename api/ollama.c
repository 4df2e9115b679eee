/* ollama.c - the Ollama API subset its clients need: /api/chat, /api/generate (NDJSON
 * streaming by default), /api/tags, /api/version. Field names and defaults follow Ollama's
 * docs/api.md (options.temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1,
 * num_predict -1; "stream" defaults to true), /api/embed and /api/embeddings, /api/ps. Pulling, creating, copying, deleting and
 * showing models: api/ollama_store.c.
 */
#include "api/api_internal.h"

#include "core/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OLLAMA_VERSION "0.5.0"

static int bad(struct api_error *e, const char *param, const char *msg)
{
    return api_error_set(e, 400, "invalid_request_error", NULL, param, "%s", msg);
}

static int opt_num(const cJSON *o, const char *name, double lo, double hi, double *out,
                   struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return bad(e, name, "option out of range or not a number");
    *out = v->valuedouble;
    return 0;
}

static int parse_options(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    r->temperature = 0.8f;
    r->top_k = 40;
    r->top_p = 0.9f;
    r->repeat_penalty = 1.1f;
    r->max_tokens = -1;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, "options");
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return bad(e, "options", "'options' must be an object");
    double d;
    int rc;
    d = r->temperature;
    if ((rc = opt_num(o, "temperature", 0, 100, &d, e))) return rc;
    r->temperature = (float)d;
    d = r->top_k;
    if ((rc = opt_num(o, "top_k", 0, 1e6, &d, e))) return rc;
    r->top_k = (int)d;
    d = r->top_p;
    if ((rc = opt_num(o, "top_p", 0, 1, &d, e))) return rc;
    r->top_p = (float)d;
    d = 0;
    if ((rc = opt_num(o, "min_p", 0, 1, &d, e))) return rc;
    r->min_p = (float)d;
    d = r->repeat_penalty;
    if ((rc = opt_num(o, "repeat_penalty", 0, 100, &d, e))) return rc;
    r->repeat_penalty = (float)d;
    d = 0;
    if ((rc = opt_num(o, "presence_penalty", -100, 100, &d, e))) return rc;
    r->presence_penalty = (float)d;
    d = 0;
    if ((rc = opt_num(o, "frequency_penalty", -100, 100, &d, e))) return rc;
    r->frequency_penalty = (float)d;
    d = -1;
    if ((rc = opt_num(o, "num_predict", -2, 1e9, &d, e))) return rc;
    r->max_tokens = d > 0 ? (int)d : -1;
    d = -1;
    if ((rc = opt_num(o, "seed", -9.2e18, 9.2e18, &d, e))) return rc;
    if (d >= 0) {
        r->has_seed = true;
        r->seed = (uint64_t)d;
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (cJSON_IsArray(stop)) {
        const cJSON *s;
        cJSON_ArrayForEach(s, stop)
        {
            if (!cJSON_IsString(s)) return bad(e, "stop", "'stop' must be an array of strings");
            if (!s->valuestring[0] || r->n_stop >= API_MAX_STOP) continue;
            r->stop[r->n_stop] = strdup(s->valuestring);
            if (!r->stop[r->n_stop]) return MESH_ENOMEM;
            r->n_stop++;
        }
    } else if (stop && !cJSON_IsNull(stop)) {
        return bad(e, "stop", "'stop' must be an array of strings");
    }
    return 0;
}

/* Ollama's format: "json" (any JSON object) or a JSON Schema object; "" or null: none. */
static int parse_format(const cJSON *fmt, struct api_gen_req *r, struct api_error *e)
{
    if (!fmt || cJSON_IsNull(fmt) || (cJSON_IsString(fmt) && !fmt->valuestring[0])) return 0;
    r->json_mode = true;
    if (cJSON_IsString(fmt)) {
        if (strcmp(fmt->valuestring, "json"))
            return bad(e, "format", "format must be \"json\" or a JSON schema object");
        return node_grammar_json_object(&r->grammar);
    }
    if (!cJSON_IsObject(fmt)) return bad(e, "format", "format must be \"json\" or a JSON schema object");
    char *text = cJSON_PrintUnformatted(fmt);
    if (!text) return MESH_ENOMEM;
    char err[256] = "";
    int rc = node_grammar_from_schema(text, strlen(text), &r->grammar, err, sizeof err);
    free(text);
    if (rc == MESH_EINVAL) {
        char msg[320];
        snprintf(msg, sizeof msg, "invalid format schema: %s", err);
        return bad(e, "format", msg);
    }
    return rc;
}

static int dup_str(const cJSON *v, char **out)
{
    *out = strdup(cJSON_IsString(v) ? v->valuestring : "");
    return *out ? 0 : MESH_ENOMEM;
}

/* /api/embed: "input" a string or an array of strings; /api/embeddings (the older route):
 * "prompt" one string. "truncate", "keep_alive" and "options" change nothing here: an input
 * longer than the context is refused by the node either way. */
static int parse_embed(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const char *param = r->embed_legacy ? "prompt" : "input";
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, param);
    int n = cJSON_IsString(in) ? 1 : (!r->embed_legacy && cJSON_IsArray(in)) ? cJSON_GetArraySize(in) : -1;
    if (n <= 0 || n > 2048)
        return bad(e, param, r->embed_legacy ? "'prompt' must be a non-empty string"
                                             : "'input' must be a string or a non-empty array of strings");
    r->inputs = calloc((size_t)n, sizeof *r->inputs);
    if (!r->inputs) return MESH_ENOMEM;
    const cJSON *s = cJSON_IsString(in) ? in : in->child;
    for (; s && r->n_inputs < n; s = cJSON_IsString(in) ? NULL : s->next) {
        if (!cJSON_IsString(s) || !s->valuestring[0])
            return bad(e, param, "each input must be a non-empty string");
        r->inputs[r->n_inputs] = strdup(s->valuestring);
        if (!r->inputs[r->n_inputs]) return MESH_ENOMEM;
        r->n_inputs++;
    }
    return 0;
}

static int parse_body(enum api_kind kind, const cJSON *root, struct api_gen_req *r,
                      struct api_error *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0] ||
        strlen(model->valuestring) >= sizeof r->model)
        return bad(e, "model", "'model' is required");
    snprintf(r->model, sizeof r->model, "%s", model->valuestring);
    int rc = api_meshllm_parse(root, &r->route, e);
    if (rc) return rc;
    if (kind == API_KIND_EMBEDDING) return parse_embed(root, r, e);
    r->stream = true;
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (cJSON_IsBool(st)) r->stream = cJSON_IsTrue(st);
    else if (st && !cJSON_IsNull(st)) return bad(e, "stream", "'stream' must be a boolean");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if ((rc = parse_format(fmt, r, e))) return rc;
    rc = parse_options(root, r, e);
    if (rc) return rc;
    if (kind == API_KIND_COMPLETION) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (p && !cJSON_IsNull(p) && !cJSON_IsString(p))
            return bad(e, "prompt", "'prompt' must be a string");
        if ((rc = dup_str(p, &r->prompt))) return rc;
        const cJSON *sys = cJSON_GetObjectItemCaseSensitive(root, "system");
        if (cJSON_IsString(sys) && (rc = dup_str(sys, &r->system))) return rc;
        const cJSON *raw = cJSON_GetObjectItemCaseSensitive(root, "raw");
        r->raw = cJSON_IsTrue(raw);
        r->load_only = !r->prompt[0]; /* Ollama's preload idiom */
        return 0;
    }
    if ((rc = api_tools_parse(root, r, e))) return rc;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs || cJSON_IsNull(msgs) || (cJSON_IsArray(msgs) && cJSON_GetArraySize(msgs) == 0)) {
        r->load_only = true; /* Ollama's preload idiom */
        return 0;
    }
    if (!cJSON_IsArray(msgs)) return bad(e, "messages", "'messages' must be an array");
    int n = cJSON_GetArraySize(msgs);
    if (n > 100000) return bad(e, "messages", "too many messages");
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return MESH_ENOMEM;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsString(role) ||
            (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
             strcmp(role->valuestring, "assistant") && strcmp(role->valuestring, "tool")))
            return bad(e, "messages", "each message needs a role: system, user, assistant or tool");
        if (content && !cJSON_IsNull(content) && !cJSON_IsString(content))
            return bad(e, "messages", "message 'content' must be a string");
        struct api_msg *am = &r->msgs[r->n_msgs];
        am->role = strdup(role->valuestring);
        r->n_msgs++;
        if (!am->role || dup_str(content, &am->content)) return MESH_ENOMEM;
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        if (cJSON_IsArray(calls) && cJSON_GetArraySize(calls) > 0) {
            /* Ollama's arguments are objects; the templates see them as OpenAI's shape */
            const cJSON *c;
            cJSON_ArrayForEach(c, calls)
            {
                const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
                if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(f, "name")))
                    return bad(e, "messages", "each tool call needs function.name");
            }
            if (!(am->tool_calls_json = cJSON_PrintUnformatted(calls))) return MESH_ENOMEM;
        }
        const cJSON *tn = cJSON_GetObjectItemCaseSensitive(m, "tool_name");
        if (cJSON_IsString(tn) && !(am->name = strdup(tn->valuestring))) return MESH_ENOMEM;
    }
    return 0;
}

int api_ollama_parse(enum api_kind kind, const char *body, size_t len, struct api_gen_req *out,
                     struct api_error *err)
{
    return api_ollama_parse_ex(kind, false, body, len, out, err);
}

int api_ollama_parse_ex(enum api_kind kind, bool embed_legacy, const char *body, size_t len,
                        struct api_gen_req *out, struct api_error *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    out->embed_legacy = embed_legacy;
    int rc;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root))
        rc = bad(err, "", "invalid JSON body: expected an object");
    else
        rc = parse_body(kind, root, out, err);
    if (rc == MESH_ENOMEM) api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    cJSON_Delete(root);
    if (rc) api_gen_req_free(out);
    return rc;
}

static void rfc3339_now(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%09ldZ", base, (long)ts.tv_nsec);
}

char *api_ollama_chunk(enum api_kind kind, const char *model, const char *text, size_t len,
                       bool done, const char *done_reason, int n_prompt, int n_gen,
                       double elapsed_s)
{
    return api_ollama_chunk_calls(kind, model, text, len, NULL, 0, done, done_reason, n_prompt,
                                  n_gen, elapsed_s);
}

char *api_ollama_calls_chunk(const char *model, const struct api_tool_call *calls, int n_calls)
{
    return api_ollama_chunk_calls(API_KIND_CHAT, model, "", 0, calls, n_calls, false, NULL, 0, 0, 0);
}

/* Ollama's message.tool_calls: [{"function":{"name","arguments":{...}}}] (arguments an object). */
static void add_calls(cJSON *msg, const struct api_tool_call *calls, int n_calls)
{
    cJSON *arr = cJSON_AddArrayToObject(msg, "tool_calls");
    for (int i = 0; arr && i < n_calls; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, c);
        cJSON *f = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(f, "name", calls[i].name);
        cJSON *args = cJSON_Parse(calls[i].arguments);
        cJSON_AddItemToObject(f, "arguments", args ? args : cJSON_CreateObject());
    }
}

char *api_ollama_chunk_calls(enum api_kind kind, const char *model, const char *text, size_t len,
                             const struct api_tool_call *calls, int n_calls, bool done,
                             const char *done_reason, int n_prompt, int n_gen, double elapsed_s)
{
    char when[64];
    rfc3339_now(when, sizeof when);
    char *t = malloc(len + 1);
    if (!t) return NULL;
    memcpy(t, text, len);
    t[len] = 0;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(root, "created_at", when);
    if (kind == API_KIND_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(root, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", t);
        if (n_calls) add_calls(m, calls, n_calls);
    } else {
        cJSON_AddStringToObject(root, "response", t);
    }
    free(t);
    cJSON_AddBoolToObject(root, "done", done);
    if (done) {
        double ns = elapsed_s * 1e9;
        cJSON_AddStringToObject(root, "done_reason", done_reason ? done_reason : "stop");
        cJSON_AddNumberToObject(root, "total_duration", floor(ns));
        cJSON_AddNumberToObject(root, "load_duration", 0);
        cJSON_AddNumberToObject(root, "prompt_eval_count", n_prompt);
        cJSON_AddNumberToObject(root, "eval_count", n_gen);
        cJSON_AddNumberToObject(root, "eval_duration", floor(ns));
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = 0;
    return line;
}

/* One /api/tags entry. A mesh model (not loaded here) says only what its peers announce. */
static cJSON *tag_obj(const struct router_model *e)
{
    cJSON *m = cJSON_CreateObject();
    char name[160];
    snprintf(name, sizeof name, "%s%s", e->name, strchr(e->name, ':') ? "" : ":latest");
    cJSON_AddStringToObject(m, "name", name);
    cJSON_AddStringToObject(m, "model", name);
    if (e->is_local || e->created > 0) {
        char when[64];
        struct tm tm;
        time_t t = (time_t)e->created;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        cJSON_AddStringToObject(m, "modified_at", when);
    }
    if (e->is_local || e->file_bytes > 0) cJSON_AddNumberToObject(m, "size", (double)e->file_bytes);
    if (e->is_local || e->digest[0]) cJSON_AddStringToObject(m, "digest", e->digest);
    cJSON *d = cJSON_AddObjectToObject(m, "details");
    cJSON_AddStringToObject(d, "format", "gguf");
    if (e->quant[0]) cJSON_AddStringToObject(d, "quantization_level", e->quant);
    api_model_add_meshllm(m, e);
    return m;
}

char *api_ollama_tags_json(const struct router_model *ms, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; arr && i < n; i++)
        if (!ms[i].is_local || ms[i].state == ROUTER_READY)
            cJSON_AddItemToArray(arr, tag_obj(&ms[i]));
    if (arr) api_store_tags_add(arr, ms, n); /* the store's models not loaded yet */
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *api_ollama_load_json(enum api_kind kind, const char *model)
{
    char when[64];
    rfc3339_now(when, sizeof when);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", model);
    cJSON_AddStringToObject(root, "created_at", when);
    if (kind == API_KIND_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(root, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", "");
    } else {
        cJSON_AddStringToObject(root, "response", "");
    }
    cJSON_AddBoolToObject(root, "done", true);
    cJSON_AddStringToObject(root, "done_reason", "load");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *api_ollama_embed_json(const char *model, bool legacy, const float *vecs, int n_vecs,
                            int n_embd, int n_prompt, double elapsed_s)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (legacy) { /* /api/embeddings: {"embedding":[...]} */
        cJSON *arr = cJSON_AddArrayToObject(root, "embedding");
        for (int k = 0; arr && n_vecs > 0 && k < n_embd; k++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(vecs[k]));
    } else {
        cJSON_AddStringToObject(root, "model", model);
        cJSON *all = cJSON_AddArrayToObject(root, "embeddings");
        for (int i = 0; all && i < n_vecs; i++) {
            cJSON *arr = cJSON_CreateArray();
            cJSON_AddItemToArray(all, arr);
            const float *v = vecs + (size_t)i * (size_t)n_embd;
            for (int k = 0; arr && k < n_embd; k++)
                cJSON_AddItemToArray(arr, cJSON_CreateNumber(v[k]));
        }
        double ns = floor(elapsed_s * 1e9);
        cJSON_AddNumberToObject(root, "total_duration", ns);
        cJSON_AddNumberToObject(root, "load_duration", 0);
        cJSON_AddNumberToObject(root, "prompt_eval_count", n_prompt);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Ollama's "expires_at" for a model that stays loaded: serve never unloads one, so the time
 * is as far off as Ollama shows for keep_alive -1. */
#define OLLAMA_NEVER_EXPIRES "2318-01-01T00:00:00Z"

char *api_ollama_ps_json(const struct router_model *ms, int n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "models");
    for (int i = 0; arr && i < n; i++) {
        const struct router_model *e = &ms[i];
        if (!e->is_local || e->state != ROUTER_READY) continue;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, m);
        char name[160];
        snprintf(name, sizeof name, "%s%s", e->name, strchr(e->name, ':') ? "" : ":latest");
        cJSON_AddStringToObject(m, "name", name);
        cJSON_AddStringToObject(m, "model", name);
        cJSON_AddNumberToObject(m, "size", (double)e->file_bytes);
        cJSON_AddStringToObject(m, "digest", e->digest);
        cJSON *d = cJSON_AddObjectToObject(m, "details");
        cJSON_AddStringToObject(d, "format", "gguf");
        if (e->arch[0]) cJSON_AddStringToObject(d, "family", e->arch);
        if (e->quant[0]) cJSON_AddStringToObject(d, "quantization_level", e->quant);
        cJSON_AddStringToObject(m, "expires_at", OLLAMA_NEVER_EXPIRES);
        cJSON_AddNumberToObject(m, "size_vram", 0);
        if (e->n_ctx > 0) cJSON_AddNumberToObject(m, "context_length", e->n_ctx);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

char *api_ollama_version_json(void)
{
    return strdup("{\"version\":\"" OLLAMA_VERSION "\"}");
}
