/* req.c - the request types of node/req.h: init/copy/free, errors, chunks, and the handle's
 * dispatch through its backend's ops. No policy here: node/local.c and the router decide.
 */
#include "node/req.h"

#include "core/err.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void node_gen_req_init(struct node_gen_req *r)
{
    memset(r, 0, sizeof *r);
    /* engine/sampler.h semantics, OpenAI's defaults (temperature 1, top_p 1, penalties off) */
    r->temperature = 1.0f;
    r->top_p = 1.0f;
    r->repeat_penalty = 1.0f;
    r->n_logprobs = -1;
}

void node_gen_req_free(struct node_gen_req *r)
{
    if (!r) return;
    free(r->model);
    for (int i = 0; r->msgs && i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
        free(r->msgs[i].tool_calls_json);
        free(r->msgs[i].tool_call_id);
        free(r->msgs[i].name);
    }
    free(r->msgs);
    free(r->tools_json);
    free(r->prompt);
    free(r->system);
    for (int i = 0; r->inputs && i < r->n_inputs; i++) free(r->inputs[i]);
    free(r->inputs);
    for (int i = 0; i < NODE_MAX_STOP; i++) free(r->stop[i]);
    free(r->cont_ids);
    free(r->grammar);
    memset(r, 0, sizeof *r);
}

/* strdup that keeps NULL as NULL; false only when a non-NULL copy failed. */
static bool dup_str(char **dst, const char *src)
{
    *dst = src ? strdup(src) : NULL;
    return !src || *dst;
}

int node_gen_req_copy(struct node_gen_req *dst, const struct node_gen_req *src)
{
    *dst = *src;
    /* no pointer of src may survive in dst: a partial copy is freed safely */
    dst->model = dst->prompt = dst->system = dst->tools_json = NULL;
    dst->msgs = NULL;
    dst->inputs = NULL;
    dst->cont_ids = NULL;
    dst->grammar = NULL;
    memset(dst->stop, 0, sizeof dst->stop);
    int n_msgs = dst->n_msgs, n_inputs = dst->n_inputs;
    dst->n_msgs = dst->n_inputs = 0;
    bool ok = dup_str(&dst->model, src->model) && dup_str(&dst->prompt, src->prompt) &&
              dup_str(&dst->system, src->system) && dup_str(&dst->tools_json, src->tools_json) &&
              dup_str(&dst->grammar, src->grammar);
    if (ok && src->msgs && n_msgs > 0) {
        dst->msgs = calloc((size_t)n_msgs, sizeof *dst->msgs);
        ok = dst->msgs != NULL;
        for (int i = 0; ok && i < n_msgs; i++) {
            dst->n_msgs = i + 1;
            ok = dup_str(&dst->msgs[i].role, src->msgs[i].role) &&
                 dup_str(&dst->msgs[i].content, src->msgs[i].content) &&
                 dup_str(&dst->msgs[i].tool_calls_json, src->msgs[i].tool_calls_json) &&
                 dup_str(&dst->msgs[i].tool_call_id, src->msgs[i].tool_call_id) &&
                 dup_str(&dst->msgs[i].name, src->msgs[i].name);
        }
    }
    if (ok && src->inputs && n_inputs > 0) {
        dst->inputs = calloc((size_t)n_inputs, sizeof *dst->inputs);
        ok = dst->inputs != NULL;
        for (int i = 0; ok && i < n_inputs; i++) {
            dst->n_inputs = i + 1;
            ok = dup_str(&dst->inputs[i], src->inputs[i]);
        }
    }
    for (int i = 0; ok && i < NODE_MAX_STOP; i++) ok = dup_str(&dst->stop[i], src->stop[i]);
    if (ok && src->cont_ids && src->n_cont > 0) {
        dst->cont_ids = malloc((size_t)src->n_cont * sizeof *dst->cont_ids);
        ok = dst->cont_ids != NULL;
        if (ok) memcpy(dst->cont_ids, src->cont_ids, (size_t)src->n_cont * sizeof *dst->cont_ids);
    }
    if (!ok) {
        node_gen_req_free(dst);
        return MESH_ENOMEM;
    }
    return 0;
}

int node_error_set(struct node_error *e, int status, const char *type, const char *code,
                   const char *param, const char *fmt, ...)
{
    memset(e, 0, sizeof *e);
    e->status = status;
    e->type = type;
    e->code = code;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return MESH_EINVAL;
}

void node_chunk_free(struct node_chunk *c)
{
    if (!c) return;
    free(c->text);
    free(c->cuts);
    free(c->ids);
    free(c->lps);
    free(c->embd);
    memset(c, 0, sizeof *c);
}

int node_req_take(struct node_req *r, struct node_chunk *out)
{
    memset(out, 0, sizeof *out);
    return r->ops->take(r, out);
}

void node_req_cancel(struct node_req *r)
{
    if (r) r->ops->cancel(r);
}

void node_req_release(struct node_req *r)
{
    if (r) r->ops->release(r);
}

void node_req_ran_on(struct node_req *r, char *buf, size_t cap)
{
    if (!cap) return;
    buf[0] = 0;
    if (r) r->ops->ran_on(r, buf, cap);
}

static const char *const route_names[] = {"default", "local", "own", "mesh"};

int node_route_parse(const char *s, enum node_route *out)
{
    for (int i = NODE_ROUTE_LOCAL; s && i <= NODE_ROUTE_MESH; i++)
        if (!strcmp(s, route_names[i])) {
            *out = (enum node_route)i;
            return 0;
        }
    return MESH_EINVAL;
}

const char *node_route_name(enum node_route r)
{
    return (int)r >= 0 && r <= NODE_ROUTE_MESH ? route_names[r] : "default";
}

/* ---- structured output ------------------------------------------------------------------ */

int node_grammar_from_schema(const char *schema_json, size_t len, char **gbnf, char *err,
                             size_t err_cap)
{
    int rc = json_schema_to_gbnf(schema_json, len, gbnf, err, err_cap);
    if (rc) return rc;
    /* the compiler's output always parses; checked anyway so a bug is a 400, not a crash */
    rc = node_grammar_check(*gbnf, strlen(*gbnf), err, err_cap);
    if (rc) {
        free(*gbnf);
        *gbnf = NULL;
    }
    return rc;
}

int node_grammar_check(const char *gbnf, size_t len, char *err, size_t err_cap)
{
    struct grammar *g = NULL;
    int rc = grammar_parse(gbnf, len, &g, err, err_cap);
    if (rc == 0) {
        struct grammar_state *st = NULL;
        rc = grammar_state_new(g, NULL, false, &st);
        if (rc == MESH_EINVAL)
            err_set(err, err_cap, rc, "grammar: its start expands to too many alternatives");
        grammar_state_free(st);
    }
    grammar_free(g);
    return rc;
}

int node_grammar_json_object(char **gbnf)
{
    *gbnf = strdup(json_schema_any_object_gbnf());
    return *gbnf ? 0 : MESH_ENOMEM;
}
