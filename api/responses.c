/* responses.c - OpenAI's Responses API (POST /v1/responses), the one the current SDKs and
 * agent tools use: the request becomes a chat generation (instructions as the system
 * message, input as the conversation), the answer a "response" object with one assistant
 * message item, or, streamed, the typed events response.created ... response.completed.
 * Follows the API reference of platform.openai.com (Responses: create, streaming events).
 * Not done: tools and function_call items, previous_response_id and stored responses
 * (refused with a clear message), reasoning items, include[].
 */
#include "api/api_internal.h"

#include "core/err.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bad(struct api_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct api_error *e, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return api_error_set(e, 400, "invalid_request_error", NULL, param, "%s", msg);
}

static bool absent(const cJSON *v) { return !v || cJSON_IsNull(v); }

static int number(const cJSON *root, const char *name, double lo, double hi, double *out,
                  struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (absent(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return bad(e, name, "'%s' must be a number from %g to %g", name, lo, hi);
    *out = v->valuedouble;
    return 1;
}

/* Text of a message's content: a string, or parts of type input_text / output_text / text
 * joined (other part types, such as input_image, are refused). malloc'd into *out. */
static int content_text(const cJSON *c, const char *param, char **out, struct api_error *e)
{
    if (cJSON_IsString(c)) {
        *out = strdup(c->valuestring);
        return *out ? 0 : MESH_ENOMEM;
    }
    if (!cJSON_IsArray(c)) return bad(e, param, "'content' must be a string or an array of parts");
    size_t n = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, c)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(type) || (strcmp(type->valuestring, "input_text") &&
                                      strcmp(type->valuestring, "output_text") &&
                                      strcmp(type->valuestring, "text")))
            return bad(e, param, "content parts of type '%.40s' are not supported (text only)",
                       cJSON_IsString(type) ? type->valuestring : "?");
        if (!cJSON_IsString(text)) return bad(e, param, "a text part needs a string 'text'");
        n += strlen(text->valuestring);
    }
    char *s = malloc(n + 1);
    if (!s) return MESH_ENOMEM;
    size_t off = 0;
    cJSON_ArrayForEach(p, c)
    {
        const char *t = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t l = strlen(t);
        memcpy(s + off, t, l);
        off += l;
    }
    s[off] = 0;
    *out = s;
    return 0;
}

static int msg_add(struct api_gen_req *r, const char *role, char *content)
{
    r->msgs[r->n_msgs].role = strdup(role);
    r->msgs[r->n_msgs].content = content;
    r->n_msgs++;
    return r->msgs[r->n_msgs - 1].role ? 0 : MESH_ENOMEM;
}

/* instructions (the system message) and input (a string: one user message; or message
 * items {role, content} with or without "type":"message"). */
static int parse_input(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "instructions");
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!absent(ins) && !cJSON_IsString(ins))
        return bad(e, "instructions", "'instructions' must be a string");
    if (absent(in)) return bad(e, "input", "you must provide an 'input' parameter");
    int n = cJSON_IsString(in) ? 1 : cJSON_IsArray(in) ? cJSON_GetArraySize(in) : -1;
    if (n <= 0 || n > 100000)
        return bad(e, "input", "'input' must be a string or a non-empty array of items");
    r->msgs = calloc((size_t)n + 1, sizeof *r->msgs);
    if (!r->msgs) return MESH_ENOMEM;
    int rc;
    char *s = NULL;
    if (cJSON_IsString(ins) && ins->valuestring[0]) {
        if (!(s = strdup(ins->valuestring)) || (rc = msg_add(r, "system", s))) return MESH_ENOMEM;
    }
    if (cJSON_IsString(in)) {
        if (!(s = strdup(in->valuestring))) return MESH_ENOMEM;
        return msg_add(r, "user", s);
    }
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, in)
    {
        char param[48];
        snprintf(param, sizeof param, "input[%d]", i++);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
        if (!absent(type) && (!cJSON_IsString(type) || strcmp(type->valuestring, "message")))
            return bad(e, param, "input items of type '%.40s' are not supported (messages only)",
                       cJSON_IsString(type) ? type->valuestring : "?");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        if (!cJSON_IsString(role)) return bad(e, param, "an input message needs a string 'role'");
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return bad(e, param, "invalid role '%.40s' (expected system, developer, user or "
                                 "assistant)", role->valuestring);
        if ((rc = content_text(cJSON_GetObjectItemCaseSensitive(it, "content"), param, &s, e)))
            return rc;
        if ((rc = msg_add(r, rs, s))) return rc;
    }
    return 0;
}

static int parse_body(const cJSON *root, struct api_gen_req *r, struct api_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!absent(v)) {
        if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) >= sizeof r->model)
            return bad(e, "model", "'model' must be a string");
        snprintf(r->model, sizeof r->model, "%s", v->valuestring);
    }
    int rc = api_meshllm_parse(root, &r->route, e);
    if (rc) return rc;
    if (!absent(cJSON_GetObjectItemCaseSensitive(root, "previous_response_id")))
        return bad(e, "previous_response_id",
                   "this server keeps no responses: send the whole conversation in 'input'");
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0)
        return bad(e, "tools", "tools are not supported on /v1/responses yet");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (!absent(st) && !cJSON_IsBool(st)) return bad(e, "stream", "'stream' must be a boolean");
    r->stream = cJSON_IsTrue(st);
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    r->repeat_penalty = 1.0f;
    r->max_tokens = -1;
    double d;
    if ((rc = number(root, "temperature", 0, 2, &d, e)) < 0) return rc;
    if (rc) r->temperature = (float)d, r->given |= API_GIVEN_TEMPERATURE;
    if ((rc = number(root, "top_p", 0, 1, &d, e)) < 0) return rc;
    if (rc) r->top_p = (float)d, r->given |= API_GIVEN_TOP_P;
    if ((rc = number(root, "max_output_tokens", 1, 1e9, &d, e)) < 0) return rc;
    if (rc) r->max_tokens = (int)d, r->given |= API_GIVEN_MAX_TOKENS;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    const cJSON *fmt = cJSON_IsObject(text) ? cJSON_GetObjectItemCaseSensitive(text, "format") : NULL;
    const cJSON *ft = cJSON_IsObject(fmt) ? cJSON_GetObjectItemCaseSensitive(fmt, "type") : NULL;
    if (cJSON_IsString(ft) && strcmp(ft->valuestring, "text")) {
        if (!strcmp(ft->valuestring, "json_object") || !strcmp(ft->valuestring, "json_schema"))
            r->json_mode = true;
        else
            return bad(e, "text.format.type", "'text.format.type' must be text, json_object or "
                                              "json_schema");
    }
    return parse_input(root, r, e);
}

int api_responses_parse(const char *body, size_t len, struct api_gen_req *out,
                        struct api_error *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = API_KIND_CHAT;
    int rc;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root))
        rc = bad(err, "", "invalid JSON body: expected an object");
    else
        rc = parse_body(root, out, err);
    if (rc == MESH_ENOMEM) api_error_set(err, 500, "server_error", NULL, NULL, "out of memory");
    cJSON_Delete(root);
    if (rc) api_gen_req_free(out);
    return rc;
}

/* ---- answers -------------------------------------------------------------------------- */

static cJSON *text_part(const char *text, size_t len)
{
    cJSON *p = cJSON_CreateObject();
    char *t = strndup(text ? text : "", len);
    cJSON_AddStringToObject(p, "type", "output_text");
    cJSON_AddStringToObject(p, "text", t ? t : "");
    cJSON_AddArrayToObject(p, "annotations");
    free(t);
    return p;
}

/* The assistant message item; text NULL: in progress with no content yet. */
static cJSON *message_item(const struct api_resp_out *o, bool done)
{
    cJSON *m = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "msg_%s", o->id + 5); /* resp_X -> msg_X */
    cJSON_AddStringToObject(m, "id", id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "status", done ? (o->is_incomplete ? "incomplete" : "completed")
                                              : "in_progress");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON *content = cJSON_AddArrayToObject(m, "content");
    if (done) cJSON_AddItemToArray(content, text_part(o->text, o->len));
    return m;
}

/* status: "in_progress" (output empty), "completed", "incomplete" or "failed". */
static cJSON *response_obj(const struct api_resp_out *o, const char *status)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", o->id);
    cJSON_AddStringToObject(r, "object", "response");
    cJSON_AddNumberToObject(r, "created_at", (double)o->created);
    cJSON_AddStringToObject(r, "status", status);
    cJSON_AddStringToObject(r, "model", o->model);
    bool done = strcmp(status, "in_progress") != 0;
    if (o->is_incomplete && done) {
        cJSON *d = cJSON_AddObjectToObject(r, "incomplete_details");
        cJSON_AddStringToObject(d, "reason", "max_output_tokens");
    } else {
        cJSON_AddNullToObject(r, "incomplete_details");
    }
    if (!strcmp(status, "failed")) {
        cJSON *er = cJSON_AddObjectToObject(r, "error");
        cJSON_AddStringToObject(er, "code", "server_error");
        cJSON_AddStringToObject(er, "message", "generation failed");
    } else {
        cJSON_AddNullToObject(r, "error");
    }
    cJSON *out = cJSON_AddArrayToObject(r, "output");
    if (done && strcmp(status, "failed")) cJSON_AddItemToArray(out, message_item(o, true));
    cJSON_AddBoolToObject(r, "parallel_tool_calls", true);
    cJSON_AddArrayToObject(r, "tools");
    cJSON_AddStringToObject(r, "tool_choice", "auto");
    cJSON *text = cJSON_AddObjectToObject(r, "text");
    cJSON *fmt = cJSON_AddObjectToObject(text, "format");
    cJSON_AddStringToObject(fmt, "type", "text");
    if (done) {
        cJSON *u = cJSON_AddObjectToObject(r, "usage");
        cJSON_AddNumberToObject(u, "input_tokens", o->n_prompt);
        cJSON *itd = cJSON_AddObjectToObject(u, "input_tokens_details");
        cJSON_AddNumberToObject(itd, "cached_tokens", o->n_cached);
        cJSON_AddNumberToObject(u, "output_tokens", o->n_completion);
        cJSON *otd = cJSON_AddObjectToObject(u, "output_tokens_details");
        cJSON_AddNumberToObject(otd, "reasoning_tokens", 0);
        cJSON_AddNumberToObject(u, "total_tokens", o->n_prompt + o->n_completion);
    } else {
        cJSON_AddNullToObject(r, "usage");
    }
    if (o->ran_on && done) {
        cJSON *mx = cJSON_AddObjectToObject(r, "meshllm");
        cJSON_AddStringToObject(mx, "ran_on", o->ran_on);
    }
    return r;
}

static const char *final_status(const struct api_resp_out *o)
{
    return o->is_failed ? "failed" : o->is_incomplete ? "incomplete" : "completed";
}

char *api_responses_json(const struct api_resp_out *o)
{
    cJSON *r = response_obj(o, final_status(o));
    char *s = r ? cJSON_PrintUnformatted(r) : NULL;
    cJSON_Delete(r);
    return s;
}

/* Appends "event: TYPE\ndata: {...,"type":TYPE,"sequence_number":N}\n\n" to *out. */
static int event_add(char **out, const char *type, cJSON *obj, int *seq)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "type", type);
    cJSON_AddNumberToObject(ev, "sequence_number", (*seq)++);
    for (cJSON *c = obj ? obj->child : NULL; c;) { /* move obj's members after type */
        cJSON *next = c->next;
        cJSON_AddItemToObject(ev, c->string, cJSON_DetachItemViaPointer(obj, c));
        c = next;
    }
    cJSON_Delete(obj);
    char *j = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (!j) return MESH_ENOMEM;
    size_t old = *out ? strlen(*out) : 0, add = strlen(type) + strlen(j) + 18;
    char *n = realloc(*out, old + add + 1);
    if (!n) {
        free(j);
        return MESH_ENOMEM;
    }
    snprintf(n + old, add + 1, "event: %s\ndata: %s\n\n", type, j);
    *out = n;
    free(j);
    return 0;
}

static cJSON *at_item(const struct api_resp_out *o, bool with_content)
{
    cJSON *x = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "msg_%s", o->id + 5);
    cJSON_AddStringToObject(x, "item_id", id);
    cJSON_AddNumberToObject(x, "output_index", 0);
    if (with_content) cJSON_AddNumberToObject(x, "content_index", 0);
    return x;
}

char *api_responses_events(const struct api_resp_out *o, enum api_resp_stage stage, int *seq)
{
    char *out = NULL;
    int rc = 0;
    cJSON *x;
    if (stage == API_RESP_BEGIN) {
        x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "response", response_obj(o, "in_progress"));
        rc = event_add(&out, "response.created", x, seq);
        x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "response", response_obj(o, "in_progress"));
        if (!rc) rc = event_add(&out, "response.in_progress", x, seq);
        x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "output_index", 0);
        cJSON_AddItemToObject(x, "item", message_item(o, false));
        if (!rc) rc = event_add(&out, "response.output_item.added", x, seq);
        x = at_item(o, true);
        cJSON_AddItemToObject(x, "part", text_part("", 0));
        if (!rc) rc = event_add(&out, "response.content_part.added", x, seq);
    } else if (stage == API_RESP_DELTA) {
        x = at_item(o, true);
        char *t = strndup(o->text ? o->text : "", o->len);
        cJSON_AddStringToObject(x, "delta", t ? t : "");
        cJSON_AddArrayToObject(x, "logprobs");
        free(t);
        rc = event_add(&out, "response.output_text.delta", x, seq);
    } else if (o->is_failed) {
        x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "response", response_obj(o, "failed"));
        rc = event_add(&out, "response.failed", x, seq);
    } else { /* API_RESP_END: o->text is the whole text */
        x = at_item(o, true);
        char *t = strndup(o->text ? o->text : "", o->len);
        cJSON_AddStringToObject(x, "text", t ? t : "");
        cJSON_AddArrayToObject(x, "logprobs");
        free(t);
        rc = event_add(&out, "response.output_text.done", x, seq);
        x = at_item(o, true);
        cJSON_AddItemToObject(x, "part", text_part(o->text, o->len));
        if (!rc) rc = event_add(&out, "response.content_part.done", x, seq);
        x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "output_index", 0);
        cJSON_AddItemToObject(x, "item", message_item(o, true));
        if (!rc) rc = event_add(&out, "response.output_item.done", x, seq);
        x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "response", response_obj(o, final_status(o)));
        if (!rc) rc = event_add(&out, o->is_incomplete ? "response.incomplete" : "response.completed",
                                x, seq);
    }
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}
