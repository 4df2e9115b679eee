/* openai.c - OpenAI request validation and response objects (see openai.h).
 *
 * Validation mirrors the reference's documented ranges; unknown fields are ignored (as
 * OpenAI-compatible servers do, so clients that send newer fields keep working). Text that
 * goes into JSON is made valid UTF-8 first (invalid bytes become U+FFFD): cJSON copies
 * bytes as they are, and a token piece can be half a character.
 */
#include "api/openai.h"

#include "core/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int api_error_set(struct api_error *e, int status, const char *type, const char *code,
                  const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    e->retry_after_s = 0;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return MESH_EINVAL;
}

static int bad(struct api_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct api_error *e, const char *param, const char *fmt, ...)
{
    e->status = 400;
    e->type = "invalid_request_error";
    e->code = NULL;
    e->retry_after_s = 0;
    snprintf(e->param, sizeof e->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return MESH_EINVAL;
}

static int oom(struct api_error *e)
{
    api_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return MESH_ENOMEM;
}

char *api_error_json(const struct api_error *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    if (!o) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(o, "message", e->message);
    cJSON_AddStringToObject(o, "type", e->type ? e->type : "invalid_request_error");
    if (e->param[0])
        cJSON_AddStringToObject(o, "param", e->param);
    else
        cJSON_AddNullToObject(o, "param");
    if (e->code)
        cJSON_AddStringToObject(o, "code", e->code);
    else
        cJSON_AddNullToObject(o, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ---- field readers: each returns 0, or MESH_EINVAL with *e filled ---------------------- */

static bool is_absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

static int get_number(const cJSON *root, const char *name, double lo, double hi, double *out,
                      struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (is_absent(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(e, name, "'%s' must be a number", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return bad(e, name, "'%s' must be between %g and %g, got %g", name, lo, hi, v->valuedouble);
    *out = v->valuedouble;
    return 0;
}

static int get_int(const cJSON *root, const char *name, double lo, double hi, long long *out,
                   bool *present, struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (present) *present = false;
    if (is_absent(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || floor(v->valuedouble) != v->valuedouble)
        return bad(e, name, "'%s' must be an integer", name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return bad(e, name, "'%s' must be between %.0f and %.0f", name, lo, hi);
    *out = (long long)v->valuedouble;
    if (present) *present = true;
    return 0;
}

static int get_bool(const cJSON *root, const char *name, bool *out, struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (is_absent(v)) return 0;
    if (!cJSON_IsBool(v)) return bad(e, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Text content: a string, null, or an array of {"type":"text","text":...} parts (joined). */
static int get_content(const cJSON *c, const char *param, char **out, struct api_error *e)
{
    if (is_absent(c)) {
        *out = strdup("");
        return *out ? 0 : oom(e);
    }
    if (cJSON_IsString(c)) {
        *out = strdup(c->valuestring);
        return *out ? 0 : oom(e);
    }
    if (!cJSON_IsArray(c)) return bad(e, param, "'content' must be a string or an array of parts");
    size_t total = 1;
    const cJSON *p;
    cJSON_ArrayForEach(p, c)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0)
            return bad(e, param, "only content parts of type 'text' are supported");
        if (!cJSON_IsString(text)) return bad(e, param, "a text part needs a string 'text'");
        total += strlen(text->valuestring);
    }
    char *s = malloc(total);
    if (!s) return oom(e);
    size_t n = 0;
    cJSON_ArrayForEach(p, c)
    {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + n, t, l);
        n += l;
    }
    s[n] = 0;
    *out = s;
    return 0;
}

/* A function name as OpenAI allows it: 1-64 of [A-Za-z0-9_-]. */
static bool tool_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 64 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                          "0123456789_-") == n;
}

int api_tools_parse(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    r->parallel_tool_calls = true;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    int rc;
    if ((rc = get_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e))) return rc;
    if (!is_absent(tools) && !cJSON_IsArray(tools)) return bad(e, "tools", "'tools' must be an array");
    int n = is_absent(tools) ? 0 : cJSON_GetArraySize(tools);
    if (n > 128) return bad(e, "tools", "at most 128 tools");
    const cJSON *t;
    int i = 0;
    cJSON *list = n ? cJSON_CreateArray() : NULL;
    if (n && !list) return oom(e);
    const cJSON *src = n ? tools : NULL;
    cJSON_ArrayForEach(t, src)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        char param[32];
        snprintf(param, sizeof param, "tools[%d]", i++);
        rc = 0;
        if (!cJSON_IsObject(t) || (!is_absent(type) && (!cJSON_IsString(type) ||
                                                        strcmp(type->valuestring, "function"))))
            rc = bad(e, param, "each tool must be {\"type\": \"function\", \"function\": {...}}");
        else if (!cJSON_IsObject(fn) || !cJSON_IsString(name) || !tool_name_ok(name->valuestring))
            rc = bad(e, param, "a tool's function needs a 'name' of 1-64 letters, digits, '_' or '-'");
        else if (!is_absent(params) && !cJSON_IsObject(params))
            rc = bad(e, param, "a function's 'parameters' must be a JSON Schema object");
        else if (!is_absent(desc) && !cJSON_IsString(desc))
            rc = bad(e, param, "a function's 'description' must be a string");
        for (const cJSON *u = list ? list->child : NULL; !rc && u; u = u->next)
            if (!strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "function"), "name")->valuestring,
                        name->valuestring))
                rc = bad(e, param, "two tools are named '%.64s'", name->valuestring);
        cJSON *copy = rc ? NULL : cJSON_Duplicate(t, 1);
        if (!rc && !copy) rc = oom(e);
        if (rc) {
            cJSON_Delete(list);
            return rc;
        }
        if (is_absent(type)) cJSON_AddStringToObject(copy, "type", "function");
        cJSON_AddItemToArray(list, copy);
    }
    r->tool_choice = API_TOOLS_AUTO;
    if (cJSON_IsString(choice)) {
        if (!strcmp(choice->valuestring, "none")) r->tool_choice = API_TOOLS_NONE;
        else if (!strcmp(choice->valuestring, "required")) r->tool_choice = API_TOOLS_REQUIRED;
        else if (strcmp(choice->valuestring, "auto"))
            rc = bad(e, "tool_choice", "'tool_choice' must be none, auto, required or "
                                       "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    } else if (cJSON_IsObject(choice)) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        bool found = false;
        for (const cJSON *u = list ? list->child : NULL; cJSON_IsString(name) && u; u = u->next)
            found |= !strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "function"), "name")->valuestring,
                             name->valuestring);
        if (!found)
            rc = bad(e, "tool_choice", "'tool_choice' names a function that is not in 'tools'");
        else {
            r->tool_choice = API_TOOLS_NAMED;
            snprintf(r->tool_choice_name, sizeof r->tool_choice_name, "%s", name->valuestring);
        }
    } else if (!is_absent(choice)) {
        rc = bad(e, "tool_choice", "'tool_choice' must be a string or an object");
    }
    if (!rc && n == 0 && (r->tool_choice == API_TOOLS_REQUIRED))
        rc = bad(e, "tool_choice", "'tool_choice' is 'required' but there are no 'tools'");
    if (!rc && list && r->tool_choice != API_TOOLS_NONE) {
        r->tools_json = cJSON_PrintUnformatted(list);
        r->n_tools = n;
        if (!r->tools_json) rc = oom(e);
    }
    cJSON_Delete(list);
    return rc;
}

/* An assistant message's "tool_calls" (OpenAI shape, arguments a JSON text) as a compact
 * JSON array into m->tool_calls_json; MESH_EINVAL with *e for a malformed one. */
static int msg_tool_calls(const cJSON *calls, const char *param, struct api_msg *m,
                          struct api_error *e)
{
    if (is_absent(calls)) return 0;
    if (!cJSON_IsArray(calls)) return bad(e, param, "'tool_calls' must be an array");
    const cJSON *c;
    cJSON_ArrayForEach(c, calls)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (!cJSON_IsObject(c) || !cJSON_IsString(name) ||
            (!is_absent(args) && !cJSON_IsString(args) && !cJSON_IsObject(args)))
            return bad(e, param, "each tool call needs function.name and function.arguments");
    }
    m->tool_calls_json = cJSON_PrintUnformatted(calls);
    return m->tool_calls_json ? 0 : oom(e);
}

static int parse_messages(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (is_absent(msgs)) return bad(e, "messages", "you must provide a 'messages' parameter");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return bad(e, "messages", "'messages' must be a non-empty array");
    int n = cJSON_GetArraySize(msgs);
    if (n > 100000) return bad(e, "messages", "too many messages");
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return oom(e);
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        char param[64];
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!cJSON_IsObject(m)) return bad(e, param, "messages[%d] must be an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role)) return bad(e, param, "messages[%d] needs a string 'role'", i);
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return bad(e, param, "invalid role '%.40s' (expected system, developer, user, "
                                 "assistant or tool)", role->valuestring);
        r->msgs[i].role = strdup(rs);
        if (!r->msgs[i].role) return oom(e);
        r->n_msgs = i + 1;
        snprintf(param, sizeof param, "messages[%d].content", i);
        int rc = get_content(cJSON_GetObjectItemCaseSensitive(m, "content"), param,
                             &r->msgs[i].content, e);
        if (rc) return rc;
        snprintf(param, sizeof param, "messages[%d].tool_calls", i);
        if (!strcmp(rs, "assistant") &&
            (rc = msg_tool_calls(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"), param,
                                 &r->msgs[i], e)))
            return rc;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
        if ((cJSON_IsString(id) && !(r->msgs[i].tool_call_id = strdup(id->valuestring))) ||
            (cJSON_IsString(nm) && !(r->msgs[i].name = strdup(nm->valuestring))))
            return oom(e);
        i++;
    }
    return 0;
}

static int parse_stop(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (is_absent(v)) return 0;
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) return 0;
        r->stop[0] = strdup(v->valuestring);
        if (!r->stop[0]) return oom(e);
        r->n_stop = 1;
        return 0;
    }
    if (!cJSON_IsArray(v)) return bad(e, "stop", "'stop' must be a string or an array of strings");
    if (cJSON_GetArraySize(v) > API_MAX_STOP)
        return bad(e, "stop", "'stop' may hold at most %d sequences", API_MAX_STOP);
    const cJSON *s;
    cJSON_ArrayForEach(s, v)
    {
        if (!cJSON_IsString(s)) return bad(e, "stop", "'stop' must be an array of strings");
        if (!s->valuestring[0]) continue;
        r->stop[r->n_stop] = strdup(s->valuestring);
        if (!r->stop[r->n_stop]) return oom(e);
        r->n_stop++;
    }
    return 0;
}

static int parse_model(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (is_absent(v)) return 0; /* "" = the server's default model (as llama-server) */
    if (!cJSON_IsString(v) || !v->valuestring[0]) return bad(e, "model", "'model' must be a string");
    if (strlen(v->valuestring) >= sizeof r->model) return bad(e, "model", "'model' is too long");
    snprintf(r->model, sizeof r->model, "%s", v->valuestring);
    return 0;
}

/* Sampling and length fields shared by chat and completions. */
static int parse_sampling(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    double d;
    long long ll;
    bool has;
    int rc;
    d = -1;
    if ((rc = get_number(root, "temperature", 0, 2, &d, e))) return rc;
    if (d >= 0) r->given |= API_GIVEN_TEMPERATURE;
    r->temperature = d >= 0 ? (float)d : 1.0f;
    d = -1;
    if ((rc = get_number(root, "top_p", 0, 1, &d, e))) return rc;
    if (d >= 0) r->given |= API_GIVEN_TOP_P;
    r->top_p = d >= 0 ? (float)d : 1.0f;
    /* llama-server's extensions */
    d = -1;
    if ((rc = get_number(root, "min_p", 0, 1, &d, e))) return rc;
    if (d >= 0) r->given |= API_GIVEN_MIN_P;
    r->min_p = d >= 0 ? (float)d : 0.0f;
    d = -1;
    if ((rc = get_number(root, "repeat_penalty", 0, 100, &d, e))) return rc;
    if (d >= 0) r->given |= API_GIVEN_REPEAT_PENALTY;
    r->repeat_penalty = d >= 0 ? (float)d : 1.0f;
    if ((rc = get_int(root, "top_k", 0, 1e6, &ll, &has, e))) return rc;
    if (has) r->given |= API_GIVEN_TOP_K;
    r->top_k = has ? (int)ll : 0;
    d = 0;
    if ((rc = get_number(root, "presence_penalty", -2, 2, &d, e))) return rc;
    r->presence_penalty = (float)d;
    d = 0;
    if ((rc = get_number(root, "frequency_penalty", -2, 2, &d, e))) return rc;
    r->frequency_penalty = (float)d;
    if ((rc = get_int(root, "seed", -9.2e18, 1.8e19, &ll, &has, e))) return rc;
    if (has) {
        r->has_seed = true;
        r->seed = (uint64_t)ll;
    }
    r->max_tokens = -1;
    if ((rc = get_int(root, "max_tokens", 1, 1e9, &ll, &has, e))) return rc;
    if (has) r->max_tokens = (int)ll;
    if ((rc = get_int(root, "max_completion_tokens", 1, 1e9, &ll, &has, e))) return rc;
    if (has) r->max_tokens = (int)ll;
    if (r->max_tokens > 0) r->given |= API_GIVEN_MAX_TOKENS;
    if ((rc = get_int(root, "n", 1, API_MAX_CHOICES, &ll, &has, e))) return rc;
    r->n_choices = has ? (int)ll : 1;
    if ((rc = get_bool(root, "stream", &r->stream, e))) return rc;
    if (r->n_choices > 1 && r->stream)
        return bad(e, "n", "'n' > 1 is supported without 'stream' only");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!is_absent(so)) {
        if (!r->stream)
            return bad(e, "stream_options",
                       "the 'stream_options' parameter is only allowed when 'stream' is enabled");
        if (!cJSON_IsObject(so)) return bad(e, "stream_options", "'stream_options' must be an object");
        if ((rc = get_bool(so, "include_usage", &r->include_usage, e))) return rc;
    }
    return parse_stop(root, r, e);
}

/* r->grammar from a JSON Schema; a schema the compiler refuses is a 400 naming param. */
static int grammar_from_schema(const cJSON *schema, const char *param, struct api_gen_req *r,
                               struct api_error *e)
{
    if (r->grammar)
        return bad(e, param, "give only one of response_format, json_schema and grammar");
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) return MESH_ENOMEM;
    char err[256] = "";
    int rc = node_grammar_from_schema(text, strlen(text), &r->grammar, err, sizeof err);
    free(text);
    if (rc == MESH_EINVAL) return bad(e, param, "%s: %s", param, err);
    return rc;
}

/* Structured output: OpenAI's response_format (json_object, json_schema), llama.cpp's
 * json_schema and grammar (GBNF) fields. All become r->grammar. */
static int parse_constraint(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    int rc;
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (!is_absent(rf)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsObject(rf) || !cJSON_IsString(t))
            return bad(e, "response_format", "'response_format' must be an object with a 'type'");
        if (!strcmp(t->valuestring, "json_object")) {
            r->json_mode = true;
            if ((rc = node_grammar_json_object(&r->grammar))) return rc;
        } else if (!strcmp(t->valuestring, "json_schema")) {
            r->json_mode = true;
            const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
            if (!cJSON_IsObject(js))
                return bad(e, "response_format.json_schema",
                           "'response_format.json_schema' must be an object with a 'schema'");
            const cJSON *sch = cJSON_GetObjectItemCaseSensitive(js, "schema");
            if (is_absent(sch)) rc = node_grammar_json_object(&r->grammar);
            else rc = grammar_from_schema(sch, "response_format.json_schema.schema", r, e);
            if (rc) return rc;
        } else if (strcmp(t->valuestring, "text")) {
            return bad(e, "response_format.type", "unknown response_format type '%.40s'",
                       t->valuestring);
        }
    }
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(root, "json_schema");
    if (!is_absent(js)) {
        if (!cJSON_IsObject(js) && !cJSON_IsBool(js))
            return bad(e, "json_schema", "'json_schema' must be a JSON Schema object");
        if ((rc = grammar_from_schema(js, "json_schema", r, e))) return rc;
    }
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(root, "grammar");
    if (!is_absent(g)) {
        if (!cJSON_IsString(g)) return bad(e, "grammar", "'grammar' must be a string of GBNF rules");
        if (!g->valuestring[0]) return 0; /* llama-server treats "" as no grammar */
        if (r->grammar)
            return bad(e, "grammar", "give only one of response_format, json_schema and grammar");
        char err[256] = "";
        rc = node_grammar_check(g->valuestring, strlen(g->valuestring), err, sizeof err);
        if (rc == MESH_EINVAL) return bad(e, "grammar", "%s", err);
        if (rc) return rc;
        if (!(r->grammar = strdup(g->valuestring))) return MESH_ENOMEM;
    }
    return 0;
}

static int parse_chat(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    int rc;
    long long ll;
    bool has;
    if ((rc = parse_messages(root, r, e))) return rc;
    if ((rc = get_bool(root, "logprobs", &r->logprobs, e))) return rc;
    if ((rc = get_int(root, "top_logprobs", 0, API_MAX_TOP_LOGPROBS, &ll, &has, e))) return rc;
    if (has) {
        if (!r->logprobs && ll > 0)
            return bad(e, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
        r->top_logprobs = (int)ll;
    }
    if ((rc = parse_constraint(root, r, e))) return rc == MESH_ENOMEM ? oom(e) : rc;
    return api_tools_parse(root, r, e);
}

static int parse_completion(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    int rc;
    long long ll;
    bool has;
    if (cJSON_IsArray(p)) {
        if (cJSON_GetArraySize(p) != 1 || !cJSON_IsString(cJSON_GetArrayItem(p, 0)))
            return bad(e, "prompt", "'prompt' must be a string or an array of one string");
        p = cJSON_GetArrayItem(p, 0);
    }
    if (is_absent(p)) return bad(e, "prompt", "you must provide a 'prompt' parameter");
    if (!cJSON_IsString(p)) return bad(e, "prompt", "'prompt' must be a string");
    r->prompt = strdup(p->valuestring);
    if (!r->prompt) return oom(e);
    if ((rc = get_int(root, "logprobs", 0, 5, &ll, &has, e))) return rc;
    if (has) {
        r->logprobs = true;
        r->top_logprobs = (int)ll;
    }
    if ((rc = get_int(root, "best_of", 1, 128, &ll, &has, e))) return rc;
    if (has && ll != 1) return bad(e, "best_of", "only best_of = 1 is supported");
    if ((rc = get_bool(root, "echo", &r->echo, e))) return rc;
    if (r->echo && r->stream) return bad(e, "echo", "'echo' is not supported with 'stream'");
    if (r->max_tokens < 0) r->max_tokens = 16; /* the completions API's documented default */
    if ((rc = parse_constraint(root, r, e))) return rc == MESH_ENOMEM ? oom(e) : rc;
    return 0;
}

static int parse_embedding(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (is_absent(in)) return bad(e, "input", "you must provide an 'input' parameter");
    int n = cJSON_IsString(in) ? 1 : cJSON_IsArray(in) ? cJSON_GetArraySize(in) : -1;
    if (n <= 0 || n > 2048) return bad(e, "input", "'input' must be a string or a non-empty array of strings");
    r->inputs = calloc((size_t)n, sizeof *r->inputs);
    if (!r->inputs) return oom(e);
    if (cJSON_IsString(in)) {
        if (!in->valuestring[0]) return bad(e, "input", "'input' must not be empty");
        r->inputs[0] = strdup(in->valuestring);
        if (!r->inputs[0]) return oom(e);
        r->n_inputs = 1;
    } else {
        const cJSON *s;
        cJSON_ArrayForEach(s, in)
        {
            if (!cJSON_IsString(s) || !s->valuestring[0])
                return bad(e, "input", "'input' must be a string or an array of non-empty strings");
            r->inputs[r->n_inputs] = strdup(s->valuestring);
            if (!r->inputs[r->n_inputs]) return oom(e);
            r->n_inputs++;
        }
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (!is_absent(fmt)) {
        if (!cJSON_IsString(fmt) ||
            (strcmp(fmt->valuestring, "float") && strcmp(fmt->valuestring, "base64")))
            return bad(e, "encoding_format", "'encoding_format' must be 'float' or 'base64'");
        r->echo = !strcmp(fmt->valuestring, "base64"); /* reused: base64 output */
    }
    return 0;
}

#define ROUTES_ALLOWED "'local' (this device only), 'own' (this device or the mesh owner's " \
                       "devices) or 'mesh' (any admitted member of the mesh)"

int api_meshllm_parse(const cJSON *root, enum node_route *route, struct api_error *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "meshllm");
    if (is_absent(m)) return 0;
    if (!cJSON_IsObject(m))
        return bad(e, "meshllm", "'meshllm' must be an object, e.g. {\"route\":\"local\"}");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "route");
    if (is_absent(r)) return 0;
    if (!cJSON_IsString(r)) return bad(e, "meshllm.route", "'meshllm.route' must be " ROUTES_ALLOWED);
    if (node_route_parse(r->valuestring, route))
        return bad(e, "meshllm.route", "unknown route '%.40s' in 'meshllm.route': use " ROUTES_ALLOWED,
                   r->valuestring);
    return 0;
}

void api_sampling_defaults_init(struct api_sampling_defaults *d)
{
    d->temperature = d->top_p = d->min_p = d->repeat_penalty = -1;
    d->top_k = d->max_tokens = -1;
}

void api_sampling_defaults_apply(const struct api_sampling_defaults *d, struct api_gen_req *r)
{
    if (d->temperature >= 0 && !(r->given & API_GIVEN_TEMPERATURE)) r->temperature = d->temperature;
    if (d->top_p >= 0 && !(r->given & API_GIVEN_TOP_P)) r->top_p = d->top_p;
    if (d->min_p >= 0 && !(r->given & API_GIVEN_MIN_P)) r->min_p = d->min_p;
    if (d->repeat_penalty >= 0 && !(r->given & API_GIVEN_REPEAT_PENALTY))
        r->repeat_penalty = d->repeat_penalty;
    if (d->top_k >= 0 && !(r->given & API_GIVEN_TOP_K)) r->top_k = d->top_k;
    if (d->max_tokens > 0 && !(r->given & API_GIVEN_MAX_TOKENS)) r->max_tokens = d->max_tokens;
}

int api_route_header(const char *value, struct api_gen_req *r, struct api_error *e)
{
    if (!value || r->route != NODE_ROUTE_DEFAULT) return 0;
    if (node_route_parse(value, &r->route))
        return bad(e, "meshllm.route", "unknown route '%.40s' in the X-Meshllm-Route header: use "
                   ROUTES_ALLOWED, value);
    return 0;
}

int api_openai_parse(enum api_kind kind, const char *body, size_t len, struct api_gen_req *out,
                     struct api_error *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    out->temperature = 1.0f;
    out->top_p = 1.0f;
    out->repeat_penalty = 1.0f;
    out->max_tokens = -1;
    int rc = 0;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root)) {
        rc = bad(err, "", "we could not parse the JSON body of your request: expected a JSON object");
        goto out;
    }
    if ((rc = parse_model(root, out, err))) goto out;
    if ((rc = api_meshllm_parse(root, &out->route, err))) goto out;
    if (kind == API_KIND_EMBEDDING) {
        rc = parse_embedding(root, out, err);
        goto out;
    }
    if ((rc = parse_sampling(root, out, err))) goto out;
    rc = kind == API_KIND_CHAT ? parse_chat(root, out, err) : parse_completion(root, out, err);
out:
    cJSON_Delete(root);
    if (rc) api_gen_req_free(out);
    return rc;
}

void api_gen_req_free(struct api_gen_req *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
        free(r->msgs[i].tool_calls_json);
        free(r->msgs[i].tool_call_id);
        free(r->msgs[i].name);
    }
    free(r->tools_json);
    free(r->msgs);
    free(r->prompt);
    for (int i = 0; i < r->n_inputs; i++) free(r->inputs[i]);
    free(r->inputs);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->system);
    free(r->grammar);
    enum api_kind k = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = k;
}

/* ---- response building ----------------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at s (n bytes left), 0 if invalid there. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need;
    unsigned min;
    if (c < 0x80) return c ? 1 : 0;
    if (c >= 0xC2 && c <= 0xDF) need = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) need = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) need = 4, min = 0x10000;
    else return 0;
    if (n < need) return 0;
    unsigned cp = c & (0x7F >> need);
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return need;
}

/* A NUL-terminated valid UTF-8 copy of len bytes (bad bytes and NUL -> U+FFFD). */
static char *utf8_clean(const char *s, size_t len)
{
    if (len > (SIZE_MAX - 1) / 3) return NULL;
    char *o = malloc(len * 3 + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len((const unsigned char *)s + i, len - i);
        if (k == 0) {
            memcpy(o + j, "\xEF\xBF\xBD", 3);
            j += 3;
            i++;
        } else {
            memcpy(o + j, s + i, k);
            j += k;
            i += k;
        }
    }
    o[j] = 0;
    return o;
}

static cJSON *add_clean_string(cJSON *obj, const char *name, const char *s, size_t len)
{
    char *c = utf8_clean(s ? s : "", s ? len : 0);
    if (!c) return NULL;
    cJSON *v = cJSON_AddStringToObject(obj, name, c);
    free(c);
    return v;
}

static void add_bytes(cJSON *obj, const struct api_lp_entry *en)
{
    cJSON *b = cJSON_AddArrayToObject(obj, "bytes");
    for (size_t i = 0; b && i < en->len; i++)
        cJSON_AddItemToArray(b, cJSON_CreateNumber((unsigned char)en->text[i]));
}

static cJSON *lp_chat(const struct api_gen_out *o)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *content = cJSON_AddArrayToObject(lp, "content");
    for (int i = 0; content && i < o->n_lps; i++) {
        const struct api_lp_token *t = &o->lps[i];
        cJSON *en = cJSON_CreateObject();
        cJSON_AddItemToArray(content, en);
        add_clean_string(en, "token", t->tok.text, t->tok.len);
        cJSON_AddNumberToObject(en, "logprob", t->tok.logprob);
        add_bytes(en, &t->tok);
        cJSON *top = cJSON_AddArrayToObject(en, "top_logprobs");
        for (int k = 0; top && k < t->n_top; k++) {
            cJSON *alt = cJSON_CreateObject();
            cJSON_AddItemToArray(top, alt);
            add_clean_string(alt, "token", t->top[k].text, t->top[k].len);
            cJSON_AddNumberToObject(alt, "logprob", t->top[k].logprob);
            add_bytes(alt, &t->top[k]);
        }
    }
    return lp;
}

static cJSON *lp_completion(const struct api_gen_out *o, size_t text_offset0)
{
    cJSON *lp = cJSON_CreateObject();
    cJSON *tokens = cJSON_AddArrayToObject(lp, "tokens");
    cJSON *tlp = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *top = cJSON_AddArrayToObject(lp, "top_logprobs");
    cJSON *off = cJSON_AddArrayToObject(lp, "text_offset");
    size_t pos = text_offset0;
    for (int i = 0; off && i < o->n_lps; i++) {
        const struct api_lp_token *t = &o->lps[i];
        char *c = utf8_clean(t->tok.text, t->tok.len);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(c ? c : ""));
        free(c);
        cJSON_AddItemToArray(tlp, cJSON_CreateNumber(t->tok.logprob));
        cJSON *alts = cJSON_CreateObject();
        for (int k = 0; k < t->n_top; k++) {
            char *a = utf8_clean(t->top[k].text, t->top[k].len);
            if (a && !cJSON_GetObjectItemCaseSensitive(alts, a))
                cJSON_AddNumberToObject(alts, a, t->top[k].logprob);
            free(a);
        }
        cJSON_AddItemToArray(top, alts);
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)pos));
        pos += t->tok.len;
    }
    return lp;
}

static void add_usage(cJSON *root, const struct api_gen_out *o)
{
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    if (!u) return;
    cJSON_AddNumberToObject(u, "prompt_tokens", o->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", o->n_completion);
    cJSON_AddNumberToObject(u, "total_tokens", o->n_prompt + o->n_completion);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    if (d) cJSON_AddNumberToObject(d, "cached_tokens", o->n_cached);
}

static cJSON *head(const char *object, const struct api_gen_out *o)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", o->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)o->created);
    cJSON_AddStringToObject(root, "model", o->model);
    cJSON_AddStringToObject(root, "system_fingerprint", "meshllm");
    return root;
}

static void add_finish(cJSON *choice, const char *fr)
{
    if (fr)
        cJSON_AddStringToObject(choice, "finish_reason", fr);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
}

/* "meshllm":{"ran_on":...}: where the request ran (clients ignore unknown fields). */
static void add_meshllm(cJSON *root, const struct api_gen_out *o)
{
    if (!o->ran_on) return;
    cJSON *m = cJSON_AddObjectToObject(root, "meshllm");
    if (m) cJSON_AddStringToObject(m, "ran_on", o->ran_on);
}

static char *finish_print(cJSON *root)
{
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* [{"id","type":"function","function":{"name","arguments"}}] ("index" first in chunks). */
static cJSON *tool_calls_json(const struct api_gen_out *o, bool chunk)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < o->n_calls; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, c);
        if (chunk) cJSON_AddNumberToObject(c, "index", o->call_index0 + i);
        cJSON_AddStringToObject(c, "id", o->calls[i].id);
        cJSON_AddStringToObject(c, "type", "function");
        cJSON *f = cJSON_AddObjectToObject(c, "function");
        cJSON_AddStringToObject(f, "name", o->calls[i].name);
        cJSON_AddStringToObject(f, "arguments", o->calls[i].arguments);
    }
    return arr;
}

char *api_openai_response_json(enum api_kind kind, const struct api_gen_out *o)
{
    bool chat = kind == API_KIND_CHAT;
    cJSON *root = head(chat ? "chat.completion" : "text_completion", o);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (chat) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        if (o->n_calls && !o->len) cJSON_AddNullToObject(m, "content");
        else add_clean_string(m, "content", o->text, o->len);
        cJSON_AddNullToObject(m, "refusal");
        if (o->n_calls) cJSON_AddItemToObject(m, "tool_calls", tool_calls_json(o, false));
    } else {
        add_clean_string(c, "text", o->text, o->len);
    }
    if (o->lps)
        cJSON_AddItemToObject(c, "logprobs", chat ? lp_chat(o) : lp_completion(o, 0));
    else
        cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, o->finish_reason);
    add_usage(root, o);
    add_meshllm(root, o);
    return finish_print(root);
}

char *api_openai_chunk_json(enum api_kind kind, const struct api_gen_out *o, bool is_first,
                            bool usage_only)
{
    bool chat = kind == API_KIND_CHAT;
    cJSON *root = head(chat ? "chat.completion.chunk" : "text_completion", o);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    if (usage_only) {
        add_usage(root, o);
        return finish_print(root);
    }
    cJSON *c = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (is_first) cJSON_AddStringToObject(d, "role", "assistant");
        if (o->n_calls) cJSON_AddItemToObject(d, "tool_calls", tool_calls_json(o, true));
        else if (o->len || is_first || !o->finish_reason)
            add_clean_string(d, "content", o->text, o->len);
    } else {
        add_clean_string(c, "text", o->text, o->len);
    }
    if (o->lps)
        cJSON_AddItemToObject(c, "logprobs", chat ? lp_chat(o) : lp_completion(o, 0));
    else
        cJSON_AddNullToObject(c, "logprobs");
    add_finish(c, o->finish_reason);
    if (o->finish_reason) add_meshllm(root, o);
    return finish_print(root);
}
