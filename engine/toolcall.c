/* toolcall.c - tool calls out of a model's output (toolcall.h has the three syntaxes).
 * The JSON is read with cJSON from a NUL-terminated copy; a call's arguments are printed
 * back compact, so the API hands clients one canonical JSON text. */
#include "engine/toolcall.h"

#include "core/err.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const char HERMES_OPEN[] = "<tool_call>", HERMES_CLOSE[] = "</tool_call>";
static const char MISTRAL_MARK[] = "[TOOL_CALLS]", MISTRAL_ARGS[] = "[ARGS]";
static const char PYTHON_TAG[] = "<|python_tag|>";

enum toolcall_syntax toolcall_syntax_detect(const char *jinja)
{
    if (!jinja) return TOOLCALL_HERMES;
    if (strstr(jinja, "[TOOL_CALLS]")) return TOOLCALL_MISTRAL;
    if (strstr(jinja, "<tool_call>")) return TOOLCALL_HERMES;
    /* Llama 3.1+: "Respond in the format {"name": function name, "parameters": ...}" */
    if (strstr(jinja, "<|python_tag|>") || strstr(jinja, "ipython") ||
        (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "\"parameters\"")))
        return TOOLCALL_LLAMA3;
    return TOOLCALL_HERMES;
}

const char *toolcall_syntax_name(enum toolcall_syntax s)
{
    switch (s) {
    case TOOLCALL_LLAMA3: return "llama3";
    case TOOLCALL_MISTRAL: return "mistral";
    default: return "hermes";
    }
}

void toolcall_result_free(struct toolcall_result *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_calls; i++) {
        free(r->calls[i].name);
        free(r->calls[i].arguments);
    }
    free(r->calls);
    free(r->content);
    memset(r, 0, sizeof *r);
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static const char *find(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (s[i] == needle[0] && !memcmp(s + i, needle, n)) return s + i;
    return NULL;
}

/* Appends text[len] to the result's content (a space between pieces). */
static int content_add(struct toolcall_result *r, const char *text, size_t len)
{
    while (len && is_ws(*text)) text++, len--;
    while (len && is_ws(text[len - 1])) len--;
    if (!len) return 0;
    size_t old = r->content ? strlen(r->content) : 0;
    char *c = realloc(r->content, old + len + 2);
    if (!c) return MESH_ENOMEM;
    if (old) c[old++] = ' ';
    memcpy(c + old, text, len);
    c[old + len] = 0;
    r->content = c;
    return 0;
}

/* A call object {"name": "...", "arguments"|"parameters": {...} or "{...}"} -> one call. */
static int call_from(const cJSON *o, const char *name_given, struct toolcall *out)
{
    memset(out, 0, sizeof *out);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const char *nm = name_given;
    if (!nm) {
        if (!cJSON_IsObject(o) || !cJSON_IsString(name) || !name->valuestring[0]) return MESH_EINVAL;
        nm = name->valuestring;
    }
    const cJSON *args = name_given ? o : cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) { /* arguments given as JSON text */
        parsed = cJSON_Parse(args->valuestring);
        if (!cJSON_IsObject(parsed)) {
            cJSON_Delete(parsed);
            return MESH_EINVAL;
        }
        args = parsed;
    }
    if (args && !cJSON_IsObject(args)) return MESH_EINVAL;
    out->name = strdup(nm);
    out->arguments = args ? cJSON_PrintUnformatted(args) : strdup("{}");
    cJSON_Delete(parsed);
    if (!out->name || !out->arguments) {
        free(out->name);
        free(out->arguments);
        return MESH_ENOMEM;
    }
    return 0;
}

static int calls_add(struct toolcall_result *r, struct toolcall *c)
{
    struct toolcall *n = realloc(r->calls, (size_t)(r->n_calls + 1) * sizeof *n);
    if (!n) {
        free(c->name);
        free(c->arguments);
        return MESH_ENOMEM;
    }
    r->calls = n;
    r->calls[r->n_calls++] = *c;
    return 0;
}

/* Parses the JSON value at the start of text[len] (whitespace first is skipped). Returns
 * it (caller deletes) with *used the bytes consumed, or NULL. */
static cJSON *json_at(const char *text, size_t len, size_t *used)
{
    char *buf = malloc(len + 1);
    if (!buf) return NULL;
    memcpy(buf, text, len);
    buf[len] = 0;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithOpts(buf, &end, 0);
    *used = v && end ? (size_t)(end - buf) : 0;
    free(buf);
    return v;
}

/* Adds the call objects of v (one object, or an array of them); MESH_EINVAL if one is not. */
static int calls_from_json(struct toolcall_result *r, const cJSON *v)
{
    const cJSON *it = cJSON_IsArray(v) ? v->child : v;
    if (cJSON_IsArray(v) && !it) return MESH_EINVAL;
    for (; it; it = cJSON_IsArray(v) ? it->next : NULL) {
        struct toolcall c;
        int rc = call_from(it, NULL, &c);
        if (rc || (rc = calls_add(r, &c))) return rc;
    }
    return 0;
}

static int parse_hermes(const char *text, size_t len, struct toolcall_result *r)
{
    const char *p = text, *end = text + len;
    int rc = 0;
    while (!rc && p < end) {
        const char *open = find(p, (size_t)(end - p), HERMES_OPEN);
        if (!open) return content_add(r, p, (size_t)(end - p));
        if ((rc = content_add(r, p, (size_t)(open - p)))) return rc;
        const char *body = open + sizeof HERMES_OPEN - 1;
        const char *close = find(body, (size_t)(end - body), HERMES_CLOSE);
        const char *stop = close ? close : end; /* a turn may end before the close tag */
        size_t used;
        cJSON *v = json_at(body, (size_t)(stop - body), &used);
        int n_before = r->n_calls;
        bool ok = v && (rc = calls_from_json(r, v)) == 0;
        cJSON_Delete(v);
        if (rc == MESH_ENOMEM) return rc;
        if (!ok) { /* not a call after all: keep the text as the model wrote it */
            while (r->n_calls > n_before) {
                r->n_calls--;
                free(r->calls[r->n_calls].name);
                free(r->calls[r->n_calls].arguments);
            }
            rc = content_add(r, open, (size_t)((close ? close + sizeof HERMES_CLOSE - 1 : end) - open));
        }
        p = close ? close + sizeof HERMES_CLOSE - 1 : end;
    }
    return rc;
}

static int parse_llama3(const char *text, size_t len, struct toolcall_result *r)
{
    size_t i = 0;
    while (i < len && is_ws(text[i])) i++;
    size_t tag = sizeof PYTHON_TAG - 1;
    if (len - i >= tag && !memcmp(text + i, PYTHON_TAG, tag)) i += tag;
    struct toolcall_result calls = {0};
    int rc = 0;
    bool ok = true;
    while (ok && i < len) {
        while (i < len && (is_ws(text[i]) || text[i] == ';')) i++;
        if (i == len) break;
        size_t used;
        cJSON *v = text[i] == '{' ? json_at(text + i, len - i, &used) : NULL;
        ok = v && cJSON_IsObject(v) && (rc = calls_from_json(&calls, v)) == 0;
        cJSON_Delete(v);
        if (rc == MESH_ENOMEM) break;
        i += ok ? used : 0;
    }
    if (rc == MESH_ENOMEM || !ok || calls.n_calls == 0) {
        toolcall_result_free(&calls);
        return rc == MESH_ENOMEM ? rc : content_add(r, text, len);
    }
    r->calls = calls.calls;
    r->n_calls = calls.n_calls;
    return 0;
}

static int parse_mistral(const char *text, size_t len, struct toolcall_result *r)
{
    const char *end = text + len;
    const char *mark = find(text, len, MISTRAL_MARK);
    if (!mark) return content_add(r, text, len);
    int rc = content_add(r, text, (size_t)(mark - text));
    const char *p = mark;
    while (!rc && p && p < end) {
        p += sizeof MISTRAL_MARK - 1;
        while (p < end && is_ws(*p)) p++;
        const char *next = find(p, (size_t)(end - p), MISTRAL_MARK);
        const char *stop = next ? next : end;
        size_t used;
        cJSON *v = NULL;
        const char *args = find(p, (size_t)(stop - p), MISTRAL_ARGS);
        if (p < stop && *p == '[') { /* v3: a JSON array of calls */
            v = json_at(p, (size_t)(stop - p), &used);
            rc = v ? calls_from_json(r, v) : MESH_EINVAL;
        } else if (args) { /* v11: NAME[ARGS]{...} */
            char *name = strndup(p, (size_t)(args - p));
            const char *a = args + sizeof MISTRAL_ARGS - 1;
            v = name ? json_at(a, (size_t)(stop - a), &used) : NULL;
            struct toolcall c;
            rc = !name ? MESH_ENOMEM : !cJSON_IsObject(v) ? MESH_EINVAL : call_from(v, name, &c);
            if (!rc) rc = calls_add(r, &c);
            free(name);
        } else {
            rc = MESH_EINVAL;
        }
        cJSON_Delete(v);
        if (rc == MESH_EINVAL) rc = content_add(r, p, (size_t)(stop - p)); /* not a call */
        p = next;
    }
    return rc;
}

int toolcall_parse(enum toolcall_syntax s, const char *text, size_t len,
                   struct toolcall_result *out)
{
    memset(out, 0, sizeof *out);
    int rc = s == TOOLCALL_LLAMA3    ? parse_llama3(text, len, out)
             : s == TOOLCALL_MISTRAL ? parse_mistral(text, len, out)
                                     : parse_hermes(text, len, out);
    if (!rc && !out->content && !(out->content = strdup(""))) rc = MESH_ENOMEM;
    if (rc) toolcall_result_free(out);
    return rc;
}

/* Bytes at the end of text[len] that begin marker (a marker cut by the stream). */
static size_t partial_marker(const char *text, size_t len, const char *marker)
{
    size_t m = strlen(marker);
    for (size_t k = m - 1 < len ? m - 1 : len; k > 0; k--)
        if (!memcmp(text + len - k, marker, k)) return k;
    return 0;
}

size_t toolcall_stream_safe(enum toolcall_syntax s, const char *text, size_t len, size_t from)
{
    if (from > len) from = len;
    if (s == TOOLCALL_LLAMA3) {
        if (from > 0) return len; /* the turn did not open with a call: all of it is text */
        size_t i = 0;
        while (i < len && is_ws(text[i])) i++;
        if (i == len) return 0; /* nothing but space yet: a call may follow */
        size_t tag = sizeof PYTHON_TAG - 1, rest = len - i;
        if (text[i] == '{' || !memcmp(text + i, PYTHON_TAG, rest < tag ? rest : tag)) return 0;
        return len;
    }
    const char *marker = s == TOOLCALL_MISTRAL ? MISTRAL_MARK : HERMES_OPEN;
    /* a marker cannot begin before from: what lies before it held no start of one */
    const char *at = find(text + from, len - from, marker);
    if (at) return (size_t)(at - text);
    return from + (len - from) - partial_marker(text + from, len - from, marker);
}
